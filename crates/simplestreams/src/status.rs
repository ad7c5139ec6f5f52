//! The status record of a configured job: what its last run did and when it
//! last succeeded, kept in the mirror itself (`.data/sstream-status-<job>.json`)
//! so that a status command, a metrics exporter or the server can tell how
//! fresh the mirror is without any other database.
//!
//! Records are written atomically through [`DirStore::write_atomic`]: a
//! reader sees the previous record or the new one, never a mix.

use crate::error::{Error, Result};
use crate::layout::{DATA_DIR, status_job, status_name};
use crate::path::RelPath;
use crate::store::{DirStore, Store};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, written as RFC 3339 in UTC with milliseconds
/// (`2025-07-18T02:30:00.123Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Timestamp {
        Timestamp(SystemTime::now())
    }

    /// The time as a [`SystemTime`].
    pub fn system_time(self) -> SystemTime {
        self.0
    }

    /// Seconds since the Unix epoch (negative before it).
    pub fn unix_seconds(self) -> f64 {
        match self.0.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        }
    }

    /// How long before `now` this was (zero if it is in the future).
    pub fn age(self, now: SystemTime) -> Duration {
        now.duration_since(self.0).unwrap_or_default()
    }

    /// The time elapsed from this one to `later` (zero if `later` is earlier).
    pub fn until(self, later: Timestamp) -> Duration {
        later.0.duration_since(self.0).unwrap_or_default()
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        Timestamp(t)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.0))
    }
}

impl FromStr for Timestamp {
    type Err = humantime::TimestampError;

    /// Parses RFC 3339 in UTC (`Z`), with or without fractional seconds.
    fn from_str(s: &str) -> Result<Timestamp, Self::Err> {
        humantime::parse_rfc3339(s).map(Timestamp)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e| {
            serde::de::Error::custom(format!("bad timestamp {text:?} (want RFC 3339 UTC): {e}"))
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    /// Everything was mirrored and published.
    Ok,
    /// The run failed; see the record's errors.
    Failed,
}

impl RunResult {
    /// `ok` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Ok => "ok",
            RunResult::Failed => "failed",
        }
    }
}

impl fmt::Display for RunResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a job's last run did, and when the job last succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// The job's name (see [`check_job_name`]).
    pub job: String,
    /// The source the job mirrors (URL or directory, as configured).
    pub source: String,
    /// When the run started.
    pub started: Timestamp,
    /// When the run ended.
    pub finished: Timestamp,
    /// How it ended.
    pub result: RunResult,
    /// One line per problem of a failed run (empty when it succeeded).
    #[serde(default)]
    pub errors: Vec<String>,
    /// Whether the run published or removed anything.
    pub changed: bool,
    /// Files downloaded by the run.
    pub files_downloaded: u64,
    /// Bytes downloaded by the run.
    pub bytes_downloaded: u64,
    /// Files the run removed from the mirror.
    pub files_removed: u64,
    /// Size of the mirror after the run: its directory (each file counted
    /// once) or the objects of its bucket.
    pub bytes_on_disk: u64,
    /// When the last successful run ended: this run if it succeeded, else
    /// carried over from the previous record (`None`: never).
    pub last_success: Option<Timestamp>,
    /// How the run verified the source's metadata (`None` in a record
    /// written before records said).
    #[serde(default)]
    pub verified_with: Option<Verified>,
}

/// How a run verified the metadata it mirrored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verified {
    /// Against a keyring of these primary-key fingerprints (40 upper-case
    /// hex digits each): `{"keyring": ["…"]}`.
    Keyring(Vec<String>),
    /// Not at all: an unsigned stream, or `--no-verify`: `"unverified"`.
    Unverified,
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verified::Keyring(fingerprints) => write!(f, "keyring {}", fingerprints.join(", ")),
            Verified::Unverified => f.write_str("unverified"),
        }
    }
}

/// The job name of a mirror run by hand (`sstream mirror` without
/// `--job-name`): the last component of its directory or bucket prefix
/// (the bucket itself when it has none), every character a job name cannot
/// hold replaced by `-`, leading ones dropped; `mirror` when nothing is left.
pub fn job_name_for(dir: &str) -> String {
    let trimmed = dir.trim_end_matches('/');
    let last = match trimmed.strip_prefix("s3://") {
        Some(bucket) => bucket.rsplit('/').next().unwrap_or(bucket),
        None => trimmed.rsplit('/').next().unwrap_or(trimmed),
    };
    let name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(MAX_JOB_NAME)
        .collect();
    if name.is_empty() {
        "mirror".to_owned()
    } else {
        name
    }
}

impl StatusRecord {
    /// How long the run took.
    pub fn duration(&self) -> Duration {
        self.started.until(self.finished)
    }

