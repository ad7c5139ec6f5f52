//! Carrying out a plan, in four phases:
//!
//! 1. [`download`]: items are fetched in parallel into the store's staging,
//!    verified, and committed under their path (existing files that must be
//!    checked are re-hashed first). Content already stored is linked instead
//!    ([`crate::content`]): first everything fetched or linked from the
//!    mirror or the content index, then the items sharing the content of
//!    one fetched in this run. A link that fails falls back to a download.
//!    After the first full disk no new download starts.
//! 2. [`publish`]: the pending deletions are recorded (each with when it was
//!    scheduled), then the references, the state of each content id, each
//!    products file, and the index last. A content id whose items did not
//!    all arrive is not published; the index is published only when
//!    everything succeeded.
//! 3. [`delete`]: files of removed versions, once nothing references them
//!    and the delete delay since they were scheduled has passed; the others
//!    stay pending for a later run.
//! 4. [`enter_content`]: with a content index, every item of the states is
//!    entered, and entries no mirror holds any more are collected.

use crate::content::ContentIndex;
use crate::error::{Error, Result};
use crate::plan::{Download, Origin, Plan};
use crate::resign::{Publication, Withdrawal, publish_index, publish_products};
use crate::source::{ProgressFn, Source};
use crate::store::{Linked, PendingDeletes, References, Store};
use futures_util::StreamExt;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How to execute.
#[derive(Debug, Clone, Default)]
pub struct ExecuteOptions {
    /// Concurrent downloads.
    pub jobs: usize,
    /// How long files of removed versions stay after the metadata that
    /// named them is replaced (zero: deleted in the same run).
    pub delete_delay: Duration,
    /// The content index shared with other mirrors, if any.
    pub content_index: Option<ContentIndex>,
    /// Re-hash content linked from the content index before trusting it
    /// (as `--verify-existing` re-hashes the mirror's files).
    pub verify_links: bool,
    /// What is published: upstream's documents, or re-signed holdings.
    pub publication: Publication,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Files fetched.
    pub files: usize,
    /// Bytes transferred.
    pub bytes: u64,
    /// Files stored by linking content already there (not downloaded).
    pub linked: usize,
    /// Their bytes: what content stored once saved.
    pub linked_bytes: u64,
    /// Content ids whose new metadata was published.
    pub published: Vec<String>,
    /// Files deleted.
    pub deleted: usize,
    /// Files of removed versions kept for the delete delay (still pending).
    pub waiting: usize,
}

/// Executes `plan` from `source` into `store`. Every failure is reported:
/// item failures and a failure to publish come back together in
/// [`Error::ItemsFailed`].
pub async fn execute(
    mut plan: Plan,
    source: &Source,
    store: &dyn Store,
    options: &ExecuteOptions,
    progress: ProgressFn,
) -> Result<Report> {
    let mut report = Report::default();
    clear_the_way(&plan, store, &mut report)?;
    let (mut failures, failed_ids, verified) =
        download(&plan, source, store, options, &progress, &mut report).await;
    let references = release_for_publish(&mut plan);
    let published = publish(
        &plan,
        references,
        store,
        &options.publication,
        &failed_ids,
        &mut report,
    )
    .and_then(|references| match (references, failed_ids.is_empty()) {
        (Some(refs), true) => delete(&plan, store, &refs, options.delete_delay, &mut report),
        _ => Ok(()),
    });
    if let Some(index) = &options.content_index {
        enter_content(&plan, store, index, &verified);
    }
    if let Err(e) = published {
        if failures.is_empty() {
            return Err(e);
        }
        failures.push(e);
    }
    if failures.is_empty() {
        Ok(report)
    } else {
        Err(Error::ItemsFailed { failures })
    }
}

/// Before phase 1: removes the files in the way of downloads (see
/// [`Plan::clear_the_way`]), and drops them from the pending deletions
/// (their path may hold a directory by the time those are carried out).
fn clear_the_way(plan: &Plan, store: &dyn Store, report: &mut Report) -> Result<()> {
    if plan.in_the_way.is_empty() {
        return Ok(());
    }
    for p in &plan.in_the_way {
        log::warn!(
            "{}: removed early: a new item needs its place (a file where a directory goes, or the reverse)",
            store.display(p)
        );
        store.remove(p)?;
        report.deleted += 1;
    }
    let mut pending = store.load_pending_deletes()?;
    let before = pending.len();
    pending.retain(|p, _| !plan.in_the_way.iter().any(|w| w.as_str() == p));
    if pending.len() != before {
        store.save_pending_deletes(&pending)?;
    }
    Ok(())
}

