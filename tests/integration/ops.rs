//! Issue 9: operating splitdns, through the real binary and real sockets: the control
//! socket (`splitdns control status|stats|flush|reload`, its mode, its one-line errors),
//! `/metrics` scraped over HTTP and checked with the real `promtool`, counters compared
//! with the events file after a mixed load, SIGUSR1, and the event schema v2 (one JSON type
//! per field, ECS field sets as objects, every field mapped in the shipped Elasticsearch
//! template).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

use crate::client::{self, query};
use crate::daemon::{bounded, toml_str, zone, TempDir};
use crate::events::{self, Event};
use crate::fake::{consul_table, public_table, Fake};
use crate::process::{self, Server};

const LIMIT: Duration = Duration::from_secs(60);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Setup {
    dir: TempDir,
    config: PathBuf,
    socket: PathBuf,
    events: PathBuf,
}

/// A config with a control socket, metrics on port 0, events to a file, and `body`.
fn setup(tag: &str, body: &str) -> Setup {
    let dir = TempDir::new(tag);
    let socket = dir.join("control.sock");
    let events = dir.join("events.jsonl");
    let text = format!(
        "listen = [\"127.0.0.1:0\"]\n{body}\n[events]\noutput = {}\n[control]\nsocket = {}\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        toml_str(&events.to_string_lossy()),
        toml_str(&socket.to_string_lossy()),
    );
    let config = dir.write("splitdns.toml", &text);
    Setup {
        dir,
        config,
        socket,
        events,
    }
}

/// `splitdns -c CONFIG control ARGS…`
fn control(config: &Path, args: &[&str]) -> Output {
    let mut all = vec!["-c", config.to_str().expect("utf-8"), "control"];
    all.extend_from_slice(args);
    process::run(&all)
}

fn control_ok(config: &Path, args: &[&str]) -> String {
    let out = control(config, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "control {args:?}: stdout {}\nstderr {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The address in the `metrics on http://ADDR/metrics` line.
fn metrics_addr(server: &mut Server) -> SocketAddr {
    let line = server.wait_line("metrics on http://");
    let rest = &line[line.find("http://").expect("url") + 7..];
    let addr = rest.split('/').next().unwrap_or("");
    addr.parse()
        .unwrap_or_else(|e| panic!("bad metrics address in {line:?}: {e}"))
}

/// GET `path` over HTTP/1.1; returns (status line, body).
fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read the response");
    let resp = text(&resp);
    let (head, body) = resp.split_once("\r\n\r\n").expect("a header block");
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// Runs `promtool check metrics` on `body`; panics with its output if it complains.
fn promtool_check(body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian: apt-get install prometheus; .ci/run does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{body}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// A small parser for the sample lines of the text format (enough for our own output;
/// promtool validates the format itself).
fn samples(body: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a value");
        let value: f64 = value.parse().expect("a number");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest.strip_suffix('}').expect("closing brace");
                let mut m = BTreeMap::new();
                let mut rest = inner;
                while !rest.is_empty() {
                    let (k, v) = rest.split_once("=\"").expect("label=");
                    let mut val = String::new();
                    let mut chars = v.char_indices();
                    let mut end = v.len();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some((_, e)) = chars.next() {
                                    val.push(if e == 'n' { '\n' } else { e });
                                }
                            }
                            '"' => {
                                end = i;
                                break;
                            }
                            c => val.push(c),
                        }
                    }
                    m.insert(k.to_owned(), val);
                    rest = v[end + 1..].trim_start_matches(',');
                }
                (n.to_owned(), m)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.push((name, labels, value));
    }
    out
}

