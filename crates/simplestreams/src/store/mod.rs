//! Where a mirror is kept. A [`Store`] owns every byte written under the
//! mirror's root: items (staged, verified by the caller, then committed
//! under their final name), metadata, the state under `.data/`, the
//! references, the run lock and our bookkeeping files. Nothing else writes
//! there. A store that can keeps identical content once
//! ([`Store::link`], [`Store::import`]: hard links in a directory) and says
//! how much room it has ([`Store::space`]).
//!
//! [`DirStore`] keeps a mirror in a local directory, [`S3Store`] in a
//! bucket of S3-compatible object storage. A new kind of store implements
//! [`Store`], [`Staged`] and [`Lease`]; the plan and the executor only ever
//! see `&dyn Store`.
//!
//! The layout (which names are ours) is [`crate::layout`]'s; the state
//! files are read and written by the provided methods of [`Store`], so
//! every store writes them alike, in the reference's format.

mod dir;
mod s3;

pub use crate::layout::{CACHE_PREFIX, DATA_DIR, LOCK, PENDING_DELETES, REFERENCES, is_state_name};
pub use dir::DirStore;
pub use s3::{S3Settings, S3Store, S3Target, is_s3_target};

use crate::error::{Error, Result};
use crate::format::Products;
use crate::path::{RelPath, check_file_name};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// `{item path: [content_id/product/version/item, ...]}`.
pub type References = BTreeMap<String, Vec<String>>;

/// References serialized without their empty lists (no copy made: they
/// are megabytes in a large stream).
struct NonEmptyLists<'a>(&'a References);

impl serde::Serialize for NonEmptyLists<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().filter(|(_, v)| !v.is_empty()))
    }
}

/// Paths whose deletion is pending, each with when it was scheduled (the
/// run that published metadata without it), in seconds since the epoch.
/// A path recorded without a time (by an older version, which deleted at
/// once) has time 0: it is due.
///
/// On disk (`.data/sstream-pending-deletes.json`): `{"path": seconds, ...}`;
/// the older format, a list of paths, is still read.
pub type PendingDeletes = BTreeMap<String, u64>;

/// How much room a store has where the items go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer can still use.
    pub free: u64,
    /// Size of the filesystem (or quota), in bytes.
    pub total: u64,
    /// The filesystem, for messages (its mount point).
    pub filesystem: String,
}

/// How [`Store::link`] or [`Store::import`] stored the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linked {
    /// As another name of the same bytes (a hard link): no space used.
    HardLink,
    /// As a copy (across filesystems): the space of a copy used, nothing
    /// transferred.
    Copy,
    /// The store cannot do it: the item is downloaded instead.
    Unsupported,
}

/// What identifies a stored file's content cheaply: size, modification time
/// and a file identity (an inode; every publication is a new file). While a
/// stamp holds, the file is not read again to check its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    /// Size in bytes.
    pub len: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: u128,
    /// Inode number (or another identity of this version of the file).
    pub ino: u64,
}

