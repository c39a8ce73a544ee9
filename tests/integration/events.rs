//! The per-query event schema (version 1) as the tests expect it, and reading the events
//! file with a bounded wait. Structs deny unknown fields so the schema cannot drift
//! unnoticed (STYLE rule 12).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// One query event line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub v: u32,
    pub client: String,
    pub proto: String,
    /// The client's message ID (null when the packet had no header).
    pub id: Option<u16>,
    pub qname: Option<String>,
    pub qtype: Option<String>,
    pub zone: Option<String>,
    pub cache: String,
    pub upstream: Option<String>,
    pub attempts: Vec<Attempt>,
    pub rcode: Option<String>,
    pub answers: u32,
    pub tc: bool,
    /// Bytes of the reply sent (0 if none).
    pub size: usize,
    pub duration_ms: f64,
    /// Why the query was not answered normally.
    pub error: Option<String>,
    /// DNSSEC validation of a validating zone's query (null otherwise).
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    pub server: String,
    pub proto: String,
    pub outcome: String,
    pub ms: f64,
    /// DNS-over-TLS attempts only: how the connection was used.
    #[serde(default)]
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

/// Parse every complete line of the events file; a line that does not match the schema
/// fails the test.
pub fn read(path: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("event line does not match schema v1: {e}\n{l}"))
        })
        .collect()
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
