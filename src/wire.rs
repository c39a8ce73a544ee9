//! DNS wire format, by hand, for the paths where decoding into hickory types would cost
//! more than the whole answer: the query fast parse, the walk over an upstream reply
//! (record boundaries, TTL offsets, SOA), building the reply we send a client from the
//! upstream's bytes, truncation to the client's UDP size, and error replies.
//!
//! Every read is bounds-checked through `Reader`; nothing here indexes a slice without a
//! check or panics on any input. Anything unusual in a query is left to the slow parse in
//! `forward`, which uses hickory-proto.

use std::ops::Range;

/// Length of the DNS header.
pub const HEADER_LEN: usize = 12;
/// OPT pseudo-record type (RFC 6891).
pub const TYPE_OPT: u16 = 41;
/// SOA record type.
pub const TYPE_SOA: u16 = 6;
/// RRSIG record type.
const TYPE_RRSIG: u16 = 46;
/// NSEC record type.
const TYPE_NSEC: u16 = 47;
/// NSEC3 record type.
const TYPE_NSEC3: u16 = 50;
/// QTYPE ANY.
const TYPE_ANY: u16 = 255;
/// The UDP payload size we advertise upstream and to clients (DNS flag day 2020).
pub const OUR_UDP_PAYLOAD: u16 = 1232;
/// Extended DNS Error option code (RFC 8914), the one EDNS option we pass back to clients.
const OPT_EDE: u16 = 15;
/// The longest EDE extra text we add: with the largest question (259 bytes) and a bare
/// OPT, an error reply stays within 512 bytes, the smallest size an EDNS client accepts.
pub const EDE_TEXT_MAX: usize = 200;

/// Extended DNS Error codes we set (RFC 8914 §4).
pub mod ede {
    /// The answer is stale (served from an expired cache entry, RFC 8767).
    pub const STALE_ANSWER: u16 = 3;
    /// No server of the zone could be reached or would answer.
    pub const NO_REACHABLE_AUTHORITY: u16 = 22;
    /// Every attempt ended in a network error.
    pub const NETWORK_ERROR: u16 = 23;
}

/// Rcodes used by this crate.
pub mod rcode {
    /// No error.
    pub const NOERROR: u16 = 0;
    /// Format error.
    pub const FORMERR: u16 = 1;
    /// Server failure.
    pub const SERVFAIL: u16 = 2;
    /// Name does not exist.
    pub const NXDOMAIN: u16 = 3;
    /// Not implemented.
    pub const NOTIMP: u16 = 4;
    /// Refused.
    pub const REFUSED: u16 = 5;
    /// Bad EDNS version (extended rcode).
    pub const BADVERS: u16 = 16;
}

/// A bounds-checked cursor over a packet.
#[derive(Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
    fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.buf.get(self.pos..self.pos.checked_add(2)?)?;
        self.pos += 2;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.buf.get(self.pos..self.pos.checked_add(4)?)?;
        self.pos += 4;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n)?;
        if end > self.buf.len() {
            return None;
        }
        self.pos = end;
        Some(())
    }
    /// Skips a possibly compressed name; the cursor ends after its last byte in place.
    fn skip_name(&mut self) -> Option<()> {
        for _ in 0..128 {
            let len = self.u8()?;
            match len & 0xc0 {
                0x00 if len == 0 => return Some(()),
                0x00 => self.skip(usize::from(len))?,
                0xc0 => return self.skip(1),
                _ => return None,
            }
        }
        None
    }
    /// Reads an uncompressed name, returning its byte range (including the final zero).
    fn plain_name(&mut self) -> Option<Range<usize>> {
        let start = self.pos;
        for _ in 0..128 {
            let len = self.u8()?;
            if len == 0 {
                return (self.pos - start <= 255).then_some(start..self.pos);
            }
            if len & 0xc0 != 0 {
                return None;
            }
            self.skip(usize::from(len))?;
        }
        None
    }
}

fn get_u16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(s) => u16::from_be_bytes([s[0], s[1]]),
        None => 0,
    }
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// EDNS as sent by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEdns {
    /// Advertised UDP payload size.
    pub payload: u16,
    /// The DO bit.
    pub dnssec_ok: bool,
    /// EDNS version.
    pub version: u8,
}

/// Header bits of a query that travel upstream and shape the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryFlags {
    /// Recursion desired.
    pub rd: bool,
    /// Checking disabled.
    pub cd: bool,
    /// Authentic data (RFC 6840 §5.7: the client understands AD).
    pub ad: bool,
}

/// A query, borrowed from the packet it came in. Produced by [`parse_query`].
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Client's message ID.
    pub id: u16,
    /// RD, CD, AD.
    pub flags: QueryFlags,
    /// The question section as sent: QNAME (uncompressed, client's case), QTYPE, QCLASS.
    pub question: &'a [u8],
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// The client's EDNS, if it sent an OPT record.
    pub edns: Option<ClientEdns>,
}

impl Query<'_> {
    /// The QNAME bytes (wire form, client's case).
    pub fn qname(&self) -> &[u8] {
        self.question
            .get(..self.question.len().saturating_sub(4))
            .unwrap_or(&[])
    }

    /// The largest UDP reply this client accepts: 512 without EDNS (RFC 1035 §4.2.1),
    /// otherwise its payload size capped by ours.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            None => 512,
            Some(e) => usize::from(e.payload.clamp(512, OUR_UDP_PAYLOAD)),
        }
    }

    /// An owned copy, for the slow path.
    pub fn to_owned_query(&self) -> OwnedQuery {
        OwnedQuery {
            id: self.id,
            flags: self.flags,
            question: self.question.to_vec(),
            qtype: self.qtype,
            qclass: self.qclass,
            edns: self.edns,
        }
    }
}

/// A query that owns its question bytes (the slow path's form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedQuery {
    /// Client's message ID.
    pub id: u16,
    /// RD, CD, AD.
    pub flags: QueryFlags,
    /// QNAME (uncompressed, client's case) + QTYPE + QCLASS.
    pub question: Vec<u8>,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// The client's EDNS.
    pub edns: Option<ClientEdns>,
}

impl OwnedQuery {
    /// Borrowed view.
    pub fn as_query(&self) -> Query<'_> {
        Query {
            id: self.id,
            flags: self.flags,
            question: &self.question,
            qtype: self.qtype,
            qclass: self.qclass,
            edns: self.edns,
        }
    }
}

/// Why [`parse_query`] did not produce a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryParseError {
    /// Shorter than a header: cannot even answer FORMERR. Drop.
    Short,
    /// QR=1: a response sent to us. Drop (never answer a response; anti-reflection).
    Response,
    /// Anything else unusual: let the full (hickory) parse decide.
    Unusual,
}

