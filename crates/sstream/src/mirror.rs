//! `sstream mirror` / `sstream-mirror`: fetch and verify metadata, plan,
//! execute, publish.

use crate::cli::MirrorArgs;
use crate::progress::{Progress, human};
use simplestreams::execute::{ExecuteOptions, execute};
use simplestreams::filter::FilterSet;
use simplestreams::metadata::{
    CachedDocument, Conditional, FetchCache, FileStamp, MetadataReader, Stream, read_stream_cached,
    sha256_hex,
};
use simplestreams::plan::{MirrorOptions, Plan, check_wipe_guard};
use simplestreams::source::{Source, TransferOptions, source_url};
use simplestreams::store::DirStore;
use std::io::Write;
use std::time::{Duration, Instant};

/// Share of the mirror `--prune` may delete without `--force`.
const WIPE_GUARD: f64 = 0.5;

/// Runs a mirror.
pub fn run(args: MirrorArgs) -> Result<(), String> {
    args.stream.init_logging()?;
    if args.keep && args.max.is_none() {
        return Err(
            "--keep needs --max: it keeps versions gone from the source up to --max".into(),
        );
    }
    let filters = FilterSet::parse(&args.filters).map_err(|e| e.to_string())?;
    let (spec, verification) = args.stream.open(&args.source)?;
    let mirrors = args
        .mirrors
        .iter()
        .map(|m| source_url(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let transfer = TransferOptions {
        retries: args.retries,
        idle_timeout: Duration::from_secs_f64(args.timeout.max(0.1)),
        ..TransferOptions::default()
    };
    let source = Source::new(spec.root.clone(), mirrors, transfer).map_err(|e| e.to_string())?;
    let options = MirrorOptions {
        filters,
        max: args.max,
        keep: args.keep,
        item_download: !args.no_item_download,
        prune: args.prune,
        verify_existing: args.verify_existing,
    };
    let store = DirStore::new(&args.output_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let _lock = if args.dry_run {
            None
        } else {
            Some(store.lock(args.wait).map_err(|e| e.to_string())?)
        };
        let started = Instant::now();
        let reader = MetadataReader::new(source.clone(), &spec.entry, verification);
        let key = cache_key(&args, &spec.root);
        let cache = store.load_cache(&key);
        let conditional = (cache.key == key && !args.verify_existing).then_some(Conditional {
            cache: &cache,
            store: &store,
        });
        let stream = read_stream_cached(&reader, &spec.entry, conditional.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        let seen = fetched_documents(&stream, &cache);
        let plan = Plan::build(stream, &store, &options).map_err(|e| e.to_string())?;
        if args.dry_run {
            let mut out = std::io::stdout().lock();
            for line in plan.report() {
                writeln!(out, "{line}").map_err(|e| format!("stdout: {e}"))?;
            }
            return Ok(());
        }
        let chatty = args.progress || args.stream.verbose > 0;
        if chatty {
            for line in plan.report() {
                eprintln!("{line}");
            }
        }
        if args.prune && !args.force {
            check_wipe_guard(&plan, &store, WIPE_GUARD).map_err(|e| e.to_string())?;
        }
        let progress = Progress::new(plan.download_bytes(), args.progress);
        let jobs = ExecuteOptions { jobs: args.jobs };
        let result = execute(plan, &source, &store, &jobs, progress.callback()).await;
        progress.finish();
        let report = result.map_err(describe)?;
        save_cache(&store, key, seen)?;
        if chatty {
            eprintln!(
                "mirrored {} file(s), {} in {:.1}s; {} stream(s) published, {} file(s) removed",
                report.files,
                human(report.bytes),
                started.elapsed().as_secs_f64(),
                report.published.len(),
                report.deleted
            );
        }
        Ok(())
    })
}

/// What the cache is valid for: the same source root and the same options.
fn cache_key(args: &MirrorArgs, root: &url::Url) -> String {
    format!(
        "{} {root} filters={:?} max={:?} keep={} items={} prune={}",
        env!("CARGO_PKG_VERSION"),
        args.filters,
        args.max,
        args.keep,
        !args.no_item_download,
        args.prune
    )
}

/// The documents of this run, to remember for conditional requests: those
/// fetched (their state is filled in once the run is done) and, as they
/// were, those the server reported unchanged.
fn fetched_documents(stream: &Stream, old: &FetchCache) -> Vec<(String, CachedDocument, bool)> {
    let fetched = |doc: &simplestreams::metadata::Document, cid: Option<&str>| {
        let cached = CachedDocument {
            validators: doc.validators.clone(),
            sha256: sha256_hex(&doc.raw),
            content_id: cid.map(str::to_owned),
            state_sha256: None,
            stamp: None,
            state_stamp: None,
        };
        (doc.rel.to_string(), cached, true)
    };
    let mut out: Vec<_> = stream.index.iter().map(|d| fetched(d, None)).collect();
    out.extend(
        stream
            .products
            .iter()
            .map(|p| fetched(&p.document, Some(&p.content_id))),
    );
    for u in &stream.unchanged {
        if let Some(cached) = old.docs.get(u.rel.as_str()) {
            out.push((u.rel.to_string(), cached.clone(), false));
        }
    }
    out
}

/// Saves the validators of a successful run, with the stamps of the
/// published copies and of the state each products file left behind.
fn save_cache(
    store: &DirStore,
    key: String,
    seen: Vec<(String, CachedDocument, bool)>,
) -> Result<(), String> {
    let mut cache = FetchCache {
        key,
        docs: Default::default(),
    };
    for (rel, mut doc, fetched) in seen {
        if doc.validators.is_empty() {
            continue;
        }
        if fetched {
            if let Ok(rel) = simplestreams::path::RelPath::parse(&rel) {
                doc.stamp = FileStamp::of(&rel.under(store.root()));
            }
            if let Some(cid) = &doc.content_id {
                let state = store.state_bytes(cid).map_err(|e| e.to_string())?;
                doc.state_sha256 = state.map(|b| sha256_hex(&b));
                doc.state_stamp = store.state_path(cid).ok().and_then(|p| FileStamp::of(&p));
            }
        }
        cache.docs.insert(rel, doc);
    }
    store.save_cache(&cache).map_err(|e| e.to_string())
}

/// Several failures: each on its own line, then the summary.
fn describe(e: simplestreams::Error) -> String {
    match e {
        simplestreams::Error::ItemsFailed { failed, first, all } => {
            let mut lines = vec![first.to_string()];
            lines.extend(all.iter().map(ToString::to_string));
            format!(
                "{}\n{failed} item(s) failed; the streams that need them were not published",
                lines.join("\n")
            )
        }
        other => other.to_string(),
    }
}
