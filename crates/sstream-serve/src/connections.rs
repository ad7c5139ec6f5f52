//! The open connections, kept within what the file descriptor limit allows.
//!
//! A connection costs a descriptor, and one more while it sends a file. At
//! start the soft `RLIMIT_NOFILE` is raised to the hard limit, and at most
//! [`Connections::cap`] connections (half of that limit, less a reserve) are
//! open at once. Before accepting another beyond that, one is closed: the
//! one idle the longest (between requests, or still sending its request
//! header), else the one whose response has been stalled the longest (its
//! client stopped reading). A response that is moving is never cut for a
//! newcomer: the newcomer waits in the listen queue until a slot is free.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Descriptors kept for everything but connections: standard streams, the
/// listener, the runtime's epoll and wake-up descriptors, signal pipes, and
/// directories read for listings.
const RESERVED_FDS: u64 = 32;

/// A response whose body the client has not taken for this long counts as
/// slow: it may be closed to make room for a newcomer.
const SLOW_AFTER: Duration = Duration::from_secs(2);

/// How long the accept loop waits for a closed connection to release its
/// descriptors (or for a busy one to finish) before it looks again.
const RECHECK: Duration = Duration::from_millis(100);

/// Closings are reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Raises the soft limit on open files to the hard limit and returns the
/// limit now in force.
pub(crate) fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid `rlimit`, read by the call only.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
        // On failure (a hard limit of "unlimited" above the kernel's
        // `nr_open`), the soft limit stays as it was.
    }
    Ok(lim.rlim_cur)
}

/// The connections that `fd_limit` open files leave room for.
pub(crate) fn cap_for(fd_limit: u64) -> usize {
    let per_connection = 2;
    let cap = fd_limit.saturating_sub(RESERVED_FDS) / per_connection;
    usize::try_from(cap).unwrap_or(usize::MAX).max(1)
}

/// What the server knows of one open connection.
pub(crate) struct Connection {
    /// Milliseconds after [`Connections::epoch`] of its last sign of life:
    /// accepted, a request received, a response over, a piece of a body
    /// taken by the socket.
    last_active: AtomicU64,
    /// Whether a response is in flight.
    busy: AtomicBool,
    /// Told to close to make room.
    close: Notify,
    epoch: Instant,
}

impl Connection {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active.store(ms, Ordering::Relaxed);
    }

    /// Marks a response in flight until the returned guard is dropped.
    pub(crate) fn begin_response(self: &Arc<Self>) -> Busy {
        self.busy.store(true, Ordering::Relaxed);
        self.touch();
        Busy(self.clone())
    }
}

/// A response in flight on a connection; dropped when the response is over.
pub(crate) struct Busy(Arc<Connection>);

impl Busy {
    /// The client took another piece of the body.
    pub(crate) fn progress(&self) {
        self.0.touch();
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The registry of open connections.
pub(crate) struct Connections {
    cap: usize,
    fd_limit: u64,
    epoch: Instant,
    open: Mutex<Open>,
    /// Notified when a connection is gone.
    freed: Notify,
    report: Mutex<Report>,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    by_id: HashMap<u64, Entry>,
}

struct Entry {
    conn: Arc<Connection>,
    /// Told to close, not gone yet: still holds its descriptors.
    closing: bool,
}

/// Closings not reported yet.
#[derive(Default)]
struct Report {
    last: Option<Instant>,
    idle: u64,
    slow: u64,
}

/// Why a connection was chosen to make room, in the order of choice.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Victim {
    /// No response in flight.
    Idle,
    /// A response whose client stopped taking it.
    Slow,
}

/// An open connection's place in the registry; dropping it frees the slot.
pub(crate) struct Slot {
    connections: Arc<Connections>,
    id: u64,
    conn: Arc<Connection>,
}

impl Slot {
    /// The connection, for marking its responses.
    pub(crate) fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    /// Resolves when the connection must close to make room.
    pub(crate) async fn closing(&self) {
        self.conn.close.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.lock().by_id.remove(&self.id);
        self.connections.freed.notify_one();
    }
}

impl Connections {
    /// A registry for at most `cap_for(fd_limit)` connections.
    pub(crate) fn new(fd_limit: u64) -> Arc<Self> {
        Arc::new(Connections {
            cap: cap_for(fd_limit),
            fd_limit,
            epoch: Instant::now(),
            open: Mutex::default(),
            freed: Notify::new(),
            report: Mutex::default(),
        })
    }

