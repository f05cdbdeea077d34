//! Limit checks and the local limit store.
//!
//! A request's limits are checked together and all-or-nothing: if one enforced limit refuses,
//! none is charged. Three kinds: rate (GCRA, cost 1), tokens (GCRA whose cost is the request's
//! token reservation, reconciled later with `adjust`) and concurrency (a slot held until
//! `release`). The arithmetic is the compiler crate's `Gcra`, so `gw-check` tests compute the
//! same answers. Counters are keyed by the limit's stable id plus the counter key, so a limit
//! unchanged by a reload keeps its state.
//!
//! The local store is a sharded map: a request locks only the shards of its own counters, in
//! ascending order (no global lock, no lock cycles). Idle counters are swept: a GCRA counter
//! whose bucket is full again and a concurrency counter at zero hold no information.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use gw_compiler::gcra::Gcra;

const SHARDS: usize = 64;
/// A shard sweeps its idle counters when it grows past this many.
const SWEEP_AT: usize = 4096;

/// What one limit costs the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charge {
    /// `limit rate N/window`: one request.
    Rate { gcra: Gcra },
    /// `limit tokens N/window`: `cost` tokens reserved now (prompt + requested completion).
    Tokens { gcra: Gcra, cost: u64 },
    /// `limit concurrent N`: a slot until `release`. `lease` names the holder (the request id)
    /// so a shared store can expire slots of a crashed holder.
    Concurrent { max: u64, lease: String },
}

impl Charge {
    pub fn kind(&self) -> LimitKind {
        match self {
            Charge::Rate { .. } => LimitKind::Requests,
            Charge::Tokens { .. } => LimitKind::Tokens,
            Charge::Concurrent { .. } => LimitKind::Concurrent,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Requests,
    Tokens,
    Concurrent,
}

/// One limit to check for a request.
#[derive(Debug, Clone)]
pub struct LimitCheck {
    /// The limit's stable id (`AppliedLimit::id`).
    pub id: String,
    /// The counter within the limit (key name, tenant, header value, ...).
    pub key: String,
    pub shadow: bool,
    pub charge: Charge,
}

impl LimitCheck {
    /// The counter's name in a store.
    pub fn counter(&self) -> String {
        counter_name(&self.id, &self.key)
    }
}

/// The store name of a counter: the id and key, separated by a byte neither can hold.
pub fn counter_name(id: &str, key: &str) -> String {
    format!("{id}\u{1f}{key}")
}

/// The answer for one limit of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitResult {
    pub id: String,
    pub kind: LimitKind,
    pub shadow: bool,
    pub allowed: bool,
    /// The limit's capacity: the burst for rates and budgets, the slots for concurrency.
    pub limit: u64,
    /// What is left after this request (if it was admitted).
    pub remaining: u64,
    /// When a refused request could succeed (ns from now; 0 when admitted or unknown).
    pub retry_after_ns: u64,
    /// When the counter is full again (ns from now).
    pub reset_after_ns: u64,
}

/// The verdicts for all of a request's limits, and whether it was admitted (every enforced
/// limit allowed it; then, and only then, every limit was charged).
pub fn admitted(results: &[LimitResult]) -> bool {
    results.iter().all(|r| r.allowed || r.shadow)
}

/// One counter's stored state.
#[derive(Debug, Clone, Copy)]
enum Cell {
    /// GCRA theoretical arrival time, ns since the store's epoch.
    Tat(u64),
    /// Slots in use.
    Held(u64),
}

pub struct LocalLimiter {
    shards: Vec<Mutex<HashMap<String, Cell>>>,
    epoch: Instant,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        LocalLimiter { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), epoch: Instant::now() }
    }
}

