//! The mirror entry point: one job — a source, how its metadata is
//! verified, the options and a store — run through the pipeline:
//!
//! 1. **fetch and verify metadata** ([`crate::metadata`]), conditionally
//!    against the fetch cache ([`crate::cache`]);
//! 2. **plan** ([`crate::plan`]) against the mirror's state, content
//!    already stored found ([`crate::content`]) and the space checked
//!    ([`crate::space`]);
//! 3. **execute** and **publish** ([`crate::execute`]) into the store.
//!
//! `sstream mirror`, `sstream-mirror` and a config job all call
//! [`Mirror::run`]; a dry run prints [`Mirror::plan`].

use crate::cache::FetchCache;
use crate::content::ContentIndex;
use crate::error::Result;
use crate::execute::{ExecuteOptions, Report, execute};
use crate::format::flatten;
use crate::metadata::{MetadataReader, Previous, Stream, read_stream};
use crate::plan::{MirrorOptions, Plan, check_not_emptied, check_wipe_guard};
use crate::resign::Publication;
use crate::source::ProgressFn;
use crate::store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a run goes about its work (not what it mirrors).
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Concurrent downloads.
    pub jobs: usize,
    /// Wait for another run on the same mirror instead of failing.
    pub wait: bool,
    /// The share of the mirror's bytes `prune` may delete (`None`: no limit,
    /// `--force`).
    pub wipe_guard: Option<f64>,
    /// Bytes to keep free on the mirror's filesystem (`None`: 5% of it, at
    /// most 1 GiB: [`crate::space::default_margin`]).
    pub min_free: Option<u64>,
    /// How long files of versions that left the metadata stay before a run
    /// deletes them (zero: in the same run, as the reference).
    pub delete_delay: Duration,
    /// The content index shared with other mirrors on the filesystem
    /// (see [`crate::content`]), if any.
    pub content_index: Option<PathBuf>,
    /// What is published: upstream's documents, or re-signed holdings.
    pub publication: Publication,
    /// With upstream's documents: publish the plain `.json` twin of each
    /// clear-signed one too, for clients that read only plain metadata
    /// (LXD, Incus). Off for the drop-in `sstream-mirror`, whose tree is
    /// the reference's.
    pub plain_twins: bool,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            jobs: 6,
            wait: false,
            wipe_guard: Some(0.5),
            min_free: None,
            delete_delay: Duration::ZERO,
            content_index: None,
            publication: Publication::Upstream,
            plain_twins: true,
        }
    }
}

/// What a caller hears of a run as it goes.
pub trait Progress: Send + Sync {
    /// The plan is made; downloads start next.
    fn planned(&self, _plan: &Plan) {}
    /// Bytes received (negative when a partial download is discarded).
    fn transferred(&self, _bytes: i64) {}
}

/// A [`Progress`] that listens to nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Progress for Quiet {}

/// What a successful run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// What the executor did: files fetched and linked, streams published,
    /// files deleted or kept for the delete delay.
    pub report: Report,
    /// Whether anything in the mirror changed (fetched, linked, published
    /// anew, deleted or scheduled for deletion).
    pub changed: bool,
    /// How long the run took.
    pub elapsed: Duration,
}

/// One mirror job.
#[derive(Debug, Clone)]
pub struct Mirror {
    reader: MetadataReader,
    store: Arc<dyn Store>,
    options: MirrorOptions,
    settings: RunSettings,
}

/// What the fetch cache of a job is valid for: the source, the options
/// that decide the plan, and this version of the tool.
#[derive(serde::Serialize)]
struct CacheKey<'a> {
    version: &'a str,
    source: &'a str,
    entry: &'a str,
    filters: String,
    max: Option<usize>,
    keep: bool,
    item_download: bool,
    prune: bool,
    resigned_by: Option<String>,
}

impl Mirror {
    /// A job reading with `reader` (source, entry, verification) into
    /// `store`.
    pub fn new(
        reader: MetadataReader,
        store: Arc<dyn Store>,
        options: MirrorOptions,
        settings: RunSettings,
    ) -> Mirror {
        Mirror {
            reader,
            store,
            options,
            settings,
        }
    }

    /// The store the job writes.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Fetches and verifies the metadata and plans against the mirror as it
    /// is; takes no lock and writes nothing: what a dry run prints.
    pub async fn plan(&self) -> Result<Plan> {
        let (_, stream) = self.read().await?;
        self.build_plan(stream).await.map(|(plan, _)| plan)
    }

