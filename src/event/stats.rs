//! Counters since start, folded from the per-query record at the moment it is emitted.
//!
//! [`Stats::record`] is called with every `QueryEvent` right where the event sink takes it,
//! so the counters and the event stream are two views of the same records and cannot
//! disagree: `queries` equals events written plus events dropped. Everything the control
//! socket's `stats`, the Prometheus endpoint and the SIGUSR1 summary show comes from
//! [`Stats::totals`].
//!
//! Cost on the hot path: one uncontended mutex per query. Recording threads are spread
//! over `SHARDS` cache-line-aligned shards (a thread keeps its shard), so receive threads
//! never share a lock or a cache line; readers sum the shards. Label sets are bounded: zones
//! and upstreams come from the config and the servers files, never from packets, and each
//! shard folds anything past `MAX_CELLS` label combinations into an `(other)` cell.
//!
//! This module does no I/O and knows nothing about sockets, the cache or the config.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use super::{CacheStatus, Outcome, Proto, QueryEvent};

/// Upper bounds of the latency histogram buckets, in nanoseconds (10 µs … 5 s; the last
/// bucket, +Inf, is implicit). Prometheus `le` labels are these in seconds.
pub const BUCKETS_NS: [u64; 18] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];

/// Recording shards; a power of two above the receive-thread cap (8) plus the runtime and
/// TCP threads, so threads rarely share one.
const SHARDS: usize = 16;
/// Label combinations kept per shard before new ones are folded into `(other)`.
const MAX_CELLS: usize = 4_096;
/// The zone / upstream label used for folded cells.
pub const OTHER: &str = "(other)";

/// A small number naming this thread, handed out once per thread by a process-wide
/// counter: a thread-local read is cheaper than hashing the thread's id per query. The
/// stats shards and the event lanes are picked by it.
pub(super) fn thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i)
}

/// Which shard this thread records into.
fn shard_index() -> usize {
    thread_index() % SHARDS
}

/// Queries by label set, with their latency distribution.
#[derive(Debug, Clone)]
struct QueryCell {
    zone: Option<Arc<str>>,
    proto: Proto,
    cache: CacheStatus,
    rcode: Option<u16>,
    count: u64,
    sum_ns: u64,
    buckets: [u64; BUCKETS_NS.len()],
    failovers: u64,
}

/// Upstream attempts by label set.
#[derive(Debug, Clone)]
struct AttemptCell {
    zone: Option<Arc<str>>,
    /// None: folded into `(other)`.
    server: Option<SocketAddr>,
    proto: Proto,
    outcome: Outcome,
    count: u64,
    sum_ns: u64,
    /// When the latest of these attempts started and how long it took.
    last: Option<(SystemTime, Duration)>,
}

#[derive(Default)]
struct Shard {
    queries: Cells<QueryCell>,
    attempts: Cells<AttemptCell>,
    /// `error` strings are `&'static str` from a fixed set; a short list.
    errors: Vec<(&'static str, u64)>,
}

/// Counter cells of one kind, found by label set; the cell used last is tried first
/// (consecutive queries on a thread mostly share their labels), so the usual record
/// neither hashes nor clones a label.
struct Cells<C> {
    cells: Vec<C>,
    /// Positions in `cells`, by the hash of their labels.
    index: HashTable<usize>,
    last: usize,
}

impl<C> Default for Cells<C> {
    fn default() -> Self {
        Cells {
            cells: Vec::new(),
            index: HashTable::new(),
            last: usize::MAX,
        }
    }
}

impl<C> Cells<C> {
    fn len(&self) -> usize {
        self.cells.len()
    }

    fn iter(&self) -> std::slice::Iter<'_, C> {
        self.cells.iter()
    }

    /// The position of the cell `is` accepts; `hash` is only computed when the last cell
    /// used is not it.
    fn find(&mut self, hash: impl FnOnce() -> u64, is: impl Fn(&C) -> bool) -> Option<usize> {
        if self.cells.get(self.last).is_some_and(&is) {
            return Some(self.last);
        }
        let cells = &self.cells;
        let found = self
            .index
            .find(hash(), |&i| cells.get(i).is_some_and(&is))
            .copied();
        if let Some(i) = found {
            self.last = i;
        }
        found
    }

