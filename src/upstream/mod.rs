//! Talking to upstream servers. [`query`] is the failover loop: a zone's servers strictly
//! in order, next on timeout, network error, a failover rcode or a forwarding loop, under
//! a per-server timeout (`timeout_ms`) and a whole-query deadline, every attempt recorded.
//! Servers in back-off are skipped (all are tried when all are down); when a back-off ends
//! one query probes ([`health`]). [`exchange`] is one server's turn:
//! - UDP with a random ID, on a fresh random source port per exchange or, for a server
//!   that cannot be spoofed off-path (loopback, this host's own addresses), on a shared
//!   long-lived socket (see `udp`); a copy that gets no reply within the
//!   server's RTT-based retransmit timeout is sent again with a new ID (the timeout doubles
//!   per copy), until `timeout_ms` runs out; a late reply to any copy is accepted;
//! - a reply is accepted only from the server, with one of our IDs and our question, or
//!   with no question at all if it is FORMERR, REFUSED or NOTIMP (RFC 1035 lets a server
//!   that cannot parse a query answer without echoing it): that is the server's answer;
//! - FORMERR or NOTIMP to a query with OPT → the same server again with less EDNS (RFC
//!   6891 §7): OPT without our options, then no OPT; the level that works is remembered
//!   for a while;
//! - TC → the same server over TCP; a TCP failure there is the server failing;
//! - every query with OPT carries a loop marker ([`loops`]);
//! - a DNS-over-TLS server is asked over its pool of pipelined connections instead
//!   ([`tls`]); a failed handshake, a dropped connection or a timeout fails the server like
//!   a UDP timeout, and there is never a plain-DNS fallback to it.
//!
//! A [`Server`] is one upstream as queries see it: its address and transport (plain DNS or
//! DNS over TLS with its authentication name and trust) plus its runtime state (health, and
//! for TLS its connection pool). The [`Registry`] hands out one `Arc<Server>` per identity
//! and keeps it across reloads, so a snapshot's zones hold their servers directly and a
//! query never takes a lock shared with other servers. The same address asked plainly and
//! over TLS are two servers, each with its own health.
//!
//! # Layout
//! - this file: `Server`, `Registry`, `Policy`, the failover loop and one exchange;
//! - `batch`: batched datagram receive (`recvmmsg`), also used by the UDP front end;
//! - `health`: per-server back-off, probes, round-trip time, EDNS memory;
//! - `udp`, `tcp`: the sockets of one exchange over each transport;
//! - `tls`: DNS over TLS, a pool of pipelined connections per server;
//! - `loops`: per-query forwarding-loop markers;
//! - `inflight`: identical questions in flight share one exchange (leader and followers);
//! - `pending`: the table of queries waiting on a shared transport (random unique IDs,
//!   replies matched by ID then question), used by the shared UDP sockets.
//!
//! This module does not read config, touch the cache or write events: callers pass what it
//! needs (servers, policy) and get back the answer and the attempts to record.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::config::TlsConfig;
use crate::event::{Attempt, Outcome, Proto, TlsConn};
use crate::net::{ServerSpec, Transport};
use crate::wire::{self, rcode, Query, Reply};

mod batch;
mod health;
pub mod inflight;
mod loops;
pub mod pending;
mod tcp;
pub mod tls;
mod udp;

pub use batch::{Batch, Outbox};
pub use health::{
    EdnsLevel, Health, Rtt, Turn, BACKOFF_MAX, BACKOFF_MIN, EDNS_LESS_FOR, RTO_FLOOR,
};
pub use inflight::{Inflight, Join, Landed, MAX_FOLLOWERS};
pub use loops::{Loops, Marks, LOOP_OPTION};
pub use pending::PendingStats;
pub use udp::{is_local, own_addresses, set_lane, SocketPolicy};

/// Why one exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No valid reply in time.
    #[error("timeout")]
    Timeout,
    /// Socket error (connection refused, unreachable, ...).
    #[error("network error: {0}")]
    Io(#[from] io::Error),
    /// A TCP reply that did not match our query, or was malformed.
    #[error("reply does not match the query")]
    Mismatch,
    /// DNS over TLS failed: connect, handshake (verification), or the connection broke.
    #[error("{0}")]
    Tls(tls::TlsError),
}

impl UpstreamError {
    /// True if the failure is our own bound on queries in flight, not the server's fault
    /// (it does not count against the server's health).
    pub fn is_local(&self) -> bool {
        matches!(self, UpstreamError::Tls(tls::TlsError::Busy))
    }
}

