//! What one upstream server's history says about asking it now: back-off, the probe that
//! ends a back-off, its round-trip time, and whether it takes EDNS.
//!
//! - **Back-off.** After a timeout or network error a server is skipped (the others keep
//!   their order) for a back-off that doubles per counted failure, 1 s up to 30 s. One
//!   failure is counted per back-off window: queries that were already in flight when the
//!   window began, or that were sent only because every server was down, do not escalate
//!   it, so a 3 s outage costs a few seconds of detour, not the 30 s cap.
//! - **One probe at a time.** When a back-off ends, the first query to come along probes
//!   the server ([`Turn::Probe`]); the others keep skipping it until the probe answers
//!   (healthy again) or fails (the next, longer window).
//! - **Round-trip time** ([`Rtt`]): smoothed as TCP does (RFC 6298), giving the retransmit
//!   timeout for lost datagrams.
//! - **EDNS.** A server that rejected our EDNS (FORMERR/NOTIMP, then answered with less) is
//!   asked at the level that worked ([`EdnsLevel`]: OPT without our options, or no OPT)
//!   for [`EDNS_LESS_FOR`], then tried with full EDNS again.
//!
//! Each server owns its own state (see [`super::Server`]): no lock is shared between
//! servers, and a healthy server's hot path is a few atomic loads. Nothing here does I/O or
//! reads the clock (callers pass `now`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// First back-off after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a server that rejected our EDNS is asked with less.
pub const EDNS_LESS_FOR: Duration = Duration::from_secs(15 * 60);
/// Shortest retransmit timeout, however fast the server (unbound uses 50 ms too): below
/// this, scheduling noise on a busy host would look like loss.
pub const RTO_FLOOR: Duration = Duration::from_millis(50);

/// How a query may use a server right now (see [`Health::turn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Healthy: ask it.
    Up,
    /// Its back-off is over and this query is the one probe: ask it, and report.
    Probe,
    /// Backed off, but asked anyway (every server of the zone is down, or a second pass):
    /// an answer heals it, a failure does not lengthen its back-off.
    Forced,
}

/// How much EDNS a server is asked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdnsLevel {
    /// Our OPT with our options (the loop marker).
    Full,
    /// Our OPT without options.
    Bare,
    /// No OPT: plain DNS.
    Off,
}

impl EdnsLevel {
    /// The next step down, if any.
    pub fn less(self) -> Option<EdnsLevel> {
        match self {
            EdnsLevel::Full => Some(EdnsLevel::Bare),
            EdnsLevel::Bare => Some(EdnsLevel::Off),
            EdnsLevel::Off => None,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    /// Counted (one per window) consecutive failures.
    failures: u32,
    /// End of the current back-off window; `None` when healthy.
    down_until: Option<Instant>,
    /// A probe is out.
    probing: bool,
}

/// One server's history.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
    /// False while healthy, so the hot path skips the lock.
    troubled: AtomicBool,
    /// Until when the server is asked with less EDNS (see [`ticks`]; 0 = full EDNS), and
    /// how much less (`edns_off`: no OPT; otherwise OPT without options).
    edns_less_until: AtomicU64,
    edns_off: AtomicBool,
    /// Round-trip time.
    pub rtt: Rtt,
}

impl Health {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        match self.state.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// True while the server is backed off (its window has not ended).
    pub fn is_down(&self, now: Instant) -> bool {
        self.troubled.load(Ordering::Relaxed)
            && self.with(|h| h.down_until.is_some_and(|t| now < t))
    }

    /// Whether a query may ask the server now: `Up` when healthy; `None` (skip it) while
    /// backed off or while another query probes it; `Probe` for the one query that asks
    /// first after the back-off ended. A `Probe` must be followed by [`Health::answered`],
    /// [`Health::failed`] or [`Health::abandon`].
    pub fn turn(&self, now: Instant) -> Option<Turn> {
        if !self.troubled.load(Ordering::Relaxed) {
            return Some(Turn::Up);
        }
        self.with(|h| match h.down_until {
            None => Some(Turn::Up),
            Some(t) if now < t => None,
            Some(_) if h.probing => None,
            Some(_) => {
                h.probing = true;
                Some(Turn::Probe)
            }
        })
    }

