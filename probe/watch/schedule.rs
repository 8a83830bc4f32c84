//! When `watch` runs its cycles: the first at start, then on a grid of
//! `--interval` whose phase each process picks at random, so the pods of a
//! DaemonSet started together do not all probe (and load CoreDNS) in step.
//! A cycle still running when the next one is due is an overrun: the due
//! slot is skipped, never run beside it.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Schedule {
    /// Slot k (k >= 1) is at `origin + k * interval`.
    origin: Instant,
    interval: Duration,
}

/// What follows a finished cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    pub at: Instant,
    /// The cycle ran past the slot after its start.
    pub overran: bool,
}

impl Schedule {
    /// A grid for a process started at `start`, offset by `phase` (a
    /// fraction of the interval, in [0, 1)).
    pub fn new(start: Instant, interval: Duration, phase: f64) -> Schedule {
        Schedule {
            origin: crate::clock::later(start, interval.mul_f64(phase.clamp(0.0, 1.0))),
            interval,
        }
    }

    /// A grid with a phase of its own, at random.
    pub fn jittered(start: Instant, interval: Duration) -> Schedule {
        // The standard library's per-process random hash keys: enough
        // randomness to spread a fleet, without a generator of our own.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Schedule::new(start, interval, (random >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// The first slot strictly after `t`.
    fn slot_after(&self, t: Instant) -> Instant {
        let interval = self.interval.as_nanos().max(1);
        let since = t.saturating_duration_since(self.origin).as_nanos();
        let k = since / interval + 1;
        crate::clock::later(
            self.origin,
            Duration::from_nanos((k * interval).min(u64::MAX as u128) as u64),
        )
    }

    /// The next cycle after one that ran from `started` to `ended`.
    pub fn next(&self, started: Instant, ended: Instant) -> Next {
        let due = self.slot_after(started);
        if ended <= due {
            Next {
                at: due,
                overran: false,
            }
        } else {
            Next {
                at: self.slot_after(ended),
                overran: true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn cycles_follow_the_grid() {
        let t0 = Instant::now();
        let schedule = Schedule::new(t0, 10 * S, 0.25);
        // The first cycle (at start) is followed by the first slot.
        let next = schedule.next(t0, t0 + S);
        assert_eq!(
            next,
            Next {
                at: t0 + Duration::from_millis(12_500),
                overran: false
            }
        );
        // A cycle on its slot is followed by the next slot, however short.
        let next = schedule.next(next.at, next.at + Duration::from_millis(1));
        assert_eq!(next.at, t0 + Duration::from_millis(22_500));
        assert!(!next.overran);
    }

    #[test]
    fn an_overrun_skips_the_due_slot_and_never_stacks() {
        let t0 = Instant::now();
        let schedule = Schedule::new(t0, 10 * S, 0.0);
        let slot = t0 + 10 * S;
        // 25 s on a 10 s interval: slots 20 and 30 are missed; next is 40.
        let next = schedule.next(slot, slot + 25 * S);
        assert_eq!(
            next,
            Next {
                at: t0 + 40 * S,
                overran: true
            }
        );
        assert!(next.at > slot + 25 * S);
    }

    #[test]
    fn the_phase_stays_within_one_interval() {
        let t0 = Instant::now();
        for _ in 0..100 {
            let schedule = Schedule::jittered(t0, 10 * S);
            let first = schedule.next(t0, t0).at;
            assert!(first >= t0 + 10 * S && first < t0 + 20 * S);
        }
    }
}
