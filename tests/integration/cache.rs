//! The cache, seen from outside: TTL 0 (Consul, dnsmasq) is never cached; TTL 300 answers
//! and negative answers with a usable SOA are; SERVFAIL never is; a hit restores the
//! client's ID and name case and counts the TTL down; DO is part of the key; `cache = false`
//! on a zone turns it off there.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::client::{self, query, rdata_strings, with_edns};
use crate::daemon::{bounded, zone, Daemon};
use crate::fake::{consul_table, public_table, Fake};

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn ttl_zero_answers_are_never_cached() {
    bounded(LIMIT, async {
        let c = Fake::answering(consul_table()).await;
        let d = Daemon::start(&zone("consul", &[&c], "")).await;
        for _ in 0..3 {
            let r = client::udp(d.udp, &query("web.service.consul.", RecordType::A)).await;
            assert_eq!(r.answers.len(), 2);
        }
        // NXDOMAIN whose SOA has TTL 0 is not cacheable either.
        for _ in 0..2 {
            let r = client::udp(d.udp, &query("nope.service.consul.", RecordType::A)).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        }
        assert_eq!(c.count(), 5, "every TTL-0 query reaches Consul");
        let events = d.events(5).await;
        assert!(events.iter().all(|e| e.cache != "hit"), "{events:#?}");
    });
}

#[test]
fn positive_answers_are_cached_with_id_and_case_restored() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = Daemon::start(&zone(".", &[&p], "")).await;
        let q1 = query("www.example.com.", RecordType::A);
        let first = client::udp(d.udp, &q1).await;
        assert_eq!(rdata_strings(&first.answers), ["93.184.216.34"]);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let q = query("WWW.Example.COM.", RecordType::A);
        let hit = client::udp(d.udp, &q).await;
        assert_eq!(p.count(), 1, "the second query is answered from the cache");
        assert_eq!(
            hit.metadata.id, q.metadata.id,
            "client ID restored on a hit"
        );
        assert_eq!(
            hit.queries[0].name().to_ascii(),
            "WWW.Example.COM.",
            "case restored"
        );
        assert_eq!(rdata_strings(&hit.answers), ["93.184.216.34"]);
        assert!(
            hit.answers[0].ttl < 300 && hit.answers[0].ttl >= 290,
            "TTL counts down: {}",
            hit.answers[0].ttl
        );
        let q3 = query("www.example.com.", RecordType::A);
        let hit_tcp = client::tcp(d.tcp, &q3).await;
        assert_eq!(rdata_strings(&hit_tcp.answers), ["93.184.216.34"]);
        assert_eq!(p.count(), 1, "TCP shares the cache");
        let mut caches = Vec::new();
        for id in [q1.metadata.id, q.metadata.id, q3.metadata.id] {
            caches.push(d.event_with_id(id).await.cache);
        }
        assert_eq!(caches, ["miss", "hit", "hit"]);
        let e = d.event_with_id(q.metadata.id).await;
        assert!(e.attempts.is_empty() && e.upstream.is_none(), "{e:?}");
    });
}

#[test]
fn negative_answers_with_soa_are_cached() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = Daemon::start(&zone(".", &[&p], "")).await;
        for _ in 0..3 {
            let r = client::udp(d.udp, &query("missing.example.com.", RecordType::A)).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
            assert_eq!(
                r.authorities.len(),
                1,
                "the SOA is served from the cache too"
            );
        }
        assert_eq!(
            p.count(),
            1,
            "NXDOMAIN with SOA TTL 300 is cached (RFC 2308)"
        );
    });
}

#[test]
fn servfail_is_never_cached() {
    bounded(LIMIT, async {
        let sf = Fake::rcode(ResponseCode::ServFail).await;
        let d = Daemon::start(&zone(".", &[&sf], "")).await;
        for _ in 0..3 {
            let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
            assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        }
        assert_eq!(sf.count(), 3);
    });
}

#[test]
fn dnssec_ok_is_part_of_the_cache_key() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = Daemon::start(&zone(".", &[&p], "")).await;
        let plain = query("www.example.com.", RecordType::A);
        let _ = client::udp(d.udp, &plain).await;
        let with_do = with_edns(query("www.example.com.", RecordType::A), 1232, true);
        let _ = client::udp(d.udp, &with_do).await;
        assert_eq!(p.count(), 2, "DO=1 must not be answered from a DO=0 entry");
        let _ = client::udp(d.udp, &with_do).await;
        assert_eq!(p.count(), 2);
    });
}

