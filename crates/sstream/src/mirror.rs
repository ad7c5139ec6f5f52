//! `sstream mirror` / `sstream-mirror`: the options mapped onto the
//! library's [`Mirror`], the plan printed, progress shown, a summary.

use crate::error::CliError;
use crate::progress::RunDisplay;
use crate::stream_args::StreamArgs;
use clap::Args;
use simplestreams::filter::FilterSet;
use simplestreams::metadata::MetadataReader;
use simplestreams::mirror::{Mirror, RunSettings};
use simplestreams::plan::MirrorOptions;
use simplestreams::source::{Source, TransferOptions, source_url};
use simplestreams::store::DirStore;
use simplestreams::units::human_size;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Options of `sstream mirror` and the drop-in `sstream-mirror`.
#[derive(Debug, Clone, Args)]
pub struct MirrorArgs {
    /// Keep versions that left the source, up to --max per product.
    #[arg(long, requires = "max")]
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
    /// Re-hash every item of the mirror (and fetch the ones that are wrong)
    /// instead of trusting their size.
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
    /// Allow pruning to delete more than half of the mirror.
    #[arg(long)]
    pub force: bool,
    /// The source: a URL (http, https, file) or a directory.
    pub source: String,
    /// The mirror directory to write.
    pub output_dir: PathBuf,
    /// Filters: KEY=VALUE, KEY!=VALUE, KEY~REGEX, KEY!~REGEX.
    pub filters: Vec<String>,
}

/// Runs a mirror (or, with `--dry-run`, prints its plan).
pub fn run(args: MirrorArgs) -> Result<(), CliError> {
    args.stream.init_logging()?;
    let mirror = job(&args)?;
    crate::runtime()?.block_on(async {
        if args.dry_run {
            let plan = mirror.plan().await?;
            let mut out = std::io::stdout().lock();
            for line in plan.report() {
                writeln!(out, "{line}")?;
            }
            return Ok(());
        }
        let chatty = args.progress || args.stream.verbose > 0;
        let display = Arc::new(RunDisplay::new(args.progress, chatty));
        let result = mirror.run(display.clone()).await;
        display.finish();
        let summary = result?;
        if chatty {
            eprintln!(
                "mirrored {} file(s), {} in {:.1}s; {} stream(s) published, {} file(s) removed",
                summary.files,
                human_size(summary.bytes),
                summary.elapsed.as_secs_f64(),
                summary.published.len(),
                summary.deleted
            );
        }
        Ok(())
    })
}

/// The library job these options describe.
pub fn job(args: &MirrorArgs) -> Result<Mirror, CliError> {
    let filters = FilterSet::parse(&args.filters)?;
    let (spec, verification) = args.stream.open(&args.source)?;
    let mirrors = args
        .mirrors
        .iter()
        .map(|m| source_url(m))
        .collect::<Result<Vec<_>, _>>()?;
    let transfer = TransferOptions {
        retries: args.retries,
        idle_timeout: Duration::from_secs_f64(args.timeout.max(0.1)),
        ..TransferOptions::default()
    };
    let source = Source::new(spec.root, mirrors, transfer)?;
    let options = MirrorOptions {
        filters,
        max: args.max,
        keep: args.keep,
        item_download: !args.no_item_download,
        prune: args.prune,
        verify_existing: args.verify_existing,
    };
    let settings = RunSettings {
        jobs: args.jobs,
        wait: args.wait,
        wipe_guard: (!args.force).then_some(0.5),
    };
    let reader = MetadataReader::new(source, spec.entry, verification);
    let store = Arc::new(DirStore::new(&args.output_dir));
    Ok(Mirror::new(reader, store, options, settings))
}
