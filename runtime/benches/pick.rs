//! The cost of picking a target per try, for each balancing strategy, with 3 and 300 targets
//! (all healthy, some load and latency recorded). Criterion measures each; a summary table at
//! the end compares them within this one run (shared, noisy machines: ratios matter more).
//!
//!     cargo bench -p gw-runtime --bench pick -- --warm-up-time 1 --measurement-time 2

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use gw_engine::graph::{BalanceInfo, Resolved, TargetAddr, TargetInfo, UpstreamInfo};
use gw_runtime::pool::health::Outcome;
use gw_runtime::pool::{Pool, Registry, Wants};

const STRATEGIES: &[(&str, BalanceInfo)] = &[
    ("round_robin", BalanceInfo::RoundRobin),
    ("weighted", BalanceInfo::Weighted),
    ("least_conn", BalanceInfo::LeastConn),
    ("least_latency", BalanceInfo::LeastLatency),
    ("hash", BalanceInfo::Hash),
];

fn pool(balance: BalanceInfo, n: usize) -> Pool {
    let targets = (0..n)
        .map(|i| {
            let url = format!("http://10.0.{}.{}:8000", i / 250, i % 250);
            TargetInfo {
                addr: Some(TargetAddr::parse(&url).unwrap()),
                url: Resolved { value: Some(url), secret: false, env: vec![] },
                weight: 1 + (i as u64 % 5),
                region: Some(if i % 2 == 0 { "east" } else { "west" }.to_string()),
            }
        })
        .collect();
    let info = UpstreamInfo {
        name: "bench".into(),
        targets,
        balance,
        headers: vec![],
        timeout_ns: 1,
        connect_timeout_ns: 1,
        health: None,
        retry: None,
        max_connections: None,
        affinity: false,
    };
    let pool = Pool::new(&info, &Registry::default()).unwrap();
    for (i, t) in pool.targets.iter().enumerate() {
        t.health.in_flight.store(i % 7, Relaxed);
        pool.record(i, Outcome::Success, Duration::from_micros(500 + 37 * (i as u64 % 11)));
    }
    pool
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut table = vec![];
    for &n in &[3usize, 300] {
        let mut group = c.benchmark_group(format!("pick/{n}"));
        for (name, balance) in STRATEGIES {
            let pool = pool(balance.clone(), n);
            let mut k = 0u64;
            let wants = |k: u64| Wants { key: Some(format!("session-{}", k % 1000)), region: None };
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    k += 1;
                    black_box(pool.pick(&wants(k), &[]))
                })
            });
            // The summary: a plain timed loop, the same work.
            let rounds = 20_000;
            let started = Instant::now();
            for k in 0..rounds {
                black_box(pool.pick(&wants(k), &[]));
            }
            table.push((n, *name, started.elapsed().as_nanos() as f64 / rounds as f64));
        }
        group.finish();
    }
    c.final_summary();
    println!("\npick cost per try (ns, includes building the hash key string):");
    println!("{:<15} {:>10} {:>10}", "strategy", "3", "300");
    for (name, _) in STRATEGIES {
        let at = |n| table.iter().find(|(m, s, _)| *m == n && s == name).map_or(0.0, |r| r.2);
        println!("{:<15} {:>10.0} {:>10.0}", name, at(3), at(300));
    }
}
