//! Where events go: per-thread queues drained by a writer thread that writes one JSON
//! line per query. Emitting never blocks the answer path: each recording thread appends
//! to its own lane (an uncontended lock and one move of the event); when its lane is full
//! the event is dropped and counted. The writer takes each lane's whole batch at once,
//! formats it and writes many events per `write(2)`. The writer itself never blocks for
//! good either: on a pipe or socket it waits for the output with `poll` in slices (and
//! writes without blocking), so at shutdown it drains what the output takes within
//! [`SHUTDOWN_DRAIN`], drops the rest and says how many; a write that fails (a full disk,
//! a closed pipe) loses the events in it, counted and reported.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use super::json::LineCache;
use super::QueryEvent;
use crate::config::EventsOutput;

/// Lanes events are queued in; a recording thread keeps its lane (the receive threads are
/// at most 8, so each usually has its own).
const LANES: usize = 8;
/// Events one lane holds for the writer before new ones are dropped.
const LANE_CAPACITY: usize = 2_048;
/// Room a lane starts with (and grows from, doubling, up to `LANE_CAPACITY`): a 2 ms batch
/// at 100k qps on one receive thread. A buffer the writer drains that had grown past it is
/// freed rather than kept once its batches fall to a quarter of its size, so a burst's
/// memory goes back to the allocator instead of staying resident for the process's life.
const LANE_START: usize = 256;

/// How long shutdown gives the output to take the events still queued.
pub(crate) const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// The output, as something with a file descriptor.
enum Out {
    Stdout(std::io::Stdout),
    Stderr(std::io::Stderr),
    File(std::fs::File),
}

impl Out {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Out::Stdout(o) => o.as_fd(),
            Out::Stderr(e) => e.as_fd(),
            Out::File(f) => f.as_fd(),
        }
    }
}

/// How the writer can hand the output a whole buffer without ever blocking on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A regular file: always writable; one `write` per buffer.
    File,
    /// A non-blocking descriptor (a pipe reopened non-blocking, or one that already was):
    /// wait for POLLOUT, then write what it takes.
    NonBlocking,
    /// A socket: wait for POLLOUT, then `send` with MSG_DONTWAIT.
    Socket,
    /// Anything else (a terminal, a blocking descriptor we cannot reopen): wait for
    /// POLLOUT, then write at most PIPE_BUF bytes, which never blocks once it is writable.
    Chunked,
}

/// Picks the write mode for `out`, reopening a pipe as non-blocking (its own open file
/// description, so whoever shares the pipe is not affected).
fn prepare(out: Out) -> (Out, Mode) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use nix::sys::stat::{fstat, SFlag};
    let kind = match fstat(out.fd().as_raw_fd()) {
        Ok(st) => SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT,
        Err(_) => return (out, Mode::Chunked),
    };
    if kind == SFlag::S_IFREG {
        return (out, Mode::File);
    }
    let nonblocking = fcntl(out.fd().as_raw_fd(), FcntlArg::F_GETFL)
        .is_ok_and(|fl| OFlag::from_bits_truncate(fl).contains(OFlag::O_NONBLOCK));
    if nonblocking {
        return (out, Mode::NonBlocking);
    }
    if kind == SFlag::S_IFSOCK {
        return (out, Mode::Socket);
    }
    if kind == SFlag::S_IFIFO {
        use std::os::unix::fs::OpenOptionsExt;
        let path = format!("/proc/self/fd/{}", out.fd().as_raw_fd());
        if let Ok(f) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            return (Out::File(f), Mode::NonBlocking);
        }
    }
    (out, Mode::Chunked)
}

/// One lane: events waiting for the writer, on its own cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Lane(Mutex<Vec<QueryEvent>>);

fn lock(m: &Mutex<Vec<QueryEvent>>) -> MutexGuard<'_, Vec<QueryEvent>> {
    // A plain queue: a panic elsewhere mid-push leaves it usable.
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The queues between the recording threads and the writer.
struct Queues {
    lanes: [Lane; LANES],
    /// Set by the writer before it parks; a sender that sees it wakes the writer.
    parked: AtomicBool,
    /// Set once the writer has taken its last batch: later events are dropped and counted.
    closed: AtomicBool,
    writer: OnceLock<Thread>,
}