/// One upstream server: where it is, how it is asked, and what we have learnt about it.
#[derive(Debug)]
pub struct Server {
    /// Its address.
    pub addr: SocketAddr,
    /// Its address and transport, as written in the config (`tls://…` for DoT).
    pub spec: ServerSpec,
    /// Back-off, round-trip time, EDNS support.
    pub health: Health,
    /// Queries sent to it that came back to us (a forwarding loop).
    pub loops_seen: AtomicU64,
    /// For DNS over TLS: its connections (`Err` says why none can be made).
    tls: Option<Result<tls::Pool, String>>,
    /// The TLS settings it was made with (part of its identity).
    tls_config: Option<TlsConfig>,
    /// Socket policy and shared sockets (plain DNS).
    udp: udp::Udp,
}

impl Server {
    /// A plain-DNS server with no history (tests, `check`), on fresh sockets until
    /// [`Server::set_socket_policy`] says otherwise.
    pub fn new(addr: SocketAddr) -> Server {
        Server {
            addr,
            spec: ServerSpec::plain(addr),
            health: Health::default(),
            loops_seen: AtomicU64::new(0),
            tls: None,
            tls_config: None,
            udp: udp::Udp::default(),
        }
    }

    /// A server with no history: plain DNS, or DNS over TLS with `tls`'s trust and idle
    /// time.
    pub fn with_spec(spec: &ServerSpec, tls: &TlsConfig) -> Server {
        let Transport::Tls { auth_name } = &spec.transport else {
            return Server::new(spec.addr);
        };
        let pool = tls::Pool::new(
            spec.addr,
            auth_name.as_deref(),
            tls.ca.as_ref().map(|c| c.certs.as_slice()),
            tls.idle_timeout,
        );
        if let Err(e) = &pool {
            tracing::warn!(upstream = %spec, error = %e, "cannot set up TLS for this server; every query to it fails");
        }
        Server {
            addr: spec.addr,
            spec: spec.clone(),
            health: Health::default(),
            loops_seen: AtomicU64::new(0),
            tls: Some(pool),
            tls_config: Some(tls.clone()),
            udp: udp::Udp::default(),
        }
    }

    /// Open DNS-over-TLS connections to this server (0 for plain servers).
    pub fn tls_connections(&self) -> usize {
        match &self.tls {
            Some(Ok(pool)) => pool.open_connections(),
            _ => 0,
        }
    }

    /// How UDP queries to this server get their socket.
    pub fn socket_policy(&self) -> SocketPolicy {
        self.udp.policy()
    }

    /// How queries reach this server, as `check`, `route` and `control status` say it:
    /// the UDP socket policy, or the TLS connection pool.
    pub fn transport_note(&self) -> &'static str {
        if self.spec.is_tls() {
            "tls connection pool"
        } else {
            self.socket_policy().describe()
        }
    }

    /// Sets the socket policy (at each snapshot build); `Fresh` closes the shared sockets
    /// (queries in flight on them finish).
    pub fn set_socket_policy(&self, p: SocketPolicy) {
        self.udp.set_policy(p);
    }

    /// Counters of the shared sockets' demultiplexers: replies delivered, dropped for an
    /// unknown ID or a wrong question, queries that found a table full.
    pub fn shared_socket_stats(&self) -> PendingStats {
        self.udp.stats()
    }
}

impl PartialEq for Server {
    fn eq(&self, other: &Server) -> bool {
        self.spec == other.spec && self.tls_config == other.tls_config
    }
}

impl Eq for Server {}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.spec.fmt(f)
    }
}

/// What makes two servers the same: address, transport and authentication name, and for
/// TLS the trust and idle time it was configured with.
type Identity = (ServerSpec, Option<TlsConfig>);

/// One `Arc<Server>` per identity for the life of the process, so health (and DoT
/// connections and TLS sessions) survive reloads. Locked only while a snapshot is built,
/// never per query.
#[derive(Debug, Default)]
pub struct Registry {
    servers: Mutex<FxHashMap<Identity, Arc<Server>>>,
}

impl Registry {
    /// The plain-DNS server at `addr`, created on first use.
    pub fn get(&self, addr: SocketAddr) -> Arc<Server> {
        self.get_spec(&ServerSpec::plain(addr), &TlsConfig::default())
    }

