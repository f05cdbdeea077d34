//! Where limit counters live: in this process (`state local`), or in Redis (`state redis`)
//! with the policy's fallback when Redis fails. The proxy talks only to `Limiter`.
//!
//! With Redis, a failed or timed-out check follows `on_error`: `local` checks this process's
//! store instead (each gw then enforces the limit on its own, so N processes admit up to N
//! times the limit until Redis answers again), `allow` admits, `deny` refuses (results marked
//! `fallback`: the proxy answers 503 `limit_store_unavailable` with `Retry-After: 1`, the store
//! being at fault, not the client). Shadow limits stay shadow: a request whose limits are all
//! shadow is admitted under `deny` too. An outage is logged once when it starts and once when it ends;
//! while it lasts, requests fall back at once and one probe request at a time (at most one per
//! `PROBE_EVERY`) tries Redis, so recovery is automatic and costs at most one timeout per
//! probe.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gw_engine::gcra::Gcra;
use gw_engine::lang::OnError;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::limits::{LimitCheck, LimitResult, LocalLimiter};
use crate::redis_store::{RedisStore, StoreError};

/// Which store charged a request: its slots are released and its tokens reconciled there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    Local,
    Redis,
    /// Nothing was charged (no limits, or a fallback of `allow`/`deny`).
    None,
}

/// While Redis is down, how often one request tries it again.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// `Retry-After` of a request refused by the `deny` fallback.
pub const DENY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Tries of a slot release that failed (a slot not given back stays taken until its lease
/// expires).
const RELEASE_TRIES: u32 = 3;

/// The Redis store's metrics. `RedisMetrics::new()` makes them unregistered; register them
/// once per process with `register`.
#[derive(Clone)]
pub struct RedisMetrics {
    /// `gw_redis_fallbacks_total{mode}`: checks answered by the `on_error` fallback
    /// (`local`, `allow` or `deny`).
    pub fallbacks: IntCounterVec,
    /// `gw_redis_errors_total{op, kind}`: failed Redis calls; `op` is `check`, `adjust`,
    /// `release` or `refresh`, `kind` is `timeout`, `unavailable`, `redis` or `protocol`.
    pub errors: IntCounterVec,
    /// `gw_redis_duration_seconds{op}`: time of each Redis call, failures included.
    pub duration: HistogramVec,
}

const REDIS_BUCKETS: &[f64] =
    &[0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

impl RedisMetrics {
    pub fn new() -> RedisMetrics {
        RedisMetrics {
            fallbacks: IntCounterVec::new(
                Opts::new("gw_redis_fallbacks_total", "Limit checks answered by the on_error fallback, by mode"),
                &["mode"],
            )
            .expect("a static metric definition"),
            errors: IntCounterVec::new(
                Opts::new("gw_redis_errors_total", "Failed Redis limit store calls, by operation and kind"),
                &["op", "kind"],
            )
            .expect("a static metric definition"),
            duration: HistogramVec::new(
                HistogramOpts::new("gw_redis_duration_seconds", "Time of Redis limit store calls, by operation")
                    .buckets(REDIS_BUCKETS.to_vec()),
                &["op"],
            )
            .expect("a static metric definition"),
        }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.fallbacks.clone()))?;
        registry.register(Box::new(self.errors.clone()))?;
        registry.register(Box::new(self.duration.clone()))?;
        Ok(())
    }
}

impl Default for RedisMetrics {
    fn default() -> Self {
        RedisMetrics::new()
    }
}

struct Backend {
    store: RedisStore,
    on_error: OnError,
    metrics: RedisMetrics,
    down: AtomicBool,
    /// While down: when the next probe may go to Redis (ms since `epoch`).
    next_probe_ms: AtomicU64,
    epoch: Instant,
    /// When the outage in progress began, and the checks that fell back since (for the
    /// recovery log line; the lock is taken only when an outage begins or ends).
    outage_since: Mutex<Option<Instant>>,
    outage_fallbacks: AtomicU64,
}

