//! Where streams come from: HTTP(S) and local (`file://` or plain path)
//! sources, with retries, stall timeouts, checked Range resume and fallback
//! mirrors for items. A source reads; it never names or writes a file of the
//! mirror: items are streamed into a [`Staged`] item that the store owns.

use crate::error::{Error, IntegrityKind, Result};
use crate::hash::IO_BUFFER;
pub use crate::hash::{Expected, Hasher};
use crate::path::RelPath;
use crate::retry::{Attempt, Backoff, Remedy, RetryPolicy};
use crate::store::{S3Settings, Staged, Store};
use futures_util::StreamExt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;

mod link;
mod probe;
mod segments;
pub use probe::{MIRROR_ENTRIES, Probe};

/// The default entry point of a stream, relative to its root.
pub const DEFAULT_ENTRY: &str = "streams/v1/index.sjson";

/// Items at least this large are fetched in byte ranges over several
/// connections by default (32 MiB).
pub const DEFAULT_SEGMENT_THRESHOLD: u64 = 32 << 20;

/// The most connections the budget grows to by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// Largest metadata document accepted (a server that lies is cut off).
const MAX_METADATA_BYTES: usize = 1 << 30;

/// A source split into its root and the document to start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// The root URL, always ending in `/`.
    pub root: Url,
    /// The entry document (index or products), relative to the root.
    pub entry: RelPath,
}

/// Turns a command-line source into a URL: `http(s)://` and `file://` as they
/// are, anything else is a local path.
pub fn source_url(source: &str) -> Result<Url> {
    let bad = |reason: String| Error::BadSource {
        given: source.to_owned(),
        reason,
    };
    if source.contains("://") {
        let url = Url::parse(source).map_err(|e| bad(e.to_string()))?;
        match url.scheme() {
            "http" | "https" | "file" => Ok(url),
            s => Err(bad(format!(
                "unsupported scheme {s:?} (use http, https, file or a path)"
            ))),
        }
    } else {
        let path = std::path::absolute(source).map_err(|e| bad(e.to_string()))?;
        Url::from_file_path(&path).map_err(|()| bad("not a usable path".into()))
    }
}

/// Splits a source into root and entry: a URL that names
/// `streams/v1/<name>.json` or `.sjson` is split there; otherwise the entry
/// is `path` or [`DEFAULT_ENTRY`]. An explicit `path` always wins.
pub fn split_source(source: &str, path: Option<&str>) -> Result<SourceSpec> {
    let url = source_url(source)?;
    let text = url.as_str();
    let (root, named) = match text.rfind("streams/v1/") {
        Some(i) if is_document_name(&text[i + "streams/v1/".len()..]) => {
            (text[..i].to_owned(), Some(&text[i..]))
        }
        _ => (text.to_owned(), None),
    };
    let entry = match (path, named) {
        (Some(p), _) => p.to_owned(),
        (None, Some(n)) => percent_encoding::percent_decode_str(n)
            .decode_utf8_lossy()
            .into_owned(),
        (None, None) => DEFAULT_ENTRY.to_owned(),
    };
    let root = if root.ends_with('/') {
        root
    } else {
        format!("{root}/")
    };
    let root = Url::parse(&root).map_err(|e| Error::BadSource {
        given: source.to_owned(),
        reason: e.to_string(),
    })?;
    let entry = RelPath::parse(&entry).map_err(|e| Error::UnsafePath {
        context: format!("source {source:?}"),
        path: entry.clone(),
        reason: e.to_string(),
    })?;
    Ok(SourceSpec { root, entry })
}

fn is_document_name(rest: &str) -> bool {
    !rest.contains('/') && (rest.ends_with(".json") || rest.ends_with(".sjson")) && rest.len() > 5
}

/// The URL of `rel` under `root`: segments are appended, never resolved, so
/// a colon in a file name stays a file name.
pub fn join_url(root: &Url, rel: &RelPath) -> Url {
    let mut url = root.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty();
        segments.extend(rel.segments());
    }
    url
}

