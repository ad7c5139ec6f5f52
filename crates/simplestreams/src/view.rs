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
//!   hides dot names never serves it: a state tree per content id and
//!   `references.json` (what the live metadata lists, written as a switch
//!   is finished), `sstream-view.json` (the
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
//! 3. The state records the generation about to be shown (with the
//!    SHA-256 of its `index.json`) as `switching`, and the item files the
//!    view will no longer list as pending removal (each with the time).
//! 4. The new items are linked in at their paths; the old ones stay.
//! 5. `streams` is exchanged with the staged one in one
//!    `renameat2(RENAME_EXCHANGE)` (the first publish renames it into
//!    place): a reader sees the old metadata or the new, never a mix.
//! 6. The state records the new generation as shown (the one before goes
//!    to the history); the old metadata (now in staging) is removed, and
//!    so are the item files whose removal is due (pending for the delete
//!    delay, and not listed by the live metadata).
//!
//! A failure before step 5 (a full disk, a damaged item) puts the state
//! and pending removals back and removes the item files (and directories)
//! it added; a failed first publish removes the directory it made. A
//! failure after step 5 is only bookkeeping left undone: a warning, the
//! new view shown, and the next call finishes it. A kill before step 5
//! leaves the old
//! view, complete (with, at most, unlisted new item files, which the next
//! publish or rollback removes); after it, the new view, complete: the
//! next call sees that the live `index.json` is the one `switching` names
//! and finishes step 6 (a killed first publish is forgotten with what it
//! linked in, so the directory is fresh again). A pending removal is
//! never done while the live
//! metadata lists the file. Removals whose delay passed are done at every
//! publish and rollback (and by [`collect`]); every other file outside
//! `streams/` and `.data/` that the view does not list is removed then
//! too: the view's directory is the view's alone.
//!
//! A client reads the index and then each products file in separate
//! requests, so it may pair the old index with a new products file: each
//! file is whole, and every item either lists is there (old items stay for
//! the delete delay). A content id that the new generation no longer has
//! (other filters) loses its products file at the switch, as when
//! upstream drops one.
//!
//! # Re-spun items
//!
//! A path can hold one file. When the snapshot shown next has, at a path
//! the view lists now, a file with other bytes (upstream re-spun an item
//! under the same name), that file is replaced (atomically, by rename) in
//! step 4, before the switch: a client of the old metadata that fetches
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
//! by publishing the snapshot again. Publishing the snapshot shown, with
//! the same filters, again (a refresh) adds no step. The snapshot shown and
//! the one a rollback shows next are protected in the mirror (see
//! [`crate::snapshot::protected`]); older steps of the history are
//! remembered, and a rollback that reaches one whose snapshot was pruned
//! fails, naming it.
//!
//! # What is refused
//!
//! A view directory that is not a view (it exists, is not empty and has
//! no view state), the mirror itself, a directory inside the mirror or
//! containing it, an unknown snapshot, a bucket, and a second publish at
//! once (the lock): each with one [`Error`] naming the directory or the
//! snapshot, the view as it was.

use crate::durable::{sync_dir, sync_tree};
use crate::error::{Error, Result};
use crate::filter::FilterGroups;
use crate::format::{Checksum, Item, Products, flatten};
use crate::hash::{Expected, sha256_hex, verify_path};
use crate::holdings::{
    Listed, detached_path, index_document, products_document, render, signed_index, sjson_path,
    without_orphan_deltas,
};
use crate::layout::{
    DATA_DIR, LOCK, MIRROR_KEYRING, PENDING_DELETES, REFERENCES, is_own_data_name, temp_name,
};
use crate::openpgp::{KeyError, SigningKey};
use crate::path::RelPath;
use crate::snapshot::{
    INDEX, SnapshotsLock, TREE, make_dir_all, register_view, snapshot_dir, write_durable,
};
use crate::status::Timestamp;
use crate::store::PendingDeletes;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::view_state::{
    HISTORY_LIMIT, STATE_FILE, STATE_FORMAT, Shown, SwitchKind, Switching, ViewState, state,
};

/// The staging directory of the next generation, under `.data/`.
pub const STAGING_DIR: &str = "sstream-view-staging";
/// The metadata files the live generation carries over from the one
/// before (the products files, and their signatures, of content ids the
/// new generation dropped), each with the time it stopped being listed,
/// under `.data/`: see [`carry_retired`].
pub const RETIRED_FILE: &str = "sstream-view-retired.json";

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

/// Makes `view` show the snapshot `snapshot` of the mirror `mirror`
/// (a first publish, or a promotion): see the module documentation.
pub fn publish(
    view: &Path,
    mirror: &Path,
    snapshot: &str,
    opts: &ViewOptions,
) -> Result<ViewState> {
    refuse_bucket(view, view)?;
    refuse_bucket(view, mirror)?;
    let mirror = fs::canonicalize(mirror)
        .map_err(|e| view_error(view, format!("mirror {}: {e}", mirror.display())))?;
    if !mirror.is_dir() {
        return Err(view_error(
            view,
            format!("mirror {}: not a directory", mirror.display()),
        ));
    }
    crate::snapshot::check_name(snapshot).map_err(|reason| view_error(view, reason.to_string()))?;
    let view_abs = resolve(view)?;
    check_apart(view, &view_abs, &mirror)?;
    let before = state(view)?;
    if before.is_none() && !is_fresh(view)? {
        return Err(not_a_view(view));
    }
    let created = !view.exists();
    make_dir_all(&view.join(DATA_DIR))?;
    let published = publish_locked(view, &view_abs, &mirror, snapshot, opts);
    if published.is_err() && created {
        // Nothing was shown (a failure after the switch is a warning): the
        // directory made for the view goes again.
        let _ = fs::remove_dir_all(view);
    }
    published
}

