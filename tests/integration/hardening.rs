//! Issue 5 (hardening), one test per promise, each of which fails without it:
//!
//! 1. `allow` is enforced on UDP and TCP (REFUSED, one event, never forwarded, not even a
//!    cache hit); a non-loopback `listen` without `allow` is a config error.
//! 2. A flood of forged upstream replies (wrong ID, question, type, source port, QR=0)
//!    ahead of the real one changes neither the answer nor the cache; upstream queries use
//!    fresh random IDs and source ports.
//! 3. ≥ 100,000 random and mutated packets over UDP and thousands of TCP frames with random
//!    length prefixes (deterministic xorshift, seed printed) leave the real binary alive
//!    and answering correctly.
//! 4. With every upstream dead, a burst of 10,000 queries gets SERVFAIL within 5 s (or is
//!    dropped), RSS stays bounded, service resumes as soon as an upstream is back; 1,000
//!    idle TCP connections do not lock out new UDP or TCP clients.
//! 5. A dead primary is skipped (no timeout paid) and used first again once it recovers;
//!    a slow server is abandoned at `timeout_ms` and its late reply ignored.
//! 6. SIGHUP with broken configs under load fails no query; torn, empty, binary and huge
//!    servers files warn and fall back to the static servers; a servers file naming
//!    splitdns itself is ignored (no loop).
//! 7. SIGTERM under load answers every query already received and exits 0, bounded.
//!
//! Figures (packets, timings, RSS) are printed with `eprintln!`; run with `--nocapture`
//! to see them.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use splitdns::config::{self, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

use crate::client::{self, query, rdata_strings, CLIENT_TIMEOUT};
use crate::daemon::{bounded, toml_str, zone, zone_addrs, Daemon, TempDir, NO_CACHE};
use crate::events;
use crate::fake::{self, public_table, Behaviour, Fake, Table, POISON};
use crate::process::Server;
use crate::rng::XorShift;

const LIMIT: Duration = Duration::from_secs(40);
/// What `public_table` (and the spoofer's real reply) answers for `www.example.com. A`.
const WWW: &str = "93.184.216.34";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A config file for the real binary: `listen` on port 0, `body` (top-level keys first,
/// then tables), events to `events` ("off" or a path).
pub(crate) fn binary_config(dir: &TempDir, events: &str, body: &str) -> PathBuf {
    dir.write(
        "splitdns.toml",
        &format!(
            "listen = [\"127.0.0.1:0\"]\n{body}\n[events]\noutput = {}\n",
            toml_str(events)
        ),
    )
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A `/proc/PID/status` field in kB (VmRSS, VmHWM).
pub(crate) fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

pub(crate) fn rss_kb(pid: u32) -> u64 {
    proc_status_kb(pid, "VmRSS")
}

/// (largest receive queue in bytes, total drops) over the UDP sockets bound to `addr`
/// (several with SO_REUSEPORT), from /proc/net/udp. Zeros where /proc is unavailable.
fn udp_socket_stats(addr: SocketAddr) -> (u64, u64) {
    let IpAddr::V4(ip) = addr.ip() else {
        return (0, 0);
    };
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        addr.port()
    );
    let text = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let (mut queue, mut drops) = (0u64, 0u64);
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.get(1) != Some(&want.as_str()) {
            continue;
        }
        if let Some(rx) = cols.get(4).and_then(|c| c.split(':').nth(1)) {
            queue = queue.max(u64::from_str_radix(rx, 16).unwrap_or(0));
        }
        drops += cols.get(12).and_then(|d| d.parse().ok()).unwrap_or(0);
    }
    (queue, drops)
}

/// The soft RLIMIT_NOFILE of this process, from /proc/self/limits.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A UDP exchange from a chosen local address (to be inside or outside `allow`).
async fn udp_from(local: Ipv4Addr, server: SocketAddr, msg: &Message) -> Message {
    let s = UdpSocket::bind((local, 0)).await.unwrap();
    s.connect(server).await.unwrap();
    s.send(&client::encode(msg)).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = timeout(CLIENT_TIMEOUT, s.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no UDP reply to {local} within {CLIENT_TIMEOUT:?}"))
        .unwrap();
    client::decode(&buf[..n])
}

/// A TCP exchange from a chosen local address.
async fn tcp_from(local: Ipv4Addr, server: SocketAddr, msg: &Message) -> Message {
    let exchange = async {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::from((local, 0))).unwrap();
        let mut stream = sock.connect(server).await.unwrap();
        let bytes = client::encode(msg);
        let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await.unwrap();
        client::read_frame(&mut stream).await
    };
    let reply = timeout(CLIENT_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("no TCP reply to {local} within {CLIENT_TIMEOUT:?}"));
    client::decode(&reply)
}

/// One TCP exchange that reports failure instead of panicking (for load generators).
pub(crate) async fn tcp_try(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.ok()?;
        let mut framed = u16::try_from(bytes.len()).ok()?.to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        stream.write_all(&framed).await.ok()?;
        let len = stream.read_u16().await.ok()?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.ok()?;
        Some(buf)
    };
    timeout(wait, exchange).await.ok().flatten()
}

/// Why a reply is not the normal answer for `www.example.com. A` to `id`, if it is not.
fn not_www(reply: Option<&[u8]>, id: u16) -> Option<String> {
    let Some(bytes) = reply else {
        return Some("no reply".to_owned());
    };
    let Ok(m) = Message::from_vec(bytes) else {
        return Some(format!("undecodable reply {bytes:02x?}"));
    };
    let data = rdata_strings(&m.answers);
    if m.metadata.id != id || m.metadata.response_code != ResponseCode::NoError || data != [WWW] {
        return Some(format!(
            "id {} (want {id}), rcode {:?}, answers {data:?}",
            m.metadata.id, m.metadata.response_code
        ));
    }
    None
}

/// Clients querying `www.example.com. A` back to back (every fifth over TCP) until
/// stopped, counting correct answers and recording every failure.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(udp: SocketAddr, tcp: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|c| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                tokio::spawn(async move {
                    let mut n = 0usize;
                    while !stop.load(Ordering::SeqCst) {
                        let q = query("www.example.com.", RecordType::A);
                        let bytes = client::encode(&q);
                        let wait = Duration::from_secs(2);
                        let (proto, reply) = if (n + c) % 5 == 4 {
                            ("tcp", tcp_try(tcp, &bytes, wait).await)
                        } else {
                            ("udp", client::udp_raw_wait(udp, &bytes, wait).await)
                        };
                        match not_www(reply.as_deref(), q.metadata.id) {
                            None => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Some(why) => failures
                                .lock()
                                .unwrap()
                                .push(format!("{proto} query {n} of client {c}: {why}")),
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    /// Stop the clients; return (correct answers, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::SeqCst), failures)
    }
}

/// Lines of the process's stderr at WARN level.
pub(crate) fn warnings(server: &Server) -> Vec<String> {
    server
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("WARN"))
        .collect()
}

/// Held by the two CPU-heavy tests (the hostile flood and the dead-upstream burst) so they
/// do not run at the same time on a small machine: each measures latency or pacing that
/// the other would distort.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------
// 1. Not an open resolver
// ---------------------------------------------------------------------------------------

