//! Order is strict: a zone's servers are asked one at a time, in config order; the next one
//! only on timeout, network error or an rcode in `failover_rcodes`; NOERROR (incl. NODATA)
//! and NXDOMAIN are final; all failing gives SERVFAIL well inside musl's 5 s; a dead primary
//! is skipped for a back-off period.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, RecordType};

use crate::client::{self, query, rdata_strings};
use crate::daemon::{bounded, zone, Daemon, NO_CACHE};
use crate::fake::{public_table, Behaviour, Fake, Table};

const LIMIT: Duration = Duration::from_secs(30);

/// A table that only knows `www.example.com A 192.0.2.2` (to tell B's answers from A's).
pub fn second_table() -> Table {
    let mut t = Table::new("example.com", 300);
    t.add("www.example.com", 300, RData::A(A::new(192, 0, 2, 2)));
    t.add(
        "www.example.com",
        300,
        RData::AAAA(std::net::Ipv6Addr::LOCALHOST.into()),
    );
    t.add("other.example.com", 300, RData::A(A::new(192, 0, 2, 3)));
    t
}

fn one_zone(servers: &[&Fake], extra: &str) -> String {
    format!("{NO_CACHE}{}", zone(".", servers, extra))
}

#[test]
fn first_server_answers_second_is_never_asked() {
    bounded(LIMIT, async {
        let a = Fake::answering(public_table()).await;
        let b = Fake::answering(second_table()).await;
        let d = Daemon::start(&one_zone(&[&a, &b], "")).await;
        for _ in 0..5 {
            let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NoError);
            assert_eq!(rdata_strings(&r.answers), ["93.184.216.34"]);
        }
        let r = client::tcp(d.tcp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(rdata_strings(&r.answers), ["93.184.216.34"]);
        assert_eq!(a.count(), 6, "A must get every query exactly once");
        assert_eq!(b.count(), 0, "B must never be asked while A answers");
    });
}

#[test]
fn black_hole_primary_fails_over_after_timeout_ms() {
    bounded(LIMIT, async {
        let a = Fake::black_hole().await;
        let b = Fake::answering(second_table()).await;
        let d = Daemon::start(&one_zone(&[&a, &b], "timeout_ms = 400")).await;
        let started = Instant::now();
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        let took = started.elapsed();
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(rdata_strings(&r.answers), ["192.0.2.2"], "B's answer");
        assert_eq!(a.count(), 1, "A asked exactly once");
        assert_eq!(b.count(), 1, "B asked exactly once");
        assert!(
            took >= Duration::from_millis(380),
            "B was asked before A's timeout_ms (400 ms) ran out: {took:?}"
        );
        assert!(
            took < Duration::from_millis(1400),
            "failover took too long: {took:?}"
        );
        assert_eq!(
            a.seen()[0].qname,
            b.seen()[0].qname,
            "B got the same question"
        );
    });
}

async fn fails_over_on_rcode(rcode: ResponseCode) {
    let a = Fake::rcode(rcode).await;
    let b = Fake::answering(second_table()).await;
    let d = Daemon::start(&one_zone(&[&a, &b], "")).await;
    let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(rdata_strings(&r.answers), ["192.0.2.2"], "B's answer");
    assert_eq!(a.count(), 1);
    assert_eq!(b.count(), 1);
}

#[test]
fn servfail_from_primary_fails_over() {
    bounded(LIMIT, fails_over_on_rcode(ResponseCode::ServFail));
}

#[test]
fn refused_from_primary_fails_over() {
    bounded(LIMIT, fails_over_on_rcode(ResponseCode::Refused));
}

#[test]
fn rcode_not_in_failover_rcodes_is_final() {
    bounded(LIMIT, async {
        let a = Fake::rcode(ResponseCode::Refused).await;
        let b = Fake::answering(second_table()).await;
        let d = Daemon::start(&one_zone(&[&a, &b], "failover_rcodes = [\"SERVFAIL\"]")).await;
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        assert_eq!(a.count(), 1);
        assert_eq!(
            b.count(),
            0,
            "REFUSED is not in failover_rcodes: B must not be asked"
        );
    });
}

#[test]
fn nxdomain_from_primary_is_final() {
    bounded(LIMIT, async {
        let mut only_other = Table::new("example.com", 0);
        only_other.add("other.example.com", 0, RData::A(A::new(192, 0, 2, 9)));
        let a = Fake::answering(only_other).await;
        let b = Fake::answering(second_table()).await;
        let d = Daemon::start(&one_zone(&[&a, &b], "")).await;
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(r.answers.is_empty());
        assert_eq!(a.count(), 1);
        assert_eq!(b.count(), 0, "NXDOMAIN is final: B must not be asked");
    });
}

#[test]
fn nodata_from_primary_is_final() {
    bounded(LIMIT, async {
        let mut a_only = Table::new("example.com", 0);
        a_only.add("www.example.com", 0, RData::A(A::new(192, 0, 2, 1)));
        let a = Fake::answering(a_only).await;
        let b = Fake::answering(second_table()).await;
        let d = Daemon::start(&one_zone(&[&a, &b], "")).await;
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::AAAA)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty(), "NODATA: {:?}", r.answers);
        assert_eq!(r.authorities.len(), 1, "NODATA carries the SOA");
        assert_eq!(a.count(), 1);
        assert_eq!(b.count(), 0, "NODATA is final: B must not be asked");
    });
}

