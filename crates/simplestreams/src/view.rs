//! Views: a directory that shows one snapshot ([`crate::snapshot`]) of a
//! mirror as a complete SimpleStreams tree, for MAAS (or any client) to
//! import from, served by any HTTP server. Publishing another snapshot
//! into it (a promotion) and rolling back switch what it shows in one
//! step.
//!
//! # Layout of a view directory
//!
//! - `streams/v1/`: held-only metadata listing exactly the snapshot's
//!   items (narrowed by the view's filters): plain `.json` documents, or
//!   with a signing key, re-signed as a re-signed mirror is (`.sjson`,
//!   `.json`, `.json.gpg` and `streams/v1/mirror-keyring.gpg`);
//! - the item files at their paths, hard links of the snapshot's (a copy,
//!   with a warning, when the view is on another filesystem);
//! - `.data/`: the view's own bookkeeping, in a mirror's names so that
//!   `sstream verify VIEWDIR` audits a view as a mirror, and a server that
//!   hides dot names never serves it: `sstream-view.json` (the
//!   [`ViewState`]), `sstream-pending-deletes.json` (item files no longer
//!   listed, each with the time it stopped being listed: the mirror's
//!   pending deletions, in the same format), `sstream.lock` (one publish
//!   or rollback at a time) and `sstream-view-staging/` (the next
//!   generation's metadata while it is built).
//!
//! # The switch
//!
//! 1. Under the view's lock, and the snapshots' shared lock in the mirror:
//!    every item of the snapshot is checked (its size always, its checksum
//!    with `verify_existing`); a damaged item fails the publish, naming
//!    the file, and the view stays as it was.
//! 2. The new metadata is built completely in
//!    `.data/sstream-view-staging/streams/` and fsynced.
//! 3. The new items are linked in at their paths; the old ones stay.
//! 4. The state records the generation about to be shown (with the
//!    SHA-256 of its `index.json`) as `switching`.
//! 5. `streams` is exchanged with the staged one in one
//!    `renameat2(RENAME_EXCHANGE)` (the first publish renames it into
//!    place): a reader sees the old metadata or the new, never a mix.
//! 6. The state records the new generation as shown and the item files it
//!    no longer lists as pending removal, due after the delete delay; the
//!    old metadata (now in staging) is removed.
//!
//! A kill before step 5 leaves the old view, complete (with, at most,
//! unlisted new item files, which the next publish or rollback removes);
//! after it, the new view, complete: the next call sees that the live
//! `index.json` is the one `switching` names and finishes step 6.
//! Removals whose delay passed are done at every publish and rollback
//! (and by [`collect`]).
//!
//! # Re-spun items
//!
//! A path can hold one file. When the snapshot shown next has, at a path
//! the view lists now, a file with other bytes (upstream re-spun an item
//! under the same name), that file is replaced (atomically, by rename) in
//! step 3, before the switch: a client of the old metadata that fetches
//! that path afterwards gets the new bytes, which fail its checksum, and
//! it retries with the new metadata. MAAS's paths carry the version
//! (`.../20240101/squashfs`), so this does not happen with images.maas.io.
//!
//! # History and rollback
//!
//! The state keeps the generations shown before, newest last
//! ([`ViewState::history`], at most [`HISTORY_LIMIT`]). [`rollback`] shows
//! the last of them again (with the filters it had) and drops it from the
//! history: rolling back twice goes two steps back; a rollback is undone
//! by publishing the snapshot again. Every snapshot in the history is
//! protected in the mirror (see [`crate::snapshot::protected`]).
//!
//! # What is refused
//!
//! A view directory that is not a view (it exists, is not empty and has
//! no view state), the mirror itself, a directory inside the mirror or
//! containing it, an unknown snapshot, a bucket, and a second publish at
//! once (the lock): each with one [`Error`] naming the directory or the
//! snapshot, the view as it was.

use crate::error::{Error, Result};
use crate::openpgp::SigningKey;
use crate::status::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The view's state file, under its `.data/`.
pub const STATE_FILE: &str = "sstream-view.json";
/// The staging directory of the next generation, under `.data/`.
pub const STAGING_DIR: &str = "sstream-view-staging";
/// The format string of the state file.
pub const STATE_FORMAT: &str = "sstream-view:1";
/// How many earlier generations a view remembers (for rollback).
pub const HISTORY_LIMIT: usize = 10;

