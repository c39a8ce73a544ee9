//! Issue 11 items 1–5, "bounded means bounded": one test per promise, each of which fails
//! without it.
//!
//! 1. The cache stays inside `cache.max_bytes` with thousands of distinct 60 KB answers
//!    from a real authoritative server (NSD) over TCP, and so does the process's RSS.
//! 2. Output that stops being read never stalls the daemon: with events on stdout and
//!    the reader stopped, SIGTERM still exits, in bounded time, saying how many events were
//!    lost; with stderr's reader stopped, TCP clients are still served and reloads done,
//!    and the dropped diagnostic lines are counted.
//! 3. A servers file rewritten in place, in two parts, over and over under load, is never
//!    read half-way: no query is ever sent to an address that was never in it.
//! 4. TCP clients cannot hold the door shut: with 300 clients that pipeline queries and
//!    never read (more than the 256 connections allowed), and with 300 connections that
//!    dribble a byte per second, a new TCP client is answered within a generous 3 s
//!    (not the 45 s it waited before) and RSS stays bounded.
//! 5. A servers file that is a symlink into another directory is followed as fast as a
//!    plain one (its target's directory is watched), and a warning repeated under
//!    file-descriptor exhaustion is logged once per interval, not 20 times a second.
//!
//! Figures are printed with `eprintln!`; run with `--nocapture` to see them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{RData, RecordType};

use crate::client::{self, query};
use crate::daemon::{bounded, toml_str, zone, zone_addrs, TempDir, NO_CACHE};
use crate::fake::{public_table, Fake};
use crate::hardening::{binary_config, rss_kb, tcp_try};
use crate::nsd::Nsd;
use crate::process::Server;

// ---------------------------------------------------------------------------------------
// 1. The cache is bounded in bytes
// ---------------------------------------------------------------------------------------

/// A zone whose wildcard answers every name with one ~59 KB TXT RRset: every distinct
/// name is a distinct TCP-sized answer.
fn big_zone() -> String {
    let string = format!("\"{}\"", "x".repeat(250));
    let strings = vec![string; 236].join(" ");
    format!(
        "$ORIGIN big.test.\n$TTL 3600\n\
         @ IN SOA ns.big.test. hostmaster.big.test. 1 3600 600 86400 300\n\
         @ IN NS ns\nns IN A 127.0.0.1\n*.big.test. IN TXT {strings}\n"
    )
}

