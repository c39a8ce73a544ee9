//! Starting splitdns in-process (`app::bind` on 127.0.0.1:0 + `app::run` on a spawned task
//! with a oneshot shutdown), temp directories, and config snippets.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use splitdns::config::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::events::{self, Event};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh, empty directory whose name contains `tag`.
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("splitdns-it-{}-{}-{n}", std::process::id(), tag));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Write `text` to `name` inside the directory and return its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Quote a string for TOML (basic string).
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A `[[zone]]` table with these servers (in order) and extra `key = value` lines.
pub fn zone(name: &str, servers: &[&crate::fake::Fake], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|f| toml_str(&f.server())).collect();
    zone_addrs(name, &list, extra)
}

/// A `[[zone]]` table with servers given as already-quoted TOML strings.
pub fn zone_addrs(name: &str, quoted_servers: &[String], extra: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "[[zone]]");
    let _ = writeln!(out, "name = {}", toml_str(name));
    let _ = writeln!(out, "servers = [{}]", quoted_servers.join(", "));
    if !extra.is_empty() {
        let _ = writeln!(out, "{extra}");
    }
    out
}

/// A `[cache]` table that disables the cache, so upstream query counts are exact.
pub const NO_CACHE: &str = "[cache]\nmax_entries = 0\n";

/// splitdns running in-process on 127.0.0.1:0 with its events written to a temp file.
pub struct Daemon {
    /// The UDP address to query.
    pub udp: SocketAddr,
    /// The TCP address to query.
    pub tcp: SocketAddr,
    /// The events file.
    pub events_path: PathBuf,
    /// The temp directory holding the config and events (removed on drop).
    _dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), splitdns::app::AppError>>>,
}

impl Daemon {
    /// Start splitdns with `body` (top-level keys first, then tables). `listen` and
    /// `[events] output` are supplied by the harness.
    pub async fn start(body: &str) -> Daemon {
        let dir = TempDir::new("inproc");
        Daemon::start_in(dir, body).await
    }

    /// Like [`Daemon::start`], in a directory the test already prepared (servers files).
    pub async fn start_in(dir: TempDir, body: &str) -> Daemon {
        let events_path = dir.join("events.jsonl");
        let text = format!(
            "listen = [\"127.0.0.1:0\"]\n{body}\n[events]\noutput = {}\n",
            toml_str(&events_path.to_string_lossy())
        );
        let config_path = dir.write("splitdns.toml", &text);
        let config = Config::from_toml_str(&text, &config_path)
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n{text}"));
        let sockets = splitdns::app::bind(&config)
            .unwrap_or_else(|e| panic!("app::bind failed: {e}\n{text}"));
        let udp = *sockets.udp_addrs().first().expect("a UDP socket");
        let tcp = *sockets.tcp_addrs().first().expect("a TCP socket");
        assert_eq!(udp.port(), tcp.port(), "TCP must share the UDP port");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(splitdns::app::run(config, sockets, async move {
            let _ = rx.await;
        }));
        Daemon {
            udp,
            tcp,
            events_path,
            _dir: dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Signal shutdown, require `run` to return `Ok` within `limit`, and return the events
    /// file's content at that moment (before the temp directory is removed).
    pub async fn stop_within(mut self, limit: Duration) -> Vec<Event> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("daemon task");
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("app::run returned an error: {e}"),
            Ok(Err(e)) => panic!("app::run panicked: {e}"),
            Err(_) => panic!("app::run did not return within {limit:?} of shutdown"),
        }
        events::read(&self.events_path)
    }

    /// Wait (bounded) until the events file holds at least `n` lines and return them all,
    /// each parsed against the schema.
    pub async fn events(&self, n: usize) -> Vec<Event> {
        events::wait_for(&self.events_path, n, Duration::from_secs(5)).await
    }

    /// Wait until the event for the query with client ID `id` appears; return it. (Events
    /// of back-to-back queries may be written out of order: each receive thread emits its
    /// own after replying.)
    pub async fn event_with_id(&self, id: u16) -> Event {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(e) = events::read(&self.events_path)
                .into_iter()
                .find(|e| e.id == Some(id))
            {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "no event with id {id} within 5s; file has:\n{}",
                    std::fs::read_to_string(&self.events_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until an event for `qname` (compared case-insensitively, trailing dot ignored)
    /// appears; return it.
    pub async fn event_for(&self, qname: &str) -> Event {
        let want = qname.trim_end_matches('.').to_ascii_lowercase();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let all = events::read(&self.events_path);
            if let Some(e) = all.into_iter().find(|e| e.qname_matches(&want)) {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "no event for {qname} within 5s; file has:\n{}",
                    std::fs::read_to_string(&self.events_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Run an async test body on a fresh multi-threaded runtime, failing it after `limit`.
pub fn bounded<F: std::future::Future<Output = ()>>(limit: Duration, body: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build runtime");
    rt.block_on(async {
        if tokio::time::timeout(limit, body).await.is_err() {
            panic!("test did not finish within {limit:?}");
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
}