#[test]
fn allow_is_enforced_on_udp_and_tcp() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = Daemon::start(&format!(
            "allow = [\"127.0.0.2/32\"]\n{}",
            zone(".", &[&p], "")
        ))
        .await;
        let allowed = Ipv4Addr::new(127, 0, 0, 2);
        // The allowed client is answered on both transports (and the answer is now cached).
        let r = udp_from(allowed, d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(rdata_strings(&r.answers), [WWW]);
        let r = tcp_from(allowed, d.tcp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(rdata_strings(&r.answers), [WWW]);
        let asked = p.count();

        // Clients outside `allow` get REFUSED, for a cached name too (the UDP fast path
        // must check `allow` before answering a hit), and nothing is forwarded.
        let mut refused = 0;
        for outside in [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 3)] {
            for name in ["www.example.com.", "uncached.example.com."] {
                let q = query(name, RecordType::A);
                for (proto, r) in [
                    ("udp", udp_from(outside, d.udp, &q).await),
                    ("tcp", tcp_from(outside, d.tcp, &q).await),
                ] {
                    assert_eq!(
                        r.metadata.response_code,
                        ResponseCode::Refused,
                        "{proto} from {outside} for {name}"
                    );
                    assert_eq!(r.metadata.id, q.metadata.id);
                    assert!(r.answers.is_empty(), "{proto} from {outside}: no data");
                    refused += 1;
                }
            }
        }
        assert_eq!(p.count(), asked, "refused queries are never forwarded");

        // One event per refused query, saying why.
        let all = d.events(2 + refused).await;
        let refused_events: Vec<_> = all
            .iter()
            .filter(|e| e.rcode.as_deref() == Some("REFUSED"))
            .collect();
        assert_eq!(refused_events.len(), refused, "{all:#?}");
        for e in &refused_events {
            assert_eq!(
                e.error.as_deref(),
                Some("refused: client not allowed"),
                "{e:?}"
            );
            assert!(
                e.client.starts_with("127.0.0.1:") || e.client.starts_with("127.0.0.3:"),
                "{e:?}"
            );
        }
        let tcp = refused_events.iter().filter(|e| e.proto == "tcp").count();
        assert_eq!(tcp, refused / 2, "refusals on both transports");
    });
}

/// A UDP socket of this user already on the port with `SO_REUSEPORT` (another splitdns,
/// an old one still draining its queries) makes `bind` fail: Linux would otherwise let our
/// sockets join its group and split the queries between the two processes in silence.
/// (With port 0 the same rule keeps a fresh port from landing in such a group, the cause
/// of answers from the wrong daemon in a busy test run.)
#[test]
fn a_udp_port_held_by_another_reuseport_socket_is_not_shared() {
    use socket2::{Domain, Protocol, Socket, Type};
    let squatter = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    squatter.set_reuse_port(true).unwrap();
    squatter
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    let port = squatter
        .local_addr()
        .unwrap()
        .as_socket()
        .expect("an inet address")
        .port();
    // No TCP listener on the port: only the UDP side can notice.
    let path = Path::new("/etc/splitdns/splitdns.toml");
    let text = format!(
        "listen = [\"127.0.0.1:{port}\"]\n[[zone]]\nname = \".\"\nservers = [\"127.0.0.1:5300\"]\n"
    );
    let c = Config::from_toml_str(&text, path).unwrap();
    match splitdns::app::bind(&c) {
        Ok(s) => panic!(
            "bound {:?} beside another process's socket on port {port}",
            s.udp_addrs()
        ),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("udp") && msg.contains(&port.to_string()),
                "{msg}"
            );
        }
    }
    drop(squatter);
}

#[test]
fn non_loopback_listen_without_allow_is_a_config_error() {
    let path = Path::new("/etc/splitdns/splitdns.toml");
    let zones = "[[zone]]\nname = \".\"\nservers = [\"127.0.0.1:5300\"]\n";
    for open in ["0.0.0.0:53", "[::]:53", "192.0.2.1:53"] {
        let text = format!("listen = [\"127.0.0.1:53\", {}]\n{zones}", toml_str(open));
        let err = match Config::from_toml_str(&text, path) {
            Ok(_) => panic!("listening on {open} without `allow` was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("allow"), "the error names `allow`: {err}");
        assert!(
            err.contains(open) || err.contains(open.trim_end_matches(":53")),
            "the error names the address: {err}"
        );
        // With an explicit list the same listen is fine, and only that list is allowed.
        let text = format!(
            "listen = [\"127.0.0.1:53\", {}]\nallow = [\"192.0.2.0/24\"]\n{zones}",
            toml_str(open)
        );
        let c = Config::from_toml_str(&text, path).unwrap_or_else(|e| panic!("{open}: {e}"));
        assert!(config::is_allowed(&c.allow, "192.0.2.77".parse().unwrap()));
        assert!(!config::is_allowed(
            &c.allow,
            "198.51.100.1".parse().unwrap()
        ));
    }
    // Loopback only: no `allow` needed, and the default admits loopback clients only.
    let text = format!("listen = [\"127.0.0.1:53\", \"[::1]:53\"]\n{zones}");
    let c = Config::from_toml_str(&text, path).unwrap();
    assert!(config::is_allowed(&c.allow, "127.0.0.1".parse().unwrap()));
    assert!(config::is_allowed(&c.allow, "::1".parse().unwrap()));
    assert!(!config::is_allowed(&c.allow, "192.0.2.1".parse().unwrap()));
}

// ---------------------------------------------------------------------------------------
// 2. Forgery resistance
// ---------------------------------------------------------------------------------------

/// Forged replies sent ahead of each real one.
const FLOOD: usize = 200;

/// What the spoofing responder recorded about one upstream query it received.
#[derive(Clone, Debug)]
struct Received {
    id: u16,
    qname: String,
    source: SocketAddr,
    /// Forged replies sent before the real one.
    forged: usize,
    /// splitdns's loop marker: the same in a retransmitted copy of a query.
    marker: Option<String>,
}

/// An upstream that answers every query correctly (A → `WWW`, other types → NODATA) but
/// first sends a flood of forged replies carrying `POISON`: wrong ID, wrong question name,
/// wrong question type, right everything from a different source port, and right
/// everything with QR=0. Paced in small batches so they arrive rather than overflow.
struct Spoofer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Drop for Spoofer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Spoofer {
    async fn start(flood: usize) -> Spoofer {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(question) = q.queries.first() else {
                    continue;
                };
                let qname = question.name().to_ascii();
                for i in 0..flood {
                    let (bytes, from_other) = forged_reply(&q, i);
                    let s = if from_other { &other } else { &sock };
                    let _ = s.send_to(&bytes, peer).await;
                    if i % 40 == 39 {
                        sleep(Duration::from_millis(2)).await;
                    }
                }
                rec.lock().unwrap().push(Received {
                    marker: fake::loop_marker(&q),
                    id: q.metadata.id,
                    qname,
                    source: peer,
                    forged: flood,
                });
                let _ = sock
                    .send_to(&spoof_reply(&q, false).to_vec().unwrap(), peer)
                    .await;
            }
        });
        Spoofer {
            addr,
            received,
            task,
        }
    }

    /// The queries received for `qname` (case-insensitive). Other queries splitdns may
    /// send on its own (a loop probe, say) are not counted.
    fn received(&self, qname: &str) -> Vec<Received> {
        let mut markers = std::collections::HashSet::new();
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.qname.eq_ignore_ascii_case(qname))
            // A retransmitted copy (same marker, new ID) is the same question asked once.
            .filter(|r| r.marker.as_ref().is_none_or(|m| markers.insert(m.clone())))
            .cloned()
            .collect()
    }
}

