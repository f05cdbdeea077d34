//! The compiler as the runtime sees it: policy files in, a decision graph (or rendered
//! diagnostics) out; a request description explained; `gw check`.
//!
//! The runtime depends on this crate and `gw-engine` only, so cargo itself refuses any use of
//! the compiler's insides (the AST, the checker, the reference evaluator) from the runtime:
//! what runs is the graph, and the graph is all the runtime can reach.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use gw_compiler::diagnostics::render;
use gw_compiler::{compile, Options};
use gw_engine::graph::Graph;
use gw_engine::request::{Decision, Request};

pub use gw_compiler::diagnostics::Style;
pub use gw_compiler::load::{DiskLoader, Loader, MemLoader};

/// A policy compiled for `gw serve`.
pub struct Compiled {
    pub graph: Graph,
    /// Every file the policy read (the root, imports, key files), canonical, in read order.
    pub files: Vec<PathBuf>,
    /// Warnings, rendered.
    pub warnings: Vec<String>,
}

/// Compile `root` in serve mode: unset `env(...)` variables and constructs the runtime does not
/// implement are errors, and the program is lowered. `Err` holds the rendered diagnostics with a
/// count line, ready to print.
pub fn compile_for_serve(loader: &dyn Loader, root: &Path, style: Style) -> Result<Compiled, String> {
    let out = compile(loader, root, &Options::serve());
    let rendered: Vec<String> = out.diagnostics.iter().map(|d| render(d, &out.sources, style)).collect();
    let has_errors = out.has_errors();
    let Some(program) = out.program.filter(|_| !has_errors) else {
        let errors = out.diagnostics.iter().filter(|d| d.is_error()).count();
        return Err(format!("{}\n{} error(s) in {}", rendered.join("\n"), errors, root.display()));
    };
    // `compile` lowers a program without errors; a lowering failure is a compiler bug or a
    // route automaton too large, reported like any error.
    let graph = match (out.graph, out.lower_error) {
        (Some(graph), _) => graph,
        (None, Some(d)) => return Err(render(&d, &program.sources, style)),
        (None, None) => return Err(format!("{} did not compile to a graph", root.display())),
    };
    Ok(Compiled { graph, files: program.files, warnings: rendered })
}

/// A request described as JSON (`gw-check explain`'s format) → the request `decide` reads.
pub fn parse_request(text: &str) -> Result<Request, String> {
    gw_compiler::cli::parse_request(text)
}

/// A traced decision in words, as `gw-check explain` prints it.
pub fn explain_text(req: &Request, decision: &Decision) -> String {
    gw_compiler::cli::explain_text(req, decision)
}

/// `gw check ARGS...`: gw-check's command line.
pub fn check_main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    gw_compiler::check_cmd::main_with_args(std::iter::once("gw check".into()).chain(args))
}
