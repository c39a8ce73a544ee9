//! The UDP front end: one receive loop per socket, each on its own thread's
//! current-thread runtime (`SO_REUSEPORT` spreads clients over them); cache hits are
//! answered inside the loop from wire bytes (no task, no channel, no allocation), and
//! everything else is spawned to `forward::resolve` under a bound. TCP is `tcp`'s.
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
use crate::wire::{self, rcode};

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
            continue;
        };
        let pkt = pkt.to_vec();
        let (sock, shared) = (sock.clone(), shared.clone());
        // Boxed: the resolve future is several KB, and an unboxed one is copied a few
        // times on its way into the task (and needs an aligned allocation).
        tracker.spawn(Box::pin(async move {
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
        }));
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
    let generation = {
        let snap = shared.snapshot.load();
        if !snap.allowed(src.ip()) {
            return false;
        }
        snap.generation
    };
    wire::cache_key(&q, key);
    let Lookup::Hit(entry) = shared.cache.get(key, q.question, received, false, out) else {
        return false;
    };
    if out.len() > q.udp_limit() {
        return false;
    }
    wire::set_id(out, q.id);
    let sent = sock.send_to(out, src).await;
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
    true
}