/// The reply to `q`: the real one (A → WWW), or a poisoned one (A → POISON, TTL 86400).
fn spoof_reply(q: &Message, poison: bool) -> Message {
    let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.queries = q.queries.clone();
    if q.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        r.edns = Some(e);
    }
    if let Some(question) = q.queries.first() {
        if poison {
            r.answers.push(Record::from_rdata(
                question.name().clone(),
                86_400,
                RData::A(A(POISON)),
            ));
        } else if question.query_type() == RecordType::A {
            r.answers.push(Record::from_rdata(
                question.name().clone(),
                300,
                RData::A(A(WWW.parse().unwrap())),
            ));
        }
    }
    r
}

/// Forged reply number `i` to `q`, and whether it goes out from the other socket.
fn forged_reply(q: &Message, i: usize) -> (Vec<u8>, bool) {
    let mut bad = spoof_reply(q, true);
    let mut from_other = false;
    match i % 5 {
        // Wrong ID (never the right one: i < 65535).
        0 => bad.metadata.id = q.metadata.id.wrapping_add(1 + i as u16),
        // Same ID, another name (`evil.` + the name) and the poison for that name.
        1 => {
            let evil = fake::name(&format!("evil.{}", bad.queries[0].name()));
            bad.queries[0].set_name(evil.clone());
            bad.answers[0].name = evil;
        }
        // Same ID and name, another type (AAAA, or A for an AAAA query).
        2 => {
            let other = if bad.queries[0].query_type() == RecordType::A {
                RecordType::AAAA
            } else {
                RecordType::A
            };
            bad.queries[0].set_query_type(other);
        }
        // Everything right, from a different source port.
        3 => from_other = true,
        // Everything right but QR=0: not a response.
        _ => bad.metadata.message_type = MessageType::Query,
    }
    (bad.to_vec().unwrap(), from_other)
}

/// The forged-reply flood against one upstream, with `extra` zone lines choosing the
/// socket policy.
async fn forged_flood(extra: &str) {
    let s = Spoofer::start(FLOOD).await;
    let d = Daemon::start(&zone_addrs(
        ".",
        &[toml_str(&s.addr.to_string())],
        &format!("timeout_ms = 2000\n{extra}"),
    ))
    .await;
    let q = query("www.example.com.", RecordType::A);
    let r = client::udp(d.udp, &q).await;
    let www = s.received("www.example.com.");
    assert_eq!(www.len(), 1, "{www:?}");
    assert_eq!(www[0].forged, FLOOD, "the flood went first");
    assert_eq!(r.metadata.id, q.metadata.id);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        rdata_strings(&r.answers),
        [WWW],
        "the real answer, not {POISON}"
    );
    let e = d.event_for("www.example.com").await;
    assert_eq!(
        e.attempt_outcomes(),
        [(s.addr.to_string(), "udp".into(), "answer".into())],
        "one attempt, answered by the real reply"
    );

    // A cache hit returns the real data: nothing forged replaced it.
    let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
    assert_eq!(rdata_strings(&r.answers), [WWW]);
    assert_eq!(
        s.received("www.example.com.").len(),
        1,
        "the second query was a cache hit"
    );

    // The forged question (evil.www.example.com) and type (AAAA) never entered the
    // cache: asking for them goes upstream and gets the real answer.
    let r = client::udp(d.udp, &query("evil.www.example.com.", RecordType::A)).await;
    assert_eq!(rdata_strings(&r.answers), [WWW]);
    let r = client::udp(d.udp, &query("www.example.com.", RecordType::AAAA)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty(), "real AAAA is NODATA: {:?}", r.answers);
    assert_eq!(
        s.received("evil.www.example.com.").len(),
        1,
        "went upstream"
    );
    assert_eq!(s.received("www.example.com.").len(), 2, "went upstream");
}

/// Remote upstreams (here forced with `shared_sockets = false`, since tests may only
/// talk to loopback): a fresh random port per query.
#[test]
fn forged_reply_flood_changes_neither_the_answer_nor_the_cache() {
    bounded(LIMIT, forged_flood("shared_sockets = false"));
}

/// A loopback upstream on a long-lived shared socket: the demultiplexer drops every forged
/// reply (wrong ID, question, type, QR=0; the other source port is dropped by the kernel).
#[test]
fn forged_reply_flood_on_a_shared_socket_changes_neither_the_answer_nor_the_cache() {
    bounded(LIMIT, forged_flood(""));
}

#[test]
fn upstream_queries_use_fresh_random_ids_and_source_ports() {
    bounded(LIMIT, async {
        let s = Spoofer::start(0).await;
        // Loopback would get a shared socket: force the policy remote servers get.
        let d = Daemon::start(&format!(
            "{NO_CACHE}{}",
            zone_addrs(
                ".",
                &[toml_str(&s.addr.to_string())],
                "shared_sockets = false"
            )
        ))
        .await;
        const N: usize = 8;
        let mut client_ids = Vec::new();
        for i in 0..N {
            // The same client ID every time: splitdns must not reuse or derive from it.
            let mut q = query(&format!("n{i}.example.com."), RecordType::A);
            q.metadata.id = 0x4242;
            client_ids.push(q.metadata.id);
            let r = client::udp(d.udp, &q).await;
            assert_eq!(r.metadata.id, 0x4242);
            assert_eq!(rdata_strings(&r.answers), [WWW]);
        }
        let got: Vec<Received> = (0..N)
            .flat_map(|i| s.received(&format!("n{i}.example.com.")))
            .collect();
        assert_eq!(got.len(), N, "{got:?}");
        let ids: Vec<u16> = got.iter().map(|r| r.id).collect();
        let ports: Vec<u16> = got.iter().map(|r| r.source.port()).collect();
        let distinct = |v: &[u16]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v.dedup();
            v.len()
        };
        // Random 16-bit IDs and kernel-chosen ports: collisions among 8 are rare, two are
        // negligible; a fixed or reused value fails.
        assert!(distinct(&ids) >= N - 1, "upstream IDs repeat: {ids:04x?}");
        assert!(distinct(&ports) >= N - 1, "source ports repeat: {ports:?}");
        let echoed = ids.iter().filter(|&&id| id == 0x4242).count();
        assert!(echoed <= 1, "upstream ID copies the client's: {ids:04x?}");
        // Not a counter: consecutive differences are not all equal.
        let steps = |v: &[u16]| {
            let d: Vec<u16> = v.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
            d.iter().all(|x| *x == d[0])
        };
        assert!(!steps(&ids), "upstream IDs are sequential: {ids:04x?}");
        assert!(!steps(&ports), "source ports are sequential: {ports:?}");
    });
}

