//! `sstream sync`: run the jobs of the configuration file (all, or those
//! named), one after the other in one process. Each job's run is recorded
//! in its mirror ([`simplestreams::status`]), summed up in one line, and
//! followed by its `on_success` or `on_failure` hook; one job's failure
//! does not stop the others. After a successful run, the job's mirror is
//! snapshotted and its views refreshed ([`crate::view_ops::after_run`]);
//! a view that cannot be refreshed fails the job's run (in its status
//! record and the exit status) as the run's own errors do. Exit status: 0
//! when every job, view and hook succeeded, 1 otherwise, 2 when the
//! configuration is unusable.

use crate::config::{Config, DEFAULT_PATH, Job};
use crate::error::{CliError, EXIT_FAILURE};
use crate::plan_view::PlanFormat;
use crate::record::{JobOutcome, RunIdentity, RunRecorder};
use anyhow::Context;
use clap::Args;
use simplestreams::status::{RunResult, StatusRecord};
use simplestreams::units::human_size as human;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// Options of `sstream sync`.
#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Print what each job would do (on stdout) and change nothing: no
    /// status, no hooks, no metrics.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: every job's plan in one JSON document
    /// (`{"jobs": [{"name", "source", "dir", "plan" | "errors", "views"?}]}`).
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    /// Also write every job's metrics to DIR/sstream.prom (for
    /// node_exporter's textfile collector).
    #[arg(long, value_name = "DIR")]
    pub metrics_textfile: Option<PathBuf>,
    /// Show download progress.
    #[arg(long)]
    pub progress: bool,
    /// More output (repeatable).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Also write the log to this file.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// The jobs to run, by name (default: all, in file order).
    #[arg(value_name = "JOB")]
    pub jobs: Vec<String>,
}

/// A failed run of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFailure {
    /// One line per problem.
    pub errors: Vec<String>,
    /// What the run did before it failed.
    pub outcome: JobOutcome,
}

impl JobFailure {
    fn new(errors: Vec<String>) -> JobFailure {
        JobFailure {
            errors,
            outcome: JobOutcome::default(),
        }
    }
}

