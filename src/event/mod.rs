//! One JSON event per query ("wide events"): everything cheap to know about a query's
//! fate in one line, ready for Filebeat/Logstash/Elasticsearch as it is.
//!
//! # Wire format (schema version 2)
//!
//! One JSON object per line, nested, with Elastic Common Schema names where ECS has the
//! field and everything splitdns-specific under `splitdns`. A value that does not apply is
//! left out (never `null`), so every field keeps one JSON type in every event. The field
//! list with meanings is in README.md ("Events"); in short:
//!
//! | field | type | present |
//! |---|---|---|
//! | `@timestamp` | string, RFC 3339 UTC, µs | always (when the query arrived) |
//! | `ecs.version` | string | always |
//! | `event.kind`, `event.dataset`, `event.outcome` | string | always (`event`, `splitdns.query`, `success` or `failure`) |
//! | `event.category`, `event.type` | array of string | always (`["network"]`, `["protocol"]`) |
//! | `event.duration` | integer, ns | always (receipt to reply) |
//! | `client.ip` / `client.port` | string / integer | always |
//! | `network.transport` / `network.protocol` | string | always (`udp`/`tcp`, `dns`) |
//! | `dns.type` | string | always: `answer` if a reply was sent, else `query` |
//! | `dns.id` | integer | the packet had a header |
//! | `dns.question.name` / `.type` | string | the question could be read |
//! | `dns.response_code` | string | a reply was sent |
//! | `dns.header_flags` | array of string | a reply was sent (`AA TC RD RA AD CD DO`) |
//! | `error.message` | string | the query was not answered normally |
//! | `splitdns.schema_version` | integer | always, `2` |
//! | `splitdns.generation` | integer | the query reached routing: the snapshot used |
//! | `splitdns.zone` | string | the query routed to a zone |
//! | `splitdns.cache.status` | string | always: `hit`, `miss`, `stale`, `coalesced` (answered from an identical query already in flight upstream; no attempts of its own), `off` |
//! | `splitdns.cache.ttl` / `.age` | integer, s | hits and stale answers: the entry's remaining lifetime and age |
//! | `splitdns.upstream` | string | the server whose answer was returned |
//! | `splitdns.servers_file_version` | integer | servers were asked in a zone with a `servers_file` |
//! | `splitdns.attempts` | array of `{server, transport, outcome, duration_ms}` | always (maybe empty); transport `udp`, `tcp` or `tls`; a `tls` attempt that got a connection also has `tls`: `{connection: "reused"}` or `{connection: "new", handshake_ms, resumed}` |
//! | `splitdns.answers` / `splitdns.size` | integer | always: answer records, reply bytes (0 if none) |
//! | `splitdns.dnssec` | object | queries of a validating zone (`dnssec = "validate"`, CD=0; hits too, from the verdict kept with the entry): `outcome` (`secure`, `insecure`, `bogus`, `indeterminate`), `ede` and `reason` (bogus/indeterminate), `chain_lookups`, `chain_upstream` |
//!
//! Writing never blocks answering: events go through a bounded channel to a writer
//! thread; when it is full the event is dropped and counted, and the count is logged.
//!
//! # Layout
//! - this file: the per-query record (`QueryEvent`) and its parts, built on the answer path;
//! - `json`: the JSON line (pure formatting, allocation-free on the writer thread, copying
//!   the parts consecutive events share);
//! - `json_reference` (tests only): the previous formatter, which `json` must match byte
//!   for byte;
//! - `sink`: the bounded channel and the writer thread (the only I/O here);
//! - `stats`: counters folded from the same records as they are emitted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod json;
#[cfg(test)]
mod json_reference;
mod sink;
pub mod stats;

pub use json::{rcode_name, rfc3339, ECS_VERSION};
pub use sink::{EventSink, EventWriter};

/// Schema version written as `splitdns.schema_version`.
pub const SCHEMA_VERSION: u32 = 2;

/// Transport of a query or an upstream attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// DNS over TLS (upstream attempts only).
    Tls,
}

impl Proto {
    /// `udp` / `tcp` / `tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
            Proto::Tls => "tls",
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
    /// Not in the cache, and answered from an identical query's upstream exchange that
    /// was already in flight (no attempts of its own).
    Coalesced,
}

