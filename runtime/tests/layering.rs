//! What may depend on what (runtime/README.md), checked on the sources: no module reaches a
//! module that reaches back, a request phase uses earlier phases only, and the listener layer
//! does not know the pipeline.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The request phases in the order the pipeline runs them.
const PHASES: [&str; 10] =
    ["inspect", "cors", "decide", "cache", "limit", "respond", "target", "upstream_request", "forward", "finish"];

/// Module name (`proxy`, `phases::limit`) → the crate modules its source names.
fn modules(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = vec![];
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).unwrap() {
                files.push(inner.unwrap().path());
            }
        } else {
            files.push(path);
        }
    }
    let mut names = BTreeMap::new();
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "rs")) {
        let rel = path.strip_prefix(src).unwrap().with_extension("");
        let name = rel.to_string_lossy().replace("/mod", "").replace('/', "::");
        if name != "lib" && name != "main" {
            names.insert(name, std::fs::read_to_string(path).unwrap());
        }
    }
    let known: BTreeSet<String> = names.keys().cloned().collect();
    names
        .iter()
        .map(|(name, text)| {
            let mut deps = BTreeSet::new();
            // `crate::a::b`, `crate::a::{b, c}`, `crate::{a, b}`: every known module named.
            for (at, _) in text.match_indices("crate::") {
                let rest = &text[at + "crate::".len()..];
                let mut end = rest.find(|c: char| !(c.is_alphanumeric() || "_:{".contains(c))).unwrap_or(rest.len());
                if rest[..end].contains('{') {
                    end = rest.find('}').unwrap_or(end);
                }
                let (prefix, items) = rest[..end].split_once('{').unwrap_or((&rest[..end], ""));
                let named = std::iter::once(prefix.to_string())
                    .chain(items.split(',').map(|item| format!("{prefix}{}", item.trim())));
                for path in named {
                    let segs: Vec<&str> = path.split("::").collect();
                    for n in 1..=segs.len().min(2) {
                        let module = segs[..n].join("::");
                        if known.contains(&module) {
                            deps.insert(module);
                        }
                    }
                }
            }
            deps.remove(name);
            (name.clone(), deps)
        })
        .collect()
}

/// A loop `a → … → a`, if there is one.
fn find_loop(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if !done.insert(node.to_string()) {
            return None;
        }
        path.push(node.to_string());
        for dep in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = walk(graph, dep, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| walk(graph, n, &mut vec![], &mut done))
}

fn src(dir: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)
}

#[test]
fn no_import_loops() {
    for dir in ["src", "mock/src"] {
        let graph = modules(&src(dir));
        assert!(graph.len() > 5, "{dir}: read too few modules");
        if let Some(cycle) = find_loop(&graph) {
            panic!("{dir}: import loop {}", cycle.join(" → "));
        }
    }
}

#[test]
fn phases_use_earlier_phases_only() {
    let graph = modules(&src("src"));
    let on_disk: BTreeSet<&str> = graph.keys().filter_map(|m| m.strip_prefix("phases::")).collect();
    assert_eq!(on_disk, PHASES.into_iter().collect(), "a phase module is missing from PHASES, in order");
    for (i, phase) in PHASES.iter().enumerate() {
        for dep in &graph[&format!("phases::{phase}")] {
            if let Some(other) = dep.strip_prefix("phases::") {
                let j = PHASES.iter().position(|p| *p == other).unwrap();
                assert!(j < i, "phase `{phase}` uses the later phase `{other}`");
            }
        }
    }
}

#[test]
fn the_listener_layer_does_not_know_the_pipeline() {
    let graph = modules(&src("src"));
    for dep in &graph["server"] {
        let above = ["proxy", "phases", "admin", "gateway", "account", "exchange"].contains(&dep.as_str());
        assert!(!above && !dep.starts_with("phases::"), "server uses `{dep}`");
    }
}

/// The runtime reaches the compiler through `gw-compile` (its one entry point) and executes
/// `gw-engine`'s graph: cargo refuses anything else because `gw-compiler`, which holds the AST,
/// the checker and the reference evaluator, is not one of its dependencies.
#[test]
fn the_runtime_reaches_the_compiler_only_through_its_entry_crate() {
    let manifest = std::fs::read_to_string(src("Cargo.toml")).unwrap();
    let deps: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.split_once('=').map(|(name, _)| name.trim()))
        .filter(|name| name.starts_with("gw-"))
        .collect();
    assert!(deps.contains(&"gw-compile") && deps.contains(&"gw-engine"), "{deps:?}");
    assert!(!deps.contains(&"gw-compiler"), "the runtime depends on gw-compiler itself: {deps:?}");
    for dir in ["src", "tests"] {
        // (This file names the rule itself.)
        for file in rust_files(&src(dir)).into_iter().filter(|f| !f.ends_with("layering.rs")) {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(!text.contains("gw_compiler::"), "{}: names gw_compiler", file.display());
        }
    }
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}
