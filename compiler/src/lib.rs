//! The gw policy compiler: `.gwp` text in, an immutable decision graph out.
//!
//! Stages, one module each, data flowing one way:
//! `load` (files, imports) → `syntax` (pest → `ast`) → `resolve` (names) → `check` (types,
//! values, semantic rules, lints) → `lower` (AST → `gw_engine::graph`); `compile` runs them
//! all. `eval` is the reference evaluator the graph must agree with; `fmt` prints an AST back
//! as canonical text; `testing` runs a policy's `test` blocks. The graph and what it reads
//! (request, value, the strict body reader `ijson`, keys, limits) are the `gw-engine` crate.

pub mod ast;
pub mod chars;
pub mod check;
pub mod check_cmd;
pub mod cli;
pub mod diagnostics;
pub mod eval;
pub mod excerpt;
pub mod fmt;
#[cfg(test)]
mod graph_tests;
pub mod load;
pub mod lower;
pub mod program;
pub mod resolve;
pub mod source;
pub mod startup;
pub mod support;
pub mod syntax;
pub mod testing;

// The engine's modules, at their old paths, for the runtime and tests.
pub use gw_engine::{gcra, graph, ijson, keys, lang, path, request, template, tokens, value};

use std::path::Path;

pub use check::Mode;
use diagnostics::Diag;
use graph::Graph;
use load::{DiskLoader, Loader, MemLoader};
use program::Program;
use source::Sources;

/// How to compile.
pub struct Options<'a> {
    pub mode: Mode,
    /// Where `env("NAME")` values come from.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Options<'static> {
    /// Check mode, reading the process environment.
    pub fn check() -> Options<'static> {
        Options { mode: Mode::Check, env: &process_env }
    }

    /// Serve mode (unset env vars are errors), reading the process environment.
    pub fn serve() -> Options<'static> {
        Options { mode: Mode::Serve, env: &process_env }
    }
}

/// The result of compiling: every diagnostic, and the program and its decision graph if there
/// were no errors.
#[derive(Debug)]
pub struct Output {
    pub sources: Sources,
    pub diagnostics: Vec<Diag>,
    pub program: Option<Program>,
    /// The program lowered (None when there is no program or lowering failed).
    pub graph: Option<Graph>,
    /// Why a checked program did not lower: a compiler bug, or a route automaton too large.
    /// Kept out of `diagnostics`, which say what `check` thinks of the policy; a caller that
    /// needs the graph (`gw serve`, `gw-check --serve`) reports it as an error.
    pub lower_error: Option<Diag>,
}

impl Output {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diag::is_error)
    }

    /// The graph, or why the program did not lower; None when there is no program.
    pub fn lowered(&self) -> Option<Result<&Graph, &Diag>> {
        match (&self.graph, &self.lower_error) {
            (Some(g), _) => Some(Ok(g)),
            (None, Some(d)) => Some(Err(d)),
            (None, None) => None,
        }
    }
}

/// Compile the policy rooted at `root`, reading files through `loader`.
pub fn compile(loader: &dyn Loader, root: &Path, opts: &Options<'_>) -> Output {
    let loaded = load::load(loader, root);
    let mut sources = loaded.sources;
    let mut diags = loaded.diags;
    let items = loaded.items;

    // Names and meaning are checked only on a program that read cleanly: after a syntax error
    // the items are incomplete, and their "errors" would only be noise.
    if !diags.iter().any(Diag::is_error) {
        let (_names, resolve_diags) = resolve::resolve(&items);
        let resolve_failed = resolve_diags.iter().any(Diag::is_error);
        diags.extend(resolve_diags);
        // Checking a program with unresolved names or matcher cycles would only repeat errors.
        if !resolve_failed {
            diags.extend(check::check(&items));
        }
        if opts.mode == Mode::Serve {
            diags.extend(support::no_routes(&items));
        }
    }
    let (env, env_diags) = load::env_vars(&items, opts.env, opts.mode);
    diags.extend(env_diags);
    if opts.mode == Mode::Serve {
        diags.extend(startup::startup(&items, &env, root));
    }
    let (keysets, key_files, key_diags) = load::key_files(&items, &mut sources, loader, &env);
    diags.extend(key_diags);
    let (jwtsets, basicsets, credential_files, credential_diags) =
        load::credential_files(&items, &mut sources, loader, &env);
    diags.extend(credential_diags);
    if !diags.iter().any(Diag::is_error) {
        diags.extend(check::lints(&items, &keysets));
    }

    diags.sort_by_key(|d| d.primary_span().map(|s| (s.file, s.start)).unwrap_or_default());
    let program = if diags.iter().any(Diag::is_error) {
        None
    } else {
        let mut files: Vec<std::path::PathBuf> = sources.files().map(|(_, f)| f.path.clone()).collect();
        files.extend(key_files);
        files.extend(credential_files);
        files.dedup();
        Some(Program { sources: sources.clone(), files, items, env, keysets, jwtsets, basicsets })
    };
    let (graph, lower_error) = match program.as_ref().map(lower::lower) {
        Some(Ok(g)) => (Some(g), None),
        Some(Err(d)) => (None, Some(d)),
        None => (None, None),
    };
    Output { sources, diagnostics: diags, program, graph, lower_error }
}

/// Compile a policy file from disk.
pub fn compile_path(path: &Path, opts: &Options<'_>) -> Output {
    compile(&DiskLoader, path, opts)
}

/// Compile one policy held in memory (named `policy.gwp`; it cannot import files).
pub fn compile_str(text: &str, opts: &Options<'_>) -> Output {
    let loader = MemLoader::default().with("policy.gwp", text);
    compile(&loader, Path::new("policy.gwp"), opts)
}