    /// The server `spec` names (with `tls` for a `tls://` one), created on first use.
    pub fn get_spec(&self, spec: &ServerSpec, tls: &TlsConfig) -> Arc<Server> {
        let mut m = match self.servers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if m.len() > 4096 {
            // Forget servers no snapshot uses any more (only the registry holds them).
            m.retain(|_, s| Arc::strong_count(s) > 1);
        }
        let key = (spec.clone(), spec.is_tls().then(|| tls.clone()));
        m.entry(key)
            .or_insert_with(|| Arc::new(Server::with_spec(spec, tls)))
            .clone()
    }

    /// Closes the shared sockets of every server not in `in_use` (the servers of a newly
    /// built snapshot): a server dropped from the config keeps no socket open. Queries
    /// still in flight on such a socket finish.
    pub fn close_unused(&self, in_use: &[Arc<Server>]) {
        let m = match self.servers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for s in m.values() {
            if !in_use.iter().any(|u| Arc::ptr_eq(u, s)) {
                s.set_socket_policy(SocketPolicy::Fresh);
            }
        }
    }
}

/// How a zone asks its servers.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Rcodes that make us try the next server.
    pub failover_rcodes: &'a [u16],
}

/// An accepted upstream reply.
#[derive(Debug)]
pub struct Answer {
    /// Who answered.
    pub server: SocketAddr,
    /// The reply bytes as received (a question-less error reply gets our question).
    pub bytes: Vec<u8>,
    /// Its structure.
    pub reply: Reply,
    /// The server sent this query back to us (a forwarding loop) before replying.
    pub looped: bool,
}

/// Asks `servers` in order until one gives a final answer (any rcode not in
/// `policy.failover_rcodes`, and not a forwarding loop), the list is exhausted (twice, if
/// no server answered at all the first time), or `deadline` passes. Servers backed off
/// are skipped unless all are; when a back-off has ended, only one query at a time probes
/// that server. `marks` are the loop markers the client's query carried (passed on).
/// Each attempt is appended to `attempts`. `None` means every server failed.
pub async fn query(
    servers: &[Arc<Server>],
    policy: Policy<'_>,
    q: &Query<'_>,
    deadline: Instant,
    loops: &Loops,
    marks: &Marks,
    attempts: &mut Vec<Attempt>,
) -> Option<Answer> {
    let ask = Ask {
        policy,
        q,
        deadline,
        loops,
        via: &marks.via,
    };
    let mut asked: Vec<&Server> = Vec::with_capacity(servers.len());
    let mut answered = false;
    for server in servers.iter().map(|s| &**s) {
        let Some(turn) = server.health.turn(Instant::now()) else {
            continue;
        };
        asked.push(server);
        match ask.server(server, turn, attempts).await {
            Step::Final(ans) => return Some(ans),
            Step::Next { answered: a } => answered |= a,
            Step::OutOfTime => return None,
        }
    }
    if asked.is_empty() {
        // Every server is backed off (or being probed): try them all anyway.
        for server in servers.iter().map(|s| &**s) {
            asked.push(server);
            match ask.server(server, Turn::Forced, attempts).await {
                Step::Final(ans) => return Some(ans),
                Step::Next { answered: a } => answered |= a,
                Step::OutOfTime => return None,
            }
        }
    }
    // A second pass only if nobody answered at all (every server timed out or failed on
    // the network), while the deadline allows. A server that answered, even SERVFAIL, is
    // not asked twice.
    if answered {
        return None;
    }
    for server in asked {
        match ask.server(server, Turn::Forced, attempts).await {
            Step::Final(ans) => return Some(ans),
            Step::Next { .. } => {}
            Step::OutOfTime => return None,
        }
    }
    None
}

/// What one query asks with.
struct Ask<'a> {
    policy: Policy<'a>,
    q: &'a Query<'a>,
    deadline: Instant,
    loops: &'a Loops,
    via: &'a [u8],
}

/// The result of one server's turn.
enum Step {
    /// A final answer.
    Final(Answer),
    /// On to the next server; `answered` if this one replied at all.
    Next { answered: bool },
    /// The query's deadline has passed.
    OutOfTime,
}

/// Hands a probe on if its query is dropped or runs out of time before a verdict.
struct ProbeGuard<'a>(Option<&'a Health>);

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.0 {
            h.abandon();
        }
    }
}

