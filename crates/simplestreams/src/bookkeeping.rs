//! Bookkeeping that cannot be turned against the mirror: what the run reads
//! of its own records (the pending deletions, the references) is checked
//! before anything acts on it, and what failed or killed runs leave behind
//! is collected.
//!
//! - [`check_pending`]: an entry of `.data/sstream-pending-deletes.json`
//!   may name only an item path the mirror manages: never a metadata
//!   document, anything under `.data/` (states, references, the lock), a
//!   staging or temporary file, nor anything outside the mirror. A bad
//!   entry is dropped with a warning naming the file and the entry (the
//!   mirror never wedges on it, and nothing of the mirror is deleted for
//!   it); a time in the future is capped at now (so the file goes after the
//!   delete delay from now), with a warning.
//! - [`reconcile_referrers`]: a referrer of `references.json` that no state
//!   names (left by a run killed between writing the references and the
//!   states, when upstream moved on since) is dropped; its path becomes a
//!   deletion candidate.
//! - [`collect_leftovers`]: after a complete run that changed something (a
//!   no-op run reads no references and collects nothing), item files that no
//!   state, reference, pending deletion or published products file names,
//!   and `.part` files (with their ranges record) that are not for an item
//!   of the mirrored states or are older than a day, are removed. Only under
//!   the top-level directories that hold the mirror's item paths, never
//!   under `.data/` or the metadata directory, and only in stores that keep
//!   items in local files (a bucket is never listed by a run).

use crate::format::Products;
use crate::layout::{DATA_DIR, PART_SUFFIX, is_part_name, ranges_name};
use crate::path::RelPath;
use crate::store::{PendingDeletes, References, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The directory of the stream's metadata documents (the index, the
/// products files, a re-signed mirror's keyring).
pub const METADATA_DIR: &str = "streams/v1";

/// How old a `.part` may get before it is collected even when its item is
/// still wanted (a resumable download that long abandoned is not resumed).
pub const PART_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Why an entry of the pending deletions is not acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPendingEntry {
    /// Not a safe relative path inside the mirror.
    #[error("not a safe path inside the mirror: {0}")]
    Unsafe(String),
    /// A name the mirror reserves (state, staging, temporary files).
    #[error("{0}")]
    Reserved(crate::layout::Reserved),
    /// A metadata document of the mirror.
    #[error("it is a metadata document of the mirror, not an item")]
    Metadata,
}

/// The pending deletions after [`check_pending`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckedPending {
    /// The entries kept (future times capped).
    pub kept: PendingDeletes,
    /// The entries dropped, with why.
    pub rejected: Vec<(String, BadPendingEntry)>,
    /// The entries whose time was in the future, with that time.
    pub capped: Vec<(String, u64)>,
}

impl CheckedPending {
    /// Logs one warning per dropped or capped entry, naming `file` (the
    /// pending-deletes file) and the entry.
    pub fn warn(&self, file: &str) {
        for (entry, why) in &self.rejected {
            log::warn!("{file}: entry {entry:?} dropped: {why}");
        }
        for (entry, when) in &self.capped {
            log::warn!(
                "{file}: entry {entry:?} scheduled in the future ({when} s since the epoch); deleting it after the delete delay from now"
            );
        }
    }
}

/// Checks the pending deletions read from the mirror: each entry must be an
/// item path (see the module doc); `metadata` are the metadata documents of
/// the run's stream, refused besides everything under [`METADATA_DIR`].
/// Times after `now` become `now`.
pub fn check_pending(raw: PendingDeletes, metadata: &BTreeSet<&str>, now: u64) -> CheckedPending {
    let mut out = CheckedPending::default();
    for (entry, since) in raw {
        match check_pending_entry(&entry, metadata) {
            Err(why) => out.rejected.push((entry, why)),
            Ok(()) if since > now => {
                out.capped.push((entry.clone(), since));
                out.kept.insert(entry, now);
            }
            Ok(()) => {
                out.kept.insert(entry, since);
            }
        }
    }
    out
}

fn check_pending_entry(entry: &str, metadata: &BTreeSet<&str>) -> Result<(), BadPendingEntry> {
    let rel = RelPath::parse(entry).map_err(|e| BadPendingEntry::Unsafe(e.to_string()))?;
    crate::layout::check_stream_path(&rel).map_err(BadPendingEntry::Reserved)?;
    let under_metadata = rel
        .as_str()
        .strip_prefix(METADATA_DIR)
        .is_some_and(|rest| rest.starts_with('/'));
    if under_metadata || metadata.contains(rel.as_str()) {
        return Err(BadPendingEntry::Metadata);
    }
    Ok(())
}

