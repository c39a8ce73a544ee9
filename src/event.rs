//! One JSON event per query ("wide events"): everything cheap to know about a query's
//! fate in one line, ready for Filebeat/Logstash/Elasticsearch as it is.
//!
//! # Wire format (schema version 1)
//!
//! One JSON object per line, with these fields, always present:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `@timestamp` | string | when the query arrived, RFC 3339 UTC with microseconds |
//! | `v` | number | schema version, `1` |
//! | `client` | string | client address and port |
//! | `proto` | string | `udp` or `tcp` |
//! | `id` | number or null | the client's message ID (null if the packet had no header) |
//! | `qname` | string or null | question name as sent (case kept), `\DDD` escapes |
//! | `qtype` | string or null | `A`, `AAAA`, `SRV`, ..., or `TYPE123` |
//! | `zone` | string or null | the zone the query routed to |
//! | `cache` | string | `hit`, `miss`, `stale`, or `off` (cache disabled or not consulted) |
//! | `upstream` | string or null | the server whose answer was returned |
//! | `attempts` | array | each upstream try in order: `{server, proto, outcome, ms}`; outcome is `answer`, `timeout`, `servfail`, `refused`, `error` or `truncated` |
//! | `rcode` | string or null | rcode of the reply sent (`NOERROR`, `NXDOMAIN`, ...), null if none was sent |
//! | `answers` | number | records in the answer section of the reply |
//! | `tc` | bool | the reply was truncated (TC=1) |
//! | `size` | number | bytes of the reply sent (0 if none) |
//! | `duration_ms` | number | from receipt to reply, milliseconds with µs precision |
//! | `error` | string or null | why the query was not answered normally (`malformed`, `formerr`, `notimp`, `badvers`, `refused: client not allowed`, `refused: no zone`, `all servers failed`, `overload: servfail`, `overload: dropped`, `send failed`, ...) |
//!
//! Writing never blocks answering: events go through a bounded channel to a writer
//! thread; when it is full the event is dropped and counted, and the count is logged.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::EventsOutput;

/// Schema version written as `v`.
pub const SCHEMA_VERSION: u32 = 1;
/// Events queued for the writer; slots are preallocated (no allocation per event) but
/// only touched as used.
const CHANNEL_CAPACITY: usize = 4_096;

/// Transport of a query or an upstream attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl Proto {
    /// `udp` / `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// How the cache took part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from a fresh entry.
    Hit,
    /// Looked up, not found.
    Miss,
    /// Answered from an expired entry because every server failed (RFC 8767).
    Stale,
    /// Not consulted (disabled for the zone, or the query never got that far).
    Off,
}

impl CacheStatus {
    fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
            CacheStatus::Off => "off",
        }
    }
}

/// Result of one upstream attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A reply we accepted (final).
    Answer,
    /// No valid reply within the timeout.
    Timeout,
    /// SERVFAIL (failover).
    Servfail,
    /// REFUSED (failover).
    Refused,
    /// Network error, malformed reply, or another failover rcode.
    Error,
    /// TC=1 over UDP; the same server is retried over TCP.
    Truncated,
}

impl Outcome {
    /// The string used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answer => "answer",
            Outcome::Timeout => "timeout",
            Outcome::Servfail => "servfail",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
            Outcome::Truncated => "truncated",
        }
    }
}

/// One upstream attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attempt {
    /// The server asked.
    pub server: SocketAddr,
    /// Over which transport.
    pub proto: Proto,
    /// What happened.
    pub outcome: Outcome,
    /// How long it took.
    pub elapsed: Duration,
}

/// A question name kept inline (no allocation on the hit path).
#[derive(Clone)]
pub struct InlineName {
    bytes: [u8; 255],
    len: u8,
}

impl InlineName {
    /// Copies up to 255 bytes of a wire name.
    pub fn new(wire: &[u8]) -> InlineName {
        let mut bytes = [0u8; 255];
        let n = wire.len().min(255);
        if let (Some(dst), Some(src)) = (bytes.get_mut(..n), wire.get(..n)) {
            dst.copy_from_slice(src);
        }
        InlineName {
            bytes,
            len: n as u8,
        }
    }

    fn as_wire(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl std::fmt::Debug for InlineName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        crate::wire::name_to_text(self.as_wire(), &mut s);
        f.write_str(&s)
    }
}

/// Everything recorded about one query. Built on every path, emitted exactly once.
#[derive(Debug, Clone)]
pub struct QueryEvent {
    /// Arrival time.
    pub timestamp: SystemTime,
    /// Client address.
    pub client: SocketAddr,
    /// Client transport.
    pub proto: Proto,
    /// Client's message ID.
    pub id: Option<u16>,
    /// Question name, wire form.
    pub qname: Option<InlineName>,
    /// Question type.
    pub qtype: Option<u16>,
    /// Zone routed to.
    pub zone: Option<Arc<str>>,
    /// Cache participation.
    pub cache: CacheStatus,
    /// Server whose answer was returned.
    pub upstream: Option<SocketAddr>,
    /// Upstream attempts in order.
    pub attempts: Vec<Attempt>,
    /// Rcode sent (None if no reply was sent).
    pub rcode: Option<u16>,
    /// Answer records in the reply.
    pub answers: u16,
    /// TC in the reply.
    pub tc: bool,
    /// Reply size in bytes.
    pub size: usize,
    /// Receipt to reply.
    pub duration: Duration,
    /// Why the query was not answered normally.
    pub error: Option<&'static str>,
}

