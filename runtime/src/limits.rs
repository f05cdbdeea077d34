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

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use gw_engine::gcra::Gcra;
use gw_engine::graph::{LimitInfo, LimitKindInfo, LimitOwner, LimitPer};

const SHARDS: usize = 64;
/// A shard sweeps its idle counters when it grows past this many.
const SWEEP_AT: usize = 4096;

/// What one limit costs the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charge {
    /// `limit rate N/window`: one request. `count` is the N as written (the burst may differ).
    Rate { gcra: Gcra, count: u64 },
    /// `limit tokens N/window`: `cost` tokens reserved now (prompt + requested completion).
    Tokens { gcra: Gcra, cost: u64 },
    /// `limit concurrent N`: a slot until `release`. `lease` names the holder (the request id)
    /// so a shared store can expire slots of a crashed holder.
    Concurrent { max: u64, lease: String },
}

impl Charge {
    /// The limit as written: requests or tokens per window, slots for concurrency.
    pub fn per_window(&self) -> u64 {
        match self {
            Charge::Rate { count, .. } => *count,
            // A budget's burst is its count (`Gcra::new(count, window, None)`).
            Charge::Tokens { gcra, .. } => gcra.burst(),
            Charge::Concurrent { max, .. } => *max,
        }
    }

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
    pub id: std::sync::Arc<str>,
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
    let mut name = String::with_capacity(id.len() + 1 + key.len());
    name.push_str(id);
    name.push('\u{1f}');
    name.push_str(key);
    name
}

/// The answer for one limit of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitResult {
    pub id: std::sync::Arc<str>,
    pub kind: LimitKind,
    pub shadow: bool,
    pub allowed: bool,
    /// The limit as the policy states it: requests or tokens per window (not the burst), the
    /// slots for concurrency. What `x-ratelimit-limit-*` reports.
    pub limit: u64,
    /// What is left after this request (if it was admitted).
    pub remaining: u64,
    /// When a refused request could succeed (ns from now; 0 when admitted or unknown).
    pub retry_after_ns: u64,
    /// When the counter is full again (ns from now).
    pub reset_after_ns: u64,
    /// Decided without the store: it could not be asked, and `on_error` decided.
    pub fallback: bool,
}

/// The verdicts for all of a request's limits, and whether it was admitted (every enforced
/// limit allowed it; then, and only then, every limit was charged).
pub fn admitted(results: &[LimitResult]) -> bool {
    results.iter().all(|r| r.allowed || r.shadow)
}

/// The first enforced token budget the request's reservation exceeds on its own: a full
/// bucket cannot hold it, so no wait would ever let it pass (it is refused without a charge).
pub fn never_fits(checks: &[LimitCheck]) -> Option<(&LimitCheck, u64)> {
    checks.iter().find_map(|c| match &c.charge {
        Charge::Tokens { gcra, cost } if !c.shadow && *cost > gcra.burst() => Some((c, *cost)),
        _ => None,
    })
}

/// A limit in the policy's words, for the client: "the token budget of route `chat` (12500
/// tokens per minute per key)". The limit's id (an internal name) stays in logs and metrics.
pub fn describe(info: &LimitInfo) -> String {
    let owner = match &info.owner {
        LimitOwner::Route { name, .. } => format!("route `{name}`"),
        LimitOwner::Tenant { name } if name == "*" => "every tenant (`tenant *`)".to_string(),
        LimitOwner::Tenant { name } => format!("tenant `{name}`"),
        LimitOwner::Shared { name } => format!("shared limit `{name}`"),
    };
    let per = match &info.per {
        LimitPer::Route => String::new(),
        LimitPer::Key => " per key".into(),
        LimitPer::Tenant => " per tenant".into(),
        LimitPer::Client => " per client address".into(),
        LimitPer::Header(h) => format!(" per `{h}` header value"),
        LimitPer::Expr => " per the policy's key expression".into(),
    };
    let (what, amount) = match info.kind {
        LimitKindInfo::Rate { count, window_ns, burst } => {
            let comma = if per.is_empty() { "" } else { "," };
            let burst = burst.map(|b| format!(", bursts of {b}{comma}")).unwrap_or_default();
            ("rate limit", format!("{count} requests per {}{burst}", window_words(window_ns)))
        }
        LimitKindInfo::Tokens { count, window_ns, .. } => {
            ("token budget", format!("{count} tokens per {}", window_words(window_ns)))
        }
        LimitKindInfo::Concurrent { max } => ("concurrency limit", format!("{max} requests in flight")),
    };
    format!("the {what} of {owner} ({amount}{per})")
}

