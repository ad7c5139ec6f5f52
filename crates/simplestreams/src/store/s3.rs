//! A mirror in S3-compatible object storage (AWS S3, Ceph RGW, MinIO,
//! Garage, ...), under `s3://BUCKET/PREFIX`, laid out exactly as a mirror
//! directory: the same keys, the same `.data/` objects in the reference's
//! format, so that a bucket synced to disk is a mirror directory and back.
//!
//! - **Nothing unverified under a final key.** An item is streamed into a
//!   multipart upload as it is downloaded (small ones are buffered and
//!   sent with one `PUT`); the upload is completed only on
//!   [`Staged::commit`], after the download has checked its size and
//!   checksum, and aborted otherwise. Until then no reader sees any of it.
//!   Metadata and state are single `PUT`s, which S3 makes atomic.
//! - **Point requests only.** A run reads with `GET` and `HEAD` (the
//!   [`FileStamp`] of an object is its size, its `Last-Modified` and a hash
//!   of its `ETag`) and never lists the bucket; only [`Store::list`] (for an
//!   audit) does.
//! - **A lease instead of a lock.** [`lease`]: `.data/sstream.lock`,
//!   created with a conditional `PUT` (`If-None-Match: *`), holding its
//!   owner and expiry, renewed while the run lasts.
//!
//! - **The caller's runtime.** The store builds no runtime: its [`Store`]
//!   methods await their requests on the runtime that polls them. What is
//!   read and written synchronously ([`Store::open`]'s reader, a
//!   [`Staged`] upload's parts, a lease released on drop) keeps a `Handle`
//!   of the runtime it was made on and drives its requests through it from
//!   the blocking thread (a multi-threaded runtime, as
//!   [`crate::runtime::build`] makes).
//! - **Bounded point requests.** A `HEAD`, a `GET` of a document, a
//!   `DELETE`, a listing or a lease request with no whole answer within
//!   [`S3Settings::request_timeout`] (retries included) fails, naming the
//!   object or the bucket, instead of waiting out the client's retries.

mod config;
mod lease;
mod upload;

pub use config::{S3Settings, S3Target, is_s3_target};

use super::{FileStamp, Lease, Listed, Staged, Store};
use crate::error::{Error, Result};
use crate::path::RelPath;
use crate::retry::RetryPolicy;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::runtime::{Handle, RuntimeFlavor};

/// A mirror under `s3://BUCKET/PREFIX`.
#[derive(Clone)]
pub struct S3Store {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("target", &self.shared.target.url())
            .finish()
    }
}

/// What the store, its uploads, readers and lease share.
struct Shared {
    target: S3Target,
    client: Arc<dyn ObjectStore>,
    settings: S3Settings,
    /// Set when the lease was lost (taken over after it expired, or not
    /// renewed in time): nothing more is written.
    lease_lost: Arc<AtomicBool>,
}

impl S3Store {
    /// A store at `url` (`s3://BUCKET/PREFIX`) reached with `settings`.
    ///
    /// # Errors
    /// A malformed URL or endpoint, or a client that cannot be set up.
    pub fn open(url: &str, settings: S3Settings) -> Result<S3Store> {
        let target = S3Target::parse(url)?;
        let client = build_client(&target, &settings)?;
        Ok(S3Store {
            shared: Arc::new(Shared {
                target,
                client,
                settings,
                lease_lost: Arc::default(),
            }),
        })
    }

    /// A store at `url` configured from the environment and the AWS files
    /// ([`S3Settings::from_env`]).
    pub fn from_env(url: &str) -> Result<S3Store> {
        S3Store::open(url, S3Settings::from_env()?)
    }

    /// The bucket and prefix.
    pub fn target(&self) -> &S3Target {
        &self.shared.target
    }
}