/// How a download's file came to be in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Obtained {
    /// Transferred: this many bytes.
    Fetched(u64),
    /// Linked (or copied) from content already stored.
    Linked,
    /// Already there and verified.
    Checked,
}

/// Phase 1: obtains every download of the plan, `jobs` at a time: first
/// those fetched or linked from content stored before the run, then the
/// twins of those fetched. Gives the failures, the content ids they
/// leave incomplete, and the paths whose bytes this run verified (fetched,
/// checked, or linked from verified content).
async fn download(
    plan: &Plan,
    source: &Source,
    store: &dyn Store,
    options: &ExecuteOptions,
    progress: &ProgressFn,
    report: &mut Report,
) -> (Vec<Error>, BTreeSet<String>, BTreeSet<String>) {
    let fetcher = Fetcher {
        source,
        store,
        options,
        progress,
        disk_full: AtomicBool::new(false),
    };
    let is_twin = |d: &&Download| matches!(d.origin, Origin::Twin(_));
    let first: Vec<&Download> = plan.downloads.iter().filter(|d| !is_twin(d)).collect();
    let mut results = fetcher.round(first, &BTreeSet::new()).await;
    let done: BTreeSet<String> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(d, _)| d.path.to_string())
        .collect();
    let twins: Vec<&Download> = plan.downloads.iter().filter(is_twin).collect();
    results.extend(fetcher.round(twins, &done).await);
    let disk_full = fetcher.disk_full;
    let mut failures = Vec::new();
    let mut failed_ids = BTreeSet::new();
    let mut not_started = 0;
    let mut verified = BTreeSet::new();
    for (d, r) in results {
        let checked = match &r {
            Ok(Obtained::Fetched(_) | Obtained::Checked) => true,
            Ok(Obtained::Linked) => matches!(d.origin, Origin::Indexed(_) | Origin::Twin(_)),
            Err(_) => false,
        };
        if checked {
            verified.insert(d.path.to_string());
        }
        match r {
            Ok(Obtained::Fetched(n)) if n > 0 => {
                report.files += 1;
                report.bytes += n;
            }
            Ok(Obtained::Linked) => {
                report.linked += 1;
                report.linked_bytes += d.expected.size.unwrap_or(0);
            }
            Ok(_) => {}
            Err(Error::Refused(_)) if disk_full.load(Ordering::SeqCst) => {
                failed_ids.extend(d.content_ids.iter().cloned());
                not_started += 1;
            }
            Err(e) => {
                failed_ids.extend(d.content_ids.iter().cloned());
                failures.push(e);
            }
        }
    }
    if disk_full.load(Ordering::SeqCst) {
        let stopped: Vec<&Download> = plan
            .downloads
            .iter()
            .filter(|d| failed_ids.iter().any(|c| d.content_ids.contains(c)))
            .collect();
        failures.push(Error::Refused(format!(
            "the disk filled up ({}): {not_started} download(s) not started; {}; \
             free some space and run again",
            store.location(),
            triage_parts(store, &stopped)
        )));
    }
    (failures, failed_ids, verified)
}

/// What the downloads of a run share.
struct Fetcher<'a> {
    source: &'a Source,
    store: &'a dyn Store,
    options: &'a ExecuteOptions,
    progress: &'a ProgressFn,
    /// Set by the first download that meets a full disk: no new download
    /// starts after it.
    disk_full: AtomicBool,
}

impl Fetcher<'_> {
    /// Obtains `downloads`, `jobs` at a time; `done` are the paths already
    /// in place (the first copies of twins).
    async fn round<'d>(
        &self,
        downloads: Vec<&'d Download>,
        done: &BTreeSet<String>,
    ) -> Vec<(&'d Download, Result<Obtained>)> {
        futures_util::stream::iter(downloads)
            .map(|d| async move {
                let links = match &d.origin {
                    Origin::Fetch => false,
                    Origin::Twin(first) => done.contains(first.as_str()),
                    Origin::Stored(_) | Origin::Indexed(_) => true,
                };
                if !links && self.disk_full.load(Ordering::SeqCst) {
                    let e = Error::Refused(format!(
                        "{}: not started: the disk is full",
                        self.store.display(&d.path)
                    ));
                    return (d, Err(e));
                }
                let r = obtain(d, done, self).await;
                if r.as_ref().is_err_and(Error::is_disk_full) {
                    self.disk_full.store(true, Ordering::SeqCst);
                }
                (d, r)
            })
            .buffer_unordered(self.options.jobs.max(1))
            .collect()
            .await
    }
}