impl Backend {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn mode(&self) -> &'static str {
        match self.on_error {
            OnError::Local => "local",
            OnError::Allow => "allow",
            OnError::Deny => "deny",
        }
    }

    /// Whether this check skips Redis: it is down and this is not the moment of a probe.
    fn skip(&self) -> bool {
        if !self.down.load(Ordering::Acquire) {
            return false;
        }
        let now = self.now_ms();
        let next = self.next_probe_ms.load(Ordering::Acquire);
        if now < next {
            return true;
        }
        let probe_ms = u64::try_from(PROBE_EVERY.as_millis()).unwrap_or(250);
        // Exactly one caller wins the probe.
        self.next_probe_ms.compare_exchange(next, now + probe_ms, Ordering::AcqRel, Ordering::Acquire).is_err()
    }

    fn observe(&self, op: &str, started: Instant) {
        self.metrics.duration.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
    }

    fn count_error(&self, op: &str, e: &StoreError) {
        self.metrics.errors.with_label_values(&[op, e.kind()]).inc();
    }

    /// A check failed: the outage starts now if it had not.
    fn check_failed(&self, e: &StoreError) {
        self.count_error("check", e);
        let probe_ms = u64::try_from(PROBE_EVERY.as_millis()).unwrap_or(250);
        self.next_probe_ms.store(self.now_ms() + probe_ms, Ordering::Release);
        if !self.down.swap(true, Ordering::AcqRel) {
            *self.outage_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            self.outage_fallbacks.store(0, Ordering::Relaxed);
            tracing::warn!(
                error = %e,
                on_error = self.mode(),
                "Redis limit store failed: limits follow on_error {} until it answers again",
                self.mode()
            );
        }
    }

    /// A check succeeded: an outage, if any, is over.
    fn check_succeeded(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            let since = self.outage_since.lock().unwrap_or_else(|p| p.into_inner()).take();
            let secs = since.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
            let fallbacks = self.outage_fallbacks.swap(0, Ordering::Relaxed);
            tracing::info!(
                down_seconds = secs,
                fallbacks,
                "Redis limit store answers again after {secs:.1}s ({fallbacks} checks fell back)"
            );
        }
    }

    fn count_fallback(&self) {
        self.metrics.fallbacks.with_label_values(&[self.mode()]).inc();
        self.outage_fallbacks.fetch_add(1, Ordering::Relaxed);
    }
}

/// A Redis call made after the request's answer (from a drop hook, so in a task of its own).
enum Job {
    Adjust { id: String, key: String, gcra: Gcra, delta: i64 },
    Release { id: String, key: String, lease: String },
}

#[derive(Default)]
pub struct Limiter {
    pub local: LocalLimiter,
    redis: Option<Backend>,
}

impl Limiter {
    /// A limiter whose counters live in Redis at `url`, every call bounded by `timeout`, with
    /// `on_error` applying while Redis fails. Fails only for an invalid URL (the message never
    /// repeats the URL, which may hold a password); a Redis that is down now is connected to
    /// in the background.
    pub fn with_redis(
        url: &str,
        on_error: OnError,
        timeout: Duration,
        metrics: RedisMetrics,
    ) -> Result<Limiter, String> {
        let store = RedisStore::new(url, timeout).map_err(|e| e.to_string())?;
        Ok(Limiter::with_redis_store(store, on_error, metrics))
    }

    /// `with_redis` for a store already made (e.g. with its own lease TTL).
    pub fn with_redis_store(store: RedisStore, on_error: OnError, metrics: RedisMetrics) -> Limiter {
        Limiter {
            local: LocalLimiter::default(),
            redis: Some(Backend {
                store,
                on_error,
                metrics,
                down: AtomicBool::new(false),
                next_probe_ms: AtomicU64::new(0),
                epoch: Instant::now(),
                outage_since: Mutex::new(None),
                outage_fallbacks: AtomicU64::new(0),
            }),
        }
    }

    /// The Redis store, if the limiter has one.
    pub fn redis(&self) -> Option<&RedisStore> {
        self.redis.as_ref().map(|b| &b.store)
    }

    /// The policy's `on_error`, if the limiter uses Redis.
    pub fn on_error(&self) -> Option<OnError> {
        self.redis.as_ref().map(|b| b.on_error)
    }

    /// Whether Redis is failing now (the fallback applies).
    pub fn redis_down(&self) -> bool {
        self.redis.as_ref().is_some_and(|b| b.down.load(Ordering::Acquire))
    }