/// The `object_store` client of `target`: path-style addressing for a
/// custom endpoint (virtual-hosted for AWS), plain HTTP when the endpoint
/// says `http://`, idle (not total) timeouts, retries with backoff, and
/// single-object `DELETE`s.
fn build_client(target: &S3Target, settings: &S3Settings) -> Result<Arc<dyn ObjectStore>> {
    // Without keys object_store asks the EC2 instance metadata service,
    // which only AWS has: for another service, say what is missing.
    let other_provider = [
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_SKIP_SIGNATURE",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if let Some(endpoint) = &settings.endpoint
        && settings.access_key_id.is_none()
        && !other_provider
    {
        return Err(Error::S3Settings {
            context: target.url(),
            reason: format!(
                "no credentials for {endpoint}: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, or a profile (AWS_PROFILE) in ~/.aws/credentials"
            ),
        });
    }
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(&target.bucket);
    builder = builder.with_region(settings.region.as_deref().unwrap_or("us-east-1"));
    let user_chose_style = std::env::var_os("AWS_VIRTUAL_HOSTED_STYLE_REQUEST").is_some();
    match &settings.endpoint {
        Some(endpoint) => {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
            if !user_chose_style {
                builder = builder.with_virtual_hosted_style_request(false);
            }
        }
        None if !user_chose_style => {
            // AWS: virtual-hosted names, unless the bucket's name has a dot
            // (which the wildcard certificate does not cover).
            builder = builder.with_virtual_hosted_style_request(!target.bucket.contains('.'));
        }
        None => {}
    }
    if let Some(id) = &settings.access_key_id {
        builder = builder.with_access_key_id(id);
    }
    if let Some(secret) = &settings.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(token) = &settings.session_token {
        builder = builder.with_token(token);
    }
    let plain_http = settings
        .endpoint
        .as_deref()
        .is_some_and(|e| e.to_ascii_lowercase().starts_with("http://"));
    let options = ClientOptions::new()
        .with_allow_http(plain_http)
        .with_timeout_disabled()
        .with_connect_timeout(settings.connect_timeout)
        .with_read_timeout(settings.idle_timeout);
    let retry = RetryPolicy {
        retries: u32::try_from(settings.retries).unwrap_or(u32::MAX),
        backoff: settings.backoff,
    }
    .object_store();
    // One object is deleted at a time: a plain DELETE, which every
    // S3-compatible service has (not all have DeleteObjects).
    let client = builder
        .with_disable_bulk_delete(true)
        .with_client_options(options)
        .with_retry(retry)
        .build()
        .map_err(|e| Error::ClientSetup {
            context: target.url(),
            reason: one_line(&e),
        })?;
    Ok(Arc::new(client))
}

impl Shared {
    fn location(&self) -> String {
        self.target.url()
    }

    fn display(&self, rel: &str) -> String {
        format!("{}/{rel}", self.target.url())
    }

    /// The object key of `rel`.
    fn key(&self, rel: &RelPath) -> Result<Key> {
        let key = self.target.key(rel.as_str());
        Key::parse(&key).map_err(|e| Error::UnsafePath {
            context: self.location(),
            path: rel.to_string(),
            reason: e.to_string(),
        })
    }

    /// `request`, failed when it has no whole answer within the settings'
    /// [`S3Settings::request_timeout`] (`what` names the object or bucket).
    async fn bounded<T>(
        &self,
        what: &str,
        request: impl Future<Output = object_store::Result<T>>,
    ) -> Result<object_store::Result<T>> {
        let limit = self.settings.request_timeout;
        tokio::time::timeout(limit, request).await.map_err(|_| {
            Error::transfer(
                what,
                format!(
                    "no answer from the S3 service within {}",
                    humantime::format_duration(limit)
                ),
            )
        })
    }

    /// Refuses to write once the lease is lost.
    fn check_lease(&self, rel: &str) -> Result<()> {
        if self.lease_lost.load(Ordering::SeqCst) {
            return Err(Error::Locked {
                path: self
                    .display(&format!("{}/{}", super::DATA_DIR, super::LOCK))
                    .into(),
                reason: format!(
                    "the run's lease was lost (not renewed in time, or taken over); \
                     not writing {rel}"
                ),
            });
        }
        Ok(())
    }

    /// `HEAD`: the object's metadata, `None` when there is none.
    async fn head(&self, rel: &RelPath) -> Result<Option<object_store::ObjectMeta>> {
        let key = self.key(rel)?;
        let shown = self.display(rel.as_str());
        match self.bounded(&shown, self.client.head(&key)).await? {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_error(&self.display(rel.as_str()), &e)),
        }
    }

    /// `GET` of a whole object, `None` when there is none.
    async fn get(&self, rel: &RelPath) -> Result<Option<Bytes>> {
        let key = self.key(rel)?;
        let shown = self.display(rel.as_str());
        let request = async {
            match self.client.get(&key).await {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            }
        };
        let got = self.bounded(&shown, request).await?;
        match got {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_error(&self.display(rel.as_str()), &e)),
        }
    }

    /// A plain `PUT` of `bytes` at `rel`.
    async fn put(&self, rel: &RelPath, bytes: Bytes) -> Result<()> {
        let key = self.key(rel)?;
        let opts = PutOptions {
            mode: PutMode::Overwrite,
            ..PutOptions::default()
        };
        self.client
            .put_opts(&key, bytes.into(), opts)
            .await
            .map(|_| ())
            .map_err(|e| s3_error(&self.display(rel.as_str()), &e))
    }
}