    /// Records a timeout or network error of an exchange asked under `turn`. Only a probe,
    /// or the first failure of a healthy server, is counted: the in-flight queries that
    /// fail after it belong to the same window.
    pub fn failed(&self, turn: Turn, now: Instant) {
        self.with(|h| {
            let counted = match turn {
                Turn::Probe => true,
                Turn::Up => h.down_until.is_none(),
                Turn::Forced => false,
            };
            if turn == Turn::Probe {
                h.probing = false;
            }
            if !counted {
                return;
            }
            h.failures = h.failures.saturating_add(1);
            let shift = h.failures.saturating_sub(1).min(5);
            let backoff = (BACKOFF_MIN * (1u32 << shift)).min(BACKOFF_MAX);
            h.down_until = Some(now + backoff);
            self.troubled.store(true, Ordering::Relaxed);
        });
    }

    /// Records an answer (any rcode): the server is healthy again.
    pub fn answered(&self) {
        if self.troubled.load(Ordering::Relaxed) {
            self.with(|h| {
                *h = State::default();
                self.troubled.store(false, Ordering::Relaxed);
            });
        }
    }

    /// A probe that ended without a verdict (its query was cancelled or ran out of time
    /// before asking): the next query may probe.
    pub fn abandon(&self) {
        self.with(|h| h.probing = false);
    }

    /// Counted consecutive failures (for status).
    pub fn failures(&self) -> u32 {
        self.with(|h| h.failures)
    }

    /// End of the current back-off window, `None` when healthy (for status).
    pub fn down_until(&self) -> Option<Instant> {
        self.with(|h| h.down_until)
    }

    /// How much EDNS to ask the server with now.
    pub fn edns_level(&self, now: Instant) -> EdnsLevel {
        let until = self.edns_less_until.load(Ordering::Relaxed);
        if until == 0 || ticks(now) >= until {
            EdnsLevel::Full
        } else if self.edns_off.load(Ordering::Relaxed) {
            EdnsLevel::Off
        } else {
            EdnsLevel::Bare
        }
    }

    /// Remembers that the server needs `level` (for [`EDNS_LESS_FOR`]).
    pub fn set_edns_level(&self, level: EdnsLevel, now: Instant) {
        self.edns_off
            .store(level == EdnsLevel::Off, Ordering::Relaxed);
        let until = if level == EdnsLevel::Full {
            0
        } else {
            ticks(now + EDNS_LESS_FOR)
        };
        self.edns_less_until.store(until, Ordering::Relaxed);
    }
}

/// A process-wide time origin for instants kept in atomics.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// `t` as nanoseconds after [`ORIGIN`], plus one (0 means "unset").
fn ticks(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(*ORIGIN).as_nanos())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// A smoothed round-trip time and its variation (RFC 6298 §2), in microseconds, packed in
/// one atomic: updates from concurrent queries may overwrite each other, which only loses
/// a sample.
#[derive(Debug, Default)]
pub struct Rtt {
    /// srtt << 32 | rttvar; 0 = no sample yet.
    packed: AtomicU64,
}

impl Rtt {
    /// Adds one measured round trip.
    pub fn sample(&self, rtt: Duration) {
        let r = u64::try_from(rtt.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, u64::from(u32::MAX));
        let old = self.packed.load(Ordering::Relaxed);
        let (srtt, var) = if old == 0 {
            (r, r / 2)
        } else {
            let (s, v) = (old >> 32, old & 0xffff_ffff);
            ((7 * s + r) / 8, (3 * v + s.abs_diff(r)) / 4)
        };
        let srtt = srtt.clamp(1, u64::from(u32::MAX));
        let var = var.min(u64::from(u32::MAX));
        self.packed.store(srtt << 32 | var, Ordering::Relaxed);
    }

    /// The smoothed round-trip time, if measured.
    pub fn srtt(&self) -> Option<Duration> {
        let p = self.packed.load(Ordering::Relaxed);
        (p != 0).then(|| Duration::from_micros(p >> 32))
    }

