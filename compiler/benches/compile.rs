//! Compile time and decision time of generated policies with 10 to 10,000 routes. Criterion
//! measures each; a summary table at the end compares sizes within this one run (these
//! machines are shared and noisy, so the ratios matter more than the absolute numbers).
//!
//!     cargo bench -p gw-compiler --bench compile -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use gw_compiler::graph::Graph;
use gw_compiler::program::Program;
use gw_compiler::request::Request;
use gw_compiler::source::FileId;
use gw_compiler::{lower, syntax, Mode, Options};

const SIZES: &[usize] = &[10, 100, 1_000, 10_000];

/// A realistic policy of `n` routes: distinct literal paths, every 4th with a `{param}`, every
/// 10th bound to a host (exact or wildcard), every 5th with auth, every 3rd reading the body,
/// guards on a shared matcher and a limit on every route.
fn policy(n: usize) -> String {
    let mut s = String::from(
        r#"
gateway { listen "127.0.0.1:8080" }
upstream backend { target "http://127.0.0.1:9000" weight 2; target "http://127.0.0.1:9001" }
keys k from "k.keys"
tenant pro { rate 100/s burst 200; tokens 500k/min; concurrent 20 }
matcher blocked = header["x-block"] == "yes" or client_ip == "10.9.9.9"
matcher gpt4 = body.model matches /^gpt-4/
"#,
    );
    for i in 0..n {
        let path = if i % 4 == 1 { format!("/v1/svc{i}/items/{{id}}") } else { format!("/v1/svc{i}/items") };
        let host = match i % 10 {
            7 => format!(" host \"t{i}.example.com\""),
            3 => format!(" host \"*.w{i}.example.com\""),
            _ => String::new(),
        };
        let methods = if i % 2 == 0 { "GET|POST" } else { "POST" };
        s.push_str(&format!("route r{i} {{\n  when {methods} \"{path}\"{host}\n"));
        if i % 5 == 1 {
            s.push_str("  auth k\n");
        }
        s.push_str("  deny 403 \"blocked\" if blocked\n");
        if i % 3 == 0 {
            s.push_str("  deny 400 \"max_tokens above 4096\" if body.max_tokens > 4096\n");
        }
        s.push_str(&format!("  allow if header[\"x-tier\"] != \"banned-{}\" else 402 \"banned\"\n", i % 7));
        s.push_str("  limit rate 10/s per client\n");
        if i % 3 == 0 {
            s.push_str("  limit tokens 100k/min per header \"x-user\" if gpt4\n");
        }
        s.push_str("  to backend\n}\n");
    }
    s
}

