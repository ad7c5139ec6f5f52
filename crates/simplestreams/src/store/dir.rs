//! A mirror in a local directory: never written through a symlink, never
//! outside the root; metadata written through a temporary file, fsynced and
//! renamed; items downloaded into `<path>.part` and renamed once verified;
//! emptied directories removed; the run lock an `flock` on `.data/sstream.lock`.

use super::{FileStamp, Lease, Linked, RangedStaged, Space, Staged, Store, WriteFn, data_rel};
use crate::durable::DirSyncs;
use crate::error::{Error, Result};
use crate::hash::IO_BUFFER;
use crate::layout::{DATA_DIR, LOCK, PART_SUFFIX, ranges_name, temp_name};
use crate::path::RelPath;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Seek, Write};
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Write buffer of a download: gathers the small chunks of slow links.
const WRITE_BUFFER: usize = 256 << 10;

/// Bytes written to a staged file between two starts of its writeback
/// ([`start_writeback`]): the disk writes behind the download, so the
/// flush of the commit finds little left to write.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// A mirror rooted at a local directory (created when needed).
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
    /// Every directory sync of the store's (a failed one is not hidden by
    /// a concurrent commit's: see [`DirSyncs`]).
    dir_syncs: Arc<DirSyncs>,
}

impl DirStore {
    /// A store at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DirStore {
        DirStore {
            root: root.into(),
            dir_syncs: Arc::default(),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The content ids whose state the mirror holds: the regular files
    /// under [`DATA_DIR`] with a state name ([`crate::layout::is_state_name`]),
    /// sorted. `None` when there is no [`DATA_DIR`] (nothing recorded).
    pub fn state_ids(&self) -> Result<Option<Vec<String>>> {
        let dir = self.root.join(DATA_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(dir, e)),
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| crate::layout::is_state_name(name))
            .collect();
        ids.sort();
        Ok(Some(ids))
    }

    /// [`Store::state_bytes`], blocking (for a caller outside the async
    /// pipeline, such as the server's landing page).
    pub fn state_bytes_blocking(&self, content_id: &str) -> Result<Option<Vec<u8>>> {
        self.read_blocking(&super::data_rel(content_id)?)
    }

    /// [`Store::state_stamp`], blocking.
    pub fn state_stamp_blocking(&self, content_id: &str) -> Option<FileStamp> {
        self.stamp_blocking(&super::data_rel(content_id).ok()?)
    }

    /// An [`Error::UnsafePath`] about `rel` under this store.
    fn unsafe_path(&self, rel: &RelPath, reason: String) -> Error {
        Error::UnsafePath {
            context: self.root.display().to_string(),
            path: rel.to_string(),
            reason,
        }
    }