/// [`publish`] once the paths are checked: under the view's lock.
fn publish_locked(
    view: &Path,
    view_abs: &Path,
    mirror: &Path,
    snapshot: &str,
    opts: &ViewOptions,
) -> Result<ViewState> {
    let _lock = ViewLock::take(view)?;
    let current = recover(view)?;
    if current.is_none() && !is_fresh(view)? {
        return Err(not_a_view(view));
    }
    if let Some(current) = &current {
        check_same_mirror(view, current, mirror)?;
    }
    let _snapshots = SnapshotsLock::shared(mirror)?;
    register_view(mirror, view_abs)?;
    let kind = if current.is_some() {
        SwitchKind::Publish
    } else {
        SwitchKind::First
    };
    let target = Target {
        mirror,
        snapshot,
        filters: &opts.filters,
        kind,
    };
    switch(view, current, &target, opts)
}

/// Makes `view` show again the generation it showed before the current
/// one (with the filters it had then).
pub fn rollback(view: &Path, opts: &ViewOptions) -> Result<ViewState> {
    refuse_bucket(view, view)?;
    if state(view)?.is_none() {
        return Err(not_a_view(view));
    }
    let _lock = ViewLock::take(view)?;
    let Some(current) = recover(view)? else {
        return Err(not_a_view(view));
    };
    let Some(previous) = current.history.last().cloned() else {
        return Err(view_error(
            view,
            format!(
                "nothing to roll back to: the view has shown only snapshot {:?}",
                current.snapshot
            ),
        ));
    };
    if previous.signed && opts.sign_key.is_none() {
        return Err(view_error(
            view,
            format!(
                "snapshot {:?} was shown signed: give the view's signing key (--sign-key) to roll back",
                previous.snapshot
            ),
        ));
    }
    let mirror = current.mirror.clone();
    let _snapshots = SnapshotsLock::shared(&mirror)?;
    let target = Target {
        mirror: &mirror,
        snapshot: &previous.snapshot,
        filters: &previous.filters,
        kind: SwitchKind::Rollback,
    };
    switch(view, Some(current), &target, opts)
}

/// Removes the item files of `view` whose delete delay has passed; gives
/// how many were removed. Takes the view's lock.
pub fn collect(view: &Path) -> Result<usize> {
    if state(view)?.is_none() {
        return Err(not_a_view(view));
    }
    let _lock = ViewLock::take(view)?;
    let Some(current) = recover(view)? else {
        return Err(not_a_view(view));
    };
    collect_due(view, Duration::from_secs(current.delete_delay_secs))
}

/// What a switch shows next.
struct Target<'a> {
    mirror: &'a Path,
    snapshot: &'a str,
    filters: &'a [String],
    kind: SwitchKind,
}

/// The switch of the module documentation, steps 1 to 6; on a failure
/// before the exchange, the view is left as it was.
fn switch(
    view: &Path,
    current: Option<ViewState>,
    target: &Target<'_>,
    opts: &ViewOptions,
) -> Result<ViewState> {
    // The manifest names a whole snapshot (an unknown one: an error
    // naming those there are).
    crate::snapshot::manifest(target.mirror, target.snapshot)?;
    let tree = snapshot_dir(target.mirror, target.snapshot).join(TREE);
    let generation = Generation::read(&tree, target.snapshot, target.filters)?;
    generation.check_items(&tree, opts.verify_existing)?;
    let key = opts.sign_key.as_deref();
    let index_sha256 = stage(view, &generation, key).inspect_err(|_| {
        let _ = fs::remove_dir_all(view.join(DATA_DIR).join(STAGING_DIR));
    })?;
    let pending_before = load_pending(view)?;
    let retired_before = load_list(view, RETIRED_FILE)?;
    let carried = carry_retired(view, &retired_before, opts.delete_delay).inspect_err(|_| {
        let _ = fs::remove_dir_all(view.join(DATA_DIR).join(STAGING_DIR));
    })?;
    let shown = Shown {
        snapshot: target.snapshot.to_owned(),
        published: Timestamp::now(),
        filters: target.filters.to_vec(),
        signed: key.is_some(),
        items: generation.items,
        bytes: generation.bytes(),
    };
    let mut recorded = match &current {
        Some(c) => c.clone(),
        None => first_state(target.mirror, &shown),
    };
    recorded.delete_delay_secs = opts.delete_delay.as_secs();
    recorded.switching = Some(Switching {
        shown: shown.clone(),
        index_sha256,
        kind: target.kind,
    });
    let prepared = (|| {
        let listed_now = listed_files(view)?;
        let mut pending = pending_before.clone();
        let now = unix_now();
        for path in listed_now.difference(&generation.paths()) {
            pending.entry(path.clone()).or_insert(now);
        }
        for path in generation.files.keys() {
            pending.remove(path.as_str());
        }
        save_pending(view, &pending)?;
        let mut retired = retired_before.clone();
        retired.retain(|rel, _| carried.contains(rel));
        for rel in &carried {
            retired.entry(rel.clone()).or_insert(now);
        }
        save_list(view, RETIRED_FILE, &retired)?;
        write_state(view, &recorded)?;
        let mut added = Vec::new();
        let linked = link_items(view, &tree, &generation, &mut added);
        if let Err(e) = linked {
            remove_added(view, &added);
            return Err(e);
        }
        Ok(())
    })();
    if let Err(e) = prepared {
        restore(view, current.as_ref(), &pending_before);
        let _ = save_list(view, RETIRED_FILE, &retired_before);
        return Err(e);
    }
    exchange(view)?;
    // The switch is done: what is left is bookkeeping, which the next
    // call finishes if it fails now (a full disk).
    let finished = recover(view).and_then(|done| {
        collect_due(view, opts.delete_delay)?;
        Ok(done)
    });
    match finished {
        Ok(Some(done)) => Ok(done),
        Ok(None) => Err(view_error(
            view,
            "the view's state vanished during the switch",
        )),
        Err(e) => {
            log::warn!(
                "{}: now shows snapshot {:?}, but its bookkeeping is unfinished ({e}); the next publish or rollback finishes it",
                view.display(),
                target.snapshot
            );
            let switching = recorded.switching.take();
            Ok(match switching {
                Some(s) => recorded.switched(s),
                None => recorded,
            })
        }
    }
}

