//! Auditing a mirror as a client (MAAS) would see it: every metadata document
//! parses and verifies, every mirrored item is there with the right size
//! (and, on request, the right checksum), and nothing else is lying around.
//!
//! What clients are offered is judged from the **published** metadata: the
//! tree read from the entry and, when the mirror publishes it too, the tree
//! of its twin (`index.json` beside `index.sjson`, or the other way). Every
//! item file they list is held (there, with the size and, with `--full`,
//! the checksum *as published*), missing (not there though the state or the
//! mirror's re-signed metadata says it is mirrored: a problem), or offered
//! but not held (listed by upstream's documents, never mirrored): see
//! [`Offered`]. Every published signature is checked ([`SignatureCheck`]):
//! each `.sjson` read and the `.json.gpg` of each `.json`, with the keyring
//! given, else with the mirror's own (`streams/v1/mirror-keyring.gpg`,
//! which makes a mirror re-signed), else for their form; a `.sjson` must
//! sign what its `.json` twin says.
//!
//! Three kinds of target:
//!
//! - **A local directory** (a path or a `file://` URL). What is mirrored is
//!   known: the state trees `.data/<content_id>` and `.data/references.json`.
//!   Every item they record must exist; `references.json` must agree with
//!   the state; files nothing references are reported as orphans, `.part`
//!   and temporary files as leftovers. Files of removed versions waiting out
//!   the delete delay are listed as [`Report::scheduled`], not as problems. A products file without a state tree
//!   is checked with the client rule below.
//! - **A store** that can list its files (a bucket, [`audit_store`]):
//!   audited as a directory, from one listing of it; documents and items
//!   are read through the store.
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
//!
//! # Phases
//!
//! Every read goes through one [`Source`] (its timeouts, retries, TLS and
//! proxies): the metadata, the `HEAD` probes of a served mirror
//! ([`Source::probe`]) and the hashing of items ([`Source::check`]). The
//! store of a directory or a bucket is called in `read_state` (`.data/`),
//! `ListedFiles::of` (one listing) and the `Files` implementations only.
//!
//! Every target starts with `read_published`: the entry's tree
//! (`read_stream`: its errors stop the audit), `read_twin`,
//! `check_indexes`, `read_mirror_keyring`, then `check_signatures`.
//! `listed_items` gathers every item file both trees list.
//!
//! A directory or a store's listing (`audit_files`, over `Files`):
//! 1. `read_state`: the state trees, `references.json` and the pending
//!    deletions under `.data/`.
//! 2. `recorded_files`: what the state trees record as mirrored, checked
//!    against what is published where that lists it (`prefer_published`).
//! 3. `check_references`: `references.json` lists exactly that.
//! 4. `check_dangling`: what only `references.json` lists is there.
//! 5. `stateless_products`: products files without a state tree.
//! 6. `check_recorded`: every recorded file is there, with its size.
//! 7. `check_newest_local`: the client rule on the stateless products.
//! 8. `check_listed`: every listed file not checked yet: there (checked),
//!    missing (a re-signed mirror), or offered but not held.
//! 9. `find_strays`: files nothing references (orphans), leftovers, and
//!    files scheduled for deletion.
//!
//! A served mirror (`audit_url`): `newest_versions` of every products
//! file, `probe_files` (one `HEAD` per distinct listed path), then
//! `check_served` applies the client rule and `check_served_listed` the
//! rule of phase 8 to the other listed files.
//!
//! All end (`conclude`) with `hash_files` with `--full` (the files found
//! with the right size are read and hashed), then `classify_listed`.

use crate::error::{Error, IntegrityKind, Result};
use crate::format::{ItemEntry, Products};
use crate::layout::{
    DATA_DIR, MIRROR_KEYRING, REFERENCES, is_part_name, is_state_name, is_temp_name,
};
use crate::metadata::{MetadataReader, Stream, Verification, is_signed_name, read_stream};
use crate::openpgp::{self, Keyring};
use crate::path::RelPath;
use crate::source::{Expected, Fetched, Probe, Source, SourceSpec, TransferOptions};
use crate::store::{DirStore, PendingDeletes, References, Store};
use futures_util::StreamExt;
use std::sync::Arc;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// A published signature is bad: a `.json.gpg` that does not verify
    /// (or is no signature), a `.sjson` whose signed content differs from
    /// its `.json` twin, or one the mirror's own keyring does not verify.
    Signature,
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
            ProblemKind::Signature => "signature",
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
    /// Files of removed versions that a run scheduled for deletion and
    /// keeps, unreferenced, for the delete delay (not problems).
    pub scheduled: Vec<Scheduled>,
    /// How the item files the published metadata lists stand.
    pub offered: Offered,
    /// Every published signature and how it fared.
    pub signatures: Vec<SignatureCheck>,
}

/// How the item files the published metadata lists (every products file
/// of every published tree) stand: each distinct file is counted once.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Offered {
    /// There, with the right size (and checksum, with `--full`).
    pub held: usize,
    /// There, but of the wrong size or checksum, or unreadable.
    pub damaged: usize,
    /// Not there although the state or the (re-signed) metadata says it
    /// is mirrored: clients get a 404.
    pub missing: usize,
    /// Listed by upstream's documents the mirror publishes, never
    /// mirrored (filtered out, or older than `--max` keeps): clients are
    /// offered them and get a 404. Not an error; a failure with `--strict`.
    pub not_held: usize,
    /// The files offered but not held, per release/arch (or product).
    pub not_held_groups: Vec<NotHeld>,
}

/// Files offered but not held of one release/arch (or product, when the
/// metadata gives no `release` and `arch`) of one products file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NotHeld {
    /// The products file's content id.
    pub content_id: String,
    /// `release/arch`, or the product's name.
    pub group: String,
    /// Item files listed and not held.
    pub items: usize,
    /// Versions (`product/version`) they belong to.
    pub versions: usize,
    /// Their size as the metadata gives it.
    pub bytes: u64,
}

/// How a published signature is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureForm {
    /// A clear-signed `.sjson` document.
    ClearSigned,
    /// A detached `.json.gpg` signature of its `.json` document.
    Detached,
}

/// What checking a published signature found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureVerdict {
    /// Verified with the keyring given.
    Verified,
    /// Verified with the mirror's own keyring
    /// (`streams/v1/mirror-keyring.gpg`): the mirror is consistent, which
    /// says nothing of who made it.
    MirrorKeyring,
    /// Well-formed, not verified: no keyring to check it with.
    Unverified,
    /// Bad: a [`ProblemKind::Signature`] problem says why.
    Bad,
}

/// One published signature and how it fared.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignatureCheck {
    /// The signed document (`.sjson`) or the signature (`.json.gpg`).
    #[serde(rename = "path_or_url")]
    pub location: String,
    /// Clear-signed or detached.
    pub form: SignatureForm,
    /// The outcome.
    pub verdict: SignatureVerdict,
}

/// A file waiting out the delete delay before a run removes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Scheduled {
    /// The local file.
    #[serde(rename = "path")]
    pub location: String,
    /// When its deletion was scheduled (the metadata stopped naming it),
    /// seconds since the epoch.
    pub since: u64,
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

    /// Whether the audit fails: on errors, and with `strict` on warnings
    /// and on files offered but not held too.
    pub fn fails(&self, strict: bool) -> bool {
        self.errors() > 0 || (strict && (!self.problems.is_empty() || self.offered.not_held > 0))
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

/// Why a temporary file is a leftover.
const INTERRUPTED_WRITE: &str = "temporary file of an interrupted write";

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
    let target = Target::of(spec)?;
    let source = Source::new(spec.root.clone(), Vec::new(), audit_transfer())?;
    let (report, published) = read_published(source.clone(), &spec.entry, verification).await?;
    let inventory = match &target {
        Target::Dir(root) => {
            let (entry, full) = (spec.entry.clone(), options.full);
            let files = DirFiles { root: root.clone() };
            let state = read_state(&files, &DirStore::new(root)).await;
            tokio::task::spawn_blocking(move || {
                audit_files(&files, &entry, report, &published, state, full)
            })
            .await
            .map_err(|e| Error::transfer(spec.root.as_str(), e.to_string()))?
        }
        Target::Served => audit_url(&source, report, &published, options).await,
        Target::Store(_) => unreachable_target(spec)?,
    };
    Ok(conclude(&source, &target, inventory, options).await)
}