impl Ask<'_> {
    async fn server(&self, server: &Server, turn: Turn, attempts: &mut Vec<Attempt>) -> Step {
        let mut guard = ProbeGuard((turn == Turn::Probe).then_some(&server.health));
        let Some(remaining) = self
            .deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Step::OutOfTime;
        };
        let limit = self.policy.timeout.min(remaining);
        let result = exchange(
            server,
            self.q,
            limit,
            self.policy.timeout,
            self.loops,
            self.via,
            attempts,
        )
        .await;
        guard.0 = None;
        let ans = match result {
            Ok(ans) => ans,
            Err(e) => {
                tracing::debug!(upstream = %server, error = %e, "attempt failed");
                if e.is_local() {
                    // Not the server's fault: its probe turn (if any) passes to another query.
                    if turn == Turn::Probe {
                        server.health.abandon();
                    }
                } else {
                    server.health.failed(turn, Instant::now());
                }
                return Step::Next { answered: false };
            }
        };
        server.health.answered();
        let mut outcome = match ans.reply.rcode {
            rc if !self.policy.failover_rcodes.contains(&rc) => Outcome::Answer,
            rcode::SERVFAIL => Outcome::Servfail,
            rcode::REFUSED => Outcome::Refused,
            _ => Outcome::Error,
        };
        // The server relays the SERVFAIL we gave the returning copy. (If it found a real
        // answer elsewhere after that, the answer stands.)
        if ans.looped && (outcome != Outcome::Answer || ans.reply.rcode == rcode::SERVFAIL) {
            outcome = Outcome::Loop;
        }
        if let Some(last) = attempts.last_mut() {
            last.outcome = outcome;
        }
        if ans.looped {
            let n = server.loops_seen.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                let mut name = String::new();
                wire::name_to_text(self.q.qname(), &mut name);
                tracing::warn!(upstream = %server, qname = %name, times = n, "forwarding loop: this server sent our query back to splitdns; the query gets SERVFAIL, names the server answers itself are unaffected (libvirt: set localOnly on the domain)");
            }
        }
        if outcome == Outcome::Answer {
            Step::Final(ans)
        } else {
            Step::Next { answered: true }
        }
    }
}

/// FORMERR and NOTIMP to a query with OPT mean the server may not speak EDNS.
fn rejects_edns(rc: u16) -> bool {
    rc == rcode::FORMERR || rc == rcode::NOTIMP
}

/// One server's turn, within `limit`: UDP (retransmitted on the server's RTO, at most
/// `ceiling` apart), without OPT again if the server rejects EDNS, then TCP on TC. Records
/// one attempt per datagram or connection (the last provisionally `answer`; `query`
/// corrects it by rcode). `via` are loop markers to pass on.
///
/// # Errors
/// The server failed: no reply in time, a network error, or a TCP failure after TC.
pub async fn exchange(
    server: &Server,
    q: &Query<'_>,
    limit: Duration,
    ceiling: Duration,
    loops: &Loops,
    via: &[u8],
    attempts: &mut Vec<Attempt>,
) -> Result<Answer, UpstreamError> {
    let addr = server.addr;
    let start = Instant::now();
    let end = start + limit;
    let marker = loops.marker(q.qname(), via, start);
    let tls = match &server.tls {
        None => None,
        Some(Ok(pool)) => Some(pool),
        Some(Err(e)) => {
            tls_attempt(attempts, addr, Outcome::Error, start, None);
            return Err(UpstreamError::Tls(tls::TlsError::Handshake(e.clone())));
        }
    };
    // RFC 6891 §7: FORMERR or NOTIMP to a query with OPT → ask again with less EDNS: first
    // without our options (a server that chokes on an option it does not know keeps EDNS
    // and DNSSEC), then without OPT. The level that worked is remembered.
    let mut level = server.health.edns_level(start);
    let opt_at = |level: EdnsLevel| match level {
        EdnsLevel::Full => Some(marker.options()),
        EdnsLevel::Bare => Some(&[][..]),
        EdnsLevel::Off => None,
    };
    let (mut bytes, mut reply) =
        round(server, tls, q, opt_at(level), end, ceiling, attempts).await?;
    while rejects_edns(reply.rcode) {
        let Some(less) = level.less() else {
            break;
        };
        if let Some(last) = attempts.last_mut() {
            last.outcome = Outcome::NoEdns;
        }
        level = less;
        (bytes, reply) = round(server, tls, q, opt_at(level), end, ceiling, attempts).await?;
        if !rejects_edns(reply.rcode) {
            tracing::info!(upstream = %server, edns = ?level, "server rejects our EDNS; asking it with less for a while");
            server.health.set_edns_level(level, Instant::now());
        }
    }
    let opt = opt_at(level);
    if tls.is_some() {
        let looped = level == EdnsLevel::Full && loops.came_back(marker.nonce);
        let (bytes, reply) = with_question(bytes, reply, q);
        return Ok(Answer {
            server: addr,
            bytes,
            reply,
            looped,
        });
    }
    if reply.truncated() {
        if let Some(last) = attempts.last_mut() {
            last.outcome = Outcome::Truncated;
        }
        let tcp_start = Instant::now();
        let id: u16 = rand::random();
        let msg = wire::upstream_query_with(q, id, opt);
        let left = end.saturating_duration_since(tcp_start);
        let got = match tokio::time::timeout(left, tcp::exchange(addr, &msg, id, q.question)).await
        {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout),
        };
        let outcome = match &got {
            Ok(_) => Outcome::Answer,
            Err(UpstreamError::Timeout) => Outcome::Timeout,
            Err(_) => Outcome::Error,
        };
        attempts.push(Attempt {
            server: addr,
            proto: Proto::Tcp,
            outcome,
            elapsed: tcp_start.elapsed(),
            tls: None,
        });
        (bytes, reply) = got?;
    }
    let looped = level == EdnsLevel::Full && loops.came_back(marker.nonce);
    let (bytes, reply) = with_question(bytes, reply, q);
    Ok(Answer {
        server: addr,
        bytes,
        reply,
        looped,
    })
}

