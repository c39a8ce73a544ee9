//! Queries waiting for their replies on a shared transport (a long-lived UDP socket, a
//! DoT connection): the demultiplexer's table.
//!
//! Each waiting query holds a [`Ticket`] with a random message ID that no other waiting
//! query of the same table holds. A reply is matched by ID first, then checked against
//! the waiting query's question (the caller's check, so each transport keeps its own
//! acceptance rule); a reply with an unknown ID or the wrong question is dropped and
//! counted, and the query keeps waiting. A ticket dropped before its reply arrives (a
//! timeout, a cancelled task) frees its ID at once, so a late reply is "unknown".
//!
//! Bounded: [`Pending::register`] refuses beyond the table's capacity (the caller then
//! uses another path), so a flood of queries cannot grow it without limit.
//!
//! Pure bookkeeping: no I/O, no clock. The transport's reader calls [`Pending::complete`]
//! (and [`Pending::fail_all`] when the transport breaks); the waiting task awaits
//! [`Ticket::wait`].

use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use rustc_hash::FxHashMap;

/// The longest question: a 255-byte name plus type and class.
const MAX_QUESTION: usize = 259;

/// How many random IDs `register` tries before giving up (the table is far from full
/// whenever it is below capacity, so this is never reached in practice).
const ID_TRIES: usize = 64;

/// Why a ticket could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The table holds `capacity` waiting queries already.
    #[error("too many queries waiting on this transport")]
    Full,
    /// The question is longer than any DNS question can be.
    #[error("question too long")]
    TooLong,
    /// The transport was closed (see [`Pending::fail_all`]).
    #[error("transport closed")]
    Closed,
}

/// What [`Pending::complete`] did with a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the query waiting for it.
    Delivered,
    /// No query waits with this ID (a forgery, or a late reply to a query given up).
    UnknownId,
    /// A query waits with this ID but the reply's question is not its question.
    WrongQuestion,
    /// The query with this ID already has its reply (a duplicate).
    Duplicate,
}

/// Counters since the table was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PendingStats {
    /// Replies handed to their query.
    pub delivered: u64,
    /// Replies dropped: no query waits with their ID (or it already had its reply).
    pub unknown_id: u64,
    /// Replies dropped: right ID, wrong question.
    pub wrong_question: u64,
    /// Registrations refused because the table was full.
    pub full: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    unknown_id: AtomicU64,
    wrong_question: AtomicU64,
    full: AtomicU64,
}

enum State<R> {
    Waiting(Option<Waker>),
    Done(Result<R, io::ErrorKind>),
    Taken,
}

struct Slot<R> {
    question: [u8; MAX_QUESTION],
    question_len: u16,
    state: State<R>,
}

impl<R> Slot<R> {
    fn question(&self) -> &[u8] {
        self.question
            .get(..usize::from(self.question_len))
            .unwrap_or(&[])
    }
}

struct Inner<R> {
    slots: FxHashMap<u16, Slot<R>>,
    closed: Option<io::ErrorKind>,
}

/// The table of queries waiting on one shared transport. `R` is what a reply is handed
/// over as.
pub struct Pending<R> {
    inner: Mutex<Inner<R>>,
    capacity: usize,
    counters: Counters,
}