/// syntax::parse → Program (what `lower` needs; key files are not part of the measure).
fn parse(text: &str) -> Program {
    let (parsed, diags) = syntax::parse(FileId(0), text);
    assert!(diags.iter().all(|d| !d.is_error()), "generated policy does not parse");
    Program { items: parsed.file.items, ..Program::default() }
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// The whole pipeline: load, parse, resolve, check, then lower.
fn full_pipeline(text: &str) -> Option<Graph> {
    let opts = Options { mode: Mode::Check, env: &no_env };
    let loader = gw_compiler::load::MemLoader::default().with("policy.gwp", text).with("k.keys", "");
    let out = gw_compiler::compile(&loader, std::path::Path::new("policy.gwp"), &opts);
    out.program.and_then(|p| lower::lower(&p).ok())
}

/// The route in the middle (an even one: those take GET).
fn mid(n: usize) -> usize {
    (n / 2) & !1
}

fn hit_request(n: usize) -> Request {
    let mid = mid(n);
    let mut r = Request::new("GET", &format!("/v1/svc{mid}/items"));
    r.host = "api.example.com".into();
    r.headers = vec![
        ("user-agent".into(), "bench/1.0".into()),
        ("content-type".into(), "application/json".into()),
        ("x-tier".into(), "gold".into()),
        ("x-user".into(), "u-17".into()),
    ];
    r.client_ip = Some("10.0.0.1".into());
    r
}

fn miss_request() -> Request {
    let mut r = Request::new("GET", "/v1/nowhere/items");
    r.host = "api.example.com".into();
    r.client_ip = Some("10.0.0.1".into());
    r
}

/// Requests spread over the routes (params filled, wildcard hosts instantiated), with random
/// hosts and one in eight paths random.
fn mixed_requests(n: usize, count: usize) -> Vec<Request> {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..count)
        .map(|_| {
            let i = (rand() % n as u64) as usize;
            let mut path = format!("/v1/svc{i}/items");
            if i % 4 == 1 {
                path.push_str(&format!("/id{}", rand() % 1000));
            }
            if rand() % 8 == 0 {
                path = format!("/{:x}/{:x}", rand(), rand());
            }
            let method = if i & 1 == 0 && rand() & 1 == 0 { "GET" } else { "POST" };
            let mut r = Request::new(method, &path);
            r.host = match i % 10 {
                7 => format!("t{i}.example.com"),
                3 => format!("x{}.w{i}.example.com", rand() % 100),
                _ => format!("h{:x}.example.com", rand() % 100_000),
            };
            r.headers = vec![("x-tier".into(), "gold".into()), ("x-user".into(), "u-17".into())];
            r.body = Some(r#"{"model": "gpt-4o", "max_tokens": 100}"#.into());
            r.client_ip = Some("10.0.0.1".into());
            r
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    for &n in SIZES {
        let text = policy(n);
        group.bench_with_input(BenchmarkId::new("parse+lower", n), &text, |b, text| {
            b.iter(|| lower::lower(&parse(black_box(text))).expect("lowers"))
        });
        let program = parse(&text);
        group.bench_with_input(BenchmarkId::new("lower", n), &program, |b, p| {
            b.iter(|| lower::lower(black_box(p)).expect("lowers"))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decide");
    for &n in SIZES {
        let graph = lower::lower(&parse(&policy(n))).expect("lowers");
        let hit = hit_request(n);
        assert_eq!(graph.decide(&hit).route, Some(format!("r{}", mid(n))));
        let miss = miss_request();
        group.bench_with_input(BenchmarkId::new("hit", n), &hit, |b, r| b.iter(|| graph.decide(black_box(r))));
        group.bench_with_input(BenchmarkId::new("miss", n), &miss, |b, r| b.iter(|| graph.decide(black_box(r))));
    }
    group.finish();

    // The strict body reader against a plain serde_json parse of the same chat bodies.
    let mut group = c.benchmark_group("body");
    for turns in [4usize, 200] {
        let messages: Vec<String> = (0..turns)
            .map(|i| format!(r#"{{"role":"user","content":"message {i} with some text, \u00e9 and 0.{i}"}}"#))
            .collect();
        let body = format!(
            r#"{{"model":"gpt-4o","max_tokens":4096,"temperature":0.7,"stream":false,"messages":[{}]}}"#,
            messages.join(",")
        )
        .into_bytes();
        group.bench_with_input(BenchmarkId::new("strict", body.len()), &body, |b, body| {
            b.iter(|| gw_compiler::ijson::read(black_box(body)).expect("reads"))
        });
        group.bench_with_input(BenchmarkId::new("serde_json", body.len()), &body, |b, body| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(body)).expect("reads"))
        });
    }
    group.finish();
}

/// Median time per call over `rounds` rounds of `per_round` calls.
fn median_ns(rounds: usize, per_round: usize, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_round {
                f();
            }
            t.elapsed().as_nanos() as f64 / per_round as f64
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

fn summary() {
    println!("\nsummary (medians measured in this run; ratios against 10 routes)");
    println!(
        "{:>7} {:>15} {:>14} {:>16} {:>13} {:>13} {:>10} {:>10} {:>14} {:>14}",
        "routes",
        "parse+lower ms",
        "lower ms",
        "full pipeline ms",
        "decide hit ns",
        "decide 404 ns",
        "hit ratio",
        "404 ratio",
        "mix cold ns",
        "mix warm ns"
    );
    let mut base = None;
    for &n in SIZES {
        let text = policy(n);
        let compile_rounds = if n >= 10_000 { 3 } else { 7 };
        let parse_lower = median_ns(compile_rounds, 1, || {
            black_box(lower::lower(&parse(&text)).ok());
        }) / 1e6;
        let program = parse(&text);
        let lower_only = median_ns(compile_rounds, 1, || {
            black_box(lower::lower(&program).ok());
        }) / 1e6;
        let t = Instant::now();
        let full = full_pipeline(&text);
        let full_ms = t.elapsed().as_secs_f64() * 1e3;
        let full_ms = if full.is_some() { format!("{full_ms:.1}") } else { "failed".to_string() };
        let graph = lower::lower(&program).expect("lowers");
        let (hit, miss) = (hit_request(n), miss_request());
        let hit_ns = median_ns(41, 20_000, || {
            black_box(graph.decide(black_box(&hit)));
        });
        let miss_ns = median_ns(41, 20_000, || {
            black_box(graph.decide(black_box(&miss)));
        });
        // A mix: 4096 requests to routes all over the policy, with random hosts and a few
        // random paths, first on a fresh graph (cold lazy DFA), then again (warm).
        let mix = mixed_requests(n, 4096);
        let fresh = lower::lower(&program).expect("lowers");
        let t = Instant::now();
        for r in &mix {
            black_box(fresh.decide(r));
        }
        let cold_ns = t.elapsed().as_nanos() as f64 / mix.len() as f64;
        let mut i = 0;
        let warm_ns = median_ns(41, 4096, || {
            i = (i + 1) % mix.len();
            black_box(fresh.decide(&mix[i]));
        });
        let (bh, bm) = *base.get_or_insert((hit_ns, miss_ns));
        println!(
            "{n:>7} {parse_lower:>15.2} {lower_only:>14.2} {full_ms:>16} {hit_ns:>13.0} {miss_ns:>13.0} {:>10.2} {:>10.2} {cold_ns:>14.0} {warm_ns:>14.0}",
            hit_ns / bh,
            miss_ns / bm
        );
        let s = graph.stats();
        println!(
            "        graph: {} literal paths, {} patterns, {} host patterns, {} nodes ({} shared), {} facts, NFA {} KiB, DFA cache {} KiB/thread",
            s.literal_paths,
            s.patterns,
            s.host_patterns,
            s.nodes,
            s.shared_nodes,
            s.facts,
            s.nfa_bytes / 1024,
            s.dfa_cache_bytes / 1024
        );
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    benches(&mut c);
    c.final_summary();
    // `cargo test --benches` runs this binary in test mode: skip the long summary there.
    if !std::env::args().any(|a| a == "--test" || a == "--list" || a == "--profile-time") {
        summary();
    }
}
