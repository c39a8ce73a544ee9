//! Every shipped file in `config/` and every fixture in `tests/fixtures/` is parsed with
//! `Config::load`; bad fixtures fail with `FILE:LINE:COL: KEY: message`.

use std::path::{Path, PathBuf};

use splitdns::config::Config;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture's path.
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests").join("fixtures").join(name)
}

/// Bad fixtures: (file, line of the offending key or value, text the key must contain).
pub const BAD: &[(&str, usize, &str)] = &[
    ("bad-unknown-key.toml", 7, "timeout"),
    ("bad-unknown-top-key.toml", 2, "lisen"),
    ("bad-address.toml", 8, "servers"),
    ("duplicate-zone.toml", 10, "name"),
    ("bad-cidr.toml", 7, "networks"),
];

/// Good fixtures.
pub const GOOD: &[&str] = &["good.toml", "missing-servers-file.toml"];

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_config_loads() {
    let dir = root().join("config");
    let files = toml_files(&dir);
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for required in ["splitdns.toml", "libvirt-host.toml"] {
        assert!(
            names.iter().any(|n| n == required),
            "config/{required} must ship (issue 2); found {names:?}"
        );
    }
    assert!(
        files.len() >= 3,
        "plus a quickstart config; found {names:?}"
    );
    for path in &files {
        let config = Config::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!config.zones.is_empty(), "{} has no zones", path.display());
    }
}

#[test]
fn alpine_config_routes_consul_libvirt_and_dhcp() {
    let config = Config::load(&root().join("config").join("splitdns.toml")).unwrap();
    let consul = config.zones.iter().find(|z| z.name == "consul");
    assert!(consul.is_some(), "a consul zone");
    assert!(
        config.zones.iter().any(|z| !z.reverse_zones.is_empty()),
        "the libvirt domain with its network's reverse zone"
    );
    let root_zone = config
        .zones
        .iter()
        .find(|z| z.name == ".")
        .expect("a `.` zone");
    assert!(
        root_zone.servers_file.is_some(),
        "`.` reads the DHCP-written servers file"
    );
}

#[test]
fn good_fixtures_load() {
    for name in GOOD {
        let path = fixture(name);
        Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let config = Config::load(&fixture("good.toml")).unwrap();
    let names: Vec<&str> = config.zones.iter().map(|z| z.name.as_str()).collect();
    assert_eq!(names, ["consul", "karhu.xyz", "."]);
    let karhu = &config.zones[1];
    assert_eq!(
        karhu.servers,
        [
            "192.168.121.1:53".parse().unwrap(),
            "192.168.121.2:5353".parse().unwrap()
        ],
        "port 53 when omitted, order kept"
    );
    assert!(
        karhu
            .reverse_zones
            .iter()
            .any(|z| z.trim_end_matches('.') == "121.168.192.in-addr.arpa"),
        "{:?}",
        karhu.reverse_zones
    );
    assert_eq!(config.zones[0].timeout.as_millis(), 500);
    assert!(!config.zones[0].cache);
}

#[test]
fn bad_fixtures_name_file_line_and_key() {
    for (name, line, key) in BAD {
        let path = fixture(name);
        let err = match Config::load(&path) {
            Ok(_) => panic!("{name} must be rejected"),
            Err(e) => e.to_string(),
        };
        let prefix = format!("{}:{line}:", path.display());
        assert!(
            err.starts_with(&prefix),
            "{name}: error must start with {prefix:?}: {err}"
        );
        let col = err[prefix.len()..].split(':').next().unwrap_or("");
        assert!(
            !col.is_empty() && col.chars().all(|c| c.is_ascii_digit()),
            "{name}: FILE:LINE:COL expected: {err}"
        );
        assert!(
            err.contains(key),
            "{name}: error must name the key {key:?}: {err}"
        );
    }
}

#[test]
fn from_toml_str_reports_the_given_path() {
    let path = Path::new("/etc/splitdns/inline.toml");
    let err = Config::from_toml_str("listen = [\"127.0.0.1:53\"]\nbogus = 1\n", path)
        .expect_err("unknown key rejected")
        .to_string();
    assert!(err.starts_with("/etc/splitdns/inline.toml:2:"), "{err}");
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn servers_file_fixture_parses_in_order() {
    let text = std::fs::read_to_string(fixture("upstreams.conf")).unwrap();
    let parsed = splitdns::dhcp::parse(&text);
    let want: Vec<std::net::SocketAddr> = vec![
        "192.0.2.53:53".parse().unwrap(),
        "192.0.2.54:5353".parse().unwrap(),
    ];
    assert_eq!(
        parsed.servers, want,
        "nameserver lines in order; others ignored"
    );
}

/// Ports a quickstart must not default to: DNS itself and DoT (need root), mDNS and the
/// mDNSResponder control port, LLMNR, unbound as commonly set up behind Pi-hole (5335),
/// Consul's DNS (8600), and alternative DNS ports common in other tools' docs.
const TAKEN_PORTS: &[(u16, &str)] = &[
    (53, "DNS"),
    (853, "DNS over TLS"),
    (5353, "mDNS"),
    (5354, "mDNSResponder"),
    (5355, "LLMNR"),
    (5335, "unbound behind Pi-hole"),
    (8600, "Consul DNS"),
    (5300, "IANA hacl-hb, common alternative DNS port"),
    (1053, "IANA remote-as, CoreDNS examples"),
    (8053, "IANA senomix02, common alternative DNS port"),
];

#[test]
fn quickstart_port_is_free_by_default_and_the_readme_agrees() {
    let config = Config::load(&root().join("config").join("quickstart.toml")).unwrap();
    assert_eq!(config.listen.len(), 1);
    let port = config.listen[0].port();
    if let Some((_, what)) = TAKEN_PORTS.iter().find(|(p, _)| *p == port) {
        panic!("config/quickstart.toml listens on {port}, which is {what}'s");
    }
    // Unprivileged, and below Linux's ephemeral range (32768-60999) where an outgoing
    // connection may hold it.
    assert!((1024..32768).contains(&port), "port {port}");
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let run_it = readme
        .split("## Run it")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a `## Run it` section");
    let digs: Vec<&str> = run_it
        .lines()
        .filter(|l| l.contains("dig @127.0.0.1"))
        .collect();
    assert!(
        !digs.is_empty(),
        "README's Run it section shows dig commands"
    );
    for l in digs {
        assert!(
            l.contains(&format!("-p {port} ")),
            "README line uses another port than quickstart.toml's {port}: {l}"
        );
    }
    assert!(
        run_it.contains(&format!("listening on udp 127.0.0.1:{port}")),
        "README names the log line with port {port}"
    );
}