    /// Adds a cell whose labels hash to `hash` (`rehash` gives any cell's) and returns it.
    fn insert(&mut self, hash: u64, cell: C, rehash: impl Fn(&C) -> u64) -> Option<&mut C> {
        let i = self.cells.len();
        self.cells.push(cell);
        let cells = &self.cells;
        self.index
            .insert_unique(hash, i, |&j| cells.get(j).map_or(0, &rehash));
        self.last = i;
        self.cells.get_mut(i)
    }
}

/// One shard per cache line pair, so two recording threads never false-share.
#[repr(align(128))]
#[derive(Default)]
struct Padded(Mutex<Shard>);

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Plain counters: a panic elsewhere mid-update leaves them usable.
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn query_hash(zone: Option<&str>, proto: Proto, cache: CacheStatus, rcode: Option<u16>) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    zone.hash(&mut h);
    (proto as u8).hash(&mut h);
    (cache as u8).hash(&mut h);
    rcode.hash(&mut h);
    h.finish()
}

fn attempt_hash(
    zone: Option<&str>,
    server: Option<SocketAddr>,
    proto: Proto,
    outcome: Outcome,
) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    zone.hash(&mut h);
    server.hash(&mut h);
    (proto as u8).hash(&mut h);
    (outcome as u8).hash(&mut h);
    h.finish()
}

/// The counters. One per process, held by the event sink.
pub struct Stats {
    shards: Box<[Padded]>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").finish_non_exhaustive()
    }
}

/// Times the server changed between consecutive attempts: how often this query failed
/// over to the next server.
pub fn failovers(ev: &QueryEvent) -> u64 {
    ev.attempts
        .windows(2)
        .filter(|w| matches!(w, [a, b] if a.server != b.server))
        .count() as u64
}

impl Stats {
    /// Empty counters.
    pub fn new() -> Stats {
        Stats {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
        }
    }

    /// Counts one query's record. Called once per event, before it is queued for writing.
    pub fn record(&self, ev: &QueryEvent) {
        let Some(Padded(m)) = self.shards.get(shard_index()) else {
            return;
        };
        let mut shard = lock(m);
        let shard = &mut *shard;
        let ns = u64::try_from(ev.duration.as_nanos()).unwrap_or(u64::MAX);
        if let Some(cell) = query_cell(
            &mut shard.queries,
            ev.zone.as_ref(),
            ev.proto,
            ev.cache,
            ev.rcode,
        ) {
            cell.count += 1;
            cell.sum_ns = cell.sum_ns.saturating_add(ns);
            if let Some(b) = BUCKETS_NS
                .iter()
                .position(|&le| ns <= le)
                .and_then(|i| cell.buckets.get_mut(i))
            {
                *b += 1;
            }
            cell.failovers += failovers(ev);
        }
        for a in &ev.attempts {
            let Some(cell) = attempt_cell(
                &mut shard.attempts,
                ev.zone.as_ref(),
                a.server,
                a.proto,
                a.outcome,
            ) else {
                continue;
            };
            cell.count += 1;
            cell.sum_ns = cell
                .sum_ns
                .saturating_add(u64::try_from(a.elapsed.as_nanos()).unwrap_or(u64::MAX));
            if cell.last.is_none_or(|(t, _)| t <= ev.timestamp) {
                cell.last = Some((ev.timestamp, a.elapsed));
            }
        }
        if let Some(e) = ev.error {
            match shard
                .errors
                .iter_mut()
                .find(|(s, _)| std::ptr::eq(*s, e) || *s == e)
            {
                Some((_, n)) => *n += 1,
                None => shard.errors.push((e, 1)),
            }
        }
    }

    /// Sums the shards into plain, ordered totals.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for Padded(m) in self.shards.iter() {
            let shard = lock(m);
            for c in shard.queries.iter() {
                let labels = QueryLabels {
                    zone: label_zone(c.zone.as_deref()),
                    transport: c.proto.as_str(),
                    cache: c.cache.as_str(),
                    rcode: c.rcode.map(|r| super::rcode_name(r).into_owned()),
                };
                let q = t.queries.entry(labels).or_default();
                q.count += c.count;
                q.sum_ns = q.sum_ns.saturating_add(c.sum_ns);
                q.failovers += c.failovers;
                for (sum, n) in q.buckets.iter_mut().zip(c.buckets.iter()) {
                    *sum += n;
                }
            }
            for c in shard.attempts.iter() {
                let labels = AttemptLabels {
                    zone: label_zone(c.zone.as_deref()),
                    upstream: c.server.map_or_else(|| OTHER.to_owned(), |s| s.to_string()),
                    transport: c.proto.as_str(),
                    outcome: c.outcome.as_str(),
                };
                let a = t.attempts.entry(labels).or_default();
                a.count += c.count;
                a.sum_ns = a.sum_ns.saturating_add(c.sum_ns);
                if c.last.is_some() && (a.last.is_none() || c.last > a.last) {
                    a.last = c.last;
                }
            }
            for (e, n) in &shard.errors {
                *t.errors.entry(e).or_default() += n;
            }
        }
        t
    }
}