    /// Check (and, when admitted, charge) all of a request's limits.
    pub async fn check(&self, checks: &[LimitCheck]) -> (Vec<LimitResult>, Ticket) {
        if checks.is_empty() {
            return (vec![], Ticket::None);
        }
        let Some(redis) = &self.redis else {
            return (self.local.check(checks), Ticket::Local);
        };
        if !redis.skip() {
            let started = Instant::now();
            let answer = redis.store.check(checks).await;
            redis.observe("check", started);
            match answer {
                Ok(results) => {
                    redis.check_succeeded();
                    return (results, Ticket::Redis);
                }
                Err(e) => redis.check_failed(&e),
            }
        }
        redis.count_fallback();
        match redis.on_error {
            OnError::Local => (self.local.check(checks), Ticket::Local),
            OnError::Allow => (decided(checks, true), Ticket::None),
            OnError::Deny => (decided(checks, false), Ticket::None),
        }
    }

    /// Reconcile a token reservation where it was made.
    pub fn adjust(self: &Arc<Self>, ticket: Ticket, id: &str, key: &str, gcra: Gcra, delta: i64) {
        if delta == 0 {
            return;
        }
        match ticket {
            Ticket::Local => self.local.adjust(id, key, gcra, delta),
            Ticket::Redis => self.spawn(Job::Adjust { id: id.to_string(), key: key.to_string(), gcra, delta }),
            Ticket::None => {}
        }
    }

    /// Give back a concurrency slot where it was taken. Callable from a drop hook.
    pub fn release(self: &Arc<Self>, ticket: Ticket, id: &str, key: &str, lease: &str) {
        match ticket {
            Ticket::Local => self.local.release(id, key),
            Ticket::Redis => {
                self.spawn(Job::Release { id: id.to_string(), key: key.to_string(), lease: lease.to_string() })
            }
            Ticket::None => {}
        }
    }

    /// Run a Redis job in a task of its own: callers may be synchronous (drop hooks).
    fn spawn(self: &Arc<Self>, job: Job) {
        let op = match job {
            Job::Adjust { .. } => "adjust",
            Job::Release { .. } => "release",
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(op, "no tokio runtime here: Redis {op} skipped");
            return;
        };
        let limiter = self.clone();
        handle.spawn(async move {
            let Some(redis) = limiter.redis.as_ref() else { return };
            let tries = if matches!(job, Job::Release { .. }) { RELEASE_TRIES } else { 1 };
            for attempt in 1..=tries {
                let started = Instant::now();
                let answer = match &job {
                    Job::Adjust { id, key, gcra, delta } => redis.store.adjust(id, key, *gcra, *delta).await,
                    Job::Release { id, key, lease } => redis.store.release(id, key, lease).await,
                };
                redis.observe(op, started);
                let Err(e) = answer else { return };
                redis.count_error(op, &e);
                tracing::debug!(error = %e, attempt, "Redis {op} failed");
                if attempt < tries {
                    tokio::time::sleep(Duration::from_millis(250) * 2u32.pow(attempt)).await;
                }
            }
        });
    }

    /// Keep the leases of a request's Redis slots alive while it runs: a task refreshing them
    /// every third of the lease TTL. None without Redis or outside a runtime.
    fn refresher(self: &Arc<Self>, slots: &[(Arc<str>, String, String)]) -> Option<tokio::task::AbortHandle> {
        let redis = self.redis.as_ref()?;
        if slots.is_empty() {
            return None;
        }
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let every = (redis.store.lease_ttl() / 3).max(Duration::from_millis(1));
        let limiter = self.clone();
        let slots = slots.to_vec();
        let task = handle.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(redis) = limiter.redis.as_ref() else { return };
                let started = Instant::now();
                let answer = redis.store.refresh(&slots).await;
                redis.observe("refresh", started);
                if let Err(e) = answer {
                    redis.count_error("refresh", &e);
                    tracing::debug!(error = %e, "Redis lease refresh failed");
                }
            }
        });
        Some(task.abort_handle())
    }
}

/// The results of a fallback that decides without a store: every limit allowed (`allow`) or
/// refused (`deny`, retry after `DENY_RETRY_AFTER`).
fn decided(checks: &[LimitCheck], allowed: bool) -> Vec<LimitResult> {
    let retry = u64::try_from(DENY_RETRY_AFTER.as_nanos()).unwrap_or(u64::MAX);
    checks
        .iter()
        .map(|c| {
            let limit = c.charge.per_window();
            LimitResult {
                id: c.id.clone(),
                kind: c.charge.kind(),
                shadow: c.shadow,
                allowed,
                limit,
                remaining: if allowed { limit } else { 0 },
                retry_after_ns: if allowed { 0 } else { retry },
                reset_after_ns: if allowed { 0 } else { retry },
                fallback: true,
            }
        })
        .collect()
}