/// The `key=value` field of a log line, as a number.
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line.get(at..)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn cache_stays_inside_its_byte_budget_with_distinct_large_answers() {
    const NAMES: usize = 2_000;
    const BUDGET: u64 = 33_554_432; // the default `cache.max_bytes`
    let nsd = Nsd::start("big.test", &big_zone());
    let dir = TempDir::new("bytes");
    // The default cache: 10,000 entries would hold all 2,000 answers (118 MB).
    let events = dir.join("events.jsonl");
    let config = binary_config(
        &dir,
        &events.to_string_lossy(),
        &zone_addrs("big.test", &[toml_str(&nsd.addr.to_string())], ""),
    );
    let mut server = Server::serve(&config, &[]);
    let tcp = server.tcp;
    let base = rss_kb(server.pid());
    bounded(Duration::from_secs(240), async move {
        let next = Arc::new(AtomicUsize::new(0));
        let big = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (next, big, events) = (next.clone(), big.clone(), events.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= NAMES {
                            break;
                        }
                        let q = query(&format!("n{i}.big.test."), RecordType::TXT);
                        let reply = tcp_try(tcp, &client::encode(&q), Duration::from_secs(10))
                            .await
                            .unwrap_or_else(|| panic!("no TCP reply for n{i}"));
                        let m = Message::from_vec(&reply).unwrap();
                        if m.metadata.response_code != ResponseCode::NoError {
                            std::thread::sleep(Duration::from_millis(300));
                            let text = std::fs::read_to_string(&events).unwrap_or_default();
                            let ev = text
                                .lines()
                                .find(|l| l.contains(&format!("n{i}.big")))
                                .unwrap_or("");
                            panic!("n{i}: {:?}; event {ev}", m.metadata.response_code);
                        }
                        if reply.len() > 50_000 {
                            big.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
        eprintln!(
            "{NAMES} distinct answers in {:?}, {} over 50 KB",
            started.elapsed(),
            big.load(Ordering::SeqCst)
        );
        assert_eq!(big.load(Ordering::SeqCst), NAMES, "every answer is ~59 KB");
    });
    let rss = rss_kb(server.pid());
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    let line = server.wait_line("cache at shutdown");
    let bytes = field(&line, "bytes").expect("bytes= in the shutdown line");
    let entries = field(&line, "entries").expect("entries=");
    eprintln!(
        "RSS {base} kB -> {rss} kB; cache {entries} entries, {bytes} bytes (budget {BUDGET})"
    );
    assert!(bytes <= BUDGET, "{line}");
    assert!(
        bytes > BUDGET / 2,
        "the budget was used, not the entry count: {line}"
    );
    assert!(entries < 1_000, "{line}");
    // Without the budget the cache alone grows by 118 MB; with it, the whole process
    // stays within the budget plus allocator slack.
    let grown_mb = rss.saturating_sub(base) / 1024;
    assert!(
        grown_mb < 80,
        "RSS grew by {grown_mb} MB (from {base} kB to {rss} kB)"
    );
}

// ---------------------------------------------------------------------------------------
// 4. TCP clients cannot hold the door shut
// ---------------------------------------------------------------------------------------

/// How a hostile TCP client misbehaves.
#[derive(Clone, Copy, Debug)]
enum Hostile {
    /// Writes 20 queries every 200 ms and never reads a reply.
    NeverReads,
    /// Keeps a query always half-sent: its length, then a byte per second, finishing each
    /// message just inside the server's time for one.
    Dribbles,
}

/// `n` hostile clients against `tcp`, reconnecting whenever they are dropped, until
/// `stop`. Returns how many connections they made.
fn hostile_clients(
    tcp: SocketAddr,
    n: usize,
    how: Hostile,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..n)
        .map(|c| {
            let stop = stop.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                // A 32 KB answer: a dozen fill what the kernel buffers.
                let q = client::encode(&query("fat.example.com.", RecordType::TXT));
                let mut frame = (q.len() as u16).to_be_bytes().to_vec();
                frame.extend_from_slice(&q);
                let burst: Vec<u8> = frame
                    .iter()
                    .copied()
                    .cycle()
                    .take(frame.len() * 200)
                    .collect();
                let mut connections = 0;
                while !stop.load(Ordering::SeqCst) {
                    let Ok(Ok(mut s)) = tokio::time::timeout(
                        Duration::from_secs(1),
                        tokio::net::TcpStream::connect(tcp),
                    )
                    .await
                    else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    connections += 1;
                    // Spread the starts a little so they do not all arrive in one tick.
                    if connections == 1 {
                        tokio::time::sleep(Duration::from_millis(c as u64 % 50)).await;
                    }
                    'conn: while !stop.load(Ordering::SeqCst) {
                        match how {
                            Hostile::NeverReads => {
                                match tokio::time::timeout(
                                    Duration::from_millis(500),
                                    s.write_all(&burst),
                                )
                                .await
                                {
                                    Ok(Ok(())) => {}
                                    Ok(Err(_)) => break 'conn,
                                    Err(_) => {} // our send buffer is full: they stopped reading too
                                }
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            Hostile::Dribbles => {
                                // The length at once (the message has begun), four body
                                // bytes a second apart, the rest just inside the server's
                                // 5 s for a message; then the next message.
                                let (start, rest) = frame.split_at(3);
                                let (slow, tail) = rest.split_at(4);
                                if s.write_all(start).await.is_err() {
                                    break 'conn;
                                }
                                for b in slow {
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                    if stop.load(Ordering::SeqCst)
                                        || s.write_all(&[*b]).await.is_err()
                                    {
                                        break 'conn;
                                    }
                                }
                                if s.write_all(tail).await.is_err() {
                                    break 'conn;
                                }
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                connections
            })
        })
        .collect()
}

/// How long an honest client may wait: generous (a loaded 2-core machine), and far below
/// the 45 s it waited before connections were shed by slowness.
const HONEST_WAIT: Duration = Duration::from_secs(3);

/// One TCP exchange within [`HONEST_WAIT`], saying which step failed.
async fn honest_exchange(tcp: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = Instant::now();
    let deadline = HONEST_WAIT;
    let mut s = match tokio::time::timeout(deadline, tokio::net::TcpStream::connect(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Err(_) => return Err("connect timed out".into()),
    };
    let connected = t.elapsed();
    let step = async {
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        s.write_all(&framed)
            .await
            .map_err(|e| format!("write after {connected:?}: {e}"))?;
        let len = s
            .read_u16()
            .await
            .map_err(|e| format!("read (connected after {connected:?}): {e}"))?;
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf)
            .await
            .map_err(|e| format!("read body: {e}"))?;
        Ok(buf)
    };
    match tokio::time::timeout(deadline, step).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {deadline:?} (connected after {connected:?})"
        )),
    }
}

