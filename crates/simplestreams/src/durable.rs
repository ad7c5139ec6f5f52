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
use std::fs::File;
use std::io;
use std::path::Path;

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