/// Knobs for transfers.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Connections open at once for item downloads (`--jobs`): every file
    /// being downloaded holds one, and a file of at least
    /// [`segment_threshold`](Self::segment_threshold) bytes also takes those
    /// no other file is waiting for, to fetch byte ranges of itself at
    /// once. Give the executor as many jobs.
    pub connections: usize,
    /// The most connections the budget grows to while each one added
    /// brings more throughput to the ranges of large files
    /// (`--max-connections`; see the `link` module). At most
    /// `connections` means it never grows.
    pub max_connections: usize,
    /// Items at least this large are fetched in byte ranges over several
    /// connections when the server honours ranges (`None`: never).
    pub segment_threshold: Option<u64>,
    /// The most bytes per second received by all connections together
    /// (`None`: no limit).
    pub limit_rate: Option<u64>,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// A transfer that receives nothing for this long is abandoned.
    pub idle_timeout: Duration,
    /// Retries of one transfer on timeouts, resets, 5xx and 429.
    pub retries: u32,
    /// First backoff delay; doubled each retry, with jitter.
    pub backoff: Duration,
    /// Longest backoff delay (also caps `Retry-After`).
    pub max_backoff: Duration,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            connections: 6,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            segment_threshold: Some(DEFAULT_SEGMENT_THRESHOLD),
            limit_rate: None,
            connect_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            retries: 4,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl TransferOptions {
    /// The retry policy these options set: [`retries`](Self::retries)
    /// retries, backing off from [`backoff`](Self::backoff) up to
    /// [`max_backoff`](Self::max_backoff).
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            retries: self.retries,
            backoff: Backoff {
                first: self.backoff,
                max: self.max_backoff,
            },
        }
    }

    /// `settings` with the retries, backoff and timeouts of these options,
    /// so that a mirror kept in object storage is written as patiently as
    /// its source is read.
    pub fn for_s3(&self, settings: S3Settings) -> S3Settings {
        S3Settings {
            retries: self.retries as usize,
            backoff: self.retry_policy().backoff,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            // A point request (document, state, lease, listing) as a whole,
            // retries included, is bounded by the transfer timeout too.
            request_timeout: self.idle_timeout.max(std::time::Duration::from_millis(100)),
            ..settings
        }
    }
}

/// Cache validators of a fetched document, for conditional requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validators {
    /// The `ETag` the server sent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub etag: Option<String>,
    /// The `Last-Modified` the server sent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_modified: Option<String>,
}

impl Validators {
    /// Whether there is anything to send.
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// The outcome of a (conditional) metadata fetch.
#[derive(Debug)]
pub enum Fetched {
    /// The server said the document is unchanged (304).
    NotModified,
    /// The document's bytes and validators.
    Body {
        /// The raw bytes as served.
        bytes: Vec<u8>,
        /// Validators for the next conditional request.
        validators: Validators,
    },
}

/// Receives byte counts as a download progresses (may be negative when a
/// partial download is discarded).
pub type ProgressFn = Arc<dyn Fn(i64) + Send + Sync>;

/// A stream's root plus fallback roots for items, and the means to read them.
#[derive(Debug, Clone)]
pub struct Source {
    roots: Vec<Url>,
    /// A mirror's store read as a source ([`Source::of_store`]): documents,
    /// probes and checks go through it instead of HTTP or the file system.
    store: Option<Arc<dyn Store>>,
    /// For `http://`: no TLS, so no certificate store to load (which is
    /// most of the cost of a run that finds nothing to do).
    plain: reqwest::Client,
    /// For `https://`, built on first use with the system's roots.
    tls: Arc<std::sync::OnceLock<reqwest::Client>>,
    options: TransferOptions,
    /// The connections item downloads may have open at once, and the cap
    /// on the rate of everything received.
    link: Arc<link::Link>,
}

impl Source {
    /// A source at `root`, with `mirrors` tried for items when the root fails.
    pub fn new(root: Url, mirrors: Vec<Url>, options: TransferOptions) -> Result<Source> {
        // Redirects to https are not followed by the plain client: `send`
        // hands them over to the TLS one.
        let plain = client_builder(&options)
            .tls_certs_only(std::iter::empty())
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.url().scheme() == "https" || attempt.previous().len() >= 10 {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| Error::ClientSetup {
                context: "cannot set up the HTTP client".to_owned(),
                reason: e.to_string(),
            })?;
        let mut roots = vec![root];
        for m in mirrors {
            let m = if m.as_str().ends_with('/') {
                m
            } else {
                Url::parse(&format!("{m}/")).unwrap_or(m)
            };
            roots.push(m);
        }
        Ok(Source {
            roots,
            store: None,
            plain,
            tls: Arc::default(),
            link: Arc::new(link::Link::new(
                options.connections,
                options.max_connections,
                options.limit_rate,
            )),
            options,
        })
    }