/// Puts one download in place: linked from the content it shares when it
/// can be (a twin only once its first copy is in `done`), else fetched.
async fn obtain(d: &Download, done: &BTreeSet<String>, fetcher: &Fetcher<'_>) -> Result<Obtained> {
    let Fetcher {
        source,
        store,
        options,
        progress,
        ..
    } = fetcher;
    let store = *store;
    if let Origin::Indexed(entry) = &d.origin
        && let Err(e) = check_index_entry(d, entry, options).await
    {
        log::warn!("{e}; not linked, fetching {} instead", d.path);
        return fetch_one(d, source, store, progress).await;
    }
    let linked = match &d.origin {
        Origin::Fetch => Linked::Unsupported,
        Origin::Twin(first) if !done.contains(first.as_str()) => Linked::Unsupported,
        Origin::Twin(from) | Origin::Stored(from) => try_link(d, store, |s| s.link(from, &d.path)),
        Origin::Indexed(entry) => try_link(d, store, |s| s.import(entry, &d.path)),
    };
    if linked != Linked::Unsupported {
        log::info!("linked {} to identical content ({linked:?})", d.path);
        return Ok(Obtained::Linked);
    }
    fetch_one(d, source, store, progress).await
}

/// Before a content-index entry is linked: its record proves it unchanged
/// since it was verified (see [`crate::content`]), or it is hashed now
/// (always with `--verify-existing`) and recorded. An error says why it
/// must not be linked.
async fn check_index_entry(
    d: &Download,
    entry: &std::path::Path,
    options: &ExecuteOptions,
) -> Result<()> {
    let Some(index) = &options.content_index else {
        return Ok(());
    };
    if !options.verify_links && index.is_fresh(entry) {
        return Ok(());
    }
    let what = format!("content index entry {}", entry.display());
    let (expected, path) = (d.expected.clone(), entry.to_path_buf());
    let checked = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        expected.check_reader(&what, &mut file)
    })
    .await
    .map_err(|e| Error::transfer(d.path.as_str(), e.to_string()))?;
    if checked.is_ok() {
        index.vouch(entry);
    }
    checked
}

/// Links `d` with `link`, checking the result has the item's size; a
/// failure is logged and reported as [`Linked::Unsupported`] (the item is
/// then fetched).
fn try_link(
    d: &Download,
    store: &dyn Store,
    link: impl FnOnce(&dyn Store) -> Result<Linked>,
) -> Linked {
    match link(store) {
        Ok(Linked::Unsupported) => Linked::Unsupported,
        Ok(how) if store.has_file(&d.path, d.expected.size) => how,
        Ok(_) => {
            log::warn!(
                "{}: linked content has the wrong size; fetching it instead",
                store.display(&d.path)
            );
            let _ = store.remove(&d.path);
            Linked::Unsupported
        }
        Err(e) => {
            log::warn!("{e}; fetching {} instead of linking it", d.path);
            Linked::Unsupported
        }
    }
}