/// Last phases of every target: `hash_files` (with `--full`), then
/// `classify_listed` and the order of the problems.
async fn conclude(
    source: &Source,
    target: &Target,
    inventory: Inventory,
    options: &AuditOptions,
) -> Report {
    let Inventory {
        mut report,
        to_hash,
        listed,
        not_held,
    } = inventory;
    if options.full {
        let found = hash_files(source, target, to_hash, options.jobs).await;
        report.problems.extend(found);
    }
    report.offered = classify_listed(
        &listed,
        &not_held,
        |rel| target.location(source, rel),
        &report.problems,
    );
    report.sort();
    report
}

fn unreachable_target(spec: &SourceSpec) -> Result<Inventory> {
    Err(Error::transfer(
        spec.root.as_str(),
        "a store is audited with audit_store",
    ))
}

/// The entry document the mirror kept in `store` has: `index.sjson`, else
/// `index.json` (see [`Source::find_entry`]).
///
/// # Errors
/// The store cannot be read.
pub async fn store_entry(store: Arc<dyn Store>) -> Result<RelPath> {
    Source::of_store(store, audit_transfer())?
        .find_entry()
        .await
}

/// Audits the mirror kept in `store` as a mirror directory is audited (its
/// state, references, orphans and leftovers; see the module
/// documentation), from one listing of the store ([`Store::list`]);
/// documents and items are read through the store.
///
/// # Errors
/// The store cannot be listed, or the entry document or a products file
/// cannot be read, parsed or verified.
pub async fn audit_store(
    store: Arc<dyn Store>,
    entry: RelPath,
    verification: Verification,
    options: &AuditOptions,
) -> Result<Report> {
    let source = Source::of_store(store.clone(), audit_transfer())?;
    let (report, published) = read_published(source.clone(), &entry, verification).await?;
    let files = ListedFiles::of(store.clone()).await?;
    let state = read_state(&files, store.as_ref()).await;
    let inventory = audit_files(&files, &entry, report, &published, state, options.full);
    let target = Target::Store(store);
    Ok(conclude(&source, &target, inventory, options).await)
}

/// Transfers of an audit: fewer retries and shorter pauses than a mirror
/// run's (a check should answer soon).
fn audit_transfer() -> TransferOptions {
    TransferOptions {
        retries: 2,
        backoff: Duration::from_millis(200),
        ..TransferOptions::default()
    }
}

// ---------------------------------------------------------------------------
// What the mirror publishes.

/// The metadata trees a mirror publishes, read and checked.
struct Published {
    /// The tree read from the entry, then the tree of its twin
    /// (`index.json` beside `index.sjson`, or the other way) when there is
    /// one that reads.
    trees: Vec<Stream>,
    /// The mirror publishes its own keyring: its documents are re-signed
    /// and list only what it holds.
    resigned: bool,
}

impl Published {
    /// The tree read from the entry.
    fn entry_tree(&self) -> &Stream {
        &self.trees[0]
    }
}

/// Reads what the mirror publishes: `read_stream` of the entry (its
/// errors stop the audit), `read_twin` (its errors are problems),
/// `check_indexes`, `read_mirror_keyring`, then `check_signatures`. Gives
/// the report so far and the trees.
async fn read_published(
    source: Source,
    entry: &RelPath,
    verification: Verification,
) -> Result<(Report, Published)> {
    let reader = MetadataReader::new(source.clone(), entry.clone(), verification.clone());
    let stream = read_stream(&reader, None).await?;
    let mut report = Report::default();
    let mut trees = vec![stream];
    match read_twin(&source, entry, &verification).await {
        Ok(Some(twin)) => trees.push(twin),
        Ok(None) => {}
        Err(e) => report.problems.push(problem_of_error(&e)),
    }
    report.documents = trees
        .iter()
        .map(|t| usize::from(t.index.is_some()) + t.products.len())
        .sum();
    check_indexes(&trees, &mut report.problems);
    let (resigned, mirror_keyring) = read_mirror_keyring(&source, &mut report.problems).await;
    let given = match &verification {
        Verification::Keyring(k) => Some(k),
        Verification::Skip => None,
    };
    let keyrings = Keyrings {
        given,
        mirror: mirror_keyring.as_ref(),
    };
    check_signatures(&source, &trees, &keyrings, &mut report).await;
    Ok((report, Published { trees, resigned }))
}

/// The other name of a metadata document: `X.json` for `X.sjson`, and
/// `X.sjson` for `X.json`.
fn twin_of(rel: &RelPath) -> Option<RelPath> {
    let name = rel.as_str();
    let twin = match name.strip_suffix(".sjson") {
        Some(stem) => format!("{stem}.json"),
        None => format!("{}.sjson", name.strip_suffix(".json")?),
    };
    RelPath::parse(&twin).ok()
}

/// Reads the optional file `rel`: `None` when it is not there.
async fn read_optional(source: &Source, rel: &RelPath) -> Result<Option<Vec<u8>>> {
    if let Probe::Absent(_) = source.probe(rel).await? {
        return Ok(None);
    }
    match source.fetch(rel, None).await? {
        Fetched::Body { bytes, .. } => Ok(Some(bytes)),
        Fetched::NotModified => Ok(None),
    }
}

/// The tree of the entry's twin, when the mirror publishes one: clients
/// may read either (MAAS the `.sjson`, others the `.json`).
async fn read_twin(
    source: &Source,
    entry: &RelPath,
    verification: &Verification,
) -> Result<Option<Stream>> {
    let Some(twin) = twin_of(entry) else {
        return Ok(None);
    };
    if let Probe::Absent(_) = source.probe(&twin).await? {
        return Ok(None);
    }
    let reader = MetadataReader::new(source.clone(), twin, verification.clone());
    read_stream(&reader, None).await.map(Some)
}

/// An index that names no products file offers clients nothing: a problem.
fn check_indexes(trees: &[Stream], problems: &mut Vec<Problem>) {
    for tree in trees {
        if let Some(index) = &tree.index
            && tree.products.is_empty()
            && tree.unchanged.is_empty()
        {
            problems.push(Problem::new(
                ProblemKind::Metadata,
                index.url.clone(),
                "the index names no products file: clients are offered nothing",
            ));
        }
    }
}

/// Whether the mirror publishes its own keyring (it is re-signed), and
/// that keyring when it is usable (else a problem).
async fn read_mirror_keyring(
    source: &Source,
    problems: &mut Vec<Problem>,
) -> (bool, Option<Keyring>) {
    let Ok(rel) = RelPath::parse(MIRROR_KEYRING) else {
        return (false, None);
    };
    let location = source.url_of(&rel).to_string();
    match read_optional(source, &rel).await {
        Ok(None) => (false, None),
        Ok(Some(bytes)) => match Keyring::from_bytes(&bytes) {
            Ok(k) => (true, Some(k)),
            Err(e) => {
                problems.push(Problem::new(
                    ProblemKind::Signature,
                    location,
                    format!("the mirror's keyring is unusable: {e}"),
                ));
                (true, None)
            }
        },
        Err(e) => {
            problems.push(Problem::new(
                ProblemKind::Unreadable,
                location,
                reason_of(&e),
            ));
            (false, None)
        }
    }
}

/// The keyrings signatures are checked with.
struct Keyrings<'a> {
    /// The keyring given (`--keyring`, or the default one).
    given: Option<&'a Keyring>,
    /// The mirror's own (`streams/v1/mirror-keyring.gpg`).
    mirror: Option<&'a Keyring>,
}

impl Keyrings<'_> {
    /// The keyring to check with, and the verdict when it verifies.
    fn choice(&self) -> Option<(&Keyring, SignatureVerdict)> {
        match (self.given, self.mirror) {
            (Some(k), _) => Some((k, SignatureVerdict::Verified)),
            (None, Some(k)) => Some((k, SignatureVerdict::MirrorKeyring)),
            (None, None) => None,
        }
    }
}