/// A new view's state before its first switch.
fn first_state(mirror: &Path, shown: &Shown) -> ViewState {
    ViewState {
        format: STATE_FORMAT.to_owned(),
        mirror: mirror.to_path_buf(),
        snapshot: shown.snapshot.clone(),
        published: shown.published,
        filters: shown.filters.clone(),
        signed: shown.signed,
        items: shown.items,
        bytes: shown.bytes,
        history: Vec::new(),
        delete_delay_secs: 0,
        switching: None,
    }
}

/// Puts back the state and pending removals of before a failed switch,
/// and drops the staged metadata.
fn restore(view: &Path, state: Option<&ViewState>, pending: &PendingDeletes) {
    // The staged metadata first: it frees the room the rest may need.
    let _ = fs::remove_dir_all(view.join(DATA_DIR).join(STAGING_DIR));
    let state_path = view.join(DATA_DIR).join(STATE_FILE);
    let _ = match state {
        Some(s) => write_state(view, s),
        None => fs::remove_file(&state_path).map_err(|e| Error::io(&state_path, e)),
    };
    let _ = save_pending(view, pending);
}

/// Finishes, or forgets, a switch that a kill interrupted, and gives the
/// state: a switch whose `index.json` is live is finished (the history
/// updated); one that is not is forgotten (for a first publish, with the
/// state: the directory is no view yet). Drops the staging directory.
fn recover(view: &Path) -> Result<Option<ViewState>> {
    let Some(mut state) = state(view)? else {
        let _ = fs::remove_dir_all(view.join(DATA_DIR).join(STAGING_DIR));
        return Ok(None);
    };
    if let Some(switching) = state.switching.take() {
        let live = fs::read(view.join(INDEX)).ok().map(|b| sha256_hex(&b));
        if live.as_deref() == Some(switching.index_sha256.as_str()) {
            state = state.switched(switching);
            record_states(view)?;
            write_state(view, &state)?;
        } else if switching.kind == SwitchKind::First {
            forget_first(view)?;
            return Ok(None);
        } else {
            // The old metadata is live still: what the forgotten switch
            // meant to retire is listed again.
            save_list(view, RETIRED_FILE, &PendingDeletes::new())?;
            write_state(view, &state)?;
        }
    }
    let staging = view.join(DATA_DIR).join(STAGING_DIR);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        sync_dir(&view.join(DATA_DIR))?;
    }
    Ok(Some(state))
}

/// Undoes a first publish killed before its switch: the item files it
/// linked in (the directory was new or empty), its pending removals and
/// its state go, and the directory is fresh again.
fn forget_first(view: &Path) -> Result<()> {
    let mut found = Vec::new();
    walk_items(view, view, &mut found);
    for file in found {
        fs::remove_file(&file).map_err(|e| Error::io(&file, e))?;
        remove_empty_parents(view, &file);
    }
    remove_empty_dirs(view, view);
    let _ = fs::remove_dir_all(view.join(DATA_DIR).join(STAGING_DIR));
    save_pending(view, &PendingDeletes::new())?;
    let path = view.join(DATA_DIR).join(STATE_FILE);
    fs::remove_file(&path).map_err(|e| Error::io(&path, e))
}

/// The metadata and items a generation shows: a snapshot's held
/// documents narrowed by filters.
struct Generation {
    /// The index (plain), naming the products files below.
    index: Map<String, Value>,
    /// Each products file: its path and document.
    documents: Vec<(RelPath, Map<String, Value>)>,
    /// Every distinct item file, with what it must be.
    files: BTreeMap<String, Expected>,
    /// Items listed.
    items: usize,
}