fn label_zone(z: Option<&str>) -> String {
    z.map(str::to_owned).unwrap_or_default()
}

fn query_cell<'a>(
    table: &'a mut Cells<QueryCell>,
    zone: Option<&Arc<str>>,
    proto: Proto,
    cache: CacheStatus,
    rcode: Option<u16>,
) -> Option<&'a mut QueryCell> {
    let z = zone.map(|z| &**z);
    let found = table.find(
        || query_hash(z, proto, cache, rcode),
        |c| c.zone.as_deref() == z && c.proto == proto && c.cache == cache && c.rcode == rcode,
    );
    if let Some(i) = found {
        return table.cells.get_mut(i);
    }
    // A new label set; past the bound, it is folded into `(other)`.
    let zone: Option<Arc<str>> = if table.len() >= MAX_CELLS {
        let other = Some(OTHER);
        let found = table.find(
            || query_hash(other, proto, cache, rcode),
            |c| {
                c.zone.as_deref() == other
                    && c.proto == proto
                    && c.cache == cache
                    && c.rcode == rcode
            },
        );
        if let Some(i) = found {
            return table.cells.get_mut(i);
        }
        Some(Arc::from(OTHER))
    } else {
        zone.cloned()
    };
    let hash = query_hash(zone.as_deref(), proto, cache, rcode);
    table.insert(
        hash,
        QueryCell {
            zone,
            proto,
            cache,
            rcode,
            count: 0,
            sum_ns: 0,
            buckets: [0; BUCKETS_NS.len()],
            failovers: 0,
        },
        |c| query_hash(c.zone.as_deref(), c.proto, c.cache, c.rcode),
    )
}

fn attempt_cell<'a>(
    table: &'a mut Cells<AttemptCell>,
    zone: Option<&Arc<str>>,
    server: SocketAddr,
    proto: Proto,
    outcome: Outcome,
) -> Option<&'a mut AttemptCell> {
    let z = zone.map(|z| &**z);
    let server = Some(server);
    let found = table.find(
        || attempt_hash(z, server, proto, outcome),
        |c| {
            c.zone.as_deref() == z && c.server == server && c.proto == proto && c.outcome == outcome
        },
    );
    if let Some(i) = found {
        return table.cells.get_mut(i);
    }
    let (zone, server): (Option<Arc<str>>, _) = if table.len() >= MAX_CELLS {
        let other = Some(OTHER);
        let found = table.find(
            || attempt_hash(other, None, proto, outcome),
            |c| {
                c.zone.as_deref() == other
                    && c.server.is_none()
                    && c.proto == proto
                    && c.outcome == outcome
            },
        );
        if let Some(i) = found {
            return table.cells.get_mut(i);
        }
        (Some(Arc::from(OTHER)), None)
    } else {
        (zone.cloned(), server)
    };
    let hash = attempt_hash(zone.as_deref(), server, proto, outcome);
    table.insert(
        hash,
        AttemptCell {
            zone,
            server,
            proto,
            outcome,
            count: 0,
            sum_ns: 0,
            last: None,
        },
        |c| attempt_hash(c.zone.as_deref(), c.server, c.proto, c.outcome),
    )
}

/// Labels of a query counter. `zone` is empty for queries that matched no zone (refused,
/// malformed); `rcode` is None when no reply was sent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueryLabels {
    /// Zone name (`.` for the root, empty for none).
    pub zone: String,
    /// `udp` / `tcp`.
    pub transport: &'static str,
    /// `hit`, `miss`, `stale`, `off`.
    pub cache: &'static str,
    /// `NOERROR`, …; None if nothing was sent.
    pub rcode: Option<String>,
}

