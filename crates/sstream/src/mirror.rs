//! `sstream mirror` / `sstream-mirror`: the options mapped onto the
//! library's [`Mirror`], the plan printed, progress shown, a summary.

use crate::error::CliError;
use crate::progress::RunDisplay;
use crate::sign::PassphraseArgs;
use crate::stream_args::StreamArgs;
use clap::Args;
use simplestreams::content::ContentIndex;
use simplestreams::filter::FilterGroups;
use simplestreams::metadata::MetadataReader;
use simplestreams::mirror::{Mirror, RunSettings, Summary};
use simplestreams::plan::MirrorOptions;
use simplestreams::resign::Publication;
use simplestreams::source::{Source, TransferOptions, source_url};
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
    /// Number of connections for items at once: files downloaded at the
    /// same time, and byte ranges of large files on the connections no file
    /// is waiting for.
    #[arg(long, short = 'j', default_value_t = 6)]
    pub jobs: usize,
    /// Fetch files of at least SIZE (e.g. 32M) in byte ranges over several
    /// connections when the server honours ranges; 0 never does.
    #[arg(long, value_name = "SIZE", default_value = "32M", value_parser = parse_size)]
    pub segment_threshold: u64,
    /// Cap the total download rate, all connections together, at RATE
    /// bytes per second (e.g. 20M, 500K).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub limit_rate: Option<u64>,
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
    /// Keep SIZE free on the mirror's filesystem: a run whose downloads
    /// would leave less fails before downloading anything (e.g. 10G, 512M;
    /// default: 5% of the filesystem, at most 1G).
    #[arg(long, value_name = "SIZE", value_parser = simplestreams::units::parse_size)]
    pub min_free: Option<u64>,
    /// Keep the files of versions that left the metadata this long (e.g.
    /// 2h, 1d; 0: delete them in the same run) so that clients still
    /// reading the previous metadata can finish; a later run deletes them.
    /// Default: 6h for `sstream mirror`, 0 for `sstream-mirror` (as the
    /// reference).
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub delete_delay: Option<Duration>,
    /// Share identical content with other mirrors on this filesystem
    /// through a content index in DIR (hard links named by checksum; give
    /// every job the same DIR). Without it, content is still stored once
    /// within the mirror.
    #[arg(long, value_name = "DIR")]
    pub content_index: Option<PathBuf>,
    /// The drop-in `sstream-mirror`: the reference's defaults.
    #[arg(skip)]
    pub drop_in: bool,
    /// Publish metadata listing exactly what the mirror holds, signed with
    /// this key (`sstream key generate`), instead of upstream's documents.
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    /// The signing key's passphrase, when it has one.
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// The source: a URL (http, https, file) or a directory.
    pub source: String,
    /// The mirror directory to write, or a bucket: s3://BUCKET/PREFIX.
    pub output_dir: PathBuf,
    /// Filters: KEY=VALUE, KEY!=VALUE, KEY~REGEX, KEY!~REGEX.
    pub filters: Vec<String>,
}

/// Runs a mirror (or, with `--dry-run`, prints its plan).
pub fn run(args: MirrorArgs) -> Result<(), CliError> {
    args.stream.init_logging()?;
    let chatty = args.progress || args.stream.verbose > 0;
    let mirror = args.parts()?.build()?;
    let summary = execute(&mirror, args.dry_run, args.progress, chatty)?;
    if let (Some(summary), true) = (summary, chatty) {
        eprintln!("{}", summary_line(&summary));
    }
    Ok(())
}

/// The line `-v` and `--progress` end with.
pub fn summary_line(summary: &Summary) -> String {
    let linked = if summary.report.linked > 0 {
        format!(
            ", {} file(s) linked to identical content ({} not downloaded)",
            summary.report.linked,
            human_size(summary.report.linked_bytes)
        )
    } else {
        String::new()
    };
    let waiting = if summary.report.waiting > 0 {
        format!(", {} kept for the delete delay", summary.report.waiting)
    } else {
        String::new()
    };
    format!(
        "mirrored {} file(s), {} in {:.1}s{linked}; {} stream(s) published, {} file(s) removed{waiting}",
        summary.report.files,
        human_size(summary.report.bytes),
        summary.elapsed.as_secs_f64(),
        summary.report.published.len(),
        summary.report.deleted
    )
}

/// Runs a job: with `dry_run` prints its plan on stdout (and gives `None`),
/// otherwise mirrors with a progress display (`bar`) and the plan on
/// stderr (`chatty`).
pub fn execute(
    mirror: &Mirror,
    dry_run: bool,
    bar: bool,
    chatty: bool,
) -> Result<Option<Summary>, CliError> {
    crate::runtime()?.block_on(async {
        if dry_run {
            let plan = mirror.plan().await?;
            let mut out = std::io::stdout().lock();
            for line in plan.report() {
                writeln!(out, "{line}")?;
            }
            return Ok(None);
        }
        let display = Arc::new(RunDisplay::new(bar, chatty));
        let result = mirror.run(display.clone()).await;
        display.finish();
        Ok(Some(result?))
    })
}

