//! `sstream mirror` / `sstream-mirror`: the command line made a
//! [`MirrorJob`], the plan printed, progress shown, a summary.

use crate::error::CliError;
use crate::job::{DEFAULT_DELETE_DELAY, JobOptions, MirrorJob};
use crate::plan_view::{PlanFormat, render};
use crate::progress::RunDisplay;
use crate::record::{JobOutcome, RunIdentity, RunRecorder};
use crate::sign::PassphraseArgs;
use crate::stream_args::StreamArgs;
use crate::target::NewMirrorDir;
use clap::Args;
use simplestreams::filter::FilterGroups;
use simplestreams::mirror::{Mirror, Summary};
use simplestreams::plan::Plan;
use simplestreams::status;
use simplestreams::units::human_size;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Options of `sstream mirror` and the drop-in `sstream-mirror`: the
/// job's options (see [`JobOptions`]) and how this run shows itself.
#[derive(Debug, Clone, Args)]
pub struct MirrorArgs {
    /// Every option of the job, each also a config key.
    #[command(flatten)]
    pub job: JobOptions,
    /// Print what would be done (on stdout) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: the plan as one JSON document (actions, totals,
    /// the space check).
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    /// Show download progress.
    #[arg(long)]
    pub progress: bool,
    /// More output (repeatable).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Write the log to this file as well as to stderr.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Accepted for compatibility; items are always verified.
    #[arg(long)]
    pub no_checksumming_reader: bool,
    /// The signing key's passphrase, when it has one.
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// The name of this run's status record
    /// (`.data/sstream-status-NAME.json`; default: the name of the mirror's
    /// directory or bucket prefix).
    #[arg(long, value_name = "NAME")]
    pub job_name: Option<String>,
    /// The drop-in `sstream-mirror`: the reference's defaults.
    #[arg(skip)]
    pub drop_in: bool,
    /// The source: a URL (http, https, file) or a directory.
    pub source: String,
    /// The mirror directory to write, or a bucket: s3://BUCKET/PREFIX.
    pub output_dir: PathBuf,
    /// Filters: KEY=VALUE, KEY!=VALUE, KEY~REGEX, KEY!~REGEX.
    pub filters: Vec<String>,
}

/// Runs a mirror (or, with `--dry-run`, prints its plan).
pub fn run(args: MirrorArgs) -> Result<ExitCode, CliError> {
    let job = args.job()?;
    args.stream().init_logging()?;
    let chatty = args.progress || args.verbose > 0;
    let created = NewMirrorDir::watch(&args.output_dir);
    let shown = Shown {
        dry_run: args.dry_run,
        format: args.plan_format(),
        bar: args.progress,
        chatty,
    };
    if args.dry_run {
        job.build()
            .and_then(|mirror| execute(&mirror, shown))
            .inspect_err(|_| created.remove_if_empty())?;
        return Ok(ExitCode::SUCCESS);
    }
    // A target that is not a directory (a file) gets no record: the run
    // fails on it with its own message.
    let recordable = crate::target::is_bucket(&args.output_dir)
        || !args.output_dir.exists()
        || args.output_dir.is_dir();
    let recorder = recordable.then(|| args.recorder(&job)).transpose()?;
    let result = job.build().and_then(|mirror| execute(&mirror, shown));
    let (outcome, errors) = match &result {
        Ok(summary) => (outcome_of(summary.as_ref()), Vec::new()),
        Err(e) => (JobOutcome::default(), e.lines()),
    };
    if result.is_err() {
        created.remove_if_empty();
    }
    // A run that failed before making its directory (or whose new
    // directory held nothing and was removed again) leaves none behind.
    if let Some(recorder) = recorder
        && (crate::target::is_bucket(&args.output_dir) || args.output_dir.is_dir())
    {
        let (_, written) = recorder.finish(&outcome, errors, &warn);
        if let Err(e) = written {
            warn(&e);
        }
    }
    if let (Some(summary), true) = (result?, chatty) {
        eprintln!("{}", summary_line(&summary));
    }
    Ok(ExitCode::SUCCESS)
}