    /// Whether the run succeeded.
    pub fn is_ok(&self) -> bool {
        self.result == RunResult::Ok
    }
}

/// The longest job name: it becomes part of a file name.
const MAX_JOB_NAME: usize = 100;

/// Checks that `name` can name a job: 1 to 100 ASCII letters, digits, `.`,
/// `_` or `-`, starting with a letter or digit (it becomes part of a file
/// name and a metrics label).
pub fn check_job_name(name: &str) -> std::result::Result<(), BadJobName> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.len() > MAX_JOB_NAME || !first_ok || !rest_ok {
        return Err(BadJobName(name.to_owned()));
    }
    Ok(())
}

/// A name that cannot name a job (see [`check_job_name`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a job name is 1 to {MAX_JOB_NAME} ASCII letters, digits, '.', '_' or '-', \
     starting with a letter or digit: {0:?}"
)]
pub struct BadJobName(pub String);

/// The record's path relative to the mirror root.
fn record_rel(job: &str) -> Result<RelPath> {
    let bad = |reason: String| Error::UnsafePath {
        context: DATA_DIR.into(),
        path: job.into(),
        reason,
    };
    check_job_name(job).map_err(|e| bad(e.to_string()))?;
    RelPath::parse(&format!("{DATA_DIR}/{}", status_name(job))).map_err(|e| bad(e.to_string()))
}

/// Where the record of `job` lives in `store` (whether or not it exists).
pub fn record_path(store: &DirStore, job: &str) -> Result<PathBuf> {
    Ok(record_rel(job)?.under(store.root()))
}

/// Writes `record` atomically into `store`.
pub async fn write(store: &dyn Store, record: &StatusRecord) -> Result<()> {
    let rel = record_rel(&record.job)?;
    let mut text = serde_json::to_vec_pretty(record)
        .map_err(|e| Error::metadata(rel.as_str(), e.to_string()))?;
    text.push(b'\n');
    store.write_atomic(&rel, &text).await
}

/// The record of `job` in `store`, if there is one.
pub async fn read(store: &dyn Store, job: &str) -> Result<Option<StatusRecord>> {
    let rel = record_rel(job)?;
    let Some(bytes) = store.read(&rel).await? else {
        return Ok(None);
    };
    parse_record(&store.display(&rel), job, &bytes).map(Some)
}

/// The record of `job` in the bytes read from `where_`.
fn parse_record(where_: &str, job: &str, bytes: &[u8]) -> Result<StatusRecord> {
    let record: StatusRecord = serde_json::from_slice(bytes)
        .map_err(|e| Error::metadata(where_, format!("malformed status record: {e}")))?;
    if record.job != job {
        return Err(Error::metadata(
            where_,
            format!(
                "malformed status record: it is about job {:?}, not {job:?}",
                record.job
            ),
        ));
    }
    Ok(record)
}

/// [`read`] in a directory, blocking (for synchronous callers).
pub fn read_blocking(store: &DirStore, job: &str) -> Result<Option<StatusRecord>> {
    let rel = record_rel(job)?;
    let Some(bytes) = store.read_blocking(&rel)? else {
        return Ok(None);
    };
    parse_record(&store.display(&rel), job, &bytes).map(Some)
}

/// Every job's record in `store`, a directory or a bucket (one listing),
/// sorted by job name. A record that cannot be read is skipped with a
/// warning: one bad file does not hide the others.
pub async fn read_all_in(store: &dyn Store) -> Result<Vec<StatusRecord>> {
    let prefix = format!("{DATA_DIR}/");
    let mut jobs: Vec<String> = store
        .list()
        .await?
        .into_iter()
        .filter_map(|o| status_job(o.rel.strip_prefix(&prefix)?).map(str::to_owned))
        .filter(|job| check_job_name(job).is_ok())
        .collect();
    jobs.sort();
    jobs.dedup();
    let mut records = Vec::new();
    for job in jobs {
        match read(store, &job).await {
            Ok(Some(r)) => records.push(r),
            Ok(None) => {}
            Err(e) => log::warn!("{e}"),
        }
    }
    Ok(records)
}

