//! Forwarding-loop detection per query. Every query splitdns sends upstream with EDNS
//! carries a marker in an EDNS option ([`LOOP_OPTION`], local/experimental range): a
//! 16-byte token (seconds since start, a random nonce, and a keyed hash binding both to
//! the lower-cased QNAME under a per-process secret). Forwarders such as dnsmasq pass the
//! OPT record on unchanged, so when a server forwards a name it does not know back to us
//! the query arrives with our own token. [`Loops::inspect`] recognises it; the caller
//! answers that copy SERVFAIL at once instead of forwarding it again, which ends the loop
//! after one round trip. The original query then gets that SERVFAIL back from the server,
//! sees its nonce flagged ([`Loops::came_back`]), records the attempt as `loop` and goes on
//! to the next server. Only the looping names are affected: the server keeps answering the
//! names it knows.
//!
//! Tokens from other forwarders (another splitdns) found in a client's query are passed
//! on with ours (at most `MAX_VIA`), so a loop through several forwarders that each add
//! a token is caught by whichever one sees its own token return.
//!
//! A path that drops unknown EDNS options (or a server asked without EDNS) cannot be
//! caught this way; such a loop still ends at the query deadline.
//!
//! Owns the token format and the recently-looped table; does no I/O and keeps no
//! per-query state beyond one atomic slot per detected loop.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use crate::wire;

/// The EDNS option code of the loop marker (RFC 6891 §9: 65001–65534 is for local and
/// experimental use).
pub const LOOP_OPTION: u16 = 65_353;
/// Bytes per token.
const TOKEN: usize = 16;
/// Foreign tokens passed on (the rest are dropped; the option stays small).
const MAX_VIA: usize = 3;
/// A token older than this is not ours any more (queries end in 3.5 s).
const TOKEN_LIFE: u32 = 30;
/// Slots remembering nonces of queries that came back.
const SLOTS: usize = 64;

/// The loop detector, one per process (kept across reloads).
#[derive(Debug)]
pub struct Loops {
    secret: std::hash::RandomState,
    origin: Instant,
    /// Nonces of exchanges whose query came back, at `nonce % SLOTS`.
    looped: [AtomicU32; SLOTS],
}

impl Default for Loops {
    fn default() -> Loops {
        Loops {
            secret: std::hash::RandomState::new(),
            origin: Instant::now(),
            looped: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// What a client's query carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    /// One of our own tokens: this query is ours, come back.
    pub ours: bool,
    /// Other forwarders' tokens to pass on (concatenated, at most `MAX_VIA`).
    pub via: Vec<u8>,
}

/// The longest option a marker makes: its header, our token and `MAX_VIA` foreign ones.
const OPTION_MAX: usize = 4 + TOKEN * (1 + MAX_VIA);

/// One exchange's token and the OPT options that carry it (and any foreign ones).
#[derive(Debug, Clone)]
pub struct Marker {
    /// The nonce, to ask [`Loops::came_back`] after the reply.
    pub nonce: u32,
    option: [u8; OPTION_MAX],
    len: usize,
}

impl Marker {
    /// The option, ready to put in the OPT record.
    pub fn options(&self) -> &[u8] {
        self.option.get(..self.len).unwrap_or(&[])
    }
}

impl Loops {
    fn now_secs(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.origin).as_secs()).unwrap_or(u32::MAX)
    }

    /// The keyed hash binding a token's time and nonce to a name (compared without case).
    /// One `write` of one buffer: SipHash's per-call overhead dominates for short input.
    fn mac(&self, secs: u32, nonce: u32, qname: &[u8]) -> u64 {
        let mut input = [0u8; 8 + 255];
        input[..4].copy_from_slice(&secs.to_be_bytes());
        input[4..8].copy_from_slice(&nonce.to_be_bytes());
        let n = qname.len().min(255);
        for (d, s) in input[8..8 + n].iter_mut().zip(qname) {
            *d = s.to_ascii_lowercase();
        }
        let mut h = self.secret.build_hasher();
        h.write(&input[..8 + n]);
        h.finish()
    }