/// Ten new TCP clients, one every 300 ms, each of which must be answered within
/// [`HONEST_WAIT`].
async fn honest_clients_served(tcp: SocketAddr, what: &str) -> Vec<Duration> {
    let mut took = Vec::new();
    for i in 0..10 {
        let q = query("www.example.com.", RecordType::A);
        let t = Instant::now();
        let reply = honest_exchange(tcp, &client::encode(&q)).await;
        let elapsed = t.elapsed();
        let reply = match reply {
            Ok(r) => r,
            Err(why) => panic!("{what}: honest TCP client {i}: {why} (earlier: {took:?})"),
        };
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.id, q.metadata.id);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{what}");
        took.push(elapsed);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    took
}

fn tcp_door_test(how: Hostile) {
    bounded(Duration::from_secs(120), async move {
        let mut table = public_table();
        let strings = vec!["y".repeat(250); 128];
        table.add("fat.example.com", 300, RData::TXT(TXT::new(strings)));
        let upstream = Fake::answering(table).await;
        let dir = TempDir::new("door");
        let config = binary_config(&dir, "off", &zone(".", &[&upstream], ""));
        let mut server = Server::serve(&config, &[]);
        // Both answers cached first: what is measured is the door, not the upstream.
        for (name, qtype) in [
            ("www.example.com.", RecordType::A),
            ("fat.example.com.", RecordType::TXT),
        ] {
            let r = client::tcp(server.tcp, &query(name, qtype)).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        }
        let base = rss_kb(server.pid());
        let stop = Arc::new(AtomicBool::new(false));
        let clients = hostile_clients(server.tcp, 300, how, stop.clone());
        // Let them take every slot.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let took = honest_clients_served(server.tcp, &format!("{how:?}")).await;
        let rss = rss_kb(server.pid());
        stop.store(true, Ordering::SeqCst);
        let mut connections = 0;
        for c in clients {
            connections += tokio::time::timeout(Duration::from_secs(10), c)
                .await
                .expect("hostile client ends")
                .unwrap();
        }
        eprintln!(
            "{how:?}: 300 hostile clients ({connections} connections); honest clients answered in {took:?}; RSS {base} kB -> {rss} kB"
        );
        let grown_mb = rss.saturating_sub(base) / 1024;
        assert!(grown_mb < 64, "RSS grew by {grown_mb} MB");
        assert!(server.wait_exit(Duration::ZERO).is_none(), "still running");
    });
}

#[test]
fn clients_that_never_read_do_not_lock_out_new_tcp_clients() {
    tcp_door_test(Hostile::NeverReads);
}

#[test]
fn slowloris_connections_do_not_lock_out_new_tcp_clients() {
    tcp_door_test(Hostile::Dribbles);
}

// ---------------------------------------------------------------------------------------
// 3. Torn servers files are never used
// ---------------------------------------------------------------------------------------

/// Every string value of a `server` key anywhere in an event line.
fn servers_in(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match x {
                    serde_json::Value::String(s) if k == "server" => out.push(s.clone()),
                    _ => servers_in(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| servers_in(x, out)),
        _ => {}
    }
}