/// A window as people say it: `second`, `minute`, `10 seconds`, `100 ms`.
fn window_words(ns: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000_000_000, "day"),
        (3_600_000_000_000, "hour"),
        (60_000_000_000, "minute"),
        (1_000_000_000, "second"),
    ];
    for (unit, name) in UNITS {
        if ns >= unit && ns.is_multiple_of(unit) {
            return match ns / unit {
                1 => name.to_string(),
                n => format!("{n} {name}s"),
            };
        }
    }
    format!("{} ms", ns / 1_000_000)
}

/// A duration as OpenAI's `x-ratelimit-reset-*` headers write it (Go's notation, to the
/// millisecond, rounded up): `0s`, `20ms`, `1s`, `1.5s`, `6m0s`, `1h0m0s`.
pub fn openai_duration(ns: u64) -> String {
    use std::fmt::Write;
    let ms = ns.div_ceil(1_000_000);
    if ms < 1000 {
        return if ms == 0 { "0s".into() } else { format!("{ms}ms") };
    }
    // Written into one string: this runs for every limited answer's rate headers.
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut text = String::with_capacity(16);
    let _ = match (h, m) {
        (0, 0) => Ok(()),
        (0, m) => write!(text, "{m}m"),
        (h, m) => write!(text, "{h}h{m}m"),
    };
    let _ = write!(text, "{s}");
    if frac > 0 {
        // Milliseconds as a decimal fraction without trailing zeros: 50 -> ".05", 500 -> ".5".
        let (mut digits, mut width) = (frac, 3);
        while digits % 10 == 0 {
            digits /= 10;
            width -= 1;
        }
        let _ = write!(text, ".{digits:0width$}");
    }
    text.push('s');
    text
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

/// The shard only spreads the lock: a fast hash will do (the maps themselves hash with
/// std's keyed hasher, as counter names carry what clients send).
fn shard_of(counter: &str) -> usize {
    let mut h = rustc_hash::FxHasher::default();
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
        // Each counter with its shard, hashed once.
        let counters: Vec<(String, usize)> = checks
            .iter()
            .map(|c| {
                let name = c.counter();
                let shard = shard_of(&name);
                (name, shard)
            })
            .collect();
        let mut shard_ids: Vec<usize> = counters.iter().map(|(_, shard)| *shard).collect();
        shard_ids.sort_unstable();
        shard_ids.dedup();
        // Locked in shard order (never two requests waiting on each other); a request reads few.
        let mut guards: Vec<(usize, MutexGuard<'_, HashMap<String, Cell>>)> =
            shard_ids.iter().map(|&i| (i, self.lock(i))).collect();
        let shard = |guards: &[(usize, MutexGuard<'_, HashMap<String, Cell>>)], i: usize| {
            guards.iter().position(|(id, _)| *id == i)
        };

        let mut results = Vec::with_capacity(checks.len());
        let mut next_cells = Vec::with_capacity(checks.len());
        for (check, (counter, i)) in checks.iter().zip(&counters) {
            let current = shard(&guards, *i).and_then(|g| guards[g].1.get(counter).copied());
            let (result, next) = evaluate(check, current, now);
            results.push(result);
            next_cells.push(next);
        }
        if admitted(&results) {
            for ((result, (counter, i)), next) in results.iter().zip(&counters).zip(next_cells) {
                // A shadow limit that would refuse is reported, not charged: it must not
                // change what an enforced twin of it would see.
                if !result.allowed {
                    continue;
                }
                let Some(g) = shard(&guards, *i) else { continue };
                let map = &mut guards[g].1;
                if map.len() >= SWEEP_AT {
                    map.retain(|_, c| match c {
                        Cell::Tat(tat) => *tat > now,
                        Cell::Held(n) => *n > 0,
                    });
                }
                match map.get_mut(counter) {
                    Some(cell) => *cell = next,
                    None => {
                        map.insert(counter.clone(), next);
                    }
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
        fallback: false,
    };
    match &check.charge {
        Charge::Rate { gcra, .. } | Charge::Tokens { gcra, .. } => {
            let cost = match &check.charge {
                Charge::Tokens { cost, .. } => *cost,
                _ => 1,
            };
            let tat = match cell {
                Some(Cell::Tat(t)) => t,
                _ => 0,
            };
            let v = gcra.check(tat, now, cost);
            let limit = check.charge.per_window();
            (base(v.allowed, limit, v.remaining, v.retry_after_ns, v.reset_after_ns), Cell::Tat(v.tat))
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
            charge: Charge::Rate { gcra: Gcra::new(count, MIN, None), count },
        }
    }

    #[test]
    fn durations_are_written_as_openai_does() {
        let ms = 1_000_000;
        for (ns, text) in [
            (0, "0s"),
            (1, "1ms"),
            (20 * ms, "20ms"),
            (1000 * ms, "1s"),
            (1500 * ms, "1.5s"),
            (59_999 * ms + 1, "1m0s"),
            (360_000 * ms, "6m0s"),
            (3_600_000 * ms, "1h0m0s"),
            (3_725_250 * ms, "1h2m5.25s"),
            (1050 * ms, "1.05s"),
            (1005 * ms, "1.005s"),
            (1999 * ms + 1, "2s"),
            (61_100 * ms, "1m1.1s"),
            (7_200_000 * ms, "2h0m0s"),
            (90_061_001 * ms, "25h1m1.001s"),
        ] {
            assert_eq!(openai_duration(ns), text, "{ns} ns");
        }
    }

    #[test]
    fn limits_are_described_in_the_policys_words() {
        let info = |kind, per, owner| LimitInfo {
            id: "route:translate#0:rate:100/1000000000ns:b0:per:tenant".into(),
            kind,
            shadow: false,
            per,
            owner,
            model: None,
            conditional: false,
        };
        let route = || LimitOwner::Route { route: 0, name: "translate".into() };
        let rate =
            info(LimitKindInfo::Rate { count: 100, window_ns: 1_000_000_000, burst: None }, LimitPer::Tenant, route());
        assert_eq!(describe(&rate), "the rate limit of route `translate` (100 requests per second per tenant)");
        let burst = info(
            LimitKindInfo::Rate { count: 60, window_ns: MIN, burst: Some(10) },
            LimitPer::Header("x-user".into()),
            route(),
        );
        assert_eq!(
            describe(&burst),
            "the rate limit of route `translate` (60 requests per minute, bursts of 10, per `x-user` header value)"
        );
        let budget = info(
            LimitKindInfo::Tokens { count: 12500, window_ns: 10 * MIN, estimate: None },
            LimitPer::Route,
            LimitOwner::Tenant { name: "team_a".into() },
        );
        assert_eq!(describe(&budget), "the token budget of tenant `team_a` (12500 tokens per 10 minutes)");
        let slots = info(LimitKindInfo::Concurrent { max: 4 }, LimitPer::Key, route());
        assert_eq!(describe(&slots), "the concurrency limit of route `translate` (4 requests in flight per key)");
        assert!(!describe(&rate).contains("route:translate#0"), "no internal id");
    }

    #[test]
    fn a_reservation_larger_than_the_budget_never_fits() {
        let gcra = Gcra::new(12_500, MIN, None);
        let t = |cost, shadow| LimitCheck {
            id: "t".into(),
            key: "k".into(),
            shadow,
            charge: Charge::Tokens { gcra, cost },
        };
        assert!(never_fits(&[t(12_500, false)]).is_none(), "a full budget admits exactly its size");
        assert_eq!(never_fits(&[t(13_000, false)]).map(|(c, cost)| (&*c.id, cost)), Some(("t", 13_000)));
        assert!(never_fits(&[t(13_000, true)]).is_none(), "a shadow budget never refuses");
        let l = LocalLimiter::default();
        assert!(admitted(&l.check_at(&[t(12_500, false)], 0)), "the size of the budget fits when it is full");
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