/// The fast parse: a standard query with one uncompressed question and at most one
/// additional record, which must be an OPT for the root. Everything else is `Unusual`.
///
/// # Errors
/// See [`QueryParseError`].
pub fn parse_query(pkt: &[u8]) -> Result<Query<'_>, QueryParseError> {
    if pkt.len() < HEADER_LEN {
        return Err(QueryParseError::Short);
    }
    let flags = get_u16(pkt, 2);
    if flags & 0x8000 != 0 {
        return Err(QueryParseError::Response);
    }
    let opcode = (flags >> 11) & 0xf;
    let (qd, an, ns, ar) = (
        get_u16(pkt, 4),
        get_u16(pkt, 6),
        get_u16(pkt, 8),
        get_u16(pkt, 10),
    );
    if opcode != 0 || qd != 1 || an != 0 || ns != 0 || ar > 1 || flags & 0x000f != 0 {
        return Err(QueryParseError::Unusual);
    }
    let mut r = Reader::new(pkt, HEADER_LEN);
    let name = r.plain_name().ok_or(QueryParseError::Unusual)?;
    let qtype = r.u16().ok_or(QueryParseError::Unusual)?;
    let qclass = r.u16().ok_or(QueryParseError::Unusual)?;
    let question = pkt
        .get(name.start..r.pos())
        .ok_or(QueryParseError::Unusual)?;
    let mut edns = None;
    if ar == 1 {
        // Root name, type OPT, class = payload, TTL = ext-rcode|version|flags, rdata.
        if r.u8() != Some(0) || r.u16() != Some(TYPE_OPT) {
            return Err(QueryParseError::Unusual);
        }
        let payload = r.u16().ok_or(QueryParseError::Unusual)?;
        let ttl = r.u32().ok_or(QueryParseError::Unusual)?;
        let rdlen = r.u16().ok_or(QueryParseError::Unusual)?;
        r.skip(usize::from(rdlen)).ok_or(QueryParseError::Unusual)?;
        if ttl >> 24 != 0 {
            return Err(QueryParseError::Unusual);
        }
        edns = Some(ClientEdns {
            payload,
            dnssec_ok: ttl & 0x8000 != 0,
            version: ((ttl >> 16) & 0xff) as u8,
        });
    }
    // Only the root-level EDNS version 0 is handled here; BADVERS goes the slow way.
    if edns.is_some_and(|e| e.version != 0) {
        return Err(QueryParseError::Unusual);
    }
    Ok(Query {
        id: get_u16(pkt, 0),
        flags: QueryFlags {
            rd: flags & 0x0100 != 0,
            cd: flags & 0x0010 != 0,
            ad: flags & 0x0020 != 0,
        },
        question,
        qtype,
        qclass,
        edns,
    })
}

/// Writes the cache key for a query into `key` (cleared first): one byte of flags that
/// change the reply (DO, CD, AD, RD, has-EDNS), then the lower-cased QNAME, QTYPE, QCLASS.
/// The client's ID, EDNS payload size and options (cookies!) are not part of it.
pub fn cache_key(q: &Query<'_>, key: &mut Vec<u8>) {
    key.clear();
    let e = q.edns;
    let bits = u8::from(e.is_some_and(|e| e.dnssec_ok))
        | u8::from(q.flags.cd) << 1
        | u8::from(q.flags.ad) << 2
        | u8::from(q.flags.rd) << 3
        | u8::from(e.is_some()) << 4;
    key.push(bits);
    key.extend(q.question.iter().map(u8::to_ascii_lowercase));
}

/// The lower-cased QNAME part of a key written by [`cache_key`] (for routing).
pub fn key_qname(key: &[u8]) -> &[u8] {
    key.get(1..key.len().saturating_sub(4)).unwrap_or(&[])
}

/// The query we send upstream: a fresh ID, the client's RD/CD/AD, the client's question
/// bytes, and our own OPT (payload 1232, the client's DO, no options: EDNS is hop-by-hop,
/// RFC 6891 §6.1.1, and client cookies must not leak upstream).
pub fn upstream_query(q: &Query<'_>, id: u16) -> Vec<u8> {
    upstream_query_with(q, id, Some(&[]))
}

/// Like [`upstream_query`], with `opt`: the EDNS options to put in our OPT record, or
/// `None` for no OPT at all (a server that rejects EDNS).
pub fn upstream_query_with(q: &Query<'_>, id: u16, opt: Option<&[u8]>) -> Vec<u8> {
    let options = opt.unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + q.question.len() + 11 + options.len());
    out.extend_from_slice(&id.to_be_bytes());
    let mut flags = 0u16;
    if q.flags.rd {
        flags |= 0x0100;
    }
    if q.flags.ad {
        flags |= 0x0020;
    }
    if q.flags.cd {
        flags |= 0x0010;
    }
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(opt.is_some())]);
    out.extend_from_slice(q.question);
    if opt.is_some() {
        let dnssec_ok = q.edns.is_some_and(|e| e.dnssec_ok);
        push_opt(&mut out, 0, dnssec_ok, options);
    }
    out
}

/// Appends our OPT record (payload 1232) with this extended rcode, DO bit and options.
pub(crate) fn push_opt(out: &mut Vec<u8>, ext_rcode: u8, dnssec_ok: bool, options: &[u8]) {
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&OUR_UDP_PAYLOAD.to_be_bytes());
    out.push(ext_rcode);
    out.push(0);
    out.extend_from_slice(&(if dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
    out.extend_from_slice(&(options.len() as u16).to_be_bytes());
    out.extend_from_slice(options);
}

/// One resource record's position in a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr {
    /// 0 answer, 1 authority, 2 additional.
    pub section: u8,
    /// First byte of the owner name.
    pub start: usize,
    /// One past the last rdata byte.
    pub end: usize,
    /// Record type.
    pub rtype: u16,
    /// Offset of the 4-byte TTL field.
    pub ttl_at: usize,
    /// The TTL as received.
    pub ttl: u32,
    /// Where the rdata is.
    pub rdata: Range<usize>,
}

/// The structure of a reply, found by [`walk_reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Message ID.
    pub id: u16,
    /// The header flags word (QR, opcode, AA, TC, RD, RA, Z, AD, CD, low rcode).
    pub flags: u16,
    /// Full rcode: low 4 bits from the header, high 8 from the OPT record if present.
    pub rcode: u16,
    /// Where the question section is (QNAME + QTYPE + QCLASS); empty if QDCOUNT is 0.
    pub question: Range<usize>,
    /// Every record in order, OPT included.
    pub rrs: Vec<Rr>,
}

