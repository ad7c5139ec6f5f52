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

use crate::durable::{sync_dir, sync_tree};
use crate::error::{Error, Result};
use crate::format::{Item, Products};
use crate::holdings::{
    Listed, index_document, json_path, products_document, render, retain_items,
    without_orphan_deltas,
};
use crate::layout::{DATA_DIR, is_temp_name, temp_name};
use crate::path::RelPath;
use crate::status::Timestamp;
use crate::store::DirStore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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

/// Why a snapshot name is refused ([`check_name`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadName {
    /// The name is empty.
    #[error("a snapshot name cannot be empty")]
    Empty,
    /// The name is longer than [`MAX_NAME`].
    #[error("a snapshot name has at most {MAX_NAME} characters")]
    TooLong,
    /// The name starts with a dot (hidden, or `..`).
    #[error("a snapshot name cannot start with a dot")]
    Hidden,
    /// The name has a character outside letters, digits and `-_.+:@`.
    #[error("a snapshot name has only letters, digits and -_.+:@ (not {0:?})")]
    Character(char),
}

/// Checks a snapshot name (see the module documentation).
pub fn check_name(name: &str) -> std::result::Result<(), BadName> {
    if name.is_empty() {
        return Err(BadName::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(BadName::TooLong);
    }
    if name.starts_with('.') {
        return Err(BadName::Hidden);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.+:@".contains(*c)))
    {
        return Err(BadName::Character(c));
    }
    Ok(())
}

/// The index of a snapshot's tree (and of a view), relative to its root.
pub const INDEX: &str = "streams/v1/index.json";
/// Where views register themselves, under the mirror's `.data/`.
pub const VIEWS_DIR: &str = "views";

/// Records what the mirror at `mirror` (a directory) holds now as a new
/// snapshot named `name` (default: the UTC time). Takes the mirror's run
/// lock (fails with [`Error::Locked`] while a run holds it).
pub fn create(mirror: &Path, name: Option<&str>) -> Result<SnapshotInfo> {
    let store = DirStore::new(mirror);
    let ids = match store.state_ids() {
        Ok(Some(ids)) if !ids.is_empty() => ids,
        _ => {
            return Err(snapshot_error(
                mirror,
                "not a mirror: no state under .data/",
            ));
        }
    };
    if let Some(name) = name {
        check_name(name).map_err(|reason| snapshot_error(mirror, reason.to_string()))?;
    }
    let _run = store.lock_blocking(false).map_err(|e| match e {
        Error::Locked { path, .. } => Error::Locked {
            path,
            reason: "a mirror run holds the lock: snapshot the mirror once it is done".into(),
        },
        e => e,
    })?;
    let dir = snapshots_dir(mirror);
    make_dir_all(&dir)?;
    remove_temporaries(&dir);
    let created = SystemTime::now();
    let name = match name {
        Some(n) if dir.join(n).exists() => {
            return Err(snapshot_error(
                mirror,
                format!("snapshot {n:?} exists already"),
            ));
        }
        Some(n) => n.to_owned(),
        None => free_default_name(&dir, created),
    };
    let tmp = dir.join(temp_name(&name));
    let built = build(mirror, &store, &ids, &tmp, &name, created);
    let manifest = match built {
        Ok(m) => m,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let _snapshots = SnapshotsLock::exclusive(mirror)?;
    let target = dir.join(&name);
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(Error::io(target, e));
    }
    sync_dir(&dir)?;
    Ok(manifest.info)
}

/// The default name for a snapshot made at `created` that no snapshot in
/// `dir` has yet.
fn free_default_name(dir: &Path, created: SystemTime) -> String {
    let base = default_name(created);
    let mut name = base.clone();
    let mut n = 2;
    while dir.join(&name).exists() || dir.join(temp_name(&name)).exists() {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// The UTC time `t` as a snapshot name: `20261207T001500Z`.
pub fn default_name(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(['-', ':'], "")
}

/// Builds the snapshot `name` of the mirror in `tmp`: its tree (metadata
/// and item links) and manifest, every file and directory synced.
fn build(
    mirror: &Path,
    store: &DirStore,
    ids: &[String],
    tmp: &Path,
    name: &str,
    created: SystemTime,
) -> Result<Manifest> {
    let _ = fs::remove_dir_all(tmp);
    let tree = tmp.join(TREE);
    make_dir_all(&tree)?;
    let index = read_mirror_index(mirror)?;
    let held = held_documents(mirror, store, ids, &index)?;
    if held.is_empty() {
        return Err(snapshot_error(
            mirror,
            "the mirror holds no item: nothing to snapshot",
        ));
    }
    let mut files: BTreeMap<String, ManifestFile> = BTreeMap::new();
    let mut counts = (0usize, 0usize, 0usize);
    for doc in &held {
        for product in doc.tree.products.values() {
            counts.0 += 1;
            counts.1 += product.versions.len();
        }
        for entry in doc.tree.items() {
            let Some(path) = &entry.item.path else {
                continue;
            };
            counts.2 += 1;
            if !files.contains_key(path.as_str()) {
                link_file(&path.under(mirror), &path.under(&tree))?;
                files.insert(path.to_string(), manifest_file(path, entry.item));
            }
        }
        write_durable(&doc.path.under(&tree), &render(&doc.document))?;
    }
    let listed: Vec<Listed<'_>> = held
        .iter()
        .map(|d| Listed {
            path: &d.path,
            products: &d.document,
        })
        .collect();
    let index_doc = index_document(&index, &listed)?;
    write_durable(&tree.join(INDEX), &render(&index_doc))?;
    sync_tree(&tree)?;
    let bytes = files.values().map(|f| f.size).sum();
    let manifest = Manifest {
        format: MANIFEST_FORMAT.to_owned(),
        info: SnapshotInfo {
            name: name.to_owned(),
            created: Timestamp::from(created),
            products: counts.0,
            versions: counts.1,
            items: counts.2,
            bytes,
        },
        mirror: std::path::absolute(mirror).unwrap_or_else(|_| mirror.to_path_buf()),
        files: files.into_values().collect(),
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| snapshot_error(mirror, format!("cannot write the manifest: {e}")))?;
    write_durable(&tmp.join(MANIFEST), &json)?;
    sync_dir(tmp)?;
    Ok(manifest)
}

/// What the manifest records of the item file at `path`.
fn manifest_file(path: &RelPath, item: &Item) -> ManifestFile {
    let fields = item.fields();
    let checksums = ["sha512", "sha256", "md5"]
        .into_iter()
        .filter_map(|alg| {
            let v = fields.get(alg)?.as_str()?;
            Some((alg.to_owned(), v.to_ascii_lowercase()))
        })
        .collect();
    ManifestFile {
        path: path.to_string(),
        size: item.size.unwrap_or_default(),
        checksums,
    }
}

/// One products file of a snapshot: where, its document, and the held tree
/// it was made from.
struct HeldDocument {
    path: RelPath,
    document: Map<String, Value>,
    tree: Products,
}

/// The held products documents of the mirror: for each entry of its
/// index with a state, the products and items whose file is there with
/// its size (deltas without their base left out).
fn held_documents(
    mirror: &Path,
    store: &DirStore,
    ids: &[String],
    index: &Map<String, Value>,
) -> Result<Vec<HeldDocument>> {
    let mut out = Vec::new();
    let entries = index.get("index").and_then(Value::as_object);
    for (content_id, entry) in entries.into_iter().flatten() {
        if !ids.iter().any(|id| id == content_id) {
            continue;
        }
        let Some(path) = entry.get("path").and_then(Value::as_str) else {
            continue;
        };
        let path = RelPath::parse(path).map_err(|e| Error::UnsafePath {
            context: mirror.join(INDEX).display().to_string(),
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let Some(state_bytes) = store.state_bytes_blocking(content_id)? else {
            continue;
        };
        let state_url = mirror.join(DATA_DIR).join(content_id);
        let state = Products::parse(&state_url.display().to_string(), &state_bytes)?;
        let upstream = read_published_products(mirror, &path).unwrap_or_else(|| state.clone());
        let tree = without_orphan_deltas(retain_items(&state, |item| held(mirror, item)));
        let path = json_path(&path);
        if let Some(document) = products_document(&upstream, &tree)? {
            out.push(HeldDocument {
                path,
                document,
                tree,
            });
        }
    }
    Ok(out)
}

/// Whether the mirror holds the file of `item` (a regular file of its
/// size; an item without a file is kept).
fn held(mirror: &Path, item: &Item) -> bool {
    let Some(path) = &item.path else { return true };
    fs::symlink_metadata(path.under(mirror))
        .is_ok_and(|m| m.is_file() && item.size.is_none_or(|s| s == m.len()))
}

/// The index the mirror publishes: `streams/v1/index.json`, or the text of
/// `streams/v1/index.sjson` (verified when it was mirrored).
fn read_mirror_index(mirror: &Path) -> Result<Map<String, Value>> {
    let json = mirror.join(INDEX);
    let sjson = mirror.join("streams/v1/index.sjson");
    let (path, bytes) = match read_document(&json)? {
        Some(b) => (json, b),
        None => match read_document(&sjson)? {
            Some(b) => (sjson, b),
            None => {
                return Err(snapshot_error(
                    mirror,
                    "not a mirror: no streams/v1/index.json or index.sjson",
                ));
            }
        },
    };
    let doc: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|e| Error::metadata(path.display().to_string(), format!("malformed JSON: {e}")))?;
    Ok(doc)
}

/// The JSON text of the metadata document at `path`: the file itself, or
/// the signed text of a clear-signed one. `None` when absent.
fn read_document(path: &Path) -> Result<Option<Vec<u8>>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    if bytes.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----") {
        let text = crate::openpgp::cleartext_body(&bytes).map_err(|source| Error::Signature {
            url: path.display().to_string(),
            source,
        })?;
        return Ok(Some(text));
    }
    Ok(Some(bytes))
}

/// The products document the mirror publishes at `rel` (or its `.json` /
/// `.sjson` twin), for its document-level fields.
fn read_published_products(mirror: &Path, rel: &RelPath) -> Option<Products> {
    let plain = json_path(rel);
    let candidates = [Some(plain.clone()), crate::holdings::sjson_path(&plain)];
    for rel in candidates.into_iter().flatten() {
        let path = rel.under(mirror);
        if let Ok(Some(bytes)) = read_document(&path) {
            return Products::parse(&path.display().to_string(), &bytes).ok();
        }
    }
    None
}

/// The snapshots of the mirror at `mirror`, oldest first (by creation
/// time, then name). A snapshot whose manifest cannot be read is left out
/// with a warning.
pub fn list(mirror: &Path) -> Result<Vec<SnapshotInfo>> {
    check_mirror_dir(mirror)?;
    let dir = snapshots_dir(mirror);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if check_name(&name).is_err() || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        match manifest(mirror, &name) {
            Ok(m) => out.push(m.info),
            Err(e) => log::warn!("{e}"),
        }
    }
    out.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    Ok(out)
}

/// The manifest of the snapshot `name` of `mirror`
/// ([`Error::Snapshot`] when there is no such snapshot).
pub fn manifest(mirror: &Path, name: &str) -> Result<Manifest> {
    check_name(name).map_err(|reason| snapshot_error(mirror, reason.to_string()))?;
    let path = snapshot_dir(mirror, name).join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(unknown_snapshot(mirror, name));
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        Error::metadata(
            path.display().to_string(),
            format!("not a snapshot manifest: {e}"),
        )
    })?;
    if manifest.format != MANIFEST_FORMAT || manifest.info.name != name {
        return Err(Error::metadata(
            path.display().to_string(),
            format!("not the manifest of snapshot {name:?} ({MANIFEST_FORMAT})"),
        ));
    }
    Ok(manifest)
}

