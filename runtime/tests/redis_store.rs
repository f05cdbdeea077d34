//! The Redis limit store against a real `redis-server` each test starts on a free port:
//! the script's GCRA equals the local arithmetic, all-or-nothing and shadow semantics, global
//! accuracy with several stores (as several gw processes) hammering one limit, concurrency
//! slots shared, released and expiring, token reconciliation, key TTLs and hash tags, and the
//! `Limiter`'s `on_error` fallbacks when Redis dies or is slow, with recovery.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

#[macro_use]
mod redis_server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gw_engine::gcra::Gcra;
use gw_engine::lang::OnError;
use gw_runtime::limits::{adjust_tat, admitted, Charge, LimitCheck, LimitKind};
use gw_runtime::redis_store::{gcra_key, slots_key, RedisStore, KEY_PREFIX};
use gw_runtime::store::{Held, Limiter, RedisMetrics, Ticket};
use redis_server::RedisServer;

const S: u64 = 1_000_000_000;
const MIN: u64 = 60 * S;
const TIMEOUT: Duration = Duration::from_millis(150);

fn rate(id: &str, key: &str, gcra: Gcra, shadow: bool) -> LimitCheck {
    LimitCheck { id: id.into(), key: key.into(), shadow, charge: Charge::Rate { gcra, count: gcra.burst() } }
}

fn tokens(id: &str, gcra: Gcra, cost: u64) -> LimitCheck {
    LimitCheck { id: id.into(), key: "k".into(), shadow: false, charge: Charge::Tokens { gcra, cost } }
}

fn slot(id: &str, max: u64, lease: &str) -> LimitCheck {
    LimitCheck {
        id: id.into(),
        key: "t".into(),
        shadow: false,
        charge: Charge::Concurrent { max, lease: lease.into() },
    }
}

fn store(server: &RedisServer) -> RedisStore {
    RedisStore::new(&server.url(), TIMEOUT).expect("a valid URL")
}