/// How a publish or rollback makes the view.
#[derive(Debug, Clone, Default)]
pub struct ViewOptions {
    /// Filters narrowing the snapshot's items (`KEY=VALUE`, `KEY!=VALUE`,
    /// `KEY~REGEX`, `KEY!~REGEX`, all must match; empty: everything). A
    /// rollback uses the filters recorded with the generation it goes back
    /// to instead.
    pub filters: Vec<String>,
    /// The key to re-sign the metadata with (the `--sign-key` of a
    /// mirror); `None`: plain `.json` only. A signed view must be given its
    /// key again to roll back or publish.
    pub sign_key: Option<Arc<SigningKey>>,
    /// How long item files no longer listed stay for clients that read the
    /// old metadata.
    pub delete_delay: Duration,
    /// Check every item's checksum (not only its size) before publishing.
    pub verify_existing: bool,
}

/// One generation a view showed or shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// The snapshot.
    pub snapshot: String,
    /// When the view switched to it.
    pub published: Timestamp,
    /// The filters it was shown with.
    pub filters: Vec<String>,
    /// Whether its metadata was signed.
    pub signed: bool,
    /// Items listed.
    pub items: usize,
    /// Bytes of the distinct item files listed.
    pub bytes: u64,
}

/// A view's state (`.data/sstream-view.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewState {
    /// The format, [`STATE_FORMAT`].
    pub format: String,
    /// The mirror whose snapshots the view shows (absolute).
    pub mirror: PathBuf,
    /// The snapshot shown.
    pub snapshot: String,
    /// When the view switched to it.
    pub published: Timestamp,
    /// The filters it is shown with.
    pub filters: Vec<String>,
    /// Whether the metadata is signed.
    pub signed: bool,
    /// Items listed.
    pub items: usize,
    /// Bytes of the distinct item files listed.
    pub bytes: u64,
    /// The generations shown before, oldest first (the last one is where
    /// [`rollback`] goes).
    pub history: Vec<Shown>,
    /// A switch begun and maybe not finished (a kill): the generation and
    /// the SHA-256 of its `index.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switching: Option<Switching>,
}

/// A generation being switched to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switching {
    /// The generation.
    pub shown: Shown,
    /// SHA-256 (hex) of its `streams/v1/index.json`.
    pub index_sha256: String,
    /// The generation it replaces was in the history (a publish) or is
    /// dropped (a rollback).
    pub rollback: bool,
}

impl ViewState {
    /// The generation shown now.
    pub fn current(&self) -> Shown {
        Shown {
            snapshot: self.snapshot.clone(),
            published: self.published,
            filters: self.filters.clone(),
            signed: self.signed,
            items: self.items,
            bytes: self.bytes,
        }
    }

    /// Every snapshot the view shows or can roll back to.
    pub fn snapshots(&self) -> Vec<String> {
        let mut out: Vec<String> = self.history.iter().map(|s| s.snapshot.clone()).collect();
        out.push(self.snapshot.clone());
        if let Some(s) = &self.switching {
            out.push(s.shown.snapshot.clone());
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Makes `view` show the snapshot `snapshot` of the mirror `mirror`
/// (a first publish, or a promotion): see the module documentation.
pub fn publish(
    view: &Path,
    mirror: &Path,
    snapshot: &str,
    opts: &ViewOptions,
) -> Result<ViewState> {
    let _ = (mirror, snapshot, opts);
    Err(not_yet(view))
}

/// Makes `view` show again the generation it showed before the current
/// one (with the filters it had then).
pub fn rollback(view: &Path, opts: &ViewOptions) -> Result<ViewState> {
    let _ = opts;
    Err(not_yet(view))
}

/// The state of the view `view`; `None` when the directory is not a view.
pub fn state(view: &Path) -> Result<Option<ViewState>> {
    Err(not_yet(view))
}

/// Removes the item files of `view` whose delete delay has passed; gives
/// how many were removed. Takes the view's lock.
pub fn collect(view: &Path) -> Result<usize> {
    Err(not_yet(view))
}

fn not_yet(view: &Path) -> Error {
    Error::View {
        view: view.to_path_buf(),
        reason: "views are not implemented yet".into(),
    }
}
