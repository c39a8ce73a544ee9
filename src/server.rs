//! The UDP front end: one receive loop per socket, each on its own thread's
//! current-thread runtime (`SO_REUSEPORT` spreads clients over them). A busy socket is
//! read a batch of datagrams per system call (`recvmmsg`); cache hits are answered inside
//! the loop from wire bytes (no task, no channel), a batch's answers sent together
//! (`sendmmsg`), and everything else is spawned to `forward::resolve` under a bound. TCP
//! is `tcp`'s.
//!
//! Every packet yields exactly one event, on every path.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::Lookup;
use crate::config::Limits;
use crate::event::{CacheStatus, Proto, QueryEvent};
use crate::forward;
use crate::state::Shared;
use crate::upstream::{Batch, Outbox};
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
    let answers = Arc::new(Answers::default());
    let sender = tokio::spawn(send_answers(
        sock.clone(),
        answers.clone(),
        shared.clone(),
        cancel.clone(),
    ));
    let mut front = Front {
        inflight: Arc::new(Semaphore::new(limits.max_inflight)),
        answers,
        sock,
        shared,
        tracker,
        key: Vec::with_capacity(300),
        out: Vec::with_capacity(1500),
        outbox: Outbox::default(),
        answered: Vec::new(),
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
                front.handle(pkt, src, received);
            }
        }
        front.send_answers(received).await;
        run += n.max(1);
    }
    // The sender has been told too (`cancel`); it sends what is queued and stops, and the
    // tasks still running send their own answers.
    let _ = sender.await;
}

/// One socket's front end: what handling a datagram needs.
struct Front {
    sock: Arc<UdpSocket>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    /// Queries handed to the slow path and not yet answered, bounded.
    inflight: Arc<Semaphore>,
    /// Where the slow path's answers wait for the socket's sender.
    answers: Arc<Answers>,
    /// Scratch: the cache key, the reply.
    key: Vec<u8>,
    out: Vec<u8>,
    /// The batch's cache answers, sent together once the batch is read, and their events,
    /// emitted once each send's outcome is known.
    outbox: Outbox,
    answered: Vec<QueryEvent>,
}

impl Front {
    /// Sends the answers queued by [`Front::handle`] and emits their events.
    async fn send_answers(&mut self, received: Instant) {
        if self.outbox.is_empty() {
            return;
        }
        let answered = &mut self.answered;
        self.outbox
            .flush(&self.sock, |i, r| {
                if let (Err(_), Some(ev)) = (r, answered.get_mut(i)) {
                    ev.error = Some("send failed");
                }
            })
            .await;
        let duration = received.elapsed();
        for ev in &mut self.answered {
            ev.duration = duration;
        }
        self.shared.events.emit_all(&mut self.answered);
    }

    /// Answers `pkt` from the cache (queued in the outbox), or hands it to the slow path
    /// (a task), or, over the in-flight bound, answers SERVFAIL or drops it.
    fn handle(&mut self, pkt: &[u8], src: SocketAddr, received: Instant) {
        let Front {
            sock,
            shared,
            tracker,
            inflight,
            answers,
            key,
            out,
            outbox,
            answered,
        } = self;
        let fast = match try_fast_hit(shared, pkt, src, received, key, out) {
            Ok(ev) => {
                outbox.push(out, src);
                answered.push(ev);
                return;
            }
            Err(fast) => fast,
        };
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
        let (sock, shared, answers) = (sock.clone(), shared.clone(), answers.clone());
        // Boxed: the resolve future is several KB, and an unboxed one is copied a few
        // times on its way into the task (and needs an aligned allocation).
        tracker.spawn(Box::pin(async move {
            let mut ev = QueryEvent::new(SystemTime::now(), src, Proto::Udp);
            let (pkt, key) = data.split_at(pkt_len);
            let known = missed.then_some(forward::Missed { key });
            let reply = forward::resolve(&shared, pkt, Proto::Udp, received, known, &mut ev).await;
            let Some(r) = reply else {
                ev.duration = received.elapsed();
                shared.events.emit(ev);
                return;
            };
            // Queued for the socket's sender (with the permit: the bound covers answers
            // not yet sent), or, once the sender has stopped, sent from here.
            let Some((mut ev, _permit)) = answers.queue(&r, src, ev, received, permit) else {
                return;
            };
            if send_to(&sock, &r, src).await.is_err() {
                ev.error = Some("send failed");
            }
            ev.duration = received.elapsed();
            shared.events.emit(ev);
        }));
    }
}

