//! Issue 9 item 4, "SERVFAIL says why": when every server failed, an EDNS client's SERVFAIL
//! carries an Extended DNS Error (RFC 8914) — 22 No Reachable Authority, or 23 Network
//! Error when every attempt failed on the network — whose text names each server tried and
//! how it failed; a stale answer carries EDE 3. Clients without EDNS get no OPT. One test
//! reads it the way an operator would, with `dig`.

use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::RecordType;

use crate::client::{self, query, rdata_strings, with_edns};
use crate::daemon::{bounded, toml_str, zone, zone_addrs, Daemon};
use crate::fake::{Behaviour, Fake, Table};

const LIMIT: Duration = Duration::from_secs(30);

/// The (code, text) of the reply's EDE option, if any.
fn ede(r: &Message) -> Option<(u16, String)> {
    let edns = r.edns.as_ref()?;
    match edns.option(EdnsCode::Unknown(15))? {
        EdnsOption::Unknown(_, bytes) => Some((
            u16::from_be_bytes([bytes[0], bytes[1]]),
            String::from_utf8_lossy(&bytes[2..]).into_owned(),
        )),
        other => panic!("EDE option decoded as {other:?}"),
    }
}

#[test]
fn servfail_names_the_servers_tried_and_how_each_failed() {
    bounded(LIMIT, async {
        let silent = Fake::black_hole().await;
        let sick = Fake::rcode(ResponseCode::ServFail).await;
        let d = Daemon::start(&format!(
            "[cache]\nmax_entries = 0\n{}",
            zone(".", &[&silent, &sick], "timeout_ms = 300")
        ))
        .await;
        let q = with_edns(query("www.example.com.", RecordType::A), 1232, false);
        let r = client::udp(d.udp, &q).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        let (code, text) = ede(&r).expect("an EDE option");
        assert_eq!(code, 22, "No Reachable Authority: {text}");
        let (a, b) = (
            text.find(&format!("{} timeout", silent.addr))
                .unwrap_or_else(|| panic!("silent server not named: {text}")),
            text.find(&format!("{} servfail", sick.addr))
                .unwrap_or_else(|| panic!("SERVFAIL server not named: {text}")),
        );
        assert!(a < b, "in the order tried: {text}");

        // No EDNS: no OPT, no EDE.
        let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert!(r.edns.is_none());
    });
}

#[test]
fn network_errors_only_is_ede_23() {
    bounded(LIMIT, async {
        // A port nothing listens on: the kernel answers ICMP port unreachable.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let d = Daemon::start(&format!(
            "[cache]\nmax_entries = 0\n{}",
            zone_addrs(".", &[toml_str(&addr.to_string())], "timeout_ms = 500")
        ))
        .await;
        let q = with_edns(query("www.example.com.", RecordType::A), 1232, false);
        let r = client::udp(d.udp, &q).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        let (code, text) = ede(&r).expect("an EDE option");
        assert_eq!(code, 23, "Network Error: {text}");
        assert!(text.contains(&format!("{addr} error")), "{text}");
    });
}

#[test]
fn stale_answer_carries_ede_3() {
    bounded(LIMIT, async {
        let mut t = Table::new("example.com", 1);
        t.add(
            "short.example.com",
            1,
            hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, 77)),
        );
        let p = Fake::answering(t).await;
        let d = Daemon::start(&format!(
            "[cache]\nserve_stale = true\n{}",
            zone(".", &[&p], "timeout_ms = 200")
        ))
        .await;
        let q = || with_edns(query("short.example.com.", RecordType::A), 1232, false);
        let r = client::udp(d.udp, &q()).await;
        assert!(ede(&r).is_none(), "a fresh answer has no EDE");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        p.set_behaviour(Behaviour::BlackHole);
        let r = client::udp(d.udp, &q()).await;
        assert_eq!(rdata_strings(&r.answers), ["192.0.2.77"]);
        let (code, text) = ede(&r).expect("EDE on the stale answer");
        assert_eq!(code, 3, "Stale Answer: {text}");
        assert!(text.contains(&format!("{} timeout", p.addr)), "{text}");
    });
}

#[test]
fn dig_shows_the_ede() {
    bounded(LIMIT, async {
        let silent = Fake::black_hole().await;
        let d = Daemon::start(&format!(
            "[cache]\nmax_entries = 0\n{}",
            zone(".", &[&silent], "timeout_ms = 300")
        ))
        .await;
        let port = d.udp.port().to_string();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("dig")
                .args([
                    "@127.0.0.1",
                    "-p",
                    &port,
                    "+tries=1",
                    "+time=5",
                    "www.example.com",
                    "A",
                ])
                .output()
        })
        .await
        .unwrap()
        .expect("dig (dnsutils) is installed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("status: SERVFAIL"), "{stdout}");
        assert!(
            stdout.contains("EDE: 22 (No Reachable Authority)"),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("udp {} timeout", silent.addr)),
            "{stdout}"
        );
        assert!(
            !stdout.contains("recursion requested but not available"),
            "{stdout}"
        );
    });
}
