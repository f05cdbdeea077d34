//! Local rate-limit state: GCRA (from the compiler crate, so `gw-check` tests compute the same
//! answers) over a sharded map. No global lock: a request locks only the shards of its own
//! counters, in a fixed order. Counters are keyed by the limit's stable id, so a limit that
//! survives a reload unchanged keeps its state. Idle counters (bucket full again) are dropped.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Instant;

use gw_compiler::gcra::Gcra;

const SHARDS: usize = 64;
/// A shard sweeps its idle counters when it grows past this many.
const SWEEP_AT: usize = 4096;

/// One rate limit to charge for a request.
#[derive(Debug, Clone)]
pub struct RateCheck {
    pub id: String,
    pub key: String,
    pub gcra: Gcra,
    pub shadow: bool,
}

/// The answer for one limit of the request.
#[derive(Debug, Clone)]
pub struct LimitResult {
    pub id: String,
    pub shadow: bool,
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    pub retry_after_ns: u64,
    pub reset_after_ns: u64,
}

pub struct LocalLimiter {
    shards: Vec<Mutex<HashMap<String, u64>>>,
    epoch: Instant,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        LocalLimiter { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), epoch: Instant::now() }
    }
}

impl LocalLimiter {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn shard_of(key: &str) -> usize {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() as usize) % SHARDS
    }

    /// Check every limit; charge all of them only if every enforced one admits the request
    /// (a request refused by one limit is not charged to the others). Shadow limits are
    /// evaluated and reported but never refuse.
    pub fn check(&self, checks: &[RateCheck]) -> Vec<LimitResult> {
        let now = self.now_ns();
        let keys: Vec<String> = checks.iter().map(|c| format!("{}\u{0}{}", c.id, c.key)).collect();
        let mut shard_ids: Vec<usize> = keys.iter().map(|k| Self::shard_of(k)).collect();
        shard_ids.sort_unstable();
        shard_ids.dedup();
        // Locks in ascending shard order: two requests can never wait on each other in a cycle.
        let mut guards: HashMap<usize, std::sync::MutexGuard<'_, HashMap<String, u64>>> = shard_ids
            .iter()
            .map(|&i| (i, self.shards[i].lock().unwrap_or_else(|poisoned| poisoned.into_inner())))
            .collect();
        let verdicts: Vec<_> = checks
            .iter()
            .zip(&keys)
            .map(|(c, k)| {
                let tat = guards.get(&Self::shard_of(k)).and_then(|m| m.get(k).copied()).unwrap_or(0);
                c.gcra.check(tat, now, 1)
            })
            .collect();
        let admitted = checks.iter().zip(&verdicts).all(|(c, v)| c.shadow || v.allowed);
        if admitted {
            for ((c, k), v) in checks.iter().zip(&keys).zip(&verdicts) {
                if v.allowed || !c.shadow {
                    if let Some(map) = guards.get_mut(&Self::shard_of(k)) {
                        if map.len() >= SWEEP_AT {
                            map.retain(|_, tat| *tat > now);
                        }
                        map.insert(k.clone(), v.tat);
                    }
                }
            }
        }
        checks
            .iter()
            .zip(verdicts)
            .map(|(c, v)| LimitResult {
                id: c.id.clone(),
                shadow: c.shadow,
                allowed: v.allowed,
                limit: c.gcra.burst(),
                remaining: v.remaining,
                retry_after_ns: v.retry_after_ns,
                reset_after_ns: v.reset_after_ns,
            })
            .collect()
    }

    /// Counters held (for tests and the operator view).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|m| m.len()).unwrap_or(0)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: &str, count: u64, shadow: bool) -> RateCheck {
        RateCheck { id: id.into(), key: "k".into(), gcra: Gcra::new(count, 60_000_000_000, None), shadow }
    }

    #[test]
    fn a_refused_request_is_charged_to_no_limit() {
        let l = LocalLimiter::default();
        let wide = check("wide", 100, false);
        let narrow = check("narrow", 1, false);
        assert!(l.check(&[wide.clone(), narrow.clone()]).iter().all(|r| r.allowed));
        let second = l.check(&[wide.clone(), narrow]);
        assert!(!second[1].allowed);
        // `wide` was not charged by the refused request: 99 of 100 left after one admission.
        assert_eq!(l.check(&[wide])[0].remaining, 98);
    }

    #[test]
    fn shadow_limits_never_refuse() {
        let l = LocalLimiter::default();
        let s = check("s", 1, true);
        l.check(&[s.clone()]);
        let r = l.check(&[s]);
        assert!(!r[0].allowed, "the shadow limit is over");
        assert!(r[0].shadow);
    }
}
