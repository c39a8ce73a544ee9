//! Forwarding-loop detection in the manner of CoreDNS's `loop` plugin: a HINFO query for
//! `<random>.splitdns-loop-probe.<zone>` is sent to each server; if one ever arrives back at
//! our listener, that server forwards our queries back to us. It is remembered as looping
//! and skipped until the next reload, and the query that came back gets SERVFAIL instead of
//! being forwarded again, which breaks the loop.
//!
//! Owns the probe bookkeeping and verdicts; does not read config or touch the cache.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::net::UdpSocket;

use crate::wire::{self, Query};

/// The label that marks a loop probe.
pub const LOOP_PROBE_LABEL: &[u8] = b"splitdns-loop-probe";
/// How long a probe is remembered.
const PROBE_TTL: Duration = Duration::from_secs(10);

/// Outstanding probes and loop verdicts, shared by all queries and kept across reloads.
#[derive(Debug, Default)]
pub struct Loops {
    /// Outstanding loop probes: lower-cased probe QNAME → (server, sent at).
    probes: Mutex<FxHashMap<Vec<u8>, (SocketAddr, Instant)>>,
    /// Servers found to send our queries back to us; never asked until the next reload.
    looping: Mutex<Vec<SocketAddr>>,
    /// Cheap check so ordinary queries skip the probe map.
    probes_pending: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Loops {
    /// True if `server` was caught forwarding our queries back to us.
    pub fn is_looping(&self, server: SocketAddr) -> bool {
        let l = lock(&self.looping);
        !l.is_empty() && l.contains(&server)
    }

    /// Forgets loop verdicts (on reload: the servers may have been fixed; probes re-check).
    pub fn clear(&self) {
        lock(&self.looping).clear();
    }

    /// Called for every query that reached the slow path with its lower-cased QNAME: if it
    /// is one of our own probes, the server it was sent to forwards back to us. That server
    /// is marked looping and returned, and the caller answers SERVFAIL.
    pub fn probe_seen(&self, lower_qname: &[u8]) -> Option<SocketAddr> {
        if !self.probes_pending.load(Ordering::Relaxed) {
            return None;
        }
        let server = lock(&self.probes).get(lower_qname).map(|(s, _)| *s)?;
        let mut l = lock(&self.looping);
        if !l.contains(&server) {
            tracing::error!(upstream = %server, "forwarding loop detected: this server sends our queries back to splitdns; it is skipped until the next reload");
            l.push(server);
        }
        Some(server)
    }

    fn add_probe(&self, qname: Vec<u8>, server: SocketAddr, now: Instant) {
        let mut p = lock(&self.probes);
        p.retain(|_, (_, at)| now.saturating_duration_since(*at) < PROBE_TTL);
        p.insert(qname, (server, now));
        self.probes_pending.store(true, Ordering::Relaxed);
    }

    /// Sends one probe to each `(zone name, server)`, fire and forget (the reply does not
    /// matter and the server's health is not touched).
    pub async fn send_probes(&self, targets: &[(Arc<str>, SocketAddr)]) {
        let now = Instant::now();
        for (zone, server) in targets {
            let server = *server;
            let mut qname = Vec::with_capacity(64);
            let label = format!("{:016x}", rand::random::<u64>());
            qname.push(label.len() as u8);
            qname.extend_from_slice(label.as_bytes());
            qname.push(LOOP_PROBE_LABEL.len() as u8);
            qname.extend_from_slice(LOOP_PROBE_LABEL);
            qname.extend_from_slice(&crate::route::text_to_wire(zone));
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
            self.add_probe(qname, server, now);
            let msg = wire::upstream_query(&q, rand::random());
            if let Ok(sock) = UdpSocket::bind(super::udp::any_local(server)).await {
                let _ = sock.send_to(&msg, server).await;
            }
        }
    }
}