/// Drops from `refs` every referrer (`content_id/product/version/item`)
/// that the state of its content id does not name with that path. `states`
/// are the mirror's states after the run, by content id; a content id
/// missing there is looked up with `load_state` (`None`: it cannot be read,
/// its referrers are kept). Gives the paths that lost a referrer.
pub fn reconcile_referrers(
    refs: &mut References,
    states: &BTreeMap<&str, &Products>,
    load_state: impl Fn(&str) -> Option<Products>,
) -> BTreeSet<RelPath> {
    let mut loaded: BTreeMap<String, Option<BTreeSet<(String, String)>>> = BTreeMap::new();
    let named = |p: &Products| -> BTreeSet<(String, String)> {
        p.items()
            .filter_map(|e| {
                let path = e.item.path.as_ref()?;
                let r = format!("{}/{}/{}", e.product_name, e.version_name, e.item_name);
                Some((r, path.to_string()))
            })
            .collect()
    };
    let mut lost = BTreeSet::new();
    for (path, list) in refs.iter_mut() {
        list.retain(|referrer| {
            let Some((cid, rest)) = referrer.split_once('/') else {
                return true;
            };
            let names = loaded
                .entry(cid.to_owned())
                .or_insert_with(|| match states.get(cid) {
                    Some(state) => Some(named(state)),
                    None => load_state(cid).map(|s| named(&s)),
                });
            let keep = names
                .as_ref()
                .is_none_or(|n| n.contains(&(rest.to_owned(), path.clone())));
            if !keep {
                log::info!("{path}: stale referrer {referrer} dropped (no state names it)");
            }
            keep
        });
        if list.is_empty()
            && let Ok(rel) = RelPath::parse(path)
        {
            lost.insert(rel);
        }
    }
    refs.retain(|_, v| !v.is_empty());
    lost
}

/// What [`collect_leftovers`] must keep: every path a state, a reference,
/// a pending deletion or a published products file names, and the items of
/// the mirrored states (whose `.part` may be resumed).
#[derive(Debug, Default)]
pub struct Keep {
    /// Item paths named anywhere (kept as they are).
    pub named: BTreeSet<String>,
    /// Item paths of the mirror's states after the run (a young `.part` of
    /// one is kept for a later resume).
    pub wanted: BTreeSet<String>,
}

impl Keep {
    /// Adds every item path of `tree`; `wanted` when it is a state after
    /// the run.
    pub fn add_tree(&mut self, tree: &Products, wanted: bool) {
        for e in tree.items() {
            if let Some(p) = &e.item.path {
                self.named.insert(p.to_string());
                if wanted {
                    self.wanted.insert(p.to_string());
                }
            }
        }
    }

    /// The top-level directories holding named item paths: where leftovers
    /// are looked for (never `.data` nor the metadata's `streams`).
    fn roots(&self) -> BTreeSet<&str> {
        let metadata_top = METADATA_DIR.split('/').next().unwrap_or(METADATA_DIR);
        self.named
            .iter()
            .filter_map(|p| p.split_once('/').map(|(top, _)| top))
            .filter(|top| *top != DATA_DIR && *top != metadata_top)
            .collect()
    }
}

/// What [`collect_leftovers`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Item files no record names.
    pub orphans: usize,
    /// Staging files (with their ranges records).
    pub parts: usize,
    /// Bytes freed.
    pub bytes: u64,
}

