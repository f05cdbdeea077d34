//! The health of one target, shared by every policy generation that names it (kept across
//! reloads): active check results, passive outlier ejection from real traffic, load and a
//! peak-EWMA latency for balancing.
//!
//! The hot path (is it available, its load, its latency) reads atomics only; transitions
//! and the operator's view (state, reason, since when) go through a mutex.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Consecutive failed requests (connect error, timeout, 5xx, reset) that eject a target.
pub const EJECT_AFTER_FAILURES: u32 = 3;
/// The first ejection's length; each repeated ejection doubles it, up to `MAX_EJECTION`.
pub const BASE_EJECTION: Duration = Duration::from_secs(10);
pub const MAX_EJECTION: Duration = Duration::from_secs(300);
/// How fast the latency estimate forgets a peak (linkerd's default decay).
const EWMA_DECAY: Duration = Duration::from_secs(10);
/// A failed request counts as at least this slow for `least_latency`, so a target failing
/// fast (connection refused) does not attract traffic.
const FAILURE_LATENCY: Duration = Duration::from_secs(1);

/// Milliseconds on a monotonic clock (since the first call in this process).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What a try of a request to a target ended with, as health sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Connecting failed: nothing was sent.
    Connect,
    Timeout,
    /// The connection failed after the request was sent, before an answer head.
    Reset,
    /// A 5xx answer.
    Status(u16),
}

impl Outcome {
    pub fn kind(self) -> &'static str {
        match self {
            Outcome::Success => "ok",
            Outcome::Connect => "connect",
            Outcome::Timeout => "timeout",
            Outcome::Reset => "protocol",
            Outcome::Status(_) => "status_5xx",
        }
    }
}

/// Why a target is out of rotation, or was last put back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// `up`, `down` (failed active checks) or `ejected` (failures in traffic).
    pub state: &'static str,
    pub reason: String,
    pub since_unix_ms: u64,
}

#[derive(Default)]
struct Inner {
    consecutive_failures: u32,
    /// Ejections in a row (reset by `MAX_EJECTION` without one): the next one's length.
    ejections_in_row: u32,
    last_ejection_end_ms: u64,
    check_fails: u32,
    check_passes: u32,
    status: Option<Status>,
}

#[derive(Default)]
pub struct TargetHealth {
    pub in_flight: AtomicUsize,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    pub ejections: AtomicU64,
    pub last_failure_unix_ms: AtomicU64,
    /// Failed active checks put it here; passing ones take it back.
    down: AtomicBool,
    /// Monotonic ms until which it is ejected (0: not ejected).
    ejected_until_ms: AtomicU64,
    /// Peak-EWMA latency in ns (f64 bits); 0 until the first answer.
    ewma_ns: AtomicU64,
    ewma_at: Mutex<Option<Instant>>,
    inner: Mutex<Inner>,
}

