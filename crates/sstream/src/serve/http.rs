//! Request handling: path checks, files (validators, conditionals, ranges),
//! directory listings and the landing page.

use std::ffi::OsString;
use std::fs::Metadata;
use std::io::SeekFrom;
use std::net::SocketAddr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::logbody::{LogBody, LogEntry};
use super::pages;

/// Read size of file bodies.
const CHUNK: usize = 128 * 1024;

/// Shared state of the server.
pub(crate) struct State {
    /// Canonical path of the served directory.
    pub(crate) root: PathBuf,
}

impl State {
    /// State for serving the canonical directory `root`.
    pub(crate) fn new(root: PathBuf) -> Self {
        State { root }
    }
}

/// Answers one request and wraps the body so that the access log line is
/// written when the response is over.
pub(crate) async fn handle(
    state: &State,
    req: Request<Incoming>,
    client: SocketAddr,
    local: SocketAddr,
) -> Response<LogBody> {
    let start = Instant::now();
    let method = req.method().to_string();
    let target = log_safe(req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let head = req.method() == Method::HEAD;
    let mut resp = respond(state, &req, local).await;
    if head {
        // Keep the length a GET would have, send no body.
        if !resp.headers().contains_key(header::CONTENT_LENGTH)
            && let Some(n) = http_body::Body::size_hint(resp.body()).exact()
            && n > 0
        {
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        *resp.body_mut() = Body::empty();
    }
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let expected = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let entry = LogEntry {
        client,
        method,
        target,
        status,
        start,
    };
    Response::from_parts(parts, LogBody::new(body, expected, entry))
}

/// The request target as written in the log: no quotes, no control bytes.
fn log_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// A request path, decoded and checked.
pub(crate) struct ReqPath {
    /// Decoded segments (no empty, `.` or `..` ones).
    pub(crate) segments: Vec<OsString>,
    /// Whether the path ended with `/`.
    pub(crate) trailing_slash: bool,
}

/// Whether a file or directory name is never served nor listed: dot files
/// (the mirror state `.data/`, temporary files, `.lock`), downloads in
/// progress (`*.part`) and lock files (`*.lock`).
pub(crate) fn is_hidden(name: &[u8]) -> bool {
    name.first() == Some(&b'.') || name.ends_with(b".part") || name.ends_with(b".lock")
}

/// Decodes and checks the path of a request. Errors: 400 for traversal and
/// malformed paths, 404 for hidden names.
pub(crate) fn parse_path(raw: &str) -> Result<ReqPath, StatusCode> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(StatusCode::BAD_REQUEST);
    };
    let mut segments = Vec::new();
    let mut hidden = false;
    for raw_seg in rest.split('/') {
        let seg = percent_decode(raw_seg).ok_or(StatusCode::BAD_REQUEST)?;
        if seg.iter().any(|&b| b == b'/' || b == b'\\' || b == 0) {
            return Err(StatusCode::BAD_REQUEST);
        }
        match seg.as_slice() {
            b"" => continue,
            b"." | b".." => return Err(StatusCode::BAD_REQUEST),
            _ => {}
        }
        hidden |= is_hidden(&seg);
        segments.push(OsString::from_vec(seg));
    }
    if hidden {
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(ReqPath {
        segments,
        trailing_slash: raw.ends_with('/'),
    })
}

/// Decodes `%XX` escapes; `None` on a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Percent-encodes one path segment for a URL.
pub(crate) fn percent_encode(seg: &[u8]) -> String {
    let mut out = String::with_capacity(seg.len());
    for &b in seg {
        if b.is_ascii_alphanumeric() || b"-._~:@+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The absolute URL path of `segments`, with a trailing slash if `dir`.
pub(crate) fn url_path<S: AsRef<std::ffi::OsStr>>(segments: &[S], dir: bool) -> String {
    let mut out = String::from("/");
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&percent_encode(s.as_ref().as_bytes()));
    }
    if dir && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// Resolves a checked request path to a canonical path inside the root.
/// Symbolic links are followed only while they stay inside the root and do
/// not lead to a hidden name.
pub(crate) async fn resolve(state: &State, segments: &[OsString]) -> Result<PathBuf, StatusCode> {
    let mut path = state.root.clone();
    path.extend(segments);
    let real = match tokio::fs::canonicalize(&path).await {
        Ok(p) => p,
        Err(e) => return Err(io_status(&e)),
    };
    if !inside_root(&state.root, &real) {
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(real)
}

/// Whether the canonical path `real` is the root or a visible path under it.
pub(crate) fn inside_root(root: &Path, real: &Path) -> bool {
    match real.strip_prefix(root) {
        Ok(rel) => rel.components().all(|c| match c {
            Component::Normal(n) => !is_hidden(n.as_bytes()),
            _ => false,
        }),
        Err(_) => false,
    }
}

/// The status for a failed file system access.
fn io_status(e: &std::io::Error) -> StatusCode {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::NOT_FOUND,
    }
}

/// Everything but the logging.
async fn respond(state: &State, req: &Request<Incoming>, local: SocketAddr) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = error_page(StatusCode::METHOD_NOT_ALLOWED);
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let path = match parse_path(req.uri().path()) {
        Ok(p) => p,
        Err(status) => return error_page(status),
    };
    if path.segments.is_empty() {
        let host = request_host(req, local);
        let root = state.root.clone();
        return match tokio::task::spawn_blocking(move || pages::landing(&root, &host)).await {
            Ok(html) => html_page(StatusCode::OK, html),
            Err(_) => error_page(StatusCode::INTERNAL_SERVER_ERROR),
        };
    }
    let real = match resolve(state, &path.segments).await {
        Ok(p) => p,
        Err(status) => return error_page(status),
    };
    let meta = match tokio::fs::metadata(&real).await {
        Ok(m) => m,
        Err(e) => return error_page(io_status(&e)),
    };
    if meta.is_dir() {
        if !path.trailing_slash {
            let mut location = url_path(&path.segments, true);
            if let Some(q) = req.uri().query() {
                location.push('?');
                location.push_str(q);
            }
            return redirect(&location);
        }
        let root = state.root.clone();
        let segments = path.segments.clone();
        return match tokio::task::spawn_blocking(move || pages::listing_page(&root, &segments))
            .await
        {
            Ok(Ok(html)) => html_page(StatusCode::OK, html),
            Ok(Err(e)) => error_page(io_status(&e)),
            Err(_) => error_page(StatusCode::INTERNAL_SERVER_ERROR),
        };
    }
    if !meta.is_file() || path.trailing_slash {
        return error_page(StatusCode::NOT_FOUND);
    }
    let name = path.segments.last().map_or(&[][..], |s| s.as_bytes());
    match file_response(
        &state.root,
        req.method(),
        req.headers(),
        &real,
        content_type(name),
    )
    .await
    {
        Ok(resp) => resp,
        Err(e) => error_page(io_status(&e)),
    }
}

/// The host part of the URL the client used (the Host header when it looks
/// sane, else the local address of the connection).
fn request_host(req: &Request<Incoming>, local: SocketAddr) -> String {
    let given = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    match given {
        Some(h)
            if !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)) =>
        {
            h.to_string()
        }
        _ => local.to_string(),
    }
}

