//! Auditing a mirror as a client (MAAS) would see it: every metadata document
//! parses and verifies, every mirrored item is there with the right size
//! (and, on request, the right checksum), and nothing else is lying around.
//!
//! Two kinds of target:
//!
//! - **A local directory** (a path or a `file://` URL). What is mirrored is
//!   known: the state trees `.data/<content_id>` and `.data/references.json`.
//!   Every item they record must exist; `references.json` must agree with
//!   the state; files nothing references are reported as orphans, `.part`
//!   and temporary files as leftovers. A products file without a state tree
//!   is checked with the client rule below.
//! - **A served mirror** (`http://`, `https://`). `.data/` is not served, so
//!   what was filtered is unknown. The client rule: only the newest version
//!   of each product matters (that is what MAAS uses); it counts as mirrored
//!   when at least one of its items is served, and then all of its items
//!   must be served with the right size (`Content-Length` of a `HEAD`). A
//!   stream of which no newest version is served at all is a problem too.
//!
//! Metadata that does not parse or verify, and a target that cannot be read
//! at all, are an [`Error`] rather than a [`Problem`]: [`problem_of_error`]
//! turns one into the other for reports.

use crate::error::{Error, Result};
use crate::format::Products;
use crate::hash::verify_path as verify_file_blocking;
use crate::metadata::{MetadataReader, Stream, Verification, read_stream};
use crate::path::RelPath;
use crate::source::{Expected, Hasher, Source, SourceSpec, TransferOptions, join_url, root_cause};
use crate::store::{DATA_DIR, DirStore, REFERENCES, Store, is_state_name};
use futures_util::StreamExt;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use url::Url;

/// What an audit does besides the basic checks.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Also hash every item and compare its checksum.
    pub full: bool,
    /// Items checked at the same time (hashing, HTTP requests).
    pub jobs: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            full: false,
            jobs: 4,
        }
    }
}

/// The kind of a [`Problem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// A metadata document does not parse or verify.
    Metadata,
    /// The target (or its entry document) cannot be read at all.
    Unreachable,
    /// A mirrored item is not there (or not a regular file).
    Missing,
    /// A mirrored item has the wrong size.
    Size,
    /// A mirrored item has the wrong checksum (`--full`).
    Checksum,
    /// An item could not be read or requested (I/O or HTTP error).
    Unreadable,
    /// A `references.json` entry whose file is missing.
    Dangling,
    /// `references.json` and the state trees disagree, or
    /// `references.json` is malformed.
    References,
    /// A state tree under `.data/` is malformed.
    State,
    /// A products file has no state tree: checked with the client rule.
    NoState,
    /// A file under the root that nothing references.
    Orphan,
    /// A `.part` download, a temporary file, or a file whose deletion an
    /// interrupted run scheduled.
    Leftover,
}

impl ProblemKind {
    /// The kind's name as printed and in JSON (`missing`, `orphan`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Metadata => "metadata",
            ProblemKind::Unreachable => "unreachable",
            ProblemKind::Missing => "missing",
            ProblemKind::Size => "size",
            ProblemKind::Checksum => "checksum",
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::Dangling => "dangling",
            ProblemKind::References => "references",
            ProblemKind::State => "state",
            ProblemKind::NoState => "no-state",
            ProblemKind::Orphan => "orphan",
            ProblemKind::Leftover => "leftover",
        }
    }

    /// Whether this kind is only a warning (clients are not affected):
    /// orphans, leftovers and a missing state tree.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            ProblemKind::Orphan | ProblemKind::Leftover | ProblemKind::NoState
        )
    }

    /// Whether this kind means the metadata could not be used at all.
    pub fn is_fatal(self) -> bool {
        matches!(self, ProblemKind::Metadata | ProblemKind::Unreachable)
    }
}

/// One finding of an audit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// What is wrong.
    pub kind: ProblemKind,
    /// The local file or the URL concerned.
    #[serde(rename = "path_or_url")]
    pub location: String,
    /// Why, in one line.
    pub detail: String,
}

impl Problem {
    fn new(kind: ProblemKind, location: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            location: location.into(),
            detail: detail.into(),
        }
    }
}

