//! What a run shares of the link: a budget of connections for item
//! downloads that grows while more connections bring more throughput, and
//! the rate cap (`--limit-rate`).
//!
//! **The connection budget.** A run starts with `connections` connections
//! for items (`--jobs`). Every file holds one while it downloads; a large
//! file ([`TransferOptions::segment_threshold`]) also takes the connections
//! nobody else is waiting for, to fetch byte ranges of itself in parallel,
//! and gives each back when its range is done. A file that is waiting to
//! start always goes first: extra connections are only taken while no file
//! waits, so segments fill the link at the end of a run (or in a run of a
//! few files, like a daily update) and never hold up the files behind them.
//!
//! **Growing the budget.** A server or a long round trip may cap what one
//! connection carries (a CDN's per-connection rate, TCP's window over a
//! long haul): six connections at 3 MiB/s fill three quarters of a
//! 200 Mbit/s link, whatever else a run does. So while the budget is spent
//! (every connection busy, no file waiting) and a large file still has
//! ranges to split, the budget measures the throughput of the whole run
//! over a [`WINDOW`], adds a [`STEP`]th of the budget (at least one
//! connection), lets them get going ([`SETTLE`]) and measures again. When
//! each added connection brought at least [`GAIN`] of what the average
//! connection carried, the next step is tried; otherwise (the link, the
//! disk or a server's total rate is the limit) the budget stays where it
//! is for the rest of the run. It never grows past `max_connections`
//! (`--max-connections`). On a link that the starting connections fill,
//! one probe finds no gain and the throughput stays as it was; the margin
//! keeps the noise of a window from adding more. A measurement is only
//! taken over a window in which every connection of the budget was busy
//! throughout and none was taken anew (a new request starts with a
//! server's burst): anything else starts it again.
//!
//! **The rate cap** is one token bucket for every connection of the run:
//! each chunk received is paid for as it arrives, and a connection whose
//! chunk puts the bucket in debt waits until the debt is repaid before it
//! reads again (the sender is held back by TCP). Over any stretch of time
//! the bytes received stay within `rate × time + burst`, the burst being a
//! twentieth of a second's worth. Under the cap an added connection brings
//! nothing, so the budget does not grow.
//!
//! [`TransferOptions::segment_threshold`]: super::TransferOptions::segment_threshold

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long the throughput is measured, before and after connections are
/// added: a whole second, as servers that cap a connection's rate (nginx's
/// `limit_rate`) count what it may send per second of their clock.
const WINDOW: Duration = Duration::from_secs(1);
/// How long added connections are given to get going (their requests,
/// TCP's slow start, a server's first burst) before their effect is
/// measured...
const SETTLE: Duration = Duration::from_millis(500);
/// ...and how long the first measurement waits, so that the bursts every
/// connection got at its start are behind it.
const SETTLE_FIRST: Duration = Duration::from_millis(1000);
/// A measurement whose last look at the budget is older than this was
/// broken (a connection was free or a file waited in between): it starts
/// again.
const GAP: Duration = Duration::from_millis(300);
/// The share of the average connection's rate each added connection must
/// bring for more to be tried.
const GAIN: f64 = 0.5;
/// Each step adds a `STEP`th of the budget (at least one), so that a link
/// needing half as many connections again gets them in a few seconds.
const STEP: usize = 3;

/// What a run shares of the link: the connection budget, the bytes all
/// its connections received, and the rate cap.
#[derive(Debug)]
pub(crate) struct Link {
    /// The connections item downloads may have open at once.
    pub(crate) connections: Connections,
    /// The cap on the rate of everything received.
    rate: Option<RateLimit>,
    /// Bytes received by every connection of the run (items and metadata).
    received: AtomicU64,
}

impl Link {
    /// A budget starting at `connections` (at least one) that may grow up
    /// to `max_connections`, and a rate cap of `limit_rate` bytes per
    /// second.
    pub(crate) fn new(connections: usize, max_connections: usize, limit_rate: Option<u64>) -> Link {
        Link {
            connections: Connections::new(connections, max_connections),
            rate: limit_rate.map(RateLimit::new),
            received: AtomicU64::new(0),
        }
    }

    /// Whether a rate cap is set.
    pub(crate) fn is_capped(&self) -> bool {
        self.rate.is_some()
    }

    /// Counts `n` bytes just received and pays for them under the rate
    /// cap (waiting while the cap is in debt).
    pub(crate) async fn received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(rate) = &self.rate {
            rate.take(n).await;
        }
    }

    /// Called by a large file that has ranges to split and found no spare
    /// connection: measures, and adds a connection to the budget when the
    /// last one added still brought throughput (see the module's doc).
    /// True when one was added.
    pub(crate) fn grow_if_it_helps(&self) -> bool {
        if self.rate.is_some() {
            return false;
        }
        let bytes = self.received.load(Ordering::Relaxed);
        self.connections.grow_if_it_helps(Instant::now(), bytes)
    }
}

