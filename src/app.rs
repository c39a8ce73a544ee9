//! Wiring, in two steps. `bind` binds every socket (so a caller can read the real ports
//! after asking for port 0); `run` builds the shared state, starts the UDP receive
//! threads, the TCP accept loops, the reload watcher and the event writer, waits for the
//! shutdown future, then drains in-flight queries and returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::Cache;
use crate::config::Config;
use crate::event::EventSink;
use crate::reload;
use crate::server;
use crate::state::{ServersFiles, Shared, Snapshot};
use crate::tcp;
use crate::upstream::{Loops, Registry};

/// How long shutdown waits for in-flight queries.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Startup errors.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A socket could not be bound.
    #[error("cannot bind {proto} {addr}: {source}")]
    Bind {
        /// `udp` or `tcp`.
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The event output could not be opened, or a thread not started.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The bound sockets: per listen address, one UDP socket per receive thread (all on the
/// same port via `SO_REUSEPORT`) and one TCP listener on that port too.
#[derive(Debug)]
pub struct Sockets {
    /// `udp[t]` holds thread t's sockets, one per listen address.
    udp: Vec<Vec<std::net::UdpSocket>>,
    tcp: Vec<std::net::TcpListener>,
    addrs: Vec<SocketAddr>,
}

impl Sockets {
    /// The bound UDP addresses (one per listen address, real ports).
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// The bound TCP addresses.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

/// Receive threads: one per CPU this process may run on (`available_parallelism` honours
/// `taskset` and cgroup quotas), at most 8.
pub fn thread_count() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
}

/// One UDP listening socket of a receive thread. The `first` one of an address binds
/// without `SO_REUSEPORT` and sets it only once bound, so its port is one no other socket
/// holds: Linux lets a `SO_REUSEPORT` socket binding port 0 (or a busy fixed port) join
/// any group of the same user on that port, which would silently split the queries
/// between two processes (another splitdns, an old one still draining). The others then
/// join the first one's group.
fn udp_socket(addr: SocketAddr, first: bool) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if !first {
        s.set_reuse_port(true)?;
    }
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    if first {
        s.set_reuse_port(true)?;
    }
    Ok(s.into())
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Binds UDP and TCP on every listen address. With port 0, UDP picks a free port and TCP
/// binds the same one (retrying with a new port if TCP's is taken).
///
/// # Errors
/// `AppError::Bind` naming the protocol and address.
pub fn bind(config: &Config) -> Result<Sockets, AppError> {
    let threads = thread_count();
    let mut udp: Vec<Vec<std::net::UdpSocket>> = (0..threads).map(|_| Vec::new()).collect();
    let mut tcp = Vec::new();
    let mut addrs = Vec::new();
    for &want in &config.listen {
        let mut tries = 0;
        let (first, listener, real) = loop {
            tries += 1;
            let first = udp_socket(want, true).map_err(|source| AppError::Bind {
                proto: "udp",
                addr: want,
                source,
            })?;
            let real = first.local_addr().map_err(|source| AppError::Bind {
                proto: "udp",
                addr: want,
                source,
            })?;
            match tcp_listener(real) {
                Ok(l) => break (first, l, real),
                Err(e) if want.port() == 0 && tries < 20 => {
                    tracing::debug!(error = %e, "tcp port taken; trying another");
                }
                Err(source) => {
                    return Err(AppError::Bind {
                        proto: "tcp",
                        addr: real,
                        source,
                    })
                }
            }
        };
        let mut socks = vec![first];
        for _ in 1..threads {
            socks.push(udp_socket(real, false).map_err(|source| AppError::Bind {
                proto: "udp",
                addr: real,
                source,
            })?);
        }
        for (t, s) in socks.into_iter().enumerate() {
            if let Some(v) = udp.get_mut(t) {
                v.push(s);
            }
        }
        tcp.push(listener);
        addrs.push(real);
    }
    Ok(Sockets { udp, tcp, addrs })
}

/// Runs the resolver on bound sockets until `shutdown` completes, then stops accepting,
/// waits (up to `DRAIN_TIMEOUT`) for in-flight queries, flushes events and returns.
///
/// # Errors
/// If the event output cannot be opened or a thread cannot be started.
pub async fn run(
    config: Config,
    sockets: Sockets,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let started = crate::ops::Started::now();
    let Sockets { udp, tcp, addrs } = sockets;
    let (events, writer) = EventSink::start(&config.events).map_err(|source| AppError::Io {
        what: format!("cannot open events output {:?}", config.events),
        source,
    })?;
    let files = reload::read_servers_files(&config);
    let config = Arc::new(config);
    let upstreams = Registry::default();
    let (mut snapshot, warnings) =
        Snapshot::build(config.clone(), &files.servers(), &addrs, 1, &upstreams);
    let servers_files = ServersFiles::default();
    files.observe(&servers_files);
    servers_files.stamp(&mut snapshot);
    for w in warnings {
        tracing::warn!("{w}");
    }
    for z in &snapshot.zones {
        let servers: Vec<String> = z.servers.iter().map(ToString::to_string).collect();
        tracing::info!(zone = %z.name, servers = ?servers, "zone ready");
    }
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(snapshot),
        cache: Cache::with_budget(
            config.cache.max_entries,
            config.cache.max_bytes,
            config.cache.serve_stale,
        ),
        upstreams,
        servers_files,
        loops: Loops::default(),
        inflight: crate::upstream::Inflight::new(crate::upstream::MAX_FOLLOWERS),
        events: events.clone(),
        listen: addrs.clone(),
    });
    let cancel = CancellationToken::new();
    // The control socket and metrics listener first: if one cannot be set up, nothing has
    // been started yet.
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let ops = Arc::new(crate::ops::Ops::new(shared.clone(), reload_tx, started));
    let ops_tasks = crate::ops::start(&config, ops, &cancel).map_err(|e| AppError::Io {
        what: e.what,
        source: e.source,
    })?;

    let mut threads = Vec::new();
    for (t, socks) in udp.into_iter().enumerate() {
        let (shared, cancel, limits) = (shared.clone(), cancel.clone(), config.limits.clone());
        let handle = std::thread::Builder::new()
            .name(format!("splitdns-udp-{t}"))
            .spawn(move || {
                // This thread's queries use its own lane of shared upstream sockets.
                crate::upstream::set_lane(t);
                udp_thread(socks, shared, limits, cancel)
            })
            .map_err(|source| AppError::Io {
                what: "cannot start a receive thread".into(),
                source,
            })?;
        threads.push(handle);
    }
    let tracker = TaskTracker::new();
    for l in tcp {
        let listener = tokio::net::TcpListener::from_std(l).map_err(|source| AppError::Io {
            what: "cannot register a tcp listener".into(),
            source,
        })?;
        tracker.spawn(tcp::accept_loop(
            listener,
            shared.clone(),
            config.limits.clone(),
            tracker.clone(),
            cancel.clone(),
        ));
    }
    // SIGHUP's default action is to terminate: take it over before announcing the sockets.
    let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by restart only");
            None
        }
    };
    for a in &addrs {
        tracing::info!("listening on udp {a}");
        tracing::info!("listening on tcp {a}");
    }
    sd_notify("READY=1");
    let reload_task = tokio::spawn(reload::watch(
        shared.clone(),
        config.clone(),
        files,
        cancel.clone(),
        hup,
        reload_rx,
    ));

    shutdown.await;
    sd_notify("STOPPING=1");
    tracing::info!("shutting down: finishing in-flight queries");
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("tcp queries still in flight after {DRAIN_TIMEOUT:?}; exiting anyway");
    }
    let _ = reload_task.await;
    for t in ops_tasks {
        let _ = t.await;
    }
    let joined = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    });
    let _ = tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(1), joined).await;
    tracing::info!(
        entries = shared.cache.len(),
        bytes = shared.cache.bytes(),
        max_bytes = config.cache.max_bytes,
        "cache at shutdown"
    );
    let dropped = events.dropped();
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "events were dropped because the writer fell behind"
        );
    }
    drop(shared);
    let _ = tokio::task::spawn_blocking(move || writer.stop()).await;
    tracing::info!("stopped");
    Ok(())
}

