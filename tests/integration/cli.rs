//! End to end through the real binary: `serve` on port 0 (the log line shows the real port),
//! queries over UDP and TCP, `check` on good and bad files, `route`, SIGHUP with a broken and
//! then a good config, SIGTERM draining an in-flight query and exiting 0, usage errors.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::client::{self, query, rdata_strings};
use crate::config_files::{fixture, BAD, GOOD};
use crate::daemon::{bounded, toml_str, zone, TempDir, NO_CACHE};
use crate::fake::{consul_table, public_table, Behaviour, Fake};
use crate::process::{self, Server};

const LIMIT: Duration = Duration::from_secs(40);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A config file for the binary: events to a file, zones from `zones`.
fn write_config(dir: &TempDir, listen: &str, zones: &str) -> std::path::PathBuf {
    let events = dir.join("events.jsonl");
    dir.write(
        "splitdns.toml",
        &format!(
            "listen = [{}]\n{NO_CACHE}\n[events]\noutput = {}\n\n{zones}",
            toml_str(listen),
            toml_str(&events.to_string_lossy())
        ),
    )
}

#[test]
fn serve_on_port_zero_answers_udp_and_tcp() {
    bounded(LIMIT, async {
        let c = Fake::answering(consul_table()).await;
        let p = Fake::answering(public_table()).await;
        let dir = TempDir::new("cli-serve");
        let config = write_config(
            &dir,
            "127.0.0.1:0",
            &format!("{}{}", zone("consul", &[&c], ""), zone(".", &[&p], "")),
        );
        let server = Server::serve(&config, &[]);
        assert_eq!(server.udp.ip().to_string(), "127.0.0.1");
        assert_eq!(server.udp.port(), server.tcp.port(), "TCP on the UDP port");

        // dig @127.0.0.1 -p PORT web.service.consul SRV
        let q = query("Web.Service.Consul.", RecordType::SRV);
        let r = client::udp(server.udp, &q).await;
        assert_eq!(r.metadata.id, q.metadata.id);
        assert_eq!(r.queries[0].name().to_ascii(), "Web.Service.Consul.");
        assert_eq!(r.answers.len(), 2);
        assert_eq!(r.additionals.len(), 2, "SRV glue");
        let r = client::tcp(server.tcp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(rdata_strings(&r.answers), ["93.184.216.34"]);
        assert_eq!((c.count(), p.count()), (1, 1));

        // One event per query in the configured file.
        let events =
            crate::events::wait_for(&dir.join("events.jsonl"), 2, Duration::from_secs(5)).await;
        assert_eq!(events.len(), 2);
    });
}

#[test]
fn listen_flag_overrides_the_config() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let dir = TempDir::new("cli-listen");
        // The file says port 53 (needs root and may be taken); --listen wins.
        let config = write_config(&dir, "127.0.0.1:53", &zone(".", &[&p], ""));
        let server = Server::serve(&config, &["--listen", "127.0.0.1:0"]);
        assert_ne!(server.udp.port(), 53);
        let r = client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    });
}