/// One round over the server's transport: TLS, or UDP with retransmissions.
async fn round(
    server: &Server,
    tls: Option<&tls::Pool>,
    q: &Query<'_>,
    opt: Option<&[u8]>,
    end: Instant,
    ceiling: Duration,
    attempts: &mut Vec<Attempt>,
) -> Result<(Vec<u8>, Reply), UpstreamError> {
    match tls {
        Some(pool) => tls_round(pool, server.addr, q, opt, end, attempts).await,
        None => udp_rounds(server, q, opt, end, ceiling, attempts).await,
    }
}

/// One query over DNS over TLS until `end`, recorded as one `tls` attempt with how it used
/// its connection.
async fn tls_round(
    pool: &tls::Pool,
    addr: SocketAddr,
    q: &Query<'_>,
    opt: Option<&[u8]>,
    end: Instant,
    attempts: &mut Vec<Attempt>,
) -> Result<(Vec<u8>, Reply), UpstreamError> {
    let start = Instant::now();
    match pool
        .exchange(q, opt, end.saturating_duration_since(start))
        .await
    {
        Ok(a) => {
            tls_attempt(attempts, addr, Outcome::Answer, start, Some(a.conn));
            Ok((a.bytes, a.reply))
        }
        Err(f) => {
            let (outcome, err) = match f.error {
                None => (Outcome::Timeout, UpstreamError::Timeout),
                Some(e) => (Outcome::Error, UpstreamError::Tls(e)),
            };
            tls_attempt(attempts, addr, outcome, start, f.conn);
            Err(err)
        }
    }
}

fn tls_attempt(
    attempts: &mut Vec<Attempt>,
    server: SocketAddr,
    outcome: Outcome,
    start: Instant,
    conn: Option<TlsConn>,
) {
    attempts.push(Attempt {
        server,
        proto: Proto::Tls,
        outcome,
        elapsed: start.elapsed(),
        tls: conn,
    });
}

