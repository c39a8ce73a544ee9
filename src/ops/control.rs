//! The control socket (`[control] socket`), in the manner of `unbound-control`: a unix
//! stream socket, one command per connection.
//!
//! Protocol: the client sends one line (`status`, `stats`, `stats json`, `flush`,
//! `flush name NAME`, `flush zone NAME`, `reload`); the server answers `ok` or
//! `error: MESSAGE` on the first line, then the body, and closes. Requests are bounded
//! (one line of at most `MAX_REQUEST` bytes, `READ_TIMEOUT` to send it) and so are
//! connections open at once.
//!
//! The socket is created mode 0660 (umask 0117 while binding, so it is never looser, even
//! for a moment) and owned by the user splitdns runs as. A stale socket left by a crash is
//! replaced; one a live splitdns still answers on is not. The file is removed on shutdown.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

/// Longest request line.
const MAX_REQUEST: usize = 1024;
/// Time a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Commands handled at once; more connections are closed.
const MAX_CONNECTIONS: usize = 4;
/// How long `reload` waits for the reload task.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest reply the client reads.
const MAX_REPLY: u64 = 16 << 20;

/// A reload asked for over the socket: the reload task answers with a summary or the
/// config error.
pub type ReloadReply = oneshot::Sender<Result<String, String>>;

/// What the caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Version, uptime, zones, servers and their health, servers files, loop verdicts.
    Status,
    /// Counters since start; JSON if true.
    Stats(bool),
    /// Empty the cache.
    FlushAll,
    /// Drop every cached answer for this name (all types).
    FlushName(String),
    /// Drop every cached answer at or below this name.
    FlushZone(String),
    /// Re-read the config and the servers files.
    Reload,
}

impl Command {
    /// The request line for this command.
    pub fn to_line(&self) -> String {
        match self {
            Command::Status => "status".into(),
            Command::Stats(false) => "stats".into(),
            Command::Stats(true) => "stats json".into(),
            Command::FlushAll => "flush".into(),
            Command::FlushName(n) => format!("flush name {n}"),
            Command::FlushZone(n) => format!("flush zone {n}"),
            Command::Reload => "reload".into(),
        }
    }

    /// Parses a request line.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(line: &str) -> Result<Command, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        Ok(match words.as_slice() {
            ["status"] => Command::Status,
            ["stats"] => Command::Stats(false),
            ["stats", "json"] => Command::Stats(true),
            ["flush"] => Command::FlushAll,
            ["flush", "name", n] => Command::FlushName(check_name(n)?),
            ["flush", "zone", n] => Command::FlushZone(check_name(n)?),
            ["reload"] => Command::Reload,
            [] => return Err("empty command".into()),
            _ => {
                return Err(format!(
                    "unknown command `{}` (status, stats [json], flush [name NAME | zone NAME], reload)",
                    line.trim()
                ))
            }
        })
    }
}

fn check_name(n: &str) -> Result<String, String> {
    crate::route::normalize_zone(n).map_err(|m| format!("`{n}`: {m}"))
}

/// What the server side needs to answer commands. Implemented by [`super::Ops`].
pub trait Handler: Send + Sync + 'static {
    /// Answers a command that needs no reload: `Ok(body)` or `Err(message)`.
    fn handle(&self, cmd: &Command) -> Result<String, String>;
    /// Where to send reload requests.
    fn reload_tx(&self) -> &mpsc::Sender<ReloadReply>;
}

/// Binds the control socket at `path`, mode 0660.
///
/// # Errors
/// If another splitdns answers on `path`, `path` exists and is not a socket, or the bind
/// fails (missing directory, permissions).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{}: another process answers on it", path.display()),
                ));
            }
            // Left behind by a process that is gone.
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(_) => {}
    }
    use nix::sys::stat::{umask, Mode};
    // Process-wide, for the instant of the bind: no thread creates files at this point, and
    // any that did would only get stricter permissions.
    let old = umask(Mode::from_bits_truncate(0o117));
    let bound = std::os::unix::net::UnixListener::bind(path);
    umask(old);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// Serves commands until `cancel`, then removes the socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    handler: Arc<dyn Handler>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            answer(stream, &*handler).await;
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn answer(stream: UnixStream, handler: &dyn Handler) {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    let mut rd = BufReader::new(rd.take(MAX_REQUEST as u64));
    let read = tokio::time::timeout(READ_TIMEOUT, rd.read_line(&mut line)).await;
    let result = match read {
        Ok(Ok(_)) if line.ends_with('\n') => match Command::parse(&line) {
            Ok(Command::Reload) => reload(handler).await,
            Ok(cmd) => {
                tracing::info!(command = %cmd.to_line(), "control");
                handler.handle(&cmd)
            }
            Err(e) => Err(e),
        },
        Ok(Ok(_)) => Err(format!(
            "request must be one line of at most {MAX_REQUEST} bytes"
        )),
        Ok(Err(e)) => Err(format!("cannot read the request: {e}")),
        Err(_) => Err("timed out waiting for the request".into()),
    };
    let reply = match result {
        Ok(body) => format!("ok\n{body}"),
        Err(e) => format!("error: {}\n", e.replace('\n', " ")),
    };
    let _ = tokio::time::timeout(READ_TIMEOUT, wr.write_all(reply.as_bytes())).await;
    let _ = wr.shutdown().await;
}

