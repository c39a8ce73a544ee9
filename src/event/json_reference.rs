//! The JSON formatter as it was before the writer learned to reuse repeated parts
//! (commit be3eb88), kept unchanged for tests only: the current formatter must write
//! byte-identical lines for every event.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{CacheStatus, QueryEvent, TlsConn, SCHEMA_VERSION};

/// The rcode's mnemonic (`NOERROR`, `NXDOMAIN`, …, `BADVERS`), extended codes included.
fn rcode_name(code: u16) -> std::borrow::Cow<'static, str> {
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

/// Appends the decimal digits of `n` (no allocation, no `fmt` machinery).
fn push_u64(out: &mut Vec<u8>, n: u64) {
    // Most numbers in an event (octets, counts, small ports) have at most three digits:
    // pushed one by one, without a copy of variable length.
    if n < 10 {
        out.push(b'0' + n as u8);
    } else if n < 100 {
        out.push(b'0' + (n / 10) as u8);
        out.push(b'0' + (n % 10) as u8);
    } else if n < 1000 {
        out.push(b'0' + (n / 100) as u8);
        out.push(b'0' + (n / 10 % 10) as u8);
        out.push(b'0' + (n % 10) as u8);
    } else {
        push_u64_long(out, n);
    }
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

/// `ip:port`, or `[ip]:port` for IPv6.
fn push_addr(out: &mut Vec<u8>, a: SocketAddr) {
    if a.is_ipv6() {
        out.push(b'[');
        push_ip(out, a);
        out.push(b']');
    } else {
        push_ip(out, a);
    }
    out.push(b':');
    push_u64(out, u64::from(a.port()));
}

/// Remembers the formatted date and time of the last whole second seen, so the writer
/// formats a calendar date once per second rather than once per event.
#[derive(Default)]
struct TimeCache {
    secs: Option<u64>,
    prefix: Vec<u8>,
}

impl TimeCache {
    fn write(&mut self, out: &mut Vec<u8>, t: SystemTime) {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        if self.secs != Some(secs) {
            self.prefix.clear();
            civil(&mut self.prefix, secs);
            self.secs = Some(secs);
        }
        out.extend_from_slice(&self.prefix);
        out.push(b'.');
        push_padded(out, u64::from(d.subsec_micros()), 6);
        out.push(b'Z');
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

/// Writes a wire name as a JSON string in presentation form: `\DDD` escapes (RFC 1035
/// §5.1) for bytes that are not printable ASCII, dots inside labels, backslashes and
/// quotes, with the backslashes themselves escaped for JSON.
fn json_name(out: &mut Vec<u8>, wire: &[u8]) {
    out.push(b'"');
    let mut pos = 0usize;
    let mut wrote = false;
    while let Some(&len) = wire.get(pos) {
        if len == 0 || len & 0xc0 != 0 {
            break;
        }
        let Some(label) = wire.get(pos + 1..pos + 1 + usize::from(len)) else {
            break;
        };
        let plain = |b: u8| b.is_ascii_graphic() && b != b'.' && b != b'\\' && b != b'"';
        if label.iter().all(|&b| plain(b)) {
            out.extend_from_slice(label);
            out.push(b'.');
            wrote = true;
            pos += 1 + usize::from(len);
            continue;
        }
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
    push_padded(out, us % 1000, 3);
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

/// The ECS version as a literal, so it can be spliced into the constant parts of a line.
macro_rules! ecs_version {
    () => {
        "8.11.0"
    };
}

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
    // Byte by byte: two-letter names need no copy call.
    let mut put = |out: &mut Vec<u8>, [a, b]: [u8; 2]| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.push(a);
        out.push(b);
        out.push(b'"');
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

fn push_ip(out: &mut Vec<u8>, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => {
            for (i, o) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(*o));
            }
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{}", v6.ip());
        }
    }
}

/// The line for `ev`, as the old formatter wrote it.
pub(super) fn write_json(ev: &QueryEvent, out: &mut Vec<u8>) {
    OldLine(ev).write_json_with(out, &mut TimeCache::default());
}

struct OldLine<'a>(&'a QueryEvent);

impl std::ops::Deref for OldLine<'_> {
    type Target = QueryEvent;
    fn deref(&self) -> &QueryEvent {
        self.0
    }
}