/// UDP clients asking `www.example.com. A` until `stop`; returns (answers, failures).
fn udp_load(
    udp: SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(usize, Vec<String>)>> {
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    let q = query("www.example.com.", RecordType::A);
                    match client::udp_raw_wait(udp, &client::encode(&q), Duration::from_secs(3))
                        .await
                        .and_then(|r| Message::from_vec(&r).ok())
                    {
                        Some(m) if m.metadata.response_code == ResponseCode::NoError => ok += 1,
                        other => {
                            failed.push(format!("{:?}", other.map(|m| m.metadata.response_code)))
                        }
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

/// Queries `udp` until `fake` has been asked (bounded: 5 s).
async fn used(fake: &Fake, udp: SocketAddr) {
    let t = Instant::now();
    while fake.count() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{} never asked",
            fake.addr
        );
        let q = query("www.example.com.", RecordType::A);
        let _ = client::udp_raw_wait(udp, &client::encode(&q), Duration::from_millis(500)).await;
    }
}

#[test]
fn servers_file_rewritten_in_place_is_never_read_half_way() {
    bounded(Duration::from_secs(90), async {
        let good = Fake::answering(public_table()).await;
        let dir = TempDir::new("torn");
        let line = format!("nameserver {}\n", good.addr);
        let file = dir.write("upstreams.conf", &line);
        let events = dir.join("events.jsonl");
        let config = binary_config(
            &dir,
            &events.to_string_lossy(),
            &format!(
                "{NO_CACHE}{}",
                zone_addrs(
                    ".",
                    &[],
                    &format!("servers_file = {}", toml_str(&file.to_string_lossy()))
                )
            ),
        );
        let server = Server::serve(&config, &[]);
        used(&good, server.udp).await;
        let stop = Arc::new(AtomicBool::new(false));
        let load = udp_load(server.udp, 3, stop.clone());
        // The writer: `>` then the line in two parts, 30 ms apart, cut inside the port
        // (the first part alone names 127.0.0.1 on another port), again and again.
        let cut = line.len() - 4;
        let (first, second) = (line[..cut].to_owned(), line[cut..].to_owned());
        let path = file.clone();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let until = Instant::now() + Duration::from_secs(4);
            let mut rewrites = 0;
            while Instant::now() < until {
                let mut f = std::fs::File::create(&path).unwrap();
                f.write_all(first.as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(30));
                f.write_all(second.as_bytes()).unwrap();
                drop(f);
                rewrites += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            rewrites
        });
        let rewrites = tokio::task::spawn_blocking(move || writer.join().unwrap())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::SeqCst);
        let (mut ok, mut failed) = (0, Vec::new());
        for l in load {
            let (o, f) = l.await.unwrap();
            ok += o;
            failed.extend(f);
        }
        drop(server); // flushes the events
        tokio::time::sleep(Duration::from_millis(300)).await;
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        let mut asked = Vec::new();
        for l in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(l) {
                servers_in(&v, &mut asked);
            }
        }
        let strangers: std::collections::BTreeSet<&String> = asked
            .iter()
            .filter(|a| **a != good.addr.to_string())
            .collect();
        eprintln!(
            "{rewrites} in-place rewrites; {ok} answers, {} failures; {} upstream attempts, to {:?} besides {}",
            failed.len(),
            asked.len(),
            strangers,
            good.addr
        );
        assert!(rewrites >= 3, "the writer ran");
        assert!(!asked.is_empty(), "the events name the servers asked");
        assert!(
            strangers.is_empty(),
            "asked addresses never in the file: {strangers:?}"
        );
        assert!(
            failed.is_empty(),
            "{} queries failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
    });
}

// ---------------------------------------------------------------------------------------
// 5. Symlinked servers files and repeated warnings
// ---------------------------------------------------------------------------------------

