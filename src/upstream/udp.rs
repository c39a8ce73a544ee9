//! One exchange over UDP, by one of two socket policies, decided per server when a
//! snapshot is built (see [`SocketPolicy`]):
//!
//! - **fresh**: a new socket per exchange, so the kernel picks a random source port (RFC
//!   5452 §9.2), connected to the server so datagrams from any other address are dropped
//!   by the kernel. For every server an off-path attacker could spoof: a forger must guess
//!   port and ID (32 bits), and the port is open for one round trip only (SAD DNS needs
//!   seconds to find it).
//! - **shared**: long-lived connected sockets to the server, one per receive thread (plus
//!   one for everything else, such as TCP clients), created on first use and kept while
//!   the server is configured. Only for servers whose replies an off-path attacker cannot
//!   forge: loopback, and this host's own addresses (Linux drops packets arriving from
//!   outside with a loopback or local source address). Queries get random IDs unique
//!   among those waiting on the socket ([`super::pending`]); one reader task per socket
//!   matches each reply by ID, then question (the same rule as `super::accept`), and
//!   drops the rest. This saves `socket`,
//!   `bind`, `connect`, two `epoll_ctl` and `close` per query — the bulk of a TTL-0
//!   (Consul) query's cost. The same task sends the queries: those queued in one turn of
//!   the thread go out together (`sendmmsg`), and a copy the kernel refuses fails its
//!   query as a send of its own would have.
//!
//! A socket per receive thread (rather than one for the whole process) means the reply is
//! read on the thread whose query waits for it: waking a task on another thread would cost
//! a cross-thread wake-up per query.

//! Either way a [`Flight`] (one server's turn) may carry several copies of the query (the
//! failover loop retransmits with a new ID each time); the caller matches replies against
//! the IDs it sent.

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use arc_swap::ArcSwapOption;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::answers;
use super::batch::{Batch, Outbox};
use super::pending::{Delivery, Pending, PendingStats, Ticket};
use crate::wire::{self, Reply};

/// Largest reply we read over UDP.
const UDP_BUF: usize = 65_535;
/// Queries waiting on one shared socket at most; more use fresh sockets.
const SHARED_CAPACITY: usize = 4096;
/// Datagrams a reader takes per wake-up before letting other tasks run.
const READ_BATCH: usize = 64;
/// Shared sockets per server: one per receive thread (up to 8) and one for other threads.
const LANES: usize = 9;
/// Receive buffer of a shared socket: room for a burst of replies.
const SHARED_RCVBUF: usize = 1 << 20;

thread_local! {
    /// Which of a server's shared sockets this thread uses.
    static LANE: Cell<usize> = const { Cell::new(LANES - 1) };
}

/// Makes the calling thread use lane `i` (receive thread `i`) of every server's shared
/// sockets. Threads that never call this share the last lane.
pub fn set_lane(i: usize) {
    LANE.with(|l| l.set(i.min(LANES - 2)));
}

/// How queries to one server get their UDP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketPolicy {
    /// A fresh socket (random source port) per query.
    Fresh,
    /// Long-lived connected sockets shared by queries.
    Shared,
}

impl SocketPolicy {
    /// The policy for a server at `addr`: shared only if `sharing` is allowed (the zone's
    /// `shared_sockets`) and the address cannot be spoofed off-path (loopback or one of
    /// `own`, this host's addresses).
    pub fn decide(addr: SocketAddr, own: &[IpAddr], sharing: bool) -> SocketPolicy {
        if sharing && is_local(addr.ip(), own) {
            SocketPolicy::Shared
        } else {
            SocketPolicy::Fresh
        }
    }

    /// How `check`, `route`, `control status` and the docs name it.
    pub fn describe(self) -> &'static str {
        match self {
            SocketPolicy::Fresh => "fresh port per query",
            SocketPolicy::Shared => "shared socket",
        }
    }
}

/// True for addresses whose forged replies the kernel drops when they come from outside:
/// loopback and this host's own addresses.
pub fn is_local(ip: IpAddr, own: &[IpAddr]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    ip.is_loopback() || (!ip.is_unspecified() && own.contains(&ip))
}