impl TargetHealth {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Relaxed)
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until_ms.load(Relaxed)
    }

    /// Whether new requests may go to it.
    pub fn available(&self, now_ms: u64) -> bool {
        !self.is_down() && !self.is_ejected(now_ms)
    }

    /// When its ejection ends (for "the least bad one" when every target is ejected).
    pub fn ejected_until(&self) -> u64 {
        self.ejected_until_ms.load(Relaxed)
    }

    /// Failed tries in a row since the last success or ejection.
    pub fn consecutive_failures(&self) -> u32 {
        self.inner().consecutive_failures
    }

    pub fn latency_ns(&self) -> f64 {
        f64::from_bits(self.ewma_ns.load(Relaxed))
    }

    pub fn status(&self, now_ms: u64) -> Status {
        let inner = self.inner();
        let mut status =
            inner.status.clone().unwrap_or(Status { state: "up", reason: "no failure seen".into(), since_unix_ms: 0 });
        if status.state == "ejected" && !self.is_ejected(now_ms) {
            status.state = "up";
            status.reason = format!("ejection over ({})", status.reason);
        }
        status
    }

    fn set_status(inner: &mut Inner, state: &'static str, reason: String) {
        inner.status = Some(Status { state, reason, since_unix_ms: unix_ms() });
    }

    /// Record a try's outcome and latency. Returns true when it should be ejected now (the
    /// pool decides, as it knows how many of its targets are already out).
    pub fn record(&self, outcome: Outcome, elapsed: Duration) -> bool {
        let latency = if outcome == Outcome::Success { elapsed } else { elapsed.max(FAILURE_LATENCY) };
        self.observe_latency(latency);
        let mut inner = self.inner();
        if outcome == Outcome::Success {
            inner.consecutive_failures = 0;
            return false;
        }
        self.failures.fetch_add(1, Relaxed);
        self.last_failure_unix_ms.store(unix_ms(), Relaxed);
        inner.consecutive_failures += 1;
        inner.consecutive_failures >= EJECT_AFTER_FAILURES && !self.is_ejected(now_ms())
    }

    /// Eject it for a time that doubles with each ejection in a row.
    pub fn eject(&self, why: Outcome) {
        let now = now_ms();
        let mut inner = self.inner();
        if now.saturating_sub(inner.last_ejection_end_ms) > MAX_EJECTION.as_millis() as u64 {
            inner.ejections_in_row = 0;
        }
        inner.ejections_in_row += 1;
        let factor = 1u64 << (inner.ejections_in_row - 1).min(10);
        let length = (BASE_EJECTION.as_millis() as u64 * factor).min(MAX_EJECTION.as_millis() as u64);
        inner.last_ejection_end_ms = now + length;
        let reason = format!(
            "{} consecutive failures in traffic (last: {}), ejected for {}s",
            inner.consecutive_failures,
            why.kind(),
            length / 1000
        );
        inner.consecutive_failures = 0;
        self.ejected_until_ms.store(now + length, Relaxed);
        self.ejections.fetch_add(1, Relaxed);
        Self::set_status(&mut inner, "ejected", reason);
    }

    /// An active check's result; `healthy`/`unhealthy` are the checks in a row that bring it
    /// back or take it out. Returns the new state when it changed.
    pub fn checked(&self, passed: bool, detail: &str, healthy: u32, unhealthy: u32) -> Option<bool> {
        let mut inner = self.inner();
        if passed {
            inner.check_fails = 0;
            inner.check_passes += 1;
            // A passing check also ends a passive ejection: the target answers again.
            if self.is_ejected(now_ms()) && inner.check_passes >= healthy {
                self.ejected_until_ms.store(0, Relaxed);
                inner.consecutive_failures = 0;
                Self::set_status(&mut inner, "up", format!("health check passed ({detail}) after an ejection"));
            }
            if self.is_down() && inner.check_passes >= healthy {
                self.down.store(false, Relaxed);
                Self::set_status(&mut inner, "up", format!("{healthy} health checks in a row passed ({detail})"));
                return Some(true);
            }
        } else {
            inner.check_passes = 0;
            inner.check_fails += 1;
            if !self.is_down() && inner.check_fails >= unhealthy {
                self.down.store(true, Relaxed);
                Self::set_status(&mut inner, "down", format!("health check failed: {detail}"));
                return Some(false);
            }
        }
        None
    }

    /// Peak EWMA: a slower answer is taken at once, a faster one decays in.
    fn observe_latency(&self, rtt: Duration) {
        let rtt = rtt.as_nanos() as f64;
        let mut at = self.ewma_at.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let old = self.latency_ns();
        let new = match *at {
            None => rtt,
            Some(_) if rtt > old => rtt,
            Some(prev) => {
                let w = (-(now - prev).as_secs_f64() / EWMA_DECAY.as_secs_f64()).exp();
                old * w + rtt * (1.0 - w)
            }
        };
        *at = Some(now);
        self.ewma_ns.store(new.to_bits(), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_failures_ask_for_an_ejection_that_grows() {
        let h = TargetHealth::default();
        assert!(!h.record(Outcome::Connect, Duration::ZERO));
        assert!(!h.record(Outcome::Status(502), Duration::ZERO));
        assert!(h.record(Outcome::Timeout, Duration::ZERO));
        h.eject(Outcome::Timeout);
        let first = h.ejected_until() - now_ms();
        assert!(!h.available(now_ms()));
        h.ejected_until_ms.store(0, Relaxed);
        for _ in 0..EJECT_AFTER_FAILURES {
            h.record(Outcome::Reset, Duration::ZERO);
        }
        h.eject(Outcome::Reset);
        let second = h.ejected_until() - now_ms();
        assert!(second > first + 5_000, "{first} {second}");
    }

    #[test]
    fn a_success_resets_the_count() {
        let h = TargetHealth::default();
        h.record(Outcome::Connect, Duration::ZERO);
        h.record(Outcome::Connect, Duration::ZERO);
        h.record(Outcome::Success, Duration::ZERO);
        assert!(!h.record(Outcome::Connect, Duration::ZERO));
    }

    #[test]
    fn active_checks_take_a_target_out_and_back() {
        let h = TargetHealth::default();
        assert_eq!(h.checked(false, "connect", 2, 2), None);
        assert_eq!(h.checked(false, "connect", 2, 2), Some(false));
        assert!(!h.available(now_ms()));
        assert_eq!(h.checked(true, "200", 2, 2), None);
        assert_eq!(h.checked(false, "500", 2, 2), None);
        assert_eq!(h.checked(true, "200", 2, 2), None);
        assert_eq!(h.checked(true, "200", 2, 2), Some(true));
        assert!(h.available(now_ms()));
    }

    #[test]
    fn latency_takes_peaks_at_once() {
        let h = TargetHealth::default();
        h.observe_latency(Duration::from_millis(1));
        h.observe_latency(Duration::from_millis(50));
        assert!((h.latency_ns() - 50e6).abs() < 1.0);
        h.observe_latency(Duration::from_millis(1));
        assert!(h.latency_ns() > 40e6, "a fast answer decays in slowly");
    }
}
