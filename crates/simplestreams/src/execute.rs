//! Carrying out a plan, in four phases:
//!
//! 1. [`download`]: items are fetched in parallel into the store's staging,
//!    verified, and committed under their path (existing files that must be
//!    checked are re-hashed first). A verified item's commit (its flush to
//!    stable storage and its rename: [`crate::store::Staged::commit`]) runs
//!    on a task of its own, so the download's slot goes to the next
//!    download at once; every commit of a round is awaited before the
//!    round ends, and an item whose commit fails has failed. Content
//!    already stored is linked instead ([`crate::content`]): first
//!    everything fetched or linked from the mirror or the content index,
//!    then the items sharing the content of one fetched in this run. A
//!    link that fails falls back to a download. After the first full disk
//!    no new download starts.
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

use crate::bookkeeping::{Collected, Keep, collect_leftovers};
use crate::content::{ContentIndex, ContentKey};
use crate::error::{Error, Result};
use crate::path::RelPath;
use crate::plan::{Download, Origin, Plan};
use crate::resign::{Publication, Withdrawal, publish_index, publish_plain_twin, publish_products};
use crate::source::{ProgressFn, Source};
use crate::store::{Linked, PendingDeletes, References, Store};
use futures_util::StreamExt;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// With upstream's documents, their plain `.json` twins too (see
    /// [`publish_plain_twin`]).
    pub plain_twins: bool,
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
    /// Leftovers of failed or killed runs removed (orphaned items, `.part`
    /// files).
    pub collected: Collected,
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
    if plan.references.is_some() {
        mark_unclean(store).await?;
    }
    clear_the_way(&plan, store, &mut report).await?;
    let (mut failures, failed_ids, verified) =
        download(&plan, source, store, options, &progress, &mut report).await;
    let mut keep = leftovers_to_keep(&plan, store);
    let references = release_for_publish(&mut plan);
    let published = match publish(&plan, references, store, options, &failed_ids, &mut report).await
    {
        Ok(Some(refs)) if failed_ids.is_empty() => {
            let deleted = delete(&plan, store, &refs, options.delete_delay, &mut report).await;
            if deleted.is_ok()
                && let Some(keep) = keep.as_mut()
            {
                match collect(&plan, store, &refs, keep, &mut report).await {
                    Ok(()) => mark_clean(store).await,
                    Err(e) => log::warn!("leftovers of earlier runs not collected: {e}"),
                }
            }
            deleted
        }
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    if let Some(index) = &options.content_index {
        enter_content(&plan, store, index, &verified).await;
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
async fn clear_the_way(plan: &Plan, store: &dyn Store, report: &mut Report) -> Result<()> {
    if plan.in_the_way.is_empty() {
        return Ok(());
    }
    for p in &plan.in_the_way {
        log::warn!(
            "{}: removed early: a new item needs its place (a file where a directory goes, or the reverse)",
            store.display(p)
        );
        store.remove(p).await?;
        report.deleted += 1;
    }
    let mut pending = store.load_pending_deletes().await?;
    let before = pending.len();
    pending.retain(|p, _| !plan.in_the_way.iter().any(|w| w.as_str() == p));
    if pending.len() != before {
        store.save_pending_deletes(&pending).await?;
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

/// How far a download got when its slot was given up: done, or fetched,
/// verified and being committed on a task of its own.
enum Obtaining {
    Done(Obtained),
    Committing(Committing),
}

/// A verified item's commit, running on its own task while the downloads
/// go on ([`Fetcher::hand_over`]); it holds one of the [`Fetcher`]'s commit
/// slots until it ends.
struct Committing {
    path: String,
    bytes: u64,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Committing {
    /// Waits for the commit: once it is `Ok`, the item's bytes are on
    /// stable storage under its path.
    async fn finish(self) -> Result<Obtained> {
        match self.task.await {
            Ok(committed) => committed.map(|()| Obtained::Fetched(self.bytes)),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::transfer(&self.path, e.to_string())),
        }
    }
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
        commit_slots: Arc::new(Semaphore::new(options.jobs.max(1))),
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
            Err(Error::NotStarted { .. }) => {
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
        failures.push(Error::DiskFilled {
            location: store.location(),
            not_started,
            triage: triage_parts(store, &stopped).await,
        });
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
    /// Commits that may run at once beside the downloads (as many as
    /// downloads): a download finding them all taken waits for one, so
    /// what is written but not yet durable stays bounded.
    commit_slots: Arc<Semaphore>,
}

impl Fetcher<'_> {
    /// Obtains `downloads`, `jobs` at a time; `done` are the paths already
    /// in place (the first copies of twins). Ends once every commit it
    /// started has ended: what it gives as obtained is durable in place.
    ///
    /// Commits are awaited as they end, beside the downloads: a finished
    /// commit's task is released at once (a round of 14,000 small files
    /// would otherwise hold 14,000 finished tasks until its end), and a
    /// full disk met by a commit stops new downloads from starting as soon
    /// as it is met.
    async fn round<'d>(
        &self,
        downloads: Vec<&'d Download>,
        done: &BTreeSet<String>,
    ) -> Vec<(&'d Download, Result<Obtained>)> {
        let mut obtained = Vec::with_capacity(downloads.len());
        let mut started = std::pin::pin!(self.start_round(downloads, done));
        let mut commits = futures_util::stream::FuturesUnordered::new();
        let mut starting = true;
        loop {
            let (d, r) = tokio::select! {
                next = started.next(), if starting => match next {
                    Some((d, Ok(Obtaining::Committing(commit)))) => {
                        commits.push(async move { (d, commit.finish().await) });
                        continue;
                    }
                    Some((d, Ok(Obtaining::Done(o)))) => (d, Ok(o)),
                    Some((d, Err(e))) => (d, Err(e)),
                    None => {
                        starting = false;
                        continue;
                    }
                },
                Some(ended) = commits.next() => ended,
                else => break,
            };
            if r.as_ref().is_err_and(Error::is_disk_full) {
                self.disk_full.store(true, Ordering::SeqCst);
            }
            obtained.push((d, r));
        }
        obtained
    }

    /// Hands a fetched and verified item over to a commit of its own, once
    /// a commit slot is free.
    async fn hand_over(
        &self,
        d: &Download,
        staged: Box<dyn crate::store::Staged>,
        bytes: u64,
    ) -> Committing {
        let slot = self.commit_slots.clone().acquire_owned().await;
        let task = tokio::spawn(commit_in_slot(staged, slot.ok()));
        Committing {
            path: self.store.display(&d.path),
            bytes,
            task,
        }
    }

    /// Starts obtaining `downloads` (see [`Fetcher::round`]), `jobs` at a
    /// time: each comes out done, failed or being committed.
    fn start_round<'d, 's>(
        &'s self,
        downloads: Vec<&'d Download>,
        done: &'s BTreeSet<String>,
    ) -> impl futures_util::Stream<Item = (&'d Download, Result<Obtaining>)> + 's
    where
        'd: 's,
    {
        futures_util::stream::iter(downloads)
            .map(move |d| async move {
                let links = match &d.origin {
                    Origin::Fetch => false,
                    Origin::Twin(first) => done.contains(first.as_str()),
                    Origin::Stored(_) | Origin::Indexed(_) => true,
                };
                if !links && self.disk_full.load(Ordering::SeqCst) {
                    let e = Error::NotStarted {
                        path: self.store.display(&d.path),
                    };
                    return (d, Err(e));
                }
                let r = obtain(d, done, self).await;
                if r.as_ref().is_err_and(Error::is_disk_full) {
                    self.disk_full.store(true, Ordering::SeqCst);
                }
                (d, r)
            })
            .buffer_unordered(self.options.jobs.max(1))
    }
}

/// Puts one download in place: linked from the content it shares when it
/// can be (a twin only once its first copy is in `done`), else fetched.
async fn obtain(d: &Download, done: &BTreeSet<String>, fetcher: &Fetcher<'_>) -> Result<Obtaining> {
    let Fetcher { store, options, .. } = fetcher;
    let store = *store;
    if let Origin::Indexed(entry) = &d.origin
        && let Err(e) = check_index_entry(d, entry, options).await
    {
        log::warn!("{e}; not linked, fetching {} instead", d.path);
        return fetch_one(d, fetcher).await;
    }
    let linked = match &d.origin {
        Origin::Fetch => Linked::Unsupported,
        Origin::Twin(first) if !done.contains(first.as_str()) => Linked::Unsupported,
        Origin::Twin(from) | Origin::Stored(from) => {
            try_link(d, store, store.link(from, &d.path).await).await
        }
        Origin::Indexed(entry) => try_link(d, store, store.import(entry, &d.path).await).await,
    };
    if linked != Linked::Unsupported {
        log::info!("linked {} to identical content ({linked:?})", d.path);
        return Ok(Obtaining::Done(Obtained::Linked));
    }
    fetch_one(d, fetcher).await
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

/// Checks what linking `d` gave (`linked`): the result must have the
/// item's size; a failure is logged and reported as [`Linked::Unsupported`]
/// (the item is then fetched).
async fn try_link(d: &Download, store: &dyn Store, linked: Result<Linked>) -> Linked {
    match linked {
        Ok(Linked::Unsupported) => Linked::Unsupported,
        Ok(how) if store.has_file(&d.path, d.expected.size).await => how,
        Ok(_) => {
            log::warn!(
                "{}: linked content has the wrong size; fetching it instead",
                store.display(&d.path)
            );
            let _ = store.remove(&d.path).await;
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
async fn triage_parts(store: &dyn Store, stopped: &[&Download]) -> String {
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for d in stopped {
        let Ok(staged) = store.stage(&d.path).await else {
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
        } else if staged.discard().await.is_ok() {
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

/// Fetches one file (or first checks the one there) and hands it over to
/// its commit.
async fn fetch_one(d: &Download, fetcher: &Fetcher<'_>) -> Result<Obtaining> {
    let Fetcher {
        source,
        store,
        progress,
        ..
    } = fetcher;
    let store = *store;
    if d.verify_only {
        match verify_stored(d, store).await {
            Ok(()) => return Ok(Obtaining::Done(Obtained::Checked)),
            // The file stays until the fetched one, verified, is
            // committed over it.
            Err(e) => log::warn!("{e}; fetching it again"),
        }
    }
    let staged = store.stage(&d.path).await?;
    let (staged, n) = source
        .download(&d.path, staged, &d.expected, progress)
        .await?;
    log::info!("fetched {} ({n} bytes)", d.path);
    Ok(Obtaining::Committing(fetcher.hand_over(d, staged, n).await))
}

/// Commits `staged`, then gives its commit slot back.
async fn commit_in_slot(
    staged: Box<dyn crate::store::Staged>,
    slot: Option<OwnedSemaphorePermit>,
) -> Result<()> {
    let committed = staged.commit().await;
    drop(slot);
    committed
}

/// Re-reads a stored file and checks it against its size and checksum.
async fn verify_stored(d: &Download, store: &dyn Store) -> Result<()> {
    let mut reader = store.open(&d.path).await?;
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
async fn publish(
    plan: &Plan,
    references: Option<References>,
    store: &dyn Store,
    options: &ExecuteOptions,
    failed: &BTreeSet<String>,
    report: &mut Report,
) -> Result<Option<References>> {
    let publication = &options.publication;
    let references = match references {
        None => None,
        Some(refs) if failed.is_empty() => Some(refs),
        Some(refs) => Some(keep_old_references(
            store.load_references().await?,
            &refs,
            failed,
        )),
    };
    if let Some(refs) = &references {
        let deletions: BTreeSet<String> = plan
            .deletions
            .iter()
            .map(|p| p.to_string())
            .filter(|p| refs.get(p).is_none_or(Vec::is_empty))
            .collect();
        if !deletions.is_empty() {
            // From the entries the plan checked (bad ones dropped, future
            // times capped), not from the file as it is.
            let before = store.load_pending_deletes().await?;
            let mut pending = plan.pending.clone();
            let now = now_secs();
            for p in deletions {
                pending.entry(p).or_insert(now);
            }
            if pending != before {
                store.save_pending_deletes(&pending).await?;
            }
        }
        // The references go before the states: the plan derives the changes
        // to the references from the difference between the source and the
        // states, so a run killed between the two must find the states still
        // old (and redo the same, idempotent, changes), never the states new
        // and the references old (whose stale entries would then never be
        // dropped).
        store.save_references(refs).await?;
    }
    let complete = || {
        plan.streams
            .iter()
            .filter(|sp| !failed.contains(sp.content_id()))
    };
    for sp in complete() {
        store.save_state(sp.content_id(), &sp.state).await?;
    }
    let mut held = Vec::new();
    let withdrawal = match publication {
        Publication::Upstream if plan.streams.is_empty() && plan.index.is_none() => None,
        Publication::Upstream => Withdrawal::needed(store).await?,
        // Plain documents only: upstream's signed ones, or those of an
        // earlier re-signed run, would go on listing what is not held.
        Publication::Held => Some(Withdrawal),
        Publication::Resigned(_) => None,
    };
    for sp in complete() {
        match publication {
            Publication::Upstream => {
                let rel = &sp.source.document.rel;
                store.write_atomic(rel, &sp.source.document.raw).await?;
                if let Some(w) = &withdrawal {
                    w.beside(store, rel).await?;
                }
                if options.plain_twins {
                    publish_plain_twin(store, &sp.source.document).await?;
                }
            }
            Publication::Held | Publication::Resigned(_) => {
                let key = publication.signing_key();
                let published = publish_products(store, key, sp).await?;
                if let (Some(w), Some(p)) = (&withdrawal, &published) {
                    w.beside(store, &p.path).await?;
                }
                held.extend(published);
            }
        }
        report.published.push(sp.content_id().to_owned());
    }
    if !failed.is_empty() {
        return Ok(None);
    }
    if let Some(index) = &plan.index {
        match publication {
            Publication::Upstream => {
                store.write_atomic(&index.rel, &index.raw).await?;
                if let Some(w) = &withdrawal {
                    w.beside(store, &index.rel).await?;
                }
                if options.plain_twins {
                    publish_plain_twin(store, index).await?;
                }
            }
            Publication::Held | Publication::Resigned(_) => {
                publish_index(store, publication.signing_key(), index, &held).await?;
                if let Some(w) = &withdrawal {
                    w.beside(store, &crate::holdings::json_path(&index.rel))
                        .await?;
                }
            }
        }
        if let Some(w) = &withdrawal {
            w.finish(store).await?;
        }
    }
    Ok(references)
}

/// Phase 3: removes the files whose deletion is pending and due (`delay`
/// passed since it was scheduled; at once without a delay), unless
/// something references them again or a published state claims them (they
/// can disagree after an interrupted run followed by a run with other
/// options): those are no longer pending. The others stay pending.
async fn delete(
    plan: &Plan,
    store: &dyn Store,
    references: &References,
    delay: Duration,
    report: &mut Report,
) -> Result<()> {
    let on_disk = store.load_pending_deletes().await?;
    if on_disk.is_empty() {
        return Ok(());
    }
    let pending = checked_entries(plan, &on_disk);
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
        if let Ok(rel) = crate::path::RelPath::parse(p)
            && is_removable(store, &rel).await
        {
            store.remove(&rel).await?;
            report.deleted += 1;
        }
    }
    report.waiting = waiting.len();
    if waiting != on_disk {
        store.save_pending_deletes(&waiting).await?;
    }
    Ok(())
}

/// The pending deletions of `on_disk` the plan accepted (with their checked
/// times), and those this run scheduled: an entry the plan dropped as bad is
/// never acted on (and is gone from the file once it is written again).
fn checked_entries(plan: &Plan, on_disk: &PendingDeletes) -> PendingDeletes {
    on_disk
        .iter()
        .filter_map(|(p, since)| match plan.pending.get(p) {
            Some(checked) => Some((p.clone(), *checked)),
            None => plan
                .deletions
                .iter()
                .any(|d| d.as_str() == p)
                .then(|| (p.clone(), *since)),
        })
        .collect()
}

/// Before a run changes a directory mirror: marks it unclean (see
/// [`crate::layout::UNCLEAN`]) until its leftovers are collected, so that a
/// kill before then has the next run collect them, whatever it does.
async fn mark_unclean(store: &dyn Store) -> Result<()> {
    if store.local_root().is_none() {
        return Ok(());
    }
    let rel = crate::store::data_rel(crate::layout::UNCLEAN)?;
    if store.stamp(&rel).await.is_none() {
        store.write_atomic(&rel, b"").await?;
    }
    Ok(())
}

/// After the leftovers are collected: the mirror is clean again.
async fn mark_clean(store: &dyn Store) {
    let Ok(rel) = crate::store::data_rel(crate::layout::UNCLEAN) else {
        return;
    };
    if let Err(e) = store.remove(&rel).await {
        log::warn!("{e}");
    }
}

/// Whether the pending deletion of `rel` names a regular file or nothing;
/// anything else (a directory, a FIFO) is not ours to delete: the entry is
/// dropped with a warning naming it, and the run goes on.
async fn is_removable(store: &dyn Store, rel: &crate::path::RelPath) -> bool {
    if store.stamp(rel).await.is_some() {
        return true;
    }
    match store.read(rel).await {
        Ok(_) => true,
        Err(e) => {
            let file = crate::store::data_rel(crate::store::PENDING_DELETES)
                .map(|f| store.display(&f))
                .unwrap_or_default();
            log::warn!(
                "{file}: entry {:?} dropped: not a regular file ({e})",
                rel.as_str()
            );
            false
        }
    }
}

/// What collecting leftovers keeps, as far as the plan tells before the
/// source trees are released: every item path the source products files
/// (published by this run) and the states after the run name. `None` when
/// nothing is collected: the run changes nothing (a no-op run reads no
/// references and walks nothing), or the store is not a local directory.
fn leftovers_to_keep(plan: &Plan, store: &dyn Store) -> Option<Keep> {
    if plan.references.is_none() || store.local_root().is_none() {
        return None;
    }
    let mut keep = Keep::default();
    for sp in &plan.streams {
        keep.add_tree(&sp.source.products, false);
        keep.add_tree(&sp.state, true);
    }
    Some(keep)
}

/// Phase 3b, after a complete run that changed something: removes the
/// leftovers of failed or killed runs (see [`crate::bookkeeping`]). Kept
/// besides what `keep` holds: the references after the run, the pending
/// deletions, the states of the other content ids and the products files
/// the published index names for them.
async fn collect(
    plan: &Plan,
    store: &dyn Store,
    references: &References,
    keep: &mut Keep,
    report: &mut Report,
) -> Result<()> {
    let Some(root) = store.local_root() else {
        return Ok(());
    };
    keep.named.extend(references.keys().cloned());
    keep.named
        .extend(store.load_pending_deletes().await?.into_keys());
    let planned: BTreeSet<&str> = plan.streams.iter().map(|sp| sp.content_id()).collect();
    for cid in state_names(&root) {
        if !planned.contains(cid.as_str()) {
            keep.add_tree(&store.load_state(&cid).await?, false);
        }
    }
    for tree in other_published_products(plan, store, &planned).await? {
        keep.add_tree(&tree, false);
    }
    report.collected = collect_leftovers(store, &root, keep).await;
    Ok(())
}

/// The content ids with a state under `.data/` of the directory `root`.
fn state_names(root: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.join(crate::layout::DATA_DIR)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| crate::layout::is_state_name(n))
        .collect()
}

/// The products files the published index names for content ids not in
/// the plan (unchanged since the last run), parsed from the mirror.
async fn other_published_products(
    plan: &Plan,
    store: &dyn Store,
    planned: &BTreeSet<&str>,
) -> Result<Vec<crate::format::Products>> {
    let Some(index) = &plan.index else {
        return Ok(Vec::new());
    };
    let parsed = crate::format::Index::parse(&index.url, &index.json)?;
    let mut out = Vec::new();
    for entry in parsed.entries.values() {
        let Some(rel) = &entry.path else { continue };
        if planned.contains(entry.content_id.as_str()) {
            continue;
        }
        let Some(raw) = store.read(rel).await? else {
            continue;
        };
        let json = if raw.starts_with(b"-----BEGIN PGP SIGNED MESSAGE") {
            crate::openpgp::cleartext_body(&raw).map_err(|e| Error::Signature {
                url: store.display(rel),
                source: e,
            })?
        } else {
            raw
        };
        out.push(crate::format::Products::parse(&store.display(rel), &json)?);
    }
    Ok(out)
}

/// Phase 4: enters every item of the plan's states that is in the mirror
/// into the content index, then collects the entries no mirror holds any
/// more. An item this run verified (`verified`) is recorded as such, and
/// replaces an entry of its content that is not ours and whose record is
/// stale (it may hold wrong bytes: see [`crate::content`]). Problems with
/// the index are warnings: it only saves downloads.
async fn enter_content(
    plan: &Plan,
    store: &dyn Store,
    index: &ContentIndex,
    verified: &BTreeSet<String>,
) {
    let mut items: Vec<(RelPath, Option<u64>, ContentKey)> = Vec::new();
    for entry in plan.streams.iter().flat_map(|sp| sp.state.items()) {
        let item = entry.item;
        let (Some(path), Some(key)) = (
            &item.path,
            ContentKey::of(item.size, item.checksum.as_ref()),
        ) else {
            continue;
        };
        items.push((path.clone(), item.size, key));
    }
    let asked: Vec<(RelPath, Option<u64>)> = items
        .iter()
        .map(|(p, size, _)| (p.clone(), *size))
        .collect();
    let present = store.have_files(&asked).await;
    let held: Vec<Held> = items
        .into_iter()
        .zip(present)
        .filter(|(_, there)| *there)
        .filter_map(|((path, _, key), _)| {
            Some(Held {
                file: store.local_path(&path)?,
                verified: verified.contains(path.as_str()),
                path,
                key,
            })
        })
        .collect();
    let index = index.clone();
    let entering = tokio::task::spawn_blocking(move || index_content(&index, held)).await;
    if let Err(e) = entering {
        log::warn!("content index: {e}");
    }
}

/// An item held in a local file, for the content index.
struct Held {
    path: RelPath,
    key: ContentKey,
    file: PathBuf,
    /// Whether this run verified it (fetched or hashed).
    verified: bool,
}

/// Enters `held` into `index` where it is not yet, records what this run
/// verified, replaces a stale entry by a verified item, then collects the
/// index's garbage (blocking file work).
fn index_content(index: &ContentIndex, held: Vec<Held>) {
    let mut entered = 0;
    for Held {
        path,
        key,
        file,
        verified,
    } in held
    {
        let entered_now = match index.find(&key) {
            None => index.add(&key, &file, verified),
            Some(there) if verified && same_file(&there, &file) => {
                index.vouch(&there);
                Ok(false)
            }
            Some(there) if verified && !index.is_fresh(&there) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Stream;
    use crate::plan::MirrorOptions;
    use crate::source::TransferOptions;
    use crate::store::{DirStore, FileStamp, Lease, RangedStaged, Staged};
    use std::io::Read;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    /// A directory store whose commits take their time (each waits before
    /// committing), and which notes every write of metadata or state made
    /// while an item staged by the run is not yet committed.
    #[derive(Debug, Clone)]
    struct SlowCommits {
        inner: DirStore,
        uncommitted: Arc<AtomicUsize>,
        early: Arc<Mutex<Vec<String>>>,
    }

    struct SlowStaged {
        inner: Box<dyn Staged>,
        uncommitted: Arc<AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl Staged for SlowStaged {
        fn staged_len(&self) -> u64 {
            self.inner.staged_len()
        }
        fn begin(&mut self, keep: u64, consume: &mut dyn FnMut(&[u8])) -> Result<()> {
            self.inner.begin(keep, consume)
        }
        fn write(&mut self, data: &[u8]) -> Result<()> {
            self.inner.write(data)
        }
        fn sync(&mut self) -> Result<()> {
            self.inner.sync()
        }
        async fn commit(self: Box<Self>) -> Result<()> {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let committed = self.inner.commit().await;
            self.uncommitted.fetch_sub(1, Ordering::SeqCst);
            committed
        }
        async fn discard(self: Box<Self>) -> Result<()> {
            let discarded = self.inner.discard().await;
            self.uncommitted.fetch_sub(1, Ordering::SeqCst);
            discarded
        }
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn ranged(&mut self) -> Option<&mut dyn RangedStaged> {
            self.inner.ranged()
        }
    }

    #[async_trait::async_trait]
    impl Store for SlowCommits {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn display(&self, rel: &RelPath) -> String {
            self.inner.display(rel)
        }
        async fn stamp(&self, rel: &RelPath) -> Option<FileStamp> {
            self.inner.stamp(rel).await
        }
        async fn read(&self, rel: &RelPath) -> Result<Option<Vec<u8>>> {
            self.inner.read(rel).await
        }
        async fn open(&self, rel: &RelPath) -> Result<Box<dyn Read + Send>> {
            self.inner.open(rel).await
        }
        async fn write_atomic(&self, rel: &RelPath, bytes: &[u8]) -> Result<()> {
            if self.uncommitted.load(Ordering::SeqCst) > 0 {
                self.early.lock().unwrap().push(rel.to_string());
            }
            self.inner.write_atomic(rel, bytes).await
        }
        async fn stage(&self, rel: &RelPath) -> Result<Box<dyn Staged>> {
            let inner = self.inner.stage(rel).await?;
            self.uncommitted.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(SlowStaged {
                inner,
                uncommitted: self.uncommitted.clone(),
            }))
        }
        async fn remove(&self, rel: &RelPath) -> Result<()> {
            self.inner.remove(rel).await
        }
        async fn lock(&self, wait: bool) -> Result<Box<dyn Lease>> {
            self.inner.lock(wait).await
        }
        async fn check_writable(&self) -> Result<()> {
            self.inner.check_writable().await
        }
    }

    /// A products file of `count` items, each written to `src` with
    /// content of its own.
    fn stream_of(src: &std::path::Path, count: usize) -> Stream {
        let mut versions = serde_json::Map::new();
        for i in 0..count {
            let path = format!("p/{i}/kernel");
            let bytes = vec![i as u8; 64 * 1024 + i];
            std::fs::create_dir_all(src.join(format!("p/{i}"))).unwrap();
            std::fs::write(src.join(&path), &bytes).unwrap();
            versions.insert(
                format!("{i}"),
                serde_json::json!({"items": {"kernel": {
                    "path": path, "size": bytes.len(), "ftype": "boot-kernel",
                    "sha256": crate::hash::sha256_hex(&bytes)}}}),
            );
        }
        let doc = serde_json::json!({"format": "products:1.0", "content_id": "c:1",
            "products": {"p": {"arch": "amd64", "versions": versions}}});
        crate::plan::stream_from_json(&doc)
    }

    /// Commits run beside the downloads, but nothing is published (no
    /// state, no products file) before every one of them has ended: the
    /// items it names are durable in place by then.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_published_before_every_commit_has_ended() {
        let (src, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let stream = stream_of(src.path(), 8);
        let store = SlowCommits {
            inner: DirStore::new(out.path()),
            uncommitted: Arc::default(),
            early: Arc::default(),
        };
        let options = MirrorOptions {
            item_download: true,
            ..MirrorOptions::default()
        };
        let plan = Plan::build(stream, &store, &options).await.unwrap();
        assert_eq!(plan.downloads.len(), 8);
        let root = url::Url::from_directory_path(src.path()).unwrap();
        let source = Source::new(root, Vec::new(), TransferOptions::default()).unwrap();
        let options = ExecuteOptions {
            jobs: 3,
            ..ExecuteOptions::default()
        };
        let report = execute(plan, &source, &store, &options, Arc::new(|_| {}))
            .await
            .unwrap();
        assert_eq!(report.files, 8);
        assert_eq!(report.published, ["c:1"]);
        assert_eq!(store.uncommitted.load(Ordering::SeqCst), 0);
        let early = store.early.lock().unwrap().clone();
        assert!(
            early.is_empty(),
            "published before every commit ended: {early:?}"
        );
        for i in 0..8 {
            let path = format!("p/{i}/kernel");
            let want = std::fs::read(src.path().join(&path)).unwrap();
            assert_eq!(std::fs::read(out.path().join(&path)).unwrap(), want);
        }
    }
}
