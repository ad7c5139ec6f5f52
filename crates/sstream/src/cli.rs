//! Command-line parsing and dispatch for all three binaries.

use crate::error::{CliError, EXIT_OK, EXIT_STATUS_HELP, EXIT_USAGE};
use crate::mirror::MirrorArgs;
use crate::query::QueryArgs;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use sstream_serve::ServeArgs;
use std::ffi::OsString;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "sstream",
    version,
    about = "Verified local mirrors of SimpleStreams image streams",
    after_help = EXIT_STATUS_HELP
)]
struct SstreamCli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mirror a stream into a directory (same options as sstream-mirror).
    Mirror(Box<MirrorArgs>),
    /// List the items of a stream (same options as sstream-query).
    Query(QueryArgs),
    /// Serve a mirror directory over HTTP and HTTPS.
    Serve(ServeArgs),
    /// Mirror a generated, signed sample stream, serve it and verify it.
    Demo(crate::demo::DemoArgs),
    /// Audit a mirror (directory or URL) as a client would; exit 0/1/2/3.
    Verify(crate::verify::VerifyArgs),
    /// Run the mirror jobs of the configuration file (all, or those named).
    Sync(crate::sync::SyncArgs),
    /// Show every job's last run and success; exit 1 if one failed or is stale.
    Status(crate::status::StatusArgs),
    /// Publish a snapshot (default: what the staging view shows) into a configured view.
    Promote(crate::view_ops::PromoteArgs),
    /// Generate a signing key, or export its public key for MAAS.
    Key(crate::key::KeyArgs),
    /// Sign an unsigned tree: a .sjson and a .json.gpg beside each streams/v1 .json.
    Sign(crate::sign::SignArgs),
    /// Make a private CA and a server certificate for `sstream serve --listen-tls`.
    Tls(crate::tls::TlsArgs),
    /// Snapshots of a mirror: create, list, remove.
    Snapshot(crate::views::SnapshotArgs),
    /// Make a directory a view showing one snapshot of a mirror (switched atomically).
    Publish(crate::views::PublishArgs),
    /// Make a view show again the snapshot it showed before.
    Rollback(crate::views::RollbackArgs),
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
    let cli: SstreamCli = match parse(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let program = cli.command.program();
    let done = |()| ExitCode::SUCCESS;
    let result = match cli.command {
        Command::Mirror(a) => crate::mirror::run(*a),
        Command::Query(a) => crate::query::run(a),
        Command::Serve(a) => sstream_serve::run(a).map(done).map_err(CliError::new),
        Command::Demo(a) => crate::demo::run(a).map(done).map_err(CliError::from),
        Command::Verify(a) => crate::verify::run(a),
        Command::Sync(a) => crate::sync::run(a),
        Command::Status(a) => crate::status::run(a),
        Command::Promote(a) => crate::view_ops::promote(a),
        Command::Key(a) => crate::key::run(a).map(done).map_err(CliError::from),
        Command::Sign(a) => crate::sign::run(a).map(done).map_err(CliError::from),
        Command::Tls(a) => crate::tls::run(a).map(done).map_err(CliError::from),
        Command::Snapshot(a) => crate::views::run_snapshot(a),
        Command::Publish(a) => crate::views::run_publish(a),
        Command::Rollback(a) => crate::views::run_rollback(a),
    };
    finish(program, result)
}

impl Command {
    /// How the command names itself in its error messages: `sstream` for
    /// the commands of the drop-ins and those that print no report of
    /// their own, `sstream verify`/`sync`/`status` for the others.
    fn program(&self) -> &'static str {
        match self {
            Command::Verify(_) => "sstream verify",
            Command::Sync(_) => "sstream sync",
            Command::Status(_) => "sstream status",
            Command::Promote(_) => "sstream promote",
            _ => "sstream",
        }
    }
}

/// Runs the drop-in `sstream-mirror` with the given arguments.
pub fn run_mirror(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    match parse::<MirrorCli>(args) {
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
    match parse::<QueryCli>(args) {
        Ok(cli) => finish("sstream-query", crate::query::run(cli.args)),
        Err(code) => code,
    }
}

/// Parses the command line. Help and version go to stdout (exit 0), a
/// usage error to stderr (exit 2), both printed by clap.
fn parse<P: Parser>(args: impl IntoIterator<Item = OsString>) -> Result<P, ExitCode> {
    P::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        let informational = matches!(
            e.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        ExitCode::from(if informational && !e.use_stderr() {
            EXIT_OK
        } else {
            EXIT_USAGE
        })
    })
}

/// The one place a command's outcome becomes the process's: a failure is
/// printed as `<program>: error: <message>` (one line per problem, each
/// with its causes once) and maps to its exit code.
fn finish(program: &str, result: Result<ExitCode, CliError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{program}: error: {}", e.lines().join("\n"));
            ExitCode::from(e.code)
        }
    }
}
