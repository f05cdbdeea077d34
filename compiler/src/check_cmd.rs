//! The `gw-check` command line (also `gw check`): validate gw policies, run their tests, explain decisions, format, and show the
//! compiled graph, with the same code path `gw serve` uses to load a policy.
//!
//! Exit codes: 0 clean; 1 policy invalid (or warnings with --deny-warnings); 2 usage or I/O
//! error; 3 policy tests failed; 4 `fmt --check` would change a file.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::diagnostics::{self, Diag, Style};
use crate::source::Sources;
use crate::{cli, Options, Output};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "gw-check", version, about = "Validate gw policies (.gwp), run their tests, explain and format them")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    check: CheckArgs,
}

#[derive(clap::Args, Clone)]
struct CheckArgs {
    /// Policy files, or folders to search for `*.gwp` files.
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Show at most this many diagnostics (errors and warnings); 0 shows them all. The summary
    /// counts every one.
    #[arg(long, default_value_t = DEFAULT_MAX_DIAGNOSTICS)]
    max_errors: usize,
    /// Treat warnings as errors (exit 1).
    #[arg(long)]
    deny_warnings: bool,
    /// Do not run the policies' `test` blocks.
    #[arg(long)]
    no_tests: bool,
    /// Accept exactly what `gw serve` accepts: unset `env(...)` variables are errors,
    /// constructs the runtime does not implement are refused, and what the gateway opens at
    /// start is checked (TLS files, addresses and URLs from env).
    #[arg(long)]
    serve: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Validate policies and run their tests (the default).
    Check(CheckArgs),
    /// Show which route, guards and limits a request meets, and why.
    Explain {
        policy: PathBuf,
        /// A JSON request: {"method", "path", "host", "headers": {..} or [[k, v]..], "query", "body", "client_ip"}.
        #[arg(long)]
        request: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Format policies canonically.
    Fmt {
        paths: Vec<PathBuf>,
        /// Exit 4 if a file is not formatted; change nothing.
        #[arg(long, conflicts_with = "write")]
        check: bool,
        /// Rewrite files in place (default: print to stdout).
        #[arg(long)]
        write: bool,
    },
    /// Show the compiled decision graph.
    Compile {
        policy: PathBuf,
        #[arg(long, value_enum, default_value_t = Emit::Json)]
        emit: Emit,
    },
    /// Explain a diagnostic code, or list them all.
    Codes { code: Option<String> },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Rendered reports, coloured on a terminal.
    Human,
    /// Rendered reports without colour.
    Plain,
    /// Versioned JSON for tools.
    Json,
    /// GitHub Actions annotations.
    Github,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Emit {
    Json,
    Dot,
}

/// Diagnostics listed unless `--max-errors` says otherwise: enough to act on, and a policy
/// with thousands of errors still prints in a moment.
const DEFAULT_MAX_DIAGNOSTICS: usize = 50;

const EXIT_OK: u8 = 0;
const EXIT_INVALID: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_TESTS: u8 = 3;
const EXIT_FMT: u8 = 4;

/// Run the command line on `args` (the first is the program name), as `gw-check` does.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let code = match cli.command {
        Some(Command::Check(args)) => check(&args),
        None => check(&cli.check),
        Some(Command::Explain { policy, request, format }) => explain(&policy, &request, format),
        Some(Command::Fmt { paths, check, write }) => fmt(&paths, check, write),
        Some(Command::Compile { policy, emit }) => compile(&policy, emit),
        Some(Command::Codes { code }) => codes(code.as_deref()),
    };
    ExitCode::from(code)
}

fn style(format: Format) -> Style {
    if format == Format::Human && std::io::stderr().is_terminal() {
        Style::Fancy
    } else {
        Style::Plain
    }
}

/// Expand folders into the `.gwp` files under them, sorted.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            let mut found = vec![];
            walk_dir(p, &mut found).map_err(|e| format!("cannot read folder `{}`: {e}", p.display()))?;
            found.sort();
            out.extend(found);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(format!("no such file or folder: `{}`", p.display()));
        }
    }
    Ok(out)
}

fn walk_dir(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk_dir(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "gwp") {
            out.push(path);
        }
    }
    Ok(())
}

fn check(args: &CheckArgs) -> u8 {
    if args.paths.is_empty() {
        eprintln!("gw-check: no policy given\n\nusage: gw-check [OPTIONS] <PATHS>...   (see gw-check --help)");
        return EXIT_USAGE;
    }
    let files = match expand(&args.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("gw-check: {e}");
            return EXIT_USAGE;
        }
    };
    let mut report = cli::Report::default();
    for file in &files {
        let opts = if args.serve { Options::serve() } else { Options::check() };
        let mut out = crate::compile_path(file, &opts);
        if args.serve {
            // `gw serve` lowers the program too; a failure there is a compiler bug, but it
            // would stop the gateway all the same.
            if let Some(bug) = out.lower_error.take() {
                out.diagnostics.push(bug);
                out.program = None;
            }
        }
        let tests = match (&out.program, out.lowered(), args.no_tests) {
            (Some(program), Some(graph), false) => cli::run_compiled_tests(program, graph),
            _ => vec![],
        };
        report.add(file, out, tests);
    }
    let max = args.max_errors;
    match args.format {
        Format::Json => println!("{}", report.to_json(max)),
        Format::Github => print!("{}", report.to_github(max)),
        Format::Human | Format::Plain => eprint!("{}", report.to_text(style(args.format), max)),
    }
    if report.errors > 0 || (args.deny_warnings && report.warnings > 0) {
        EXIT_INVALID
    } else if report.tests_failed > 0 {
        EXIT_TESTS
    } else {
        EXIT_OK
    }
}