/// What a job is made of, whether it comes from the command line or from a
/// config file.
#[derive(Debug, Clone)]
pub struct JobParts {
    /// The source: a URL (http, https, file) or a directory.
    pub source: String,
    /// The mirror directory (or `s3://BUCKET/PREFIX`).
    pub dir: PathBuf,
    /// Where the entry is and how it is verified.
    pub stream: StreamArgs,
    /// Fallback roots for items.
    pub mirrors: Vec<String>,
    /// Retries and timeouts.
    pub transfer: TransferOptions,
    /// What is mirrored.
    pub options: MirrorOptions,
    /// How the run goes about it.
    pub settings: RunSettings,
}

impl JobParts {
    /// The library job.
    pub fn build(self) -> Result<Mirror, CliError> {
        let (spec, verification) = self.stream.open(&self.source)?;
        let mirrors = self
            .mirrors
            .iter()
            .map(|m| source_url(m))
            .collect::<Result<Vec<_>, _>>()?;
        // The connection budget is the number of jobs.
        let transfer = TransferOptions {
            connections: self.settings.jobs.max(1),
            ..self.transfer
        };
        let source = Source::new(spec.root, mirrors, transfer)?;
        let reader = MetadataReader::new(source, spec.entry, verification);
        let store = crate::target::store_at(&self.dir)?;
        let mut settings = self.settings;
        settings.content_index = settings
            .content_index
            .as_deref()
            .map(|dir| content_index_for(dir, &self.dir))
            .transpose()?;
        if let Some(dir) = &settings.content_index
            && !ContentIndex::new(dir).shares_filesystem_with(
                &simplestreams::content::resolve_dir(&self.dir).unwrap_or(self.dir.clone()),
            )
        {
            log::warn!(
                "content index {}: not on the filesystem of {} (hard links cannot cross filesystems); not used",
                dir.display(),
                self.dir.display()
            );
            settings.content_index = None;
        }
        Ok(Mirror::new(reader, store, self.options, settings))
    }
}

/// The content index `dir` of the mirror in `mirror` (a directory or an
/// S3 URL), resolved (a relative path against the working directory, as
/// the mirror's own); refused inside the mirror, where a run would take
/// its entries for files of the mirror's own (resolved paths compared).
fn content_index_for(dir: &std::path::Path, mirror: &std::path::Path) -> Result<PathBuf, CliError> {
    use simplestreams::content::resolve_dir;
    let unresolvable =
        |e: std::io::Error| CliError::usage(format!("content index {}: {e}", dir.display()));
    let index = resolve_dir(dir).map_err(unresolvable)?;
    if !mirror.to_string_lossy().contains("://") {
        let mirror_dir = resolve_dir(mirror).map_err(unresolvable)?;
        if index.starts_with(&mirror_dir) {
            return Err(CliError::usage(format!(
                "content index {}: inside the mirror {} (give a directory beside it)",
                dir.display(),
                mirror.display()
            )));
        }
    }
    Ok(index)
}

impl MirrorArgs {
    /// The job these options describe.
    pub fn parts(&self) -> Result<JobParts, CliError> {
        Ok(JobParts {
            source: self.source.clone(),
            dir: self.output_dir.clone(),
            stream: self.stream.clone(),
            mirrors: self.mirrors.clone(),
            transfer: TransferOptions {
                retries: self.retries,
                idle_timeout: Duration::from_secs_f64(self.timeout.max(0.1)),
                segment_threshold: (self.segment_threshold > 0).then_some(self.segment_threshold),
                limit_rate: self.limit_rate,
                ..TransferOptions::default()
            },
            options: MirrorOptions {
                filters: FilterGroups::parse(&[&self.filters])?,
                max: self.max,
                keep: self.keep,
                item_download: !self.no_item_download,
                prune: self.prune,
                verify_existing: self.verify_existing,
            },
            settings: RunSettings {
                jobs: self.jobs,
                wait: self.wait,
                wipe_guard: (!self.force).then_some(WIPE_GUARD),
                min_free: self.min_free,
                delete_delay: self.delete_delay.unwrap_or(if self.drop_in {
                    Duration::ZERO
                } else {
                    DEFAULT_DELETE_DELAY
                }),
                content_index: self.content_index.clone(),
                publication: publication(self.sign_key.as_deref(), &self.passphrase)?,
            },
        })
    }
}

/// Upstream's documents, or re-signed ones with the key at `sign_key`
/// (loaded and checked before anything is fetched).
pub fn publication(
    sign_key: Option<&std::path::Path>,
    passphrase: &PassphraseArgs,
) -> Result<Publication, CliError> {
    Ok(match sign_key {
        None => Publication::Upstream,
        Some(path) => Publication::Resigned(Arc::new(passphrase.open_key(path)?)),
    })
}

/// A size such as `32M` (see [`simplestreams::units::parse_size`]).
fn parse_size(text: &str) -> Result<u64, String> {
    simplestreams::units::parse_size(text).map_err(|e| e.to_string())
}

/// A rate such as `20M` (bytes per second), not zero.
fn parse_rate(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err("a rate of 0 would never finish; leave --limit-rate out for no limit".into()),
        n => Ok(n),
    }
}

/// Share of the mirror `--prune` may delete without `--force`.
pub const WIPE_GUARD: f64 = 0.5;

/// How long `sstream mirror` and `sstream sync` keep the files of versions
/// that left the metadata: a MAAS region that read the previous metadata
/// just before a run finishes its import (and its retries, about two hours)
/// well within it, and an hourly or daily run removes them at its first
/// run after it. The drop-in `sstream-mirror` deletes at once, as the
/// reference.
pub const DEFAULT_DELETE_DELAY: Duration = Duration::from_secs(6 * 3600);