    /// Walks the directories on the way to `rel`, refusing symlinks. With
    /// `create`, missing directories are made; without, a missing or
    /// non-directory step gives `None` (nothing there).
    fn parent_dir(&self, rel: &RelPath, create: bool) -> Result<Option<PathBuf>> {
        let verb = if create { "write" } else { "delete" };
        let mut dir = self.root.clone();
        let segments: Vec<&str> = rel.segments().collect();
        for seg in &segments[..segments.len().saturating_sub(1)] {
            dir.push(seg);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    let why = format!(
                        "{} is a symlink; refusing to {verb} through it",
                        dir.display()
                    );
                    return Err(self.unsafe_path(rel, why));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) if create => {
                    return Err(
                        self.unsafe_path(rel, format!("{} is not a directory", dir.display()))
                    );
                }
                Err(e) if e.kind() == ErrorKind::NotFound && create => {
                    self.make_dir(rel, &dir)?;
                }
                Err(e) if create => return Err(Error::io(&dir, e)),
                _ => return Ok(None),
            }
        }
        Ok(Some(dir))
    }

    /// Makes the directory `dir` on the way to `rel`. Downloads stage
    /// concurrently (on the blocking pool), so another may have made it
    /// meanwhile: that is fine when it is a directory (not a symlink).
    fn make_dir(&self, rel: &RelPath, dir: &Path) -> Result<()> {
        match fs::create_dir(dir) {
            Ok(()) => {
                // The new directory's entry must be durable before anything
                // in it is trusted: a power cut would lose it, and every
                // item under it, however well synced. When that sync fails
                // the directory is removed again (if nothing got into it
                // meanwhile), so that a later run makes and syncs it anew
                // instead of trusting an entry the disk may not hold.
                let parent = dir.parent().unwrap_or(&self.root);
                self.dir_syncs.sync(parent).inspect_err(|_| {
                    let _ = fs::remove_dir(dir);
                })
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => match fs::symlink_metadata(dir) {
                Ok(m) if m.is_dir() => Ok(()),
                _ => Err(self.unsafe_path(
                    rel,
                    format!("{} is not a directory (and not made here)", dir.display()),
                )),
            },
            Err(e) => Err(Error::io(dir, e)),
        }
    }

    /// The local path of `rel`, after making sure every directory on the
    /// way exists and none is a symlink, and that `rel` itself is not one.
    fn prepare(&self, rel: &RelPath) -> Result<PathBuf> {
        fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let path = rel.under(&self.root);
        self.parent_dir(rel, true)?;
        if let Ok(m) = fs::symlink_metadata(&path)
            && m.file_type().is_symlink()
        {
            let why = format!(
                "{} is a symlink; refusing to write through it",
                path.display()
            );
            return Err(self.unsafe_path(rel, why));
        }
        Ok(path)
    }

    /// Opens the regular file at `path` for reading without blocking on (or
    /// following) anything else planted there: a FIFO, a device, a symlink.
    fn open_regular(path: &Path) -> std::io::Result<File> {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(path)?;
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok(file)
    }

    /// Reads the regular file at `path` (`None` when absent).
    fn read_regular(path: &Path) -> Result<Option<Vec<u8>>> {
        let mut file = match Self::open_regular(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                let e = std::io::Error::other("a symlink, not a regular file");
                return Err(Error::io(path, e));
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
        Ok(Some(bytes))
    }

    /// Writes `bytes` to `path` through a temporary file in the same
    /// directory (which must not exist): created exclusively, fsynced,
    /// renamed, directory fsynced.
    fn replace(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.replace_with(path, &mut |w| w.write_all(bytes), false)
    }

    /// [`DirStore::replace`] of what `write` writes, written to the
    /// temporary file as it comes. With `keep_unchanged`, a file already at
    /// `path` with the same bytes is left alone (its mtime too) and the
    /// temporary file removed.
    fn replace_with(
        &self,
        path: &Path,
        write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
        keep_unchanged: bool,
    ) -> Result<()> {
        let tmp = path.with_file_name(temp_name(&file_name(path)));
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let result = (|| {
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| Error::io(&tmp, e))?;
            let mut out = std::io::BufWriter::with_capacity(IO_BUFFER, f);
            write(&mut out).map_err(|e| Error::io(&tmp, e))?;
            let f = out
                .into_inner()
                .map_err(|e| Error::io(&tmp, e.into_error()))?;
            if keep_unchanged && same_bytes(&f, path) {
                return fs::remove_file(&tmp).map_err(|e| Error::io(&tmp, e));
            }
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
            fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
            self.dir_syncs.sync(&dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// Runs `work`, which blocks, on this thread: a multi-threaded runtime is
/// told so (its other tasks move to other workers); elsewhere (a
/// current-thread runtime, as in tests, or none) it just runs.
fn in_place<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Whether the regular file at `path` holds the bytes of `written` (read
/// from its start), compared a buffer at a time.
fn same_bytes(written: &File, path: &Path) -> bool {
    let Ok(len) = written.metadata().map(|m| m.len()) else {
        return false;
    };
    let mut buf = vec![0; COMPARE_BUFFER];
    same_content(path, len, |at, theirs| {
        let ours = &mut buf[..theirs.len()];
        written.read_exact_at(ours, at).is_ok() && ours == theirs
    })
}

/// Whether the regular file at `path` holds exactly `bytes`.
fn holds(path: &Path, bytes: &[u8]) -> bool {
    same_content(path, bytes.len() as u64, |at, theirs| {
        bytes[at as usize..].starts_with(theirs)
    })
}

/// The read buffer of [`same_content`].
const COMPARE_BUFFER: usize = 64 << 10;

/// Whether the regular file at `path` is `len` bytes long and each of its
/// pieces, read in order, is what `matches(offset, piece)` expects.
fn same_content(path: &Path, len: u64, mut matches: impl FnMut(u64, &[u8]) -> bool) -> bool {
    let Ok(mut file) = DirStore::open_regular(path) else {
        return false;
    };
    if file.metadata().map(|m| m.len()).ok() != Some(len) {
        return false;
    }
    let mut buf = vec![0; COMPARE_BUFFER];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(COMPARE_BUFFER as u64) as usize;
        if file.read_exact(&mut buf[..n]).is_err() || !matches(at, &buf[..n]) {
            return false;
        }
        at += n as u64;
    }
    true
}

/// The blocking work of the store, each run on the blocking pool by the
/// [`Store`] methods of the same name (and `read`, `write_atomic` and
/// `lock` by synchronous callers that own a [`DirStore`]).
impl DirStore {
    fn stamp_blocking(&self, rel: &RelPath) -> Option<FileStamp> {
        file_stamp(&rel.under(&self.root))
    }

    /// [`Store::read`], blocking.
    pub fn read_blocking(&self, rel: &RelPath) -> Result<Option<Vec<u8>>> {
        Self::read_regular(&rel.under(&self.root))
    }

    fn open_blocking(&self, rel: &RelPath) -> Result<Box<dyn Read + Send>> {
        let path = rel.under(&self.root);
        let file = Self::open_regular(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Box::new(file))
    }

    /// [`Store::write_atomic`], blocking. Unchanged content is left alone
    /// (its mtime too). A temporary file left by a killed run is removed
    /// first (the run lock makes its name ours).
    pub fn write_atomic_blocking(&self, rel: &RelPath, bytes: &[u8]) -> Result<()> {
        let path = self.prepare(rel)?;
        let tmp = path.with_file_name(temp_name(&file_name(&path)));
        remove_if_present(&tmp)?;
        if holds(&path, bytes) {
            return Ok(());
        }
        self.replace(&path, bytes)
    }

    /// [`Store::write_atomic_with`], blocking, as
    /// [`DirStore::write_atomic_blocking`] writes (unchanged content left
    /// alone).
    fn write_atomic_with_blocking(&self, rel: &RelPath, write: &WriteFn<'_>) -> Result<()> {
        let path = self.prepare(rel)?;
        remove_if_present(&path.with_file_name(temp_name(&file_name(&path))))?;
        self.replace_with(&path, &mut |w| write(w), true)
    }

    fn stage_blocking(&self, rel: &RelPath) -> Result<Box<dyn Staged>> {
        let dest = self.prepare(rel)?;
        Ok(Box::new(PartFile::new(dest, self.dir_syncs.clone())))
    }

    /// Removes the file at `rel` (and a stale `.part`), then every parent
    /// directory that is left empty, up to the root (`.data/` stays).
    /// Refuses (and removes nothing) when a directory on the way is a
    /// symlink: a deletion must not reach outside the mirror.
    fn remove_blocking(&self, rel: &RelPath) -> Result<()> {
        if self.parent_dir(rel, false)?.is_none() {
            return Ok(()); // nothing there: nothing to remove
        }
        let path = rel.under(&self.root);
        let tmp = path.with_file_name(temp_name(&file_name(&path)));
        let ranges = path.with_file_name(ranges_name(&file_name(&path)));
        for p in [part_path(&path), ranges, tmp, path.clone()] {
            remove_if_present(&p)?;
        }
        let mut gone: Option<PathBuf> = None;
        for dir in rel.ancestors() {
            if dir == DATA_DIR {
                break;
            }
            let dir = self.root.join(dir);
            if fs::remove_dir(&dir).is_err() {
                break;
            }
            gone = Some(dir);
        }
        // The removal is made durable before the run records it as done (a
        // pending deletion cleared): a power cut would otherwise bring the
        // file back with nothing naming it. The directory that lost the
        // entry is synced: the file's own, or the parent of the last
        // directory emptied and removed.
        let emptied = gone.as_deref().unwrap_or(&path);
        match emptied.parent() {
            Some(parent) => self.dir_syncs.sync(parent),
            None => Ok(()),
        }
    }

    /// [`Store::lock`], blocking (with `wait`, until the other run ends). A
    /// lock left by a killed run is free (the kernel releases it with the
    /// process).
    pub fn lock_blocking(&self, wait: bool) -> Result<Box<dyn Lease>> {
        let rel = data_rel(LOCK)?;
        let path = self.prepare(&rel)?;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(Error::io(
                &path,
                std::io::Error::other("not a regular file"),
            ));
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) if wait => {
                log::info!("{}: waiting for another run to finish", path.display());
                file.lock().map_err(|e| Error::io(&path, e))?;
            }
            Err(fs::TryLockError::WouldBlock) => {
                let who = crate::layout::lock_holder(&path);
                return Err(Error::Locked {
                    path,
                    reason: format!(
                        "another run is mirroring into this directory{who}; use --wait to wait for it"
                    ),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let _ = file.set_len(0);
        let _ = (&file).write_all(std::process::id().to_string().as_bytes());
        Ok(Box::new(FileLock { _file: file }))
    }

    fn check_writable_blocking(&self) -> Result<()> {
        for dir in [self.root.clone(), self.root.join(DATA_DIR)] {
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let probe = dir.join(temp_name("sstream-write-check"));
            let _ = fs::remove_file(&probe);
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .map_err(|e| {
                    Error::io(
                        &dir,
                        std::io::Error::new(e.kind(), format!("not writable: {e}")),
                    )
                })?;
            let _ = fs::remove_file(&probe);
        }
        Ok(())
    }

    /// From `statvfs` on the root (or, before the first run, its nearest
    /// existing parent); the filesystem is named by its mount point.
    fn space_blocking(&self) -> Option<Space> {
        let dir = self.root.ancestors().find(|d| d.is_dir())?;
        let st = statvfs(dir)?;
        Some(Space {
            free: st.f_bavail.saturating_mul(st.f_frsize),
            total: st.f_blocks.saturating_mul(st.f_frsize),
            filesystem: mount_point(dir).display().to_string(),
        })
    }

    fn staged_len_blocking(&self, rel: &RelPath) -> u64 {
        fs::symlink_metadata(part_path(&rel.under(&self.root)))
            .map(|m| if m.is_file() { m.len() } else { 0 })
            .unwrap_or(0)
    }

    /// Refuses a `from` that is not a regular file reached without a
    /// symlink.
    fn link_blocking(&self, from: &RelPath, to: &RelPath) -> Result<Linked> {
        let source = rel_file(self, from)?;
        self.import_blocking(&source, to)
    }

    /// A hard link made under the temporary name of `to`, then renamed
    /// into place; a copy (fsynced) where the filesystem cannot link (across
    /// filesystems, too many links, no hard links at all). A stale `.part`
    /// of `to` goes.
    fn import_blocking(&self, from: &Path, to: &RelPath) -> Result<Linked> {
        let dest = self.prepare(to)?;
        let source = fs::symlink_metadata(from).map_err(|e| Error::io(from, e))?;
        if !source.is_file() {
            let e = std::io::Error::other("not a regular file");
            return Err(Error::io(from, e));
        }
        if let Ok(there) = fs::symlink_metadata(&dest)
            && (there.dev(), there.ino()) == (source.dev(), source.ino())
        {
            return Ok(Linked::HardLink);
        }
        let tmp = dest.with_file_name(temp_name(&file_name(&dest)));
        remove_if_present(&tmp)?;
        let result = (|| {
            let how = match fs::hard_link(from, &tmp) {
                Ok(()) => Linked::HardLink,
                Err(e) if copy_instead(&e) => {
                    copy_file(from, &tmp)?;
                    Linked::Copy
                }
                Err(e) => return Err(Error::io(&tmp, e)),
            };
            let made = fs::symlink_metadata(&tmp).map_err(|e| Error::io(&tmp, e))?;
            let same = (made.dev(), made.ino()) == (source.dev(), source.ino());
            if !made.is_file() || (how == Linked::HardLink && !same) || made.len() != source.len() {
                let e = std::io::Error::other("changed while being linked");
                return Err(Error::io(from, e));
            }
            fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
            Ok(how)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
            return result;
        }
        remove_if_present(&part_path(&dest))?;
        if let Some(dir) = dest.parent() {
            // As a commit's: an item whose entry may not be durable is not
            // left under its name.
            self.dir_syncs.sync(dir).inspect_err(|_| {
                let _ = fs::remove_file(&dest);
            })?;
        }
        result
    }
}

impl DirStore {
    /// Runs `work` on the blocking pool: the one place the store's file
    /// work leaves the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&DirStore) -> T + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || work(&store)).await {
            Ok(value) => Ok(value),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::io(&self.root, std::io::Error::other(e))),
        }
    }
}

#[async_trait::async_trait]
impl Store for DirStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn display(&self, rel: &RelPath) -> String {
        rel.under(&self.root).display().to_string()
    }

    async fn stamp(&self, rel: &RelPath) -> Option<FileStamp> {
        let rel = rel.clone();
        self.blocking(move |s| s.stamp_blocking(&rel))
            .await
            .ok()
            .flatten()
    }

    /// One trip to the blocking pool for them all.
    async fn stamps(&self, rels: &[RelPath]) -> Vec<Option<FileStamp>> {
        let rels = rels.to_vec();
        let count = rels.len();
        self.blocking(move |s| rels.iter().map(|rel| s.stamp_blocking(rel)).collect())
            .await
            .unwrap_or_else(|_| vec![None; count])
    }

    async fn read(&self, rel: &RelPath) -> Result<Option<Vec<u8>>> {
        let rel = rel.clone();
        self.blocking(move |s| s.read_blocking(&rel)).await?
    }

    async fn open(&self, rel: &RelPath) -> Result<Box<dyn Read + Send>> {
        let rel = rel.clone();
        self.blocking(move |s| s.open_blocking(&rel)).await?
    }

    /// In place ([`in_place`]): the bytes are borrowed, and a products
    /// document is megabytes not to be copied.
    async fn write_atomic(&self, rel: &RelPath, bytes: &[u8]) -> Result<()> {
        in_place(|| self.write_atomic_blocking(rel, bytes))
    }

    async fn write_atomic_owned(&self, rel: &RelPath, bytes: Vec<u8>) -> Result<()> {
        let rel = rel.clone();
        self.blocking(move |s| s.write_atomic_blocking(&rel, &bytes))
            .await?
    }

    /// Written straight into the temporary file as it comes (megabytes of
    /// a state are never held whole). What writes is borrowed, so the work
    /// runs in place ([`in_place`]), not on the blocking pool.
    async fn write_atomic_with(&self, rel: &RelPath, write: &WriteFn<'_>) -> Result<()> {
        in_place(|| self.write_atomic_with_blocking(rel, write))
    }

    async fn stage(&self, rel: &RelPath) -> Result<Box<dyn Staged>> {
        let rel = rel.clone();
        self.blocking(move |s| s.stage_blocking(&rel)).await?
    }

    async fn remove(&self, rel: &RelPath) -> Result<()> {
        let rel = rel.clone();
        self.blocking(move |s| s.remove_blocking(&rel)).await?
    }

    async fn lock(&self, wait: bool) -> Result<Box<dyn Lease>> {
        self.blocking(move |s| s.lock_blocking(wait)).await?
    }

    async fn check_writable(&self) -> Result<()> {
        self.blocking(DirStore::check_writable_blocking).await?
    }

    async fn space(&self) -> Option<Space> {
        self.blocking(DirStore::space_blocking).await.ok().flatten()
    }

    async fn staged_len(&self, rel: &RelPath) -> u64 {
        let rel = rel.clone();
        self.blocking(move |s| s.staged_len_blocking(&rel))
            .await
            .unwrap_or(0)
    }

    fn can_link(&self) -> bool {
        true
    }

    async fn link(&self, from: &RelPath, to: &RelPath) -> Result<Linked> {
        let (from, to) = (from.clone(), to.clone());
        self.blocking(move |s| s.link_blocking(&from, &to)).await?
    }

    async fn import(&self, from: &Path, to: &RelPath) -> Result<Linked> {
        let (from, to) = (from.to_owned(), to.clone());
        self.blocking(move |s| s.import_blocking(&from, &to))
            .await?
    }

    fn local_path(&self, rel: &RelPath) -> Option<PathBuf> {
        rel_file(self, rel).ok()
    }

    fn local_root(&self) -> Option<PathBuf> {
        Some(self.root.clone())
    }
}

/// The local path of the regular file at `rel`, reached without a symlink.
fn rel_file(store: &DirStore, rel: &RelPath) -> Result<PathBuf> {
    let path = rel.under(&store.root);
    let not_regular = || Error::io(&path, std::io::Error::other("not a regular file"));
    if store.parent_dir(rel, false)?.is_none() {
        return Err(not_regular());
    }
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => Ok(path),
        Ok(_) => Err(not_regular()),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Whether a failed hard link should become a copy: the filesystem cannot
/// link these two names (another filesystem, too many links, no hard
/// links), as opposed to a real failure (no space, no permission to write).
fn copy_instead(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV | libc::EMLINK | libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS)
    )
}

/// Copies the regular file `from` to `to` (created exclusively) and syncs
/// it.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let mut src = DirStore::open_regular(from).map_err(|e| Error::io(from, e))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| Error::io(to, e))?;
    std::io::copy(&mut src, &mut dst).map_err(|e| Error::io(to, e))?;
    dst.sync_all().map_err(|e| Error::io(to, e))
}

/// `statvfs` of `dir`.
fn statvfs(dir: &Path) -> Option<libc::statvfs> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `st` a buffer of the
    // right type; statvfs fills it on success.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so `st` is initialised.
    Some(unsafe { st.assume_init() })
}

/// The mount point of the filesystem holding `dir`: its highest ancestor on
/// the same device.
fn mount_point(dir: &Path) -> PathBuf {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let Ok(dev) = fs::metadata(&dir).map(|m| m.dev()) else {
        return dir;
    };
    let mut top = dir.clone();
    for parent in dir.ancestors().skip(1) {
        match fs::metadata(parent) {
            Ok(m) if m.dev() == dev => top = parent.to_path_buf(),
            _ => break,
        }
    }
    top
}

/// The `flock` of a run.
#[derive(Debug)]
struct FileLock {
    _file: File,
}

impl Lease for FileLock {}

/// An item staged as `<path>.part` beside its final path, and, while it is
/// received in byte ranges, the record of those ranges beside it
/// ([`ranges_name`]).
struct PartFile {
    dest: PathBuf,
    part: PathBuf,
    record: PathBuf,
    mode: Mode,
    /// Bytes written since the writeback was last started.
    unflushed: u64,
    /// The store's directory syncs.
    dir_syncs: Arc<DirSyncs>,
}

/// How a staged file is open.
enum Mode {
    /// Not yet begun.
    Closed,
    /// Appending ([`Staged::begin`]).
    Append(std::io::BufWriter<File>),
    /// Written at offsets ([`RangedStaged::open_ranges`]) within `len`
    /// bytes (the file grows as they are written: a length from metadata
    /// is not trusted to size anything).
    Ranged { file: File, len: u64 },
}

/// The record of the ranges received of a staged file of `len` bytes.
#[derive(serde::Serialize, serde::Deserialize)]
struct RangeRecord {
    len: u64,
    received: Vec<(u64, u64)>,
}

impl PartFile {
    fn new(dest: PathBuf, dir_syncs: Arc<DirSyncs>) -> PartFile {
        let record = dest.with_file_name(ranges_name(&file_name(&dest)));
        PartFile {
            part: part_path(&dest),
            dest,
            record,
            mode: Mode::Closed,
            unflushed: 0,
            dir_syncs,
        }
    }

    /// Counts `written` bytes, and starts the writeback of what the file
    /// holds every [`WRITEBACK_EVERY`] bytes.
    fn wrote(&mut self, written: usize) {
        self.unflushed += written as u64;
        if self.unflushed >= WRITEBACK_EVERY {
            self.unflushed = 0;
            if let Some(file) = self.file() {
                start_writeback(file);
            }
        }
    }

    /// The open staged file, if any (what a buffered writer holds is not
    /// in it yet).
    fn file(&self) -> Option<&File> {
        match &self.mode {
            Mode::Append(w) => Some(w.get_ref()),
            Mode::Ranged { file, .. } => Some(file),
            Mode::Closed => None,
        }
    }

    /// Makes the staged bytes durable: what is buffered is written, then
    /// the file is fsynced (opened again when it is not open).
    ///
    /// A failed `fsync` discards the staged file (and its record of
    /// ranges): the kernel may have dropped the unwritten bytes while the
    /// page cache still shows them, so a later run of the same boot would
    /// verify the cached bytes, fsync with nothing left to write, and
    /// trust what the disk may not hold. The next run downloads it anew.
    fn make_durable(&mut self) -> Result<()> {
        let part = &self.part;
        let synced = match &mut self.mode {
            Mode::Append(w) => {
                w.flush().map_err(|e| Error::io(part, e))?;
                w.get_ref().sync_all()
            }
            Mode::Ranged { file, .. } => file.sync_all(),
            Mode::Closed => open_existing_part(part)?.sync_all(),
        };
        synced.map_err(|e| {
            let _ = fs::remove_file(&self.part);
            let _ = fs::remove_file(&self.record);
            Error::io(&self.part, e)
        })
    }

    fn not_open(&self, how: &str) -> Error {
        Error::io(
            &self.part,
            std::io::Error::other(format!("staging file not open {how}")),
        )
    }

    /// The length of the `.part` when it is a regular file.
    fn part_len(&self) -> Option<u64> {
        fs::symlink_metadata(&self.part)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// The record of ranges: `None` when there is none, `Some(None)` when it
    /// cannot be trusted (unreadable, malformed, overlapping ranges).
    fn load_record(&self) -> Option<Option<RangeRecord>> {
        let bytes = match DirStore::read_regular(&self.record) {
            Ok(None) => return None,
            Ok(Some(b)) => b,
            Err(_) => return Some(None),
        };
        let record: Option<RangeRecord> = serde_json::from_slice(&bytes).ok();
        Some(record.filter(|r| {
            let mut at = 0;
            r.received.iter().all(|&(start, end)| {
                let ok = start >= at && start < end && end <= r.len;
                at = end;
                ok
            })
        }))
    }

    /// Runs `last` (a rename, a removal) on the blocking pool, where the
    /// file is closed after it.
    async fn finish(
        mut self: Box<Self>,
        last: impl FnOnce(&mut PartFile) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let part = self.part.clone();
        match tokio::task::spawn_blocking(move || last(&mut self)).await {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::io(&part, std::io::Error::other(e))),
        }
    }

    /// Writes the record of ranges through a temporary file and a rename
    /// (not fsynced: see [`RangedStaged`]).
    fn save_record(&self, len: u64, received: &[Range<u64>]) -> Result<()> {
        let record = RangeRecord {
            len,
            received: received.iter().map(|r| (r.start, r.end)).collect(),
        };
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| Error::io(&self.record, std::io::Error::other(e)))?;
        let tmp = self
            .record
            .with_file_name(temp_name(&file_name(&self.record)));
        remove_if_present(&tmp)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &self.record).map_err(|e| Error::io(&self.record, e))
    }
}

