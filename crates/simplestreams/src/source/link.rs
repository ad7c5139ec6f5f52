//! What a run shares of the link: a budget of connections for item
//! downloads, and the rate cap (`--limit-rate`).
//!
//! **The connection budget.** A run opens at most `connections` connections
//! for items at once (`--jobs`). Every file holds one while it downloads;
//! a large file ([`TransferOptions::segment_threshold`]) also takes the
//! connections nobody else is waiting for, to fetch byte ranges of itself
//! in parallel, and gives each back when its range is done. A file that is
//! waiting to start always goes first: extra connections are only taken
//! while no file waits, so segments fill the link at the end of a run (or
//! in a run of a few files, like a daily update) and never hold up the
//! files behind them.
//!
//! **The rate cap** is one token bucket for every connection of the run:
//! each chunk received is paid for as it arrives, and a connection whose
//! chunk puts the bucket in debt waits until the debt is repaid before it
//! reads again (the sender is held back by TCP). Over any stretch of time
//! the bytes received stay within `rate × time + burst`, the burst being a
//! twentieth of a second's worth.
//!
//! [`TransferOptions::segment_threshold`]: super::TransferOptions::segment_threshold

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The connections a run may have open for items at once.
#[derive(Debug)]
pub(crate) struct Connections {
    permits: std::sync::Arc<Semaphore>,
    size: usize,
    /// Files waiting for a connection.
    waiting: AtomicUsize,
}

/// One connection of the budget, given back when dropped.
pub(crate) type Connection = OwnedSemaphorePermit;

impl Connections {
    /// A budget of `size` connections (at least one).
    pub(crate) fn new(size: usize) -> Connections {
        let size = size.max(1);
        Connections {
            permits: std::sync::Arc::new(Semaphore::new(size)),
            size,
            waiting: AtomicUsize::new(0),
        }
    }

    /// How many connections the budget has.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The connection of a file: waits (in turn) for one to be free.
    pub(crate) async fn for_file(&self) -> Option<Connection> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let permit = self.permits.clone().acquire_owned().await.ok();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        permit
    }

    /// A connection for a segment of a large file, when one is free and no
    /// file is waiting for it.
    pub(crate) fn spare(&self) -> Option<Connection> {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            return None;
        }
        self.permits.clone().try_acquire_owned().ok()
    }
}

/// A token bucket: the total rate of every connection of a run.
#[derive(Debug)]
pub(crate) struct RateLimit {
    /// Bytes per second.
    rate: f64,
    /// The most the bucket holds.
    burst: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Negative: debt to be repaid before anyone reads again.
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// A cap of `bytes_per_second` (at least 1).
    pub(crate) fn new(bytes_per_second: u64) -> RateLimit {
        let rate = bytes_per_second.max(1) as f64;
        let burst = (rate / 20.0).max(16.0 * 1024.0);
        RateLimit {
            rate,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                at: Instant::now(),
            }),
        }
    }

    /// Pays for `n` bytes just received; waits while the bucket is in debt.
    pub(crate) async fn take(&self, n: usize) {
        let wait = self.charge(n, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Refills the bucket up to `now`, takes `n` and says how long to wait.
    fn charge(&self, n: usize, now: Instant) -> Duration {
        let mut b = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now.max(b.at);
        b.tokens -= n as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_admits_the_rate_plus_a_burst() {
        let limit = RateLimit::new(1_000_000);
        let t0 = Instant::now();
        // 50 ms of burst are free; then every byte costs a microsecond.
        assert_eq!(limit.charge(50_000, t0), Duration::ZERO);
        let wait = limit.charge(100_000, t0);
        assert_eq!(wait, Duration::from_millis(100));
        // Two connections in debt wait in turn: the second one longer.
        let wait2 = limit.charge(100_000, t0);
        assert_eq!(wait2, Duration::from_millis(200));
        // A second later the debt of 200 KB is repaid and 800 KB more are
        // earned, but the bucket holds at most the burst.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(limit.charge(50_000, later), Duration::ZERO);
        assert_eq!(limit.charge(1_000, later), Duration::from_millis(1));
    }

    #[tokio::test]
    async fn spare_connections_wait_behind_files() {
        let c = std::sync::Arc::new(Connections::new(2));
        let first = c.for_file().await.unwrap();
        let extra = c.spare().expect("one connection is free");
        assert!(c.spare().is_none(), "the budget is spent");
        let c2 = c.clone();
        let waiting = tokio::spawn(async move { c2.for_file().await.is_some() });
        while c.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        drop(extra);
        assert!(c.spare().is_none(), "a waiting file goes first");
        assert!(waiting.await.unwrap());
        drop(first);
        assert!(c.spare().is_some());
    }
}