#[test]
fn a_symlinked_servers_file_is_followed_as_fast_as_a_plain_one() {
    bounded(Duration::from_secs(60), async {
        let one = Fake::answering(public_table()).await;
        let two = Fake::answering(public_table()).await;
        let dir = TempDir::new("link");
        let elsewhere = TempDir::new("link-target");
        let target = elsewhere.write("upstreams.conf", &format!("nameserver {}\n", one.addr));
        let link = dir.join("upstreams.conf");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let config = binary_config(
            &dir,
            "off",
            &format!(
                "{NO_CACHE}{}",
                zone_addrs(
                    ".",
                    &[],
                    &format!("servers_file = {}", toml_str(&link.to_string_lossy()))
                )
            ),
        );
        let server = Server::serve(&config, &[]);
        used(&one, server.udp).await;
        let mut took = Vec::new();
        for round in 0..3 {
            let next = if round % 2 == 0 { &two } else { &one };
            crate::hardening::write_atomically(
                &target,
                format!("nameserver {}\n", next.addr).as_bytes(),
            );
            let t = Instant::now();
            let before = next.count();
            while next.count() == before {
                assert!(
                    t.elapsed() < Duration::from_millis(1500),
                    "round {round}: the symlink's new target not used within 1.5 s (polling alone takes up to 5 s); earlier rounds {took:?}"
                );
                let q = query("www.example.com.", RecordType::A);
                let _ = client::udp_raw_wait(
                    server.udp,
                    &client::encode(&q),
                    Duration::from_millis(200),
                )
                .await;
            }
            took.push(t.elapsed());
        }
        eprintln!("a symlinked servers file followed in {took:?}");
    });
}

