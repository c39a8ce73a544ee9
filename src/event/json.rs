//! The JSON line of one event: hand-written so the writer thread formats without
//! allocating. The schema is documented in the parent module.
//!
//! Consecutive events mostly share their low-variety parts (the client address, the
//! upstream, and the run from the question type to the cache status: rcode, flags,
//! generation, zone, error). The writer keeps the last formatted text of each in a
//! [`LineCache`] and copies it when the next event's values are the same, so a line costs a
//! few copies plus its truly per-query numbers and name. `json_reference` (tests only) keeps
//! the formatter this replaced; the tests hold the two to byte-identical output.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{CacheStatus, Outcome, Proto, QueryEvent, TlsConn, SCHEMA_VERSION};

/// The ECS version as a literal, so it can be spliced into the constant parts of a line.
macro_rules! ecs_version {
    () => {
        "8.11.0"
    };
}

/// The rcode's mnemonic (`NOERROR`, `NXDOMAIN`, …, `BADVERS`), extended codes included.
pub fn rcode_name(code: u16) -> std::borrow::Cow<'static, str> {
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        16 => "BADVERS".into(),
        c => hickory_proto::op::ResponseCode::from((c >> 4) as u8, (c & 0xf) as u8)
            .to_string()
            .to_ascii_uppercase()
            .into(),
    }
}

fn qtype_name(t: u16) -> std::borrow::Cow<'static, str> {
    use hickory_proto::rr::RecordType;
    // The common ones without formatting.
    match t {
        1 => "A".into(),
        28 => "AAAA".into(),
        12 => "PTR".into(),
        33 => "SRV".into(),
        5 => "CNAME".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        65 => "HTTPS".into(),
        _ => match RecordType::from(t) {
            RecordType::Unknown(n) => format!("TYPE{n}").into(),
            rt => rt.to_string().into(),
        },
    }
}

/// The ASCII digit of `n`'s last decimal place.
#[inline(always)]
fn digit(n: u32) -> u8 {
    b'0' + (n % 10) as u8
}

/// "00" to "99" as pairs, for one lookup per two digits.
const PAIR_TABLE: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

/// The two ASCII digits of `n` % 100.
#[inline(always)]
fn pair(n: u32) -> [u8; 2] {
    PAIR_TABLE
        .get((n % 100) as usize)
        .copied()
        .unwrap_or(*b"00")
}

/// Appends the decimal digits of `n` (no allocation, no `fmt` machinery).
#[inline]
fn push_u64(out: &mut Vec<u8>, n: u64) {
    // Every number in an event is usually under 100,000 (ports, IDs, sizes, counts, hit
    // durations in ns are the longest): written as one fixed-size copy.
    match u32::try_from(n) {
        Ok(n) if n < 100_000 => push_small(out, n),
        _ => push_u64_long(out, n),
    }
}

/// `n` < 100,000 in as many digits as it has.
#[inline(always)]
fn push_small(out: &mut Vec<u8>, n: u32) {
    if n < 10 {
        out.push(digit(n));
    } else if n < 100 {
        out.extend_from_slice(&pair(n));
    } else if n < 1_000 {
        let [a, b] = pair(n);
        out.extend_from_slice(&[digit(n / 100), a, b]);
    } else if n < 10_000 {
        let ([a, b], [c, d]) = (pair(n / 100), pair(n));
        out.extend_from_slice(&[a, b, c, d]);
    } else {
        out.extend_from_slice(&five(n));
    }
}

/// `n` % 100,000 in exactly five digits.
#[inline(always)]
fn five(n: u32) -> [u8; 5] {
    let ([b, c], [d, e]) = (pair(n / 100), pair(n));
    [digit(n / 10_000), b, c, d, e]
}

/// "00" to "99": two digits per division.
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes the digits of `n` right-aligned into `buf` (pre-filled with `'0'`), two at a
/// time; returns where they start.
fn digits(buf: &mut [u8; 20], mut n: u64) -> usize {
    let mut i = buf.len();
    while n >= 100 && i >= 2 {
        let p = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        if let (Some(dst), Some(src)) = (buf.get_mut(i..i + 2), PAIRS.get(p..p + 2)) {
            dst.copy_from_slice(src);
        }
    }
    if n >= 10 && i >= 2 {
        let p = n as usize * 2;
        i -= 2;
        if let (Some(dst), Some(src)) = (buf.get_mut(i..i + 2), PAIRS.get(p..p + 2)) {
            dst.copy_from_slice(src);
        }
    } else if i >= 1 {
        i -= 1;
        if let Some(d) = buf.get_mut(i) {
            *d = b'0' + n as u8;
        }
    }
    i
}

fn push_u64_long(out: &mut Vec<u8>, n: u64) {
    if n < 10_000_000_000 {
        // Durations in ns: the digits above the last five, then those five.
        push_small(out, (n / 100_000) as u32);
        out.extend_from_slice(&five((n % 100_000) as u32));
        return;
    }
    let mut buf = [b'0'; 20];
    let i = digits(&mut buf, n);
    out.extend_from_slice(buf.get(i..).unwrap_or(&[]));
}

/// Appends `n` in at least `width` digits, zero-padded (`width` at most 20).
fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let i = digits(&mut buf, n);
    let start = i.min(buf.len().saturating_sub(width));
    out.extend_from_slice(buf.get(start..).unwrap_or(&[]));
}

/// `n` % 1000 in exactly three digits.
fn push_3(out: &mut Vec<u8>, n: u64) {
    let n = (n % 1_000) as u32;
    let [b, c] = pair(n);
    out.extend_from_slice(&[digit(n / 100), b, c]);
}

