//! A real authoritative server for the tests: NSD on 127.0.0.1, in the foreground, with a
//! zone the test writes, killed by PID on drop. NSD cannot be told to pick its own port, so
//! a free one is found by binding port 0 (UDP and TCP) and released just before NSD starts;
//! if NSD loses that race it is started again on another port (at most 5 times).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::TempDir;

/// A running `nsd -d`.
pub struct Nsd {
    child: Child,
    /// Where it answers, UDP and TCP.
    pub addr: SocketAddr,
    _dir: TempDir,
}

fn free_port() -> u16 {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

impl Nsd {
    /// Serves `zone` from `zone_text` (a zone file with `$ORIGIN`), bounded to 10 s per
    /// start attempt.
    pub fn start(zone: &str, zone_text: &str) -> Nsd {
        let dir = TempDir::new("nsd");
        let zone_file = dir.write("zone.db", zone_text);
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let identity = crate::client::unique_identity("nsd");
            let d = |name: &str| dir.join(name).to_string_lossy().into_owned();
            let conf = dir.write(
                "nsd.conf",
                &format!(
                    "server:\n  ip-address: 127.0.0.1@{port}\n  identity: \"{identity}\"\n  username: \"\"\n  chroot: \"\"\n  \
                     zonesdir: \"{zdir}\"\n  database: \"\"\n  zonelistfile: \"{zl}\"\n  \
                     xfrdfile: \"{xf}\"\n  xfrdir: \"{zdir}\"\n  pidfile: \"{pid}\"\n  \
                     logfile: \"{log}\"\n  server-count: 1\n  tcp-count: 256\n  verbosity: 1\n  rrl-ratelimit: 0\n\
                     remote-control:\n  control-enable: no\n\
                     zone:\n  name: {zone}\n  zonefile: \"{zf}\"\n",
                    port = addr.port(),
                    zdir = d(""),
                    zl = d("zone.list"),
                    xf = d("xfrd.state"),
                    pid = d("nsd.pid"),
                    log = d("nsd.log"),
                    zf = zone_file.to_string_lossy(),
                ),
            );
            let mut child = Command::new("nsd")
                .args(["-d", "-c"])
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nsd is needed for this test (apt-get install nsd; .ci/run installs it)");
            if wait_ready(&mut child, addr, &identity, Duration::from_secs(10)) {
                return Nsd {
                    child,
                    addr,
                    _dir: dir,
                };
            }
            eprintln!(
                "nsd did not come up on {addr}; log:\n{}",
                std::fs::read_to_string(dir.join("nsd.log")).unwrap_or_default()
            );
            kill(&mut child);
        }
        panic!("nsd did not start in 5 attempts");
    }
}

/// True once NSD answers `id.server` with `identity` (polled, bounded by `limit`): any
/// other reply would be from whatever else took the port first. False if it exited.
fn wait_ready(child: &mut Child, addr: SocketAddr, identity: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if crate::client::answers_as(addr, identity, Duration::from_millis(200)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn kill(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}
