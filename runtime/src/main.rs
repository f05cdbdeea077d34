//! `gw`: the gateway binary. The hyper runtime (`gw serve`) is being built; until it lands this
//! binary offers `gw version` and `gw check`, which is `gw-check` under another name.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("version") | Some("--version") => {
            println!("gw {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("check") => {
            let status = std::process::Command::new(sibling("gw-check")).args(&args[1..]).status();
            match status.ok().and_then(|s| s.code()) {
                Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(2)),
                None => {
                    eprintln!("gw: cannot run gw-check (build it with `cargo build`)");
                    ExitCode::from(2)
                }
            }
        }
        _ => {
            eprintln!("usage: gw version | gw check [gw-check arguments]\n\n`gw serve` is not implemented yet; validate policies with `gw check`.");
            ExitCode::from(2)
        }
    }
}

/// A binary installed next to this one.
fn sibling(name: &str) -> std::path::PathBuf {
    std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join(name))).unwrap_or_else(|| name.into())
}