/// Every metadata document read, by path, once: `(url, raw bytes)`.
fn documents_read(trees: &[Stream]) -> BTreeMap<&RelPath, (&str, &[u8])> {
    let mut docs = BTreeMap::new();
    for tree in trees {
        let products = tree.products.iter().map(|p| &p.document);
        for doc in tree.index.iter().chain(products) {
            docs.entry(&doc.rel)
                .or_insert((doc.url.as_str(), doc.raw.as_slice()));
        }
    }
    docs
}

/// Checks every signature published with the documents read: each
/// `.sjson` (`check_clear_signed`), and the `.json.gpg` of each `.json`
/// read or published as the twin of a `.sjson` read (`check_detached`:
/// a twin tree that does not read still has its signatures checked).
async fn check_signatures(
    source: &Source,
    trees: &[Stream],
    keyrings: &Keyrings<'_>,
    report: &mut Report,
) {
    let docs = documents_read(trees);
    let mut checked = Vec::new();
    for (&rel, &(url, raw)) in &docs {
        if is_signed_name(rel) {
            checked.push(Some(
                check_clear_signed(source, &docs, rel, url, raw, keyrings).await,
            ));
            let Some(twin) = twin_of(rel).filter(|twin| !docs.contains_key(twin)) else {
                continue;
            };
            match read_optional(source, &twin).await {
                Ok(Some(raw)) => checked.push(check_detached(source, &twin, &raw, keyrings).await),
                Ok(None) => {}
                Err(e) => report.problems.push(Problem::new(
                    ProblemKind::Unreadable,
                    source.url_of(&twin).to_string(),
                    reason_of(&e),
                )),
            }
        } else {
            checked.push(check_detached(source, rel, raw, keyrings).await);
        }
    }
    for (check, problem) in checked.into_iter().flatten() {
        report.signatures.push(check);
        report.problems.extend(problem);
    }
}

/// A `.sjson` read: verified when it was read with the keyring given,
/// else checked with the mirror's own keyring when there is one; and its
/// signed content must be that of its `.json` twin, when there is one.
async fn check_clear_signed(
    source: &Source,
    docs: &BTreeMap<&RelPath, (&str, &[u8])>,
    rel: &RelPath,
    url: &str,
    raw: &[u8],
    keyrings: &Keyrings<'_>,
) -> (SignatureCheck, Option<Problem>) {
    let bad = |why: String| Problem::new(ProblemKind::Signature, url, why);
    let (mut verdict, mut problem) = match keyrings.choice() {
        // Read through the keyring given: verified already.
        Some((_, SignatureVerdict::Verified)) => (SignatureVerdict::Verified, None),
        Some((k, verdict)) => match openpgp::verify_cleartext(k, raw) {
            Ok(_) => (verdict, None),
            Err(e) => (
                SignatureVerdict::Bad,
                Some(bad(format!("not verified by the mirror's keyring: {e}"))),
            ),
        },
        None => (SignatureVerdict::Unverified, None),
    };
    if problem.is_none()
        && let Some(why) = twin_differs(source, docs, rel, raw).await
    {
        verdict = SignatureVerdict::Bad;
        problem = Some(bad(why));
    }
    let check = SignatureCheck {
        location: url.to_owned(),
        form: SignatureForm::ClearSigned,
        verdict,
    };
    (check, problem)
}

/// Why the signed content of the `.sjson` `rel` is not its `.json`
/// twin's (compared as JSON), if it is not; nothing when there is no twin.
async fn twin_differs(
    source: &Source,
    docs: &BTreeMap<&RelPath, (&str, &[u8])>,
    rel: &RelPath,
    raw: &[u8],
) -> Option<String> {
    let twin = twin_of(rel)?;
    let twin_raw = match docs.get(&twin) {
        Some((_, raw)) => raw.to_vec(),
        None => match read_optional(source, &twin).await {
            Ok(Some(raw)) => raw,
            Ok(None) => return None,
            Err(e) => return Some(format!("cannot read its twin {twin}: {}", reason_of(&e))),
        },
    };
    let signed = openpgp::cleartext_body(raw).ok()?;
    let as_json = |bytes: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .map(plain_paths)
    };
    match (as_json(&signed), as_json(&twin_raw)) {
        (Some(a), Some(b)) if a == b => None,
        _ => Some(format!(
            "its signed content differs from its twin {twin}: clients reading {twin} get unsigned, different metadata"
        )),
    }
}

/// A metadata document with the paths an index names made plain
/// (`X.sjson` as `X.json`): twin indexes each name their own family.
fn plain_paths(mut doc: serde_json::Value) -> serde_json::Value {
    let entries = doc
        .get_mut("index")
        .and_then(serde_json::Value::as_object_mut);
    for entry in entries.into_iter().flat_map(|index| index.values_mut()) {
        if let Some(path) = entry.get_mut("path")
            && let Some(stem) = path.as_str().and_then(|p| p.strip_suffix(".sjson"))
        {
            *path = serde_json::Value::String(format!("{stem}.json"));
        }
    }
    doc
}

/// The `.json.gpg` of the `.json` document `rel`, when published:
/// verified with the keyring given, else the mirror's own; without either
/// it must at least be a signature.
async fn check_detached(
    source: &Source,
    rel: &RelPath,
    raw: &[u8],
    keyrings: &Keyrings<'_>,
) -> Option<(SignatureCheck, Option<Problem>)> {
    let sig_rel = RelPath::parse(&format!("{rel}.gpg")).ok()?;
    let location = source.url_of(&sig_rel).to_string();
    let signature = match read_optional(source, &sig_rel).await {
        Ok(Some(sig)) => sig,
        Ok(None) => return None,
        Err(e) => {
            let problem = Problem::new(ProblemKind::Unreadable, &location, reason_of(&e));
            let check = SignatureCheck {
                location,
                form: SignatureForm::Detached,
                verdict: SignatureVerdict::Bad,
            };
            return Some((check, Some(problem)));
        }
    };
    let (verdict, outcome) = match keyrings.choice() {
        Some((k, verdict)) => (verdict, openpgp::verify_detached(k, raw, &signature)),
        None => (
            SignatureVerdict::Unverified,
            openpgp::check_detached_form(&signature),
        ),
    };
    let (verdict, problem) = match outcome {
        Ok(()) => (verdict, None),
        Err(e) => (
            SignatureVerdict::Bad,
            Some(Problem::new(
                ProblemKind::Signature,
                &location,
                format!("detached signature of {rel}: {e}"),
            )),
        ),
    };
    let check = SignatureCheck {
        location,
        form: SignatureForm::Detached,
        verdict,
    };
    Some((check, problem))
}

// ---------------------------------------------------------------------------
// What the published metadata lists, and how it stands.

/// An item file the published metadata lists.
#[derive(Debug, Clone)]
struct Listed {
    /// The file and what it must be, as published.
    want: Wanted,
    /// The content id and the release/arch (or product) it is reported
    /// under.
    group: (String, String),
    /// `product/version`.
    version: String,
}

/// Every item file the published trees list, once (the first listing of
/// a path is kept).
fn listed_items(trees: &[Stream]) -> BTreeMap<RelPath, Listed> {
    let mut listed = BTreeMap::new();
    for pd in trees.iter().flat_map(|t| &t.products) {
        for entry in pd.products.items() {
            let Some(want) = Wanted::of(&pd.content_id, &entry) else {
                continue;
            };
            listed.entry(want.path.clone()).or_insert_with(|| Listed {
                group: (pd.content_id.clone(), group_of(&pd.products, &entry)),
                version: format!("{}/{}", entry.product_name, entry.version_name),
                want,
            });
        }
    }
    listed
}

/// `release/arch` of an item (its fields or those it inherits), else its
/// product's name.
fn group_of(products: &Products, entry: &ItemEntry<'_>) -> String {
    let item_fields = entry.item.fields();
    let levels = [
        &item_fields,
        &entry.version.fields,
        &entry.product.fields,
        &products.fields,
    ];
    let field = |key: &str| {
        levels
            .iter()
            .find_map(|fields| fields.get(key).and_then(serde_json::Value::as_str))
    };
    match (field("release"), field("arch")) {
        (Some(release), Some(arch)) => format!("{release}/{arch}"),
        _ => entry.product_name.to_owned(),
    }
}

