//! Operating splitdns while it runs: the control socket (`control`), the Prometheus
//! endpoint (`metrics`), the SIGUSR1 stats summary, and the text they print (`report`).
//!
//! Everything here reads the shared state and the counters the event sink folds from each
//! query's record (`event::stats`); nothing here is on the answer path. The only changes it
//! makes go through their owners' entry points: `flush` through the cache, `reload` through
//! the reload task. It must not answer queries, parse the config, or keep counters of its
//! own (so the numbers it shows and the events can never disagree).
//!
//! # Layout
//! - this file: [`Ops`] (answers control commands, renders metrics) and [`start`];
//! - `control`: the unix socket, its one-line protocol and the client side;
//! - `metrics`: the Prometheus text and its small HTTP responder;
//! - `report`: the `status` and `stats` text and JSON.

use std::io;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::event::stats::Totals;
use crate::reload::ReloadRequest;
use crate::state::Shared;
use crate::wire;

pub mod control;
pub mod metrics;
pub mod report;

pub use report::Started;

/// Answers control commands and scrapes from the shared state.
pub struct Ops {
    shared: Arc<Shared>,
    reload: mpsc::Sender<ReloadRequest>,
    started: Started,
}

/// True if the lower-case wire name `name` is `zone` or below it (label boundaries).
fn is_at_or_below(name: &[u8], zone: &[u8]) -> bool {
    if zone == [0] {
        return true;
    }
    let mut pos = 0usize;
    while let Some(rest) = name.get(pos..) {
        if rest == zone {
            return true;
        }
        match rest.first() {
            Some(&len) if len != 0 && len & 0xc0 == 0 => pos += 1 + usize::from(len),
            _ => return false,
        }
    }
    false
}

impl Ops {
    /// Ops over `shared`; `reload` reaches the reload task.
    pub fn new(shared: Arc<Shared>, reload: mpsc::Sender<ReloadRequest>, started: Started) -> Ops {
        Ops {
            shared,
            reload,
            started,
        }
    }

    fn totals(&self) -> Totals {
        self.shared.events.stats().totals()
    }

    /// The gauges beside the counters.
    pub fn gauges(&self) -> metrics::Gauges {
        let snap = self.shared.snapshot.load();
        let totals = self.totals();
        let now = std::time::Instant::now();
        let servers = snap
            .zones
            .iter()
            .flat_map(|z| {
                let totals = &totals;
                z.servers.iter().map(move |s| metrics::ServerGauge {
                    zone: z.name.to_string(),
                    upstream: s.addr.to_string(),
                    backed_off: s.health.down_until().is_some_and(|t| t > now),
                    consecutive_failures: u64::from(s.health.failures()),
                    last_rtt: totals.last_rtt(&s.addr.to_string()),
                })
            })
            .collect();
        metrics::Gauges {
            started: self.started.wall,
            generation: snap.generation,
            cache_entries: self.shared.cache.len(),
            cache_bytes: self.shared.cache.bytes(),
            events_written: self.shared.events.written(),
            events_dropped: self.shared.events.dropped(),
            servers,
        }
    }

    /// The `/metrics` body.
    pub fn metrics_text(&self) -> String {
        metrics::render(&self.totals(), &self.gauges())
    }

    /// The stats summary logged on SIGUSR1.
    pub fn stats_text(&self) -> String {
        report::stats_text(&self.shared, &self.totals(), self.started)
    }

    fn flush(&self, cmd: &control::Command) -> String {
        use control::Command;
        let cache = &self.shared.cache;
        let (n, what) = match cmd {
            Command::FlushName(name) => {
                let w = crate::route::text_to_wire(name);
                (
                    cache.remove_keys(|k| wire::key_qname(k) == w.as_slice()),
                    format!("name {name}"),
                )
            }
            Command::FlushZone(name) => {
                let w = crate::route::text_to_wire(name);
                (
                    cache.remove_keys(|k| is_at_or_below(wire::key_qname(k), &w)),
                    format!("zone {name}"),
                )
            }
            _ => (cache.remove_keys(|_| true), "everything".to_owned()),
        };
        tracing::info!(removed = n, "control: flushed {what}");
        format!(
            "flushed {what}: {n} cache entr{}\n",
            if n == 1 { "y" } else { "ies" }
        )
    }
}

impl control::Handler for Ops {
    fn handle(&self, cmd: &control::Command) -> Result<String, String> {
        use control::Command;
        Ok(match cmd {
            Command::Status => report::status(&self.shared, &self.totals(), self.started),
            Command::Stats(false) => self.stats_text(),
            Command::Stats(true) => report::stats_json(&self.shared, &self.totals(), self.started),
            Command::FlushAll | Command::FlushName(_) | Command::FlushZone(_) => self.flush(cmd),
            Command::Reload => return Err("reload is handled by the reload task".into()),
        })
    }

    fn reload_tx(&self) -> &mpsc::Sender<ReloadRequest> {
        &self.reload
    }
}

/// Why `start` failed: what, and the I/O error.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct StartError {
    /// What could not be set up.
    pub what: String,
    /// Why.
    pub source: io::Error,
}

/// Binds the control socket and the metrics listener the config asks for, installs the
/// SIGUSR1 handler, and spawns their tasks (they stop on `cancel`). Logs
/// `control socket PATH` and `metrics on http://ADDR/metrics` once each is ready.
///
/// # Errors
/// A socket that cannot be bound, or a signal handler that cannot be installed.
pub fn start(
    config: &Config,
    ops: Arc<Ops>,
    cancel: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    let mut tasks = Vec::new();
    if let Some(path) = &config.control_socket {
        let listener = control::bind(path).map_err(|source| StartError {
            what: format!("cannot create control socket {}", path.display()),
            source,
        })?;
        tracing::info!("control socket {}", path.display());
        tasks.push(tokio::spawn(control::serve(
            listener,
            path.clone(),
            ops.clone(),
            cancel.clone(),
        )));
    }
    if let Some(addr) = config.metrics_listen {
        let bind_err = |source| StartError {
            what: format!("cannot bind metrics listener {addr}"),
            source,
        };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let real = std_listener.local_addr().map_err(bind_err)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?;
        tracing::info!("metrics on http://{real}/metrics");
        let o = ops.clone();
        tasks.push(tokio::spawn(metrics::serve(
            listener,
            Arc::new(move || o.metrics_text()),
            cancel.clone(),
        )));
    }
    // SIGUSR1's default action is to terminate: take it over before the sockets are
    // announced.
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .map_err(|source| StartError {
            what: "cannot install the SIGUSR1 handler".into(),
            source,
        })?;
    let cancel = cancel.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                got = usr1.recv() => {
                    if got.is_none() {
                        break;
                    }
                    for line in ops.stats_text().lines() {
                        tracing::info!("stats: {line}");
                    }
                }
            }
        }
    }));
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_at_or_below_a_zone() {
        let w = crate::route::text_to_wire;
        assert!(is_at_or_below(&w("a.consul"), &w("consul")));
        assert!(is_at_or_below(&w("consul"), &w("consul")));
        assert!(is_at_or_below(&w("x.service.consul"), &w("service.consul")));
        assert!(!is_at_or_below(&w("notconsul"), &w("consul")));
        assert!(!is_at_or_below(&w("consul"), &w("a.consul")));
        assert!(is_at_or_below(&w("anything"), &w(".")));
    }
}
