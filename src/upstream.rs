//! Talking to upstream servers. `exchange` is one attempt against one server (UDP with a
//! fresh random ID and source port, replies accepted only from that server with that ID
//! and our question, TC → the same server over TCP). `query` is the failover loop: the
//! zone's servers strictly in order, next on timeout, network error or a failover rcode,
//! under a per-attempt timeout and a whole-query deadline, every attempt recorded.
//!
//! `Health` remembers servers that stopped answering: after a timeout or network error a
//! server is skipped (the others keep their order) for a back-off that doubles per
//! consecutive failure, 1 s up to 30 s; when it expires the next query probes it again.
//! If every server of a zone is backed off, all are tried.
//!
//! This module does not read config, touch the cache or write events.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::event::{Attempt, Outcome, Proto};
use crate::state::Zone;
use crate::wire::{self, rcode, Query, Reply};

/// First back-off after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Largest reply we read over UDP.
const UDP_BUF: usize = 65_535;

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

#[derive(Debug, Default, Clone, Copy)]
struct ServerHealth {
    failures: u32,
    down_until: Option<Instant>,
}

/// Per-server failure memory, shared by all queries and kept across reloads, plus the
/// forwarding-loop detector (see [`send_loop_probes`]).
#[derive(Debug, Default)]
pub struct Health {
    servers: Mutex<FxHashMap<SocketAddr, ServerHealth>>,
    /// Outstanding loop probes: lower-cased probe QNAME → (server, sent at).
    probes: Mutex<FxHashMap<Vec<u8>, (SocketAddr, Instant)>>,
    /// Servers found to send our queries back to us; never asked until the next reload.
    looping: Mutex<Vec<SocketAddr>>,
    /// Cheap check so ordinary queries skip the probe map.
    probes_pending: std::sync::atomic::AtomicBool,
}

/// The label that marks a loop probe: `<random>.splitdns-loop-probe.<zone>`, type HINFO,
/// in the manner of CoreDNS's `loop` plugin.
pub const LOOP_PROBE_LABEL: &[u8] = b"splitdns-loop-probe";
/// How long a probe is remembered.
const PROBE_TTL: Duration = Duration::from_secs(10);