/// A recorded file the published metadata lists is checked against what
/// is published (what clients check): an upstream re-spin published over
/// old files is found.
fn prefer_published(recorded: &mut Recorded, listed: &BTreeMap<RelPath, Listed>) {
    for (path, want) in &mut recorded.files {
        if let Some(published) = listed.get(path) {
            let expected = &published.want.expected;
            want.expected = Expected {
                size: expected.size.or(want.expected.size),
                checksum: expected
                    .checksum
                    .clone()
                    .or_else(|| want.expected.checksum.take()),
            };
        }
    }
}

/// Last phase: how each listed file stands, from the problems found at
/// its `location`: missing, damaged (wrong size or checksum, unreadable),
/// offered but not held (`not_held`), else held.
fn classify_listed(
    listed: &BTreeMap<RelPath, Listed>,
    not_held: &BTreeSet<RelPath>,
    location: impl Fn(&RelPath) -> String,
    problems: &[Problem],
) -> Offered {
    let mut found: BTreeMap<&str, ProblemKind> = BTreeMap::new();
    for p in problems {
        match p.kind {
            ProblemKind::Missing => {
                found.insert(&p.location, ProblemKind::Missing);
            }
            ProblemKind::Size | ProblemKind::Checksum | ProblemKind::Unreadable => {
                found.entry(&p.location).or_insert(p.kind);
            }
            _ => {}
        }
    }
    let mut offered = Offered::default();
    let mut groups: BTreeMap<&(String, String), (usize, BTreeSet<&str>, u64)> = BTreeMap::new();
    for (path, item) in listed {
        if not_held.contains(path) {
            offered.not_held += 1;
            let group = groups.entry(&item.group).or_default();
            group.0 += 1;
            group.1.insert(&item.version);
            group.2 += item.want.expected.size.unwrap_or(0);
            continue;
        }
        match found.get(location(path).as_str()) {
            Some(ProblemKind::Missing) => offered.missing += 1,
            Some(_) => offered.damaged += 1,
            None => offered.held += 1,
        }
    }
    offered.not_held_groups = groups
        .into_iter()
        .map(|((content_id, group), (items, versions, bytes))| NotHeld {
            content_id: content_id.clone(),
            group: group.clone(),
            items,
            versions: versions.len(),
            bytes,
        })
        .collect();
    offered
}

/// What is audited.
enum Target {
    /// A local mirror directory (no trailing slash).
    Dir(PathBuf),
    /// A mirror served over HTTP(S).
    Served,
    /// A mirror kept in a store that lists its files.
    Store(Arc<dyn Store>),
}

impl Target {
    /// The target of `spec`; a local one must be a directory.
    fn of(spec: &SourceSpec) -> Result<Target> {
        if spec.root.scheme() != "file" {
            return Ok(Target::Served);
        }
        let root = spec
            .root
            .to_file_path()
            .map_err(|()| Error::transfer(spec.root.as_str(), "not a local directory"))?;
        // Without the trailing slash of the URL.
        let root: PathBuf = root.components().collect();
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(Target::Dir(root)),
            Ok(_) => Err(Error::transfer(
                root.display().to_string(),
                "not a directory",
            )),
            Err(e) => Err(Error::io(root, e)),
        }
    }

    /// How a problem about `rel` names it: its local path, or its URL.
    fn location(&self, source: &Source, rel: &RelPath) -> String {
        match self {
            Target::Dir(root) => display(root, rel.as_str()),
            Target::Served => source.url_of(rel).to_string(),
            Target::Store(store) => store.display(rel),
        }
    }
}

/// What the checks of a target found, and the files left to hash.
struct Inventory {
    report: Report,
    /// Files found with the right size, to be hashed with `--full`.
    to_hash: Vec<Wanted>,
    /// Every file the published metadata lists.
    listed: BTreeMap<RelPath, Listed>,
    /// Those of them never mirrored (offered but not held).
    not_held: BTreeSet<RelPath>,
}

impl From<IntegrityKind> for ProblemKind {
    fn from(kind: IntegrityKind) -> ProblemKind {
        match kind {
            IntegrityKind::Size => ProblemKind::Size,
            IntegrityKind::Checksum => ProblemKind::Checksum,
        }
    }
}

/// A file the metadata says is mirrored: where, what it must be, and which
/// item names it.
#[derive(Debug, Clone)]
struct Wanted {
    path: RelPath,
    expected: Expected,
    /// `content_id/product/version/item` of the first item naming it.
    reference: String,
}

impl Wanted {
    /// The file of an item of `content_id`, if it names one.
    fn of(content_id: &str, entry: &ItemEntry<'_>) -> Option<Wanted> {
        let item = entry.item;
        Some(Wanted {
            path: item.path.clone()?,
            expected: Expected {
                size: item.size,
                checksum: item.checksum.clone(),
            },
            reference: entry.reference(content_id),
        })
    }
}

/// The newest version of a product: what a client uses.
#[derive(Debug)]
struct NewestVersion {
    /// The product's name.
    product: String,
    /// `product/version`, for messages.
    name: String,
    /// Its items that name a file.
    files: Vec<Wanted>,
}

/// The newest version of each product of `products` that names a file:
/// what the client rule checks.
fn newest_versions(content_id: &str, products: &Products) -> Vec<NewestVersion> {
    let is_newest = |e: &ItemEntry<'_>| {
        let newest = e.product.newest();
        newest.is_some_and(|(v, _)| v == e.version_name)
    };
    let mut versions: Vec<NewestVersion> = Vec::new();
    for entry in products.items().filter(is_newest) {
        let Some(want) = Wanted::of(content_id, &entry) else {
            continue;
        };
        let name = format!("{}/{}", entry.product_name, entry.version_name);
        match versions.last_mut() {
            // Items come product by product: one version each.
            Some(last) if last.product == entry.product_name => last.files.push(want),
            _ => versions.push(NewestVersion {
                product: entry.product_name.to_owned(),
                name,
                files: vec![want],
            }),
        }
    }
    versions
}

/// The problem a failed [`Source::check`] of `want` (named `location`) is:
/// a size or checksum mismatch, or a file that could not be read.
fn check_problem(location: String, want: &Wanted, e: &Error) -> Problem {
    let (kind, reason) = match e {
        Error::Integrity { kind, reason, .. } => ((*kind).into(), reason.clone()),
        e => (ProblemKind::Unreadable, reason_of(e)),
    };
    Problem::new(kind, location, format!("{reason} ({})", want.reference))
}

/// Why a transfer failed, without the URL (the problem names it).
fn reason_of(e: &Error) -> String {
    match e {
        Error::Transfer { reason, .. } => reason.clone(),
        e => e.to_string(),
    }
}

/// Last phase of both targets (`--full`): reads and hashes every file in
/// `files`, `jobs` at a time; gives what disagrees or cannot be read.
async fn hash_files(
    source: &Source,
    target: &Target,
    files: Vec<Wanted>,
    jobs: usize,
) -> Vec<Problem> {
    let found: Vec<Option<Problem>> = futures_util::stream::iter(files)
        .map(|want| async move {
            let location = target.location(source, &want.path);
            log::debug!("hashing {location}");
            let verdict = source.check(&want.path, &want.expected).await;
            verdict.err().map(|e| check_problem(location, &want, &e))
        })
        .buffer_unordered(jobs.clamp(1, 64))
        .collect()
        .await;
    found.into_iter().flatten().collect()
}

// ---------------------------------------------------------------------------
// Local directories and listed stores.

/// `rel` (a `/`-separated path) under `root`, as problems name it.
fn display(root: &Path, rel: &str) -> String {
    let mut p = root.to_path_buf();
    p.extend(rel.split('/'));
    p.display().to_string()
}

