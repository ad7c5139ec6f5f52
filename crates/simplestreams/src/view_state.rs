//! A view's state (`.data/sstream-view.json` in the view directory): what
//! it shows, what it showed before, and a switch in progress. Kept apart
//! from [`crate::view`], which makes views, so that
//! [`crate::snapshot`] can read which snapshots the views of a mirror need
//! without depending on the code that uses snapshots.

use crate::error::{Error, Result};
use crate::layout::DATA_DIR;
use crate::status::Timestamp;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The view's state file, under its `.data/`.
pub const STATE_FILE: &str = "sstream-view.json";
/// The format string of the state file.
pub const STATE_FORMAT: &str = "sstream-view:1";
/// How many earlier generations a view remembers (for rollback).
pub const HISTORY_LIMIT: usize = 10;

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
    /// The delete delay of the last publish or rollback, in seconds (what
    /// [`collect`] waits).
    #[serde(default)]
    pub delete_delay_secs: u64,
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
    /// What kind of switch it is.
    pub kind: SwitchKind,
}

/// What a switch does to the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchKind {
    /// The view's first generation: there is no history yet.
    First,
    /// A publish: the generation shown goes to the history.
    Publish,
    /// A rollback: the last generation of the history is shown again, and
    /// leaves the history.
    Rollback,
}

impl ViewState {
    /// The state once `switching` is shown: the history updated as its
    /// kind says, the generation it shows the current one.
    pub(crate) fn switched(mut self, switching: Switching) -> ViewState {
        let old = self.current();
        match switching.kind {
            SwitchKind::First => self.history.clear(),
            // The same snapshot published again (a refresh) is not a step
            // to roll back to.
            SwitchKind::Publish
                if old.snapshot == switching.shown.snapshot
                    && old.filters == switching.shown.filters => {}
            SwitchKind::Publish => {
                self.history.push(old);
                let excess = self.history.len().saturating_sub(HISTORY_LIMIT);
                self.history.drain(..excess);
            }
            SwitchKind::Rollback => {
                self.history.pop();
            }
        }
        let s = switching.shown;
        self.snapshot = s.snapshot;
        self.published = s.published;
        self.filters = s.filters;
        self.signed = s.signed;
        self.items = s.items;
        self.bytes = s.bytes;
        self.switching = None;
        self
    }

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

    /// The snapshots the view needs: the one it shows, the one a rollback
    /// shows next (the last of the history), and the one a switch in
    /// progress shows. Older generations of the history are remembered,
    /// not kept: a mirror's pruning may remove their snapshots, and a
    /// rollback that reaches one fails, naming it.
    pub fn snapshots(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .history
            .last()
            .map(|s| s.snapshot.clone())
            .into_iter()
            .collect();
        out.push(self.snapshot.clone());
        if let Some(s) = &self.switching {
            out.push(s.shown.snapshot.clone());
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The state of the view `view`; `None` when the directory is not a view.
pub fn state(view: &Path) -> Result<Option<ViewState>> {
    let path = view.join(DATA_DIR).join(STATE_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(None);
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let state: ViewState = serde_json::from_slice(&bytes).map_err(|e| {
        Error::metadata(path.display().to_string(), format!("not a view state: {e}"))
    })?;
    if state.format != STATE_FORMAT {
        return Err(Error::metadata(
            path.display().to_string(),
            format!("not a view state ({STATE_FORMAT})"),
        ));
    }
    Ok(Some(state))
}