async fn conn(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// Wait until `cond` (an expression that may `.await`) holds, polling, or fail with `what`.
macro_rules! eventually {
    ($what:expr, $within:expr, $cond:expr) => {{
        let deadline = Instant::now() + $within;
        while !$cond {
            assert!(Instant::now() < deadline, "not within {:?}: {}", $within, $what);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

/// A deterministic pseudo-random sequence (no dependency, same every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[tokio::test]
async fn the_script_computes_what_the_local_gcra_computes() {
    require_redis!();
    let server = RedisServer::start();
    let store = store(&server);
    // A realistic absolute clock (beyond 2^53 ns: the script must not lose precision), and
    // intervals that are not whole microseconds.
    let start: u64 = 1_732_374_000_123_456_789;
    let cases = [
        ("tps", Gcra::new(3, S, None), 1),           // interval 333_333_333 ns
        ("burst", Gcra::new(7, 10 * S, Some(3)), 1), // interval 1_428_571_428 ns
        ("tokens", Gcra::new(1000, MIN, None), 120), // token budget, variable costs
        ("day", Gcra::new(1_000_000, 86_400 * S, None), 40_000),
    ];
    let mut rng = Lcg(7);
    let mut compared = 0;
    for (id, gcra, max_cost) in cases {
        let mut tat = 0u64;
        let mut now = start;
        for step in 0..150 {
            now += rng.next(gcra.interval_ns * 2 * max_cost);
            if rng.next(10) == 0 {
                // Reconcile: more or fewer units than reserved.
                let delta = rng.next(2 * max_cost + 1) as i64 - max_cost as i64;
                store.adjust_at(id, "k", gcra, delta, now).await.unwrap();
                tat = adjust_tat(gcra, tat, now, delta);
                continue;
            }
            let cost = 1 + rng.next(max_cost);
            let check = if max_cost == 1 { rate(id, "k", gcra, false) } else { tokens(id, gcra, cost) };
            let got = store.check_at(&[check], now).await.unwrap();
            let want = gcra.check(tat, now, cost);
            if want.allowed {
                tat = want.tat;
            }
            let g = &got[0];
            assert_eq!(
                (g.allowed, g.remaining, g.retry_after_ns, g.reset_after_ns),
                (want.allowed, want.remaining, want.retry_after_ns, want.reset_after_ns),
                "{id} step {step} (now {now}, cost {cost})"
            );
            assert_eq!(g.limit, gcra.burst());
            compared += 1;
        }
        // The stored TAT is the local one, to the nanosecond.
        let stored: Option<String> =
            redis::cmd("GET").arg(gcra_key(id, "k")).query_async(&mut conn(&server).await).await.unwrap();
        match stored {
            Some(stored) => assert_eq!(stored, tat.to_string(), "{id}"),
            None => assert!(tat <= now, "{id}: the key expired while its bucket was not full"),
        }
    }
    assert!(compared > 400);
}

#[tokio::test]
async fn a_refused_request_is_charged_to_no_limit_and_shadow_limits_never_refuse() {
    require_redis!();
    let server = RedisServer::start();
    let store = store(&server);
    let wide = rate("wide", "k", Gcra::new(100, MIN, None), false);
    let narrow = rate("narrow", "k", Gcra::new(1, MIN, None), false);
    let conc = slot("conc", 5, "r1");
    let first = store.check(&[wide.clone(), narrow.clone(), conc.clone()]).await.unwrap();
    assert!(admitted(&first), "{first:?}");
    assert_eq!(
        first.iter().map(|r| r.kind).collect::<Vec<_>>(),
        [LimitKind::Requests, LimitKind::Requests, LimitKind::Concurrent]
    );
    let second = store.check(&[wide.clone(), narrow.clone(), slot("conc", 5, "r2")]).await.unwrap();
    assert!(!admitted(&second) && second[0].allowed && !second[1].allowed && second[2].allowed, "{second:?}");
    assert!(second[1].retry_after_ns > 59 * S, "{second:?}");
    // Neither `wide` nor the slot was charged for the refused request.
    assert_eq!(store.check(std::slice::from_ref(&wide)).await.unwrap()[0].remaining, 98);
    assert_eq!(store.held("conc", "t").await.unwrap(), 1);

    // A shadow limit reports its refusal but never refuses, and is not charged by it.
    let shadow = rate("s", "k", Gcra::new(1, MIN, None), true);
    assert!(admitted(&store.check(std::slice::from_ref(&shadow)).await.unwrap()));
    let mut c = conn(&server).await;
    let before: String = redis::cmd("GET").arg(gcra_key("s", "k")).query_async(&mut c).await.unwrap();
    let r = store.check(&[wide.clone(), shadow.clone()]).await.unwrap();
    assert!(admitted(&r) && r[0].allowed && !r[1].allowed, "{r:?}");
    let after: String = redis::cmd("GET").arg(gcra_key("s", "k")).query_async(&mut c).await.unwrap();
    assert_eq!(before, after, "a refusing shadow limit is not charged");
    assert_eq!(store.check(&[wide]).await.unwrap()[0].remaining, 96, "the enforced limit beside it was");
}

/// Stores (as gw processes) hammering one limit from many tasks at once.
async fn hammer(stores: &[Arc<RedisStore>], check: LimitCheck, tasks: usize, until: Instant) -> (u64, u64) {
    let admitted_n = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut handles = vec![];
    for t in 0..tasks {
        let store = stores[t % stores.len()].clone();
        let (check, admitted_n, sent) = (check.clone(), admitted_n.clone(), sent.clone());
        handles.push(tokio::spawn(async move {
            while Instant::now() < until {
                let r = store.check(std::slice::from_ref(&check)).await.expect("Redis answers");
                sent.fetch_add(1, Ordering::Relaxed);
                if admitted(&r) {
                    admitted_n.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    (admitted_n.load(Ordering::Relaxed), sent.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_sharing_a_limit_admit_exactly_the_limit() {
    require_redis!();
    let server = RedisServer::start();
    let stores = [Arc::new(store(&server)), Arc::new(store(&server))];
    // 100 per hour: nothing refills during the test, so exactly 100 may pass.
    let check = rate("global", "tenant", Gcra::new(100, 3600 * S, None), false);
    let (admitted_n, sent) = hammer(&stores, check, 32, Instant::now() + Duration::from_millis(1500)).await;
    eprintln!("two stores: {admitted_n} admitted of {sent}");
    assert!(sent >= 500, "the load is several times the limit ({sent} sent)");
    assert_eq!(admitted_n, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stores_hold_a_refilling_rate_within_one_percent() {
    require_redis!();
    let server = RedisServer::start();
    let stores: Vec<_> = (0..3).map(|_| Arc::new(store(&server))).collect();
    // 100/s with a burst of 100: over 3 s, 100 + 300 = 400 admissions at a saturating load.
    let gcra = Gcra::new(100, S, None);
    let check = rate("refill", "tenant", gcra, false);
    let started = Instant::now();
    let (admitted_n, sent) = hammer(&stores, check, 24, started + Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    let expected = 100.0 + elapsed.as_secs_f64() * 100.0;
    eprintln!("three stores: {admitted_n} admitted of {sent} in {elapsed:?} (expected {expected:.0})");
    assert!(sent as f64 >= expected * 3.0, "the load is several times the limit ({sent} sent)");
    let error = (admitted_n as f64 - expected).abs() / expected;
    assert!(error <= 0.01, "{admitted_n} admitted, {expected:.0} expected ({:.2}% off)", error * 100.0);
}

#[tokio::test]
async fn concurrency_slots_are_shared_released_and_expire() {
    require_redis!();
    let server = RedisServer::start();
    let ttl = Duration::from_millis(600);
    let a = store(&server).with_lease_ttl(ttl);
    let b = store(&server).with_lease_ttl(ttl);
    assert!(admitted(&a.check(&[slot("c", 2, "r1")]).await.unwrap()));
    let r = b.check(&[slot("c", 2, "r2")]).await.unwrap();
    assert!(admitted(&r) && r[0].remaining == 0 && r[0].limit == 2, "{r:?}");
    assert!(!admitted(&a.check(&[slot("c", 2, "r3")]).await.unwrap()), "both slots are taken, across stores");
    assert!(!admitted(&b.check(&[slot("c", 2, "r4")]).await.unwrap()));
    assert_eq!(a.held("c", "t").await.unwrap(), 2);

    // Released by the other store: the slot is free for anyone.
    b.release("c", "t", "r1").await.unwrap();
    assert_eq!(a.held("c", "t").await.unwrap(), 1);
    assert!(admitted(&b.check(&[slot("c", 2, "r5")]).await.unwrap()));

    // Two requests under one lease (a reused x-request-id) hold two slots, and each release
    // gives back one.
    assert!(admitted(&a.check(&[slot("dup", 3, "same")]).await.unwrap()));
    assert!(admitted(&a.check(&[slot("dup", 3, "same")]).await.unwrap()));
    assert_eq!(a.held("dup", "t").await.unwrap(), 2);
    a.release("dup", "t", "same").await.unwrap();
    assert_eq!(a.held("dup", "t").await.unwrap(), 1);

    // A refreshed lease outlives its TTL; the others (a crashed holder's) expire.
    assert!(admitted(&a.check(&[slot("live", 2, "kept")]).await.unwrap()));
    assert!(admitted(&a.check(&[slot("live", 2, "crashed")]).await.unwrap()));
    for _ in 0..4 {
        tokio::time::sleep(ttl / 3).await;
        a.refresh(&[("live".into(), "t".into(), "kept".into())]).await.unwrap();
    }
    assert_eq!(a.held("live", "t").await.unwrap(), 1, "only the refreshed lease is left");
    assert_eq!(a.held("c", "t").await.unwrap(), 0, "expired leases no longer count");
    let r = b.check(&[slot("c", 2, "r6")]).await.unwrap();
    assert!(admitted(&r) && r[0].remaining == 1, "{r:?}");
}

#[tokio::test]
async fn held_slots_are_refreshed_while_held_and_released_on_drop() {
    require_redis!();
    let server = RedisServer::start();
    let ttl = Duration::from_millis(450);
    let limiter =
        Arc::new(Limiter::with_redis_store(store(&server).with_lease_ttl(ttl), OnError::Local, RedisMetrics::new()));
    let checks = [slot("ws", 1, "req-1")];
    let (r, ticket) = limiter.check(&checks).await;
    assert!(admitted(&r));
    assert_eq!(ticket, Ticket::Redis);
    let held = Held::new(limiter.clone(), ticket, &checks);
    tokio::time::sleep(ttl * 3).await;
    let redis = limiter.redis().unwrap();
    assert_eq!(redis.held("ws", "t").await.unwrap(), 1, "a long request (a WebSocket) keeps its slot");
    assert!(!admitted(&limiter.check(&[slot("ws", 1, "req-2")]).await.0));
    drop(held);
    eventually!("the slot is given back", Duration::from_secs(2), redis.held("ws", "t").await.unwrap() == 0);
    assert!(admitted(&limiter.check(&[slot("ws", 1, "req-3")]).await.0));
}

#[tokio::test]
async fn token_reservations_are_reconciled() {
    require_redis!();
    let server = RedisServer::start();
    let store = store(&server);
    let gcra = Gcra::new(1000, MIN, None);
    let r = store.check(&[tokens("t", gcra, 600)]).await.unwrap();
    assert!(admitted(&r) && r[0].remaining == 400, "{r:?}");
    assert!(!admitted(&store.check(&[tokens("t", gcra, 600)]).await.unwrap()), "600 + 600 is over 1000");
    // The request used 100 tokens, not the 600 reserved: 500 go back.
    store.adjust("t", "k", gcra, -500).await.unwrap();
    let r = store.check(&[tokens("t", gcra, 600)]).await.unwrap();
    assert!(admitted(&r) && r[0].remaining == 300, "{r:?}");
    // It used 300 more than reserved: they are charged.
    store.adjust("t", "k", gcra, 300).await.unwrap();
    assert_eq!(store.check(&[tokens("t", gcra, 1)]).await.unwrap()[0].remaining, 0);

    // An absurd overuse still stores a TAT and a TTL Redis accepts.
    store.adjust("huge", "k", gcra, 1 << 50).await.unwrap();
    let r = store.check(&[tokens("huge", gcra, 1)]).await.unwrap();
    assert!(!admitted(&r) && r[0].retry_after_ns > 1 << 60, "{r:?}");
    let mut c = conn(&server).await;
    let ttl: i64 = redis::cmd("PTTL").arg(gcra_key("huge", "k")).query_async(&mut c).await.unwrap();
    assert!(ttl > 0, "{ttl}");

    // Through the limiter, from a synchronous caller's point of view (a task of its own).
    let limiter = Arc::new(Limiter::with_redis_store(store, OnError::Deny, RedisMetrics::new()));
    let t2 = tokens("t2", gcra, 900);
    assert_eq!(limiter.check(std::slice::from_ref(&t2)).await.1, Ticket::Redis);
    limiter.adjust(Ticket::Redis, "t2", "k", gcra, -800);
    eventually!(
        "the reservation is reconciled",
        Duration::from_secs(2),
        admitted(&limiter.check(&[tokens("t2", gcra, 800)]).await.0)
    );
}

#[tokio::test]
async fn keys_carry_the_hash_tag_and_expire() {
    require_redis!();
    let server = RedisServer::start();
    let store = store(&server);
    let long_header = "h".repeat(400);
    let checks = [
        rate("rps", "tenant-a", Gcra::new(10, S, None), false),
        rate("rps", &long_header, Gcra::new(10, S, None), false),
        tokens("tpm", Gcra::new(10_000, MIN, None), 5_000),
        slot("conc", 4, "req"),
    ];
    assert!(admitted(&store.check(&checks).await.unwrap()));
    let mut c = conn(&server).await;
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut c).await.unwrap();
    keys.sort();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for key in &keys {
        assert!(key.starts_with(KEY_PREFIX) && KEY_PREFIX.contains("{lim}"), "{key}");
        assert!(key.len() < 128, "long names are hashed: {key}");
        let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut c).await.unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
    let ttl = |k: String| {
        let mut c = c.clone();
        async move { redis::cmd("PTTL").arg(k).query_async::<i64>(&mut c).await.unwrap() }
    };
    // A rate key lives until its bucket is full again (0.1 s here) plus slack; a half-spent
    // token budget about half a minute; a lease set the lease TTL (60 s by default).
    assert!(ttl(gcra_key("rps", "tenant-a")).await <= 1_100);
    let tpm = ttl(gcra_key("tpm", "k")).await;
    assert!((29_000..=31_000).contains(&tpm), "{tpm}");
    let conc = ttl(slots_key("conc", "t")).await;
    assert!((55_000..=60_000).contains(&conc), "{conc}");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let left: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut c).await.unwrap();
    assert_eq!(left.len(), 2, "the rate keys vanished once idle: {left:?}");
}

fn fallbacks(m: &RedisMetrics, mode: &str) -> u64 {
    m.fallbacks.with_label_values(&[mode]).get()
}

fn check_errors(m: &RedisMetrics) -> u64 {
    ["timeout", "unavailable", "redis", "protocol"]
        .iter()
        .map(|k| m.errors.with_label_values(&["check", k]).get())
        .sum()
}

/// Log lines written on this thread (the tests run on a current-thread runtime).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .finish();
        (logs.clone(), tracing::subscriber::set_default(subscriber))
    }

    fn count(&self, level: &str, text: &str) -> usize {
        let all = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        all.lines().filter(|l| l.contains(level) && l.contains(text)).count()
    }
}

/// Redis killed mid-run: the limiter answers every check with the `on_error` fallback (fast,
/// no panic, each fallback counted), and uses Redis again once a new server listens. The
/// outage is logged once as it starts and once as it ends.
async fn killed_redis(on_error: OnError, mode: &str) {
    let (logs, _guard) = Logs::capture();
    let mut server = RedisServer::start();
    let metrics = RedisMetrics::new();
    let limiter = Arc::new(Limiter::with_redis(&server.url(), on_error, TIMEOUT, metrics.clone()).unwrap());
    // 3 per minute: the local fallback's own counter shows through.
    let limit = [rate("rpm", "k", Gcra::new(3, MIN, None), false), slot("conc", 10, "req")];
    let (r, t) = limiter.check(&limit).await;
    assert!(admitted(&r) && t == Ticket::Redis, "{r:?} {t:?}");
    drop(Held::new(limiter.clone(), t, &limit));

    server.kill();
    let started = Instant::now();
    let mut tickets = vec![];
    let mut admissions = vec![];
    for _ in 0..40 {
        let (r, t) = limiter.check(&limit).await;
        tickets.push(t);
        admissions.push(admitted(&r));
        // Released where taken: locally for `local`, nowhere for allow/deny.
        drop(Held::new(limiter.clone(), t, &limit));
    }
    let outage = started.elapsed();
    assert!(limiter.redis_down());
    assert!(outage < Duration::from_secs(2), "fallbacks are fast, not a timeout each: {outage:?}");
    assert_eq!(fallbacks(&metrics, mode), 40, "every fallback is counted");
    let errors = check_errors(&metrics);
    assert!((1..=10).contains(&errors), "one failed probe per probe interval, not one per request: {errors}");
    match on_error {
        OnError::Local => {
            assert!(tickets.iter().all(|t| *t == Ticket::Local));
            assert_eq!(admissions.iter().filter(|a| **a).count(), 3, "the local store enforces the limit");
        }
        OnError::Allow => assert!(tickets.iter().all(|t| *t == Ticket::None) && admissions.iter().all(|a| *a)),
        OnError::Deny => assert!(tickets.iter().all(|t| *t == Ticket::None) && admissions.iter().all(|a| !*a)),
    }

    // Redis is back (empty: a restarted server without persistence).
    let _server = RedisServer::start_on(server.port);
    let recovering = Instant::now();
    eventually!(
        "the limiter uses Redis again",
        Duration::from_secs(5),
        limiter.check(&[rate("after", "k", Gcra::new(1000, S, None), false)]).await.1 == Ticket::Redis
    );
    eprintln!("{mode}: 40 fallbacks in {outage:?}, recovered in {:?}", recovering.elapsed());
    assert!(!limiter.redis_down());
    let (r, t) = limiter.check(&limit).await;
    assert!(admitted(&r) && t == Ticket::Redis && r[0].remaining == 2, "counted in the new Redis: {r:?}");
    assert_eq!(logs.count("WARN", "Redis limit store failed"), 1, "one warning per outage");
    assert_eq!(logs.count("INFO", "Redis limit store answers again"), 1, "one line when it is over");
}

#[tokio::test]
async fn redis_killed_mid_run_falls_back_to_local_and_recovers() {
    require_redis!();
    killed_redis(OnError::Local, "local").await;
}

#[tokio::test]
async fn redis_killed_mid_run_falls_back_to_allow_and_recovers() {
    require_redis!();
    killed_redis(OnError::Allow, "allow").await;
}

#[tokio::test]
async fn redis_killed_mid_run_falls_back_to_deny_and_recovers() {
    require_redis!();
    killed_redis(OnError::Deny, "deny").await;
}

#[tokio::test]
async fn a_slow_redis_times_out_into_the_fallback() {
    require_redis!();
    let server = RedisServer::start();
    let metrics = RedisMetrics::new();
    let limiter = Limiter::with_redis(&server.url(), OnError::Local, TIMEOUT, metrics.clone()).unwrap();
    let limit = [rate("rps", "k", Gcra::new(1000, S, None), false)];
    assert_eq!(limiter.check(&limit).await.1, Ticket::Redis);

    // Another client makes Redis sleep for a second.
    let mut other = conn(&server).await;
    let sleeper =
        tokio::spawn(async move { redis::cmd("DEBUG").arg("SLEEP").arg("1").query_async::<()>(&mut other).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let (r, t) = limiter.check(&limit).await;
    let took = started.elapsed();
    assert!(admitted(&r) && t == Ticket::Local, "{r:?} {t:?}");
    assert!(took >= TIMEOUT && took < TIMEOUT * 3, "bounded by the timeout: {took:?}");
    assert_eq!(metrics.errors.with_label_values(&["check", "timeout"]).get(), 1);
    assert_eq!(fallbacks(&metrics, "local"), 1);
    // The next checks do not wait again: they fall back at once until a probe succeeds.
    let started = Instant::now();
    assert_eq!(limiter.check(&limit).await.1, Ticket::Local);
    assert!(started.elapsed() < TIMEOUT / 2);

    sleeper.await.unwrap().unwrap();
    eventually!(
        "Redis is used again after its sleep",
        Duration::from_secs(5),
        limiter.check(&limit).await.1 == Ticket::Redis
    );
    assert!(!limiter.redis_down());
    assert!(metrics.duration.with_label_values(&["check"]).get_sample_count() >= 3);
}

#[tokio::test]
async fn a_store_made_while_redis_is_down_connects_when_it_comes_up() {
    require_redis!();
    let port = redis_server::free_port();
    let store = RedisStore::new(&format!("redis://127.0.0.1:{port}/"), TIMEOUT).expect("no connection needed");
    let check = [rate("r", "k", Gcra::new(10, S, None), false)];
    assert!(store.check(&check).await.is_err());
    let _server = RedisServer::start_on(port);
    eventually!("the store connects", Duration::from_secs(5), store.check(&check).await.is_ok());
}
