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
//! | `cache` | string | `hit`, `miss`, `stale`, `coalesced` (answered from an identical query already in flight upstream; no attempts of its own), or `off` (cache disabled or not consulted) |
//! | `upstream` | string or null | the server whose answer was returned |
//! | `attempts` | array | each upstream try in order: `{server, proto, outcome, ms}`; proto is `udp`, `tcp` or `tls`; outcome is `answer`, `timeout`, `servfail`, `refused`, `error`, `truncated`, `lost`, `noedns` or `loop`. A `tls` attempt that got a connection also has `tls`: `{"connection": "reused"}`, or `{"connection": "new", "handshake_ms": N, "resumed": BOOL}` when it waited for a new connection's TCP and TLS handshake |
//! | `rcode` | string or null | rcode of the reply sent (`NOERROR`, `NXDOMAIN`, ...), null if none was sent |
//! | `answers` | number | records in the answer section of the reply |
//! | `tc` | bool | the reply was truncated (TC=1) |
//! | `size` | number | bytes of the reply sent (0 if none) |
//! | `duration_ms` | number | from receipt to reply, milliseconds with µs precision |
//! | `error` | string or null | why the query was not answered normally (`malformed`, `formerr`, `notimp`, `badvers`, `refused: client not allowed`, `refused: no zone`, `all servers failed`, `overload: servfail`, `overload: dropped`, `send failed`, ...) |
//! | `dnssec` | object or null | zones with `dnssec = "validate"`, client CD=0, answered after validation: `{outcome, ede, reason, chain_lookups, chain_upstream}`; outcome is `secure`, `insecure`, `bogus` or `indeterminate`; `ede` (number or null) and `reason` (string or null) say why a bogus/indeterminate answer failed; `chain_lookups` counts the DNSKEY/DS/NS lookups the chain needed and `chain_upstream` those that missed the cache. Null otherwise (including cache hits, which replay a reply validated earlier) |
//!
//! Writing never blocks answering: events go through a bounded channel to a writer
//! thread; when it is full the event is dropped and counted, and the count is logged.
//!
//! # Layout
//! - this file: the per-query record (`QueryEvent`) and its parts, built on the answer path;
//! - `json`: the JSON line (pure formatting, allocation-free on the writer thread);
//! - `sink`: the bounded channel and the writer thread (the only I/O here).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod json;
mod sink;

pub use json::rfc3339;
pub use sink::{EventSink, EventWriter};

/// Schema version written as `v`.
pub const SCHEMA_VERSION: u32 = 1;

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
    fn as_str(self) -> &'static str {
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
            cache: CacheStatus::Off,
            upstream: None,
            attempts: Vec::new(),
            rcode: None,
            answers: 0,
            tc: false,
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
