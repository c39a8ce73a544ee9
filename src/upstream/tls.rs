//! DNS over TLS to one upstream (RFC 7858): a small pool of long-lived connections, each
//! carrying many queries at once (RFC 7766 pipelining), replies matched by message ID in
//! whatever order they come.
//!
//! - **Trust.** The certificate is verified by rustls (ring provider) against the zone's
//!   `tls_ca_file` bundle or, without one, the system's CA store. With an authentication
//!   name the certificate must be valid for it and SNI carries it; without one the
//!   certificate must be valid for the server's IP address (no SNI is sent for an address).
//!   A failed handshake is an error of the attempt; nothing here ever falls back to plain
//!   DNS.
//! - **Connections.** A query joins the first connection with room in its pending table
//!   ([`MAX_PENDING_PER_CONN`]), or opens a new one while there are fewer than
//!   [`MAX_CONNS`]; queries that arrive while a connection is still handshaking wait for it,
//!   so a burst of hundreds of queries costs a handful of handshakes. A connection closes
//!   after `idle` without a query in flight and is reopened on demand; one `ClientConfig`
//!   per server keeps its session tickets, so reopening resumes the TLS session. A query
//!   that times out retires its connection from new use (a server that stopped answering
//!   on a connection gets a fresh one next time); a reused connection that turns out to be
//!   closed by the server is retried once on a new one.
//! - **Privacy.** Queries carry EDNS padding to a multiple of 128 bytes (RFC 7830,
//!   RFC 8467 §4.1).
//!
//! This module does not choose servers, keep health or write events: the failover loop
//! (`upstream`) calls [`Pool::exchange`] for one attempt and records what it returns.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::event::TlsConn;
use crate::wire::{self, Query, Reply};

/// Queries one connection carries at once.
pub const MAX_PENDING_PER_CONN: usize = 64;
/// Connections to one server at once; with [`MAX_PENDING_PER_CONN`] this bounds the
/// queries in flight to one server.
pub const MAX_CONNS: usize = 8;
/// Queries are padded to a multiple of this many bytes (RFC 8467 §4.1).
pub const PADDING_BLOCK: usize = 128;
/// EDNS option code of Padding (RFC 7830).
const OPT_PADDING: u16 = 12;
/// TCP connect plus TLS handshake must finish within this (as unbound's
/// `tcp-auth-query-timeout`); the queries waiting on it have their own, shorter limits.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bytes gathered into one TLS write when several queries are queued.
const WRITE_BATCH: usize = 16 * 1024;

/// Why a DoT exchange failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// TCP connect failed.
    #[error("connect: {0}")]
    Connect(String),
    /// The TLS handshake failed (certificate not trusted, wrong name, expired, protocol).
    #[error("TLS handshake: {0}")]
    Handshake(String),
    /// The connection broke or was closed before our reply came.
    #[error("connection closed: {0}")]
    Closed(String),
    /// The reply carried our ID but not our question.
    #[error("reply does not match the query")]
    Mismatch,
    /// Every connection to this server is full.
    #[error("too many queries in flight to this server")]
    Busy,
}

/// An accepted DoT reply.
#[derive(Debug)]
pub struct TlsAnswer {
    /// The reply bytes as received.
    pub bytes: Vec<u8>,
    /// Its structure.
    pub reply: Reply,
    /// How the connection was used.
    pub conn: TlsConn,
}

/// A failed DoT exchange, with what is known about the connection it tried.
#[derive(Debug)]
pub struct TlsFailure {
    /// What went wrong; `None` means the time limit passed.
    pub error: Option<TlsError>,
    /// The connection use, if the query got as far as a connection.
    pub conn: Option<TlsConn>,
}

/// The trust anchors: the given bundle, or the system's CA store.
fn roots(ca: Option<&[CertificateDer<'static>]>) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(certs) => {
            roots.add_parsable_certificates(certs.iter().cloned());
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "system CA store: some certificates could not be read");
            }
            let (good, _) = roots.add_parsable_certificates(found.certs);
            if good == 0 {
                tracing::warn!("the system CA store has no usable certificate: DNS-over-TLS servers without tls_ca_file will fail verification (install ca-certificates)");
            }
        }
    }
    roots
}

fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Session resumption is on by default (an in-memory store of tickets and session IDs);
    // SNI is on by default and rustls sends it only for a DNS name, never for an address.
    Ok(Arc::new(config))
}

/// The connections to one DNS-over-TLS server.
pub struct Pool {
    addr: SocketAddr,
    name: ServerName<'static>,
    connector: TlsConnector,
    idle: Duration,
    conns: Mutex<Vec<Arc<Conn>>>,
    next_conn: AtomicU64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Pool {
    /// A pool for the server at `addr`, checked against `auth_name` (or its address), trusting
    /// `ca` (or the system store), closing connections after `idle` without a query.
    ///
    /// # Errors
    /// If `auth_name` is not a valid DNS name or rustls cannot be set up.
    pub fn new(
        addr: SocketAddr,
        auth_name: Option<&str>,
        ca: Option<&[CertificateDer<'static>]>,
        idle: Duration,
    ) -> Result<Pool, String> {
        let name = match auth_name {
            Some(n) => ServerName::try_from(n.to_owned()).map_err(|e| format!("`{n}`: {e}"))?,
            None => ServerName::IpAddress(addr.ip().into()),
        };
        Ok(Pool {
            addr,
            name,
            connector: TlsConnector::from(client_config(roots(ca))?),
            idle,
            conns: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(0),
        })
    }

    /// Open connections (for tests and status).
    pub fn open_connections(&self) -> usize {
        let mut conns = lock(&self.conns);
        conns.retain(|c| !c.is_closed());
        conns.len()
    }

    /// One attempt: sends `q` (with `opt` as its EDNS options, or without OPT if `None`) on
    /// a pooled connection (opening one if needed) and waits up to `limit` for the reply
    /// with our ID and question.
    ///
    /// # Errors
    /// A [`TlsFailure`]: the error (`None` for the time limit) and the connection use.
    pub async fn exchange(
        &self,
        q: &Query<'_>,
        opt: Option<&[u8]>,
        limit: Duration,
    ) -> Result<TlsAnswer, TlsFailure> {
        let deadline = Instant::now() + limit;
        let mut last = None;
        // At most two tries: the second only when a connection we reused turned out to be
        // closed by the server (its idle timeout may be shorter than ours).
        for _ in 0..2 {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let (conn, ticket) = self.join().map_err(|e| TlsFailure {
                error: Some(e),
                conn: None,
            })?;
            let mut msg = wire::upstream_query_with(q, ticket.id, opt);
            pad_query(&mut msg, PADDING_BLOCK);
            let Some(frame) = frame(&msg) else {
                conn.forget(ticket.id);
                return Err(TlsFailure {
                    error: Some(TlsError::Mismatch),
                    conn: None,
                });
            };
            let reused = ticket.reused;
            let outcome = ticket.send(frame, deadline).await;
            let conn_use = conn.usage(reused);
            match outcome {
                Ok(bytes) => {
                    let Some(reply) = accept(&bytes, q.question) else {
                        return Err(TlsFailure {
                            error: Some(TlsError::Mismatch),
                            conn: Some(conn_use),
                        });
                    };
                    return Ok(TlsAnswer {
                        bytes,
                        reply,
                        conn: conn_use,
                    });
                }
                Err(Some(TlsError::Closed(e))) if reused && last.is_none() => {
                    tracing::debug!(upstream = %self.addr, error = %e, "reused DoT connection was closed; retrying on a new one");
                    last = Some(TlsFailure {
                        error: Some(TlsError::Closed(e)),
                        conn: Some(conn_use),
                    });
                }
                Err(None) => {
                    // A reliable transport that did not answer in time: do not put more
                    // queries on this connection.
                    conn.retire();
                    return Err(TlsFailure {
                        error: None,
                        conn: Some(conn_use),
                    });
                }
                Err(error) => {
                    return Err(TlsFailure {
                        error,
                        conn: Some(conn_use),
                    })
                }
            }
        }
        Err(last.unwrap_or(TlsFailure {
            error: None,
            conn: None,
        }))
    }

    /// Picks a connection with room (the first, so queries pack onto few connections) or
    /// opens one, and reserves an ID in its pending table.
    fn join(&self) -> Result<(Arc<Conn>, Ticket), TlsError> {
        let mut conns = lock(&self.conns);
        conns.retain(|c| !c.is_closed());
        for c in conns.iter() {
            if let Some(t) = c.reserve() {
                return Ok((Arc::clone(c), t));
            }
        }
        if conns.len() >= MAX_CONNS {
            return Err(TlsError::Busy);
        }
        let (conn, rx) = Conn::new(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let ticket = conn.reserve().ok_or(TlsError::Busy)?;
        conns.push(Arc::clone(&conn));
        drop(conns);
        tokio::spawn(run(
            Arc::clone(&conn),
            rx,
            self.addr,
            self.name.clone(),
            self.connector.clone(),
            self.idle,
        ));
        Ok((conn, ticket))
    }
}

type ReplySender = oneshot::Sender<Result<Vec<u8>, TlsError>>;

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Connecting,
    Open { handshake: Duration, resumed: bool },
    Closed,
}

struct ConnState {
    /// Queries sent (or queued) on this connection and not yet answered, by message ID.
    pending: FxHashMap<u16, ReplySender>,
    phase: Phase,
    /// Last time a query joined or a reply came; the idle timer counts from here.
    last_active: Instant,
    /// No new queries (one timed out here); closed once `pending` is empty.
    retired: bool,
}

struct Conn {
    serial: u64,
    /// Framed queries for the writer.
    tx: mpsc::Sender<Vec<u8>>,
    state: Mutex<ConnState>,
}

/// A reserved ID on a connection; dropping it frees the ID.
struct Ticket {
    conn: Arc<Conn>,
    id: u16,
    reused: bool,
    rx: Option<oneshot::Receiver<Result<Vec<u8>, TlsError>>>,
}

impl Ticket {
    /// Queues the framed query and waits for the reply. `Err(None)` is the deadline.
    async fn send(
        mut self,
        frame: Vec<u8>,
        deadline: Instant,
    ) -> Result<Vec<u8>, Option<TlsError>> {
        let Some(rx) = self.rx.take() else {
            return Err(Some(TlsError::Closed("no reply slot".into())));
        };
        if self.conn.tx.try_send(frame).is_err() {
            return Err(Some(TlsError::Closed("connection is gone".into())));
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(r)) => r.map_err(Some),
            Ok(Err(_)) => Err(Some(TlsError::Closed("connection is gone".into()))),
            Err(_) => Err(None),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.conn.forget(self.id);
    }
}

impl Conn {
    fn new(serial: u64) -> (Arc<Conn>, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel(MAX_PENDING_PER_CONN);
        let conn = Arc::new(Conn {
            serial,
            tx,
            state: Mutex::new(ConnState {
                pending: FxHashMap::default(),
                phase: Phase::Connecting,
                last_active: Instant::now(),
                retired: false,
            }),
        });
        (conn, rx)
    }

    fn state(&self) -> MutexGuard<'_, ConnState> {
        lock(&self.state)
    }

    fn is_closed(&self) -> bool {
        let s = self.state();
        s.phase == Phase::Closed || (s.retired && s.pending.is_empty())
    }

    /// Reserves a fresh random ID if the connection takes new queries and has room.
    fn reserve(self: &Arc<Self>) -> Option<Ticket> {
        let mut s = self.state();
        if s.phase == Phase::Closed || s.retired || s.pending.len() >= MAX_PENDING_PER_CONN {
            return None;
        }
        // The table holds at most 64 of 65536 IDs: a free one is found in a few tries; the
        // bound keeps the loop finite whatever the random source does.
        let mut id: u16 = rand::random();
        for _ in 0..64 {
            if !s.pending.contains_key(&id) {
                break;
            }
            id = rand::random();
        }
        if s.pending.contains_key(&id) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        s.pending.insert(id, tx);
        s.last_active = Instant::now();
        let reused = matches!(s.phase, Phase::Open { .. });
        Some(Ticket {
            conn: Arc::clone(self),
            id,
            reused,
            rx: Some(rx),
        })
    }

    fn forget(&self, id: u16) {
        self.state().pending.remove(&id);
    }

    fn retire(&self) {
        self.state().retired = true;
    }

    fn usage(&self, reused: bool) -> TlsConn {
        let s = self.state();
        let (handshake, resumed) = match s.phase {
            Phase::Open { handshake, resumed } if !reused => (Some(handshake), resumed),
            _ => (None, false),
        };
        TlsConn {
            reused,
            handshake,
            resumed,
        }
    }

    /// Hands a reply to its waiting query; false if no query waits for that ID.
    fn deliver(&self, id: u16, bytes: Vec<u8>) -> bool {
        let mut s = self.state();
        let Some(tx) = s.pending.remove(&id) else {
            return false;
        };
        s.last_active = Instant::now();
        drop(s);
        let _ = tx.send(Ok(bytes));
        true
    }

    /// Marks the connection closed and fails every waiting query with `error`.
    fn close(&self, error: &TlsError) {
        let waiting: Vec<ReplySender> = {
            let mut s = self.state();
            s.phase = Phase::Closed;
            s.pending.drain().map(|(_, tx)| tx).collect()
        };
        for tx in waiting {
            let _ = tx.send(Err(error.clone()));
        }
    }
}

/// The life of one connection: connect and handshake, then write queued queries and read
/// replies until it fails, the server closes it, or it has been idle for `idle`.
async fn run(
    conn: Arc<Conn>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    addr: SocketAddr,
    name: ServerName<'static>,
    connector: TlsConnector,
    idle: Duration,
) {
    let start = Instant::now();
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect(addr, name, &connector)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(upstream = %addr, error = %e, "DoT connection failed");
            conn.close(&e);
            return;
        }
        Err(_) => {
            let e = TlsError::Handshake("timed out".into());
            tracing::debug!(upstream = %addr, "DoT connect/handshake timed out");
            conn.close(&e);
            return;
        }
    };
    let handshake = start.elapsed();
    let resumed = stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
    {
        let mut s = conn.state();
        if s.phase == Phase::Connecting {
            s.phase = Phase::Open { handshake, resumed };
        }
    }
    tracing::debug!(upstream = %addr, conn = conn.serial, ?handshake, resumed, "DoT connection open");
    let (rd, wr) = tokio::io::split(stream);
    let error = tokio::select! {
        e = read_loop(rd, &conn) => e,
        e = write_loop(wr, &mut rx) => e,
        () = idle_loop(&conn, idle) => TlsError::Closed("idle".into()),
    };
    tracing::debug!(upstream = %addr, conn = conn.serial, error = %error, "DoT connection closed");
    conn.close(&error);
}