    /// A source reading the mirror kept in `store` (to audit it): its
    /// root URL is the store's location. Items are not downloaded from it.
    pub fn of_store(store: Arc<dyn Store>, options: TransferOptions) -> Result<Source> {
        let location = store.location();
        let root = Url::parse(&format!("{}/", location.trim_end_matches('/')))
            .ok()
            .filter(|u| !u.cannot_be_a_base())
            .or_else(|| Url::from_directory_path(&location).ok())
            .ok_or_else(|| Error::NotASourceRoot {
                location: location.clone(),
            })?;
        let mut source = Source::new(root, Vec::new(), options)?;
        source.store = Some(store);
        Ok(source)
    }

    /// The store this source reads, if it reads one.
    fn store(&self) -> Option<Arc<dyn Store>> {
        self.store.clone()
    }

    /// GETs `url` with `headers`, over TLS when the URL (or a redirect from
    /// a plain URL) is `https`.
    async fn send(
        &self,
        url: &Url,
        headers: reqwest::header::HeaderMap,
    ) -> reqwest::Result<reqwest::Response> {
        if url.scheme() == "https" {
            return self
                .tls_client()?
                .get(url.clone())
                .headers(headers)
                .send()
                .await;
        }
        let resp = self
            .plain
            .get(url.clone())
            .headers(headers.clone())
            .send()
            .await?;
        let to_https = resp
            .status()
            .is_redirection()
            .then(|| resp.headers().get(reqwest::header::LOCATION)?.to_str().ok())
            .flatten()
            .and_then(|loc| resp.url().join(loc).ok())
            .filter(|u| u.scheme() == "https");
        match to_https {
            Some(next) => self.tls_client()?.get(next).headers(headers).send().await,
            None => Ok(resp),
        }
    }

    fn tls_client(&self) -> reqwest::Result<&reqwest::Client> {
        if let Some(c) = self.tls.get() {
            return Ok(c);
        }
        let client = client_builder(&self.options).build()?;
        Ok(self.tls.get_or_init(|| client))
    }

    /// The primary root.
    pub fn root(&self) -> &Url {
        &self.roots[0]
    }

    /// The URL of `rel` at the primary root.
    pub fn url_of(&self, rel: &RelPath) -> Url {
        join_url(&self.roots[0], rel)
    }

    /// Fetches a metadata document from the primary root, conditionally when
    /// `validators` are given, with retries.
    pub async fn fetch(&self, rel: &RelPath, validators: Option<&Validators>) -> Result<Fetched> {
        let url = self.url_of(rel);
        if let Some(store) = self.store() {
            return match store.read(rel).await? {
                Some(bytes) => Ok(Fetched::Body {
                    bytes,
                    validators: Validators::default(),
                }),
                None => Err(Error::transfer(url.as_str(), "not found")),
            };
        }
        if url.scheme() == "file" {
            let path = file_path(&url)?;
            let bytes = tokio::task::spawn_blocking(move || {
                std::fs::read(&path).map_err(|e| Error::io(path, e))
            })
            .await
            .map_err(|e| Error::transfer(url.as_str(), e.to_string()))??;
            return Ok(Fetched::Body {
                bytes,
                validators: Validators::default(),
            });
        }
        let mut attempt = 0;
        loop {
            match self.fetch_once(&url, validators).await {
                Ok(f) => return Ok(f),
                Err(Attempt::Retry(e, after)) if attempt < self.options.retries => {
                    log::warn!("{e}; retrying");
                    tokio::time::sleep(self.backoff(attempt, after)).await;
                    attempt += 1;
                }
                Err(Attempt::Retry(e, _)) | Err(Attempt::Fatal(e)) | Err(Attempt::Restart(e)) => {
                    return Err(e);
                }
            }
        }
    }

