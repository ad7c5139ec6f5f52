//! The plan: what a run will add, remove, download and delete, computed from
//! the source stream, the mirror's state and the options. A dry run prints
//! it; a query is a plan over an empty mirror.

use crate::bookkeeping::{check_pending, reconcile_referrers};
use crate::content::{ContentIndex, ContentKey};
use crate::error::{Error, Result};
use crate::filter::FilterGroups;
use crate::format::{Checksum, Item, Product, Products, Version, flatten};
use crate::metadata::{Document, ProductsDocument, Stream};
use crate::path::RelPath;
use crate::select::select_versions;
use crate::source::Expected;
use crate::space::SpaceCheck;
use crate::store::{PendingDeletes, References, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What decides the plan besides the source and the mirror.
#[derive(Debug, Clone, Default)]
pub struct MirrorOptions {
    /// Items must pass these (every filter of any group).
    pub filters: FilterGroups,
    /// Keep at most this many versions per product.
    pub max: Option<usize>,
    /// Keep versions gone from the source, within `max`.
    pub keep: bool,
    /// Download items (`false`: `--no-item-download`).
    pub item_download: bool,
    /// Also remove products gone from the source and versions the filters
    /// now exclude.
    pub prune: bool,
    /// Re-verify existing item files instead of trusting their size.
    pub verify_existing: bool,
}

/// One item of the plan, with where it comes from. Its names are shared
/// with the other items of its products file ([`Names`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedItem {
    /// The content id of its products file.
    pub content_id: Arc<str>,
    /// Product name.
    pub product: Arc<str>,
    /// Version name.
    pub version: Arc<str>,
    /// Item name.
    pub item: Arc<str>,
    /// The file, if the item names one.
    pub path: Option<RelPath>,
    /// Size in bytes, if given.
    pub size: Option<u64>,
    /// Strongest checksum, if given.
    pub checksum: Option<Checksum>,
}

/// The names of the planned items of one products file, each allocated
/// once: a products file of images.maas.io's size plans 19,000 items, of
/// one content id, a few hundred products and versions and a handful of
/// item names.
#[derive(Debug, Default)]
struct Names(BTreeSet<Arc<str>>);

impl Names {
    /// `name`, shared.
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = name.into();
        self.0.insert(shared.clone());
        shared
    }
}

impl PlannedItem {
    fn new(
        names: &mut Names,
        [content_id, product, version, item]: [&str; 4],
        data: &Item,
    ) -> PlannedItem {
        PlannedItem {
            content_id: names.get(content_id),
            product: names.get(product),
            version: names.get(version),
            item: names.get(item),
            path: data.path.clone(),
            size: data.size,
            checksum: data.checksum.clone(),
        }
    }

    /// The entry in `references.json`: `content_id/product/version/item`.
    pub fn reference(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.content_id, self.product, self.version, self.item
        )
    }

    /// What the downloaded file must be.
    pub fn expected(&self) -> Expected {
        Expected {
            size: self.size,
            checksum: self.checksum.clone(),
        }
    }
}

/// The plan for one products file.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    /// The source products file (published byte for byte).
    pub source: ProductsDocument,
    /// The mirror's tree after the run (`.data/<content_id>`).
    pub state: Products,
    /// Items of versions added, in order.
    pub added: Vec<PlannedItem>,
    /// Items of versions removed, in order.
    pub removed: Vec<PlannedItem>,
    /// Items of held versions that upstream re-spun (see [`Respin`]).
    pub respun: Vec<Respin>,
}

/// An item of a version the mirror holds and keeps whose file upstream
/// changed under the same version name (another checksum, size or path).
/// The state takes the new item, so the file is fetched again (staged,
/// verified against the new checksum, then committed over the old one)
/// before the new metadata is published, and `--verify-existing` checks
/// against the new metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Respin {
    /// The item as the mirror held it.
    pub old: PlannedItem,
    /// The item as upstream now describes it.
    pub new: PlannedItem,
}

impl StreamPlan {
    /// The content id.
    pub fn content_id(&self) -> &str {
        &self.source.content_id
    }
}

/// Where the bytes of a [`Download`] come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The source (the file is transferred).
    Fetch,
    /// Another download of this run with the same content: linked from it
    /// once it is in place (fetched when that one fails).
    Twin(RelPath),
    /// A file of the mirror with the same content: linked from it.
    Stored(RelPath),
    /// An entry of the content index: linked from it.
    Indexed(std::path::PathBuf),
}

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct Download {
    /// Where it goes, relative to the mirror root.
    pub path: RelPath,
    /// Size and checksum to verify.
    pub expected: Expected,
    /// The content ids whose publication depends on it.
    pub content_ids: BTreeSet<String>,
    /// An existing file to verify (and fetch again only if it fails).
    pub verify_only: bool,
    /// Where its bytes come from (content stored once: see
    /// [`crate::content`]).
    pub origin: Origin,
}

impl Download {
    /// The key of its content, when it has one ([`ContentKey::of`]).
    pub fn content_key(&self) -> Option<ContentKey> {
        ContentKey::of(self.expected.size, self.expected.checksum.as_ref())
    }

    /// Whether its bytes are transferred (not verified in place, not
    /// linked from content already stored).
    pub fn transfers(&self) -> bool {
        !self.verify_only && self.origin == Origin::Fetch
    }
}

/// Everything a run will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The index to publish last, when the entry is an index.
    pub index: Option<Document>,
    /// Per products file.
    pub streams: Vec<StreamPlan>,
    /// Files to fetch (each path once), largest first.
    pub downloads: Vec<Download>,
    /// `references.json` after the run (`None`: unchanged, not read).
    pub references: Option<References>,
    /// Paths to delete once the new metadata is published (after the
    /// delete delay, when there is one).
    pub deletions: BTreeSet<RelPath>,
    /// Bytes of the files to delete.
    pub deletion_bytes: u64,
    /// The deletions earlier runs scheduled, with when (see
    /// [`PendingDeletes`]).
    pub pending: PendingDeletes,
    /// Files to delete that stand where a download needs a directory (an
    /// item path that was a file is now a directory of a new version's
    /// item) or in a directory where a download needs a file (the
    /// reverse): removed before the downloads, not after publishing (see
    /// [`Plan::clear_the_way`]).
    pub in_the_way: BTreeSet<RelPath>,
    /// The space check against the store, once made
    /// ([`Plan::check_space`]).
    pub space: Option<SpaceCheck>,
}