fn print_diags(diags: &[Diag], sources: &Sources, format: Format) {
    for d in diags {
        match format {
            Format::Json => {
                println!("{}", serde_json::to_string(&diagnostics::to_json(d, sources)).unwrap_or_default())
            }
            Format::Github => print!("{}", cli::github_line(d, sources)),
            _ => eprint!("{}", diagnostics::render(d, sources, style(format))),
        }
    }
}

fn load_valid(policy: &Path, format: Format) -> Result<Output, u8> {
    let out = crate::compile_path(policy, &Options::check());
    if out.program.is_none() {
        print_diags(&out.diagnostics, &out.sources, format);
        return Err(if out.sources.is_empty() { EXIT_USAGE } else { EXIT_INVALID });
    }
    Ok(out)
}

fn explain(policy: &Path, request: &Path, format: Format) -> u8 {
    let out = match load_valid(policy, format) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let req = match std::fs::read_to_string(request).map_err(|e| e.to_string()).and_then(|t| cli::parse_request(&t)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gw-check: cannot read request `{}`: {e}", request.display());
            return EXIT_USAGE;
        }
    };
    // The graph decides, as `gw serve` and `/admin/explain` do.
    let decision = match out.lowered() {
        Some(Ok(graph)) => graph.decide_traced(&req),
        Some(Err(bug)) => {
            eprint!("{}", crate::diagnostics::render(bug, &out.sources, Style::Plain));
            return EXIT_INVALID;
        }
        None => return EXIT_INVALID,
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&decision).unwrap_or_default()),
        _ => print!("{}", cli::explain_text(&req, &decision)),
    }
    EXIT_OK
}

fn fmt(paths: &[PathBuf], check: bool, write: bool) -> u8 {
    let files = match expand(paths) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("gw-check fmt: no .gwp files given");
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!("gw-check fmt: {e}");
            return EXIT_USAGE;
        }
    };
    let mut code = EXIT_OK;
    for file in files {
        let text = match std::fs::read(&file).map(String::from_utf8) {
            Ok(Ok(t)) => t,
            Ok(Err(_)) => {
                eprintln!("gw-check fmt: `{}` is not valid UTF-8", file.display());
                return EXIT_USAGE;
            }
            Err(e) => {
                eprintln!("gw-check fmt: cannot read `{}`: {e}", file.display());
                return EXIT_USAGE;
            }
        };
        match cli::format_text(&file.display().to_string(), &text, style(Format::Human)) {
            Err(msg) => {
                eprintln!("gw-check fmt: `{}`: {msg}", file.display());
                return EXIT_INVALID;
            }
            Ok(formatted) => {
                if check {
                    if formatted != text {
                        println!("{}: not formatted", file.display());
                        code = EXIT_FMT;
                    }
                } else if write {
                    if formatted != text {
                        if let Err(e) = std::fs::write(&file, formatted) {
                            eprintln!("gw-check fmt: cannot write `{}`: {e}", file.display());
                            return EXIT_USAGE;
                        }
                    }
                } else {
                    print!("{formatted}");
                }
            }
        }
    }
    code
}

fn compile(policy: &Path, emit: Emit) -> u8 {
    let out = match load_valid(policy, Format::Human) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let emitted = match out.lowered() {
        None => return EXIT_INVALID,
        Some(Ok(graph)) => cli::emit(graph, emit == Emit::Dot),
        Some(Err(d)) => Err(d.clone()),
    };
    match emitted {
        Ok(text) => {
            println!("{text}");
            EXIT_OK
        }
        Err(d) => {
            print_diags(&[d], &out.sources, Format::Human);
            EXIT_INVALID
        }
    }
}

fn codes(code: Option<&str>) -> u8 {
    use crate::diagnostics::Code;
    match code {
        None => {
            for c in Code::ALL {
                println!("{:<34} {}", c.as_str(), c.summary());
            }
            EXIT_OK
        }
        Some(name) => {
            match Code::ALL.iter().find(|c| c.as_str() == name || c.as_str().trim_start_matches("gw::") == name) {
                Some(c) => {
                    println!("{}: {}", c.as_str(), c.summary());
                    EXIT_OK
                }
                None => {
                    eprintln!("gw-check: no diagnostic code `{name}` (see `gw-check codes`)");
                    EXIT_USAGE
                }
            }
        }
    }
}
