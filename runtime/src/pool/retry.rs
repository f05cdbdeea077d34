//! When a failed try is tried again on another target, and the budget that keeps retries
//! from multiplying an outage.

use std::sync::Mutex;
use std::time::Instant;

use gw_engine::graph::RetryInfo;
use http::Method;

use crate::pool::health::Outcome;

/// Each request adds this much to its upstream's retry budget (retries ≤ 20% of requests)...
const BUDGET_RATIO: f64 = 0.2;
/// ... and the budget refills this many retries a second on its own, so a quiet pool can
/// still fail over.
const BUDGET_PER_SECOND: f64 = 3.0;
/// What an idle pool can save up.
const BUDGET_MAX: f64 = 20.0;

/// Methods RFC 9110 calls idempotent: the same request twice has the effect of once.
pub fn idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Whether a try that ended with `outcome` may be tried again on another target, by the
/// policy's `retry ... on` conditions and the request's safety to replay:
///
/// - a connect error (nothing was sent) is retried for any method;
/// - a timeout, a connection failing after the request was sent, or a listed 5xx status is
///   retried only when the request is safe to replay: an idempotent method, or a route that
///   declares its requests `idempotent` (chat completions are: nothing happens twice).
///
/// A failed connection after sending counts as `connect_error` for the conditions.
pub fn retryable(policy: &RetryInfo, outcome: Outcome, replay_safe: bool) -> bool {
    match outcome {
        Outcome::Success => false,
        Outcome::Connect => policy.on_connect_error,
        Outcome::Reset => policy.on_connect_error && replay_safe,
        Outcome::Timeout => policy.on_timeout && replay_safe,
        Outcome::Status(s) => policy.statuses.contains(&s) && replay_safe,
    }
}

/// A token bucket shared by an upstream's requests: every request deposits
/// `BUDGET_RATIO`, time deposits `BUDGET_PER_SECOND`, every retry withdraws one.
pub struct Budget {
    state: Mutex<(f64, Instant)>,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget { state: Mutex::new((BUDGET_PER_SECOND, Instant::now())) }
    }
}

impl Budget {
    fn refill(state: &mut (f64, Instant), add: f64) {
        let now = Instant::now();
        let elapsed = now.duration_since(state.1).as_secs_f64();
        state.0 = (state.0 + add + elapsed * BUDGET_PER_SECOND).min(BUDGET_MAX);
        state.1 = now;
    }

    /// A request started: it earns the pool a fifth of a retry.
    pub fn deposit(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Self::refill(&mut s, BUDGET_RATIO);
    }

    /// Take a retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Self::refill(&mut s, 0.0);
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryInfo {
        RetryInfo { attempts: 2, on_connect_error: true, on_timeout: true, statuses: vec![502, 503] }
    }

    #[test]
    fn a_post_is_retried_only_when_nothing_was_sent_unless_declared_safe() {
        let p = policy();
        let post = idempotent(&Method::POST);
        assert!(retryable(&p, Outcome::Connect, post));
        assert!(!retryable(&p, Outcome::Timeout, post));
        assert!(!retryable(&p, Outcome::Status(502), post));
        assert!(!retryable(&p, Outcome::Reset, post));
        assert!(retryable(&p, Outcome::Status(503), true));
        assert!(!retryable(&p, Outcome::Status(500), true), "500 is not listed");
        let get = idempotent(&Method::GET);
        assert!(retryable(&p, Outcome::Timeout, get));
    }

    #[test]
    fn the_budget_caps_retries_at_a_fifth_of_requests_plus_a_few() {
        let b = Budget::default();
        let (mut granted, requests) = (0, 10_000);
        for _ in 0..requests {
            b.deposit();
            if b.withdraw() {
                granted += 1;
            }
        }
        let share = granted as f64 / requests as f64;
        println!("retry budget: {granted} retries granted for {requests} failing requests ({share:.3})");
        assert!(share <= 0.21, "{share}");
        assert!(granted >= 1990, "{granted}");
    }
}