    async fn fetch_once(
        &self,
        url: &Url,
        validators: Option<&Validators>,
    ) -> Result<Fetched, Attempt> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(v) = validators {
            let mut set = |name, value: &Option<String>| {
                if let Some(v) = value.as_deref().and_then(|v| v.parse().ok()) {
                    headers.insert(name, v);
                }
            };
            set(reqwest::header::IF_NONE_MATCH, &v.etag);
            set(reqwest::header::IF_MODIFIED_SINCE, &v.last_modified);
        }
        let resp = self
            .send(url, headers)
            .await
            .map_err(|e| Attempt::of_transfer(url, &e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_MODIFIED && validators.is_some() {
            return Ok(Fetched::NotModified);
        }
        check_status(url, &resp)?;
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let date = header(reqwest::header::DATE);
        let validators = Validators {
            etag: header(reqwest::header::ETAG),
            last_modified: header(reqwest::header::LAST_MODIFIED)
                .filter(|lm| proves_freshness(lm, date.as_deref())),
        };
        if let Some(len) = resp.content_length()
            && len > MAX_METADATA_BYTES as u64
        {
            return Err(Attempt::Fatal(Error::transfer(
                url.as_str(),
                format!("document too large ({len} bytes)"),
            )));
        }
        // Sized once when the length is known (growing by doubling would
        // hold up to twice a large document).
        let mut bytes = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Attempt::of_transfer(url, &e))?;
            self.link.received(chunk.len()).await;
            if bytes.len() + chunk.len() > MAX_METADATA_BYTES {
                return Err(Attempt::Fatal(Error::transfer(
                    url.as_str(),
                    "document too large",
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched::Body { bytes, validators })
    }

    /// How long to wait before retry `attempt` (see [`Backoff::delay`]).
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        self.options
            .retry_policy()
            .backoff
            .delay(attempt, retry_after)
    }

    /// Downloads `rel` into `staged`, resuming what is already staged when
    /// the server honours the Range request, and checks size and checksum.
    /// Tries the primary root, then each mirror. Gives back the staged item,
    /// complete and verified (the caller commits it), and the bytes
    /// transferred.
    ///
    /// Waits for a connection of the budget first. An item of at least
    /// [`TransferOptions::segment_threshold`] bytes from an `http(s)` root
    /// is fetched in byte ranges over the connections nobody else is waiting
    /// for (see the `segments` module), when the store can write at offsets
    /// and the server answers ranges as asked; otherwise over one.
    pub async fn download(
        &self,
        rel: &RelPath,
        staged: Box<dyn Staged>,
        expected: &Expected,
        progress: &ProgressFn,
    ) -> Result<(Box<dyn Staged>, u64)> {
        if self.store.is_some() {
            return Err(Error::transfer(
                self.url_of(rel).as_str(),
                "items are not downloaded from a store read as a source",
            ));
        }
        let _connection = self.link.connections.for_file().await;
        let slot: Slot = Arc::new(Mutex::new(staged));
        let mut earlier = 0;
        if let Some(size) = self.segmentable(rel, expected) {
            match segments::download(self, rel, &slot, size, expected, progress).await? {
                segments::Segmented::Done(n) => return Ok((take(slot, &self.url_of(rel))?, n)),
                segments::Segmented::OneConnection(n, why) => {
                    if let Some(why) = why {
                        log::info!("{why}; fetching {rel} over one connection");
                    }
                    earlier = n;
                }
            }
        }
        let mut errors = Vec::new();
        for root in &self.roots {
            let url = join_url(root, rel);
            match self.download_from(&url, &slot, expected, progress).await {
                Ok(n) => return Ok((take(slot, &url)?, earlier + n)),
                Err(e) => {
                    if self.roots.len() > 1 {
                        log::warn!("{e}");
                    }
                    errors.push(e);
                }
            }
        }
        let last = errors
            .pop()
            .unwrap_or_else(|| Error::transfer(rel.as_str(), "no source root"));
        if errors.is_empty() {
            Err(last)
        } else {
            Err(Error::transfer(
                rel.as_str(),
                format!(
                    "failed at all {} roots (primary and --mirror); last: {last}",
                    errors.len() + 1
                ),
            ))
        }
    }

    /// The size of `rel` when it is to be fetched in ranges: large enough,
    /// from an `http(s)` primary root, with more than one connection.
    fn segmentable(&self, rel: &RelPath, expected: &Expected) -> Option<u64> {
        let threshold = self.options.segment_threshold?;
        let size = expected.size?;
        let scheme = self.url_of(rel).scheme().to_owned();
        (size >= threshold.max(1)
            && self.options.connections > 1
            && (scheme == "http" || scheme == "https"))
            .then_some(size)
    }

    /// One root: a local copy, or HTTP attempts with retries and backoff.
    async fn download_from(
        &self,
        url: &Url,
        slot: &Slot,
        expected: &Expected,
        progress: &ProgressFn,
    ) -> Result<u64> {
        if url.scheme() == "file" {
            let from = file_path(url)?;
            let (slot, exp, progress) = (slot.clone(), expected.clone(), progress.clone());
            let url_text = url.to_string();
            return tokio::task::spawn_blocking(move || {
                copy_verified(&from, &slot, &exp, &url_text, &progress)
            })
            .await
            .map_err(|e| Error::transfer(url.as_str(), e.to_string()))?;
        }
        let mut attempt = 0;
        let mut restarted = false;
        loop {
            let (e, after) = match self.download_once(url, slot, expected, progress).await {
                Ok(n) => return Ok(n),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Restart(e)) if !restarted => {
                    log::warn!("{e}; starting again from the beginning");
                    restarted = true;
                    continue;
                }
                Err(Attempt::Restart(e)) => (e, Some(Duration::ZERO)),
                Err(Attempt::Retry(e, after)) => (e, after),
            };
            if attempt >= self.options.retries {
                return Err(e);
            }
            log::warn!("{e}; retrying");
            tokio::time::sleep(self.backoff(attempt, after)).await;
            attempt += 1;
        }
    }

    /// One HTTP attempt, in phases: look at what is staged (resume, or
    /// verify a complete one), request the rest, stream it into the staged
    /// file while hashing, then check size and checksum.
    async fn download_once(
        &self,
        url: &Url,
        slot: &Slot,
        expected: &Expected,
        progress: &ProgressFn,
    ) -> Result<u64, Attempt> {
        let fatal = |e: Error| Attempt::Fatal(e);
        let mut have = staged_len(slot);
        if expected.size.is_some_and(|size| have > size) {
            clear(slot, have, progress).await.map_err(fatal)?;
            have = 0;
        }
        if have > 0 && Some(have) == expected.size {
            return self
                .verify_staged(url, slot, have, expected, progress)
                .await;
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if have > 0
            && let Ok(range) = format!("bytes={have}-").parse()
        {
            headers.insert(reqwest::header::RANGE, range);
        }
        let resp = self
            .send(url, headers)
            .await
            .map_err(|e| Attempt::of_transfer(url, &e))?;
        let start = self.resume_point(url, &resp, slot, have, progress).await?;
        check_body(url, &resp, expected, start)?;
        let (total, digest, received) =
            receive(url, resp, slot, start, expected, progress, &self.link).await?;
        if let Some(size) = expected.size
            && total < size
        {
            return Err(Attempt::Retry(
                Error::transfer(
                    url.as_str(),
                    format!("connection ended after {total} of {size} bytes"),
                ),
                None,
            ));
        }
        if let Err(e) = expected.check(url.as_str(), total, digest) {
            clear(slot, total, progress).await.map_err(fatal)?;
            // When the file was resumed, the bad bytes may be the old ones.
            return Err(if start > 0 {
                Attempt::Restart(e)
            } else {
                Attempt::Retry(e, None)
            });
        }
        Ok(received)
    }

    /// A complete staged file from an earlier run: verified as it is (and
    /// discarded, to start again, when it is wrong).
    async fn verify_staged(
        &self,
        url: &Url,
        slot: &Slot,
        have: u64,
        expected: &Expected,
        progress: &ProgressFn,
    ) -> Result<u64, Attempt> {
        let fatal = |e: Error| Attempt::Fatal(e);
        let (s, exp, u) = (slot.clone(), expected.clone(), url.to_string());
        let verdict = tokio::task::spawn_blocking(move || {
            let mut staged = lock(&s);
            let mut hasher = exp.hasher();
            staged.begin(have, &mut |b| hasher.update(b))?;
            exp.check(&u, have, hasher.finish())
        })
        .await
        .map_err(|e| fatal(Error::transfer(url.as_str(), e.to_string())))?;
        match verdict {
            Ok(()) => Ok(0),
            Err(e) => {
                clear(slot, have, progress).await.map_err(fatal)?;
                Err(Attempt::Restart(e))
            }
        }
    }

    /// Where the answer starts: `have` for a 206 whose Content-Range starts
    /// there, 0 for a full answer (what was staged is dropped); anything
    /// else is a failed attempt.
    async fn resume_point(
        &self,
        url: &Url,
        resp: &reqwest::Response,
        slot: &Slot,
        have: u64,
        progress: &ProgressFn,
    ) -> Result<u64, Attempt> {
        let fatal = |e: Error| Attempt::Fatal(e);
        let status = resp.status();
        if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
            clear(slot, have, progress).await.map_err(fatal)?;
            return Err(Attempt::Restart(Error::transfer(
                url.as_str(),
                "416 for the resume range",
            )));
        }
        check_status(url, resp)?;
        if status != reqwest::StatusCode::PARTIAL_CONTENT {
            if have > 0 {
                log::info!("{url}: server ignored the Range request; restarting from 0");
                progress(-(have as i64));
            }
            return Ok(0);
        }
        match content_range_start(resp) {
            Some(s) if s == have => Ok(have),
            _ => {
                clear(slot, have, progress).await.map_err(fatal)?;
                Err(Attempt::Retry(
                    Error::transfer(
                        url.as_str(),
                        "206 with a Content-Range that does not match the request; restarting",
                    ),
                    Some(Duration::ZERO),
                ))
            }
        }
    }
}

/// The staged item a download writes, shared with the blocking thread that
/// writes and hashes it.
type Slot = Arc<Mutex<Box<dyn Staged>>>;

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, Box<dyn Staged>> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn staged_len(slot: &Slot) -> u64 {
    lock(slot).staged_len()
}

/// The staged item back from its slot once every writer is done.
fn take(slot: Slot, url: &Url) -> Result<Box<dyn Staged>> {
    match Arc::try_unwrap(slot) {
        Ok(m) => Ok(m
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)),
        Err(_) => Err(Error::transfer(
            url.as_str(),
            "download still being written",
        )),
    }
}

/// Drops the `had` bytes staged (progress goes back by as much).
async fn clear(slot: &Slot, had: u64, progress: &ProgressFn) -> Result<()> {
    let s = slot.clone();
    tokio::task::spawn_blocking(move || {
        let mut staged = lock(&s);
        staged.begin(0, &mut |_| {})?;
        staged.sync()
    })
    .await
    .map_err(|e| Error::transfer("download", e.to_string()))??;
    progress(-(had as i64));
    Ok(())
}

/// Streams the body of `resp` into the staged file after its first `start`
/// bytes, hashing everything. Gives the staged size, its digest and the
/// bytes received.
async fn receive(
    url: &Url,
    resp: reqwest::Response,
    slot: &Slot,
    start: u64,
    expected: &Expected,
    progress: &ProgressFn,
    link: &link::Link,
) -> Result<(u64, Option<String>, u64), Attempt> {
    let fatal = |e: Error| Attempt::Fatal(e);
    // A short queue: on loopback hyper hands over chunks of ~400 KB, so this
    // bounds what one download holds in memory to a couple of MB.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let (s, exp) = (slot.clone(), expected.clone());
    let writer = tokio::task::spawn_blocking(move || -> Result<(u64, Option<String>)> {
        let mut staged = lock(&s);
        let mut hasher = exp.hasher();
        staged.begin(start, &mut |b| hasher.update(b))?;
        let mut written = start;
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            staged.write(&chunk)?;
            written += chunk.len() as u64;
        }
        staged.sync()?;
        Ok((written, hasher.finish()))
    });
    let mut stream = resp.bytes_stream();
    let mut body_error = None;
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                link.received(chunk.len()).await;
                received += chunk.len() as u64;
                if let Some(size) = expected.size
                    && start + received > size
                {
                    body_error = Some(Error::Integrity {
                        url: url.to_string(),
                        kind: IntegrityKind::Size,
                        reason: format!("server sent more than the expected {size} bytes"),
                    });
                    break;
                }
                progress(chunk.len() as i64);
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                drop(tx);
                let _ = writer.await;
                return Err(Attempt::of_transfer(url, &e));
            }
        }
    }
    drop(tx);
    let (total, digest) = writer
        .await
        .map_err(|e| fatal(Error::transfer(url.as_str(), e.to_string())))?
        .map_err(fatal)?;
    if let Some(e) = body_error {
        clear(slot, total, progress).await.map_err(fatal)?;
        return Err(Attempt::Retry(e, None));
    }
    Ok((total, digest, received))
}