impl Generation {
    /// The generation of the snapshot tree `tree` (of snapshot `name`)
    /// narrowed by `filters`.
    fn read(tree: &Path, name: &str, filters: &[String]) -> Result<Generation> {
        let groups = if filters.is_empty() {
            FilterGroups::default()
        } else {
            FilterGroups::parse(&[filters])?
        };
        let index_path = tree.join(INDEX);
        let index: Map<String, Value> = read_json(&index_path)?;
        let mut trees = Vec::new();
        for (content_id, entry) in index
            .get("index")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let Some(path) = entry.get("path").and_then(Value::as_str) else {
                continue;
            };
            let rel = checked_rel(&index_path, path)?;
            if rel.segments().next() != Some("streams") {
                return Err(Error::metadata(
                    index_path.display().to_string(),
                    format!("{content_id}: products file {path:?} is not under streams/"),
                ));
            }
            let doc_path = rel.under(tree);
            let products = read_products(&doc_path)?;
            trees.push((rel, products));
        }
        let flat: Vec<_> = trees
            .iter()
            .flat_map(|(_, p)| {
                p.items()
                    .map(|e| flatten(p, e.product_name, e.version_name, e.item_name))
            })
            .collect();
        groups.check_selects(&flat)?;
        let mut generation = Generation {
            index: Map::new(),
            documents: Vec::new(),
            files: BTreeMap::new(),
            items: 0,
        };
        for (rel, products) in &trees {
            let selected = without_orphan_deltas(select(products, &groups));
            for e in selected.items() {
                let Some(path) = &e.item.path else { continue };
                check_item_path(&index_path, path)?;
                generation.items += 1;
                generation
                    .files
                    .entry(path.to_string())
                    .or_insert_with(|| expected(e.item));
            }
            if let Some(doc) = products_document(products, &selected)? {
                generation.documents.push((rel.clone(), doc));
            }
        }
        if generation.documents.is_empty() {
            return Err(Error::Filter {
                filter: filters.join(" "),
                reason: format!("selects nothing of snapshot {name:?}"),
            });
        }
        let listed: Vec<Listed<'_>> = generation
            .documents
            .iter()
            .map(|(path, products)| Listed { path, products })
            .collect();
        generation.index = index_document(&index, &listed)?;
        Ok(generation)
    }

    /// Every item path listed.
    fn paths(&self) -> BTreeSet<String> {
        self.files.keys().cloned().collect()
    }

    /// Bytes of the distinct item files.
    fn bytes(&self) -> u64 {
        self.files.values().filter_map(|e| e.size).sum()
    }

    /// Step 1: every item file of the snapshot's tree is there with its
    /// size (and, with `checksums`, its checksum).
    fn check_items(&self, tree: &Path, checksums: bool) -> Result<()> {
        for (path, expected) in &self.files {
            let file = tree.join(path);
            let meta = fs::symlink_metadata(&file).map_err(|e| Error::io(&file, e))?;
            if !meta.is_file() {
                return Err(Error::io(
                    &file,
                    std::io::Error::other("not a regular file"),
                ));
            }
            let what = file.display().to_string();
            Expected {
                size: expected.size,
                checksum: None,
            }
            .check(&what, meta.len(), None)?;
            if checksums {
                verify_path(&file, expected, &what)?;
            }
        }
        Ok(())
    }
}

/// What the file of `item` must be.
fn expected(item: &Item) -> Expected {
    Expected {
        size: item.size,
        checksum: item.checksum.clone().map(|c| match c {
            Checksum::Sha512(h) => Checksum::Sha512(h.to_ascii_lowercase()),
            Checksum::Sha256(h) => Checksum::Sha256(h.to_ascii_lowercase()),
            Checksum::Md5(h) => Checksum::Md5(h.to_ascii_lowercase()),
        }),
    }
}

/// `products` with only the items `groups` select (versions and products
/// left empty dropped).
fn select(products: &Products, groups: &FilterGroups) -> Products {
    if groups.matches_everything() {
        return products.clone();
    }
    let mut out = products.clone();
    for (pname, product) in out.products.iter_mut() {
        for (vname, version) in product.versions.iter_mut() {
            Arc::make_mut(&mut version.items)
                .retain(|iname, _| groups.matches(&flatten(products, pname, vname, iname)));
        }
        product.versions.retain(|_, v| !v.items.is_empty());
    }
    out.products.retain(|_, p| !p.versions.is_empty());
    out
}

/// An item path a view can show: not under `streams/` (switched as a
/// whole) nor `.data/` (the view's bookkeeping).
fn check_item_path(index: &Path, path: &RelPath) -> Result<()> {
    match path.segments().next() {
        Some("streams") | Some(DATA_DIR) => Err(Error::UnsafePath {
            context: index.display().to_string(),
            path: path.to_string(),
            reason: "a view cannot show an item under streams/ or .data/".into(),
        }),
        _ => Ok(()),
    }
}

/// `path` of the document `doc` as a checked relative path.
fn checked_rel(doc: &Path, path: &str) -> Result<RelPath> {
    RelPath::parse(path).map_err(|e| Error::UnsafePath {
        context: doc.display().to_string(),
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The products document at `path`, read as its text (no JSON tree of the
/// whole document is built).
fn read_products(path: &Path) -> Result<Products> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    Products::parse(&path.display().to_string(), &bytes)
}

/// The JSON object in the file at `path`.
fn read_json(path: &Path) -> Result<Map<String, Value>> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::metadata(path.display().to_string(), format!("malformed JSON: {e}")))
}

/// Step 2: the generation's metadata in the staging directory, synced;
/// gives the SHA-256 of its `index.json`.
fn stage(view: &Path, generation: &Generation, key: Option<&SigningKey>) -> Result<String> {
    let staging = view.join(DATA_DIR).join(STAGING_DIR);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    }
    make_dir_all(&staging.join("streams/v1"))?;
    for (rel, doc) in &generation.documents {
        let bytes = render(doc);
        write_family(&staging, rel, &bytes, &bytes, key)?;
    }
    let index_rel = checked_rel(&staging, INDEX)?;
    let plain = render(&generation.index);
    let text = render(&signed_index(&generation.index));
    write_family(&staging, &index_rel, &text, &plain, key)?;
    if let Some(key) = key {
        let ring = key
            .public_keyring_binary()
            .map_err(|source| Error::PublicKeyring {
                path: staging.join(MIRROR_KEYRING).display().to_string(),
                source,
            })?;
        write_durable(&staging.join(MIRROR_KEYRING), &ring)?;
    }
    sync_tree(&staging)?;
    Ok(sha256_hex(&plain))
}

/// Writes the plain document `rel` (`plain`) under `root` and, with a key,
/// its clear-signed `.sjson` (of `text`) and detached `.json.gpg`.
fn write_family(
    root: &Path,
    rel: &RelPath,
    text: &[u8],
    plain: &[u8],
    key: Option<&SigningKey>,
) -> Result<()> {
    write_durable(&rel.under(root), plain)?;
    let Some(key) = key else { return Ok(()) };
    let cannot = |source: KeyError| Error::CannotSign {
        path: rel.under(root).display().to_string(),
        source,
    };
    if let Some(sjson) = sjson_path(rel) {
        write_durable(&sjson.under(root), &key.clearsign(text).map_err(cannot)?)?;
    }
    let signature = key.sign_detached(plain).map_err(cannot)?;
    write_durable(&detached_path(rel).under(root), &signature)
}