impl<R> std::fmt::Debug for Pending<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("waiting", &self.len())
            .field("capacity", &self.capacity)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<R> Pending<R> {
    /// An empty table holding at most `capacity` waiting queries (at most 65,536: one per
    /// ID).
    pub fn new(capacity: usize) -> Pending<R> {
        Pending {
            inner: Mutex::new(Inner {
                slots: FxHashMap::default(),
                closed: None,
            }),
            capacity: capacity.min(1 << 16),
            counters: Counters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<R>> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Queries waiting now.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// True if no query waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters since the table was made.
    pub fn stats(&self) -> PendingStats {
        let c = &self.counters;
        PendingStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            unknown_id: c.unknown_id.load(Ordering::Relaxed),
            wrong_question: c.wrong_question.load(Ordering::Relaxed),
            full: c.full.load(Ordering::Relaxed),
        }
    }

    /// Reserves a random ID, unique among the waiting queries, for a query asking
    /// `question` (wire form: name, type, class). Send the query with [`Ticket::id`].
    ///
    /// # Errors
    /// [`RegisterError`] when the table is full or closed, or the question too long.
    pub fn register(self: &Arc<Self>, question: &[u8]) -> Result<Ticket<R>, RegisterError> {
        let mut q = [0u8; MAX_QUESTION];
        q.get_mut(..question.len())
            .ok_or(RegisterError::TooLong)?
            .copy_from_slice(question);
        let mut inner = self.lock();
        if inner.closed.is_some() {
            return Err(RegisterError::Closed);
        }
        if inner.slots.len() >= self.capacity {
            self.counters.full.fetch_add(1, Ordering::Relaxed);
            return Err(RegisterError::Full);
        }
        for _ in 0..ID_TRIES {
            let id: u16 = rand::random();
            if let std::collections::hash_map::Entry::Vacant(v) = inner.slots.entry(id) {
                v.insert(Slot {
                    question: q,
                    question_len: question.len() as u16,
                    state: State::Waiting(None),
                });
                return Ok(Ticket {
                    table: self.clone(),
                    id,
                });
            }
        }
        self.counters.full.fetch_add(1, Ordering::Relaxed);
        Err(RegisterError::Full)
    }

    /// Offers a reply carrying `id`. `accept` is called with the waiting query's question
    /// and returns what to hand over if the reply answers it, `None` if not (so a forged
    /// reply costs no copy).
    pub fn complete(&self, id: u16, accept: impl FnOnce(&[u8]) -> Option<R>) -> Delivery {
        let waker = {
            let mut inner = self.lock();
            let Some(slot) = inner.slots.get_mut(&id) else {
                self.counters.unknown_id.fetch_add(1, Ordering::Relaxed);
                return Delivery::UnknownId;
            };
            if !matches!(slot.state, State::Waiting(_)) {
                self.counters.unknown_id.fetch_add(1, Ordering::Relaxed);
                return Delivery::Duplicate;
            }
            let Some(reply) = accept(slot.question()) else {
                self.counters.wrong_question.fetch_add(1, Ordering::Relaxed);
                return Delivery::WrongQuestion;
            };
            match std::mem::replace(&mut slot.state, State::Done(Ok(reply))) {
                State::Waiting(w) => w,
                _ => None,
            }
        };
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = waker {
            w.wake();
        }
        Delivery::Delivered
    }

    /// Fails the query waiting with `id` (if it still waits) with `kind`: its copy could
    /// not be sent.
    pub fn fail(&self, id: u16, kind: io::ErrorKind) {
        let waker = {
            let mut inner = self.lock();
            match inner.slots.get_mut(&id) {
                Some(slot) if matches!(slot.state, State::Waiting(_)) => {
                    match std::mem::replace(&mut slot.state, State::Done(Err(kind))) {
                        State::Waiting(w) => w,
                        _ => None,
                    }
                }
                _ => None,
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Fails every waiting query with `kind` (the transport broke: a connection reset, an
    /// ICMP port unreachable on a connected socket). With `close`, later registrations
    /// are refused too.
    pub fn fail_all(&self, kind: io::ErrorKind, close: bool) {
        let mut wakers = Vec::new();
        {
            let mut inner = self.lock();
            if close {
                inner.closed = Some(kind);
            }
            for slot in inner.slots.values_mut() {
                if let State::Waiting(w) = &mut slot.state {
                    if let Some(w) = w.take() {
                        wakers.push(w);
                    }
                    slot.state = State::Done(Err(kind));
                }
            }
        }
        for w in wakers {
            w.wake();
        }
    }
}

/// One waiting query's claim on its ID. Dropping it frees the ID.
pub struct Ticket<R> {
    table: Arc<Pending<R>>,
    id: u16,
}

impl<R> std::fmt::Debug for Ticket<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("id", &self.id).finish()
    }
}

impl<R> Ticket<R> {
    /// The message ID to send the query with.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Waits for the reply (once: after it returns, the ticket only holds the ID until
    /// dropped).
    ///
    /// # Errors
    /// The error [`Pending::fail_all`] gave, or `Other` if the reply was already taken.
    pub async fn wait(&mut self) -> io::Result<R> {
        poll_fn(|cx| self.poll_reply(cx)).await
    }

    /// Polls for the reply (for callers waiting on several tickets at once): ready once,
    /// with the reply or the transport's error; later polls give `Other`.
    pub fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let mut inner = self.table.lock();
        let Some(slot) = inner.slots.get_mut(&self.id) else {
            return Poll::Ready(Err(io::ErrorKind::Other.into()));
        };
        match &mut slot.state {
            State::Waiting(w) => {
                match w {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            State::Taken => Poll::Ready(Err(io::ErrorKind::Other.into())),
            State::Done(_) => {
                let State::Done(r) = std::mem::replace(&mut slot.state, State::Taken) else {
                    return Poll::Ready(Err(io::ErrorKind::Other.into()));
                };
                Poll::Ready(r.map_err(io::Error::from))
            }
        }
    }
}

impl<R> Drop for Ticket<R> {
    fn drop(&mut self) {
        let slot = self.table.lock().slots.remove(&self.id);
        // The reply (if any) is dropped outside the lock.
        drop(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn poll_once<R>(t: &mut Ticket<R>, flag: &Arc<Flag>) -> Poll<io::Result<R>> {
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(t.wait());
        fut.as_mut().poll(&mut cx)
    }

    use std::future::Future;

    const Q: &[u8] = b"\x03www\x07example\x03com\x00\x00\x01\x00\x01";

    #[test]
    fn matched_by_id_then_question() {
        let p: Arc<Pending<u32>> = Arc::new(Pending::new(8));
        let mut t = p.register(Q).unwrap();
        let id = t.id();
        let flag = Arc::new(Flag(false.into()));
        assert!(poll_once(&mut t, &flag).is_pending());
        assert_eq!(
            p.complete(id.wrapping_add(1), |_| Some(1)),
            Delivery::UnknownId
        );
        assert_eq!(
            p.complete(id, |q| (q == b"other").then_some(2)),
            Delivery::WrongQuestion
        );
        assert!(!flag.0.load(Ordering::SeqCst), "nothing delivered yet");
        assert_eq!(
            p.complete(id, |q| (q == Q).then_some(3)),
            Delivery::Delivered
        );
        assert!(flag.0.load(Ordering::SeqCst), "the waiter was woken");
        assert_eq!(p.complete(id, |_| Some(4)), Delivery::Duplicate);
        match poll_once(&mut t, &flag) {
            Poll::Ready(Ok(v)) => assert_eq!(v, 3, "the matching reply, not a later one"),
            other => panic!("{other:?}"),
        }
        let s = p.stats();
        assert_eq!((s.delivered, s.unknown_id, s.wrong_question), (1, 2, 1));
    }

    #[test]
    fn ids_are_unique_random_and_freed_on_drop() {
        let p: Arc<Pending<()>> = Arc::new(Pending::new(1000));
        let tickets: Vec<_> = (0..1000).map(|_| p.register(Q).unwrap()).collect();
        let mut ids: Vec<u16> = tickets.iter().map(|t| t.id()).collect();
        let in_order = ids.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
        assert!(!in_order, "IDs are not a counter");
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 1000, "no two waiting queries share an ID");
        assert_eq!(p.register(Q).unwrap_err(), RegisterError::Full);
        assert_eq!(p.stats().full, 1);
        let id = tickets[0].id();
        drop(tickets);
        assert!(p.is_empty());
        assert_eq!(
            p.complete(id, |_| Some(())),
            Delivery::UnknownId,
            "a late reply after the ticket was dropped"
        );
    }

    #[test]
    fn fail_all_wakes_every_waiter_and_close_refuses_more() {
        let p: Arc<Pending<()>> = Arc::new(Pending::new(8));
        let mut a = p.register(Q).unwrap();
        let mut b = p.register(Q).unwrap();
        let (fa, fb) = (Arc::new(Flag(false.into())), Arc::new(Flag(false.into())));
        assert!(poll_once(&mut a, &fa).is_pending());
        assert!(poll_once(&mut b, &fb).is_pending());
        p.fail_all(io::ErrorKind::ConnectionRefused, true);
        assert!(fa.0.load(Ordering::SeqCst) && fb.0.load(Ordering::SeqCst));
        for t in [&mut a, &mut b] {
            match poll_once(t, &fa) {
                Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(p.register(Q).unwrap_err(), RegisterError::Closed);
    }

    #[test]
    fn fail_wakes_only_that_query_and_the_others_still_get_replies() {
        let p: Arc<Pending<u8>> = Arc::new(Pending::new(8));
        let mut a = p.register(Q).unwrap();
        let mut b = p.register(Q).unwrap();
        let (fa, fb) = (Arc::new(Flag(false.into())), Arc::new(Flag(false.into())));
        assert!(poll_once(&mut a, &fa).is_pending());
        assert!(poll_once(&mut b, &fb).is_pending());
        p.fail(a.id(), io::ErrorKind::ConnectionRefused);
        assert!(fa.0.load(Ordering::SeqCst));
        assert!(!fb.0.load(Ordering::SeqCst));
        match poll_once(&mut a, &fa) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
            other => panic!("{other:?}"),
        }
        // An ID nobody waits with, or one already settled, changes nothing.
        let unused = (0..=u16::MAX)
            .find(|&i| i != a.id() && i != b.id())
            .unwrap();
        p.fail(unused, io::ErrorKind::ConnectionRefused);
        p.fail(a.id(), io::ErrorKind::TimedOut);
        assert!(poll_once(&mut b, &fb).is_pending());
        assert_eq!(p.complete(b.id(), |_| Some(7)), Delivery::Delivered);
        assert!(matches!(poll_once(&mut b, &fb), Poll::Ready(Ok(7))));
        // The table stays open.
        assert!(p.register(Q).is_ok());
    }

    #[test]
    fn overlong_question_is_refused() {
        let p: Arc<Pending<()>> = Arc::new(Pending::new(8));
        assert_eq!(p.register(&[0u8; 300]).unwrap_err(), RegisterError::TooLong);
    }
}
