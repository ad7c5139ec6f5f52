//! Large items over several connections: byte ranges of one file fetched at
//! once, written at their offsets, hashed in order, resumed after an
//! interruption.
//!
//! A download of an item of at least
//! [`segment_threshold`](super::TransferOptions::segment_threshold) bytes,
//! into a store whose staging can write at offsets
//! ([`Staged::ranged`](crate::store::Staged::ranged)), goes in phases:
//!
//! 1. **open**: the store says which ranges an earlier attempt or run
//!    received (its record beside the staged file); the rest is the work.
//! 2. **fetch**: the file's own connection requests the first missing range
//!    as `Range: bytes=a-b`; whenever the [budget](super::link) has a spare
//!    connection (and it grows while connections add throughput), another
//!    connection takes half of the largest range still being received (the first one stops at the new boundary and drops its
//!    connection), down to halves of an eighth of the threshold. A
//!    connection whose range is done takes the next missing one, or half of
//!    the largest again, so they all end together. Under a rate cap the
//!    connections are read slowly and their socket buffers fill, so a cut
//!    would waste what is in flight: requests are then pieces of half the
//!    threshold and a range is only split after the piece being received.
//!    Each answer must be a `206` whose `Content-Range` is exactly the range
//!    asked (and whose total is the item's size): anything else stops the
//!    ranges, and the file is fetched over one connection, resuming after
//!    what arrived in order. Retries with backoff, the fallback `--mirror`
//!    roots (a local one takes the file whole, over one connection) and the
//!    stall timeout apply to each range.
//! 3. **land**: one blocking writer per file writes every chunk at its
//!    offset and hashes in order: a chunk that extends the hashed prefix is
//!    hashed from memory as it is written; bytes that arrived ahead of the
//!    prefix are read back from the staged file (the page cache) as soon as
//!    the prefix reaches them. Every second (or 16 MiB) it has the store
//!    record the ranges received, so a killed run loses at most that much.
//! 4. **verify**: the whole item's size and checksum, before it is synced
//!    and handed back for commit. A mismatch discards it all and the file is
//!    fetched again over one connection.
//!
//! Hashing in order this way, rather than hashing the whole file once the
//! last range lands, was measured on a 135 MB squashfs over 6 connections
//! (bench/wan.sh): a third of it is hashed as it arrives, two thirds are
//! read back (about 90 ms), most of that while the download goes on, so
//! 30-50 ms are left after the last chunk against 100-150 ms for hashing
//! the whole file afterwards.

use super::{ProgressFn, Slot, Source, check_status, clear, join_url, lock};
use crate::error::{Error, Result};
use crate::hash::{Expected, Hasher, IO_BUFFER};
use crate::path::RelPath;
use crate::retry::Attempt;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use url::Url;

/// A range is split only when both halves are at least the threshold over
/// this.
const SPLIT_SHARE: u64 = 8;
/// The smallest half a range is split into, whatever the threshold.
const MIN_SPLIT: u64 = 64 << 10;
/// How often a download looks for a spare connection.
const GROW_EVERY: Duration = Duration::from_millis(100);
/// The ranges received are recorded at least this often...
const RECORD_EVERY: Duration = Duration::from_secs(1);
/// ...and after this many bytes.
const RECORD_BYTES: u64 = 16 << 20;
/// Chunks in flight between the connections of one file and its writer.
const QUEUE: usize = 8;

/// How a segmented download ended, when it did not fail.
#[derive(Debug)]
pub(super) enum Segmented {
    /// Complete, verified and synced; the bytes received.
    Done(u64),
    /// Fetch the file over one connection instead (resuming after the
    /// prefix received so far); the bytes received, and why (`None`: the
    /// store cannot write at offsets).
    OneConnection(u64, Option<String>),
}