/// Every job's record in `store`, sorted by job name (none when the mirror
/// has no state directory). A record that cannot be read is skipped with a
/// warning: one bad file does not hide the others.
pub fn read_all(store: &DirStore) -> Result<Vec<StatusRecord>> {
    let dir = store.root().join(DATA_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut jobs: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            status_job(&name).map(str::to_owned)
        })
        .filter(|job| check_job_name(job).is_ok())
        .collect();
    jobs.sort();
    let mut records = Vec::new();
    for job in jobs {
        match read_blocking(store, &job) {
            Ok(Some(r)) => records.push(r),
            Ok(None) => {}
            Err(e) => log::warn!("{e}"),
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(job: &str, result: RunResult) -> StatusRecord {
        let started: Timestamp = "2025-07-18T02:30:00Z".parse().unwrap();
        let finished: Timestamp = "2025-07-18T02:31:05.250Z".parse().unwrap();
        StatusRecord {
            job: job.into(),
            source: "https://images.maas.io/ephemeral-v3/stable/".into(),
            started,
            finished,
            result,
            errors: match result {
                RunResult::Ok => vec![],
                RunResult::Failed => vec!["http://x/a: 404 Not Found".into()],
            },
            changed: true,
            files_downloaded: 3,
            bytes_downloaded: 12345,
            files_removed: 1,
            bytes_on_disk: 99999,
            last_success: Some(finished),
            verified_with: Some(Verified::Keyring(vec!["A".repeat(40)])),
        }
    }

    #[test]
    fn job_names_from_directories() {
        assert_eq!(job_name_for("/srv/mirror/maas-stable/"), "maas-stable");
        assert_eq!(job_name_for("images"), "images");
        assert_eq!(job_name_for("s3://bucket"), "bucket");
        assert_eq!(job_name_for("s3://bucket/pre/maas/"), "maas");
        assert_eq!(job_name_for("/srv/.my mirror"), "my-mirror");
        assert_eq!(job_name_for("/"), "mirror");
        assert_eq!(job_name_for("/srv/über"), "ber");
        for dir in ["/a/b", "/srv/.x y", "/", "s3://b/", &"z".repeat(300)] {
            assert!(check_job_name(&job_name_for(dir)).is_ok(), "{dir}");
        }
    }

    #[test]
    fn how_a_run_verified_is_recorded() {
        let r = record("maas", RunResult::Ok);
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains(r#""verified_with":{"keyring":["AAAA"#),
            "{text}"
        );
        let unverified = serde_json::to_string(&Verified::Unverified).unwrap();
        assert_eq!(unverified, r#""unverified""#);
        let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
        old.as_object_mut().unwrap().remove("verified_with");
        let old: StatusRecord = serde_json::from_value(old).unwrap();
        assert_eq!(old.verified_with, None);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t: Timestamp = "2025-07-18T02:31:05.250Z".parse().unwrap();
        assert_eq!(t.to_string(), "2025-07-18T02:31:05.250Z");
        assert_eq!(t.unix_seconds(), 1752805865.25);
        let whole: Timestamp = "2025-07-18T02:31:05Z".parse().unwrap();
        assert_eq!(whole.until(t), Duration::from_millis(250));
        assert_eq!(t.until(whole), Duration::ZERO);
        assert!("2025-07-18 02:31".parse::<Timestamp>().is_err());
    }

    #[tokio::test]
    async fn records_round_trip_through_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::new(tmp.path());
        assert_eq!(read(&store, "maas").await.unwrap(), None);
        assert!(read_all(&store).unwrap().is_empty());
        let ok = record("maas", RunResult::Ok);
        write(&store, &ok).await.unwrap();
        let failed = record("bootloaders", RunResult::Failed);
        write(&store, &failed).await.unwrap();
        assert_eq!(read(&store, "maas").await.unwrap().as_ref(), Some(&ok));
        assert_eq!(read_all(&store).unwrap(), vec![failed, ok.clone()]);
        assert_eq!(ok.duration(), Duration::from_millis(65250));
        let path = record_path(&store, "maas").unwrap();
        assert!(path.ends_with(".data/sstream-status-maas.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"result\": \"ok\""), "{text}");
        assert!(
            text.contains("\"started\": \"2025-07-18T02:30:00.000Z\""),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_malformed_record_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::new(tmp.path());
        write(&store, &record("good", RunResult::Ok)).await.unwrap();
        std::fs::write(
            tmp.path().join(".data/sstream-status-bad.json"),
            b"{\"job\":",
        )
        .unwrap();
        let err = read(&store, "bad").await.unwrap_err().to_string();
        assert!(err.contains("sstream-status-bad.json"), "{err}");
        assert!(err.contains("malformed status record"), "{err}");
        let jobs: Vec<String> = read_all(&store)
            .unwrap()
            .into_iter()
            .map(|r| r.job)
            .collect();
        assert_eq!(jobs, ["good"]);
    }

    #[tokio::test]
    async fn job_names() {
        for ok in ["maas", "maas-stable", "a.b_c", "9"] {
            assert!(check_job_name(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(101);
        for bad in ["", ".hidden", "-x", "a/b", "a b", "ü", long.as_str()] {
            assert!(check_job_name(bad).is_err(), "{bad}");
        }
        let tmp = tempfile::tempdir().unwrap();
        let err = read(&DirStore::new(tmp.path()), "../x").await.unwrap_err();
        assert!(err.to_string().contains("job name"), "{err}");
    }
}
