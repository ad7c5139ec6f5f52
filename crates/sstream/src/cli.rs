//! Command-line parsing and dispatch for all three binaries.

use crate::serve::ServeArgs;
use clap::{Args, CommandFactory, Parser, Subcommand};
use simplestreams::metadata::Verification;
use simplestreams::source::{SourceSpec, split_source};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// How a stream is read and logged: options shared by every command that
/// reads one (mirror, query, verify).
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// The index or products file to start from, relative to the source root.
    #[arg(long)]
    pub path: Option<String>,
    /// More output (repeatable).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Also write the log to this file.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// OpenPGP keyring (binary or armored) used to verify signed metadata.
    #[arg(long)]
    pub keyring: Option<PathBuf>,
    /// Do not verify signatures of signed (.sjson) metadata.
    #[arg(long, short = 'U')]
    pub no_verify: bool,
}

impl StreamArgs {
    /// Installs the logger these options ask for.
    pub fn init_logging(&self) -> Result<(), String> {
        crate::logging::init(self.verbose, self.log_file.as_deref())
    }

    /// Splits `source` into root and entry document, and loads what
    /// verifying it takes (see [`Verification::for_entry`]).
    pub fn open(&self, source: &str) -> Result<(SourceSpec, Verification), String> {
        let spec = split_source(source, self.path.as_deref()).map_err(|e| e.to_string())?;
        let verification =
            Verification::for_entry(&spec.entry, self.keyring.as_deref(), self.no_verify)
                .map_err(|e| e.to_string())?;
        Ok((spec, verification))
    }
}

/// Options shared by `sstream mirror` and the drop-in `sstream-mirror`.
#[derive(Debug, Clone, Args)]
pub struct MirrorArgs {
    /// Keep versions that left the source, up to --max per product.
    #[arg(long)]
    pub keep: bool,
    /// Keep at most MAX versions of each product (the newest).
    #[arg(long, value_name = "MAX")]
    pub max: Option<usize>,
    /// Mirror metadata only: do not download items that have a path.
    #[arg(long)]
    pub no_item_download: bool,
    /// Print what would be done (on stdout) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Show download progress.
    #[arg(long)]
    pub progress: bool,
    /// Another source root to fetch items from when the primary fails (repeatable).
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,
    /// Where the stream's entry is, how it is verified, and logging.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Accepted for compatibility; items are always verified.
    #[arg(long)]
    pub no_checksumming_reader: bool,
    /// Number of concurrent item downloads.
    #[arg(long, short = 'j', default_value_t = 6)]
    pub jobs: usize,
    /// Retries per transfer on timeouts, resets, 5xx and 429.
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// Re-hash existing items instead of trusting their size.
    #[arg(long)]
    pub verify_existing: bool,
    /// Abandon a transfer that receives nothing for this many seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub timeout: f64,
    /// Wait for another run on the same output directory to finish.
    #[arg(long)]
    pub wait: bool,
    /// Also remove versions the filters now exclude and products gone from the source.
    #[arg(long)]
    pub prune: bool,
    /// Allow pruning to delete more than the wipe guard allows.
    #[arg(long)]
    pub force: bool,
    /// The source: a URL (http, https, file) or a directory.
    pub source: String,
    /// The mirror directory to write.
    pub output_dir: PathBuf,
    /// Filters: KEY=VALUE, KEY!=VALUE, KEY~REGEX, KEY!~REGEX.
    pub filters: Vec<String>,
}

/// Options shared by `sstream query` and the drop-in `sstream-query`.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// At most MAX versions of each product (the newest).
    #[arg(long, value_name = "MAX_ITEMS")]
    pub max: Option<usize>,
    /// Python %-style format over the flattened item, e.g. '%(item_url)s'.
    #[arg(long, short = 'o', conflicts_with_all = ["pretty", "json"])]
    pub output_format: Option<String>,
    /// Pretty-print each item.
    #[arg(long, conflicts_with = "json")]
    pub pretty: bool,
    /// Print the items as a JSON list.
    #[arg(long)]
    pub json: bool,
    /// Where the stream's entry is, how it is verified, and logging.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The source: a URL (http, https, file) or a directory.
    pub mirror_url: String,
    /// Filters: KEY=VALUE, KEY!=VALUE, KEY~REGEX, KEY!~REGEX.
    pub filters: Vec<String>,
}

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
    let cli = SstreamCli::parse_from(args);
    let result = match cli.command {
        Command::Mirror(a) => mirror(a),
        Command::Query(a) => query(a),
        Command::Serve(a) => crate::serve::run(a),
        Command::Demo(a) => crate::demo::run(a),
        Command::Verify(a) => return crate::verify::run(a),
    };
    finish("sstream", result)
}

/// Runs the drop-in `sstream-mirror` with the given arguments.
pub fn run_mirror(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    finish("sstream-mirror", mirror(MirrorCli::parse_from(args).args))
}

/// Runs the drop-in `sstream-query` with the given arguments.
pub fn run_query(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    finish("sstream-query", query(QueryCli::parse_from(args).args))
}

fn finish(program: &str, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{program}: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn mirror(args: MirrorArgs) -> Result<(), String> {
    crate::mirror::run(args)
}

fn query(args: QueryArgs) -> Result<(), String> {
    crate::query::run(args)
}
