//! Request handling: the method and path checks, then a file, a directory
//! listing or the landing page, with the access log around each response.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Instant;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::connections::Busy;
use super::files;
use super::logbody::{LogBody, LogEntry};
use super::pages;
use super::paths::{inside_root, parse_path, url_path};

/// Shared state of the server.
pub(crate) struct State {
    /// Canonical path of the served directory.
    pub(crate) root: PathBuf,
    /// Whether `/metrics` serves the mirrors' Prometheus metrics.
    pub(crate) metrics: bool,
}

impl State {
    /// State for serving the canonical directory `root`.
    pub(crate) fn new(root: PathBuf, metrics: bool) -> Self {
        State { root, metrics }
    }
}

/// Answers one request and wraps the body so that the access log line is
/// written when the response is over.
pub(crate) async fn handle(
    state: &State,
    req: Request<Incoming>,
    client: SocketAddr,
    local: SocketAddr,
    busy: Busy,
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
    Response::from_parts(parts, LogBody::new(body, expected, entry, busy))
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

/// Resolves a checked request path to a canonical path inside the root.
/// Symbolic links are followed only while they stay inside the root and do
/// not lead to a hidden name.
async fn resolve(state: &State, segments: &[OsString]) -> Result<PathBuf, StatusCode> {
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

/// The status for a failed file system access.
fn io_status(e: &std::io::Error) -> StatusCode {
    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
        // Out of descriptors: a moment's condition, not a missing file.
        return StatusCode::SERVICE_UNAVAILABLE;
    }
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
    if state.metrics && path.segments.len() == 1 && path.segments[0] == "metrics" {
        let root = state.root.clone();
        return match tokio::task::spawn_blocking(move || pages::metrics(&root)).await {
            Ok(text) => {
                let mut resp = Response::new(Body::from(text));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                resp
            }
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
    match files::response(&state.root, req.method(), req.headers(), &real, name).await {
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