impl Health {
    fn with<R>(&self, f: impl FnOnce(&mut FxHashMap<SocketAddr, ServerHealth>) -> R) -> R {
        match self.servers.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// True while `server` is backed off.
    pub fn is_down(&self, server: SocketAddr, now: Instant) -> bool {
        self.with(|m| {
            m.get(&server)
                .and_then(|h| h.down_until)
                .is_some_and(|t| now < t)
        })
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        match m.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// True if `server` was caught forwarding our queries back to us.
    pub fn is_looping(&self, server: SocketAddr) -> bool {
        let l = Self::lock(&self.looping);
        !l.is_empty() && l.contains(&server)
    }

    /// Forgets loop verdicts (on reload: the servers may have been fixed; probes re-check).
    pub fn clear_loops(&self) {
        Self::lock(&self.looping).clear();
    }

    /// Called for every query that reached the slow path with its lower-cased QNAME: if it
    /// is one of our own probes, the server it was sent to forwards back to us. That server
    /// is marked looping (skipped until the next reload) and returned, and the caller
    /// answers SERVFAIL instead of forwarding again, which breaks the loop.
    pub fn loop_probe_seen(&self, lower_qname: &[u8]) -> Option<SocketAddr> {
        if !self
            .probes_pending
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        let server = Self::lock(&self.probes).get(lower_qname).map(|(s, _)| *s)?;
        let mut l = Self::lock(&self.looping);
        if !l.contains(&server) {
            tracing::error!(upstream = %server, "forwarding loop detected: this server sends our queries back to splitdns; it is skipped until the next reload");
            l.push(server);
        }
        Some(server)
    }

    fn add_probe(&self, qname: Vec<u8>, server: SocketAddr, now: Instant) {
        let mut p = Self::lock(&self.probes);
        p.retain(|_, (_, at)| now.saturating_duration_since(*at) < PROBE_TTL);
        p.insert(qname, (server, now));
        self.probes_pending
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn failed(&self, server: SocketAddr, now: Instant) {
        self.with(|m| {
            let h = m.entry(server).or_default();
            h.failures = h.failures.saturating_add(1);
            let shift = h.failures.saturating_sub(1).min(5);
            let backoff = (BACKOFF_MIN * (1u32 << shift)).min(BACKOFF_MAX);
            h.down_until = Some(now + backoff);
            if m.len() > 4096 {
                m.retain(|_, h| h.down_until.is_some_and(|t| now < t));
            }
        });
    }

    fn answered(&self, server: SocketAddr) {
        self.with(|m| {
            if m.contains_key(&server) {
                m.remove(&server);
            }
        });
    }
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

/// Asks the zone's servers in order until one gives a final answer (any rcode not in
/// `failover_rcodes`), the list is exhausted (twice, if no server answered at all the
/// first time), or `deadline` passes. Each attempt is
/// appended to `attempts`. `None` means every server failed.
pub async fn query(
    zone: &Zone,
    q: &Query<'_>,
    deadline: Instant,
    health: &Health,
    attempts: &mut Vec<Attempt>,
) -> Option<Answer> {
    let now = Instant::now();
    let usable: Vec<SocketAddr> = zone
        .servers
        .iter()
        .copied()
        .filter(|s| !health.is_looping(*s))
        .collect();
    let mut order: Vec<SocketAddr> = usable
        .iter()
        .copied()
        .filter(|s| !health.is_down(*s, now))
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
            let limit = zone.timeout.min(remaining);
            let Some(ans) = exchange(server, q, limit, health, attempts).await else {
                continue;
            };
            answered = true;
            let outcome = match ans.reply.rcode {
                rc if !zone.failover_rcodes.contains(&rc) => Outcome::Answer,
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
    server: SocketAddr,
    q: &Query<'_>,
    limit: Duration,
    health: &Health,
    attempts: &mut Vec<Attempt>,
) -> Option<Answer> {
    let start = Instant::now();
    let deadline = start + limit;
    let id: u16 = rand::random();
    let msg = wire::upstream_query(q, id);
    let udp = tokio::time::timeout(limit, udp_exchange(server, &msg, id, q.question)).await;
    let (bytes, reply) = match udp {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(upstream = %server, error = %e, "udp attempt failed");
            record(attempts, server, Proto::Udp, Outcome::Error, start);
            health.failed(server, Instant::now());
            return None;
        }
        Err(_) => {
            record(attempts, server, Proto::Udp, Outcome::Timeout, start);
            health.failed(server, Instant::now());
            return None;
        }
    };
    health.answered(server);
    if !reply.truncated() {
        record(attempts, server, Proto::Udp, Outcome::Answer, start);
        return Some(Answer {
            server,
            bytes,
            reply,
        });
    }
    record(attempts, server, Proto::Udp, Outcome::Truncated, start);
    let tcp_start = Instant::now();
    let left = deadline.saturating_duration_since(tcp_start);
    let id: u16 = rand::random();
    let msg = wire::upstream_query(q, id);
    match tokio::time::timeout(left, tcp_exchange(server, &msg, id, q.question)).await {
        Ok(Ok((bytes, reply))) => {
            record(attempts, server, Proto::Tcp, Outcome::Answer, tcp_start);
            Some(Answer {
                server,
                bytes,
                reply,
            })
        }
        Ok(Err(e)) => {
            tracing::debug!(upstream = %server, error = %e, "tcp attempt failed");
            record(attempts, server, Proto::Tcp, Outcome::Error, tcp_start);
            None
        }
        Err(_) => {
            record(attempts, server, Proto::Tcp, Outcome::Timeout, tcp_start);
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

async fn udp_exchange(
    server: SocketAddr,
    msg: &[u8],
    id: u16,
    question: &[u8],
) -> Result<(Vec<u8>, Reply), UpstreamError> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // A new socket per query: a random source port from the kernel (RFC 5452 §9.2), and
    // connect() makes the kernel drop datagrams from any other address.
    let sock = UdpSocket::bind(local).await?;
    sock.connect(server).await?;
    sock.send(msg).await?;
    let mut buf = Vec::with_capacity(UDP_BUF);
    loop {
        buf.clear();
        sock.recv_buf(&mut buf).await?;
        if let Some(reply) = accept(&buf, id, question) {
            return Ok((buf, reply));
        }
        tracing::debug!(upstream = %server, "ignored a reply that does not match the query");
    }
}

async fn tcp_exchange(
    server: SocketAddr,
    msg: &[u8],
    id: u16,
    question: &[u8],
) -> Result<(Vec<u8>, Reply), UpstreamError> {
    let mut s = TcpStream::connect(server).await?;
    s.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    framed.extend_from_slice(msg);
    s.write_all(&framed).await?;
    let len = s.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await?;
    let reply = accept(&buf, id, question).ok_or(UpstreamError::Mismatch)?;
    Ok((buf, reply))
}

/// Sends one loop probe to each server of each zone: a HINFO query for
/// `<random>.splitdns-loop-probe.<zone>`, fire and forget (the reply does not matter and
/// the server's health is not touched). If a probe ever arrives back at our listener,
/// `Health::loop_probe_seen` catches it.
pub async fn send_loop_probes(zones: &[Zone], health: &Health) {
    let now = Instant::now();
    for zone in zones {
        for &server in &zone.servers {
            let mut qname = Vec::with_capacity(64);
            let label = format!("{:016x}", rand::random::<u64>());
            qname.push(label.len() as u8);
            qname.extend_from_slice(label.as_bytes());
            qname.push(LOOP_PROBE_LABEL.len() as u8);
            qname.extend_from_slice(LOOP_PROBE_LABEL);
            qname.extend_from_slice(&crate::route::text_to_wire(&zone.name));
            let mut question = qname.clone();
            question.extend_from_slice(&[0, 13, 0, 1]); // HINFO IN
            let q = Query {
                id: 0,
                flags: wire::QueryFlags {
                    rd: true,
                    cd: false,
                    ad: false,
                },
                question: &question,
                qtype: 13,
                qclass: 1,
                edns: None,
            };
            health.add_probe(qname, server, now);
            let msg = wire::upstream_query(&q, rand::random());
            let local: SocketAddr = if server.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            if let Ok(sock) = UdpSocket::bind(local).await {
                let _ = sock.send_to(&msg, server).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_resets() {
        let h = Health::default();
        let s: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let t0 = Instant::now();
        assert!(!h.is_down(s, t0));
        h.failed(s, t0);
        assert!(h.is_down(s, t0 + Duration::from_millis(900)));
        assert!(!h.is_down(s, t0 + Duration::from_millis(1001)));
        h.failed(s, t0);
        assert!(h.is_down(s, t0 + Duration::from_millis(1900)));
        for _ in 0..10 {
            h.failed(s, t0);
        }
        assert!(h.is_down(s, t0 + Duration::from_secs(29)));
        assert!(!h.is_down(s, t0 + Duration::from_secs(31)));
        h.answered(s);
        assert!(!h.is_down(s, t0));
    }
}
