//! Forwarding loops break only the looping names. Each query splitdns forwards carries a
//! marker that a forwarder passes along; when a query comes back with one of our own
//! markers, that query (and only it) gets SERVFAIL at once. Two splitdns instances whose
//! default zones point at each other, and the real dnsmasq set up as libvirt sets it up
//! without `localOnly` (it answers its own names and forwards the rest back to us).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::client::{self, query, rdata_strings};
use crate::daemon::{bounded, toml_str, Daemon, TempDir, NO_CACHE};

const LOOP_ERROR: &str = "forwarding loop detected";

fn loop_seen(paths: &[&PathBuf]) -> bool {
    paths.iter().any(|p| {
        crate::events::read(p)
            .into_iter()
            .any(|e| e.error.as_deref() == Some(LOOP_ERROR))
    })
}

#[test]
fn a_loop_between_two_forwarders_is_detected_and_broken() {
    bounded(Duration::from_secs(30), async {
        // B learns its "." server from a file, initially empty.
        let dir = TempDir::new("loop-b");
        let file = dir.write("upstreams.conf", "");
        let body_b = format!(
            "{NO_CACHE}[[zone]]\nname = \".\"\nservers_file = {}\ntimeout_ms = 1000\n",
            toml_str(&file.to_string_lossy())
        );
        let b = Daemon::start_in(dir, &body_b).await;
        // A forwards "." to B.
        let body_a = format!(
            "{NO_CACHE}[[zone]]\nname = \".\"\nservers = [{}]\ntimeout_ms = 1000\n",
            toml_str(&b.udp.to_string())
        );
        let a = Daemon::start(&body_a).await;
        // Now close the loop: B's "." goes to A.
        std::fs::write(&file, format!("nameserver {}\n", a.udp)).unwrap();

        // Once B has installed A, a query into the loop comes back to whichever side sent
        // it first, carrying that side's marker.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !loop_seen(&[&a.events_path, &b.events_path]) {
            assert!(Instant::now() < deadline, "neither side detected the loop");
            let _ = client::udp(a.udp, &query("probe.example.com.", RecordType::A)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A query into the loop now fails fast instead of circling until the deadline.
        let started = Instant::now();
        let reply = client::udp(a.udp, &query("www.example.com.", RecordType::A)).await;
        let took = started.elapsed();
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert!(
            took < Duration::from_millis(1500),
            "loop not broken: SERVFAIL took {took:?}"
        );
    });
}

/// The dnsmasq binary, if installed (CI installs dnsmasq-base).
fn dnsmasq_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join("dnsmasq"))
        .find(|p| p.is_file())
}

/// A dnsmasq we started, killed (by its PID) and reaped on drop.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dnsmasq {
    /// Starts dnsmasq on a free loopback port as libvirt's dnsmasq looks without
    /// `localOnly`: it knows `vm1.karhu.xyz` and forwards every other name to `upstream`.
    async fn start(bin: &PathBuf, dir: &TempDir, upstream: SocketAddr) -> Dnsmasq {
        for attempt in 0..10 {
            // dnsmasq cannot be told to pick a port itself: take a free one and hand it
            // over (if another process grabs it meanwhile, dnsmasq exits and we retry).
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("free port")
                .port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let log = dir.join(&format!("dnsmasq-{attempt}.log"));
            let child = Command::new(bin)
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    "--pid-file=",
                    "--log-queries",
                    "--log-facility=-",
                    "--local-ttl=0",
                    "--host-record=vm1.karhu.xyz,192.168.121.10",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--server={}#{}", upstream.ip(), upstream.port()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("dnsmasq log"))
                .spawn()
                .expect("spawn dnsmasq");
            let mut d = Dnsmasq { child, addr, log };
            // Ready when it answers its own name.
            let deadline = Instant::now() + Duration::from_secs(5);
            let q = client::encode(&query("vm1.karhu.xyz.", RecordType::A));
            while Instant::now() < deadline {
                if matches!(d.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                // Its own answer, not a reply from whatever else took the port first.
                let reply = client::udp_raw_wait(addr, &q, Duration::from_millis(200)).await;
                let ours = reply
                    .and_then(|r| Message::from_vec(&r).ok())
                    .is_some_and(|m| rdata_strings(&m.answers) == ["192.168.121.10"]);
                if ours {
                    return d;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            eprintln!(
                "dnsmasq on port {port} did not come up:\n{}",
                std::fs::read_to_string(&d.log).unwrap_or_default()
            );
            let _ = d.child.kill();
        }
        panic!("dnsmasq did not start in 10 tries");
    }
}

/// libvirt's dnsmasq without `localOnly`: it answers the names it knows and forwards the
/// rest of the zone to its upstream, which is splitdns, which routes the zone back to it.
/// The loop appears after start (the servers file names dnsmasq later). The looping name
/// must end in SERVFAIL within 1.5 s with the attempt recorded; the names dnsmasq knows
/// keep resolving, without a reload.
#[test]
fn dnsmasq_forwarding_unknown_names_back_breaks_only_those_names() {
    let Some(bin) = dnsmasq_binary() else {
        eprintln!("skipped: dnsmasq is not installed (apt-get install dnsmasq-base)");
        return;
    };
    bounded(Duration::from_secs(40), async {
        let dir = TempDir::new("loop-dnsmasq");
        let file = dir.write("upstreams.conf", "");
        let body = format!(
            "{NO_CACHE}[[zone]]\nname = \"karhu.xyz\"\nservers_file = {}\ntimeout_ms = 1000\n",
            toml_str(&file.to_string_lossy())
        );
        let d = Daemon::start_in(dir, &body).await;
        let dm_dir = TempDir::new("dnsmasq");
        let dm = Dnsmasq::start(&bin, &dm_dir, d.udp).await;
        std::fs::write(&file, format!("nameserver {}\n", dm.addr)).unwrap();

        // splitdns picks up the file (directory watch) and routes karhu.xyz to dnsmasq.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = client::udp(d.udp, &query("vm1.karhu.xyz.", RecordType::A)).await;
            if rdata_strings(&r.answers) == ["192.168.121.10"] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "vm1.karhu.xyz never resolved through dnsmasq: {r:?}\ndnsmasq log:\n{}",
                std::fs::read_to_string(&dm.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        for round in 0..2 {
            let q = query("nope.karhu.xyz.", RecordType::A);
            let started = Instant::now();
            let r = client::udp(d.udp, &q).await;
            let took = started.elapsed();
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::ServFail,
                "round {round}"
            );
            assert!(
                took < Duration::from_millis(1500),
                "round {round}: the looping query took {took:?}\ndnsmasq log:\n{}",
                std::fs::read_to_string(&dm.log).unwrap_or_default()
            );
            let ev = d.event_with_id(q.metadata.id).await;
            let outcomes: Vec<&str> = ev.attempts.iter().map(|a| a.outcome.as_str()).collect();
            assert_eq!(outcomes, ["loop"], "round {round}: {ev:?}");
            assert_eq!(ev.error.as_deref(), Some("forwarding loop"), "{ev:?}");

            // The names dnsmasq answers itself keep resolving, without a reload.
            let r = client::udp(d.udp, &query("vm1.karhu.xyz.", RecordType::A)).await;
            assert_eq!(
                rdata_strings(&r.answers),
                ["192.168.121.10"],
                "round {round}: a loop on one name must not take the server out"
            );
        }
        // The looped copy of the query was answered SERVFAIL by splitdns itself.
        assert!(loop_seen(&[&d.events_path]));
    });
}
