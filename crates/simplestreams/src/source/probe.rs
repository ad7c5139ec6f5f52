//! Looking at files of a source without keeping them: whether a file is
//! there and how large ([`Source::probe`], a `HEAD`), whether its bytes are
//! right ([`Source::check`], a streamed read that only hashes), and which
//! entry document a mirror has ([`Source::find_entry`]).
//!
//! These go through the same clients as every other transfer: the same
//! connect and idle timeouts, retries with backoff on timeouts, resets, 5xx
//! and 429, TLS roots, proxies and hand-over of redirects to `https`. Local
//! (`file://`) roots are read from the file system.

use super::{DEFAULT_ENTRY, Expected, Hasher, Source, check_status, file_path};
use crate::error::{Error, IntegrityKind, Result};
use crate::hash::verify_path as verify_file_blocking;
use crate::path::RelPath;
use crate::retry::Attempt;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use std::future::Future;
use url::Url;

/// The entry documents a mirror may have, preferred first: the signed index
/// (what MAAS reads by default), then the unsigned one.
pub const MIRROR_ENTRIES: [&str; 2] = [DEFAULT_ENTRY, "streams/v1/index.json"];

/// What a source says about a file it was asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The file is there; its size when the source tells it (the
    /// `Content-Length` of the answer).
    Present(Option<u64>),
    /// The file is not there (`404` or `410`, or no such local file); how
    /// the source said so, e.g. `HTTP 404 Not Found`.
    Absent(String),
}

impl Source {
    /// Asks the primary root whether `rel` is there and how large it is: a
    /// `HEAD` request (a `GET` whose body is left unread when the server
    /// refuses `HEAD` with 405 or 501), or a `stat` for a local root.
    ///
    /// # Errors
    /// [`Error::Transfer`] when the server cannot be reached or answers
    /// anything but success, 404 or 410 (after the retries of transfers);
    /// [`Error::Io`] when a local file cannot be looked at.
    pub async fn probe(&self, rel: &RelPath) -> Result<Probe> {
        let url = self.url_of(rel);
        if let Some(store) = self.store() {
            return Ok(match store.stamp(rel).await {
                Some(s) => Probe::Present(Some(s.len)),
                None => Probe::Absent("not found".into()),
            });
        }
        if url.scheme() == "file" {
            return probe_file(&url);
        }
        self.with_retries(|| self.probe_once(&url)).await
    }

    /// Reads `rel` from the primary root to its end and checks its size and
    /// checksum against `expected`, keeping nothing: memory is bounded by a
    /// chunk, and a server sending more than the expected size is cut off.
    /// A transfer that fails is tried again from the start (see
    /// [`TransferOptions`](super::TransferOptions)); bytes that disagree with
    /// `expected` are not.
    ///
    /// # Errors
    /// [`Error::Integrity`] (with its [`IntegrityKind`]) when the bytes are
    /// not what `expected` says; [`Error::Transfer`] or [`Error::Io`] when
    /// they cannot be read.
    pub async fn check(&self, rel: &RelPath, expected: &Expected) -> Result<()> {
        let url = self.url_of(rel);
        if let Some(store) = self.store() {
            // The reader is synchronous (hashing is CPU work): read it on
            // the blocking pool.
            let mut reader = store.open(rel).await?;
            let (exp, what) = (expected.clone(), url.to_string());
            return tokio::task::spawn_blocking(move || exp.check_reader(&what, &mut reader))
                .await
                .map_err(|e| Error::transfer(url.as_str(), e.to_string()))?;
        }
        if url.scheme() == "file" {
            let path = file_path(&url)?;
            let (exp, what) = (expected.clone(), url.to_string());
            return tokio::task::spawn_blocking(move || verify_file_blocking(&path, &exp, &what))
                .await
                .map_err(|e| Error::transfer(url.as_str(), e.to_string()))?;
        }
        self.with_retries(|| self.check_once(&url, expected)).await
    }

    /// The entry document the primary root has: the first of
    /// [`MIRROR_ENTRIES`] that [`probe`](Source::probe) finds, else the first
    /// of them (so that the error of reading it names what was looked for).
    ///
    /// # Errors
    /// As [`probe`](Source::probe).
    pub async fn find_entry(&self) -> Result<RelPath> {
        for name in MIRROR_ENTRIES {
            let rel = entry_path(name)?;
            if let Probe::Present(_) = self.probe(&rel).await? {
                return Ok(rel);
            }
        }
        entry_path(MIRROR_ENTRIES[0])
    }

