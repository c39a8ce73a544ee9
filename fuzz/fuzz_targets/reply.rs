//! The reply path on arbitrary bytes received from an upstream for a fixed query: the
//! wire walker (`wire::walk_reply`), the SOA negative TTL, the client reply built from the
//! upstream's bytes, truncation to 512 bytes, and a cache insert/get round trip. Nothing
//! may panic, and what we build must be well-formed by our own walker.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use splitdns::cache::{self, Cache, Lookup};
use splitdns::config::CacheConfig;
use splitdns::wire::{self, TYPE_SOA};

/// `www.Example.com. A` with EDNS (payload 1232, DO), ID 0x1234.
const QUERY_EDNS: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\
\x03www\x07Example\x03com\x00\x00\x01\x00\x01\
\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00";
/// The same question without EDNS (what musl sends).
const QUERY_PLAIN: &[u8] = b"\x12\x35\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
\x03www\x07Example\x03com\x00\x00\x01\x00\x01";

fn cfg() -> CacheConfig {
    CacheConfig {
        max_entries: 16,
        max_bytes: 1 << 20,
        min_ttl_secs: 0,
        max_ttl_secs: 86_400,
        max_negative_ttl_secs: 3_600,
        serve_stale: true,
    }
}

fn one(data: &[u8], query: &[u8]) {
    let q = wire::parse_query(query).expect("fixed query parses");
    let Ok(reply) = wire::walk_reply(data) else {
        // Truncating garbage must not panic either.
        let _ = wire::truncate(data, 512);
        return;
    };
    for rr in &reply.rrs {
        assert!(rr.start < rr.end && rr.end <= data.len());
        assert!(rr.rdata.end <= rr.end && rr.ttl_at + 4 <= rr.end);
        if rr.rtype == TYPE_SOA {
            let _ = wire::soa_negative_ttl(data, rr);
        }
    }
    let _ = wire::same_question(data, &reply, q.question);
    let _ = cache::lifetime(data, &reply, &cfg());
    let _ = wire::truncate(data, 512);

    let Some(client) = wire::client_reply(data, &reply, &q) else {
        return;
    };
    let walked = wire::walk_reply(&client).expect("client reply walks");
    assert!(wire::same_question(&client, &walked, q.question));
    if client.len() > 512 {
        let cut = wire::truncate(&client, 512);
        let w = wire::walk_reply(&cut).expect("truncated reply walks");
        assert!(cut.len() <= 512, "truncated to {} bytes", cut.len());
        // RFC 2181 §9: no TC unless a required RRset (at least the answer) was cut.
        if !w.truncated() {
            assert_eq!(w.section(0).count(), walked.section(0).count());
        }
        assert_eq!(w.opt().is_some(), walked.opt().is_some(), "OPT kept");
    }
    // An Extended DNS Error added to an EDNS client's reply keeps it well-formed, and it
    // still truncates to 512 bytes.
    let mut with_ede = client.clone();
    if wire::add_ede(
        &mut with_ede,
        wire::ede::NO_REACHABLE_AUTHORITY,
        "udp 10.0.0.1:53 timeout",
    ) {
        let w = wire::walk_reply(&with_ede).expect("reply with EDE walks");
        assert_eq!(w.rrs.len(), walked.rrs.len());
        assert!(wire::truncate(&with_ede, 512).len() <= 512);
    }

    // Cache round trip: what comes back is the same message with TTLs at most the lifetime.
    let Some(life) = cache::lifetime(&client, &walked, &cfg()) else {
        return;
    };
    let c = Cache::new(16, true);
    let zone: Arc<str> = Arc::from(".");
    let mut key = Vec::new();
    wire::cache_key(&q, &mut key);
    let now = Instant::now();
    c.insert(&key, &zone, &client, life, now);
    let mut out = Vec::new();
    match c.get(&key, q.question, now, false, &mut out) {
        Lookup::Hit(z) => assert_eq!(&*z, "."),
        other => panic!("fresh entry not found: {other:?}"),
    }
    assert_eq!(out.len(), client.len());
    let back = wire::walk_reply(&out).expect("cached reply walks");
    assert_eq!(back.rrs.len(), walked.rrs.len());
    for (a, b) in back.rrs.iter().zip(&walked.rrs) {
        assert_eq!((a.start, a.end, a.rtype), (b.start, b.end, b.rtype));
        if a.rtype != wire::TYPE_OPT {
            assert_eq!(a.ttl, b.ttl.min(life), "TTL capped at the lifetime");
        }
    }
    // Expired: a miss, and stale only when asked for.
    let later = now + Duration::from_secs(u64::from(life) + 1);
    assert_eq!(
        c.get(&key, q.question, later, false, &mut out),
        Lookup::Miss
    );
    assert!(matches!(
        c.get(&key, q.question, later, true, &mut out),
        Lookup::Stale(_)
    ));
}

fuzz_target!(|data: &[u8]| {
    one(data, QUERY_EDNS);
    one(data, QUERY_PLAIN);
});
