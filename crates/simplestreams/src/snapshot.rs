//! Snapshots of a directory mirror: what it holds at one moment, kept
//! so that a view ([`crate::view`]) can show it later, whatever the mirror
//! does meanwhile.
//!
//! # Layout
//!
//! Under the mirror's bookkeeping, `.data/snapshots/<name>/`:
//!
//! - `snapshot.json`: the manifest ([`Manifest`]): name, creation time,
//!   counts, and every item file with its path, size and checksums;
//! - `tree/`: a held-only SimpleStreams tree of what the mirror held:
//!   `streams/v1/index.json` and one plain products file per content id
//!   (made with [`crate::holdings`] from the mirror's state, listing only
//!   the items whose file was there with its size), and every item file at
//!   its path, **hard-linked** from the mirror. A snapshot costs directory
//!   entries, not image bytes.
//!
//! The mirror never looks into `.data/snapshots`: its runs (`--max`,
//! `--prune`, the delete delay), its leftover collection and the audit
//! only ever remove or report item paths at the root and regular files
//! directly under `.data/`; the reference `sstream-mirror` removes items by
//! their path at the root. A hard link keeps the bytes alive whatever
//! happens to the mirror's name for them, and the mirror replaces files by
//! rename, never in place, so a snapshot's items stay as they were.
//! `sstream serve` hides dot names, so `.data` is never served.
//!
//! # Atomicity and locks
//!
//! [`create`] takes the mirror's run lock (`.data/sstream.lock`: no run
//! changes the mirror meanwhile), builds the snapshot under a temporary
//! name (`.data/snapshots/.<name>.sstream-tmp`), fsyncs every directory it
//! made, and renames it into place: a kill leaves no half snapshot, only a
//! temporary directory that the next [`create`] removes. The snapshots
//! themselves are guarded by their own lock, `.data/snapshots/.lock`:
//! shared while a view reads a snapshot ([`crate::view::publish`]),
//! exclusive to rename one in or remove one. So a publish is never kept
//! waiting by a long mirror run, and a snapshot never disappears under a
//! publish.
//!
//! # Names
//!
//! A name is 1 to 100 characters of letters, digits and `-_.+:@`, not
//! starting with a dot ([`check_name`]): no `/`, no `..`, nothing hidden.
//! The default is the UTC time of creation, `20261207T001500Z` (`-2`,
//! `-3`, ... appended when two are made in one second).
//!
//! # Protection
//!
//! A view registers itself in the mirror it shows
//! (`.data/views/<hash of the view's path>.json`: the view's directory and
//! the snapshots it shows or can roll back to). [`remove`] refuses such a
//! snapshot and [`prune`] keeps it. A registration whose view is gone (or
//! no longer shows this mirror) protects nothing.

use crate::error::{Error, Result};
use crate::status::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The directory, under the mirror's `.data/`, that holds the snapshots.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// A snapshot's manifest, in its directory.
pub const MANIFEST: &str = "snapshot.json";
/// A snapshot's SimpleStreams tree, in its directory.
pub const TREE: &str = "tree";
/// The lock file of the snapshots, in [`SNAPSHOTS_DIR`].
pub const SNAPSHOTS_LOCK: &str = ".lock";
/// The longest snapshot name.
pub const MAX_NAME: usize = 100;

/// What a snapshot holds, as [`list`] and [`create`] tell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Its name (see [`check_name`]).
    pub name: String,
    /// When it was made.
    pub created: Timestamp,
    /// Products with at least one item.
    pub products: usize,
    /// Versions with at least one item.
    pub versions: usize,
    /// Items (with a file).
    pub items: usize,
    /// Bytes of its distinct item files (shared with the mirror).
    pub bytes: u64,
}

/// One item file a snapshot holds, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// The file's path, relative to the tree (and to the mirror's root).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its checksums, by algorithm (`sha256`, `md5`, `sha512`), as the
    /// metadata gave them.
    #[serde(default)]
    pub checksums: std::collections::BTreeMap<String, String>,
}

/// A snapshot's manifest (`snapshot.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest's format, [`MANIFEST_FORMAT`].
    pub format: String,
    /// Name, time and counts.
    #[serde(flatten)]
    pub info: SnapshotInfo,
    /// The mirror it was taken of (its absolute path then).
    pub mirror: PathBuf,
    /// Every distinct item file, sorted by path.
    pub files: Vec<ManifestFile>,
}

/// The format string of a [`Manifest`].
pub const MANIFEST_FORMAT: &str = "sstream-snapshot:1";

/// Checks a snapshot name (see the module documentation).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a snapshot name cannot be empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("a snapshot name has at most {MAX_NAME} characters"));
    }
    if name.starts_with('.') {
        return Err("a snapshot name cannot start with a dot".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.+:@".contains(*c)))
    {
        return Err(format!(
            "a snapshot name has only letters, digits and -_.+:@ (not {c:?})"
        ));
    }
    Ok(())
}

/// Records what the mirror at `mirror` (a directory) holds now as a new
/// snapshot named `name` (default: the UTC time). Takes the mirror's run
/// lock (fails with [`Error::Locked`] while a run holds it).
pub fn create(mirror: &Path, name: Option<&str>) -> Result<SnapshotInfo> {
    let _ = (mirror, name);
    Err(not_yet(mirror))
}

/// The snapshots of the mirror at `mirror`, oldest first (by creation
/// time, then name). None when the mirror has none.
pub fn list(mirror: &Path) -> Result<Vec<SnapshotInfo>> {
    Err(not_yet(mirror))
}

/// The manifest of the snapshot `name` of `mirror`
/// ([`Error::Snapshot`] when there is no such snapshot).
pub fn manifest(mirror: &Path, name: &str) -> Result<Manifest> {
    let _ = name;
    Err(not_yet(mirror))
}

/// The directory of the snapshot `name` of `mirror` (not checked to exist).
pub fn snapshot_dir(mirror: &Path, name: &str) -> PathBuf {
    mirror
        .join(crate::layout::DATA_DIR)
        .join(SNAPSHOTS_DIR)
        .join(name)
}

/// Removes the snapshot `name` of `mirror`. Refuses one that a view shows
/// or can roll back to (see [`protected`]).
pub fn remove(mirror: &Path, name: &str) -> Result<()> {
    let _ = name;
    Err(not_yet(mirror))
}

/// Removes the oldest snapshots of `mirror` beyond the newest `keep`,
/// except those named in `protected` and those the views registered in
/// the mirror show or can roll back to. Gives the names removed, oldest
/// first.
pub fn prune(mirror: &Path, keep: usize, protected: &[String]) -> Result<Vec<String>> {
    let _ = (keep, protected);
    Err(not_yet(mirror))
}

/// The snapshots of `mirror` that registered views show or can roll back
/// to, sorted, each once.
pub fn protected(mirror: &Path) -> Result<Vec<String>> {
    Err(not_yet(mirror))
}

fn not_yet(mirror: &Path) -> Error {
    Error::Snapshot {
        mirror: mirror.to_path_buf(),
        reason: "snapshots are not implemented yet".into(),
    }
}
