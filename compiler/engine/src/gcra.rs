//! GCRA (the generic cell rate algorithm), the rate-limit arithmetic shared by `gw-check`'s
//! test runner and the runtime's limit stores. Plain integers and an explicit clock: no tokio,
//! no locks, so both sides compute the same answer.
//!
//! A limit of `count` per `window` with burst `b` admits a request at time `now` when the
//! theoretical arrival time `tat` is at most `now + (b - 1) * interval`; on admission `tat`
//! moves to `max(tat, now) + interval`, where `interval = window / count`.

/// Parameters of one rate limit, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Time between two requests at the sustained rate.
    pub interval_ns: u64,
    /// How far ahead of now `tat` may run: (burst - 1) * interval.
    pub tolerance_ns: u64,
}

/// The answer for one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The new theoretical arrival time to store (unchanged when refused).
    pub tat: u64,
    /// Requests that would still be admitted right now after this one.
    pub remaining: u64,
    /// When the next request would be admitted, if this one was refused (ns from now).
    pub retry_after_ns: u64,
    /// Time until the bucket is full again (ns from now).
    pub reset_after_ns: u64,
}

impl Gcra {
    /// `count` per `window_ns`, allowing `burst` at once (defaults to `count` when None:
    /// a limit of 10/s admits 10 at once, then one every 100ms).
    pub fn new(count: u64, window_ns: u64, burst: Option<u64>) -> Gcra {
        let count = count.max(1);
        let interval_ns = (window_ns / count).max(1);
        let burst = burst.unwrap_or(count).max(1);
        Gcra { interval_ns, tolerance_ns: interval_ns.saturating_mul(burst - 1) }
    }

    /// Check a request costing `cost` units at `now` against the stored `tat` (0 if none).
    pub fn check(&self, tat: u64, now: u64, cost: u64) -> Verdict {
        let base = tat.max(now);
        let increment = self.interval_ns.saturating_mul(cost.max(1));
        let new_tat = base.saturating_add(increment);
        let allow_at = new_tat.saturating_sub(self.tolerance_ns.saturating_add(self.interval_ns));
        if allow_at > now {
            return Verdict {
                allowed: false,
                tat,
                remaining: 0,
                retry_after_ns: allow_at - now,
                reset_after_ns: tat.saturating_sub(now),
            };
        }
        let capacity = self.tolerance_ns.saturating_add(self.interval_ns);
        let used = new_tat - now;
        Verdict {
            allowed: true,
            tat: new_tat,
            remaining: capacity.saturating_sub(used) / self.interval_ns,
            retry_after_ns: 0,
            reset_after_ns: used,
        }
    }

    /// The most requests admitted at once.
    pub fn burst(&self) -> u64 {
        self.tolerance_ns / self.interval_ns + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn ten_per_second_admits_a_burst_of_ten_then_one_per_tenth() {
        let g = Gcra::new(10, S, None);
        let mut tat = 0;
        for i in 0..10 {
            let v = g.check(tat, 0, 1);
            assert!(v.allowed, "request {i}");
            assert_eq!(v.remaining, 9 - i);
            tat = v.tat;
        }
        let refused = g.check(tat, 0, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ns, S / 10);
        assert!(g.check(tat, S / 10, 1).allowed);
    }

    #[test]
    fn burst_overrides_count() {
        let g = Gcra::new(5, S, Some(1));
        let v = g.check(0, 0, 1);
        assert!(v.allowed);
        assert!(!g.check(v.tat, 0, 1).allowed);
        assert!(g.check(v.tat, S / 5, 1).allowed);
        assert_eq!(g.burst(), 1);
    }

    #[test]
    fn idle_time_refills_but_never_beyond_burst() {
        let g = Gcra::new(2, S, Some(2));
        let mut tat = 0;
        for _ in 0..2 {
            tat = g.check(tat, 0, 1).tat;
        }
        let now = 100 * S;
        let mut admitted = 0;
        for _ in 0..5 {
            let v = g.check(tat, now, 1);
            if v.allowed {
                admitted += 1;
                tat = v.tat;
            }
        }
        assert_eq!(admitted, 2);
    }

    #[test]
    fn cost_larger_than_capacity_is_refused() {
        let g = Gcra::new(10, S, None);
        assert!(!g.check(0, 0, 11).allowed);
        assert!(g.check(0, 0, 10).allowed);
    }
}