/// The UDP part of a turn: send, and send again with a new ID each time the retransmit
/// timeout passes without a reply (the timeout doubling each time), until `end`. Each copy
/// is recorded: `lost` if it got no reply before the next was sent, `timeout` for the last
/// one if none came, `answer` for the one answered (any copy's reply is taken).
async fn udp_rounds(
    server: &Server,
    q: &Query<'_>,
    opt: Option<&[u8]>,
    end: Instant,
    ceiling: Duration,
    attempts: &mut Vec<Attempt>,
) -> Result<(Vec<u8>, Reply), UpstreamError> {
    let addr = server.addr;
    let mut flight = match udp::Flight::open(addr, &server.udp, q.question).await {
        Ok(f) => f,
        Err(e) => {
            attempts.push(Attempt {
                server: addr,
                proto: Proto::Udp,
                outcome: Outcome::Error,
                elapsed: Duration::ZERO,
                tls: None,
            });
            return Err(e.into());
        }
    };
    let first = attempts.len();
    let mut ids: Vec<u16> = Vec::with_capacity(4);
    let mut sent_at: Vec<Instant> = Vec::with_capacity(4);
    let mut buf = Vec::new();
    let result = loop {
        let now = Instant::now();
        if now >= end {
            break Err(UpstreamError::Timeout);
        }
        // Re-read each time: a server first measured while this query waits (another
        // query's reply, at start-up) gets its copies re-sent on that time, not after
        // `timeout_ms`.
        let next_send = match sent_at.last() {
            None => now,
            Some(last) => {
                let rto = server.health.rtt.rto(ceiling);
                *last + rto.saturating_mul(1 << (sent_at.len() - 1).min(16))
            }
        };
        if now >= next_send {
            let id = flight.next_id(q.question);
            let msg = wire::upstream_query_with(q, id, opt);
            if let Err(e) = flight.send(&msg, id).await {
                break Err(e.into());
            }
            ids.push(id);
            sent_at.push(now);
            attempts.push(Attempt {
                server: addr,
                proto: Proto::Udp,
                outcome: Outcome::Lost,
                elapsed: Duration::ZERO,
                tls: None,
            });
            continue;
        }
        let mut wake = next_send.min(end);
        if server.health.rtt.srtt().is_none() {
            wake = wake.min(now + RTO_FLOOR);
        }
        let wake = tokio::time::Instant::from_std(wake);
        tokio::select! {
            got = flight.recv(&mut buf) => match got {
                Err(e) => break Err(e.into()),
                Ok(walked) => match walked
                    .and_then(|r| Some((ids.iter().position(|&id| id == r.id)?, r)))
                    .or_else(|| accept(&buf, &ids, q.question))
                {
                    Some((i, reply)) => break Ok((i, reply)),
                    None => tracing::debug!(upstream = %addr, "ignored a reply that does not match the query"),
                },
            },
            () = tokio::time::sleep_until(wake) => {}
        }
    };
    let now = Instant::now();
    let last = sent_at.len().saturating_sub(1);
    for (k, at) in sent_at.iter().enumerate() {
        let Some(a) = attempts.get_mut(first + k) else {
            break;
        };
        let until = sent_at.get(k + 1).copied().unwrap_or(now);
        (a.outcome, a.elapsed) = match &result {
            Ok((i, _)) if *i == k => (Outcome::Answer, now - *at),
            Err(UpstreamError::Timeout) if k == last => (Outcome::Timeout, now - *at),
            Err(_) if k == last => (Outcome::Error, now - *at),
            _ => (Outcome::Lost, until - *at),
        };
    }
    let (i, reply) = result?;
    if let Some(at) = sent_at.get(i) {
        server.health.rtt.sample(now - *at);
    }
    Ok((buf, reply))
}

/// True if `pkt` is the reply to one of our copies (`ids`): QR=1, one of our IDs, and our
/// question, or no question with FORMERR, REFUSED or NOTIMP. Returns which copy. (The
/// source address is checked by the kernel: the socket is connected to the server.)
fn accept(pkt: &[u8], ids: &[u16], question: &[u8]) -> Option<(usize, Reply)> {
    let reply = wire::walk_reply(pkt).ok()?;
    let i = ids.iter().position(|&id| id == reply.id)?;
    answers(pkt, &reply, question).then_some((i, reply))
}

/// True if `reply` (walked from `pkt`; its ID already matched) answers `question`: QR=1,
/// and our question, or no question with FORMERR, REFUSED or NOTIMP.
fn answers(pkt: &[u8], reply: &Reply, question: &[u8]) -> bool {
    if reply.flags & 0x8000 == 0 {
        return false;
    }
    if reply.question.is_empty() {
        matches!(reply.rcode, rcode::FORMERR | rcode::REFUSED | rcode::NOTIMP)
    } else {
        wire::same_question(pkt, reply, question)
    }
}

