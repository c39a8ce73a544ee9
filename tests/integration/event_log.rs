//! One JSON event per query, whatever its fate, with the schema in DESIGN.md (parsed with
//! `deny_unknown_fields`), and the attempts list showing each server's outcome in order.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::client::{self, query};
use crate::daemon::{bounded, zone, Daemon, NO_CACHE};
use crate::events::Event;
use crate::fake::{consul_table, public_table, Behaviour, Fake};

const LIMIT: Duration = Duration::from_secs(20);

fn assert_timestamp(ts: &str) {
    // 2026-11-18T08:26:40.123456Z: RFC 3339, microseconds, UTC.
    let b = ts.as_bytes();
    let ok = ts.len() == 27
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[26] == b'Z'
        && ts[..4].chars().all(|c| c.is_ascii_digit())
        && ts[20..26].chars().all(|c| c.is_ascii_digit());
    assert!(ok, "@timestamp is not RFC 3339 with µs: {ts:?}");
    assert!(ts.as_bytes()[0] == b'2', "@timestamp year: {ts:?}");
}

fn assert_common(e: &Event, proto: &str) {
    assert_timestamp(&e.timestamp);
    assert_eq!(e.v, 2, "schema version");
    assert!(
        e.client.starts_with("127.0.0.1:"),
        "client address and port: {:?}",
        e.client
    );
    assert_eq!(e.proto, proto);
    assert!(e.duration_ms >= 0.0 && e.duration_ms < 10_000.0);
    for a in &e.attempts {
        assert!(a.ms >= 0.0, "attempt ms: {a:?}");
        assert!(
            [
                "answer",
                "timeout",
                "servfail",
                "refused",
                "error",
                "truncated"
            ]
            .contains(&a.outcome.as_str()),
            "unknown outcome {a:?}"
        );
    }
}

#[test]
fn one_event_per_query_with_the_schema() {
    bounded(LIMIT, async {
        let c = Fake::answering(consul_table()).await;
        let d = Daemon::start(&format!("{NO_CACHE}{}", zone("consul", &[&c], ""))).await;

        let q1 = query("Web.Service.Consul.", RecordType::SRV);
        let r1 = client::udp(d.udp, &q1).await;
        let q2 = query("nope.service.consul.", RecordType::A);
        let r2 = client::tcp(d.tcp, &q2).await;
        let q3 = query("www.example.com.", RecordType::AAAA);
        let r3 = client::udp(d.udp, &q3).await;
        assert_eq!(r3.metadata.response_code, ResponseCode::Refused);

        let events = d.events(3).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let events_later = d.events(3).await;
        assert_eq!(
            events_later.len(),
            3,
            "exactly one event per query: {events_later:#?}"
        );

        let e1 = events
            .iter()
            .find(|e| e.qname_matches("web.service.consul"))
            .unwrap();
        assert_common(e1, "udp");
        assert_eq!(
            e1.qname.as_deref(),
            Some("Web.Service.Consul."),
            "qname as sent"
        );
        assert_eq!(e1.qtype.as_deref(), Some("SRV"));
        assert_eq!(e1.id, Some(q1.metadata.id));
        assert_eq!(e1.zone.as_deref(), Some("consul"));
        assert_eq!(e1.cache, "off", "cache disabled");
        assert_eq!(e1.upstream.as_deref(), Some(c.server().as_str()));
        assert_eq!(
            e1.attempt_outcomes(),
            [(c.server(), "udp".to_owned(), "answer".to_owned())]
        );
        assert_eq!(e1.rcode.as_deref(), Some("NOERROR"));
        assert_eq!(e1.answers as usize, r1.answers.len());
        assert_eq!(e1.answers, 2);
        assert!(!e1.tc);
        assert!(e1.size > 12);
        assert_eq!(e1.error, None);

        let e2 = events
            .iter()
            .find(|e| e.qname_matches("nope.service.consul"))
            .unwrap();
        assert_common(e2, "tcp");
        assert_eq!(e2.qtype.as_deref(), Some("A"));
        assert_eq!(e2.rcode.as_deref(), Some("NXDOMAIN"));
        assert_eq!(r2.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(e2.answers, 0);
        assert_eq!(e2.upstream.as_deref(), Some(c.server().as_str()));

        let e3 = events
            .iter()
            .find(|e| e.qname_matches("www.example.com"))
            .unwrap();
        assert_common(e3, "udp");
        assert_eq!(e3.zone, None, "no zone matched");
        assert_eq!(e3.rcode.as_deref(), Some("REFUSED"));
        assert_eq!(e3.upstream, None);
        assert!(e3.attempts.is_empty());
    });
}

#[test]
fn attempts_list_outcomes_in_order() {
    bounded(LIMIT, async {
        let hole = Fake::black_hole().await;
        let sf = Fake::rcode(ResponseCode::ServFail).await;
        let rf = Fake::rcode(ResponseCode::Refused).await;
        let ok = Fake::answering(public_table()).await;
        let body = format!(
            "{NO_CACHE}{}",
            zone(".", &[&hole, &sf, &rf, &ok], "timeout_ms = 300")
        );
        let d = Daemon::start(&body).await;
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        let e = d.event_for("www.example.com").await;
        assert_common(&e, "udp");
        let outcomes: Vec<(String, String)> = e
            .attempts
            .iter()
            .map(|a| (a.server.clone(), a.outcome.clone()))
            .collect();
        assert_eq!(
            outcomes,
            [
                (hole.server(), "timeout".to_owned()),
                (sf.server(), "servfail".to_owned()),
                (rf.server(), "refused".to_owned()),
                (ok.server(), "answer".to_owned()),
            ]
        );
        assert!(
            e.attempts[0].ms >= 250.0,
            "timeout attempt took {}",
            e.attempts[0].ms
        );
        assert_eq!(e.upstream.as_deref(), Some(ok.server().as_str()));
        assert!(e.duration_ms >= 250.0);
    });
}

#[test]
fn all_failed_event_has_no_upstream_and_servfail() {
    bounded(LIMIT, async {
        let sf = Fake::rcode(ResponseCode::ServFail).await;
        let hole = Fake::black_hole().await;
        let d = Daemon::start(&format!(
            "{NO_CACHE}{}",
            zone(".", &[&sf, &hole], "timeout_ms = 200")
        ))
        .await;
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        let e = d.event_for("www.example.com").await;
        assert_eq!(e.rcode.as_deref(), Some("SERVFAIL"));
        assert_eq!(e.upstream, None, "no server answered");
        let outcomes: Vec<&str> = e.attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["servfail", "timeout"]);
        assert!(e.error.is_some(), "the event says why: {e:?}");
    });
}