/// The outcome of an audit.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Metadata documents read and verified.
    pub documents: usize,
    /// Distinct item files checked.
    pub items_checked: usize,
    /// Bytes of the item files found (hashed too with `--full`).
    pub bytes_checked: u64,
    /// Newest versions not checked because none of their items is served
    /// (URL targets and products files without state only).
    pub versions_skipped: usize,
    /// Everything found wrong, errors first, then by location.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Problems that affect clients.
    pub fn errors(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| !p.kind.is_warning())
            .count()
    }

    /// Problems that do not affect clients (orphans, leftovers...).
    pub fn warnings(&self) -> usize {
        self.problems.len() - self.errors()
    }

    fn sort(&mut self) {
        self.problems.sort_by(|a, b| {
            (a.kind.is_warning(), &a.location, a.kind).cmp(&(
                b.kind.is_warning(),
                &b.location,
                b.kind,
            ))
        });
    }
}

/// Turns an error that stopped an audit into its problem: `unreachable` for
/// transfer and I/O errors, `metadata` for everything else.
pub fn problem_of_error(e: &Error) -> Problem {
    let kind = match e {
        Error::Transfer { .. } | Error::Io { .. } => ProblemKind::Unreachable,
        _ => ProblemKind::Metadata,
    };
    let location = match e {
        Error::Transfer { url, .. }
        | Error::Metadata { url, .. }
        | Error::Signature { url, .. }
        | Error::Integrity { url, .. } => url.clone(),
        Error::Io { path, .. } | Error::Keyring { path, .. } | Error::Locked { path, .. } => {
            path.display().to_string()
        }
        Error::UnsafePath { context, .. } => context.clone(),
        _ => String::new(),
    };
    Problem::new(kind, location, e.to_string())
}

/// Audits the mirror at `spec`: a local directory for `file://` roots, a
/// served mirror for `http(s)://` roots (see the module documentation).
///
/// # Errors
/// The entry document or a products file cannot be read, parsed or
/// verified, or the target is not there.
pub async fn audit(
    spec: &SourceSpec,
    verification: Verification,
    options: &AuditOptions,
) -> Result<Report> {
    let transfer = TransferOptions {
        retries: 2,
        backoff: Duration::from_millis(200),
        ..TransferOptions::default()
    };
    let local = if spec.root.scheme() == "file" {
        let root = spec
            .root
            .to_file_path()
            .map_err(|()| Error::transfer(spec.root.as_str(), "not a local directory"))?;
        // Without the trailing slash of the URL.
        let root: std::path::PathBuf = root.components().collect();
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::transfer(
                    root.display().to_string(),
                    "not a directory",
                ));
            }
            Err(e) => return Err(Error::io(root, e)),
        }
        Some(root)
    } else {
        None
    };
    let source = Source::new(spec.root.clone(), Vec::new(), transfer.clone())?;
    let reader = MetadataReader::new(source, spec.entry.clone(), verification);
    let stream = read_stream(&reader, None).await?;
    let mut report = match local {
        Some(root) => {
            let (entry, options) = (spec.entry.clone(), options.clone());
            tokio::task::spawn_blocking(move || audit_dir(&root, &entry, &stream, &options))
                .await
                .map_err(|e| Error::transfer(spec.root.as_str(), e.to_string()))?
        }
        None => audit_url(&spec.root, &stream, options, &transfer).await?,
    };
    report.sort();
    Ok(report)
}

fn document_count(stream: &Stream) -> usize {
    usize::from(stream.index.is_some()) + stream.products.len()
}

/// What a mirrored item file must be, and who records it.
#[derive(Debug, Clone)]
struct Wanted {
    expected: Expected,
    /// `content_id/product/version/item` of the first item naming it.
    reference: String,
}

/// The items of the newest version of each product that name a file:
/// `(product/version, [(path, expected, reference)])`.
type ClientVersions = Vec<(String, Vec<(RelPath, Wanted)>)>;