/// The connections a run may have open for items at once.
#[derive(Debug)]
pub(crate) struct Connections {
    permits: std::sync::Arc<Semaphore>,
    /// The budget now: the starting count, and those added since.
    size: AtomicUsize,
    /// The most the budget grows to.
    bound: usize,
    /// Files waiting for a connection.
    waiting: AtomicUsize,
    /// Connections taken so far: one taken during a window (a new request
    /// starts, with a server's first burst) starts the window again.
    taken: AtomicUsize,
    growth: Mutex<Growth>,
}

/// One connection of the budget, given back when dropped.
pub(crate) type Connection = OwnedSemaphorePermit;

impl Connections {
    /// A budget of `size` connections (at least one) that may grow up to
    /// `bound` (never below `size`).
    pub(crate) fn new(size: usize, bound: usize) -> Connections {
        let size = size.max(1);
        Connections {
            permits: std::sync::Arc::new(Semaphore::new(size)),
            size: AtomicUsize::new(size),
            bound: bound.max(size),
            waiting: AtomicUsize::new(0),
            taken: AtomicUsize::new(0),
            growth: Mutex::new(Growth::default()),
        }
    }

    /// How many connections the budget has now.
    pub(crate) fn size(&self) -> usize {
        self.size.load(Ordering::SeqCst)
    }

    /// The connection of a file: waits (in turn) for one to be free.
    pub(crate) async fn for_file(&self) -> Option<Connection> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let permit = self.permits.clone().acquire_owned().await.ok();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.taken.fetch_add(1, Ordering::SeqCst);
        permit
    }

    /// A connection for a segment of a large file, when one is free and no
    /// file is waiting for it.
    pub(crate) fn spare(&self) -> Option<Connection> {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        self.taken.fetch_add(1, Ordering::SeqCst);
        Some(permit)
    }

    /// Whether every connection of the budget is in use and no file waits.
    fn spent(&self) -> bool {
        self.permits.available_permits() == 0 && self.waiting.load(Ordering::SeqCst) == 0
    }

    /// One look at the budget at `now`, the run having received `bytes`:
    /// see [`Growth::look`]. True when a connection was added.
    fn grow_if_it_helps(&self, now: Instant, bytes: u64) -> bool {
        let mut growth = self
            .growth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let size = self.size();
        let spent = self.spent();
        let taken = self.taken.load(Ordering::SeqCst);
        let Step::Add(n) = growth.look(now, bytes, spent, taken, size, self.bound) else {
            return false;
        };
        self.size.fetch_add(n, Ordering::SeqCst);
        self.permits.add_permits(n);
        true
    }
}

/// What a look at the budget decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Go on as it is.
    Wait,
    /// Add this many connections.
    Add(usize),
}

/// The throughput of the whole run with every connection of the budget
/// busy, and what the last connection added brought.
#[derive(Debug, Default)]
struct Growth {
    phase: Phase,
    /// The rate measured before the last connections were added, and the
    /// budget then.
    before: Option<(f64, usize)>,
    /// Connections taken when the current settling or window started.
    taken: usize,
}

#[derive(Debug, Default, Clone, Copy)]
enum Phase {
    /// Nothing measured yet, or the last measurement was broken.
    #[default]
    Idle,
    /// Every connection busy (looked at last at `last`); the window starts
    /// at `until`.
    Settling { until: Instant, last: Instant },
    /// Measuring since `from`, when `bytes` were received; `last` is the
    /// latest look.
    Measuring {
        from: Instant,
        bytes: u64,
        last: Instant,
    },
    /// The last connection added brought too little, or the bound is
    /// reached: the budget stays.
    Settled,
}

impl Growth {
    /// One look at `now`, the run having received `bytes` and taken
    /// `taken` connections, with a budget of `size` connections (at most
    /// `bound`), `spent` when every one is busy and no file waits.
    fn look(
        &mut self,
        now: Instant,
        bytes: u64,
        spent: bool,
        taken: usize,
        size: usize,
        bound: usize,
    ) -> Step {
        let renewed = std::mem::replace(&mut self.taken, taken) != taken;
        let broken = |last: Instant| renewed || now.saturating_duration_since(last) > GAP;
        self.phase = match self.phase {
            Phase::Settled => return Step::Wait,
            _ if size >= bound => Phase::Settled,
            _ if !spent => Phase::Idle,
            Phase::Idle => Phase::Settling {
                until: now + self.settle(),
                last: now,
            },
            Phase::Settling { last, .. } | Phase::Measuring { last, .. } if broken(last) => {
                Phase::Settling {
                    until: now + SETTLE,
                    last: now,
                }
            }
            Phase::Settling { until, .. } if now < until => Phase::Settling { until, last: now },
            Phase::Settling { .. } => Phase::Measuring {
                from: now,
                bytes,
                last: now,
            },
            Phase::Measuring {
                from, bytes: b0, ..
            } if now.saturating_duration_since(from) < WINDOW => Phase::Measuring {
                from,
                bytes: b0,
                last: now,
            },
            Phase::Measuring {
                from, bytes: b0, ..
            } => {
                let secs = now.saturating_duration_since(from).as_secs_f64();
                let rate = bytes.saturating_sub(b0) as f64 / secs;
                return self.judge(rate, size, bound);
            }
        };
        Step::Wait
    }