async fn reload(handler: &dyn Handler) -> Result<String, String> {
    tracing::info!("control: reload");
    let (tx, rx) = oneshot::channel();
    handler
        .reload_tx()
        .send(tx)
        .await
        .map_err(|_| "the reload task is not running (shutting down?)".to_owned())?;
    match tokio::time::timeout(RELOAD_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err("the reload task went away".into()),
        Err(_) => Err(format!(
            "no answer from the reload task within {RELOAD_TIMEOUT:?}"
        )),
    }
}

/// Why the client could not get an answer: one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The config names no control socket.
    #[error("{0}: no [control] socket is configured")]
    NotConfigured(PathBuf),
    /// The socket file is missing.
    #[error("control socket {0} does not exist (is splitdns running with this config?)")]
    Missing(PathBuf),
    /// The file exists but nobody listens.
    #[error("nothing answers on control socket {0} (splitdns is not running?)")]
    Dead(PathBuf),
    /// Not allowed to connect.
    #[error("permission denied on control socket {0} (run as root or as a member of its group)")]
    Permission(PathBuf),
    /// Anything else on the way.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// No answer in time.
    #[error("control socket {0}: no answer in time")]
    Timeout(PathBuf),
    /// The daemon answered with an error.
    #[error("{0}")]
    Daemon(String),
}

/// Sends `cmd` to the daemon at `path` and returns the body of a successful answer.
///
/// # Errors
/// [`ClientError`], each a one-line explanation.
pub async fn request(path: &Path, cmd: &Command) -> Result<String, ClientError> {
    let io_err = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => ClientError::Missing(path.to_owned()),
        io::ErrorKind::ConnectionRefused => ClientError::Dead(path.to_owned()),
        io::ErrorKind::PermissionDenied => ClientError::Permission(path.to_owned()),
        _ => ClientError::Io {
            path: path.to_owned(),
            source,
        },
    };
    let limit = READ_TIMEOUT + RELOAD_TIMEOUT;
    let exchange = async {
        let mut s = UnixStream::connect(path).await.map_err(io_err)?;
        s.write_all(format!("{}\n", cmd.to_line()).as_bytes())
            .await
            .map_err(io_err)?;
        let mut reply = String::new();
        s.take(MAX_REPLY)
            .read_to_string(&mut reply)
            .await
            .map_err(io_err)?;
        Ok(reply)
    };
    let reply = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| ClientError::Timeout(path.to_owned()))??;
    if let Some(body) = reply.strip_prefix("ok\n") {
        Ok(body.to_owned())
    } else if let Some(e) = reply.strip_prefix("error: ") {
        Err(ClientError::Daemon(e.trim_end().to_owned()))
    } else {
        Err(ClientError::Daemon(format!(
            "unexpected answer from {}: {:?}",
            path.display(),
            reply.lines().next().unwrap_or("")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        for c in [
            Command::Status,
            Command::Stats(false),
            Command::Stats(true),
            Command::FlushAll,
            Command::FlushName("www.example.com".into()),
            Command::FlushZone("consul".into()),
            Command::Reload,
        ] {
            assert_eq!(Command::parse(&c.to_line()), Ok(c));
        }
        assert_eq!(
            Command::parse("flush name WWW.Example.COM."),
            Ok(Command::FlushName("www.example.com".into()))
        );
        assert!(Command::parse("flush name a..b").is_err());
        assert!(Command::parse("shutdown")
            .unwrap_err()
            .contains("unknown command"));
        assert!(Command::parse("").is_err());
    }
}