#[async_trait::async_trait]
impl Staged for PartFile {
    fn staged_len(&self) -> u64 {
        let Some(len) = self.part_len() else {
            return 0;
        };
        match self.load_record() {
            None => len,
            Some(None) => 0,
            Some(Some(r)) => match r.received.first() {
                Some(&(0, end)) => end.min(len),
                _ => 0,
            },
        }
    }

    fn begin(&mut self, keep: u64, consume: &mut dyn FnMut(&[u8])) -> Result<()> {
        self.mode = Mode::Closed;
        let mut file = open_part(&self.part, keep)?;
        remove_if_present(&self.record)?;
        if keep > 0 {
            hash_prefix(&mut file, keep, consume).map_err(|e| Error::io(&self.part, e))?;
        }
        self.mode = Mode::Append(std::io::BufWriter::with_capacity(WRITE_BUFFER, file));
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.mode {
            Mode::Append(w) => w.write_all(data).map_err(|e| Error::io(&self.part, e))?,
            _ => return Err(self.not_open("for appending")),
        }
        self.wrote(data.len());
        Ok(())
    }

    /// Writes out what is buffered and starts the writeback of the rest:
    /// the durable flush is the commit's.
    fn sync(&mut self) -> Result<()> {
        let part = &self.part;
        if let Mode::Append(w) = &mut self.mode {
            w.flush().map_err(|e| Error::io(part, e))?;
        }
        let file = self.file().ok_or_else(|| self.not_open("for writing"))?;
        start_writeback(file);
        self.unflushed = 0;
        Ok(())
    }

