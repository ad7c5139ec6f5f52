//! `sstream status`: every configured job's last run, last success and its
//! age, result and size, read from the status records in the mirrors; or,
//! given mirror directories or buckets (`sstream status /srv/maas`,
//! `s3://bucket/maas`), every record in those mirrors, whoever wrote it
//! (`sstream sync`, a hand-run or cron `sstream mirror`). Exit
//! status 0 when every job is healthy, 1 when a job's last run failed, it
//! never succeeded, or its last success is older than `--max-age` (so it
//! can back a monitoring check), 2 when the configuration is unusable.
//! The config's views follow the jobs: each with the snapshot it shows,
//! that snapshot's age, when it was published and the MAAS command that
//! adds it as a boot source; a view that shows nothing (or cannot be read)
//! is unhealthy too.

use crate::config::{Config, DEFAULT_PATH, Job};
use crate::error::{CliError, EXIT_FAILURE, EXIT_OK};
use crate::job::parse_duration;
use clap::Args;
use serde::Serialize;
use simplestreams::status::{StatusRecord, Timestamp};
use simplestreams::units::human_size as human;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

/// Options of `sstream status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
    /// A job whose last success is older than this is stale, e.g. 36h, 2d.
    #[arg(long, value_name = "DUR", default_value = "2d", value_parser = parse_duration)]
    pub max_age: Duration,
    /// The jobs to show, by name (default: all); or mirrors, as a
    /// directory (an existing one, or a path with a `/`) or `s3://` bucket:
    /// every status record in each.
    #[arg(value_name = "JOB|DIR")]
    pub jobs: Vec<String>,
}

/// How a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Health {
    /// Last run succeeded, recently enough.
    Ok,
    /// The last run failed.
    Failed,
    /// The last success is older than `--max-age`, or there was none.
    Stale,
    /// No run recorded.
    Never,
    /// The record cannot be read.
    Unreadable,
}

/// One job's line of the report.
#[derive(Debug, Serialize)]
struct JobStatus {
    job: String,
    dir: PathBuf,
    source: String,
    health: Health,
    /// Why the job is not healthy.
    problem: Option<String>,
    /// Age of the last success, in seconds.
    last_success_age_seconds: Option<u64>,
    /// The last run's record, as stored.
    record: Option<StatusRecord>,
}

/// The whole report (`--json`).
#[derive(Debug, Serialize)]
struct Report {
    config: PathBuf,
    max_age_seconds: u64,
    healthy: bool,
    jobs: Vec<JobStatus>,
    /// The config's views (none when only mirrors were named).
    views: Vec<crate::view_ops::ViewStatus>,
}

/// Runs `sstream status`.
pub fn run(args: StatusArgs) -> Result<ExitCode, CliError> {
    let (mirrors, names): (Vec<&String>, Vec<&String>) =
        args.jobs.iter().partition(|a| is_mirror_arg(a));
    let now = SystemTime::now();
    let mut statuses = Vec::new();
    let mut views = Vec::new();
    if mirrors.is_empty() || !names.is_empty() {
        let config = Config::load(&args.config).map_err(CliError::usage)?;
        let names: Vec<String> = names.into_iter().cloned().collect();
        let jobs = config.select(&names).map_err(CliError::usage)?;
        views = crate::view_ops::statuses(&config, now);
        views.retain(|v| names.is_empty() || names.contains(&v.job));
        statuses.extend(jobs.into_iter().map(|job| assess(job, now, args.max_age)));
    }
    for dir in mirrors {
        statuses.extend(assess_mirror(Path::new(dir), now, args.max_age));
    }
    let report = Report {
        config: args.config.clone(),
        max_age_seconds: args.max_age.as_secs(),
        healthy: statuses.iter().all(|s| s.health == Health::Ok)
            && views.iter().all(|v| v.problem.is_none()),
        jobs: statuses,
        views,
    };
    if args.json {
        // JSON escapes control characters itself.
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(CliError::new)?
        );
    } else {
        print!("{}", table(&report.jobs, now));
        if !report.views.is_empty() {
            print!("\n{}", views_table(&report.views, now));
        }
        for v in &report.views {
            if let Some(problem) = &v.problem {
                eprintln!("sstream status: view {}: {}", v.view, printable(problem));
            }
        }
        for s in &report.jobs {
            if let Some(problem) = &s.problem {
                eprintln!(
                    "sstream status: {}: {}",
                    printable(&s.job),
                    printable(problem)
                );
            }
        }
    }
    Ok(ExitCode::from(if report.healthy {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }))
}

/// `text` safe to print on a terminal: control characters (escape
/// sequences, carriage returns, line breaks of a forged status record)
/// shown escaped, as `\u{1b}`, instead of sent raw.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Whether an argument names a mirror (a bucket, a path with a `/`, or an
/// existing directory) rather than a configured job.
fn is_mirror_arg(arg: &str) -> bool {
    arg.starts_with("s3://") || arg.contains('/') || Path::new(arg).is_dir()
}

/// Every record in the mirror at `dir`, each judged; one line saying so
/// when it has none or they cannot be listed.
fn assess_mirror(dir: &Path, now: SystemTime, max_age: Duration) -> Vec<JobStatus> {
    let blank = |health: Health, problem: String| JobStatus {
        job: simplestreams::status::job_name_for(&dir.to_string_lossy()),
        dir: dir.to_path_buf(),
        source: String::new(),
        health,
        problem: Some(problem),
        last_success_age_seconds: None,
        record: None,
    };
    let records = match crate::target::read_all_status(dir, DEFAULT_TIMEOUT) {
        Ok(records) => records,
        Err(e) => return vec![blank(Health::Unreadable, e.to_string())],
    };
    if records.is_empty() {
        let problem = format!("never run (no status record in {})", dir.display());
        return vec![blank(Health::Never, problem)];
    }
    records
        .into_iter()
        .map(|record| {
            let mut status = blank(Health::Ok, String::new());
            status.job = record.job.clone();
            status.source = record.source.clone();
            judge(status, record, now, max_age)
        })
        .collect()
}

