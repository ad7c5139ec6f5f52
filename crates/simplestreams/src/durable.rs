//! Making directory entries durable: the library's one directory `fsync`.
//!
//! A new file, a rename or a removal is on stable storage only once the
//! directory holding the entry has been fsynced. Every place where the
//! durability guarantee (see [`crate::store::Staged`]) depends on an entry
//! (an item's commit, a metadata or state file, references, a snapshot, a
//! view's switch) syncs its directory through [`sync_dir`] and propagates
//! its error.
//!
//! A failed `fsync` is never retried and never ignored: Linux reports a
//! writeback error once and may then mark the unwritten pages clean
//! ("fsyncgate"), so a second `fsync` that succeeds proves nothing. The
//! caller fails instead, before anything names what may not be durable;
//! the next run starts from what the disk really holds.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Fsyncs the directory `dir`, making its entries (files created, renamed
/// in or out, removed) durable.
///
/// A file system that cannot fsync a directory at all (the `fsync` fails
/// with `EINVAL`, `ENOTSUP`/`EOPNOTSUPP` or `ENOSYS`, as some network and
/// FUSE file systems do) is not an error: such a file system offers no way
/// to order directory updates, so there is nothing more durable to wait
/// for, and the error says nothing about whether a write was lost. Any
/// other failure (`EIO`: the journal could not be written) is an
/// [`Error::DirSync`] naming the directory.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let handle = File::open(dir).map_err(|source| dir_sync_error(dir, source))?;
    match handle.sync_all() {
        Ok(()) => Ok(()),
        Err(e) if unsupported(&e) => Ok(()),
        Err(source) => Err(dir_sync_error(dir, source)),
    }
}

/// The directory syncs of work that runs concurrently (a store's commits),
/// so that a failed one cannot be hidden by another.
///
/// Entries renamed into a directory by one commit are made durable by
/// whichever `fsync` of the directory comes next, another commit's
/// included. When that `fsync` fails, they may be lost, yet the other
/// commit's own `fsync` (on a descriptor opened after the error was
/// reported) can succeed: Linux reports the error once. So a directory
/// whose sync failed stays failed for the life of this value: every later
/// sync of it fails too (the commits fail, nothing names their items). The
/// syncs of one directory are serialized, so that a sync that follows a
/// failed one sees the failure.
#[derive(Debug, Default)]
pub struct DirSyncs {
    dirs: Mutex<HashMap<PathBuf, Arc<Mutex<Option<String>>>>>,
}

impl DirSyncs {
    /// Fsyncs `dir` as [`sync_dir`] does, unless a sync of it failed
    /// before (then [`Error::DirSync`] saying so).
    pub fn sync(&self, dir: &Path) -> Result<()> {
        let slot = {
            let mut dirs = self.dirs.lock().unwrap_or_else(PoisonError::into_inner);
            dirs.entry(dir.to_path_buf()).or_default().clone()
        };
        let mut failed = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(reason) = failed.as_ref() {
            let earlier = format!(
                "an earlier sync of it failed ({reason}): what was placed in it before may be lost"
            );
            return Err(dir_sync_error(dir, io::Error::other(earlier)));
        }
        sync_dir(dir).inspect_err(|e| {
            let reason = match e {
                Error::DirSync { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            *failed = Some(reason);
        })
    }
}

/// Fsyncs every directory under `root`, deepest first, then `root`.
pub fn sync_tree(root: &Path) -> Result<()> {
    let entries = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let is_dir = entry
            .file_type()
            .map_err(|e| Error::io(entry.path(), e))?
            .is_dir();
        if is_dir {
            sync_tree(&entry.path())?;
        }
    }
    sync_dir(root)
}

/// Whether an `fsync` error means the file system cannot sync a directory
/// at all (rather than that it failed to).
fn unsupported(e: &io::Error) -> bool {
    let unsupported = [libc::EINVAL, libc::ENOTSUP, libc::EOPNOTSUPP, libc::ENOSYS];
    e.raw_os_error()
        .is_some_and(|code| unsupported.contains(&code))
}

fn dir_sync_error(dir: &Path, source: io::Error) -> Error {
    Error::DirSync {
        dir: dir.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_syncs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        sync_tree(dir.path()).unwrap();
        sync_dir(dir.path()).unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let e = sync_dir(&missing).unwrap_err();
        assert!(
            matches!(&e, Error::DirSync { dir, .. } if *dir == missing),
            "{e:?}"
        );
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn a_directory_whose_sync_failed_stays_failed() {
        let root = tempfile::tempdir().unwrap();
        let (dir, other) = (root.path().join("dir"), root.path().join("other"));
        std::fs::create_dir(&other).unwrap();
        let syncs = DirSyncs::default();
        assert!(syncs.sync(&dir).is_err(), "missing: the sync fails");
        std::fs::create_dir(&dir).unwrap();
        let e = syncs.sync(&dir).unwrap_err();
        assert!(
            e.to_string().contains("an earlier sync of it failed"),
            "a later sync that would succeed still fails: {e}"
        );
        syncs.sync(&other).unwrap();
        DirSyncs::default().sync(&dir).unwrap();
    }

    #[test]
    fn only_unsupported_fsyncs_are_not_errors() {
        for errno in [libc::EINVAL, libc::ENOTSUP, libc::EOPNOTSUPP, libc::ENOSYS] {
            assert!(unsupported(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        for errno in [libc::EIO, libc::ENOSPC, libc::EROFS, libc::EDQUOT] {
            assert!(
                !unsupported(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
    }
}