    /// The bytes are made durable (fsynced) before anything else: only
    /// then may the file have the item's name, which the next run trusts
    /// by its size. The record of ranges goes next: a complete `.part`
    /// without one is verified as it is by the next run. The directory is
    /// fsynced after the rename: until then a power cut can undo it, and a
    /// state published next would name an item that is not there. When that
    /// fsync fails the item is taken off its path again (the rename may
    /// never reach the disk, and a later run would trust the name): the
    /// commit fails, and the next run downloads the item anew.
    async fn commit(self: Box<Self>) -> Result<()> {
        self.finish(|p| {
            p.make_durable()?;
            remove_if_present(&p.record)?;
            fs::rename(&p.part, &p.dest).map_err(|e| Error::io(&p.dest, e))?;
            let Some(dir) = p.dest.parent() else {
                return Ok(());
            };
            p.dir_syncs.sync(dir).inspect_err(|_| {
                let _ = fs::remove_file(&p.dest);
            })
        })
        .await
    }

    async fn discard(self: Box<Self>) -> Result<()> {
        self.finish(|p| {
            remove_if_present(&p.part)?;
            remove_if_present(&p.record)
        })
        .await
    }

    fn describe(&self) -> String {
        self.part.display().to_string()
    }

    fn ranged(&mut self) -> Option<&mut dyn RangedStaged> {
        Some(self)
    }
}