impl CacheStatus {
    /// The string used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
            CacheStatus::Off => "off",
            CacheStatus::Coalesced => "coalesced",
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
    /// No reply to this datagram before the retransmit timeout; a copy was sent again.
    Lost,
    /// FORMERR/NOTIMP to a query with EDNS; the same server is asked again without.
    NoEdns,
    /// The server sent the query back to us (a forwarding loop).
    Loop,
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
            Outcome::Lost => "lost",
            Outcome::NoEdns => "noedns",
            Outcome::Loop => "loop",
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
    /// For DNS over TLS: how the attempt used its connection (`None` for other transports,
    /// or when it never got a connection).
    pub tls: Option<TlsConn>,
}

/// How a DNS-over-TLS attempt used its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsConn {
    /// The query went on a connection that was already open.
    pub reused: bool,
    /// For a new connection: how long its TCP connect plus TLS handshake took.
    pub handshake: Option<Duration>,
    /// The new connection resumed an earlier TLS session (RFC 8446 §2.2).
    pub resumed: bool,
}

/// Names up to this many wire bytes are kept inline; longer ones (rare: the longest usual
/// names, IPv6 reverse names, take 74) are boxed.
const INLINE_NAME: usize = 86;

/// A question name, inline when short (no allocation on the hit path, and a small record
/// to queue: the event moves whole into its lane).
#[derive(Clone)]
pub enum InlineName {
    /// Up to `INLINE_NAME` bytes: the length and the bytes.
    Short(u8, [u8; INLINE_NAME]),
    /// Longer names (at most 255 bytes are kept).
    Long(Box<[u8]>),
}

impl InlineName {
    /// Copies up to 255 bytes of a wire name.
    pub fn new(wire: &[u8]) -> InlineName {
        let wire = wire.get(..255).unwrap_or(wire);
        let n = wire.len();
        if n > INLINE_NAME {
            return InlineName::Long(Box::from(wire));
        }
        let mut bytes = [0u8; INLINE_NAME];
        if let Some(dst) = bytes.get_mut(..n) {
            dst.copy_from_slice(wire);
        }
        InlineName::Short(n as u8, bytes)
    }

    pub(crate) fn as_wire(&self) -> &[u8] {
        match self {
            InlineName::Short(n, bytes) => bytes.get(..usize::from(*n)).unwrap_or(&[]),
            InlineName::Long(b) => b,
        }
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
    /// The built-in rule that answered the query here, never forwarded (`localhost`,
    /// `rfc6303`, `special-use`, `chaos`): an answer, not an error.
    pub local: Option<&'static str>,
    /// Cache participation.
    pub cache: CacheStatus,
    /// Server whose answer was returned.
    pub upstream: Option<SocketAddr>,
    /// Upstream attempts in order.
    pub attempts: Vec<Attempt>,
    /// Rcode sent (None if no reply was sent).
    pub rcode: Option<u16>,
    /// Header flag bits (bytes 2–3) of the reply sent.
    pub flags: u16,
    /// The client set DO (RFC 3225); the reply's OPT echoes it.
    pub dnssec_ok: bool,
    /// Answer records in the reply.
    pub answers: u16,
    /// TC in the reply.
    pub tc: bool,
    /// For cache hits and stale answers: the entry's remaining lifetime and age, seconds.
    pub cache_entry: Option<(u32, u32)>,
    /// The snapshot generation the query was answered under.
    pub generation: Option<u64>,
    /// Version of the zone's servers file when its servers were asked.
    pub servers_file_version: Option<u64>,
    /// Reply size in bytes.
    pub size: usize,
    /// Receipt to reply.
    pub duration: Duration,
    /// Why the query was not answered normally.
    pub error: Option<&'static str>,
    /// DNSSEC validation, for queries of a validating zone that were validated (None when
    /// the zone does not validate or the client set CD).
    pub dnssec: Option<Box<DnssecEvent>>,
}

/// The verdict of DNSSEC validation (RFC 4035 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnssecOutcome {
    /// Proven from the trust anchor down.
    Secure,
    /// Proven to be under an unsigned delegation.
    Insecure,
    /// Should have been signed and was not, or the proof failed.
    Bogus,
    /// Could not be decided (a chain lookup failed, or no anchor covers the name).
    Indeterminate,
}

impl DnssecOutcome {
    /// The name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            DnssecOutcome::Secure => "secure",
            DnssecOutcome::Insecure => "insecure",
            DnssecOutcome::Bogus => "bogus",
            DnssecOutcome::Indeterminate => "indeterminate",
        }
    }
}

