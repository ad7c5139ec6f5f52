//! The retry policy of transfers, in one place.
//!
//! - **What a failure means** ([`Remedy`]): try the same URL again after a
//!   delay, or give up on this root (an item then falls back to the next
//!   `--mirror`; with none left, the run reports it). It is decided from
//!   types only, never from an error's text: the HTTP status code
//!   ([`Remedy::of_status`]) and, for a request that got no answer, what
//!   the error's source chain holds ([`TransferFailure::of`]): a TLS
//!   certificate error (`rustls::Error`), a response header too large for
//!   the client (`hyper::Error`), a redirect loop, a timeout or a refused
//!   connection (`reqwest::Error`).
//! - **How long to wait** ([`Backoff`]): exponential from a first delay, with
//!   jitter, capped; a server's `Retry-After` wins, capped as well.
//! - **How often** ([`RetryPolicy`]): `--retries` retries of one transfer.
//!   The S3 store's client gets the same numbers
//!   ([`RetryPolicy::object_store`]).

use crate::error::Error;
use std::time::Duration;

/// How often a transfer is tried again, and how long to wait in between.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries of one transfer (so `retries + 1` attempts at most).
    pub retries: u32,
    /// The delays between attempts.
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// The same policy for the S3 store's client (`object_store`): as many
    /// retries, the same first and longest delays, doubling.
    pub fn object_store(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            max_retries: self.retries as usize,
            backoff: object_store::BackoffConfig {
                init_backoff: self.backoff.first,
                max_backoff: self.backoff.max,
                base: 2.0,
            },
            ..object_store::RetryConfig::default()
        }
    }
}

/// Exponential backoff with jitter: the delay before retry `n` (from 0) is
/// `first × 2ⁿ` capped at `max`, less a random part of up to a half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry (at most; jitter takes up to half).
    pub first: Duration,
    /// The longest delay (also caps a server's `Retry-After`).
    pub max: Duration,
}

impl Backoff {
    /// How long to wait before retry `attempt` (0 for the first): the
    /// server's `retry_after` when it gave one, capped at [`max`](Self::max);
    /// otherwise the doubled delay, with jitter in `[base/2, base]`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max);
        }
        let base = self
            .first
            .saturating_mul(1 << attempt.min(16))
            .min(self.max);
        base / 2 + base.mul_f64(fastrand::f64() / 2.0)
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Transient (timeout, reset, 5xx, 429, 408, a short body): try the
    /// same URL again after the backoff, while retries are left.
    Retry,
    /// Permanent for this root (404, a certificate that does not verify, a
    /// redirect loop...): trying again changes nothing. An item falls back
    /// to the next root.
    NextRoot,
}

impl Remedy {
    /// The remedy for an HTTP error status: server errors, `429 Too Many
    /// Requests` and `408 Request Timeout` are retried, the rest are not.
    pub fn of_status(status: u16) -> Remedy {
        if (500..600).contains(&status) || status == 429 || status == 408 {
            Remedy::Retry
        } else {
            Remedy::NextRoot
        }
    }
}

/// Why a request got no (complete) answer, as found in the types of its
/// error's source chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferFailure {
    /// The server's TLS certificate does not verify.
    Certificate,
    /// Redirected too often (a redirect loop).
    RedirectLoop,
    /// The server's response header is larger than the client accepts.
    HeaderTooLarge,
    /// Nothing received for the idle timeout.
    Timeout,
    /// The connection could not be made.
    Connect,
    /// Anything else (a reset, a broken body...).
    Other,
}

impl TransferFailure {
    /// The failure `e` says, from its type and those of its causes.
    pub fn of(e: &reqwest::Error) -> TransferFailure {
        let chain = causes(e);
        if chain.iter().any(|c| is_certificate_error(*c)) {
            TransferFailure::Certificate
        } else if e.is_redirect() {
            TransferFailure::RedirectLoop
        } else if chain.iter().any(|c| is_header_too_large(*c)) {
            TransferFailure::HeaderTooLarge
        } else if e.is_timeout() {
            TransferFailure::Timeout
        } else if e.is_connect() {
            TransferFailure::Connect
        } else {
            TransferFailure::Other
        }
    }

    /// Whether trying the same URL again may help.
    pub fn remedy(self) -> Remedy {
        match self {
            TransferFailure::Certificate
            | TransferFailure::RedirectLoop
            | TransferFailure::HeaderTooLarge => Remedy::NextRoot,
            TransferFailure::Timeout | TransferFailure::Connect | TransferFailure::Other => {
                Remedy::Retry
            }
        }
    }