/// Sum of `name` over samples whose labels include every `want` pair.
fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// Wait until the events file has exactly `n` lines and stays there briefly.
async fn settled_events(path: &Path, n: usize) -> Vec<Event> {
    let all = events::wait_for(path, n, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = events::read(path);
    assert_eq!(all.len(), again.len(), "events kept coming");
    assert_eq!(again.len(), n, "one event per packet sent");
    again
}

/// Sends `pkt` from `from` and waits briefly for any reply.
async fn raw_from(from: &str, to: SocketAddr, pkt: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind(from).await.expect("bind client");
    s.send_to(pkt, to).await.expect("send");
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_millis(1500), s.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[test]
fn control_socket_status_stats_flush_and_reload() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let dead = Fake::black_hole().await;
        let zones = format!(
            "{}{}",
            zone("dead.test", &[&dead], "timeout_ms = 50"),
            zone(".", &[&p], "")
        );
        let s = setup("ops-control", &zones);
        let mut server = Server::serve(&s.config, &[]);
        server.wait_line("control socket");

        // The socket: a socket, mode 0660 (never world-writable), owned by us.
        let meta = std::fs::metadata(&s.socket).expect("the control socket exists");
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o660, "mode 0660");

        // A miss, then a hit; a failing zone so one server gets backed off.
        let www = query("www.example.com.", RecordType::A);
        client::udp(server.udp, &www).await;
        client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
        let r = client::udp(server.udp, &query("x.dead.test.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        settled_events(&s.events, 3).await;

        let status = control_ok(&s.config, &["status"]);
        for want in [
            "splitdns ",
            "generation 1",
            "zone dead.test",
            "zone .:",
            &format!("1. {}", p.server()),
            &format!("1. {}", dead.server()),
            "BACKED OFF until",
            "forwarding loops: none",
            "answered 1",
        ] {
            assert!(status.contains(want), "status lacks {want:?}:\n{status}");
        }
        let dead_line = status.lines().find(|l| l.contains(&dead.server())).unwrap();
        assert!(
            dead_line.contains("timed out 2") && dead_line.contains("consecutive failures"),
            "{dead_line}"
        );

        let stats = control_ok(&s.config, &["stats"]);
        assert!(stats.contains("queries 3"), "{stats}");
        assert!(
            stats.contains("hit 1") && stats.contains("miss 2"),
            "{stats}"
        );
        assert!(stats.contains("events written 3, dropped 0"), "{stats}");
        let json: serde_json::Value =
            serde_json::from_str(&control_ok(&s.config, &["stats", "--json"])).expect("json");
        assert_eq!(json["queries"]["total"], 3);
        assert_eq!(json["queries"]["by_rcode"]["SERVFAIL"], 1);
        assert_eq!(json["queries"]["by_zone"]["dead.test"], 1);
        assert_eq!(
            json["upstream_attempts"][dead.server()]["timeout"],
            2,
            "{json}"
        );
        assert!(json["latency_ms"]["p50"].is_number(), "{json}");

        // flush NAME drops that name: the next query goes upstream again.
        let before = p.count();
        let out = control_ok(&s.config, &["flush", "WWW.example.com."]);
        assert!(out.contains("1 cache entry"), "{out}");
        client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(p.count(), before + 1, "flushed name was asked again");
        let out = control_ok(&s.config, &["flush", "zone", "com"]);
        assert!(out.contains("flushed zone com: 1 cache entry"), "{out}");
        client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
        let out = control_ok(&s.config, &["flush"]);
        assert!(out.contains("flushed everything: 1 cache entry"), "{out}");
        assert_eq!(p.count(), before + 2);

        // reload: success is reported, and a broken config is reported with file:line
        // and the key, exit 1, and the running config kept.
        let out = control_ok(&s.config, &["reload"]);
        assert!(out.contains("generation 2"), "{out}");
        let good = std::fs::read_to_string(&s.config).unwrap();
        std::fs::write(&s.config, format!("{good}\n[cache]\nmax_entriez = 1\n")).unwrap();
        let out = control(&s.config, &["reload"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("{}:", s.config.display()))
                && err.contains("cache.max_entriez")
                && err.contains("still serving the previous config"),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        std::fs::write(&s.config, good).unwrap();
        let r = client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);

        // SIGTERM removes the socket.
        server.signal("TERM");
        assert_eq!(
            server.wait_exit(Duration::from_secs(10)).map(|s| s.code()),
            Some(Some(0))
        );
        assert!(!s.socket.exists(), "socket removed on shutdown");
        drop(s.dir);
    });
}