fn client_versions(content_id: &str, products: &Products) -> ClientVersions {
    let mut out = Vec::new();
    for (pname, product) in &products.products {
        let Some((vname, version)) = product.versions.iter().next_back() else {
            continue;
        };
        let items: Vec<(RelPath, Wanted)> = version
            .items
            .iter()
            .filter_map(|(iname, item)| {
                let path = item.path.clone()?;
                Some((
                    path,
                    Wanted {
                        expected: Expected {
                            size: item.size,
                            checksum: item.checksum.clone(),
                        },
                        reference: format!("{content_id}/{pname}/{vname}/{iname}"),
                    },
                ))
            })
            .collect();
        if !items.is_empty() {
            out.push((format!("{pname}/{vname}"), items));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Local directories.

fn display(root: &Path, rel: &str) -> String {
    let mut p = root.to_path_buf();
    p.extend(rel.split('/'));
    p.display().to_string()
}

/// What stat says about an item file.
enum Found {
    File(u64),
    NotRegular,
    Absent,
    Error(String),
}

fn stat(path: &Path) -> Found {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Found::File(m.len()),
        Ok(m) if m.file_type().is_symlink() => Found::NotRegular,
        Ok(_) => Found::NotRegular,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Found::Absent,
        Err(e) => Found::Error(e.to_string()),
    }
}

fn audit_dir(root: &Path, entry: &RelPath, stream: &Stream, options: &AuditOptions) -> Report {
    let mut report = Report {
        documents: document_count(stream),
        ..Report::default()
    };
    let store = DirStore::new(root);
    let data = root.join(DATA_DIR);

    // The state: every `.data/<content_id>` tree, references, pending deletes.
    let mut states: BTreeMap<String, Products> = BTreeMap::new();
    let mut leftovers: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut has_references = false;
    if let Ok(dir) = fs::read_dir(&data) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_file = e.file_type().is_ok_and(|t| t.is_file());
            if !is_file {
                continue;
            }
            if name == REFERENCES {
                has_references = true;
                continue;
            }
            if name.starts_with('.') {
                leftovers.insert(
                    format!("{DATA_DIR}/{name}"),
                    "temporary file of an interrupted write",
                );
                continue;
            }
            if !is_state_name(&name) {
                continue;
            }
            match store.load_state(&name) {
                Ok(tree) => {
                    states.insert(name, tree);
                }
                Err(e) => report.problems.push(Problem::new(
                    ProblemKind::State,
                    display(root, &format!("{DATA_DIR}/{name}")),
                    format!("cannot use the mirror state: {e}"),
                )),
            }
        }
    }
    let references = if has_references {
        match store.load_references() {
            Ok(r) => Some(r),
            Err(e) => {
                report.problems.push(Problem::new(
                    ProblemKind::References,
                    display(root, &format!("{DATA_DIR}/{REFERENCES}")),
                    e.to_string(),
                ));
                None
            }
        }
    } else {
        None
    };
    let pending = store.load_pending_deletes().unwrap_or_default();

    // What the state records as mirrored, per path.
    let mut wanted: BTreeMap<RelPath, Wanted> = BTreeMap::new();
    let mut state_refs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (cid, tree) in &states {
        for (pname, product) in &tree.products {
            for (vname, version) in &product.versions {
                for (iname, item) in &version.items {
                    let Some(path) = &item.path else { continue };
                    let reference = format!("{cid}/{pname}/{vname}/{iname}");
                    state_refs
                        .entry(path.to_string())
                        .or_default()
                        .insert(reference.clone());
                    wanted.entry(path.clone()).or_insert_with(|| Wanted {
                        expected: Expected {
                            size: item.size,
                            checksum: item.checksum.clone(),
                        },
                        reference,
                    });
                }
            }
        }
    }

    // references.json against the state.
    match &references {
        Some(refs) => {
            for (path, list) in refs {
                let listed: BTreeSet<String> = list.iter().cloned().collect();
                let recorded = state_refs.get(path).cloned().unwrap_or_default();
                let extra: Vec<&String> = listed.difference(&recorded).collect();
                let lacking: Vec<&String> = recorded.difference(&listed).collect();
                if !extra.is_empty() {
                    report.problems.push(Problem::new(
                        ProblemKind::References,
                        display(root, path),
                        format!(
                            "references.json lists {} that no .data state records",
                            join(&extra)
                        ),
                    ));
                }
                if !lacking.is_empty() {
                    report.problems.push(Problem::new(
                        ProblemKind::References,
                        display(root, path),
                        format!(
                            "recorded in .data as {} but not listed in references.json",
                            join(&lacking)
                        ),
                    ));
                }
            }
            for (path, recorded) in &state_refs {
                if !refs.contains_key(path) {
                    let recorded: Vec<&String> = recorded.iter().collect();
                    report.problems.push(Problem::new(
                        ProblemKind::References,
                        display(root, path),
                        format!(
                            "recorded in .data as {} but not listed in references.json",
                            join(&recorded)
                        ),
                    ));
                }
            }
        }
        None if has_references => {}
        None if !state_refs.is_empty() => report.problems.push(Problem::new(
            ProblemKind::References,
            display(root, &format!("{DATA_DIR}/{REFERENCES}")),
            "missing, although the .data state records mirrored items",
        )),
        None => {}
    }

    // Dangling references: files listed only in references.json.
    let mut known: BTreeSet<String> = wanted.keys().map(|p| p.to_string()).collect();
    for path in references.iter().flat_map(|r| r.keys()) {
        if wanted.keys().any(|w| w.as_str() == path) {
            continue;
        }
        known.insert(path.clone());
        let Ok(rel) = RelPath::parse(path) else {
            report.problems.push(Problem::new(
                ProblemKind::References,
                format!("{DATA_DIR}/{REFERENCES}"),
                format!("unsafe path {path:?}"),
            ));
            continue;
        };
        if !matches!(stat(&rel.under(root)), Found::File(_)) {
            report.problems.push(Problem::new(
                ProblemKind::Dangling,
                display(root, path),
                "listed in references.json, but the file is missing",
            ));
        }
    }

    // Products files the state says nothing about: the client rule.
    let mut client: ClientVersions = Vec::new();
    let mut named: BTreeSet<String> = BTreeSet::new();
    for pd in &stream.products {
        if states.contains_key(&pd.content_id) {
            continue;
        }
        report.problems.push(Problem::new(
            ProblemKind::NoState,
            display(root, &format!("{DATA_DIR}/{}", pd.content_id)),
            format!(
                "no mirror state for {}: checked the newest version of each product as a client would",
                pd.content_id
            ),
        ));
        client.extend(client_versions(&pd.content_id, &pd.products));
        // Whatever the products file names is not an orphan.
        for product in pd.products.products.values() {
            for version in product.versions.values() {
                for item in version.items.values() {
                    if let Some(p) = &item.path {
                        named.insert(p.to_string());
                    }
                }
            }
        }
    }

    // Stat every recorded item; queue the ones of the right size for hashing.
    let mut to_hash: Vec<(RelPath, Wanted)> = Vec::new();
    for (path, want) in &wanted {
        check_local(root, path, want, options, &mut report, &mut to_hash);
    }
    let mut any_client_item = false;
    let mut any_client_served = false;
    for (version, items) in &client {
        any_client_item = true;
        let found: Vec<Found> = items.iter().map(|(p, _)| stat(&p.under(root))).collect();
        if !found.iter().any(|f| matches!(f, Found::File(_))) {
            report.versions_skipped += 1;
            log::debug!("{version}: no item present; taken as not mirrored");
            continue;
        }
        any_client_served = true;
        for (path, want) in items {
            if known.insert(path.to_string()) {
                check_local(root, path, want, options, &mut report, &mut to_hash);
            }
        }
    }
    if any_client_item && !any_client_served {
        report.problems.push(Problem::new(
            ProblemKind::Missing,
            root.display().to_string(),
            "no item of the newest version of any product is present",
        ));
    }
    if options.full {
        hash_local(root, to_hash, options.jobs, &mut report);
    }

    // Orphans and leftovers.
    let mut metadata: BTreeSet<String> = stream
        .products
        .iter()
        .map(|p| p.document.rel.to_string())
        .collect();
    if let Some(index) = &stream.index {
        metadata.insert(index.rel.to_string());
    }
    known.extend(named);
    let meta_dir = entry.ancestors().next().unwrap_or("").to_owned();
    let mut walker = Walker {
        root,
        known: &known,
        metadata: &metadata,
        meta_dir: &meta_dir,
        pending: &pending,
        leftovers: &mut leftovers,
        problems: &mut report.problems,
    };
    walker.walk(root, "");
    for (rel, why) in leftovers {
        report.problems.push(Problem::new(
            ProblemKind::Leftover,
            display(root, &rel),
            why,
        ));
    }
    report
}

