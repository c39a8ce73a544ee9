//! The TCP front end (RFC 7766): the accept loop, one task per connection reading
//! length-prefixed queries, pipelined queries resolved concurrently on the shared
//! `forward` core, and one writer per connection.
//!
//! Every resource a client can hold is bounded, so no client can hold the door shut:
//! - connections: `limits.tcp_max_connections`; at the cap the connection that is
//!   *slowest* is shed to admit the newcomer ([`ConnTable::shed_one`]: replies it does not
//!   read first, then a message it sends too slowly, then idle time), and its slot goes to
//!   the newcomer at once: the accept loop never waits;
//! - per connection: at most `limits.tcp_max_pipelined` queries in flight *or* waiting to
//!   be written, and no new query is read while the replies waiting plus those expected
//!   (each in-flight query counted at the largest reply this connection has had) reach
//!   [`MAX_QUEUED_BYTES`];
//! - time: an idle connection closes after `limits.tcp_idle_timeout`, a message must
//!   arrive whole within [`TCP_READ_TIMEOUT`] of its first byte, and a reply must be
//!   written within [`TCP_WRITE_TIMEOUT`] or the connection is dropped.
//!
//! It owns sockets and the connection table; DNS itself (parsing, routing, the cache)
//! belongs to `forward`. Every message read yields exactly one event.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::diag::{Throttle, WARN_INTERVAL};
use crate::event::{Proto, QueryEvent};
use crate::forward;
use crate::state::Shared;
use crate::wire;

/// Time allowed to receive the rest of a message once its first byte arrived.
pub const TCP_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed to write one reply; a client that does not read for this long is dropped.
pub const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Reply bytes a connection may have waiting to be written before no further query of
/// it is read.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024;
/// The kernel send buffer of a client connection (the kernel doubles it): room for a
/// maximum-size reply and then some.
const SEND_BUFFER: usize = 96 * 1024;

static ACCEPT_FAILED: Throttle = Throttle::new(WARN_INTERVAL);
static CAP_REACHED: Throttle = Throttle::new(WARN_INTERVAL);

/// What a connection is doing, as the shedding policy sees it. Times are milliseconds
/// since the table's epoch plus one (0 = not in that state).
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Last time a whole message was read or a reply written (or the accept).
    last_activity: AtomicU64,
    /// Since when a message has been partly read.
    reading_since: AtomicU64,
    /// Since when a reply has been waiting to be written.
    writing_since: AtomicU64,
    /// Queries being resolved.
    inflight: AtomicU32,
}

/// A point-in-time view of [`ConnStats`], for the pure policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnView {
    /// Last activity (ms + 1).
    pub last_activity: u64,
    /// Partial message since (ms + 1), 0 if none.
    pub reading_since: u64,
    /// Unwritten reply since (ms + 1), 0 if none.
    pub writing_since: u64,
    /// Queries being resolved.
    pub inflight: u32,
}

impl ConnStats {
    fn view(&self) -> ConnView {
        ConnView {
            last_activity: self.last_activity.load(Ordering::Relaxed),
            reading_since: self.reading_since.load(Ordering::Relaxed),
            writing_since: self.writing_since.load(Ordering::Relaxed),
            inflight: self.inflight.load(Ordering::Relaxed),
        }
    }
}

/// How much a connection deserves to be shed at `now` (higher goes first). A client that
/// does not read its replies weighs four times its stall, one that sends a message too
/// slowly twice, idle time once; a connection whose queries are being resolved (and
/// whose replies are taken) is doing nothing wrong and goes last, by an eighth of the
/// time since it last made progress.
pub fn shed_score(c: &ConnView, now: u64) -> u64 {
    let age = |since: u64| now.saturating_sub(since);
    if c.writing_since != 0 {
        4 * age(c.writing_since) + 3
    } else if c.reading_since != 0 {
        2 * age(c.reading_since) + 2
    } else if c.inflight == 0 {
        age(c.last_activity) + 1
    } else {
        age(c.last_activity) / 8
    }
}

/// One open connection: its progress, the token that sheds it, and its connection slot.
#[derive(Debug)]
struct Entry {
    stats: Arc<ConnStats>,
    shed: CancellationToken,
    slot: OwnedSemaphorePermit,
}

/// The open connections, so the slowest can be found and shed. Each entry holds its
/// connection's slot: shedding hands the slot to the newcomer at once, whatever the shed
/// connection's task is still doing.
#[derive(Debug)]
pub struct ConnTable {
    epoch: Instant,
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Entry>>,
}

impl Default for ConnTable {
    fn default() -> Self {
        ConnTable {
            epoch: Instant::now(),
            next: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        }
    }
}

