//! `[metrics] listen`: `GET /metrics` in the Prometheus text exposition format (0.0.4).
//!
//! [`render`] turns the counters ([`Totals`], folded from the same per-query records as
//! the events) and a few gauges into text; it is pure. [`serve`] is a deliberately small
//! HTTP/1.x responder for scrapers: one request per connection, `Connection: close`, a
//! bounded request head, a read timeout and a cap on connections open at once, so a
//! misbehaving client costs a socket for a few seconds and nothing more.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::event::stats::{Totals, BUCKETS_NS};

/// Scrapes served at once; more connections are closed at once.
const MAX_CONNECTIONS: usize = 8;
/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One upstream server's health, as a gauge set.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerGauge {
    /// The zone that uses it.
    pub zone: String,
    /// `ip:port`.
    pub upstream: String,
    /// Skipped (backed off) right now.
    pub backed_off: bool,
    /// Failures since its last answer.
    pub consecutive_failures: u64,
    /// Round-trip time of its last answer, if any.
    pub last_rtt: Option<Duration>,
}

/// Point-in-time values beside the counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Gauges {
    /// When the process started.
    pub started: SystemTime,
    /// Current snapshot generation.
    pub generation: u64,
    /// Entries in the answer cache.
    pub cache_entries: usize,
    /// Bytes the cache holds, as counted against `cache.max_bytes`.
    pub cache_bytes: usize,
    /// Events handed to the writer.
    pub events_written: u64,
    /// Events dropped because the writer was behind.
    pub events_dropped: u64,
    /// Every zone's servers, in order.
    pub servers: Vec<ServerGauge>,
}

