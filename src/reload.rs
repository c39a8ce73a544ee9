//! Keeping the running state current without a restart. Two triggers:
//! - the zones' `servers_file`s: their directories are watched with inotify (DHCP hooks
//!   write a temp file and rename it over the old one, so the directory, not the file, is
//!   watched), and as a fallback — a directory that does not exist yet, or no inotify —
//!   polled every `POLL_INTERVAL`. Either way the bytes are compared, so an identical
//!   renewal changes nothing;
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

/// How often the servers files are checked when a directory cannot be watched.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often they are checked anyway while every directory is watched (belt and braces).
pub const WATCHED_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// An inotify watch on the directories of the servers files. A small thread blocks on the
/// inotify descriptor and pokes `changed`; the thread ends when the watch is dropped and the
/// next event arrives (or with the process).
struct DirWatch {
    dirs: std::collections::BTreeSet<PathBuf>,
    changed: Arc<tokio::sync::Notify>,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        self.alive
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

fn watched_dirs(config: &Config) -> std::collections::BTreeSet<PathBuf> {
    config
        .zones
        .iter()
        .filter_map(|z| z.servers_file.as_ref())
        .map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect()
}

impl DirWatch {
    /// Watches every directory holding a servers file. `None` if there are none, or if any
    /// cannot be watched (then polling covers all of them).
    ///
    /// `reported` is the last "cannot watch" message logged: a directory that does not exist
    /// is retried every `POLL_INTERVAL`, and saying so twice a second would flood the log. A
    /// message is logged when it differs from the last one, and once more when every
    /// directory can be watched again.
    fn new(config: &Config, reported: &mut Option<String>) -> Option<DirWatch> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let dirs = watched_dirs(config);
        if dirs.is_empty() {
            return None;
        }
        let ino = Inotify::init(InitFlags::IN_CLOEXEC).ok()?;
        let mask = AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF;
        for d in &dirs {
            if let Err(e) = ino.add_watch(d.as_path(), mask) {
                let why = format!("{}: {e}", d.display());
                if reported.as_deref() != Some(why.as_str()) {
                    tracing::info!(dir = %d.display(), error = %e, "cannot watch directory; polling servers files instead (said once until it changes)");
                    *reported = Some(why);
                }
                return None;
            }
        }
        if let Some(why) = reported.take() {
            tracing::info!(dirs = ?dirs, previously = %why, "servers-file directories can be watched now");
        }
        let changed = Arc::new(tokio::sync::Notify::new());
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (c2, a2) = (changed.clone(), alive.clone());
        std::thread::Builder::new()
            .name("splitdns-watch".into())
            .spawn(move || {
                while a2.load(std::sync::atomic::Ordering::Relaxed) {
                    match ino.read_events() {
                        Ok(_) => c2.notify_one(),
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(_) => break,
                    }
                }
            })
            .ok()?;
        tracing::debug!(dirs = ?dirs, "watching servers-file directories");
        Some(DirWatch {
            dirs,
            changed,
            alive,
        })
    }
}

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
    let (snap, warnings) = Snapshot::build(
        config,
        &files.servers(),
        &shared.listen,
        generation,
        &shared.upstreams,
    );
    for w in warnings {
        tracing::warn!("{w}");
    }
    for z in &snap.zones {
        let servers: Vec<String> = z.servers.iter().map(ToString::to_string).collect();
        tracing::info!(generation, zone = %z.name, servers = ?servers, "{why}");
    }
    shared.install(snap);
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

/// Runs until `cancel`: watches servers files and handles SIGHUP (`hup`, installed by the
/// caller before the sockets are announced, so an early SIGHUP is never fatal).
pub async fn watch(
    shared: Arc<Shared>,
    mut config: Arc<Config>,
    mut files: FileState,
    cancel: CancellationToken,
    mut hup: Option<tokio::signal::unix::Signal>,
) {
    let mut watch_reported = None;
    let mut watch = DirWatch::new(&config, &mut watch_reported);
    let mut tick = tokio::time::interval(if watch.is_some() {
        WATCHED_POLL_INTERVAL
    } else {
        POLL_INTERVAL
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        let dir_changed = async {
            match watch.as_ref() {
                Some(w) => w.changed.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = hangup => {
                tracing::info!(file = %config.path.display(), "SIGHUP: reloading");
                match Config::load(&config.path) {
                    Ok(mut new) => {
                        // `--listen` outlives reloads; the sockets cannot change anyway.
                        if config.listen_from_cli {
                            new.listen.clone_from(&config.listen);
                            new.listen_from_cli = true;
                        }
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
                // The servers files may live elsewhere now.
                if watch.as_ref().map(|w| &w.dirs) != Some(&watched_dirs(&config)) {
                    watch = DirWatch::new(&config, &mut watch_reported);
                }
                tick = tokio::time::interval(if watch.is_some() { WATCHED_POLL_INTERVAL } else { POLL_INTERVAL });
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            _ = dir_changed => {
                // Let a burst of events (temp file created, written, renamed) settle.
                tokio::time::sleep(Duration::from_millis(20)).await;
                check_files(&shared, &config, &mut files);
            }
            _ = tick.tick() => {
                if watch.is_none() {
                    // A directory that did not exist may exist now.
                    watch = DirWatch::new(&config, &mut watch_reported);
                    if watch.is_some() {
                        tick = tokio::time::interval(WATCHED_POLL_INTERVAL);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
                check_files(&shared, &config, &mut files);
            }
        }
    }
}

/// Re-reads the servers files; if any content changed, rebuilds and swaps the snapshot.
fn check_files(shared: &Arc<Shared>, config: &Arc<Config>, files: &mut FileState) {
    let now = peek(config);
    if now == files.contents {
        return;
    }
    let changed: Vec<String> = now
        .iter()
        .filter(|(p, c)| files.contents.get(*p) != Some(*c))
        .map(|(p, _)| p.display().to_string())
        .collect();
    tracing::info!(files = ?changed, "servers file changed");
    *files = read_servers_files(config);
    install(shared, config.clone(), files, "servers file changed");
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
        || old.cache.max_bytes != new.cache.max_bytes
        || old.cache.serve_stale != new.cache.serve_stale
    {
        tracing::warn!("`cache.max_entries`/`max_bytes`/`serve_stale` changed; they take effect after a restart (TTL bounds apply now)");
    }
}