impl ConnTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        match self.conns.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Milliseconds since the epoch, plus one (so 0 can mean "not set").
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn insert(&self, slot: OwnedSemaphorePermit) -> (u64, Arc<ConnStats>, CancellationToken) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::new(ConnStats::default());
        stats.last_activity.store(self.now(), Ordering::Relaxed);
        let shed = CancellationToken::new();
        let entry = Entry {
            stats: stats.clone(),
            shed: shed.clone(),
            slot,
        };
        self.lock().insert(id, entry);
        (id, stats, shed)
    }

    /// Takes a connection out (its slot is freed), if it is still in.
    fn remove(&self, id: u64) {
        let entry = self.lock().remove(&id);
        drop(entry);
    }

    /// Sheds the connection with the highest [`shed_score`]: takes it out of the table,
    /// cancels it and returns its slot. `None` if the table is empty.
    pub fn shed_one(&self) -> Option<OwnedSemaphorePermit> {
        let now = self.now();
        let mut conns = self.lock();
        let (_, id) = conns
            .iter()
            .map(|(id, e)| (shed_score(&e.stats.view(), now), *id))
            .max()?;
        let victim = conns.remove(&id)?;
        victim.shed.cancel();
        Some(victim.slot)
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True if none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Accepts TCP clients until `cancel`, at most `limits.tcp_max_connections` at once (see
/// the module doc for what happens at the cap). Never waits on a client.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: Limits,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.tcp_max_connections));
    let table = Arc::new(ConnTable::default());
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, typically: say so once in a while, with a
                    // count, rather than every 50 ms.
                    if let Some(suppressed) = ACCEPT_FAILED.allow(Instant::now()) {
                        tracing::warn!(error = %e, suppressed, "tcp accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => match table.shed_one() {
                Some(slot) => slot,
                None => {
                    // Every slot is taken by a connection not registered yet: rare and
                    // brief.
                    if let Some(suppressed) = CAP_REACHED.allow(Instant::now()) {
                        tracing::warn!(
                            max = limits.tcp_max_connections,
                            suppressed,
                            "tcp connection limit reached and no connection to shed; closing new connections"
                        );
                    }
                    drop(stream);
                    continue;
                }
            },
        };
        let conn = Conn {
            shared: shared.clone(),
            limits: limits.clone(),
            tracker: tracker.clone(),
            cancel: cancel.clone(),
            table: table.clone(),
        };
        tracker.spawn(conn.serve(stream, peer, slot));
    }
}

/// What a connection task needs from the server.
struct Conn {
    shared: Arc<Shared>,
    limits: Limits,
    tracker: TaskTracker,
    /// Server shutdown: stop reading, finish and write what is in flight.
    cancel: CancellationToken,
    table: Arc<ConnTable>,
}

/// A reply waiting to be written, with the pipeline slot it keeps taken until then.
struct Queued {
    reply: Vec<u8>,
    _slot: OwnedSemaphorePermit,
}

/// Removes the connection from the table however its task ends.
struct Registered {
    table: Arc<ConnTable>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.table.remove(self.id);
    }
}

/// The writer's side of a connection, shared with its query tasks.
struct Outbox {
    stats: Arc<ConnStats>,
    table: Arc<ConnTable>,
    /// Reply bytes queued and not yet written.
    queued: AtomicUsize,
    /// What an in-flight query may add: the largest reply seen lately on this
    /// connection (64 KiB until the first one).
    largest: AtomicUsize,
    /// Poked whenever a reply has been written.
    drained: Notify,
}

impl Outbox {
    /// True when the replies waiting, plus what the queries in flight may add, reach
    /// [`MAX_QUEUED_BYTES`] (one query at a time is always allowed).
    fn over_budget(&self) -> bool {
        let queued = self.queued.load(Ordering::Relaxed);
        let inflight = self.stats.inflight.load(Ordering::Relaxed) as usize;
        let expected = inflight.saturating_mul(self.largest.load(Ordering::Relaxed));
        (queued > 0 || inflight > 0) && queued.saturating_add(expected) >= MAX_QUEUED_BYTES
    }
}

