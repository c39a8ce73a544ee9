//! Queries splitdns answers itself and never forwards: zone transfers (AXFR, IXFR:
//! REFUSED), CHAOS-class identity queries (`version.bind`/`version.server` answered with
//! our own name, `hostname.bind`/`id.server` and any other CHAOS query REFUSED, so the
//! upstream's identity never leaks), `localhost.` and the names under it (127.0.0.1 and ::1,
//! RFC 6761 §6.3), and the reverse zones of private and special address ranges (RFC 6303,
//! plus 100.64.0.0/10 from RFC 7793) answered NXDOMAIN with an SOA unless a configured zone
//! routes them — so a PTR lookup for a private address never goes to a public resolver.
//! `invalid.` (RFC 6761 §6.4) and `onion.` (RFC 7686) get the same treatment.
//!
//! Pure: [`classify`] looks at a lower-cased wire QNAME, the QTYPE/QCLASS and the route
//! table; [`answer`] builds the reply bytes. No I/O, no config, no events.

use std::fmt;

use crate::route::RouteTable;
use crate::wire::{self, rcode, Query};

/// AXFR.
const TYPE_AXFR: u16 = 252;
/// IXFR.
const TYPE_IXFR: u16 = 251;
/// ANY.
const TYPE_ANY: u16 = 255;
const TYPE_A: u16 = 1;
const TYPE_NS: u16 = 2;
const TYPE_PTR: u16 = 12;
const TYPE_TXT: u16 = 16;
const TYPE_AAAA: u16 = 28;
/// The CHAOS class.
const CLASS_CH: u16 = 3;
/// TTL of locally made records, and the SOA MINIMUM (RFC 6303 §3: 10800).
const LOCAL_TTL: u32 = 10_800;
/// What `version.bind` says.
const VERSION_TEXT: &str = concat!("splitdns ", env!("CARGO_PKG_VERSION"));

/// What splitdns does with a query it does not forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// AXFR or IXFR: REFUSED. A forwarder serves no zones to transfer.
    ZoneTransfer,
    /// `version.bind` / `version.server` in class CHAOS: a TXT with our name and version.
    ChaosVersion,
    /// Any other CHAOS query (`hostname.bind`, `id.server`, ...): REFUSED.
    ChaosRefused,
    /// `localhost.` or a name under it; `apex` is where `localhost.` starts in the QNAME.
    Localhost {
        /// Byte offset of the `localhost.` suffix in the QNAME.
        apex: usize,
    },
    /// A name in a locally served reverse zone that no configured zone routes.
    PrivateReverse {
        /// Byte offset of the zone's apex in the QNAME.
        apex: usize,
    },
    /// A name under `invalid.` (RFC 6761 §6.4) or `onion.` (RFC 7686 §2) that no
    /// configured zone routes: NXDOMAIN, so a Tor address never leaks to a DNS upstream.
    SpecialUse {
        /// Byte offset of the top-level domain in the QNAME.
        apex: usize,
    },
}

impl Local {
    /// The query's event: `Ok(kind)` for a query answered here (`local` field: `localhost`,
    /// `rfc6303`, `special-use`, `chaos`), `Err(text)` for one refused here (`error` field).
    pub fn event(self) -> Result<&'static str, &'static str> {
        match self {
            Local::ZoneTransfer => Err("refused: zone transfer"),
            Local::ChaosVersion => Ok("chaos"),
            Local::ChaosRefused => Err("refused: chaos"),
            Local::Localhost { .. } => Ok("localhost"),
            Local::PrivateReverse { .. } => Ok("rfc6303"),
            Local::SpecialUse { .. } => Ok("special-use"),
        }
    }
}

/// What `splitdns route` prints after "answered locally" (the zone of a localhost or
/// reverse-zone rule is given by [`zone_text`]).
impl fmt::Display for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Local::ZoneTransfer => f.write_str("REFUSED (zone transfers are never forwarded)"),
            Local::ChaosVersion => write!(f, "TXT \"{VERSION_TEXT}\" (CHAOS)"),
            Local::ChaosRefused => f.write_str("REFUSED (CHAOS queries are never forwarded)"),
            Local::Localhost { .. } => {
                f.write_str("A 127.0.0.1, AAAA ::1, other types NODATA (RFC 6761)")
            }
            Local::PrivateReverse { .. } => f.write_str(
                "NXDOMAIN (RFC 6303 locally served zone; a zone named after it, \
                 or a zone's `networks` covering it, would forward it instead)",
            ),
            Local::SpecialUse { .. } => f.write_str(
                "NXDOMAIN (special-use name, RFC 6761 / RFC 7686; a zone named after it \
                 would forward it instead)",
            ),
        }
    }
}

