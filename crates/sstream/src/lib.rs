//! The `sstream` command-line tools: `sstream` (with subcommands) and the
//! drop-in replacements `sstream-mirror` and `sstream-query`.

#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod key;
pub mod logging;
pub mod metrics;
pub mod mirror;
pub mod progress;
pub mod pyformat;
pub mod query;
pub mod serve;
pub mod sign;
pub mod status;
pub mod stream_args;
pub mod sync;
pub mod target;
pub mod verify;

/// The runtime commands run their async work on.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

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
