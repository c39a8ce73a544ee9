//! Talking to upstream servers. [`query`] is the failover loop: a zone's servers strictly
//! in order, next on timeout, network error or a failover rcode, under a per-attempt
//! timeout and a whole-query deadline, every attempt recorded. [`exchange`] is one attempt
//! against one server (UDP with a fresh random ID and source port, TC → the same server
//! over TCP).
//!
//! A [`Server`] is one upstream as queries see it: its address plus its runtime state
//! (health). The [`Registry`] hands out one `Arc<Server>` per address and keeps it across
//! reloads, so a snapshot's zones hold their servers directly and a query never takes a
//! lock shared with other servers.
//!
//! # Layout
//! - this file: `Server`, `Registry`, `Policy`, the failover loop and one exchange;
//! - `health`: per-server back-off;
//! - `udp`, `tcp`: one exchange over each transport;
//! - `loops`: forwarding-loop probes and verdicts.
//!
//! This module does not read config, touch the cache or write events: callers pass what it
//! needs (servers, policy) and get back the answer and the attempts to record.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::event::{Attempt, Outcome, Proto};
use crate::wire::{self, rcode, Query, Reply};

mod health;
mod loops;
mod tcp;
mod udp;

pub use health::{Health, BACKOFF_MAX, BACKOFF_MIN};
pub use loops::{Loops, LOOP_PROBE_LABEL};

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
}

/// One upstream server: where it is, and what we have learnt about it.
#[derive(Debug)]
pub struct Server {
    /// Its address.
    pub addr: SocketAddr,
    /// Back-off state.
    pub health: Health,
}

impl Server {
    /// A server with no history (tests, `check`).
    pub fn new(addr: SocketAddr) -> Server {
        Server {
            addr,
            health: Health::default(),
        }
    }
}

impl PartialEq for Server {
    fn eq(&self, other: &Server) -> bool {
        self.addr == other.addr
    }
}

impl Eq for Server {}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// One `Arc<Server>` per address for the life of the process, so health survives reloads.
/// Locked only while a snapshot is built, never per query.
#[derive(Debug, Default)]
pub struct Registry {
    servers: Mutex<FxHashMap<SocketAddr, Arc<Server>>>,
}