/// The error of a snapshot `name` that `mirror` does not have, naming those
/// it has.
fn unknown_snapshot(mirror: &Path, name: &str) -> Error {
    let names: Vec<String> = list(mirror)
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.name)
        .collect();
    let have = if names.is_empty() {
        "it has none".to_owned()
    } else {
        format!("it has {}", names.join(", "))
    };
    snapshot_error(mirror, format!("no snapshot {name:?} ({have})"))
}

/// The directory of the snapshot `name` of `mirror` (not checked to exist).
pub fn snapshot_dir(mirror: &Path, name: &str) -> PathBuf {
    snapshots_dir(mirror).join(name)
}

/// The directory of the snapshots of `mirror`.
fn snapshots_dir(mirror: &Path) -> PathBuf {
    mirror.join(DATA_DIR).join(SNAPSHOTS_DIR)
}

/// Removes the snapshot `name` of `mirror`. Refuses one that a view shows
/// or can roll back to (see [`protected`]).
pub fn remove(mirror: &Path, name: &str) -> Result<()> {
    check_mirror_dir(mirror)?;
    let _lock = SnapshotsLock::exclusive(mirror)?;
    manifest(mirror, name)?;
    let users = users_of(mirror, name)?;
    if !users.is_empty() {
        let views: Vec<String> = users.iter().map(|p| p.display().to_string()).collect();
        return Err(snapshot_error(
            mirror,
            format!(
                "snapshot {name:?} is shown (or kept for rollback) by the view {}: publish another snapshot there first",
                views.join(", ")
            ),
        ));
    }
    discard(mirror, name)
}

