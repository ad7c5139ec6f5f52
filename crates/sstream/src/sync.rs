//! `sstream sync`: run the jobs of the configuration file (all, or those
//! named), one after the other in one process. Each job's run is recorded
//! in its mirror ([`simplestreams::status`]), summed up in one line, and
//! followed by its `on_success` or `on_failure` hook; one job's failure
//! does not stop the others. Exit status: 0 when every job and hook
//! succeeded, 1 otherwise, 2 when the configuration is unusable.

use crate::cli::{MirrorArgs, StreamArgs};
use crate::config::{Config, DEFAULT_PATH, EXIT_CONFIG, Job};
use crate::progress::human;
use clap::Args;
use simplestreams::layout::{DATA_DIR, OWN_PREFIX, is_part_name, is_temp_name};
use simplestreams::status::{self, RunResult, StatusRecord, Timestamp};
use simplestreams::store::DirStore;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

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

/// What one run of a job did (for a failed run: what it did before failing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOutcome {
    /// Whether anything was published or removed.
    pub changed: bool,
    /// Files downloaded.
    pub files: u64,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Files removed.
    pub removed: u64,
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

/// Runs `sstream sync`.
pub fn run(args: SyncArgs) -> ExitCode {
    if let Err(e) = crate::logging::init(args.verbose, args.log_file.as_deref()) {
        eprintln!("sstream sync: error: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sstream sync: error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let jobs = match config.select(&args.jobs) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("sstream sync: error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut all_ok = true;
    for job in jobs {
        all_ok &= sync_job(job, &args);
    }
    if let (Some(dir), false) = (&args.metrics_textfile, args.dry_run) {
        let records = records_of(&config);
        if let Err(e) = crate::metrics::write_textfile(dir, &records) {
            eprintln!("sstream sync: error: metrics: {e}");
            all_ok = false;
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs one job: mirror, record, report, hook. Whether all of it succeeded.
fn sync_job(job: &Job, args: &SyncArgs) -> bool {
    let say = |line: &str| eprintln!("sstream sync: {}: {line}", job.name);
    if args.dry_run {
        println!(
            "# job {}: {} -> {}",
            job.name,
            job.source,
            job.dir.display()
        );
        return match run_job(job, true, args.progress) {
            Ok(_) => true,
            Err(failure) => {
                failure.errors.iter().for_each(|l| say(l));
                false
            }
        };
    }
    let store = DirStore::new(&job.dir);
    let previous = status::read(&store, &job.name).unwrap_or_else(|e| {
        say(&format!("warning: {e}; starting a new record"));
        None
    });
    let started = Timestamp::now();
    let result = run_job(job, false, args.progress);
    let finished = Timestamp::now();
    let (outcome, errors) = match result {
        Ok(outcome) => (outcome, Vec::new()),
        Err(failure) => (failure.outcome, failure.errors),
    };
    let result = if errors.is_empty() {
        RunResult::Ok
    } else {
        RunResult::Failed
    };
    let record = StatusRecord {
        job: job.name.clone(),
        source: job.source.clone(),
        started,
        finished,
        result,
        errors,
        changed: outcome.changed,
        files_downloaded: outcome.files,
        bytes_downloaded: outcome.bytes,
        files_removed: outcome.removed,
        bytes_on_disk: disk_usage(&job.dir),
        last_success: match result {
            RunResult::Ok => Some(finished),
            RunResult::Failed => previous.and_then(|p| p.last_success),
        },
    };
    let mut ok = record.is_ok();
    record.errors.iter().for_each(|l| say(l));
    if let Err(e) = status::write(&store, &record) {
        say(&format!("cannot write the status record: {e}"));
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
        say(&e);
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

/// Runs a hook with `sh -c`, its environment telling what the run did.
fn run_hook(job: &Job, which: &str, command: &str, r: &StatusRecord) -> Result<(), String> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("SSTREAM_JOB", &job.name)
        .env("SSTREAM_DIR", &job.dir)
        .env("SSTREAM_RESULT", r.result.as_str())
        .env("SSTREAM_CHANGED", if r.changed { "1" } else { "0" })
        .env("SSTREAM_BYTES", r.bytes_downloaded.to_string())
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("{which} hook: cannot run sh: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{which} hook failed ({status}): {command}"))
    }
}

/// The status records of every job of `config` that has one.
fn records_of(config: &Config) -> Vec<StatusRecord> {
    config
        .jobs
        .iter()
        .filter_map(
            |job| match status::read(&DirStore::new(&job.dir), &job.name) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("sstream sync: {}: warning: {e}", job.name);
                    None
                }
            },
        )
        .collect()
}

/// Mirrors `job` once (a dry run prints the plan on stdout instead).
///
/// For now this maps the job onto `sstream mirror`'s arguments and runs
/// [`crate::mirror::run`]; what the run did is read off the directory
/// (files added, changed and removed outside our bookkeeping). A job with
/// several filter groups runs once per group, as the MAAS documentation's
/// command lines do (so not with `prune`, where a group's run would remove
/// what another's mirrored). Options the mirror command does not have yet
/// (`sign_key`, `limit_rate`, `delete_delay`, `min_free`) are refused
/// rather than ignored.
pub fn run_job(job: &Job, dry_run: bool, progress: bool) -> Result<JobOutcome, JobFailure> {
    let unsupported: Vec<String> = [
        ("sign_key", job.sign_key.is_some()),
        ("limit_rate", job.limit_rate.is_some()),
        ("delete_delay", job.delete_delay.is_some()),
        ("min_free", job.min_free.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(key, _)| format!("{key} is not supported by this version of sstream"))
    .collect();
    if !unsupported.is_empty() {
        return Err(JobFailure::new(unsupported));
    }
    let groups: Vec<Vec<String>> = if job.filters.matches_everything() {
        vec![Vec::new()]
    } else {
        job.filters
            .groups()
            .iter()
            .map(|g| g.filters().iter().map(|f| f.as_str().to_owned()).collect())
            .collect()
    };
    if groups.len() > 1 && job.prune {
        return Err(JobFailure::new(vec![
            "prune with several filter groups is not supported by this version of sstream"
                .to_owned(),
        ]));
    }
    let before = (!dry_run).then(|| Snapshot::of(&job.dir));
    let mut errors = Vec::new();
    for filters in groups {
        if let Err(e) = crate::mirror::run(mirror_args(job, filters, dry_run, progress)) {
            errors.extend(e.lines().map(str::to_owned));
            break;
        }
    }
    let outcome = before.map_or_else(JobOutcome::default, |b| b.outcome(&Snapshot::of(&job.dir)));
    if errors.is_empty() {
        Ok(outcome)
    } else {
        Err(JobFailure { errors, outcome })
    }
}

/// `sstream mirror`'s arguments for one filter group of `job`.
fn mirror_args(job: &Job, filters: Vec<String>, dry_run: bool, progress: bool) -> MirrorArgs {
    // The logger is installed by `sync`; `mirror::run` installs it again
    // from these arguments, so they carry the level in force.
    let verbose = match log::max_level() {
        log::LevelFilter::Off | log::LevelFilter::Error | log::LevelFilter::Warn => 0,
        log::LevelFilter::Info => 1,
        _ => 2,
    };
    MirrorArgs {
        keep: job.keep,
        max: job.max,
        no_item_download: job.no_item_download,
        dry_run,
        progress,
        mirrors: job.mirrors.clone(),
        stream: StreamArgs {
            path: job.path.clone(),
            verbose,
            log_file: None,
            keyring: job.keyring.clone(),
            no_verify: job.no_verify,
        },
        no_checksumming_reader: false,
        jobs: job.jobs,
        retries: job.retries,
        verify_existing: job.verify_existing,
        timeout: job.timeout.as_secs_f64(),
        wait: job.wait,
        prune: job.prune,
        force: job.force,
        source: job.source.clone(),
        output_dir: job.dir.clone(),
        filters,
    }
}

/// The files of a mirror directory (size, mtime, inode), outside our own
/// bookkeeping under `.data/` and staging or temporary files.
struct Snapshot(BTreeMap<PathBuf, (u64, i64, i64, u64)>);

impl Snapshot {
    fn of(root: &Path) -> Snapshot {
        let mut files = BTreeMap::new();
        walk(root, &mut |path, meta| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let rel = path.strip_prefix(root).unwrap_or(path);
            let ours = rel.parent() == Some(Path::new(DATA_DIR)) && name.starts_with(OWN_PREFIX);
            if !(ours || is_part_name(name) || is_temp_name(name)) {
                let stamp = (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino());
                files.insert(rel.to_path_buf(), stamp);
            }
        });
        Snapshot(files)
    }

    /// What happened between this snapshot and `after`: every new or
    /// changed file outside `.data/` counts as downloaded.
    fn outcome(&self, after: &Snapshot) -> JobOutcome {
        let in_data = |p: &Path| p.starts_with(DATA_DIR);
        let mut outcome = JobOutcome::default();
        for (path, stamp) in &after.0 {
            let new = self.0.get(path) != Some(stamp);
            outcome.changed |= new;
            if new && !in_data(path) {
                outcome.files += 1;
                outcome.bytes += stamp.0;
            }
        }
        let gone: BTreeSet<&PathBuf> = self
            .0
            .keys()
            .filter(|p| !after.0.contains_key(*p))
            .collect();
        outcome.changed |= !gone.is_empty();
        outcome.removed = gone.iter().filter(|p| !in_data(p)).count() as u64;
        outcome
    }
}

/// Calls `f` for every regular file under `dir` (symlinks not followed).
fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &std::fs::Metadata)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, f);
        } else if meta.is_file() {
            f(&path, &meta);
        }
    }
}