/// This host's addresses right now (empty if they cannot be listed).
pub fn own_addresses() -> Vec<IpAddr> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = Vec::new();
    for ifa in list {
        let Some(a) = ifa.address else { continue };
        let ip = if let Some(v4) = a.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = a.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// The wildcard address of `server`'s family, port 0.
pub(super) fn any_local(server: SocketAddr) -> SocketAddr {
    if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

/// A server's UDP state: its socket policy (set at each snapshot build) and its shared
/// sockets, one slot per lane.
pub(super) struct Udp {
    policy: AtomicU8,
    lanes: [ArcSwapOption<Handle>; LANES],
}

impl std::fmt::Debug for Udp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Udp")
            .field("policy", &self.policy())
            .field(
                "open",
                &self.lanes.iter().filter(|l| l.load().is_some()).count(),
            )
            .finish()
    }
}

impl Default for Udp {
    fn default() -> Udp {
        Udp {
            policy: AtomicU8::new(0),
            lanes: std::array::from_fn(|_| ArcSwapOption::empty()),
        }
    }
}

impl Udp {
    pub(super) fn policy(&self) -> SocketPolicy {
        if self.policy.load(Ordering::Relaxed) == 1 {
            SocketPolicy::Shared
        } else {
            SocketPolicy::Fresh
        }
    }

    /// Sets the policy; turning sharing off closes the shared sockets.
    pub(super) fn set_policy(&self, p: SocketPolicy) {
        self.policy
            .store(u8::from(p == SocketPolicy::Shared), Ordering::Relaxed);
        if p == SocketPolicy::Fresh {
            for l in &self.lanes {
                l.store(None);
            }
        }
    }

    /// Counters summed over this server's shared sockets.
    pub(super) fn stats(&self) -> PendingStats {
        let mut s = PendingStats::default();
        for l in &self.lanes {
            if let Some(h) = l.load().as_ref() {
                let p = h.conn.pending.stats();
                s.delivered += p.delivered;
                s.unknown_id += p.unknown_id;
                s.wrong_question += p.wrong_question;
                s.full += p.full;
            }
        }
        s
    }

    /// This thread's shared socket to `server`, opened if there is none (or its reader
    /// is gone). `None` if it cannot be opened here (no runtime, a socket error).
    fn shared(&self, server: SocketAddr) -> Option<Arc<Handle>> {
        let slot = self.lanes.get(LANE.with(Cell::get))?;
        let cur = slot.load_full();
        if let Some(h) = &cur {
            if h.conn.alive.load(Ordering::Acquire) {
                return cur;
            }
        }
        let new = match Handle::open(server) {
            Ok(h) => Arc::new(h),
            Err(e) => {
                tracing::debug!(upstream = %server, error = %e, "cannot open a shared socket");
                return None;
            }
        };
        let prev = slot.compare_and_swap(&cur, Some(new.clone()));
        let same = match (&*prev, &cur) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same {
            Some(new)
        } else {
            // Another thread of the same lane opened one first: use that.
            (*prev).clone()
        }
    }
}

/// What a reader hands a waiting query: the reply's bytes and their structure (walked
/// once, by the reader).
type Delivered = (Vec<u8>, Reply);

/// One shared socket and its waiting queries.
struct Conn {
    sock: UdpSocket,
    pending: Arc<Pending<Delivered>>,
    /// Copies queued to be sent by the socket's task, and its wake-up.
    sends: Mutex<Sends>,
    queued: Notify,
    alive: AtomicBool,
    stop: CancellationToken,
}

/// Copies of queries waiting to be sent, with their IDs (to fail the one the kernel
/// refuses). At most one per waiting query: bounded by the table's capacity (a copy
/// beyond it is sent with an unregistered ID, and its reply dropped, as before).
#[derive(Default)]
struct Sends {
    outbox: Outbox,
    /// `None` for a copy sent with an unregistered ID (the table was full).
    ids: Vec<Option<u16>>,
}

impl Conn {
    fn sends(&self) -> MutexGuard<'_, Sends> {
        // Plain data: a panic elsewhere mid-push leaves it usable.
        match self.sends.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Queues one copy of a query (`msg`, carrying `id`) for the socket's task.
    fn queue(&self, msg: &[u8], id: Option<u16>) {
        let first = {
            let mut q = self.sends();
            q.outbox.push_connected(msg);
            q.ids.push(id);
            q.ids.len() == 1
        };
        if first {
            self.queued.notify_one();
        }
    }

    /// Sends the copies queued so far (`spare` is swapped in for them, so queries queue
    /// meanwhile); a copy the kernel refuses fails its query with the error.
    async fn send_queued(&self, spare: &mut Sends) {
        std::mem::swap(&mut *self.sends(), spare);
        let Sends { outbox, ids } = spare;
        if outbox.is_empty() {
            return;
        }
        outbox
            .flush(&self.sock, |i, r| {
                if let (Err(e), Some(&Some(id))) = (r, ids.get(i)) {
                    self.pending.fail(id, e.kind());
                }
            })
            .await;
        ids.clear();
    }
}

