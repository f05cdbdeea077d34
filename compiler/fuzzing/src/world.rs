//! The world every fuzzed compile sees: an environment, key files, a module to import, and
//! the checks every compile output must pass.

use std::path::Path;

use gw_compiler::diagnostics::{self, Diag, Severity, Style};
use gw_compiler::keys::hash_key;
use gw_compiler::load::MemLoader;
use gw_compiler::request::Request;
use gw_compiler::source::Sources;
use gw_compiler::{eval, lower, testing, Mode, Options, Output};

/// The environment every fuzzed compile sees: names starting with `UNSET` are unset, every
/// other name has a value (so `env("X")` in a generated policy mostly resolves).
fn fuzz_env(name: &str) -> Option<String> {
    if name == "SALT" {
        Some(SALT.to_string())
    } else if name.starts_with("UNSET") {
        None
    } else {
        Some(format!("v-{}", name.to_ascii_lowercase()))
    }
}

/// Keys the generated key files hold: (key, tenant, key name).
pub(crate) const KEYS: &[(&str, &str, &str)] = &[
    ("sk-a-1", "t0", "a-1"),
    ("sk-a-2", "t0", "a-2"),
    ("sk-b-1", "t1", "b-1"),
    ("sk-c-1", "t2", "c-1"),
    ("sk-x-1", "nobody", "x-1"),
];

/// Bearer JWTs (HS256, secret `fuzz-jwt-secret`) a request may carry for the `j0` set every
/// generated policy declares: two valid ones with different claims, one expired.
pub(crate) const TOKENS: &[&str] = &[
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzLTEiLCJvcmciOiJ0MSIsInJvbGUiOiJhZG1pbiIsIm4iOjUsImV4cCI6NDEwMjQ0NDgwMH0.pCQsFkFHDjfVcTd0Fr0okPnW6T0KUdpimtuAIZxKsmo",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzLTIiLCJvcmciOiJ0MCIsInJvbGUiOlsiYSIsImIiXSwiZXhwIjo0MTAyNDQ0ODAwfQ.r8HSJAluqM1YngUEMMbrvpOmlLTKCOJO5IQyHBRphnw",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzLTMiLCJvcmciOiJ0MSIsImV4cCI6MTAwMH0.XhXvx8Q6xCunIBMPaRCFLg3TL4HJP26qT_lB_aKLfYo",
];

/// The salt `salt "pepper"` adds.
const SALT: &str = "pepper";

fn key_file(salt: Option<&str>) -> String {
    KEYS.iter().map(|(k, t, n)| format!("{} {t} {n}\n", hex::encode(hash_key(salt, k)))).collect()
}

/// A loader holding the policy, a module it may import and key files it may name.
pub(crate) fn loader_with(policy: impl Into<Vec<u8>>) -> MemLoader {
    MemLoader::default()
        .with("policy.gwp", policy)
        .with(
            "lib.gwp",
            "upstream lib_up { target \"http://127.0.0.1:9\" }\nmatcher lib_m = header[\"x-lib\"] == \"1\"\n",
        )
        .with("k.keys", key_file(None))
        .with("keys/k.keys", key_file(None))
        .with("s.keys", key_file(Some(SALT)))
        .with("bad.keys", "not-hex t n\n\u{e9}\u{e9} x\n")
}

pub(crate) fn compile_with(loader: &MemLoader, mode: Mode) -> Output {
    let opts = Options { mode, env: &fuzz_env };
    gw_compiler::compile(loader, Path::new("policy.gwp"), &opts)
}

/// Every label of every diagnostic lies inside its file, on char boundaries, and every
/// diagnostic renders (plain, and as JSON).
fn check_diagnostics(sources: &Sources, diags: &[Diag]) {
    for d in diags {
        for l in &d.labels {
            let Some(file) = sources.get(l.span.file) else {
                panic!("diagnostic {:?} points into unknown file {:?}: {d:#?}", d.code, l.span.file)
            };
            let (start, end) = (l.span.start as usize, l.span.end as usize);
            let text = &file.text;
            assert!(
                start <= end && end <= text.len(),
                "diagnostic {:?} span {start}..{end} outside `{}` ({} bytes): {d:#?}",
                d.code,
                file.name,
                text.len()
            );
            assert!(
                text.is_char_boundary(start) && text.is_char_boundary(end),
                "diagnostic {:?} span {start}..{end} not on char boundaries of `{}`: {d:#?}",
                d.code,
                file.name
            );
        }
        let out = diagnostics::render(d, sources, Style::Plain);
        assert!(!out.is_empty(), "diagnostic {:?} rendered as nothing", d.code);
        let _ = diagnostics::to_json(d, sources);
    }
}

/// Compile through `loader`, check the diagnostics, and when the policy is valid lower it,
/// and run its tests with both deciders. Returns the output.
pub(crate) fn compile_and_check(loader: &MemLoader, mode: Mode) -> Output {
    let out = compile_with(loader, mode);
    check_diagnostics(&out.sources, &out.diagnostics);
    if let Some(program) = &out.program {
        assert!(!out.has_errors(), "a program was produced despite errors");
        match lower::lower(program) {
            Ok(graph) => {
                let _ = graph.stats();
                let _ = graph.to_dot();
                let by_eval = testing::run_tests(program, &|r: &Request| eval::decide(program, r));
                let by_graph = testing::run_tests(program, &|r: &Request| graph.decide(r));
                for (e, g) in by_eval.iter().zip(&by_graph) {
                    assert_eq!(
                        e.passed(),
                        g.passed(),
                        "test {:?} passes with one decider and fails with the other:\neval: {:#?}\ngraph: {:#?}",
                        e.name,
                        e.failures,
                        g.failures
                    );
                }
                for r in by_eval.iter().chain(&by_graph) {
                    check_diagnostics(&program.sources, &r.failures);
                }
            }
            Err(d) => {
                assert!(d.severity != Severity::Bug, "lowering a valid program failed with a bug: {d:#?}");
                check_diagnostics(&program.sources, std::slice::from_ref(&d));
            }
        }
    }
    out
}