/// Fetches the item at `rel` (of `size` bytes) into `slot` in ranges.
pub(super) async fn download(
    source: &Source,
    rel: &RelPath,
    slot: &Slot,
    size: u64,
    expected: &Expected,
    progress: &ProgressFn,
) -> Result<Segmented> {
    let Some(received) = open(slot, size).await? else {
        return Ok(Segmented::OneConnection(0, None));
    };
    let threshold = source.options.segment_threshold.unwrap_or(size);
    let min_split = (threshold / SPLIT_SHARE).max(MIN_SPLIT);
    // Under a rate cap the connections' buffers fill up (they are read
    // slowly), so a request cut short would waste what is in flight:
    // requests are then pieces of half the threshold, never cut.
    let piece = source
        .link
        .is_capped()
        .then_some((threshold / 2).max(2 * min_split));
    let work = Work::new(complement(&received, size), min_split, piece);
    let (tx, rx) = mpsc::channel(QUEUE);
    let writer = {
        let (slot, exp) = (slot.clone(), expected.clone());
        tokio::task::spawn_blocking(move || land(&slot, size, received, &exp, rx))
    };
    let fetch = Fetch {
        source,
        rel,
        size,
        progress,
        work: Mutex::new(work),
        received: AtomicU64::new(0),
    };
    let stopped = fetch.all(tx).await;
    let received = fetch.received.load(Ordering::SeqCst);
    let what = source.url_of(rel);
    let landed = writer
        .await
        .map_err(|e| Error::transfer(what.as_str(), e.to_string()))??;
    log::debug!(
        "{rel}: {} of {size} bytes hashed as they arrived, {} read back in {:?} ({:?} after the last chunk)",
        landed.hashed - landed.read_back,
        landed.read_back,
        landed.read_back_time,
        landed.final_catch_up
    );
    match stopped {
        Err(Stop::Failed(e)) => return Err(e),
        Err(Stop::Fallback(why)) => return Ok(Segmented::OneConnection(received, Some(why))),
        Err(Stop::WriterGone) | Ok(()) => {}
    }
    verify(
        slot,
        landed,
        size,
        expected,
        what.as_str(),
        received,
        progress,
    )
    .await
}

/// Phase 1: sizes the staged item for writes at offsets and gives the ranges
/// already received (`None` when the store can only append).
async fn open(slot: &Slot, size: u64) -> Result<Option<Vec<Range<u64>>>> {
    let s = slot.clone();
    tokio::task::spawn_blocking(move || {
        let mut staged = lock(&s);
        match staged.ranged() {
            None => Ok(None),
            Some(r) => r.open_ranges(size).map(Some),
        }
    })
    .await
    .map_err(|e| Error::transfer("download", e.to_string()))?
}

/// Phase 4: the item is whole, its size and checksum are right, it is on
/// disk; otherwise it is discarded and fetched again over one connection.
async fn verify(
    slot: &Slot,
    landed: Landed,
    size: u64,
    expected: &Expected,
    what: &str,
    received: u64,
    progress: &ProgressFn,
) -> Result<Segmented> {
    if landed.hashed != size {
        // Only when the writer stopped early, which it reports itself.
        return Ok(Segmented::OneConnection(
            received,
            Some(format!(
                "ranges incomplete ({} of {size} bytes in order)",
                landed.hashed
            )),
        ));
    }
    if let Err(e) = expected.check(what, size, landed.hasher.finish()) {
        clear(slot, received, progress).await?;
        return Ok(Segmented::OneConnection(
            received,
            Some(format!("{e}; discarded")),
        ));
    }
    let s = slot.clone();
    tokio::task::spawn_blocking(move || lock(&s).sync())
        .await
        .map_err(|e| Error::transfer(what, e.to_string()))??;
    Ok(Segmented::Done(received))
}

/// What the writer of a file made of the chunks it was given.
struct Landed {
    /// Bytes hashed, in order from the start.
    hashed: u64,
    hasher: Hasher,
    /// Of those, bytes read back from the staged file (they had arrived
    /// ahead of the hashed prefix), and the time that took...
    read_back: u64,
    read_back_time: Duration,
    /// ...of which after the last chunk arrived.
    final_catch_up: Duration,
}