fn shard_of(counter: &str) -> usize {
    let mut h = DefaultHasher::new();
    counter.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

impl LocalLimiter {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, HashMap<String, Cell>> {
        self.shards[i].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Check every limit, charging all of them only if every enforced one admits the request.
    pub fn check(&self, checks: &[LimitCheck]) -> Vec<LimitResult> {
        self.check_at(checks, self.now_ns())
    }

    fn check_at(&self, checks: &[LimitCheck], now: u64) -> Vec<LimitResult> {
        let counters: Vec<String> = checks.iter().map(LimitCheck::counter).collect();
        let mut shard_ids: Vec<usize> = counters.iter().map(|c| shard_of(c)).collect();
        shard_ids.sort_unstable();
        shard_ids.dedup();
        let mut guards: HashMap<usize, MutexGuard<'_, HashMap<String, Cell>>> =
            shard_ids.iter().map(|&i| (i, self.lock(i))).collect();
        let cell = |guards: &HashMap<usize, MutexGuard<'_, HashMap<String, Cell>>>, c: &str| {
            guards.get(&shard_of(c)).and_then(|m| m.get(c).copied())
        };

        let mut results = Vec::with_capacity(checks.len());
        let mut next_cells = Vec::with_capacity(checks.len());
        for (check, counter) in checks.iter().zip(&counters) {
            let (result, next) = evaluate(check, cell(&guards, counter), now);
            results.push(result);
            next_cells.push(next);
        }
        if admitted(&results) {
            for ((result, counter), next) in results.iter().zip(&counters).zip(next_cells) {
                // A shadow limit that would refuse is reported, not charged: it must not
                // change what an enforced twin of it would see.
                if !result.allowed {
                    continue;
                }
                if let Some(map) = guards.get_mut(&shard_of(counter)) {
                    if map.len() >= SWEEP_AT {
                        map.retain(|_, c| match c {
                            Cell::Tat(tat) => *tat > now,
                            Cell::Held(n) => *n > 0,
                        });
                    }
                    map.insert(counter.clone(), next);
                }
            }
        }
        results
    }

    /// Reconcile a token reservation: `delta` more tokens used than reserved (negative: fewer).
    pub fn adjust(&self, id: &str, key: &str, gcra: Gcra, delta: i64) {
        let counter = counter_name(id, key);
        let now = self.now_ns();
        let mut shard = self.lock(shard_of(&counter));
        let tat = match shard.get(&counter) {
            Some(Cell::Tat(t)) => *t,
            _ => now,
        };
        shard.insert(counter, Cell::Tat(adjust_tat(gcra, tat, now, delta)));
    }

    /// Give back a concurrency slot.
    pub fn release(&self, id: &str, key: &str) {
        let counter = counter_name(id, key);
        let mut shard = self.lock(shard_of(&counter));
        match shard.get(&counter).copied() {
            Some(Cell::Held(n)) if n > 1 => {
                shard.insert(counter, Cell::Held(n - 1));
            }
            Some(Cell::Held(_)) => {
                shard.remove(&counter);
            }
            _ => {}
        }
    }

    /// Slots in use for a concurrency counter (for the operator view and tests).
    pub fn held(&self, id: &str, key: &str) -> u64 {
        let counter = counter_name(id, key);
        match self.lock(shard_of(&counter)).get(&counter) {
            Some(Cell::Held(n)) => *n,
            _ => 0,
        }
    }

    /// What is left of a rate or token counter right now (a full bucket when it is unknown),
    /// without charging it: for the operator view.
    pub fn remaining(&self, id: &str, key: &str, gcra: Gcra) -> u64 {
        let counter = counter_name(id, key);
        let now = self.now_ns();
        let tat = match self.lock(shard_of(&counter)).get(&counter) {
            Some(Cell::Tat(t)) => *t,
            _ => 0,
        };
        let capacity = gcra.tolerance_ns.saturating_add(gcra.interval_ns);
        capacity.saturating_sub(tat.saturating_sub(now)) / gcra.interval_ns.max(1)
    }

    /// Counters held.
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.lock(i).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Move a GCRA state by `delta` units: later for more use, earlier (never before `now`) for less.
pub fn adjust_tat(gcra: Gcra, tat: u64, now: u64, delta: i64) -> u64 {
    let base = tat.max(now);
    let step = gcra.interval_ns.saturating_mul(delta.unsigned_abs());
    if delta >= 0 {
        base.saturating_add(step)
    } else {
        base.saturating_sub(step).max(now)
    }
}

fn evaluate(check: &LimitCheck, cell: Option<Cell>, now: u64) -> (LimitResult, Cell) {
    let base = |allowed, limit, remaining, retry_after_ns, reset_after_ns| LimitResult {
        id: check.id.clone(),
        kind: check.charge.kind(),
        shadow: check.shadow,
        allowed,
        limit,
        remaining,
        retry_after_ns,
        reset_after_ns,
    };
    match &check.charge {
        Charge::Rate { gcra } | Charge::Tokens { gcra, .. } => {
            let cost = match &check.charge {
                Charge::Tokens { cost, .. } => *cost,
                _ => 1,
            };
            let tat = match cell {
                Some(Cell::Tat(t)) => t,
                _ => 0,
            };
            let v = gcra.check(tat, now, cost);
            (base(v.allowed, gcra.burst(), v.remaining, v.retry_after_ns, v.reset_after_ns), Cell::Tat(v.tat))
        }
        Charge::Concurrent { max, .. } => {
            let held = match cell {
                Some(Cell::Held(n)) => n,
                _ => 0,
            };
            let allowed = held < *max;
            let after = if allowed { held + 1 } else { held };
            (base(allowed, *max, max.saturating_sub(after), 0, 0), Cell::Held(after))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000_000_000;

    fn rate(id: &str, count: u64, shadow: bool) -> LimitCheck {
        LimitCheck {
            id: id.into(),
            key: "k".into(),
            shadow,
            charge: Charge::Rate { gcra: Gcra::new(count, MIN, None) },
        }
    }

    #[test]
    fn a_refused_request_is_charged_to_no_limit() {
        let l = LocalLimiter::default();
        let wide = rate("wide", 100, false);
        let narrow = rate("narrow", 1, false);
        assert!(admitted(&l.check_at(&[wide.clone(), narrow.clone()], 0)));
        let second = l.check_at(&[wide.clone(), narrow], 0);
        assert!(!admitted(&second) && !second[1].allowed);
        // `wide` was charged once, not twice: 98 left after the next admission.
        assert_eq!(l.check_at(&[wide], 0)[0].remaining, 98);
    }

    #[test]
    fn shadow_limits_never_refuse() {
        let l = LocalLimiter::default();
        let s = rate("s", 1, true);
        l.check_at(std::slice::from_ref(&s), 0);
        let r = l.check_at(&[s], 0);
        assert!(!r[0].allowed, "the shadow limit is over");
        assert!(admitted(&r));
    }

    #[test]
    fn concurrency_slots_are_taken_and_given_back() {
        let l = LocalLimiter::default();
        let c = LimitCheck {
            id: "c".into(),
            key: "t".into(),
            shadow: false,
            charge: Charge::Concurrent { max: 2, lease: "r".into() },
        };
        assert!(admitted(&l.check(std::slice::from_ref(&c))));
        assert!(admitted(&l.check(std::slice::from_ref(&c))));
        assert!(!admitted(&l.check(std::slice::from_ref(&c))));
        assert_eq!(l.held("c", "t"), 2);
        l.release("c", "t");
        assert!(admitted(&l.check(std::slice::from_ref(&c))));
        l.release("c", "t");
        l.release("c", "t");
        l.release("c", "t");
        assert_eq!(l.held("c", "t"), 0);
        assert!(l.is_empty(), "a counter at zero is dropped");
    }

    #[test]
    fn token_reservations_are_reconciled() {
        let l = LocalLimiter::default();
        let gcra = Gcra::new(1000, MIN, None);
        let t =
            |cost| LimitCheck { id: "t".into(), key: "k".into(), shadow: false, charge: Charge::Tokens { gcra, cost } };
        let r = l.check_at(&[t(600)], 0);
        assert!(admitted(&r));
        assert!(!admitted(&l.check_at(&[t(600)], 0)), "600 + 600 is over 1000");
        // The request used 100 tokens, not the 600 reserved: 500 go back.
        l.adjust("t", "k", gcra, -500);
        assert!(admitted(&l.check(&[t(600)])));
    }
}