#[test]
fn control_errors_are_one_line_and_exit_1() {
    let s = setup("ops-control-errors", "");
    let one_line = |out: &Output, want: &str| {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
        assert!(err.contains(want), "{want:?} not in {err:?}");
    };
    // No daemon: the socket does not exist.
    one_line(&control(&s.config, &["status"]), "does not exist");
    // A dead daemon: its socket file is left, nobody listens.
    drop(std::os::unix::net::UnixListener::bind(&s.socket).unwrap());
    one_line(&control(&s.config, &["stats"]), "nothing answers");
    // Not allowed: a user who is neither the owner nor in the group.
    std::fs::set_permissions(&s.socket, std::fs::Permissions::from_mode(0o660)).unwrap();
    let config = s.config.to_str().unwrap();
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(s.dir.join(""), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&s.config, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = {
            use std::os::unix::process::CommandExt;
            Command::new(process::BIN)
                .args(["-c", config, "control", "status"])
                .uid(65534)
                .gid(65534)
                .output()
                .unwrap()
        };
        one_line(&out, "permission denied");
    }
    // No [control] socket in the config.
    let bare = s.dir.write("bare.toml", "");
    one_line(&control(&bare, &["status"]), "no [control] socket");
    // Usage errors are clap's (exit 2).
    assert_eq!(control(&s.config, &["frobnicate"]).status.code(), Some(2));
}

#[test]
fn a_second_daemon_does_not_steal_a_live_socket() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let s = setup("ops-two", &zone(".", &[&p], ""));
        let mut first = Server::serve(&s.config, &[]);
        first.wait_line("control socket");
        let out = process::run(&["-c", s.config.to_str().unwrap(), "serve"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("another process answers on it"), "{err}");
        // The first one still answers on it.
        assert!(control_ok(&s.config, &["status"]).contains("generation 1"));
    });
}