impl RangedStaged for PartFile {
    /// The record is written before anything is written at an offset, so a
    /// `.part` with more than its received prefix always has one.
    fn open_ranges(&mut self, len: u64) -> Result<Vec<Range<u64>>> {
        self.mode = Mode::Closed;
        let have = self.part_len();
        let received: Vec<Range<u64>> = match (self.load_record(), have) {
            (_, None) => Vec::new(),
            (Some(Some(r)), Some(have)) if r.len == len => r
                .received
                .iter()
                .filter(|&&(start, _)| start < have)
                .map(|&(start, end)| start..end.min(have))
                .collect(),
            (None, Some(have)) if have <= len && have > 0 => std::iter::once(0..have).collect(),
            _ => Vec::new(),
        };
        self.save_record(len, &received)?;
        let file = if received.is_empty() {
            open_part(&self.part, 0)?
        } else {
            open_existing_part(&self.part)?
        };
        self.mode = Mode::Ranged { file, len };
        Ok(received)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let Mode::Ranged { file, len } = &self.mode else {
            return Err(self.not_open("for ranges"));
        };
        if offset.saturating_add(data.len() as u64) > *len {
            let why = format!("a write at {offset} past the {len} bytes of the item");
            return Err(Error::io(&self.part, std::io::Error::other(why)));
        }
        file.write_all_at(data, offset)
            .map_err(|e| Error::io(&self.part, e))?;
        self.wrote(data.len());
        Ok(())
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match &self.mode {
            Mode::Ranged { file, .. } => file
                .read_exact_at(buf, offset)
                .map_err(|e| Error::io(&self.part, e)),
            _ => Err(self.not_open("for ranges")),
        }
    }

