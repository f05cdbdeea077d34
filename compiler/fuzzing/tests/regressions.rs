//! Replays every input in `fuzz/regressions/<target>/` (each one crashed a fuzz target once)
//! through the same property the fuzz target checks (`gw_fuzzing`), so a fixed
//! crash stays fixed without running the fuzzer. See fuzz/README.md for adding one.

// Helpers outside `#[test]` functions fail the test by panicking.
#![allow(clippy::panic)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use gw_fuzzing as fuzzing;

fn regressions(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions").join(target);
    // A missing folder would silently test nothing: it must exist, even when empty.
    assert!(dir.is_dir(), "{} is missing: the regression folders moved?", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        // Dotfiles (.gitkeep) and notes are not inputs.
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            !name.starts_with('.') && !name.ends_with(".md")
        })
        .collect();
    files.sort();
    files
}

/// Generous: this runs unoptimised, where the fuzzers' inputs take several times longer.
const SLOW: std::time::Duration = std::time::Duration::from_secs(30);

fn replay(target: &str, property: fn(&[u8])) {
    let files = regressions(target);
    let mut failed = vec![];
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("cannot read {}: {e}", f.display()));
        let start = std::time::Instant::now();
        if catch_unwind(AssertUnwindSafe(|| property(&data))).is_err() {
            failed.push(f.display().to_string());
        }
        // Inputs that once timed out must stay fast (the fuzzers' limit is 10 s, in release).
        let took = start.elapsed();
        if took > SLOW {
            failed.push(format!("{} (took {took:?})", f.display()));
        }
    }
    assert!(failed.is_empty(), "fuzz target `{target}` fails again on:\n  {}", failed.join("\n  "));
    eprintln!("{target}: {} regression input(s) replayed", files.len());
}

#[test]
fn parse_regressions() {
    replay("parse", fuzzing::parse);
}

#[test]
fn compile_structured_regressions() {
    replay("compile_structured", fuzzing::compile_structured);
}

#[test]
fn roundtrip_regressions() {
    replay("roundtrip", fuzzing::roundtrip);
}

#[test]
fn differential_regressions() {
    replay("differential", fuzzing::differential);
}

/// The `differential` property (graph == eval, and evaluation within the checker's types) on a
/// few thousand deterministic pseudo-random inputs, so `cargo test` exercises it without the
/// fuzzer. Also asserts the generator still yields policies that compile and requests that get
/// past routing, and bodies that get refused, so the property is not vacuous.
#[test]
fn differential_holds_on_generated_inputs() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut compiled, mut routed, mut invalid) = (0, 0, 0);
    for _ in 0..1000 {
        let len = 256 + (next() % 3840) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(outcomes) = fuzzing::differential_outcomes(&data) {
            compiled += 1;
            routed += outcomes.iter().filter(|(_, r)| *r).count();
            invalid += outcomes.iter().filter(|(s, _)| *s == 400).count();
        }
    }
    eprintln!("differential: {compiled} of 1000 policies compiled; {routed} requests routed; {invalid} answered 400");
    assert!(compiled > 100 && routed > 100, "the generator no longer reaches the decision: {compiled}, {routed}");
}