/// The size of everything under `dir`, each file counted once (hard links
/// share their bytes).
pub fn disk_usage(dir: &Path) -> u64 {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    walk(dir, &mut |_, meta| {
        if seen.insert((meta.dev(), meta.ino())) {
            total += meta.len();
        }
    });
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn job(extra: &str) -> Job {
        let text = format!(
            "[[job]]\nname = \"j\"\nsource = \"http://127.0.0.1:9/\"\ndir = \"/nonexistent/j\"\n{extra}"
        );
        let config = Config::parse(&text, Path::new("/etc/sstream/sstream.toml")).unwrap();
        config.jobs.into_iter().next().unwrap()
    }

    #[test]
    fn options_not_supported_yet_are_refused_not_ignored() {
        let j = job("sign_key = \"k.asc\"\nmin_free = \"1G\"\n");
        let failure = run_job(&j, true, false).unwrap_err();
        assert_eq!(
            failure.errors,
            [
                "sign_key is not supported by this version of sstream",
                "min_free is not supported by this version of sstream"
            ]
        );
        let j = job("prune = true\nfilters = [[\"a=1\"], [\"b=2\"]]\n");
        let failure = run_job(&j, true, false).unwrap_err();
        assert!(
            failure.errors[0].contains("prune with several filter groups"),
            "{failure:?}"
        );
        assert!(!Path::new("/nonexistent/j").exists());
    }

    #[test]
    fn snapshots_tell_downloads_removals_and_bookkeeping_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join(".data")).unwrap();
        fs::create_dir_all(root.join("a")).unwrap();
        fs::write(root.join("a/old"), b"12345").unwrap();
        fs::write(root.join("a/kept"), b"1").unwrap();
        fs::write(root.join(".data/references.json"), b"{}").unwrap();
        let before = Snapshot::of(root);
        assert_eq!(before.outcome(&Snapshot::of(root)), JobOutcome::default());
        // Our bookkeeping and staging files change nothing.
        fs::write(root.join(".data/sstream-status-x.json"), b"{}").unwrap();
        fs::write(root.join(".data/sstream.lock"), b"1").unwrap();
        fs::write(root.join("a/new.part"), b"123").unwrap();
        assert_eq!(before.outcome(&Snapshot::of(root)), JobOutcome::default());
        fs::write(root.join("a/new"), b"1234567").unwrap();
        fs::remove_file(root.join("a/old")).unwrap();
        fs::write(root.join(".data/references.json"), b"{\"a\": 1}").unwrap();
        let outcome = before.outcome(&Snapshot::of(root));
        assert_eq!(
            outcome,
            JobOutcome {
                changed: true,
                files: 1,
                bytes: 7,
                removed: 1
            }
        );
        fs::hard_link(root.join("a/new"), root.join("a/same")).unwrap();
        // new (7) + kept (1) + references (8) + status (2) + lock (1) + part (3)
        assert_eq!(disk_usage(root), 22);
        assert_eq!(disk_usage(&root.join("missing")), 0);
    }
}