/// Removes the leftovers of failed or killed runs under the item roots of
/// `keep` (see the module doc) from a store whose root is the local
/// directory `root`. A file that cannot be examined or removed is a
/// warning: collecting only frees space.
pub async fn collect_leftovers(store: &dyn Store, root: &Path, keep: &Keep) -> Collected {
    let mut out = Collected::default();
    let now = SystemTime::now();
    for top in keep.roots() {
        let mut files = Vec::new();
        walk_files(root, top, &mut files);
        for (rel, meta) in files {
            let name = rel.rsplit('/').next().unwrap_or(&rel);
            if crate::layout::is_temp_name(name) {
                continue; // removed with their .part or their file
            }
            if is_part_name(&rel) {
                let item = &rel[..rel.len() - PART_SUFFIX.len()];
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age > PART_MAX_AGE);
                if keep.wanted.contains(item) && !old {
                    continue;
                }
                if remove_part(store, &rel, name).await {
                    out.parts += 1;
                    out.bytes += meta.len();
                }
            } else if !keep.named.contains(&rel) {
                let Ok(path) = RelPath::parse(&rel) else {
                    continue;
                };
                match store.remove(&path).await {
                    Ok(()) => {
                        log::info!(
                            "{rel}: removed: no state, reference or pending deletion names it"
                        );
                        out.orphans += 1;
                        out.bytes += meta.len();
                    }
                    Err(e) => log::warn!("{rel}: leftover not removed: {e}"),
                }
            }
        }
    }
    out
}

/// Removes the staging file `rel` (named `name`) and its ranges record.
async fn remove_part(store: &dyn Store, rel: &str, name: &str) -> bool {
    let record = match rel.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{}", ranges_name(name.trim_end_matches(PART_SUFFIX))),
        None => ranges_name(name.trim_end_matches(PART_SUFFIX)),
    };
    let mut removed = false;
    for p in [rel, record.as_str()] {
        let Ok(path) = RelPath::parse(p) else {
            continue;
        };
        match store.remove(&path).await {
            Ok(()) => removed |= p == rel,
            Err(e) => log::warn!("{p}: leftover not removed: {e}"),
        }
    }
    if removed {
        log::info!("{rel}: removed: staging file of an abandoned download");
    }
    removed
}

/// Every regular file under `root/dir` (not following symlinks), as paths
/// relative to `root`, with its metadata.
fn walk_files(root: &Path, dir: &str, out: &mut Vec<(String, std::fs::Metadata)>) {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let rel = format!("{dir}/{name}");
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            walk_files(root, &rel, out);
        } else if meta.is_file() {
            out.push((rel, meta));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_entries_name_only_items() {
        let raw: PendingDeletes = [
            ("streams/v1/index.sjson", 1),
            ("streams/v1/com.x:download.sjson", 1),
            (".data/sstream.lock", 1),
            (".data/references.json", 1),
            ("../outside", 1),
            ("/etc/passwd", 1),
            ("m/1/kernel.part", 1),
            ("meta/index.json", 1),
            ("m/1/kernel", 5),
            ("m/2/kernel", 4_000_000_000),
        ]
        .into_iter()
        .map(|(p, t)| (p.to_owned(), t))
        .collect();
        let metadata: BTreeSet<&str> = ["meta/index.json"].into();
        let checked = check_pending(raw, &metadata, 100);
        let kept: Vec<(&str, u64)> = checked.kept.iter().map(|(p, t)| (p.as_str(), *t)).collect();
        assert_eq!(kept, [("m/1/kernel", 5), ("m/2/kernel", 100)]);
        assert_eq!(checked.rejected.len(), 8, "{:?}", checked.rejected);
        assert_eq!(checked.capped, [("m/2/kernel".to_owned(), 4_000_000_000)]);
    }

    #[test]
    fn referrers_no_state_names_are_dropped() {
        let doc = r#"{"format":"products:1.0","content_id":"c","products":{
            "p":{"versions":{"1":{"items":{"k":{"path":"p/1/k"}}}}}}}"#;
        let state = Products::parse("u", doc.as_bytes()).unwrap();
        let mut refs: References = [
            ("p/1/k".to_owned(), vec!["c/p/1/k".to_owned()]),
            ("p/2/k".to_owned(), vec!["c/p/2/k".to_owned()]),
            ("q/1/k".to_owned(), vec!["gone/q/1/k".to_owned()]),
            ("r/1/k".to_owned(), vec!["unreadable/r/1/k".to_owned()]),
        ]
        .into();
        let states: BTreeMap<&str, &Products> = [("c", &state)].into();
        let lost = reconcile_referrers(&mut refs, &states, |cid| {
            (cid == "gone").then(Products::default)
        });
        let lost: Vec<&str> = lost.iter().map(RelPath::as_str).collect();
        assert_eq!(lost, ["p/2/k", "q/1/k"]);
        assert_eq!(
            refs.keys().map(String::as_str).collect::<Vec<_>>(),
            ["p/1/k", "r/1/k"]
        );
    }
}
