//! Pure parts of validation: turning hickory's per-record proofs into one verdict with an
//! Extended DNS Error (RFC 8914) that says why (including the NSEC wildcard-expansion proof
//! hickory-net 0.26.3 rejects, checked here from the records it verified), and shaping the
//! client's reply (AD bit, DNSSEC records only for DO clients, the bogus SERVFAIL). No I/O.

use hickory_net::{DnsError, NetError};
use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC, RRSIG};
use hickory_proto::dnssec::Proof;
use hickory_proto::op::{DnsResponse, Message, Query as HQuery, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::event::DnssecOutcome;
use crate::wire::{self, rcode, Query};

/// RFC 8914 info-codes we send.
pub mod ede {
    /// Other.
    pub const OTHER: u16 = 0;
    /// DNSSEC Bogus.
    pub const BOGUS: u16 = 6;
    /// Signature Expired.
    pub const SIG_EXPIRED: u16 = 7;
    /// Signature Not Yet Valid.
    pub const SIG_NOT_YET_VALID: u16 = 8;
    /// DNSKEY Missing.
    pub const DNSKEY_MISSING: u16 = 9;
    /// RRSIGs Missing.
    pub const RRSIGS_MISSING: u16 = 10;
    /// NSEC Missing.
    pub const NSEC_MISSING: u16 = 12;
    /// No Reachable Authority.
    pub const NO_REACHABLE_AUTHORITY: u16 = 22;
}

/// The verdict on one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Secure, insecure, bogus or indeterminate.
    pub outcome: DnssecOutcome,
    /// For bogus and indeterminate: the EDE code and why.
    pub why: Option<(u16, String)>,
    /// For secure answers: the TTL the signatures allow (RRSIG original TTL and expiry).
    pub ttl_cap: Option<u32>,
    /// For bogus positive data: the rrset that failed, to diagnose further.
    pub failed: Option<(Name, RecordType)>,
}

impl Verdict {
    fn new(outcome: DnssecOutcome) -> Verdict {
        Verdict {
            outcome,
            why: None,
            ttl_cap: None,
            failed: None,
        }
    }

    /// A bogus verdict with its EDE code and reason.
    pub fn bogus(code: u16, why: String) -> Verdict {
        Verdict {
            why: Some((code, why)),
            ..Verdict::new(DnssecOutcome::Bogus)
        }
    }

    /// An indeterminate verdict (validation could not finish).
    pub fn indeterminate(code: u16, why: String) -> Verdict {
        Verdict {
            why: Some((code, why)),
            ..Verdict::new(DnssecOutcome::Indeterminate)
        }
    }
}

fn is_dnssec_meta(t: RecordType) -> bool {
    matches!(t, RecordType::RRSIG)
}

