//! Time to report N diagnostics, for N = 1k, 10k and 100k: a policy of N guards that each
//! refuse every request (one `gw::guard_contradiction` each), on one line per guard and all on
//! one line. It compiles the policy and renders every report as `gw-check --max-errors 0 --format
//! plain` would, then prints a table; the per-diagnostic time must stay flat as N grows
//! (it grew with N, 22 s for 64k, when each report copied and rescanned the whole file).
//!
//!     cargo bench -p gw-compiler --bench diagnostics

use std::time::{Duration, Instant};

use gw_compiler::diagnostics::{render, to_json, Style};
use gw_compiler::{compile_str, Options};

const SIZES: &[usize] = &[1_000, 10_000, 100_000];

fn policy(n: usize, one_line: bool) -> String {
    let sep = if one_line { " " } else { "\n    " };
    let guards: String = (0..n).map(|_| format!("deny 400 \"m\" if true{sep}")).collect();
    format!("route r {{{sep}when GET \"/\"{sep}{guards}respond 200\n}}\n")
}

/// (time to compile, time to render every report as text, as JSON, output bytes).
fn measure(text: &str, n: usize) -> (Duration, Duration, Duration, usize) {
    let started = Instant::now();
    let out = compile_str(text, &Options::check());
    let compiled = started.elapsed();
    assert_eq!(out.diagnostics.len(), n, "one diagnostic per guard");
    let started = Instant::now();
    let bytes: usize = out.diagnostics.iter().map(|d| render(d, &out.sources, Style::Plain).len()).sum();
    let rendered = started.elapsed();
    let started = Instant::now();
    let json: usize = out.diagnostics.iter().map(|d| to_json(d, &out.sources).message.len()).sum();
    let as_json = started.elapsed();
    std::hint::black_box(json);
    (compiled, rendered, as_json, bytes)
}

fn main() {
    println!("| diagnostics | layout | compile | render text | per report | JSON | output |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for &one_line in &[false, true] {
        for &n in SIZES {
            let text = policy(n, one_line);
            let (compiled, rendered, json, bytes) = measure(&text, n);
            println!(
                "| {n} | {} | {:.0} ms | {:.0} ms | {:.1} µs | {:.0} ms | {:.1} MB |",
                if one_line { "one line" } else { "a line each" },
                compiled.as_secs_f64() * 1e3,
                rendered.as_secs_f64() * 1e3,
                rendered.as_secs_f64() * 1e6 / n as f64,
                json.as_secs_f64() * 1e3,
                bytes as f64 / 1e6,
            );
        }
    }
}
