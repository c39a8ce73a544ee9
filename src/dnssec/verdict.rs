//! Pure parts of validation: turning hickory's per-record proofs into one verdict with an
//! Extended DNS Error (RFC 8914) that says why, and shaping the client's reply (AD bit,
//! DNSSEC records only for DO clients, the bogus SERVFAIL). No I/O.

use hickory_net::{DnsError, NetError};
use hickory_proto::dnssec::rdata::{DNSSECRData, RRSIG};
use hickory_proto::dnssec::Proof;
use hickory_proto::op::{DnsResponse, Message};
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
            proof, response, ..
        })) => {
            return match proof {
                Proof::Secure => Verdict::new(DnssecOutcome::Secure),
                Proof::Insecure => Verdict::new(DnssecOutcome::Insecure),
                Proof::Indeterminate => Verdict::new(DnssecOutcome::Indeterminate),
                Proof::Bogus if net_failed => unreachable_chain(),
                Proof::Bogus => {
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
    } else {
        Verdict {
            ttl_cap,
            ..Verdict::new(DnssecOutcome::Secure)
        }
    }
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
