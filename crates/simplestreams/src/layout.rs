//! The mirror's namespace: the names a store reserves for its own files
//! (state, bookkeeping, staging and temporary files), and the rule that keeps
//! a stream's item and metadata paths out of them.
//!
//! Every store (a directory, a bucket) lays a mirror out the same way, so
//! every name is defined here once and used by the stores, the audit and the
//! server alike.

use crate::path::RelPath;

/// The state directory, as the reference names it.
pub const DATA_DIR: &str = ".data";
/// The references file under [`DATA_DIR`].
pub const REFERENCES: &str = "references.json";
/// Paths whose deletion is pending (written before metadata is published).
pub const PENDING_DELETES: &str = "sstream-pending-deletes.json";
/// Validators of the last successful run per set of options, under
/// [`DATA_DIR`]: `sstream-cache-<hash of the options>.json`.
pub const CACHE_PREFIX: &str = "sstream-cache-";
/// The status record of a configured job's last run, under [`DATA_DIR`]:
/// `sstream-status-<job>.json`.
pub const STATUS_PREFIX: &str = "sstream-status-";
/// The suffix of a status record's name.
pub const STATUS_SUFFIX: &str = ".json";
/// The lock file under [`DATA_DIR`].
pub const LOCK: &str = "sstream.lock";
/// The marker under [`DATA_DIR`] of a run that changes a directory mirror:
/// written before its first download, removed once its leftovers are
/// collected. Still there, it says that a run was killed or failed before
/// collecting (its `.part` files and orphans are still around), and the
/// next run collects even when it has nothing else to do.
pub const UNCLEAN: &str = "sstream-unclean";
/// Prefix of every name of ours under [`DATA_DIR`] (lock, caches, pending
/// deletions, status records, ...): `sstream.lock`, `sstream-*`.
pub const OWN_PREFIX: &str = "sstream";
/// Suffix of the staging file an item is downloaded into before it is
/// verified and renamed into place.
pub const PART_SUFFIX: &str = ".part";
/// Suffix of the temporary file a metadata or state file is written through
/// (`.<name>.sstream-tmp`, in the same directory).
pub const TEMP_SUFFIX: &str = ".sstream-tmp";

/// Where a re-signed mirror publishes the public keyring that verifies it
/// (what MAAS is given as `keyring_filename` or `keyring_data`).
pub const MIRROR_KEYRING: &str = "streams/v1/mirror-keyring.gpg";

/// The name of the temporary file that `name` is written through.
pub fn temp_name(name: &str) -> String {
    format!(".{name}{TEMP_SUFFIX}")
}

/// The name of the record of the byte ranges received so far of the item
/// `name` while it is downloaded over several connections (beside its
/// `.part`): `.<name>.part.sstream-tmp`, a temporary name, so it is never
/// served, never taken for an item, and a leftover for the audit.
pub fn ranges_name(name: &str) -> String {
    temp_name(&format!("{name}{PART_SUFFIX}"))
}

/// The file name, under [`DATA_DIR`], of the status record of `job` (a
/// name checked by `status::check_job_name`).
pub fn status_name(job: &str) -> String {
    format!("{STATUS_PREFIX}{job}{STATUS_SUFFIX}")
}

/// The job whose status record `name` (a file name under [`DATA_DIR`]) is.
pub fn status_job(name: &str) -> Option<&str> {
    name.strip_prefix(STATUS_PREFIX)?
        .strip_suffix(STATUS_SUFFIX)
        .filter(|job| !job.is_empty())
}

/// Whether a file name is one of our temporary files (left behind only by an
/// interrupted write).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

/// Whether a file name is an item's staging file.
pub fn is_part_name(name: &str) -> bool {
    name.ends_with(PART_SUFFIX)
}