#[test]
fn zone_with_cache_false_is_not_cached() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = Daemon::start(&zone(".", &[&p], "cache = false")).await;
        for _ in 0..3 {
            let _ = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        }
        assert_eq!(p.count(), 3);
    });
}

#[test]
fn cache_hit_for_client_without_edns_has_no_opt() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = Daemon::start(&zone(".", &[&p], "")).await;
        // First an EDNS client fills the cache, then a musl-style client hits it.
        let _ = client::udp(
            d.udp,
            &with_edns(query("www.example.com.", RecordType::A), 1232, false),
        )
        .await;
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert!(
            r.edns.is_none(),
            "OPT leaked from the cache to a client that sent none"
        );
        assert_eq!(rdata_strings(&r.answers), ["93.184.216.34"]);
    });
}

#[test]
fn big_cached_answer_is_still_truncated_for_a_512_byte_client() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = Daemon::start(&zone(".", &[&p], "")).await;
        // The upstream's full answer is cached; each musl-style client gets 512 bytes + TC.
        let mut ids = Vec::new();
        for _ in 0..2 {
            let q = query("big.example.com.", RecordType::A);
            ids.push(q.metadata.id);
            let raw = client::udp_raw(d.udp, &client::encode(&q)).await;
            assert!(raw.len() <= 512, "reply of {} bytes", raw.len());
            let r = client::decode(&raw);
            assert!(r.metadata.truncation, "TC set");
            assert!(r.edns.is_none());
        }
        assert_eq!(p.count(), 1, "the second query is a cache hit");
        let second = d.event_with_id(ids[1]).await;
        assert_eq!(second.cache, "hit");
        assert!(second.tc);
        // The truncated reply is never what was cached: an EDNS client gets all 60.
        let full = client::udp(
            d.udp,
            &with_edns(query("big.example.com.", RecordType::A), 4096, false),
        )
        .await;
        assert!(!full.metadata.truncation);
        assert_eq!(full.answers.len(), 60);
        let over_tcp = client::tcp(d.tcp, &query("big.example.com.", RecordType::A)).await;
        assert!(!over_tcp.metadata.truncation);
        assert_eq!(
            over_tcp.answers.len(),
            60,
            "TCP gets the whole cached answer"
        );
    });
}

/// `short.example.com A 192.0.2.77` with TTL 1, so it expires during a test.
fn short_ttl_table() -> crate::fake::Table {
    let mut t = crate::fake::Table::new("example.com", 1);
    t.add(
        "short.example.com",
        1,
        hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, 77)),
    );
    t
}

/// Fill the cache with a TTL-1 answer, let it expire, make the only server fail, ask again.
async fn expired_entry_with_failing_server(serve_stale: bool) -> (Fake, Daemon) {
    let p = Fake::answering(short_ttl_table()).await;
    let body = format!(
        "[cache]\nserve_stale = {serve_stale}\n{}",
        zone(".", &[&p], "timeout_ms = 200")
    );
    let d = Daemon::start(&body).await;
    let r = client::udp(d.udp, &query("short.example.com.", RecordType::A)).await;
    assert_eq!(rdata_strings(&r.answers), ["192.0.2.77"]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    p.set_behaviour(crate::fake::Behaviour::Rcode(ResponseCode::ServFail));
    (p, d)
}

#[test]
fn serve_stale_answers_from_an_expired_entry_when_every_server_fails() {
    bounded(LIMIT, async {
        let (p, d) = expired_entry_with_failing_server(true).await;
        let q = query("short.example.com.", RecordType::A);
        let r = client::udp(d.udp, &q).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            rdata_strings(&r.answers),
            ["192.0.2.77"],
            "RFC 8767 stale answer"
        );
        assert!(
            r.answers[0].ttl > 0 && r.answers[0].ttl <= 30,
            "stale TTL (RFC 8767 suggests 30 s): {}",
            r.answers[0].ttl
        );
        assert_eq!(p.count(), 2, "the server is asked before going stale");
        assert_eq!(d.event_with_id(q.metadata.id).await.cache, "stale");
    });
}

#[test]
fn without_serve_stale_an_expired_entry_is_never_served() {
    bounded(LIMIT, async {
        let (p, d) = expired_entry_with_failing_server(false).await;
        let r = client::udp(d.udp, &query("short.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(p.count(), 2);
    });
}