/// Runs `fut` on `handle`'s runtime and waits for it, from synchronous
/// code: a thread of the blocking pool (inside `block_in_place` on a worker
/// of a multi-threaded runtime), or a plain thread.
fn block_on<T: Send + 'static>(
    handle: &Handle,
    what: &str,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let wait = move || rx.recv();
    let got = match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    };
    got.map_err(|_| Error::transfer(what, "the S3 client stopped (its runtime ended)"))
}

#[async_trait::async_trait]
impl Store for S3Store {
    fn location(&self) -> String {
        self.shared.location()
    }

    fn display(&self, rel: &RelPath) -> String {
        self.shared.display(rel.as_str())
    }

    /// From a `HEAD`: size, `Last-Modified`, and a hash of the `ETag` as the
    /// identity of this version of the object.
    async fn stamp(&self, rel: &RelPath) -> Option<FileStamp> {
        match self.shared.head(rel).await {
            Ok(meta) => meta.map(|m| stamp_of(&m)),
            Err(e) => {
                log::debug!("{e}");
                None
            }
        }
    }

    async fn read(&self, rel: &RelPath) -> Result<Option<Vec<u8>>> {
        Ok(self.shared.get(rel).await?.map(|b| b.to_vec()))
    }

    /// The `GET` is bounded; the body is then read as it streams in (an
    /// idle connection fails after the idle timeout).
    async fn open(&self, rel: &RelPath) -> Result<Box<dyn std::io::Read + Send>> {
        let key = self.shared.key(rel)?;
        let shown = self.display(rel);
        let got = self
            .shared
            .bounded(&shown, self.shared.client.get(&key))
            .await?;
        let stream = match got {
            Ok(r) => r.into_stream(),
            Err(e) => return Err(s3_error(&shown, &e)),
        };
        Ok(Box::new(ObjectReader {
            handle: Handle::current(),
            stream: Arc::new(tokio::sync::Mutex::new(stream)),
            chunk: Bytes::new(),
            shown,
        }))
    }

    /// One `PUT` (atomic in S3), after a `HEAD` that shows whether the
    /// object already holds these bytes (same size and an MD5 `ETag` that
    /// matches; when the `ETag` is not an MD5, the object is read and
    /// compared).
    async fn write_atomic(&self, rel: &RelPath, bytes: &[u8]) -> Result<()> {
        self.shared.check_lease(rel.as_str())?;
        if let Some(meta) = self.shared.head(rel).await?
            && meta.size == bytes.len() as u64
        {
            let unchanged = match meta.e_tag.as_deref().and_then(md5_of_etag) {
                Some(md5) => md5 == md5_hex(bytes),
                None => self.shared.get(rel).await?.is_some_and(|old| old == bytes),
            };
            if unchanged {
                return Ok(());
            }
        }
        self.shared.put(rel, Bytes::copy_from_slice(bytes)).await
    }

    /// The upload sends its parts from the download's writer thread through
    /// a `Handle` of this (the caller's) runtime.
    async fn stage(&self, rel: &RelPath) -> Result<Box<dyn Staged>> {
        let key = self.shared.key(rel)?;
        Ok(Box::new(upload::Upload::new(
            self.shared.clone(),
            Handle::current(),
            key,
            self.display(rel),
        )))
    }

    /// A `DELETE` (of nothing, when nothing is there). Nothing is staged
    /// under a key: an unfinished upload is aborted by its owner, or by the
    /// bucket's lifecycle rule after a killed run.
    async fn remove(&self, rel: &RelPath) -> Result<()> {
        self.shared.check_lease(rel.as_str())?;
        let key = self.shared.key(rel)?;
        let shown = self.display(rel);
        match self
            .shared
            .bounded(&shown, self.shared.client.delete(&key))
            .await?
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error(&self.display(rel), &e)),
        }
    }

    async fn lock(&self, wait: bool) -> Result<Box<dyn Lease>> {
        Ok(Box::new(lease::acquire(&self.shared, wait).await?))
    }

    /// Nothing to do: taking the lease has just written (and probed a
    /// conditional write) under `.data/`, with the same credentials as
    /// every other write of the run.
    async fn check_writable(&self) -> Result<()> {
        Ok(())
    }

    /// One listing of every object under the prefix (bounded as a whole).
    async fn list(&self) -> Result<Vec<Listed>> {
        let prefix = match self.shared.target.prefix.as_str() {
            "" => None,
            p => Some(Key::parse(p)?),
        };
        let listing = async {
            let mut stream = self.shared.client.list(prefix.as_ref());
            let mut out = Vec::new();
            while let Some(meta) = stream.next().await {
                out.push(meta?);
            }
            Ok::<_, object_store::Error>(out)
        };
        let metas = self.shared.bounded(&self.location(), listing).await?;
        let metas = metas.map_err(|e| s3_error(&self.location(), &e))?;
        let strip = match self.shared.target.prefix.as_str() {
            "" => String::new(),
            p => format!("{p}/"),
        };
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let rel = m.location.as_ref().strip_prefix(&strip)?.to_owned();
                Some(Listed { rel, len: m.size })
            })
            .collect())
    }
}