/// What validation found for one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnssecEvent {
    /// The verdict.
    pub outcome: DnssecOutcome,
    /// The Extended DNS Error code sent (RFC 8914), for bogus/indeterminate.
    pub ede: Option<u16>,
    /// Why, in words, for bogus/indeterminate.
    pub reason: Option<Box<str>>,
    /// DNSKEY/DS/NS lookups the chain needed (answered from cache or upstream).
    pub chain_lookups: u16,
    /// How many of those went upstream.
    pub chain_upstream: u16,
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
            local: None,
            cache: CacheStatus::Off,
            upstream: None,
            attempts: Vec::new(),
            rcode: None,
            flags: 0,
            dnssec_ok: false,
            answers: 0,
            tc: false,
            cache_entry: None,
            generation: None,
            servers_file_version: None,
            size: 0,
            duration: Duration::ZERO,
            error: None,
            dnssec: None,
        }
    }

    /// Records the reply that was sent from its header: rcode (low 4 bits), answer
    /// count, TC, size. Cheap enough for the hit path; see `set_reply_full`.
    pub fn set_reply(&mut self, msg: &[u8]) {
        self.size = msg.len();
        if let Some(h) = msg.get(..12) {
            self.rcode = Some(u16::from(h[3] & 0x0f));
            self.flags = u16::from_be_bytes([h[2], h[3]]);
            self.tc = h[2] & 0x02 != 0;
            self.answers = u16::from_be_bytes([h[6], h[7]]);
        }
    }

    /// Records the parsed question: ID, name, type and the client's DO bit.
    pub fn set_query(&mut self, q: &crate::wire::Query<'_>) {
        self.id = Some(q.id);
        self.qname = Some(InlineName::new(q.qname()));
        self.qtype = Some(q.qtype);
        self.dnssec_ok = q.edns.is_some_and(|e| e.dnssec_ok);
    }

    /// Like `set_reply`, plus the extended rcode bits from the OPT record.
    pub fn set_reply_full(&mut self, msg: &[u8]) {
        self.set_reply(msg);
        // Without additional records there is no OPT record, and the header's rcode is
        // the whole rcode: no need to walk the message.
        if msg.get(10..12).is_some_and(|arcount| arcount == [0, 0]) {
            return;
        }
        if let Ok(r) = crate::wire::walk_reply(msg) {
            self.rcode = Some(r.rcode);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(rcode_low: u8, opt_ext: Option<u8>) -> Vec<u8> {
        let ar = u8::from(opt_ext.is_some());
        let mut m = vec![0x12, 0x34, 0x81, 0x80 | rcode_low, 0, 0, 0, 0, 0, 0, 0, ar];
        if let Some(ext) = opt_ext {
            // Root name, OPT, UDP size 1232, TTL = extended rcode, version 0, flags 0.
            m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, ext, 0, 0, 0, 0, 0]);
        }
        m
    }

    #[test]
    fn names_short_and_long_keep_their_bytes_and_the_record_stays_small() {
        for len in [0usize, 1, 85, 86, 87, 200, 255, 300] {
            let wire: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let name = InlineName::new(&wire);
            assert_eq!(name.as_wire(), &wire[..len.min(255)], "{len}");
            assert_eq!(matches!(name, InlineName::Short(..)), len <= INLINE_NAME);
        }
        // The record moves whole into a lane: keep it well under the ~500 bytes it had
        // with a 255-byte inline name.
        assert!(
            std::mem::size_of::<QueryEvent>() <= 360,
            "{}",
            std::mem::size_of::<QueryEvent>()
        );
    }

    #[test]
    fn full_rcode_comes_from_the_opt_record_when_there_is_one() {
        let mut ev = QueryEvent::new(
            SystemTime::UNIX_EPOCH,
            "127.0.0.1:1".parse().unwrap(),
            Proto::Udp,
        );
        ev.set_reply_full(&reply(0, Some(1)));
        assert_eq!(
            ev.rcode,
            Some(16),
            "BADVERS: extended bits 1, header bits 0"
        );
        ev.set_reply_full(&reply(3, None));
        assert_eq!(
            ev.rcode,
            Some(3),
            "no additional records: the header's rcode"
        );
        ev.set_reply_full(&reply(2, Some(0)));
        assert_eq!(ev.rcode, Some(2));
        assert_eq!(ev.size, 23);
    }
}
