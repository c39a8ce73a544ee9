//! Where events go: a bounded channel to a writer thread that writes one JSON line per
//! query. Emitting never blocks the answer path: when the channel is full the event is
//! dropped and counted.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The sending side, shared by every thread. Cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    tx: Option<SyncSender<Msg>>,
    dropped: Arc<AtomicU64>,
}

/// The writer thread, joined on shutdown.
pub struct EventWriter {
    tx: Option<SyncSender<Msg>>,
    handle: Option<JoinHandle<()>>,
}

impl EventSink {
    /// A sink that discards everything (`output = "off"`).
    pub fn off() -> EventSink {
        EventSink {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts the writer thread for `output`.
    ///
    /// # Errors
    /// If the output file cannot be opened for appending.
    pub fn start(output: &EventsOutput) -> std::io::Result<(EventSink, EventWriter)> {
        let out: Box<dyn Write + Send> = match output {
            EventsOutput::Off => {
                return Ok((
                    EventSink::off(),
                    EventWriter {
                        tx: None,
                        handle: None,
                    },
                ))
            }
            EventsOutput::Stdout => Box::new(std::io::stdout()),
            EventsOutput::Stderr => Box::new(std::io::stderr()),
            EventsOutput::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let d2 = dropped.clone();
        let handle = std::thread::Builder::new()
            .name("splitdns-events".into())
            .spawn(move || write_loop(rx, out, &d2))?;
        Ok((
            EventSink {
                tx: Some(tx.clone()),
                dropped,
            },
            EventWriter {
                tx: Some(tx),
                handle: Some(handle),
            },
        ))
    }

    /// Hands an event to the writer without blocking; drops and counts it if the writer
    /// is behind.
    pub fn emit(&self, ev: QueryEvent) {
        if let Some(tx) = &self.tx {
            match tx.try_send(Msg::Event(ev)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl EventWriter {
    /// Flushes what is queued and stops the thread (bounded wait).
    pub fn stop(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Stop);
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// While events keep coming, the writer sleeps briefly between drains instead of parking,
/// so senders never pay to wake it (a futex wake, and on a pinned CPU a context switch, per
/// event). After this long without events it parks until the next one.
const WRITER_BUSY_POLL: Duration = Duration::from_millis(2);
const WRITER_PARK_AFTER: Duration = Duration::from_millis(250);

fn write_loop(rx: Receiver<Msg>, out: Box<dyn Write + Send>, dropped: &AtomicU64) {
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut reported = 0u64;
    let mut line = Vec::with_capacity(1024);
    let mut time = TimeCache::default();
    let mut idle_since: Option<std::time::Instant> = None;
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(mpsc::TryRecvError::Empty) => {
                let _ = w.flush();
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
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(m) => m,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
        };
        idle_since = None;
        match msg {
            Msg::Event(ev) => {
                line.clear();
                ev.write_json_with(&mut line, &mut time);
                line.push(b'\n');
                let _ = w.write_all(&line);
            }
            Msg::Stop => break,
        }
    }
    let _ = w.flush();
}