impl Reply {
    /// TC bit.
    pub fn truncated(&self) -> bool {
        self.flags & 0x0200 != 0
    }
    /// Records of one section (OPT excluded).
    pub fn section(&self, s: u8) -> impl Iterator<Item = &Rr> {
        self.rrs
            .iter()
            .filter(move |r| r.section == s && r.rtype != TYPE_OPT)
    }
    /// The OPT record, if any.
    pub fn opt(&self) -> Option<&Rr> {
        self.rrs.iter().find(|r| r.rtype == TYPE_OPT)
    }
}

/// Why a reply was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The packet ended inside a structure or a count is wrong.
    #[error("malformed reply")]
    Malformed,
}

/// Walks a reply: header, at most one question, every record. Compressed names are skipped
/// (pointers are not followed, so no loop is possible). Trailing bytes are ignored.
///
/// # Errors
/// `WireError::Malformed` if anything runs past the end.
pub fn walk_reply(pkt: &[u8]) -> Result<Reply, WireError> {
    let bad = WireError::Malformed;
    if pkt.len() < HEADER_LEN {
        return Err(bad);
    }
    let flags = get_u16(pkt, 2);
    let qd = get_u16(pkt, 4);
    if qd > 1 {
        return Err(bad);
    }
    let counts = [get_u16(pkt, 6), get_u16(pkt, 8), get_u16(pkt, 10)];
    let mut r = Reader::new(pkt, HEADER_LEN);
    let qstart = r.pos();
    if qd == 1 {
        r.skip_name().ok_or(bad)?;
        r.skip(4).ok_or(bad)?;
    }
    let question = qstart..r.pos();
    let total: usize = counts.iter().map(|c| usize::from(*c)).sum();
    let mut rrs = Vec::with_capacity(total.min(256));
    let mut rcode = flags & 0x000f;
    for (section, &count) in counts.iter().enumerate() {
        for _ in 0..count {
            let start = r.pos();
            r.skip_name().ok_or(bad)?;
            let rtype = r.u16().ok_or(bad)?;
            r.skip(2).ok_or(bad)?;
            let ttl_at = r.pos();
            let ttl = r.u32().ok_or(bad)?;
            let rdlen = usize::from(r.u16().ok_or(bad)?);
            let rd_start = r.pos();
            r.skip(rdlen).ok_or(bad)?;
            if rtype == TYPE_OPT {
                rcode |= ((ttl >> 24) as u16) << 4;
            }
            rrs.push(Rr {
                section: section as u8,
                start,
                end: r.pos(),
                rtype,
                ttl_at,
                ttl,
                rdata: rd_start..r.pos(),
            });
        }
    }
    Ok(Reply {
        id: get_u16(pkt, 0),
        flags,
        rcode,
        question,
        rrs,
    })
}

/// The negative-caching TTL of an SOA record (RFC 2308 §5): min(SOA TTL, SOA MINIMUM).
pub fn soa_negative_ttl(pkt: &[u8], rr: &Rr) -> Option<u32> {
    let mut r = Reader::new(pkt, rr.rdata.start);
    r.skip_name()?;
    r.skip_name()?;
    r.skip(16)?;
    let minimum = r.u32()?;
    (r.pos() <= rr.rdata.end).then_some(rr.ttl.min(minimum))
}

/// True if the reply's question equals ours: same QNAME ignoring ASCII case, same QTYPE
/// and QCLASS. A compressed QNAME never matches (it has a different byte length).
pub fn same_question(pkt: &[u8], reply: &Reply, question: &[u8]) -> bool {
    match pkt.get(reply.question.clone()) {
        Some(got) => got.eq_ignore_ascii_case(question),
        None => false,
    }
}

/// The header flags word of a reply we send for an upstream's reply. From the upstream:
/// AA, TC, AD and the low rcode bits (its answer). From us: QR, opcode QUERY, RA=1 (we
/// offer recursion, whatever an authoritative upstream like Consul says), RD and CD as the
/// client sent them (RFC 1035 §4.1.1, RFC 4035 §3.1.6), Z clear.
pub fn reply_flags(upstream: u16, q: QueryFlags) -> u16 {
    let kept = upstream & (0x0400 | 0x0200 | 0x0020 | 0x000f);
    let mut f = 0x8000 | 0x0080 | kept;
    if q.rd {
        f |= 0x0100;
    }
    if q.cd {
        f |= 0x0010;
    }
    f
}

/// Builds the reply for a client from an upstream reply: the upstream's answer bits and
/// every record in order, header bits of our own ([`reply_flags`]), the client's question
/// bytes (its letter case), the ID left 0 (the caller patches it), and the OPT replaced by
/// ours if — and only if — the client sent EDNS. Our OPT keeps the upstream's extended
/// rcode bits and its EDE options.
/// Returns `None` if the upstream's OPT is not the last record (rare; the caller then
/// rebuilds through hickory).
pub fn client_reply(up: &[u8], reply: &Reply, q: &Query<'_>) -> Option<Vec<u8>> {
    let opt = reply.opt();
    if let Some(o) = opt {
        if reply.rrs.last().map(|l| l.start) != Some(o.start) {
            return None;
        }
    }
    let body = up.get(
        reply.question.end
            ..opt.map_or(
                reply.rrs.last().map_or(reply.question.end, |l| l.end),
                |o| o.start,
            ),
    )?;
    let mut out = Vec::with_capacity(HEADER_LEN + q.question.len() + body.len() + 16);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&reply_flags(reply.flags, q.flags).to_be_bytes());
    let counts = [
        1u16,
        reply.section(0).count() as u16,
        reply.section(1).count() as u16,
        reply.section(2).count() as u16 + u16::from(q.edns.is_some()),
    ];
    for c in counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
    out.extend_from_slice(q.question);
    out.extend_from_slice(body);
    if let Some(e) = q.edns {
        let ext = (reply.rcode >> 4) as u8;
        let mut options = Vec::new();
        if let Some(o) = opt {
            let mut r = Reader::new(up, o.rdata.start);
            while r.pos() + 4 <= o.rdata.end {
                let (Some(code), Some(len)) = (r.u16(), r.u16()) else {
                    break;
                };
                let start = r.pos();
                if r.skip(usize::from(len)).is_none() || r.pos() > o.rdata.end {
                    break;
                }
                if code == OPT_EDE {
                    options.extend_from_slice(&code.to_be_bytes());
                    options.extend_from_slice(&len.to_be_bytes());
                    options.extend_from_slice(up.get(start..r.pos())?);
                }
            }
        }
        push_opt(&mut out, ext, e.dnssec_ok, &options);
    }
    Some(out)
}