/// The zone a [`Local::Localhost`], [`Local::PrivateReverse`] or [`Local::SpecialUse`]
/// rule answers for, as text.
pub fn zone_text(rule: Local, lower_qname: &[u8]) -> Option<String> {
    let (Local::Localhost { apex } | Local::PrivateReverse { apex } | Local::SpecialUse { apex }) =
        rule
    else {
        return None;
    };
    let mut s = String::new();
    wire::name_to_text(lower_qname.get(apex..)?, &mut s);
    Some(s)
}

/// The rule for a query, or `None` to route and forward it as usual. `lower_qname` is the
/// lower-cased wire QNAME. A reverse zone of RFC 6303 is answered locally only when no
/// configured zone matches at or below it: a zone named `168.192.in-addr.arpa` or
/// `1.168.192.in-addr.arpa`, or one whose `networks` derive such a reverse zone, takes the
/// names it covers; `.` or `in-addr.arpa` do not.
pub fn classify(lower_qname: &[u8], qtype: u16, qclass: u16, routes: &RouteTable) -> Option<Local> {
    if qtype == TYPE_AXFR || qtype == TYPE_IXFR {
        return Some(Local::ZoneTransfer);
    }
    if qclass == CLASS_CH {
        return Some(match lower_qname {
            b"\x07version\x04bind\x00" | b"\x07version\x06server\x00" => Local::ChaosVersion,
            _ => Local::ChaosRefused,
        });
    }
    // Cheap filter first: everything below ends in `arpa.`, `localhost.`, `invalid.` or
    // `onion.`.
    if ![
        &b"\x04arpa\x00"[..],
        b"\x09localhost\x00",
        b"\x07invalid\x00",
        b"\x05onion\x00",
    ]
    .iter()
    .any(|tld| lower_qname.ends_with(tld))
    {
        return None;
    }
    let labels = label_offsets(lower_qname)?;
    let label = |from_end: usize| -> Option<&[u8]> {
        let at = *labels.get(labels.len().checked_sub(from_end + 1)?)?;
        let len = usize::from(*lower_qname.get(at)?);
        lower_qname.get(at + 1..at + 1 + len)
    };
    if label(0) == Some(b"localhost") {
        return Some(Local::Localhost {
            apex: labels.last().copied().unwrap_or(0),
        });
    }
    let (depth, rule): (usize, fn(usize) -> Local) = match label(0)? {
        b"invalid" | b"onion" => (1, |apex| Local::SpecialUse { apex }),
        b"arpa" => {
            let depth = match label(1)? {
                b"in-addr" => reverse_v4_depth(&label),
                b"ip6" => reverse_v6_depth(&label),
                _ => None,
            }?;
            (depth, |apex| Local::PrivateReverse { apex })
        }
        _ => return None,
    };
    let apex = *labels.get(labels.len().checked_sub(depth)?)?;
    match routes.lookup_wire_at(lower_qname, qtype) {
        Some((_, pos)) if pos <= apex => None,
        _ => Some(rule(apex)),
    }
}

/// Offsets of each label's length byte, first label first (the root excluded). `None` for
/// a malformed name.
fn label_offsets(name: &[u8]) -> Option<Vec<usize>> {
    let mut out = Vec::with_capacity(8);
    let mut pos = 0usize;
    for _ in 0..128 {
        let len = usize::from(*name.get(pos)?);
        if len == 0 {
            return Some(out);
        }
        if len > 63 {
            return None;
        }
        out.push(pos);
        pos += 1 + len;
    }
    None
}

/// A decimal octet label as written in in-addr.arpa names (no leading zeros).
fn octet(l: &[u8]) -> Option<u8> {
    if l.is_empty() || l.len() > 3 || (l.len() > 1 && l.first() == Some(&b'0')) {
        return None;
    }
    std::str::from_utf8(l).ok()?.parse().ok()
}