#[test]
fn accept_failures_under_fd_exhaustion_are_logged_once_per_interval() {
    bounded(Duration::from_secs(60), async {
        let upstream = Fake::answering(public_table()).await;
        let dir = TempDir::new("emfile");
        let config = binary_config(&dir, "off", &zone(".", &[&upstream], ""));
        let server = Server::serve(&config, &[]);
        let open = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .unwrap()
            .count();
        // Room for a few more descriptors only.
        let limit = open + 4;
        let status = std::process::Command::new("prlimit")
            .args([
                "--pid",
                &server.pid().to_string(),
                &format!("--nofile={limit}:{limit}"),
            ])
            .status()
            .expect("prlimit (util-linux)");
        assert!(status.success());
        let mut held = Vec::new();
        for _ in 0..40 {
            if let Ok(Ok(s)) = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(server.tcp),
            )
            .await
            {
                held.push(s);
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let lines: Vec<String> = server
            .stderr_lines()
            .into_iter()
            .filter(|l| l.contains("tcp accept failed"))
            .collect();
        eprintln!(
            "{} connections held; {} 'tcp accept failed' lines in 3 s",
            held.len(),
            lines.len()
        );
        assert!(!lines.is_empty(), "descriptors were exhausted");
        assert!(
            lines.len() <= 2,
            "{} lines in 3 s:\n{}",
            lines.len(),
            lines.join("\n")
        );
        drop(held);
    });
}

// ---------------------------------------------------------------------------------------
// 2. Output that stops being read
// ---------------------------------------------------------------------------------------

/// `splitdns serve` with stdout and stderr piped. Stderr is read (and kept) until both
/// `listening on` lines, then no more: the caller decides whether anyone reads again.
struct Piped {
    child: std::process::Child,
    stdout: Option<std::process::ChildStdout>,
    stderr: std::io::BufReader<std::process::ChildStderr>,
    seen: Vec<String>,
    udp: SocketAddr,
    tcp: SocketAddr,
}

impl Piped {
    fn serve(config: &std::path::Path) -> Piped {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(crate::process::BIN)
            .args(["-c", config.to_str().unwrap(), "serve"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let (mut seen, mut udp, mut tcp) = (Vec::new(), None, None);
        // Bounded: the child prints these right after binding (a test time limit backs it).
        while udp.is_none() || tcp.is_none() {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "stderr closed: {seen:?}"
            );
            for (proto, slot) in [("udp", &mut udp), ("tcp", &mut tcp)] {
                if let Some(rest) = line.split(&format!("listening on {proto} ")).nth(1) {
                    *slot = rest.trim().parse::<SocketAddr>().ok();
                }
            }
            seen.push(line);
        }
        Piped {
            child,
            stdout,
            stderr,
            seen,
            udp: udp.unwrap(),
            tcp: tcp.unwrap(),
        }
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Waits up to `limit` for the exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Everything on stderr from here to its end (after the process exited).
    fn rest_of_stderr(&mut self) -> String {
        use std::io::Read;
        let mut rest = String::new();
        let _ = self.stderr.read_to_string(&mut rest);
        rest
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn sigterm_with_a_stopped_events_reader_exits_in_bounded_time() {
    bounded(Duration::from_secs(60), async {
        let upstream = Fake::answering(public_table()).await;
        let dir = TempDir::new("stuck-stdout");
        let config = binary_config(&dir, "stdout", &zone(".", &[&upstream], ""));
        let mut server = Piped::serve(&config);
        // Nobody reads stdout: 3,000 events (~1 MB) fill the pipe and then the queue.
        for _ in 0..3_000 {
            let q = query("www.example.com.", RecordType::A);
            let _ =
                client::udp_raw_wait(server.udp, &client::encode(&q), Duration::from_millis(500))
                    .await;
        }
        let t = Instant::now();
        server.signal("TERM");
        let status = tokio::task::block_in_place(|| server.wait_exit(Duration::from_secs(15)));
        let took = t.elapsed();
        let status = status.unwrap_or_else(|| {
            panic!("SIGTERM: still running after 15 s with the events reader stopped")
        });
        let stderr = server.rest_of_stderr();
        eprintln!(
            "exited {status} in {took:?}; stderr tail: {}",
            stderr.lines().rev().take(4).collect::<Vec<_>>().join(" | ")
        );
        assert!(status.success(), "{status}");
        assert!(
            stderr.contains("events lost"),
            "the loss is reported:\n{stderr}"
        );
        drop(server.stdout.take());
    });
}

/// A stderr pipe of a child that has already exited (so reading it ends at once).
fn empty_stderr() -> std::process::ChildStderr {
    let mut c = std::process::Command::new("true")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let e = c.stderr.take().unwrap();
    let _ = c.wait();
    e
}

#[test]
fn a_stopped_stderr_reader_stalls_neither_tcp_nor_reloads() {
    bounded(Duration::from_secs(90), async {
        let upstream = Fake::answering(public_table()).await;
        let dir = TempDir::new("stuck-stderr");
        let config = binary_config(&dir, "off", &zone(".", &[&upstream], ""));
        let mut server = Piped::serve(&config);
        // Nobody reads stderr any more, and its pipe is cut to one page: 400 reloads (even
        // the few dozen that remain when a loaded machine merges the signals) log far more
        // than it holds. (With the default 64 KiB pipe, whether anything was dropped
        // depended on how many of the signals merged.)
        {
            use std::os::fd::AsRawFd;
            let fd = server.stderr.get_ref().as_raw_fd();
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
        }
        for _ in 0..400 {
            server.signal("HUP");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        for i in 0..5 {
            let q = query("www.example.com.", RecordType::A);
            let t = Instant::now();
            let reply = honest_exchange(server.tcp, &client::encode(&q)).await;
            let reply =
                reply.unwrap_or_else(|why| panic!("TCP client {i} with stderr stalled: {why}"));
            assert_eq!(
                Message::from_vec(&reply).unwrap().metadata.id,
                q.metadata.id
            );
            eprintln!(
                "TCP client {i} answered in {:?} with stderr stalled",
                t.elapsed()
            );
        }
        // Someone reads again: the next line is preceded by the count of those dropped.
        let reader = std::mem::replace(&mut server.stderr, std::io::BufReader::new(empty_stderr()));
        let drained = std::thread::spawn(move || {
            use std::io::Read;
            let mut all = String::new();
            let _ = { reader }.read_to_string(&mut all);
            all
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.signal("HUP");
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.signal("TERM");
        let status = tokio::task::block_in_place(|| server.wait_exit(Duration::from_secs(15)));
        assert!(status.is_some_and(|s| s.success()), "exit {status:?}");
        let stderr = tokio::task::block_in_place(|| drained.join().unwrap());
        let reloads = stderr.matches("SIGHUP: reloading").count();
        eprintln!(
            "{reloads} reload lines got through; seen at start: {}",
            server.seen.len()
        );
        assert!(
            stderr.contains("diagnostic line(s) dropped"),
            "the loss is counted:\n{}",
            stderr.lines().take(5).collect::<Vec<_>>().join("\n")
        );
    });
}