    /// How long connections are busy before a window starts.
    fn settle(&self) -> Duration {
        if self.before.is_some() {
            SETTLE
        } else {
            SETTLE_FIRST
        }
    }

    /// After a window at `rate` with `size` connections (at most
    /// `bound`): add one when this is the first window; more when the
    /// connections added last brought enough each.
    fn judge(&mut self, rate: f64, size: usize, bound: usize) -> Step {
        let helped = match self.before {
            None => true,
            Some((before, n)) => {
                let added = size.saturating_sub(n).max(1) as f64;
                rate - before >= GAIN * added * before / n.max(1) as f64
            }
        };
        if let Some((before, n)) = self.before {
            log::debug!(
                "{n} connections: {:.1} MB/s; {size}: {:.1} MB/s{}",
                before / 1e6,
                rate / 1e6,
                if helped { "" } else { ": no more connections" }
            );
        }
        if !helped {
            self.phase = Phase::Settled;
            return Step::Wait;
        }
        let step = (size / STEP).max(1);
        self.before = Some((rate, size));
        // The next window starts once the added connections are busy too.
        self.phase = Phase::Idle;
        Step::Add(step.min(bound - size))
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
        let c = std::sync::Arc::new(Connections::new(2, 2));
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

    /// Looks at a budget every 100 ms for `secs` seconds, the run
    /// receiving `rate(size)` bytes per second with `size` connections,
    /// every connection busy; gives the budget at the end.
    fn grown(start: usize, bound: usize, secs: u64, rate: impl Fn(usize) -> f64) -> usize {
        let c = Connections::new(start, bound);
        let held: Vec<_> = (0..start).filter_map(|_| c.spare()).collect();
        let mut held = held;
        let t0 = Instant::now();
        let mut bytes = 0.0;
        for tick in 1..=secs * 10 {
            bytes += rate(c.size()) / 10.0;
            let now = t0 + Duration::from_millis(100 * tick);
            if c.grow_if_it_helps(now, bytes as u64) {
                // The file takes the added connections at once.
                held.extend(std::iter::from_fn(|| c.spare()));
                assert_eq!(held.len(), c.size());
            }
        }
        c.size()
    }

    #[test]
    fn the_budget_grows_while_connections_add_throughput() {
        // 3 MB/s per connection, 25 MB/s for the link: 9 connections fill
        // it. Two are added (they bring 3 MB/s each), then two more, which
        // bring half a megabyte: the budget stays.
        let per_connection = |n: usize| (n as f64 * 3e6).min(25e6);
        assert_eq!(grown(6, 16, 20, per_connection), 10);
        // One at a time from two.
        assert_eq!(grown(2, 16, 20, |n| (n as f64 * 3e6).min(12e6)), 5);
        // A link that takes every connection: up to the bound, never past.
        assert_eq!(grown(6, 16, 30, |n| n as f64 * 3e6), 16);
        assert_eq!(grown(6, 8, 20, per_connection), 8);
        assert_eq!(grown(6, 6, 20, per_connection), 6);
        assert_eq!(
            grown(6, 2, 20, per_connection),
            6,
            "the bound is at least the start"
        );
    }

    #[test]
    fn a_fixed_total_rate_gets_one_probe_and_noise_no_more() {
        assert_eq!(grown(6, 16, 20, |_| 25e6), 8);
        assert_eq!(grown(2, 16, 20, |_| 25e6), 3);
        // Noise below the margin: two connections added to six must bring
        // half of a sixth each (17%); 10% more is noise.
        assert_eq!(
            grown(6, 16, 20, |n| 25e6 * (1.0 + 0.05 * (n - 6) as f64)),
            8
        );
        // A server that slows down with every connection added.
        assert_eq!(grown(6, 16, 20, |n| 30e6 - n as f64 * 1e6), 8);
    }

    #[test]
    fn nothing_is_measured_while_a_connection_is_free_or_a_file_waits() {
        let c = Connections::new(2, 16);
        let _one = c.spare();
        let t0 = Instant::now();
        for tick in 1..100 {
            let now = t0 + Duration::from_millis(100 * tick);
            assert!(
                !c.grow_if_it_helps(now, tick * 1_000_000),
                "a connection is free"
            );
        }
        assert_eq!(c.size(), 2);
    }
}