#[test]
fn truncated_then_tcp_shows_in_attempts() {
    bounded(LIMIT, async {
        let p = Fake::start(Behaviour::TruncateUdp, public_table()).await;
        let d = Daemon::start(&format!("{NO_CACHE}{}", zone(".", &[&p], ""))).await;
        let _ = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        let e = d.event_for("www.example.com").await;
        assert_eq!(
            e.attempt_outcomes(),
            [
                (p.server(), "udp".to_owned(), "truncated".to_owned()),
                (p.server(), "tcp".to_owned(), "answer".to_owned()),
            ]
        );
    });
}

#[test]
fn client_side_truncation_is_recorded() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = Daemon::start(&format!("{NO_CACHE}{}", zone(".", &[&p], ""))).await;
        let r = client::udp(d.udp, &query("big.example.com.", RecordType::A)).await;
        assert!(r.metadata.truncation);
        let e = d.event_for("big.example.com").await;
        assert!(e.tc, "tc records the reply sent: {e:?}");
        assert!(e.size <= 512);
        assert_eq!(e.answers as usize, r.answers.len());
    });
}

#[test]
fn malformed_queries_get_an_event_too() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = Daemon::start(&format!("{NO_CACHE}{}", zone(".", &[&p], ""))).await;
        // qdcount = 0.
        let bytes = [0x77, 0x01, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
        let _ = client::udp_raw_wait(d.udp, &bytes, Duration::from_millis(300)).await;
        // Random garbage.
        let _ = client::udp_raw_wait(d.udp, &[0x13, 0x37, 0xff], Duration::from_millis(300)).await;
        let events = d.events(2).await;
        assert_eq!(events.len(), 2, "{events:#?}");
        for e in &events {
            assert_common(e, "udp");
            assert!(
                e.error.is_some(),
                "a malformed query's event says why: {e:?}"
            );
            assert!(e.attempts.is_empty());
        }
        assert_eq!(p.count(), 0);
    });
}