/// After the disk filled up: keeps the partial downloads worth resuming
/// (at least half done) and drops the others to give the space back. Says
/// which.
fn triage_parts(store: &dyn Store, stopped: &[&Download]) -> String {
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for d in stopped {
        let Ok(staged) = store.stage(&d.path) else {
            continue;
        };
        let have = staged.staged_len();
        if have == 0 {
            continue;
        }
        let size = d.expected.size.unwrap_or(u64::MAX);
        if have.saturating_mul(2) >= size {
            kept.push(format!(
                "{} ({}%)",
                d.path,
                have.saturating_mul(100) / size.max(1)
            ));
        } else if staged.discard().is_ok() {
            dropped.push(d.path.to_string());
        }
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    format!(
        "partial downloads kept to resume: {}; dropped to free space: {}",
        list(&kept),
        list(&dropped)
    )
}

/// Fetches one file (or first checks the one there), commits it, and gives
/// the bytes transferred.
async fn fetch_one(
    d: &Download,
    source: &Source,
    store: &dyn Store,
    progress: &ProgressFn,
) -> Result<Obtained> {
    if d.verify_only {
        match verify_stored(d, store).await {
            Ok(()) => return Ok(Obtained::Checked),
            // The file stays until the fetched one, verified, is
            // committed over it.
            Err(e) => log::warn!("{e}; fetching it again"),
        }
    }
    let staged = store.stage(&d.path)?;
    let (staged, n) = source
        .download(&d.path, staged, &d.expected, progress)
        .await?;
    staged.commit()?;
    log::info!("fetched {} ({n} bytes)", d.path);
    Ok(Obtained::Fetched(n))
}

/// Re-reads a stored file and checks it against its size and checksum.
async fn verify_stored(d: &Download, store: &dyn Store) -> Result<()> {
    let mut reader = store.open(&d.path)?;
    let (expected, what) = (d.expected.clone(), store.display(&d.path));
    tokio::task::spawn_blocking(move || expected.check_reader(&what, &mut reader))
        .await
        .map_err(|e| Error::transfer(d.path.as_str(), e.to_string()))?
}

/// Seconds since the epoch.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Between phases 1 and 2: drops what only planning and downloading
/// needed (the list of downloads, the products of the parsed source trees,
/// whose items the states share), so that publishing a large stream does
/// not hold it all twice; gives the plan's references.
fn release_for_publish(plan: &mut Plan) -> Option<References> {
    plan.downloads = Vec::new();
    for sp in &mut plan.streams {
        // The document-level fields stay (small, and what a re-signed
        // products file is made with).
        sp.source.products.products = Default::default();
    }
    plan.references.take()
}

/// Phase 2: writes the pending deletions, the references (`references`,
/// the plan's), the states, the products files and the index, leaving out
/// what depends on failed content ids. Gives the references now published
/// (`None` when they did not change).
fn publish(
    plan: &Plan,
    references: Option<References>,
    store: &dyn Store,
    publication: &Publication,
    failed: &BTreeSet<String>,
    report: &mut Report,
) -> Result<Option<References>> {
    let references = match references {
        None => None,
        Some(refs) if failed.is_empty() => Some(refs),
        Some(refs) => Some(keep_old_references(store.load_references()?, &refs, failed)),
    };
    if let Some(refs) = &references {
        let deletions: BTreeSet<String> = plan
            .deletions
            .iter()
            .map(|p| p.to_string())
            .filter(|p| refs.get(p).is_none_or(Vec::is_empty))
            .collect();
        if !deletions.is_empty() {
            let mut pending = store.load_pending_deletes()?;
            let before = pending.clone();
            let now = now_secs();
            for p in deletions {
                pending.entry(p).or_insert(now);
            }
            if pending != before {
                store.save_pending_deletes(&pending)?;
            }
        }
        // The references go before the states: the plan derives the changes
        // to the references from the difference between the source and the
        // states, so a run killed between the two must find the states still
        // old (and redo the same, idempotent, changes), never the states new
        // and the references old (whose stale entries would then never be
        // dropped).
        store.save_references(refs)?;
    }
    let complete = || {
        plan.streams
            .iter()
            .filter(|sp| !failed.contains(sp.content_id()))
    };
    for sp in complete() {
        store.save_state(sp.content_id(), &sp.state)?;
    }
    let mut resigned = Vec::new();
    let withdrawal = match publication {
        Publication::Upstream if plan.streams.is_empty() && plan.index.is_none() => None,
        Publication::Upstream => Withdrawal::needed(store)?,
        Publication::Resigned(_) => None,
    };
    for sp in complete() {
        match publication {
            Publication::Upstream => {
                let rel = &sp.source.document.rel;
                store.write_atomic(rel, &sp.source.document.raw)?;
                if let Some(w) = &withdrawal {
                    w.beside(store, rel)?;
                }
            }
            Publication::Resigned(key) => resigned.extend(publish_products(store, key, sp)?),
        }
        report.published.push(sp.content_id().to_owned());
    }
    if !failed.is_empty() {
        return Ok(None);
    }
    if let Some(index) = &plan.index {
        match publication {
            Publication::Upstream => {
                store.write_atomic(&index.rel, &index.raw)?;
                if let Some(w) = &withdrawal {
                    w.beside(store, &index.rel)?;
                    w.finish(store)?;
                }
            }
            Publication::Resigned(key) => publish_index(store, key, index, &resigned)?,
        }
    }
    Ok(references)
}

/// Phase 3: removes the files whose deletion is pending and due (`delay`
/// passed since it was scheduled; at once without a delay), unless
/// something references them again or a published state claims them (they
/// can disagree after an interrupted run followed by a run with other
/// options): those are no longer pending. The others stay pending.
fn delete(
    plan: &Plan,
    store: &dyn Store,
    references: &References,
    delay: Duration,
    report: &mut Report,
) -> Result<()> {
    let pending = store.load_pending_deletes()?;
    if pending.is_empty() {
        return Ok(());
    }
    let claimed = claimed_paths(plan);
    let now = now_secs();
    // Times are whole seconds: strictly more than the delay (rounded up)
    // since the second it was scheduled is at least the delay.
    let delay_secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    let due = |since: u64| delay.is_zero() || now > since.saturating_add(delay_secs);
    let mut waiting = PendingDeletes::new();
    for (p, since) in &pending {
        if references.get(p).is_some_and(|l| !l.is_empty()) {
            continue;
        }
        if claimed.contains(p.as_str()) {
            log::warn!("{p}: not deleted: still part of the mirrored state");
            continue;
        }
        if !due(*since) {
            waiting.insert(p.clone(), *since);
            continue;
        }
        if let Ok(rel) = crate::path::RelPath::parse(p) {
            store.remove(&rel)?;
            report.deleted += 1;
        }
    }
    report.waiting = waiting.len();
    if waiting != pending {
        store.save_pending_deletes(&waiting)?;
    }
    Ok(())
}

/// Phase 4: enters every item of the plan's states that is in the mirror
/// into the content index, then collects the entries no mirror holds any
/// more. An item this run verified (`verified`) is recorded as such, and
/// replaces an entry of its content that is not ours and whose record is
/// stale (it may hold wrong bytes: see [`crate::content`]). Problems with
/// the index are warnings: it only saves downloads.
fn enter_content(
    plan: &Plan,
    store: &dyn Store,
    index: &ContentIndex,
    verified: &BTreeSet<String>,
) {
    let mut entered = 0;
    for entry in plan.streams.iter().flat_map(|sp| sp.state.items()) {
        let item = entry.item;
        let (Some(path), Some(key)) = (
            &item.path,
            crate::content::ContentKey::of(item.size, item.checksum.as_ref()),
        ) else {
            continue;
        };
        if !store.has_file(path, item.size) {
            continue;
        }
        let Some(file) = store.local_path(path) else {
            continue;
        };
        let is_verified = verified.contains(path.as_str());
        let entered_now = match index.find(&key) {
            None => index.add(&key, &file, is_verified),
            Some(there) if is_verified && same_file(&there, &file) => {
                index.vouch(&there);
                Ok(false)
            }
            Some(there) if is_verified && !index.is_fresh(&there) => {
                log::info!("content index {}: replaced by {path}", there.display());
                index.replace(&key, &file)
            }
            Some(_) => Ok(false),
        };
        match entered_now {
            Ok(true) => entered += 1,
            Ok(false) => {}
            Err(e) => {
                log::warn!("content index: {e}");
                return;
            }
        }
    }
    match index.collect_garbage() {
        Ok(c) => log::info!(
            "content index {}: {entered} entered, {} collected ({} bytes freed)",
            index.dir().display(),
            c.entries,
            c.bytes
        ),
        Err(e) => log::warn!("content index: {e}"),
    }
}

/// Whether `a` and `b` are one file (one inode).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// The item paths the states of a fully published plan claim.
fn claimed_paths(plan: &Plan) -> BTreeSet<&str> {
    plan.streams
        .iter()
        .flat_map(|sp| sp.state.items())
        .filter_map(|entry| entry.item.path.as_ref().map(|p| p.as_str()))
        .collect()
}

/// The new references, except that those of failed content ids stay as
/// they were.
fn keep_old_references(old: References, new: &References, failed: &BTreeSet<String>) -> References {
    let is_failed = |r: &String| failed.iter().any(|c| r.starts_with(&format!("{c}/")));
    let mut out: References = References::new();
    for (path, list) in new {
        let kept: Vec<String> = list.iter().filter(|r| !is_failed(r)).cloned().collect();
        if !kept.is_empty() {
            out.insert(path.clone(), kept);
        }
    }
    for (path, list) in old {
        for r in list.into_iter().filter(|r| is_failed(r)) {
            let entry = out.entry(path.clone()).or_default();
            if !entry.contains(&r) {
                entry.push(r);
            }
        }
    }
    out
}
