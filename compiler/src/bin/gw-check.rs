//! `gw-check`: validate gw policies, run their tests, explain, format and compile them.
//! The command line lives in `gw_compiler::check_cmd` so that `gw check` is the same program.

fn main() -> std::process::ExitCode {
    gw_compiler::check_cmd::main_with_args(std::env::args_os())
}
