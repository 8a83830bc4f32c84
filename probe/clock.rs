//! Instant arithmetic that cannot panic. Durations from the command line are
//! bounded at parse time, but library callers and sums of them are not: a
//! deadline past what the clock can represent is as good as never.

use std::time::{Duration, Instant};

/// `at + wait`, or the latest instant the clock can represent after `at`.
pub fn later(at: Instant, wait: Duration) -> Instant {
    let mut wait = wait;
    loop {
        // Halving reaches zero, which always fits, in at most 64 steps.
        match at.checked_add(wait) {
            Some(t) => return t,
            None => wait /= 2,
        }
    }
}

/// `now + wait`, saturating as [`later`].
pub fn deadline(wait: Duration) -> Instant {
    later(Instant::now(), wait)
}

/// The same for tokio's clock (which pauses in tests).
pub fn tokio_deadline(wait: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(later(tokio::time::Instant::now().into_std(), wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_saturate_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(2)),
            now + Duration::from_secs(2)
        );
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(3600 * 24 * 365));
        assert!(deadline(Duration::from_secs_f64(1e19)) > now);
        let _ = tokio_deadline(Duration::MAX);
    }
}
