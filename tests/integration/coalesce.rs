//! Issue 12: identical questions already in flight are answered from one upstream
//! exchange, each client getting its own ID and question case; different questions are
//! not merged.

use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::client::{self, query, rdata_strings};
use crate::daemon::{bounded, zone, Daemon};
use crate::fake::{consul_table, Behaviour, Fake};

const LIMIT: Duration = Duration::from_secs(30);

/// `web.service.consul.` with letter `i`'s case flipped pattern: each client its own case.
fn cased(i: usize) -> String {
    "web.service.consul."
        .chars()
        .enumerate()
        .map(|(k, c)| {
            if (k + i).is_multiple_of(3) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

#[test]
fn identical_questions_in_flight_share_one_upstream_exchange() {
    bounded(LIMIT, async {
        // A slow Consul (TTL 0: nothing is ever cached) so the queries overlap.
        let c = Fake::start(Behaviour::Delay(Duration::from_millis(400)), consul_table()).await;
        let d = Daemon::start(&zone("consul", &[&c], "timeout_ms = 3000")).await;
        const N: usize = 12;
        let mut tasks = Vec::new();
        for i in 0..N {
            let addr = d.udp;
            tasks.push(tokio::spawn(async move {
                let name = cased(i);
                let mut q = query(&name, RecordType::A);
                q.metadata.id = 0x1000 + i as u16;
                let r = client::udp(addr, &q).await;
                (name, q.metadata.id, r)
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            let (name, id, r) = t.await.unwrap();
            assert_eq!(r.metadata.id, id, "each client gets its own ID");
            assert_eq!(
                r.queries[0].name().to_ascii(),
                name,
                "each client gets its own question case"
            );
            let mut a = rdata_strings(&r.answers);
            a.sort();
            assert_eq!(a, ["10.0.0.10", "10.0.0.11"], "{name}");
            ids.push(id);
        }
        let events = d.events(N).await;
        let ours: Vec<_> = events
            .iter()
            .filter(|e| e.qname_matches("web.service.consul"))
            .collect();
        assert_eq!(ours.len(), N, "one event per query: {ours:?}");
        let followers: Vec<_> = ours.iter().filter(|e| e.cache == "coalesced").collect();
        let leaders: Vec<_> = ours.iter().filter(|e| e.cache != "coalesced").collect();
        assert!(
            !followers.is_empty() && leaders.len() < N / 2,
            "most queries followed one in flight: {} led, {} followed",
            leaders.len(),
            followers.len()
        );
        for f in &followers {
            assert!(f.attempts.is_empty(), "a follower asks nobody: {f:?}");
            assert_eq!(f.upstream.as_deref(), Some(c.server().as_str()));
            assert_eq!(f.rcode.as_deref(), Some("NOERROR"));
        }
        // Every datagram Consul saw belongs to a leader's attempts.
        let leader_attempts: usize = leaders.iter().map(|e| e.attempts.len()).sum();
        assert_eq!(
            c.udp_count(),
            leader_attempts,
            "upstream queries = the leaders' attempts"
        );
    });
}

#[test]
fn different_questions_are_not_merged() {
    bounded(LIMIT, async {
        let c = Fake::start(Behaviour::Delay(Duration::from_millis(200)), consul_table()).await;
        let d = Daemon::start(&zone("consul", &[&c], "timeout_ms = 3000")).await;
        let (qa, qsrv) = (
            query("web.service.consul.", RecordType::A),
            query("web.service.consul.", RecordType::SRV),
        );
        let (a, srv) = tokio::join!(client::udp(d.udp, &qa), client::udp(d.udp, &qsrv));
        assert_eq!(a.answers.len(), 2);
        assert_eq!(srv.answers.len(), 2);
        assert!(
            srv.answers
                .iter()
                .all(|r| r.record_type() == RecordType::SRV),
            "the SRV query got SRV records, not the A query's: {:?}",
            srv.answers
        );
        let events = d.events(2).await;
        assert!(
            events.iter().all(|e| e.cache != "coalesced"),
            "A and SRV are different questions: {events:?}"
        );
        assert_eq!(c.udp_count(), 2, "two upstream exchanges");
    });
}