/// Removes the snapshot `name`: renamed to a temporary name first (so that
/// a kill leaves no half snapshot under its name), then deleted.
fn discard(mirror: &Path, name: &str) -> Result<()> {
    let dir = snapshots_dir(mirror);
    let from = dir.join(name);
    let trash = dir.join(temp_name(&format!("{name}-removed")));
    let _ = fs::remove_dir_all(&trash);
    fs::rename(&from, &trash).map_err(|e| Error::io(&from, e))?;
    sync_dir(&dir)?;
    fs::remove_dir_all(&trash).map_err(|e| Error::io(&trash, e))
}

/// Removes the oldest snapshots of `mirror` beyond the newest `keep`,
/// except those named in `protected` and those the views registered in
/// the mirror show or can roll back to. Gives the names removed, oldest
/// first.
pub fn prune(mirror: &Path, keep: usize, protected: &[String]) -> Result<Vec<String>> {
    check_mirror_dir(mirror)?;
    let _lock = SnapshotsLock::exclusive(mirror)?;
    let all = list(mirror)?;
    let shown = registered_snapshots(mirror)?;
    let excess = all.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for info in all.into_iter().take(excess) {
        if protected.contains(&info.name) || shown.contains(&info.name) {
            continue;
        }
        discard(mirror, &info.name)?;
        removed.push(info.name);
    }
    Ok(removed)
}