/// Phase 3: writes each chunk at its offset and hashes in order, reading
/// back what arrived ahead of the hashed prefix once the prefix reaches it;
/// records the ranges received now and then, and at the end.
fn land(
    slot: &Slot,
    size: u64,
    received: Vec<Range<u64>>,
    expected: &Expected,
    mut rx: mpsc::Receiver<(u64, Bytes)>,
) -> Result<Landed> {
    let mut staged = lock(slot);
    let Some(r) = staged.ranged() else {
        return Err(Error::transfer("download", "staging lost its ranges"));
    };
    let mut ranges = RangeSet::from(received);
    let mut landed = Landed {
        hashed: 0,
        hasher: expected.hasher(),
        read_back: 0,
        read_back_time: Duration::ZERO,
        final_catch_up: Duration::ZERO,
    };
    let mut buf = Vec::new();
    catch_up(r, &ranges, &mut landed, &mut buf)?;
    let (mut since, mut last) = (0u64, Instant::now());
    while let Some((at, data)) = rx.blocking_recv() {
        let end = at + data.len() as u64;
        if end > size {
            continue; // never asked for; the claims keep chunks in range
        }
        r.write_at(at, &data)?;
        ranges.insert(at..end);
        if at == landed.hashed {
            landed.hasher.update(&data);
            landed.hashed = end;
        }
        let started = Instant::now();
        let before = landed.read_back;
        catch_up(r, &ranges, &mut landed, &mut buf)?;
        if landed.read_back > before {
            landed.final_catch_up = started.elapsed();
            landed.read_back_time += landed.final_catch_up;
        }
        since += data.len() as u64;
        if since >= RECORD_BYTES || last.elapsed() >= RECORD_EVERY {
            r.record(ranges.as_slice())?;
            (since, last) = (0, Instant::now());
        }
    }
    r.record(ranges.as_slice())?;
    Ok(landed)
}

/// Hashes the bytes between the hashed prefix and the end of the contiguous
/// range received from the start, reading them back.
fn catch_up(
    r: &mut dyn crate::store::RangedStaged,
    ranges: &RangeSet,
    landed: &mut Landed,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let end = ranges.prefix_end();
    while landed.hashed < end {
        if buf.is_empty() {
            buf.resize(IO_BUFFER, 0);
        }
        let n = (end - landed.hashed).min(buf.len() as u64) as usize;
        r.read_at(landed.hashed, &mut buf[..n])?;
        landed.hasher.update(&buf[..n]);
        landed.hashed += n as u64;
        landed.read_back += n as u64;
    }
    Ok(())
}

/// Why the connections of a file stopped before the work was done.
enum Stop {
    /// A range failed at every root: the file fails.
    Failed(Error),
    /// The server does not answer ranges as asked: one connection instead.
    Fallback(String),
    /// The writer stopped (it says why).
    WriterGone,
}

/// Why one request for a range did not finish it.
enum RangeFailure {
    /// As for a whole file: retry, or give up on this root.
    Attempt(Attempt),
    /// See [`Stop::Fallback`].
    Fallback(String),
    /// See [`Stop::WriterGone`].
    WriterGone,
}

impl From<Attempt> for RangeFailure {
    fn from(a: Attempt) -> Self {
        RangeFailure::Attempt(a)
    }
}

/// Phase 2: the connections of one file.
struct Fetch<'a> {
    source: &'a Source,
    rel: &'a RelPath,
    size: u64,
    progress: &'a ProgressFn,
    work: Mutex<Work>,
    /// Bytes received (kept) by every connection.
    received: AtomicU64,
}