/// Counts for one query label set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryTotals {
    /// Queries.
    pub count: u64,
    /// Sum of their durations, ns.
    pub sum_ns: u64,
    /// Per-bucket counts (not cumulative), same order as [`BUCKETS_NS`]; queries slower
    /// than the last bound are only in `count`.
    pub buckets: [u64; BUCKETS_NS.len()],
    /// Failovers (server changes between attempts).
    pub failovers: u64,
}

/// Labels of an upstream-attempt counter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AttemptLabels {
    /// The zone whose query it was.
    pub zone: String,
    /// `ip:port` of the server (or `(other)`).
    pub upstream: String,
    /// `udp` / `tcp`.
    pub transport: &'static str,
    /// `answer`, `timeout`, ….
    pub outcome: &'static str,
}

/// Counts for one attempt label set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptTotals {
    /// Attempts.
    pub count: u64,
    /// Time spent in them, ns.
    pub sum_ns: u64,
    /// The latest of them: when its query arrived, and how long the attempt took.
    pub last: Option<(SystemTime, Duration)>,
}

/// Everything counted since start, summed over shards, in a stable order.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Queries by (zone, transport, cache, rcode).
    pub queries: BTreeMap<QueryLabels, QueryTotals>,
    /// Upstream attempts by (zone, upstream, transport, outcome).
    pub attempts: BTreeMap<AttemptLabels, AttemptTotals>,
    /// Queries by `error` (the event's `error.message`).
    pub errors: BTreeMap<&'static str, u64>,
}

impl Totals {
    /// All queries.
    pub fn query_count(&self) -> u64 {
        self.queries.values().map(|q| q.count).sum()
    }

    /// All failovers.
    pub fn failovers(&self) -> u64 {
        self.queries.values().map(|q| q.failovers).sum()
    }

    /// Query counts grouped by one label.
    pub fn queries_by<K: Ord>(&self, key: impl Fn(&QueryLabels) -> K) -> BTreeMap<K, u64> {
        let mut m = BTreeMap::new();
        for (l, q) in &self.queries {
            *m.entry(key(l)).or_default() += q.count;
        }
        m
    }

    /// Attempt counts grouped by one label.
    pub fn attempts_by<K: Ord>(&self, key: impl Fn(&AttemptLabels) -> K) -> BTreeMap<K, u64> {
        let mut m = BTreeMap::new();
        for (l, a) in &self.attempts {
            *m.entry(key(l)).or_default() += a.count;
        }
        m
    }

    /// The round-trip time of the latest attempt to `upstream` that got a reply (answer,
    /// SERVFAIL, REFUSED or TC), over every zone.
    pub fn last_rtt(&self, upstream: &str) -> Option<Duration> {
        self.attempts
            .iter()
            .filter(|(l, _)| l.upstream == upstream && !matches!(l.outcome, "timeout" | "error"))
            .filter_map(|(_, a)| a.last)
            .max_by_key(|(t, _)| *t)
            .map(|(_, d)| d)
    }

    /// Attempts to `upstream` with `outcome`, over every zone.
    pub fn attempts_to(&self, upstream: &str, outcome: &str) -> u64 {
        self.attempts
            .iter()
            .filter(|(l, _)| l.upstream == upstream && l.outcome == outcome)
            .map(|(_, a)| a.count)
            .sum()
    }

    /// The latency histogram of the queries `keep` selects: per-bucket counts and the
    /// total count.
    pub fn histogram(&self, keep: impl Fn(&QueryLabels) -> bool) -> ([u64; BUCKETS_NS.len()], u64) {
        let mut b = [0u64; BUCKETS_NS.len()];
        let mut n = 0;
        for (l, q) in &self.queries {
            if keep(l) {
                for (s, x) in b.iter_mut().zip(q.buckets.iter()) {
                    *s += x;
                }
                n += q.count;
            }
        }
        (b, n)
    }

    /// Latency quantile `q` (0..=1) over all queries, estimated the way Prometheus'
    /// `histogram_quantile` does (linear inside the bucket). None without queries; the
    /// last finite bound if the quantile falls in +Inf.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        let (buckets, count) = self.histogram(|_| true);
        quantile(&buckets, count, q)
    }
}

