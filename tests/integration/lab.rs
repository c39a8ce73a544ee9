//! The DNSSEC lab: `tests/dnssec-lab/build.sh` (a private signed hierarchy made with
//! ldns-keygen/ldns-signzone: test root, `tld.`, secure, insecure, bogus, expired, altered,
//! NSEC3 zones, wildcards with valid and broken proofs, and an unsigned private `corp.`) served by a real nsd on 127.0.0.1 at a port
//! the kernel picked. nsd is killed by PID on drop. Used by `dnssec` (and reusable by the
//! interop suite and the bench through the same script).

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client;
use crate::daemon::TempDir;

/// A built and served lab.
pub struct Lab {
    /// nsd's address.
    pub addr: SocketAddr,
    /// The test root's KSK as a DS record (unbound `trust-anchor-file` format).
    pub anchor_ds: PathBuf,
    /// The same key as a DNSKEY record.
    pub anchor_key: PathBuf,
    nsd: Child,
    /// Holds the zone files, keys and nsd's files.
    _dir: TempDir,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/dnssec-lab/build.sh")
}

/// A port free on 127.0.0.1 for both UDP and TCP right now (nsd needs a number).
fn free_port() -> u16 {
    for _ in 0..50 {
        let u = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = u.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port for nsd");
}

impl Lab {
    /// Builds the hierarchy and starts nsd; panics (with nsd's log) if it does not serve
    /// within 20 s (three tries, each on a fresh port).
    pub async fn start() -> Lab {
        let dir = TempDir::new("dnssec-lab");
        let out = dir.join("lab");
        let mut log = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let built = Command::new("bash")
                .arg(script())
                .arg(&out)
                .arg(port.to_string())
                .stdin(Stdio::null())
                .output()
                .expect("run tests/dnssec-lab/build.sh (needs bash)");
            assert!(
                built.status.success(),
                "build.sh failed (apt-get install ldnsutils nsd): {}",
                String::from_utf8_lossy(&built.stderr)
            );
            let identity = client::unique_identity("lab-nsd");
            let mut nsd = Command::new("nsd")
                .arg("-d")
                .args(["-i", &identity])
                .arg("-c")
                .arg(out.join("nsd.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nsd (apt-get install nsd)");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if wait_ready(&mut nsd, addr, &identity) {
                return Lab {
                    addr,
                    anchor_ds: out.join("anchor.ds"),
                    anchor_key: out.join("anchor.key"),
                    nsd,
                    _dir: dir,
                };
            }
            let _ = nsd.kill();
            let _ = nsd.wait();
            log = std::fs::read_to_string(out.join("nsd.log")).unwrap_or_default();
        }
        panic!("nsd did not serve the lab: {log}");
    }
}

/// True once nsd answers `id.server` with `identity` (within 20 s): a reply from anything
/// else that took the port first does not count. False if nsd exited.
fn wait_ready(nsd: &mut Child, addr: SocketAddr, identity: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = nsd.try_wait() {
            return false;
        }
        if client::answers_as(addr, identity, Duration::from_millis(200)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Lab {
    /// The lab's server as a quoted TOML string.
    pub fn server(&self) -> String {
        crate::daemon::toml_str(&self.addr.to_string())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // nsd is ours: stop it by PID.
        let _ = self.nsd.kill();
        let _ = self.nsd.wait();
    }
}