async fn connect(
    addr: SocketAddr,
    name: ServerName<'static>,
    connector: &TlsConnector,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| TlsError::Connect(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| TlsError::Handshake(handshake_error(&e)))
}

/// rustls reports verification failures as `InvalidData` wrapping a `rustls::Error`; show
/// that error itself ("invalid peer certificate: Expired", "... NotValidForName").
fn handshake_error(e: &io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}

async fn read_loop(mut rd: ReadHalf<TlsStream<TcpStream>>, conn: &Conn) -> TlsError {
    loop {
        let len = match rd.read_u16().await {
            Ok(n) => usize::from(n),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return TlsError::Closed("closed by the server".into())
            }
            Err(e) => return TlsError::Closed(e.to_string()),
        };
        let mut buf = vec![0u8; len];
        if let Err(e) = rd.read_exact(&mut buf).await {
            return TlsError::Closed(e.to_string());
        }
        let Some(id) = buf.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            tracing::debug!(
                conn = conn.serial,
                len,
                "DoT frame too short for a DNS header; ignored"
            );
            continue;
        };
        if !conn.deliver(id, buf) {
            tracing::debug!(
                conn = conn.serial,
                id,
                "DoT reply for no waiting query; ignored"
            );
        }
    }
}

async fn write_loop(
    mut wr: WriteHalf<TlsStream<TcpStream>>,
    rx: &mut mpsc::Receiver<Vec<u8>>,
) -> TlsError {
    let mut batch = Vec::with_capacity(1024);
    loop {
        let Some(first) = rx.recv().await else {
            return TlsError::Closed("pool dropped".into());
        };
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(f) => batch.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        if let Err(e) = wr.write_all(&batch).await {
            return TlsError::Closed(e.to_string());
        }
        if let Err(e) = wr.flush().await {
            return TlsError::Closed(e.to_string());
        }
    }
}