/// The mixed load: hits, misses, a dead zone, refused clients, malformed packets, a query
/// outside every zone, TCP. Returns how many packets were sent (each must give one event).
async fn mixed_load(udp: SocketAddr, tcp: SocketAddr) -> usize {
    let mut sent = 0;
    for _ in 0..3 {
        client::udp(udp, &query("www.example.com.", RecordType::A)).await; // 1 miss, 2 hits
        sent += 1;
    }
    client::udp(
        udp,
        &client::with_edns(query("www.example.com.", RecordType::AAAA), 1232, true),
    )
    .await;
    client::tcp(tcp, &query("web.service.consul.", RecordType::SRV)).await;
    client::udp(udp, &query("nope.service.consul.", RecordType::A)).await;
    sent += 3;
    // Refused: a client outside `allow`, over UDP.
    let q = client::encode(&query("www.example.com.", RecordType::A));
    let r = raw_from("127.0.0.3:0", udp, &q)
        .await
        .expect("REFUSED reply");
    assert_eq!(
        client::decode(&r).metadata.response_code,
        ResponseCode::Refused
    );
    sent += 1;
    // Malformed: shorter than a header (dropped), no question (FORMERR), a response.
    assert!(raw_from("127.0.0.1:0", udp, b"\x12\x34\x01")
        .await
        .is_none());
    let formerr = [0x12, 0x34, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(raw_from("127.0.0.1:0", udp, &formerr).await.is_some());
    let mut resp = q.clone();
    resp[2] |= 0x80;
    assert!(raw_from("127.0.0.1:0", udp, &resp).await.is_none());
    sent += 3;
    // Last, so its server is still backed off when the test looks.
    let r = client::udp(udp, &query("x.dead.test.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    sent + 1
}

fn mixed_zones(c: &Fake, p: &Fake, dead: &Fake) -> String {
    format!(
        "allow = [\"127.0.0.1/32\"]\n{}{}{}",
        zone("consul", &[c], ""),
        zone("dead.test", &[dead], "timeout_ms = 50"),
        zone("com", &[p], "")
    )
}

#[test]
fn metrics_match_the_events_after_a_mixed_load_and_pass_promtool() {
    bounded(LIMIT, async {
        let c = Fake::answering(consul_table()).await;
        let p = Fake::answering(public_table()).await;
        let dead = Fake::black_hole().await;
        let s = setup("ops-metrics", &mixed_zones(&c, &p, &dead));
        let mut server = Server::serve(&s.config, &[]);
        let metrics = metrics_addr(&mut server);

        // Also a query outside every zone (no "." zone): REFUSED.
        let r = client::udp(server.udp, &query("example.org.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        let sent = 1 + mixed_load(server.udp, server.tcp).await;
        // The dead zone's server failed just before this (its query was the last).
        let dead_failed = Instant::now();
        let evs = settled_events(&s.events, sent).await;

        let (status, body) = http_get(metrics, "/metrics");
        let since_failure = dead_failed.elapsed();
        assert!(status.contains("200"), "{status}");
        promtool_check(&body);
        let m = samples(&body);
        for (name, _, _) in &m {
            assert!(name.starts_with("splitdns_"), "{name}");
        }

        // The query counter is the number of events written, label by label.
        let total = sum(&m, "splitdns_queries_total", &[]);
        assert_eq!(
            total as usize,
            evs.len(),
            "queries_total = events in the file"
        );
        assert_eq!(
            sum(&m, "splitdns_events_written_total", &[]) as usize,
            evs.len()
        );
        assert_eq!(sum(&m, "splitdns_events_dropped_total", &[]), 0.0);
        let count = |f: &dyn Fn(&Event) -> bool| evs.iter().filter(|e| f(e)).count() as f64;
        for cache in ["hit", "miss", "off"] {
            assert_eq!(
                sum(&m, "splitdns_queries_total", &[("cache", cache)]),
                count(&|e| e.cache == cache),
                "cache={cache}"
            );
        }
        assert_eq!(count(&|e| e.cache == "hit"), 2.0, "two hits in the load");
        for rcode in ["NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR"] {
            assert_eq!(
                sum(&m, "splitdns_queries_total", &[("rcode", rcode)]),
                count(&|e| e.rcode.as_deref() == Some(rcode)),
                "rcode={rcode}"
            );
        }
        assert_eq!(
            sum(&m, "splitdns_queries_total", &[("rcode", "")]),
            count(&|e| e.rcode.is_none()),
            "no reply sent"
        );
        for z in ["consul", "dead.test", "com", ""] {
            assert_eq!(
                sum(&m, "splitdns_queries_total", &[("zone", z)]),
                count(&|e| e.zone.as_deref().unwrap_or("") == z),
                "zone={z}"
            );
        }
        assert_eq!(
            sum(&m, "splitdns_queries_total", &[("transport", "tcp")]),
            count(&|e| e.proto == "tcp")
        );
        let errors: BTreeSet<&str> = evs.iter().filter_map(|e| e.error.as_deref()).collect();
        assert!(errors.len() >= 5, "{errors:?}");
        for e in errors {
            assert_eq!(
                sum(&m, "splitdns_query_errors_total", &[("error", e)]),
                count(&|x| x.error.as_deref() == Some(e)),
                "error={e}"
            );
        }
        let attempts: usize = evs.iter().map(|e| e.attempts.len()).sum();
        assert_eq!(
            sum(&m, "splitdns_upstream_attempts_total", &[]) as usize,
            attempts
        );
        let timeouts = evs
            .iter()
            .flat_map(|e| &e.attempts)
            .filter(|a| a.outcome == "timeout" && a.server == dead.server())
            .count();
        assert_eq!(
            sum(
                &m,
                "splitdns_upstream_attempts_total",
                &[("upstream", &dead.server()), ("outcome", "timeout")]
            ) as usize,
            timeouts
        );
        assert_eq!(
            sum(&m, "splitdns_query_duration_seconds_count", &[]),
            total,
            "every query is in the histogram"
        );
        assert_eq!(
            sum(
                &m,
                "splitdns_query_duration_seconds_bucket",
                &[("le", "+Inf")]
            ),
            total
        );
        // Backed off for at least 1 s after its failure: checked if the scrape came sooner
        // (a loaded machine can take longer to get here).
        if since_failure < Duration::from_millis(900) {
            assert_eq!(
                sum(
                    &m,
                    "splitdns_upstream_backed_off",
                    &[("upstream", &dead.server())]
                ),
                1.0
            );
        } else {
            eprintln!("scraped {since_failure:?} after the failure: back-off gauge not checked");
        }

        // The control socket's stats agree, and other paths are not metrics.
        let json: serde_json::Value =
            serde_json::from_str(&control_ok(&s.config, &["stats", "--json"])).unwrap();
        assert_eq!(json["queries"]["total"].as_u64(), Some(evs.len() as u64));
        assert!(http_get(metrics, "/").0.contains("404"));
    });
}

#[test]
fn sigusr1_logs_stats_and_keeps_serving() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let s = setup("ops-usr1", &zone(".", &[&p], ""));
        let mut server = Server::serve(&s.config, &[]);
        client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
        settled_events(&s.events, 1).await;
        server.signal("USR1");
        let line = server.wait_line("stats: queries 1");
        assert!(line.contains("INFO"), "{line}");
        server.wait_line("stats: events written 1, dropped 0");
        let r = client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NoError,
            "still serving"
        );
        server.signal("USR1");
        server.wait_line("stats: queries 2");
        assert_eq!(server.wait_exit(Duration::from_millis(100)), None, "alive");
    });
}

/// JSON type of a value, for the one-type-per-field rule.
fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(n) if n.is_f64() => "float",
        serde_json::Value::Number(_) => "integer",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Every field path (arrays transparent) with the JSON type it has in `v`.
fn leaves(path: &str, v: &serde_json::Value, out: &mut Vec<(String, &'static str)>) {
    match v {
        serde_json::Value::Object(m) => {
            out.push((path.to_owned(), "object"));
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                leaves(&p, x, out);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                leaves(path, x, out);
            }
        }
        x => out.push((path.to_owned(), kind(x))),
    }
}

/// The Elasticsearch type mapped for each field path in the shipped component template.
fn template_types() -> BTreeMap<String, String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/elasticsearch/splitdns-mappings.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the template")).expect("json");
    fn walk(prefix: &str, props: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        for (k, v) in props.as_object().expect("properties") {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if let Some(t) = v["type"].as_str() {
                out.insert(p.clone(), t.to_owned());
            }
            if v.get("properties").is_some() {
                out.insert(p.clone(), "object".to_owned());
                walk(&p, &v["properties"], out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", &doc["template"]["mappings"]["properties"], &mut out);
    out
}

#[test]
fn event_schema_one_type_per_field_and_mapped_in_the_template() {
    bounded(LIMIT, async {
        let c = Fake::answering(consul_table()).await;
        let p = Fake::answering(public_table()).await;
        let dead = Fake::black_hole().await;
        let s = setup("ops-schema", &mixed_zones(&c, &p, &dead));
        let server = Server::serve(&s.config, &[]);
        let sent = mixed_load(server.udp, server.tcp).await;
        let evs = settled_events(&s.events, sent).await;

        // Hits carry the entry's remaining TTL and age; every event the generation it was
        // answered under once routing was reached.
        let hit = evs.iter().find(|e| e.cache == "hit").expect("a hit");
        assert!(
            hit.cache_ttl.is_some_and(|t| t > 250 && t <= 300),
            "{hit:?}"
        );
        assert!(hit.cache_age.is_some_and(|a| a < 30), "{hit:?}");
        assert_eq!(hit.generation, Some(1));
        assert!(evs
            .iter()
            .filter(|e| e.cache != "hit")
            .all(|e| e.cache_ttl.is_none()));
        let dnssec = evs
            .iter()
            .find(|e| e.qtype.as_deref() == Some("AAAA"))
            .unwrap();
        assert!(dnssec.flags.contains(&"DO".to_owned()), "{dnssec:?}");
        assert!(evs.iter().any(|e| e.outcome == "failure"));

        // One JSON type per field across every event; ECS field sets are objects; every
        // field is mapped in the Elasticsearch template with a type that takes it.
        let mut types: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for l in events::lines(&s.events) {
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            events::check_line(&v).unwrap_or_else(|e| panic!("{e}\n{l}"));
            let mut fields = Vec::new();
            leaves("", &v, &mut fields);
            for (path, k) in fields {
                types.entry(path).or_default().insert(k);
            }
        }
        let mapped = template_types();
        for (path, kinds) in &types {
            if path.is_empty() {
                continue;
            }
            assert_eq!(
                kinds.len(),
                1,
                "`{path}` has more than one JSON type: {kinds:?}"
            );
            let k = kinds.iter().next().unwrap();
            let es = mapped
                .get(path)
                .unwrap_or_else(|| panic!("`{path}` is not mapped in contrib/elasticsearch"));
            let ok = match *k {
                "object" => es == "object",
                "integer" => ["long", "keyword"].contains(&es.as_str()),
                "float" => es == "float",
                "string" => ["keyword", "ip", "date", "match_only_text"].contains(&es.as_str()),
                _ => false,
            };
            assert!(ok, "`{path}`: JSON {k} is mapped as {es}");
        }
        for set in events::ECS_OBJECTS {
            if let Some(k) = types.get(*set) {
                assert_eq!(k.iter().copied().collect::<Vec<_>>(), ["object"], "{set}");
            }
        }
        for must in [
            "error",
            "client",
            "dns",
            "event",
            "network",
            "splitdns.cache",
        ] {
            assert!(types.contains_key(must), "the load produced no `{must}`");
        }
    });
}

#[test]
fn events_count_stays_equal_to_queries_when_the_cache_serves_most() {
    // The hit fast path and the slow path both record through the same emit: after a
    // burst of hits from many sockets, stats and the file still agree exactly.
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let s = setup("ops-burst", &zone(".", &[&p], ""));
        let server = Server::serve(&s.config, &[]);
        let started = Instant::now();
        let mut n = 0;
        while n < 200 && started.elapsed() < Duration::from_secs(20) {
            client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
            n += 1;
        }
        let evs = settled_events(&s.events, n).await;
        let json: serde_json::Value =
            serde_json::from_str(&control_ok(&s.config, &["stats", "--json"])).unwrap();
        assert_eq!(json["queries"]["total"].as_u64(), Some(evs.len() as u64));
        assert_eq!(
            json["queries"]["by_cache"]["hit"].as_u64(),
            Some(evs.iter().filter(|e| e.cache == "hit").count() as u64)
        );
        assert_eq!(json["events"]["written"].as_u64(), Some(n as u64));
    });
}

#[test]
fn events_and_status_name_the_servers_file_version() {
    bounded(LIMIT, async {
        let a = Fake::answering(public_table()).await;
        let b = Fake::answering(public_table()).await;
        let dir_files = TempDir::new("ops-files");
        let file = dir_files.join("upstreams.conf");
        std::fs::write(&file, format!("nameserver {}\n", a.server())).unwrap();
        let s = setup(
            "ops-files-cfg",
            &zone(
                ".",
                &[],
                &format!(
                    "servers_file = {}\ncache = false",
                    toml_str(&file.to_string_lossy())
                ),
            ),
        );
        let mut server = Server::serve(&s.config, &[]);
        client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
        let e = &settled_events(&s.events, 1).await[0];
        assert_eq!(e.servers_file_version, Some(1), "{e:?}");
        // A new lease: the file changes, the version moves, events and status follow.
        std::fs::write(&file, format!("nameserver {}\n", b.server())).unwrap();
        server.wait_line("servers file changed");
        // The swap follows the log line: ask until the new server answers (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        let last = loop {
            client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let evs = events::wait_for(&s.events, 2, Duration::from_secs(5)).await;
            let last = evs.last().unwrap().clone();
            if last.upstream == Some(b.server()) || Instant::now() > deadline {
                break last;
            }
        };
        assert_eq!(last.upstream, Some(b.server()), "the new lease's server");
        assert_eq!(last.servers_file_version, Some(2), "{last:?}");
        assert_eq!(last.generation, Some(2));
        let status = control_ok(&s.config, &["status"]);
        assert!(
            status.contains(&format!(
                "servers file {}: present, version 2",
                file.display()
            )),
            "{status}"
        );
        assert!(status.contains("(version 2)"), "{status}");
    });
}