    /// Phase 2: the filters checked to select something, the plan, content
    /// already stored found (in the mirror and the content index), the
    /// space checked (not enforced). Says too whether every products file
    /// was read (none unchanged since the last run).
    async fn build_plan(&self, stream: Stream) -> Result<(Plan, bool)> {
        let whole = stream.unchanged.is_empty();
        if whole {
            check_filters(&self.options.filters, &stream)?;
        }
        let unchanged: Vec<String> = (stream.unchanged.iter())
            .map(|u| u.content_id.clone())
            .collect();
        let mut plan = Plan::build(stream, self.store(), &self.options).await?;
        if let Some(index) = self.content_index() {
            plan.use_content_index(&index);
            if self.options.item_download {
                plan.check_shared_files(&index, self.store(), &unchanged)
                    .await;
            }
        }
        plan.check_space(self.store(), self.settings.min_free).await;
        Ok((plan, whole))
    }

    fn content_index(&self) -> Option<ContentIndex> {
        self.settings.content_index.as_ref().map(ContentIndex::new)
    }

    /// Runs the job: takes the lock, checks the store is writable, reads the
    /// metadata (conditionally), plans, checks the wipe guard and the free
    /// space, executes and publishes, then remembers what it fetched for the
    /// next run.
    pub async fn run(&self, progress: Arc<dyn Progress>) -> Result<Summary> {
        let started = Instant::now();
        let _lease = self.store.lock(self.settings.wait).await?;
        self.store.check_writable().await?;
        self.repair_signatures().await?;
        let (cache, stream) = self.read().await?;
        let seen = cache.seen(&stream);
        let (plan, whole) = self.build_plan(stream).await?;
        if self.options.prune
            && let Some(share) = self.settings.wipe_guard
        {
            check_wipe_guard(&plan, self.store(), share).await?;
        }
        if whole && self.settings.wipe_guard.is_some() {
            check_not_emptied(&plan, self.store())?;
        }
        if let Some(space) = &plan.space {
            space.require()?;
        }
        progress.planned(&plan);
        let scheduled = plan.new_deletions() > 0;
        let listener = progress.clone();
        let on_bytes: ProgressFn = Arc::new(move |n| listener.transferred(n));
        let jobs = ExecuteOptions {
            jobs: self.settings.jobs,
            delete_delay: self.settings.delete_delay,
            content_index: self.content_index(),
            verify_links: self.options.verify_existing,
            publication: self.settings.publication.clone(),
            plain_twins: self.settings.plain_twins,
        };
        let report = execute(plan, self.reader.source(), self.store(), &jobs, on_bytes).await?;
        FetchCache::after_run(self.cache_key(), seen, self.store())
            .await?
            .save(self.store())
            .await?;
        Ok(Summary {
            changed: report.files > 0
                || report.linked > 0
                || report.deleted > 0
                || scheduled
                || !report.published.is_empty(),
            report,
            elapsed: started.elapsed(),
        })
    }

    /// Before phase 1, in a re-signed mirror: every published signature
    /// verified with the mirror's key, and one that does not (a kill
    /// between the renames of a pair) made again: see
    /// [`crate::resign::repair_signatures`].
    async fn repair_signatures(&self) -> Result<()> {
        if let Publication::Resigned(key) = &self.settings.publication {
            let index = crate::holdings::json_path(self.reader.entry());
            crate::resign::repair_signatures(self.store(), key, &index).await?;
        }
        Ok(())
    }

    /// Phase 1: the stream, read conditionally against the fetch cache of
    /// the last run with the same options (not with `verify_existing`,
    /// which re-reads everything).
    async fn read(&self) -> Result<(FetchCache, Stream)> {
        let cache = if self.options.verify_existing {
            FetchCache::default()
        } else {
            FetchCache::load(self.store(), &self.cache_key()).await
        };
        let stream = {
            let upstream_copies = matches!(self.settings.publication, Publication::Upstream);
            let conditional = cache.previous(self.store(), upstream_copies);
            let previous: Option<&dyn Previous> =
                (!cache.docs.is_empty()).then_some(&conditional as &dyn Previous);
            read_stream(&self.reader, previous).await?
        };
        Ok((cache, stream))
    }

    /// The key of this job's fetch cache.
    fn cache_key(&self) -> String {
        let key = CacheKey {
            version: env!("CARGO_PKG_VERSION"),
            source: self.reader.source().root().as_str(),
            entry: self.reader.entry().as_str(),
            filters: self.options.filters.to_string(),
            max: self.options.max,
            keep: self.options.keep,
            item_download: self.options.item_download,
            prune: self.options.prune,
            resigned_by: self.settings.publication.cache_token(),
        };
        serde_json::to_string(&key).unwrap_or_default()
    }
}

/// Checks that the filters select something of the stream's products files
/// (see [`crate::filter::SelectionCheck`]), flattening one item at a time.
fn check_filters(filters: &crate::filter::FilterGroups, stream: &Stream) -> Result<()> {
    if filters.matches_everything() {
        return Ok(());
    }
    let mut check = crate::filter::SelectionCheck::new(filters);
    for doc in &stream.products {
        let products = &doc.products;
        for e in products.items() {
            check.observe(&flatten(
                products,
                e.product_name,
                e.version_name,
                e.item_name,
            ));
        }
    }
    check.finish()
}