impl Plan {
    /// Computes the plan for `stream` against the mirror in `store`, in
    /// phases: each products file against its state, then the references
    /// and deletions (only when something changes), then the downloads.
    pub async fn build(stream: Stream, store: &dyn Store, options: &MirrorOptions) -> Result<Plan> {
        check_namespace(&stream)?;
        let pending = checked_pending(&stream, store).await?;
        let mut streams = Vec::new();
        for source in stream.products {
            let target = store.load_state(&source.content_id).await?;
            streams.push(plan_stream(source, target, options));
        }
        let scheduled = pending.clone();
        let present = if options.item_download {
            Presence::of(&streams, store).await
        } else {
            Presence::default()
        };
        let missing = if options.item_download {
            missing_kept_items(&streams, &present)
        } else {
            BTreeSet::new()
        };
        let changes = !pending.is_empty()
            || !missing.is_empty()
            || is_unclean(store).await
            || streams
                .iter()
                .any(|sp| !sp.added.is_empty() || !sp.removed.is_empty() || !sp.respun.is_empty());
        let mut plan = Plan {
            index: stream.index,
            streams,
            downloads: Vec::new(),
            references: None,
            deletions: BTreeSet::new(),
            deletion_bytes: 0,
            pending: scheduled,
            in_the_way: BTreeSet::new(),
            space: None,
        };
        if changes {
            plan.plan_references(store, &pending, options).await?;
        }
        if options.item_download {
            let referenced = |p: &RelPath| {
                plan.references
                    .as_ref()
                    .is_some_and(|r| r.get(p.as_str()).is_some_and(|l| !l.is_empty()))
            };
            let repairs: BTreeSet<RelPath> =
                missing.into_iter().filter(|p| referenced(p)).collect();
            for p in &repairs {
                log::warn!("{p}: missing or damaged in the mirror; fetching it again");
            }
            plan.downloads = plan_downloads(&plan.streams, &repairs, &present, options);
            let unchanged: Vec<&str> = stream
                .unchanged
                .iter()
                .map(|u| u.content_id.as_str())
                .collect();
            plan.share_content(store, &unchanged).await;
            plan.clear_the_way();
        }
        Ok(plan)
    }

    /// Content stored once: each download whose content is already in
    /// the mirror (an item of a state, present with its size, not being
    /// fetched or checked) is linked from there; of the others, the first
    /// (largest first) of each content is fetched and the rest linked from
    /// it. `unchanged` are content ids whose states were not read (their
    /// products files did not change): their files count too.
    async fn share_content(&mut self, store: &dyn Store, unchanged: &[&str]) {
        if !store.can_link() || !self.downloads.iter().any(|d| d.content_key().is_some()) {
            return;
        }
        // Only a source of links: a state that cannot be read is skipped.
        let mut others: Vec<Products> = Vec::new();
        for content_id in unchanged {
            if let Ok(tree) = store.load_state(content_id).await {
                others.push(tree);
            }
        }
        let stored = stored_content(&self.streams, &others, &self.downloads, store).await;
        let mut first: BTreeMap<ContentKey, RelPath> = BTreeMap::new();
        for d in self.downloads.iter_mut().filter(|d| !d.verify_only) {
            let Some(key) = d.content_key() else { continue };
            d.origin = match (stored.get(&key), first.get(&key)) {
                (Some(from), _) => Origin::Stored(from.clone()),
                (None, Some(primary)) => Origin::Twin(primary.clone()),
                (None, None) => {
                    first.insert(key, d.path.clone());
                    Origin::Fetch
                }
            };
        }
    }

    /// Held items whose file is the inode of their content-index entry while
    /// the entry's record is stale (the shared file changed since it was
    /// verified: an in-place edit through another mirror's name changes
    /// this one too) are checked, and fetched again when wrong (see
    /// [`crate::content`]). `unchanged` are the content ids whose products
    /// files did not change (their states are read for this: a rerun with
    /// an unchanged source checks too). Gives how many.
    pub async fn check_shared_files(
        &mut self,
        index: &ContentIndex,
        store: &dyn Store,
        unchanged: &[String],
    ) -> usize {
        use std::os::unix::fs::MetadataExt;
        let inode = |p: &std::path::Path| {
            std::fs::symlink_metadata(p)
                .ok()
                .map(|m| (m.dev(), m.ino()))
        };
        let busy: BTreeSet<RelPath> = self.downloads.iter().map(|d| d.path.clone()).collect();
        let mut checks: BTreeMap<RelPath, Download> = BTreeMap::new();
        // Only a source of checks: a state that cannot be read is skipped.
        let mut others: Vec<(&str, Products)> = Vec::new();
        for cid in unchanged {
            if let Ok(state) = store.load_state(cid).await {
                others.push((cid.as_str(), state));
            }
        }
        let states = (self.streams.iter())
            .map(|sp| (sp.content_id(), &sp.state))
            .chain(others.iter().map(|(cid, state)| (*cid, state)));
        for (content_id, state) in states {
            for entry in state.items() {
                let item = entry.item;
                let Some(path) = &item.path else { continue };
                if busy.contains(path) {
                    continue;
                }
                let Some(key) = ContentKey::of(item.size, item.checksum.as_ref()) else {
                    continue;
                };
                let Some(file) = store.local_path(path) else {
                    continue;
                };
                let held = inode(&file);
                let stale_entry = index
                    .find(&key)
                    .filter(|e| inode(e) == held && !index.is_fresh(e));
                let suspect = index.suspect(&key).filter(|s| inode(s) == held);
                let Some(shared) = stale_entry.or(suspect) else {
                    continue;
                };
                if held.is_none() {
                    continue;
                }
                log::warn!(
                    "{path}: one file with {} of the content index, changed since it was verified; checking it",
                    shared.display()
                );
                checks
                    .entry(path.clone())
                    .or_insert_with(|| Download {
                        path: path.clone(),
                        expected: Expected {
                            size: item.size,
                            checksum: item.checksum.clone(),
                        },
                        content_ids: BTreeSet::new(),
                        verify_only: true,
                        origin: Origin::Fetch,
                    })
                    .content_ids
                    .insert(content_id.to_owned());
            }
        }
        let n = checks.len();
        self.downloads.extend(checks.into_values());
        n
    }

    /// Moves from the deletions to [`Plan::in_the_way`] the files a
    /// download cannot be put in place beside: a file at a directory of a
    /// download's path, or a file under a download's path. Both can only
    /// be deletions of this run (unreferenced after it, claimed by no
    /// state), so removing them early loses nothing the new metadata
    /// names; until it is published, the old metadata names a file that is
    /// gone (an item path that turns into a directory cannot be both at
    /// once), which is no worse than the file the old metadata lists
    /// being about to go, and is what a later run would repair.
    fn clear_the_way(&mut self) {
        let files: BTreeSet<&str> = self.downloads.iter().map(|d| d.path.as_str()).collect();
        let dirs: BTreeSet<&str> = self
            .downloads
            .iter()
            .flat_map(|d| d.path.ancestors())
            .collect();
        let claimed: BTreeSet<&RelPath> = self
            .streams
            .iter()
            .flat_map(|sp| sp.state.items())
            .filter_map(|e| e.item.path.as_ref())
            .collect();
        let blocking: Vec<RelPath> = self
            .deletions
            .iter()
            .filter(|p| dirs.contains(p.as_str()) || p.ancestors().any(|a| files.contains(a)))
            .filter(|p| !claimed.contains(p))
            .cloned()
            .collect();
        for p in blocking {
            self.deletions.remove(&p);
            self.in_the_way.insert(p);
        }
    }