/// Content type by file name.
pub(crate) fn content_type(name: &[u8]) -> &'static str {
    let ext = match name.iter().rposition(|&b| b == b'.') {
        Some(i) => name[i + 1..].to_ascii_lowercase(),
        None => Vec::new(),
    };
    match ext.as_slice() {
        b"json" => "application/json",
        // Clear-signed JSON: readable text.
        b"sjson" => "text/plain; charset=utf-8",
        b"gpg" | b"sig" | b"asc" => "application/pgp-signature",
        b"html" | b"htm" => "text/html; charset=utf-8",
        b"txt" | b"manifest" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Whether responses for this content type must be revalidated (metadata
/// changes with each sync; images at a given path do not).
fn is_metadata(ctype: &str) -> bool {
    ctype != "application/octet-stream"
}

/// A minimal HTML error page.
fn error_page(status: StatusCode) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\
         <body><h1>{code} {reason}</h1></body></html>\n",
        code = status.as_u16()
    );
    html_page(status, html)
}

/// An HTML response.
fn html_page(status: StatusCode, html: String) -> Response<Body> {
    let mut resp = Response::new(Body::from(html));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// A permanent redirect to `location` (an already encoded absolute path).
fn redirect(location: &str) -> Response<Body> {
    let mut resp = error_page(StatusCode::MOVED_PERMANENTLY);
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// The validators of an opened file.
struct Validators {
    etag: String,
    /// Modification time, whole seconds since the epoch (HTTP dates have no
    /// finer resolution).
    mtime_secs: Option<u64>,
    last_modified: Option<String>,
}

impl Validators {
    fn of(meta: &Metadata) -> Self {
        let mtime = meta.modified().ok();
        let since = mtime.and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        let nanos = since.map_or(0, |d| d.as_nanos());
        Validators {
            // A new file put in place by rename has a new inode, even when
            // size and time are the same.
            etag: format!("\"{:x}-{:x}-{:x}\"", meta.ino(), meta.len(), nanos),
            mtime_secs: since.map(|d| d.as_secs()),
            last_modified: mtime.map(httpdate::fmt_http_date),
        }
    }
}

/// Whether the ETag list `list` (an If-Match / If-None-Match value) holds
/// `etag`; `weak` selects the weak comparison (the `W/` prefix is ignored),
/// otherwise weak tags never match.
fn etag_listed(list: &str, etag: &str, weak: bool) -> bool {
    list.split(',').map(str::trim).any(|tag| {
        if tag == "*" {
            return true;
        }
        match tag.strip_prefix("W/") {
            Some(t) => weak && t == etag,
            None => tag == etag,
        }
    })
}

/// A header as text, if present and valid.
fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// An HTTP date header as whole seconds since the epoch.
fn header_date(headers: &HeaderMap, name: header::HeaderName) -> Option<u64> {
    let t: SystemTime = httpdate::parse_http_date(header_str(headers, name)?).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// What a Range header asks for, against a representation of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeReq {
    /// No usable range: send the whole representation.
    Full,
    /// Nothing of the representation is in range: 416.
    Unsatisfiable,
    /// First and last byte (inclusive).
    Part(u64, u64),
}

/// Parses a Range header value. Malformed values and multiple ranges are
/// ignored (the whole file is sent, as RFC 9110 allows).
pub(crate) fn parse_range(value: &str, len: u64) -> RangeReq {
    let Some((unit, spec)) = value.trim().split_once('=') else {
        return RangeReq::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeReq::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let Some(n) = digits(last) else {
            return RangeReq::Full;
        };
        if n == 0 || len == 0 {
            return RangeReq::Unsatisfiable;
        }
        return RangeReq::Part(len.saturating_sub(n), len - 1);
    }
    let Some(start) = digits(first) else {
        return RangeReq::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match digits(last) {
            Some(e) if e >= start => e,
            _ => return RangeReq::Full,
        }
    };
    if start >= len {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Part(start, end.min(len - 1))
}

/// A non-empty decimal number.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Serves a regular file: validators, conditional requests, If-Range, a
/// single range, streaming body.
async fn file_response(
    root: &Path,
    method: &Method,
    headers: &HeaderMap,
    path: &Path,
    ctype: &'static str,
) -> std::io::Result<Response<Body>> {
    let mut file = tokio::fs::File::open(path).await?;
    // `path` was resolved just before; if a directory on the way was
    // swapped for a symbolic link meanwhile, the file opened may be another
    // one: check where the descriptor really points.
    {
        use std::os::fd::AsRawFd;
        let link = format!("/proc/self/fd/{}", file.as_raw_fd());
        if let Ok(real) = std::fs::read_link(link)
            && !inside_root(root, &real)
        {
            return Err(std::io::ErrorKind::NotFound.into());
        }
    }
    // The metadata of the opened file, not of the path: a sync may rename a
    // new file into place meanwhile; this response stays consistent.
    let meta = file.metadata().await?;
    if !meta.is_file() {
        return Err(std::io::ErrorKind::NotFound.into());
    }
    let len = meta.len();
    let v = Validators::of(&meta);

    let mut builder = Response::builder()
        .header(header::ETAG, &v.etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, ctype)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if let Some(lm) = &v.last_modified {
        builder = builder.header(header::LAST_MODIFIED, lm);
    }
    if is_metadata(ctype) {
        builder = builder.header(header::CACHE_CONTROL, "no-cache");
    }
    let empty = |b: hyper::http::response::Builder, status: StatusCode| {
        b.status(status)
            .body(Body::empty())
            .map_err(std::io::Error::other)
    };

    // RFC 9110 section 13.2.2: the order of evaluation.
    if let Some(list) = header_str(headers, header::IF_MATCH) {
        if !etag_listed(list, &v.etag, false) {
            return empty(builder, StatusCode::PRECONDITION_FAILED);
        }
    } else if let (Some(since), Some(m)) = (
        header_date(headers, header::IF_UNMODIFIED_SINCE),
        v.mtime_secs,
    ) && m > since
    {
        return empty(builder, StatusCode::PRECONDITION_FAILED);
    }
    let not_modified = if let Some(list) = header_str(headers, header::IF_NONE_MATCH) {
        etag_listed(list, &v.etag, true)
    } else {
        matches!(
            (header_date(headers, header::IF_MODIFIED_SINCE), v.mtime_secs),
            (Some(since), Some(m)) if m <= since
        )
    };
    if not_modified {
        // Validators and caching headers only (RFC 9110 section 15.4.5).
        let mut resp = empty(builder, StatusCode::NOT_MODIFIED)?;
        let h = resp.headers_mut();
        for name in [
            header::CONTENT_TYPE,
            header::ACCEPT_RANGES,
            header::X_CONTENT_TYPE_OPTIONS,
        ] {
            h.remove(name);
        }
        return Ok(resp);
    }

    let range = match header_str(headers, header::RANGE) {
        Some(r) if *method == Method::GET && if_range_holds(headers, &v) => parse_range(r, len),
        _ => RangeReq::Full,
    };
    let (status, start, count) = match range {
        RangeReq::Full => (StatusCode::OK, 0, len),
        RangeReq::Part(first, last) => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {first}-{last}/{len}"));
            (StatusCode::PARTIAL_CONTENT, first, last - first + 1)
        }
        RangeReq::Unsatisfiable => {
            return builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .header(header::CONTENT_LENGTH, 0)
                .body(Body::empty())
                .map_err(std::io::Error::other);
        }
    };
    builder = builder.status(status).header(header::CONTENT_LENGTH, count);
    if *method == Method::HEAD || count == 0 {
        return builder.body(Body::empty()).map_err(std::io::Error::other);
    }
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await?;
    }
    // Never more than `count` bytes, even if the file grows meanwhile; if it
    // shrinks, the body ends early and the client sees a short response.
    let stream = ReaderStream::with_capacity(file.take(count), CHUNK);
    builder
        .body(Body::from_stream(stream))
        .map_err(std::io::Error::other)
}

/// Whether a Range request may be honoured: no If-Range, or an If-Range
/// that matches the current representation (strong ETag comparison, or the
/// exact Last-Modified date).
fn if_range_holds(headers: &HeaderMap, v: &Validators) -> bool {
    let Some(cond) = header_str(headers, header::IF_RANGE) else {
        return headers.get(header::IF_RANGE).is_none();
    };
    let cond = cond.trim();
    if cond.starts_with('"') || cond.starts_with("W/") {
        return cond == v.etag;
    }
    match (httpdate::parse_http_date(cond), v.mtime_secs) {
        (Ok(t), Some(m)) => t.duration_since(UNIX_EPOCH).is_ok_and(|d| d.as_secs() == m),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeReq::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeReq::Part(90, 99));
        assert_eq!(parse_range("bytes=90-200", 100), RangeReq::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeReq::Part(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), RangeReq::Part(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), RangeReq::Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeReq::Full);
        assert_eq!(parse_range("items=0-1", 100), RangeReq::Full);
        assert_eq!(parse_range("bytes=+1-2", 100), RangeReq::Full);
        assert_eq!(parse_range("bytes=x", 100), RangeReq::Full);
    }

    #[test]
    fn paths() {
        let p = parse_path("/streams/v1/").unwrap();
        assert_eq!(p.segments, vec![OsString::from("streams"), "v1".into()]);
        assert!(p.trailing_slash);
        let p = parse_path("/a%20b//c").unwrap();
        assert_eq!(p.segments, vec![OsString::from("a b"), "c".into()]);
        assert!(!p.trailing_slash);
        for bad in [
            "/../etc/passwd",
            "/a/%2e%2e/b",
            "/a%2fb",
            "/a%5cb",
            "/a\\b",
            "/%00",
            "/%zz",
            "/a/.",
            "relative",
        ] {
            assert_eq!(
                parse_path(bad).err(),
                Some(StatusCode::BAD_REQUEST),
                "{bad}"
            );
        }
        for hidden in [
            "/.data/x",
            "/a/b.part",
            "/mirror.lock",
            "/.lock",
            "/%2edata/",
        ] {
            assert_eq!(
                parse_path(hidden).err(),
                Some(StatusCode::NOT_FOUND),
                "{hidden}"
            );
        }
    }

    #[test]
    fn etags() {
        assert!(etag_listed("\"a\", W/\"b\"", "\"b\"", true));
        assert!(!etag_listed("\"a\", W/\"b\"", "\"b\"", false));
        assert!(etag_listed("*", "\"b\"", false));
        assert!(!etag_listed("\"a\"", "\"b\"", true));
    }

    #[test]
    fn encoding() {
        assert_eq!(url_path(&["a b", "c:d"], true), "/a%20b/c:d/");
        assert_eq!(url_path::<&str>(&[], true), "/");
        assert_eq!(content_type(b"index.sjson"), "text/plain; charset=utf-8");
        assert_eq!(content_type(b"x.JSON"), "application/json");
        assert_eq!(content_type(b"squashfs"), "application/octet-stream");
    }
}