/// Estimates quantile `q` from per-bucket counts (see [`Totals::latency_quantile`]).
pub fn quantile(buckets: &[u64; BUCKETS_NS.len()], count: u64, q: f64) -> Option<Duration> {
    if count == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * count as f64;
    let mut seen = 0u64;
    let mut lower = 0u64;
    for (&n, &upper) in buckets.iter().zip(BUCKETS_NS.iter()) {
        if n > 0 && (seen + n) as f64 >= rank {
            let into = (rank - seen as f64).max(0.0) / n as f64;
            let ns = lower as f64 + into * (upper - lower) as f64;
            return Some(Duration::from_nanos(ns as u64));
        }
        seen += n;
        lower = upper;
    }
    BUCKETS_NS.last().map(|&ns| Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Attempt;
    use std::time::UNIX_EPOCH;

    fn ev(zone: Option<&str>, cache: CacheStatus, rcode: Option<u16>, us: u64) -> QueryEvent {
        let mut e = QueryEvent::new(UNIX_EPOCH, "127.0.0.1:1".parse().unwrap(), Proto::Udp);
        e.zone = zone.map(Arc::from);
        e.cache = cache;
        e.rcode = rcode;
        e.duration = Duration::from_micros(us);
        e
    }

    #[test]
    fn counts_by_label_and_from_many_threads() {
        let s = Arc::new(Stats::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        s.record(&ev(Some("consul"), CacheStatus::Hit, Some(0), 20));
                        s.record(&ev(None, CacheStatus::Off, None, 5));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let t = s.totals();
        assert_eq!(t.query_count(), 8000);
        let by_zone = t.queries_by(|l| l.zone.clone());
        assert_eq!(by_zone.get("consul"), Some(&4000));
        assert_eq!(by_zone.get(""), Some(&4000));
        let by_rcode = t.queries_by(|l| l.rcode.clone());
        assert_eq!(by_rcode.get(&Some("NOERROR".into())), Some(&4000));
        assert_eq!(by_rcode.get(&None), Some(&4000));
        let (b, n) = t.histogram(|l| l.cache == "hit");
        assert_eq!(n, 4000);
        assert_eq!(b[1], 4000, "20 µs lands in the 25 µs bucket: {b:?}");
    }

    #[test]
    fn attempts_failovers_and_errors() {
        let s = Stats::new();
        let mut e = ev(Some("."), CacheStatus::Miss, Some(2), 2_000);
        let a: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:53".parse().unwrap();
        for (server, outcome) in [
            (a, Outcome::Timeout),
            (a, Outcome::Timeout),
            (b, Outcome::Servfail),
        ] {
            e.attempts.push(Attempt {
                server,
                proto: Proto::Udp,
                outcome,
                elapsed: Duration::from_millis(1),
                tls: None,
            });
        }
        e.error = Some("all servers failed");
        s.record(&e);
        s.record(&e);
        let t = s.totals();
        assert_eq!(t.failovers(), 2, "one server change per query");
        let by = t.attempts_by(|l| (l.upstream.clone(), l.outcome));
        assert_eq!(by.get(&("127.0.0.1:53".into(), "timeout")), Some(&4));
        assert_eq!(by.get(&("127.0.0.2:53".into(), "servfail")), Some(&2));
        assert_eq!(t.errors.get("all servers failed"), Some(&2));
    }

    #[test]
    fn label_sets_are_bounded() {
        let s = Stats::new();
        for i in 0..(MAX_CELLS + 500) {
            s.record(&ev(Some(&format!("z{i}")), CacheStatus::Miss, Some(0), 1));
        }
        let t = s.totals();
        assert_eq!(t.query_count(), (MAX_CELLS + 500) as u64);
        assert!(t.queries.len() <= MAX_CELLS + 1, "{}", t.queries.len());
        assert_eq!(t.queries_by(|l| l.zone.clone()).get(OTHER), Some(&500));
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let s = Stats::new();
        assert_eq!(s.totals().latency_quantile(0.5), None);
        for _ in 0..100 {
            s.record(&ev(None, CacheStatus::Off, None, 600)); // 500 µs .. 1 ms bucket
        }
        let p50 = s.totals().latency_quantile(0.5).unwrap();
        assert_eq!(p50, Duration::from_micros(750));
        s.record(&ev(None, CacheStatus::Off, None, 60_000_000)); // over 5 s
        assert_eq!(
            s.totals().latency_quantile(1.0).unwrap(),
            Duration::from_secs(5)
        );
    }
}