/// Concurrency slots a request holds; dropping this gives them back, so every way a request
/// can end (finished, failed, cancelled by the client, a WebSocket closing) releases them.
/// Slots held in Redis have their leases refreshed while this lives.
pub struct Held {
    limiter: Arc<Limiter>,
    ticket: Ticket,
    /// (limit id, counter key, lease)
    slots: Vec<(Arc<str>, String, String)>,
    refresher: Option<tokio::task::AbortHandle>,
}

impl Held {
    pub fn new(limiter: Arc<Limiter>, ticket: Ticket, checks: &[LimitCheck]) -> Held {
        let slots: Vec<(Arc<str>, String, String)> = checks
            .iter()
            .filter_map(|c| match &c.charge {
                crate::limits::Charge::Concurrent { lease, .. } => Some((c.id.clone(), c.key.clone(), lease.clone())),
                _ => None,
            })
            .collect();
        let refresher = if ticket == Ticket::Redis { limiter.refresher(&slots) } else { None };
        Held { limiter, ticket, slots, refresher }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
        for (id, key, lease) in self.slots.drain(..) {
            self.limiter.release(self.ticket, &id, &key, &lease);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{admitted, Charge};

    fn rate(id: &str, shadow: bool) -> LimitCheck {
        LimitCheck {
            id: id.into(),
            key: "k".into(),
            shadow,
            charge: Charge::Rate { gcra: Gcra::new(5, 1_000_000_000, None), count: 5 },
        }
    }

    /// A limiter on a Redis nobody listens on (port 1), so every check fails fast.
    fn down(on_error: OnError) -> (Arc<Limiter>, RedisMetrics) {
        let metrics = RedisMetrics::new();
        let l = Limiter::with_redis("redis://127.0.0.1:1/", on_error, Duration::from_millis(100), metrics.clone())
            .expect("a valid URL");
        (Arc::new(l), metrics)
    }

    #[test]
    fn an_invalid_url_is_an_error_that_does_not_repeat_it() {
        let e = Limiter::with_redis("nope://secret@x", OnError::Local, Duration::from_millis(50), RedisMetrics::new())
            .err()
            .unwrap_or_default();
        assert!(!e.is_empty() && !e.contains("secret"), "{e}");
    }

    #[tokio::test]
    async fn fallbacks_follow_on_error() {
        let (l, m) = down(OnError::Local);
        let (r, t) = l.check(&[rate("a", false)]).await;
        assert_eq!(t, Ticket::Local);
        assert!(admitted(&r) && r[0].remaining == 4, "{r:?}");
        assert!(l.redis_down());
        assert_eq!(m.fallbacks.with_label_values(&["local"]).get(), 1);

        let (l, m) = down(OnError::Allow);
        let (r, t) = l.check(&[rate("a", false)]).await;
        assert_eq!(t, Ticket::None);
        assert!(admitted(&r));
        assert_eq!(m.fallbacks.with_label_values(&["allow"]).get(), 1);

        let (l, m) = down(OnError::Deny);
        let (r, t) = l.check(&[rate("a", false)]).await;
        assert_eq!(t, Ticket::None);
        assert!(!admitted(&r) && r[0].retry_after_ns == 1_000_000_000, "{r:?}");
        // Shadow limits are never enforced, not even by `deny`.
        let (r, _) = l.check(&[rate("a", true)]).await;
        assert!(admitted(&r) && !r[0].allowed);
        assert_eq!(m.fallbacks.with_label_values(&["deny"]).get(), 2);
        // The second check skipped Redis (the probe interval had not passed): one error only.
        let errors: u64 =
            ["unavailable", "timeout"].iter().map(|k| m.errors.with_label_values(&["check", k]).get()).sum();
        assert_eq!(errors, 1);
    }

    #[test]
    fn release_outside_a_runtime_is_skipped_without_panicking() {
        let (l, _) = down(OnError::Local);
        l.release(Ticket::Redis, "c", "k", "lease");
        l.adjust(Ticket::Redis, "t", "k", Gcra::new(10, 1_000_000_000, None), 5);
        let c = LimitCheck {
            id: "c".into(),
            key: "k".into(),
            shadow: false,
            charge: Charge::Concurrent { max: 1, lease: "r".into() },
        };
        drop(Held::new(l, Ticket::Redis, &[c]));
    }

    #[test]
    fn metrics_register_once() {
        let registry = Registry::new();
        let m = RedisMetrics::new();
        assert!(m.register(&registry).is_ok());
        assert!(m.register(&registry).is_err());
    }
}