    /// Links the downloads still to be fetched from `index` when it holds
    /// their content.
    pub fn use_content_index(&mut self, index: &ContentIndex) {
        for d in self.downloads.iter_mut().filter(|d| d.transfers()) {
            if let Some(entry) = d.content_key().and_then(|k| index.find(&k)) {
                d.origin = Origin::Indexed(entry);
            }
        }
    }

    /// Checks the plan's new bytes against the store's free space (see
    /// [`SpaceCheck`]) and keeps the result for [`Plan::report`]. `None`
    /// when the store cannot tell its free space.
    pub async fn check_space(
        &mut self,
        store: &dyn Store,
        min_free: Option<u64>,
    ) -> Option<&SpaceCheck> {
        let fetches = self
            .downloads
            .iter()
            .filter(|d| !d.verify_only && d.origin == Origin::Fetch)
            .filter_map(|d| Some((&d.path, d.expected.size?)));
        self.space = SpaceCheck::of(fetches, store, min_free).await;
        self.space.as_ref()
    }

    /// The references after the run, and the paths that lose their last
    /// reference (with pending deletions of an interrupted run) to delete.
    async fn plan_references(
        &mut self,
        store: &dyn Store,
        pending: &PendingDeletes,
        options: &MirrorOptions,
    ) -> Result<()> {
        let mut references = store.load_references().await?;
        let mut candidates: BTreeSet<RelPath> = BTreeSet::new();
        for sp in &self.streams {
            update_references(&mut references, sp, options.item_download, &mut candidates);
        }
        let states: BTreeMap<&str, &Products> = self
            .streams
            .iter()
            .map(|sp| (sp.content_id(), &sp.state))
            .collect();
        let others = load_other_states(store, &references, &states).await;
        candidates.extend(reconcile_referrers(&mut references, &states, |cid| {
            others.get(cid).cloned().flatten()
        }));
        candidates.extend(pending.keys().filter_map(|p| RelPath::parse(p).ok()));
        let orphans: Vec<RelPath> = candidates
            .into_iter()
            .filter(|path| references.get(path.as_str()).is_none_or(Vec::is_empty))
            .collect();
        for (path, stamp) in orphans.iter().zip(store.stamps(&orphans).await) {
            references.remove(path.as_str());
            self.deletion_bytes += stamp.map_or(0, |s| s.len);
        }
        self.deletions.extend(orphans);
        self.references = Some(references);
        Ok(())
    }

    /// Bytes to download (content already stored, or fetched once for
    /// several paths, is not downloaded again).
    pub fn download_bytes(&self) -> u64 {
        self.downloads
            .iter()
            .filter(|d| d.transfers())
            .filter_map(|d| d.expected.size)
            .sum()
    }

    /// Bytes of the files the run adds to the mirror, each path once,
    /// however their content is stored.
    pub fn new_bytes(&self) -> u64 {
        self.downloads
            .iter()
            .filter(|d| !d.verify_only)
            .filter_map(|d| d.expected.size)
            .sum()
    }

    /// The files added without a download, because their content is
    /// stored already or fetched once for several paths, and their bytes.
    pub fn stored_once(&self) -> (usize, u64) {
        self.downloads
            .iter()
            .filter(|d| !d.verify_only && d.origin != Origin::Fetch)
            .fold((0, 0), |(n, bytes), d| {
                (n + 1, bytes + d.expected.size.unwrap_or(0))
            })
    }

    /// Deletions not scheduled before this run.
    pub fn new_deletions(&self) -> usize {
        self.deletions
            .iter()
            .filter(|p| !self.pending.contains_key(p.as_str()))
            .count()
    }

    /// The plan in the reference's dry-run format: `+`/`- <product>
    /// <version> <item> <path> <N> Mb` per item, then `<N> Mb change`, where
    /// the total counts each file once and only what really changes. Then,
    /// when there is something to say, a `stored once:` line (the bytes
    /// content stored once saves) and the `space:` line of the space check.
    pub fn report(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut line = |sign: char, it: &PlannedItem| {
            if let (Some(path), Some(size)) = (&it.path, it.size) {
                lines.push(format!(
                    "{sign} {} {} {} {path} {} Mb",
                    it.product,
                    it.version,
                    it.item,
                    size / (1024 * 1024)
                ));
            }
        };
        for sp in &self.streams {
            sp.added.iter().for_each(|it| line('+', it));
        }
        for sp in &self.streams {
            sp.removed.iter().for_each(|it| line('-', it));
        }
        let change = self.new_bytes() as i64 - self.deletion_bytes as i64;
        lines.push(format!("{} Mb change", change / (1024 * 1024)));
        let (files, bytes) = self.stored_once();
        if files > 0 {
            lines.push(format!(
                "stored once: {files} file(s) linked to identical content, {} Mb not downloaded",
                bytes / (1024 * 1024)
            ));
        }
        if let Some(space) = &self.space {
            lines.push(space.line());
        }
        lines
    }
}

