//! Command-line parsing and dispatch for all three binaries.

use crate::error::{CliError, EXIT_USAGE};
use crate::mirror::MirrorArgs;
use crate::query::QueryArgs;
use crate::serve::ServeArgs;
use clap::{CommandFactory, Parser, Subcommand};
use std::ffi::OsString;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "sstream",
    version,
    about = "Verified local mirrors of SimpleStreams image streams"
)]
struct SstreamCli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mirror a stream into a directory (same options as sstream-mirror).
    Mirror(MirrorArgs),
    /// List the items of a stream (same options as sstream-query).
    Query(QueryArgs),
    /// Serve a mirror directory over HTTP.
    Serve(ServeArgs),
    /// Mirror a generated, signed sample stream, serve it and verify it.
    Demo(crate::demo::DemoArgs),
    /// Audit a mirror (directory or URL) as a client would; exit 0/1/2/3.
    Verify(crate::verify::VerifyArgs),
    /// Run the mirror jobs of the configuration file (all, or those named).
    Sync(crate::sync::SyncArgs),
    /// Show every job's last run and success; exit 1 if one failed or is stale.
    Status(crate::status::StatusArgs),
    /// Generate a signing key, or export its public key for MAAS.
    Key(crate::key::KeyArgs),
    /// Sign an unsigned tree: a .sjson and a .json.gpg beside each streams/v1 .json.
    Sign(crate::sign::SignArgs),
}

#[derive(Debug, Parser)]
#[command(
    name = "sstream-mirror",
    version,
    about = "Mirror a SimpleStreams stream (drop-in for the reference tool)"
)]
struct MirrorCli {
    #[command(flatten)]
    args: MirrorArgs,
}

#[derive(Debug, Parser)]
#[command(
    name = "sstream-query",
    version,
    about = "Query a SimpleStreams stream (drop-in for the reference tool)"
)]
struct QueryCli {
    #[command(flatten)]
    args: QueryArgs,
}

/// The clap definitions of the three binaries, `sstream`, `sstream-mirror`
/// and `sstream-query` (in that order): what their man pages and shell
/// completions are generated from.
pub fn commands() -> [clap::Command; 3] {
    [
        SstreamCli::command(),
        MirrorCli::command(),
        QueryCli::command(),
    ]
}

/// Runs `sstream` with the given arguments.
pub fn run_sstream(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli: SstreamCli = match parse("sstream", args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let result = match cli.command {
        Command::Mirror(a) => crate::mirror::run(a),
        Command::Query(a) => crate::query::run(a),
        Command::Serve(a) => crate::serve::run(a).map_err(CliError::from),
        Command::Demo(a) => crate::demo::run(a).map_err(CliError::from),
        Command::Verify(a) => return crate::verify::run(a),
        Command::Sync(a) => return crate::sync::run(a),
        Command::Status(a) => return crate::status::run(a),
        Command::Key(a) => crate::key::run(a).map_err(CliError::from),
        Command::Sign(a) => crate::sign::run(a).map_err(CliError::from),
    };
    finish("sstream", result)
}

/// Runs the drop-in `sstream-mirror` with the given arguments.
pub fn run_mirror(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    match parse::<MirrorCli>("sstream-mirror", args) {
        Ok(cli) => {
            let args = MirrorArgs {
                drop_in: true,
                ..cli.args
            };
            finish("sstream-mirror", crate::mirror::run(args))
        }
        Err(code) => code,
    }
}

/// Runs the drop-in `sstream-query` with the given arguments.
pub fn run_query(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    match parse::<QueryCli>("sstream-query", args) {
        Ok(cli) => finish("sstream-query", crate::query::run(cli.args)),
        Err(code) => code,
    }
}

/// Whether `e` names `flag` among the missing arguments (clap lists them
/// as `--max <MAX>` in the error's context).
fn misses_argument(e: &clap::Error, flag: &str) -> bool {
    use clap::error::{ContextKind, ContextValue};
    let missing = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::Strings(missing)) => missing.as_slice(),
        Some(ContextValue::String(one)) => std::slice::from_ref(one),
        _ => &[],
    };
    missing
        .iter()
        .any(|m| m.split_whitespace().next() == Some(flag))
}

/// Parses the command line. Help and version go to stdout (exit 0); a
/// usage error is printed by clap (exit 2), except a missing `--max` for
/// `--keep`, which gets one line saying why.
fn parse<P: Parser>(
    program: &str,
    args: impl IntoIterator<Item = OsString>,
) -> Result<P, ExitCode> {
    let args: Vec<OsString> = args.into_iter().collect();
    P::try_parse_from(&args).map_err(|e| {
        let keep_without_max = e.kind() == clap::error::ErrorKind::MissingRequiredArgument
            && args.iter().any(|a| a == "--keep")
            && misses_argument(&e, "--max");
        if keep_without_max {
            eprintln!(
                "{program}: error: --keep needs --max: it keeps versions gone from the source up to --max"
            );
            return ExitCode::from(EXIT_USAGE);
        }
        let _ = e.print();
        ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 })
    })
}

/// Prints a failure as `<program>: error: <message>` (one line per
/// problem) and maps it to its exit code.
fn finish(program: &str, result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: error: {}", e.lines().join("\n"));
            ExitCode::from(e.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_without_max_is_found_in_the_error_context() {
        let args = ["sstream-mirror", "--keep", "http://h/s/", "/srv/m"];
        let e = MirrorCli::try_parse_from(args).expect_err("--keep needs --max");
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(misses_argument(&e, "--max"), "{e}");
        assert!(!misses_argument(&e, "--keep"), "{e}");
    }
}