/// Judges the validator's result for the client's question. `net_failed` is true when a
/// lookup the chain needed got no answer from any server (then a failed proof means "could
/// not check", not "attack").
pub fn judge(result: &Result<DnsResponse, NetError>, net_failed: bool) -> Verdict {
    let msg: &Message = match result {
        Ok(r) => r,
        Err(NetError::Dns(DnsError::Nsec {
            query,
            proof,
            response,
            ..
        })) => {
            return match proof {
                Proof::Secure => Verdict::new(DnssecOutcome::Secure),
                Proof::Insecure => Verdict::new(DnssecOutcome::Insecure),
                Proof::Indeterminate => Verdict::new(DnssecOutcome::Indeterminate),
                Proof::Bogus if net_failed => unreachable_chain(),
                Proof::Bogus => {
                    // hickory-net 0.26.3 rejects every NSEC-signed wildcard expansion (its
                    // verify_nsec looks for an NSEC *covering* the wildcard name, which
                    // exists); prove it here from the records it already verified.
                    if let Some(ttl_cap) = wildcard_answer_proven(query, response) {
                        return Verdict {
                            ttl_cap: Some(ttl_cap),
                            ..Verdict::new(DnssecOutcome::Secure)
                        };
                    }
                    let has_denial = response
                        .authorities
                        .iter()
                        .any(|r| matches!(r.record_type(), RecordType::NSEC | RecordType::NSEC3));
                    if has_denial {
                        Verdict::bogus(
                            ede::BOGUS,
                            "the NSEC/NSEC3 proof of non-existence does not validate".to_owned(),
                        )
                    } else {
                        Verdict::bogus(
                            ede::NSEC_MISSING,
                            "a negative answer from a signed zone carries no NSEC or NSEC3 proof"
                                .to_owned(),
                        )
                    }
                }
            };
        }
        Err(e) if net_failed => {
            let _ = e;
            return unreachable_chain();
        }
        Err(e) => {
            return Verdict::bogus(ede::BOGUS, format!("validation failed: {e}"));
        }
    };
    let mut any_insecure = false;
    let mut any_indeterminate = false;
    let mut ttl_cap: Option<u32> = None;
    for r in msg.answers.iter().chain(msg.authorities.iter()) {
        if is_dnssec_meta(r.record_type()) {
            continue;
        }
        match r.proof {
            Proof::Bogus if net_failed => return unreachable_chain(),
            Proof::Bogus => {
                return Verdict {
                    failed: Some((r.name.clone(), r.record_type())),
                    ..Verdict::bogus(ede::BOGUS, String::new())
                }
            }
            Proof::Secure => ttl_cap = Some(ttl_cap.map_or(r.ttl, |t| t.min(r.ttl))),
            Proof::Insecure => any_insecure = true,
            Proof::Indeterminate => any_indeterminate = true,
        }
    }
    if any_insecure {
        Verdict::new(DnssecOutcome::Insecure)
    } else if any_indeterminate {
        Verdict::new(DnssecOutcome::Indeterminate)
    } else if ttl_cap.is_none() {
        // Nothing to prove (an empty NOERROR the validator accepted as insecure).
        Verdict::new(DnssecOutcome::Insecure)
    } else if unproven_nsec_wildcard(msg) {
        Verdict::bogus(
            ede::BOGUS,
            "a wildcard expansion without an NSEC proving that no closer name exists".to_owned(),
        )
    } else {
        Verdict {
            ttl_cap,
            ..Verdict::new(DnssecOutcome::Secure)
        }
    }
}

/// True for an answer hickory accepted whose wildcard expansion, proven with NSEC, does not
/// pass [`wildcard_answer_proven`]: hickory-net 0.26.3 looks for the closest encloser among
/// the NSEC names, so an NSEC at the *next closer* name (RFC 4592: `b.example` existing
/// when `a.b.example` is claimed from `*.example`) satisfies it. NSEC3 answers are left to
/// hickory (its closest-encloser proof hashes the names).
fn unproven_nsec_wildcard(msg: &Message) -> bool {
    let expanded = msg.answers.iter().any(|r| match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(s)) => {
            r.proof == Proof::Secure && s.input().num_labels < r.name.num_labels()
        }
        _ => false,
    });
    let nsec = msg
        .authorities
        .iter()
        .any(|r| r.record_type() == RecordType::NSEC);
    let Some(query) = msg.queries.first() else {
        return expanded && nsec;
    };
    expanded && nsec && wildcard_answer_proven(query, msg).is_none()
}

/// The names are the same (case-insensitive), whatever their FQDN flags.
fn same_name(a: &Name, b: &Name) -> bool {
    a.num_labels() == b.num_labels() && a.zone_of(b) && a.is_wildcard() == b.is_wildcard()
}

/// The longest name that is `a` or an ancestor of `a` and also `b` or an ancestor of `b`.
fn common_ancestor(a: &Name, b: &Name) -> Name {
    let mut n = a.clone();
    // Bounded: each step drops a label, and the root is everyone's ancestor.
    while !n.is_root() && !n.zone_of(b) {
        n = n.base_name();
    }
    n
}