/// A warning about the run's status record, on stderr.
fn warn(line: &str) {
    log::warn!("{line}");
}

/// What a run that ended with `summary` did, for its status record.
pub fn outcome_of(summary: Option<&Summary>) -> JobOutcome {
    summary.map_or_else(JobOutcome::default, |s| JobOutcome {
        changed: s.changed,
        files: s.report.files as u64,
        bytes: s.report.bytes,
        removed: s.report.deleted as u64,
    })
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

/// How a run shows itself.
#[derive(Debug, Clone, Copy)]
pub struct Shown {
    /// Print the plan on stdout and change nothing.
    pub dry_run: bool,
    /// How the plan is printed.
    pub format: PlanFormat,
    /// A progress display.
    pub bar: bool,
    /// The plan (on stderr) and a summary.
    pub chatty: bool,
}

/// Runs a job: with `dry_run` prints its plan on stdout (and gives `None`),
/// otherwise mirrors with a progress display (`bar`) and the plan on
/// stderr (`chatty`), each plan in `format`.
pub fn execute(mirror: &Mirror, shown: Shown) -> Result<Option<Summary>, CliError> {
    if shown.dry_run {
        let plan = plan(mirror)?;
        let mut out = std::io::stdout().lock();
        for line in render(&plan, shown.format) {
            writeln!(out, "{line}")?;
        }
        return Ok(None);
    }
    crate::runtime()?.block_on(async {
        let display = Arc::new(RunDisplay::new(shown.bar, shown.chatty).plan_format(shown.format));
        let result = mirror.run(display.clone()).await;
        display.finish();
        Ok(Some(result?))
    })
}

/// The plan of a job, changing nothing (a dry run).
pub fn plan(mirror: &Mirror) -> Result<Plan, CliError> {
    crate::runtime()?.block_on(async { Ok(mirror.plan().await?) })
}

impl MirrorArgs {
    /// How a dry run prints its plan: JSON with `--json`, the reference's
    /// lines for the drop-in, human units for `sstream mirror`.
    pub fn plan_format(&self) -> PlanFormat {
        match (self.json, self.drop_in) {
            (true, _) => PlanFormat::Json,
            (false, true) => PlanFormat::Reference,
            (false, false) => PlanFormat::Human,
        }
    }

    /// The job these options describe (`--keep` without `--max` is a usage
    /// error, as `keep` without `max` in a config).
    pub fn job(&self) -> Result<MirrorJob, CliError> {
        let flag = |key: &str| JobOptions::flag_of(key).unwrap_or_else(|| key.to_owned());
        self.job.validate(flag).map_err(CliError::usage)?;
        Ok(MirrorJob {
            source: self.source.clone(),
            dir: self.output_dir.clone(),
            filters: FilterGroups::parse(&[&self.filters])?,
            options: self.job.clone(),
            default_delete_delay: if self.drop_in {
                Duration::ZERO
            } else {
                DEFAULT_DELETE_DELAY
            },
            plain_twins: !self.drop_in,
            passphrase: self.passphrase.clone(),
        })
    }

    /// The recorder of this run's status record (the job named by
    /// `--job-name` or after the mirror's directory).
    fn recorder(&self, job: &MirrorJob) -> Result<RunRecorder, CliError> {
        let dir = self.output_dir.to_string_lossy();
        let name = match &self.job_name {
            Some(name) => name.clone(),
            None if crate::target::is_bucket(&self.output_dir) => status::job_name_for(&dir),
            None => {
                let absolute = std::path::absolute(&self.output_dir)?;
                status::job_name_for(&absolute.to_string_lossy())
            }
        };
        let identity = RunIdentity {
            job: name,
            source: self.source.clone(),
            dir: self.output_dir.clone(),
            verified_with: job.verified_with(),
            size_bucket: false,
        };
        RunRecorder::start(identity, self.job.timeout.get(), &warn)
    }

    /// How the stream is read and logged.
    pub fn stream(&self) -> StreamArgs {
        self.job.stream(self.verbose, self.log_file.clone())
    }
}