/// Labels in the locally served in-addr.arpa zone this name falls in (counting `in-addr`
/// and `arpa`), if any. `label(i)` is the i-th label from the right.
fn reverse_v4_depth<'a>(label: &dyn Fn(usize) -> Option<&'a [u8]>) -> Option<usize> {
    let o = |i: usize| label(i + 1).and_then(octet);
    match (o(1)?, o(2), o(3)) {
        (10 | 127 | 0, _, _) => Some(3),
        (172, Some(16..=31), _) | (192, Some(168), _) | (169, Some(254), _) => Some(4),
        (100, Some(64..=127), _) => Some(4),
        (192, Some(0), Some(2)) | (198, Some(51), Some(100)) | (203, Some(0), Some(113)) => Some(5),
        (255, Some(255), Some(255)) if o(4) == Some(255) => Some(6),
        _ => None,
    }
}

/// Labels in the locally served ip6.arpa zone this name falls in, if any: fd00::/8
/// (`d.f`), fe80::/10 (`8.e.f` … `b.e.f`), 2001:db8::/32, `::` and `::1`.
fn reverse_v6_depth<'a>(label: &dyn Fn(usize) -> Option<&'a [u8]>) -> Option<usize> {
    let nib = |i: usize| match label(i + 2) {
        Some([c]) if c.is_ascii_hexdigit() => Some(*c),
        _ => None,
    };
    match (nib(0)?, nib(1), nib(2)) {
        (b'f', Some(b'd'), _) => Some(4),
        (b'f', Some(b'e'), Some(b'8' | b'9' | b'a' | b'b')) => Some(5),
        (b'2', Some(b'0'), Some(b'0')) if (3..8).map(nib).eq(b"10db8".iter().map(|c| Some(*c))) => {
            Some(10)
        }
        (b'0', _, _) => {
            let zeros = (0..31).all(|i| nib(i) == Some(b'0'));
            let last = nib(31);
            (zeros && matches!(last, Some(b'0' | b'1'))).then_some(34)
        }
        _ => None,
    }
}

/// The reply for a query `classify` gave a rule for: the client's ID and question, our
/// header bits (RA=1, RD/CD as sent, AA for the data we own), and an OPT if the client
/// sent EDNS. `lower_qname` is the same name `classify` saw.
pub fn answer(rule: Local, q: &Query<'_>, lower_qname: &[u8]) -> Vec<u8> {
    let refused = || wire::error_reply(q.id, 0, q.flags, Some(q.question), q.edns, rcode::REFUSED);
    match rule {
        Local::ZoneTransfer | Local::ChaosRefused => refused(),
        Local::ChaosVersion => {
            let mut b = Builder::new(q, rcode::NOERROR, true);
            if matches!(q.qtype, TYPE_TXT | TYPE_ANY) {
                let mut txt = vec![VERSION_TEXT.len() as u8];
                txt.extend_from_slice(VERSION_TEXT.as_bytes());
                b.record(0, QNAME_PTR, TYPE_TXT, CLASS_CH, 0, &txt);
            }
            b.finish()
        }
        Local::Localhost { apex } => localhost(q, apex),
        Local::PrivateReverse { apex } | Local::SpecialUse { apex } => {
            private_reverse(q, lower_qname, apex)
        }
    }
}

/// A compression pointer to the QNAME (offset 12).
const QNAME_PTR: usize = wire::HEADER_LEN;

fn localhost(q: &Query<'_>, apex: usize) -> Vec<u8> {
    let mut b = Builder::new(q, rcode::NOERROR, true);
    let (a, aaaa) = (
        matches!(q.qtype, TYPE_A | TYPE_ANY),
        matches!(q.qtype, TYPE_AAAA | TYPE_ANY),
    );
    if a {
        b.record(0, QNAME_PTR, TYPE_A, 1, LOCAL_TTL, &[127, 0, 0, 1]);
    }
    if aaaa {
        let mut one = [0u8; 16];
        one[15] = 1;
        b.record(0, QNAME_PTR, TYPE_AAAA, 1, LOCAL_TTL, &one);
    }
    if !a && !aaaa {
        // RFC 6761 §6.3: other types get an immediate negative answer.
        b.soa(1, QNAME_PTR + apex);
    }
    b.finish()
}

