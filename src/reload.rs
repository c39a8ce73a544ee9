//! Keeping the running state current without a restart. Two triggers:
//! - the zones' `servers_file`s, polled every `POLL_INTERVAL` by content (DHCP hooks
//!   replace the file by rename, so we compare bytes, not inodes; an identical renewal
//!   changes nothing);
//! - SIGHUP, which re-reads the config file and every servers file.
//!
//! A rebuild produces a whole new `Snapshot` that is swapped in for the next query;
//! queries in flight finish on the old one. A config that fails to load is logged and the
//! running one kept. Changes that need new sockets or threads (`listen`, `events`,
//! `limits`) are reported and wait for a restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dhcp;
use crate::state::{FileServers, Shared, Snapshot};

/// How often the servers files are checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The last-seen bytes of every servers file (None = missing or unreadable).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileState {
    contents: HashMap<PathBuf, Option<Vec<u8>>>,
}

impl FileState {
    /// The servers each file names.
    pub fn servers(&self) -> FileServers {
        self.contents
            .iter()
            .map(|(p, c)| {
                (
                    p.clone(),
                    c.as_deref()
                        .map(|b| dhcp::parse_bytes(b).servers)
                        .unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// Reads every zone's servers file, logging what is wrong with each (never failing).
pub fn read_servers_files(config: &Config) -> FileState {
    let mut contents = HashMap::new();
    for z in &config.zones {
        let Some(path) = &z.servers_file else {
            continue;
        };
        let bytes = match dhcp::read(path) {
            Ok(Some(b)) => {
                for w in dhcp::parse_bytes(&b).warnings {
                    tracing::warn!(file = %path.display(), "servers file: {w}");
                }
                Some(b)
            }
            Ok(None) => {
                tracing::info!(file = %path.display(), zone = %z.name, "servers file not there (yet); using the zone's static servers");
                None
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read servers file; using the zone's static servers");
                None
            }
        };
        contents.insert(path.clone(), bytes);
    }
    FileState { contents }
}

fn install(shared: &Arc<Shared>, config: Arc<Config>, files: &FileState, why: &str) {
    let generation = shared.snapshot.load().generation + 1;
    let (snap, warnings) = Snapshot::build(config, &files.servers(), &shared.listen, generation);
    for w in warnings {
        tracing::warn!("{w}");
    }
    for z in &snap.zones {
        tracing::info!(generation, zone = %z.name, servers = ?z.servers, "{why}");
    }
    shared.install(snap);
    probe(shared);
}

/// Clears old loop verdicts and probes the current servers in the background.
pub fn probe(shared: &Arc<Shared>) {
    shared.health.clear_loops();
    let shared = shared.clone();
    tokio::spawn(async move {
        let snap = shared.snapshot.load_full();
        crate::upstream::send_loop_probes(&snap.zones, &shared.health).await;
    });
}

/// Reads servers files without logging (for change detection).
fn peek(config: &Config) -> HashMap<PathBuf, Option<Vec<u8>>> {
    config
        .zones
        .iter()
        .filter_map(|z| z.servers_file.clone())
        .map(|p| {
            let b = dhcp::read(&p).ok().flatten();
            (p, b)
        })
        .collect()
}

/// Runs until `cancel`: polls servers files and handles SIGHUP.
pub async fn watch(
    shared: Arc<Shared>,
    mut config: Arc<Config>,
    mut files: FileState,
    cancel: CancellationToken,
) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by restart only");
            None
        }
    };
    probe(&shared);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = hangup => {
                tracing::info!(file = %config.path.display(), "SIGHUP: reloading");
                match Config::load(&config.path) {
                    Ok(new) => {
                        report_restart_only(&config, &new);
                        files = read_servers_files(&new);
                        config = Arc::new(new);
                        install(&shared, config.clone(), &files, "reloaded config");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reload failed; still serving the previous config");
                        files = read_servers_files(&config);
                        install(&shared, config.clone(), &files, "re-read servers files");
                    }
                }
            }
            _ = tick.tick() => {
                let now = peek(&config);
                if now != files.contents {
                    let changed: Vec<String> = now
                        .iter()
                        .filter(|(p, c)| files.contents.get(*p) != Some(*c))
                        .map(|(p, _)| p.display().to_string())
                        .collect();
                    tracing::info!(files = ?changed, "servers file changed");
                    files = read_servers_files(&config);
                    install(&shared, config.clone(), &files, "servers file changed");
                }
            }
        }
    }
}

fn report_restart_only(old: &Config, new: &Config) {
    if old.listen != new.listen {
        tracing::warn!("`listen` changed; it takes effect after a restart");
    }
    if old.events != new.events {
        tracing::warn!("`events.output` changed; it takes effect after a restart");
    }
    if old.limits != new.limits {
        tracing::warn!("`limits` changed; they take effect after a restart");
    }
    if old.cache.max_entries != new.cache.max_entries
        || old.cache.serve_stale != new.cache.serve_stale
    {
        tracing::warn!("`cache.max_entries`/`serve_stale` changed; they take effect after a restart (TTL bounds apply now)");
    }
}