/// How long a bucket's requests may take.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads `job`'s record and judges it.
fn assess(job: &Job, now: SystemTime, max_age: Duration) -> JobStatus {
    let mut status = JobStatus {
        job: job.name.clone(),
        dir: job.dir.clone(),
        source: job.source.clone(),
        health: Health::Ok,
        problem: None,
        last_success_age_seconds: None,
        record: None,
    };
    let record = match crate::target::read_status(&job.dir, &job.name, job.options.timeout.get()) {
        Ok(Some(r)) => r,
        Ok(None) => {
            status.health = Health::Never;
            status.problem = Some(format!("never run (no status in {})", job.dir.display()));
            return status;
        }
        Err(e) => {
            status.health = Health::Unreadable;
            status.problem = Some(e.to_string());
            return status;
        }
    };
    judge(status, record, now, max_age)
}

/// Judges `record`: failed, stale, or ok.
fn judge(
    mut status: JobStatus,
    record: StatusRecord,
    now: SystemTime,
    max_age: Duration,
) -> JobStatus {
    let age = record.last_success.map(|t| t.age(now));
    status.last_success_age_seconds = age.map(|a| a.as_secs());
    let (health, problem) = if !record.is_ok() {
        let first = record
            .errors
            .first()
            .map_or("no error recorded", String::as_str);
        let more = match record.errors.len() {
            0 | 1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        (
            Health::Failed,
            Some(format!(
                "last run failed at {}: {first}{more}",
                seconds(record.finished)
            )),
        )
    } else {
        (Health::Ok, None)
    };
    let future = record
        .last_success
        .filter(|t| t.system_time() > now)
        .map(|t| {
            format!(
                "last success at {} is in the future (a wrong clock or a forged record)",
                seconds(t)
            )
        });
    let stale = match age {
        _ if future.is_some() => future,
        None => Some("never succeeded".to_owned()),
        Some(a) if a > max_age => Some(format!(
            "last success {} ago, older than --max-age {}",
            short(a),
            short(max_age)
        )),
        Some(_) => None,
    };
    status.health = health;
    status.problem = match (problem, stale) {
        (Some(p), Some(s)) => Some(format!("{p}; {s}")),
        (Some(p), None) => Some(p),
        (None, Some(s)) => {
            status.health = Health::Stale;
            Some(s)
        }
        (None, None) => None,
    };
    status.record = Some(record);
    status
}

/// The views' part of the text report: one aligned row per view, then
/// the MAAS command of each view that shows a snapshot.
fn views_table(views: &[crate::view_ops::ViewStatus], now: SystemTime) -> String {
    let mut rows = vec![
        [
            "VIEW",
            "JOB",
            "FOLLOWS",
            "SNAPSHOT",
            "AGE",
            "PUBLISHED",
            "ROLLBACK TO",
        ]
        .map(str::to_owned),
    ];
    let dash = || "-".to_owned();
    for v in views {
        rows.push([
            v.view.clone(),
            v.job.clone(),
            printable(&v.follows),
            v.snapshot.as_deref().map_or_else(dash, printable),
            v.snapshot_created.map_or_else(dash, |t| short(t.age(now))),
            v.published.map_or_else(dash, seconds),
            v.rollback_to.as_deref().map_or_else(dash, printable),
        ]);
    }
    let mut out = aligned(rows);
    for v in views {
        if let Some(command) = &v.maas_command {
            out.push_str(&format!("{}: {}\n", v.view, printable(command)));
        }
    }
    out
}

/// Rows of cells as aligned text, one line each.
fn aligned<const N: usize>(rows: Vec<[String; N]>) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The text report: a header and one aligned row per job.
fn table(jobs: &[JobStatus], now: SystemTime) -> String {
    let mut rows = vec![[
        "JOB".to_owned(),
        "STATUS".to_owned(),
        "LAST RUN".to_owned(),
        "LAST SUCCESS".to_owned(),
        "AGE".to_owned(),
        "SIZE".to_owned(),
    ]];
    for s in jobs {
        let r = s.record.as_ref();
        let dash = || "-".to_owned();
        let health = serde_json::to_value(s.health)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        rows.push([
            printable(&s.job),
            health,
            r.map_or_else(dash, |r| seconds(r.finished)),
            r.and_then(|r| r.last_success).map_or_else(dash, seconds),
            r.and_then(|r| r.last_success)
                .map_or_else(dash, |t| short(t.age(now))),
            r.map_or_else(dash, |r| human(r.bytes_on_disk)),
        ]);
    }
    aligned(rows)
}

/// A timestamp to the second.
fn seconds(t: Timestamp) -> String {
    humantime::format_rfc3339_seconds(t.system_time()).to_string()
}

/// A duration to the minute past an hour, to the second below (`3d 4h 12m`).
fn short(d: Duration) -> String {
    let secs = d.as_secs();
    let rounded = if secs >= 3600 { secs - secs % 60 } else { secs };
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations() {
        assert_eq!(short(Duration::from_secs(59)), "59s");
        assert_eq!(short(Duration::from_millis(61_500)), "1m 1s");
        assert_eq!(
            short(Duration::from_secs(3 * 86400 + 4 * 3600 + 12 * 60 + 7)),
            "3days 4h 12m"
        );
        assert_eq!(short(Duration::from_secs(2 * 86400)), "2days");
    }
}