impl QueryEvent {
    /// A fresh event for a query that just arrived.
    pub fn new(timestamp: SystemTime, client: SocketAddr, proto: Proto) -> QueryEvent {
        QueryEvent {
            timestamp,
            client,
            proto,
            id: None,
            qname: None,
            qtype: None,
            zone: None,
            cache: CacheStatus::Off,
            upstream: None,
            attempts: Vec::new(),
            rcode: None,
            answers: 0,
            tc: false,
            size: 0,
            duration: Duration::ZERO,
            error: None,
        }
    }

    /// Records the reply that was sent from its header: rcode (low 4 bits), answer
    /// count, TC, size. Cheap enough for the hit path; see `set_reply_full`.
    pub fn set_reply(&mut self, msg: &[u8]) {
        self.size = msg.len();
        if let Some(h) = msg.get(..12) {
            self.rcode = Some(u16::from(h[3] & 0x0f));
            self.tc = h[2] & 0x02 != 0;
            self.answers = u16::from_be_bytes([h[6], h[7]]);
        }
    }

    /// Like `set_reply`, plus the extended rcode bits from the OPT record.
    pub fn set_reply_full(&mut self, msg: &[u8]) {
        self.set_reply(msg);
        if let Ok(r) = crate::wire::walk_reply(msg) {
            self.rcode = Some(r.rcode);
        }
    }
}

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

    fn write_json_with(&self, out: &mut Vec<u8>, time: &mut TimeCache) {
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
        out.push(b'}');
    }
}

// Events travel by value so the channel's preallocated slots are used and the hit path
// allocates nothing; the size difference with `Stop` is the point.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Event(QueryEvent),
    Stop,
}

/// The sending side, shared by every thread. Cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    tx: Option<SyncSender<Msg>>,
    dropped: Arc<AtomicU64>,
}

/// The writer thread, joined on shutdown.
pub struct EventWriter {
    tx: Option<SyncSender<Msg>>,
    handle: Option<JoinHandle<()>>,
}

impl EventSink {
    /// A sink that discards everything (`output = "off"`).
    pub fn off() -> EventSink {
        EventSink {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts the writer thread for `output`.
    ///
    /// # Errors
    /// If the output file cannot be opened for appending.
    pub fn start(output: &EventsOutput) -> std::io::Result<(EventSink, EventWriter)> {
        let out: Box<dyn Write + Send> = match output {
            EventsOutput::Off => {
                return Ok((
                    EventSink::off(),
                    EventWriter {
                        tx: None,
                        handle: None,
                    },
                ))
            }
            EventsOutput::Stdout => Box::new(std::io::stdout()),
            EventsOutput::Stderr => Box::new(std::io::stderr()),
            EventsOutput::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let d2 = dropped.clone();
        let handle = std::thread::Builder::new()
            .name("splitdns-events".into())
            .spawn(move || write_loop(rx, out, &d2))?;
        Ok((
            EventSink {
                tx: Some(tx.clone()),
                dropped,
            },
            EventWriter {
                tx: Some(tx),
                handle: Some(handle),
            },
        ))
    }

    /// Hands an event to the writer without blocking; drops and counts it if the writer
    /// is behind.
    pub fn emit(&self, ev: QueryEvent) {
        if let Some(tx) = &self.tx {
            match tx.try_send(Msg::Event(ev)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl EventWriter {
    /// Flushes what is queued and stops the thread (bounded wait).
    pub fn stop(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Stop);
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// While events keep coming, the writer sleeps briefly between drains instead of parking,
/// so senders never pay to wake it (a futex wake, and on a pinned CPU a context switch, per
/// event). After this long without events it parks until the next one.
const WRITER_BUSY_POLL: Duration = Duration::from_millis(2);
const WRITER_PARK_AFTER: Duration = Duration::from_millis(250);

fn write_loop(rx: Receiver<Msg>, out: Box<dyn Write + Send>, dropped: &AtomicU64) {
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut reported = 0u64;
    let mut line = Vec::with_capacity(1024);
    let mut time = TimeCache::default();
    let mut idle_since: Option<std::time::Instant> = None;
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(mpsc::TryRecvError::Empty) => {
                let _ = w.flush();
                let d = dropped.load(Ordering::Relaxed);
                if d != reported {
                    tracing::warn!(
                        dropped = d - reported,
                        total = d,
                        "event writer fell behind; events dropped"
                    );
                    reported = d;
                }
                let idle = *idle_since.get_or_insert_with(std::time::Instant::now);
                if idle.elapsed() < WRITER_PARK_AFTER {
                    std::thread::sleep(WRITER_BUSY_POLL);
                    continue;
                }
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(m) => m,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
        };
        idle_since = None;
        match msg {
            Msg::Event(ev) => {
                line.clear();
                ev.write_json_with(&mut line, &mut time);
                line.push(b'\n');
                let _ = w.write_all(&line);
            }
            Msg::Stop => break,
        }
    }
    let _ = w.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

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
        });
        ev.rcode = Some(3);
        let mut out = Vec::new();
        ev.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["qname"], "Web.service.consul.");
        assert_eq!(v["qtype"], "SRV");
        assert_eq!(v["rcode"], "NXDOMAIN");
        assert_eq!(v["attempts"][0]["outcome"], "timeout");
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
}