/// RFC 4034 §6.1 order (hickory's `Ord` on names): `nsec` proves `name` does not exist.
fn nsec_covers(owner: &Name, nsec: &NSEC, name: &Name) -> bool {
    let next = nsec.next_domain_name();
    if owner >= name {
        return false;
    }
    // The last NSEC of a zone wraps around to the apex.
    name < next || (next <= owner && next.zone_of(name))
}

/// RFC 4035 §5.3.4 (and RFC 7129 §5.3) for a positive answer from an NSEC-signed zone that
/// hickory judged bogus: `Some(ttl cap)` when the answer is secure after all, that is when
///
/// - it answers the question (the question's type, or a CNAME chain from it, possibly ending
///   at a target the reply does not carry), and every record in the answer and authority
///   sections was verified secure by hickory;
/// - at least one answer rrset is a wildcard expansion (its verifying RRSIG has fewer labels
///   than its owner), and for each one, a verified NSEC signed by the same zone (not an
///   expanded one, not a parent-side delegation NSEC) covers the owner name (so the name
///   itself does not exist) and its closest encloser — the longest ancestor the owner
///   shares with the NSEC's owner or next name — is the wildcard's parent (so no closer
///   name, and no closer wildcard, exists).
///
/// Anything else (a forged expansion, a missing or altered NSEC, an NSEC3 answer) is `None`:
/// the answer stays bogus. No cryptography here: it only reads hickory's per-record proofs.
pub fn wildcard_answer_proven(query: &HQuery, msg: &Message) -> Option<u32> {
    if msg.metadata.response_code != ResponseCode::NoError {
        return None;
    }
    let records = || msg.answers.iter().chain(msg.authorities.iter());
    let secure_sig = |r: &Record| match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(s)) if r.proof == Proof::Secure => Some(s.clone()),
        _ => None,
    };
    // Every non-signature record proven secure.
    if !records()
        .filter(|r| r.record_type() != RecordType::RRSIG)
        .all(|r| r.proof == Proof::Secure)
    {
        return None;
    }
    // It answers the question: the question's type at the end of a CNAME chain.
    let mut at = query.name().clone();
    let mut answered = false;
    for _ in 0..=msg.answers.len() {
        let here = || msg.answers.iter().filter(|r| same_name(&r.name, &at));
        if here().any(|r| r.record_type() == query.query_type()) {
            answered = true;
            break;
        }
        let Some(RData::CNAME(target)) = here()
            .find(|r| r.record_type() == RecordType::CNAME)
            .map(|r| &r.data)
        else {
            break;
        };
        at = target.0.clone();
        // A chain may end at a CNAME whose target the reply does not carry (an
        // authoritative upstream stops at its zone's edge): that is still the answer.
        if !msg.answers.iter().any(|r| same_name(&r.name, &at)) {
            answered = true;
            break;
        }
    }
    if !answered {
        return None;
    }
    // The verified NSECs, each with the zone that signed it.
    let nsecs: Vec<(&Name, &NSEC, Name)> = msg
        .authorities
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::NSEC(n)) if r.proof == Proof::Secure => Some((r, n)),
            _ => None,
        })
        .filter_map(|(r, n)| {
            let sig = msg
                .authorities
                .iter()
                .filter(|s| same_name(&s.name, &r.name))
                .filter_map(secure_sig)
                .find(|s| s.input().type_covered == RecordType::NSEC)?;
            let signer = sig.input().signer_name.clone();
            // Not an expanded wildcard NSEC (CVE-2017-15105), and in the signer's zone.
            (sig.input().num_labels == r.name.num_labels() && signer.zone_of(&r.name))
                .then_some((&r.name, n, signer))
        })
        .collect();
    let mut expansions = 0usize;
    for r in msg.answers.iter() {
        let Some(sig) = secure_sig(r) else { continue };
        let labels = sig.input().num_labels;
        if labels >= r.name.num_labels() {
            continue;
        }
        expansions += 1;
        let owner = &r.name;
        let parent = owner.trim_to(usize::from(labels));
        let signer = &sig.input().signer_name;
        if !signer.zone_of(&parent) {
            return None;
        }
        let proven = nsecs.iter().any(|(nsec_owner, nsec, nsec_signer)| {
            if !same_name(nsec_signer, signer) || !nsec_covers(nsec_owner, nsec, owner) {
                return false;
            }
            // RFC 6840 §4.1: a parent-side (or DNAME) NSEC says nothing below its owner.
            if nsec.is_ancestor_delegation() && nsec_owner.zone_of(owner) {
                return false;
            }
            let a = common_ancestor(owner, nsec_owner);
            let b = common_ancestor(owner, nsec.next_domain_name());
            let encloser = if a.num_labels() >= b.num_labels() {
                a
            } else {
                b
            };
            same_name(&encloser, &parent)
        });
        if !proven {
            return None;
        }
    }
    if expansions == 0 {
        return None;
    }
    records()
        .filter(|r| r.record_type() != RecordType::RRSIG)
        .map(|r| r.ttl)
        .min()
}