impl OldLine<'_> {
    fn write_json_with(&self, out: &mut Vec<u8>, time: &mut TimeCache) {
        // One growth check for the usual line (a few hundred bytes) instead of many.
        out.reserve(768 + 128 * self.attempts.len());
        out.extend_from_slice(b"{\"@timestamp\":\"");
        time.write(out, self.timestamp);
        // Constant runs are written in one piece each (fewer, longer copies).
        out.extend_from_slice(
            concat!(
                "\",\"ecs\":{\"version\":\"",
                ecs_version!(),
                "\"},\"event\":{\"kind\":\"event\",\"category\":[\"network\"],\"type\":[\"protocol\"],\"dataset\":\"splitdns.query\",\"outcome\":\""
            )
            .as_bytes(),
        );
        out.extend_from_slice(if self.error.is_some() {
            b"failure\",\"duration\":" as &[u8]
        } else {
            b"success\",\"duration\":"
        });
        push_u64(
            out,
            u64::try_from(self.duration.as_nanos()).unwrap_or(u64::MAX),
        );
        out.extend_from_slice(b"},\"client\":{\"ip\":\"");
        push_ip(out, self.client);
        out.extend_from_slice(b"\",\"port\":");
        push_u64(out, u64::from(self.client.port()));
        out.extend_from_slice(match self.proto {
            super::Proto::Udp => {
                b"},\"network\":{\"transport\":\"udp\",\"protocol\":\"dns\"},\"dns\":{\"type\":\""
                    as &[u8]
            }
            super::Proto::Tcp => {
                b"},\"network\":{\"transport\":\"tcp\",\"protocol\":\"dns\"},\"dns\":{\"type\":\""
            }
            super::Proto::Tls => {
                b"},\"network\":{\"transport\":\"tls\",\"protocol\":\"dns\"},\"dns\":{\"type\":\""
            }
        });
        out.extend_from_slice(if self.rcode.is_some() {
            b"answer\"" as &[u8]
        } else {
            b"query\""
        });
        if let Some(id) = self.id {
            out.extend_from_slice(b",\"id\":");
            push_u64(out, u64::from(id));
        }
        if let (Some(n), Some(t)) = (&self.qname, self.qtype) {
            out.extend_from_slice(b",\"question\":{\"name\":");
            json_name(out, n.as_wire());
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
        self.write_splitdns(out);
        out.push(b'}');
    }

    /// The `splitdns` object: everything without an ECS name.
    fn write_splitdns(&self, out: &mut Vec<u8>) {
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
        if let (Some((ttl, age)), CacheStatus::Hit | CacheStatus::Stale) =
            (self.cache_entry, self.cache)
        {
            out.extend_from_slice(b",\"ttl\":");
            push_u64(out, u64::from(ttl));
            out.extend_from_slice(b",\"age\":");
            push_u64(out, u64::from(age));
        }
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
        for (i, a) in self.attempts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"server\":\"");
            push_addr(out, a.server);
            out.extend_from_slice(b"\",\"transport\":\"");
            out.extend_from_slice(a.proto.as_str().as_bytes());
            out.extend_from_slice(b"\",\"outcome\":\"");
            out.extend_from_slice(a.outcome.as_str().as_bytes());
            out.extend_from_slice(b"\",\"duration_ms\":");
            json_ms(out, a.elapsed);
            if let Some(t) = a.tls {
                push_tls(out, t);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"answers\":");
        push_u64(out, u64::from(self.answers));
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
        out.push(b'}');
    }
}
