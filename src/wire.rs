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
/// The UDP payload size we advertise upstream and to clients (DNS flag day 2020).
pub const OUR_UDP_PAYLOAD: u16 = 1232;
/// Extended DNS Error option code (RFC 8914), the one EDNS option we pass back to clients.
const OPT_EDE: u16 = 15;

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

fn push_opt(out: &mut Vec<u8>, ext_rcode: u8, dnssec_ok: bool, options: &[u8]) {
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

/// Builds the reply for a client from an upstream reply: the upstream's flags, rcode and
/// every record in order, the client's question bytes (its letter case), the ID left 0
/// (the caller patches it), and the OPT replaced by ours if — and only if — the client
/// sent EDNS. Our OPT keeps the upstream's extended rcode bits and its EDE options.
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
    out.extend_from_slice(&reply.flags.to_be_bytes());
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
/// bytes: whole records in order while they fit, then TC=1 and the OPT put back. Names
/// only point backwards (RFC 1035 §4.1.4), so cutting at a record boundary keeps every
/// remaining compression pointer valid.
pub fn truncate(msg: &[u8], limit: usize) -> Vec<u8> {
    let Ok(reply) = walk_reply(msg) else {
        return msg.get(..HEADER_LEN.min(msg.len())).unwrap_or(&[]).to_vec();
    };
    let opt = reply.opt().cloned();
    let opt_len = opt.as_ref().map_or(0, |o| o.end - o.start);
    let budget = limit.saturating_sub(opt_len);
    let mut keep_end = reply.question.end;
    let mut counts = [0u16; 3];
    for rr in reply.rrs.iter().filter(|r| r.rtype != TYPE_OPT) {
        if rr.end > budget {
            break;
        }
        keep_end = rr.end;
        if let Some(c) = counts.get_mut(usize::from(rr.section)) {
            *c += 1;
        }
    }
    let mut out = msg.get(..keep_end).unwrap_or(&[]).to_vec();
    let flags = get_u16(&out, 2) | 0x0200;
    put_u16(&mut out, 2, flags);
    put_u16(&mut out, 6, counts[0]);
    put_u16(&mut out, 8, counts[1]);
    put_u16(&mut out, 10, counts[2] + u16::from(opt.is_some()));
    if let Some(o) = opt {
        out.extend_from_slice(msg.get(o.start..o.end).unwrap_or(&[]));
    }
    out
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