/// Escapes a label value (backslash, double quote, newline).
fn esc(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// The whole exposition.
pub fn render(t: &Totals, g: &Gauges) -> String {
    let mut o = String::with_capacity(4096);
    family(
        &mut o,
        "splitdns_build_info",
        "gauge",
        "Version of the running splitdns (always 1).",
    );
    let _ = writeln!(
        o,
        "splitdns_build_info{} 1",
        labels(&[("version", env!("CARGO_PKG_VERSION"))])
    );
    family(
        &mut o,
        "splitdns_start_time_seconds",
        "gauge",
        "When the process started, seconds since the Unix epoch.",
    );
    let started = g.started.duration_since(UNIX_EPOCH).unwrap_or_default();
    let _ = writeln!(o, "splitdns_start_time_seconds {}", started.as_secs_f64());
    family(&mut o, "splitdns_config_generation", "gauge", "Generation of the running configuration snapshot (1 at start, +1 per reload or servers-file change).");
    let _ = writeln!(o, "splitdns_config_generation {}", g.generation);

    family(&mut o, "splitdns_queries_total", "counter", "Queries, one per query event. zone is empty for queries outside every zone or not parsed; rcode is empty when no reply was sent.");
    for (l, q) in &t.queries {
        let rcode = l.rcode.as_deref().unwrap_or("");
        let _ = writeln!(
            o,
            "splitdns_queries_total{} {}",
            labels(&[
                ("zone", &l.zone),
                ("transport", l.transport),
                ("cache", l.cache),
                ("rcode", rcode)
            ]),
            q.count
        );
    }

    family(
        &mut o,
        "splitdns_query_duration_seconds",
        "histogram",
        "Time from receiving a query to sending its reply.",
    );
    let mut by_zone_cache: std::collections::BTreeMap<
        (&str, &str),
        ([u64; BUCKETS_NS.len()], u64, u64),
    > = std::collections::BTreeMap::new();
    for (l, q) in &t.queries {
        let e = by_zone_cache.entry((l.zone.as_str(), l.cache)).or_insert((
            [0; BUCKETS_NS.len()],
            0,
            0,
        ));
        for (s, n) in e.0.iter_mut().zip(q.buckets.iter()) {
            *s += n;
        }
        e.1 += q.count;
        e.2 = e.2.saturating_add(q.sum_ns);
    }
    for ((zone, cache), (buckets, count, sum_ns)) in &by_zone_cache {
        let mut cumulative = 0;
        for (n, le) in buckets.iter().zip(BUCKETS_NS.iter()) {
            cumulative += n;
            let le = format!("{}", secs(*le));
            let _ = writeln!(
                o,
                "splitdns_query_duration_seconds_bucket{} {cumulative}",
                labels(&[("zone", zone), ("cache", cache), ("le", &le)])
            );
        }
        let l = labels(&[("zone", zone), ("cache", cache)]);
        let inf = labels(&[("zone", zone), ("cache", cache), ("le", "+Inf")]);
        let _ = writeln!(o, "splitdns_query_duration_seconds_bucket{inf} {count}");
        let _ = writeln!(
            o,
            "splitdns_query_duration_seconds_sum{l} {}",
            secs(*sum_ns)
        );
        let _ = writeln!(o, "splitdns_query_duration_seconds_count{l} {count}");
    }

    family(
        &mut o,
        "splitdns_query_errors_total",
        "counter",
        "Queries not answered normally, by the event's error.message.",
    );
    for (e, n) in &t.errors {
        let _ = writeln!(
            o,
            "splitdns_query_errors_total{} {n}",
            labels(&[("error", e)])
        );
    }

    family(
        &mut o,
        "splitdns_failovers_total",
        "counter",
        "Times a query moved on to the next server of its zone.",
    );
    for (zone, n) in t.queries.iter().fold(
        std::collections::BTreeMap::<&str, u64>::new(),
        |mut m, (l, q)| {
            if !l.zone.is_empty() {
                *m.entry(l.zone.as_str()).or_default() += q.failovers;
            }
            m
        },
    ) {
        let _ = writeln!(
            o,
            "splitdns_failovers_total{} {n}",
            labels(&[("zone", zone)])
        );
    }

    family(&mut o, "splitdns_upstream_attempts_total", "counter", "Attempts to upstream servers, by outcome (answer, timeout, lost, servfail, refused, error, truncated, noedns, loop).");
    for (l, a) in &t.attempts {
        let _ = writeln!(
            o,
            "splitdns_upstream_attempts_total{} {}",
            labels(&[
                ("zone", &l.zone),
                ("upstream", &l.upstream),
                ("transport", l.transport),
                ("outcome", l.outcome)
            ]),
            a.count
        );
    }
    family(
        &mut o,
        "splitdns_upstream_attempt_seconds_total",
        "counter",
        "Time spent in upstream attempts.",
    );
    for (l, a) in &t.attempts {
        let _ = writeln!(
            o,
            "splitdns_upstream_attempt_seconds_total{} {}",
            labels(&[
                ("zone", &l.zone),
                ("upstream", &l.upstream),
                ("transport", l.transport),
                ("outcome", l.outcome)
            ]),
            secs(a.sum_ns)
        );
    }

    family(
        &mut o,
        "splitdns_upstream_backed_off",
        "gauge",
        "1 while the server is skipped after failures, else 0.",
    );
    for s in &g.servers {
        let _ = writeln!(
            o,
            "splitdns_upstream_backed_off{} {}",
            labels(&[("zone", &s.zone), ("upstream", &s.upstream)]),
            u8::from(s.backed_off)
        );
    }
    family(
        &mut o,
        "splitdns_upstream_consecutive_failures",
        "gauge",
        "Failures of the server since its last answer.",
    );
    for s in &g.servers {
        let _ = writeln!(
            o,
            "splitdns_upstream_consecutive_failures{} {}",
            labels(&[("zone", &s.zone), ("upstream", &s.upstream)]),
            s.consecutive_failures
        );
    }
    family(
        &mut o,
        "splitdns_upstream_last_rtt_seconds",
        "gauge",
        "Round-trip time of the server's last answer (absent before its first).",
    );
    for s in &g.servers {
        if let Some(rtt) = s.last_rtt {
            let _ = writeln!(
                o,
                "splitdns_upstream_last_rtt_seconds{} {}",
                labels(&[("zone", &s.zone), ("upstream", &s.upstream)]),
                rtt.as_secs_f64()
            );
        }
    }

    family(
        &mut o,
        "splitdns_cache_entries",
        "gauge",
        "Answers in the cache (fresh or kept for serve-stale).",
    );
    let _ = writeln!(o, "splitdns_cache_entries {}", g.cache_entries);
    family(
        &mut o,
        "splitdns_cache_bytes",
        "gauge",
        "Bytes the cache holds, as counted against cache.max_bytes.",
    );
    let _ = writeln!(o, "splitdns_cache_bytes {}", g.cache_bytes);
    family(
        &mut o,
        "splitdns_events_written_total",
        "counter",
        "Query events handed to the events output.",
    );
    let _ = writeln!(o, "splitdns_events_written_total {}", g.events_written);
    family(
        &mut o,
        "splitdns_events_dropped_total",
        "counter",
        "Query events dropped because the writer fell behind.",
    );
    let _ = writeln!(o, "splitdns_events_dropped_total {}", g.events_dropped);
    o
}

/// Serves scrapes on `listener` until `cancel`; `body` renders the exposition per request.
pub async fn serve(
    listener: TcpListener,
    body: Arc<dyn Fn() -> String + Send + Sync>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // over the cap: dropping the stream closes it
        };
        let body = body.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(READ_TIMEOUT * 2, respond(stream, &*body)).await;
        });
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics { head_only: bool },
    NotFound,
    BadMethod,
    Bad,
}

