//! Back-off memory of one upstream server. After a timeout or network error a server is
//! skipped (the others keep their order) for a back-off that doubles per consecutive
//! failure, 1 s up to 30 s; when it expires the next query probes it again.
//!
//! Each server owns its own state (see [`super::Server`]): no lock is shared between
//! servers, and nothing here does I/O or reads the clock (callers pass `now`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First back-off after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Clone, Copy)]
struct State {
    failures: u32,
    down_until: Option<Instant>,
}

/// One server's failure memory.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
}

impl Health {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        match self.state.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// True while the server is backed off.
    pub fn is_down(&self, now: Instant) -> bool {
        self.with(|h| h.down_until.is_some_and(|t| now < t))
    }

    /// Records a timeout or network error.
    pub fn failed(&self, now: Instant) {
        self.with(|h| {
            h.failures = h.failures.saturating_add(1);
            let shift = h.failures.saturating_sub(1).min(5);
            let backoff = (BACKOFF_MIN * (1u32 << shift)).min(BACKOFF_MAX);
            h.down_until = Some(now + backoff);
        });
    }

    /// Records an answer: the server is healthy again.
    pub fn answered(&self) {
        self.with(|h| *h = State::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_resets() {
        let h = Health::default();
        let t0 = Instant::now();
        assert!(!h.is_down(t0));
        h.failed(t0);
        assert!(h.is_down(t0 + Duration::from_millis(900)));
        assert!(!h.is_down(t0 + Duration::from_millis(1001)));
        h.failed(t0);
        assert!(h.is_down(t0 + Duration::from_millis(1900)));
        for _ in 0..10 {
            h.failed(t0);
        }
        assert!(h.is_down(t0 + Duration::from_secs(29)));
        assert!(!h.is_down(t0 + Duration::from_secs(31)));
        h.answered();
        assert!(!h.is_down(t0));
    }
}
