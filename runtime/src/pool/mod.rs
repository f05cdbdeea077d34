//! An upstream's pool of targets: which targets a request may go to (health, affinity, the
//! targets already tried), the balancing among them, and what each try's outcome does to a
//! target's health.
//!
//! - `health`: one target's state, kept across reloads (`Registry`);
//! - `balance`: the strategies;
//! - `retry`: when a failed try is tried again, and the retry budget;
//! - `probe`: active health checks.

pub mod balance;
pub mod health;
pub mod probe;
pub mod retry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gw_engine::graph::{TargetAddr, UpstreamInfo};

use balance::{Balancer, Load};
use health::{now_ms, Outcome, TargetHealth};

/// At most this share of a pool is ejected on passive evidence (at least one target): the
/// rest keeps serving even when failures are everywhere (Envoy's `max_ejection_percent`).
const MAX_EJECTED_SHARE: f64 = 0.5;

pub struct Target {
    pub addr: TargetAddr,
    /// `scheme://host:port/base`, the target's name in metrics and the operator's view.
    pub id: String,
    pub weight: u64,
    pub region: Option<String>,
    pub health: Arc<TargetHealth>,
    /// Resolved on the first try through this generation's pool.
    pub metrics: std::sync::OnceLock<crate::metrics::TargetMetrics>,
}

impl Load for Target {
    fn weight(&self) -> u64 {
        self.weight
    }
    fn in_flight(&self) -> usize {
        self.health.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn latency_ns(&self) -> f64 {
        self.health.latency_ns()
    }
}

/// Target health by upstream name and target URL, kept for the life of the process: a reload
/// that keeps a target keeps what was learnt about it.
#[derive(Default)]
pub struct Registry {
    by_target: Mutex<HashMap<String, Arc<TargetHealth>>>,
}

impl Registry {
    fn get(&self, upstream: &str, id: &str) -> Arc<TargetHealth> {
        let mut map = self.by_target.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(format!("{upstream} {id}")).or_default().clone()
    }
}

pub struct Pool {
    pub targets: Vec<Target>,
    balancer: Balancer,
    pub budget: retry::Budget,
}

/// What a request wants of the pool: its `hash(EXPR)` and `affinity EXPR` values.
#[derive(Default, Clone)]
pub struct Wants {
    pub key: Option<String>,
    pub region: Option<String>,
}

impl Pool {
    pub fn new(info: &UpstreamInfo, registry: &Registry) -> Result<Pool, String> {
        let mut targets = vec![];
        for t in &info.targets {
            let addr = t.addr.clone().ok_or_else(|| format!("upstream `{}`: a target URL is unset", info.name))?;
            let id = addr.to_string();
            targets.push(Target {
                health: registry.get(&info.name, &id),
                id,
                addr,
                weight: t.weight,
                region: t.region.clone(),
                metrics: Default::default(),
            });
        }
        if targets.is_empty() {
            return Err(format!("upstream `{}` has no target", info.name));
        }
        let ids: Vec<String> = targets.iter().map(|t| t.id.clone()).collect();
        let weights: Vec<u64> = targets.iter().map(|t| t.weight).collect();
        Ok(Pool { balancer: Balancer::new(info.balance.clone(), &ids, &weights), targets, budget: Default::default() })
    }

    /// The target for a try, None when no target can take it (every one down by its health
    /// checks, or already tried). In order: available targets of the wanted region; the
    /// other available targets; when every untried target is ejected, the one whose ejection
    /// ends first (a pool is never emptied by passive evidence alone).
    pub fn pick(&self, wants: &Wants, tried: &[usize]) -> Option<usize> {
        let now = now_ms();
        let open = |i: usize| !tried.contains(&i) && self.targets[i].health.available(now);
        let mut candidates: Vec<usize> = Vec::with_capacity(self.targets.len());
        if let Some(region) = &wants.region {
            candidates.extend(
                (0..self.targets.len()).filter(|&i| self.targets[i].region.as_ref() == Some(region) && open(i)),
            );
        }
        if candidates.is_empty() {
            candidates.extend((0..self.targets.len()).filter(|&i| open(i)));
        }
        if candidates.is_empty() {
            return (0..self.targets.len())
                .filter(|&i| !tried.contains(&i) && !self.targets[i].health.is_down())
                .min_by_key(|&i| self.targets[i].health.ejected_until());
        }
        let random = if candidates.len() > 1 { rand::random::<u64>() } else { 0 };
        Some(self.balancer.pick(&self.targets, &candidates, wants.key.as_deref(), random))
    }

    /// Whether every target is down by its health checks: no try can be made.
    pub fn all_down(&self) -> bool {
        self.targets.iter().all(|t| t.health.is_down())
    }

    /// Record a try's outcome; true when it ejected the target.
    pub fn record(&self, i: usize, outcome: Outcome, elapsed: Duration) -> bool {
        let target = &self.targets[i];
        if !target.health.record(outcome, elapsed) {
            return false;
        }
        let now = now_ms();
        let ejected = self.targets.iter().filter(|t| t.health.is_ejected(now)).count();
        let allowed = ((self.targets.len() as f64 * MAX_EJECTED_SHARE).floor() as usize).max(1);
        if ejected >= allowed {
            return false;
        }
        target.health.eject(outcome);
        tracing::warn!(target = %target.id, kind = outcome.kind(), "target ejected after consecutive failures");
        true
    }
}