/// `ip:port`, or `[ip]:port` for IPv6.
fn push_addr(out: &mut Vec<u8>, a: SocketAddr) {
    if a.is_ipv6() {
        out.push(b'[');
        push_ip(out, a.ip());
        out.push(b']');
    } else {
        push_ip(out, a.ip());
    }
    out.push(b':');
    push_u64(out, u64::from(a.port()));
}

/// RFC 3339 UTC with microseconds, from the civil-from-days algorithm (no tz database).
pub fn rfc3339(t: SystemTime) -> String {
    let mut out = Vec::with_capacity(27);
    TimeCache::default().write(&mut out, t);
    String::from_utf8_lossy(&out).into_owned()
}

/// Remembers the formatted date and time of the last whole second seen, so the writer
/// formats a calendar date once per second rather than once per event.
#[derive(Default)]
struct TimeCache {
    secs: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS.` of `secs`.
    prefix: Vec<u8>,
}

impl TimeCache {
    /// Brings `prefix` to the second of `t`; returns the microseconds within it.
    fn update(&mut self, t: SystemTime) -> u32 {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        if self.secs != Some(secs) {
            self.prefix.clear();
            civil(&mut self.prefix, secs);
            self.prefix.push(b'.');
            self.secs = Some(secs);
        }
        d.subsec_micros()
    }

    fn write(&mut self, out: &mut Vec<u8>, t: SystemTime) {
        let us = self.update(t);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&micros(us));
    }
}

/// Microseconds as six digits and the `Z` of UTC.
fn micros(us: u32) -> [u8; 7] {
    let ([a, b], [c, d], [e, f]) = (pair(us / 10_000), pair(us / 100), pair(us));
    [a, b, c, d, e, f, b'Z']
}

/// The start of a line up to `"duration":`, for the current second: one copy per event,
/// then its microseconds and outcome written over the placeholders.
#[derive(Default)]
struct Head {
    time: TimeCache,
    /// `{"@timestamp":"<prefix>000000Z","ecs":…,"outcome":"success","duration":`
    text: Vec<u8>,
    /// Where the microseconds are in `text`.
    micros_at: usize,
}

/// The rest of the head after the timestamp, up to the outcome.
const HEAD_MIDDLE: &str = concat!(
    "\",\"ecs\":{\"version\":\"",
    ecs_version!(),
    "\"},\"event\":{\"kind\":\"event\",\"category\":[\"network\"],\"type\":[\"protocol\"],\"dataset\":\"splitdns.query\",\"outcome\":\""
);
/// After the outcome: `","duration":`.
const HEAD_END: &[u8] = b"\",\"duration\":";

impl Head {
    fn write(&mut self, out: &mut Vec<u8>, t: SystemTime, failure: bool) {
        let before = self.time.secs;
        let us = self.time.update(t);
        if self.text.is_empty() || before != self.time.secs {
            self.text.clear();
            self.text.extend_from_slice(b"{\"@timestamp\":\"");
            self.text.extend_from_slice(&self.time.prefix);
            self.micros_at = self.text.len();
            self.text.extend_from_slice(b"000000Z");
            self.text.extend_from_slice(HEAD_MIDDLE.as_bytes());
            self.text.extend_from_slice(b"success");
            self.text.extend_from_slice(HEAD_END);
        }
        let start = out.len();
        out.extend_from_slice(&self.text);
        let at = start + self.micros_at;
        if let Some(dst) = out.get_mut(at..at + 7) {
            dst.copy_from_slice(&micros(us));
        }
        if failure {
            // "failure" has the length of "success": written over it.
            let at = out.len() - HEAD_END.len() - 7;
            if let Some(dst) = out.get_mut(at..at + 7) {
                dst.copy_from_slice(b"failure");
            }
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS` for seconds since the epoch (UTC).
fn civil(out: &mut Vec<u8>, secs: u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    );
}

/// Writes `s` as a JSON string (quotes included).
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        // The usual case (names from the config, mnemonics): nothing to escape.
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Bytes a name label shows as they are in presentation form: printable ASCII except the
/// dot, the backslash and the quote.
fn plain(b: u8) -> bool {
    b.wrapping_sub(0x21) < 0x5e && b != b'.' && b != b'\\' && b != b'"'
}

/// Eight bytes with `b` in each.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// Whether every one of the eight bytes of `x` is plain (printable ASCII other than the
/// dot, the backslash and the quote), eight at a time with the usual bit tricks: a byte
/// below 0x21, one of 0x7f or above, or one equal to an excluded byte sets its high bit.
fn all_plain(x: u64) -> bool {
    const HIGH: u64 = splat(0x80);
    let has_zero = |v: u64| v.wrapping_sub(splat(1)) & !v & HIGH;
    let below = x.wrapping_sub(splat(0x21)) & !x & HIGH;
    let above = (x.wrapping_add(splat(1)) | x) & HIGH;
    let excluded =
        has_zero(x ^ splat(b'.')) | has_zero(x ^ splat(b'\\')) | has_zero(x ^ splat(b'"'));
    below | above | excluded == 0
}

/// Appends the presentation form of a well-formed name of plain labels that ends at the
/// root label, and returns true; anything else: false, with `out` left longer (the caller
/// truncates). The name's text is its wire form after the first length byte with every
/// later length byte (and the root label) turned into a dot: one copy, a walk over the
/// length bytes, and a check of the label bytes eight at a time.
fn plain_name(out: &mut Vec<u8>, wire: &[u8]) -> bool {
    let Some(body) = wire.get(1..) else {
        return false;
    };
    let start = out.len();
    out.extend_from_slice(body);
    // First walk: the structure, with a plain stand-in where the dots will go.
    let mut pos = 0usize;
    loop {
        let Some(&len) = wire.get(pos) else {
            return false;
        };
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return false;
        }
        pos += 1 + usize::from(len);
        match out.get_mut(start + pos - 1) {
            Some(b) => *b = b'a',
            None => return false,
        }
    }
    if pos == 0 {
        return false;
    }
    out.truncate(start + pos);
    let text = out.get(start..).unwrap_or(&[]);
    let mut chunks = text.chunks_exact(8);
    for c in &mut chunks {
        if !all_plain(u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]))) {
            return false;
        }
    }
    let mut last = [b'a'; 8];
    let rest = chunks.remainder();
    if let Some(dst) = last.get_mut(..rest.len()) {
        dst.copy_from_slice(rest);
    }
    if !all_plain(u64::from_ne_bytes(last)) {
        return false;
    }
    // Second walk: the dots.
    let mut pos = 0usize;
    while let Some(&len) = wire.get(pos) {
        if len == 0 {
            break;
        }
        pos += 1 + usize::from(len);
        if let Some(b) = out.get_mut(start + pos - 1) {
            *b = b'.';
        }
    }
    true
}

/// Writes a wire name as a JSON string in presentation form: `\DDD` escapes (RFC 1035
/// §5.1) for bytes that are not printable ASCII, dots inside labels, backslashes and
/// quotes, with the backslashes themselves escaped for JSON.
fn json_name(out: &mut Vec<u8>, wire: &[u8]) {
    out.push(b'"');
    let start = out.len();
    if plain_name(out, wire) {
        out.push(b'"');
        return;
    }
    out.truncate(start);
    let mut pos = 0usize;
    let mut wrote = false;
    while let Some(&len) = wire.get(pos) {
        if len == 0 || len & 0xc0 != 0 {
            break;
        }
        let Some(label) = wire.get(pos + 1..pos + 1 + usize::from(len)) else {
            break;
        };
        for &b in label {
            if plain(b) {
                out.push(b);
            } else {
                out.extend_from_slice(b"\\\\");
                push_padded(out, u64::from(b), 3);
            }
        }
        out.push(b'.');
        wrote = true;
        pos += 1 + usize::from(len);
    }
    if !wrote {
        out.push(b'.');
    }
    out.push(b'"');
}

fn json_ms(out: &mut Vec<u8>, d: Duration) {
    let us = d.as_micros() as u64;
    push_u64(out, us / 1000);
    out.push(b'.');
    push_3(out, us);
}

/// `,"tls":{"connection":"reused"}` or
/// `,"tls":{"connection":"new","handshake_ms":N,"resumed":B}`.
fn push_tls(out: &mut Vec<u8>, t: TlsConn) {
    match t.handshake {
        Some(h) if !t.reused => {
            out.extend_from_slice(b",\"tls\":{\"connection\":\"new\",\"handshake_ms\":");
            json_ms(out, h);
            out.extend_from_slice(if t.resumed {
                b",\"resumed\":true}" as &[u8]
            } else {
                b",\"resumed\":false}"
            });
        }
        _ => out.extend_from_slice(b",\"tls\":{\"connection\":\"reused\"}"),
    }
}

/// ECS version the field names follow.
pub const ECS_VERSION: &str = ecs_version!();

/// The reply header bits `dns.header_flags` lists (AA, TC, RD, RA, AD, CD).
const FLAG_BITS: u16 = 0x0400 | 0x0200 | 0x0100 | 0x0080 | 0x0020 | 0x0010;

/// `dns.header_flags` of the reply: the flags ECS lists (AA, TC, RD, RA, AD, CD, DO).
fn push_header_flags(out: &mut Vec<u8>, flags: u16, dnssec_ok: bool) {
    const BITS: [(u16, [u8; 2]); 6] = [
        (0x0400, *b"AA"),
        (0x0200, *b"TC"),
        (0x0100, *b"RD"),
        (0x0080, *b"RA"),
        (0x0020, *b"AD"),
        (0x0010, *b"CD"),
    ];
    out.push(b'[');
    let mut first = true;
    let mut put = |out: &mut Vec<u8>, [a, b]: [u8; 2]| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(&[b'"', a, b, b'"']);
    };
    for (bit, name) in BITS {
        if flags & bit != 0 {
            put(out, name);
        }
    }
    if dnssec_ok {
        put(out, *b"DO");
    }
    out.push(b']');
}

fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            push_small(out, u32::from(a));
            out.push(b'.');
            push_small(out, u32::from(b));
            out.push(b'.');
            push_small(out, u32::from(c));
            out.push(b'.');
            push_small(out, u32::from(d));
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `},"client":{"ip":"<ip>","port":`
fn push_client(out: &mut Vec<u8>, ip: IpAddr) {
    out.extend_from_slice(b"},\"client\":{\"ip\":\"");
    push_ip(out, ip);
    out.extend_from_slice(b"\",\"port\":");
}

/// A remembered piece of a line. When it fits in `N` bytes it is also kept in a block of
/// exactly `N`, which is copied whole (a few fixed-size moves, no call into `memcpy` for a
/// length known only at run time) and cut back to the piece's length.
struct Snippet<const N: usize> {
    text: Vec<u8>,
    block: [u8; N],
}

impl<const N: usize> Default for Snippet<N> {
    fn default() -> Self {
        Snippet {
            text: Vec::new(),
            block: [0; N],
        }
    }
}

impl<const N: usize> Snippet<N> {
    /// Replaces the piece with what `write` appends to an empty buffer.
    fn set(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.text.clear();
        write(&mut self.text);
        if let (Some(dst), Some(src)) = (
            self.block.get_mut(..self.text.len()),
            self.text.get(..N.min(self.text.len())),
        ) {
            dst.copy_from_slice(src);
        }
    }

    fn push(&self, out: &mut Vec<u8>) {
        let len = self.text.len();
        if len <= N {
            let at = out.len();
            out.extend_from_slice(&self.block);
            out.truncate(at + len);
        } else {
            out.extend_from_slice(&self.text);
        }
    }
}

/// The text of the last IP address (client) or socket address (upstream) written.
struct AddrText<A> {
    addr: Option<A>,
    text: Snippet<64>,
}

impl<A> Default for AddrText<A> {
    fn default() -> Self {
        AddrText {
            addr: None,
            text: Snippet::default(),
        }
    }
}

impl<A: PartialEq + Copy> AddrText<A> {
    fn push(&mut self, out: &mut Vec<u8>, addr: A, format: fn(&mut Vec<u8>, A)) {
        if self.addr != Some(addr) {
            self.text.set(|t| format(t, addr));
            self.addr = Some(addr);
        }
        self.text.push(out);
    }
}

fn same_str(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => std::ptr::eq(a, b) || a == b,
        (None, None) => true,
        _ => false,
    }
}

/// What decides the run of a line from the question type to the cache status.
struct MidKey {
    /// The question type, when the question is written.
    qtype: Option<u16>,
    rcode: Option<u16>,
    flags: u16,
    dnssec_ok: bool,
    error: Option<&'static str>,
    generation: Option<u64>,
    zone: Option<Arc<str>>,
    local: Option<&'static str>,
    cache: CacheStatus,
}

/// The question type if the question is written (both name and type are known).
fn question_type(ev: &QueryEvent) -> Option<u16> {
    ev.qname.as_ref().and(ev.qtype)
}

impl MidKey {
    fn of(ev: &QueryEvent) -> MidKey {
        MidKey {
            qtype: question_type(ev),
            rcode: ev.rcode,
            flags: ev.flags & FLAG_BITS,
            dnssec_ok: ev.dnssec_ok,
            error: ev.error,
            generation: ev.generation,
            zone: ev.zone.clone(),
            local: ev.local,
            cache: ev.cache,
        }
    }

    fn matches(&self, ev: &QueryEvent) -> bool {
        self.qtype == question_type(ev)
            && self.rcode == ev.rcode
            && self.flags == ev.flags & FLAG_BITS
            && self.dnssec_ok == ev.dnssec_ok
            && self.generation == ev.generation
            && self.cache == ev.cache
            && same_str(self.error, ev.error)
            && same_str(self.local, ev.local)
            && match (&self.zone, &ev.zone) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || **a == **b,
                (None, None) => true,
                _ => false,
            }
    }

    /// `[,"type":T}][,"response_code":R,"header_flags":[…]]}[,"error":{…}],"splitdns":{
    /// "schema_version":2[,"generation":G][,"zone":Z][,"local":L],"cache":{"status":"S"`
    fn write(&self, out: &mut Vec<u8>) {
        if let Some(t) = self.qtype {
            out.extend_from_slice(b",\"type\":");
            json_str(out, &qtype_name(t));
            out.push(b'}');
        }
        if let Some(r) = self.rcode {
            out.extend_from_slice(b",\"response_code\":");
            json_str(out, &rcode_name(r));
            out.extend_from_slice(b",\"header_flags\":");
            push_header_flags(out, self.flags, self.dnssec_ok);
        }
        out.push(b'}');
        if let Some(e) = self.error {
            out.extend_from_slice(b",\"error\":{\"message\":");
            json_str(out, e);
            out.push(b'}');
        }
        out.extend_from_slice(b",\"splitdns\":{\"schema_version\":");
        push_u64(out, u64::from(SCHEMA_VERSION));
        if let Some(g) = self.generation {
            out.extend_from_slice(b",\"generation\":");
            push_u64(out, g);
        }
        if let Some(z) = self.zone.as_deref() {
            out.extend_from_slice(b",\"zone\":");
            json_str(out, z);
        }
        if let Some(l) = self.local {
            out.extend_from_slice(b",\"local\":");
            json_str(out, l);
        }
        out.extend_from_slice(b",\"cache\":{\"status\":\"");
        out.extend_from_slice(self.cache.as_str().as_bytes());
        out.push(b'"');
    }
}

/// The last run from the question type to the cache status, and what it was written for.
#[derive(Default)]
struct MidText {
    key: Option<MidKey>,
    text: Vec<u8>,
}

impl MidText {
    fn push(&mut self, out: &mut Vec<u8>, ev: &QueryEvent) {
        if !self.key.as_ref().is_some_and(|k| k.matches(ev)) {
            let key = MidKey::of(ev);
            self.text.clear();
            key.write(&mut self.text);
            self.key = Some(key);
        }
        out.extend_from_slice(&self.text);
    }
}

/// What decides the run from the end of the cache object to the first attempt's outcome.
#[derive(Clone, Copy, PartialEq)]
struct TailKey {
    upstream: Option<SocketAddr>,
    servers_file_version: Option<u64>,
    /// The first attempt's server and transport.
    first: Option<(SocketAddr, Proto)>,
}

impl TailKey {
    fn of(ev: &QueryEvent) -> TailKey {
        TailKey {
            upstream: ev.upstream,
            servers_file_version: ev.servers_file_version,
            first: ev.attempts.first().map(|a| (a.server, a.proto)),
        }
    }

    /// `}[,"upstream":"U"][,"servers_file_version":V],"attempts":[` and, with an attempt,
    /// `{"server":"S","transport":"T","outcome":"`.
    fn write(&self, out: &mut Vec<u8>) {
        out.push(b'}');
        if let Some(u) = self.upstream {
            out.extend_from_slice(b",\"upstream\":\"");
            push_addr(out, u);
            out.push(b'"');
        }
        if let Some(v) = self.servers_file_version {
            out.extend_from_slice(b",\"servers_file_version\":");
            push_u64(out, v);
        }
        out.extend_from_slice(b",\"attempts\":[");
        if let Some((server, proto)) = self.first {
            out.extend_from_slice(b"{\"server\":\"");
            push_addr(out, server);
            out.extend_from_slice(transport_part(proto));
        }
    }
}

/// The last run written by [`TailKey::write`], and its key.
#[derive(Default)]
struct TailText {
    key: Option<TailKey>,
    text: Snippet<128>,
}

impl TailText {
    fn push(&mut self, out: &mut Vec<u8>, ev: &QueryEvent) {
        let key = TailKey::of(ev);
        if self.key != Some(key) {
            self.text.set(|t| key.write(t));
            self.key = Some(key);
        }
        self.text.push(out);
    }
}

/// What the writer thread remembers from the lines it wrote, to copy rather than format
/// the parts the next event shares with them. Owned by one writer; holds one zone name.
#[derive(Default)]
pub(super) struct LineCache {
    head: Head,
    client: AddrText<IpAddr>,
    upstream: AddrText<SocketAddr>,
    mid: MidText,
    tail: TailText,
}

/// `","transport":"…","outcome":"` for an attempt's transport.
fn transport_part(p: Proto) -> &'static [u8] {
    match p {
        Proto::Udp => b"\",\"transport\":\"udp\",\"outcome\":\"",
        Proto::Tcp => b"\",\"transport\":\"tcp\",\"outcome\":\"",
        Proto::Tls => b"\",\"transport\":\"tls\",\"outcome\":\"",
    }
}

/// `…","duration_ms":` for an attempt's outcome.
fn outcome_part(o: Outcome) -> &'static [u8] {
    match o {
        Outcome::Answer => b"answer\",\"duration_ms\":",
        Outcome::Timeout => b"timeout\",\"duration_ms\":",
        Outcome::Servfail => b"servfail\",\"duration_ms\":",
        Outcome::Refused => b"refused\",\"duration_ms\":",
        Outcome::Error => b"error\",\"duration_ms\":",
        Outcome::Truncated => b"truncated\",\"duration_ms\":",
        Outcome::Lost => b"lost\",\"duration_ms\":",
        Outcome::NoEdns => b"noedns\",\"duration_ms\":",
        Outcome::Loop => b"loop\",\"duration_ms\":",
    }
}

impl QueryEvent {
    /// Appends this event as one JSON object (no newline) to `out`. Hand-written so the
    /// writer thread formats an event without allocating; the schema is in the module doc.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_with(out, &mut LineCache::default());
    }