/// One receive thread: a current-thread runtime serving this thread's sockets; on cancel
/// it stops receiving and waits for its in-flight queries.
fn udp_thread(
    socks: Vec<std::net::UdpSocket>,
    shared: Arc<Shared>,
    limits: crate::config::Limits,
    cancel: CancellationToken,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot build a receive runtime");
            return;
        }
    };
    rt.block_on(async move {
        let tracker = TaskTracker::new();
        let mut loops = Vec::new();
        for s in socks {
            match tokio::net::UdpSocket::from_std(s) {
                Ok(sock) => loops.push(tokio::spawn(server::udp_loop(
                    Arc::new(sock),
                    shared.clone(),
                    limits.clone(),
                    tracker.clone(),
                    cancel.clone(),
                ))),
                Err(e) => tracing::error!(error = %e, "cannot register a udp socket"),
            }
        }
        for l in loops {
            let _ = l.await;
        }
        tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("udp queries still in flight after {DRAIN_TIMEOUT:?}; exiting anyway");
        }
    });
}

/// Tells systemd (`Type=notify`) about our state if it gave us a `NOTIFY_SOCKET`: READY=1
/// once every socket is bound and served, STOPPING=1 when draining. A path or an abstract
/// (`@`) socket; errors are logged and otherwise ignored.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let send = || -> std::io::Result<()> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    };
    if let Err(e) = send() {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}
