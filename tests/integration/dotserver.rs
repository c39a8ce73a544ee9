//! DNS-over-TLS servers for the `dot` tests: a throw-away CA minted with rcgen at test
//! time, real unbound instances serving DoT on loopback (`tls-service-key`/`-pem`, answers
//! from `local-data`, no recursion, no traffic off the machine), in-process misbehaving
//! servers (stall in the handshake, garbage instead of TLS, silent after the handshake,
//! replies in reverse order), and a relay that counts connections.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::daemon::TempDir;

/// A CA made for one test.
pub struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

/// A server certificate and its key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    /// A fresh CA named `cn`.
    pub fn new(cn: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM (what `tls_ca_file` points at).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid now unless
    /// `expired` (then it ended in 2021).
    pub fn leaf(&self, names: &[&str], expired: bool) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.distinguished_name = dn;
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A port that was free a moment ago (for daemons that cannot bind port 0 and report it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    l.local_addr().unwrap().port()
}

/// True if something accepts TCP connections on `addr`.
fn accepts(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// unbound serving DNS over TLS on 127.0.0.1:`port`. Every name under `example.test`
/// answers `A answer` (TTL 60); `big.test` has 60 A records (TTL 300, more than 512 bytes);
/// everything else is REFUSED (no recursion). Killed by PID on drop.
pub struct Unbound {
    child: Option<Child>,
    conf: PathBuf,
    /// Where it listens (TLS on TCP; it also opens UDP on the same port).
    pub addr: SocketAddr,
}

impl Unbound {
    /// Starts unbound in `dir` with this certificate, on a free port.
    pub fn start(dir: &TempDir, tag: &str, leaf: &Leaf, answer: Ipv4Addr) -> Unbound {
        let mut last = String::new();
        // A port picked free can be taken by someone else before unbound binds it: retry.
        for _ in 0..3 {
            match Unbound::start_on(dir, tag, leaf, answer, free_port()) {
                Ok(u) => return u,
                Err(e) => last = e,
            }
        }
        panic!("unbound did not start: {last}");
    }

    /// Starts unbound on `port` (a restart of a killed instance uses its old port).
    pub fn start_on(
        dir: &TempDir,
        tag: &str,
        leaf: &Leaf,
        answer: Ipv4Addr,
        port: u16,
    ) -> Result<Unbound, String> {
        let cert = dir.write(&format!("{tag}-cert.pem"), &leaf.cert_pem);
        let key = dir.write(&format!("{tag}-key.pem"), &leaf.key_pem);
        let ctl = dir.join(&format!("{tag}.ctl"));
        let conf = dir.write(
            &format!("{tag}.conf"),
            &format!(
                r#"server:
  interface: 127.0.0.1@{port}
  so-reuseport: no
  tls-port: {port}
  tls-service-key: "{key}"
  tls-service-pem: "{cert}"
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: ""
  do-daemonize: no
  use-syslog: no
  logfile: ""
  verbosity: 1
  num-threads: 1
  do-ip6: no
  incoming-num-tcp: 200
  module-config: "iterator"
  extended-statistics: yes
  local-zone: "." refuse
  local-zone: "big.test." static
{big}  local-zone: "example.test." redirect
  local-data: "example.test. 60 IN A {answer}"
remote-control:
  control-enable: yes
  control-use-cert: no
  control-interface: "{ctl}"
"#,
                key = key.display(),
                cert = cert.display(),
                dir = dir.join("").display(),
                ctl = ctl.display(),
                big = (0..60)
                    .map(|i| format!("  local-data: \"big.test. 300 IN A 10.1.0.{i}\"\n"))
                    .collect::<String>(),
            ),
        );
        let log = std::fs::File::create(dir.join(&format!("{tag}.log"))).unwrap();
        let child = Command::new("unbound")
            .args(["-d", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run unbound (is it installed?): {e}"))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut u = Unbound {
            child: Some(child),
            conf,
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = u.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    u.child = None;
                    let log = std::fs::read_to_string(dir.join(&format!("{tag}.log")))
                        .unwrap_or_default();
                    return Err(format!("unbound exited ({status}):\n{log}"));
                }
            }
            // Ours, not whatever else took the port first: unbound answers on its own
            // control socket only once it has bound its ports, which `so-reuseport: no`
            // makes exclusive. (No DNS probe: the tests count unbound's queries.)
            if accepts(addr) && u.control_answers() {
                return Ok(u);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("unbound did not accept connections within 10 s".to_owned())
    }

    /// `tls://127.0.0.1:PORT` plus `suffix` (`#name` or empty), TOML-quoted.
    pub fn server(&self, suffix: &str) -> String {
        crate::daemon::toml_str(&format!("tls://{}{suffix}", self.addr))
    }

    /// True if `unbound-control status` succeeds on this instance's control socket.
    fn control_answers(&self) -> bool {
        Command::new("unbound-control")
            .arg("-c")
            .arg(&self.conf)
            .arg("status")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// One counter from `unbound-control stats_noreset` (0 if absent).
    pub fn stat(&self, name: &str) -> u64 {
        let out = Command::new("unbound-control")
            .arg("-c")
            .arg(&self.conf)
            .arg("stats_noreset")
            .output()
            .expect("run unbound-control");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "unbound-control failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Kills it (SIGKILL, by PID) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP relay in front of a server that counts connections: what the server itself
/// would count. TLS passes through it untouched (certificate, SNI and session are between
/// splitdns and the server).
pub struct Counter {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Connections open now.
    pub open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Counter {
    /// Relays 127.0.0.1:0 to `target`.
    pub async fn start(target: SocketAddr) -> Counter {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (acc, op) = (Arc::clone(&accepted), Arc::clone(&open));
        let task = tokio::spawn(async move {
            // Bounded: aborted on drop; each relay ends when either side closes or in 60 s.
            while let Ok((mut inbound, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                op.fetch_add(1, Ordering::SeqCst);
                let op = Arc::clone(&op);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(60),
                            tokio::io::copy_bidirectional(&mut inbound, &mut outbound),
                        )
                        .await;
                    }
                    op.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Counter {
            addr,
            accepted,
            open,
            task,
        }
    }

    /// `tls://ADDR` plus `suffix`, TOML-quoted.
    pub fn server(&self, suffix: &str) -> String {
        crate::daemon::toml_str(&format!("tls://{}{suffix}", self.addr))
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// How an in-process bad server behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Accepts TCP, reads the ClientHello, never answers it.
    StallInHandshake,
    /// Answers the ClientHello with bytes that are not TLS.
    Garbage,
    /// Completes the TLS handshake, reads queries, never replies.
    SilentAfterHandshake,
    /// Completes the handshake; per connection, collects queries for a moment and replies
    /// to them in reverse order (A = 192.0.2.N where N is the query's first label length).
    Reversed,
}

/// An in-process DoT-ish server on 127.0.0.1:0.
pub struct BadServer {
    pub addr: SocketAddr,
    /// Connections accepted.
    pub accepted: Arc<AtomicUsize>,
    /// Length of every query frame received (for the padding check), per connection.
    pub queries: Arc<Mutex<Vec<Vec<Vec<u8>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BadServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn server_config(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    Arc::new(config)
}

impl BadServer {
    /// Starts one on 127.0.0.1:0 with this certificate.
    pub async fn start(how: Misbehaviour, leaf: &Leaf) -> BadServer {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(leaf));
        let accepted = Arc::new(AtomicUsize::new(0));
        let queries = Arc::new(Mutex::new(Vec::new()));
        let (acc, qs) = (Arc::clone(&accepted), Arc::clone(&queries));
        let task = tokio::spawn(async move {
            // Bounded: the test aborts this task on drop; each connection ends within 30 s.
            while let Ok((tcp, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let qs = Arc::clone(&qs);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(30),
                        serve_badly(how, tcp, acceptor, qs),
                    )
                    .await;
                });
            }
        });
        BadServer {
            addr,
            accepted,
            queries,
            task,
        }
    }

    /// `tls://ADDR#dot.test`, TOML-quoted.
    pub fn server(&self) -> String {
        crate::daemon::toml_str(&format!("tls://{}#dot.test", self.addr))
    }
}

async fn serve_badly(
    how: Misbehaviour,
    mut tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    queries: Arc<Mutex<Vec<Vec<Vec<u8>>>>>,
) {
    match how {
        Misbehaviour::StallInHandshake => {
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Misbehaviour::Garbage => {
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nnot TLS at all")
                .await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Misbehaviour::SilentAfterHandshake | Misbehaviour::Reversed => {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let slot = {
                let mut q = queries.lock().unwrap();
                q.push(Vec::new());
                q.len() - 1
            };
            let mut held: Vec<Vec<u8>> = Vec::new();
            loop {
                let wait = if held.is_empty() {
                    Duration::from_secs(30)
                } else {
                    Duration::from_millis(150)
                };
                let frame = tokio::time::timeout(wait, read_frame(&mut tls)).await;
                match frame {
                    Ok(Some(msg)) => {
                        queries.lock().unwrap()[slot].push(msg.clone());
                        if how == Misbehaviour::Reversed {
                            held.push(msg);
                        }
                    }
                    Ok(None) => return,
                    Err(_) => {
                        // Quiet for a moment: answer what we hold, newest first.
                        for q in held.drain(..).rev() {
                            let reply = reversed_reply(&q);
                            let mut out = (reply.len() as u16).to_be_bytes().to_vec();
                            out.extend_from_slice(&reply);
                            if tls.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                        let _ = tls.flush().await;
                    }
                }
            }
        }
    }
}

async fn read_frame<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    let len = s.read_u16().await.ok()?;
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

/// The answer for a query to the `Reversed` server: A 192.0.2.N, N = length of the
/// query name's first label.
fn reversed_reply(query: &[u8]) -> Vec<u8> {
    use hickory_proto::op::{Message, MessageType, OpCode};
    use hickory_proto::rr::{rdata::A, RData, Record};
    let q = Message::from_vec(query).unwrap();
    let question = q.queries[0].clone();
    let name = question.name().clone();
    let n = name.iter().next().map_or(0, <[u8]>::len) as u8;
    let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    r.metadata.recursion_desired = true;
    r.metadata.recursion_available = true;
    r.queries.push(question);
    r.answers
        .push(Record::from_rdata(name, 60, RData::A(A::new(192, 0, 2, n))));
    r.to_vec().unwrap()
}

/// Writes `pem` into `dir` as `name` and returns the path.
pub fn write_pem(dir: &TempDir, name: &str, pem: &str) -> PathBuf {
    dir.write(name, pem)
}

/// Path as a TOML string.
pub fn toml_path(p: &Path) -> String {
    crate::daemon::toml_str(&p.to_string_lossy())
}