/// Step 3: links every item file of the generation into the view at its
/// path (a file already there as the same file is left alone; another file
/// is replaced by rename); the paths that were not there are added to
/// `added`.
fn link_items(
    view: &Path,
    tree: &Path,
    generation: &Generation,
    added: &mut Vec<PathBuf>,
) -> Result<()> {
    let mut warned = false;
    for path in generation.files.keys() {
        let from = tree.join(path);
        let to = view.join(path);
        prepare_parents(view, path)?;
        let source = fs::symlink_metadata(&from).map_err(|e| Error::io(&from, e))?;
        match fs::symlink_metadata(&to) {
            Ok(m) if m.file_type().is_symlink() || !m.is_file() => {
                return Err(Error::UnsafePath {
                    context: view.display().to_string(),
                    path: path.clone(),
                    reason: "not a regular file in the view".into(),
                });
            }
            Ok(m) if m.ino() == source.ino() && m.dev() == source.dev() => continue,
            Ok(m) if m.dev() != source.dev() && m.len() == source.len() => {
                // A copy made before (another filesystem): the same bytes
                // when its checksum says so.
                let expected = &generation.files[path];
                if expected.checksum.is_some()
                    && verify_path(&to, expected, &to.display().to_string()).is_ok()
                {
                    continue;
                }
                place(&from, &to, &mut warned)?;
            }
            Ok(_) => place(&from, &to, &mut warned)?,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // Recorded first: a failure leaves the directories made
                // for it, which the clean-up removes with it.
                added.push(to.clone());
                place(&from, &to, &mut warned)?;
            }
            Err(e) => return Err(Error::io(&to, e)),
        }
    }
    Ok(())
}

/// Puts the file `from` at `to` through a temporary name beside it: a
/// hard link, or a copy (warned about once) across filesystems.
fn place(from: &Path, to: &Path, warned: &mut bool) -> Result<()> {
    let name = to.file_name().unwrap_or_default().to_string_lossy();
    let tmp = to.with_file_name(temp_name(&name));
    let _ = fs::remove_file(&tmp);
    match fs::hard_link(from, &tmp) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            if !*warned {
                log::warn!(
                    "{}: on another filesystem than the mirror: item files are copied, not linked",
                    to.display()
                );
                *warned = true;
            }
            copy_durable(from, &tmp)?;
        }
        Err(e) => return Err(Error::io(to, e)),
    }
    if let Err(e) = fs::rename(&tmp, to) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(to, e));
    }
    if let Some(parent) = to.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Copies `from` to the new file `to`, synced.
fn copy_durable(from: &Path, to: &Path) -> Result<()> {
    let result = (|| {
        let mut src = File::open(from).map_err(|e| Error::io(from, e))?;
        let mut dst = File::create(to).map_err(|e| Error::io(to, e))?;
        std::io::copy(&mut src, &mut dst).map_err(|e| Error::io(to, e))?;
        dst.sync_all().map_err(|e| Error::io(to, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(to);
    }
    result
}

/// Makes the directories on the way to the item `path` in the view,
/// refusing a symlink or a file on the way.
fn prepare_parents(view: &Path, path: &str) -> Result<()> {
    let mut dir = view.to_path_buf();
    let segments: Vec<&str> = path.split('/').collect();
    for seg in &segments[..segments.len().saturating_sub(1)] {
        dir.push(seg);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::UnsafePath {
                    context: view.display().to_string(),
                    path: path.to_owned(),
                    reason: format!("{} is not a directory", dir.display()),
                });
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
                if let Some(parent) = dir.parent() {
                    sync_dir(parent)?;
                }
            }
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    Ok(())
}

/// Removes the item files a failed switch added (and their emptied
/// directories).
fn remove_added(view: &Path, added: &[PathBuf]) {
    for file in added {
        let _ = fs::remove_file(file);
        remove_empty_parents(view, file);
    }
}

/// Removes the directories above `file` that are left empty, up to the
/// view's root.
fn remove_empty_parents(view: &Path, file: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == view || !d.starts_with(view) || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Step 5: `streams` exchanged with the staged one (renamed into place
/// the first time), both directories synced.
fn exchange(view: &Path) -> Result<()> {
    let staged = view.join(DATA_DIR).join(STAGING_DIR).join("streams");
    let live = view.join("streams");
    match fs::symlink_metadata(&live) {
        Ok(m) if m.is_dir() => rename_exchange(&staged, &live)?,
        Ok(_) => {
            return Err(Error::UnsafePath {
                context: view.display().to_string(),
                path: "streams".into(),
                reason: "not a directory".into(),
            });
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::rename(&staged, &live).map_err(|e| Error::io(&live, e))?;
        }
        Err(e) => return Err(Error::io(&live, e)),
    }
    sync_dir(view)?;
    sync_dir(&view.join(DATA_DIR).join(STAGING_DIR))?;
    Ok(())
}

/// Exchanges the directories `a` and `b` in one step
/// (`renameat2(RENAME_EXCHANGE)`).
fn rename_exchange(a: &Path, b: &Path) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| Error::io(p, std::io::Error::other("a NUL byte in the path")))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    let e = if e.raw_os_error() == Some(libc::EINVAL) {
        std::io::Error::other(format!(
            "the filesystem cannot exchange two directories in one step (renameat2 RENAME_EXCHANGE): {e}"
        ))
    } else {
        e
    };
    Err(Error::io(b, e))
}

/// Writes the view's `.data/<content_id>` state trees and
/// `.data/references.json` from its live metadata (and removes the states
/// of content ids it no longer lists), so that the view audits as a
/// mirror (`sstream verify VIEWDIR`).
fn record_states(view: &Path) -> Result<()> {
    let data = view.join(DATA_DIR);
    let mut references: crate::store::References = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for (content_id, products) in live_products(view)? {
        for e in products.items() {
            if let Some(path) = &e.item.path {
                references
                    .entry(path.to_string())
                    .or_default()
                    .push(e.reference(&content_id));
            }
        }
        crate::path::check_file_name(&content_id).map_err(|e| Error::UnsafePath {
            context: view.join(INDEX).display().to_string(),
            path: content_id.clone(),
            reason: e.to_string(),
        })?;
        write_durable(&data.join(&content_id), &products.state_json())?;
        ids.insert(content_id);
    }
    for entry in fs::read_dir(&data).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = entry.file_type().is_ok_and(|t| t.is_file())
            && crate::layout::is_state_name(&name)
            && !ids.contains(&name);
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
    let text = crate::json::python_compact(&references)
        .map_err(|e| Error::metadata(data.join(REFERENCES).display().to_string(), e.to_string()))?;
    write_durable(&data.join(REFERENCES), &text)
}

/// The products documents the live metadata of `view` lists, by content
/// id.
fn live_products(view: &Path) -> Result<Vec<(String, Products)>> {
    let index_path = view.join(INDEX);
    let index = match fs::read(&index_path) {
        Ok(b) => serde_json::from_slice::<Map<String, Value>>(&b).map_err(|e| {
            Error::metadata(
                index_path.display().to_string(),
                format!("malformed JSON: {e}"),
            )
        })?,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(index_path, e)),
    };
    let mut out = Vec::new();
    for (content_id, entry) in index
        .get("index")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let Some(path) = entry.get("path").and_then(Value::as_str) else {
            continue;
        };
        let doc_path = checked_rel(&index_path, path)?.under(view);
        let products = read_products(&doc_path)?;
        out.push((content_id.clone(), products));
    }
    Ok(out)
}

