//! Keeping the running state current without a restart. Two triggers:
//! - the zones' `servers_file`s: their directories are watched with inotify (DHCP hooks
//!   write a temp file and rename it over the old one, so the directory, not the file, is
//!   watched; for a servers file that is a symlink, the directory of its target too), and
//!   as a fallback — a directory that does not exist yet, or no inotify — polled every
//!   `POLL_INTERVAL`. Only complete writes wake us (close-after-write, rename, delete; not
//!   every modification), and a file is used only once it has *settled* ([`settled`]: two
//!   reads `SETTLE` apart agree in bytes, size and mtime, and it ends with a newline or has
//!   not changed for `YOUNG`): a writer that rewrites the file in place is never read
//!   half-way. The bytes are compared, so an identical renewal changes nothing;
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
/// Two reads this far apart must agree before a servers file is used.
pub const SETTLE: Duration = Duration::from_millis(100);
/// A file without a final newline is taken only once it has not changed for this long
/// (a writer may be between two parts of it).
pub const YOUNG: Duration = Duration::from_secs(1);
/// How many times a file that is still changing is re-read before we give up until the
/// next trigger (keeping the servers in use).
const SETTLE_TRIES: usize = 20;

/// An inotify watch on the directories of the servers files. A small thread blocks on the
/// inotify descriptor and pokes `changed`; the thread ends when the watch is dropped and the
/// next event arrives (or with the process).
struct DirWatch {
    dirs: Targets,
    changed: Arc<tokio::sync::Notify>,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        self.alive
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The directories to watch and the file names in them that matter: each servers file's
/// own, and for a symlink (anywhere in its path) its target's too, so a rewrite of the
/// target is seen at once rather than by the next poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Targets {
    dirs: std::collections::BTreeSet<PathBuf>,
    names: std::collections::BTreeSet<std::ffi::OsString>,
}

fn split(p: &std::path::Path) -> (PathBuf, Option<std::ffi::OsString>) {
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    (dir, p.file_name().map(ToOwned::to_owned))
}

fn watched_dirs(config: &Config) -> Targets {
    let mut t = Targets::default();
    for p in config.zones.iter().filter_map(|z| z.servers_file.as_ref()) {
        let target = std::fs::canonicalize(p).ok();
        for q in std::iter::once(p.clone()).chain(target.filter(|c| c != p)) {
            let (dir, name) = split(&q);
            t.dirs.insert(dir);
            t.names.extend(name);
        }
    }
    t
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
        let targets = watched_dirs(config);
        let dirs = targets.dirs.clone();
        if dirs.is_empty() {
            return None;
        }
        let ino = Inotify::init(InitFlags::IN_CLOEXEC).ok()?;
        // Complete writes only: close-after-write, a rename in or out, a delete. Not
        // IN_CREATE or IN_MODIFY: a file being written in place is not ready yet.
        let mask = AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
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
        let names = targets.names.clone();
        std::thread::Builder::new()
            .name("splitdns-watch".into())
            .spawn(move || {
                while a2.load(std::sync::atomic::Ordering::Relaxed) {
                    match ino.read_events() {
                        // Events about other files (a hook's temp file) are not ours.
                        Ok(events) => {
                            if events
                                .iter()
                                .any(|e| e.name.as_ref().is_none_or(|n| names.contains(n)))
                            {
                                c2.notify_one();
                            }
                        }
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(_) => break,
                    }
                }
            })
            .ok()?;
        tracing::debug!(dirs = ?dirs, "watching servers-file directories");
        Some(DirWatch {
            dirs: targets,
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
    /// Records each file's content in `versions` (bumping the version of any that changed).
    pub fn observe(&self, versions: &crate::state::ServersFiles) {
        let now = std::time::SystemTime::now();
        for (p, c) in &self.contents {
            let n = c
                .as_deref()
                .map_or(0, |b| dhcp::parse_bytes(b).servers.len());
            versions.observe(p, c.as_deref(), n, now);
        }
    }

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
        contents.insert(path.clone(), logged(path, &z.name, dhcp::read(path)));
    }
    FileState { contents }
}

/// The usable bytes of one read, with what is wrong logged.
fn logged(
    path: &std::path::Path,
    zone: &str,
    read: std::io::Result<Option<Vec<u8>>>,
) -> Option<Vec<u8>> {
    match read {
        Ok(Some(b)) => {
            for w in dhcp::parse_bytes(&b).warnings {
                tracing::warn!(file = %path.display(), "servers file: {w}");
            }
            Some(b)
        }
        Ok(None) => {
            tracing::info!(file = %path.display(), zone = %zone, "servers file not there (yet); using the zone's static servers");
            None
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read servers file; using the zone's static servers");
            None
        }
    }
}

/// One read of a servers file with what says whether it is still changing.
#[derive(Debug, PartialEq, Eq)]
struct Sample {
    bytes: Option<Vec<u8>>,
    /// Size, mtime and inode (None when missing or unreadable).
    meta: Option<(u64, std::time::SystemTime, u64)>,
    error: bool,
}

fn sample(path: &std::path::Path) -> (Sample, std::io::Result<Option<Vec<u8>>>) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.len(), m.modified().ok()?, m.ino())));
    let read = dhcp::read(path);
    let bytes = read.as_ref().ok().cloned().flatten();
    let error = read.is_err();
    (Sample { bytes, meta, error }, read)
}