impl Queues {
    fn new() -> Queues {
        Queues {
            lanes: Default::default(),
            parked: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            writer: OnceLock::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.lanes.iter().all(|Lane(l)| lock(l).is_empty())
    }

    fn wake(&self) {
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }
}

/// The sending side, shared by every thread. Cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    queues: Option<Arc<Queues>>,
    dropped: Arc<AtomicU64>,
    /// Events whose lines reached the output.
    written: Arc<AtomicU64>,
    /// Counters folded from every event emitted, written or not.
    stats: Arc<super::stats::Stats>,
}

/// The writer thread, stopped (boundedly) on shutdown.
pub struct EventWriter {
    queues: Option<Arc<Queues>>,
    handle: Option<JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
    done: Option<std::sync::mpsc::Receiver<()>>,
}

impl EventSink {
    /// A sink that discards everything (`output = "off"`).
    pub fn off() -> EventSink {
        EventSink {
            queues: None,
            dropped: Arc::new(AtomicU64::new(0)),
            written: Arc::new(AtomicU64::new(0)),
            stats: Arc::new(super::stats::Stats::new()),
        }
    }

    /// Starts the writer thread for `output`.
    ///
    /// # Errors
    /// If the output file cannot be opened for appending.
    pub fn start(output: &EventsOutput) -> std::io::Result<(EventSink, EventWriter)> {
        let out = match output {
            EventsOutput::Off => {
                return Ok((
                    EventSink::off(),
                    EventWriter {
                        queues: None,
                        handle: None,
                        stopping: Arc::new(AtomicBool::new(false)),
                        done: None,
                    },
                ))
            }
            EventsOutput::Stdout => Out::Stdout(std::io::stdout()),
            EventsOutput::Stderr => Out::Stderr(std::io::stderr()),
            EventsOutput::File(p) => Out::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let (out, mode) = prepare(out);
        let queues = Arc::new(Queues::new());
        let dropped = Arc::new(AtomicU64::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (done_tx, done) = std::sync::mpsc::channel();
        let writer = Writer::new(out, mode, stopping.clone(), written.clone());
        let (q2, d2) = (queues.clone(), dropped.clone());
        let handle = std::thread::Builder::new()
            .name("splitdns-events".into())
            .spawn(move || {
                writer.run(&q2, &d2);
                let _ = done_tx.send(());
            })?;
        let _ = queues.writer.set(handle.thread().clone());
        Ok((
            EventSink {
                queues: Some(queues.clone()),
                dropped,
                written,
                stats: Arc::new(super::stats::Stats::new()),
            },
            EventWriter {
                queues: Some(queues),
                handle: Some(handle),
                stopping,
                done: Some(done),
            },
        ))
    }

    /// Hands an event to the writer without blocking; drops and counts it if the writer
    /// is behind.
    /// The event is counted in [`EventSink::stats`] first, so counters and events come from
    /// the same record.
    pub fn emit(&self, ev: QueryEvent) {
        self.stats.record(&ev);
        let Some(q) = &self.queues else { return };
        let Some(Lane(lane)) = q.lanes.get(super::stats::thread_index() % LANES) else {
            return;
        };
        {
            let mut lane = lock(lane);
            if lane.len() >= LANE_CAPACITY || q.closed.load(Ordering::Relaxed) {
                drop(lane);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if lane.capacity() == 0 {
                lane.reserve_exact(LANE_START);
            }
            lane.push(ev);
        }
        // The writer sets `parked` before its last look at the lanes, and this push is
        // released by the lock before this load: one of the two sees the other.
        if q.parked.load(Ordering::SeqCst) && q.parked.swap(false, Ordering::SeqCst) {
            q.wake();
        }
    }

    /// [`EventSink::emit`] for every event in `evs` (which is left empty), taking the
    /// lane's lock once: what a batch of answers sent together emits.
    pub fn emit_all(&self, evs: &mut Vec<QueryEvent>) {
        for ev in evs.iter() {
            self.stats.record(ev);
        }
        let Some(q) = &self.queues else {
            evs.clear();
            return;
        };
        let Some(Lane(lane)) = q.lanes.get(super::stats::thread_index() % LANES) else {
            evs.clear();
            return;
        };
        let dropped = {
            let mut lane = lock(lane);
            let room = if q.closed.load(Ordering::Relaxed) {
                0
            } else {
                LANE_CAPACITY.saturating_sub(lane.len())
            };
            let dropped = evs.len().saturating_sub(room);
            evs.truncate(room);
            if !evs.is_empty() {
                if lane.capacity() == 0 {
                    lane.reserve_exact(LANE_START.max(evs.len()));
                }
                lane.append(evs);
            }
            dropped
        };
        evs.clear();
        if dropped > 0 {
            self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        }
        // As in `emit`.
        if q.parked.load(Ordering::SeqCst) && q.parked.swap(false, Ordering::SeqCst) {
            q.wake();
        }
    }

    /// Events whose lines reached the output so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// The counters of every event emitted.
    pub fn stats(&self) -> &Arc<super::stats::Stats> {
        &self.stats
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl EventWriter {
    /// Writes what the output takes within [`SHUTDOWN_DRAIN`], drops the rest (saying how
    /// many) and stops the thread; never waits much longer than that, even if the output
    /// is a pipe nobody reads.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(q) = self.queues.take() {
            q.wake();
        }
        let finished = match self.done.take() {
            Some(done) => done
                .recv_timeout(SHUTDOWN_DRAIN + Duration::from_secs(1))
                .is_ok(),
            None => true,
        };
        match self.handle.take() {
            Some(h) if finished => {
                let _ = h.join();
            }
            Some(_) => tracing::warn!("event writer still blocked; exiting without it"),
            None => {}
        }
    }
}

/// While events keep coming, the writer sleeps briefly between drains instead of parking,
/// so senders never pay to wake it (a futex wake, and on a pinned CPU a context switch, per
/// event). After this long without events it parks until the next one.
const WRITER_BUSY_POLL: Duration = Duration::from_millis(2);
const WRITER_PARK_AFTER: Duration = Duration::from_millis(250);
/// The longest one park lasts before the writer looks at the lanes and the stop flag.
const WRITER_PARK_MAX: Duration = Duration::from_millis(200);
/// How much formatted output is gathered before it is written.
const BUFFER: usize = 64 * 1024;
/// How long one wait for the output lasts before the stop flag is looked at again.
const WAIT_SLICE: Duration = Duration::from_millis(100);

static WRITE_FAILED: crate::diag::Throttle = crate::diag::Throttle::new(crate::diag::WARN_INTERVAL);

/// The writer thread's state.
struct Writer {
    out: Out,
    mode: Mode,
    buf: Vec<u8>,
    /// A lane's batch, swapped out under its lock and formatted without it.
    batch: Vec<QueryEvent>,
    /// The batch buffer is to be freed once formatted (it held few events for its size).
    shrink_next: bool,
    /// Events whose lines are in `buf`, not yet all written.
    pending: u64,
    written: u64,
    lost: u64,
    /// `write`/`send` calls made (for tests: many events per call).
    writes: u64,
    stopping: Arc<AtomicBool>,
    /// Set once stopping was seen: when waiting for the output ends.
    deadline: Option<std::time::Instant>,
    /// Parts of earlier lines, copied into later ones that share them.
    lines: LineCache,
    /// `written`, for readers outside the thread.
    shared_written: Arc<AtomicU64>,
}

impl Writer {
    fn new(
        out: Out,
        mode: Mode,
        stopping: Arc<AtomicBool>,
        shared_written: Arc<AtomicU64>,
    ) -> Writer {
        Writer {
            shared_written,
            out,
            mode,
            buf: Vec::new(),
            batch: Vec::new(),
            shrink_next: false,
            pending: 0,
            written: 0,
            lost: 0,
            writes: 0,
            stopping,
            deadline: None,
            lines: LineCache::default(),
        }
    }

    fn out_of_time(&mut self) -> bool {
        if !self.stopping.load(Ordering::Relaxed) {
            return false;
        }
        let deadline = *self
            .deadline
            .get_or_insert_with(|| std::time::Instant::now() + SHUTDOWN_DRAIN);
        std::time::Instant::now() >= deadline
    }

    fn push(&mut self, ev: &QueryEvent) {
        if self.buf.capacity() == 0 {
            self.buf.reserve(BUFFER + 4096);
        }
        ev.write_json_with(&mut self.buf, &mut self.lines);
        self.buf.push(b'\n');
        self.pending += 1;
        if self.buf.len() >= BUFFER {
            self.flush();
        }
    }

    /// Writes a prefix of `buf` without ever blocking for good: `Ok(0)` if the output did
    /// not take anything within [`WAIT_SLICE`].
    fn write_some(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use nix::errno::Errno;
        self.writes += 1;
        let fd = self.out.fd();
        let n = match self.mode {
            Mode::Chunked => return crate::diag::write_within(fd, buf, WAIT_SLICE),
            Mode::File => nix::unistd::write(fd, buf),
            Mode::NonBlocking | Mode::Socket => {
                use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                let ms = u16::try_from(WAIT_SLICE.as_millis()).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(0) | Err(Errno::EINTR) => return Ok(0),
                    Ok(_) => {}
                    Err(e) => return Err(e.into()),
                }
                let ready = fds[0].revents().unwrap_or(PollFlags::empty());
                if !ready.contains(PollFlags::POLLOUT) {
                    return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
                }
                if self.mode == Mode::Socket {
                    use nix::sys::socket::{send, MsgFlags};
                    send(
                        fd.as_raw_fd(),
                        buf,
                        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                    )
                } else {
                    nix::unistd::write(fd, buf)
                }
            }
        };
        match n {
            Ok(0) if self.mode == Mode::File => {
                Err(std::io::Error::from(std::io::ErrorKind::WriteZero))
            }
            Ok(n) => Ok(n),
            Err(Errno::EAGAIN | Errno::EINTR) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the buffer, waiting for the output as long as needed (or, once stopping,
    /// until the deadline). Events in a write that fails, or left at the deadline, are
    /// lost and counted.
    fn flush(&mut self) {
        let mut done = 0;
        let buf = std::mem::take(&mut self.buf);
        while done < buf.len() {
            if self.out_of_time() {
                break;
            }
            let rest = buf.get(done..).unwrap_or(&[]);
            match self.write_some(rest) {
                Ok(n) => done += n,
                Err(e) => {
                    if let Some(suppressed) = WRITE_FAILED.allow(std::time::Instant::now()) {
                        tracing::warn!(error = %e, events = self.pending, suppressed, "cannot write events; these are lost");
                    }
                    break;
                }
            }
        }
        if done == buf.len() {
            self.written += self.pending;
            self.shared_written
                .fetch_add(self.pending, Ordering::Relaxed);
        } else {
            self.lost += self.pending;
        }
        self.pending = 0;
        self.buf = buf;
        self.buf.clear();
    }

    /// Takes every lane's batch and formats it; returns how many events there were.
    /// Once stopping and out of time, what is taken is counted lost instead.
    fn drain(&mut self, queues: &Queues) -> usize {
        let mut n = 0;
        for Lane(lane) in &queues.lanes {
            std::mem::swap(&mut *lock(lane), &mut self.batch);
            if self.batch.len() <= self.batch.capacity() / 4 && self.batch.capacity() > LANE_START {
                // Grown in a burst that is over: format what it holds from a fresh small
                // buffer's point of view, and let the big one go after.
                self.shrink_next = true;
            }
            if self.batch.is_empty() {
                self.release_if_shrinking();
                continue;
            }
            n += self.batch.len();
            // Formatted in place (no move of each event out of the batch), then dropped.
            let mut batch = std::mem::take(&mut self.batch);
            for ev in &batch {
                if self.deadline.is_some() && self.out_of_time() {
                    self.lost += 1;
                } else {
                    self.push(ev);
                }
            }
            batch.clear();
            self.batch = batch;
            self.release_if_shrinking();
        }
        n
    }

    /// Drops the batch buffer if the batch it held was small for it (the lane that gets it
    /// next starts again at `LANE_START`).
    fn release_if_shrinking(&mut self) {
        if std::mem::take(&mut self.shrink_next) {
            self.batch = Vec::new();
        }
    }

    fn run(mut self, queues: &Queues, dropped: &AtomicU64) {
        let mut reported = 0u64;
        let mut idle_since: Option<std::time::Instant> = None;
        while !self.stopping.load(Ordering::SeqCst) {
            if self.drain(queues) > 0 {
                idle_since = None;
                self.flush();
                std::thread::sleep(WRITER_BUSY_POLL);
                continue;
            }
            self.flush();
            let d = dropped.load(Ordering::Relaxed);
            if d != reported {
                tracing::warn!(
                    dropped = d - reported,
                    total = d,
                    "event writer fell behind; events dropped"
                );
                reported = d;
            }
            let idle = *idle_since.get_or_insert_with(std::time::Instant::now);
            if idle.elapsed() < WRITER_PARK_AFTER {
                std::thread::sleep(WRITER_BUSY_POLL);
                continue;
            }
            // Park until a sender sees `parked` (or the stop flag is set): the lanes are
            // looked at after `parked` is set, so an event pushed before is not missed.
            queues.parked.store(true, Ordering::SeqCst);
            if queues.is_empty() && !self.stopping.load(Ordering::SeqCst) {
                std::thread::park_timeout(WRITER_PARK_MAX);
            }
            queues.parked.store(false, Ordering::SeqCst);
        }
        // Shutdown: what is queued goes out while the output takes it, until the deadline.
        // Events emitted after the last look are dropped and counted by the sender.
        let _ = self.out_of_time();
        self.drain(queues);
        queues.closed.store(true, Ordering::SeqCst);
        self.drain(queues);
        self.flush();
        if self.lost > 0 {
            tracing::warn!(
                written = self.written,
                lost = self.lost,
                "events lost: the output did not take them (a stopped reader or a full disk)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Proto, QueryEvent};
    use std::io::Read;
    use std::time::UNIX_EPOCH;

    fn event(i: u16) -> QueryEvent {
        let mut e = QueryEvent::new(UNIX_EPOCH, "127.0.0.1:5300".parse().unwrap(), Proto::Udp);
        e.id = Some(i);
        e.zone = Some(Arc::from("consul"));
        e.qname = Some(crate::event::InlineName::new(b"\x07service\x06consul\x00"));
        e.qtype = Some(1);
        e.rcode = Some(0);
        e
    }

    /// A fresh path under the temp directory, removed by the caller.
    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("splitdns-sink-{}-{name}", std::process::id()))
    }

    fn writer(out: Out) -> Writer {
        let (out, mode) = prepare(out);
        Writer::new(
            out,
            mode,
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        )
    }

    fn queued(n: u16) -> Queues {
        let q = Queues::new();
        for (i, Lane(lane)) in (0..n).zip(q.lanes.iter().cycle()) {
            lock(lane).push(event(i));
        }
        q
    }

    #[test]
    fn a_file_gets_many_events_per_write() {
        let path = temp_path("batches.jsonl");
        let f = std::fs::File::create(&path).unwrap();
        let mut w = writer(Out::File(f));
        assert_eq!(w.mode, Mode::File);
        let q = queued(2_000);
        assert_eq!(w.drain(&q), 2_000);
        w.flush();
        assert!(q.is_empty());
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(text.lines().count(), 2_000);
        assert_eq!(w.written, 2_000);
        // One write per 64 KiB buffer, not one per pipe-sized chunk (PIPE_BUF, 4 KiB).
        let max = text.len() / BUFFER + 2;
        assert!(
            w.writes <= max as u64,
            "{} writes for {} bytes",
            w.writes,
            text.len()
        );
    }

    #[test]
    fn emit_all_queues_up_to_the_lane_bound_and_counts_the_rest_dropped() {
        let q = Arc::new(Queues::new());
        let sink = EventSink {
            queues: Some(q.clone()),
            dropped: Arc::new(AtomicU64::new(0)),
            written: Arc::new(AtomicU64::new(0)),
            stats: Arc::new(super::super::stats::Stats::new()),
        };
        let queued = |q: &Queues| q.lanes.iter().map(|Lane(l)| lock(l).len()).sum::<usize>();
        for i in 0..(LANE_CAPACITY - 3) as u16 {
            sink.emit(event(i));
        }
        let mut batch: Vec<QueryEvent> = (0..10).map(event).collect();
        sink.emit_all(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(queued(&q), LANE_CAPACITY);
        assert_eq!(sink.dropped(), 7);
        // The three that fit are the batch's first three, in order.
        let ids: Vec<Option<u16>> = q
            .lanes
            .iter()
            .flat_map(|Lane(l)| {
                lock(l)
                    .iter()
                    .rev()
                    .take(3)
                    .map(|e| e.id)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(ids, [Some(2), Some(1), Some(0)]);
        // Once closed, a batch is dropped whole.
        q.closed.store(true, Ordering::Relaxed);
        let mut batch: Vec<QueryEvent> = (0..4).map(event).collect();
        sink.emit_all(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(sink.dropped(), 11);
    }

    #[test]
    fn a_burst_does_not_keep_its_buffers() {
        let path = temp_path("burst.jsonl");
        let f = std::fs::File::create(&path).unwrap();
        let mut w = writer(Out::File(f));
        let q = Queues::new();
        let biggest = |q: &Queues, w: &Writer| {
            q.lanes
                .iter()
                .map(|Lane(l)| lock(l).capacity())
                .chain([w.batch.capacity()])
                .max()
                .unwrap()
        };
        // A burst fills one lane; then the load goes back to a trickle, then stops.
        for i in 0..2_000 {
            lock(&q.lanes[0].0).push(event(i));
        }
        assert!(biggest(&q, &w) >= 2_000);
        assert_eq!(w.drain(&q), 2_000);
        for round in 0..4 {
            for i in 0..10 {
                lock(&q.lanes[0].0).push(event(i));
            }
            assert_eq!(w.drain(&q), 10, "round {round}");
        }
        assert_eq!(w.drain(&q), 0);
        w.flush();
        let _ = std::fs::remove_file(&path);
        assert_eq!(w.written, 2_040);
        assert!(
            biggest(&q, &w) <= LANE_START,
            "a buffer of {} events is still held",
            biggest(&q, &w)
        );
    }

    #[test]
    fn a_pipe_is_reopened_non_blocking_and_left_blocking_for_others() {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let (mut rx, tx) = std::io::pipe().unwrap();
        let shared = tx.try_clone().unwrap();
        let mut w = writer(Out::File(std::fs::File::from(std::os::fd::OwnedFd::from(
            tx,
        ))));
        assert_eq!(w.mode, Mode::NonBlocking);
        let fl = OFlag::from_bits_truncate(fcntl(shared.as_raw_fd(), FcntlArg::F_GETFL).unwrap());
        assert!(
            !fl.contains(OFlag::O_NONBLOCK),
            "the shared descriptor is untouched"
        );
        drop(shared);
        // Nobody reads: the writer takes what the pipe holds and is never blocked.
        let q = queued(2_000);
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let mut all = Vec::new();
            rx.read_to_end(&mut all).unwrap();
            all
        });
        w.drain(&q);
        w.flush();
        drop(w);
        let all = reader.join().unwrap();
        let text = String::from_utf8(all).unwrap();
        assert_eq!(text.lines().count(), 2_000);
        assert!(text.lines().all(|l| l.starts_with('{') && l.ends_with('}')));
    }

    #[test]
    fn emitted_events_are_written_by_stop_and_later_ones_dropped() {
        let path = temp_path("stop.jsonl");
        let _ = std::fs::remove_file(&path);
        let (sink, writer) = EventSink::start(&EventsOutput::File(path.clone())).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        sink.emit(event(i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        writer.stop();
        assert_eq!(sink.written() + sink.dropped(), 2_000);
        let lines = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
        let _ = std::fs::remove_file(&path);
        assert_eq!(lines, sink.written());
        assert_eq!(sink.stats().totals().query_count(), 2_000);
        sink.emit(event(1));
        assert_eq!(
            sink.dropped(),
            2_000 - lines + 1,
            "after stop: dropped, counted"
        );
    }
}
