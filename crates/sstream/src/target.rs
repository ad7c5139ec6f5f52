//! Where a mirror is kept: a directory, or a bucket of S3-compatible object
//! storage (`s3://BUCKET/PREFIX`), configured from the standard AWS
//! environment variables and files (see [`S3Settings::from_env`]).

use crate::error::CliError;
use simplestreams::source::TransferOptions;
use simplestreams::status::StatusRecord;
use simplestreams::store::{DirStore, S3Settings, S3Store, Store, is_s3_target};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The store of `target`: a bucket for `s3://BUCKET/PREFIX`, else the
/// directory at that path.
///
/// # Errors
/// A malformed bucket URL or AWS configuration (a usage error).
///
/// [`S3Settings::from_env`]: simplestreams::store::S3Settings::from_env
pub fn open_store(target: &str) -> Result<Arc<dyn Store>, CliError> {
    open_store_with(target, None)
}

/// [`open_store`], a bucket's client retrying and timing out as `transfer`
/// says (`--retries`, `--timeout`; [`TransferOptions::for_s3`]) when given,
/// else as it does by default.
fn open_store_with(
    target: &str,
    transfer: Option<&TransferOptions>,
) -> Result<Arc<dyn Store>, CliError> {
    if is_s3_target(target) {
        let mut settings = S3Settings::from_env().map_err(CliError::usage)?;
        if let Some(transfer) = transfer {
            settings = transfer.for_s3(settings);
        }
        let store = S3Store::open(target, settings).map_err(CliError::usage)?;
        return Ok(Arc::new(store));
    }
    Ok(Arc::new(DirStore::new(target)))
}

/// [`open_store`] for a run that transfers: a bucket's client gets the same
/// retries, backoff and timeouts as the source ([`TransferOptions::for_s3`]).
pub fn store_for_run(dir: &Path, transfer: &TransferOptions) -> Result<Arc<dyn Store>, CliError> {
    match dir.to_str() {
        Some(target) => open_store_with(target, Some(transfer)),
        None => Ok(Arc::new(DirStore::new(dir))),
    }
}

/// [`open_store`] for a target given as a path (a command-line or config
/// `dir`), a bucket's requests bounded by `request_timeout` (the job's
/// `--timeout`).
pub fn store_at(dir: &Path, request_timeout: Duration) -> Result<Arc<dyn Store>, CliError> {
    let transfer = TransferOptions {
        idle_timeout: request_timeout,
        ..TransferOptions::default()
    };
    store_for_run(dir, &transfer)
}

/// The status record of `job` in the mirror at `dir` (see
/// [`simplestreams::status::read`]); in a bucket, the request bounded by
/// `request_timeout`.
pub fn read_status(
    dir: &Path,
    job: &str,
    request_timeout: Duration,
) -> Result<Option<StatusRecord>, CliError> {
    if !is_bucket(dir) {
        return Ok(simplestreams::status::read_blocking(
            &DirStore::new(dir),
            job,
        )?);
    }
    let store = store_at(dir, request_timeout)?;
    let runtime = crate::runtime()?;
    Ok(runtime.block_on(simplestreams::status::read(store.as_ref(), job))?)
}

/// Every status record in the mirror at `dir` (see
/// [`simplestreams::status::read_all`]); a bucket listed once, its requests
/// bounded by `request_timeout`.
pub fn read_all_status(
    dir: &Path,
    request_timeout: Duration,
) -> Result<Vec<StatusRecord>, CliError> {
    if !is_bucket(dir) {
        if !dir.is_dir() {
            return Err(CliError::usage_message(format!(
                "{}: not a directory",
                dir.display()
            )));
        }
        return Ok(simplestreams::status::read_all(&DirStore::new(dir))?);
    }
    let store = store_at(dir, request_timeout)?;
    let runtime = crate::runtime()?;
    Ok(runtime.block_on(simplestreams::status::read_all_in(store.as_ref()))?)
}

/// Whether `dir` names a bucket rather than a directory.
pub fn is_bucket(dir: &Path) -> bool {
    dir.to_str().is_some_and(is_s3_target)
}

/// Refuses a mirror directory that exists and is not a directory, with a
/// one-line message naming it.
pub fn check_mirror_dir(dir: &Path) -> Result<(), CliError> {
    if is_bucket(dir) {
        return Ok(());
    }
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(CliError::usage_message(format_args!(
            "{}: not a directory (the mirror directory): give a directory to mirror into",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// A mirror directory a run is about to create (see [`NewMirrorDir::watch`]).
#[derive(Debug)]
pub struct NewMirrorDir {
    dir: Option<std::path::PathBuf>,
}

impl NewMirrorDir {
    /// Notes whether `dir` is a directory that does not exist yet (and so
    /// one the run creates).
    pub fn watch(dir: &Path) -> NewMirrorDir {
        let absent = !is_bucket(dir) && std::fs::symlink_metadata(dir).is_err();
        NewMirrorDir {
            dir: absent.then(|| dir.to_path_buf()),
        }
    }

    /// After a failed run: when the run created the directory and it holds
    /// nothing but the run's lock (`.data/sstream.lock`), removes them
    /// again. Anything else in it is left alone.
    pub fn remove_if_empty(&self) {
        let Some(dir) = &self.dir else {
            return;
        };
        let data = dir.join(".data");
        let only = |d: &Path, name: &str| {
            std::fs::read_dir(d).is_ok_and(|entries| {
                entries
                    .map(|e| e.map(|e| e.file_name()))
                    .all(|n| n.is_ok_and(|n| n == name))
            })
        };
        if !only(dir, ".data") || !only(&data, "sstream.lock") {
            return;
        }
        let lock = data.join("sstream.lock");
        let is_file = std::fs::symlink_metadata(&lock).map_or(true, |m| m.is_file());
        if is_file {
            let _ = std::fs::remove_file(&lock);
            let _ = std::fs::remove_dir(&data);
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Splits a bucket target naming a document (`s3://B/P/streams/v1/x.json`)
/// into the mirror's URL and the document; other targets are left whole.
pub fn split_bucket_target(target: &str) -> (&str, Option<&str>) {
    const META: &str = "/streams/v1/";
    if let Some(i) = target.rfind(META) {
        let name = &target[i + META.len()..];
        let is_document = !name.contains('/')
            && name.len() > 5
            && (name.ends_with(".json") || name.ends_with(".sjson"));
        if is_document {
            return (&target[..i], Some(&target[i + 1..]));
        }
    }
    (target.trim_end_matches('/'), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_targets() {
        assert_eq!(
            split_bucket_target("s3://b/p/streams/v1/index.json"),
            ("s3://b/p", Some("streams/v1/index.json"))
        );
        assert_eq!(split_bucket_target("s3://b/p/"), ("s3://b/p", None));
        assert_eq!(
            split_bucket_target("s3://b/streams/v1/"),
            ("s3://b/streams/v1", None)
        );
        assert!(is_bucket(Path::new("s3://b/p")));
        assert!(!is_bucket(Path::new("/srv/s3:/b")));
        assert!(open_store("s3://").is_err());
        assert_eq!(open_store("/srv/m").unwrap().location(), "/srv/m");
    }
}