/// An error reply (FORMERR, NOTIMP, REFUSED, SERVFAIL, BADVERS): the request's ID, opcode,
/// RD and CD, RA set, the question echoed when there is one, and an OPT only if the client
/// sent one (required for BADVERS's extended rcode).
pub fn error_reply(
    id: u16,
    opcode: u8,
    flags: QueryFlags,
    question: Option<&[u8]>,
    edns: Option<ClientEdns>,
    code: u16,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + question.map_or(0, <[u8]>::len) + 11);
    out.extend_from_slice(&id.to_be_bytes());
    let mut f = 0x8000 | (u16::from(opcode & 0xf) << 11) | 0x0080 | (code & 0xf);
    if flags.rd {
        f |= 0x0100;
    }
    if flags.cd {
        f |= 0x0010;
    }
    out.extend_from_slice(&f.to_be_bytes());
    out.extend_from_slice(&u16::from(question.is_some()).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&u16::from(edns.is_some()).to_be_bytes());
    if let Some(q) = question {
        out.extend_from_slice(q);
    }
    if let Some(e) = edns {
        push_opt(&mut out, (code >> 4) as u8, e.dnssec_ok, &[]);
    }
    out
}

/// Sets the ID of a message in place.
pub fn set_id(msg: &mut [u8], id: u16) {
    put_u16(msg, 0, id);
}

/// Cuts a client reply (as built by [`client_reply`]: OPT, if any, last) down to `limit`
/// bytes, the RFC 2181 §9 way: optional records go first and silently; TC=1 only when a
/// required RRset does not fit.
///
/// Required: the answer section, and for a negative answer (NXDOMAIN, or no record of the
/// question's type) the SOA in authority with its DNSSEC proof (NSEC, NSEC3, RRSIG; RFC
/// 4035 §3.1.3). Optional: everything else in authority and additional (glue, NS), which
/// is kept whole RRset by whole RRset, in order, while it fits. Only a prefix of the
/// records is ever kept: names point only backwards (RFC 1035 §4.1.4), so cutting at a
/// record boundary keeps every remaining compression pointer valid, while dropping a
/// record in the middle could orphan a later pointer. The OPT is always put back (bare,
/// without options, if even that would not fit).
pub fn truncate(msg: &[u8], limit: usize) -> Vec<u8> {
    let Ok(reply) = walk_reply(msg) else {
        return msg.get(..HEADER_LEN.min(msg.len())).unwrap_or(&[]).to_vec();
    };
    let opt = reply.opt().cloned();
    let mut opt_bytes = opt
        .as_ref()
        .and_then(|o| msg.get(o.start..o.end))
        .unwrap_or(&[])
        .to_vec();
    if reply.question.end + opt_bytes.len() > limit {
        // Options (a long EDE text) that cannot fit: keep the bare OPT, rdlen 0.
        if let Some(o) = &opt {
            opt_bytes = msg.get(o.start..o.rdata.start).unwrap_or(&[]).to_vec();
            let at = opt_bytes.len().saturating_sub(2);
            put_u16(&mut opt_bytes, at, 0);
        }
    }
    let budget = limit.saturating_sub(opt_bytes.len());
    // Records that may be kept: those before the OPT (it is last in what we build).
    let opt_start = opt.as_ref().map_or(usize::MAX, |o| o.start);
    let rrs: Vec<&Rr> = reply.rrs.iter().filter(|r| r.rtype != TYPE_OPT).collect();
    let negative = is_negative(msg, &reply);
    let required = |r: &Rr| {
        r.section == 0
            || (r.section == 1
                && negative
                && matches!(r.rtype, TYPE_SOA | TYPE_NSEC | TYPE_NSEC3 | TYPE_RRSIG))
    };
    let required_end = rrs
        .iter()
        .filter(|r| required(r))
        .map(|r| {
            if r.start > opt_start {
                usize::MAX
            } else {
                r.end
            }
        })
        .max()
        .unwrap_or(reply.question.end);
    let mut kept = 0usize;
    let tc = required_end > budget;
    if tc {
        // A required RRset is cut: whole records while they fit, then TC.
        kept = rrs
            .iter()
            .take_while(|r| r.end <= budget && r.start < opt_start)
            .count();
    } else {
        while let Some(first) = rrs.get(kept) {
            if first.start > opt_start {
                break;
            }
            // One RRset: this record and the ones after it with the same owner, type and class.
            let mut n = 1;
            while let Some(next) = rrs.get(kept + n) {
                if !same_rrset(msg, first, next) {
                    break;
                }
                n += 1;
            }
            let set_end = rrs.get(kept + n - 1).map_or(first.end, |r| r.end);
            if first.end <= required_end {
                // Required, or before something required: kept record by record.
                kept += 1;
                continue;
            }
            if set_end > budget || rrs.get(kept + n - 1).is_some_and(|r| r.start > opt_start) {
                break;
            }
            kept += n;
        }
    }
    let keep_end = kept
        .checked_sub(1)
        .and_then(|i| rrs.get(i))
        .map_or(reply.question.end, |r| r.end);
    let mut counts = [0u16; 3];
    for r in rrs.iter().take(kept) {
        if let Some(c) = counts.get_mut(usize::from(r.section)) {
            *c += 1;
        }
    }
    let mut out = Vec::with_capacity(keep_end + opt_bytes.len());
    out.extend_from_slice(msg.get(..keep_end).unwrap_or(&[]));
    let flags = get_u16(&out, 2);
    put_u16(
        &mut out,
        2,
        if tc { flags | 0x0200 } else { flags & !0x0200 },
    );
    put_u16(&mut out, 6, counts[0]);
    put_u16(&mut out, 8, counts[1]);
    put_u16(&mut out, 10, counts[2] + u16::from(opt.is_some()));
    out.extend_from_slice(&opt_bytes);
    out
}
/// True if the reply is negative: NXDOMAIN, or NOERROR with no record of the question's
/// type in the answer (NODATA, possibly at the end of a CNAME chain).
fn is_negative(msg: &[u8], reply: &Reply) -> bool {
    let qtype = if reply.question.is_empty() {
        None
    } else {
        Some(get_u16(msg, reply.question.end.saturating_sub(4)))
    };
    match reply.rcode {
        rcode::NXDOMAIN => true,
        rcode::NOERROR => match qtype {
            Some(TYPE_ANY) => reply.section(0).next().is_none(),
            Some(t) => !reply.section(0).any(|r| r.rtype == t),
            None => reply.section(0).next().is_none(),
        },
        _ => false,
    }
}

/// True if two records belong to one RRset: same section, type, class and owner name.
fn same_rrset(msg: &[u8], a: &Rr, b: &Rr) -> bool {
    a.section == b.section
        && a.rtype == b.rtype
        && get_u16(msg, a.ttl_at.wrapping_sub(2)) == get_u16(msg, b.ttl_at.wrapping_sub(2))
        && names_equal(msg, a.start, b.start)
}