/// The stamp of an object's metadata.
fn stamp_of(meta: &object_store::ObjectMeta) -> FileStamp {
    let mtime_ns = meta
        .last_modified
        .timestamp_nanos_opt()
        .and_then(|n| u128::try_from(n).ok())
        .unwrap_or(0);
    let etag = meta.e_tag.as_deref().unwrap_or("");
    let digest = crate::hash::sha256_hex(etag.as_bytes());
    let ino = u64::from_str_radix(&digest[..16], 16).unwrap_or(0);
    FileStamp {
        len: meta.size,
        mtime_ns,
        ino,
    }
}

/// The MD5 an `ETag` is, when it is one (a single-part upload's, as most
/// S3 services give): 32 hex digits, quoted or not.
fn md5_of_etag(etag: &str) -> Option<String> {
    let etag = etag.trim().trim_start_matches("W/").trim_matches('"');
    (etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| etag.to_ascii_lowercase())
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(bytes))
}

/// An object read as it streams in, synchronously (on a thread of the
/// blocking pool), through a `Handle` of the runtime that opened it.
struct ObjectReader {
    handle: Handle,
    stream: Arc<tokio::sync::Mutex<BoxStream<'static, object_store::Result<Bytes>>>>,
    chunk: Bytes,
    shown: String,
}

impl std::io::Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            let stream = self.stream.clone();
            let next = block_on(&self.handle, &self.shown, async move {
                stream.lock().await.next().await
            })
            .map_err(std::io::Error::other)?;
            match next {
                None => return Ok(0),
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => {
                    return Err(std::io::Error::other(s3_error(&self.shown, &e).to_string()));
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// An error of `object_store` about `what`, as one line: the S3 error code
/// when the service sent one, a hint for access errors.
fn s3_error(what: &str, e: &object_store::Error) -> Error {
    let text = one_line(e);
    let code = s3_code(&text);
    let reason = match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            format!(
                "access denied ({}): check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE) \
                 and the bucket's policy",
                code.unwrap_or("403")
            )
        }
        _ if code == Some("NoSuchBucket") => "no such bucket".to_owned(),
        object_store::Error::NotFound { .. } => "not found".to_owned(),
        _ => text,
    };
    Error::transfer(what, reason)
}

/// The `<Code>` of an S3 error body quoted in `text`.
fn s3_code(text: &str) -> Option<&str> {
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    Some(&text[start..start + len])
}

/// An error and its sources on one line, without repeating itself, and
/// not too long.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = next {
        let text = err
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    let mut line = parts.join(": ");
    if let Some(rest) = line.strip_prefix("Generic S3 error: ") {
        line = rest.to_owned();
    }
    if line.len() > 400 {
        let mut cut = 400;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_endpoint_needs_credentials() {
        let settings = S3Settings {
            endpoint: Some("http://127.0.0.1:9".into()),
            ..S3Settings::default()
        };
        let err = S3Store::open("s3://b/p", settings).unwrap_err().to_string();
        assert!(
            err.contains("s3://b/p: no credentials for http://127.0.0.1:9"),
            "{err}"
        );
        let settings = S3Settings {
            endpoint: Some("http://127.0.0.1:9".into()),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            ..S3Settings::default()
        };
        let store = S3Store::open("s3://b/p/", settings).unwrap();
        assert_eq!(store.location(), "s3://b/p");
        let rel = RelPath::parse(".data/x").unwrap();
        assert_eq!(store.display(&rel), "s3://b/p/.data/x");
    }

    #[test]
    fn etags_and_codes() {
        let md5 = md5_hex(b"abc");
        assert_eq!(md5_of_etag(&format!("\"{md5}\"")), Some(md5.clone()));
        assert_eq!(md5_of_etag(&md5.to_uppercase()), Some(md5));
        assert_eq!(md5_of_etag("\"0123-2\""), None);
        assert_eq!(
            s3_code("... <Error><Code>SlowDown</Code><Message>x</Message>"),
            Some("SlowDown")
        );
        assert_eq!(s3_code("plain"), None);
    }
}