fn parse_request(head: &[u8]) -> Request {
    let Some(line) = head.split(|&b| b == b'\n').next() else {
        return Request::Bad;
    };
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Bad;
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::BadMethod,
    };
    let path = target.split('?').next().unwrap_or("");
    if path == "/metrics" {
        Request::Metrics { head_only }
    } else {
        Request::NotFound
    }
}

async fn respond(mut stream: TcpStream, body: &(dyn Fn() -> String + Send + Sync)) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() > MAX_REQUEST {
            break false;
        }
        match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break false,
            Ok(Ok(n)) => head.extend_from_slice(buf.get(..n).unwrap_or(&[])),
        }
    };
    let req = if complete {
        parse_request(&head)
    } else {
        Request::Bad
    };
    let (status, ctype, text, head_only) = match req {
        Request::Metrics { head_only } => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            body(),
            head_only,
        ),
        Request::NotFound => (
            "404 Not Found",
            "text/plain",
            "try /metrics\n".to_owned(),
            false,
        ),
        Request::BadMethod => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
            false,
        ),
        Request::Bad => (
            "400 Bad Request",
            "text/plain",
            "bad request\n".to_owned(),
            false,
        ),
    };
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    );
    if !head_only {
        resp.push_str(&text);
    }
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::stats::Stats;
    use crate::event::{CacheStatus, Proto, QueryEvent};

    #[test]
    fn requests() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics { head_only: false }
        );
        assert_eq!(
            parse_request(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Request::Metrics { head_only: true }
        );
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::BadMethod
        );
        assert_eq!(parse_request(b"\x16\x03\x01garbage"), Request::Bad);
    }

    #[test]
    fn exposition_shape() {
        let s = Stats::new();
        let mut e = QueryEvent::new(UNIX_EPOCH, "127.0.0.1:1".parse().unwrap(), Proto::Udp);
        e.zone = Some(Arc::from("we\"ird"));
        e.cache = CacheStatus::Hit;
        e.rcode = Some(0);
        e.duration = Duration::from_micros(30);
        s.record(&e);
        let g = Gauges {
            started: UNIX_EPOCH,
            generation: 3,
            cache_entries: 7,
            cache_bytes: 700,
            events_written: 1,
            events_dropped: 0,
            servers: vec![],
        };
        let text = render(&s.totals(), &g);
        assert!(text.contains(
            "splitdns_queries_total{zone=\"we\\\"ird\",transport=\"udp\",cache=\"hit\",rcode=\"NOERROR\"} 1"
        ), "{text}");
        assert!(text.contains(
            "splitdns_query_duration_seconds_bucket{zone=\"we\\\"ird\",cache=\"hit\",le=\"0.00005\"} 1"
        ), "{text}");
        assert!(text.contains(
            "splitdns_query_duration_seconds_bucket{zone=\"we\\\"ird\",cache=\"hit\",le=\"0.000025\"} 0"
        ), "{text}");
        assert!(text.contains("splitdns_config_generation 3"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("splitdns_"), "{line}");
        }
    }
}
