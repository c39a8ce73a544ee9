//! The DNSSEC layer's own parsing: the trust anchor file parser (`dnssec::anchor::parse`)
//! on arbitrary text, and, on arbitrary reply bytes, the verdict helpers that look at an
//! upstream's records (`verdict::signatures`, `verdict::judge` on an unvalidated message)
//! and the DO=0 stripping (`verdict::strip_dnssec`), the wildcard-expansion proof
//! (`verdict::wildcard_answer_proven`, with every record marked secure, its most permissive
//! input), the EDE reader (`verdict::ede_of`) and a cache hit's event (`dnssec::hit_event`).
//! Nothing may panic; a stripped reply must walk and carry no RRSIG/NSEC/NSEC3 unless asked
//! for by type; a proven wildcard answer must be a NOERROR with some RRSIG in its answer.
#![no_main]

use hickory_proto::dnssec::Proof;
use hickory_proto::op::{DnsResponse, Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use libfuzzer_sys::fuzz_target;
use splitdns::dnssec::{self, anchor, verdict};
use splitdns::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(records) = anchor::parse(text) {
            assert!(!records.is_empty() && records.len() <= anchor::MAX_ANCHORS);
            let a = anchor::Anchors {
                file: Some("fuzz".into()),
                records,
            };
            let _ = a.describe();
            let _ = a.direct_keys();
            let _ = anchor::unsupported(&a);
        }
    }
    let qtype = data.first().map_or(1, |b| u16::from(*b));
    if let Some(stripped) = verdict::strip_dnssec(data, qtype) {
        let r = wire::walk_reply(&stripped).expect("a stripped reply walks");
        if !matches!(qtype, 46 | 47 | 50) {
            assert!(r.rrs.iter().all(|rr| !matches!(rr.rtype, 46 | 47 | 50)));
        }
    }
    if let Ok(msg) = Message::from_vec(data) {
        let name = msg
            .answers
            .first()
            .map_or_else(Name::root, |r| r.name.clone());
        let _ = verdict::signatures(&msg, &name, RecordType::A, 1_700_000_000);
        if let Some(q) = msg.queries.first().cloned() {
            let mut all_secure = msg.clone();
            for r in all_secure
                .answers
                .iter_mut()
                .chain(all_secure.authorities.iter_mut())
            {
                r.proof = Proof::Secure;
            }
            for m in [&msg, &all_secure] {
                if verdict::wildcard_answer_proven(&q, m).is_some() {
                    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
                    assert!(m
                        .answers
                        .iter()
                        .any(|r| r.record_type() == RecordType::RRSIG));
                }
            }
        }
    }
    let _ = verdict::ede_of(data);
    let _ = dnssec::hit_event(data.first().copied().unwrap_or(0), data);
    if let Ok(resp) = DnsResponse::from_buffer(data.to_vec()) {
        let _ = verdict::judge(&Ok(resp), false);
    }
});