/// A loopback upstream is asked over long-lived sockets (one per receive thread, at most
/// one more), with random IDs that no two waiting queries share; with many queries in
/// flight on one socket and forged replies (wrong ID, question, type, QR=0) mixed in,
/// each client still gets its own answer.
#[test]
fn loopback_upstream_shares_sockets_and_replies_are_matched_by_id_and_question() {
    bounded(LIMIT, async {
        let s = Spoofer::start(10).await;
        let d = Daemon::start(&format!(
            "{NO_CACHE}{}",
            zone_addrs(".", &[toml_str(&s.addr.to_string())], "timeout_ms = 3000")
        ))
        .await;
        const N: usize = 48;
        let mut tasks = Vec::new();
        for i in 0..N {
            let addr = d.udp;
            tasks.push(tokio::spawn(async move {
                let name = format!("n{i}.example.com.");
                let q = query(&name, RecordType::A);
                let r = client::udp(addr, &q).await;
                (name, q.metadata.id, r)
            }));
        }
        for t in tasks {
            let (name, id, r) = t.await.unwrap();
            assert_eq!(r.metadata.id, id);
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
            assert_eq!(rdata_strings(&r.answers), [WWW], "{name}: not {POISON}");
            let owner = r.answers[0].name.to_ascii();
            assert!(
                owner.eq_ignore_ascii_case(&name),
                "{name} got the answer for {owner}"
            );
        }
        // At least one upstream query per client query (more if a slow reply made the
        // failover loop retransmit, each copy with its own ID).
        let got: Vec<Received> = (0..N)
            .flat_map(|i| s.received(&format!("n{i}.example.com.")))
            .collect();
        assert!(got.len() >= N, "{got:?}");
        let mut ports: Vec<u16> = got.iter().map(|r| r.source.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert!(
            ports.len() <= splitdns::app::thread_count() + 1,
            "{N} queries came from {} source ports: not shared",
            ports.len()
        );
        let ids: Vec<u16> = got.iter().map(|r| r.id).collect();
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(
            distinct.len() >= got.len() - 2,
            "upstream IDs repeat: {ids:04x?}"
        );
        let steps: Vec<u16> = ids.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
        assert!(
            !steps.iter().all(|x| *x == steps[0]),
            "upstream IDs are sequential: {ids:04x?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// 3. Hostile input
// ---------------------------------------------------------------------------------------

/// Seed of the randomized flood; printed on failure so a run can be replayed.
const FLOOD_SEED: u64 = 0x5eed_f10d_2026_0005;
/// Hostile packets sent over UDP.
const UDP_PACKETS: usize = 100_000;
/// TCP connections and frames per connection (the last one, and sometimes one in the
/// middle, with a random length prefix).
const TCP_CONNS: usize = 300;
const TCP_FRAMES: usize = 10;

const NAMES: &[&str] = &[
    "www.example.com",
    "big.example.com",
    "example.com",
    "a.b.c.d.e.f.example.com",
    "web.service.consul",
    "10.121.168.192.in-addr.arpa",
    "karhu.xyz",
    "x",
    "",
];
const QTYPES: &[u16] = &[1, 28, 15, 16, 33, 12, 255, 6, 43, 0, 65535, 251, 252];

/// A well-formed query with random ID, flags, name case, type and EDNS.
fn valid_query(rng: &mut XorShift) -> Vec<u8> {
    let mut p = Vec::with_capacity(80);
    p.extend_from_slice(&(rng.next() as u16).to_be_bytes());
    let mut flags: u16 = 0x0100;
    if rng.chance(10) {
        flags |= 0x0020; // AD
    }
    if rng.chance(10) {
        flags |= 0x0010; // CD
    }
    p.extend_from_slice(&flags.to_be_bytes());
    let edns = rng.chance(50);
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    let name = NAMES[rng.below(NAMES.len())];
    for label in name.split('.').filter(|l| !l.is_empty()) {
        p.push(label.len() as u8);
        for c in label.bytes() {
            p.push(if rng.chance(30) {
                c.to_ascii_uppercase()
            } else {
                c
            });
        }
    }
    p.push(0);
    p.extend_from_slice(&QTYPES[rng.below(QTYPES.len())].to_be_bytes());
    let class: u16 = if rng.chance(95) { 1 } else { rng.next() as u16 };
    p.extend_from_slice(&class.to_be_bytes());
    if edns {
        let payload = [0u16, 512, 1232, 4096, 65535][rng.below(5)];
        p.push(0);
        p.extend_from_slice(&41u16.to_be_bytes());
        p.extend_from_slice(&payload.to_be_bytes());
        let version = u8::from(rng.chance(5));
        let do_bit = if rng.chance(50) { 0x80 } else { 0 };
        p.extend_from_slice(&[0, version, do_bit, 0]);
        if rng.chance(30) {
            // A client cookie option.
            p.extend_from_slice(&[0, 12, 0, 10, 0, 8]);
            p.extend((0..8).map(|_| rng.byte()));
        } else {
            p.extend_from_slice(&[0, 0]);
        }
    }
    p
}

/// Byte offsets of the question's label-length bytes.
fn label_offsets(p: &[u8]) -> Vec<usize> {
    let mut at = 12;
    let mut out = Vec::new();
    while let Some(&len) = p.get(at) {
        if len == 0 || len >= 64 {
            break;
        }
        out.push(at);
        at += usize::from(len) + 1;
    }
    out
}

/// Apply one random mutation to a packet.
fn mutate(rng: &mut XorShift, p: &mut Vec<u8>) {
    match rng.below(8) {
        // Random bytes of random length.
        0 => {
            let len = rng.below(600);
            *p = (0..len).map(|_| rng.byte()).collect();
        }
        // Bit flips.
        1 => {
            for _ in 0..=rng.below(8) {
                if !p.is_empty() {
                    let i = rng.below(p.len());
                    p[i] ^= 1 << rng.below(8);
                }
            }
        }
        // Truncation.
        2 => {
            let len = rng.below(p.len().max(1));
            p.truncate(len);
        }
        // Count changes.
        3 => {
            let at = 4 + 2 * rng.below(4);
            let v = [0u16, 1, 2, 3, 0xff, 0xffff, rng.next() as u16][rng.below(7)];
            if p.len() >= at + 2 {
                p[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
        }
        // Label corruption: a bad length, a compression pointer (possibly to itself), or
        // an over-long name.
        4 => {
            let labels = label_offsets(p);
            if labels.is_empty() {
                return;
            }
            let at = labels[rng.below(labels.len())];
            match rng.below(3) {
                0 => p[at] = rng.byte(),
                1 => {
                    p[at] = 0xc0 | (rng.byte() & 0x3f);
                    if at + 1 < p.len() {
                        p[at + 1] = if rng.chance(50) { at as u8 } else { rng.byte() };
                    }
                }
                _ => {
                    let long: Vec<u8> = (0..5)
                        .flat_map(|_| std::iter::once(63).chain(std::iter::repeat_n(b'a', 63)))
                        .collect();
                    p.splice(at..at, long);
                }
            }
        }
        // Header flags: QR, opcode, rcode, Z.
        5 if p.len() >= 4 => {
            p[2] = rng.byte();
            p[3] = rng.byte();
        }
        // Trailing garbage.
        6 => {
            let extra = 1 + rng.below(200);
            p.extend((0..extra).map(|_| rng.byte()));
        }
        // Unchanged: a valid query among the garbage (forwarded or answered from cache).
        _ => {}
    }
}

/// A hostile packet: a valid query with one or two mutations.
fn hostile(rng: &mut XorShift) -> Vec<u8> {
    let mut p = valid_query(rng);
    mutate(rng, &mut p);
    if rng.chance(20) {
        mutate(rng, &mut p);
    }
    p
}

/// A connection's bytes: hostile frames with the right length prefix, then one whose
/// prefix is random, a little off, or shorter than a header (which desynchronises or ends
/// the stream, so it comes last; one connection in ten also has one in the middle).
fn tcp_stream_bytes(rng: &mut XorShift) -> Vec<u8> {
    let mut out = Vec::new();
    let early = if rng.chance(10) {
        rng.below(TCP_FRAMES)
    } else {
        TCP_FRAMES
    };
    for i in 0..TCP_FRAMES {
        let body = hostile(rng);
        let len = body.len() as u16;
        let prefix = if i + 1 < TCP_FRAMES && i != early {
            len
        } else {
            match rng.below(4) {
                0 => rng.next() as u16,
                1 => len.wrapping_add(1 + rng.below(8) as u16),
                2 => len.saturating_sub(1 + rng.below(8) as u16),
                _ => rng.below(12) as u16,
            }
        };
        out.extend_from_slice(&prefix.to_be_bytes());
        out.extend_from_slice(&body);
    }
    out
}

/// Number of complete length-prefixed frames in `bytes`.
fn count_frames(bytes: &[u8]) -> usize {
    let (mut at, mut n) = (0, 0);
    while let Some(len) = bytes.get(at..at + 2) {
        at += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
        if at > bytes.len() {
            break;
        }
        n += 1;
    }
    n
}

#[test]
fn hostile_packet_flood_leaves_the_server_alive_and_answering() {
    let _heavy = heavy();
    let guard = SeedOnPanic(FLOOD_SEED);
    bounded(Duration::from_secs(90), async {
        let p = Fake::answering(public_table()).await;
        let dir = TempDir::new("hard-flood");
        let config = binary_config(&dir, "off", &zone(".", &[&p], ""));
        let mut server = Server::serve(&config, &[]);
        let rss_before = rss_kb(server.pid());
        let mut rng = XorShift(FLOOD_SEED);

        // UDP: from four sockets (SO_REUSEPORT spreads them over the receive threads), in
        // batches, waiting while the server's receive queue is over 48 KiB so the packets
        // reach the parser instead of being dropped by the kernel.
        let senders: Vec<std::net::UdpSocket> = (0..4)
            .map(|_| {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        let (_, drops_before) = udp_socket_stats(server.udp);
        let start = Instant::now();
        let (mut sent, mut replies, mut paced_ms) = (0usize, 0usize, 0usize);
        let mut buf = vec![0u8; 65535];
        while sent < UDP_PACKETS {
            for _ in 0..32 {
                let pkt = hostile(&mut rng);
                let s = &senders[sent % senders.len()];
                loop {
                    match s.send_to(&pkt, server.udp) {
                        Ok(_) => break,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            sleep(Duration::from_millis(1)).await;
                        }
                        // ICMP errors from earlier sends; the packet itself may be lost.
                        Err(_) => break,
                    }
                }
                sent += 1;
            }
            for s in &senders {
                while s.recv(&mut buf).is_ok() {
                    replies += 1;
                }
            }
            let mut waited = 0;
            while udp_socket_stats(server.udp).0 > 48 * 1024 && waited < 500 {
                sleep(Duration::from_millis(1)).await;
                waited += 1;
            }
            paced_ms += waited;
        }
        sleep(Duration::from_millis(300)).await;
        for s in &senders {
            while s.recv(&mut buf).is_ok() {
                replies += 1;
            }
        }
        let udp_time = start.elapsed();
        let (_, drops_after) = udp_socket_stats(server.udp);
        let dropped = drops_after - drops_before;

        // TCP: 100 connections of 30 frames each, 16 at a time; each writes its frames,
        // closes its sending side and reads until the server closes.
        let start = Instant::now();
        let streams: Vec<Vec<u8>> = (0..TCP_CONNS).map(|_| tcp_stream_bytes(&mut rng)).collect();
        let gate = Arc::new(tokio::sync::Semaphore::new(16));
        let tcp_addr = server.tcp;
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|bytes| {
                let gate = gate.clone();
                tokio::spawn(async move {
                    let _permit = gate.acquire_owned().await.unwrap();
                    let Ok(mut s) = TcpStream::connect(tcp_addr).await else {
                        return (false, 0);
                    };
                    let wrote = s.write_all(&bytes).await.is_ok();
                    let _ = s.shutdown().await;
                    let mut back = Vec::new();
                    let _ = timeout(Duration::from_secs(10), s.read_to_end(&mut back)).await;
                    (wrote, count_frames(&back))
                })
            })
            .collect();
        let (mut complete, mut tcp_replies) = (0, 0);
        for t in tasks {
            let (wrote, n) = t.await.unwrap();
            complete += usize::from(wrote);
            tcp_replies += n;
        }
        let tcp_time = start.elapsed();

        // Alive, and still answering correctly on both transports.
        assert!(
            server.wait_exit(Duration::ZERO).is_none(),
            "splitdns exited during the flood"
        );
        let q = query("www.example.com.", RecordType::A);
        let r = client::udp(server.udp, &q).await;
        assert_eq!(
            (r.metadata.id, rdata_strings(&r.answers)),
            (q.metadata.id, vec![WWW.to_owned()])
        );
        let q = query("www.example.com.", RecordType::A);
        let r = client::tcp(server.tcp, &q).await;
        assert_eq!(
            (r.metadata.id, rdata_strings(&r.answers)),
            (q.metadata.id, vec![WWW.to_owned()])
        );
        let rss_after = rss_kb(server.pid());
        eprintln!(
            "flood (seed {FLOOD_SEED:#x}): udp {sent} packets in {udp_time:?} ({replies} replies, \
             {dropped} kernel drops, {paced_ms} ms pacing waits); tcp {} frames on {TCP_CONNS} \
             connections in {tcp_time:?} ({complete} fully written, {tcp_replies} replies); \
             upstream asked {} times; RSS {rss_before} -> {rss_after} kB",
            TCP_CONNS * TCP_FRAMES,
            p.count()
        );
        assert!(sent >= UDP_PACKETS);
        assert!(
            dropped * 100 <= sent as u64,
            "{dropped} of {sent} UDP packets were dropped by the kernel: the flood did not \
             reach the parser"
        );
        assert!(
            replies > 0 && tcp_replies > 0,
            "the server answered some of it"
        );
    });
    drop(guard);
}

/// Prints the seed if the test panics, so a failure can be replayed.
struct SeedOnPanic(u64);

impl Drop for SeedOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("randomized test failed; seed = {:#x}", self.0);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. Bounded resources
// ---------------------------------------------------------------------------------------

/// Queries in the burst against dead upstreams.
const BURST: usize = 10_000;

#[test]
fn burst_against_dead_upstreams_servfails_in_time_with_bounded_memory_then_recovers() {
    let _heavy = heavy();
    bounded(Duration::from_secs(90), async {
        let holes = [Fake::black_hole().await, Fake::black_hole().await];
        let live = Fake::answering(public_table()).await;
        let dir = TempDir::new("hard-burst");
        let file = dir.write(
            "upstreams.conf",
            &format!(
                "nameserver {}\nnameserver {}\n",
                holes[0].addr, holes[1].addr
            ),
        );
        let config = binary_config(
            &dir,
            "off",
            &zone_addrs(
                ".",
                &[],
                &format!("servers_file = {}", toml_str(&file.to_string_lossy())),
            ),
        );
        let server = Server::serve(&config, &[]);
        let pid = server.pid();
        let warm = client::udp(server.udp, &query("warm.example.com.", RecordType::A)).await;
        assert_eq!(warm.metadata.response_code, ResponseCode::ServFail);
        let rss_before = rss_kb(pid);

        // 10 sockets × 1,000 queries, distinct names, IDs 0..1000 per socket; sent as fast
        // as the sockets take them while replies are drained.
        let socks: Vec<std::net::UdpSocket> = (0..10)
            .map(|_| {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                s.connect(server.udp).unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        let per = BURST / socks.len();
        let mut sent_at: Vec<Vec<Option<Instant>>> = vec![vec![None; per]; socks.len()];
        let mut got: Vec<Vec<Option<(Instant, u8)>>> = vec![vec![None; per]; socks.len()];
        let mut buf = vec![0u8; 4096];
        let mut unexpected = Vec::new();
        let drain = |got: &mut Vec<Vec<Option<(Instant, u8)>>>,
                     unexpected: &mut Vec<String>,
                     buf: &mut [u8]| {
            for (k, s) in socks.iter().enumerate() {
                while let Ok(n) = s.recv(buf) {
                    let now = Instant::now();
                    if n < 12 {
                        unexpected.push(format!("short reply {:02x?}", &buf[..n]));
                        continue;
                    }
                    let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                    match got[k].get_mut(id) {
                        Some(slot @ None) => *slot = Some((now, buf[3] & 0x0f)),
                        Some(Some(_)) => unexpected.push(format!("duplicate reply to {k}/{id}")),
                        None => unexpected.push(format!("reply with unknown ID {id}")),
                    }
                }
            }
        };
        let start = Instant::now();
        for i in 0..per {
            for (k, (s, sent_row)) in socks.iter().zip(sent_at.iter_mut()).enumerate() {
                let mut q = query(&format!("q{k}-{i}.example.com."), RecordType::A);
                q.metadata.id = i as u16;
                let bytes = client::encode(&q);
                loop {
                    match s.send(&bytes) {
                        Ok(_) => break,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            sleep(Duration::from_millis(1)).await;
                        }
                        Err(_) => break,
                    }
                }
                sent_row[i] = Some(Instant::now());
            }
            if i % 50 == 0 {
                drain(&mut got, &mut unexpected, &mut buf);
            }
        }
        let send_time = start.elapsed();
        let last_send = Instant::now();
        while last_send.elapsed() < Duration::from_millis(5_500) {
            drain(&mut got, &mut unexpected, &mut buf);
            sleep(Duration::from_millis(5)).await;
        }
        let mut lat: Vec<Duration> = Vec::new();
        let mut not_servfail = Vec::new();
        for (k, (sent_row, got_row)) in sent_at.iter().zip(&got).enumerate() {
            for (i, (sent, reply)) in sent_row.iter().zip(got_row).enumerate() {
                if let (Some(at), Some((t, rc))) = (sent, reply) {
                    lat.push(t.saturating_duration_since(*at));
                    if *rc != 2 {
                        not_servfail.push(format!("{k}/{i}: rcode {rc}"));
                    }
                }
            }
        }
        lat.sort_unstable();
        let replied = lat.len();
        let pct = |p: usize| lat.get(replied * p / 100).copied().unwrap_or_default();
        let rss_after = rss_kb(pid);
        let hwm = proc_status_kb(pid, "VmHWM");
        eprintln!(
            "burst: {BURST} queries sent in {send_time:?}; {replied} SERVFAIL replies, {} dropped; \
             latency p50 {:?} p99 {:?} max {:?}; upstream black holes asked {} + {} times; \
             RSS {rss_before} -> {rss_after} kB (peak {hwm} kB)",
            BURST - replied,
            pct(50),
            pct(99),
            lat.last().copied().unwrap_or_default(),
            holes[0].count(),
            holes[1].count(),
        );
        assert!(unexpected.is_empty(), "{unexpected:?}");
        assert!(
            not_servfail.is_empty(),
            "{:?}",
            &not_servfail[..not_servfail.len().min(10)]
        );
        let late = lat.iter().filter(|l| **l > Duration::from_secs(5)).count();
        assert_eq!(
            late, 0,
            "{late} replies came more than 5 s after their query"
        );
        assert!(
            replied >= 1_000,
            "only {replied} of {BURST} queries were answered at all"
        );
        assert!(
            rss_after.saturating_sub(rss_before) < 64 * 1024,
            "RSS grew from {rss_before} kB to {rss_after} kB"
        );

        // A dead server comes back (both are backed off, so both are tried): normal
        // answers resume within 2 s.
        holes[1].set_behaviour(Behaviour::Answer);
        let back = Instant::now();
        first_good_answer_within(server.udp, back, Duration::from_secs(2)).await;
        eprintln!(
            "burst: answers resumed {:?} after a server came back",
            back.elapsed()
        );

        // A servers file rewritten to a new live server is followed within 2 s.
        write_atomically(&file, format!("nameserver {}\n", live.addr).as_bytes());
        let swapped = Instant::now();
        while live.count() == 0 {
            first_good_answer_within(server.udp, swapped, Duration::from_secs(2)).await;
        }
        eprintln!(
            "burst: new servers file used {:?} after the rewrite",
            swapped.elapsed()
        );
    });
}

/// Query `www.example.com. A` until a correct answer, which must arrive within `limit` of
/// `since` (a SERVFAIL still in the pipeline from before is retried).
async fn first_good_answer_within(server: SocketAddr, since: Instant, limit: Duration) {
    loop {
        let left = limit.saturating_sub(since.elapsed());
        assert!(!left.is_zero(), "no correct answer within {limit:?}");
        let q = query("www.example.com.", RecordType::A);
        let reply = client::udp_raw_wait(server, &client::encode(&q), left).await;
        if not_www(reply.as_deref(), q.metadata.id).is_none() {
            assert!(since.elapsed() <= limit, "took {:?}", since.elapsed());
            return;
        }
        sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_thousand_idle_tcp_connections_do_not_lock_out_new_clients() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let dir = TempDir::new("hard-idle");
        // A long idle timeout: only closing idle connections at the cap can admit anyone.
        let config = binary_config(
            &dir,
            "off",
            &format!(
                "[limits]\ntcp_idle_timeout_ms = 120000\n\n{}",
                zone(".", &[&p], "")
            ),
        );
        let server = Server::serve(&config, &[]);
        // 1,000 unless this process may not open that many sockets (each needs one here).
        let want = 1_000u64;
        let n = match open_files_limit() {
            Some(l) if l < want + 200 => l.saturating_sub(200),
            _ => want,
        };
        if n < want {
            eprintln!("RLIMIT_NOFILE is low: opening {n} idle connections instead of {want}");
        }
        let start = Instant::now();
        let mut idle = Vec::new();
        for _ in 0..n {
            idle.push(TcpStream::connect(server.tcp).await.expect("connect idle"));
        }
        let opened = start.elapsed();
        sleep(Duration::from_millis(200)).await;

        let t = Instant::now();
        let q = query("www.example.com.", RecordType::A);
        let r = client::udp(server.udp, &q).await;
        assert_eq!(rdata_strings(&r.answers), [WWW]);
        let udp_took = t.elapsed();
        let t = Instant::now();
        for _ in 0..3 {
            let r = client::tcp(server.tcp, &query("www.example.com.", RecordType::A)).await;
            assert_eq!(rdata_strings(&r.answers), [WWW]);
        }
        let tcp_took = t.elapsed();
        eprintln!(
            "{n} idle TCP connections opened in {opened:?}; a new UDP client answered in \
             {udp_took:?}, three new TCP clients in {tcp_took:?}"
        );
        assert!(udp_took < Duration::from_secs(1), "UDP took {udp_took:?}");
        assert!(tcp_took < Duration::from_secs(3), "TCP took {tcp_took:?}");
        drop(idle);
    });
}

// ---------------------------------------------------------------------------------------
// 5. Failing upstreams
// ---------------------------------------------------------------------------------------

#[test]
fn dead_primary_is_skipped_then_used_first_again_when_it_recovers() {
    bounded(LIMIT, async {
        let primary = Fake::black_hole().await;
        let second = Fake::answering(public_table()).await;
        let third = Fake::answering(public_table()).await;
        let d = Daemon::start(&format!(
            "{NO_CACHE}{}",
            zone(".", &[&primary, &second, &third], "timeout_ms = 400")
        ))
        .await;
        let d = &d;
        let ask = |name: &'static str| async move {
            let r = client::udp(d.udp, &query(name, RecordType::A)).await;
            assert_ne!(r.metadata.response_code, ResponseCode::ServFail, "{name}");
            d.event_for(name).await
        };

        // First query pays the primary's timeout.
        let e = ask("www.example.com.").await;
        let got: Vec<(String, String)> = e
            .attempts
            .iter()
            .map(|a| (a.server.clone(), a.outcome.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (primary.server(), "timeout".to_owned()),
                (second.server(), "answer".to_owned())
            ]
        );
        // Within the back-off (1 s): the primary is skipped, the others keep their order,
        // no timeout is paid.
        let e = ask("example.com.").await;
        assert!(
            e.attempts.iter().all(|a| a.outcome != "timeout"),
            "{:?}",
            e.attempts
        );
        assert_eq!(e.upstream.as_deref(), Some(second.server().as_str()));
        assert_eq!(e.attempts.len(), 1, "{:?}", e.attempts);
        assert!(e.duration_ms < 300.0, "took {} ms", e.duration_ms);
        assert_eq!(primary.count(), 1, "not asked while backed off");

        // It recovers; after the back-off it is probed again and, answering, used first.
        primary.set_behaviour(Behaviour::Answer);
        sleep(Duration::from_millis(1_300)).await;
        let e = ask("big.example.com.").await;
        assert_eq!(
            e.attempt_outcomes(),
            [(primary.server(), "udp".to_owned(), "answer".to_owned())]
        );
        let e = ask("karhu.xyz.").await;
        assert_eq!(e.upstream.as_deref(), Some(primary.server().as_str()));
        assert_eq!(third.count(), 0, "the third server was never needed");
    });
}

#[test]
fn slow_server_is_abandoned_at_timeout_and_its_late_reply_ignored() {
    bounded(LIMIT, async {
        let mut late_data = Table::new("example.com", 300);
        late_data.add("www.example.com", 300, RData::A(A::new(10, 9, 9, 9)));
        let slow = Fake::start(Behaviour::Delay(Duration::from_millis(800)), late_data).await;
        let fast = Fake::answering(public_table()).await;
        let d = Daemon::start(&zone(".", &[&slow, &fast], "timeout_ms = 300")).await;
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(
            rdata_strings(&r.answers),
            [WWW],
            "the second server's answer"
        );
        let e = d.event_for("www.example.com").await;
        let outcomes: Vec<String> = e.attempts.iter().map(|a| a.outcome.clone()).collect();
        assert_eq!(outcomes, ["timeout", "answer"], "{:?}", e.attempts);
        assert_eq!(e.attempts[0].server, slow.server());
        let waited = e.attempts[0].ms;
        assert!(
            (250.0..700.0).contains(&waited),
            "abandoned after {waited} ms, timeout_ms is 300"
        );
        assert_eq!(e.upstream.as_deref(), Some(fast.server().as_str()));

        // Let the late reply arrive, then ask again: the cached answer is still the fast
        // server's (the late one went nowhere).
        sleep(Duration::from_millis(900)).await;
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(rdata_strings(&r.answers), [WWW]);
        assert_eq!(fast.count(), 1, "a cache hit");
        assert_eq!(slow.count(), 1);
    });
}

// ---------------------------------------------------------------------------------------
// 6. Reloads and files
// ---------------------------------------------------------------------------------------

#[test]
fn sighup_with_broken_configs_under_load_fails_no_query() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let dir = TempDir::new("hard-hup");
        let good = format!("{NO_CACHE}{}", zone(".", &[&p], ""));
        let config = binary_config(&dir, "off", &good);
        let mut server = Server::serve(&config, &[]);
        let load = Load::start(server.udp, server.tcp, 4);
        sleep(Duration::from_millis(300)).await;
        let broken = [
            "bogus_key = true\n".to_owned(),
            "[[zone]]\nname = \".\"\nservers = [\"not-an-address\"]\n".to_owned(),
            "listen = [\n".to_owned(),
            "[[zone]]\nname = \".\"\nservers = [\"127.0.0.1:5300\"]\n[[zone]]\nname = \".\"\nservers = [\"127.0.0.1:5300\"]\n".to_owned(),
            "\u{0}\u{1}\u{2}garbage\n".to_owned(),
        ];
        for text in &broken {
            std::fs::write(&config, text).unwrap();
            server.signal("HUP");
            sleep(Duration::from_millis(300)).await;
        }
        // Several HUPs in a row, then the good config back and one more.
        for _ in 0..3 {
            server.signal("HUP");
        }
        sleep(Duration::from_millis(200)).await;
        binary_config(&dir, "off", &good);
        server.signal("HUP");
        sleep(Duration::from_millis(500)).await;
        let (ok, failures) = load.finish().await;
        let warned = warnings(&server);
        eprintln!(
            "SIGHUP under load: {ok} correct answers, {} failures, {} warnings",
            failures.len(),
            warned.len()
        );
        assert!(failures.is_empty(), "{failures:#?}");
        assert!(ok >= 50, "only {ok} queries completed");
        assert!(
            warned.len() >= broken.len(),
            "each broken reload is logged: {warned:#?}"
        );
        assert!(server.wait_exit(Duration::ZERO).is_none(), "still running");
    });
}

#[test]
fn torn_empty_binary_and_huge_servers_files_warn_and_fall_back_without_outage() {
    let guard = SeedOnPanic(FLOOD_SEED ^ 0xf11e);
    bounded(Duration::from_secs(60), async {
        let dhcp = Fake::answering(public_table()).await;
        let fixed = Fake::answering(public_table()).await;
        let dir = TempDir::new("hard-files");
        let file = dir.write("upstreams.conf", &format!("nameserver {}\n", dhcp.addr));
        let config = binary_config(
            &dir,
            "off",
            &format!(
                "{NO_CACHE}{}",
                zone(
                    ".",
                    &[&fixed],
                    &format!("servers_file = {}", toml_str(&file.to_string_lossy()))
                )
            ),
        );
        let mut server = Server::serve(&config, &[]);
        let load = Load::start(server.udp, server.tcp, 3);
        let good = format!("nameserver {}\n", dhcp.addr);
        wait_until_used(&dhcp, "the DHCP server at start").await;

        let mut rng = XorShift(FLOOD_SEED ^ 0xf11e);
        let binary: Vec<u8> = (0..4096).map(|_| rng.byte()).collect();
        let mut huge = Vec::with_capacity(10 << 20);
        while huge.len() < 10 << 20 {
            huge.extend_from_slice(b"# padding padding padding padding padding padding padding\n");
        }
        let cases: [(&str, Vec<u8>, bool); 4] = [
            // A write cut off mid-address, in place (not by rename).
            ("torn", b"nameserver 127.0".to_vec(), true),
            ("empty", Vec::new(), false),
            ("binary", binary, true),
            // 10 MB of comments.
            ("huge", huge, true),
        ];
        let mut report = Vec::new();
        for (what, bytes, must_warn) in cases {
            let warned_before = warnings(&server).len();
            let rss_before = rss_kb(server.pid());
            std::fs::write(&file, &bytes).unwrap();
            server.signal("HUP");
            wait_until_used(&fixed, what).await;
            let rss_after = rss_kb(server.pid());
            // The warning goes through the non-blocking stderr writer and may reach the
            // pipe a little after the fallback took effect: wait for it (bounded).
            let deadline = Instant::now() + Duration::from_secs(5);
            while must_warn && warnings(&server).len() == warned_before && Instant::now() < deadline
            {
                sleep(Duration::from_millis(20)).await;
            }
            let new_warnings = warnings(&server).len() - warned_before;
            report.push(format!(
                "{what}: {new_warnings} warnings, RSS {rss_before} -> {rss_after} kB"
            ));
            if must_warn {
                assert!(
                    new_warnings > 0,
                    "{what} servers file: no warning; stderr:\n{}",
                    server.stderr_lines().join("\n")
                );
            }
            // A good file again: the DHCP server is followed (nothing got stuck).
            write_atomically(&file, good.as_bytes());
            wait_until_used(&dhcp, &format!("the DHCP server after {what}")).await;
        }
        let (ok, failures) = load.finish().await;
        eprintln!(
            "bad servers files: {report:?}; {ok} correct answers, {} failures",
            failures.len()
        );
        assert!(failures.is_empty(), "{failures:#?}");
        assert!(server.wait_exit(Duration::ZERO).is_none());
    });
    drop(guard);
}

/// Wait (bounded, 3 s) until `fake` receives a new query; the load keeps querying.
async fn wait_until_used(fake: &Fake, what: &str) {
    let before = fake.count();
    let deadline = Instant::now() + Duration::from_secs(3);
    while fake.count() == before {
        assert!(
            Instant::now() < deadline,
            "{what}: server not used within 3 s"
        );
        sleep(Duration::from_millis(20)).await;
    }
    // Queries already on their way to the previous server finish first.
    sleep(Duration::from_millis(100)).await;
    let before = fake.count();
    let deadline = Instant::now() + Duration::from_secs(3);
    while fake.count() == before {
        assert!(
            Instant::now() < deadline,
            "{what}: server not used steadily"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn servers_file_naming_splitdns_itself_is_ignored() {
    bounded(LIMIT, async {
        let fixed = Fake::answering(public_table()).await;
        let dir = TempDir::new("hard-self");
        let file = dir.join("upstreams.conf");
        let events_path = dir.join("events.jsonl");
        let config = binary_config(
            &dir,
            &events_path.to_string_lossy(),
            &format!(
                "{NO_CACHE}{}",
                zone(
                    ".",
                    &[&fixed],
                    &format!(
                        "servers_file = {}\ntimeout_ms = 500",
                        toml_str(&file.to_string_lossy())
                    )
                )
            ),
        );
        let server = Server::serve(&config, &[]);
        // The hook wrote splitdns's own address (and only that).
        write_atomically(&file, format!("nameserver {}\n", server.udp).as_bytes());
        server.signal("HUP");
        sleep(Duration::from_millis(700)).await;
        let own = server.udp.to_string();
        assert!(
            warnings(&server).iter().any(|l| l.contains(&own)),
            "a warning names the dropped address {own}:\n{}",
            server.stderr_lines().join("\n")
        );
        let asked = fixed.count();
        const N: usize = 5;
        for i in 0..N {
            let q = query(&format!("self{i}.example.com."), RecordType::A);
            let r = client::udp(server.udp, &q).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        }
        assert_eq!(fixed.count() - asked, N, "the static server answered each");
        // No loop: exactly one event per client query, none from splitdns to itself.
        let all = events::wait_for(&events_path, N, Duration::from_secs(5)).await;
        sleep(Duration::from_millis(300)).await;
        let all_now = events::read(&events_path);
        assert_eq!(all_now.len(), all.len());
        let ours: Vec<_> = all_now
            .iter()
            .filter(|e| e.qname.as_deref().is_some_and(|q| q.starts_with("self")))
            .collect();
        assert_eq!(ours.len(), N, "one event per query: {ours:#?}");
        for e in ours {
            assert!(
                e.attempts.iter().all(|a| a.server != own),
                "splitdns asked itself: {e:?}"
            );
        }
    });
}

// ---------------------------------------------------------------------------------------
// 7. Shutdown
// ---------------------------------------------------------------------------------------

#[test]
fn sigterm_under_load_answers_everything_received_and_exits_0() {
    bounded(LIMIT, async {
        // One name per query: identical questions in flight would share one upstream
        // exchange (issue 12), and the upstream's count is how this test knows that every
        // query is in flight.
        let mut t = public_table();
        for i in 0..220 {
            t.add(
                &format!("n{i}.example.com"),
                300,
                RData::A(A(WWW.parse().unwrap())),
            );
        }
        let slow = Fake::start(Behaviour::Delay(Duration::from_millis(500)), t).await;
        let dir = TempDir::new("hard-term");
        let config = binary_config(
            &dir,
            "off",
            &format!("{NO_CACHE}{}", zone(".", &[&slow], "timeout_ms = 3000")),
        );
        let mut server = Server::serve(&config, &[]);
        const UDP_Q: usize = 200;
        const TCP_Q: usize = 20;
        let (udp, tcp) = (server.udp, server.tcp);
        let mut tasks = Vec::new();
        for i in 0..UDP_Q + TCP_Q {
            tasks.push(tokio::spawn(async move {
                let q = query(&format!("n{i}.example.com."), RecordType::A);
                let bytes = client::encode(&q);
                let wait = Duration::from_secs(8);
                let reply = if i < UDP_Q {
                    client::udp_raw_wait(udp, &bytes, wait).await
                } else {
                    tcp_try(tcp, &bytes, wait).await
                };
                not_www(reply.as_deref(), q.metadata.id).map(|why| format!("query {i}: {why}"))
            }));
        }
        // Everything has reached splitdns (the upstream holds it): now stop.
        let deadline = Instant::now() + Duration::from_secs(10);
        while slow.count() < UDP_Q + TCP_Q {
            assert!(
                Instant::now() < deadline,
                "only {} of {} queries reached the upstream",
                slow.count(),
                UDP_Q + TCP_Q
            );
            sleep(Duration::from_millis(5)).await;
        }
        let term = Instant::now();
        server.signal("TERM");
        let mut failures = Vec::new();
        for t in tasks {
            if let Some(f) = t.await.unwrap() {
                failures.push(f);
            }
        }
        let status = server.wait_exit(Duration::from_secs(6));
        let took = term.elapsed();
        eprintln!(
            "SIGTERM with {} queries in flight: {} unanswered, exit {:?} after {took:?}",
            UDP_Q + TCP_Q,
            failures.len(),
            status.map(|s| s.code())
        );
        assert!(failures.is_empty(), "{failures:#?}");
        let status = status.expect("splitdns exits within 6 s of SIGTERM");
        assert_eq!(status.code(), Some(0));
    });
}