/// The snapshots of `mirror` that registered views show or can roll back
/// to, sorted, each once.
pub fn protected(mirror: &Path) -> Result<Vec<String>> {
    check_mirror_dir(mirror)?;
    Ok(registered_snapshots(mirror)?.into_iter().collect())
}

/// [`protected`], as a set.
fn registered_snapshots(mirror: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for (_, state) in registered_views(mirror)? {
        out.extend(state.snapshots());
    }
    Ok(out)
}

/// The views registered in `mirror` that show (or can roll back to)
/// `name`.
fn users_of(mirror: &Path, name: &str) -> Result<Vec<PathBuf>> {
    Ok(registered_views(mirror)?
        .into_iter()
        .filter(|(_, s)| s.snapshots().iter().any(|n| n == name))
        .map(|(view, _)| view)
        .collect())
}

/// A view's registration in a mirror (`.data/views/<hash>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Registration {
    /// The view's directory (absolute).
    pub view: PathBuf,
}

/// The views registered in `mirror` that still show snapshots of it, with
/// their state. A registration whose view is gone, or shows another
/// mirror now, is skipped.
fn registered_views(mirror: &Path) -> Result<Vec<(PathBuf, crate::view_state::ViewState)>> {
    let dir = mirror.join(DATA_DIR).join(VIEWS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let here = fs::canonicalize(mirror).map_err(|e| Error::io(mirror, e))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Some(reg) = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Registration>(&b).ok())
        else {
            log::warn!("{}: not a view registration; ignored", path.display());
            continue;
        };
        let Ok(Some(state)) = crate::view_state::state(&reg.view) else {
            continue;
        };
        if fs::canonicalize(&state.mirror).is_ok_and(|m| m == here) {
            out.push((reg.view, state));
        }
    }
    Ok(out)
}

/// Registers the view `view` (absolute) in `mirror`.
pub(crate) fn register_view(mirror: &Path, view: &Path) -> Result<()> {
    let dir = mirror.join(DATA_DIR).join(VIEWS_DIR);
    make_dir_all(&dir)?;
    let hash = crate::hash::sha256_hex(view.as_os_str().as_encoded_bytes());
    let reg = Registration {
        view: view.to_path_buf(),
    };
    let bytes = serde_json::to_vec_pretty(&reg).unwrap_or_default();
    let path = dir.join(format!("{}.json", &hash[..16]));
    if fs::read(&path).is_ok_and(|b| b == bytes) {
        return Ok(());
    }
    write_durable(&path, &bytes)
}