impl Fetch<'_> {
    fn work(&self) -> std::sync::MutexGuard<'_, Work> {
        self.work
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs the file's own connection, and one more for each spare
    /// connection of the budget while a range can be split, until every
    /// range is received or one connection stops them all. While ranges
    /// can be split and the budget is spent, the budget may grow by a
    /// connection (see [`super::link`]).
    async fn all(&self, tx: mpsc::Sender<(u64, Bytes)>) -> Result<(), Stop> {
        let link = &self.source.link;
        let mut connections = FuturesUnordered::new();
        connections.push(self.connection(0, None, tx.clone()));
        let mut tick = tokio::time::interval(GROW_EVERY);
        let mut next_id = 1;
        loop {
            loop {
                let more = connections.len() < link.connections.size() && self.work().splittable();
                if let Some(permit) = more.then(|| link.connections.spare()).flatten() {
                    connections.push(self.connection(next_id, Some(permit), tx.clone()));
                    next_id += 1;
                } else if !(self.work().splittable() && link.grow_if_it_helps()) {
                    break;
                }
            }
            tokio::select! {
                done = connections.next() => match done {
                    None => return Ok(()),
                    Some(Ok(())) => {}
                    Some(Err(stop)) => return Err(stop),
                },
                _ = tick.tick() => {}
            }
        }
    }

    /// One connection: takes ranges until there is none left to take.
    async fn connection(
        &self,
        id: usize,
        _permit: Option<super::link::Connection>,
        tx: mpsc::Sender<(u64, Bytes)>,
    ) -> Result<(), Stop> {
        while self.work().take(id).is_some() {
            self.range(id, &tx).await?;
        }
        Ok(())
    }

    /// Receives the range of connection `id`, one request after another
    /// (one for all of it, or pieces under a rate cap), trying each root in
    /// turn, with retries at each (counted from the last request that
    /// completed).
    async fn range(&self, id: usize, tx: &mpsc::Sender<(u64, Bytes)>) -> Result<(), Stop> {
        let options = &self.source.options;
        let mut errors = Vec::new();
        for root in &self.source.roots {
            let url = join_url(root, self.rel);
            if !matches!(url.scheme(), "http" | "https") {
                // A local --mirror root: copied whole, over "one connection".
                let why = format!("{url}: a local root for a range");
                return Err(Stop::Fallback(why));
            }
            let mut attempt = 0;
            let e = loop {
                if self.work().finished(id) {
                    return Ok(());
                }
                match self.request(id, &url, tx).await {
                    Ok(()) => attempt = 0,
                    Err(RangeFailure::Fallback(why)) => return Err(Stop::Fallback(why)),
                    Err(RangeFailure::WriterGone) => return Err(Stop::WriterGone),
                    Err(RangeFailure::Attempt(Attempt::Retry(e, after)))
                        if attempt < options.retries =>
                    {
                        log::warn!("{e}; retrying");
                        tokio::time::sleep(self.source.backoff(attempt, after)).await;
                        attempt += 1;
                    }
                    Err(RangeFailure::Attempt(
                        Attempt::Retry(e, _) | Attempt::Fatal(e) | Attempt::Restart(e),
                    )) => break e,
                }
            };
            if self.source.roots.len() > 1 {
                log::warn!("{e}");
            }
            errors.push(e);
        }
        let last = errors
            .pop()
            .unwrap_or_else(|| Error::transfer(self.rel.as_str(), "no source root"));
        Err(Stop::Failed(if errors.is_empty() {
            last
        } else {
            Error::transfer(
                self.rel.as_str(),
                format!(
                    "failed at all {} roots (primary and --mirror); last: {last}",
                    errors.len() + 1
                ),
            )
        }))
    }

    /// One request for the next part of the range of connection `id`.
    async fn request(
        &self,
        id: usize,
        url: &Url,
        tx: &mpsc::Sender<(u64, Bytes)>,
    ) -> Result<(), RangeFailure> {
        let Some(want) = self.work().next_request(id) else {
            return Ok(());
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(v) = format!("bytes={}-{}", want.start, want.end - 1).parse() {
            headers.insert(reqwest::header::RANGE, v);
        }
        let resp = self
            .source
            .send(url, headers)
            .await
            .map_err(|e| Attempt::of_transfer(url, &e))?;
        self.check_answer(url, &resp, &want)?;
        let mut at = want.start;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Attempt::of_transfer(url, &e))?;
            self.source.link.received(chunk.len()).await;
            let keep = self.work().claim(id, at, chunk.len());
            if keep > 0 {
                (self.progress)(keep as i64);
                self.received.fetch_add(keep as u64, Ordering::SeqCst);
                tx.send((at, chunk.slice(..keep)))
                    .await
                    .map_err(|_| RangeFailure::WriterGone)?;
                at += keep as u64;
            }
            if self.work().request_done(id) {
                return Ok(());
            }
        }
        if self.work().request_done(id) {
            return Ok(());
        }
        Err(Attempt::Retry(
            Error::transfer(
                url.as_str(),
                format!(
                    "connection ended after {} of the {} bytes of range {}-{}",
                    at - want.start,
                    want.end - want.start,
                    want.start,
                    want.end - 1
                ),
            ),
            None,
        )
        .into())
    }

    /// A `206` with exactly the range asked for, of an item of the expected
    /// size; errors as for a whole file; anything else gives up on ranges.
    fn check_answer(
        &self,
        url: &Url,
        resp: &reqwest::Response,
        want: &Range<u64>,
    ) -> Result<(), RangeFailure> {
        let status = resp.status();
        let asked = format!("bytes={}-{}", want.start, want.end - 1);
        if status == reqwest::StatusCode::PARTIAL_CONTENT {
            let header = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let exact = [
                format!("bytes {}-{}/{}", want.start, want.end - 1, self.size),
                format!("bytes {}-{}/*", want.start, want.end - 1),
            ];
            let length_ok = resp
                .content_length()
                .is_none_or(|n| n == want.end - want.start);
            if exact.iter().any(|e| e == header) && length_ok {
                return Ok(());
            }
            return Err(RangeFailure::Fallback(format!(
                "{url}: 206 with Content-Range {header:?} (length {:?}) for {asked}",
                resp.content_length()
            )));
        }
        if status.is_success() || status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
            return Err(RangeFailure::Fallback(format!(
                "{url}: HTTP {status} for {asked}"
            )));
        }
        check_status(url, resp)?;
        Err(RangeFailure::Fallback(format!(
            "{url}: HTTP {status} for {asked}"
        )))
    }
}