/// Runs `sstream sync`: 0 when every job and hook succeeded, 1 otherwise;
/// an unusable configuration is a usage error (2).
pub fn run(args: SyncArgs) -> Result<ExitCode, CliError> {
    crate::logging::init(args.verbose, args.log_file.as_deref()).map_err(CliError::usage)?;
    let config = load_config(&args.config)?;
    let jobs = config.select(&args.jobs).map_err(CliError::usage)?;
    if args.json {
        return dry_run_json(&config, &jobs);
    }
    let mut all_ok = true;
    for job in jobs {
        all_ok &= sync_job(&config, job, &args);
    }
    if let (Some(dir), false) = (&args.metrics_textfile, args.dry_run) {
        let records = records_of(&config);
        let views: Vec<_> = crate::view_ops::statuses(&config, std::time::SystemTime::now())
            .iter()
            .filter_map(crate::view_ops::ViewStatus::sample)
            .collect();
        crate::metrics::write_textfile(dir, &records, &views).context("metrics")?;
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

/// Loads the configuration; a missing file is a usage error saying how to
/// name one and where the example is.
fn load_config(file: &Path) -> Result<Config, CliError> {
    if !file.exists() && std::fs::symlink_metadata(file).is_err() {
        return Err(CliError::usage(anyhow::anyhow!(
            "{}: cannot read the configuration: no such file; name one with --config FILE, \
             or start from the example (dist/sstream.toml in the source, installed as {DEFAULT_PATH})",
            file.display()
        )));
    }
    Config::load(file).map_err(CliError::usage)
}

/// `sync --dry-run --json`: every job's plan (or its errors), and what
/// would be done for its mirror's views (`views`, when it has some), in
/// one JSON document on stdout (see [`crate::plan_view`]); exit 1 when a job
/// could not be planned.
fn dry_run_json(config: &Config, jobs: &[&Job]) -> Result<ExitCode, CliError> {
    let mut all_ok = true;
    let mut entries = Vec::new();
    for job in jobs {
        let mut entry = serde_json::json!({
            "name": job.name,
            "source": job.source,
            "dir": job.dir.display().to_string(),
        });
        let planned = job
            .mirror_job()
            .build()
            .and_then(|mirror| crate::mirror::plan(&mirror));
        let (key, value) = match planned {
            Ok(plan) => ("plan", crate::plan_view::to_json(&plan)),
            Err(e) => {
                all_ok = false;
                ("errors", serde_json::json!(e.lines()))
            }
        };
        if let Some(map) = entry.as_object_mut() {
            map.insert(key.into(), value);
            if let Some(views) = crate::view_ops::dry_run(config, job) {
                map.insert("views".into(), serde_json::json!(views));
            }
        }
        entries.push(entry);
    }
    let document = serde_json::json!({ "jobs": entries });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{document}")?;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

/// Runs one job: mirror, snapshot and views, record, report, hook.
/// Whether all of it succeeded.
fn sync_job(config: &Config, job: &Job, args: &SyncArgs) -> bool {
    let say = |line: &str| eprintln!("sstream sync: {}: {line}", job.name);
    if args.dry_run {
        println!(
            "# job {}: {} -> {}",
            job.name,
            job.source,
            job.dir.display()
        );
        return match run_job(job, true, args.progress) {
            Ok(_) => {
                for line in crate::view_ops::dry_run_lines(config, job) {
                    println!("{line}");
                }
                true
            }
            Err(failure) => {
                failure.errors.iter().for_each(|l| say(l));
                false
            }
        };
    }
    let identity = RunIdentity {
        job: job.name.clone(),
        source: job.source.clone(),
        dir: job.dir.clone(),
        verified_with: job.mirror_job().verified_with(),
        size_bucket: true,
    };
    let recorder = match RunRecorder::start(identity, job.options.timeout.get(), &say) {
        Ok(recorder) => recorder,
        Err(e) => {
            say(&e.to_string());
            return false;
        }
    };
    let (outcome, errors) = match run_job(job, false, args.progress) {
        Ok(outcome) => {
            let errors = crate::view_ops::after_run(config, job, outcome.changed, &say);
            (outcome, errors)
        }
        Err(failure) => (failure.outcome, failure.errors),
    };
    let (record, written) = recorder.finish(&outcome, errors, &say);
    let mut ok = record.is_ok();
    record.errors.iter().for_each(|l| say(l));
    if let Err(e) = written {
        say(&e);
        ok = false;
    }
    println!("{}: {}", job.name, summary(&record));
    let _ = std::io::stdout().flush();
    let hook = match record.result {
        RunResult::Ok => job.on_success.as_deref().map(|c| ("on_success", c)),
        RunResult::Failed => job.on_failure.as_deref().map(|c| ("on_failure", c)),
    };
    if let Some((which, command)) = hook
        && let Err(e) = run_hook(job, which, command, &record)
    {
        say(&e.to_string());
        ok = false;
    }
    ok
}

/// The one-line summary of a run, after the job's name.
fn summary(r: &StatusRecord) -> String {
    let took = format!("{:.1}s", r.duration().as_secs_f64());
    let what = if r.changed || r.files_downloaded > 0 {
        format!(
            "{} file(s), {} downloaded, {} file(s) removed",
            r.files_downloaded,
            human(r.bytes_downloaded),
            r.files_removed
        )
    } else {
        "nothing changed".to_owned()
    };
    let disk = human(r.bytes_on_disk);
    match r.result {
        RunResult::Ok => format!("ok in {took}; {what}; {disk} on disk"),
        RunResult::Failed => format!(
            "FAILED after {took} ({} error(s)); {what}; {disk} on disk",
            r.errors.len()
        ),
    }
}

/// A hook that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// `sh` could not be started or waited for.
    #[error("{which} hook: cannot {what} sh: {source}")]
    Shell {
        /// `on_success` or `on_failure`.
        which: String,
        /// `run` or `wait for`.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// It ran longer than the job's `hook_timeout`.
    #[error("{which} hook timed out after {} and was killed: {command}", humantime::format_duration(*.limit))]
    TimedOut {
        /// `on_success` or `on_failure`.
        which: String,
        /// The hook's command.
        command: String,
        /// The job's `hook_timeout`.
        limit: Duration,
    },
    /// It exited unsuccessfully.
    #[error("{which} hook failed ({status}): {command}")]
    Failed {
        /// `on_success` or `on_failure`.
        which: String,
        /// The hook's command.
        command: String,
        /// How it exited.
        status: std::process::ExitStatus,
    },
}

/// Runs a hook with `sh -c` in a process group of its own, its environment
/// telling what the run did; kills the group when it outlives the job's
/// `hook_timeout`.
fn run_hook(job: &Job, which: &str, command: &str, r: &StatusRecord) -> Result<(), HookError> {
    let shell = |what, source| HookError::Shell {
        which: which.to_owned(),
        what,
        source,
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("SSTREAM_JOB", &job.name)
        .env("SSTREAM_DIR", &job.dir)
        .env("SSTREAM_RESULT", r.result.as_str())
        .env("SSTREAM_CHANGED", if r.changed { "1" } else { "0" })
        .env("SSTREAM_BYTES", r.bytes_downloaded.to_string())
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| shell("run", e))?;
    let Some(status) =
        wait_at_most(&mut child, job.hook_timeout).map_err(|e| shell("wait for", e))?
    else {
        kill_group(&mut child);
        return Err(HookError::TimedOut {
            which: which.to_owned(),
            command: command.to_owned(),
            limit: job.hook_timeout,
        });
    };
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Failed {
            which: which.to_owned(),
            command: command.to_owned(),
            status,
        })
    }
}

/// The child's exit status, or `None` when it is still running after
/// `limit`.
fn wait_at_most(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Ends a hook that ran too long: SIGTERM to its process group, SIGKILL
/// to what is left of it 5 s later, then reaps the shell.
fn kill_group(child: &mut std::process::Child) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals a process group; the
    // group is the hook's own (process_group(0) above).
    unsafe { libc::kill(-pid, libc::SIGTERM) };
    let _ = wait_at_most(child, Duration::from_secs(5));
    // SAFETY: as above; a group already gone is ESRCH, ignored.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let _ = child.wait();
}

/// The status records in every mirror of `config`: its jobs' and those of
/// hand-run or cron `sstream mirror` runs into the same mirrors (the first
/// record of a job name kept, so that each is one series).
fn records_of(config: &Config) -> Vec<StatusRecord> {
    let mut dirs: Vec<(&Path, Duration)> = Vec::new();
    for job in &config.jobs {
        if !dirs.iter().any(|(d, _)| *d == job.dir.as_path()) {
            dirs.push((&job.dir, job.options.timeout.get()));
        }
    }
    let mut records: Vec<StatusRecord> = Vec::new();
    for (dir, timeout) in dirs {
        match crate::target::read_all_status(dir, timeout) {
            Ok(found) => {
                for r in found {
                    if !records.iter().any(|seen| seen.job == r.job) {
                        records.push(r);
                    }
                }
            }
            // A mirror not made yet has no records.
            Err(_) if !crate::target::is_bucket(dir) && !dir.exists() => {}
            Err(e) => eprintln!("sstream sync: {}: warning: {e}", dir.display()),
        }
    }
    records
}

/// Mirrors `job` once through the library's entry point, all its filter
/// groups in one run, one plan and one publish (a dry run prints the plan
/// on stdout instead).
pub fn run_job(job: &Job, dry_run: bool, progress: bool) -> Result<JobOutcome, JobFailure> {
    let chatty = progress || log::max_level() >= log::LevelFilter::Info;
    let summary = job
        .mirror_job()
        .build()
        .and_then(|mirror| {
            let shown = crate::mirror::Shown {
                dry_run,
                format: PlanFormat::Reference,
                bar: progress,
                chatty,
            };
            crate::mirror::execute(&mirror, shown)
        })
        .map_err(|e| JobFailure::new(e.lines()))?;
    Ok(crate::mirror::outcome_of(summary.as_ref()))
}
