//! `gw`: the gateway binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("version") | Some("--version") => {
            println!("gw {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("check") => {
            let rest = std::iter::once("gw check".into()).chain(args[2..].iter().cloned());
            gw_compiler::check_cmd::main_with_args(rest)
        }
        _ => {
            eprintln!("usage: gw version | gw check [gw-check arguments]");
            ExitCode::from(2)
        }
    }
}