/// An item being downloaded into a store, under a staging name that no
/// reader follows. The download writes it, ends its writes
/// ([`Staged::sync`]), checks what it holds, then [`Staged::commit`]s it
/// under the item's path.
///
/// **Durability: where the guarantee lives.** Two promises hold at every
/// instant, a power cut included: no item is at its final path (where the
/// next run trusts it by its size) unless its bytes are on stable storage,
/// and no published metadata names an item whose bytes are not. The first
/// is [`Staged::commit`]'s: it returns `Ok` only once the bytes are
/// durable under the item's path, and the path is given to them only after
/// they are durable (a directory store fsyncs the staged file, renames it,
/// then fsyncs the directory). The second is the executor's
/// ([`crate::execute`]): metadata is published only after every commit of
/// the run has returned.
///
/// A failed `fsync` (of the staged file or of the directory) fails the
/// commit (and, for a directory, every later commit into it in the run:
/// the failed sync may have dropped their renames too; see
/// [`crate::durable::DirSyncs`]): it is never ignored and never retried (Linux reports a
/// writeback error once and may drop the unwritten pages, so a retry that
/// succeeds proves nothing; see [`crate::durable`]). What it may have lost
/// is taken off the tree (the staged file deleted, or the item unlinked
/// from its path), so that no later run trusts bytes or a name the disk
/// may not hold.
///
/// What is not promised is *when* the flushing happens, and that is where
/// the time goes: a directory store starts the writeback of a staged file
/// every few MiB while it is written (`sync_file_range`, which makes
/// nothing durable but lets the disk write behind the download), so the
/// commit's `fsync` finds little left to write; and the executor runs each
/// commit on a task of its own, so the download's slot goes to the next
/// download while the flush completes (as many commits in flight as
/// downloads). The flushes overlap the downloads instead of following each
/// one; the order of what becomes durable, and when it may be named, is
/// unchanged.
///
/// Writes append ([`Staged::begin`], [`Staged::write`]). A store that can
/// also write at offsets offers [`Staged::ranged`], and large items are then
/// fetched over several connections at once; the default (`None`) keeps
/// every download on one connection.
///
/// **Why the writes are synchronous while the rest is async.** A download
/// hands its chunks to one writer thread of the blocking pool, which hashes
/// and writes each as it comes ([`Staged::begin`], [`Staged::write`],
/// [`Staged::sync`], [`RangedStaged`]). Writing a local file there is a
/// plain `write(2)` per chunk; an async write would hop to the blocking
/// pool once per chunk (what `tokio::fs` does) and cost a thread handoff
/// for every few hundred kilobytes. A store whose writes are network
/// requests (S3's parts) drives them from that thread through a `Handle`
/// of the caller's runtime. Only [`Staged::commit`] and
/// [`Staged::discard`], once per item, are async.
#[async_trait::async_trait]
pub trait Staged: Send {
    /// Bytes already staged by an earlier attempt or run (to resume from):
    /// the contiguous prefix of what was received, when it was received in
    /// ranges ([`RangedStaged`]).
    fn staged_len(&self) -> u64;
    /// Keeps the first `keep` bytes staged (discarding the rest, and the
    /// record of ranges received, if any) and feeds them to `consume` in
    /// order, ready to append after them.
    fn begin(&mut self, keep: u64, consume: &mut dyn FnMut(&[u8])) -> Result<()>;
    /// Appends `data`.
    fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Ends the writes: everything written is handed to the store (a local
    /// file: out of the buffers, its writeback started), ready to be
    /// checked and committed. Not necessarily durable yet: that is
    /// [`Staged::commit`]'s.
    fn sync(&mut self) -> Result<()>;
    /// Makes the staged bytes durable and publishes them under the item's
    /// path, in that order: once it returns `Ok`, the item is on stable
    /// storage there; before, its path never holds bytes that are not.
    async fn commit(self: Box<Self>) -> Result<()>;
    /// Drops whatever is staged.
    async fn discard(self: Box<Self>) -> Result<()>;
    /// The staging name, for messages.
    fn describe(&self) -> String;
    /// Writing at offsets, for a download in several byte ranges at once;
    /// `None` (the default) when the store can only append.
    fn ranged(&mut self) -> Option<&mut dyn RangedStaged> {
        None
    }
}

/// A staged item written at offsets, by a download that fetches byte ranges
/// over several connections. What was received is recorded by the store
/// (beside the staged bytes) so that a later attempt or run fetches only
/// the rest; [`Staged::staged_len`] is then the contiguous prefix of it, and
/// [`Staged::begin`] goes back to appending after a prefix.
///
/// A record may claim more than is durable after a crash of the machine
/// (not of the process): the download hashes the whole item before it is
/// committed, so such bytes are found out and fetched again.
pub trait RangedStaged {
    /// Prepares the staged item for writes at offsets within `len` bytes
    /// (without sizing anything to `len`, which comes from metadata), and
    /// gives the ranges an earlier attempt or run recorded as received
    /// (sorted, disjoint, within `len`): the appended prefix when there is
    /// no record, nothing when what is staged was for another length.
    fn open_ranges(&mut self, len: u64) -> Result<Vec<Range<u64>>>;
    /// Writes `data` at `offset` (within the length given to
    /// [`RangedStaged::open_ranges`]).
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    /// Reads the staged bytes at `offset` into the whole of `buf`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Records `received` as the ranges received so far (what
    /// [`RangedStaged::open_ranges`] gives back after an interruption). It
    /// need not make the bytes durable: [`Staged::commit`] does, before the
    /// item takes its path.
    fn record(&mut self, received: &[Range<u64>]) -> Result<()>;
}

/// What writes a file's text for [`Store::write_atomic_with`].
pub type WriteFn<'a> = dyn Fn(&mut dyn std::io::Write) -> std::io::Result<()> + Sync + 'a;

/// Held while a run works on a mirror; released on drop (and by the
/// system when the process dies, or when it expires).
pub trait Lease: Send + std::fmt::Debug {}

/// A file found by listing a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its path relative to the root, as stored (not checked to be a
    /// [`RelPath`]).
    pub rel: String,
    /// Its size in bytes.
    pub len: u64,
}