/// The owner's handle: dropping the last one stops the reader and closes the socket.
pub(super) struct Handle {
    conn: Arc<Conn>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.conn.stop.cancel();
    }
}

impl Handle {
    fn open(server: SocketAddr) -> io::Result<Handle> {
        let rt = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let s = Socket::new(
            Domain::for_address(server),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        let _ = s.set_recv_buffer_size(SHARED_RCVBUF);
        s.set_nonblocking(true)?;
        s.bind(&any_local(server).into())?;
        s.connect(&server.into())?;
        let sock = {
            let _guard = rt.enter();
            UdpSocket::from_std(s.into())?
        };
        let conn = Arc::new(Conn {
            sock,
            pending: Arc::new(Pending::new(SHARED_CAPACITY)),
            sends: Mutex::new(Sends::default()),
            queued: Notify::new(),
            alive: AtomicBool::new(true),
            stop: CancellationToken::new(),
        });
        rt.spawn(read_loop(conn.clone(), server));
        Ok(Handle { conn })
    }
}

/// Marks the socket dead when the reader ends (stopped, or its runtime shut down), and
/// fails whoever still waits.
struct Reader(Arc<Conn>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
        self.0
            .pending
            .fail_all(io::ErrorKind::ConnectionAborted, true);
    }
}