/// The ranges of a file still to be received, and who receives which.
#[derive(Debug)]
struct Work {
    /// Missing and not being received, in order.
    pending: VecDeque<Range<u64>>,
    /// The range each connection is receiving.
    active: BTreeMap<usize, Assignment>,
    /// The smallest half a range is split into.
    min_split: u64,
    /// The most one request asks for (`None`: all of a range, which is cut
    /// short when its second half is taken by another connection).
    piece: Option<u64>,
}

/// What is left of the range of one connection.
#[derive(Debug, Clone)]
struct Assignment {
    /// The next byte to receive.
    next: u64,
    /// The end of what its request asked for.
    asked: u64,
    /// The end of the range.
    end: u64,
}

impl Assignment {
    fn new(range: Range<u64>) -> Assignment {
        Assignment {
            next: range.start,
            asked: range.start,
            end: range.end,
        }
    }
}

impl Work {
    fn new(missing: Vec<Range<u64>>, min_split: u64, piece: Option<u64>) -> Work {
        Work {
            pending: missing.into(),
            active: BTreeMap::new(),
            min_split,
            piece,
        }
    }

    /// Where the range `a` would be split, leaving both parts at least
    /// `min_split` long (and, with pieces, nothing already asked for in the
    /// second part).
    fn split_point(&self, a: &Assignment) -> Option<u64> {
        let mut mid = a.next + (a.end - a.next) / 2;
        if self.piece.is_some() {
            mid = mid.max(a.asked);
        }
        (mid - a.next >= self.min_split && a.end.saturating_sub(mid) >= self.min_split)
            .then_some(mid)
    }