/// A question-less error reply rebuilt with our question (so the client's reply and the
/// event describe it like any other); other replies unchanged.
fn with_question(bytes: Vec<u8>, reply: Reply, q: &Query<'_>) -> (Vec<u8>, Reply) {
    if !reply.question.is_empty() {
        return (bytes, reply);
    }
    let fixed = wire::error_reply(reply.id, 0, q.flags, Some(q.question), None, reply.rcode);
    match wire::walk_reply(&fixed) {
        Ok(r) => (fixed, r),
        Err(_) => (bytes, reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_keeps_one_server_per_address() {
        let r = Registry::default();
        let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let s1 = r.get(a);
        s1.health.failed(Turn::Up, Instant::now());
        let s2 = r.get(a);
        assert!(Arc::ptr_eq(&s1, &s2));
        assert!(
            s2.health.is_down(Instant::now()),
            "health survives a rebuild"
        );
        assert!(!Arc::ptr_eq(&s1, &r.get("127.0.0.1:10".parse().unwrap())));
    }

    const QUESTION: &[u8] = b"\x03www\x07example\x03com\x00\x00\x01\x00\x01";

    /// A reply header with this ID, flags word and question (or none).
    fn reply(id: u16, flags: u16, question: Option<&[u8]>) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&flags.to_be_bytes());
        p.extend_from_slice(&[0, u8::from(question.is_some()), 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(question.unwrap_or_default());
        p
    }

    #[test]
    fn accept_takes_our_ids_and_question_less_errors_only() {
        let ids = [7, 9];
        let ok = reply(9, 0x8180, Some(QUESTION));
        assert_eq!(accept(&ok, &ids, QUESTION).map(|(i, _)| i), Some(1));
        assert!(accept(&reply(8, 0x8180, Some(QUESTION)), &ids, QUESTION).is_none());
        assert!(
            accept(&reply(7, 0x0180, Some(QUESTION)), &ids, QUESTION).is_none(),
            "QR=0"
        );
        let other = b"\x03ftp\x07example\x03com\x00\x00\x01\x00\x01";
        assert!(accept(&reply(7, 0x8180, Some(other)), &ids, QUESTION).is_none());
        for rc in [rcode::FORMERR, rcode::REFUSED, rcode::NOTIMP] {
            let p = reply(7, 0x8180 | rc, None);
            assert_eq!(accept(&p, &ids, QUESTION).map(|(i, _)| i), Some(0), "{rc}");
        }
        for rc in [0, rcode::SERVFAIL, rcode::NXDOMAIN] {
            let p = reply(7, 0x8180 | rc, None);
            assert!(accept(&p, &ids, QUESTION).is_none(), "question-less {rc}");
        }
    }

    #[test]
    fn question_less_reply_gets_our_question() {
        let q = Query {
            id: 1,
            flags: wire::QueryFlags {
                rd: true,
                cd: false,
                ad: false,
            },
            question: QUESTION,
            qtype: 1,
            qclass: 1,
            edns: None,
        };
        let raw = reply(7, 0x8180 | rcode::REFUSED, None);
        let walked = wire::walk_reply(&raw).unwrap();
        let (bytes, r) = with_question(raw, walked, &q);
        assert_eq!(r.rcode, rcode::REFUSED);
        assert_eq!(r.id, 7);
        assert!(wire::same_question(&bytes, &r, QUESTION));
    }

    #[test]
    fn registry_tells_plain_and_tls_apart() {
        let r = Registry::default();
        let plain: ServerSpec = "127.0.0.1:853".parse().unwrap();
        let tls: ServerSpec = "tls://127.0.0.1#dot.test".parse().unwrap();
        let cfg = TlsConfig::default();
        let p = r.get_spec(&plain, &cfg);
        let t = r.get_spec(&tls, &cfg);
        assert!(!Arc::ptr_eq(&p, &t), "same address, two servers");
        p.health.failed(Turn::Up, Instant::now());
        assert!(
            !t.health.is_down(Instant::now()),
            "each with its own health"
        );
        assert!(
            Arc::ptr_eq(&t, &r.get_spec(&tls, &cfg)),
            "kept across rebuilds"
        );
        assert_eq!(t.to_string(), "tls://127.0.0.1:853#dot.test");
        let other_idle = TlsConfig {
            idle_timeout: Duration::from_secs(1),
            ..TlsConfig::default()
        };
        assert!(
            !Arc::ptr_eq(&t, &r.get_spec(&tls, &other_idle)),
            "other TLS settings, another server"
        );
        let other_name: ServerSpec = "tls://127.0.0.1#other.test".parse().unwrap();
        assert!(!Arc::ptr_eq(&t, &r.get_spec(&other_name, &cfg)));
    }
}
