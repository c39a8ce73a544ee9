//! The JSON line of one event: hand-written so the writer thread formats without
//! allocating. The schema is documented in the parent module.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{QueryEvent, TlsConn, SCHEMA_VERSION};

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
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(d) = buf.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(buf.get(i..).unwrap_or(&[]));
}

fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let start = out.len();
    push_u64(out, n);
    let len = out.len() - start;
    if len < width {
        out.splice(start..start, std::iter::repeat_n(b'0', width - len));
    }
}

fn push_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => {
            for (i, o) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(*o));
            }
            out.push(b':');
            push_u64(out, u64::from(v4.port()));
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{a}");
        }
    }
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
pub(super) struct TimeCache {
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
        for &b in label {
            if b.is_ascii_graphic() && b != b'.' && b != b'\\' && b != b'"' {
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

fn json_null_or<T>(out: &mut Vec<u8>, v: Option<T>, f: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        Some(v) => f(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

impl QueryEvent {
    /// Appends this event as one JSON object (no newline) to `out`. Hand-written so the
    /// writer thread formats an event without allocating; the schema is in the module doc.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_with(out, &mut TimeCache::default());
    }

    pub(super) fn write_json_with(&self, out: &mut Vec<u8>, time: &mut TimeCache) {
        out.extend_from_slice(b"{\"@timestamp\":\"");
        time.write(out, self.timestamp);
        out.extend_from_slice(b"\",\"v\":");
        push_u64(out, u64::from(SCHEMA_VERSION));
        out.extend_from_slice(b",\"client\":\"");
        push_addr(out, self.client);
        out.extend_from_slice(b"\",\"proto\":\"");
        out.extend_from_slice(self.proto.as_str().as_bytes());
        out.extend_from_slice(b"\",\"id\":");
        json_null_or(out, self.id, |o, id| push_u64(o, u64::from(id)));
        out.extend_from_slice(b",\"qname\":");
        json_null_or(out, self.qname.as_ref(), |o, n| json_name(o, n.as_wire()));
        out.extend_from_slice(b",\"qtype\":");
        json_null_or(out, self.qtype, |o, t| json_str(o, &qtype_name(t)));
        out.extend_from_slice(b",\"zone\":");
        json_null_or(out, self.zone.as_deref(), json_str);
        out.extend_from_slice(b",\"cache\":\"");
        out.extend_from_slice(self.cache.as_str().as_bytes());
        out.extend_from_slice(b"\",\"upstream\":");
        json_null_or(out, self.upstream, |o, u| {
            o.push(b'"');
            push_addr(o, u);
            o.push(b'"');
        });
        out.extend_from_slice(b",\"attempts\":[");
        for (i, a) in self.attempts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"server\":\"");
            push_addr(out, a.server);
            out.extend_from_slice(b"\",\"proto\":\"");
            out.extend_from_slice(a.proto.as_str().as_bytes());
            out.extend_from_slice(b"\",\"outcome\":\"");
            out.extend_from_slice(a.outcome.as_str().as_bytes());
            out.extend_from_slice(b"\",\"ms\":");
            json_ms(out, a.elapsed);
            if let Some(t) = a.tls {
                push_tls(out, t);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"rcode\":");
        json_null_or(out, self.rcode, |o, r| json_str(o, &rcode_name(r)));
        out.extend_from_slice(b",\"answers\":");
        push_u64(out, u64::from(self.answers));
        out.extend_from_slice(if self.tc {
            b",\"tc\":true" as &[u8]
        } else {
            b",\"tc\":false"
        });
        out.extend_from_slice(b",\"size\":");
        push_u64(out, self.size as u64);
        out.extend_from_slice(b",\"duration_ms\":");
        json_ms(out, self.duration);
        out.extend_from_slice(b",\"error\":");
        json_null_or(out, self.error, json_str);
        out.extend_from_slice(b",\"dnssec\":");
        json_null_or(out, self.dnssec.as_deref(), |o, d| {
            o.extend_from_slice(b"{\"outcome\":\"");
            o.extend_from_slice(d.outcome.as_str().as_bytes());
            o.extend_from_slice(b"\",\"ede\":");
            json_null_or(o, d.ede, |o, c| push_u64(o, u64::from(c)));
            o.extend_from_slice(b",\"reason\":");
            json_null_or(o, d.reason.as_deref(), json_str);
            o.extend_from_slice(b",\"chain_lookups\":");
            push_u64(o, u64::from(d.chain_lookups));
            o.extend_from_slice(b",\"chain_upstream\":");
            push_u64(o, u64::from(d.chain_upstream));
            o.push(b'}');
        });
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Attempt, InlineName, Outcome, Proto};
    use std::sync::Arc;

    #[test]
    fn timestamp_format() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123456Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn json_shape() {
        let mut ev = QueryEvent::new(UNIX_EPOCH, "127.0.0.1:5000".parse().unwrap(), Proto::Udp);
        ev.qname = Some(InlineName::new(b"\x03Web\x07service\x06consul\x00"));
        ev.qtype = Some(33);
        ev.zone = Some(Arc::from("consul"));
        ev.attempts.push(Attempt {
            server: "127.0.0.1:8600".parse().unwrap(),
            proto: Proto::Udp,
            outcome: Outcome::Timeout,
            elapsed: Duration::from_micros(1500),
            tls: None,
        });
        ev.rcode = Some(3);
        let mut out = Vec::new();
        ev.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["qname"], "Web.service.consul.");
        assert_eq!(v["qtype"], "SRV");
        assert_eq!(v["rcode"], "NXDOMAIN");
        assert_eq!(v["attempts"][0]["outcome"], "timeout");
        assert!(
            v["attempts"][0].get("tls").is_none(),
            "tls only on tls attempts"
        );
        assert_eq!(v["attempts"][0]["ms"], 1.5);
        assert_eq!(v["cache"], "off");
        assert_eq!(v["upstream"], serde_json::Value::Null);
        assert_eq!(v["v"], 1);
        assert_eq!(qtype_name(65280), "TYPE65280");
        assert_eq!(v["duration_ms"], 0.0);
        ev.qname = Some(InlineName::new(b"\x04a\"\\\x01\x00"));
        ev.error = Some("x");
        out.clear();
        ev.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["qname"], "a\\034\\092\\001.");
        assert_eq!(v["error"], "x");
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
        let mut out = Vec::new();
        ev.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let a = &v["attempts"];
        assert_eq!(a[0]["proto"], "tls");
        assert_eq!(
            a[0]["tls"],
            serde_json::json!({"connection": "new", "handshake_ms": 2.25, "resumed": true})
        );
        assert_eq!(a[1]["tls"], serde_json::json!({"connection": "reused"}));
        assert!(a[2].get("tls").is_none());
    }
}