fn unreachable_chain() -> Verdict {
    Verdict::indeterminate(
        ede::NO_REACHABLE_AUTHORITY,
        "a DNSKEY/DS lookup the chain needed got no answer from any server".to_owned(),
    )
}

/// What the signatures on a failed rrset say, before any key is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signatures {
    /// No RRSIG covers it.
    Missing,
    /// Every covering RRSIG expired (the latest expiry, seconds since the epoch).
    Expired(u32),
    /// Every covering RRSIG is not yet valid (the earliest inception).
    NotYetValid(u32),
    /// Signatures in their validity window, made by this signer.
    Signer(Name),
}

/// Looks at the RRSIGs covering `name`/`rtype` in the (unvalidated) reply.
pub fn signatures(msg: &Message, name: &Name, rtype: RecordType, now: u32) -> Signatures {
    let sigs: Vec<&RRSIG> = msg
        .answers
        .iter()
        .chain(msg.authorities.iter())
        .filter(|r| &r.name == name)
        .filter_map(|r: &Record| match &r.data {
            RData::DNSSEC(DNSSECRData::RRSIG(s)) if s.input().type_covered == rtype => Some(s),
            _ => None,
        })
        .collect();
    if sigs.is_empty() {
        return Signatures::Missing;
    }
    // RFC 4034 §3.1.5: serial-number arithmetic on 32-bit times.
    let before = |a: u32, b: u32| (b.wrapping_sub(a) as i32) > 0;
    if sigs
        .iter()
        .all(|s| before(s.input().sig_expiration.get(), now))
    {
        let latest = sigs
            .iter()
            .map(|s| s.input().sig_expiration.get())
            .max()
            .unwrap_or(0);
        return Signatures::Expired(latest);
    }
    if sigs
        .iter()
        .all(|s| before(now, s.input().sig_inception.get()))
    {
        let earliest = sigs
            .iter()
            .map(|s| s.input().sig_inception.get())
            .min()
            .unwrap_or(0);
        return Signatures::NotYetValid(earliest);
    }
    Signatures::Signer(sigs[0].input().signer_name.clone())
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(secs: u32) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(secs));
    let s = crate::event::rfc3339(t);
    // rfc3339 gives microseconds; whole seconds read better here.
    match s.split_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => s,
    }
}

/// Removes RRSIG, NSEC and NSEC3 records (RFC 4035 §3.2.1: not for DO=0 clients, unless
/// asked for by type) from a reply, re-encoding it. `None` if it cannot be parsed.
pub fn strip_dnssec(msg: &[u8], qtype: u16) -> Option<Vec<u8>> {
    let strip = |r: &Record| {
        let t = r.record_type();
        matches!(t, RecordType::RRSIG | RecordType::NSEC | RecordType::NSEC3)
            && u16::from(t) != qtype
    };
    let reply = wire::walk_reply(msg).ok()?;
    if !reply
        .rrs
        .iter()
        .any(|r| matches!(r.rtype, 46 | 47 | 50) && r.rtype != qtype)
    {
        return Some(msg.to_vec());
    }
    let mut m = Message::from_vec(msg).ok()?;
    m.answers.retain(|r| !strip(r));
    m.authorities.retain(|r| !strip(r));
    m.additionals.retain(|r| !strip(r));
    m.to_vec().ok()
}

