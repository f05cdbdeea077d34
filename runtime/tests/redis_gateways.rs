//! Several real `gw` processes sharing one real `redis-server` (each test starts its own on a
//! free port): one global limit, the `on_error` fallback when Redis dies, recovery when it
//! returns, and concurrency slots that never leak.

#![allow(clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod redis_server;
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{users_keys, Gw, GwSpec, Mock};
use futures_util::StreamExt;
use redis_server::RedisServer;

fn policy(limit: &str) -> String {
    format!(
        r#"
gateway {{
    listen "{{LISTEN}}"
    admin  "{{ADMIN}}"
    state  redis env("T_REDIS_URL") on_error local
}}
upstream mock {{ target "{{UPSTREAM}}" }}
keys users from "keys/users.keys"
route models {{
    when  GET "/v1/models"
    auth  users
    {limit}
    to    mock
}}
route chat {{
    when  POST "/v1/chat/completions"
    auth  users
    limit concurrent 5 per key
    to    mock
}}
"#
    )
}

fn gateways(n: usize, mock: &Mock, redis: &str, limit: &str) -> Vec<Arc<Gw>> {
    let text = policy(limit);
    (0..n)
        .map(|_| {
            Arc::new(Gw::start(
                GwSpec::new(&text, &mock.url()).file("keys/users.keys", users_keys()).env("T_REDIS_URL", redis),
            ))
        })
        .collect()
}

/// Hammer the gateways round robin from `workers` tasks until `stop`; counts by status.
struct Load {
    ok: Arc<AtomicU64>,
    limited: Arc<AtomicU64>,
    other: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(gws: &[Arc<Gw>], workers: usize) -> Load {
        let (ok, limited, other) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..workers)
            .map(|w| {
                let urls: Vec<String> = gws.iter().map(|g| g.url("/v1/models")).collect();
                let (ok, limited, other, stop) = (ok.clone(), limited.clone(), other.clone(), stop.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let resp = client.get(&urls[i % urls.len()]).header("x-api-key", "sk-test-1").send().await;
                        match resp.map(|r| r.status().as_u16()) {
                            Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                            Ok(429) => limited.fetch_add(1, Ordering::Relaxed),
                            _ => other.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        Load { ok, limited, other, stop, tasks }
    }

    async fn stop(self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        (self.ok.load(Ordering::Relaxed), self.limited.load(Ordering::Relaxed), self.other.load(Ordering::Relaxed))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_enforce_one_global_limit() {
    require_redis!();
    let redis = RedisServer::start();
    let mock = Mock::start(&["--record=false"]);
    // 100 a second with a burst of 10, per key, across all three gateways.
    let gws = gateways(3, &mock, &redis.url(), "limit rate 100/s burst 10 per key");
    let load = Load::start(&gws, 12);
    // Warm up until the limit is saturated (the burst spent), then count over 10 s: at a load
    // several times the limit, exactly one request per 10 ms is admitted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = |load: &Load| {
        (load.ok.load(Ordering::SeqCst), load.limited.load(Ordering::SeqCst), load.other.load(Ordering::SeqCst))
    };
    let (ok0, limited0, other0) = counts(&load);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (ok1, limited1, other1) = counts(&load);
    let elapsed = started.elapsed().as_secs_f64();
    let (_, _, other_total) = load.stop().await;
    let (ok, limited, other) = (ok1 - ok0, limited1 - limited0, other1 - other0);
    assert_eq!(other_total, 0);
    let expected = 100.0 * elapsed;
    let error = (ok as f64 - expected) / expected;
    println!(
        "3 gateways, {elapsed:.2} s: {ok} admitted (expected {expected:.0}, error {:+.2}%), {limited} limited, {other} other; offered {:.0}/s",
        error * 100.0,
        (ok + limited + other) as f64 / elapsed
    );
    assert_eq!(other, 0, "every answer is 200 or 429");
    assert!((ok + limited) as f64 / elapsed > 300.0, "the load must be several times the limit");
    assert!(error.abs() <= 0.01, "admitted {ok}, expected {expected:.0} ± 1%");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_falls_back_locally_without_errors_and_recovers() {
    require_redis!();
    let mut redis = RedisServer::start();
    let port = redis.port;
    let mock = Mock::start(&["--record=false"]);
    let gws = gateways(2, &mock, &redis.url(), "limit rate 1000/s per key");
    let load = Load::start(&gws, 6);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fallbacks = |gw: &Gw| {
        let gw = gw.admin_url("/metrics");
        async move {
            let m = reqwest::get(gw).await.unwrap().text().await.unwrap();
            m.lines()
                .filter(|l| l.starts_with("gw_redis_fallbacks_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    let during = fallbacks(&gws[0]).await;
    assert!(during > 0.0, "requests during the outage are counted as fallbacks");
    let _redis = RedisServer::start_on(port);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_recovery = fallbacks(&gws[0]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = fallbacks(&gws[0]).await;
    let (ok, limited, other) = load.stop().await;
    println!("outage: {ok} ok, {limited} limited, {other} other; fallbacks {during} → {after_recovery} → {later}");
    assert_eq!(other, 0, "no 5xx (or any error) from gw during the outage");
    assert_eq!(later, after_recovery, "back on Redis: no more fallbacks once it returned");
    // Logged once per outage (its start and its end), not per request. (A loaded machine can
    // add a short outage of its own: a check slower than the timeout.)
    let log = gws[0].proc.log();
    let (failed, recovered) =
        (log.matches("Redis limit store failed").count(), log.matches("Redis limit store answers again").count());
    assert!(failed >= 1 && failed == recovered, "{failed} outage starts, {recovered} ends:\n{log}");
    assert!((failed as f64) < during / 10.0, "logged per request, not per outage: {failed} lines, {during} fallbacks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_aborted_streams_leak_no_concurrency_slot() {
    require_redis!();
    let redis = RedisServer::start();
    let mock = Mock::start(&["--record=false"]);
    let gws = gateways(1, &mock, &redis.url(), "");
    let gw = gws[0].clone();
    let client = reqwest::Client::new();
    let open = || {
        client
            .post(gw.url("/v1/chat/completions"))
            .header("x-api-key", "sk-test-1")
            .header("x-mock-chunks", "50")
            .header("x-mock-chunk-delay-ms", "50")
            .body(r#"{"model":"gpt-4o","stream":true,"messages":[]}"#)
            .send()
    };
    let mut refused = 0;
    for _ in 0..200 {
        // Five at a time (the limit), each cut after its first chunk.
        let batch: Vec<_> = (0..5).map(|_| open()).collect();
        for resp in futures_util::future::join_all(batch).await {
            let resp = resp.unwrap();
            if resp.status() == 429 {
                refused += 1;
                continue;
            }
            let mut body = resp.bytes_stream();
            let _ = body.next().await;
        }
        // Dropped here: the clients went away mid-stream.
    }
    // Give the last releases a moment to reach Redis.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut all_free = false;
    while Instant::now() < deadline {
        let batch: Vec<_> = (0..5).map(|_| open()).collect();
        let statuses: Vec<u16> =
            futures_util::future::join_all(batch).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
        if statuses.iter().all(|s| *s == 200) {
            all_free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("1000 aborted streams, {refused} refused while releases were in flight");
    assert!(all_free, "after 1,000 aborted streams all 5 slots must be free again");
}