#[test]
fn check_accepts_good_files() {
    for name in GOOD {
        let path = fixture(name);
        let out = process::run(&["-c", path.to_str().unwrap(), "check"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "check {name}: stdout {}\nstderr {}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let path = fixture("good.toml");
    let out = process::run(&["-c", path.to_str().unwrap(), "check"]);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    for (zone, server) in [
        ("consul", "127.0.0.1:8600"),
        ("karhu.xyz", "192.168.121.1:53"),
        (".", "127.0.0.1:5300"),
    ] {
        assert!(
            lines.iter().any(|l| l.contains(zone) && l.contains(server)),
            "a one-line summary for zone {zone} naming {server}:\n{stdout}"
        );
    }
}

#[test]
fn check_rejects_bad_files_with_file_line_and_key() {
    for (name, line, key) in BAD {
        let path = fixture(name);
        let out = process::run(&["-c", path.to_str().unwrap(), "check"]);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(
            out.status.code(),
            Some(1),
            "check {name} must exit 1:\n{all}"
        );
        let prefix = format!("{}:{line}:", path.display());
        assert!(
            all.contains(&prefix),
            "check {name}: no {prefix:?} in:\n{all}"
        );
        assert!(
            all.contains(key),
            "check {name}: key {key:?} not named in:\n{all}"
        );
    }
}

#[test]
fn check_rejects_a_missing_config_file() {
    let dir = TempDir::new("cli-missing");
    let path = dir.join("nope.toml");
    let out = process::run(&["-c", path.to_str().unwrap(), "check"]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains(path.to_str().unwrap()),
        "names the file:\n{all}"
    );
}

/// `check` on configs that once passed: each must exit 1 naming file:line:col and the key.
#[test]
fn check_rejects_each_validation_gap() {
    let dir = TempDir::new("cli-gaps");
    let cases: &[(&str, &str, &str)] = &[
        (
            "[[zone]]\nname = \"x\"\nservers = [\"fd00::1:53\"]\n",
            ":3:12: zone[0].servers:",
            "needs brackets",
        ),
        (
            "[[zone]]\nname = \"\"\n",
            ":2:8: zone[0].name:",
            "must not be empty",
        ),
        (
            "[[zone]]\nname = \"*.consul\"\n",
            ":2:8: zone[0].name:",
            "wildcards are not supported",
        ),
        (
            "listen = [\"127.0.0.1:53\"]\n",
            ":1:1: zone:",
            "no [[zone]]",
        ),
        (
            "[[zone]]\nname = \"x\"\nservers = [\"1.1.1.1\"\n\n[cache]\n",
            ":3:11: zone[0].servers:",
            "never closed",
        ),
        (
            "[[zone]]\nname = \"x\"\ntimeout_ms = \"fast\"\n",
            ":3:14: zone[0].timeout_ms:",
            "expected a whole number",
        ),
    ];
    for (i, (body, at, what)) in cases.iter().enumerate() {
        let path = dir.write(&format!("gap{i}.toml"), body);
        let out = process::run(&["-c", path.to_str().unwrap(), "check"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{body:?} passed check:\n{err}");
        let want = format!("{}{at}", path.display());
        assert!(err.contains(&want), "{body:?}: no {want:?} in\n{err}");
        assert!(err.contains(what), "{body:?}: no {what:?} in\n{err}");
        assert!(!err.contains("u64"), "{err}");
    }
}

/// `check` fails where `serve` would: an unknown `user`, an events file that cannot be
/// created, a servers file that exists but cannot be read. Each error names file:line:col
/// and the key. (As root, files are judged for `user = "nobody"`, as `serve` opens them
/// after dropping to it; otherwise for the user running the test.)
#[test]
fn check_rejects_what_serve_would_trip_on() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("cli-preflight");
    let shut = dir.join("shut");
    std::fs::create_dir(&shut).unwrap();
    std::fs::set_permissions(&shut, std::fs::Permissions::from_mode(0o555)).unwrap();
    let secret = dir.write("secret.conf", "nameserver 192.0.2.1\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let open_dir = dir.join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let q = |p: &std::path::Path| toml_str(&p.to_string_lossy());
    let zone = "[[zone]]\nname = \".\"\nservers = [\"192.0.2.53\"]\n";
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("user = \"no-such-user-splitdns\"\n{zone}"),
            ":1:8: user:",
            "`no-such-user-splitdns` does not exist",
        ),
        (
            format!(
                "user = \"nobody\"\n[events]\noutput = {}\n{zone}",
                q(&dir.join("no-such-dir").join("events.jsonl"))
            ),
            ":3:10: events.output:",
            "does not exist",
        ),
        (
            format!(
                "user = \"nobody\"\n[events]\noutput = {}\n{zone}",
                q(&shut.join("events.jsonl"))
            ),
            ":3:10: events.output:",
            "is not writable by",
        ),
        (
            format!("user = \"nobody\"\n{zone}servers_file = {}\n", q(&secret)),
            ":5:16: zone[0].servers_file:",
            "secret.conf",
        ),
    ];
    for (body, at, what) in &cases {
        let path = dir.write("preflight.toml", body);
        let out = process::run(&["-c", path.to_str().unwrap(), "check"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{body}\npassed check:\n{err}");
        let want = format!("{}{at}", path.display());
        assert!(err.contains(&want), "{body}\nno {want:?} in\n{err}");
        assert!(err.contains(what), "{body}\nno {what:?} in\n{err}");
    }
    // Fine: a writable events directory, a servers file that does not exist yet (DHCP
    // writes it later), and events to stdout.
    let body = format!(
        "user = \"nobody\"\n[events]\noutput = {}\n{zone}servers_file = {}\n",
        q(&open_dir.join("events.jsonl")),
        q(&dir.join("later").join("upstreams.conf"))
    );
    let path = dir.write("fine.toml", &body);
    let out = process::run(&["-c", path.to_str().unwrap(), "check"]);
    assert_eq!(out.status.code(), Some(0), "{body}\n{}", text(&out.stderr));
    assert!(
        !open_dir.join("events.jsonl").exists(),
        "check creates nothing"
    );
}

/// A servers file whose directory does not exist yet is polled; that is said once, not
/// every poll, and said again when the directory appears (then the servers are used).
#[test]
fn a_missing_servers_directory_is_reported_once_and_when_it_appears() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let dir = TempDir::new("cli-nodir");
        let later = dir.join("later");
        let file = later.join("upstreams.conf");
        let config = write_config(
            &dir,
            "127.0.0.1:0",
            &format!(
                "[[zone]]\nname = \".\"\nservers_file = {}\n",
                toml_str(&file.to_string_lossy())
            ),
        );
        let mut server = Server::serve(&config, &[]);
        let said = |s: &Server| {
            s.stderr_lines()
                .iter()
                .filter(|l| l.contains("cannot watch directory"))
                .count()
        };
        // Six polls' worth (the directory is retried every POLL_INTERVAL).
        tokio::time::sleep(splitdns::reload::POLL_INTERVAL * 6).await;
        assert_eq!(
            said(&server),
            1,
            "once, not per poll:\n{}",
            server.stderr_lines().join("\n")
        );
        std::fs::create_dir(&later).unwrap();
        std::fs::write(&file, format!("nameserver {}\n", p.addr)).unwrap();
        server.wait_line("can be watched now");
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.count() == 0 {
            assert!(Instant::now() < deadline, "servers file not used");
            let _ = client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(said(&server), 1);
    });
}

#[test]
fn errors_say_the_os_reason_once() {
    let dir = TempDir::new("cli-once");
    let path = dir.join("nope.toml");
    let out = process::run(&["-c", path.to_str().unwrap(), "check"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the OS message once:\n{err}"
    );
}

#[test]
fn invalid_log_level_is_a_usage_error() {
    let path = fixture("good.toml");
    for bad in ["verbose", "splitdns=loud", ""] {
        let out = process::run(&["--log-level", bad, "-c", path.to_str().unwrap(), "check"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--log-level {bad:?}:\n{err}");
        assert!(err.contains("--log-level"), "names the flag:\n{err}");
    }
    let out = process::run(&[
        "--log-level",
        "warn,splitdns=debug",
        "-c",
        path.to_str().unwrap(),
        "check",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn log_level_target_directives_pick_what_is_logged() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let dir = TempDir::new("cli-log-targets");
        let config = write_config(&dir, "127.0.0.1:0", &zone(".", &[&p], ""));
        // Everything off except splitdns::app: its `listening on` lines still come.
        let mut server = Server::serve(&config, &["--log-level", "off,splitdns::app=info"]);
        let r = client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(rdata_strings(&r.answers), ["93.184.216.34"]);
        // A failed reload is a warning from splitdns::reload: filtered out.
        std::fs::write(&config, "listen = [\"127.0.0.1:0\"]\nbogus_key = true\n").unwrap();
        server.signal("HUP");
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.signal("TERM");
        assert!(server.wait_exit(Duration::from_secs(10)).is_some(), "exits");
        let lines = server.stderr_lines();
        assert!(lines.len() >= 2, "{lines:?}");
        for line in &lines {
            assert!(
                line.contains(" splitdns::app:"),
                "only splitdns::app: {line}"
            );
        }
    });
}

#[test]
fn usage_errors_exit_2() {
    let out = process::run(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = process::run(&["-c", "/dev/null", "route"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "route needs a NAME: {}",
        text(&out.stderr)
    );
}

/// Position of `needle` in `haystack`, failing the test when absent.
fn pos(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in route output:\n{haystack}"))
}

/// `check` and `route` say which UDP socket policy each server gets: a shared socket for
/// loopback (and this host's own addresses) unless the zone says `shared_sockets = false`,
/// a fresh random port per query for everything else.
#[test]
fn check_and_route_name_each_servers_socket_policy() {
    let dir = TempDir::new("cli-sockets");
    let config = dir.write(
        "splitdns.toml",
        r#"listen = ["127.0.0.1:0"]

[[zone]]
name = "consul"
servers = ["127.0.0.1:8600"]

[[zone]]
name = "strict.test"
servers = ["127.0.0.1:8601"]
shared_sockets = false

[[zone]]
name = "."
servers = ["192.0.2.1"]
"#,
    );
    let cfg = config.to_str().unwrap();
    let out = process::run(&["-c", cfg, "check"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for want in [
        "sockets [127.0.0.1:8600 shared socket]",
        "sockets [127.0.0.1:8601 fresh port per query]",
        "sockets [192.0.2.1:53 fresh port per query]",
    ] {
        assert!(stdout.contains(want), "check: no {want:?} in:\n{stdout}");
    }
    for (name, want) in [
        (
            "a.service.consul",
            "127.0.0.1:8600 (servers; shared socket)",
        ),
        (
            "a.strict.test",
            "127.0.0.1:8601 (servers; fresh port per query)",
        ),
        (
            "www.example.com",
            "192.0.2.1:53 (servers; fresh port per query)",
        ),
    ] {
        let out = process::run(&["-c", cfg, "route", name]);
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains(want),
            "route {name}: no {want:?} in:\n{stdout}"
        );
    }
}

#[test]
fn route_prints_zone_and_servers_in_order() {
    let dir = TempDir::new("cli-route");
    let upstreams = dir.write(
        "upstreams.conf",
        "nameserver 127.0.0.9\nnameserver 127.0.0.10:5300\n",
    );
    let config = dir.write(
        "splitdns.toml",
        &format!(
            r#"listen = ["127.0.0.1:0"]

[[zone]]
name = "consul"
servers = ["127.0.0.1:8601", "127.0.0.1:8600"]

[[zone]]
name = "karhu.xyz"
networks = ["192.168.121.0/24"]
servers = ["192.168.121.1"]

[[zone]]
name = "."
servers_file = {}
servers = ["127.0.0.11:5300"]
"#,
            toml_str(&upstreams.to_string_lossy())
        ),
    );
    let cfg = config.to_str().unwrap();
    let route = |name: &str, qtype: Option<&str>| {
        let mut args = vec!["-c", cfg, "route", name];
        args.extend(qtype);
        let out = process::run(&args);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "route {name}: {stdout}{}",
            text(&out.stderr)
        );
        stdout
    };

    let out = route("foo.service.consul", None);
    assert!(out.contains("consul"), "{out}");
    assert!(
        pos(&out, "127.0.0.1:8601") < pos(&out, "127.0.0.1:8600"),
        "order:\n{out}"
    );

    let out = route("www.example.com", Some("AAAA"));
    let (a, b, c) = (
        pos(&out, "127.0.0.9:53"),
        pos(&out, "127.0.0.10:5300"),
        pos(&out, "127.0.0.11:5300"),
    );
    assert!(a < b && b < c, "servers file first, then static:\n{out}");
    assert!(!out.contains("8600"), "not the consul servers:\n{out}");

    let out = route("10.121.168.192.in-addr.arpa", Some("PTR"));
    assert!(
        out.contains("karhu.xyz") && out.contains("192.168.121.1:53"),
        "{out}"
    );

    let out = route("web.notconsul", None);
    assert!(
        out.contains("127.0.0.11:5300") && !out.contains("8600"),
        "{out}"
    );

    let out = route("karhu.xyz", Some("DS"));
    assert!(
        out.contains("127.0.0.11:5300"),
        "DS at the apex goes to the parent:\n{out}"
    );
    assert!(
        !out.contains("192.168.121.1"),
        "DS at the apex goes to the parent:\n{out}"
    );
}

/// Query until the answer comes from `fake` (a reload took effect), bounded.
async fn until_served_by(server: &Server, fake: &Fake, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let r = client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        if fake.count() > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "reload not applied within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn sighup_with_broken_config_keeps_serving_then_good_config_applies() {
    bounded(LIMIT, async {
        let first = Fake::answering(public_table()).await;
        let second = Fake::answering(public_table()).await;
        let dir = TempDir::new("cli-hup");
        let config = write_config(&dir, "127.0.0.1:0", &zone(".", &[&first], ""));
        let mut server = Server::serve(&config, &[]);
        let _ = client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(first.count(), 1);

        // A broken file: the running config stays.
        std::fs::write(&config, "listen = [\"127.0.0.1:0\"]\nbogus_key = true\n").unwrap();
        server.signal("HUP");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            server.wait_exit(Duration::from_millis(10)).is_none(),
            "still running"
        );
        for _ in 0..3 {
            let r = client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
            assert_eq!(rdata_strings(&r.answers), ["93.184.216.34"]);
        }
        assert_eq!(first.count(), 4, "still the old config's server");
        let logged = server.stderr_lines().join("\n");
        assert!(
            logged.contains("bogus_key"),
            "the reload failure is logged with the key:\n{logged}"
        );

        // A good file: the new servers are used, on the same sockets.
        write_config(&dir, "127.0.0.1:0", &zone(".", &[&second], ""));
        server.signal("HUP");
        until_served_by(&server, &second, Duration::from_secs(10)).await;
        let before = first.count();
        let _ = client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(first.count(), before, "the old server is no longer asked");
    });
}

#[test]
fn sigterm_drains_in_flight_queries_and_exits_0() {
    bounded(LIMIT, async {
        let slow = Fake::start(Behaviour::Delay(Duration::from_millis(600)), public_table()).await;
        let dir = TempDir::new("cli-term");
        let config = write_config(
            &dir,
            "127.0.0.1:0",
            &zone(".", &[&slow], "timeout_ms = 2000"),
        );
        let mut server = Server::serve(&config, &[]);
        let addr = server.udp;
        let in_flight = tokio::spawn(async move {
            client::udp(addr, &query("www.example.com.", RecordType::A)).await
        });
        // Wait until the upstream has the query, then ask splitdns to stop.
        slow.wait_until_asked(Duration::from_secs(5)).await;
        server.signal("TERM");
        let r = in_flight.await.expect("in-flight query task");
        assert_eq!(
            rdata_strings(&r.answers),
            ["93.184.216.34"],
            "the in-flight query is answered before exit"
        );
        let status = server
            .wait_exit(Duration::from_secs(10))
            .expect("splitdns exits within 10 s of SIGTERM");
        assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
        // Once stopped, nothing answers on that port.
        let bytes = client::encode(&query("www.example.com.", RecordType::A));
        let gone = client::udp_raw_wait(addr, &bytes, Duration::from_millis(300)).await;
        assert!(gone.is_none(), "nothing answers after exit");
    });
}

#[test]
fn every_listen_address_gets_udp_and_tcp() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let dir = TempDir::new("cli-multi");
        let config = write_config(&dir, "127.0.0.1:53", &zone(".", &[&p], ""));
        let mut server = Server::serve(
            &config,
            &["--listen", "127.0.0.1:0", "--listen", "127.0.0.2:0"],
        );
        let second_udp = server.wait_listening_on("udp", "127.0.0.2:");
        let second_tcp = server.wait_listening_on("tcp", "127.0.0.2:");
        assert_eq!(second_udp.port(), second_tcp.port());
        for (udp, tcp) in [(server.udp, server.tcp), (second_udp, second_tcp)] {
            let r = client::udp(udp, &query("www.example.com.", RecordType::A)).await;
            assert_eq!(rdata_strings(&r.answers), ["93.184.216.34"], "udp {udp}");
            let r = client::tcp(tcp, &query("www.example.com.", RecordType::A)).await;
            assert_eq!(rdata_strings(&r.answers), ["93.184.216.34"], "tcp {tcp}");
        }
        assert!(
            !server.stderr_lines().iter().any(|l| l.contains(":53 ")),
            "--listen replaces the file's listen list"
        );
    });
}

#[test]
fn sigint_exits_0() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let dir = TempDir::new("cli-int");
        let config = write_config(&dir, "127.0.0.1:0", &zone(".", &[&p], ""));
        let mut server = Server::serve(&config, &[]);
        let _ = client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
        server.signal("INT");
        let status = server
            .wait_exit(Duration::from_secs(10))
            .expect("splitdns exits within 10 s of SIGINT");
        assert_eq!(status.code(), Some(0), "SIGINT exits 0");
    });
}

#[test]
fn check_and_route_work_on_every_shipped_config() {
    let dir = crate::config_files::root().join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let p = path.to_str().unwrap();
        let out = process::run(&["-c", p, "check"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "check {p}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let out = process::run(&["-c", p, "route", "www.example.com"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "route on {p}: {}",
            text(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 3, "config/ ships at least three files");
    let alpine = dir.join("splitdns.toml");
    let out = process::run(&[
        "-c",
        alpine.to_str().unwrap(),
        "route",
        "web.service.consul",
        "SRV",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("consul") && stdout.contains("127.0.0.1:8600"),
        "the Alpine config sends *.consul to the local agent:\n{stdout}"
    );
}
