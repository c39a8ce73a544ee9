//! Driving the real `splitdns` binary: a guard that owns the child, collects its stderr and
//! stdout on threads, kills it by PID on drop and prints what it said.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_splitdns");

/// Run `splitdns ARGS` to completion (bounded) and return its output.
pub fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn splitdns");
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("splitdns {args:?} did not exit within 10s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn drain<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// A running `splitdns serve`, killed by PID when dropped.
pub struct Server {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The UDP address from the `listening on udp` line.
    pub udp: SocketAddr,
    /// The TCP address from the `listening on tcp` line.
    pub tcp: SocketAddr,
}

impl Server {
    /// Spawn `splitdns -c CONFIG serve EXTRA...` and wait (bounded) for both listening lines.
    pub fn serve(config: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["-c", config.to_str().expect("utf-8 path"), "serve"];
        args.extend_from_slice(extra);
        let mut child = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn splitdns serve");
        let (tx, lines) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("stderr pipe");
        let store = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                store.lock().expect("stderr lock").push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child,
            lines,
            stderr,
            udp: SocketAddr::from(([0, 0, 0, 0], 0)),
            tcp: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        server.udp = server.wait_listening("udp");
        server.tcp = server.wait_listening("tcp");
        server
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to 10 s for a stderr line containing `needle`.
    pub fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        // Lines already seen (for example by an earlier wait) count too.
        if let Some(l) = self.stderr_lines().into_iter().find(|l| l.contains(needle)) {
            return l;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no stderr line containing {needle:?} within 10s; stderr:\n{}",
                        self.stderr_lines().join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "splitdns closed stderr before printing {needle:?}; stderr:\n{}",
                    self.stderr_lines().join("\n")
                ),
            }
        }
    }

    /// Wait for the `listening on PROTO ...` line (the first one containing `needle`
    /// after the protocol) and return its address.
    pub fn wait_listening_on(&mut self, proto: &str, needle: &str) -> SocketAddr {
        let prefix = format!("listening on {proto} {needle}");
        let line = self.wait_line(&prefix);
        parse_listening(&line, proto)
    }

    fn wait_listening(&mut self, proto: &str) -> SocketAddr {
        self.wait_listening_on(proto, "")
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Send a signal by name (`HUP`, `TERM`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Wait up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The address in a `listening on PROTO ADDR` line.
fn parse_listening(line: &str, proto: &str) -> SocketAddr {
    let needle = format!("listening on {proto} ");
    let rest = &line[line.find(&needle).expect("needle") + needle.len()..];
    let addr = rest.split_whitespace().next().unwrap_or("");
    let addr = addr.trim_matches(|c: char| c == '"' || c == ',');
    let parsed: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("cannot parse address in {line:?}: {e}"));
    assert_ne!(
        parsed.port(),
        0,
        "the log line must show the real port: {line}"
    );
    parsed
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid().to_string()])
                .status();
            let _ = self.child.wait();
        }
        // Give the reader thread a moment to collect the last lines.
        std::thread::sleep(Duration::from_millis(20));
        eprintln!(
            "--- splitdns (pid {}) stderr ---\n{}\n--- end ---",
            self.pid(),
            self.stderr_lines().join("\n")
        );
    }
}