impl Registry {
    /// The server for `addr`, created on first use.
    pub fn get(&self, addr: SocketAddr) -> Arc<Server> {
        let mut m = match self.servers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if m.len() > 4096 {
            // Forget servers no snapshot uses any more (only the registry holds them).
            m.retain(|_, s| Arc::strong_count(s) > 1);
        }
        m.entry(addr)
            .or_insert_with(|| Arc::new(Server::new(addr)))
            .clone()
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
    /// The reply bytes as received.
    pub bytes: Vec<u8>,
    /// Its structure.
    pub reply: Reply,
}

/// Asks `servers` in order until one gives a final answer (any rcode not in
/// `policy.failover_rcodes`), the list is exhausted (twice, if no server answered at all
/// the first time), or `deadline` passes. Servers backed off are skipped unless all are;
/// servers `loops` caught looping are never asked. Each attempt is appended to `attempts`.
/// `None` means every server failed.
pub async fn query(
    servers: &[Arc<Server>],
    policy: Policy<'_>,
    q: &Query<'_>,
    deadline: Instant,
    loops: &Loops,
    attempts: &mut Vec<Attempt>,
) -> Option<Answer> {
    let now = Instant::now();
    let usable: Vec<&Server> = servers
        .iter()
        .map(|s| &**s)
        .filter(|s| !loops.is_looping(s.addr))
        .collect();
    let mut order: Vec<&Server> = usable
        .iter()
        .copied()
        .filter(|s| !s.health.is_down(now))
        .collect();
    if order.is_empty() {
        order = usable;
    }
    // A second pass only if nobody answered at all in the first (every attempt timed out or
    // failed on the network): a lost datagram to a one-server zone (Consul, libvirt's
    // dnsmasq) should cost a retry, not a SERVFAIL. A server that answered, even SERVFAIL,
    // is not asked twice.
    for pass in 0..2 {
        let mut answered = false;
        for &server in &order {
            let now = Instant::now();
            let remaining = deadline
                .checked_duration_since(now)
                .filter(|d| !d.is_zero())?;
            let limit = policy.timeout.min(remaining);
            let Some(ans) = exchange(server, q, limit, attempts).await else {
                continue;
            };
            answered = true;
            let outcome = match ans.reply.rcode {
                rc if !policy.failover_rcodes.contains(&rc) => Outcome::Answer,
                rcode::SERVFAIL => Outcome::Servfail,
                rcode::REFUSED => Outcome::Refused,
                _ => Outcome::Error,
            };
            if let Some(last) = attempts.last_mut() {
                last.outcome = outcome;
            }
            if outcome == Outcome::Answer {
                return Some(ans);
            }
        }
        if answered || pass == 1 {
            break;
        }
    }
    None
}

/// One attempt against one server: UDP, then TCP if the UDP reply had TC. Records one
/// attempt per transport used (the last one provisionally as `answer`; `query` corrects
/// it for failover rcodes).
pub async fn exchange(
    server: &Server,
    q: &Query<'_>,
    limit: Duration,
    attempts: &mut Vec<Attempt>,
) -> Option<Answer> {
    let addr = server.addr;
    let start = Instant::now();
    let deadline = start + limit;
    let id: u16 = rand::random();
    let msg = wire::upstream_query(q, id);
    let udp = tokio::time::timeout(limit, udp::exchange(addr, &msg, id, q.question)).await;
    let (bytes, reply) = match udp {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(upstream = %addr, error = %e, "udp attempt failed");
            record(attempts, addr, Proto::Udp, Outcome::Error, start);
            server.health.failed(Instant::now());
            return None;
        }
        Err(_) => {
            record(attempts, addr, Proto::Udp, Outcome::Timeout, start);
            server.health.failed(Instant::now());
            return None;
        }
    };
    server.health.answered();
    if !reply.truncated() {
        record(attempts, addr, Proto::Udp, Outcome::Answer, start);
        return Some(Answer {
            server: addr,
            bytes,
            reply,
        });
    }
    record(attempts, addr, Proto::Udp, Outcome::Truncated, start);
    let tcp_start = Instant::now();
    let left = deadline.saturating_duration_since(tcp_start);
    let id: u16 = rand::random();
    let msg = wire::upstream_query(q, id);
    match tokio::time::timeout(left, tcp::exchange(addr, &msg, id, q.question)).await {
        Ok(Ok((bytes, reply))) => {
            record(attempts, addr, Proto::Tcp, Outcome::Answer, tcp_start);
            Some(Answer {
                server: addr,
                bytes,
                reply,
            })
        }
        Ok(Err(e)) => {
            tracing::debug!(upstream = %addr, error = %e, "tcp attempt failed");
            record(attempts, addr, Proto::Tcp, Outcome::Error, tcp_start);
            None
        }
        Err(_) => {
            record(attempts, addr, Proto::Tcp, Outcome::Timeout, tcp_start);
            None
        }
    }
}

fn record(
    attempts: &mut Vec<Attempt>,
    server: SocketAddr,
    proto: Proto,
    outcome: Outcome,
    start: Instant,
) {
    attempts.push(Attempt {
        server,
        proto,
        outcome,
        elapsed: start.elapsed(),
    });
}

/// True if `pkt` is the reply to our query: QR=1, our ID, our question. (The source
/// address is checked by the kernel: the socket is connected to the server.)
fn accept(pkt: &[u8], id: u16, question: &[u8]) -> Option<Reply> {
    let reply = wire::walk_reply(pkt).ok()?;
    (reply.id == id && reply.flags & 0x8000 != 0 && wire::same_question(pkt, &reply, question))
        .then_some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_keeps_one_server_per_address() {
        let r = Registry::default();
        let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let s1 = r.get(a);
        s1.health.failed(Instant::now());
        let s2 = r.get(a);
        assert!(Arc::ptr_eq(&s1, &s2));
        assert!(
            s2.health.is_down(Instant::now()),
            "health survives a rebuild"
        );
        assert!(!Arc::ptr_eq(&s1, &r.get("127.0.0.1:10".parse().unwrap())));
    }
}
