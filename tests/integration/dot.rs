//! Issue 13: DNS-over-TLS upstreams, against real unbound DoT servers on loopback (with a CA
//! and certificates minted for each test) and in-process servers for misbehaviour.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::client;
use crate::daemon::{bounded, toml_str, zone_addrs, Daemon, TempDir, NO_CACHE};
use crate::dotserver::{toml_path, write_pem, BadServer, Counter, Misbehaviour, Pki, Unbound};
use crate::events::Event;
use crate::fake::{Fake, Table};

const LIMIT: Duration = Duration::from_secs(90);
const ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

struct Setup {
    dir: TempDir,
    pki: Pki,
    ca: PathBuf,
}

fn setup(tag: &str) -> Setup {
    let dir = TempDir::new(tag);
    let pki = Pki::new("splitdns test CA");
    let ca = write_pem(&dir, "ca.pem", pki.ca_pem());
    Setup { dir, pki, ca }
}

/// A zone for `example.test` with these servers, trusting `ca`.
fn tls_zone(name: &str, servers: &[String], ca: &std::path::Path, extra: &str) -> String {
    zone_addrs(
        name,
        servers,
        &format!("tls_ca_file = {}\n{extra}", toml_path(ca)),
    )
}

async fn ask(d: &Daemon, qname: &str) -> Vec<String> {
    let reply = client::udp(d.udp, &client::query(qname, RecordType::A)).await;
    client::rdata_strings(&reply.answers)
}

fn tls_of(e: &Event, i: usize) -> (String, Option<f64>, Option<bool>) {
    let a = &e.attempts[i];
    let t = a
        .tls
        .as_ref()
        .unwrap_or_else(|| panic!("attempt {i} has no tls part: {e:?}"));
    (t.connection.clone(), t.handshake_ms, t.resumed)
}

#[test]
fn answers_come_over_tls_on_one_reused_connection() {
    bounded(LIMIT, async {
        let s = setup("dot-answers");
        let leaf = s.pki.leaf(&["dot.test", "127.0.0.1"], false);
        let u = Unbound::start(&s.dir, "u", &leaf, ANSWER);
        let relay = Counter::start(u.addr).await;
        // By name (SNI + name check) and by address (the certificate's IP SAN).
        let body = format!(
            "{NO_CACHE}{}{}",
            tls_zone("example.test", &[relay.server("#dot.test")], &s.ca, ""),
            tls_zone("ip.example.test", &[relay.server("")], &s.ca, "")
        );
        let d = Daemon::start(&body).await;
        assert_eq!(ask(&d, "www.example.test").await, ["192.0.2.53"]);
        let first = d.event_for("www.example.test").await;
        assert_eq!(first.attempts.len(), 1, "{first:?}");
        assert_eq!(first.attempts[0].proto, "tls");
        assert_eq!(first.attempts[0].outcome, "answer");
        assert_eq!(first.attempts[0].server, relay.addr.to_string());
        let (conn, handshake, _) = tls_of(&first, 0);
        assert_eq!(conn, "new");
        assert!(handshake.is_some_and(|h| h > 0.0), "{first:?}");

        assert_eq!(ask(&d, "two.example.test").await, ["192.0.2.53"]);
        let second = d.event_for("two.example.test").await;
        assert_eq!(tls_of(&second, 0), ("reused".to_owned(), None, None));

        assert_eq!(ask(&d, "www.ip.example.test").await, ["192.0.2.53"]);
        let by_ip = d.event_for("www.ip.example.test").await;
        assert_eq!(by_ip.attempts[0].proto, "tls");
        assert_eq!(by_ip.attempts[0].outcome, "answer");

        // Everything unbound saw came over TLS: not one plain query (no probes either).
        assert_eq!(u.stat("num.query.tls"), 3);
        assert_eq!(u.stat("total.num.queries"), 3);
        // Two servers (by name, by address): one connection each.
        assert_eq!(relay.accepted(), 2);
        d.stop_within(Duration::from_secs(5)).await;
    });
}