fn join(list: &[&String]) -> String {
    list.iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_local(
    root: &Path,
    path: &RelPath,
    want: &Wanted,
    options: &AuditOptions,
    report: &mut Report,
    to_hash: &mut Vec<(RelPath, Wanted)>,
) {
    report.items_checked += 1;
    let shown = display(root, path.as_str());
    match stat(&path.under(root)) {
        Found::File(len) => {
            report.bytes_checked += len;
            match want.expected.size {
                Some(size) if size != len => report.problems.push(Problem::new(
                    ProblemKind::Size,
                    shown,
                    format!("size {len}, expected {size} ({})", want.reference),
                )),
                _ if options.full && want.expected.checksum.is_some() => {
                    to_hash.push((path.clone(), want.clone()));
                }
                _ => {}
            }
        }
        Found::NotRegular => report.problems.push(Problem::new(
            ProblemKind::Missing,
            shown,
            format!("not a regular file ({})", want.reference),
        )),
        Found::Absent => report.problems.push(Problem::new(
            ProblemKind::Missing,
            shown,
            format!("recorded as mirrored ({}), file not found", want.reference),
        )),
        Found::Error(e) => report.problems.push(Problem::new(
            ProblemKind::Unreadable,
            shown,
            format!("{e} ({})", want.reference),
        )),
    }
}

/// Hashes files on `jobs` threads (1 MiB buffer each).
fn hash_local(root: &Path, files: Vec<(RelPath, Wanted)>, jobs: usize, report: &mut Report) {
    let next = AtomicUsize::new(0);
    let found: Mutex<Vec<Problem>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, 64).min(files.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, want)) = files.get(i) else {
                        break;
                    };
                    let shown = display(root, path.as_str());
                    log::debug!("hashing {shown}");
                    let problem =
                        match verify_file_blocking(&path.under(root), &want.expected, &shown) {
                            Ok(()) => continue,
                            Err(Error::Integrity { reason, .. }) => {
                                let kind = if reason.starts_with("size") {
                                    ProblemKind::Size
                                } else {
                                    ProblemKind::Checksum
                                };
                                Problem::new(kind, shown, format!("{reason} ({})", want.reference))
                            }
                            Err(e) => Problem::new(ProblemKind::Unreadable, shown, e.to_string()),
                        };
                    if let Ok(mut f) = found.lock() {
                        f.push(problem);
                    }
                }
            });
        }
    });
    report
        .problems
        .extend(found.into_inner().unwrap_or_else(|e| e.into_inner()));
}