/// Returns when the connection has had nothing in flight for `idle`, or was retired and
/// has drained. Marks it closed under the lock, so no query can join after the check.
async fn idle_loop(conn: &Conn, idle: Duration) {
    // Each pass sleeps at least 10 ms, so this loop cannot spin.
    loop {
        let wake = {
            let mut s = conn.state();
            let now = Instant::now();
            let quiet = s.pending.is_empty();
            if quiet && (s.retired || now.saturating_duration_since(s.last_active) >= idle) {
                s.phase = Phase::Closed;
                return;
            }
            if quiet {
                s.last_active + idle
            } else {
                now + idle.min(Duration::from_millis(250))
            }
        };
        let earliest = Instant::now() + Duration::from_millis(10);
        tokio::time::sleep_until(wake.max(earliest).into()).await;
    }
}

/// Adds 2-byte length framing (RFC 1035 §4.2.2); `None` if the message is too long.
fn frame(msg: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(msg.len()).ok()?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    Some(out)
}

/// The structure of the reply if it answers our question (the ID was matched by the
/// pending table): QR=1 and our question, or no question with FORMERR, REFUSED or NOTIMP
/// (a server that could not parse the query need not echo it, RFC 1035).
fn accept(pkt: &[u8], question: &[u8]) -> Option<Reply> {
    let reply = wire::walk_reply(pkt).ok()?;
    if reply.flags & 0x8000 == 0 {
        return None;
    }
    let ours = if reply.question.is_empty() {
        matches!(
            reply.rcode,
            wire::rcode::FORMERR | wire::rcode::REFUSED | wire::rcode::NOTIMP
        )
    } else {
        wire::same_question(pkt, &reply, question)
    };
    ours.then_some(reply)
}

