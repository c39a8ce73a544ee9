//! The DHCP-written `servers_file`: its servers are tried first, then the static ones; a
//! missing file is not an error; a file replaced atomically (temp + rename, as the hooks do)
//! is picked up without a restart; an address splitdns listens on is never used.

use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::client::{self, query};
use crate::daemon::{bounded, toml_str, zone, Daemon, TempDir, NO_CACHE};
use crate::fake::{public_table, Fake};

const LIMIT: Duration = Duration::from_secs(30);

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn file_zone(file: &Path, statics: &[&Fake], extra: &str) -> String {
    let extra = format!(
        "servers_file = {}\n{extra}",
        toml_str(&file.to_string_lossy())
    );
    format!("{NO_CACHE}{}", zone(".", statics, &extra))
}

#[test]
fn file_servers_come_before_static_servers() {
    bounded(LIMIT, async {
        let from_file = Fake::rcode(ResponseCode::ServFail).await;
        let fixed = Fake::answering(public_table()).await;
        let dir = TempDir::new("sf-order");
        let file = dir.write(
            "upstreams.conf",
            &format!(
                "# written by a DHCP hook\ndomain example.net\nnameserver {}\n",
                from_file.addr
            ),
        );
        let d = Daemon::start_in(dir, &file_zone(&file, &[&fixed], "")).await;
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!((from_file.count(), fixed.count()), (1, 1));
        let e = d.event_for("www.example.com").await;
        let servers: Vec<&str> = e.attempts.iter().map(|a| a.server.as_str()).collect();
        assert_eq!(
            servers,
            [from_file.server(), fixed.server()],
            "DHCP file first, then static"
        );
    });
}

#[test]
fn missing_servers_file_is_not_an_error() {
    bounded(LIMIT, async {
        let fixed = Fake::answering(public_table()).await;
        let dir = TempDir::new("sf-missing");
        let file = dir.join("not-yet-written.conf");
        let d = Daemon::start_in(dir, &file_zone(&file, &[&fixed], "")).await;
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(fixed.count(), 1);
    });
}

/// Query until `fake` has been asked, or fail after `limit`.
async fn until_asked(d: &Daemon, fake: &Fake, limit: Duration) {
    let deadline = Instant::now() + limit;
    while fake.count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the rewritten servers file was not picked up within {limit:?}"
        );
        let _ = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn rewritten_servers_file_is_picked_up_without_restart() {
    bounded(LIMIT, async {
        let old = Fake::answering(public_table()).await;
        let new = Fake::answering(public_table()).await;
        let dir = TempDir::new("sf-watch");
        let file = dir.write("upstreams.conf", &format!("nameserver {}\n", old.addr));
        let d = Daemon::start_in(dir, &file_zone(&file, &[], "")).await;
        let _ = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!((old.count(), new.count()), (1, 0));
        write_atomically(&file, &format!("nameserver {}\n", new.addr));
        until_asked(&d, &new, Duration::from_secs(10)).await;
        let before = old.count();
        let _ = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(old.count(), before, "the old server is no longer used");
    });
}

#[test]
fn servers_file_created_after_start_is_picked_up() {
    bounded(LIMIT, async {
        let fixed = Fake::rcode(ResponseCode::Refused).await;
        let dhcp = Fake::answering(public_table()).await;
        let dir = TempDir::new("sf-create");
        let file = dir.join("upstreams.conf");
        let d = Daemon::start_in(dir, &file_zone(&file, &[&fixed], "")).await;
        // The only server says REFUSED (a failover rcode): every server failed.
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        write_atomically(&file, &format!("nameserver {}\n", dhcp.addr));
        until_asked(&d, &dhcp, Duration::from_secs(10)).await;
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    });
}

#[test]
fn own_listen_address_in_servers_file_is_dropped() {
    bounded(LIMIT, async {
        let dhcp = Fake::answering(public_table()).await;
        let dir = TempDir::new("sf-loop");
        let file = dir.join("upstreams.conf");
        let d = Daemon::start_in(dir, &file_zone(&file, &[], "timeout_ms = 300")).await;
        // The hook wrote splitdns's own address first: forwarding to it would loop.
        write_atomically(
            &file,
            &format!("nameserver {}\nnameserver {}\n", d.udp, dhcp.addr),
        );
        until_asked(&d, &dhcp, Duration::from_secs(10)).await;
        let _ = client::udp(d.udp, &query("loop.example.com.", RecordType::A)).await;
        let e = d.event_for("loop.example.com").await;
        let servers: Vec<&str> = e.attempts.iter().map(|a| a.server.as_str()).collect();
        assert_eq!(servers, [dhcp.server()], "own address must be dropped");
    });
}