/// A locally served empty zone (RFC 6303 §3): NXDOMAIN below the apex, SOA and NS at it.
fn private_reverse(q: &Query<'_>, lower_qname: &[u8], apex: usize) -> Vec<u8> {
    let zone = QNAME_PTR + apex;
    // The loopback addresses' PTR names localhost, as unbound and most systems do.
    let loopback = lower_qname == b"\x011\x010\x010\x03127\x07in-addr\x04arpa\x00"
        || (apex == 0 && lower_qname.len() == 74 && lower_qname.starts_with(b"\x011"));
    if loopback && matches!(q.qtype, TYPE_PTR | TYPE_ANY) {
        let mut b = Builder::new(q, rcode::NOERROR, true);
        b.record(0, QNAME_PTR, TYPE_PTR, 1, LOCAL_TTL, b"\x09localhost\x00");
        return b.finish();
    }
    if apex != 0 {
        let mut b = Builder::new(q, rcode::NXDOMAIN, true);
        b.soa(1, zone);
        return b.finish();
    }
    // The zone's apex: its SOA and NS exist (RFC 6303 §3), other types are NODATA.
    let mut b = Builder::new(q, rcode::NOERROR, true);
    let (soa, ns) = (
        matches!(q.qtype, wire::TYPE_SOA | TYPE_ANY),
        matches!(q.qtype, TYPE_NS | TYPE_ANY),
    );
    if soa {
        b.soa(0, zone);
    }
    if ns {
        b.record(0, zone, TYPE_NS, 1, LOCAL_TTL, &ptr(zone));
    }
    if !soa && !ns {
        b.soa(1, zone);
    }
    b.finish()
}

fn ptr(at: usize) -> [u8; 2] {
    [0xc0 | ((at >> 8) & 0x3f) as u8, at as u8]
}

/// Builds a reply in section order: header, the client's question, records, OPT.
struct Builder<'q> {
    out: Vec<u8>,
    counts: [u16; 3],
    q: &'q Query<'q>,
}

