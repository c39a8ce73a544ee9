//! Diagnostics that cannot flood: [`Throttle`] lets a repeated warning through at most once
//! per interval and counts what it held back, so the next line can say how many were
//! suppressed. Pure bookkeeping (the caller passes `now`); it writes nothing itself.

use std::sync::Mutex;
use std::time::{Duration, Instant};

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