impl Conn {
    async fn serve(self, stream: TcpStream, peer: SocketAddr, slot: OwnedSemaphorePermit) {
        let (id, stats, shed) = self.table.insert(slot);
        let _registered = Registered {
            table: self.table.clone(),
            id,
        };
        let _ = stream.set_nodelay(true);
        // A fixed send buffer (no autotuning to megabytes): what a client that does not
        // read pins in the kernel stays small too.
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel::<Queued>(self.limits.tcp_max_pipelined);
        let outbox = Arc::new(Outbox {
            stats: stats.clone(),
            table: self.table.clone(),
            queued: AtomicUsize::new(0),
            // Until a connection has had a reply, assume the largest possible: a client
            // that never reads cannot get 16 large answers made on its first burst.
            largest: AtomicUsize::new(usize::from(u16::MAX)),
            drained: Notify::new(),
        });
        let writer = tokio::spawn(write_loop(wr, rx, outbox.clone(), shed.clone()));
        self.read_loop(rd, peer, &tx, &outbox, &shed).await;
        drop(tx);
        // In-flight queries hold senders; the writer ends once their replies are written
        // (each within TCP_WRITE_TIMEOUT) or at once when the connection is shed.
        let _ = writer.await;
    }

    async fn read_loop(
        &self,
        rd: OwnedReadHalf,
        peer: SocketAddr,
        tx: &mpsc::Sender<Queued>,
        outbox: &Arc<Outbox>,
        shed: &CancellationToken,
    ) {
        let mut rd = BufReader::with_capacity(1024, rd);
        let pipeline = Arc::new(Semaphore::new(self.limits.tcp_max_pipelined));
        let stats = &outbox.stats;
        loop {
            // Backpressure: a client that does not take its replies sends no more queries.
            while outbox.over_budget() {
                tokio::select! {
                    _ = shed.cancelled() => return,
                    _ = self.cancel.cancelled() => return,
                    _ = outbox.drained.notified() => {}
                }
            }
            let first = tokio::select! {
                biased;
                _ = shed.cancelled() => return,
                _ = self.cancel.cancelled() => return,
                r = tokio::time::timeout(self.limits.tcp_idle_timeout, rd.read_u8()) => match r {
                    Ok(Ok(b)) => b,
                    _ => return,
                },
            };
            let received = Instant::now();
            stats
                .reading_since
                .store(self.table.now(), Ordering::Relaxed);
            let rest = async {
                let second = rd.read_u8().await?;
                let mut pkt = vec![0u8; usize::from(u16::from_be_bytes([first, second]))];
                rd.read_exact(&mut pkt).await?;
                Ok::<_, std::io::Error>(pkt)
            };
            let pkt = tokio::select! {
                _ = shed.cancelled() => return,
                r = tokio::time::timeout(TCP_READ_TIMEOUT, rest) => r,
            };
            stats.reading_since.store(0, Ordering::Relaxed);
            stats
                .last_activity
                .store(self.table.now(), Ordering::Relaxed);
            let pkt = match pkt {
                Ok(Ok(p)) if p.len() >= wire::HEADER_LEN => p,
                other => {
                    let mut ev = QueryEvent::new(SystemTime::now(), peer, Proto::Tcp);
                    ev.error = Some(if matches!(other, Ok(Ok(_))) {
                        "malformed: short"
                    } else {
                        "tcp read stalled or closed"
                    });
                    ev.duration = received.elapsed();
                    self.shared.events.emit(ev);
                    return;
                }
            };
            let slot = tokio::select! {
                _ = shed.cancelled() => return,
                p = pipeline.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            stats.inflight.fetch_add(1, Ordering::Relaxed);
            self.tracker.spawn(query(
                self.shared.clone(),
                pkt,
                peer,
                received,
                slot,
                tx.clone(),
                outbox.clone(),
                shed.clone(),
            ));
        }
    }
}

/// Resolves one query and queues its reply; emits its event.
#[allow(clippy::too_many_arguments)]
async fn query(
    shared: Arc<Shared>,
    pkt: Vec<u8>,
    peer: SocketAddr,
    received: Instant,
    slot: OwnedSemaphorePermit,
    tx: mpsc::Sender<Queued>,
    outbox: Arc<Outbox>,
    shed: CancellationToken,
) {
    let mut ev = QueryEvent::new(SystemTime::now(), peer, Proto::Tcp);
    let reply = tokio::select! {
        _ = shed.cancelled() => {
            ev.error = Some("tcp connection shed");
            None
        }
        r = forward::resolve(&shared, &pkt, Proto::Tcp, received, None, &mut ev) => r,
    };
    if let Some(reply) = &reply {
        // The first reply replaces the 64 KiB guess; later ones can only raise it.
        let _ = outbox
            .largest
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                Some(if l == usize::from(u16::MAX) {
                    reply.len()
                } else {
                    l.max(reply.len())
                })
            });
        outbox.queued.fetch_add(reply.len(), Ordering::Relaxed);
    }
    outbox.stats.inflight.fetch_sub(1, Ordering::Relaxed);
    if let Some(reply) = reply {
        let len = reply.len();
        let _ = outbox.stats.writing_since.compare_exchange(
            0,
            outbox.table.now(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        // The pipeline slot travels with the reply, so the channel (as deep as the
        // pipeline) always has room.
        if tx.try_send(Queued { reply, _slot: slot }).is_err() {
            outbox.queued.fetch_sub(len, Ordering::Relaxed);
            ev.error = Some("send failed");
        }
    }
    // The reader may be waiting for this query's share of the budget.
    outbox.drained.notify_one();
    ev.duration = received.elapsed();
    shared.events.emit(ev);
}

/// Writes queued replies in order, each within [`TCP_WRITE_TIMEOUT`]; a failed or timed
/// out write sheds the connection.
async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Queued>,
    outbox: Arc<Outbox>,
    shed: CancellationToken,
) {
    loop {
        let q = tokio::select! {
            _ = shed.cancelled() => return,
            m = rx.recv() => match m {
                Some(q) => q,
                None => break,
            },
        };
        // A block per reply (not one kept per connection at its largest size).
        let mut framed = Vec::with_capacity(q.reply.len() + 2);
        framed.extend_from_slice(&(q.reply.len() as u16).to_be_bytes());
        framed.extend_from_slice(&q.reply);
        let _ = outbox.stats.writing_since.compare_exchange(
            0,
            outbox.table.now(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let written = tokio::select! {
            _ = shed.cancelled() => return,
            r = tokio::time::timeout(TCP_WRITE_TIMEOUT, wr.write_all(&framed)) => matches!(r, Ok(Ok(()))),
        };
        outbox.queued.fetch_sub(q.reply.len(), Ordering::Relaxed);
        outbox.drained.notify_one();
        drop(q);
        if !written {
            shed.cancel();
            return;
        }
        let now = outbox.table.now();
        outbox.stats.last_activity.store(now, Ordering::Relaxed);
        // The next reply's wait starts now; none waiting, nothing to wait for.
        let next = if outbox.queued.load(Ordering::Relaxed) > 0 {
            now
        } else {
            0
        };
        outbox.stats.writing_since.store(next, Ordering::Relaxed);
    }
    let _ = tokio::time::timeout(TCP_WRITE_TIMEOUT, wr.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(last: u64, reading: u64, writing: u64, inflight: u32) -> ConnView {
        ConnView {
            last_activity: last,
            reading_since: reading,
            writing_since: writing,
            inflight,
        }
    }

    #[test]
    fn the_slowest_goes_first_and_busy_connections_stay() {
        let now = 100_000;
        let s = |c| shed_score(&c, now);
        let busy = view(now - 5, 0, 0, 3);
        let idle = view(now - 9_000, 0, 0, 0);
        let dribbling = view(now - 9_000, now - 3_000, 0, 0);
        let not_reading = view(now - 9_000, 0, now - 2_000, 5);
        let fresh = view(now, 0, 0, 0);
        assert!(
            s(not_reading) > s(dribbling),
            "a reader that stopped goes first"
        );
        assert!(
            s(dribbling) > s(view(now - 5_000, 0, 0, 0)),
            "dribbling counts double"
        );
        assert!(s(idle) > s(fresh), "long idle before just connected");
        assert!(
            s(fresh) > s(busy),
            "being served, reading its replies: last"
        );
        // A reply written a moment ago is not a stall.
        let just_written = view(now - 1, 0, now - 1, 1);
        assert!(s(just_written) < s(idle));
    }

    #[test]
    fn shedding_takes_the_highest_score_out_of_the_table() {
        let t = ConnTable::default();
        let slots = Arc::new(Semaphore::new(3));
        let slot = || slots.clone().try_acquire_owned().unwrap();
        let (_, a, ta) = t.insert(slot());
        let (_, b, tb) = t.insert(slot());
        let (_, c, tc) = t.insert(slot());
        assert_eq!(slots.available_permits(), 0);
        a.inflight.store(1, Ordering::Relaxed); // busy
        b.writing_since.store(1, Ordering::Relaxed); // replies not taken since the start
        c.last_activity.store(t.now(), Ordering::Relaxed);
        let freed = t.shed_one().expect("a victim");
        assert!(tb.is_cancelled() && !ta.is_cancelled() && !tc.is_cancelled());
        drop(freed);
        assert_eq!(
            slots.available_permits(),
            1,
            "the slot is handed over at once"
        );
        assert!(t.shed_one().is_some(), "then the idle one");
        assert!(tc.is_cancelled() && !ta.is_cancelled());
        assert!(t.shed_one().is_some(), "the busy one last");
        assert!(ta.is_cancelled());
        assert!(t.shed_one().is_none());
        assert!(t.is_empty());
    }
}