    /// Whether another connection would find something to do.
    fn splittable(&self) -> bool {
        !self.pending.is_empty() || self.active.values().any(|a| self.split_point(a).is_some())
    }

    /// A new range for connection `id` (its previous one is done): the next
    /// missing one, else the second half of the largest being received.
    fn take(&mut self, id: usize) -> Option<Range<u64>> {
        self.active.remove(&id);
        let range = match self.pending.pop_front() {
            Some(r) => r,
            None => {
                let (victim, mid) = self
                    .active
                    .iter()
                    .filter_map(|(&k, a)| Some((k, self.split_point(a)?, a.end - a.next)))
                    .max_by_key(|&(_, _, left)| left)
                    .map(|(k, mid, _)| (k, mid))?;
                let a = self.active.get_mut(&victim)?;
                let stolen = mid..a.end;
                a.end = mid;
                stolen
            }
        };
        self.active.insert(id, Assignment::new(range.clone()));
        Some(range)
    }

    /// What connection `id` asks for next: the rest of its range, or the
    /// next piece of it.
    fn next_request(&mut self, id: usize) -> Option<Range<u64>> {
        let piece = self.piece;
        let a = self.active.get_mut(&id)?;
        if a.next >= a.end {
            return None;
        }
        a.asked = piece.map_or(a.end, |p| a.end.min(a.next.saturating_add(p)));
        Some(a.next..a.asked)
    }

    /// How much of a chunk of `len` bytes received at `at` by connection
    /// `id` is its to keep (the rest belongs to a range taken from it, or
    /// was not asked for).
    fn claim(&mut self, id: usize, at: u64, len: usize) -> usize {
        match self.active.get_mut(&id) {
            Some(a) if a.next == at => {
                let keep = (len as u64).min(a.end.min(a.asked).saturating_sub(a.next));
                a.next += keep;
                keep as usize
            }
            _ => 0,
        }
    }

    /// Whether the last request of connection `id` has all it asked for
    /// (or all its range still holds).
    fn request_done(&self, id: usize) -> bool {
        self.active
            .get(&id)
            .is_none_or(|a| a.next >= a.end.min(a.asked))
    }

    /// Whether connection `id` has received all of its range.
    fn finished(&self, id: usize) -> bool {
        self.active.get(&id).is_none_or(|a| a.next >= a.end)
    }
}

/// The parts of `0..size` not in `have` (sorted, disjoint).
fn complement(have: &[Range<u64>], size: u64) -> Vec<Range<u64>> {
    let mut missing = Vec::new();
    let mut at = 0;
    for r in have {
        if r.start > at {
            missing.push(at..r.start.min(size));
        }
        at = at.max(r.end);
    }
    if at < size {
        missing.push(at..size);
    }
    missing.retain(|r| !r.is_empty());
    missing
}

/// Sorted, disjoint, non-adjacent ranges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct RangeSet(Vec<Range<u64>>);

impl From<Vec<Range<u64>>> for RangeSet {
    fn from(ranges: Vec<Range<u64>>) -> Self {
        let mut set = RangeSet::default();
        for r in ranges {
            set.insert(r);
        }
        set
    }
}

impl RangeSet {
    /// Adds `r`, merging it with the ranges it overlaps or touches.
    fn insert(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        // The first range that ends at or after `start`.
        let i = self.0.partition_point(|x| x.end < start);
        let mut j = i;
        while j < self.0.len() && self.0[j].start <= end {
            start = start.min(self.0[j].start);
            end = end.max(self.0[j].end);
            j += 1;
        }
        self.0.splice(i..j, std::iter::once(start..end));
    }