/// The pending deletions of earlier runs, each entry checked to name an
/// item path of the mirror (see [`check_pending`]): a bad entry is dropped
/// and a time in the future capped, each with a warning naming the
/// pending-deletes file and the entry.
async fn checked_pending(stream: &Stream, store: &dyn Store) -> Result<PendingDeletes> {
    let raw = store.load_pending_deletes().await?;
    if raw.is_empty() {
        return Ok(raw);
    }
    let mut metadata: BTreeSet<&str> = stream.index.iter().map(|d| d.rel.as_str()).collect();
    metadata.extend(stream.products.iter().map(|p| p.document.rel.as_str()));
    metadata.extend(stream.unchanged.iter().map(|u| u.rel.as_str()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let checked = check_pending(raw, &metadata, now);
    let file = crate::store::data_rel(crate::store::PENDING_DELETES)?;
    checked.warn(&store.display(&file));
    Ok(checked.kept)
}

/// Whether a run that changed this directory mirror was killed or failed
/// before it collected its leftovers (see [`crate::layout::UNCLEAN`]): a
/// stat or two, so a no-op run stays cheap. The marker's own temporary
/// file says the same: a power cut (or a failed directory fsync) can keep
/// its entry (made durable by its own fsync, on ext4) and lose the rename
/// that made it the marker.
async fn is_unclean(store: &dyn Store) -> bool {
    if store.local_root().is_none() {
        return false;
    }
    for name in [
        crate::layout::UNCLEAN.to_owned(),
        crate::layout::temp_name(crate::layout::UNCLEAN),
    ] {
        if let Ok(rel) = crate::store::data_rel(&name)
            && store.stamp(&rel).await.is_some()
        {
            return true;
        }
    }
    false
}

/// The states of the content ids that `references` names and `states`
/// (the plan's) does not, read from the store for
/// [`reconcile_referrers`]; `None` for one that cannot be read (its
/// referrers are kept).
async fn load_other_states(
    store: &dyn Store,
    references: &References,
    states: &BTreeMap<&str, &Products>,
) -> BTreeMap<String, Option<Products>> {
    let ids: BTreeSet<&str> = references
        .values()
        .flatten()
        .filter_map(|referrer| referrer.split_once('/').map(|(cid, _)| cid))
        .filter(|cid| !states.contains_key(cid))
        .collect();
    let mut loaded = BTreeMap::new();
    for cid in ids {
        loaded.insert(cid.to_owned(), store.load_state(cid).await.ok());
    }
    loaded
}

/// Refuses a stream that names a path the mirror reserves for itself (see
/// [`crate::layout`]): an item or products file under `.data/`, named like
/// a staging or temporary file, an item at a metadata path of the stream,
/// or a content id that is one of the mirror's own file names.
fn check_namespace(stream: &Stream) -> Result<()> {
    let refuse = |context: &str, path: &str, reason: String| Error::UnsafePath {
        context: context.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let mut metadata: BTreeSet<&RelPath> = stream.index.iter().map(|d| &d.rel).collect();
    metadata.extend(stream.products.iter().map(|p| &p.document.rel));
    metadata.extend(stream.unchanged.iter().map(|u| &u.rel));
    for rel in &metadata {
        crate::layout::check_stream_path(rel)
            .map_err(|r| refuse("metadata document", rel.as_str(), r.to_string()))?;
    }
    for doc in &stream.products {
        let url = &doc.document.url;
        if !crate::layout::is_state_name(&doc.content_id) {
            let why = "it is one of the mirror's own file names under .data/".to_owned();
            return Err(refuse(&format!("{url}: content_id"), &doc.content_id, why));
        }
        for entry in doc.products.items() {
            let Some(path) = &entry.item.path else {
                continue;
            };
            let context = format!(
                "{url}: {}/{}/{}",
                entry.product_name, entry.version_name, entry.item_name
            );
            crate::layout::check_stream_path(path)
                .map_err(|r| refuse(&context, path.as_str(), r.to_string()))?;
            if metadata.contains(path) {
                let why = "it is the path of a metadata document of the stream".to_owned();
                return Err(refuse(&context, path.as_str(), why));
            }
        }
    }
    Ok(())
}

/// The source's versions of `product` that have items passing the filters,
/// each holding only those items.
fn filtered_versions(
    doc: &Products,
    name: &str,
    product: &Product,
    filters: &FilterGroups,
) -> BTreeMap<String, Version> {
    let mut out = BTreeMap::new();
    for (vname, version) in &product.versions {
        if version.items.is_empty() {
            continue;
        }
        if filters.matches_everything() {
            // The version as it is, its items shared with the source.
            out.insert(vname.clone(), version.clone());
            continue;
        }
        let items: BTreeMap<String, Item> = version
            .items
            .iter()
            .filter(|(iname, _)| filters.matches(&flatten(doc, name, vname, iname)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if items.len() == version.items.len() {
            out.insert(vname.clone(), version.clone());
        } else if !items.is_empty() {
            out.insert(
                vname.clone(),
                Version {
                    fields: version.fields.clone(),
                    items: Arc::new(items),
                },
            );
        }
    }
    out
}

fn items_of<'a>(
    names: &'a mut Names,
    content_id: &'a str,
    product: &'a str,
    vname: &'a str,
    version: &'a Version,
) -> impl Iterator<Item = PlannedItem> + 'a {
    version.items.iter().map(move |(iname, item)| {
        PlannedItem::new(names, [content_id, product, vname, iname], item)
    })
}

fn plan_stream(source: ProductsDocument, target: Products, options: &MirrorOptions) -> StreamPlan {
    let cid = source.content_id.clone();
    // As the reference: the document-level fields (`updated`...) of the
    // state are those of the run that created it.
    let fields = if target.fields.is_empty() {
        source.products.fields.clone()
    } else {
        target.fields.clone()
    };
    let mut state = Products {
        fields,
        products: target.products.clone(),
    };
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let mut names = Names::default();
    let mut kept: Vec<(String, String, Version)> = Vec::new();
    let mut seen = BTreeSet::new();
    for (pname, product) in &source.products.products {
        let mut wanted = filtered_versions(&source.products, pname, product, &options.filters);
        if wanted.is_empty() {
            continue;
        }
        seen.insert(pname.clone());
        let empty = Product::default();
        let have = target.products.get(pname).unwrap_or(&empty);
        let src_names: Vec<&String> = wanted.keys().collect();
        let tgt_names: Vec<&String> = have.versions.keys().collect();
        let selection = select_versions(&src_names, &tgt_names, options.max, options.keep);
        let entry = state.products.entry(pname.clone()).or_default();
        entry.fields = product.fields.clone();
        for v in &selection.add {
            let Some(version) = wanted.remove(v.as_str()) else {
                continue;
            };
            added.extend(items_of(&mut names, &cid, pname, v, &version));
            entry.versions.insert(v.clone(), version);
        }
        for v in &selection.remove {
            if let Some(version) = have.versions.get(v) {
                removed.extend(items_of(&mut names, &cid, pname, v, version));
            }
            entry.versions.remove(v);
        }
        // What is left of `wanted`: the held versions kept.
        kept.extend(
            wanted
                .into_iter()
                .map(|(v, version)| (pname.clone(), v, version)),
        );
    }
    let respun = take_respins(&mut names, &cid, &mut state, &kept);
    if options.prune {
        for (pname, product) in &target.products {
            if seen.contains(pname) {
                continue;
            }
            for (v, version) in product.versions.iter().rev() {
                removed.extend(items_of(&mut names, &cid, pname, v, version));
            }
            state.products.remove(pname);
        }
    }
    // Grown by doubling: a first mirror of images.maas.io's size plans
    // 19,000 items.
    added.shrink_to_fit();
    removed.shrink_to_fit();
    StreamPlan {
        source,
        state,
        added,
        removed,
        respun,
    }
}

/// The re-spins among the held versions kept (`kept`: product, version and
/// the source's filtered version): each item the state holds under the
/// same name whose path, size or checksum upstream changed is replaced in
/// `state` by upstream's (see [`Respin`]). Items of other names are left
/// as they are (as for any held version).
fn take_respins(
    names: &mut Names,
    content_id: &str,
    state: &mut Products,
    kept: &[(String, String, Version)],
) -> Vec<Respin> {
    let mut respun = Vec::new();
    for (pname, vname, source) in kept {
        let Some(held) = state
            .products
            .get_mut(pname)
            .and_then(|p| p.versions.get_mut(vname))
        else {
            continue;
        };
        for (iname, new) in source.items.iter() {
            let Some(old) = held.items.get(iname) else {
                continue;
            };
            if (&old.path, old.size, &old.checksum) == (&new.path, new.size, &new.checksum) {
                continue;
            }
            log::warn!(
                "{pname} {vname} {iname}: changed upstream under the same version; fetching it again"
            );
            let at = [content_id, pname.as_str(), vname.as_str(), iname.as_str()];
            respun.push(Respin {
                old: PlannedItem::new(names, at, old),
                new: PlannedItem::new(names, at, new),
            });
            Arc::make_mut(&mut held.items).insert(iname.clone(), new.clone());
        }
    }
    respun
}

/// Updates the references for one content id: items of removed versions
/// lose theirs (their paths become deletion candidates); items of added
/// versions that name a file gain one when items are downloaded. Lists are
/// kept free of duplicates (the reference leaves duplicates after an
/// interrupted run, and then never deletes the file).
fn update_references(
    refs: &mut References,
    sp: &StreamPlan,
    item_download: bool,
    candidates: &mut BTreeSet<RelPath>,
) {
    for it in &sp.removed {
        let Some(p) = &it.path else { continue };
        candidates.insert(p.clone());
        if let Some(list) = refs.get_mut(p.as_str()) {
            list.retain(|r| *r != it.reference());
        }
    }
    for respin in &sp.respun {
        if respin.old.path != respin.new.path
            && let Some(p) = &respin.old.path
        {
            candidates.insert(p.clone());
            if let Some(list) = refs.get_mut(p.as_str()) {
                list.retain(|r| *r != respin.old.reference());
            }
        }
    }
    if item_download {
        for it in sp.added.iter().chain(sp.respun.iter().map(|r| &r.new)) {
            let Some(p) = &it.path else { continue };
            let list = refs.entry(p.to_string()).or_default();
            let r = it.reference();
            if !list.contains(&r) {
                list.push(r);
            }
        }
    }
    refs.retain(|_, v| !v.is_empty());
}

/// Which items of the mirror's states are in the store with their size,
/// asked of the store at once.
#[derive(Debug, Default)]
struct Presence {
    present: BTreeSet<(RelPath, Option<u64>)>,
}

impl Presence {
    async fn of(streams: &[StreamPlan], store: &dyn Store) -> Presence {
        let asked: BTreeSet<(RelPath, Option<u64>)> = streams
            .iter()
            .flat_map(|sp| sp.state.items())
            .filter_map(|e| Some((e.item.path.clone()?, e.item.size)))
            .collect();
        Presence {
            present: present_files(store, asked).await,
        }
    }

    fn has(&self, path: &RelPath, size: Option<u64>) -> bool {
        self.present.contains(&(path.clone(), size))
    }
}

/// Those of `files` (path, size) that the store has with that size.
async fn present_files(
    store: &dyn Store,
    files: BTreeSet<(RelPath, Option<u64>)>,
) -> BTreeSet<(RelPath, Option<u64>)> {
    let files: Vec<(RelPath, Option<u64>)> = files.into_iter().collect();
    let have = store.have_files(&files).await;
    files
        .into_iter()
        .zip(have)
        .filter_map(|(file, there)| there.then_some(file))
        .collect()
}

/// Items of versions the mirror keeps whose file is missing or of the
/// wrong size (deleted, truncated: to fetch again when the mirror had them).
fn missing_kept_items(streams: &[StreamPlan], present: &Presence) -> BTreeSet<RelPath> {
    let mut out = BTreeSet::new();
    for sp in streams {
        let added: BTreeSet<&RelPath> = (sp.added.iter())
            .chain(sp.respun.iter().map(|r| &r.new))
            .filter_map(|it| it.path.as_ref())
            .collect();
        for entry in sp.state.items() {
            let Some(path) = &entry.item.path else {
                continue;
            };
            if !added.contains(path) && !present.has(path, entry.item.size) {
                out.insert(path.clone());
            }
        }
    }
    out
}

/// The files to fetch: items of added versions not yet in the mirror,
/// `repairs` (kept items gone missing), and with `verify_existing` every
/// item already there (checked, fetched again only when wrong). Each path
/// once, largest first.
fn plan_downloads(
    streams: &[StreamPlan],
    repairs: &BTreeSet<RelPath>,
    present: &Presence,
    options: &MirrorOptions,
) -> Vec<Download> {
    let disputed = disputed_paths(streams);
    let mut by_path: BTreeMap<RelPath, Download> = BTreeMap::new();
    for sp in streams {
        let added: BTreeSet<&RelPath> = sp.added.iter().filter_map(|it| it.path.as_ref()).collect();
        let respun: BTreeSet<&RelPath> = sp
            .respun
            .iter()
            .filter_map(|r| r.new.path.as_ref())
            .collect();
        for entry in sp.state.items() {
            let item = entry.item;
            let Some(path) = &item.path else { continue };
            let present = present.has(path, item.size);
            let wanted = if respun.contains(path) {
                true
            } else if added.contains(path) {
                !present || options.verify_existing || disputed.contains(path)
            } else if present {
                options.verify_existing
            } else {
                repairs.contains(path)
            };
            if !wanted {
                continue;
            }
            by_path
                .entry(path.clone())
                .or_insert_with(|| Download {
                    path: path.clone(),
                    expected: Expected {
                        size: item.size,
                        checksum: item.checksum.clone(),
                    },
                    content_ids: BTreeSet::new(),
                    verify_only: present,
                    origin: Origin::Fetch,
                })
                .content_ids
                .insert(sp.content_id().to_owned());
        }
    }
    let mut downloads: Vec<Download> = by_path.into_values().collect();
    downloads.sort_by(|a, b| {
        b.expected
            .size
            .cmp(&a.expected.size)
            .then_with(|| a.path.cmp(&b.path))
    });
    downloads
}

/// Content already in the mirror, by key: the files items of the states
/// (after and before the run) and of `others` name, present with their
/// size, and neither fetched nor checked by this run nor described with
/// different checksums.
async fn stored_content(
    streams: &[StreamPlan],
    others: &[Products],
    downloads: &[Download],
    store: &dyn Store,
) -> BTreeMap<ContentKey, RelPath> {
    let busy: BTreeSet<&RelPath> = downloads.iter().map(|d| &d.path).collect();
    let disputed = disputed_paths(streams);
    let mut items: Vec<(&RelPath, Option<u64>, Option<&Checksum>)> = Vec::new();
    for sp in streams {
        for e in sp.state.items() {
            if let Some(p) = &e.item.path {
                items.push((p, e.item.size, e.item.checksum.as_ref()));
            }
        }
        for it in &sp.removed {
            if let Some(p) = &it.path {
                items.push((p, it.size, it.checksum.as_ref()));
            }
        }
    }
    for tree in others {
        for e in tree.items() {
            if let Some(p) = &e.item.path {
                items.push((p, e.item.size, e.item.checksum.as_ref()));
            }
        }
    }
    let sources: Vec<(ContentKey, &RelPath, Option<u64>)> = items
        .into_iter()
        .filter(|(path, _, _)| !busy.contains(path) && !disputed.contains(path))
        .filter_map(|(path, size, checksum)| Some((ContentKey::of(size, checksum)?, path, size)))
        .collect();
    let asked = sources
        .iter()
        .map(|(_, path, size)| ((*path).clone(), *size))
        .collect();
    let present = present_files(store, asked).await;
    let mut out = BTreeMap::new();
    for (key, path, size) in sources {
        if !out.contains_key(&key) && present.contains(&(path.clone(), size)) {
            out.insert(key, path.clone());
        }
    }
    out
}

/// Paths that items of the mirror's states describe with different
/// checksums. Paths are meant to be immutable; when a stream breaks that,
/// an existing file of the right size is not trusted but verified.
fn disputed_paths(streams: &[StreamPlan]) -> BTreeSet<RelPath> {
    let mut seen: BTreeMap<&RelPath, &Checksum> = BTreeMap::new();
    let mut disputed = BTreeSet::new();
    for sp in streams {
        for product in sp.state.products.values() {
            for version in product.versions.values() {
                for item in version.items.values() {
                    let (Some(path), Some(sum)) = (&item.path, &item.checksum) else {
                        continue;
                    };
                    if *seen.entry(path).or_insert(sum) != sum {
                        disputed.insert(path.clone());
                    }
                }
            }
        }
    }
    disputed
}

/// Refuses a plan that deletes more than `max_share` of the mirror's
/// referenced bytes (the wipe guard for `--prune`).
pub async fn check_wipe_guard(plan: &Plan, store: &dyn Store, max_share: f64) -> Result<()> {
    let before = store.load_references().await?;
    let referenced: Vec<RelPath> = before
        .keys()
        .filter_map(|p| RelPath::parse(p).ok())
        .collect();
    let total: u64 = store
        .stamps(&referenced)
        .await
        .into_iter()
        .flatten()
        .map(|s| s.len)
        .sum();
    if total > 0 && plan.deletion_bytes as f64 > total as f64 * max_share {
        return Err(Error::WipeGuard {
            deleting: plan.deletion_bytes,
            total,
            max_share,
        });
    }
    Ok(())
}

/// Refuses a plan that leaves every state of the mirror without items
/// while the mirror held some (an upstream that lists nothing the filters
/// select would otherwise empty the mirror and exit 0). Only meaningful when
/// every products file was read (none unchanged).
pub fn check_not_emptied(plan: &Plan, store: &dyn Store) -> Result<()> {
    let emptied = !plan.streams.is_empty()
        && plan
            .streams
            .iter()
            .all(|sp| sp.state.items().next().is_none());
    let items: usize = plan.streams.iter().map(|sp| sp.removed.len()).sum();
    if emptied && items > 0 {
        return Err(Error::WouldEmpty {
            location: store.location(),
            items,
        });
    }
    Ok(())
}

/// The plan of each products file of `stream` against an empty mirror:
/// what a query lists.
pub fn plan_fresh(stream: Stream, options: &MirrorOptions) -> Vec<StreamPlan> {
    stream
        .products
        .into_iter()
        .map(|source| plan_stream(source, Products::default(), options))
        .collect()
}

/// A stream of the one products document `doc`, as the file
/// `streams/v1/c.json` (for tests).
#[cfg(test)]
pub(crate) fn stream_from_json(doc: &serde_json::Value) -> Stream {
    use crate::metadata::{Document, parse_products};
    let raw = serde_json::to_vec(doc).expect("a test document");
    let document = Document {
        rel: RelPath::parse("streams/v1/c.json").expect("a test path"),
        url: "u".into(),
        raw: raw.clone(),
        json: raw,
        validators: crate::source::Validators::default(),
        revalidated: false,
    };
    Stream {
        index: None,
        products: vec![parse_products(document, None).expect("a test document")],
        unchanged: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DirStore;

    /// A products file with one product per (name, versions) and, per
    /// version, a kernel of its own and a squashfs shared by all products.
    fn stream(products: &[(&str, &[&str])]) -> Stream {
        stream_with(products, |_| {})
    }

    /// Like [`stream`], with the JSON document changed by `tweak` first.
    fn stream_with(products: &[(&str, &[&str])], tweak: impl Fn(&mut serde_json::Value)) -> Stream {
        let mut ps = serde_json::Map::new();
        for (name, versions) in products {
            let mut vs = serde_json::Map::new();
            for v in *versions {
                vs.insert(
                    v.to_string(),
                    serde_json::json!({"items": {
                        "kernel": {"path": format!("{name}/{v}/kernel"), "size": 2 * 1024 * 1024, "ftype": "boot-kernel", "sha256": sum_of(&format!("{name}/{v}/kernel"))},
                        "squashfs": {"path": format!("shared/{v}/squashfs"), "size": 3 * 1024 * 1024, "ftype": "squashfs", "sha256": sum_of(&format!("shared/{v}/squashfs"))}
                    }}),
                );
            }
            ps.insert(
                name.to_string(),
                serde_json::json!({"arch": "amd64", "versions": vs}),
            );
        }
        let mut doc =
            serde_json::json!({"format": "products:1.0", "content_id": "c:1", "products": ps});
        tweak(&mut doc);
        stream_from_json(&doc)
    }

    /// A checksum of its own for each path (the files' content differs).
    fn sum_of(path: &str) -> String {
        crate::hash::sha256_hex(path.as_bytes())
    }

    fn options(max: Option<usize>) -> MirrorOptions {
        MirrorOptions {
            max,
            item_download: true,
            ..MirrorOptions::default()
        }
    }

    /// Plans `stream` against `store` and pretends it was executed.
    async fn mirrored(stream: Stream, store: &DirStore, options: &MirrorOptions) {
        let plan = Plan::build(stream, store, options).await.unwrap();
        apply(&plan, store).await;
    }

    /// Pretends a plan was executed: files written, state and references saved.
    async fn apply(plan: &Plan, store: &DirStore) {
        for d in &plan.downloads {
            let bytes = vec![0u8; d.expected.size.unwrap() as usize];
            store.write_atomic(&d.path, &bytes).await.unwrap();
        }
        for sp in &plan.streams {
            store.save_state(sp.content_id(), &sp.state).await.unwrap();
        }
        if let Some(refs) = &plan.references {
            store.save_references(refs).await.unwrap();
        }
        for p in &plan.deletions {
            store.remove(p).await.unwrap();
        }
    }

    #[tokio::test]
    async fn shared_paths_are_fetched_and_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        let plan = Plan::build(
            stream(&[("ga", &["1"]), ("hwe", &["1"])]),
            &store,
            &options(None),
        )
        .await
        .unwrap();
        let paths: Vec<&str> = plan.downloads.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            ["shared/1/squashfs", "ga/1/kernel", "hwe/1/kernel"],
            "largest first, shared once"
        );
        let report = plan.report();
        assert_eq!(report.len(), 5, "{report:?}");
        assert_eq!(report[0], "+ ga 1 kernel ga/1/kernel 2 Mb");
        assert_eq!(
            report[4], "7 Mb change",
            "3 + 2 + 2, the shared squashfs once"
        );
        assert_eq!(
            plan.references.as_ref().unwrap()["shared/1/squashfs"].len(),
            2
        );
    }

    #[tokio::test]
    async fn removals_delete_only_unreferenced_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        mirrored(
            stream(&[("ga", &["1"]), ("hwe", &["1"])]),
            &store,
            &options(Some(1)),
        )
        .await;
        // Version 2 replaces 1 for ga only; hwe keeps version 1 (and the shared file).
        let plan = Plan::build(
            stream(&[("ga", &["1", "2"]), ("hwe", &["1"])]),
            &store,
            &options(Some(1)),
        )
        .await
        .unwrap();
        let removed: Vec<String> = plan.streams[0]
            .removed
            .iter()
            .map(|i| i.reference())
            .collect();
        assert_eq!(removed, ["c:1/ga/1/kernel", "c:1/ga/1/squashfs"]);
        let deletions: Vec<&str> = plan.deletions.iter().map(RelPath::as_str).collect();
        assert_eq!(
            deletions,
            ["ga/1/kernel"],
            "shared/1/squashfs is still hwe's"
        );
        assert_eq!(
            plan.references.as_ref().unwrap()["shared/1/squashfs"],
            ["c:1/hwe/1/squashfs"]
        );
        apply(&plan, &store).await;
        assert!(
            !dir.path().join("ga/1").exists(),
            "emptied directories go too"
        );
        // Nothing to do the next time.
        let again = Plan::build(
            stream(&[("ga", &["1", "2"]), ("hwe", &["1"])]),
            &store,
            &options(Some(1)),
        )
        .await
        .unwrap();
        assert!(again.downloads.is_empty() && again.deletions.is_empty());
        assert_eq!(again.report(), ["0 Mb change"]);
    }

    #[tokio::test]
    async fn products_gone_from_the_source_stay_unless_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        mirrored(
            stream(&[("ga", &["1"]), ("old", &["1"])]),
            &store,
            &options(None),
        )
        .await;
        let kept = Plan::build(stream(&[("ga", &["1"])]), &store, &options(None))
            .await
            .unwrap();
        assert!(kept.deletions.is_empty());
        assert!(kept.streams[0].state.products.contains_key("old"));
        let pruning = MirrorOptions {
            prune: true,
            ..options(None)
        };
        let pruned = Plan::build(stream(&[("ga", &["1"])]), &store, &pruning)
            .await
            .unwrap();
        let deletions: Vec<&str> = pruned.deletions.iter().map(RelPath::as_str).collect();
        assert_eq!(deletions, ["old/1/kernel"]);
        assert!(!pruned.streams[0].state.products.contains_key("old"));
        assert!(check_wipe_guard(&pruned, &store, 0.5).await.is_ok());
        assert!(
            check_wipe_guard(&pruned, &store, 0.01)
                .await
                .unwrap_err()
                .to_string()
                .contains("--force")
        );
    }

    #[tokio::test]
    async fn a_path_whose_checksum_changed_is_verified_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        mirrored(stream(&[("ga", &["1"])]), &store, &options(None)).await;
        // Version 2 reuses version 1's squashfs path with another checksum.
        let second = stream_with(&[("ga", &["1", "2"])], |doc| {
            let squashfs = &mut doc["products"]["ga"]["versions"]["2"]["items"]["squashfs"];
            squashfs["path"] = "shared/1/squashfs".into();
            squashfs["sha256"] = "b".repeat(64).into();
        });
        let plan = Plan::build(second, &store, &options(None)).await.unwrap();
        let d: Vec<(&str, bool)> = plan
            .downloads
            .iter()
            .map(|d| (d.path.as_str(), d.verify_only))
            .collect();
        assert_eq!(d, [("shared/1/squashfs", true), ("ga/2/kernel", false)]);
    }

    #[tokio::test]
    async fn a_held_item_changed_upstream_is_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        mirrored(stream(&[("ga", &["1"])]), &store, &options(None)).await;
        // The same version re-spun: the kernel has other bytes.
        let respun = stream_with(&[("ga", &["1"])], |doc| {
            doc["products"]["ga"]["versions"]["1"]["items"]["kernel"]["sha256"] =
                "c".repeat(64).into();
        });
        let plan = Plan::build(respun, &store, &options(None)).await.unwrap();
        let sp = &plan.streams[0];
        assert!(sp.added.is_empty() && sp.removed.is_empty());
        let respins: Vec<&str> = sp.respun.iter().map(|r| &*r.new.item).collect();
        assert_eq!(respins, ["kernel"]);
        let d: Vec<(&str, bool)> = plan
            .downloads
            .iter()
            .map(|d| (d.path.as_str(), d.verify_only))
            .collect();
        assert_eq!(
            d,
            [("ga/1/kernel", true)],
            "checked against the new checksum"
        );
        let expected = plan.downloads[0].expected.checksum.as_ref().unwrap();
        assert_eq!(expected.hex(), "c".repeat(64));
        let held = sp.state.items().find(|e| e.item_name == "kernel").unwrap();
        assert_eq!(held.item.checksum.as_ref().unwrap().hex(), "c".repeat(64));
        assert!(
            plan.deletions.is_empty(),
            "the same path stays referenced: {:?}",
            plan.deletions
        );
    }

    #[tokio::test]
    async fn a_file_in_the_way_of_a_new_directory_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        mirrored(stream(&[("ga", &["1"])]), &store, &options(Some(1))).await;
        // Version 2's kernel lives under what was version 1's kernel file.
        let second = stream_with(&[("ga", &["1", "2"])], |doc| {
            doc["products"]["ga"]["versions"]["2"]["items"]["kernel"]["path"] =
                "ga/1/kernel/2".into();
        });
        let plan = Plan::build(second, &store, &options(Some(1)))
            .await
            .unwrap();
        let in_the_way: Vec<&str> = plan.in_the_way.iter().map(|p| p.as_str()).collect();
        assert_eq!(in_the_way, ["ga/1/kernel"]);
        assert!(!plan.deletions.iter().any(|p| p.as_str() == "ga/1/kernel"));
    }

    #[tokio::test]
    async fn existing_files_are_trusted_by_size_or_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        let first = Plan::build(stream(&[("ga", &["1"])]), &store, &options(None))
            .await
            .unwrap();
        // Files are there (say, from a run killed before it saved its state).
        for d in &first.downloads {
            let bytes = vec![0u8; d.expected.size.unwrap() as usize];
            store.write_atomic(&d.path, &bytes).await.unwrap();
        }
        let trusted = Plan::build(stream(&[("ga", &["1"])]), &store, &options(None))
            .await
            .unwrap();
        assert!(trusted.downloads.is_empty());
        let careful = MirrorOptions {
            verify_existing: true,
            ..options(None)
        };
        let checked = Plan::build(stream(&[("ga", &["1"])]), &store, &careful)
            .await
            .unwrap();
        assert!(checked.downloads.iter().all(|d| d.verify_only) && checked.downloads.len() == 2);
        assert_eq!(checked.download_bytes(), 0);
        let no_items = MirrorOptions {
            item_download: false,
            ..options(None)
        };
        assert!(
            Plan::build(stream(&[("ga", &["2"])]), &store, &no_items)
                .await
                .unwrap()
                .downloads
                .is_empty()
        );
    }

    /// Gives the `hwe` kernels of `stream` the content of the `ga` ones.
    fn same_kernels(doc: &mut serde_json::Value) {
        let products = doc["products"].as_object_mut().unwrap();
        let versions: Vec<String> = products["ga"]["versions"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        for v in versions {
            let sum = products["ga"]["versions"][&v]["items"]["kernel"]["sha256"].clone();
            if let Some(kernel) = products
                .get_mut("hwe")
                .and_then(|hwe| hwe["versions"].get_mut(&v))
            {
                kernel["items"]["kernel"]["sha256"] = sum;
            }
        }
    }

    fn origins(plan: &Plan) -> Vec<(&str, Origin)> {
        plan.downloads
            .iter()
            .map(|d| (d.path.as_str(), d.origin.clone()))
            .collect()
    }

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[tokio::test]
    async fn identical_content_is_fetched_once_and_linked() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        let both = || stream_with(&[("ga", &["1"]), ("hwe", &["1"])], same_kernels);
        let plan = Plan::build(both(), &store, &options(None)).await.unwrap();
        assert_eq!(
            origins(&plan),
            [
                ("shared/1/squashfs", Origin::Fetch),
                ("ga/1/kernel", Origin::Fetch),
                ("hwe/1/kernel", Origin::Twin(rel("ga/1/kernel"))),
            ]
        );
        assert_eq!(plan.download_bytes(), 5 << 20, "the kernel once");
        assert_eq!(plan.new_bytes(), 7 << 20, "two paths nonetheless");
        assert_eq!(plan.stored_once(), (1, 2 << 20));
        let report = plan.report();
        assert_eq!(report[4], "7 Mb change", "the reference's total: paths");
        assert_eq!(
            report[5],
            "stored once: 1 file(s) linked to identical content, 2 Mb not downloaded"
        );
        assert_eq!(
            plan.references.as_ref().unwrap()["hwe/1/kernel"],
            ["c:1/hwe/1/kernel"],
            "references are per path, as ever"
        );
    }

    #[tokio::test]
    async fn content_already_in_the_mirror_is_linked_not_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        mirrored(stream(&[("ga", &["1"])]), &store, &options(None)).await;
        // hwe appears later with ga's kernel; version 2 of ga keeps version
        // 1's kernel while --max=1 removes version 1.
        let later = stream_with(&[("ga", &["1", "2"]), ("hwe", &["1"])], |doc| {
            same_kernels(doc);
            let v1 = doc["products"]["ga"]["versions"]["1"]["items"]["kernel"]["sha256"].clone();
            doc["products"]["ga"]["versions"]["2"]["items"]["kernel"]["sha256"] = v1;
        });
        let plan = Plan::build(later, &store, &options(Some(1))).await.unwrap();
        let want = Origin::Stored(rel("ga/1/kernel"));
        let got: Vec<(&str, Origin)> = origins(&plan)
            .into_iter()
            .filter(|(p, _)| p.ends_with("kernel"))
            .collect();
        assert_eq!(got, [("ga/2/kernel", want.clone()), ("hwe/1/kernel", want)]);
        assert!(
            plan.deletions.contains(&rel("ga/1/kernel")),
            "linking from a file that goes keeps its bytes, not the file"
        );
    }

    #[tokio::test]
    async fn a_content_index_entry_is_linked_and_space_counts_only_transfers() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path().join("mirror"));
        let index = ContentIndex::new(dir.path().join("index"));
        let sum = sum_of("ga/1/kernel");
        let key = ContentKey::of(Some(2 << 20), Some(&Checksum::Sha256(sum))).unwrap();
        let elsewhere = dir.path().join("other-mirror-kernel");
        std::fs::write(&elsewhere, vec![0u8; 2 << 20]).unwrap();
        assert!(index.add(&key, &elsewhere, true).unwrap());
        let mut plan = Plan::build(stream(&[("ga", &["1"])]), &store, &options(None))
            .await
            .unwrap();
        plan.use_content_index(&index);
        assert_eq!(
            origins(&plan),
            [
                ("shared/1/squashfs", Origin::Fetch),
                ("ga/1/kernel", Origin::Indexed(index.find(&key).unwrap())),
            ]
        );
        // A squashfs half downloaded by an interrupted run.
        std::fs::create_dir_all(dir.path().join("mirror/shared/1")).unwrap();
        std::fs::write(
            dir.path().join("mirror/shared/1/squashfs.part"),
            vec![0u8; 1 << 20],
        )
        .unwrap();
        let space = plan.check_space(&store, Some(0)).await.unwrap().clone();
        assert_eq!((space.need, space.staged), (2 << 20, 1 << 20));
        assert!(space.fits());
        let huge = plan.check_space(&store, Some(u64::MAX / 2)).await.unwrap();
        assert!(!huge.fits());
        assert!(plan.report().last().unwrap().ends_with("NOT ENOUGH"));
    }

    #[tokio::test]
    async fn md5_alone_does_not_make_content_identical() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        let md5_only = stream_with(&[("ga", &["1"]), ("hwe", &["1"])], |doc| {
            for p in ["ga", "hwe"] {
                let kernel = &mut doc["products"][p]["versions"]["1"]["items"]["kernel"];
                kernel.as_object_mut().unwrap().remove("sha256");
                kernel["md5"] = "0".repeat(32).into();
            }
        });
        let plan = Plan::build(md5_only, &store, &options(None)).await.unwrap();
        assert!(plan.downloads.iter().all(|d| d.origin == Origin::Fetch));
    }
}