/// The item files the live metadata of `view` lists.
fn listed_files(view: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for (_, products) in live_products(view)? {
        out.extend(
            products
                .items()
                .filter_map(|e| e.item.path.as_ref().map(ToString::to_string)),
        );
    }
    Ok(out)
}

/// Removes the item files whose removal is due (pending for `delay`) and
/// that the live metadata does not list, and every file outside `.data/`
/// and `streams/` that neither the live metadata lists nor a pending
/// removal names (what a killed switch linked in). Gives how many files
/// were removed.
fn collect_due(view: &Path, delay: Duration) -> Result<usize> {
    let listed = listed_files(view)?;
    let mut pending = load_pending(view)?;
    let now = unix_now();
    let mut removed = 0;
    let due: Vec<String> = pending
        .iter()
        .filter(|(path, at)| listed.contains(*path) || at.saturating_add(delay.as_secs()) <= now)
        .map(|(path, _)| path.clone())
        .collect();
    for path in &due {
        pending.remove(path);
        if listed.contains(path) {
            continue;
        }
        let file = view.join(path);
        match fs::remove_file(&file) {
            Ok(()) => {
                removed += 1;
                remove_empty_parents(view, &file);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&file, e)),
        }
    }
    save_pending(view, &pending)?;
    removed += collect_retired(view, delay)?;
    let mut found = Vec::new();
    walk_items(view, view, &mut found);
    for file in found {
        let rel = file
            .strip_prefix(view)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if listed.contains(&rel) || pending.contains_key(&rel) {
            continue;
        }
        match fs::remove_file(&file) {
            Ok(()) => {
                log::info!("{}: removed: the view does not list it", file.display());
                removed += 1;
                remove_empty_parents(view, &file);
            }
            Err(e) => log::warn!("{}: not removed: {e}", file.display()),
        }
    }
    remove_empty_dirs(view, view);
    Ok(removed)
}

/// Removes the carried-over metadata files ([`carry_retired`]) whose
/// delay has passed; gives how many were removed.
fn collect_retired(view: &Path, delay: Duration) -> Result<usize> {
    let mut retired = load_list(view, RETIRED_FILE)?;
    let now = unix_now();
    let due: Vec<String> = retired
        .iter()
        .filter(|(_, at)| at.saturating_add(delay.as_secs()) <= now)
        .map(|(rel, _)| rel.clone())
        .collect();
    let mut removed = 0;
    for rel in &due {
        retired.remove(rel);
        let file = view.join(rel);
        match fs::remove_file(&file) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&file, e)),
        }
    }
    if !due.is_empty() {
        sync_dir(&view.join("streams/v1"))?;
    }
    save_list(view, RETIRED_FILE, &retired)?;
    Ok(removed)
}

/// Step 2, continued: links into the staged `streams/` every file of the
/// live `streams/` that the new generation does not have (the products
/// file of a content id it dropped, with its signatures), unless its
/// removal is due (retired for the delete delay): a client that read the
/// old index still finds every file it names for the delay, as it finds
/// the items. The files are not listed by the new index. Gives their
/// paths, relative to the view.
fn carry_retired(view: &Path, retired: &PendingDeletes, delay: Duration) -> Result<Vec<String>> {
    let staging = view.join(DATA_DIR).join(STAGING_DIR);
    let mut live = Vec::new();
    walk_files(&view.join("streams"), &mut live);
    let now = unix_now();
    let mut carried = Vec::new();
    for file in live {
        let Ok(rel) = file
            .strip_prefix(view)
            .map(|p| p.to_string_lossy().into_owned())
        else {
            continue;
        };
        let staged = staging.join(&rel);
        if staged.exists() {
            continue;
        }
        if retired
            .get(&rel)
            .is_some_and(|at| at.saturating_add(delay.as_secs()) <= now)
        {
            continue;
        }
        if let Some(parent) = staged.parent() {
            make_dir_all(parent)?;
        }
        fs::hard_link(&file, &staged).map_err(|e| Error::io(&staged, e))?;
        carried.push(rel);
    }
    if !carried.is_empty() {
        sync_tree(&staging)?;
    }
    Ok(carried)
}