#[test]
fn answers_over_tls_are_cached_and_truncated_like_any_other() {
    bounded(LIMIT, async {
        let s = setup("dot-cache");
        let leaf = s.pki.leaf(&["dot.test"], false);
        let u = Unbound::start(&s.dir, "u", &leaf, ANSWER);
        let body = tls_zone("big.test", &[u.server("#dot.test")], &s.ca, "");
        let d = Daemon::start(&body).await;
        // A client without EDNS (musl) over UDP: cut to 512 bytes, TC set.
        let small = client::udp(d.udp, &client::query("big.test", RecordType::A)).await;
        assert!(small.metadata.truncation, "TC on the cut answer");
        assert!(small.answers.len() < 60);
        let e = d.event_for("big.test").await;
        assert_eq!(e.attempts[0].proto, "tls");
        assert_eq!(e.cache, "miss");
        // Over TCP the whole answer, from the cache: unbound was asked once.
        let whole = client::tcp(d.tcp, &client::query("big.test", RecordType::A)).await;
        assert!(!whole.metadata.truncation);
        assert_eq!(whole.answers.len(), 60);
        let again = client::udp(d.udp, &client::query("big.test", RecordType::A)).await;
        assert!(again.metadata.truncation);
        assert_eq!(
            u.stat("num.query.tls"),
            1,
            "the later answers came from the cache"
        );
        let events = d.events(3).await;
        let hits = events.iter().filter(|e| e.cache == "hit").count();
        assert_eq!(hits, 2, "{events:?}");
        d.stop_within(Duration::from_secs(5)).await;
    });
}

#[test]
fn a_burst_of_concurrent_queries_uses_a_handful_of_connections() {
    bounded(LIMIT, async {
        let s = setup("dot-burst");
        let leaf = s.pki.leaf(&["dot.test"], false);
        let u = Unbound::start(&s.dir, "u", &leaf, ANSWER);
        let relay = Counter::start(u.addr).await;
        let body = format!(
            "{NO_CACHE}{}",
            tls_zone(
                "example.test",
                &[relay.server("#dot.test")],
                &s.ca,
                "timeout_ms = 3000"
            )
        );
        let d = Daemon::start(&body).await;
        const N: usize = 300;
        // All at once from one socket, so they reach the pool before the first handshake
        // is done.
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut ids = std::collections::HashSet::new();
        for i in 0..N {
            let q = client::query(&format!("n{i}.example.test"), RecordType::A);
            ids.insert(q.metadata.id);
            sock.send_to(&client::encode(&q), d.udp).await.unwrap();
        }
        let mut buf = vec![0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut answered = 0;
        while answered < N && Instant::now() < deadline {
            let Ok(Ok((len, _))) =
                tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await
            else {
                break;
            };
            let reply = client::decode(&buf[..len]);
            if ids.remove(&reply.metadata.id)
                && client::rdata_strings(&reply.answers) == ["192.0.2.53"]
            {
                answered += 1;
            }
        }
        assert_eq!(answered, N, "every query of the burst is answered");
        assert_eq!(u.stat("num.query.tls"), N as u64);
        let conns = relay.accepted();
        assert!(
            (1..=8).contains(&conns),
            "{N} concurrent queries used {conns} connections"
        );
        d.stop_within(Duration::from_secs(5)).await;
    });
}

#[test]
fn wrong_name_untrusted_ca_and_expired_certificate_fail_over_to_the_next_server() {
    bounded(LIMIT, async {
        let s = setup("dot-bad-certs");
        let good = Unbound::start(&s.dir, "good", &s.pki.leaf(&["dot.test"], false), ANSWER);
        let expired = Unbound::start(
            &s.dir,
            "expired",
            &s.pki.leaf(&["dot.test"], true),
            Ipv4Addr::new(192, 0, 2, 66),
        );
        let stranger = Pki::new("someone else's CA");
        let untrusted = Unbound::start(
            &s.dir,
            "untrusted",
            &stranger.leaf(&["dot.test"], false),
            Ipv4Addr::new(192, 0, 2, 67),
        );
        let servers = [
            good.server("#wrong.test"),
            expired.server("#dot.test"),
            untrusted.server("#dot.test"),
            good.server("#dot.test"),
        ];
        let body = format!(
            "{NO_CACHE}{}",
            tls_zone("example.test", &servers, &s.ca, "")
        );
        let d = Daemon::start(&body).await;
        assert_eq!(ask(&d, "www.example.test").await, ["192.0.2.53"]);
        let e = d.event_for("www.example.test").await;
        let outcomes: Vec<(&str, &str)> = e
            .attempts
            .iter()
            .map(|a| (a.proto.as_str(), a.outcome.as_str()))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("tls", "error"),
                ("tls", "error"),
                ("tls", "error"),
                ("tls", "answer")
            ],
            "{e:?}"
        );
        assert_eq!(e.upstream.as_deref(), Some(good.addr.to_string().as_str()));
        // Strict: nothing was asked in plain DNS (or at all) of the servers that failed.
        assert_eq!(expired.stat("total.num.queries"), 0);
        assert_eq!(untrusted.stat("total.num.queries"), 0);
        assert_eq!(good.stat("total.num.queries"), 1);
        assert_eq!(good.stat("num.query.tls"), 1);
        d.stop_within(Duration::from_secs(5)).await;
    });
}