impl<'q> Builder<'q> {
    fn new(q: &'q Query<'q>, code: u16, aa: bool) -> Self {
        let mut out = Vec::with_capacity(128 + q.question.len());
        out.extend_from_slice(&q.id.to_be_bytes());
        let upstream_bits = if aa { 0x0400 } else { 0 } | (code & 0xf);
        out.extend_from_slice(&wire::reply_flags(upstream_bits, q.flags).to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(q.question);
        Builder {
            out,
            counts: [0; 3],
            q,
        }
    }

    /// Adds a record owned by the name at offset `owner` (a pointer into the question).
    fn record(
        &mut self,
        section: usize,
        owner: usize,
        rtype: u16,
        class: u16,
        ttl: u32,
        rdata: &[u8],
    ) {
        self.out.extend_from_slice(&ptr(owner));
        self.out.extend_from_slice(&rtype.to_be_bytes());
        self.out.extend_from_slice(&class.to_be_bytes());
        self.out.extend_from_slice(&ttl.to_be_bytes());
        self.out
            .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        self.out.extend_from_slice(rdata);
        if let Some(c) = self.counts.get_mut(section) {
            *c += 1;
        }
    }

    /// The zone's SOA as RFC 6303 §3 recommends: `@ nobody.invalid. 1 3600 1200 604800 10800`.
    fn soa(&mut self, section: usize, zone: usize) {
        let mut rdata = ptr(zone).to_vec();
        rdata.extend_from_slice(b"\x06nobody\x07invalid\x00");
        for v in [1u32, 3600, 1200, 604_800, LOCAL_TTL] {
            rdata.extend_from_slice(&v.to_be_bytes());
        }
        self.record(section, zone, wire::TYPE_SOA, 1, LOCAL_TTL, &rdata);
    }

    fn finish(mut self) -> Vec<u8> {
        let [an, ns, mut ar] = self.counts;
        if let Some(e) = self.q.edns {
            wire::push_opt(&mut self.out, 0, e.dnssec_ok, &[]);
            ar += 1;
        }
        for (at, c) in [(6, an), (8, ns), (10, ar)] {
            if let Some(s) = self.out.get_mut(at..at + 2) {
                s.copy_from_slice(&c.to_be_bytes());
            }
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::text_to_wire;
    use crate::wire::{ClientEdns, QueryFlags};
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::RData;

    fn rule(name: &str, qtype: u16, routes: &RouteTable) -> Option<Local> {
        classify(&text_to_wire(name), qtype, 1, routes)
    }

    fn root_only() -> RouteTable {
        RouteTable::new([(".", 0)])
    }

    #[test]
    fn zone_transfers_and_chaos() {
        let r = root_only();
        assert_eq!(
            rule("example.com", TYPE_AXFR, &r),
            Some(Local::ZoneTransfer)
        );
        assert_eq!(
            rule("example.com", TYPE_IXFR, &r),
            Some(Local::ZoneTransfer)
        );
        let ch = |n: &str| classify(&text_to_wire(n), TYPE_TXT, CLASS_CH, &r);
        assert_eq!(ch("version.bind"), Some(Local::ChaosVersion));
        assert_eq!(ch("VERSION.server"), Some(Local::ChaosVersion));
        assert_eq!(ch("hostname.bind"), Some(Local::ChaosRefused));
        assert_eq!(ch("id.server"), Some(Local::ChaosRefused));
        assert_eq!(ch("anything.else"), Some(Local::ChaosRefused));
        assert_eq!(
            rule("version.bind", TYPE_TXT, &r),
            None,
            "class IN is forwarded"
        );
    }

    #[test]
    fn localhost_names() {
        let r = root_only();
        assert_eq!(
            rule("localhost", TYPE_A, &r),
            Some(Local::Localhost { apex: 0 })
        );
        assert_eq!(
            rule("a.b.localhost.", TYPE_A, &r),
            Some(Local::Localhost { apex: 4 })
        );
        assert_eq!(rule("localhost.example", TYPE_A, &r), None);
        assert_eq!(rule("notlocalhost", TYPE_A, &r), None);
        // Even a zone named localhost does not take it (RFC 6761: never forwarded).
        let z = RouteTable::new([("localhost", 0), (".", 1)]);
        assert!(matches!(
            rule("localhost", TYPE_A, &z),
            Some(Local::Localhost { .. })
        ));
    }

    #[test]
    fn private_reverse_zones() {
        let r = root_only();
        let zone = |n: &str| {
            let w = text_to_wire(n);
            classify(&w, TYPE_PTR, 1, &r).and_then(|l| zone_text(l, &w))
        };
        for (name, z) in [
            ("4.3.2.10.in-addr.arpa", "10.in-addr.arpa."),
            ("10.in-addr.arpa", "10.in-addr.arpa."),
            ("1.0.16.172.in-addr.arpa", "16.172.in-addr.arpa."),
            ("1.0.31.172.in-addr.arpa", "31.172.in-addr.arpa."),
            ("1.1.168.192.in-addr.arpa", "168.192.in-addr.arpa."),
            ("1.0.0.127.in-addr.arpa", "127.in-addr.arpa."),
            ("9.0.0.0.in-addr.arpa", "0.in-addr.arpa."),
            ("1.2.254.169.in-addr.arpa", "254.169.in-addr.arpa."),
            ("1.2.64.100.in-addr.arpa", "64.100.in-addr.arpa."),
            ("7.2.0.192.in-addr.arpa", "2.0.192.in-addr.arpa."),
            (
                "255.255.255.255.in-addr.arpa",
                "255.255.255.255.in-addr.arpa.",
            ),
            ("1.2.3.d.f.ip6.arpa", "d.f.ip6.arpa."),
            ("0.0.0.0.8.e.f.ip6.arpa", "8.e.f.ip6.arpa."),
            ("0.b.e.f.ip6.arpa", "b.e.f.ip6.arpa."),
            ("1.8.b.d.0.1.0.0.2.ip6.arpa", "8.b.d.0.1.0.0.2.ip6.arpa."),
        ] {
            assert_eq!(zone(name).as_deref(), Some(z), "{name}");
        }
        let one = format!("1{}.ip6.arpa", ".0".repeat(31));
        assert_eq!(zone(&one), Some(format!("{one}.")));
        let zero = format!("0{}.ip6.arpa", ".0".repeat(31));
        assert!(zone(&zero).is_some());
        for public in [
            "1.0.32.172.in-addr.arpa",
            "1.0.15.172.in-addr.arpa",
            "1.1.1.1.in-addr.arpa",
            "8.8.8.8.in-addr.arpa",
            "1.2.128.100.in-addr.arpa",
            "1.1.167.192.in-addr.arpa",
            "010.in-addr.arpa",
            "in-addr.arpa",
            "arpa",
            "1.c.f.ip6.arpa",
            "0.c.e.f.ip6.arpa",
            "2.0.0.1.0.d.b.9.ip6.arpa",
            "1.0.0.0.ip6.arpa",
        ] {
            assert_eq!(zone(public), None, "{public}");
        }
    }

    #[test]
    fn special_use_names() {
        let r = root_only();
        assert_eq!(
            rule("x.invalid", TYPE_A, &r),
            Some(Local::SpecialUse { apex: 2 })
        );
        assert_eq!(
            rule("invalid", TYPE_A, &r),
            Some(Local::SpecialUse { apex: 0 })
        );
        assert!(matches!(
            rule("abcdef.onion", TYPE_AAAA, &r),
            Some(Local::SpecialUse { .. })
        ));
        assert_eq!(rule("onion.example", TYPE_A, &r), None);
        assert_eq!(
            rule("x.test", TYPE_A, &r),
            None,
            "test. is forwarded (RFC 6761 §6.2)"
        );
        // A zone named `onion` (Tor's DNSPort) takes them.
        let tor = RouteTable::new([("onion", 0), (".", 1)]);
        assert_eq!(rule("abcdef.onion", TYPE_A, &tor), None);
        let m = ask("x.invalid", TYPE_A, false);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities[0].name.to_ascii(), "invalid.");
    }

    #[test]
    fn a_configured_zone_at_or_below_takes_the_reverse_zone() {
        let r = RouteTable::new([
            ("121.168.192.in-addr.arpa", 0),
            ("10.in-addr.arpa", 1),
            ("in-addr.arpa", 2),
            (".", 3),
        ]);
        assert_eq!(
            rule("5.121.168.192.in-addr.arpa", TYPE_PTR, &r),
            None,
            "networks"
        );
        assert!(
            rule("5.122.168.192.in-addr.arpa", TYPE_PTR, &r).is_some(),
            "leak"
        );
        assert_eq!(
            rule("1.2.3.10.in-addr.arpa", TYPE_PTR, &r),
            None,
            "named after it"
        );
        assert!(
            rule("1.1.16.172.in-addr.arpa", TYPE_PTR, &r).is_some(),
            "parent zone"
        );
    }

    fn ask(name: &str, qtype: u16, edns: bool) -> Message {
        let w = text_to_wire(name);
        let mut question = w.clone();
        question.extend_from_slice(&qtype.to_be_bytes());
        question.extend_from_slice(&1u16.to_be_bytes());
        let q = Query {
            id: 0x4321,
            flags: QueryFlags {
                rd: true,
                cd: true,
                ad: false,
            },
            question: &question,
            qtype,
            qclass: 1,
            edns: edns.then_some(ClientEdns {
                payload: 1232,
                dnssec_ok: false,
                version: 0,
            }),
        };
        let rule = classify(&w, qtype, 1, &root_only()).expect("local");
        Message::from_vec(&answer(rule, &q, &w)).expect("reply parses")
    }

    #[test]
    fn answers_parse_and_say_the_right_thing() {
        let m = ask("localhost", TYPE_A, true);
        assert_eq!(m.metadata.id, 0x4321);
        assert!(m.metadata.recursion_available && m.metadata.checking_disabled);
        assert_eq!(m.answers[0].data, RData::A("127.0.0.1".parse().unwrap()));
        assert!(m.edns.is_some());
        let m = ask("x.localhost", TYPE_AAAA, false);
        assert_eq!(m.answers[0].data, RData::AAAA("::1".parse().unwrap()));
        assert!(m.edns.is_none());
        let m = ask("localhost", TYPE_TXT, false);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities[0].name.to_ascii(), "localhost.");

        let m = ask("4.3.2.10.in-addr.arpa", TYPE_PTR, true);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let soa = &m.authorities[0];
        assert_eq!(soa.name.to_ascii(), "10.in-addr.arpa.");
        assert_eq!(
            soa.data.to_string(),
            "10.in-addr.arpa. nobody.invalid. 1 3600 1200 604800 10800"
        );
        let m = ask("168.192.in-addr.arpa", TYPE_NS, false);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers[0].data.to_string(), "168.192.in-addr.arpa.");
        let m = ask("1.0.0.127.in-addr.arpa", TYPE_PTR, false);
        assert_eq!(m.answers[0].data.to_string(), "localhost.");
        let m = ask(&format!("1{}.ip6.arpa", ".0".repeat(31)), TYPE_PTR, false);
        assert_eq!(m.answers[0].data.to_string(), "localhost.");
    }
}