/// The client settings shared by the plain and the TLS client.
fn client_builder(options: &TransferOptions) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .read_timeout(options.idle_timeout)
        .user_agent(concat!("sstream/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(32)
}

fn file_path(url: &Url) -> Result<PathBuf> {
    url.to_file_path()
        .map_err(|()| Error::transfer(url.as_str(), "not a local file path"))
}

fn check_status(url: &Url, resp: &reqwest::Response) -> Result<(), Attempt> {
    let status = resp.status();
    if status.is_success() {
        return check_encoding(url, resp);
    }
    if status.is_redirection() {
        return Err(Attempt::Fatal(not_followed(url, resp)));
    }
    let e = Error::transfer(url.as_str(), format!("HTTP {status}"));
    let remedy = Remedy::of_status(status.as_u16());
    Err(Attempt::of(remedy, e, retry_after(resp)))
}

/// A redirect that was not followed: where it led, and why not.
fn not_followed(url: &Url, resp: &reqwest::Response) -> Error {
    let status = resp.status();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok());
    let reason = match location.and_then(|l| resp.url().join(l).ok()) {
        None => format!("HTTP {status} without a usable Location"),
        Some(to) if !matches!(to.scheme(), "http" | "https") => format!(
            "HTTP {status}: redirected to {to}, not followed (only http and https redirects are)"
        ),
        Some(to) => format!(
            "HTTP {status}: redirected to {to}, not followed: too many redirects (a redirect loop?)"
        ),
    };
    Error::transfer(url.as_str(), reason)
}