/// Reads a servers file once it has settled: two reads [`SETTLE`] apart agree (bytes,
/// size, mtime, inode), and it ends with a newline (or is missing, or has not been
/// modified for [`YOUNG`]: an empty or unterminated file may be half-written). `None` if it is still changing after [`SETTLE_TRIES`] tries:
/// keep what is in use and look again at the next trigger.
pub async fn settled(path: &std::path::Path) -> Option<std::io::Result<Option<Vec<u8>>>> {
    let (mut last, _) = sample(path);
    for _ in 0..SETTLE_TRIES {
        tokio::time::sleep(SETTLE).await;
        let (now, read) = sample(path);
        let complete = match (&now.bytes, &now.meta) {
            // Empty is what `>` leaves before the first write: young and empty is not done.
            (Some(b), Some((_, mtime, _))) if !b.ends_with(b"\n") => {
                mtime.elapsed().is_ok_and(|age| age >= YOUNG)
            }
            _ => true,
        };
        if now == last && complete {
            return Some(read);
        }
        last = now;
    }
    None
}

fn install(shared: &Arc<Shared>, config: Arc<Config>, files: &FileState, why: &str) {
    let generation = shared.snapshot.load().generation + 1;
    let (mut snap, warnings) = Snapshot::build(
        config,
        &files.servers(),
        &shared.listen,
        generation,
        &shared.upstreams,
    );
    files.observe(&shared.servers_files);
    shared.servers_files.stamp(&mut snap);
    for w in warnings {
        tracing::warn!("{w}");
    }
    for z in &snap.zones {
        let servers: Vec<String> = z.servers.iter().map(ToString::to_string).collect();
        tracing::info!(generation, zone = %z.name, servers = ?servers, "{why}");
    }
    shared.install(snap);
}

/// A reload asked for by `splitdns control reload`: answered with a summary of what is now
/// running, or the error that kept the previous config.
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<String, String>>;