/// A mirror's storage.
///
/// Async: every method that touches the storage is a future that runs on
/// the caller's runtime. A store whose work is blocking (a local
/// directory) moves it to the blocking pool inside its own methods, so
/// callers never wrap a store call in `spawn_blocking`; a store that talks
/// to a service awaits its requests. No store builds a runtime of its own.
/// What [`Store::open`] and [`Store::stage`] give back is read and written
/// synchronously, on a thread of the blocking pool (see [`Staged`]).
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Where the mirror is, for messages (a directory, a bucket URL).
    fn location(&self) -> String;

    /// How `rel` is named in messages (its local path, its URL).
    fn display(&self, rel: &RelPath) -> String;

    /// The stamp of the file at `rel` when it is a regular file.
    async fn stamp(&self, rel: &RelPath) -> Option<FileStamp>;

    /// The stamps of `rels`, in order ([`Store::stamp`] of each): a plan
    /// asks about every item of a mirror at once, and a store with a cost
    /// per call (a hop to the blocking pool) answers them together.
    async fn stamps(&self, rels: &[RelPath]) -> Vec<Option<FileStamp>> {
        let mut out = Vec::with_capacity(rels.len());
        for rel in rels {
            out.push(self.stamp(rel).await);
        }
        out
    }

    /// Which of `files` (a path and a size, any size: `None`) are regular
    /// files of that size, in order ([`Store::has_file`] of each, asked
    /// together through [`Store::stamps`]).
    async fn have_files(&self, files: &[(RelPath, Option<u64>)]) -> Vec<bool> {
        let rels: Vec<RelPath> = files.iter().map(|(rel, _)| rel.clone()).collect();
        let stamps = self.stamps(&rels).await;
        files
            .iter()
            .zip(stamps)
            .map(|((_, size), stamp)| stamp.is_some_and(|s| size.is_none_or(|want| want == s.len)))
            .collect()
    }

    /// Reads the regular file at `rel`; `None` when nothing is there.
    /// Anything else there (a directory, a FIFO, a symlink) is an error.
    async fn read(&self, rel: &RelPath) -> Result<Option<Vec<u8>>>;

    /// Opens the regular file at `rel` for reading (to verify an item).
    async fn open(&self, rel: &RelPath) -> Result<Box<dyn std::io::Read + Send>>;

    /// Writes `bytes` to `rel` so that a reader sees the old content or the
    /// new, never a mix; unchanged content is left alone.
    async fn write_atomic(&self, rel: &RelPath, bytes: &[u8]) -> Result<()>;

    /// [`Store::write_atomic`] of bytes given away, which a store may write
    /// without a copy (a state or the references of a large stream are
    /// megabytes).
    async fn write_atomic_owned(&self, rel: &RelPath, bytes: Vec<u8>) -> Result<()> {
        self.write_atomic(rel, &bytes).await
    }

    /// [`Store::write_atomic`] of what `write` writes (it is called once),
    /// which a store may write as it comes rather than hold whole: a state
    /// or the references of a large stream are megabytes. By default the
    /// text is gathered, then written.
    async fn write_atomic_with(&self, rel: &RelPath, write: &WriteFn<'_>) -> Result<()> {
        let mut text = Vec::new();
        write(&mut text).map_err(|e| Error::metadata(self.display(rel), e.to_string()))?;
        self.write_atomic_owned(rel, text).await
    }

    /// Staging for a download of the item at `rel`.
    async fn stage(&self, rel: &RelPath) -> Result<Box<dyn Staged>>;

    /// Removes the item at `rel` (and what is staged for it).
    async fn remove(&self, rel: &RelPath) -> Result<()>;

    /// Takes the run lock: fails at once if another run holds it, or waits
    /// for it with `wait`.
    async fn lock(&self, wait: bool) -> Result<Box<dyn Lease>>;

    /// Checks, before anything is downloaded, that the run can write where
    /// it will (the root, `.data/`). Called after [`Store::lock`], so a
    /// store whose lock is itself a write may find nothing left to check.
    async fn check_writable(&self) -> Result<()>;

    /// Free and total space where the items go, when the store can tell.
    async fn space(&self) -> Option<Space> {
        None
    }

    /// Every file under the root, once (an audit lists; a mirror run only
    /// ever reads, stats and writes single files). Stores that cannot list
    /// say so.
    async fn list(&self) -> Result<Vec<Listed>> {
        Err(Error::NotListable {
            location: self.location(),
        })
    }

    /// Bytes free where the items go, when the store can tell.
    async fn free_space(&self) -> Option<u64> {
        self.space().await.map(|s| s.free)
    }

    /// Bytes already staged for the item at `rel` by an interrupted
    /// download (to resume from); never creates anything.
    async fn staged_len(&self, _rel: &RelPath) -> u64 {
        0
    }

    /// Whether [`Store::link`] can store content under a second path
    /// without transferring it again.
    fn can_link(&self) -> bool {
        false
    }

    /// Stores the content of the item at `from` under `to` too, without
    /// transferring it: a hard link where possible, else a copy, never a
    /// symlink. `to` appears whole or not at all; what was there is
    /// replaced. Stores that cannot say [`Linked::Unsupported`] (the item
    /// is then downloaded).
    async fn link(&self, _from: &RelPath, _to: &RelPath) -> Result<Linked> {
        Ok(Linked::Unsupported)
    }

    /// Like [`Store::link`], from a local file outside the store (an
    /// entry of a [`crate::content::ContentIndex`]).
    async fn import(&self, _from: &Path, _to: &RelPath) -> Result<Linked> {
        Ok(Linked::Unsupported)
    }

    /// The local file holding the item at `rel`, when the store keeps its
    /// items in local files (to enter them in a content index).
    fn local_path(&self, _rel: &RelPath) -> Option<PathBuf> {
        None
    }

    /// The local directory holding the mirror, when the store is one (the
    /// collection of leftovers walks it: a run never lists a bucket).
    fn local_root(&self) -> Option<PathBuf> {
        None
    }

    /// Whether `rel` is a regular file of `size` bytes (any size: `None`).
    async fn has_file(&self, rel: &RelPath, size: Option<u64>) -> bool {
        self.stamp(rel)
            .await
            .is_some_and(|s| size.is_none_or(|want| want == s.len))
    }

    /// The mirrored tree of `content_id` (empty when never mirrored).
    async fn load_state(&self, content_id: &str) -> Result<Products> {
        let rel = data_rel(content_id)?;
        let Some(bytes) = self.read(&rel).await? else {
            return Ok(Products::default());
        };
        let where_ = self.display(&rel);
        match Products::parse_state(&where_, &bytes)? {
            Some(tree) => Ok(tree),
            None => Err(Error::metadata(
                &where_,
                "malformed mirror state: not an object",
            )),
        }
    }

    /// Writes the mirrored tree of `content_id` (indent 1, sorted keys).
    async fn save_state(&self, content_id: &str, tree: &Products) -> Result<()> {
        let rel = data_rel(content_id)?;
        self.write_atomic_with(&rel, &|w| tree.write_state_json(w))
            .await
    }

    /// The raw bytes of the mirrored tree of `content_id`, if any.
    async fn state_bytes(&self, content_id: &str) -> Result<Option<Vec<u8>>> {
        self.read(&data_rel(content_id)?).await
    }

    /// The stamp of the mirrored tree of `content_id`, if any.
    async fn state_stamp(&self, content_id: &str) -> Option<FileStamp> {
        self.stamp(&data_rel(content_id).ok()?).await
    }

    /// The references, duplicates removed (the reference leaves them after
    /// an interrupted run).
    async fn load_references(&self) -> Result<References> {
        let rel = data_rel(REFERENCES)?;
        let Some(bytes) = self.read(&rel).await? else {
            return Ok(References::new());
        };
        let mut refs: References = serde_json::from_slice(&bytes).map_err(|e| {
            Error::metadata(self.display(&rel), format!("malformed references: {e}"))
        })?;
        for list in refs.values_mut() {
            let mut seen = BTreeSet::new();
            list.retain(|x| seen.insert(x.clone()));
        }
        Ok(refs)
    }

    /// Writes the references (empty lists dropped; no file while there has
    /// never been anything to reference, as the reference does).
    async fn save_references(&self, refs: &References) -> Result<()> {
        let rel = data_rel(REFERENCES)?;
        if refs.values().all(Vec::is_empty) && self.stamp(&rel).await.is_none() {
            return Ok(());
        }
        let refs = NonEmptyLists(refs);
        self.write_atomic_with(&rel, &|w| crate::json::write_python_compact(&refs, w))
            .await
    }

    /// Paths whose deletion an earlier run scheduled (waiting out the
    /// delete delay, or left by an interrupted run), with when.
    async fn load_pending_deletes(&self) -> Result<PendingDeletes> {
        let rel = data_rel(PENDING_DELETES)?;
        let Some(bytes) = self.read(&rel).await? else {
            return Ok(PendingDeletes::new());
        };
        let malformed = |e: serde_json::Error| {
            Error::metadata(
                self.display(&rel),
                format!("malformed list of pending deletions: {e}; fix or remove it"),
            )
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(malformed)?;
        if value.is_array() {
            // The older format: a list of paths, without times.
            let paths: BTreeSet<String> = serde_json::from_value(value).map_err(malformed)?;
            return Ok(paths.into_iter().map(|p| (p, 0)).collect());
        }
        serde_json::from_value(value).map_err(malformed)
    }

    /// Records (or, when empty, clears) the pending deletions.
    async fn save_pending_deletes(&self, paths: &PendingDeletes) -> Result<()> {
        let rel = data_rel(PENDING_DELETES)?;
        if paths.is_empty() {
            return self.remove(&rel).await;
        }
        let text = serde_json::to_vec_pretty(paths)
            .map_err(|e| Error::metadata(self.display(&rel), e.to_string()))?;
        self.write_atomic(&rel, &text).await
    }
}

/// The path of `name` under [`DATA_DIR`], checked to be a plain file name.
pub fn data_rel(name: &str) -> Result<RelPath> {
    let unsafe_name = |reason: String| Error::UnsafePath {
        context: DATA_DIR.into(),
        path: name.into(),
        reason,
    };
    check_file_name(name).map_err(|e| unsafe_name(e.to_string()))?;
    RelPath::parse(&format!("{DATA_DIR}/{name}")).map_err(|e| unsafe_name(e.to_string()))
}
