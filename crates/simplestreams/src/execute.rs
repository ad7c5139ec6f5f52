//! Carrying out a plan: verified parallel downloads, then the state, then
//! the products files, then the index, then deletions. A content id whose
//! items did not all arrive is not published; the index is published only
//! when everything succeeded.

use crate::error::{Error, Result};
use crate::plan::{Download, Plan};
use crate::source::{ProgressFn, Source, verify_file};
use crate::store::{DirStore, References};
use futures_util::StreamExt;
use std::collections::BTreeSet;

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

/// Executes `plan` from `source` into `store`.
pub async fn execute(
    plan: Plan,
    source: &Source,
    store: &DirStore,
    options: &ExecuteOptions,
    progress: ProgressFn,
) -> Result<Report> {
    let mut report = Report::default();
    let jobs = options.jobs.max(1);
    let results: Vec<(Download, Result<u64>)> =
        futures_util::stream::iter(plan.downloads.iter().cloned())
            .map(|d| {
                let progress = progress.clone();
                async move {
                    let r = fetch_one(&d, source, store, &progress).await;
                    (d, r)
                }
            })
            .buffer_unordered(jobs)
            .collect()
            .await;
    let mut failures = Vec::new();
    let mut failed_ids = BTreeSet::new();
    for (d, r) in results {
        match r {
            Ok(n) => {
                if n > 0 {
                    report.files += 1;
                    report.bytes += n;
                }
            }
            Err(e) => {
                failed_ids.extend(d.content_ids.iter().cloned());
                failures.push(e);
            }
        }
    }
    publish(&plan, store, &failed_ids, &mut report)?;
    if failures.is_empty() {
        Ok(report)
    } else {
        let first = Box::new(failures.remove(0));
        let failed = failures.len() + 1;
        Err(Error::ItemsFailed {
            failed,
            first,
            all: failures,
        })
    }
}

async fn fetch_one(
    d: &Download,
    source: &Source,
    store: &DirStore,
    progress: &ProgressFn,
) -> Result<u64> {
    let dest = store.prepare(&d.path)?;
    if d.verify_only {
        match verify_file(&dest, &d.expected, &dest.display().to_string()).await {
            Ok(()) => return Ok(0),
            Err(e) => {
                log::warn!("{e}; fetching it again");
                store.remove_item(&d.path)?;
                store.prepare(&d.path)?;
            }
        }
    }
    let n = source
        .download(&d.path, &dest, &d.expected, progress)
        .await?;
    log::info!("fetched {} ({n} bytes)", d.path);
    Ok(n)
}

/// Writes state, products files, index and deletions, leaving out what
/// depends on failed content ids.
fn publish(
    plan: &Plan,
    store: &DirStore,
    failed: &BTreeSet<String>,
    report: &mut Report,
) -> Result<()> {
    let references = if failed.is_empty() {
        plan.references.clone()
    } else {
        keep_old_references(store.load_references()?, &plan.references, failed)
    };
    let deletions: BTreeSet<String> = plan
        .deletions
        .iter()
        .map(|p| p.to_string())
        .filter(|p| references.get(p).is_none_or(Vec::is_empty))
        .collect();
    let mut pending = store.load_pending_deletes()?;
    pending.extend(deletions.iter().cloned());
    store.save_pending_deletes(&pending)?;
    // The references go before the states: the plan derives the changes to
    // the references from the difference between the source and the states,
    // so a run killed between the two must find the states still old (and
    // redo the same, idempotent, changes), never the states new and the
    // references old (whose stale entries would then never be dropped).
    store.save_references(&references)?;
    for sp in plan
        .streams
        .iter()
        .filter(|sp| !failed.contains(sp.content_id()))
    {
        store.save_state(sp.content_id(), &sp.state)?;
    }
    for sp in plan
        .streams
        .iter()
        .filter(|sp| !failed.contains(sp.content_id()))
    {
        store.write_atomic(&sp.source.document.rel, &sp.source.document.raw)?;
        report.published.push(sp.content_id().to_owned());
    }
    if !failed.is_empty() {
        return Ok(());
    }
    if let Some(index) = &plan.index {
        store.write_atomic(&index.rel, &index.raw)?;
    }
    // Whatever the references say, never delete a file a published state
    // claims (they can disagree after an interrupted run followed by a run
    // with other options).
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
            store.remove_item(&rel)?;
            report.deleted += 1;
        }
    }
    store.save_pending_deletes(&BTreeSet::new())?;
    Ok(())
}

/// The item paths the states of a fully published plan claim.
fn claimed_paths(plan: &Plan) -> BTreeSet<&str> {
    let mut out = BTreeSet::new();
    for sp in &plan.streams {
        for product in sp.state.products.values() {
            for version in product.versions.values() {
                for item in version.items.values() {
                    if let Some(p) = &item.path {
                        out.insert(p.as_str());
                    }
                }
            }
        }
    }
    out
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