/// Re-reads the config file (keeping `--listen`) and every servers file, and swaps in the
/// result. On a config error the running config is kept, its servers files re-read, and
/// the error returned.
fn reload_config(
    shared: &Arc<Shared>,
    config: &mut Arc<Config>,
    files: &mut FileState,
) -> Result<String, String> {
    match Config::load(&config.path) {
        Ok(mut new) => {
            // `--listen` outlives reloads; the sockets cannot change anyway.
            if config.listen_from_cli {
                new.listen.clone_from(&config.listen);
                new.listen_from_cli = true;
            }
            report_restart_only(config, &new);
            *files = read_servers_files(&new);
            *config = Arc::new(new);
            install(shared, config.clone(), files, "reloaded config");
            let snap = shared.snapshot.load();
            Ok(format!(
                "reloaded {}: generation {}, {} zone(s)",
                config.path.display(),
                snap.generation,
                snap.zones.len()
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "reload failed; still serving the previous config");
            *files = read_servers_files(config);
            install(shared, config.clone(), files, "re-read servers files");
            Err(format!("{e}; still serving the previous config"))
        }
    }
}

/// Runs until `cancel`: watches servers files and handles SIGHUP (`hup`, installed by the
/// caller before the sockets are announced, so an early SIGHUP is never fatal) and reloads
/// asked for over the control socket (`requests`).
pub async fn watch(
    shared: Arc<Shared>,
    mut config: Arc<Config>,
    mut files: FileState,
    cancel: CancellationToken,
    mut hup: Option<tokio::signal::unix::Signal>,
    mut requests: tokio::sync::mpsc::Receiver<ReloadRequest>,
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
        let asked = async {
            match requests.recv().await {
                Some(r) => r,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            reply = asked => {
                tracing::info!(file = %config.path.display(), "control: reloading");
                let result = reload_config(&shared, &mut config, &mut files);
                let _ = reply.send(result);
                if watch.as_ref().map(|w| &w.dirs) != Some(&watched_dirs(&config)) {
                    watch = DirWatch::new(&config, &mut watch_reported);
                }
                tick = tokio::time::interval(if watch.is_some() { WATCHED_POLL_INTERVAL } else { POLL_INTERVAL });
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            _ = hangup => {
                tracing::info!(file = %config.path.display(), "SIGHUP: reloading");
                let _ = reload_config(&shared, &mut config, &mut files);
                // The servers files may live elsewhere now.
                if watch.as_ref().map(|w| &w.dirs) != Some(&watched_dirs(&config)) {
                    watch = DirWatch::new(&config, &mut watch_reported);
                }
                tick = tokio::time::interval(if watch.is_some() { WATCHED_POLL_INTERVAL } else { POLL_INTERVAL });
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            _ = dir_changed => {
                check_files(&shared, &config, &mut files).await;
                refresh_watch(&mut watch, &config, &mut watch_reported);
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
                check_files(&shared, &config, &mut files).await;
                refresh_watch(&mut watch, &config, &mut watch_reported);
            }
        }
    }
}

/// A symlinked servers file may point elsewhere now: watch where it points.
fn refresh_watch(watch: &mut Option<DirWatch>, config: &Config, reported: &mut Option<String>) {
    if let Some(w) = watch.as_ref() {
        if w.dirs != watched_dirs(config) {
            *watch = DirWatch::new(config, reported);
        }
    }
}

/// Re-reads the servers files once they have settled; if any content changed, rebuilds
/// and swaps the snapshot. A file still changing keeps its servers until the next trigger.
async fn check_files(shared: &Arc<Shared>, config: &Arc<Config>, files: &mut FileState) {
    let mut reads = Vec::new();
    for z in &config.zones {
        let Some(path) = &z.servers_file else {
            continue;
        };
        match settled(path).await {
            Some(read) => reads.push((path.clone(), z.name.clone(), read)),
            None => {
                if let Some(suppressed) = STILL_CHANGING.allow(std::time::Instant::now()) {
                    tracing::warn!(file = %path.display(), suppressed, "servers file still changing; keeping the servers in use until it settles");
                }
            }
        }
    }
    let changed: Vec<String> = reads
        .iter()
        .filter(|(p, _, r)| {
            let now = r.as_ref().ok().cloned().flatten();
            files.contents.get(p) != Some(&now)
        })
        .map(|(p, _, _)| p.display().to_string())
        .collect();
    if changed.is_empty() {
        return;
    }
    tracing::info!(files = ?changed, "servers file changed");
    for (path, zone, read) in reads {
        let bytes = logged(&path, &zone, read);
        files.contents.insert(path, bytes);
    }
    install(shared, config.clone(), files, "servers file changed");
}

static STILL_CHANGING: crate::diag::Throttle =
    crate::diag::Throttle::new(crate::diag::WARN_INTERVAL);

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