/// Pads a query whose last record is its OPT record to a multiple of `block` bytes with
/// an EDNS Padding option (RFC 7830). A query without OPT is left alone.
pub fn pad_query(msg: &mut Vec<u8>, block: usize) {
    let Ok(parsed) = wire::walk_reply(msg) else {
        return;
    };
    let Some(opt) = parsed.opt() else {
        return;
    };
    if opt.end != msg.len() || opt.rdata.start < 2 {
        return;
    }
    let rdlen_at = opt.rdata.start - 2;
    let with_header = msg.len() + 4;
    let pad = (block - with_header % block) % block;
    let Ok(new_rdlen) = u16::try_from(opt.rdata.len() + 4 + pad) else {
        return;
    };
    let Ok(pad16) = u16::try_from(pad) else {
        return;
    };
    msg.extend_from_slice(&OPT_PADDING.to_be_bytes());
    msg.extend_from_slice(&pad16.to_be_bytes());
    msg.resize(msg.len() + pad, 0);
    if let Some(slot) = msg.get_mut(rdlen_at..rdlen_at + 2) {
        slot.copy_from_slice(&new_rdlen.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_bytes(name: &[u8]) -> Vec<u8> {
        let mut question = name.to_vec();
        question.extend_from_slice(&[0, 1, 0, 1]);
        let q = Query {
            id: 0,
            flags: wire::QueryFlags {
                rd: true,
                cd: false,
                ad: false,
            },
            question: &question,
            qtype: 1,
            qclass: 1,
            edns: None,
        };
        wire::upstream_query(&q, 0x1234)
    }

    #[test]
    fn padding_fills_to_the_block_and_stays_parseable() {
        for name in [
            &b"\x03www\x07example\x04test\x00"[..],
            b"\x00",
            &[&[63u8][..], &[b'a'; 63], b"\x00"].concat(),
        ] {
            let mut msg = query_bytes(name);
            let before = msg.len();
            pad_query(&mut msg, 128);
            assert_eq!(msg.len() % 128, 0, "padded to the block");
            assert!(msg.len() > before);
            let r = wire::walk_reply(&msg).unwrap();
            let opt = r.opt().unwrap();
            assert_eq!(opt.end, msg.len());
            let rdata = &msg[opt.rdata.clone()];
            assert_eq!(&rdata[..2], &OPT_PADDING.to_be_bytes());
            let len = usize::from(u16::from_be_bytes([rdata[2], rdata[3]]));
            assert_eq!(len, rdata.len() - 4);
            assert!(rdata[4..].iter().all(|b| *b == 0));
        }
    }

    #[test]
    fn padding_leaves_a_query_without_opt_alone() {
        let mut msg = query_bytes(b"\x00");
        // Drop the OPT record: ARCOUNT 0 and cut its 11 bytes.
        msg.truncate(msg.len() - 11);
        msg[11] = 0;
        let before = msg.clone();
        pad_query(&mut msg, 128);
        assert_eq!(msg, before);
    }

    #[test]
    fn frames_carry_the_length() {
        assert_eq!(frame(b"abc").unwrap(), b"\x00\x03abc");
        assert!(frame(&vec![0u8; 70_000]).is_none());
    }

    #[test]
    fn the_pending_table_is_bounded_and_ids_are_unique() {
        let (conn, _rx) = Conn::new(1);
        let tickets: Vec<Ticket> = (0..MAX_PENDING_PER_CONN)
            .map(|_| conn.reserve().expect("room"))
            .collect();
        let ids: std::collections::HashSet<u16> = tickets.iter().map(|t| t.id).collect();
        assert_eq!(
            ids.len(),
            MAX_PENDING_PER_CONN,
            "IDs unique on a connection"
        );
        assert!(conn.reserve().is_none(), "full");
        assert!(tickets.iter().all(|t| !t.reused), "joined while connecting");
        drop(tickets);
        assert!(conn.reserve().is_some(), "dropped tickets free their IDs");
    }

    #[test]
    fn replies_go_to_their_ids_and_a_close_fails_the_rest() {
        let (conn, _rx) = Conn::new(2);
        let mut a = conn.reserve().unwrap();
        let mut b = conn.reserve().unwrap();
        let (mut ra, mut rb) = (a.rx.take().unwrap(), b.rx.take().unwrap());
        assert!(conn.deliver(b.id, b"for b".to_vec()));
        assert!(!conn.deliver(b.id, b"again".to_vec()), "one reply per ID");
        assert_eq!(rb.try_recv().unwrap().unwrap(), b"for b");
        conn.close(&TlsError::Closed("test".into()));
        assert!(matches!(ra.try_recv().unwrap(), Err(TlsError::Closed(_))));
        assert!(conn.is_closed());
        assert!(
            conn.reserve().is_none(),
            "a closed connection takes no query"
        );
    }

    #[test]
    fn a_retired_connection_takes_no_new_query_and_closes_when_drained() {
        let (conn, _rx) = Conn::new(3);
        let t = conn.reserve().unwrap();
        conn.retire();
        assert!(conn.reserve().is_none());
        assert!(!conn.is_closed(), "still has a query in flight");
        drop(t);
        assert!(conn.is_closed());
    }

    #[tokio::test]
    async fn a_server_that_stalls_cannot_make_the_pool_grow_without_bound() {
        // Accepts connections and never answers the ClientHello.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut streams = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                streams.push(s);
            }
        });
        let pool = Arc::new(
            Pool::new(addr, Some("dot.test"), Some(&[]), Duration::from_secs(10)).unwrap(),
        );
        let question = b"\x03www\x04test\x00\x00\x01\x00\x01".to_vec();
        let mut waiting = Vec::new();
        for _ in 0..MAX_CONNS * MAX_PENDING_PER_CONN {
            let (pool, question) = (Arc::clone(&pool), question.clone());
            waiting.push(tokio::spawn(async move {
                let q = test_query(&question);
                pool.exchange(&q, Some(&[]), Duration::from_secs(2))
                    .await
                    .map(|_| ())
            }));
        }
        // Let them all join their connections.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let q = test_query(&question);
        let extra = pool.exchange(&q, Some(&[]), Duration::from_secs(2)).await;
        assert!(
            matches!(
                extra,
                Err(TlsFailure {
                    error: Some(TlsError::Busy),
                    ..
                })
            ),
            "the query past the bound is refused at once: {extra:?}"
        );
        assert!(pool.open_connections() <= MAX_CONNS);
        for w in waiting {
            let r = w.await.unwrap();
            assert!(matches!(r, Err(TlsFailure { error: None, .. })), "{r:?}");
        }
        held.abort();
    }

    fn test_query(question: &[u8]) -> Query<'_> {
        Query {
            id: 0,
            flags: wire::QueryFlags {
                rd: true,
                cd: false,
                ad: false,
            },
            question,
            qtype: 1,
            qclass: 1,
            edns: None,
        }
    }
}