/// Compares two (possibly compressed) names in `msg`, ASCII case-insensitively. Pointers
/// are followed a bounded number of times; anything malformed compares unequal.
pub(crate) fn names_equal(msg: &[u8], a: usize, b: usize) -> bool {
    if a == b {
        return true;
    }
    let (mut x, mut y) = (LabelWalk::new(msg, a), LabelWalk::new(msg, b));
    for _ in 0..128 {
        match (x.next_label(), y.next_label()) {
            (Some(l), Some(m)) if l.eq_ignore_ascii_case(m) => {
                if l.is_empty() {
                    return true;
                }
            }
            _ => return false,
        }
    }
    false
}

/// Walks the labels of a name in a message, following compression pointers (at most 64).
struct LabelWalk<'a> {
    msg: &'a [u8],
    pos: usize,
    hops: u8,
}

impl<'a> LabelWalk<'a> {
    fn new(msg: &'a [u8], pos: usize) -> Self {
        LabelWalk { msg, pos, hops: 0 }
    }

    /// The next label's bytes; the empty slice for the root (the end); `None` if malformed.
    fn next_label(&mut self) -> Option<&'a [u8]> {
        loop {
            let len = *self.msg.get(self.pos)?;
            match len & 0xc0 {
                0x00 => {
                    let start = self.pos + 1;
                    let end = start + usize::from(len);
                    let label = self.msg.get(start..end)?;
                    self.pos = end;
                    return Some(label);
                }
                0xc0 => {
                    self.hops += 1;
                    if self.hops > 64 {
                        return None;
                    }
                    let low = *self.msg.get(self.pos + 1)?;
                    self.pos = usize::from(len & 0x3f) << 8 | usize::from(low);
                }
                _ => return None,
            }
        }
    }
}

/// The client's EDNS from any query packet, for the error replies of packets the fast
/// parse declined (FORMERR, NOTIMP, REFUSED must carry an OPT when the query had a valid
/// one, RFC 6891 §6.1.1). Walks every section; `None` unless the walk succeeds and there
/// is exactly one OPT, owned by the root, in the additional section.
pub fn client_opt(pkt: &[u8]) -> Option<ClientEdns> {
    if pkt.len() < HEADER_LEN {
        return None;
    }
    let mut r = Reader::new(pkt, HEADER_LEN);
    for _ in 0..get_u16(pkt, 4) {
        r.skip_name()?;
        r.skip(4)?;
    }
    let records = usize::from(get_u16(pkt, 6)) + usize::from(get_u16(pkt, 8));
    let mut found = None;
    for i in 0..records + usize::from(get_u16(pkt, 10)) {
        let root = pkt.get(r.pos()) == Some(&0);
        r.skip_name()?;
        let rtype = r.u16()?;
        let class = r.u16()?;
        let ttl = r.u32()?;
        let rdlen = r.u16()?;
        r.skip(usize::from(rdlen))?;
        if rtype == TYPE_OPT {
            if i < records || !root || found.is_some() {
                return None;
            }
            found = Some(ClientEdns {
                payload: class,
                dnssec_ok: ttl & 0x8000 != 0,
                version: ((ttl >> 16) & 0xff) as u8,
            });
        }
    }
    found
}

/// Adds an Extended DNS Error option (RFC 8914) to a reply whose OPT is its last record
/// (everything we build). `text` is cut to [`EDE_TEXT_MAX`] bytes on a character
/// boundary. Returns false, leaving the reply alone, if it has no OPT (the client sent no
/// EDNS) or the OPT is not last.
pub fn add_ede(msg: &mut Vec<u8>, code: u16, text: &str) -> bool {
    let Ok(reply) = walk_reply(msg) else {
        return false;
    };
    let Some(o) = reply.opt() else {
        return false;
    };
    if o.end != msg.len() || reply.rrs.last().map(|l| l.start) != Some(o.start) {
        return false;
    }
    let mut cut = text.len().min(EDE_TEXT_MAX);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let text = text.get(..cut).unwrap_or("");
    let opt_len = 2 + text.len();
    let rdlen = o.rdata.len() + 4 + opt_len;
    let Ok(rdlen) = u16::try_from(rdlen) else {
        return false;
    };
    let rdlen_at = o.rdata.start - 2;
    msg.extend_from_slice(&OPT_EDE.to_be_bytes());
    msg.extend_from_slice(&(opt_len as u16).to_be_bytes());
    msg.extend_from_slice(&code.to_be_bytes());
    msg.extend_from_slice(text.as_bytes());
    put_u16(msg, rdlen_at, rdlen);
    true
}