    fn record(&mut self, received: &[Range<u64>]) -> Result<()> {
        let Mode::Ranged { len, .. } = &self.mode else {
            return Err(self.not_open("for ranges"));
        };
        self.save_record(*len, received)
    }
}

/// Feeds the first `len` bytes of `file` to `consume`, leaving the file
/// positioned after them.
fn hash_prefix(file: &mut File, len: u64, consume: &mut dyn FnMut(&[u8])) -> std::io::Result<()> {
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut buf = vec![0u8; crate::hash::IO_BUFFER];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "staging file shorter than expected",
            ));
        }
        consume(&buf[..n]);
        left -= n as u64;
    }
    file.seek(std::io::SeekFrom::Start(len))?;
    Ok(())
}

/// Opens a `.part` file for writing, keeping its first `keep` bytes. A
/// fresh one (`keep == 0`) replaces whatever is there (a symlink is
/// removed, not followed) and is created exclusively; an existing one must
/// be the regular file that was looked at.
fn open_part(path: &Path, keep: u64) -> Result<File> {
    if keep == 0 {
        remove_if_present(path)?;
        return fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io(path, e));
    }
    let file = open_existing_part(path)?;
    file.set_len(keep).map_err(|e| Error::io(path, e))?;
    Ok(file)
}

/// Opens the existing `.part` file at `path` for reading and writing, as it
/// is: it must be the regular file that was looked at (no symlink followed,
/// nothing swapped in between).
fn open_existing_part(path: &Path) -> Result<File> {
    let unsafe_part = |reason: &str| Error::UnsafePath {
        context: "download".into(),
        path: path.display().to_string(),
        reason: reason.into(),
    };
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true);
    let before = fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    if !before.is_file() {
        return Err(unsafe_part("not a regular file"));
    }
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let after = file.metadata().map_err(|e| Error::io(path, e))?;
    if (after.dev(), after.ino()) != (before.dev(), before.ino()) {
        return Err(unsafe_part("replaced while being opened"));
    }
    if !after.is_file() {
        return Err(unsafe_part("not a regular file"));
    }
    Ok(file)
}

/// The `.part` file a download of `dest` writes to.
fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(PART_SUFFIX);
    PathBuf::from(name)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The stamp of the file at `path`, if it is a regular file.
fn file_stamp(path: &Path) -> Option<FileStamp> {
    let m = fs::symlink_metadata(path).ok()?;
    if !m.is_file() {
        return None;
    }
    let mtime_ns = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(FileStamp {
        len: m.len(),
        mtime_ns,
        ino: m.ino(),
    })
}