    /// A new token for a query for `qname` (any case), with the client's foreign tokens.
    pub fn marker(&self, qname: &[u8], via: &[u8], now: Instant) -> Marker {
        let nonce = rand::random::<u32>().max(1);
        let secs = self.now_secs(now);
        let via = &via[..via.len().min(MAX_VIA * TOKEN) / TOKEN * TOKEN];
        let len = TOKEN + via.len();
        let mut option = [0u8; OPTION_MAX];
        option[..2].copy_from_slice(&LOOP_OPTION.to_be_bytes());
        option[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        option[4..4 + via.len()].copy_from_slice(via);
        let t = 4 + via.len();
        option[t..t + 4].copy_from_slice(&secs.to_be_bytes());
        option[t + 4..t + 8].copy_from_slice(&nonce.to_be_bytes());
        option[t + 8..t + 16].copy_from_slice(&self.mac(secs, nonce, qname).to_be_bytes());
        Marker {
            nonce,
            option,
            len: 4 + len,
        }
    }

    /// Reads the loop tokens of a client's query (raw packet, lower-cased QNAME). A token
    /// of ours flags its nonce for [`Loops::came_back`].
    pub fn inspect(&self, pkt: &[u8], lower_qname: &[u8], now: Instant) -> Marks {
        let mut marks = Marks::default();
        let Some(data) = option_data(pkt) else {
            return marks;
        };
        let secs_now = self.now_secs(now);
        for t in data.chunks_exact(TOKEN) {
            let secs = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
            let nonce = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
            let mac = u64::from_be_bytes([t[8], t[9], t[10], t[11], t[12], t[13], t[14], t[15]]);
            if secs_now.wrapping_sub(secs) <= TOKEN_LIFE
                && self.mac(secs, nonce, lower_qname) == mac
            {
                marks.ours = true;
                self.looped[nonce as usize % SLOTS].store(nonce, Ordering::Relaxed);
            } else {
                marks.via.extend_from_slice(t);
            }
        }
        let keep = marks.via.len().min(MAX_VIA * TOKEN);
        marks.via.drain(..marks.via.len() - keep);
        marks
    }

    /// True (once) if the query sent with `nonce` came back to us.
    pub fn came_back(&self, nonce: u32) -> bool {
        self.looped[nonce as usize % SLOTS]
            .compare_exchange(nonce, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// The data of the first [`LOOP_OPTION`] in a query's OPT record, if any.
fn option_data(pkt: &[u8]) -> Option<&[u8]> {
    // Cheap exit: no additional records.
    if pkt.get(10..12)? == [0, 0] {
        return None;
    }
    let msg = wire::walk_reply(pkt).ok()?;
    let opt = msg.opt()?;
    let mut rest = pkt.get(opt.rdata.clone())?;
    while rest.len() >= 4 {
        let code = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let data = rest.get(4..4 + len)?;
        if code == LOOP_OPTION {
            return Some(data);
        }
        rest = &rest[4 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Query, QueryFlags};
    use std::time::Duration;

    fn query_with(options: &[u8]) -> Vec<u8> {
        let question = b"\x03www\x07example\x03com\x00\x00\x01\x00\x01";
        let q = Query {
            id: 7,
            flags: QueryFlags {
                rd: true,
                cd: false,
                ad: false,
            },
            question,
            qtype: 1,
            qclass: 1,
            edns: None,
        };
        wire::upstream_query_with(&q, 9, Some(options))
    }

    const QNAME: &[u8] = b"\x03www\x07example\x03com\x00";

    #[test]
    fn a_token_made_for_a_mixed_case_name_is_recognised_by_its_lower_case_name() {
        let l = Loops::default();
        let now = Instant::now();
        let m = l.marker(b"\x03WwW\x07ExAmPlE\x03cOm\x00", &[], now);
        let marks = l.inspect(&query_with(m.options()), QNAME, now);
        assert!(marks.ours);
        assert!(l.came_back(m.nonce));
    }

    #[test]
    fn our_token_is_recognised_once_and_only_for_its_name() {
        let l = Loops::default();
        let now = Instant::now();
        let m = l.marker(QNAME, &[], now);
        let pkt = query_with(m.options());
        assert!(!l.came_back(m.nonce));
        let marks = l.inspect(&pkt, QNAME, now);
        assert!(marks.ours);
        assert!(marks.via.is_empty());
        assert!(l.came_back(m.nonce));
        assert!(!l.came_back(m.nonce), "reported once");
        // Another name with the same token: not ours (passed on as foreign).
        let other = l.inspect(&pkt, b"\x03ftp\x07example\x03com\x00", now);
        assert!(!other.ours);
        assert_eq!(other.via.len(), TOKEN);
        // Another process's secret: foreign.
        let stranger = Loops::default();
        assert!(!stranger.inspect(&pkt, QNAME, now).ours);
        // Too old.
        let late = now + Duration::from_secs(u64::from(TOKEN_LIFE) + 2);
        assert!(!l.inspect(&pkt, QNAME, late).ours);
    }

    #[test]
    fn foreign_tokens_are_passed_on_bounded() {
        let l = Loops::default();
        let other = Loops::default();
        let now = Instant::now();
        let mut via = Vec::new();
        for _ in 0..5 {
            let m = other.marker(QNAME, &[], now);
            via.extend_from_slice(&m.options()[4..]);
        }
        let ours = l.marker(QNAME, &via, now);
        assert_eq!(ours.options().len(), 4 + TOKEN * (MAX_VIA + 1));
        let marks = other.inspect(&query_with(ours.options()), QNAME, now);
        assert!(
            marks.ours,
            "the other forwarder sees its own token come back"
        );
        assert!(marks.via.len() <= MAX_VIA * TOKEN);
    }

    #[test]
    fn queries_without_the_option_are_not_marked() {
        let l = Loops::default();
        let now = Instant::now();
        assert_eq!(l.inspect(&query_with(&[]), QNAME, now), Marks::default());
        assert_eq!(l.inspect(&[1, 2, 3], QNAME, now), Marks::default());
        let mut junk = query_with(&[0xfe, 0xe9, 0, 40, 1, 2]);
        assert!(!l.inspect(&junk, QNAME, now).ours);
        junk.truncate(junk.len() - 3);
        assert!(!l.inspect(&junk, QNAME, now).ours);
    }
}
