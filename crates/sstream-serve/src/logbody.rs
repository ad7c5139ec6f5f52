//! A response body that counts the bytes it sends and writes the access log
//! line when it is dropped (that is, when the response is over: finished,
//! cut by the client, or cut at shutdown).

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};

use crate::connections::Busy;

/// What the access log line says about a request.
pub(crate) struct LogEntry {
    pub(crate) client: SocketAddr,
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) status: u16,
    pub(crate) start: Instant,
}

/// [`Body`] wrapper that logs the response on drop.
pub(crate) struct LogBody {
    inner: Body,
    sent: u64,
    /// The Content-Length of the response, if any: hyper stops polling once
    /// it has sent that many bytes.
    expected: Option<u64>,
    finished: bool,
    entry: LogEntry,
    /// Marks the connection busy while the response is in flight.
    busy: Busy,
}

impl LogBody {
    /// Wraps `inner` (sent with a Content-Length of `expected`, if known);
    /// the log line is written, and the connection marked idle through
    /// `busy`, when the wrapper is dropped.
    pub(crate) fn new(inner: Body, expected: Option<u64>, entry: LogEntry, busy: Busy) -> Self {
        let finished = http_body::Body::is_end_stream(&inner);
        LogBody {
            inner,
            sent: 0,
            expected,
            finished,
            entry,
            busy,
        }
    }
}

impl http_body::Body for LogBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                this.busy.progress();
            }
            Poll::Ready(None) => this.finished = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LogBody {
    fn drop(&mut self) {
        let e = &self.entry;
        let finished = self.finished
            || http_body::Body::is_end_stream(&self.inner)
            || self.expected.is_some_and(|n| self.sent >= n);
        eprintln!(
            "{} \"{} {}\" {} {} {:.3}s{}",
            e.client,
            e.method,
            e.target,
            e.status,
            self.sent,
            e.start.elapsed().as_secs_f64(),
            if finished { "" } else { " incomplete" }
        );
    }
}