/// Refuses a body in a `Content-Encoding` (sstream asks for none and
/// decodes none: a compressed item or document would fail its checks with
/// a misleading message).
fn check_encoding(url: &Url, resp: &reqwest::Response) -> Result<(), Attempt> {
    let encoding = resp
        .headers()
        .get(reqwest::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"));
    match encoding {
        None => Ok(()),
        Some(e) => Err(Attempt::Fatal(Error::transfer(
            url.as_str(),
            format!(
                "served with Content-Encoding: {e}, which sstream does not decode \
                 (it asks for none); serve the files as they are"
            ),
        ))),
    }
}

/// Checks, before any byte is staged, that an answer can be the item: its
/// `Content-Length` must be what is left to fetch. An HTML page instead of
/// the item (a captive portal, an error page answered with 200) is said to
/// be one and not retried; another length is retried.
fn check_body(
    url: &Url,
    resp: &reqwest::Response,
    expected: &Expected,
    start: u64,
) -> Result<(), Attempt> {
    let (Some(size), Some(len)) = (expected.size, resp.content_length()) else {
        return Ok(());
    };
    let want = size.saturating_sub(start);
    if len == want {
        return Ok(());
    }
    let kind = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no Content-Type");
    let what = format!(
        "HTTP {} with {len} bytes of {kind}, not the {want} bytes expected",
        resp.status()
    );
    if kind.starts_with("text/html") && !url.path().ends_with(".html") {
        let why = format!("{what}: a captive portal or an error page, not the item");
        return Err(Attempt::Fatal(Error::transfer(url.as_str(), why)));
    }
    Err(Attempt::Retry(Error::transfer(url.as_str(), what), None))
}

/// Whether a `Last-Modified` can stand as a validator: a time after the
/// response's own `Date`, or in the future of the local clock, cannot prove
/// that the document is unchanged (a server with a fast clock would answer
/// 304 to a changed document for as long as its clock runs ahead).
fn proves_freshness(last_modified: &str, date: Option<&str>) -> bool {
    let Ok(modified) = httpdate::parse_http_date(last_modified) else {
        return false;
    };
    let date = date.and_then(|d| httpdate::parse_http_date(d).ok());
    let now = std::time::SystemTime::now();
    modified <= now && date.is_none_or(|d| modified <= d)
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let range = v.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

/// Copies a local source file into the staged item, hashing it; a file
/// larger than expected, or one that does not match, is dropped.
fn copy_verified(
    from: &Path,
    slot: &Slot,
    expected: &Expected,
    url: &str,
    progress: &ProgressFn,
) -> Result<u64> {
    let mut src = std::fs::File::open(from).map_err(|e| Error::transfer(url, e.to_string()))?;
    let mut staged = lock(slot);
    let mut hasher = expected.hasher();
    staged.begin(0, &mut |_| {})?;
    let mut buf = vec![0u8; IO_BUFFER];
    let mut written = 0u64;
    let result = loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(Error::io(from, e)),
        };
        if expected.size.is_some_and(|size| written + n as u64 > size) {
            break Err(Error::Integrity {
                url: url.to_owned(),
                kind: IntegrityKind::Size,
                reason: format!(
                    "larger than the expected {} bytes",
                    expected.size.unwrap_or(0)
                ),
            });
        }
        hasher.update(&buf[..n]);
        if let Err(e) = staged.write(&buf[..n]) {
            break Err(e);
        }
        written += n as u64;
        progress(n as i64);
    };
    let result = result
        .and_then(|()| staged.sync())
        .and_then(|()| expected.check(url, written, hasher.finish()));
    if result.is_err() {
        let _ = staged.begin(0, &mut |_| {});
        progress(-(written as i64));
    }
    result.map(|()| written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str, p: Option<&str>) -> (String, String) {
        let spec = split_source(s, p).unwrap();
        (spec.root.to_string(), spec.entry.to_string())
    }

    #[test]
    fn splits_urls() {
        let idx = "streams/v1/index.sjson".to_string();
        assert_eq!(
            split("https://images.maas.io/ephemeral-v3/stable/", None),
            (
                "https://images.maas.io/ephemeral-v3/stable/".into(),
                idx.clone()
            )
        );
        assert_eq!(
            split("https://images.maas.io/ephemeral-v3/stable", None),
            (
                "https://images.maas.io/ephemeral-v3/stable/".into(),
                idx.clone()
            )
        );
        assert_eq!(
            split("http://h/x/streams/v1/index.json", None),
            ("http://h/x/".into(), "streams/v1/index.json".into())
        );
        assert_eq!(
            split(
                "http://h/streams/v1/com.ubuntu.maas:stable:v3:download.sjson",
                None
            ),
            (
                "http://h/".into(),
                "streams/v1/com.ubuntu.maas:stable:v3:download.sjson".into()
            )
        );
        assert_eq!(
            split("http://h/x", Some("streams/v1/index.json")),
            ("http://h/x/".into(), "streams/v1/index.json".into())
        );
        assert_eq!(
            split("file:///srv/m/", None),
            ("file:///srv/m/".into(), idx.clone())
        );
        assert_eq!(split("/srv/m", None), ("file:///srv/m/".into(), idx));
    }

    #[test]
    fn rejects_bad_sources() {
        assert!(
            split_source("ftp://h/x", None)
                .unwrap_err()
                .to_string()
                .contains("unsupported scheme")
        );
        assert!(split_source("http://h/", Some("../x")).is_err());
    }

    #[test]
    fn joins_without_resolving() {
        let root = Url::parse("http://h/a/").unwrap();
        let rel = RelPath::parse("streams/v1/com.ubuntu.maas:stable:v3:download.json").unwrap();
        assert_eq!(
            join_url(&root, &rel).as_str(),
            "http://h/a/streams/v1/com.ubuntu.maas:stable:v3:download.json"
        );
        let rel = RelPath::parse("a b/c#d").unwrap();
        assert_eq!(join_url(&root, &rel).as_str(), "http://h/a/a%20b/c%23d");
    }
}
