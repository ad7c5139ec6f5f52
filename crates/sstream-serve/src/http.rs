//! Request handling: the method and path checks, then a file, a directory
//! listing or the landing page, with the access log around each response.

use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::connections::Busy;
use crate::files;
use crate::logbody::{LogBody, LogEntry};
use crate::pages;
use crate::paths::{parse_path, url_path};
use crate::root::{Resolved, Root};

/// Shared state of the server.
pub(crate) struct State {
    /// The served directory.
    pub(crate) root: Root,
    /// Whether `/metrics` serves the mirrors' Prometheus metrics.
    pub(crate) metrics: bool,
}

impl State {
    /// State for serving the directory `root`.
    pub(crate) fn new(root: Root, metrics: bool) -> Self {
        State { root, metrics }
    }
}

/// Answers one request and wraps the body so that the access log line is
/// written when the response is over.
pub(crate) async fn handle(
    state: &Arc<State>,
    req: Request<Incoming>,
    client: SocketAddr,
    local: SocketAddr,
    scheme: &'static str,
    busy: Busy,
) -> Response<LogBody> {
    let start = Instant::now();
    let method = req.method().to_string();
    let target = log_safe(req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let head = req.method() == Method::HEAD;
    let mut resp = respond(state, &req, local, scheme).await;
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

/// Runs `work` on the served directory off the async threads.
async fn blocking<T: Send + 'static>(
    state: &Arc<State>,
    work: impl FnOnce(&State) -> T + Send + 'static,
) -> Result<T, StatusCode> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || work(&state))
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

/// Everything but the logging.
async fn respond(
    state: &Arc<State>,
    req: &Request<Incoming>,
    local: SocketAddr,
    scheme: &'static str,
) -> Response<Body> {
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
        let origin = format!("{scheme}://{}", request_host(req, local));
        return match blocking(state, move |s| pages::landing(&s.root, &origin, s.metrics)).await {
            Ok(html) => html_page(StatusCode::OK, html),
            Err(status) => error_page(status),
        };
    }
    if state.metrics && path.segments.len() == 1 && path.segments[0] == "metrics" {
        return match blocking(state, |s| pages::metrics(&s.root)).await {
            Ok(text) => metrics_text(text),
            Err(status) => error_page(status),
        };
    }
    // One resolution for the kind of entry and what is then read of it.
    let segments = path.segments.clone();
    let found = blocking(state, move |s| {
        let resolved = s.root.resolve(&segments)?;
        let meta = std::fs::metadata(s.root.path(&resolved))?;
        Ok::<_, std::io::Error>((resolved, meta))
    })
    .await;
    let (resolved, meta) = match found {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return error_page(io_status(&e)),
        Err(status) => return error_page(status),
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
        let segments = path.segments.clone();
        return match blocking(state, move |s| {
            pages::listing_page(&s.root, &segments, &resolved)
        })
        .await
        {
            Ok(Ok(html)) => html_page(StatusCode::OK, html),
            Ok(Err(e)) => error_page(io_status(&e)),
            Err(status) => error_page(status),
        };
    }
    if !meta.is_file() || path.trailing_slash {
        return error_page(StatusCode::NOT_FOUND);
    }
    serve_file(state, req, &path.segments, resolved).await
}

/// A regular file, named by the last of `segments`, at `resolved`.
async fn serve_file(
    state: &Arc<State>,
    req: &Request<Incoming>,
    segments: &[std::ffi::OsString],
    resolved: Resolved,
) -> Response<Body> {
    let name = segments.last().map_or(&[][..], |s| s.as_bytes());
    let opened = blocking(state, move |s| files::open_inside(&s.root, &resolved)).await;
    let (file, meta) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => return error_page(io_status(&e)),
        Err(status) => return error_page(status),
    };
    match files::response(req.method(), req.headers(), file, &meta, name) {
        Ok(resp) => resp,
        Err(e) => error_page(io_status(&e)),
    }
}

/// The `/metrics` response.
fn metrics_text(text: String) -> Response<Body> {
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
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
