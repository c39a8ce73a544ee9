//! Where events go: a bounded channel to a writer thread that writes one JSON line per
//! query. Emitting never blocks the answer path: when the channel is full the event is
//! dropped and counted. The writer itself never blocks for good either: it waits for the
//! output with `poll` in slices, so at shutdown it drains what the output takes within
//! [`SHUTDOWN_DRAIN`], drops the rest and says how many; a write that fails (a full disk,
//! a closed pipe) loses the events in it, counted and reported.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::json::TimeCache;
use super::QueryEvent;
use crate::config::EventsOutput;

/// Events queued for the writer; slots are preallocated (no allocation per event) but
/// only touched as used.
const CHANNEL_CAPACITY: usize = 4_096;

// Events travel by value so the channel's preallocated slots are used and the hit path
// allocates nothing; the size difference with `Stop` is the point.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Event(QueryEvent),
    Stop,
}

/// How long shutdown gives the output to take the events still queued.
pub(crate) const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// The output, as something with a file descriptor.
enum Out {
    Stdout(std::io::Stdout),
    Stderr(std::io::Stderr),
    File(std::fs::File),
}

impl Out {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Out::Stdout(o) => o.as_fd(),
            Out::Stderr(e) => e.as_fd(),
            Out::File(f) => f.as_fd(),
        }
    }
}

/// The sending side, shared by every thread. Cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    tx: Option<SyncSender<Msg>>,
    dropped: Arc<AtomicU64>,
    /// Events whose lines reached the output.
    written: Arc<AtomicU64>,
    /// Counters folded from every event emitted, written or not.
    stats: Arc<super::stats::Stats>,
}

/// The writer thread, stopped (boundedly) on shutdown.
pub struct EventWriter {
    tx: Option<SyncSender<Msg>>,
    handle: Option<JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
    done: Option<Receiver<()>>,
}

impl EventSink {
    /// A sink that discards everything (`output = "off"`).
    pub fn off() -> EventSink {
        EventSink {
            tx: None,
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
                        tx: None,
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
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let (d2, stopping) = (dropped.clone(), Arc::new(AtomicBool::new(false)));
        let s2 = stopping.clone();
        let written = Arc::new(AtomicU64::new(0));
        let w2 = written.clone();
        let (done_tx, done) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("splitdns-events".into())
            .spawn(move || {
                Writer::new(out, s2, w2).run(rx, &d2);
                let _ = done_tx.send(());
            })?;
        Ok((
            EventSink {
                tx: Some(tx.clone()),
                dropped,
                written,
                stats: Arc::new(super::stats::Stats::new()),
            },
            EventWriter {
                tx: Some(tx),
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
        if let Some(tx) = &self.tx {
            match tx.try_send(Msg::Event(ev)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
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
        self.stopping.store(true, Ordering::Relaxed);
        if let Some(tx) = self.tx.take() {
            let _ = tx.try_send(Msg::Stop);
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
/// How much formatted output is gathered before it is written.
const BUFFER: usize = 64 * 1024;
/// How long one wait for the output lasts before the stop flag is looked at again.
const WAIT_SLICE: Duration = Duration::from_millis(100);

static WRITE_FAILED: crate::diag::Throttle = crate::diag::Throttle::new(crate::diag::WARN_INTERVAL);

/// The writer thread's state.
struct Writer {
    out: Out,
    buf: Vec<u8>,
    /// Events whose lines are in `buf`, not yet all written.
    pending: u64,
    written: u64,
    lost: u64,
    stopping: Arc<AtomicBool>,
    /// Set once stopping was seen: when waiting for the output ends.
    deadline: Option<std::time::Instant>,
    time: TimeCache,
    /// `written`, for readers outside the thread.
    shared_written: Arc<AtomicU64>,
}

impl Writer {
    fn new(out: Out, stopping: Arc<AtomicBool>, shared_written: Arc<AtomicU64>) -> Writer {
        Writer {
            shared_written,
            out,
            buf: Vec::with_capacity(BUFFER),
            pending: 0,
            written: 0,
            lost: 0,
            stopping,
            deadline: None,
            time: TimeCache::default(),
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
        ev.write_json_with(&mut self.buf, &mut self.time);
        self.buf.push(b'\n');
        self.pending += 1;
        if self.buf.len() >= BUFFER {
            self.flush();
        }
    }

    /// Writes the buffer, waiting for the output as long as needed (or, once stopping,
    /// until the deadline). Events in a write that fails, or left at the deadline, are
    /// lost and counted.
    fn flush(&mut self) {
        let mut done = 0;
        while done < self.buf.len() {
            if self.out_of_time() {
                break;
            }
            let rest = self.buf.get(done..).unwrap_or(&[]);
            match crate::diag::write_within(self.out.fd(), rest, WAIT_SLICE) {
                Ok(n) => done += n,
                Err(e) => {
                    if let Some(suppressed) = WRITE_FAILED.allow(std::time::Instant::now()) {
                        tracing::warn!(error = %e, events = self.pending, suppressed, "cannot write events; these are lost");
                    }
                    break;
                }
            }
        }
        if done == self.buf.len() {
            self.written += self.pending;
            self.shared_written
                .fetch_add(self.pending, Ordering::Relaxed);
        } else {
            self.lost += self.pending;
        }
        self.pending = 0;
        self.buf.clear();
    }

    fn run(mut self, rx: Receiver<Msg>, dropped: &AtomicU64) {
        let mut reported = 0u64;
        let mut idle_since: Option<std::time::Instant> = None;
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                break;
            }
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(mpsc::TryRecvError::Empty) => {
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
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(m) => m,
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                Err(mpsc::TryRecvError::Disconnected) => break,
            };
            idle_since = None;
            match msg {
                Msg::Event(ev) => self.push(&ev),
                Msg::Stop => break,
            }
        }
        // Shutdown: what is queued goes out while the output takes it, until the deadline.
        while let Ok(msg) = rx.try_recv() {
            if let Msg::Event(ev) = msg {
                if self.out_of_time() {
                    self.lost += 1;
                } else {
                    self.push(&ev);
                }
            }
        }
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
