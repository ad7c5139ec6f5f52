//! The `sstream` command-line tools: `sstream` (with subcommands) and the
//! drop-in replacements `sstream-mirror` and `sstream-query`. The server
//! behind `sstream serve` is the `sstream_serve` crate.

#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod job;
pub mod key;
pub mod logging;
pub mod metrics;
pub mod mirror;
pub mod plan_view;
pub mod progress;
pub mod pyformat;
pub mod query;
pub mod record;
pub mod sign;
pub mod status;
pub mod stream_args;
pub mod sync;
pub mod target;
pub mod tls;
pub mod verify;
pub mod view_ops;
pub mod views;

/// The runtime commands run their async work on
/// ([`simplestreams::runtime::build`], the one builder).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    simplestreams::runtime::build()
}

/// Entry point of `sstream`. Invoked under the name of a drop-in
/// (`sstream-mirror` or `sstream-query`: a link to it, as the Debian
/// package installs them), it is that drop-in.
pub fn main_sstream() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str());
    match invoked {
        Some("sstream-mirror") => cli::run_mirror(args),
        Some("sstream-query") => cli::run_query(args),
        _ => cli::run_sstream(args),
    }
}

/// Entry point of the drop-in `sstream-mirror`.
pub fn main_mirror() -> std::process::ExitCode {
    cli::run_mirror(std::env::args_os())
}

/// Entry point of the drop-in `sstream-query`.
pub fn main_query() -> std::process::ExitCode {
    cli::run_query(std::env::args_os())
}
