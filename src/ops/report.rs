//! What `control status`, `control stats [--json]` and SIGUSR1 print: plain text (and one
//! JSON document) rendered from the shared state and the counters. Reads only; changes
//! nothing.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::event::rfc3339;
use crate::event::stats::Totals;
use crate::state::Shared;
use crate::upstream::Server;

/// When the process started, both clocks.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    /// Wall clock.
    pub wall: SystemTime,
    /// Monotonic.
    pub mono: Instant,
}

impl Started {
    /// Now.
    pub fn now() -> Started {
        Started {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }
}

/// `1d2h3m4s`-style.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60, s % 60);
    match (days, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m{sec}s"),
        (0, _, _) => format!("{h}h{m}m{sec}s"),
        _ => format!("{days}d{h}h{m}m{sec}s"),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// The `status` body.
pub fn status(shared: &Shared, totals: &Totals, started: Started) -> String {
    let mut o = String::new();
    let snap = shared.snapshot.load();
    let (now, now_wall) = (Instant::now(), SystemTime::now());
    let _ = writeln!(
        o,
        "splitdns {} (pid {}), up {} since {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        human(now.saturating_duration_since(started.mono)),
        rfc3339(started.wall)
    );
    let _ = writeln!(
        o,
        "config {}, generation {}",
        snap.config.path.display(),
        snap.generation
    );
    let _ = writeln!(
        o,
        "cache: {} entries, {} bytes",
        shared.cache.len(),
        shared.cache.bytes()
    );
    for z in &snap.zones {
        let mut head = format!(
            "zone {}: timeout {} ms, cache {}",
            z.name,
            z.timeout.as_millis(),
            if z.cache { "on" } else { "off" }
        );
        if let Some(f) = &z.servers_file {
            let _ = write!(head, ", servers_file {}", f.display());
            if let Some(v) = z.servers_file_version {
                let _ = write!(head, " (version {v})");
            }
        }
        let _ = writeln!(o, "{head}");
        if z.servers.is_empty() {
            let _ = writeln!(o, "  (no servers: queries get SERVFAIL)");
        }
        for (i, s) in z.servers.iter().enumerate() {
            let _ = writeln!(
                o,
                "  {}. {}",
                i + 1,
                server_line(s, i < z.from_file, totals, now, now_wall)
            );
        }
    }
    let files = shared.servers_files.list();
    if files.is_empty() {
        let _ = writeln!(o, "servers files: none");
    }
    for (path, f) in files {
        let _ = writeln!(
            o,
            "servers file {}: {}, version {}, {} server(s), last changed {}",
            path.display(),
            if f.present { "present" } else { "missing" },
            f.version,
            f.servers,
            rfc3339(f.changed)
        );
    }
    // Loops are caught per query (an EDNS marker that comes back): the looping names get
    // SERVFAIL from that server and move on; its other names are still answered.
    let looped = totals.attempts_by(|l| (l.outcome == "loop").then(|| l.upstream.clone()));
    let came_back = totals
        .errors
        .get("forwarding loop detected")
        .copied()
        .unwrap_or(0);
    let mut any = false;
    for (server, n) in looped.iter().filter_map(|(k, n)| Some((k.as_ref()?, *n))) {
        any = true;
        let _ = writeln!(
            o,
            "forwarding loop: {server} sent {n} of our queries back to us (those names went on to the next server)"
        );
    }
    if any || came_back > 0 {
        let _ = writeln!(
            o,
            "forwarding loops: {came_back} queries of ours came back and were ended"
        );
    } else {
        let _ = writeln!(o, "forwarding loops: none detected");
    }
    o
}

fn server_line(
    server: &Server,
    from_file: bool,
    totals: &Totals,
    now: Instant,
    now_wall: SystemTime,
) -> String {
    let addr = server.addr;
    let key = addr.to_string();

    let mut line = format!(
        "{addr} ({})",
        if from_file { "servers_file" } else { "servers" }
    );
    let state = match server.health.down_until().filter(|t| *t > now) {
        Some(until) => {
            let left = until.saturating_duration_since(now);
            format!(
                "BACKED OFF until {} ({:.1} s left)",
                rfc3339(now_wall + left),
                left.as_secs_f64()
            )
        }
        None => "up".to_owned(),
    };
    let _ = write!(
        line,
        " {state}: answered {}, timed out {}, lost {}, errors {}, servfail {}, refused {}, loops {}, consecutive failures {}",
        totals.attempts_to(&key, "answer"),
        totals.attempts_to(&key, "timeout"),
        totals.attempts_to(&key, "lost"),
        totals.attempts_to(&key, "error"),
        totals.attempts_to(&key, "servfail"),
        totals.attempts_to(&key, "refused"),
        totals.attempts_to(&key, "loop"),
        server.health.failures()
    );
    match totals.last_rtt(&key) {
        Some(rtt) => {
            let _ = write!(line, ", last rtt {}", ms(rtt));
        }
        None => line.push_str(", last rtt -"),
    }
    if let Some(srtt) = server.health.rtt.srtt() {
        let _ = write!(line, ", smoothed rtt {}", ms(srtt));
    }
    line
}

/// The `stats` body: counters since start, one group per line.
pub fn stats_text(shared: &Shared, t: &Totals, started: Started) -> String {
    let mut o = String::new();
    let join = |m: std::collections::BTreeMap<String, u64>| -> String {
        if m.is_empty() {
            return "-".into();
        }
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        o,
        "uptime {}",
        human(Instant::now().saturating_duration_since(started.mono))
    );
    let _ = writeln!(o, "queries {}", t.query_count());
    let _ = writeln!(
        o,
        "queries by transport: {}",
        join(t.queries_by(|l| l.transport.to_owned()))
    );
    let _ = writeln!(
        o,
        "queries by cache: {}",
        join(t.queries_by(|l| l.cache.to_owned()))
    );
    let _ = writeln!(
        o,
        "queries by rcode: {}",
        join(t.queries_by(|l| l.rcode.clone().unwrap_or_else(|| "(none sent)".into())))
    );
    let _ = writeln!(
        o,
        "queries by zone: {}",
        join(t.queries_by(|l| if l.zone.is_empty() {
            "(none)".into()
        } else {
            l.zone.clone()
        }))
    );
    let _ = writeln!(
        o,
        "errors: {}",
        join(
            t.errors
                .iter()
                .map(|(e, n)| ((*e).to_owned(), *n))
                .collect()
        )
    );
    let _ = writeln!(o, "failovers {}", t.failovers());
    let attempts = t.attempts_by(|l| format!("{} {}", l.upstream, l.outcome));
    let _ = writeln!(o, "upstream attempts: {}", join(attempts));
    let q = |p: f64| t.latency_quantile(p).map_or_else(|| "-".to_owned(), ms);
    let _ = writeln!(o, "latency p50 {}, p90 {}, p99 {}", q(0.5), q(0.9), q(0.99));
    let _ = writeln!(
        o,
        "events written {}, dropped {}",
        shared.events.written(),
        shared.events.dropped()
    );
    let _ = writeln!(
        o,
        "cache entries {}, bytes {}",
        shared.cache.len(),
        shared.cache.bytes()
    );
    o
}

/// The `stats --json` body: one JSON document.
pub fn stats_json(shared: &Shared, t: &Totals, started: Started) -> String {
    let to_obj = |m: std::collections::BTreeMap<String, u64>| -> serde_json::Value {
        serde_json::Value::Object(m.into_iter().map(|(k, v)| (k, json!(v))).collect())
    };
    let mut attempts = serde_json::Map::new();
    for (l, a) in &t.attempts {
        let server = attempts
            .entry(l.upstream.clone())
            .or_insert_with(|| json!({}));
        if let Some(m) = server.as_object_mut() {
            let n = m
                .get(l.outcome)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            m.insert(l.outcome.to_owned(), json!(n + a.count));
        }
    }
    let q = |p: f64| t.latency_quantile(p).map(|d| d.as_secs_f64() * 1000.0);
    let doc = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": Instant::now().saturating_duration_since(started.mono).as_secs(),
        "generation": shared.snapshot.load().generation,
        "queries": {
            "total": t.query_count(),
            "by_transport": to_obj(t.queries_by(|l| l.transport.to_owned())),
            "by_cache": to_obj(t.queries_by(|l| l.cache.to_owned())),
            "by_rcode": to_obj(t.queries_by(|l| l.rcode.clone().unwrap_or_else(|| "none".into()))),
            "by_zone": to_obj(t.queries_by(|l| if l.zone.is_empty() { "(none)".into() } else { l.zone.clone() })),
        },
        "errors": to_obj(t.errors.iter().map(|(e, n)| ((*e).to_owned(), *n)).collect()),
        "failovers": t.failovers(),
        "upstream_attempts": attempts,
        "latency_ms": { "p50": q(0.5), "p90": q(0.9), "p99": q(0.99) },
        "events": { "written": shared.events.written(), "dropped": shared.events.dropped() },
        "cache": { "entries": shared.cache.len(), "bytes": shared.cache.bytes() },
    });
    format!("{doc}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_secs(65)), "1m5s");
        assert_eq!(human(Duration::from_secs(3_725)), "1h2m5s");
        assert_eq!(human(Duration::from_secs(90_000)), "1d1h0m0s");
    }
}
