//! Carrying out a plan, in three phases:
//!
//! 1. [`download`]: items are fetched in parallel into the store's staging,
//!    verified, and committed under their path (existing files that must be
//!    checked are re-hashed first). After the first full disk no new
//!    download starts.
//! 2. [`publish`]: the pending deletions are recorded, then the references,
//!    the state of each content id, each products file, and the index last.
//!    A content id whose items did not all arrive is not published; the index
//!    is published only when everything succeeded.
//! 3. [`delete`]: files of removed versions, once nothing references them.

use crate::error::{Error, Result};
use crate::plan::{Download, Plan};
use crate::source::{ProgressFn, Source};
use crate::store::{References, Store};
use futures_util::StreamExt;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

/// How to execute.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// Concurrent downloads.
    pub jobs: usize,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Files fetched.
    pub files: usize,
    /// Bytes transferred.
    pub bytes: u64,
    /// Content ids whose new metadata was published.
    pub published: Vec<String>,
    /// Files deleted.
    pub deleted: usize,
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
    let (mut failures, failed_ids) =
        download(&plan, source, store, options, &progress, &mut report).await;
    let references = release_for_publish(&mut plan);
    let published =
        publish(&plan, references, store, &failed_ids, &mut report).and_then(|references| {
            match (references, failed_ids.is_empty()) {
                (Some(refs), true) => delete(&plan, store, &refs, &mut report),
                _ => Ok(()),
            }
        });
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

/// Phase 1: fetches every download of the plan, `jobs` at a time. Gives the
/// failures and the content ids they leave incomplete.
async fn download(
    plan: &Plan,
    source: &Source,
    store: &dyn Store,
    options: &ExecuteOptions,
    progress: &ProgressFn,
    report: &mut Report,
) -> (Vec<Error>, BTreeSet<String>) {
    let disk_full = AtomicBool::new(false);
    let results: Vec<(&Download, Result<u64>)> = futures_util::stream::iter(&plan.downloads)
        .map(|d| {
            let disk_full = &disk_full;
            async move {
                if disk_full.load(Ordering::SeqCst) {
                    let e = Error::Refused(format!(
                        "{}: not started: the disk is full",
                        store.display(&d.path)
                    ));
                    return (d, Err(e));
                }
                let r = fetch_one(d, source, store, progress).await;
                if r.as_ref().is_err_and(Error::is_disk_full) {
                    disk_full.store(true, Ordering::SeqCst);
                }
                (d, r)
            }
        })
        .buffer_unordered(options.jobs.max(1))
        .collect()
        .await;
    let mut failures = Vec::new();
    let mut failed_ids = BTreeSet::new();
    let mut not_started = 0;
    for (d, r) in results {
        match r {
            Ok(n) if n > 0 => {
                report.files += 1;
                report.bytes += n;
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
    if not_started > 0 {
        failures.push(Error::Refused(format!(
            "{not_started} download(s) not started after the disk filled up ({}); \
             free some space and run again (partial downloads resume)",
            store.location()
        )));
    }
    (failures, failed_ids)
}

/// Fetches one file (or first checks the one there), commits it, and gives
/// the bytes transferred.
async fn fetch_one(
    d: &Download,
    source: &Source,
    store: &dyn Store,
    progress: &ProgressFn,
) -> Result<u64> {
    if d.verify_only {
        match verify_stored(d, store).await {
            Ok(()) => return Ok(0),
            Err(e) => {
                log::warn!("{e}; fetching it again");
                store.remove(&d.path)?;
            }
        }
    }
    let staged = store.stage(&d.path)?;
    let (staged, n) = source
        .download(&d.path, staged, &d.expected, progress)
        .await?;
    staged.commit()?;
    log::info!("fetched {} ({n} bytes)", d.path);
    Ok(n)
}

/// Re-reads a stored file and checks it against its size and checksum.
async fn verify_stored(d: &Download, store: &dyn Store) -> Result<()> {
    let mut reader = store.open(&d.path)?;
    let (expected, what) = (d.expected.clone(), store.display(&d.path));
    tokio::task::spawn_blocking(move || expected.check_reader(&what, &mut reader))
        .await
        .map_err(|e| Error::transfer(d.path.as_str(), e.to_string()))?
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
            pending.extend(deletions);
            store.save_pending_deletes(&pending)?;
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
    for sp in complete() {
        store.write_atomic(&sp.source.document.rel, &sp.source.document.raw)?;
        report.published.push(sp.content_id().to_owned());
    }
    if !failed.is_empty() {
        return Ok(None);
    }
    if let Some(index) = &plan.index {
        store.write_atomic(&index.rel, &index.raw)?;
    }
    Ok(references)
}

/// Phase 3: removes the files whose deletion is pending, unless something
/// still references them or a published state claims them (they can
/// disagree after an interrupted run followed by a run with other options).
fn delete(
    plan: &Plan,
    store: &dyn Store,
    references: &References,
    report: &mut Report,
) -> Result<()> {
    let pending = store.load_pending_deletes()?;
    if pending.is_empty() {
        return Ok(());
    }
    let claimed = claimed_paths(plan);
    for p in &pending {
        if references.get(p).is_some_and(|l| !l.is_empty()) {
            continue;
        }
        if claimed.contains(p.as_str()) {
            log::warn!("{p}: not deleted: still part of the mirrored state");
            continue;
        }
        if let Ok(rel) = crate::path::RelPath::parse(p) {
            store.remove(&rel)?;
            report.deleted += 1;
        }
    }
    store.save_pending_deletes(&BTreeSet::new())
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