    /// Like `write_json`, copying the parts `cache` holds from earlier lines.
    pub(super) fn write_json_with(&self, out: &mut Vec<u8>, cache: &mut LineCache) {
        // One growth check for the usual line (a few hundred bytes) instead of many.
        out.reserve(768 + 128 * self.attempts.len());
        cache.head.write(out, self.timestamp, self.error.is_some());
        push_u64(
            out,
            u64::try_from(self.duration.as_nanos()).unwrap_or(u64::MAX),
        );
        cache.client.push(out, self.client.ip(), push_client);
        push_u64(out, u64::from(self.client.port()));
        let answered = self.rcode.is_some();
        out.extend_from_slice(match (self.proto, answered) {
            (Proto::Udp, true) => {
                b"},\"network\":{\"transport\":\"udp\",\"protocol\":\"dns\"},\"dns\":{\"type\":\"answer\""
                    as &[u8]
            }
            (Proto::Udp, false) => {
                b"},\"network\":{\"transport\":\"udp\",\"protocol\":\"dns\"},\"dns\":{\"type\":\"query\""
            }
            (Proto::Tcp, true) => {
                b"},\"network\":{\"transport\":\"tcp\",\"protocol\":\"dns\"},\"dns\":{\"type\":\"answer\""
            }
            (Proto::Tcp, false) => {
                b"},\"network\":{\"transport\":\"tcp\",\"protocol\":\"dns\"},\"dns\":{\"type\":\"query\""
            }
            (Proto::Tls, true) => {
                b"},\"network\":{\"transport\":\"tls\",\"protocol\":\"dns\"},\"dns\":{\"type\":\"answer\""
            }
            (Proto::Tls, false) => {
                b"},\"network\":{\"transport\":\"tls\",\"protocol\":\"dns\"},\"dns\":{\"type\":\"query\""
            }
        });
        if let Some(id) = self.id {
            out.extend_from_slice(b",\"id\":");
            push_small(out, u32::from(id));
        }
        if let (Some(n), Some(_)) = (&self.qname, self.qtype) {
            out.extend_from_slice(b",\"question\":{\"name\":");
            json_name(out, n.as_wire());
        }
        cache.mid.push(out, self);
        if let (Some((ttl, age)), CacheStatus::Hit | CacheStatus::Stale) =
            (self.cache_entry, self.cache)
        {
            out.extend_from_slice(b",\"ttl\":");
            push_u64(out, u64::from(ttl));
            out.extend_from_slice(b",\"age\":");
            push_u64(out, u64::from(age));
        }
        cache.tail.push(out, self);
        for (i, a) in self.attempts.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b",{\"server\":\"");
                cache.upstream.push(out, a.server, push_addr);
                out.extend_from_slice(transport_part(a.proto));
            }
            out.extend_from_slice(outcome_part(a.outcome));
            json_ms(out, a.elapsed);
            if let Some(t) = a.tls {
                push_tls(out, t);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"answers\":");
        push_small(out, u32::from(self.answers));
        out.extend_from_slice(b",\"size\":");
        push_u64(out, self.size as u64);
        if let Some(d) = self.dnssec.as_deref() {
            out.extend_from_slice(b",\"dnssec\":{\"outcome\":\"");
            out.extend_from_slice(d.outcome.as_str().as_bytes());
            out.push(b'"');
            if let Some(c) = d.ede {
                out.extend_from_slice(b",\"ede\":");
                push_u64(out, u64::from(c));
            }
            if let Some(r) = d.reason.as_deref() {
                out.extend_from_slice(b",\"reason\":");
                json_str(out, r);
            }
            out.extend_from_slice(b",\"chain_lookups\":");
            push_u64(out, u64::from(d.chain_lookups));
            out.extend_from_slice(b",\"chain_upstream\":");
            push_u64(out, u64::from(d.chain_upstream));
            out.push(b'}');
        }
        out.extend_from_slice(b"}}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Attempt, DnssecEvent, DnssecOutcome, InlineName, Outcome, Proto};
    use std::sync::Arc;

    #[test]
    fn numbers_match_the_standard_formatting() {
        let mut values: Vec<u64> = (0..2_000).collect();
        let mut p = 1u64;
        while let Some(next) = p.checked_mul(10) {
            values.extend([p - 1, p, p + 1, next - 1]);
            p = next;
        }
        values.extend([u64::MAX, u64::MAX - 1, 18_446_744_073_709_551_000]);
        for n in values {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string(), "{n}");
            for width in [1, 3, 6, 20] {
                let mut out = Vec::new();
                push_padded(&mut out, n, width);
                assert_eq!(String::from_utf8(out).unwrap(), format!("{n:0width$}"));
            }
        }
    }

    /// A small deterministic generator (xorshift64*), so the varied events are the same
    /// on every run.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<T: Clone>(&mut self, items: &[T]) -> T {
            items[self.below(items.len() as u64) as usize].clone()
        }
        /// Some (two times in three) with a value drawn by `f`.
        fn some<T>(&mut self, f: impl FnOnce(&mut Gen) -> T) -> Option<T> {
            if self.below(3) > 0 {
                Some(f(self))
            } else {
                None
            }
        }
        /// Some (one time in `n`) with a value drawn by `f`.
        fn one_in<T>(&mut self, n: u64, f: impl FnOnce(&mut Gen) -> T) -> Option<T> {
            if self.below(n) == 0 {
                Some(f(self))
            } else {
                None
            }
        }
    }

    /// An event with every field drawn from a small set of values (so consecutive events
    /// often share parts, and often do not), including names and strings to escape.
    fn varied(g: &mut Gen, zones: &[Arc<str>]) -> QueryEvent {
        let clients = [
            "127.0.0.1:5300",
            "127.0.0.1:41000",
            "10.1.200.3:53",
            "[::1]:5353",
            "[fe80::1%2]:9",
            "[::ffff:10.0.0.1]:65535",
        ];
        let servers = [
            "127.0.0.1:8600",
            "10.0.0.1:53",
            "[fd00::1]:5353",
            "127.0.0.1:53",
        ];
        // Labels of 46 (the length byte reads as a dot) and 63 bytes, in a name longer
        // than the inline size.
        let mut long = vec![46u8];
        long.extend([b'x'; 46]);
        long.push(63);
        long.extend([b'y'; 63]);
        long.extend_from_slice(b"\x02io\x00");
        let names: [&[u8]; 10] = [
            &long,
            b"\x03web\x07service\x06consul\x00",
            b"\x04n123\x05bench\x04test\x00",
            b"\x00",
            b"",
            b"\x04a\"\\\x01\x00",
            b"\x03a.b\x03C-d\x00",
            b"\x05\xff\x20zz\x7f\x02ok\x00",
            b"\x03abc\xc0\x0c",
            b"\x05short",
        ];
        let proto = g.pick(&[Proto::Udp, Proto::Tcp, Proto::Tls]);
        let t = UNIX_EPOCH + Duration::from_micros(1_795_000_000_000_000 + g.below(3_000_000));
        let mut ev = QueryEvent::new(t, g.pick(&clients).parse().unwrap(), proto);
        ev.id = g.some(|g| g.below(65_536) as u16);
        ev.qname = g.some(|g| InlineName::new(g.pick(&names)));
        ev.qtype = g.some(|g| g.pick(&[1u16, 28, 12, 33, 5, 15, 16, 65, 6, 255, 65280, 0]));
        ev.zone = g.some(|g| g.pick(zones));
        ev.local = g.one_in(4, |g| {
            g.pick(&["localhost", "rfc6303", "special-use", "chaos"])
        });
        ev.cache = g.pick(&[
            CacheStatus::Hit,
            CacheStatus::Miss,
            CacheStatus::Stale,
            CacheStatus::Off,
            CacheStatus::Coalesced,
        ]);
        ev.upstream = g.some(|g| g.pick(&servers).parse().unwrap());
        for _ in 0..g.below(4) {
            let proto = g.pick(&[Proto::Udp, Proto::Tcp, Proto::Tls]);
            let tls = if proto == Proto::Tls {
                g.some(|g| TlsConn {
                    reused: g.below(2) == 0,
                    handshake: g.some(|g| Duration::from_micros(g.below(5_000_000))),
                    resumed: g.below(2) == 0,
                })
            } else {
                None
            };
            ev.attempts.push(Attempt {
                server: g.pick(&servers).parse().unwrap(),
                proto,
                outcome: g.pick(&[
                    Outcome::Answer,
                    Outcome::Timeout,
                    Outcome::Servfail,
                    Outcome::Refused,
                    Outcome::Error,
                    Outcome::Truncated,
                    Outcome::Lost,
                    Outcome::NoEdns,
                    Outcome::Loop,
                ]),
                elapsed: Duration::from_nanos(match g.below(5) {
                    0 => g.next() % 10_000_000_000,
                    _ => g.pick(&[0, 999, 1_500_000, 2_000_123_456]),
                }),
                tls,
            });
        }
        ev.rcode = g.some(|g| g.pick(&[0u16, 1, 2, 3, 4, 5, 9, 16, 23, 4095]));
        ev.flags = g.next() as u16;
        ev.dnssec_ok = g.below(2) == 0;
        ev.answers = g.pick(&[0u16, 1, 9, 10, 99, 100, 999, 1_000, 9_999, 10_000, 65_535]);
        ev.cache_entry = g.some(|g| {
            (
                g.pick(&[0u32, 7, 300, 86_400, u32::MAX]),
                g.pick(&[0u32, 12, 100_000]),
            )
        });
        ev.generation = g.some(|g| g.pick(&[0u64, 1, 2, 1_000_000, u64::MAX]));
        ev.servers_file_version = g.some(|g| g.pick(&[1u64, 42, 99_999, 100_000]));
        ev.size = g.pick(&[0usize, 45, 512, 1_232, 65_535, 100_000]);
        ev.duration = Duration::from_nanos(match g.below(7) {
            0 => g.next() >> 1,
            _ => g.pick(&[0, 9, 99_999, 100_000, 6_188_036, u64::MAX]),
        });
        ev.error = g.one_in(3, |g| {
            g.pick(&[
                "send failed",
                "all servers failed",
                "a \"quoted\" \\ \u{1} why",
            ])
        });
        ev.dnssec = g.one_in(4, |g| {
            Box::new(DnssecEvent {
                outcome: g.pick(&[
                    DnssecOutcome::Secure,
                    DnssecOutcome::Insecure,
                    DnssecOutcome::Bogus,
                    DnssecOutcome::Indeterminate,
                ]),
                ede: g.some(|g| g.pick(&[6u16, 9, 10])),
                reason: g.some(|g| Box::from(g.pick(&["no DNSKEY", "sig \"expired\"\n"]))),
                chain_lookups: g.below(5) as u16,
                chain_upstream: g.below(3) as u16,
            })
        });
        ev
    }

    #[test]
    fn lines_are_byte_identical_to_the_previous_formatter() {
        // Zone names as the config hands them out: one Arc per zone, plus an equal name in
        // another Arc (a reloaded snapshot) and one that needs escaping.
        let zones: Vec<Arc<str>> = ["consul", "consul", ".", "bench.test", "we\"ird\\"]
            .into_iter()
            .map(Arc::from)
            .collect();
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let mut cache = LineCache::default();
        let mut joined = Vec::new();
        for i in 0..20_000 {
            let ev = varied(&mut g, &zones);
            let mut old = Vec::new();
            super::super::json_reference::write_json(&ev, &mut old);
            let mut fresh = Vec::new();
            ev.write_json(&mut fresh);
            assert_eq!(
                String::from_utf8_lossy(&fresh),
                String::from_utf8_lossy(&old),
                "event {i}, fresh cache: {ev:?}"
            );
            // The writer's way: one cache for every line, appended to one buffer.
            let start = joined.len();
            ev.write_json_with(&mut joined, &mut cache);
            assert_eq!(
                String::from_utf8_lossy(&joined[start..]),
                String::from_utf8_lossy(&old),
                "event {i}, shared cache: {ev:?}"
            );
            serde_json::from_slice::<serde_json::Value>(&old).unwrap();
        }
        // The same event twice in a row, and again after an event that differs only in
        // one remembered part.
        for _ in 0..2_000 {
            let a = varied(&mut g, &zones);
            let mut b = a.clone();
            match g.below(6) {
                0 => b.zone = g.pick(&zones).into(),
                1 => b.rcode = b.rcode.map(|r| r ^ 1),
                2 => b.flags ^= 1 << g.below(16),
                3 => b.client = "10.1.200.4:53".parse().unwrap(),
                4 => b.error = if b.error.is_some() { None } else { Some("x") },
                _ => b.generation = b.generation.map(|x| x.wrapping_add(1)),
            }
            for ev in [&a, &a, &b, &a] {
                let mut old = Vec::new();
                super::super::json_reference::write_json(ev, &mut old);
                let mut line = Vec::new();
                ev.write_json_with(&mut line, &mut cache);
                assert_eq!(
                    String::from_utf8_lossy(&line),
                    String::from_utf8_lossy(&old)
                );
            }
        }
    }

    #[test]
    fn eight_bytes_at_a_time_agree_with_one_at_a_time() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut chunk = [b'a'; 8];
                chunk[at] = b;
                assert_eq!(
                    all_plain(u64::from_ne_bytes(chunk)),
                    plain(b),
                    "{b:#x} at {at}"
                );
                // With a neighbour that is not plain either.
                chunk[(at + 3) % 8] = 0xff;
                assert!(!all_plain(u64::from_ne_bytes(chunk)));
            }
        }
        assert!(all_plain(u64::from_ne_bytes(*b"!~azAZ09")));
    }

    #[test]
    fn snippets_copy_exactly_their_text() {
        let mut snip = Snippet::<8>::default();
        for len in [0usize, 7, 8, 9, 24, 3, 8] {
            let text: Vec<u8> = (0..len).map(|i| b'a' + i as u8).collect();
            snip.set(|t| t.extend_from_slice(&text));
            let mut out = b"x".to_vec();
            snip.push(&mut out);
            out.push(b'y');
            assert_eq!(out, [&b"x"[..], &text, b"y"].concat(), "{len}");
        }
    }

    #[test]
    fn timestamp_format() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123456Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }

    fn parse(ev: &QueryEvent) -> serde_json::Value {
        let mut out = Vec::new();
        ev.write_json(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn json_shape() {
        let mut ev = QueryEvent::new(UNIX_EPOCH, "127.0.0.1:5000".parse().unwrap(), Proto::Udp);
        ev.qname = Some(InlineName::new(b"\x03Web\x07service\x06consul\x00"));
        ev.qtype = Some(33);
        ev.id = Some(7);
        ev.zone = Some(Arc::from("consul"));
        ev.attempts.push(Attempt {
            server: "127.0.0.1:8600".parse().unwrap(),
            proto: Proto::Udp,
            outcome: Outcome::Timeout,
            elapsed: Duration::from_micros(1500),
            tls: None,
        });
        ev.set_reply(&[0, 7, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0]);
        ev.dnssec_ok = true;
        ev.duration = Duration::from_micros(2500);
        ev.generation = Some(4);
        let v = parse(&ev);
        assert_eq!(v["dns"]["question"]["name"], "Web.service.consul.");
        assert_eq!(v["dns"]["question"]["type"], "SRV");
        assert_eq!(v["dns"]["response_code"], "NXDOMAIN");
        assert_eq!(v["dns"]["id"], 7);
        assert_eq!(v["dns"]["type"], "answer");
        assert_eq!(
            v["dns"]["header_flags"],
            serde_json::json!(["RD", "RA", "DO"])
        );
        assert_eq!(
            v["client"],
            serde_json::json!({"ip": "127.0.0.1", "port": 5000})
        );
        assert_eq!(v["network"]["transport"], "udp");
        assert_eq!(v["event"]["duration"], 2_500_000);
        assert_eq!(v["event"]["outcome"], "success");
        let sd = &v["splitdns"];
        assert_eq!(sd["attempts"][0]["outcome"], "timeout");
        assert_eq!(sd["attempts"][0]["duration_ms"], 1.5);
        assert!(
            sd["attempts"][0].get("tls").is_none(),
            "tls only on tls attempts"
        );
        assert_eq!(sd["cache"], serde_json::json!({"status": "off"}));
        assert_eq!(sd["schema_version"], 2);
        assert_eq!(sd["generation"], 4);
        assert!(sd.get("upstream").is_none(), "absent, not null");
        assert!(v.get("error").is_none());
        assert_eq!(qtype_name(65280), "TYPE65280");

        ev.qname = Some(InlineName::new(b"\x04a\"\\\x01\x00"));
        ev.error = Some("x");
        ev.cache = CacheStatus::Hit;
        ev.cache_entry = Some((30, 12));
        ev.client = "[::1]:53".parse().unwrap();
        let v = parse(&ev);
        assert_eq!(v["dns"]["question"]["name"], "a\\034\\092\\001.");
        assert_eq!(v["error"], serde_json::json!({"message": "x"}));
        assert_eq!(v["event"]["outcome"], "failure");
        assert_eq!(
            v["splitdns"]["cache"],
            serde_json::json!({"status": "hit", "ttl": 30, "age": 12})
        );
        assert_eq!(v["client"]["ip"], "::1");

        // Upstream addresses as `ip:port` and `[ip]:port`.
        for (addr, text) in [
            ("10.0.0.1:53", "10.0.0.1:53"),
            ("[fd00::1]:5353", "[fd00::1]:5353"),
        ] {
            ev.upstream = Some(addr.parse().unwrap());
            assert_eq!(parse(&ev)["splitdns"]["upstream"], text);
        }
    }

    #[test]
    fn nothing_known_still_has_the_objects() {
        let ev = QueryEvent::new(UNIX_EPOCH, "10.0.0.1:1".parse().unwrap(), Proto::Tcp);
        let v = parse(&ev);
        for set in ["ecs", "event", "client", "network", "dns", "splitdns"] {
            assert!(v[set].is_object(), "{set}: {v}");
        }
        assert_eq!(v["dns"], serde_json::json!({"type": "query"}));
        assert_eq!(v["splitdns"]["attempts"], serde_json::json!([]));
    }

    #[test]
    fn tls_attempts_say_how_they_used_the_connection() {
        let mut ev = QueryEvent::new(UNIX_EPOCH, "127.0.0.1:5000".parse().unwrap(), Proto::Udp);
        let tls = |tls| Attempt {
            server: "127.0.0.1:853".parse().unwrap(),
            proto: Proto::Tls,
            outcome: Outcome::Answer,
            elapsed: Duration::from_millis(3),
            tls,
        };
        ev.attempts.push(tls(Some(TlsConn {
            reused: false,
            handshake: Some(Duration::from_micros(2250)),
            resumed: true,
        })));
        ev.attempts.push(tls(Some(TlsConn {
            reused: true,
            handshake: None,
            resumed: false,
        })));
        ev.attempts.push(tls(None));
        let v = parse(&ev);
        let a = &v["splitdns"]["attempts"];
        assert_eq!(a[0]["transport"], "tls");
        assert_eq!(
            a[0]["tls"],
            serde_json::json!({"connection": "new", "handshake_ms": 2.25, "resumed": true})
        );
        assert_eq!(a[1]["tls"], serde_json::json!({"connection": "reused"}));
        assert!(a[2].get("tls").is_none());
    }
}
