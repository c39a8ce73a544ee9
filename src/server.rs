//! The front ends. UDP: one receive loop per socket, each on its own thread's
//! current-thread runtime (`SO_REUSEPORT` spreads clients over them); cache hits are
//! answered inside the loop from wire bytes (no task, no channel, no allocation), and
//! everything else is spawned to `forward::resolve` under a bound. TCP: our own accept
//! loop (bounded connections, idle timeout, stalled-read timeout, pipelined queries
//! handled concurrently up to a bound) sharing the same `forward` core.
//!
//! Every packet yields exactly one event, on every path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::Lookup;
use crate::config::Limits;
use crate::event::{CacheStatus, InlineName, Proto, QueryEvent};
use crate::forward;
use crate::state::Shared;
use crate::wire::{self, rcode};

/// Time allowed to receive the rest of a TCP message once its length arrived.
const TCP_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new TCP connection waits for idle ones to close when at the cap.
const SHED_WAIT: Duration = Duration::from_millis(200);
/// Receive buffer: the largest UDP query we accept.
const UDP_RECV: usize = 4096;

/// Serves one UDP socket until `cancel`. Spawned slow-path tasks go to `tracker`.
pub async fn udp_loop(
    sock: Arc<UdpSocket>,
    shared: Arc<Shared>,
    limits: Limits,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let inflight = Arc::new(Semaphore::new(limits.max_inflight));
    let mut buf = vec![0u8; UDP_RECV];
    let mut key = Vec::with_capacity(300);
    let mut out = Vec::with_capacity(1500);
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let (n, src) = tokio::select! {
            biased;
            _ = &mut cancelled => break,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some systems; keep going.
                    tracing::debug!(error = %e, "udp receive error");
                    continue;
                }
            },
        };
        let received = Instant::now();
        let Some(pkt) = buf.get(..n) else { continue };
        if try_fast_hit(&shared, &sock, pkt, src, received, &mut key, &mut out).await {
            continue;
        }
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            // Over the bound: a well-formed query from an allowed client gets SERVFAIL at
            // once (the client fails fast instead of waiting out its 5 s timeout, and we
            // hold no state for it); anything else is dropped.
            let mut ev = QueryEvent::new(SystemTime::now(), src, Proto::Udp);
            ev.error = Some("overload: dropped");
            if let Ok(q) = wire::parse_query(pkt) {
                ev.qname = Some(InlineName::new(q.qname()));
                ev.qtype = Some(q.qtype);
                ev.id = Some(q.id);
                if shared.snapshot.load().allowed(src.ip()) {
                    let reply = wire::error_reply(
                        q.id,
                        0,
                        q.flags,
                        Some(q.question),
                        q.edns,
                        rcode::SERVFAIL,
                    );
                    ev.error = Some("overload: servfail");
                    ev.set_reply(&reply);
                    if sock.try_send_to(&reply, src).is_err() {
                        ev.error = Some("overload: dropped");
                    }
                }
            }
            ev.duration = received.elapsed();
            shared.events.emit(ev);
            continue;
        };
        let pkt = pkt.to_vec();
        let (sock, shared) = (sock.clone(), shared.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let mut ev = QueryEvent::new(SystemTime::now(), src, Proto::Udp);
            let reply = forward::resolve(&shared, &pkt, Proto::Udp, received, &mut ev).await;
            if let Some(r) = reply {
                if sock.send_to(&r, src).await.is_err() {
                    ev.error = Some("send failed");
                }
            }
            ev.duration = received.elapsed();
            shared.events.emit(ev);
        });
    }
}