    /// How many connections may be open at once.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        // The registry stays consistent even if a holder panicked.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Waits until another connection may be accepted, closing the longest
    /// idle or stalled one when all slots are taken.
    pub(crate) async fn wait_for_room(&self) {
        loop {
            if self.lock().by_id.len() < self.cap {
                return;
            }
            self.close_one();
            // Woken when any connection is gone; looks again meanwhile, as
            // busy connections may become idle or stall.
            let _ = tokio::time::timeout(RECHECK, self.freed.notified()).await;
        }
    }

    /// Tells the best victim to close, unless enough are closing already.
    /// Call when accepting failed for want of descriptors too.
    pub(crate) fn close_one(&self) {
        let now = self.now_ms();
        let slow_ms = u64::try_from(SLOW_AFTER.as_millis()).unwrap_or(u64::MAX);
        let chosen = {
            let mut open = self.lock();
            let mut best: Option<(u64, u64, Victim)> = None;
            for (&id, e) in &open.by_id {
                if e.closing {
                    // One closing at a time is enough to make room for one.
                    return;
                }
                let last = e.conn.last_active.load(Ordering::Relaxed);
                let kind = if !e.conn.busy.load(Ordering::Relaxed) {
                    Victim::Idle
                } else if now.saturating_sub(last) >= slow_ms {
                    Victim::Slow
                } else {
                    continue;
                };
                // Idle ones first, then the least recently active.
                if best.is_none_or(|(_, t, k)| (kind, last) < (k, t)) {
                    best = Some((id, last, kind));
                }
            }
            let Some((id, _, kind)) = best else {
                return;
            };
            if let Some(e) = open.by_id.get_mut(&id) {
                e.closing = true;
                e.conn.close.notify_one();
            }
            kind
        };
        self.report(chosen);
    }

    /// Registers a newly accepted connection.
    pub(crate) fn admit(self: &Arc<Self>) -> Slot {
        let conn = Arc::new(Connection {
            last_active: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            close: Notify::new(),
            epoch: self.epoch,
        });
        conn.touch();
        let id = {
            let mut open = self.lock();
            let id = open.next_id;
            open.next_id += 1;
            open.by_id.insert(
                id,
                Entry {
                    conn: conn.clone(),
                    closing: false,
                },
            );
            id
        };
        Slot {
            connections: self.clone(),
            id,
            conn,
        }
    }

    /// Counts a closing, and reports on stderr at most every
    /// [`REPORT_EVERY`].
    fn report(&self, kind: Victim) {
        let mut r = self.report.lock().unwrap_or_else(|e| e.into_inner());
        match kind {
            Victim::Idle => r.idle += 1,
            Victim::Slow => r.slow += 1,
        }
        if r.last.is_some_and(|t| t.elapsed() < REPORT_EVERY) {
            return;
        }
        eprintln!(
            "serve: {} connections open, the most that the limit of {} open files allows: \
             closing the longest idle or stalled ones to make room ({} idle and {} stalled \
             closed since the last report)",
            self.cap, self.fd_limit, r.idle, r.slow
        );
        r.last = Some(Instant::now());
        r.idle = 0;
        r.slow = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps() {
        assert_eq!(cap_for(256), 112);
        assert_eq!(cap_for(1024), 496);
        assert_eq!(cap_for(10), 1);
    }

    #[tokio::test]
    async fn the_longest_idle_goes_first_and_moving_responses_stay() {
        let c = Connections::new(RESERVED_FDS + 6); // room for 3
        let a = c.admit();
        let b = c.admit();
        let busy = b.connection().begin_response();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let d = c.admit();
        c.close_one();
        // `a` (idle, oldest) is told to close; `b` is busy and moving.
        tokio::time::timeout(Duration::from_secs(5), a.closing())
            .await
            .expect("the oldest idle connection is closed");
        // Nothing else while `a` still holds its descriptors.
        c.close_one();
        drop(a);
        c.close_one();
        tokio::time::timeout(Duration::from_secs(5), d.closing())
            .await
            .expect("then the other idle one");
        drop(d);
        busy.progress();
        c.close_one();
        let cut = tokio::time::timeout(Duration::from_millis(200), b.closing()).await;
        assert!(cut.is_err(), "a moving response is not cut");
        drop(busy);
    }
}