/// Writes a wire name as dotted text (`www.example.com.`), escaping bytes that are not
/// printable ASCII or are dots inside a label as `\DDD`.
pub fn name_to_text(wire: &[u8], out: &mut String) {
    let mut r = Reader::new(wire, 0);
    let mut wrote = false;
    while let Some(len) = r.u8() {
        if len == 0 || len & 0xc0 != 0 {
            break;
        }
        let start = r.pos();
        if r.skip(usize::from(len)).is_none() {
            break;
        }
        for &b in wire.get(start..r.pos()).unwrap_or(&[]) {
            if b.is_ascii_graphic() && b != b'.' && b != b'\\' && b != b'"' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("\\{b:03}"));
            }
        }
        out.push('.');
        wrote = true;
    }
    if !wrote {
        out.push('.');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` type `qtype`, optionally with an OPT record.
    pub(crate) fn query(id: u16, name: &str, qtype: u16, edns: Option<(u16, bool)>) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
        for l in name
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
        {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        if let Some((payload, dnssec_ok)) = edns {
            push_opt(&mut p, 0, dnssec_ok, &[]);
            let at = p.len() - 8;
            put_u16(&mut p, at, payload);
        }
        p
    }

    #[test]
    fn fast_parse_plain_and_edns() {
        let p = query(7, "Www.Example.com", 1, None);
        let q = parse_query(&p).unwrap();
        assert_eq!(q.id, 7);
        assert!(q.flags.rd && q.flags.ad && !q.flags.cd);
        assert_eq!(q.qtype, 1);
        assert_eq!(q.edns, None);
        assert_eq!(q.udp_limit(), 512);
        let mut s = String::new();
        name_to_text(q.qname(), &mut s);
        assert_eq!(s, "Www.Example.com.");

        let p = query(8, "a.b", 28, Some((4096, true)));
        let q = parse_query(&p).unwrap();
        assert_eq!(
            q.edns,
            Some(ClientEdns {
                payload: 4096,
                dnssec_ok: true,
                version: 0
            })
        );
        assert_eq!(q.udp_limit(), usize::from(OUR_UDP_PAYLOAD));
    }

    #[test]
    fn fast_parse_rejects() {
        assert_eq!(parse_query(&[0; 5]).unwrap_err(), QueryParseError::Short);
        let mut p = query(1, "a", 1, None);
        p[2] |= 0x80;
        assert_eq!(parse_query(&p).unwrap_err(), QueryParseError::Response);
        let mut p = query(1, "a", 1, None);
        p[5] = 2;
        assert_eq!(parse_query(&p).unwrap_err(), QueryParseError::Unusual);
        let p = query(1, "a", 1, None);
        assert_eq!(
            parse_query(&p[..p.len() - 1]).unwrap_err(),
            QueryParseError::Unusual
        );
        let mut p = query(1, "a", 1, None);
        p[2] |= 0x28; // opcode 5 (UPDATE)
        assert_eq!(parse_query(&p).unwrap_err(), QueryParseError::Unusual);
        // A compression pointer in the question.
        let mut p = query(1, "a", 1, None);
        p.truncate(12);
        p.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        assert_eq!(parse_query(&p).unwrap_err(), QueryParseError::Unusual);
    }

    #[test]
    fn cache_key_ignores_case_and_id() {
        let (a, b) = (query(1, "WWW.x", 1, None), query(2, "www.X", 1, None));
        let (mut ka, mut kb) = (Vec::new(), Vec::new());
        cache_key(&parse_query(&a).unwrap(), &mut ka);
        cache_key(&parse_query(&b).unwrap(), &mut kb);
        assert_eq!(ka, kb);
        let c = query(1, "www.x", 1, Some((1232, true)));
        let mut kc = Vec::new();
        cache_key(&parse_query(&c).unwrap(), &mut kc);
        assert_ne!(ka, kc);
        assert_eq!(key_qname(&kc), b"\x03www\x01x\x00");
    }

    /// An upstream reply: `n` A records for the question, compressed owner names, and an
    /// OPT with an EDE option plus a cookie option.
    fn reply_for(qpkt: &[u8], n: usize, ttl: u32) -> Vec<u8> {
        let q = parse_query(qpkt).unwrap();
        let mut p = vec![0x12, 0x34, 0x85, 0x80, 0, 1, 0, n as u8, 0, 0, 0, 1];
        p.extend_from_slice(q.question);
        for i in 0..n {
            p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            p.extend_from_slice(&ttl.to_be_bytes());
            p.extend_from_slice(&[0, 4, 10, 0, 0, i as u8]);
        }
        let opts = [0, 15, 0, 2, 0, 3, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        push_opt(&mut p, 0, false, &opts);
        p
    }

    #[test]
    fn walk_and_client_reply() {
        let qp = query(99, "a.Example", 1, None);
        let q = parse_query(&qp).unwrap();
        let up = reply_for(&query(5, "A.EXAMPLE", 1, Some((1232, false))), 3, 60);
        let r = walk_reply(&up).unwrap();
        assert_eq!(r.rrs.len(), 4);
        assert!(same_question(&up, &r, q.question));
        // Client without EDNS: OPT dropped, its question case kept.
        let out = client_reply(&up, &r, &q).unwrap();
        let w = walk_reply(&out).unwrap();
        assert_eq!(w.rrs.len(), 3);
        assert!(w.opt().is_none());
        assert_eq!(&out[w.question.clone()], q.question);
        assert_eq!(w.flags, 0x8580);
        // Client with EDNS: our OPT, EDE kept, cookie dropped.
        let qp2 = query(99, "a.example", 1, Some((4096, true)));
        let q2 = parse_query(&qp2).unwrap();
        let out2 = client_reply(&up, &r, &q2).unwrap();
        let w2 = walk_reply(&out2).unwrap();
        let opt = w2.opt().unwrap();
        assert_eq!(&out2[opt.rdata.clone()], &[0, 15, 0, 2, 0, 3]);
        assert_eq!(get_u16(&out2, opt.start + 3), OUR_UDP_PAYLOAD);
        assert_eq!(opt.ttl & 0x8000, 0x8000, "DO mirrored from the client");
    }

    #[test]
    fn truncation_keeps_whole_records() {
        let qp = query(1, "big.example", 1, None);
        let q = parse_query(&qp).unwrap();
        let up = reply_for(&qp, 60, 300);
        let r = walk_reply(&up).unwrap();
        let full = client_reply(&up, &r, &q).unwrap();
        assert!(full.len() > 512);
        let t = truncate(&full, 512);
        assert!(t.len() <= 512);
        let w = walk_reply(&t).unwrap();
        assert!(w.truncated());
        assert!(w.opt().is_none());
        assert_eq!(w.section(0).count(), (512 - 29) / 16);
        // With EDNS the OPT survives and counts in the size.
        let qp = query(1, "big.example", 1, Some((512, false)));
        let q = parse_query(&qp).unwrap();
        let full = client_reply(&up, &r, &q).unwrap();
        let t = truncate(&full, 512);
        assert!(t.len() <= 512);
        assert!(walk_reply(&t).unwrap().opt().is_some());
    }

    /// Appends a record: owner (wire bytes, may be a pointer), type, class IN, TTL 60, rdata.
    fn push_rr(p: &mut Vec<u8>, owner: &[u8], rtype: u16, rdata: &[u8]) {
        p.extend_from_slice(owner);
        p.extend_from_slice(&rtype.to_be_bytes());
        p.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        p.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        p.extend_from_slice(rdata);
    }

    fn set_counts(p: &mut [u8], an: u16, ns: u16, ar: u16) {
        put_u16(p, 6, an);
        put_u16(p, 8, ns);
        put_u16(p, 10, ar);
    }

    /// A Consul-style SRV answer: `n` SRV targets `nodeNN.node.dc1.consul` in the answer
    /// and one A record per target in Additional, as an upstream sends it with EDNS.
    fn consul_srv(n: u8) -> Vec<u8> {
        let qp = query(1, "web.service.consul", 33, Some((1232, false)));
        let mut p = vec![0, 0, 0x84, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(parse_query(&qp).unwrap().question);
        let mut targets = Vec::new();
        for i in 0..n {
            // Owner pointer, type, class, TTL, rdlen: the target starts 18 bytes in.
            targets.push(p.len() + 18);
            let mut rdata = vec![0, 1, 0, 1, 0x1f, 0x90, 6];
            rdata.extend_from_slice(format!("node{i:02}").as_bytes());
            // `node.dc1.` then a pointer to `consul.` in the question (offset 24).
            rdata.extend_from_slice(b"\x04node\x03dc1\xc0\x18");
            push_rr(&mut p, &[0xc0, 12], 33, &rdata);
        }
        for (i, t) in targets.iter().enumerate() {
            push_rr(
                &mut p,
                &[0xc0 | (t >> 8) as u8, *t as u8],
                1,
                &[10, 0, 0, i as u8],
            );
        }
        set_counts(&mut p, n.into(), 0, n.into());
        push_opt(&mut p, 0, false, &[]);
        put_u16(&mut p, 10, u16::from(n) + 1);
        p
    }

    #[test]
    fn optional_glue_is_dropped_without_tc() {
        // musl asks without EDNS; a dozen targets: the answer fits in 512, the glue does not.
        let qp = query(77, "web.service.consul", 33, None);
        let q = parse_query(&qp).unwrap();
        let up = consul_srv(12);
        let r = walk_reply(&up).unwrap();
        assert_eq!(r.section(0).count(), 12);
        assert!(names_equal(
            &up,
            r.section(0).next().unwrap().rdata.start + 6,
            r.section(2).next().unwrap().start
        ));
        let full = client_reply(&up, &r, &q).unwrap();
        assert!(full.len() > 512, "{} bytes", full.len());
        let t = truncate(&full, 512);
        assert!(t.len() <= 512);
        let w = walk_reply(&t).unwrap();
        assert!(
            !w.truncated(),
            "only Additional was cut: no TC (RFC 2181 §9)"
        );
        assert_eq!(w.section(0).count(), 12, "the whole answer");
        let glue = w.section(2).count();
        assert!(glue > 0 && glue < 12, "as much glue as fits: {glue}");
        // Every kept glue record still names a target (pointers into the answer stay valid).
        for g in w.section(2) {
            assert!(w
                .section(0)
                .any(|a| names_equal(&t, a.rdata.start + 6, g.start)));
        }
    }

    #[test]
    fn glue_rrsets_are_kept_whole() {
        // Answer: one A; Additional: three A records of one owner, then one of another.
        let qp = query(1, "a.example", 1, None);
        let q = parse_query(&qp).unwrap();
        let mut p = vec![0, 0, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(q.question);
        push_rr(&mut p, &[0xc0, 12], 1, &[10, 0, 0, 1]);
        let long = [&[50u8][..], &[b'x'; 50][..], &[0xc0, 14][..]].concat();
        let owner_at = p.len();
        push_rr(&mut p, &long, 1, &[10, 0, 0, 2]);
        for i in 3..5 {
            push_rr(
                &mut p,
                &[0xc0 | (owner_at >> 8) as u8, owner_at as u8],
                1,
                &[10, 0, 0, i],
            );
        }
        push_rr(&mut p, b"\x01b\xc0\x0e", 1, &[10, 0, 0, 9]);
        set_counts(&mut p, 1, 0, 4);
        let r = walk_reply(&p).unwrap();
        let full = client_reply(&p, &r, &q).unwrap();
        // Room for the first two glue records but not the third: the RRset goes entirely.
        let limit = walk_reply(&full).unwrap().rrs[2].end + 3;
        let t = truncate(&full, limit);
        let w = walk_reply(&t).unwrap();
        assert!(!w.truncated());
        assert_eq!((w.section(0).count(), w.section(2).count()), (1, 0));
        let t = truncate(&full, full.len() - 1);
        let w = walk_reply(&t).unwrap();
        assert_eq!(
            w.section(2).count(),
            3,
            "the whole RRset, not the last record"
        );
        assert!(!w.truncated());
    }

    #[test]
    fn negative_answer_needs_its_soa() {
        let qp = query(1, "nx.example", 1, Some((512, false)));
        let q = parse_query(&qp).unwrap();
        let mut p = vec![0, 0, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(q.question);
        let mut soa = vec![0xc0, 15, 0xc0, 15];
        soa.extend_from_slice(&[0; 20]);
        push_rr(&mut p, &[0xc0, 15], TYPE_SOA, &soa);
        push_rr(&mut p, &[0xc0, 15], 2, &[0xc0, 15]); // NS: optional
        set_counts(&mut p, 0, 2, 0);
        let r = walk_reply(&p).unwrap();
        let full = client_reply(&p, &r, &q).unwrap();
        let w = walk_reply(&full).unwrap();
        let soa_end = w.rrs[0].end;
        let opt_len = w.rrs[2].end - w.rrs[2].start;
        // SOA fits, NS does not: no TC.
        let t = truncate(&full, soa_end + opt_len);
        let tw = walk_reply(&t).unwrap();
        assert!(!tw.truncated());
        assert_eq!(tw.section(1).count(), 1);
        assert!(tw.opt().is_some());
        // SOA does not fit: TC.
        let t = truncate(&full, soa_end + opt_len - 1);
        let tw = walk_reply(&t).unwrap();
        assert!(tw.truncated());
        assert_eq!(tw.section(1).count(), 0);
        assert!(t.len() < soa_end + opt_len);
    }

    #[test]
    fn reply_header_describes_us() {
        // Consul: AA=1, RA=0, RD echoed off, CD dropped.
        let qp = query(1, "a.example", 1, None);
        let mut qp2 = qp.clone();
        qp2[3] |= 0x10; // CD
        let q = parse_query(&qp2).unwrap();
        let mut up = reply_for(&qp, 1, 60);
        put_u16(&mut up, 2, 0x8400 | 0x0040);
        let r = walk_reply(&up).unwrap();
        let out = client_reply(&up, &r, &q).unwrap();
        let f = get_u16(&out, 2);
        assert_eq!(f & 0x0080, 0x0080, "RA set");
        assert_eq!(f & 0x0100, 0x0100, "RD as the client sent it");
        assert_eq!(f & 0x0010, 0x0010, "CD copied from the query");
        assert_eq!(f & 0x0400, 0x0400, "AA passed through");
        assert_eq!(f & 0x0040, 0, "Z clear");
    }

    #[test]
    fn client_opt_found_anywhere() {
        let p = query(1, "a", 1, Some((4096, true)));
        assert_eq!(
            client_opt(&p).map(|e| (e.payload, e.dnssec_ok)),
            Some((4096, true))
        );
        assert_eq!(client_opt(&query(1, "a", 1, None)), None);
        // QDCOUNT 0 with an OPT (a FORMERR that must still carry OPT).
        let mut p0 = p[..12].to_vec();
        put_u16(&mut p0, 4, 0);
        p0.extend_from_slice(&p[p.len() - 11..]);
        assert!(client_opt(&p0).is_some());
        // Truncated: nothing.
        assert_eq!(client_opt(&p[..p.len() - 1]), None);
        // Two OPTs: invalid.
        let mut p2 = p.clone();
        p2.extend_from_slice(&p[p.len() - 11..]);
        put_u16(&mut p2, 10, 2);
        assert_eq!(client_opt(&p2), None);
    }

    #[test]
    fn ede_added_to_our_opt() {
        let flags = QueryFlags::default();
        let edns = Some(ClientEdns {
            payload: 1232,
            dnssec_ok: false,
            version: 0,
        });
        let mut e = error_reply(
            1,
            0,
            flags,
            Some(b"\x01a\x00\x00\x01\x00\x01"),
            edns,
            rcode::SERVFAIL,
        );
        assert!(add_ede(
            &mut e,
            ede::NO_REACHABLE_AUTHORITY,
            "udp 10.0.0.1:53 timeout"
        ));
        let w = walk_reply(&e).unwrap();
        let o = w.opt().unwrap();
        let rd = &e[o.rdata.clone()];
        assert_eq!(&rd[..6], &[0, 15, 0, 25, 0, 22]);
        assert_eq!(&rd[6..], b"udp 10.0.0.1:53 timeout");
        let m = hickory_proto::op::Message::from_vec(&e).unwrap();
        assert!(m.edns.is_some());
        // No OPT (client without EDNS): unchanged.
        let mut plain = error_reply(1, 0, flags, None, None, rcode::SERVFAIL);
        let before = plain.clone();
        assert!(!add_ede(&mut plain, 22, "x"));
        assert_eq!(plain, before);
        // A long text is cut and the reply still truncates to 512 with its OPT.
        let long = "é".repeat(400);
        let mut e = error_reply(
            1,
            0,
            flags,
            Some(b"\x01a\x00\x00\x01\x00\x01"),
            edns,
            rcode::SERVFAIL,
        );
        assert!(add_ede(&mut e, 23, &long));
        assert!(e.len() < 512);
        let t = truncate(&e, 40);
        assert!(t.len() <= 40 && walk_reply(&t).unwrap().opt().is_some());
    }

    #[test]
    fn soa_negative() {
        let qp = query(1, "nx.example", 1, None);
        let q = parse_query(&qp).unwrap();
        let mut p = vec![0, 0, 0x85, 0x83, 0, 1, 0, 0, 0, 1, 0, 0];
        p.extend_from_slice(q.question);
        p.extend_from_slice(&[0xc0, 15, 0, 6, 0, 1, 0, 0, 0, 90]);
        let mut rdata = vec![0xc0, 15, 0xc0, 15];
        for v in [1u32, 2, 3, 4, 30] {
            rdata.extend_from_slice(&v.to_be_bytes());
        }
        p.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        p.extend_from_slice(&rdata);
        let r = walk_reply(&p).unwrap();
        assert_eq!(r.rcode, rcode::NXDOMAIN);
        let soa = r.section(1).next().unwrap();
        assert_eq!(soa_negative_ttl(&p, soa), Some(30));
    }

    #[test]
    fn error_reply_shapes() {
        let e = error_reply(
            9,
            0,
            QueryFlags {
                rd: true,
                ..Default::default()
            },
            Some(b"\x01a\x00\x00\x01\x00\x01"),
            Some(ClientEdns {
                payload: 1232,
                dnssec_ok: false,
                version: 1,
            }),
            rcode::BADVERS,
        );
        let r = walk_reply(&e).unwrap();
        assert_eq!(r.rcode, rcode::BADVERS);
        assert_eq!(r.id, 9);
        assert_eq!(r.flags & 0x8100, 0x8100);
    }

    #[test]
    fn truncation_rules_hold_on_random_replies() {
        let mut seed = 0x2181_0009u32;
        let mut next = move |n: u32| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed % n.max(1)
        };
        for round in 0..2000 {
            let edns = next(2) == 0;
            let qtype = [1u16, 28, 33, 15][next(4) as usize];
            let qp = query(1, "q.example", qtype, edns.then_some((512, false)));
            let q = parse_query(&qp).unwrap();
            let rc = [0u16, 0, 3, 2][next(4) as usize];
            let mut p = vec![0, 0, 0x81, 0x80 | rc as u8, 0, 1, 0, 0, 0, 0, 0, 0];
            p.extend_from_slice(q.question);
            let mut counts = [0u16; 3];
            for (section, count) in counts.iter_mut().enumerate() {
                for _ in 0..next(25) {
                    let rtype = match (section, next(5)) {
                        (0, 0) => 5,
                        (0, _) => qtype,
                        (1, 0 | 1) => TYPE_SOA,
                        (1, 2) => TYPE_RRSIG,
                        (1, _) => 2,
                        (_, _) => [1u16, 28][next(2) as usize],
                    };
                    let owner: Vec<u8> = if next(3) == 0 {
                        vec![1, b'a' + next(3) as u8, 0xc0, 12]
                    } else {
                        vec![0xc0, 12]
                    };
                    let rdata: Vec<u8> = (0..next(60)).map(|i| i as u8).collect();
                    push_rr(&mut p, &owner, rtype, &rdata);
                    *count += 1;
                }
            }
            set_counts(&mut p, counts[0], counts[1], counts[2]);
            let r = walk_reply(&p).unwrap();
            let full = client_reply(&p, &r, &q).unwrap();
            let fw = walk_reply(&full).unwrap();
            let limit = 60 + next(500) as usize;
            let t = truncate(&full, limit);
            let w = walk_reply(&t).unwrap_or_else(|e| panic!("round {round}: {e:?}"));
            assert!(t.len() <= limit, "round {round}");
            assert_eq!(w.opt().is_some(), edns, "round {round}: OPT kept");
            let kept: Vec<_> = w.rrs.iter().filter(|r| r.rtype != TYPE_OPT).collect();
            let orig: Vec<_> = fw.rrs.iter().filter(|r| r.rtype != TYPE_OPT).collect();
            for (a, b) in kept.iter().zip(&orig) {
                assert_eq!(
                    t[a.start..a.end],
                    full[b.start..b.end],
                    "round {round}: a prefix"
                );
            }
            if !w.truncated() {
                assert_eq!(w.section(0).count(), fw.section(0).count(), "round {round}");
                if is_negative(&full, &fw) {
                    let soas = |x: &Reply| x.section(1).filter(|r| r.rtype == TYPE_SOA).count();
                    assert_eq!(soas(&w), soas(&fw), "round {round}: negative keeps its SOA");
                }
            }
        }
    }

    #[test]
    fn walker_survives_garbage() {
        let mut seed = 0x1234_5678u32;
        for len in 0..400 {
            let mut p = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                p.push(seed as u8);
            }
            let _ = parse_query(&p);
            if let Ok(r) = walk_reply(&p) {
                for rr in &r.rrs {
                    let _ = soa_negative_ttl(&p, rr);
                }
            }
            let _ = truncate(&p, 100);
            let mut s = String::new();
            name_to_text(&p, &mut s);
        }
    }
}