/// Whether a file name under [`DATA_DIR`] is ours (lock, fetch caches,
/// pending deletions, status records), rather than a state or the references.
pub fn is_own_data_name(name: &str) -> bool {
    name == LOCK
        || name == PENDING_DELETES
        || (name.starts_with(CACHE_PREFIX) && name.ends_with(".json"))
        || name.starts_with("sstream-")
}

/// Whether a file name under [`DATA_DIR`] is a mirror state tree
/// (`.data/<content_id>`), rather than the references, our own bookkeeping
/// or a temporary file.
pub fn is_state_name(name: &str) -> bool {
    !(name == REFERENCES
        || is_own_data_name(name)
        || name.starts_with('.')
        || is_temp_name(name)
        || name.ends_with(".tmp"))
}

/// Why a path of the stream cannot be used in the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reserved {
    /// The path is, or is under, the state directory.
    #[error("it is under {DATA_DIR}/, which holds the mirror's state and bookkeeping")]
    DataDir,
    /// The path ends like an item's staging file.
    #[error("it ends in {PART_SUFFIX}, the suffix of the mirror's staging files")]
    Staging,
    /// A segment of the path is named like a temporary file.
    #[error("it is named like the mirror's temporary files (.*{TEMP_SUFFIX})")]
    Temporary,
}

/// Checks that `path` (an item's or a metadata document's) stays out of the
/// names the mirror reserves: [`DATA_DIR`], staging and temporary names.
pub fn check_stream_path(path: &RelPath) -> Result<(), Reserved> {
    let mut segments = path.segments().peekable();
    if segments.peek() == Some(&DATA_DIR) {
        return Err(Reserved::DataDir);
    }
    if path.as_str().ends_with(PART_SUFFIX) {
        return Err(Reserved::Staging);
    }
    if segments.any(is_temp_name) {
        return Err(Reserved::Temporary);
    }
    Ok(())
}

/// What a lock file held by another process says of its holder, for an
/// error message: ` (pid N)`, or nothing when it names none (the holder
/// writes its pid into the file once it has the lock).
pub(crate) fn lock_holder(lock: &std::path::Path) -> String {
    let text = std::fs::read_to_string(lock).unwrap_or_default();
    match text.trim() {
        "" => String::new(),
        pid => format!(" (pid {pid})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str) -> Result<(), Reserved> {
        check_stream_path(&RelPath::parse(s).unwrap())
    }

    #[test]
    fn reserved_paths() {
        assert_eq!(check(".data/references.json"), Err(Reserved::DataDir));
        assert_eq!(check(".data"), Err(Reserved::DataDir));
        assert_eq!(check("a/b.part"), Err(Reserved::Staging));
        assert_eq!(check("a/.x.sstream-tmp/y"), Err(Reserved::Temporary));
        assert_eq!(check("streams/v1/index.sjson"), Ok(()));
        assert_eq!(check("a/.data/b"), Ok(()));
        assert_eq!(check("a/b.partial"), Ok(()));
    }

    #[test]
    fn names() {
        assert!(is_temp_name(&temp_name("index.json")));
        assert!(!is_temp_name("index.json"));
        assert_eq!(
            ranges_name("root.squashfs"),
            ".root.squashfs.part.sstream-tmp"
        );
        assert!(is_temp_name(&ranges_name("root.squashfs")));
        assert!(is_state_name("com.ubuntu.maas:stable:v3:download"));
        assert_eq!(status_name("maas"), "sstream-status-maas.json");
        assert_eq!(status_job(&status_name("maas-stable")), Some("maas-stable"));
        assert_eq!(status_job("sstream-status-.json"), None);
        assert_eq!(status_job("sstream-cache-0123.json"), None);
        assert!(is_own_data_name(&status_name("maas")));
        for ours in [
            REFERENCES,
            LOCK,
            PENDING_DELETES,
            "sstream-cache-0123456789abcdef.json",
            &status_name("maas"),
            ".x.sstream-tmp",
            ".x.tmp-1",
        ] {
            assert!(!is_state_name(ours), "{ours}");
        }
    }
}
