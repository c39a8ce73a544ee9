//! Identical questions in flight share one upstream exchange (as dnsmasq does): the first
//! query for a key leads — it asks the upstreams and publishes the outcome — and queries
//! for the same key that arrive meanwhile follow, waiting for that outcome instead of
//! asking again. Each follower then builds its own reply (its own ID, question case and
//! size); the caller decides what the key holds (zone, question lowercased, the flags that
//! change the upstream's answer).
//!
//! Bounded: a flight takes at most `max_followers`; later duplicates lead nothing and go
//! upstream on their own ([`Join::Alone`]). Sharded, so queries for different names
//! rarely meet on a lock. A leader that is dropped before publishing (its task cancelled)
//! releases its followers with nothing, and they go upstream themselves.
//!
//! No I/O and no clock here.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use tokio::sync::Notify;

use super::Answer;
use crate::event::Attempt;

/// What a leader hands its followers: the answer (if any server gave one) and, when none
/// did, the attempts that explain why.
#[derive(Debug)]
pub struct Landed {
    /// The accepted reply.
    pub answer: Option<Answer>,
    /// The leader's attempts (empty when `answer` is set: followers need them only to
    /// explain a failure).
    pub attempts: Vec<Attempt>,
}

/// Followers one flight takes at most (as many as a receive thread's in-flight bound).
pub const MAX_FOLLOWERS: usize = 1024;

/// Lock shards.
const SHARDS: usize = 16;

/// One exchange in flight and the outcome it will publish.
#[derive(Debug)]
pub struct Flight<T> {
    /// Its key, and the key's hash (computed once per query).
    key: Vec<u8>,
    hash: u64,
    outcome: OnceLock<Option<T>>,
    done: Notify,
    followers: AtomicUsize,
}

impl<T: Clone> Flight<T> {
    /// Waits for the leader: its outcome, or `None` if it gave up without one.
    pub async fn outcome(&self) -> Option<T> {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(o) = self.outcome.get() {
                return o.clone();
            }
            notified.await;
        }
    }
}

/// What [`Inflight::join`] makes of a query.
#[derive(Debug)]
pub enum Join<'a, T> {
    /// Nobody asks this yet: ask, then [`Leader::publish`].
    Lead(Leader<'a, T>),
    /// Someone is asking: wait for [`Flight::outcome`].
    Follow(Arc<Flight<T>>),
    /// Someone is asking but has all the followers it may take: ask alone.
    Alone,
}

/// One lock's worth of flights, found by their key's hash (the key lives in the flight:
/// one allocation per flight for it).
type Shard<T> = HashTable<Arc<Flight<T>>>;

/// The table of flights.
#[derive(Debug)]
pub struct Inflight<T> {
    shards: [Mutex<Shard<T>>; SHARDS],
    max_followers: usize,
}

impl<T> Inflight<T> {
    /// An empty table whose flights take at most `max_followers` each.
    pub fn new(max_followers: usize) -> Inflight<T> {
        Inflight {
            shards: std::array::from_fn(|_| Mutex::new(HashTable::new())),
            max_followers,
        }
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard<T>> {
        // The high bits: the table uses the low ones.
        let i = ((hash >> 48) as usize) % SHARDS;
        let m = self.shards.get(i).unwrap_or(&self.shards[0]);
        match m.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Flights in the air now.
    pub fn len(&self) -> usize {
        (0..SHARDS)
            .map(|i| match self.shards[i].lock() {
                Ok(g) => g.len(),
                Err(p) => p.into_inner().len(),
            })
            .sum()
    }

    /// True if nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Leads the flight for `key`, or follows the one already in the air.
    pub fn join(&self, key: impl Into<Vec<u8>>) -> Join<'_, T> {
        let key = key.into();
        let hash = FxBuildHasher.hash_one(&key[..]);
        let mut m = self.shard(hash);
        if let Some(f) = m.find(hash, |f| f.key == key) {
            if f.followers.fetch_add(1, Ordering::Relaxed) < self.max_followers {
                return Join::Follow(f.clone());
            }
            return Join::Alone;
        }
        let flight = Arc::new(Flight {
            key,
            hash,
            outcome: OnceLock::new(),
            done: Notify::new(),
            followers: AtomicUsize::new(0),
        });
        m.insert_unique(hash, flight.clone(), |f| f.hash);
        Join::Lead(Leader {
            table: self,
            flight,
        })
    }
}

/// The query asking on behalf of a flight. Dropping it without publishing releases the
/// followers with nothing.
#[derive(Debug)]
pub struct Leader<'a, T> {
    table: &'a Inflight<T>,
    flight: Arc<Flight<T>>,
}

impl<T> Leader<'_, T> {
    /// Hands `outcome` to every follower and lands the flight (a query for the key that
    /// comes after this leads a new one).
    pub fn publish(self, outcome: T) {
        self.land(Some(outcome));
    }

    fn land(&self, outcome: Option<T>) {
        {
            let mut m = self.table.shard(self.flight.hash);
            if let Ok(e) = m.find_entry(self.flight.hash, |f| Arc::ptr_eq(f, &self.flight)) {
                e.remove();
            }
        }
        let _ = self.flight.outcome.set(outcome);
        self.flight.done.notify_waiters();
    }
}

impl<T> Drop for Leader<'_, T> {
    fn drop(&mut self) {
        if self.flight.outcome.get().is_none() {
            self.land(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn followers_get_the_leaders_outcome_once() {
        let t: Inflight<u32> = Inflight::new(2);
        let Join::Lead(lead) = t.join(b"k") else {
            panic!("the first query leads")
        };
        let Join::Follow(f1) = t.join(b"k") else {
            panic!("the second follows")
        };
        let Join::Follow(f2) = t.join(b"k") else {
            panic!("the third follows")
        };
        assert!(
            matches!(t.join(b"k"), Join::Alone),
            "a fourth is over the bound"
        );
        assert!(
            matches!(t.join(b"other"), Join::Lead(_)),
            "another key leads its own flight"
        );
        let w1 = tokio::spawn(async move { f1.outcome().await });
        let w2 = tokio::spawn(async move { f2.outcome().await });
        tokio::task::yield_now().await;
        lead.publish(7);
        assert_eq!(w1.await.unwrap(), Some(7));
        assert_eq!(w2.await.unwrap(), Some(7));
        assert!(
            matches!(t.join(b"k"), Join::Lead(_)),
            "after landing, the next query asks again"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_leader_releases_its_followers_empty_handed() {
        let t: Inflight<u32> = Inflight::new(8);
        let lead = t.join(b"k");
        let Join::Follow(f) = t.join(b"k") else {
            panic!("follows")
        };
        drop(lead);
        assert_eq!(f.outcome().await, None);
        assert!(t.is_empty());
    }
}