/// Fails unless `mirror` is a directory.
fn check_mirror_dir(mirror: &Path) -> Result<()> {
    if mirror.is_dir() {
        Ok(())
    } else {
        Err(snapshot_error(mirror, "not a mirror directory"))
    }
}

/// An [`Error::Snapshot`].
fn snapshot_error(mirror: &Path, reason: impl Into<String>) -> Error {
    Error::Snapshot {
        mirror: mirror.to_path_buf(),
        reason: reason.into(),
    }
}

/// The lock of a mirror's snapshots (`.data/snapshots/.lock`): shared
/// while a snapshot is read, exclusive while one is renamed in or removed.
/// Waits for the other holders. Released on drop.
#[derive(Debug)]
pub(crate) struct SnapshotsLock {
    _file: File,
}

impl SnapshotsLock {
    /// Taken exclusively.
    pub(crate) fn exclusive(mirror: &Path) -> Result<SnapshotsLock> {
        SnapshotsLock::take(mirror, true)
    }

    /// Taken shared.
    pub(crate) fn shared(mirror: &Path) -> Result<SnapshotsLock> {
        SnapshotsLock::take(mirror, false)
    }

    fn take(mirror: &Path, exclusive: bool) -> Result<SnapshotsLock> {
        let dir = snapshots_dir(mirror);
        make_dir_all(&dir)?;
        let path = dir.join(SNAPSHOTS_LOCK);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        locked.map_err(|e| Error::io(&path, e))?;
        Ok(SnapshotsLock { _file: file })
    }
}

/// Removes what killed runs left in the snapshots directory `dir`.
fn remove_temporaries(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Makes `dir` and its missing parents.
pub(crate) fn make_dir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Hard-links the regular file `from` at `to` (its directories made);
/// refuses anything but a regular file.
fn link_file(from: &Path, to: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(from).map_err(|e| Error::io(from, e))?;
    if !meta.is_file() {
        return Err(Error::io(from, std::io::Error::other("not a regular file")));
    }
    if let Some(parent) = to.parent() {
        make_dir_all(parent)?;
    }
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let same = fs::symlink_metadata(to).is_ok_and(|m| m.ino() == meta.ino());
            if same { Ok(()) } else { Err(Error::io(to, e)) }
        }
        Err(e) => Err(Error::io(to, e)),
    }
}

/// Writes `bytes` at `path` (a new file; its directories made) and
/// fsyncs it.
pub(crate) fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        make_dir_all(parent)?;
    }
    let tmp = path.with_file_name(temp_name(
        &path.file_name().unwrap_or_default().to_string_lossy(),
    ));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    match path.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["20261207T001500Z", "before-kernel-fix", "a", "v1.2+b@x:y_z"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "..",
            "a/b",
            "../x",
            "a b",
            "é",
            &"x".repeat(101),
        ] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("snapshot name"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_default_name_is_the_utc_time() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_602_500);
        assert_eq!(default_name(t), "20261207T001500Z");
        assert!(check_name(&default_name(SystemTime::now())).is_ok());
    }

    #[test]
    fn a_default_name_taken_gets_a_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_602_500);
        fs::create_dir(dir.path().join("20261207T001500Z")).unwrap();
        assert_eq!(free_default_name(dir.path(), t), "20261207T001500Z-2");
    }

    #[test]
    fn the_manifest_format_round_trips() {
        let m = Manifest {
            format: MANIFEST_FORMAT.into(),
            info: SnapshotInfo {
                name: "n".into(),
                created: Timestamp::from(SystemTime::UNIX_EPOCH),
                products: 1,
                versions: 2,
                items: 3,
                bytes: 4,
            },
            mirror: "/m".into(),
            files: vec![ManifestFile {
                path: "a/b".into(),
                size: 4,
                checksums: [("sha256".to_owned(), "ab".to_owned())].into(),
            }],
        };
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["name"], "n");
        assert_eq!(json["created"], "1970-01-01T00:00:00.000Z");
        assert_eq!(json["files"][0]["checksums"]["sha256"], "ab");
        let back: Manifest = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
    }
}