    /// The end of the range that starts at 0 (0 when there is none).
    fn prefix_end(&self) -> u64 {
        match self.0.first() {
            Some(r) if r.start == 0 => r.end,
            _ => 0,
        }
    }

    fn as_slice(&self) -> &[Range<u64>] {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn range_sets_merge() {
        let mut s = RangeSet::default();
        s.insert(10..20);
        s.insert(30..40);
        assert_eq!(s.prefix_end(), 0);
        s.insert(20..30);
        assert_eq!(s.as_slice(), &[10..40]);
        s.insert(0..5);
        s.insert(5..10);
        assert_eq!(s.as_slice(), &[0..40]);
        assert_eq!(s.prefix_end(), 40);
        s.insert(50..60);
        s.insert(45..55);
        s.insert(0..1);
        assert_eq!(s.as_slice(), &[0..40, 45..60]);
        s.insert(35..50);
        assert_eq!(s.as_slice(), &[0..60]);
    }

    #[test]
    fn missing_ranges() {
        assert_eq!(complement(&[], 10), vec![0..10]);
        assert_eq!(complement(&[0..10], 10), Vec::<Range<u64>>::new());
        assert_eq!(complement(&[2..4, 6..8], 10), vec![0..2, 4..6, 8..10]);
    }

    #[test]
    fn work_is_split_in_halves_and_claimed_in_order() {
        let mut w = Work::new(vec![0..1000], 150, None);
        assert_eq!(w.take(0), Some(0..1000));
        assert_eq!(w.next_request(0), Some(0..1000));
        assert!(w.splittable());
        // A second connection takes the second half of what is left.
        assert_eq!(w.claim(0, 0, 200), 200);
        assert_eq!(w.take(1), Some(600..1000));
        // The first stops at the new boundary: a chunk across it is cut.
        assert_eq!(w.claim(0, 200, 300), 300);
        assert!(!w.request_done(0));
        assert_eq!(w.claim(0, 500, 300), 100);
        assert!(w.finished(0) && w.request_done(0));
        assert_eq!(w.claim(0, 600, 10), 0, "not its range any more");
        assert_eq!(w.next_request(0), None);
        // Done, it takes half of the other's range; too small ranges stay.
        assert_eq!(w.take(0), Some(800..1000));
        assert_eq!(w.next_request(1), Some(600..800));
        assert!(!w.splittable());
        assert_eq!(w.take(2), None);
        // A claim at the wrong offset keeps nothing.
        assert_eq!(w.claim(1, 650, 10), 0);
    }

    #[test]
    fn pieces_are_asked_one_by_one_and_never_cut() {
        let mut w = Work::new(vec![0..1000], 100, Some(300));
        assert_eq!(w.take(0), Some(0..1000));
        assert_eq!(w.next_request(0), Some(0..300));
        assert_eq!(w.claim(0, 0, 400), 300, "nothing past what was asked");
        assert!(w.request_done(0) && !w.finished(0));
        assert_eq!(w.next_request(0), Some(300..600));
        // The split leaves the piece being received whole.
        assert_eq!(w.take(1), Some(650..1000));
        assert_eq!(w.claim(0, 300, 300), 300);
        assert_eq!(w.next_request(0), Some(600..650));
        assert_eq!(w.next_request(1), Some(650..950));
        // A split point inside the piece asked moves past it.
        assert_eq!(w.claim(1, 650, 100), 100);
        assert_eq!(w.take(2), None, "750..1000 holds one piece being received");
    }

    #[test]
    fn missing_ranges_are_taken_before_splitting() {
        let mut w = Work::new(vec![0..100, 500..600], 1000, None);
        assert_eq!(w.take(0), Some(0..100));
        assert_eq!(w.take(1), Some(500..600));
        assert_eq!(w.take(2), None);
        assert!(!w.splittable());
    }
}