/// What a file found in a mirror is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    /// A regular file (every object of a store).
    File,
    /// A symbolic link.
    Symlink,
    /// Anything else (a FIFO, a device...).
    Other,
}

/// A mirror's files as the checks of a known mirror see them: a local
/// directory (walked), or a store's listing.
trait Files: Sync {
    /// How `rel` is named in problems.
    fn display(&self, rel: &str) -> String;
    /// The mirror's root, as problems name it.
    fn root(&self) -> String;
    /// What is at `rel`.
    fn stat(&self, rel: &RelPath) -> Found;
    /// The names of the regular files directly under `.data/`.
    fn data_files(&self) -> Vec<String>;
    /// Every file outside `.data/` (relative to the root) and its kind;
    /// what cannot be listed is a problem.
    fn walk(&self, problems: &mut Vec<Problem>) -> Vec<(String, EntryKind)>;
}

/// A mirror directory.
struct DirFiles {
    root: PathBuf,
}

impl Files for DirFiles {
    fn display(&self, rel: &str) -> String {
        display(&self.root, rel)
    }

    fn root(&self) -> String {
        self.root.display().to_string()
    }

    fn stat(&self, rel: &RelPath) -> Found {
        stat(&rel.under(&self.root))
    }

    fn data_files(&self) -> Vec<String> {
        fs::read_dir(self.root.join(DATA_DIR))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn walk(&self, problems: &mut Vec<Problem>) -> Vec<(String, EntryKind)> {
        let mut found = Vec::new();
        walk_dir(&self.root, "", &mut found, problems);
        found
    }
}

/// Collects in `found` every file under `dir` (`prefix` relative to the
/// root; `.data/` skipped), in name order; a directory that cannot be
/// listed is a problem.
fn walk_dir(
    dir: &Path,
    prefix: &str,
    found: &mut Vec<(String, EntryKind)>,
    problems: &mut Vec<Problem>,
) {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(Problem::new(
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
        if prefix.is_empty() && name == DATA_DIR {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            walk_dir(&e.path(), &rel, found, problems);
        } else if kind.is_file() {
            found.push((rel, EntryKind::File));
        } else if kind.is_symlink() {
            found.push((rel, EntryKind::Symlink));
        } else {
            found.push((rel, EntryKind::Other));
        }
    }
}

/// A mirror kept in a store, as one listing of it found it.
struct ListedFiles {
    store: Arc<dyn Store>,
    /// Every file's size, by path relative to the root.
    files: BTreeMap<String, u64>,
}

impl ListedFiles {
    /// Lists `store` (once).
    async fn of(store: Arc<dyn Store>) -> Result<ListedFiles> {
        let files = store
            .list()
            .await?
            .into_iter()
            .map(|l| (l.rel, l.len))
            .collect();
        Ok(ListedFiles { store, files })
    }
}

impl Files for ListedFiles {
    fn display(&self, rel: &str) -> String {
        format!("{}/{rel}", self.store.location())
    }

    fn root(&self) -> String {
        self.store.location()
    }

    fn stat(&self, rel: &RelPath) -> Found {
        match self.files.get(rel.as_str()) {
            Some(len) => Found::File(*len),
            None => Found::Absent,
        }
    }

    fn data_files(&self) -> Vec<String> {
        let data = format!("{DATA_DIR}/");
        self.files
            .keys()
            .filter_map(|rel| rel.strip_prefix(&data))
            .filter(|name| !name.contains('/'))
            .map(str::to_owned)
            .collect()
    }

    fn walk(&self, _problems: &mut Vec<Problem>) -> Vec<(String, EntryKind)> {
        let data = format!("{DATA_DIR}/");
        self.files
            .keys()
            .filter(|rel| !rel.starts_with(&data))
            .map(|rel| (rel.clone(), EntryKind::File))
            .collect()
    }
}

/// Audits the mirror `files` whose entry is `entry` (phases 1 to 9 of the
/// module documentation); with `full`, the files to hash are left to
/// [`hash_files`].
fn audit_files(
    files: &dyn Files,
    entry: &RelPath,
    mut report: Report,
    published: &Published,
    read: ReadState,
    full: bool,
) -> Inventory {
    let stream = published.entry_tree();
    let offered_files = listed_items(&published.trees);
    let ReadState { state, problems } = read;
    report.problems.extend(problems);
    let mut recorded = recorded_files(&state.trees);
    prefer_published(&mut recorded, &offered_files);
    check_references(files, &state.references, &recorded, &mut report.problems);
    let listed = check_dangling(files, &state.references, &recorded, &mut report.problems);
    let stateless = stateless_products(files, stream, &state, &mut report.problems);

    let mut to_hash = check_recorded(files, &recorded, full, &mut report);
    // A file is checked once, whoever names it.
    let mut checked: BTreeSet<String> = recorded.files.keys().map(RelPath::to_string).collect();
    checked.extend(listed);
    to_hash.extend(check_newest_local(
        files,
        &stateless.versions,
        &mut checked,
        full,
        &mut report,
    ));
    let offered = Offering {
        listed: &offered_files,
        resigned: published.resigned,
        checked: &checked,
    };
    let (more, not_held) = check_listed(files, &offered, full, &mut report);
    to_hash.extend(more);

    let mut known = checked;
    known.extend(stateless.named);
    let strays = Strays {
        files,
        known: &known,
        metadata: &metadata_paths(&published.trees),
        meta_dir: entry.ancestors().next().unwrap_or(""),
        pending: &state.pending,
    };
    find_strays(&strays, state.leftovers, &mut report);
    Inventory {
        report,
        to_hash,
        listed: offered_files,
        not_held,
    }
}

/// What the published metadata lists, for `check_listed`.
struct Offering<'a> {
    listed: &'a BTreeMap<RelPath, Listed>,
    /// The metadata is the mirror's own: what it lists must be held.
    resigned: bool,
    /// Files checked already (relative to the root).
    checked: &'a BTreeSet<String>,
}

/// Phase 8: every listed file no phase before checked. In a re-signed
/// mirror it must be there (else it is missing); in one publishing
/// upstream's documents it is checked when it is there, else it is
/// offered but not held (given back).
fn check_listed(
    files: &dyn Files,
    offering: &Offering<'_>,
    full: bool,
    report: &mut Report,
) -> (Vec<Wanted>, BTreeSet<RelPath>) {
    let mut to_hash = Vec::new();
    let mut not_held = BTreeSet::new();
    for (path, item) in offering.listed {
        if offering.checked.contains(path.as_str()) {
            continue;
        }
        let absent = matches!(files.stat(path), Found::Absent);
        if absent && !offering.resigned {
            not_held.insert(path.clone());
        } else {
            to_hash.extend(check_file(files, &item.want, RESIGNED, full, report));
        }
    }
    (to_hash, not_held)
}

/// What `.data/` holds (phase 1).
struct MirrorState {
    /// The state trees that parse, by content id.
    trees: BTreeMap<String, Products>,
    /// `references.json`.
    references: ReferencesFile,
    /// Paths whose deletion a run scheduled, with when (0: unknown).
    pending: PendingDeletes,
    /// Temporary files of interrupted writes under `.data/`, relative to
    /// the root, and why they are leftovers.
    leftovers: BTreeMap<String, &'static str>,
}

/// `.data/references.json` as found.
enum ReferencesFile {
    /// There is none.
    Absent,
    /// There is one, but it does not parse (already reported).
    Malformed,
    /// Its entries.
    Read(References),
}

/// What phase 1 read, and the problems it found.
struct ReadState {
    state: MirrorState,
    problems: Vec<Problem>,
}

/// Phase 1: reads `.data/` through `store`: every state tree,
/// `references.json` and the pending deletions, and notes temporary files.
/// A state tree or a `references.json` that does not parse is a problem,
/// and left out.
async fn read_state(files: &(dyn Files + Sync), store: &dyn Store) -> ReadState {
    let mut problems = Vec::new();
    let mut state = MirrorState {
        trees: BTreeMap::new(),
        references: ReferencesFile::Absent,
        pending: store.load_pending_deletes().await.unwrap_or_default(),
        leftovers: BTreeMap::new(),
    };
    let mut has_references = false;
    for name in files.data_files() {
        let rel = format!("{DATA_DIR}/{name}");
        if name == REFERENCES {
            has_references = true;
        } else if is_temp_name(&name) {
            state.leftovers.insert(rel, INTERRUPTED_WRITE);
        } else if is_state_name(&name) {
            match store.load_state(&name).await {
                Ok(tree) => {
                    state.trees.insert(name, tree);
                }
                Err(e) => problems.push(Problem::new(
                    ProblemKind::State,
                    files.display(&rel),
                    format!("cannot use the mirror state: {e}"),
                )),
            }
        }
    }
    if has_references {
        state.references = match store.load_references().await {
            Ok(r) => ReferencesFile::Read(r),
            Err(e) => {
                problems.push(Problem::new(
                    ProblemKind::References,
                    files.display(&format!("{DATA_DIR}/{REFERENCES}")),
                    e.to_string(),
                ));
                ReferencesFile::Malformed
            }
        };
    }
    ReadState { state, problems }
}

/// What the state trees record as mirrored (phase 2).
struct Recorded {
    /// Per path, what the first item naming it says it must be.
    files: BTreeMap<RelPath, Wanted>,
    /// Per path, every item naming it (`content_id/product/version/item`):
    /// what `references.json` must list.
    references: BTreeMap<String, BTreeSet<String>>,
}

/// Phase 2: every file the state trees record, and the items naming each.
fn recorded_files(trees: &BTreeMap<String, Products>) -> Recorded {
    let mut recorded = Recorded {
        files: BTreeMap::new(),
        references: BTreeMap::new(),
    };
    for (content_id, tree) in trees {
        for want in tree.items().filter_map(|e| Wanted::of(content_id, &e)) {
            recorded
                .references
                .entry(want.path.to_string())
                .or_default()
                .insert(want.reference.clone());
            recorded.files.entry(want.path.clone()).or_insert(want);
        }
    }
    recorded
}

/// Phase 3: `references.json` lists, for every path, exactly the items the
/// state trees record for it; it may be missing only when they record none.
fn check_references(
    files: &dyn Files,
    file: &ReferencesFile,
    recorded: &Recorded,
    problems: &mut Vec<Problem>,
) {
    let refs = match file {
        ReferencesFile::Read(refs) => refs,
        ReferencesFile::Malformed => return,
        ReferencesFile::Absent if recorded.references.is_empty() => return,
        ReferencesFile::Absent => {
            problems.push(Problem::new(
                ProblemKind::References,
                files.display(&format!("{DATA_DIR}/{REFERENCES}")),
                "missing, although the .data state records mirrored items",
            ));
            return;
        }
    };
    let disagree = |path: &str, detail: String| {
        Problem::new(ProblemKind::References, files.display(path), detail)
    };
    let none = BTreeSet::new();
    for (path, list) in refs {
        let listed: BTreeSet<&String> = list.iter().collect();
        let in_state = recorded.references.get(path).unwrap_or(&none);
        let extra: Vec<&String> = listed
            .iter()
            .copied()
            .filter(|r| !in_state.contains(*r))
            .collect();
        let lacking: Vec<&String> = in_state.iter().filter(|r| !listed.contains(r)).collect();
        if !extra.is_empty() {
            problems.push(disagree(
                path,
                format!(
                    "references.json lists {} that no .data state records",
                    join(&extra)
                ),
            ));
        }
        if !lacking.is_empty() {
            problems.push(disagree(path, unlisted(&lacking)));
        }
    }
    for (path, in_state) in &recorded.references {
        if !refs.contains_key(path) {
            let in_state: Vec<&String> = in_state.iter().collect();
            problems.push(disagree(path, unlisted(&in_state)));
        }
    }
}

fn unlisted(references: &[&String]) -> String {
    format!(
        "recorded in .data as {} but not listed in references.json",
        join(references)
    )
}

fn join(list: &[&String]) -> String {
    list.iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Phase 4: the files `references.json` lists but no state tree records
/// must still be there (else they dangle). Gives every such path (they
/// are not orphans).
fn check_dangling(
    files: &dyn Files,
    file: &ReferencesFile,
    recorded: &Recorded,
    problems: &mut Vec<Problem>,
) -> BTreeSet<String> {
    let ReferencesFile::Read(refs) = file else {
        return BTreeSet::new();
    };
    let only_listed: BTreeSet<String> = refs
        .keys()
        .filter(|p| !recorded.references.contains_key(*p))
        .cloned()
        .collect();
    for path in &only_listed {
        let Ok(rel) = RelPath::parse(path) else {
            problems.push(Problem::new(
                ProblemKind::References,
                format!("{DATA_DIR}/{REFERENCES}"),
                format!("unsafe path {path:?}"),
            ));
            continue;
        };
        if !matches!(files.stat(&rel), Found::File(_)) {
            problems.push(Problem::new(
                ProblemKind::Dangling,
                files.display(path),
                "listed in references.json, but the file is missing",
            ));
        }
    }
    only_listed
}

/// The products files without a state tree (phase 5).
struct Stateless {
    /// The newest version of each of their products, for the client rule.
    versions: Vec<NewestVersion>,
    /// Every path they name (none is an orphan).
    named: BTreeSet<String>,
}

/// Phase 5: each products file without a state tree is reported (a
/// warning) and left to the client rule.
fn stateless_products(
    files: &dyn Files,
    stream: &Stream,
    state: &MirrorState,
    problems: &mut Vec<Problem>,
) -> Stateless {
    let mut stateless = Stateless {
        versions: Vec::new(),
        named: BTreeSet::new(),
    };
    for pd in &stream.products {
        if state.trees.contains_key(&pd.content_id) {
            continue;
        }
        problems.push(Problem::new(
            ProblemKind::NoState,
            files.display(&format!("{DATA_DIR}/{}", pd.content_id)),
            format!(
                "no mirror state for {}: checked the newest version of each product as a client would",
                pd.content_id
            ),
        ));
        stateless
            .versions
            .extend(newest_versions(&pd.content_id, &pd.products));
        let paths = pd.products.items().filter_map(|e| e.item.path.as_ref());
        stateless.named.extend(paths.map(RelPath::to_string));
    }
    stateless
}

/// Phase 6: every file the state records is there with its size. Gives
/// those to hash (with `full`, when they have a checksum).
fn check_recorded(
    files: &dyn Files,
    recorded: &Recorded,
    full: bool,
    report: &mut Report,
) -> Vec<Wanted> {
    recorded
        .files
        .values()
        .filter_map(|want| check_file(files, want, RECORDED, full, report))
        .collect()
}

/// Phase 7: the client rule on the products without state: a newest
/// version with at least one file present must have all of them, and at
/// least one newest version must be present. Files already in `checked`
/// are skipped (and those checked here are added). Gives the files to hash.
fn check_newest_local(
    files: &dyn Files,
    versions: &[NewestVersion],
    checked: &mut BTreeSet<String>,
    full: bool,
    report: &mut Report,
) -> Vec<Wanted> {
    let mut to_hash = Vec::new();
    let mut any_present = false;
    for version in versions {
        let present = version
            .files
            .iter()
            .any(|w| matches!(files.stat(&w.path), Found::File(_)));
        if !present {
            report.versions_skipped += 1;
            log::debug!("{}: no item present; taken as not mirrored", version.name);
            continue;
        }
        any_present = true;
        for want in &version.files {
            if checked.insert(want.path.to_string()) {
                to_hash.extend(check_file(files, want, RECORDED, full, report));
            }
        }
    }
    if !versions.is_empty() && !any_present {
        report.problems.push(Problem::new(
            ProblemKind::Missing,
            files.root(),
            "no item of the newest version of any product is present",
        ));
    }
    to_hash
}

/// What `lstat` says about an item file.
enum Found {
    File(u64),
    NotRegular,
    Absent,
    Error(String),
}

fn stat(path: &Path) -> Found {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Found::File(m.len()),
        Ok(_) => Found::NotRegular,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Found::Absent,
        Err(e) => Found::Error(e.to_string()),
    }
}

/// What says a file is mirrored: the state (or the client rule).
const RECORDED: &str = "recorded as mirrored";
/// What says a file is mirrored: the mirror's re-signed metadata (only a
/// file of a re-signed mirror can be missing on this ground).
const RESIGNED: &str = "listed by the mirror's re-signed metadata";

/// Checks that `want` is a regular file of its size, counting it in
/// `report`. Gives it back when it is to be hashed (`full`, a checksum to
/// compare, the right size).
fn check_file(
    files: &dyn Files,
    want: &Wanted,
    claim: &str,
    full: bool,
    report: &mut Report,
) -> Option<Wanted> {
    report.items_checked += 1;
    let shown = files.display(want.path.as_str());
    let problem = match files.stat(&want.path) {
        Found::File(len) => {
            report.bytes_checked += len;
            match want.expected.size {
                Some(size) if size != len => Problem::new(
                    ProblemKind::Size,
                    shown,
                    format!("size {len}, expected {size} ({})", want.reference),
                ),
                _ if full && want.expected.checksum.is_some() => return Some(want.clone()),
                _ => return None,
            }
        }
        Found::NotRegular => Problem::new(
            ProblemKind::Missing,
            shown,
            format!("not a regular file ({})", want.reference),
        ),
        Found::Absent => Problem::new(
            ProblemKind::Missing,
            shown,
            format!("{claim} ({}), file not found", want.reference),
        ),
        Found::Error(e) => Problem::new(
            ProblemKind::Unreadable,
            shown,
            format!("{e} ({})", want.reference),
        ),
    };
    report.problems.push(problem);
    None
}

/// The metadata documents read, relative to the root.
fn metadata_paths(trees: &[Stream]) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for stream in trees {
        let products = stream.products.iter().map(|p| p.document.rel.to_string());
        let index = stream.index.iter().map(|d| d.rel.to_string());
        paths.extend(products.chain(index));
    }
    paths
}