    /// The reason given for it, with `cause` (the innermost error's
    /// message).
    pub fn reason(self, cause: &str) -> String {
        match self {
            TransferFailure::Certificate => format!("TLS certificate not trusted: {cause}"),
            TransferFailure::RedirectLoop => {
                format!("too many redirects (a redirect loop?): {cause}")
            }
            TransferFailure::HeaderTooLarge => {
                format!("the server's response header is too large: {cause}")
            }
            TransferFailure::Timeout => "timed out (no data received)".to_owned(),
            TransferFailure::Connect => format!("cannot connect: {cause}"),
            TransferFailure::Other => cause.to_owned(),
        }
    }
}

/// Why one attempt failed, and what to do about it.
pub(crate) enum Attempt {
    /// Transient: retry after a delay (the server's `Retry-After`, if any).
    Retry(Error, Option<Duration>),
    /// Permanent for this root (404, bad checksum after retries...): give
    /// up on it.
    Fatal(Error),
    /// Bytes kept from an earlier attempt (a resumed or complete `.part`)
    /// turned out bad and were discarded: start again from zero at once,
    /// without counting an attempt (once per root).
    Restart(Error),
}

impl Attempt {
    /// The attempt `remedy` calls for, failed with `e`.
    pub(crate) fn of(remedy: Remedy, e: Error, retry_after: Option<Duration>) -> Attempt {
        match remedy {
            Remedy::Retry => Attempt::Retry(e, retry_after),
            Remedy::NextRoot => Attempt::Fatal(e),
        }
    }

    /// A request to `url` that failed with `e`: classified by
    /// [`TransferFailure::of`], the reason naming the innermost cause.
    pub(crate) fn of_transfer(url: &url::Url, e: &reqwest::Error) -> Attempt {
        let failure = TransferFailure::of(e);
        let reason = failure.reason(&root_cause(e));
        Attempt::of(
            failure.remedy(),
            Error::transfer(url.as_str(), reason),
            None,
        )
    }
}

/// `e` and its causes, outermost first. An `io::Error` hides the error it
/// wraps from `source()` (it gives that one's sources): the walk goes on
/// through the wrapped error instead, which loses nothing.
fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut chain = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        chain.push(e);
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    chain
}

/// Whether `e` is a rustls error about the peer's certificate.
fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        e.downcast_ref::<rustls::Error>(),
        Some(
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::InvalidCertRevocationList(_)
                | rustls::Error::UnsupportedNameType
        )
    )
}

/// Whether `e` is hyper's "message head is too large".
fn is_header_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_parse_too_large)
}

/// The innermost error's message: the one that says what really happened.
pub(crate) fn root_cause(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for retried in [500, 502, 503, 504, 429, 408] {
            assert_eq!(Remedy::of_status(retried), Remedy::Retry, "{retried}");
        }
        for not in [400, 401, 403, 404, 410, 416] {
            assert_eq!(Remedy::of_status(not), Remedy::NextRoot, "{not}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let b = Backoff {
            first: Duration::from_millis(400),
            max: Duration::from_secs(2),
        };
        for _ in 0..50 {
            let d0 = b.delay(0, None);
            assert!(d0 >= Duration::from_millis(200) && d0 <= Duration::from_millis(400));
            let d2 = b.delay(2, None);
            assert!(d2 >= Duration::from_millis(800) && d2 <= Duration::from_millis(1600));
            assert!(b.delay(30, None) <= Duration::from_secs(2));
        }
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(90))),
            Duration::from_secs(2),
            "Retry-After is capped"
        );
        assert_eq!(b.delay(3, Some(Duration::ZERO)), Duration::ZERO);
    }

    #[test]
    fn the_s3_client_gets_the_same_numbers() {
        let policy = RetryPolicy {
            retries: 3,
            backoff: Backoff {
                first: Duration::from_millis(250),
                max: Duration::from_secs(7),
            },
        };
        let config = policy.object_store();
        assert_eq!(config.max_retries, 3);
        assert_eq!(config.backoff.init_backoff, Duration::from_millis(250));
        assert_eq!(config.backoff.max_backoff, Duration::from_secs(7));
    }

    #[test]
    fn certificate_errors_are_found_inside_io_errors() {
        // As tokio-rustls and hyper-util give it: io::Error in io::Error.
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let io = std::io::Error::other(io);
        assert!(causes(&io).iter().any(|c| is_certificate_error(*c)));
        let plain = std::io::Error::other("certificate");
        assert!(
            !causes(&plain).iter().any(|c| is_certificate_error(*c)),
            "the text does not decide"
        );
    }

    #[test]
    fn reasons_keep_their_wording() {
        assert_eq!(
            TransferFailure::Certificate.reason("invalid peer certificate: UnknownIssuer"),
            "TLS certificate not trusted: invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(
            TransferFailure::Timeout.reason("x"),
            "timed out (no data received)"
        );
        assert_eq!(TransferFailure::Certificate.remedy(), Remedy::NextRoot);
        assert_eq!(TransferFailure::Other.remedy(), Remedy::Retry);
    }
}
