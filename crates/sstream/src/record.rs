//! The status record every run of a mirror leaves in it
//! (`.data/sstream-status-<job>.json`, see [`simplestreams::status`]):
//! `sstream sync` for each job, `sstream mirror` and the drop-in
//! `sstream-mirror` under `--job-name` or the name of the mirror's
//! directory ([`status::job_name_for`]). A [`RunRecorder`] is started
//! before the run (it reads the previous record, whose last success a
//! failed run carries over) and finished after it.

use crate::error::CliError;
use simplestreams::status::{self, RunResult, StatusRecord, Timestamp, Verified};
use simplestreams::store::Store;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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

/// Which run is recorded: the job, what it mirrors, where, and how its
/// metadata is verified.
#[derive(Debug, Clone)]
pub struct RunIdentity {
    /// The job's name (checked when the record is written).
    pub job: String,
    /// The source, as given.
    pub source: String,
    /// The mirror directory or bucket.
    pub dir: PathBuf,
    /// How the source's metadata is verified (`None`: not known).
    pub verified_with: Option<Verified>,
    /// Whether a bucket is listed after the run to size it (`sstream
    /// sync`); a hand run never lists (its record carries the previous
    /// size over).
    pub size_bucket: bool,
}

/// A run being recorded: started before it, finished after it.
pub struct RunRecorder {
    identity: RunIdentity,
    store: Arc<dyn Store>,
    runtime: tokio::runtime::Runtime,
    previous: Option<StatusRecord>,
    started: Timestamp,
}

impl RunRecorder {
    /// Opens the mirror's store (requests bounded by `timeout`) and reads
    /// the previous record; a record that cannot be read is reported
    /// through `warn` and replaced.
    pub fn start(
        identity: RunIdentity,
        timeout: Duration,
        warn: &dyn Fn(&str),
    ) -> Result<RunRecorder, CliError> {
        status::check_job_name(&identity.job).map_err(CliError::usage)?;
        let store = crate::target::store_at(&identity.dir, timeout)?;
        let runtime = crate::runtime()?;
        let previous = runtime
            .block_on(status::read(store.as_ref(), &identity.job))
            .unwrap_or_else(|e| {
                warn(&format!("warning: {e}; starting a new record"));
                None
            });
        Ok(RunRecorder {
            identity,
            store,
            runtime,
            previous,
            started: Timestamp::now(),
        })
    }

    /// Writes the record of the run that just ended with `outcome` and
    /// `errors` (none: it succeeded). Gives the record, and whether it was
    /// written (why not, as a line, otherwise).
    pub fn finish(
        self,
        outcome: &JobOutcome,
        errors: Vec<String>,
        warn: &dyn Fn(&str),
    ) -> (StatusRecord, Result<(), String>) {
        let finished = Timestamp::now();
        let result = if errors.is_empty() {
            RunResult::Ok
        } else {
            RunResult::Failed
        };
        let record = StatusRecord {
            job: self.identity.job.clone(),
            source: self.identity.source.clone(),
            started: self.started,
            finished,
            result,
            errors,
            changed: outcome.changed,
            files_downloaded: outcome.files,
            bytes_downloaded: outcome.bytes,
            files_removed: outcome.removed,
            bytes_on_disk: self.stored_bytes(warn),
            last_success: match result {
                RunResult::Ok => Some(finished),
                RunResult::Failed => self.previous.as_ref().and_then(|p| p.last_success),
            },
            verified_with: self.identity.verified_with.clone(),
        };
        let written = self
            .runtime
            .block_on(status::write(self.store.as_ref(), &record))
            .map_err(|e| format!("cannot write the status record: {e}"));
        (record, written)
    }

    /// What the mirror takes: the size of its directory (see
    /// [`disk_usage`]), or of every object of its bucket (one listing, made
    /// after the run: a run itself never lists; without `size_bucket`, the
    /// previous record's size).
    fn stored_bytes(&self, warn: &dyn Fn(&str)) -> u64 {
        if !crate::target::is_bucket(&self.identity.dir) {
            return disk_usage(&self.identity.dir);
        }
        if !self.identity.size_bucket {
            return self.previous.as_ref().map_or(0, |p| p.bytes_on_disk);
        }
        match self.runtime.block_on(self.store.list()) {
            Ok(objects) => objects.iter().map(|o| o.len).sum(),
            Err(e) => {
                warn(&format!("warning: cannot size the bucket: {e}"));
                0
            }
        }
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

    #[test]
    fn disk_usage_counts_hard_links_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("a")).unwrap();
        fs::write(root.join("a/new"), b"1234567").unwrap();
        fs::write(root.join("a/kept"), b"1").unwrap();
        fs::hard_link(root.join("a/new"), root.join("a/same")).unwrap();
        assert_eq!(disk_usage(root), 8);
        assert_eq!(disk_usage(&root.join("missing")), 0);
    }
}