#[test]
fn network_error_on_primary_fails_over() {
    bounded(LIMIT, async {
        // A port nobody listens on: the attempt fails with a network error (ICMP port
        // unreachable) or a timeout; either way B must answer.
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let b = Fake::answering(second_table()).await;
        let body = format!(
            "{NO_CACHE}[[zone]]\nname = \".\"\nservers = [\"{dead_addr}\", \"{}\"]\ntimeout_ms = 500\n",
            b.addr
        );
        let d = Daemon::start(&body).await;
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(rdata_strings(&r.answers), ["192.0.2.2"]);
        assert_eq!(b.count(), 1);
    });
}

#[test]
fn all_servers_failing_gives_servfail_quickly() {
    bounded(LIMIT, async {
        let a = Fake::black_hole().await;
        let b = Fake::rcode(ResponseCode::ServFail).await;
        let c = Fake::rcode(ResponseCode::Refused).await;
        let d = Daemon::start(&one_zone(&[&a, &b, &c], "")).await;
        let started = Instant::now();
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        let took = started.elapsed();
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert_eq!(
            (a.count(), b.count(), c.count()),
            (1, 1, 1),
            "each asked once, in order"
        );
    });
}

#[test]
fn five_black_holes_still_answer_servfail_inside_five_seconds() {
    bounded(LIMIT, async {
        let mut fakes = Vec::new();
        for _ in 0..5 {
            fakes.push(Fake::black_hole().await);
        }
        let refs: Vec<&Fake> = fakes.iter().collect();
        // Default timeout_ms (1000) x 5 servers would be 5 s: the total deadline must cut in.
        let d = Daemon::start(&one_zone(&refs, "")).await;
        let started = Instant::now();
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        let took = started.elapsed();
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert!(
            took < Duration::from_millis(4500),
            "SERVFAIL must come well inside musl's 5 s timeout; took {took:?}"
        );
        assert_eq!(fakes[0].count(), 1, "the first server is always asked");
        assert!(
            fakes[1].count() <= 1 && fakes[4].count() <= 1,
            "never asked twice in one query"
        );
    });
}

#[test]
fn dead_primary_is_skipped_by_back_off() {
    bounded(LIMIT, async {
        let a = Fake::black_hole().await;
        let b = Fake::answering(second_table()).await;
        let d = Daemon::start(&one_zone(&[&a, &b], "timeout_ms = 300")).await;
        let mut took = Vec::new();
        for _ in 0..8 {
            let started = Instant::now();
            let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
            took.push(started.elapsed());
            assert_eq!(rdata_strings(&r.answers), ["192.0.2.2"]);
        }
        assert_eq!(b.count(), 8);
        assert!(
            a.count() < 8,
            "the dead primary was asked on every query ({}); timings {took:?}",
            a.count()
        );
        let last = took[took.len() - 1];
        assert!(
            last < Duration::from_millis(200),
            "after back-off the query must not wait for the dead primary: {took:?}"
        );
    });
}

#[test]
fn when_every_server_is_backed_off_all_are_still_tried() {
    bounded(LIMIT, async {
        let a = Fake::black_hole().await;
        let b = Fake::black_hole().await;
        let d = Daemon::start(&one_zone(&[&a, &b], "timeout_ms = 200")).await;
        for _ in 0..5 {
            let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
            assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        }
        let before = (a.count(), b.count());
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        let after = (a.count(), b.count());
        assert!(
            after.0 > before.0 && after.1 > before.1,
            "with every server down, all must be tried: before {before:?} after {after:?}"
        );
    });
}

#[test]
fn slow_but_alive_primary_within_timeout_still_answers() {
    bounded(LIMIT, async {
        let a = Fake::start(Behaviour::Delay(Duration::from_millis(150)), public_table()).await;
        let b = Fake::answering(second_table()).await;
        let d = Daemon::start(&one_zone(&[&a, &b], "timeout_ms = 1000")).await;
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(rdata_strings(&r.answers), ["93.184.216.34"]);
        assert_eq!(
            b.count(),
            0,
            "B is not raced against a slow A (no parallel queries)"
        );
    });
}

/// A lost datagram to a zone's only server (Consul, libvirt's dnsmasq) costs a retry, not
/// a SERVFAIL: when nobody answered at all, the servers are asked once more while the
/// deadline allows.
#[test]
fn lost_datagram_to_the_only_server_is_retried() {
    bounded(LIMIT, async {
        let a = Fake::answering(public_table()).await;
        a.set_behaviour(Behaviour::BlackHole);
        let d = Daemon::start(&one_zone(&[&a], "timeout_ms = 500")).await;
        let client = tokio::spawn({
            let addr = d.udp;
            async move { client::udp(addr, &query("www.example.com.", RecordType::A)).await }
        });
        // The first datagram is swallowed; the server is back before the retry.
        tokio::time::sleep(Duration::from_millis(250)).await;
        a.set_behaviour(Behaviour::Answer);
        let r = client.await.unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(rdata_strings(&r.answers), ["93.184.216.34"]);
        assert_eq!(a.udp_count(), 2, "asked twice: the lost try and the retry");
        let ev = d.event_for("www.example.com").await;
        let outcomes: Vec<String> = ev.attempts.iter().map(|t| t.outcome.clone()).collect();
        assert_eq!(outcomes, ["timeout", "answer"]);
    });
}

/// A server that answered (even SERVFAIL) is not asked again in the same query.
#[test]
fn no_retry_pass_when_a_server_answered() {
    bounded(LIMIT, async {
        let a = Fake::black_hole().await;
        let b = Fake::rcode(ResponseCode::ServFail).await;
        let d = Daemon::start(&one_zone(&[&a, &b], "timeout_ms = 200")).await;
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert_eq!((a.count(), b.count()), (1, 1));
    });
}
