//! The UDP front end: one receive loop per socket, each on its own thread's
//! current-thread runtime (`SO_REUSEPORT` spreads clients over them). A busy socket is
//! read a batch of datagrams per system call (`recvmmsg`); cache hits are answered inside
//! the loop from wire bytes (no task, no channel, no allocation), and everything else is
//! spawned to `forward::resolve` under a bound. TCP is `tcp`'s.
//!
//! Every packet yields exactly one event, on every path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::Lookup;
use crate::config::Limits;
use crate::event::{CacheStatus, Proto, QueryEvent};
use crate::forward;
use crate::state::Shared;
use crate::upstream::Batch;
use crate::wire::{self, rcode};

/// Receive buffer: the largest UDP query we accept.
const UDP_RECV: usize = 4096;

/// Datagrams read back to back before the loop yields to the thread's other tasks (tokio's
/// own budget would make a waiting receive yield after 128).
const YIELD_EVERY: usize = 32;

/// Serves one UDP socket until `cancel`. Spawned slow-path tasks go to `tracker`.
pub async fn udp_loop(
    sock: Arc<UdpSocket>,
    shared: Arc<Shared>,
    limits: Limits,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let mut front = Front {
        inflight: Arc::new(Semaphore::new(limits.max_inflight)),
        sock,
        shared,
        tracker,
        key: Vec::with_capacity(300),
        out: Vec::with_capacity(1500),
    };
    let mut batch = Batch::new(UDP_RECV);
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    // Datagrams taken without waiting since the last yield (see below).
    let mut run = 0usize;
    loop {
        // A busy socket never makes this loop wait: let the slow-path tasks and the
        // shared sockets' readers on this thread run now and then, and notice `cancel`.
        if run >= YIELD_EVERY {
            run = 0;
            if cancel.is_cancelled() {
                break;
            }
            tokio::task::yield_now().await;
        }
        // Read what is queued at once (up to a batch per call: no readiness future, no
        // select); wait for readability, or cancellation, only when nothing is.
        let n = match batch.recv(&front.sock) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                run = 0;
                tokio::select! {
                    biased;
                    _ = &mut cancelled => break,
                    r = front.sock.readable() => {
                        if let Err(e) = r {
                            // Only when the runtime is going away.
                            tracing::debug!(error = %e, "udp socket error");
                            break;
                        }
                        continue;
                    }
                }
            }
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems; keep going.
                tracing::debug!(error = %e, "udp receive error");
                run += 1;
                continue;
            }
        };
        let received = Instant::now();
        for i in 0..n {
            if let Some((pkt, src)) = batch.get(i) {
                front.handle(pkt, src, received).await;
            }
        }
        run += n.max(1);
    }
}

/// One socket's front end: what handling a datagram needs.
struct Front {
    sock: Arc<UdpSocket>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    /// Queries handed to the slow path and not yet answered, bounded.
    inflight: Arc<Semaphore>,
    /// Scratch: the cache key, the reply.
    key: Vec<u8>,
    out: Vec<u8>,
}

impl Front {
    /// Answers `pkt` from the cache, or hands it to the slow path (a task), or, over the
    /// in-flight bound, answers SERVFAIL or drops it.
    async fn handle(&mut self, pkt: &[u8], src: SocketAddr, received: Instant) {
        let Front {
            sock,
            shared,
            tracker,
            inflight,
            key,
            out,
        } = self;
        let fast = try_fast_hit(shared, sock, pkt, src, received, key, out).await;
        if fast == Fast::Answered {
            return;
        }
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            // Over the bound: a well-formed query from an allowed client gets SERVFAIL at
            // once (the client fails fast instead of waiting out its 5 s timeout, and we
            // hold no state for it); anything else is dropped.
            let mut ev = QueryEvent::new(SystemTime::now(), src, Proto::Udp);
            ev.error = Some("overload: dropped");
            if let Ok(q) = wire::parse_query(pkt) {
                ev.set_query(&q);
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
            return;
        };
        // The packet, and after it the cache key the fast path computed if its lookup was a
        // plain miss (one allocation; the slow path then neither recomputes the key nor
        // looks it up again).
        let missed = fast == Fast::Missed;
        let mut data = Vec::with_capacity(pkt.len() + if missed { key.len() } else { 0 });
        data.extend_from_slice(pkt);
        if missed {
            data.extend_from_slice(key);
        }
        let pkt_len = pkt.len();
        let (sock, shared) = (sock.clone(), shared.clone());
        // Boxed: the resolve future is several KB, and an unboxed one is copied a few
        // times on its way into the task (and needs an aligned allocation).
        tracker.spawn(Box::pin(async move {
            let _permit = permit;
            let mut ev = QueryEvent::new(SystemTime::now(), src, Proto::Udp);
            let (pkt, key) = data.split_at(pkt_len);
            let known = missed.then_some(forward::Missed { key });
            let reply = forward::resolve(&shared, pkt, Proto::Udp, received, known, &mut ev).await;
            if let Some(r) = reply {
                if send_to(&sock, &r, src).await.is_err() {
                    ev.error = Some("send failed");
                }
            }
            ev.duration = received.elapsed();
            shared.events.emit(ev);
        }));
    }
}

/// Sends a reply: at once if the socket has room (it nearly always has: no readiness
/// future, no waker), else when it has.
async fn send_to(sock: &UdpSocket, buf: &[u8], dst: SocketAddr) -> std::io::Result<usize> {
    match sock.try_send_to(buf, dst) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => sock.send_to(buf, dst).await,
        r => r,
    }
}

/// What the fast path did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fast {
    /// Answered from the cache (and its event emitted).
    Answered,
    /// A well-formed query from an allowed client that is not cached: `key` holds its
    /// cache key.
    Missed,
    /// Anything else (malformed, not allowed, stale, too big for the client): the slow
    /// path decides.
    Other,
}

/// The hot path: a well-formed query from an allowed client whose answer is cached and
/// fits the client's UDP size is answered here.
async fn try_fast_hit(
    shared: &Shared,
    sock: &UdpSocket,
    pkt: &[u8],
    src: SocketAddr,
    received: Instant,
    key: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Fast {
    let Ok(q) = wire::parse_query(pkt) else {
        return Fast::Other;
    };
    let generation = {
        let snap = shared.snapshot.load();
        if !snap.allowed(src.ip()) {
            return Fast::Other;
        }
        snap.generation
    };
    wire::cache_key(&q, key);
    let entry = match shared.cache.get(key, q.question, received, false, out) {
        Lookup::Hit(entry) => entry,
        Lookup::Miss => return Fast::Missed,
        Lookup::Stale(_) => return Fast::Other,
    };
    if out.len() > q.udp_limit() {
        return Fast::Other;
    }
    wire::set_id(out, q.id);
    let sent = send_to(sock, out, src).await;
    let mut ev = QueryEvent::new(SystemTime::now(), src, Proto::Udp);
    ev.set_query(&q);
    ev.generation = Some(generation);
    ev.cache_entry = Some((entry.ttl, entry.age));
    ev.zone = Some(entry.zone);
    ev.cache = CacheStatus::Hit;
    crate::dnssec::record_hit(&mut ev, entry.tag, out);
    ev.set_reply(out);
    if sent.is_err() {
        ev.error = Some("send failed");
    }
    ev.duration = received.elapsed();
    shared.events.emit(ev);
    Fast::Answered
}