/// The slow path's answers for one socket. The tasks that finish in one turn of the
/// thread queue theirs here, and the socket's sender ([`send_answers`]), woken by the
/// first, runs after them and sends them all together. Holds at most `max_inflight`
/// answers: each keeps its query's permit until it is sent.
#[derive(Default)]
struct Answers {
    queue: Mutex<Queued>,
    ready: Notify,
}

#[derive(Default)]
struct Queued {
    outbox: Outbox,
    /// Each answer's event, and when its query arrived and its permit.
    events: Vec<QueryEvent>,
    held: Vec<(Instant, OwnedSemaphorePermit)>,
    /// The sender has stopped: tasks send their own answers.
    closed: bool,
}

impl Answers {
    fn lock(&self) -> MutexGuard<'_, Queued> {
        // Plain data: a panic elsewhere mid-push leaves it usable.
        match self.queue.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Queues `reply` for `dst`; gives the event and permit back if the sender has stopped
    /// (the caller then sends it).
    fn queue(
        &self,
        reply: &[u8],
        dst: SocketAddr,
        ev: QueryEvent,
        received: Instant,
        permit: OwnedSemaphorePermit,
    ) -> Option<(QueryEvent, OwnedSemaphorePermit)> {
        let first = {
            let mut q = self.lock();
            if q.closed {
                return Some((ev, permit));
            }
            q.outbox.push(reply, dst);
            q.events.push(ev);
            q.held.push((received, permit));
            q.events.len() == 1
        };
        if first {
            self.ready.notify_one();
        }
        None
    }
}

/// One socket's sender: sends the slow path's queued answers, a turn's worth per wake-up,
/// and emits their events. On `cancel` it sends what is queued and stops.
async fn send_answers(
    sock: Arc<UdpSocket>,
    answers: Arc<Answers>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let mut outbox = Outbox::default();
    let mut events = Vec::new();
    let mut held = Vec::new();
    loop {
        let stop = tokio::select! {
            biased;
            () = answers.ready.notified() => false,
            () = cancel.cancelled() => true,
        };
        {
            let mut q = answers.lock();
            std::mem::swap(&mut q.outbox, &mut outbox);
            std::mem::swap(&mut q.events, &mut events);
            std::mem::swap(&mut q.held, &mut held);
            q.closed = stop;
        }
        outbox
            .flush(&sock, |i, r| {
                if let (Err(_), Some(ev)) = (r, events.get_mut(i)) {
                    ev.error = Some("send failed");
                }
            })
            .await;
        let now = Instant::now();
        for (ev, (received, _)) in events.iter_mut().zip(&held) {
            ev.duration = now.saturating_duration_since(*received);
        }
        shared.events.emit_all(&mut events);
        // The permits go back once the answers are out.
        held.clear();
        if stop {
            break;
        }
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

/// Why the fast path did not answer a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fast {
    /// A well-formed query from an allowed client that is not cached: `key` holds its
    /// cache key.
    Missed,
    /// Anything else (malformed, not allowed, stale, too big for the client): the slow
    /// path decides.
    Other,
}

/// The hot path: a well-formed query from an allowed client whose answer is cached and
/// fits the client's UDP size gets its answer in `out` and its event (to be emitted once
/// the answer is sent).
fn try_fast_hit(
    shared: &Shared,
    pkt: &[u8],
    src: SocketAddr,
    received: Instant,
    key: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<QueryEvent, Fast> {
    let Ok(q) = wire::parse_query(pkt) else {
        return Err(Fast::Other);
    };
    let generation = {
        let snap = shared.snapshot.load();
        if !snap.allowed(src.ip()) {
            return Err(Fast::Other);
        }
        snap.generation
    };
    wire::cache_key(&q, key);
    let entry = match shared.cache.get(key, q.question, received, false, out) {
        Lookup::Hit(entry) => entry,
        Lookup::Miss => return Err(Fast::Missed),
        Lookup::Stale(_) => return Err(Fast::Other),
    };
    if out.len() > q.udp_limit() {
        return Err(Fast::Other);
    }
    wire::set_id(out, q.id);
    let mut ev = QueryEvent::new(SystemTime::now(), src, Proto::Udp);
    ev.set_query(&q);
    ev.generation = Some(generation);
    ev.cache_entry = Some((entry.ttl, entry.age));
    ev.zone = Some(entry.zone);
    ev.cache = CacheStatus::Hit;
    crate::dnssec::record_hit(&mut ev, entry.tag, out);
    ev.set_reply(out);
    Ok(ev)
}
