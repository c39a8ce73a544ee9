//! The request path on arbitrary client bytes: the hand-written fast parse
//! (`wire::parse_query`), the full parse behind it (`forward::classify`), the cache key and
//! the query we would send upstream. Nothing may panic, and what we produce must be
//! well-formed by our own parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use splitdns::forward::{self, Rejected};
use splitdns::local;
use splitdns::route::RouteTable;
use splitdns::wire::{self, Query};

/// Checks that hold for every query we accept, from either parser.
fn check_query(q: &Query<'_>, key: &mut Vec<u8>) {
    wire::cache_key(q, key);
    assert!(!key.is_empty());
    // The key's name part is the question's name, lower-cased.
    let name = wire::key_qname(key);
    assert_eq!(name.len(), q.qname().len());
    assert!(name.eq_ignore_ascii_case(q.qname()));
    let _ = q.udp_limit();
    let mut text = String::new();
    wire::name_to_text(q.qname(), &mut text);

    // Queries answered locally (zone transfers, CHAOS, localhost, RFC 6303): the answer is
    // a well-formed reply to this query, with an OPT exactly when the query had one.
    let routes = RouteTable::new([(".", 0)]);
    if let Some(rule) = local::classify(wire::key_qname(key), q.qtype, q.qclass, &routes) {
        let a = local::answer(rule, q, wire::key_qname(key));
        let r = wire::walk_reply(&a).expect("local answer walks");
        assert_eq!(r.id, q.id);
        assert!(r.flags & 0x8000 != 0);
        assert!(wire::same_question(&a, &r, q.question));
        assert_eq!(r.opt().is_some(), q.edns.is_some());
    }

    // What we forward must be a query our own fast parse accepts, with the same question.
    let up = wire::upstream_query(q, 0xbeef);
    let again = wire::parse_query(&up).expect("our upstream query parses");
    assert_eq!(again.id, 0xbeef);
    assert_eq!(again.question, q.question);
    assert_eq!(again.flags, q.flags);
}

fuzz_target!(|data: &[u8]| {
    let mut key = Vec::new();
    if let Ok(q) = wire::parse_query(data) {
        check_query(&q, &mut key);
    }
    match forward::classify(data) {
        Ok(owned) => check_query(&owned.as_query(), &mut key),
        Err(Rejected::Reply(reply, why)) => {
            // Error replies (FORMERR, NOTIMP, BADVERS) are responses our walker accepts.
            let r = wire::walk_reply(&reply).unwrap_or_else(|e| panic!("{why}: {e}"));
            assert!(r.flags & 0x8000 != 0, "{why}: QR set");
            // RFC 6891 §6.1.1: a query with a valid OPT gets one back, errors included.
            if wire::client_opt(data).is_some() {
                assert!(r.opt().is_some(), "{why}: OPT echoed");
            }
            if data.len() >= 2 {
                assert_eq!(
                    r.id,
                    u16::from_be_bytes([data[0], data[1]]),
                    "{why}: ID kept"
                );
            }
        }
        Err(Rejected::Drop(_)) => {}
    }
});