async fn read_loop(conn: Arc<Conn>, server: SocketAddr) {
    let reader = Reader(conn);
    let conn = &reader.0;
    let mut batch = Batch::new(UDP_BUF);
    let mut spare = Sends::default();
    loop {
        // What the queries of the last turn queued goes out first, together.
        conn.send_queued(&mut spare).await;
        let ready = tokio::select! {
            biased;
            _ = conn.stop.cancelled() => break,
            () = conn.queued.notified() => continue,
            r = conn.sock.ready(Interest::READABLE | Interest::ERROR) => match r {
                Ok(r) => r,
                Err(_) => break,
            },
        };
        if ready.is_error() {
            // An ICMP error on the connected socket (port unreachable: the server is not
            // listening). Epoll reports it apart from readability. Everyone waiting asked
            // that server: fail them now rather than at their timeout, as a socket of
            // their own would.
            if let Ok(Some(e)) = conn.sock.take_error() {
                tracing::debug!(upstream = %server, error = %e, "shared socket error");
                conn.pending.fail_all(e.kind(), false);
            }
            let _ = conn.sock.try_io(Interest::ERROR, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
        }
        let mut drained = false;
        // Up to READ_BATCH datagrams, a batch per receive call.
        let mut taken = 0;
        while taken < READ_BATCH {
            match batch.recv(&conn.sock) {
                Ok(n) => {
                    for i in 0..n {
                        if let Some(pkt) = batch.data(i) {
                            dispatch(conn, pkt, server);
                        }
                    }
                    taken += n.max(1);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) => {
                    // The same, reported by the receive call.
                    tracing::debug!(upstream = %server, error = %e, "shared socket error");
                    conn.pending.fail_all(e.kind(), false);
                    taken += 1;
                }
            }
        }
        if !drained {
            // A long burst: let the queries just answered run before reading on.
            tokio::task::yield_now().await;
        }
    }
}

fn dispatch(conn: &Conn, pkt: &[u8], server: SocketAddr) {
    let Ok(reply) = wire::walk_reply(pkt) else {
        tracing::debug!(upstream = %server, "ignored a malformed reply");
        return;
    };
    let id = reply.id;
    let delivery = conn.pending.complete(id, move |question| {
        answers(pkt, &reply, question).then(|| (pkt.to_vec(), reply))
    });
    if delivery != Delivery::Delivered {
        tracing::debug!(upstream = %server, ?delivery, "ignored a reply that does not match a query");
    }
}

/// One exchange's socket: a fresh one, or this thread's shared socket to the server.
pub(super) enum Flight {
    /// A new socket connected to the server.
    Fresh(UdpSocket),
    /// A shared socket and the tickets of the copies sent on it.
    Shared {
        /// The socket (kept open while this exchange runs).
        handle: Arc<Handle>,
        /// One per copy still waiting.
        tickets: Vec<Ticket<Delivered>>,
        /// The ticket taken at `open` has not been handed out by `next_id` yet.
        unused: bool,
    },
}

impl Flight {
    /// The socket for one exchange with `server` (whose state is `udp`) about `question`:
    /// shared if its policy says so and one can be had, else fresh.
    pub(super) async fn open(server: SocketAddr, udp: &Udp, question: &[u8]) -> io::Result<Flight> {
        if udp.policy() == SocketPolicy::Shared {
            if let Some(handle) = udp.shared(server) {
                // A table that is full (or closed) sends this query the fresh way.
                if let Ok(t) = handle.conn.pending.register(question) {
                    return Ok(Flight::Shared {
                        handle,
                        tickets: vec![t],
                        unused: true,
                    });
                }
            }
        }
        let sock = UdpSocket::bind(any_local(server)).await?;
        sock.connect(server).await?;
        Ok(Flight::Fresh(sock))
    }

    /// The ID for the next copy of the query: random, and on a shared socket unique among
    /// the queries waiting on it. (If the table has no room for another copy, the ID is
    /// not registered: that copy's reply is dropped, the earlier copies' still count.)
    pub(super) fn next_id(&mut self, question: &[u8]) -> u16 {
        match self {
            Flight::Fresh(_) => rand::random(),
            Flight::Shared {
                handle,
                tickets,
                unused,
            } => {
                // The ticket taken at open is the first copy's.
                if std::mem::take(unused) {
                    if let Some(t) = tickets.first() {
                        return t.id();
                    }
                }
                match handle.conn.pending.register(question) {
                    Ok(t) => {
                        let id = t.id();
                        tickets.push(t);
                        id
                    }
                    Err(_) => rand::random(),
                }
            }
        }
    }

    /// Sends one copy of the query (carrying `id`). On a shared socket it is queued for
    /// the socket's task, which sends it after this turn of the thread; if the kernel
    /// refuses it, the error comes back from [`Flight::recv`].
    pub(super) async fn send(&self, msg: &[u8], id: u16) -> io::Result<()> {
        let sock = match self {
            Flight::Fresh(sock) => sock,
            Flight::Shared {
                handle, tickets, ..
            } => {
                let registered = tickets.iter().any(|t| t.id() == id);
                handle.conn.queue(msg, registered.then_some(id));
                return Ok(());
            }
        };
        // At once if the socket has room (no readiness future), else when it has.
        match sock.try_send(msg) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.send(msg).await.map(|_| ()),
            r => r.map(|_| ()),
        }
    }

    /// Receives the next datagram from the server into `buf` (cleared first): on a shared
    /// socket, the next reply the reader matched to one of our copies, with its structure
    /// (its ID is one of ours and it answers our question). Cancel-safe.
    pub(super) async fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Reply>> {
        match self {
            Flight::Fresh(sock) => {
                buf.clear();
                buf.reserve(UDP_BUF);
                sock.recv_buf(buf).await.map(|_| None)
            }
            Flight::Shared { tickets, .. } => {
                let got = poll_fn(|cx| {
                    for (i, t) in tickets.iter_mut().enumerate() {
                        if let Poll::Ready(r) = t.poll_reply(cx) {
                            return Poll::Ready((i, r));
                        }
                    }
                    Poll::Pending
                })
                .await;
                let (i, r) = got;
                // That copy is answered: free its ID.
                if i < tickets.len() {
                    tickets.remove(i);
                }
                let (bytes, reply) = r?;
                *buf = bytes;
                Ok(Some(reply))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_own_addresses_may_share() {
        let own: Vec<IpAddr> = vec!["192.168.121.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        let p = |s: &str, sharing| SocketPolicy::decide(s.parse().unwrap(), &own, sharing);
        assert_eq!(p("127.0.0.1:8600", true), SocketPolicy::Shared);
        assert_eq!(p("127.0.0.53:53", true), SocketPolicy::Shared);
        assert_eq!(p("[::1]:53", true), SocketPolicy::Shared);
        assert_eq!(p("[::ffff:127.0.0.1]:53", true), SocketPolicy::Shared);
        assert_eq!(p("192.168.121.1:53", true), SocketPolicy::Shared);
        assert_eq!(p("[fd00::1]:53", true), SocketPolicy::Shared);
        assert_eq!(p("192.168.121.2:53", true), SocketPolicy::Fresh);
        assert_eq!(p("9.9.9.9:53", true), SocketPolicy::Fresh);
        assert_eq!(p("0.0.0.0:53", true), SocketPolicy::Fresh);
        assert_eq!(
            p("127.0.0.1:8600", false),
            SocketPolicy::Fresh,
            "the zone said no"
        );
    }

    #[test]
    fn own_addresses_include_loopback() {
        // Every Linux host (and network namespace) has lo.
        let own = own_addresses();
        assert!(own.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{own:?}");
    }
}