/// The hot path: a well-formed query from an allowed client whose answer is cached and
/// fits the client's UDP size is answered here. Returns false to send it the slow way.
async fn try_fast_hit(
    shared: &Shared,
    sock: &UdpSocket,
    pkt: &[u8],
    src: SocketAddr,
    received: Instant,
    key: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> bool {
    let Ok(q) = wire::parse_query(pkt) else {
        return false;
    };
    if !shared.snapshot.load().allowed(src.ip()) {
        return false;
    }
    wire::cache_key(&q, key);
    let Lookup::Hit(zone) = shared.cache.get(key, q.question, received, false, out) else {
        return false;
    };
    if out.len() > q.udp_limit() {
        return false;
    }
    wire::set_id(out, q.id);
    let sent = sock.send_to(out, src).await;
    let mut ev = QueryEvent::new(SystemTime::now(), src, Proto::Udp);
    ev.id = Some(q.id);
    ev.qname = Some(InlineName::new(q.qname()));
    ev.qtype = Some(q.qtype);
    ev.zone = Some(zone);
    ev.cache = CacheStatus::Hit;
    ev.set_reply(out);
    if sent.is_err() {
        ev.error = Some("send failed");
    }
    ev.duration = received.elapsed();
    shared.events.emit(ev);
    true
}

/// Accepts TCP clients until `cancel`, at most `limits.tcp_max_connections` at once.
/// When the cap is reached, connections that are idle (waiting for their next query) are
/// asked to close to admit the newcomer (RFC 7766 §6.2.3 lets a server under pressure close
/// idle connections); if none frees a slot in time, the new connection is closed.
pub async fn tcp_accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: Limits,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let conns = Arc::new(Semaphore::new(limits.tcp_max_connections));
    let shed = Arc::new(Notify::new());
    let mut refused_logged = Instant::now() - Duration::from_secs(60);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match conns.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                shed.notify_waiters();
                match tokio::time::timeout(SHED_WAIT, conns.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        if refused_logged.elapsed() > Duration::from_secs(10) {
                            tracing::warn!(
                                max = limits.tcp_max_connections,
                                "tcp connection limit reached and no idle connection to close; closing new connections"
                            );
                            refused_logged = Instant::now();
                        }
                        drop(stream);
                        continue;
                    }
                }
            }
        };
        let (shared, cancel, limits2, shed2) =
            (shared.clone(), cancel.clone(), limits.clone(), shed.clone());
        let t2 = tracker.clone();
        tracker.spawn(async move {
            let _permit = permit;
            tcp_connection(stream, peer, shared, limits2, t2, cancel, shed2).await;
        });
    }
}

async fn tcp_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    limits: Limits,
    tracker: TaskTracker,
    cancel: CancellationToken,
    shed: Arc<Notify>,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(limits.tcp_max_pipelined);
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let mut framed = Vec::with_capacity(msg.len() + 2);
            framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
            framed.extend_from_slice(&msg);
            if wr.write_all(&framed).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let pipeline = Arc::new(Semaphore::new(limits.tcp_max_pipelined));
    loop {
        let idle = pipeline.available_permits() == limits.tcp_max_pipelined;
        let len = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = shed.notified(), if idle => break,
            r = tokio::time::timeout(limits.tcp_idle_timeout, rd.read_u16()) => match r {
                Ok(Ok(len)) => usize::from(len),
                _ => break,
            },
        };
        let received = Instant::now();
        let mut pkt = vec![0u8; len];
        let body = tokio::time::timeout(TCP_READ_TIMEOUT, rd.read_exact(&mut pkt)).await;
        if !matches!(body, Ok(Ok(_))) || len < wire::HEADER_LEN {
            let mut ev = QueryEvent::new(SystemTime::now(), peer, Proto::Tcp);
            ev.error = Some(if len < wire::HEADER_LEN {
                "malformed: short"
            } else {
                "tcp read stalled or closed"
            });
            ev.duration = received.elapsed();
            shared.events.emit(ev);
            break;
        }
        let Ok(permit) = pipeline.clone().acquire_owned().await else {
            break;
        };
        let (shared, tx) = (shared.clone(), tx.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let mut ev = QueryEvent::new(SystemTime::now(), peer, Proto::Tcp);
            let reply = forward::resolve(&shared, &pkt, Proto::Tcp, received, &mut ev).await;
            if let Some(r) = reply {
                if tx.send(r).await.is_err() {
                    ev.error = Some("send failed");
                }
            }
            ev.duration = received.elapsed();
            shared.events.emit(ev);
        });
    }
    drop(tx);
    // In-flight queries hold senders; the writer ends after their replies are written.
    let _ = writer.await;
}