    /// How long to wait for a reply before sending the query again: srtt + 4·rttvar,
    /// at least [`RTO_FLOOR`], at most `ceiling` (the zone's `timeout_ms`). A server never
    /// measured gets `ceiling`: without a round-trip time there is nothing to base an
    /// earlier retransmission on, and a dead server is not sent a burst of copies.
    pub fn rto(&self, ceiling: Duration) -> Duration {
        let p = self.packed.load(Ordering::Relaxed);
        if p == 0 {
            return ceiling;
        }
        let us = (p >> 32).saturating_add((p & 0xffff_ffff).saturating_mul(4));
        Duration::from_micros(us).clamp(RTO_FLOOR.min(ceiling), ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_per_probe_and_resets() {
        let h = Health::default();
        let t0 = Instant::now();
        assert_eq!(h.turn(t0), Some(Turn::Up));
        h.failed(Turn::Up, t0);
        assert!(h.is_down(t0 + 900 * MS));
        assert_eq!(h.turn(t0 + 900 * MS), None);
        assert!(!h.is_down(t0 + 1001 * MS));
        let t1 = t0 + 1001 * MS;
        assert_eq!(h.turn(t1), Some(Turn::Probe));
        h.failed(Turn::Probe, t1);
        assert!(h.is_down(t1 + 1900 * MS), "second window is 2 s");
        assert!(!h.is_down(t1 + 2001 * MS));
        let mut t = t1;
        for _ in 0..10 {
            t += BACKOFF_MAX;
            assert_eq!(h.turn(t), Some(Turn::Probe));
            h.failed(Turn::Probe, t);
        }
        assert!(h.is_down(t + 29 * 1000 * MS));
        assert!(!h.is_down(t + 31 * 1000 * MS));
        h.answered();
        assert!(!h.is_down(t));
        assert_eq!(h.turn(t), Some(Turn::Up));
        assert_eq!(h.failures(), 0);
    }

    #[test]
    fn in_flight_failures_count_once_per_window() {
        let h = Health::default();
        let t0 = Instant::now();
        // Twenty queries were in flight (all asked while healthy) when it went quiet.
        for i in 0..20 {
            h.failed(Turn::Up, t0 + i * MS);
        }
        assert_eq!(h.failures(), 1);
        assert!(!h.is_down(t0 + 1100 * MS), "still the first 1 s window");
        // Forced tries (every server down) do not escalate either.
        h.failed(Turn::Forced, t0 + 500 * MS);
        assert_eq!(h.failures(), 1);
    }

    #[test]
    fn one_probe_at_a_time() {
        let h = Health::default();
        let t0 = Instant::now();
        h.failed(Turn::Up, t0);
        let t1 = t0 + 1100 * MS;
        assert_eq!(h.turn(t1), Some(Turn::Probe));
        for _ in 0..5 {
            assert_eq!(
                h.turn(t1),
                None,
                "the others skip it while the probe is out"
            );
        }
        h.abandon();
        assert_eq!(
            h.turn(t1),
            Some(Turn::Probe),
            "an abandoned probe is handed on"
        );
        h.answered();
        assert_eq!(h.turn(t1), Some(Turn::Up));
    }

    #[test]
    fn edns_level_is_remembered_for_a_while() {
        let h = Health::default();
        let t0 = Instant::now();
        assert_eq!(h.edns_level(t0), EdnsLevel::Full);
        h.set_edns_level(EdnsLevel::Bare, t0);
        assert_eq!(h.edns_level(t0 + MS), EdnsLevel::Bare);
        h.set_edns_level(EdnsLevel::Off, t0);
        assert_eq!(h.edns_level(t0 + EDNS_LESS_FOR - MS), EdnsLevel::Off);
        assert_eq!(h.edns_level(t0 + EDNS_LESS_FOR + MS), EdnsLevel::Full);
        assert_eq!(EdnsLevel::Full.less(), Some(EdnsLevel::Bare));
        assert_eq!(EdnsLevel::Off.less(), None);
    }

    #[test]
    fn rto_follows_rtt_within_floor_and_ceiling() {
        let r = Rtt::default();
        let ceiling = 1000 * MS;
        assert_eq!(r.rto(ceiling), ceiling, "unmeasured: the ceiling");
        r.sample(200 * MS);
        assert_eq!(r.srtt(), Some(200 * MS));
        assert_eq!(r.rto(ceiling), 600 * MS, "200 + 4 x 100");
        for _ in 0..50 {
            r.sample(MS);
        }
        assert_eq!(r.rto(ceiling), RTO_FLOOR, "a fast server gets the floor");
        for _ in 0..50 {
            r.sample(5000 * MS);
        }
        assert_eq!(r.rto(ceiling), ceiling, "never beyond timeout_ms");
        assert_eq!(r.rto(20 * MS), 20 * MS, "a ceiling below the floor wins");
    }
}