/// Walks the root for files nothing references.
struct Walker<'a> {
    root: &'a Path,
    known: &'a BTreeSet<String>,
    metadata: &'a BTreeSet<String>,
    meta_dir: &'a str,
    pending: &'a BTreeSet<String>,
    leftovers: &'a mut BTreeMap<String, &'static str>,
    problems: &'a mut Vec<Problem>,
}

impl Walker<'_> {
    fn walk(&mut self, dir: &Path, prefix: &str) {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                self.problems.push(Problem::new(
                    ProblemKind::Unreadable,
                    dir.display().to_string(),
                    format!("cannot list the directory: {e}"),
                ));
                return;
            }
        };
        let mut entries: Vec<fs::DirEntry> = entries.flatten().collect();
        entries.sort_by_key(fs::DirEntry::file_name);
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if prefix.is_empty() && name == DATA_DIR {
                continue;
            }
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                self.walk(&e.path(), &rel);
                continue;
            }
            if self.known.contains(&rel) || self.metadata.contains(&rel) {
                continue;
            }
            if crate::layout::is_part_name(&name) {
                self.leftovers.insert(rel, "partial download (.part)");
            } else if crate::layout::is_temp_name(&name) {
                self.leftovers
                    .insert(rel, "temporary file of an interrupted write");
            } else if self.pending.contains(&rel) {
                self.leftovers
                    .insert(rel, "scheduled for deletion by an interrupted run");
            } else if prefix == self.meta_dir
                && kind.is_file()
                && (name.ends_with(".json") || name.ends_with(".sjson"))
            {
                // Metadata of another family (index.json beside index.sjson).
                log::debug!("{rel}: metadata not walked from the entry; not checked");
            } else {
                let what = if kind.is_symlink() {
                    "symbolic link"
                } else {
                    "file"
                };
                self.problems.push(Problem::new(
                    ProblemKind::Orphan,
                    display(self.root, &rel),
                    format!("{what} not referenced by the mirror state or metadata"),
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Served mirrors.

/// What a HEAD request says about an item.
#[derive(Debug, Clone)]
enum Served {
    Present(Option<u64>),
    Absent(String),
    Error(String),
}

async fn audit_url(
    root: &Url,
    stream: &Stream,
    options: &AuditOptions,
    transfer: &TransferOptions,
) -> Result<Report> {
    let mut report = Report {
        documents: document_count(stream),
        ..Report::default()
    };
    let client = reqwest::Client::builder()
        .connect_timeout(transfer.connect_timeout)
        .read_timeout(transfer.idle_timeout)
        .user_agent(concat!("sstream/", env!("CARGO_PKG_VERSION"), " verify"))
        .build()
        .map_err(|e| Error::Refused(format!("cannot set up the HTTP client: {e}")))?;
    let versions: ClientVersions = stream
        .products
        .iter()
        .flat_map(|pd| client_versions(&pd.content_id, &pd.products))
        .collect();
    // HEAD each distinct path once.
    let paths: BTreeSet<RelPath> = versions
        .iter()
        .flat_map(|(_, items)| items.iter().map(|(p, _)| p.clone()))
        .collect();
    let served: BTreeMap<RelPath, Served> = futures_util::stream::iter(paths)
        .map(|p| {
            let client = &client;
            async move {
                let url = join_url(root, &p);
                let s = head(client, &url).await;
                (p, s)
            }
        })
        .buffer_unordered(options.jobs.clamp(1, 64) * 2)
        .collect()
        .await;

    let mut checked: BTreeSet<RelPath> = BTreeSet::new();
    let mut to_hash: Vec<(RelPath, Wanted)> = Vec::new();
    let mut any_served = false;
    for (version, items) in &versions {
        let mirrored = items
            .iter()
            .any(|(p, _)| matches!(served.get(p), Some(Served::Present(_))));
        if !mirrored {
            report.versions_skipped += 1;
            log::debug!("{version}: no item served; taken as not mirrored");
            for (p, _) in items {
                if let Some(Served::Error(e)) = served.get(p)
                    && checked.insert(p.clone())
                {
                    report.problems.push(Problem::new(
                        ProblemKind::Unreadable,
                        join_url(root, p).to_string(),
                        e.clone(),
                    ));
                }
            }
            continue;
        }
        any_served = true;
        for (path, want) in items {
            if !checked.insert(path.clone()) {
                continue;
            }
            report.items_checked += 1;
            let url = join_url(root, path).to_string();
            match served.get(path) {
                Some(Served::Present(len)) => {
                    report.bytes_checked += len.unwrap_or(0);
                    match (len, want.expected.size) {
                        (Some(len), Some(size)) if *len != size => {
                            report.problems.push(Problem::new(
                                ProblemKind::Size,
                                url,
                                format!(
                                    "Content-Length {len}, expected {size} ({})",
                                    want.reference
                                ),
                            ));
                        }
                        _ if options.full => to_hash.push((path.clone(), want.clone())),
                        _ => {}
                    }
                }
                Some(Served::Absent(status)) => report.problems.push(Problem::new(
                    ProblemKind::Missing,
                    url,
                    format!(
                        "{status}, but other items of {version} are served ({})",
                        want.reference
                    ),
                )),
                Some(Served::Error(e)) => {
                    report
                        .problems
                        .push(Problem::new(ProblemKind::Unreadable, url, e.clone()));
                }
                None => {}
            }
        }
    }
    if !versions.is_empty() && !any_served {
        report.problems.push(Problem::new(
            ProblemKind::Missing,
            root.to_string(),
            "no item of the newest version of any product is served",
        ));
    }
    if options.full {
        let found: Vec<Option<Problem>> = futures_util::stream::iter(to_hash)
            .map(|(path, want)| {
                let client = &client;
                async move {
                    let url = join_url(root, &path);
                    hash_remote(client, &url, &want).await
                }
            })
            .buffer_unordered(options.jobs.clamp(1, 64))
            .collect()
            .await;
        report.problems.extend(found.into_iter().flatten());
    }
    Ok(report)
}

fn content_length(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get(reqwest::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// HEAD an item; a transient failure (connection error, 5xx, 429) is tried
/// once more after a short pause.
async fn head(client: &reqwest::Client, url: &Url) -> Served {
    match head_once(client, url).await {
        (Served::Error(_), true) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            head_once(client, url).await.0
        }
        (s, _) => s,
    }
}

/// One HEAD request, and whether a failure may be transient.
async fn head_once(client: &reqwest::Client, url: &Url) -> (Served, bool) {
    let mut resp = client.head(url.clone()).send().await;
    if let Ok(r) = &resp
        && matches!(r.status().as_u16(), 405 | 501)
    {
        // No HEAD: a GET whose body is dropped unread.
        resp = client.get(url.clone()).send().await;
    }
    match resp {
        Ok(r) if r.status().is_success() => (Served::Present(content_length(&r)), false),
        Ok(r) if matches!(r.status().as_u16(), 404 | 410) => {
            (Served::Absent(format!("HTTP {}", r.status())), false)
        }
        Ok(r) => {
            let transient = r.status().is_server_error() || r.status().as_u16() == 429;
            (Served::Error(format!("HTTP {}", r.status())), transient)
        }
        Err(e) => (Served::Error(root_cause(&e)), true),
    }
}

/// Streams an item and checks its size and checksum (bounded memory).
async fn hash_remote(client: &reqwest::Client, url: &Url, want: &Wanted) -> Option<Problem> {
    let problem = |kind, detail: String| {
        Some(Problem::new(
            kind,
            url.to_string(),
            format!("{detail} ({})", want.reference),
        ))
    };
    log::debug!("hashing {url}");
    let resp = match client.get(url.clone()).send().await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => return problem(ProblemKind::Unreadable, format!("HTTP {}", r.status())),
        Err(e) => return problem(ProblemKind::Unreadable, root_cause(&e)),
    };
    let mut hasher = Hasher::for_checksum(want.expected.checksum.as_ref());
    let mut size = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                size += c.len() as u64;
                hasher.update(&c);
            }
            Err(e) => return problem(ProblemKind::Unreadable, root_cause(&e)),
        }
    }
    if let Some(want_size) = want.expected.size
        && size != want_size
    {
        return problem(
            ProblemKind::Size,
            format!("size {size}, expected {want_size}"),
        );
    }
    match (&want.expected.checksum, hasher.finish()) {
        (Some(c), Some(got)) if got != c.hex() => problem(
            ProblemKind::Checksum,
            format!(
                "{} mismatch: got {got}, expected {}",
                c.algorithm(),
                c.hex()
            ),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::split_source;

    fn spec(dir: &Path, path: &str) -> SourceSpec {
        split_source(dir.to_str().unwrap(), Some(path)).unwrap()
    }

    fn run(spec: &SourceSpec, full: bool) -> Result<Report> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let options = AuditOptions { full, jobs: 2 };
        rt.block_on(audit(spec, Verification::Skip, &options))
    }

    fn write(root: &Path, rel: &str, data: &[u8]) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    const PRODUCTS: &str = r#"{"format":"products:1.0","content_id":"c:1","products":{
        "p":{"versions":{
            "1":{"items":{"a":{"path":"p/1/a","size":3,"md5":"900150983cd24fb0d6963f7d28e17f72"}}},
            "2":{"items":{"a":{"path":"p/2/a","size":3,"md5":"900150983cd24fb0d6963f7d28e17f72"},
                          "b":{"path":"p/2/b","size":3,"md5":"900150983cd24fb0d6963f7d28e17f72"}}}}}}}"#;

    /// A directory with a products file, its state (version 2 only) and
    /// references, and the items.
    fn mirror() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "streams/v1/c.json", PRODUCTS.as_bytes());
        let tree = Products::parse("x", PRODUCTS.as_bytes()).unwrap();
        let mut state = tree.clone();
        state.products.get_mut("p").unwrap().versions.remove("1");
        let store = DirStore::new(root);
        store.save_state("c:1", &state).unwrap();
        let mut refs = crate::store::References::new();
        refs.insert("p/2/a".into(), vec!["c:1/p/2/a".into()]);
        refs.insert("p/2/b".into(), vec!["c:1/p/2/b".into()]);
        store.save_references(&refs).unwrap();
        write(root, "p/2/a", b"abc");
        write(root, "p/2/b", b"abc");
        dir
    }

    fn kinds(r: &Report) -> Vec<(ProblemKind, String)> {
        r.problems
            .iter()
            .map(|p| (p.kind, p.location.clone()))
            .collect()
    }

    #[test]
    fn clean_directory() {
        let dir = mirror();
        let r = run(&spec(dir.path(), "streams/v1/c.json"), true).unwrap();
        assert_eq!(kinds(&r), []);
        assert_eq!((r.documents, r.items_checked, r.bytes_checked), (1, 2, 6));
    }

    #[test]
    fn finds_missing_corrupt_orphans_and_disagreement() {
        let dir = mirror();
        let root = dir.path();
        fs::remove_file(root.join("p/2/a")).unwrap();
        write(root, "p/2/b", b"abd");
        write(root, "p/1/a", b"abc");
        write(root, "p/2/c.part", b"ab");
        let store = DirStore::new(root);
        let mut refs = store.load_references().unwrap();
        refs.insert("gone".into(), vec!["c:0/x/y/z".into()]);
        refs.remove("p/2/b");
        store.save_references(&refs).unwrap();
        let r = run(&spec(root, "streams/v1/c.json"), false).unwrap();
        let shown = |rel: &str| display(root, rel);
        assert_eq!(
            kinds(&r),
            [
                (ProblemKind::Dangling, shown("gone")),
                (ProblemKind::References, shown("gone")),
                (ProblemKind::Missing, shown("p/2/a")),
                (ProblemKind::References, shown("p/2/b")),
                (ProblemKind::Orphan, shown("p/1/a")),
                (ProblemKind::Leftover, shown("p/2/c.part")),
            ]
        );
        assert_eq!(r.errors(), 4);
        let r = run(&spec(root, "streams/v1/c.json"), true).unwrap();
        assert!(
            r.problems
                .iter()
                .any(|p| p.kind == ProblemKind::Checksum && p.location == shown("p/2/b")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn without_state_uses_the_client_rule() {
        let dir = mirror();
        let root = dir.path();
        fs::remove_dir_all(root.join(".data")).unwrap();
        let r = run(&spec(root, "streams/v1/c.json"), false).unwrap();
        assert_eq!(
            kinds(&r),
            [(ProblemKind::NoState, display(root, ".data/c:1"))]
        );
        fs::remove_file(root.join("p/2/b")).unwrap();
        let r = run(&spec(root, "streams/v1/c.json"), false).unwrap();
        assert_eq!(r.errors(), 1, "{:?}", r.problems);
        fs::remove_file(root.join("p/2/a")).unwrap();
        let r = run(&spec(root, "streams/v1/c.json"), false).unwrap();
        assert_eq!(r.versions_skipped, 1);
        assert!(
            r.problems
                .iter()
                .any(|p| p.kind == ProblemKind::Missing && p.location == root.display().to_string()),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn broken_metadata_is_an_error() {
        let dir = mirror();
        write(dir.path(), "streams/v1/c.json", b"{not json");
        let e = run(&spec(dir.path(), "streams/v1/c.json"), false).unwrap_err();
        assert_eq!(problem_of_error(&e).kind, ProblemKind::Metadata);
        let e = run(&spec(dir.path(), "streams/v1/none.json"), false).unwrap_err();
        assert_eq!(problem_of_error(&e).kind, ProblemKind::Unreachable);
        let gone = dir.path().join("gone");
        let e = run(&spec(&gone, "streams/v1/c.json"), false).unwrap_err();
        assert_eq!(problem_of_error(&e).kind, ProblemKind::Unreachable);
    }
}