/// The first Extended DNS Error (RFC 8914) in a reply's OPT: info-code and text (lossy
/// UTF-8). `None` without OPT or EDE, or if the reply does not parse.
pub fn ede_of(msg: &[u8]) -> Option<(u16, String)> {
    let reply = wire::walk_reply(msg).ok()?;
    let opt = reply.opt()?;
    let rdata = msg.get(opt.rdata.clone())?;
    let mut at = 0usize;
    // Bounded: each option advances by at least its 4-byte header.
    while let Some(head) = rdata.get(at..at + 4) {
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let body = rdata.get(at + 4..at + 4 + len)?;
        if code == 15 {
            let info = body.get(..2)?;
            let text = String::from_utf8_lossy(body.get(2..).unwrap_or(&[]));
            return Some((u16::from_be_bytes([info[0], info[1]]), text.into_owned()));
        }
        at += 4 + len;
    }
    None
}

/// Sets or clears the AD bit of a reply in place.
pub fn set_ad(msg: &mut [u8], ad: bool) {
    if let Some(b) = msg.get_mut(3) {
        if ad {
            *b |= 0x20;
        } else {
            *b &= !0x20;
        }
    }
}

/// SERVFAIL for a bogus or indeterminate answer: the client's question, RD and CD copied,
/// RA set, and — when the client sent EDNS — an OPT carrying the EDE `code` and `text`
/// (cut to the wire module's limit on a character boundary).
pub fn servfail_with_ede(q: &Query<'_>, code: u16, text: &str) -> Vec<u8> {
    let mut out = wire::error_reply(0, 0, q.flags, Some(q.question), q.edns, rcode::SERVFAIL);
    if q.edns.is_some() {
        wire::add_ede(&mut out, code, text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ClientEdns, QueryFlags};

    fn q(question: &[u8], edns: Option<ClientEdns>) -> Query<'_> {
        Query {
            id: 7,
            flags: QueryFlags {
                rd: true,
                cd: false,
                ad: false,
            },
            question,
            qtype: 1,
            qclass: 1,
            edns,
        }
    }

    #[test]
    fn servfail_carries_ede_only_with_edns() {
        let question = b"\x03www\x03tld\x00\x00\x01\x00\x01";
        let e = ClientEdns {
            payload: 1232,
            dnssec_ok: true,
            version: 0,
        };
        let m = servfail_with_ede(&q(question, Some(e)), ede::SIG_EXPIRED, "expired");
        let parsed = Message::from_vec(&m).unwrap();
        assert_eq!(
            parsed.metadata.response_code,
            hickory_proto::op::ResponseCode::ServFail
        );
        let opt = parsed.edns.expect("opt");
        let text = format!("{opt:?}");
        assert!(text.contains("expired") || m.windows(7).any(|w| w == b"expired"));
        let plain = servfail_with_ede(&q(question, None), ede::BOGUS, "x");
        let parsed = Message::from_vec(&plain).unwrap();
        assert!(parsed.edns.is_none());
        assert_eq!(wire::walk_reply(&plain).unwrap().rcode, rcode::SERVFAIL);
        // Long reasons are cut on a character boundary.
        let long = "é".repeat(300);
        let m = servfail_with_ede(&q(question, Some(e)), ede::BOGUS, &long);
        assert!(Message::from_vec(&m).is_ok());
        assert!(m.len() < 300);
    }

    mod wildcard {
        use super::super::wildcard_answer_proven;
        use hickory_proto::dnssec::rdata::{DNSSECRData, SigInput, NSEC, RRSIG};
        use hickory_proto::dnssec::{Algorithm, Proof};
        use hickory_proto::op::{Message, MessageType, OpCode, Query as HQuery};
        use hickory_proto::rr::rdata::{A, CNAME};
        use hickory_proto::rr::SerialNumber;
        use hickory_proto::rr::{Name, RData, Record, RecordType};

        fn n(s: &str) -> Name {
            Name::from_ascii(s).unwrap()
        }

        fn rec(name: &str, data: RData, proof: Proof) -> Record {
            let mut r = Record::from_rdata(n(name), 300, data);
            r.proof = proof;
            r
        }

        fn sig(owner: &str, covered: RecordType, labels: u8, signer: &str, proof: Proof) -> Record {
            let input = SigInput {
                type_covered: covered,
                algorithm: Algorithm::ECDSAP256SHA256,
                num_labels: labels,
                original_ttl: 300,
                sig_expiration: SerialNumber::new(2),
                sig_inception: SerialNumber::new(1),
                key_tag: 1,
                signer_name: n(signer),
            };
            let data = RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, vec![1; 64])));
            rec(owner, data, proof)
        }

        fn a(owner: &str) -> Record {
            rec(owner, RData::A(A::new(192, 0, 2, 1)), Proof::Secure)
        }

        fn nsec(owner: &str, next: &str, types: &[RecordType], proof: Proof) -> Record {
            let data = RData::DNSSEC(DNSSECRData::NSEC(NSEC::new(n(next), types.to_vec())));
            rec(owner, data, proof)
        }

        fn msg(answers: Vec<Record>, authorities: Vec<Record>) -> Message {
            let mut m = Message::new(1, MessageType::Response, OpCode::Query);
            m.answers = answers;
            m.authorities = authorities;
            m
        }

        fn q(name: &str) -> HQuery {
            HQuery::query(n(name), RecordType::A)
        }

        /// `x.wild.ex.` expanded from `*.wild.ex.` (RRSIG labels 2), and the NSEC chain's
        /// link from the wildcard: the textbook proof.
        fn expansion(qname: &str, wildcard_labels: u8, proof_nsec: Record) -> Message {
            let owner = proof_nsec.name.to_ascii();
            let labels = proof_nsec.name.num_labels();
            msg(
                vec![
                    a(qname),
                    sig(qname, RecordType::A, wildcard_labels, "ex.", Proof::Secure),
                ],
                vec![
                    proof_nsec,
                    sig(&owner, RecordType::NSEC, labels, "ex.", Proof::Secure),
                ],
            )
        }

        const T: &[RecordType] = &[RecordType::A, RecordType::RRSIG, RecordType::NSEC];

        #[test]
        fn a_proven_expansion_is_secure() {
            let good = nsec("*.wild.ex.", "www.ex.", T, Proof::Secure);
            let m = expansion("x.wild.ex.", 2, good.clone());
            assert_eq!(wildcard_answer_proven(&q("x.wild.ex."), &m), Some(300));
            // Two labels expanded.
            let m = expansion("a.b.wild.ex.", 2, good);
            assert!(wildcard_answer_proven(&q("a.b.wild.ex."), &m).is_some());
            // The last NSEC of the zone wraps around to the apex.
            let wrap = nsec("*.wild.ex.", "ex.", T, Proof::Secure);
            let m = expansion("x.wild.ex.", 2, wrap);
            assert!(wildcard_answer_proven(&q("x.wild.ex."), &m).is_some());
            // Through a CNAME whose target is the expansion.
            let mut m = expansion(
                "x.wild.ex.",
                2,
                nsec("*.wild.ex.", "www.ex.", T, Proof::Secure),
            );
            m.answers.push(rec(
                "alias.ex.",
                RData::CNAME(CNAME(n("x.wild.ex."))),
                Proof::Secure,
            ));
            m.answers
                .push(sig("alias.ex.", RecordType::CNAME, 2, "ex.", Proof::Secure));
            assert!(wildcard_answer_proven(&q("alias.ex."), &m).is_some());
        }

        #[test]
        fn no_proof_no_secure() {
            let good = || nsec("*.wild.ex.", "www.ex.", T, Proof::Secure);
            // The NSEC did not verify.
            let m = expansion(
                "x.wild.ex.",
                2,
                nsec("*.wild.ex.", "www.ex.", T, Proof::Bogus),
            );
            assert_eq!(wildcard_answer_proven(&q("x.wild.ex."), &m), None);
            // No NSEC at all.
            let mut m = expansion("x.wild.ex.", 2, good());
            m.authorities.clear();
            assert_eq!(wildcard_answer_proven(&q("x.wild.ex."), &m), None);
            // The NSEC does not cover the name (it ends before it).
            let m = expansion("x.wild.ex.", 2, nsec("ex.", "*.wild.ex.", T, Proof::Secure));
            assert_eq!(wildcard_answer_proven(&q("x.wild.ex."), &m), None);
            // An NSEC *at* the name proves it exists: an expansion there is forged.
            let m = expansion(
                "x.wild.ex.",
                2,
                nsec("x.wild.ex.", "www.ex.", T, Proof::Secure),
            );
            assert_eq!(wildcard_answer_proven(&q("x.wild.ex."), &m), None);
            // Claimed from `*.ex.` but `wild.ex.` exists (the NSEC's closest encloser is
            // wild.ex., closer than the wildcard's ex.): RFC 4592's next closer name.
            let m = expansion("x.wild.ex.", 1, good());
            assert_eq!(wildcard_answer_proven(&q("x.wild.ex."), &m), None);
            let m = expansion("a.b.ex.", 1, nsec("b.ex.", "c.ex.", T, Proof::Secure));
            assert_eq!(wildcard_answer_proven(&q("a.b.ex."), &m), None);
            // The NSEC was signed by another zone.
            let mut m = expansion("x.wild.ex.", 2, good());
            m.authorities[1] = sig("*.wild.ex.", RecordType::NSEC, 2, "other.", Proof::Secure);
            assert_eq!(wildcard_answer_proven(&q("x.wild.ex."), &m), None);
            // ...or its signature is itself a wildcard expansion (CVE-2017-15105).
            let m = expansion(
                "x.wild.ex.",
                2,
                nsec("w.wild.ex.", "www.ex.", T, Proof::Secure),
            );
            assert!(
                wildcard_answer_proven(&q("x.wild.ex."), &m).is_some(),
                "control"
            );
            let mut m2 = m.clone();
            m2.authorities[1] = sig("w.wild.ex.", RecordType::NSEC, 2, "ex.", Proof::Secure);
            assert_eq!(wildcard_answer_proven(&q("x.wild.ex."), &m2), None);
            // A parent-side delegation NSEC says nothing below its owner.
            let cut = nsec(
                "wild.ex.",
                "www.ex.",
                &[RecordType::NS, RecordType::NSEC],
                Proof::Secure,
            );
            let m = expansion("x.wild.ex.", 2, cut);
            assert_eq!(wildcard_answer_proven(&q("x.wild.ex."), &m), None);
        }

        fn judged(qname: &str, mut m: Message) -> super::super::Verdict {
            m.add_query(q(qname));
            let r = hickory_proto::op::DnsResponse::from_message(m).unwrap();
            super::super::judge(&Ok(r), false)
        }

        #[test]
        fn an_expansion_hickory_accepted_must_pass_our_proof_too() {
            use crate::event::DnssecOutcome;
            // Proven: stays secure.
            let good = nsec("*.wild.ex.", "www.ex.", T, Proof::Secure);
            let v = judged("x.wild.ex.", expansion("x.wild.ex.", 2, good));
            assert_eq!(v.outcome, DnssecOutcome::Secure, "{v:?}");
            // `a.b.ex.` claimed from `*.ex.` while `b.ex.` exists (its NSEC covers the
            // name): hickory-net 0.26.3's verify_nsec, as read, derives the wildcard from
            // the NSEC names (`*.b.ex.`, which that NSEC covers) and accepts it.
            let next_closer = nsec("b.ex.", "c.ex.", T, Proof::Secure);
            let v = judged("a.b.ex.", expansion("a.b.ex.", 1, next_closer));
            assert_eq!(v.outcome, DnssecOutcome::Bogus, "{v:?}");
            assert!(v.why.is_some_and(|w| w.1.contains("wildcard")));
            // Not an expansion: not our business, even with an NSEC around.
            let v = judged(
                "x.wild.ex.",
                expansion("x.wild.ex.", 3, nsec("b.ex.", "c.ex.", T, Proof::Secure)),
            );
            assert_eq!(v.outcome, DnssecOutcome::Secure, "{v:?}");
        }

        #[test]
        fn a_chain_may_end_at_a_cname_target_the_reply_lacks() {
            // `x.wild.ex.` CNAME (from `*.wild.ex.`) to a name in another zone, not followed.
            let mut m = msg(
                vec![
                    rec(
                        "x.wild.ex.",
                        RData::CNAME(CNAME(n("www.other."))),
                        Proof::Secure,
                    ),
                    sig("x.wild.ex.", RecordType::CNAME, 2, "ex.", Proof::Secure),
                ],
                vec![
                    nsec("*.wild.ex.", "www.ex.", T, Proof::Secure),
                    sig("*.wild.ex.", RecordType::NSEC, 2, "ex.", Proof::Secure),
                ],
            );
            assert!(wildcard_answer_proven(&q("x.wild.ex."), &m).is_some());
            // ...but a chain through names the reply carries must reach the question's
            // type: a CNAME loop is no answer.
            m.answers.push(rec(
                "www.other.",
                RData::CNAME(CNAME(n("x.wild.ex."))),
                Proof::Secure,
            ));
            assert_eq!(wildcard_answer_proven(&q("x.wild.ex."), &m), None);
        }

        #[test]
        fn only_a_wildcard_answer_to_the_question_is_considered() {
            let good = || nsec("*.wild.ex.", "www.ex.", T, Proof::Secure);
            // Not an expansion (the RRSIG labels equal the owner's).
            let m = expansion("x.wild.ex.", 3, good());
            assert_eq!(wildcard_answer_proven(&q("x.wild.ex."), &m), None);
            // The answer is for another name.
            let m = expansion("x.wild.ex.", 2, good());
            assert_eq!(wildcard_answer_proven(&q("y.wild.ex."), &m), None);
            // Some record in it did not verify.
            let mut m = expansion("x.wild.ex.", 2, good());
            m.answers[0].proof = Proof::Bogus;
            assert_eq!(wildcard_answer_proven(&q("x.wild.ex."), &m), None);
            // The RRSIG that verified the answer is not the wildcard one we were shown.
            let mut m = expansion("x.wild.ex.", 2, good());
            m.answers[1].proof = Proof::Indeterminate;
            assert_eq!(wildcard_answer_proven(&q("x.wild.ex."), &m), None);
            // Negative answers are not this function's business.
            let mut m = expansion("x.wild.ex.", 2, good());
            m.metadata.response_code = hickory_proto::op::ResponseCode::NXDomain;
            assert_eq!(wildcard_answer_proven(&q("x.wild.ex."), &m), None);
        }
    }

    #[test]
    fn ad_bit() {
        let mut m = vec![0, 0, 0x81, 0x80];
        set_ad(&mut m, true);
        assert_eq!(m[3], 0xa0);
        set_ad(&mut m, false);
        assert_eq!(m[3], 0x80);
        set_ad(&mut [], true);
    }

    #[test]
    fn utc_format() {
        assert_eq!(utc(1_580_515_200), "2020-02-01T00:00:00Z");
    }

    #[test]
    fn strip_is_identity_without_dnssec_records_and_refuses_garbage() {
        let m: Vec<u8> = vec![
            0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1,
            0, 0, 1, 44, 0, 4, 10, 0, 0, 1,
        ];
        assert_eq!(strip_dnssec(&m, 1).unwrap(), m);
        assert!(strip_dnssec(&[1, 2, 3], 1).is_none());
    }
}
