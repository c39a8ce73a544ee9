//! Diagnostics that can neither flood nor stall: [`Throttle`] lets a repeated warning
//! through at most once per interval and counts what it held back; [`Stderr`] is the
//! tracing writer that never blocks (a line stderr cannot take right now is dropped and
//! counted, and the count is written before the next line that gets through); and
//! [`write_within`] is the bounded write both it and the event writer use.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Writes to a pipe of at most this many bytes are atomic and fit once it is writable.
const PIPE_BUF: usize = 4096;

/// Writes a prefix of `buf` to `fd`, waiting at most `wait` for it to become writable.
/// `Ok(0)` if it did not in time; at most [`PIPE_BUF`] bytes per call, so a write to a
/// pipe that poll reported writable does not block.
///
/// # Errors
/// The write's error (a closed pipe, a full disk, ...).
pub fn write_within(fd: BorrowedFd<'_>, buf: &[u8], wait: Duration) -> std::io::Result<usize> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    if buf.is_empty() {
        return Ok(0);
    }
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(0),
        Ok(_) => {}
        Err(e) => return Err(e.into()),
    }
    let ready = fds[0].revents().unwrap_or(PollFlags::empty());
    if !ready.contains(PollFlags::POLLOUT) {
        return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
    }
    let chunk = buf.get(..buf.len().min(PIPE_BUF)).unwrap_or(buf);
    match nix::unistd::write(fd, chunk) {
        Ok(n) => Ok(n),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Diagnostic lines dropped because stderr was not taking them, not yet reported.
static STDERR_PENDING: AtomicU64 = AtomicU64::new(0);
/// All diagnostic lines dropped since start.
static STDERR_DROPPED: AtomicU64 = AtomicU64::new(0);
/// One line at a time on stderr (lines from different threads never interleave).
static STDERR_LOCK: Mutex<()> = Mutex::new(());

/// The `tracing` writer for diagnostics: each line goes to stderr in one write if stderr
/// can take it now, or is dropped and counted. A stopped reader of stderr (a full pipe)
/// therefore never blocks the thread that logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

/// One diagnostic line being formatted; written (or dropped) when done.
#[derive(Debug, Default)]
pub struct StderrLine(Vec<u8>);

impl Write for StderrLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for StderrLine {
    fn drop(&mut self) {
        let _guard = match STDERR_LOCK.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let err = std::io::stderr();
        let pending = STDERR_PENDING.load(Ordering::Relaxed);
        if pending > 0 {
            let note = format!(
                "splitdns: {pending} diagnostic line(s) dropped: stderr was not being read\n"
            );
            if !write_now(err.as_fd(), note.as_bytes()) {
                drop_line();
                return;
            }
            STDERR_PENDING.fetch_sub(pending, Ordering::Relaxed);
        }
        if !write_now(err.as_fd(), &self.0) {
            drop_line();
        }
    }
}

fn drop_line() {
    STDERR_PENDING.fetch_add(1, Ordering::Relaxed);
    STDERR_DROPPED.fetch_add(1, Ordering::Relaxed);
}

/// Writes all of `line` if stderr takes it without waiting (a line that stalls half-way
/// gets 10 ms more, then is cut).
fn write_now(fd: BorrowedFd<'_>, line: &[u8]) -> bool {
    let mut rest = line;
    let mut wait = Duration::ZERO;
    while !rest.is_empty() {
        match write_within(fd, rest, wait) {
            Ok(0) if wait.is_zero() && rest.len() < line.len() => wait = Duration::from_millis(10),
            Ok(0) | Err(_) => return false,
            Ok(n) => rest = rest.get(n..).unwrap_or(&[]),
        }
    }
    true
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = StderrLine;
    fn make_writer(&'a self) -> StderrLine {
        StderrLine(Vec::with_capacity(256))
    }
}

/// Diagnostic lines dropped since start because stderr was not taking them.
pub fn stderr_dropped() -> u64 {
    STDERR_DROPPED.load(Ordering::Relaxed)
}

/// How often a repeated warning is let through by default.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Rate limit for one kind of warning.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// Lets one occurrence through per `every`.
    pub const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            state: Mutex::new(ThrottleState {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// Records one occurrence at `now`. `Some(n)` means "log it now", `n` being how many
    /// occurrences were held back since the last line; `None` means "count it, stay quiet".
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut s = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match s.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.allow(t0), Some(0));
        for i in 1..=440u64 {
            assert_eq!(t.allow(t0 + Duration::from_millis(20 * i)), None);
        }
        assert_eq!(t.allow(t0 + Duration::from_secs(10)), Some(440));
        assert_eq!(t.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(25)), Some(1));
    }
}
