//! `gw`: the gateway binary. `gw serve [POLICY]` runs the gateway (with no policy: the embedded
//! default in front of the built-in mock upstream), `gw check` is `gw-check`, `gw mock` runs
//! the mock OpenAI-compatible upstream alone, `gw version` prints the version.

use std::path::PathBuf;

// glibc's allocator spent a sixth of the proxy's CPU time under load (many small, short-lived
// allocations freed on other threads); mimalloc's thread-local heaps fit that pattern.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc (v3) `mi_option_purge_delay`, by its index in `mi_option_e`.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
const PURGE_DELAY_MS: std::ffi::c_long = 10;

extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_collect(force: bool);
}

/// Purge what this thread's heap has freed: mimalloc purges lazily, on the next allocation or
/// free of the same thread, so a worker left idle after a burst would keep it (gw calls this
/// once a second on every serving thread).
fn release_memory() {
    // SAFETY: collects the calling thread's own heap; safe to call at any time on any thread.
    unsafe { mi_collect(false) };
}

/// Give freed memory back to the OS after 10 ms rather than mimalloc's 1 s (times 10 for its
/// arenas): after 5,000 connections close, RSS falls back to about 55 MiB within 3 s instead of
/// staying above 300 (tests/load/conns.py). 0 (at once) returned a little more but cost 3–5 µs
/// of CPU per request in madvise calls; 10 ms measured as cheap as the default.
/// `MIMALLOC_PURGE_DELAY` in the environment still wins. Options read when the process starts
/// (`MIMALLOC_ARENA_EAGER_COMMIT=0`: idle RSS 19.6 → 12.2 MiB) can only be given that way.
fn tune_allocator() {
    // Transparent huge pages: mimalloc asks for them on its arenas, and a 2 MiB page stays
    // resident while any 4 KiB of it is used, so idle RSS was 20.3 MiB instead of 12.9 and each
    // idle keep-alive connection cost 30.5 KiB instead of 18.7 (tests/load/conns.py, THP in
    // "madvise" mode). Measured no faster with them on the proxy path. Failure (an old kernel)
    // only costs memory, so its result is ignored.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes only this process's flags.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` is not thread safe; this runs first in `main`, before any
        // other thread exists, and only sets an integer option.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gw_compile::Style;
#[cfg(feature = "quickstart")]
use gw_mock::MockConfig;
use gw_runtime::gateway::Gateway;
use gw_runtime::policy::PolicySource;
use gw_runtime::Overrides;

#[derive(Parser)]
#[command(name = "gw", version, about = "An API gateway for LLM traffic, driven by .gwp policies")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway on a policy (default: the embedded default policy and the mock upstream).
    Serve {
        /// The policy file. Without one, gw serves its embedded default policy and starts the
        /// built-in mock upstream on 127.0.0.1:9100.
        policy: Option<PathBuf>,
        /// Listen here instead of the policy's `listen` address.
        #[arg(long)]
        listen: Option<String>,
        /// Serve the admin endpoints here instead of the policy's `admin` address.
        #[arg(long)]
        admin: Option<String>,
        /// Do not start the built-in mock upstream with the default policy.
        #[arg(long)]
        no_mock: bool,
        /// Threads serving proxy connections, each with its own event loop (default: one per CPU).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// Validate policies and run their tests: `gw-check` (see `gw check --help`).
    #[command(disable_help_flag = true)]
    Check {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Run the mock OpenAI-compatible upstream.
    #[cfg(feature = "quickstart")]
    Mock(MockConfig),
    /// Print the version.
    Version,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The main thread's runtime: accepting, the admin listener, signals, reloads. Proxy
/// connections are served by worker threads with runtimes of their own (`server`).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// The quickstart's mock upstream, in-process, on its default address.
#[cfg(feature = "quickstart")]
async fn spawn_mock() -> Result<(), String> {
    let cfg = MockConfig::default();
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| format!("cannot start the built-in mock upstream on {}: {e}", cfg.listen))?;
    tracing::info!("built-in mock upstream on http://{}", cfg.listen);
    tokio::spawn(gw_mock::serve(listener, cfg));
    Ok(())
}

/// Built without the quickstart: the default policy's upstream is whatever listens there.
#[cfg(not(feature = "quickstart"))]
async fn spawn_mock() -> Result<(), String> {
    tracing::warn!("built without the mock upstream (feature `quickstart`): not starting it");
    Ok(())
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("gw {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { args } => gw_compile::check_main(args),
        #[cfg(feature = "quickstart")]
        Command::Mock(cfg) => {
            init_logging(LogFormat::Human);
            let result = runtime().and_then(|rt| rt.block_on(gw_mock::run(cfg)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gw mock: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve { policy, listen, admin, no_mock, workers, log_format } => {
            init_logging(log_format);
            let start_mock = policy.is_none() && !no_mock;
            let source = policy.map(PolicySource::File).unwrap_or(PolicySource::Embedded);
            let style = if std::io::IsTerminal::is_terminal(&std::io::stderr()) { Style::Fancy } else { Style::Plain };
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("gw: cannot start the async runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            // Started inside the runtime: the Redis store connects in the background.
            let started = rt.block_on(async { Gateway::start(source.clone(), style) });
            let gw = match started {
                Ok(gw) => gw,
                Err(rendered) => {
                    eprintln!("{rendered}");
                    eprintln!("gw: cannot serve {}", source.describe());
                    return ExitCode::from(1);
                }
            };
            let result = rt.block_on(async move {
                if start_mock {
                    spawn_mock().await?;
                }
                gw_runtime::serve(gw, Overrides { listen, admin, workers, release_memory: Some(release_memory) }).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gw: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