#[test]
fn a_killed_dot_server_fails_over_and_is_used_again_after_the_back_off() {
    bounded(LIMIT, async {
        let s = setup("dot-kill");
        let leaf = s.pki.leaf(&["dot.test"], false);
        let mut u = Unbound::start(&s.dir, "u", &leaf, ANSWER);
        let mut table = Table::new("example.test", 60);
        for n in ["www", "after-kill", "probe"] {
            table.add(
                &format!("{n}.example.test"),
                60,
                hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A::new(198, 51, 100, 1)),
            );
        }
        let backup = Fake::answering(table).await;
        let body = format!(
            "{NO_CACHE}{}",
            tls_zone(
                "example.test",
                &[u.server("#dot.test"), toml_str(&backup.server())],
                &s.ca,
                "timeout_ms = 2000"
            )
        );
        let d = Daemon::start(&body).await;
        let first = ask(&d, "www.example.test").await;
        assert_eq!(
            first,
            ["192.0.2.53"],
            "{:?}",
            d.event_for("www.example.test").await
        );
        let port = u.addr.port();
        u.kill();
        assert_eq!(ask(&d, "after-kill.example.test").await, ["198.51.100.1"]);
        let e = d.event_for("after-kill.example.test").await;
        assert_eq!(e.attempts[0].proto, "tls");
        assert_ne!(e.attempts[0].outcome, "answer");
        assert_eq!(e.attempts.last().unwrap().proto, "udp");
        assert_eq!(e.attempts.last().unwrap().outcome, "answer");

        // While it is backed off, queries go straight to the backup.
        let before = backup.count();
        assert_eq!(ask(&d, "probe.example.test").await, ["198.51.100.1"]);
        assert_eq!(backup.count(), before + 1);

        let _restarted = Unbound::start_on(&s.dir, "u2", &leaf, ANSWER, port).unwrap();
        // Back in use once the back-off (1 s after one failure, doubling) is over.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut i = 0;
        loop {
            i += 1;
            let name = format!("again{i}.example.test");
            if ask(&d, &name).await == ["192.0.2.53"] {
                let e = d.event_for(&name).await;
                assert_eq!(e.attempts[0].proto, "tls");
                assert_eq!(tls_of(&e, 0).0, "new");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the restarted DoT server was not used again within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        d.stop_within(Duration::from_secs(5)).await;
    });
}

#[test]
fn idle_connections_close_and_reopen_resuming_the_tls_session() {
    bounded(LIMIT, async {
        let s = setup("dot-idle");
        let leaf = s.pki.leaf(&["dot.test"], false);
        let u = Unbound::start(&s.dir, "u", &leaf, ANSWER);
        let relay = Counter::start(u.addr).await;
        let body = format!(
            "{NO_CACHE}{}",
            tls_zone(
                "example.test",
                &[relay.server("#dot.test")],
                &s.ca,
                "tls_idle_timeout_ms = 300"
            )
        );
        let d = Daemon::start(&body).await;
        assert_eq!(ask(&d, "one.example.test").await, ["192.0.2.53"]);
        assert_eq!((relay.accepted(), relay.open()), (1, 1));
        // Idle for longer than 300 ms: we close it (the server's own idle limit is 30 s).
        let deadline = Instant::now() + Duration::from_secs(5);
        while relay.open() > 0 {
            assert!(Instant::now() < deadline, "idle connection not closed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(ask(&d, "two.example.test").await, ["192.0.2.53"]);
        let e = d.event_for("two.example.test").await;
        let (conn, handshake, resumed) = tls_of(&e, 0);
        assert_eq!(conn, "new", "reopened on demand");
        assert!(handshake.is_some());
        assert_eq!(resumed, Some(true), "the TLS session was resumed: {e:?}");
        assert_eq!(relay.accepted(), 2);
        assert_eq!(
            u.stat("num.query.tls.resume"),
            1,
            "unbound saw the resumption too"
        );
        d.stop_within(Duration::from_secs(5)).await;
    });
}

#[test]
fn stalling_garbage_and_silent_servers_fail_over() {
    bounded(LIMIT, async {
        let s = setup("dot-bad-servers");
        let leaf = s.pki.leaf(&["dot.test"], false);
        let good = Unbound::start(&s.dir, "good", &leaf, ANSWER);
        let stall = BadServer::start(Misbehaviour::StallInHandshake, &leaf).await;
        let garbage = BadServer::start(Misbehaviour::Garbage, &leaf).await;
        let silent = BadServer::start(Misbehaviour::SilentAfterHandshake, &leaf).await;
        let servers = [
            stall.server(),
            garbage.server(),
            silent.server(),
            good.server("#dot.test"),
        ];
        let body = format!(
            "{NO_CACHE}{}",
            tls_zone("example.test", &servers, &s.ca, "timeout_ms = 400")
        );
        let d = Daemon::start(&body).await;
        assert_eq!(ask(&d, "www.example.test").await, ["192.0.2.53"]);
        let e = d.event_for("www.example.test").await;
        let outcomes: Vec<&str> = e.attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["timeout", "error", "timeout", "answer"], "{e:?}");
        assert!(e.attempts.iter().all(|a| a.proto == "tls"));
        assert_eq!(stall.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(
            garbage.accepted.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        assert_eq!(
            silent.queries.lock().unwrap().len(),
            1,
            "handshake completed"
        );
        d.stop_within(Duration::from_secs(5)).await;
    });
}

#[test]
fn pipelined_replies_out_of_order_are_matched_by_id_and_queries_are_padded() {
    bounded(LIMIT, async {
        let s = setup("dot-reorder");
        let leaf = s.pki.leaf(&["dot.test"], false);
        let rev = BadServer::start(Misbehaviour::Reversed, &leaf).await;
        let body = format!(
            "{NO_CACHE}{}",
            tls_zone("example.test", &[rev.server()], &s.ca, "timeout_ms = 3000")
        );
        let d = Daemon::start(&body).await;
        // Names whose first label has a distinct length: the server answers 192.0.2.<len>.
        let names: Vec<String> = (1..=12)
            .map(|n| format!("{}.example.test", "a".repeat(n)))
            .collect();
        let asks = names.iter().map(|n| {
            let udp = d.udp;
            let n = n.clone();
            tokio::spawn(async move {
                let r = client::udp(udp, &client::query(&n, RecordType::A)).await;
                (n, client::rdata_strings(&r.answers))
            })
        });
        let results = futures_join(asks.collect()).await;
        for (name, answer) in results {
            let len = name.split('.').next().unwrap().len();
            assert_eq!(answer, [format!("192.0.2.{len}")], "{name}");
        }
        let per_conn = rev.queries.lock().unwrap().clone();
        assert!(
            per_conn.iter().any(|c| c.len() >= 2),
            "several queries shared a connection: {:?}",
            per_conn.iter().map(Vec::len).collect::<Vec<_>>()
        );
        for q in per_conn.iter().flatten() {
            assert_eq!(q.len() % 128, 0, "query padded to a multiple of 128 bytes");
            let m = client::decode(q);
            let edns = m.edns.as_ref().expect("EDNS on every DoT query");
            assert!(
                edns.option(hickory_proto::rr::rdata::opt::EdnsCode::Padding)
                    .is_some(),
                "padding option present"
            );
        }
        d.stop_within(Duration::from_secs(5)).await;
    });
}

async fn futures_join<T: Send + 'static>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[test]
fn check_and_route_show_tls_servers_and_reject_them_in_servers_files() {
    let s = setup("dot-cli");
    let upstreams = s.dir.write("upstreams.conf", "nameserver 10.0.0.1\n");
    let config = s.dir.write(
        "splitdns.toml",
        &format!(
            "listen = [\"127.0.0.1:5300\"]\n[[zone]]\nname = \".\"\nservers_file = {}\nservers = [\"tls://9.9.9.9#dns.quad9.net\", \"tls://[2620:fe::fe]\", \"192.0.2.1\"]\ntls_ca_file = {}\n",
            toml_path(&upstreams),
            toml_path(&s.ca)
        ),
    );
    let c = config.to_str().unwrap();
    let out = crate::process::run(&["-c", c, "check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("tls://9.9.9.9:853#dns.quad9.net, tls://[2620:fe::fe]:853, 192.0.2.1:53"),
        "{stdout}"
    );
    let out = crate::process::run(&["-c", c, "route", "www.example.com"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("2. tls://9.9.9.9:853#dns.quad9.net"),
        "{stdout}"
    );
    assert!(stdout.contains("3. tls://[2620:fe::fe]:853"), "{stdout}");

    // A tls:// line in the servers file: check fails naming the file, line and key.
    std::fs::write(
        &upstreams,
        "nameserver 10.0.0.1\nnameserver tls://9.9.9.9\n",
    )
    .unwrap();
    let out = crate::process::run(&["-c", c, "check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:2: zone[0].servers_file: `tls://9.9.9.9`: DNS-over-TLS servers cannot come from a servers file",
            upstreams.display()
        )),
        "{stderr}"
    );

    // A missing tls_ca_file: check fails naming the key.
    let bad = s.dir.write(
        "bad.toml",
        "[[zone]]\nname = \".\"\nservers = [\"tls://9.9.9.9\"]\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
    );
    let out = crate::process::run(&["-c", bad.to_str().unwrap(), "check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(":4:15: zone[0].tls_ca_file: `/nonexistent/ca.pem`: cannot read"),
        "{stderr}"
    );
}
