//! Privileges: started as root with `user` set, splitdns binds first and then runs as that
//! user (uid, gid and supplementary groups), and still answers. Without root there is
//! nothing to drop, and the same config must simply run.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::client::{self, query};
use crate::daemon::{bounded, toml_str, zone, TempDir, NO_CACHE};
use crate::fake::{public_table, Fake};
use crate::process::Server;

fn status_ids(pid: u32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    line.split_whitespace()
        .skip(1)
        .map(|v| v.parse().expect("numeric id"))
        .collect()
}

fn running_as_root() -> bool {
    status_ids(std::process::id(), "Uid:")[1] == 0
}

#[test]
fn root_drops_to_the_configured_user_after_binding() {
    bounded(Duration::from_secs(20), async {
        let public = Fake::answering(public_table()).await;
        let dir = TempDir::new("privs");
        let config = dir.write(
            "splitdns.toml",
            &format!(
                "listen = [\"127.0.0.1:0\"]\nuser = {}\n{NO_CACHE}[events]\noutput = \"off\"\n{}",
                toml_str("nobody"),
                zone(".", &[&public], "")
            ),
        );
        let mut server = Server::serve(&config, &[]);
        let reply = client::udp(server.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        let uids = status_ids(server.pid(), "Uid:");
        let gids = status_ids(server.pid(), "Gid:");
        if running_as_root() {
            assert!(uids.iter().all(|u| *u == 65534), "uids {uids:?}");
            assert!(gids.iter().all(|g| *g == 65534), "gids {gids:?}");
            let groups = status_ids(server.pid(), "Groups:");
            assert!(groups.iter().all(|g| *g == 65534), "groups {groups:?}");
            server.wait_line("dropped root after binding");
        } else {
            assert_eq!(uids, status_ids(std::process::id(), "Uid:"));
        }
    });
}

#[test]
fn unknown_user_is_an_error_when_root() {
    if !running_as_root() {
        return; // Only root can switch users; CI runs as root.
    }
    let dir = TempDir::new("privs-bad");
    let config = dir.write(
        "splitdns.toml",
        "listen = [\"127.0.0.1:0\"]\nuser = \"no-such-user-splitdns\"\n[[zone]]\nname = \".\"\n",
    );
    let out = crate::process::run(&["-c", config.to_str().unwrap(), "serve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("user `no-such-user-splitdns` does not exist"),
        "{err}"
    );
}