/// Starts writing the dirty pages of `file` to the disk, without waiting
/// for them (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): it makes nothing
/// durable (no metadata, no disk cache flush; the commit's `fsync` does),
/// it only spreads the writing over the download. A file system that
/// cannot (an error) just leaves it all to the `fsync`.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; offset 0 and length 0 mean the
    // whole file; the call only schedules I/O.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Elsewhere, the commit's `fsync` writes it all.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File) {}

/// Removes a file (or a symlink, not its target) if it exists.
fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::format::Products;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[tokio::test]
    async fn writes_atomically_and_removes_empty_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        store.write_atomic(&rel("a/b/c/file"), b"x").await.unwrap();
        store.write_atomic(&rel("a/keep"), b"y").await.unwrap();
        assert_eq!(fs::read(dir.path().join("a/b/c/file")).unwrap(), b"x");
        store.remove(&rel("a/b/c/file")).await.unwrap();
        assert!(!dir.path().join("a/b").exists());
        assert!(dir.path().join("a/keep").exists());
    }

    /// Written as it comes, on either runtime; the same text again (given
    /// whole or written piece by piece) leaves the file alone, another
    /// text of the same length replaces it; no temporary file stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn written_text_replaces_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        let file = dir.path().join(".data/state");
        let pieces = |text: &'static [u8]| {
            move |w: &mut dyn Write| text.chunks(3).try_for_each(|c| w.write_all(c))
        };
        store
            .write_atomic_with(&rel(".data/state"), &pieces(b"0123456789"))
            .await
            .unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"0123456789");
        let ino = fs::metadata(&file).unwrap().ino();
        store
            .write_atomic_with(&rel(".data/state"), &pieces(b"0123456789"))
            .await
            .unwrap();
        store
            .write_atomic(&rel(".data/state"), b"0123456789")
            .await
            .unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().ino(),
            ino,
            "unchanged: left alone"
        );
        store
            .write_atomic_with(&rel(".data/state"), &pieces(b"0123456780"))
            .await
            .unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"0123456780");
        assert_ne!(fs::metadata(&file).unwrap().ino(), ino, "changed: replaced");
        let names: Vec<_> = fs::read_dir(dir.path().join(".data"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state"], "no temporary file left");
    }

    #[tokio::test]
    async fn refuses_symlinked_directories() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("evil")).unwrap();
        let store = DirStore::new(dir.path());
        let err = store
            .write_atomic(&rel("evil/x"), b"x")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("symlink"), "{err}");
        assert!(!outside.path().join("x").exists());
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("f")).unwrap();
        assert!(store.stage(&rel("f")).await.is_err());
        assert!(
            store.read(&rel("f")).await.is_err(),
            "a symlink is not read"
        );
    }

    #[tokio::test]
    async fn a_fifo_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("index.sjson");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let store = DirStore::new(dir.path());
        let err = store
            .read(&rel("index.sjson"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
        assert!(store.open(&rel("index.sjson")).await.is_err());
    }

    #[tokio::test]
    async fn references_heal_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(".data")).unwrap();
        fs::write(
            dir.path().join(".data/references.json"),
            r#"{"p": ["a", "b", "a"], "q": []}"#,
        )
        .unwrap();
        let store = DirStore::new(dir.path());
        let refs = store.load_references().await.unwrap();
        assert_eq!(refs["p"], ["a", "b"]);
        store.save_references(&refs).await.unwrap();
        let back = store.load_references().await.unwrap();
        assert!(!back.contains_key("q"));
        let text = fs::read_to_string(dir.path().join(".data/references.json")).unwrap();
        assert_eq!(text, r#"{"p": ["a", "b"]}"#);
    }

    #[tokio::test]
    async fn corrupt_pending_deletes_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(".data")).unwrap();
        let file = dir.path().join(".data/sstream-pending-deletes.json");
        fs::write(&file, "[\"a\", ").unwrap();
        let store = DirStore::new(dir.path());
        let err = store.load_pending_deletes().await.unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains("pending deletions"), "{err}");
    }

    #[tokio::test]
    async fn second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        let held = store.lock(false).await.unwrap();
        let err = store.lock(false).await.unwrap_err().to_string();
        assert!(err.contains("another run"), "{err}");
        drop(held);
        store.lock(false).await.unwrap();
    }

    /// Downloads stage at once into directories none of them has made
    /// yet: each finds the directories made, whoever made them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_staging_makes_the_directories_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        for round in 0..20 {
            let staging = (0..16).map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let item = rel(&format!("r{round}/a/b/c/item{i}"));
                    store.stage(&item).await.map(|_| ())
                })
            });
            for staged in futures_util::future::join_all(staging).await {
                staged.unwrap().unwrap();
            }
        }
    }

    #[tokio::test]
    async fn staged_items_resume_and_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        let mut staged = store.stage(&rel("a/item")).await.unwrap();
        staged.begin(0, &mut |_| {}).unwrap();
        staged.write(b"hello ").unwrap();
        staged.sync().unwrap();
        drop(staged);
        assert!(!store.has_file(&rel("a/item"), None).await);
        let mut staged = store.stage(&rel("a/item")).await.unwrap();
        assert_eq!(staged.staged_len(), 6);
        let mut seen = Vec::new();
        staged.begin(6, &mut |b| seen.extend_from_slice(b)).unwrap();
        assert_eq!(seen, b"hello ");
        staged.write(b"world").unwrap();
        staged.sync().unwrap();
        staged.commit().await.unwrap();
        assert_eq!(
            store.read(&rel("a/item")).await.unwrap().unwrap(),
            b"hello world"
        );
        assert!(!dir.path().join("a/item.part").exists());
    }

    #[tokio::test]
    async fn ranges_received_are_recorded_and_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        let record = dir.path().join("a/.item.part.sstream-tmp");
        let mut staged = store.stage(&rel("a/item")).await.unwrap();
        let r = staged.ranged().unwrap();
        assert_eq!(r.open_ranges(10).unwrap(), Vec::<Range<u64>>::new());
        r.write_at(0, b"he").unwrap();
        r.write_at(6, b"wor").unwrap();
        r.record(&[0..2, 6..9]).unwrap();
        drop(staged);
        assert!(record.is_file());

        // The next attempt gets the ranges back; the prefix is what one
        // connection would resume after.
        let mut staged = store.stage(&rel("a/item")).await.unwrap();
        assert_eq!(staged.staged_len(), 2);
        let r = staged.ranged().unwrap();
        assert_eq!(r.open_ranges(10).unwrap(), vec![0..2, 6..9]);
        r.write_at(2, b"llo ").unwrap();
        r.write_at(9, b"d").unwrap();
        let mut back = [0u8; 10];
        r.read_at(0, &mut back).unwrap();
        assert_eq!(&back, b"hello word");
        r.record(&[0..10]).unwrap();
        staged.sync().unwrap();
        staged.commit().await.unwrap();
        assert_eq!(
            store.read(&rel("a/item")).await.unwrap().unwrap(),
            b"hello word"
        );
        assert!(!record.exists(), "the record goes with the commit");

        // Ranges recorded for another length are not trusted.
        let mut staged = store.stage(&rel("a/other")).await.unwrap();
        let r = staged.ranged().unwrap();
        r.open_ranges(8).unwrap();
        r.write_at(0, b"abcd").unwrap();
        r.record(&[0..4]).unwrap();
        assert_eq!(r.open_ranges(9).unwrap(), Vec::<Range<u64>>::new());
        drop(staged);

        // An appended prefix without a record is received from the start;
        // going back to appending drops the record.
        let mut staged = store.stage(&rel("a/third")).await.unwrap();
        staged.begin(0, &mut |_| {}).unwrap();
        staged.write(b"abc").unwrap();
        staged.sync().unwrap();
        let r = staged.ranged().unwrap();
        assert_eq!(r.open_ranges(6).unwrap(), vec![0..3]);
        r.write_at(4, b"e").unwrap();
        r.record(&[0..3, 4..5]).unwrap();
        let mut seen = Vec::new();
        staged.begin(3, &mut |b| seen.extend_from_slice(b)).unwrap();
        assert_eq!(seen, b"abc");
        assert!(!dir.path().join("a/.third.part.sstream-tmp").exists());
        assert_eq!(staged.staged_len(), 3);
        drop(staged);
        store.remove(&rel("a/third")).await.unwrap();
        assert!(!dir.path().join("a/third.part").exists());
    }

    #[tokio::test]
    async fn state_round_trips_with_indent_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        let doc = r#"{"format":"products:1.0","content_id":"c:1","products":{"p":{"arch":"amd64","versions":{"1":{"items":{"i":{"path":"x","size":1}}}}}}}"#;
        let tree = Products::parse("u", doc.as_bytes()).unwrap();
        store.save_state("c:1", &tree).await.unwrap();
        let text = fs::read_to_string(dir.path().join(".data/c:1")).unwrap();
        assert!(text.starts_with("{\n \"content_id\""), "{text}");
        let back = store.load_state("c:1").await.unwrap();
        assert_eq!(back.to_value(), tree.to_value());
        assert!(store.save_state("../x", &tree).await.is_err());
    }

    #[tokio::test]
    async fn pending_deletes_keep_their_time_and_the_old_format_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        fs::create_dir_all(dir.path().join(".data")).unwrap();
        let file = dir.path().join(".data/sstream-pending-deletes.json");
        fs::write(&file, r#"["a/1", "b/2"]"#).unwrap();
        let old = store.load_pending_deletes().await.unwrap();
        assert_eq!(old, [("a/1".into(), 0), ("b/2".into(), 0)].into());
        let timed: super::super::PendingDeletes = [("a/1".into(), 1_700_000_000)].into();
        store.save_pending_deletes(&timed).await.unwrap();
        assert_eq!(store.load_pending_deletes().await.unwrap(), timed);
        store
            .save_pending_deletes(&Default::default())
            .await
            .unwrap();
        assert!(!file.exists(), "nothing pending: no file");
    }

    #[tokio::test]
    async fn links_share_the_bytes_and_refuse_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        store
            .write_atomic(&rel("a/kernel"), b"same bytes")
            .await
            .unwrap();
        fs::write(dir.path().join("b-kernel.part"), b"stale").unwrap();
        assert!(store.can_link());
        assert_eq!(
            store
                .link(&rel("a/kernel"), &rel("b-kernel"))
                .await
                .unwrap(),
            Linked::HardLink
        );
        let ino = |p: &str| fs::metadata(dir.path().join(p)).unwrap().ino();
        assert_eq!(ino("a/kernel"), ino("b-kernel"));
        assert!(
            !dir.path().join("b-kernel.part").exists(),
            "the stale .part goes"
        );
        assert_eq!(
            store
                .link(&rel("a/kernel"), &rel("b-kernel"))
                .await
                .unwrap(),
            Linked::HardLink,
            "again: nothing to do"
        );
        store.remove(&rel("a/kernel")).await.unwrap();
        assert_eq!(
            store.read(&rel("b-kernel")).await.unwrap().unwrap(),
            b"same bytes"
        );
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("evil")).unwrap();
        assert!(store.link(&rel("evil"), &rel("c")).await.is_err());
        assert!(
            store
                .import(&dir.path().join("evil"), &rel("c"))
                .await
                .is_err()
        );
        assert!(store.link(&rel("missing"), &rel("c")).await.is_err());
        assert!(!dir.path().join("c").exists());
        assert_eq!(store.local_path(&rel("evil")), None);
        assert_eq!(store.staged_len(&rel("b-kernel")).await, 0);
        let space = store.space().await.unwrap();
        assert!(space.total >= space.free && space.total > 0);
        assert!(Path::new(&space.filesystem).is_absolute());
    }
}
