//! systemd readiness: with NOTIFY_SOCKET set, the binary sends READY=1 only after its
//! sockets are bound (so `Type=notify` orders dependents after splitdns can answer), and
//! STOPPING=1 when SIGTERM starts the drain.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::client::{self, query};
use crate::daemon::{bounded, zone, TempDir, NO_CACHE};
use crate::fake::{public_table, Fake};

fn write_config(dir: &TempDir, public: &Fake) -> std::path::PathBuf {
    dir.write(
        "splitdns.toml",
        &format!(
            "listen = [\"127.0.0.1:0\"]\n{NO_CACHE}[events]\noutput = \"off\"\n{}",
            zone(".", &[public], "")
        ),
    )
}

/// The address in a `listening on udp ADDR` log line.
fn listen_addr(line: &str) -> std::net::SocketAddr {
    let addr = line.rsplit("listening on udp ").next().unwrap_or_default();
    addr.trim().parse().unwrap()
}

#[test]
fn ready_after_bind_and_stopping_on_sigterm() {
    bounded(Duration::from_secs(20), async {
        let public = Fake::answering(public_table()).await;
        let dir = TempDir::new("notify");
        let sock_path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let config = write_config(&dir, &public);
        let mut child = Command::new(env!("CARGO_BIN_EXE_splitdns"))
            .args(["-c", config.to_str().unwrap(), "serve"])
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).expect("READY=1 within 5 s");
        assert_eq!(&buf[..n], b"READY=1");
        // Ready means bound: the port is in the log already and answers at once.
        let pid = child.id().to_string();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Keep draining stderr so the daemon's log writes never hit a closed pipe.
        std::thread::spawn(move || {
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let port_line = rx
            .iter()
            .find(|l| l.contains("listening on udp "))
            .expect("listening line");
        let addr = listen_addr(&port_line);
        let reply = client::udp(addr, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let n = sock.recv(&mut buf).expect("STOPPING=1");
        assert_eq!(&buf[..n], b"STOPPING=1");
        let status = child.wait().unwrap();
        assert!(status.success(), "{status:?}");
    });
}

/// A daemon whose stderr reader goes away (a closed pipe, a crashed log collector) keeps
/// serving and still shuts down cleanly: a log write must never take DNS down.
#[test]
fn closed_stderr_does_not_kill_the_daemon() {
    bounded(Duration::from_secs(20), async {
        let public = Fake::answering(public_table()).await;
        let dir = TempDir::new("stderr");
        let config = write_config(&dir, &public);
        let mut child = Command::new(env!("CARGO_BIN_EXE_splitdns"))
            .args([
                "-c",
                config.to_str().unwrap(),
                "serve",
                "--log-level",
                "debug",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
            .map_while(Result::ok)
            .find(|l| l.contains("listening on udp "))
            .expect("listening line"); // the reader (and the pipe) is dropped here
        let addr = listen_addr(&line);
        for i in 0..20 {
            let q = query(&format!("www{i}.example.com."), RecordType::A);
            let reply = client::udp(addr, &q).await;
            assert!(
                matches!(
                    reply.metadata.response_code,
                    ResponseCode::NoError | ResponseCode::NXDomain
                ),
                "{:?}",
                reply.metadata.response_code
            );
        }
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "daemon died or failed: {status:?}");
    });
}
