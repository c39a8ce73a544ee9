//! The per-query event schema (version 2, ECS-named and nested) as the tests expect it,
//! and reading the events file with a bounded wait.
//!
//! Each line is parsed twice: as untyped JSON for [`check_line`] (every ECS field set is an
//! object, no nulls), and into [`Line`], whose structs deny unknown fields so the schema
//! cannot drift unnoticed (STYLE rule 12). Tests then use the flat [`Event`] view built
//! from it, so a test reads `e.qname` whatever nesting the JSON uses.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The ECS field sets splitdns writes; each must be a JSON object when present.
pub const ECS_OBJECTS: &[&str] = &["ecs", "event", "client", "network", "dns", "error"];

/// One event line as written (schema v2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub ecs: Ecs,
    pub event: EcsEvent,
    pub client: Client,
    pub network: Network,
    pub dns: Dns,
    #[serde(default)]
    pub error: Option<EcsError>,
    pub splitdns: Splitdns,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ecs {
    pub version: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcsEvent {
    pub kind: String,
    pub category: Vec<String>,
    #[serde(rename = "type")]
    pub kind_type: Vec<String>,
    pub dataset: String,
    pub outcome: String,
    /// Nanoseconds.
    pub duration: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    pub ip: std::net::IpAddr,
    pub port: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub transport: String,
    pub protocol: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub id: Option<u16>,
    #[serde(default)]
    pub question: Option<Question>,
    #[serde(default)]
    pub response_code: Option<String>,
    #[serde(default)]
    pub header_flags: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub name: String,
    #[serde(rename = "type")]
    pub qtype: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcsError {
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Splitdns {
    pub schema_version: u32,
    #[serde(default)]
    pub generation: Option<u64>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub local: Option<String>,
    pub cache: CacheField,
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub servers_file_version: Option<u64>,
    pub attempts: Vec<LineAttempt>,
    pub answers: u32,
    pub size: usize,
    #[serde(default)]
    pub dnssec: Option<Dnssec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheField {
    pub status: String,
    #[serde(default)]
    pub ttl: Option<u32>,
    #[serde(default)]
    pub age: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineAttempt {
    pub server: String,
    pub transport: String,
    pub outcome: String,
    pub duration_ms: f64,
    /// DNS-over-TLS attempts that got a connection.
    #[serde(default)]
    pub tls: Option<TlsPart>,
}

/// One query event, flattened for tests.
#[derive(Debug, Clone)]
pub struct Event {
    pub timestamp: String,
    /// `splitdns.schema_version`.
    pub v: u32,
    /// `client.ip` and `client.port` as `ip:port` (`[v6]:port`).
    pub client: String,
    /// `network.transport`.
    pub proto: String,
    /// The client's message ID (absent when the packet had no header).
    pub id: Option<u16>,
    pub qname: Option<String>,
    pub qtype: Option<String>,
    pub zone: Option<String>,
    /// `splitdns.local`: the built-in rule that answered the query here.
    pub local: Option<String>,
    /// `splitdns.cache.status`.
    pub cache: String,
    /// Remaining lifetime of the cache entry served (hits and stale answers).
    pub cache_ttl: Option<u32>,
    /// Age of the cache entry served.
    pub cache_age: Option<u32>,
    pub upstream: Option<String>,
    pub attempts: Vec<Attempt>,
    /// `dns.response_code`.
    pub rcode: Option<String>,
    /// `dns.header_flags` (empty when no reply was sent).
    pub flags: Vec<String>,
    pub answers: u32,
    /// `TC` is among the header flags.
    pub tc: bool,
    /// Bytes of the reply sent (0 if none).
    pub size: usize,
    /// `event.duration` in milliseconds.
    pub duration_ms: f64,
    /// `error.message`: why the query was not answered normally.
    pub error: Option<String>,
    /// `event.outcome`.
    pub outcome: String,
    pub generation: Option<u64>,
    pub servers_file_version: Option<u64>,
    /// `splitdns.dnssec`: validation of a validating zone's query.
    pub dnssec: Option<Dnssec>,
}

/// The `dnssec` object of an event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dnssec {
    pub outcome: String,
    pub ede: Option<u16>,
    pub reason: Option<String>,
    pub chain_lookups: u32,
    pub chain_upstream: u32,
}

/// One upstream attempt inside an event.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub server: String,
    pub proto: String,
    pub outcome: String,
    pub ms: f64,
    /// DNS-over-TLS attempts only: how the connection was used.
    pub tls: Option<TlsPart>,
}

/// The `tls` part of a DNS-over-TLS attempt.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPart {
    /// `new` or `reused`.
    pub connection: String,
    /// For a new connection: TCP connect plus TLS handshake.
    pub handshake_ms: Option<f64>,
    /// For a new connection: whether the TLS session was resumed.
    pub resumed: Option<bool>,
}

impl From<Line> for Event {
    fn from(l: Line) -> Event {
        let client = match l.client.ip {
            std::net::IpAddr::V4(ip) => format!("{ip}:{}", l.client.port),
            std::net::IpAddr::V6(ip) => format!("[{ip}]:{}", l.client.port),
        };
        let flags = l.dns.header_flags.unwrap_or_default();
        Event {
            timestamp: l.timestamp,
            v: l.splitdns.schema_version,
            client,
            proto: l.network.transport,
            id: l.dns.id,
            qname: l.dns.question.as_ref().map(|q| q.name.clone()),
            qtype: l.dns.question.map(|q| q.qtype),
            zone: l.splitdns.zone,
            local: l.splitdns.local,
            cache: l.splitdns.cache.status,
            cache_ttl: l.splitdns.cache.ttl,
            cache_age: l.splitdns.cache.age,
            upstream: l.splitdns.upstream,
            attempts: l
                .splitdns
                .attempts
                .into_iter()
                .map(|a| Attempt {
                    server: a.server,
                    proto: a.transport,
                    outcome: a.outcome,
                    ms: a.duration_ms,
                    tls: a.tls,
                })
                .collect(),
            rcode: l.dns.response_code,
            tc: flags.iter().any(|f| f == "TC"),
            flags,
            answers: l.splitdns.answers,
            size: l.splitdns.size,
            duration_ms: l.event.duration as f64 / 1e6,
            error: l.error.map(|e| e.message),
            outcome: l.event.outcome,
            generation: l.splitdns.generation,
            servers_file_version: l.splitdns.servers_file_version,
            dnssec: l.splitdns.dnssec,
        }
    }
}

impl Event {
    /// Whether this event's qname is `lower` (lowercase, no trailing dot).
    pub fn qname_matches(&self, lower: &str) -> bool {
        self.qname
            .as_deref()
            .is_some_and(|q| q.trim_end_matches('.').eq_ignore_ascii_case(lower))
    }

    /// `(server, proto, outcome)` of each attempt, in order.
    pub fn attempt_outcomes(&self) -> Vec<(String, String, String)> {
        self.attempts
            .iter()
            .map(|a| (a.server.clone(), a.proto.clone(), a.outcome.clone()))
            .collect()
    }
}

/// Checks the shape rules no struct can: every ECS field set present is an object, and no
/// value anywhere is `null` (absent values are left out, so each field has one type).
pub fn check_line(v: &serde_json::Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("the line is not a JSON object")?;
    for set in ECS_OBJECTS {
        if let Some(x) = obj.get(*set) {
            if !x.is_object() {
                return Err(format!("`{set}` is not an object: {x}"));
            }
        }
    }
    fn no_null(path: &str, v: &serde_json::Value) -> Result<(), String> {
        match v {
            serde_json::Value::Null => Err(format!("`{path}` is null")),
            serde_json::Value::Object(m) => m
                .iter()
                .try_for_each(|(k, x)| no_null(&format!("{path}.{k}"), x)),
            serde_json::Value::Array(a) => a.iter().try_for_each(|x| no_null(path, x)),
            _ => Ok(()),
        }
    }
    no_null("", v)
}

/// The fields whose values are fixed or follow from others.
fn check_constants(l: &Line) -> Result<(), String> {
    let e = &l.event;
    let fixed = [
        (
            "ecs.version",
            l.ecs.version.as_str(),
            splitdns::event::ECS_VERSION,
        ),
        ("event.kind", e.kind.as_str(), "event"),
        ("event.dataset", e.dataset.as_str(), "splitdns.query"),
        ("network.protocol", l.network.protocol.as_str(), "dns"),
    ];
    for (field, got, want) in fixed {
        if got != want {
            return Err(format!("{field} is {got:?}, not {want:?}"));
        }
    }
    if e.category != ["network"] || e.kind_type != ["protocol"] {
        return Err(format!(
            "event.category/type: {:?} {:?}",
            e.category, e.kind_type
        ));
    }
    let answered = l.dns.response_code.is_some();
    let want = if answered { "answer" } else { "query" };
    if l.dns.kind != want || l.dns.header_flags.is_some() != answered {
        return Err(format!(
            "dns.type {:?} with response_code {:?}",
            l.dns.kind, l.dns.response_code
        ));
    }
    let failed = if l.error.is_some() {
        "failure"
    } else {
        "success"
    };
    if e.outcome != failed {
        return Err(format!(
            "event.outcome {:?} with error {:?}",
            e.outcome, l.error
        ));
    }
    Ok(())
}

/// Parses one line: shape rules, then the strict schema.
pub fn parse_line(l: &str) -> Event {
    let v: serde_json::Value =
        serde_json::from_str(l).unwrap_or_else(|e| panic!("event line is not JSON: {e}\n{l}"));
    if let Err(e) = check_line(&v) {
        panic!("event line breaks the shape rules: {e}\n{l}");
    }
    let line: Line = serde_json::from_value(v)
        .unwrap_or_else(|e| panic!("event line does not match schema v2: {e}\n{l}"));
    if let Err(e) = check_constants(&line) {
        panic!("event line: {e}\n{l}");
    }
    line.into()
}

/// The complete lines of the events file (a partly written last line is left out).
pub fn lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parse every complete line of the events file; a line that does not match the schema
/// fails the test.
pub fn read(path: &Path) -> Vec<Event> {
    lines(path).iter().map(|l| parse_line(l)).collect()
}

/// Wait up to `limit` for at least `n` events.
pub async fn wait_for(path: &Path, n: usize, limit: Duration) -> Vec<Event> {
    let deadline = Instant::now() + limit;
    loop {
        let all = read(path);
        if all.len() >= n {
            return all;
        }
        if Instant::now() > deadline {
            panic!(
                "expected at least {n} events within {limit:?}, got {}:\n{}",
                all.len(),
                std::fs::read_to_string(path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
