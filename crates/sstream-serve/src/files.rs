//! Serving one regular file: validators (ETag, Last-Modified), the
//! conditional headers, If-Range, a single byte range, and the body.

use std::fs::{File, Metadata};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Response, StatusCode};

use crate::file_body::FileBody;
use crate::root::{Resolved, Root};

/// Content type by file name.
fn content_type(name: &[u8]) -> &'static str {
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
enum RangeReq {
    /// No usable range: send the whole representation.
    Full,
    /// Nothing of the representation is in range: 416.
    Unsatisfiable,
    /// First and last byte (inclusive).
    Part(u64, u64),
}

/// Parses a Range header value. Malformed values and multiple ranges are
/// ignored (the whole file is sent, as RFC 9110 allows).
fn parse_range(value: &str, len: u64) -> RangeReq {
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

/// Serves the regular `file` (opened by [`open_inside`], `meta` its
/// metadata), named `name` in the request: validators, conditional
/// requests, If-Range, a single range, streaming body.
pub(crate) fn response(
    method: &Method,
    headers: &HeaderMap,
    file: File,
    meta: &Metadata,
    name: &[u8],
) -> std::io::Result<Response<Body>> {
    let ctype = content_type(name);
    let len = meta.len();
    let v = Validators::of(meta);

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
        // Only the file's own date, as nginx (`if_modified_since exact`):
        // a file whose mtime went backwards (a sync put an older one in
        // place) must not look unchanged to a client holding a later date.
        matches!(
            (header_date(headers, header::IF_MODIFIED_SINCE), v.mtime_secs),
            (Some(since), Some(m)) if m == since
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
    builder
        .body(Body::new(FileBody::new(file, start, count)))
        .map_err(std::io::Error::other)
}

/// Opens the regular file at `resolved` (resolved under `root` just
/// before) and returns it with its metadata.
pub(crate) fn open_inside(root: &Root, resolved: &Resolved) -> std::io::Result<(File, Metadata)> {
    let file = File::open(root.path(resolved))?;
    // If a directory on the way was swapped for a symbolic link since
    // `resolved` was resolved, the file opened may be another one: check
    // where the descriptor really points.
    let link = format!("/proc/self/fd/{}", file.as_raw_fd());
    if let Ok(real) = std::fs::read_link(link)
        && !root.holds(&real)
    {
        return Err(std::io::ErrorKind::NotFound.into());
    }
    // The metadata of the opened file, not of the path: a sync may rename a
    // new file into place meanwhile; this response stays consistent.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::ErrorKind::NotFound.into());
    }
    Ok((file, meta))
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
    fn etags() {
        assert!(etag_listed("\"a\", W/\"b\"", "\"b\"", true));
        assert!(!etag_listed("\"a\", W/\"b\"", "\"b\"", false));
        assert!(etag_listed("*", "\"b\"", false));
        assert!(!etag_listed("\"a\"", "\"b\"", true));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(b"index.sjson"), "text/plain; charset=utf-8");
        assert_eq!(content_type(b"x.JSON"), "application/json");
        assert_eq!(content_type(b"squashfs"), "application/octet-stream");
    }
}