    /// Runs `once` until it succeeds, fails for good, or the retries of
    /// transfers are spent, sleeping the backoff between attempts.
    async fn with_retries<T, F, Fut>(&self, mut once: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let mut attempt = 0;
        loop {
            let (e, after) = match once().await {
                Ok(t) => return Ok(t),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(e, after)) => (e, after),
                Err(Attempt::Restart(e)) => (e, None),
            };
            if attempt >= self.options.retries {
                return Err(e);
            }
            log::warn!("{e}; retrying");
            tokio::time::sleep(self.backoff(attempt, after)).await;
            attempt += 1;
        }
    }

    async fn probe_once(&self, url: &Url) -> Result<Probe, Attempt> {
        let mut resp = self
            .request(Method::HEAD, url)
            .await
            .map_err(|e| Attempt::of_transfer(url, &e))?;
        if matches!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
        ) {
            resp = self
                .request(Method::GET, url)
                .await
                .map_err(|e| Attempt::of_transfer(url, &e))?;
        }
        let status = resp.status();
        if matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE) {
            return Ok(Probe::Absent(format!("HTTP {status}")));
        }
        check_status(url, &resp)?;
        Ok(Probe::Present(content_length(&resp)))
    }

    async fn check_once(&self, url: &Url, expected: &Expected) -> Result<(), Attempt> {
        let resp = self
            .request(Method::GET, url)
            .await
            .map_err(|e| Attempt::of_transfer(url, &e))?;
        check_status(url, &resp)?;
        let mut hasher = Hasher::for_checksum(expected.checksum.as_ref());
        let mut size = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Attempt::of_transfer(url, &e))?;
            size += chunk.len() as u64;
            if let Some(want) = expected.size
                && size > want
            {
                return Err(Attempt::Fatal(Error::Integrity {
                    url: url.to_string(),
                    kind: IntegrityKind::Size,
                    reason: format!("server sent more than the expected {want} bytes"),
                }));
            }
            hasher.update(&chunk);
        }
        expected
            .check(url.as_str(), size, hasher.finish())
            .map_err(Attempt::Fatal)
    }

    /// Sends a bodiless `method` request to `url`, over TLS when the URL
    /// (or a redirect from a plain URL) is `https`.
    async fn request(&self, method: Method, url: &Url) -> reqwest::Result<reqwest::Response> {
        if url.scheme() == "https" {
            return self.tls_client()?.request(method, url.clone()).send().await;
        }
        let resp = self
            .plain
            .request(method.clone(), url.clone())
            .send()
            .await?;
        match https_redirect(&resp) {
            Some(next) => self.tls_client()?.request(method, next).send().await,
            None => Ok(resp),
        }
    }
}

fn entry_path(name: &str) -> Result<RelPath> {
    RelPath::parse(name).map_err(|e| Error::UnsafePath {
        context: "mirror entry".into(),
        path: name.into(),
        reason: e.to_string(),
    })
}

/// Where a redirect answer sends the request, when that is an `https` URL
/// (the plain client stops there and hands it over).
fn https_redirect(resp: &reqwest::Response) -> Option<Url> {
    if !resp.status().is_redirection() {
        return None;
    }
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)?
        .to_str()
        .ok()?;
    resp.url()
        .join(location)
        .ok()
        .filter(|u| u.scheme() == "https")
}

/// The `Content-Length` header as sent (not the body's length: a `HEAD`
/// answer has none).
fn content_length(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get(reqwest::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A probe of a local file: present when it is a regular file (symlinks
/// followed, as a server would), absent when nothing is there.
fn probe_file(url: &Url) -> Result<Probe> {
    let path = file_path(url)?;
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Ok(Probe::Present(Some(m.len()))),
        Ok(_) => Ok(Probe::Absent("not a regular file".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(Probe::Absent("no such file".into()))
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Checksum;
    use crate::source::TransferOptions;

    fn local(dir: &std::path::Path) -> Source {
        let root = Url::from_directory_path(dir).unwrap();
        Source::new(root, Vec::new(), TransferOptions::default()).unwrap()
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        crate::runtime::build().unwrap().block_on(f)
    }

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn probes_local_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"abc").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let source = local(dir.path());
        assert_eq!(
            run(source.probe(&rel("a"))).unwrap(),
            Probe::Present(Some(3))
        );
        assert!(matches!(run(source.probe(&rel("b"))), Ok(Probe::Absent(_))));
        assert!(matches!(run(source.probe(&rel("d"))), Ok(Probe::Absent(_))));
    }

    #[test]
    fn checks_local_files_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"abc").unwrap();
        let source = local(dir.path());
        let md5 = |hex: &str| Some(Checksum::Md5(hex.into()));
        let good = Expected {
            size: Some(3),
            checksum: md5("900150983cd24fb0d6963f7d28e17f72"),
        };
        run(source.check(&rel("a"), &good)).unwrap();
        let kind = |expected: Expected| match run(source.check(&rel("a"), &expected)) {
            Err(Error::Integrity { kind, .. }) => Some(kind),
            other => panic!("{other:?}"),
        };
        let short = Expected {
            size: Some(4),
            ..good.clone()
        };
        assert_eq!(kind(short), Some(IntegrityKind::Size));
        let other = Expected {
            checksum: md5("00000000000000000000000000000000"),
            ..good
        };
        assert_eq!(kind(other), Some(IntegrityKind::Checksum));
        assert!(matches!(
            run(source.check(&rel("gone"), &Expected::default())),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn finds_the_entry_a_mirror_has() {
        let dir = tempfile::tempdir().unwrap();
        let source = local(dir.path());
        assert_eq!(
            run(source.find_entry()).unwrap().as_str(),
            MIRROR_ENTRIES[0]
        );
        let v1 = dir.path().join("streams/v1");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("index.json"), b"{}").unwrap();
        assert_eq!(
            run(source.find_entry()).unwrap().as_str(),
            MIRROR_ENTRIES[1]
        );
        std::fs::write(v1.join("index.sjson"), b"{}").unwrap();
        assert_eq!(
            run(source.find_entry()).unwrap().as_str(),
            MIRROR_ENTRIES[0]
        );
    }
}
