//! Per-tenant and per-route traffic for the operator view (`/admin/usage`): requests per
//! second, requests in flight, tokens in and out per minute. Lock-light: a read lock to find the tenant's
//! counters (a write lock only the first time a tenant is seen), then atomics in per-second
//! buckets over the last minute.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

const WINDOW_SECS: u64 = 60;

#[derive(Default)]
struct Bucket {
    /// The second (unix time) this bucket holds; a stale one is reset on first use.
    second: AtomicU64,
    requests: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
}

pub struct TenantTraffic {
    buckets: Vec<Bucket>,
    pub in_flight: AtomicI64,
    pub total_requests: AtomicU64,
}

impl Default for TenantTraffic {
    fn default() -> Self {
        TenantTraffic {
            buckets: (0..WINDOW_SECS).map(|_| Bucket::default()).collect(),
            in_flight: AtomicI64::new(0),
            total_requests: AtomicU64::new(0),
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl TenantTraffic {
    /// A request of the tenant was admitted.
    pub fn started(&self) {
        self.bucket(now_secs()).requests.fetch_add(1, Ordering::Relaxed);
        self.total_requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// It ended, having used these tokens (when known).
    pub fn finished(&self, prompt: u64, completion: u64) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let b = self.bucket(now_secs());
        b.prompt_tokens.fetch_add(prompt, Ordering::Relaxed);
        b.completion_tokens.fetch_add(completion, Ordering::Relaxed);
    }

    fn bucket(&self, second: u64) -> &Bucket {
        let b = &self.buckets[(second % WINDOW_SECS) as usize];
        let held = b.second.load(Ordering::Relaxed);
        if held != second && b.second.compare_exchange(held, second, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            b.requests.store(0, Ordering::Relaxed);
            b.prompt_tokens.store(0, Ordering::Relaxed);
            b.completion_tokens.store(0, Ordering::Relaxed);
        }
        b
    }

    fn sum(&self, now: u64, secs: u64, field: impl Fn(&Bucket) -> &AtomicU64) -> u64 {
        self.buckets
            .iter()
            .filter(|b| {
                let s = b.second.load(Ordering::Relaxed);
                s <= now && now - s < secs
            })
            .map(|b| field(b).load(Ordering::Relaxed))
            .sum()
    }
}

/// What `/admin/usage` shows for one tenant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TenantView {
    pub tenant: String,
    /// Requests per second over the last 10 seconds.
    pub qps: f64,
    pub requests_last_minute: u64,
    pub requests_total: u64,
    pub in_flight: i64,
    pub prompt_tokens_last_minute: u64,
    pub completion_tokens_last_minute: u64,
}

#[derive(Default)]
pub struct Traffic {
    tenants: Counters,
    /// The same counters by route name (the view's `tenant` field then names the route).
    routes: Counters,
}

type Counters = RwLock<HashMap<String, Arc<TenantTraffic>>>;

fn counters(map: &Counters, name: &str) -> Arc<TenantTraffic> {
    if let Some(t) = map.read().unwrap_or_else(|p| p.into_inner()).get(name) {
        return t.clone();
    }
    map.write().unwrap_or_else(|p| p.into_inner()).entry(name.to_string()).or_default().clone()
}

impl Traffic {
    pub fn tenant(&self, name: &str) -> Arc<TenantTraffic> {
        counters(&self.tenants, name)
    }

    pub fn route(&self, name: &str) -> Arc<TenantTraffic> {
        counters(&self.routes, name)
    }

    pub fn view(&self) -> Vec<TenantView> {
        view_of(&self.tenants)
    }

    /// Per route; each view's `tenant` field is the route's name.
    pub fn route_view(&self) -> Vec<TenantView> {
        view_of(&self.routes)
    }
}

fn view_of(map: &Counters) -> Vec<TenantView> {
    let now = now_secs();
    let counters = map.read().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<TenantView> = counters
        .iter()
        .map(|(name, t)| TenantView {
            tenant: name.clone(),
            qps: t.sum(now, 10, |b| &b.requests) as f64 / 10.0,
            requests_last_minute: t.sum(now, WINDOW_SECS, |b| &b.requests),
            requests_total: t.total_requests.load(Ordering::Relaxed),
            in_flight: t.in_flight.load(Ordering::Relaxed),
            prompt_tokens_last_minute: t.sum(now, WINDOW_SECS, |b| &b.prompt_tokens),
            completion_tokens_last_minute: t.sum(now, WINDOW_SECS, |b| &b.completion_tokens),
        })
        .collect();
    out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_tokens_are_counted_per_tenant() {
        let traffic = Traffic::default();
        let a = traffic.tenant("a");
        for _ in 0..5 {
            a.started();
        }
        a.finished(10, 20);
        let v = traffic.view();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].requests_last_minute, 5);
        assert_eq!(v[0].in_flight, 4);
        assert_eq!(v[0].prompt_tokens_last_minute, 10);
        assert_eq!(v[0].completion_tokens_last_minute, 20);
        assert!((v[0].qps - 0.5).abs() < 1e-9);
    }
}