/// What a walk for strays knows is meant to be there.
struct Strays<'a> {
    files: &'a dyn Files,
    /// Item files something references, relative to the root.
    known: &'a BTreeSet<String>,
    /// The metadata documents read.
    metadata: &'a BTreeSet<String>,
    /// The directory of the entry document (`streams/v1`).
    meta_dir: &'a str,
    /// Paths whose deletion a run scheduled, with when (0: unknown).
    pending: &'a PendingDeletes,
}

/// What a file nothing references is.
enum Stray {
    /// Left by an interrupted run (a warning): why.
    Leftover(&'static str),
    /// Waiting out the delete delay since this time (not a problem).
    Scheduled(u64),
    /// Metadata of another family (`index.json` beside `index.sjson`):
    /// not checked, not reported.
    OtherMetadata,
    /// Anything else: a file or a symbolic link.
    Orphan(&'static str),
}

/// Phase 9: walks the root (but `.data/`) for files nothing references:
/// `.part` downloads, temporary files and deletions an older version left
/// pending are leftovers; files scheduled for deletion with a time are
/// waiting out the delete delay; anything else is an orphan. `leftovers`
/// are those found in `.data/`.
fn find_strays(
    strays: &Strays<'_>,
    mut leftovers: BTreeMap<String, &'static str>,
    report: &mut Report,
) {
    let mut problems = Vec::new();
    let found = strays.files.walk(&mut problems);
    for (rel, kind) in found {
        if strays.known.contains(&rel) || strays.metadata.contains(&rel) {
            continue;
        }
        match strays.classify(&rel, kind) {
            Stray::Leftover(why) => {
                leftovers.insert(rel, why);
            }
            Stray::Scheduled(since) => report.scheduled.push(Scheduled {
                location: strays.files.display(&rel),
                since,
            }),
            Stray::OtherMetadata => {
                log::debug!("{rel}: metadata not walked from the entry; not checked");
            }
            Stray::Orphan(what) => problems.push(Problem::new(
                ProblemKind::Orphan,
                strays.files.display(&rel),
                format!("{what} not referenced by the mirror state or metadata"),
            )),
        }
    }
    for (rel, why) in leftovers {
        problems.push(Problem::new(
            ProblemKind::Leftover,
            strays.files.display(&rel),
            why,
        ));
    }
    report.problems.extend(problems);
}

impl Strays<'_> {
    /// What the unreferenced file `rel` is.
    fn classify(&self, rel: &str, kind: EntryKind) -> Stray {
        let (prefix, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        if is_part_name(name) {
            Stray::Leftover("partial download (.part)")
        } else if is_temp_name(name) {
            Stray::Leftover(INTERRUPTED_WRITE)
        } else if let Some(&since) = self.pending.get(rel) {
            if since > 0 {
                Stray::Scheduled(since)
            } else {
                Stray::Leftover("scheduled for deletion by an interrupted run")
            }
        } else if prefix == self.meta_dir
            && kind == EntryKind::File
            && ([".json", ".sjson", ".json.gpg"]
                .iter()
                .any(|suffix| name.ends_with(suffix))
                || rel == crate::layout::MIRROR_KEYRING)
        {
            // Another family (index.json beside index.sjson), or the
            // detached signatures of a re-signed mirror.
            Stray::OtherMetadata
        } else if kind == EntryKind::Symlink {
            Stray::Orphan("symbolic link")
        } else {
            Stray::Orphan("file")
        }
    }
}

// ---------------------------------------------------------------------------
// Served mirrors.

/// What a probe says about a file (an error kept as its reason).
#[derive(Debug, Clone)]
enum Served {
    Present(Option<u64>),
    Absent(String),
    Unreadable(String),
}

impl From<Result<Probe>> for Served {
    fn from(probe: Result<Probe>) -> Served {
        match probe {
            Ok(Probe::Present(len)) => Served::Present(len),
            Ok(Probe::Absent(why)) => Served::Absent(why),
            Err(e) => Served::Unreadable(reason_of(&e)),
        }
    }
}

/// Audits the mirror `source` serves with the client rule:
/// [`newest_versions`] of every products file, [`probe_files`], then
/// [`check_served`]. With `--full`, the files to hash are left to
/// [`hash_files`].
async fn audit_url(
    source: &Source,
    mut report: Report,
    published: &Published,
    options: &AuditOptions,
) -> Inventory {
    let versions: Vec<NewestVersion> = published
        .entry_tree()
        .products
        .iter()
        .flat_map(|pd| newest_versions(&pd.content_id, &pd.products))
        .collect();
    let listed = listed_items(&published.trees);
    let served = probe_files(source, &versions, &listed, options.jobs).await;
    let mut checked = BTreeSet::new();
    let mut to_hash = check_served(
        source,
        &versions,
        &served,
        &mut checked,
        options.full,
        &mut report,
    );
    let mut not_held = BTreeSet::new();
    for (path, item) in &listed {
        if !checked.contains(path) {
            let found = served.get(path);
            if let Some(Served::Absent(_)) = found
                && !published.resigned
            {
                not_held.insert(path.clone());
                continue;
            }
            let want = &item.want;
            to_hash.extend(check_served_listed(
                source,
                want,
                found,
                options.full,
                &mut report,
            ));
        }
    }
    Inventory {
        report,
        to_hash,
        listed,
        not_held,
    }
}

/// Checks a listed file that is not of a newest version the client rule
/// checked: served, with its size; in a re-signed mirror it must be
/// served. Gives it back when it is to be hashed.
fn check_served_listed(
    source: &Source,
    want: &Wanted,
    found: Option<&Served>,
    full: bool,
    report: &mut Report,
) -> Option<Wanted> {
    let absent = |status: &str| format!("{status}, but {RESIGNED} ({})", want.reference);
    check_served_against(source, want, found?, full, report, absent)
}

/// Checks one served file against what the metadata says of it (`want`):
/// the size (when the server tells its `Content-Length`); `absent` says
/// why a file not served is a problem. Gives it back when it is to be
/// hashed (`full`, not of a wrong size).
fn check_served_against(
    source: &Source,
    want: &Wanted,
    found: &Served,
    full: bool,
    report: &mut Report,
    absent: impl FnOnce(&str) -> String,
) -> Option<Wanted> {
    report.items_checked += 1;
    let url = source.url_of(&want.path).to_string();
    let problem = match found {
        Served::Present(len) => {
            report.bytes_checked += len.unwrap_or(0);
            match (len, want.expected.size) {
                (Some(len), Some(size)) if *len != size => Problem::new(
                    ProblemKind::Size,
                    url,
                    format!("Content-Length {len}, expected {size} ({})", want.reference),
                ),
                _ if full => return Some(want.clone()),
                _ => return None,
            }
        }
        Served::Absent(status) => Problem::new(ProblemKind::Missing, url, absent(status)),
        Served::Unreadable(e) => Problem::new(ProblemKind::Unreadable, url, e.clone()),
    };
    report.problems.push(problem);
    None
}

/// Probes ([`Source::probe`]) each distinct file of `versions` and of
/// `listed` once, `2 × jobs` at a time.
async fn probe_files(
    source: &Source,
    versions: &[NewestVersion],
    listed: &BTreeMap<RelPath, Listed>,
    jobs: usize,
) -> BTreeMap<RelPath, Served> {
    let mut paths: BTreeSet<&RelPath> = versions
        .iter()
        .flat_map(|v| v.files.iter().map(|w| &w.path))
        .collect();
    paths.extend(listed.keys());
    futures_util::stream::iter(paths)
        .map(|path| async move { (path.clone(), Served::from(source.probe(path).await)) })
        .buffer_unordered(jobs.clamp(1, 64) * 2)
        .collect()
        .await
}

/// The client rule on what is served: a newest version counts as mirrored
/// when one of its files is served, and then all of them must be, with
/// their size; at least one must count. Each file is checked once. Gives
/// the files to hash (with `full`: every file served with the right size).
fn check_served(
    source: &Source,
    versions: &[NewestVersion],
    served: &BTreeMap<RelPath, Served>,
    checked: &mut BTreeSet<RelPath>,
    full: bool,
    report: &mut Report,
) -> Vec<Wanted> {
    let mut to_hash = Vec::new();
    let mut any_served = false;
    for version in versions {
        let mirrored = version
            .files
            .iter()
            .any(|w| matches!(served.get(&w.path), Some(Served::Present(_))));
        if mirrored {
            any_served = true;
            for want in &version.files {
                if checked.insert(want.path.clone()) {
                    to_hash.extend(check_served_file(
                        source, version, want, served, full, report,
                    ));
                }
            }
        } else {
            report.versions_skipped += 1;
            log::debug!("{}: no item served; taken as not mirrored", version.name);
            // Not mirrored as far as can be told; but what could not be
            // asked about at all is a problem.
            for want in &version.files {
                if let Some(Served::Unreadable(e)) = served.get(&want.path)
                    && checked.insert(want.path.clone())
                {
                    let url = source.url_of(&want.path).to_string();
                    report
                        .problems
                        .push(Problem::new(ProblemKind::Unreadable, url, e.clone()));
                }
            }
        }
    }
    if !versions.is_empty() && !any_served {
        report.problems.push(Problem::new(
            ProblemKind::Missing,
            source.root().to_string(),
            "no item of the newest version of any product is served",
        ));
    }
    to_hash
}

/// Checks one file of a mirrored newest `version`: served, with the size
/// the metadata gives (when the server tells its `Content-Length`). Gives
/// it back when it is to be hashed (`full`, not of a wrong size).
fn check_served_file(
    source: &Source,
    version: &NewestVersion,
    want: &Wanted,
    served: &BTreeMap<RelPath, Served>,
    full: bool,
    report: &mut Report,
) -> Option<Wanted> {
    let absent = |status: &str| {
        format!(
            "{status}, but other items of {} are served ({})",
            version.name, want.reference
        )
    };
    check_served_against(source, want, served.get(&want.path)?, full, report, absent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::temp_name;
    use crate::source::split_source;

    fn spec(dir: &Path, path: &str) -> SourceSpec {
        split_source(dir.to_str().unwrap(), Some(path)).unwrap()
    }

    fn run(spec: &SourceSpec, full: bool) -> Result<Report> {
        let rt = crate::runtime::build().unwrap();
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
        let mut refs = crate::store::References::new();
        refs.insert("p/2/a".into(), vec!["c:1/p/2/a".into()]);
        refs.insert("p/2/b".into(), vec!["c:1/p/2/b".into()]);
        crate::runtime::build().unwrap().block_on(async {
            store.save_state("c:1", &state).await.unwrap();
            store.save_references(&refs).await.unwrap();
        });
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
        crate::runtime::build().unwrap().block_on(async {
            let mut refs = store.load_references().await.unwrap();
            refs.insert("gone".into(), vec!["c:0/x/y/z".into()]);
            refs.remove("p/2/b");
            store.save_references(&refs).await.unwrap();
        });
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
    fn interrupted_writes_are_leftovers_not_orphans() {
        let dir = mirror();
        let root = dir.path();
        let temps = [
            format!("streams/v1/{}", temp_name("c.json")),
            format!("{DATA_DIR}/{}", temp_name("c:1")),
            format!("{DATA_DIR}/{}", temp_name(REFERENCES)),
        ];
        for rel in &temps {
            write(root, rel, b"{\"half\": ");
        }
        let r = run(&spec(root, "streams/v1/c.json"), true).unwrap();
        let mut want: Vec<(ProblemKind, String)> = temps
            .iter()
            .map(|rel| (ProblemKind::Leftover, display(root, rel)))
            .collect();
        want.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(kinds(&r), want);
        assert_eq!((r.errors(), r.items_checked), (0, 2));
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
    fn classifies_what_is_offered() {
        let dir = mirror();
        let root = dir.path();
        let r = run(&spec(root, "streams/v1/c.json"), false).unwrap();
        assert_eq!(kinds(&r), []);
        let not_held = NotHeld {
            content_id: "c:1".into(),
            group: "p".into(),
            items: 1,
            versions: 1,
            bytes: 3,
        };
        let want = Offered {
            held: 2,
            not_held: 1,
            not_held_groups: vec![not_held],
            ..Offered::default()
        };
        assert_eq!(r.offered, want);
        assert!(!r.fails(false) && r.fails(true));

        // A damaged file is not held; nor is one gone.
        write(root, "p/2/b", b"abd");
        fs::remove_file(root.join("p/2/a")).unwrap();
        let r = run(&spec(root, "streams/v1/c.json"), true).unwrap();
        let counts = (r.offered.held, r.offered.damaged, r.offered.missing);
        assert_eq!(counts, (0, 1, 1), "{:?}", r.problems);

        // A mirror publishing its own keyring lists only what it holds:
        // what it lists and does not hold is missing, not merely offered.
        write(root, "p/2/a", b"abc");
        write(root, "p/2/b", b"abc");
        write(root, crate::layout::MIRROR_KEYRING, b"not a keyring");
        let r = run(&spec(root, "streams/v1/c.json"), false).unwrap();
        assert_eq!(
            kinds(&r),
            [
                (ProblemKind::Missing, display(root, "p/1/a")),
                (
                    ProblemKind::Signature,
                    source_url(root, crate::layout::MIRROR_KEYRING)
                ),
            ]
        );
        assert_eq!((r.offered.missing, r.offered.not_held), (1, 0));
    }

    #[test]
    fn index_naming_nothing_is_an_error() {
        let dir = mirror();
        let root = dir.path();
        write(
            root,
            "streams/v1/index.json",
            br#"{"format":"index:1.0","index":{}}"#,
        );
        let r = run(&spec(root, "streams/v1/index.json"), false).unwrap();
        assert_eq!(r.errors(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].kind, ProblemKind::Metadata);
        write(root, "streams/v1/index.json", b"{}");
        let e = run(&spec(root, "streams/v1/index.json"), false).unwrap_err();
        assert_eq!(problem_of_error(&e).kind, ProblemKind::Metadata);
    }

    /// The `file://` URL of `rel` under `root`, as the source names it.
    fn source_url(root: &Path, rel: &str) -> String {
        let root = url::Url::from_directory_path(root).unwrap();
        root.join(rel).unwrap().to_string()
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
