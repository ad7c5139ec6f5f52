//! The `sstream` command-line tools: `sstream` (with subcommands) and the
//! drop-in replacements `sstream-mirror` and `sstream-query`.

#![warn(missing_docs)]

pub mod cli;
pub mod demo;
pub mod key;
pub mod logging;
pub mod mirror;
pub mod progress;
pub mod pyformat;
pub mod query;
pub mod serve;
pub mod sign;
pub mod verify;

/// Entry point of `sstream`.
pub fn main_sstream() -> std::process::ExitCode {
    cli::run_sstream(std::env::args_os())
}

/// Entry point of the drop-in `sstream-mirror`.
pub fn main_mirror() -> std::process::ExitCode {
    cli::run_mirror(std::env::args_os())
}

/// Entry point of the drop-in `sstream-query`.
pub fn main_query() -> std::process::ExitCode {
    cli::run_query(std::env::args_os())
}