/// Every regular file under `dir`, recursively.
fn walk_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk_files(&entry.path(), found),
            Ok(t) if t.is_file() => found.push(entry.path()),
            _ => {}
        }
    }
}

/// Removes the directories under `dir` in the view (but `.data/` and
/// `streams/` at its root) that hold no file, deepest first.
fn remove_empty_dirs(view: &Path, dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        if dir == view && (name == DATA_DIR || name == "streams") {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_dirs(view, &entry.path());
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// Every file (not directory) under `dir` in the view, but `.data/` and
/// `streams/` at its root.
fn walk_items(view: &Path, dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if dir == view {
            let name = entry.file_name();
            if name == DATA_DIR || name == "streams" {
                continue;
            }
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk_items(view, &path, found),
            Ok(_) => found.push(path),
            Err(_) => {}
        }
    }
}

/// The pending removals of `view`.
fn load_pending(view: &Path) -> Result<PendingDeletes> {
    load_list(view, PENDING_DELETES)
}

/// Records the pending removals of `view` (none: no file).
fn save_pending(view: &Path, pending: &PendingDeletes) -> Result<()> {
    save_list(view, PENDING_DELETES, pending)
}

/// A list of paths with times under the view's `.data/` (empty when the
/// file is missing).
fn load_list(view: &Path, name: &str) -> Result<PendingDeletes> {
    let path = view.join(DATA_DIR).join(name);
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            Error::metadata(path.display().to_string(), format!("malformed JSON: {e}"))
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(PendingDeletes::new()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Records a list of [`load_list`] (an empty one: no file).
fn save_list(view: &Path, name: &str, pending: &PendingDeletes) -> Result<()> {
    let path = view.join(DATA_DIR).join(name);
    if pending.is_empty() {
        return match fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io(path, e)),
            _ => Ok(()),
        };
    }
    let bytes = serde_json::to_vec_pretty(pending).unwrap_or_default();
    write_durable(&path, &bytes)
}

/// Writes the view's state.
fn write_state(view: &Path, state: &ViewState) -> Result<()> {
    let path = view.join(DATA_DIR).join(STATE_FILE);
    let bytes = serde_json::to_vec_pretty(state)
        .map_err(|e| Error::metadata(path.display().to_string(), e.to_string()))?;
    write_durable(&path, &bytes)
}

/// Seconds since the epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Whether `view` can become a view: absent, empty, or holding nothing
/// but what a failed or killed first publish leaves (`.data/` with our
/// lock, staging, pending removals and temporary files).
fn is_fresh(view: &Path) -> Result<bool> {
    let entries = match fs::read_dir(view) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(true),
        Err(e) if e.kind() == ErrorKind::NotADirectory => return Ok(false),
        Err(e) => return Err(Error::io(view, e)),
    };
    for entry in entries.flatten() {
        if entry.file_name() != DATA_DIR {
            // Directories without files (left by a killed clean-up) do not
            // count.
            let mut files = Vec::new();
            walk_items(view, &entry.path(), &mut files);
            if !entry.file_type().is_ok_and(|t| t.is_dir()) || !files.is_empty() {
                return Ok(false);
            }
            continue;
        }
        for inner in fs::read_dir(entry.path()).into_iter().flatten().flatten() {
            let name = inner.file_name().to_string_lossy().into_owned();
            let ours = name == STAGING_DIR
                || name == LOCK
                || is_own_data_name(&name)
                || crate::layout::is_temp_name(&name);
            if !ours || name == STATE_FILE {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The error for a directory that is not a view.
fn not_a_view(view: &Path) -> Error {
    view_error(
        view,
        format!(
            "not a view (no {DATA_DIR}/{STATE_FILE}); a view is made in a new or empty directory"
        ),
    )
}

/// Refuses a bucket (`s3://`) given as `given`.
fn refuse_bucket(view: &Path, given: &Path) -> Result<()> {
    if crate::store::is_s3_target(&given.to_string_lossy()) {
        return Err(view_error(
            view,
            format!(
                "{}: snapshots and views are for directory mirrors; buckets are not supported",
                given.display()
            ),
        ));
    }
    Ok(())
}

/// `path` made absolute, with every existing part resolved (symlinks too).
fn resolve(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let mut rest = Vec::new();
    let mut existing = abs.as_path();
    loop {
        if let Ok(real) = fs::canonicalize(existing) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return Ok(out);
        }
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return Ok(abs),
        }
    }
}

/// Refuses a view that is the mirror, inside it, or contains it.
fn check_apart(view: &Path, view_abs: &Path, mirror: &Path) -> Result<()> {
    let reason = if view_abs == mirror {
        "the view cannot be the mirror itself"
    } else if view_abs.starts_with(mirror) {
        "the view cannot be inside the mirror"
    } else if mirror.starts_with(view_abs) {
        "the view cannot contain the mirror"
    } else {
        return Ok(());
    };
    Err(view_error(view, format!("{reason} ({})", mirror.display())))
}

/// Refuses to show another mirror's snapshots in a view.
fn check_same_mirror(view: &Path, state: &ViewState, mirror: &Path) -> Result<()> {
    let shown = fs::canonicalize(&state.mirror).unwrap_or_else(|_| state.mirror.clone());
    if shown == mirror {
        return Ok(());
    }
    Err(view_error(
        view,
        format!(
            "the view shows snapshots of {}, not of {}",
            state.mirror.display(),
            mirror.display()
        ),
    ))
}

/// An [`Error::View`].
fn view_error(view: &Path, reason: impl Into<String>) -> Error {
    Error::View {
        view: view.to_path_buf(),
        reason: reason.into(),
    }
}

/// The view's lock (`.data/sstream.lock`, an `flock`): one publish or
/// rollback at a time; released on drop, and by the kernel when the
/// process dies.
#[derive(Debug)]
struct ViewLock {
    _file: File,
}

impl ViewLock {
    fn take(view: &Path) -> Result<ViewLock> {
        let dir = view.join(DATA_DIR);
        make_dir_all(&dir)?;
        let path = dir.join(LOCK);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let who = crate::layout::lock_holder(&path);
                return Err(Error::Locked {
                    path,
                    reason: format!("another publish or rollback is working on this view{who}"),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let _ = file.set_len(0);
        let _ = (&file).write_all(std::process::id().to_string().as_bytes());
        Ok(ViewLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(name: &str) -> Shown {
        Shown {
            snapshot: name.into(),
            published: Timestamp::from(UNIX_EPOCH),
            filters: vec!["arch=amd64".into()],
            signed: true,
            items: 2,
            bytes: 10,
        }
    }

    #[test]
    fn the_state_format_round_trips_and_names_its_snapshots() {
        let mut state = first_state(Path::new("/m"), &shown("b"));
        state.history = vec![shown("a")];
        state.switching = Some(Switching {
            shown: shown("c"),
            index_sha256: "00".into(),
            kind: SwitchKind::Publish,
        });
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["format"], STATE_FORMAT);
        assert_eq!(json["snapshot"], "b");
        assert_eq!(json["history"][0]["snapshot"], "a");
        assert_eq!(json["switching"]["kind"], "publish");
        let back: ViewState = serde_json::from_value(json).unwrap();
        assert_eq!(back, state);
        assert_eq!(state.snapshots(), ["a", "b", "c"]);
        state.history = vec![shown("z"), shown("a")];
        assert_eq!(
            state.snapshots(),
            ["a", "b", "c"],
            "only the rollback's target"
        );
    }

    #[test]
    fn switches_update_the_history() {
        let switch = |state: ViewState, name: &str, kind| {
            state.switched(Switching {
                shown: shown(name),
                index_sha256: String::new(),
                kind,
            })
        };
        let state = first_state(Path::new("/m"), &shown("a"));
        let state = switch(state, "b", SwitchKind::Publish);
        let state = switch(state, "c", SwitchKind::Publish);
        assert_eq!(state.snapshot, "c");
        let names = |s: &ViewState| -> Vec<String> {
            s.history.iter().map(|h| h.snapshot.clone()).collect()
        };
        assert_eq!(names(&state), ["a", "b"]);
        let again = switch(state.clone(), "c", SwitchKind::Publish);
        assert_eq!(names(&again), ["a", "b"], "a refresh is no step back");
        let back = switch(state, "b", SwitchKind::Rollback);
        assert_eq!(
            (back.snapshot.as_str(), names(&back)),
            ("b", vec!["a".to_owned()])
        );
        let mut long = first_state(Path::new("/m"), &shown("0"));
        for n in 1..=HISTORY_LIMIT + 5 {
            long = switch(long, &n.to_string(), SwitchKind::Publish);
        }
        assert_eq!(long.history.len(), HISTORY_LIMIT);
        assert!(long.switching.is_none());
    }

    #[test]
    fn a_state_of_another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(state(dir.path()).unwrap().is_none());
        fs::create_dir(dir.path().join(DATA_DIR)).unwrap();
        let path = dir.path().join(DATA_DIR).join(STATE_FILE);
        fs::write(&path, b"{\"format\": \"other\"}").unwrap();
        let err = state(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(STATE_FILE) && err.contains("not a view state"),
            "{err}"
        );
    }

    #[test]
    fn the_view_and_the_mirror_stay_apart() {
        let m = Path::new("/srv/mirror");
        for (v, why) in [
            ("/srv/mirror", "the mirror itself"),
            ("/srv/mirror/view", "inside the mirror"),
            ("/srv", "contain the mirror"),
        ] {
            let err = check_apart(Path::new(v), Path::new(v), m)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{v}: {err}");
        }
        assert!(check_apart(Path::new("/srv/view"), Path::new("/srv/view"), m).is_ok());
        assert!(check_apart(Path::new("/srv/mirror2"), Path::new("/srv/mirror2"), m).is_ok());
    }

    #[test]
    fn a_directory_with_files_is_no_fresh_view() {
        let dir = tempfile::tempdir().unwrap();
        assert!(is_fresh(dir.path()).unwrap());
        assert!(is_fresh(&dir.path().join("new")).unwrap());
        fs::create_dir(dir.path().join(DATA_DIR)).unwrap();
        fs::write(dir.path().join(DATA_DIR).join(LOCK), b"1").unwrap();
        let killed_write = temp_name(STATE_FILE);
        fs::write(dir.path().join(DATA_DIR).join(killed_write), b"{").unwrap();
        assert!(is_fresh(dir.path()).unwrap());
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        assert!(
            is_fresh(dir.path()).unwrap(),
            "empty directories do not count"
        );
        fs::write(dir.path().join(DATA_DIR).join("com.example:c"), b"{}").unwrap();
        assert!(!is_fresh(dir.path()).unwrap(), "a mirror's state");
        fs::remove_file(dir.path().join(DATA_DIR).join("com.example:c")).unwrap();
        fs::write(dir.path().join("file"), b"x").unwrap();
        assert!(!is_fresh(dir.path()).unwrap());
    }
}
