//! A crash-test file system for tests, in the style of LazyFS: a FUSE
//! file system over a *backing directory* that plays the disk. What a
//! program writes through the mount lives in memory (the page cache) until
//! it is made durable, and only then reaches the backing directory. A
//! [`CutAt`] rule cuts the power at a chosen operation: from then on every
//! request fails with `EIO` and nothing more reaches the backing directory,
//! which then holds exactly what a rebooted machine would find.
//!
//! A [`FsyncFault`] makes one `fsync` fail instead, as a disk that could
//! not write the journal or a file's pages does: that `fsync` (the nth of a
//! file, or of a directory) returns `EIO` once and *drops* what it was to
//! make durable, while every later request works normally ("fsyncgate":
//! Linux reports a writeback error once and marks the pages clean, so a
//! retry that succeeds makes nothing of them durable).
//!
//! # The durability model
//!
//! Two models ([`Model`]), both of a journaling file system that never
//! tears a single operation:
//!
//! - [`Model::Strict`] (the safe one, POSIX to the letter): a file's bytes,
//!   size, mode and mtime are durable as of its last `fsync`/`fdatasync`;
//!   a directory's entries (creates, renames in and out, unlinks, mkdir,
//!   rmdir) are durable as of its last `fsync` of the directory. Nothing
//!   else is ever flushed: a new file whose directory was synced but not
//!   the file itself comes back empty; a renamed file whose directory was
//!   not synced comes back under its old name; a new directory whose parent
//!   was not synced comes back missing, with everything in it.
//! - [`Model::Ext4Ordered`] (the realistic one: ext4's default
//!   `data=ordered` with delayed allocation and `auto_da_alloc`): any
//!   `fsync` commits the journal, so every directory operation done before
//!   it becomes durable in order; file data still only as of the file's own
//!   `fsync`, except that a rename over an existing file flushes the renamed
//!   file's data with the next commit (`auto_da_alloc`). The periodic
//!   5-second commit is not modelled (it only makes more durable).
//!
//! A failed `fsync` ([`FsyncFault`]) marks what it was to make durable as
//! if it had been written, in both models: for a file, its unsynced bytes
//! (a later `fsync` writes only the bytes written since, over what the
//! disk held before, at the file's size then); for a directory, its
//! unsynced entries (a later `fsync` of it, or a journal commit, writes
//! only the names created, renamed or removed since). Those changes are
//! lost for good: no later `fsync`, commit or clean unmount brings them to
//! the disk (unless they are made again). The failed `fsync` commits
//! nothing else (no journal commit).
//!
//! An unmount without a cut is a clean shutdown: everything is synced
//! (but what a failed `fsync` dropped).
//!
//! Hard links, symlinks, device nodes and extended attributes are refused;
//! `flock` is left to the kernel (local to this mount).

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// How much of what was not synced a power cut loses (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// Only what was explicitly fsynced (files) or fsynced-in (directory
    /// entries) survives.
    Strict,
    /// ext4 `data=ordered`, `auto_da_alloc`: any fsync commits every
    /// directory operation so far.
    Ext4Ordered,
}

/// The kinds of operations that change the file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// A file created (`open` with `O_CREAT`).
    Create,
    /// A directory made.
    Mkdir,
    /// Bytes written.
    Write,
    /// A truncation, a mode or time change.
    SetAttr,
    /// A rename.
    Rename,
    /// A file removed.
    Unlink,
    /// A directory removed.
    Rmdir,
    /// `fsync`/`fdatasync` of a file.
    Fsync,
    /// `fsync` of a directory.
    FsyncDir,
}

/// One operation as the file system saw it: its kind and the path it
/// acted on (for a rename, the source), relative to the mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// What it was.
    pub kind: OpKind,
    /// Where, relative to the mount (`a/b/c`).
    pub path: String,
}

/// When to cut the power: at the `nth` (1-based) operation that matches
/// `kind` (any when `None`) and whose path starts with `under` (any when
/// empty). That operation is not done; neither is anything after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutAt {
    /// The kind of operation counted, or every kind.
    pub kind: Option<OpKind>,
    /// A path prefix the counted operations must have.
    pub under: String,
    /// Which matching operation (1-based) is the first one lost.
    pub nth: u64,
}

impl CutAt {
    fn matches(&self, op: &Op) -> bool {
        self.kind.is_none_or(|k| k == op.kind) && op.path.starts_with(&self.under)
    }
}

/// One `fsync` that fails: the `nth` (1-based) `fsync` of `kind`
/// ([`OpKind::Fsync`] for a file, [`OpKind::FsyncDir`] for a directory)
/// whose path is `under` or lies under it (any path when `under` is empty)
/// fails with `EIO` and
/// drops what it was to make durable (see the crate docs). It fails once:
/// every other request, the later `fsync`s included, works normally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsyncFault {
    /// [`OpKind::Fsync`] or [`OpKind::FsyncDir`]; no other kind fails.
    pub kind: OpKind,
    /// The file or directory (relative to the mount) whose `fsync`, or
    /// whose descendants' `fsync`s, are counted.
    pub under: String,
    /// Which matching `fsync` (1-based) fails.
    pub nth: u64,
}

impl FsyncFault {
    fn matches(&self, op: &Op) -> bool {
        let under = self.under.trim_end_matches('/');
        self.kind == op.kind
            && (under.is_empty()
                || op.path == under
                || op
                    .path
                    .strip_prefix(under)
                    .is_some_and(|rest| rest.starts_with('/')))
    }
}

const TTL: Duration = Duration::ZERO;

struct Node {
    dir: bool,
    perm: u16,
    mtime: SystemTime,
    /// Where the node was last linked (for the trace).
    parent: u64,
    name: OsString,
    data: Vec<u8>,
    entries: BTreeMap<OsString, u64>,
    durable_data: Vec<u8>,
    durable_perm: u16,
    durable_mtime: SystemTime,
    durable_entries: BTreeMap<OsString, u64>,
    /// Bumped whenever `durable_data`, `durable_perm` or `durable_mtime`
    /// change (what the backing directory was last written from).
    durable_version: u64,
    /// `auto_da_alloc`: flush this file's data with the next commit.
    flush_on_commit: bool,
    /// After a failed `fsync` of the file: the byte ranges written since
    /// the last sync (the dirty pages; only they are written by the next).
    dirty_ranges: Option<Vec<Range<usize>>>,
    /// After a failed `fsync` of the directory: the names created,
    /// renamed or removed since the last sync (only they are written by
    /// the next).
    dirty_names: Option<BTreeSet<OsString>>,
}

impl Node {
    fn new(dir: bool, perm: u16, parent: u64, name: OsString) -> Node {
        Node {
            dir,
            perm,
            mtime: SystemTime::now(),
            parent,
            name,
            data: Vec::new(),
            entries: BTreeMap::new(),
            durable_data: Vec::new(),
            durable_perm: perm,
            durable_mtime: SystemTime::UNIX_EPOCH,
            durable_entries: BTreeMap::new(),
            durable_version: 1,
            flush_on_commit: false,
            dirty_ranges: None,
            dirty_names: None,
        }
    }

    /// The bytes a sync of the file leaves on the disk: all of them, or,
    /// after a failed `fsync`, only those written since the last sync,
    /// over what the disk held (at the file's present size).
    fn data_to_sync(&mut self) -> Vec<u8> {
        let Some(dirty) = &mut self.dirty_ranges else {
            return self.data.clone();
        };
        let mut disk = self.durable_data.clone();
        disk.resize(self.data.len(), 0);
        for range in dirty.drain(..) {
            let end = range.end.min(self.data.len());
            if range.start < end {
                disk[range.start..end].copy_from_slice(&self.data[range.start..end]);
            }
        }
        disk
    }

    fn sync_data(&mut self) {
        let data = self.data_to_sync();
        if self.durable_data != data
            || self.durable_perm != self.perm
            || self.durable_mtime != self.mtime
        {
            self.durable_data = data;
            self.durable_perm = self.perm;
            self.durable_mtime = self.mtime;
            self.durable_version += 1;
        }
        self.flush_on_commit = false;
    }

    /// Makes the directory's entries durable: all of them, or, after a
    /// failed `fsync`, only those changed since the last sync.
    fn sync_entries(&mut self) {
        let Some(dirty) = &mut self.dirty_names else {
            self.durable_entries = self.entries.clone();
            return;
        };
        for name in std::mem::take(dirty) {
            match self.entries.get(&name) {
                Some(ino) => self.durable_entries.insert(name, *ino),
                None => self.durable_entries.remove(&name),
            };
        }
    }

    /// Records a change of the directory's entry `name`.
    fn entry_changed(&mut self, name: &OsStr) {
        if let Some(dirty) = &mut self.dirty_names {
            dirty.insert(name.to_os_string());
        }
    }

    /// Records bytes written to the file.
    fn bytes_written(&mut self, range: Range<usize>) {
        if let Some(dirty) = &mut self.dirty_ranges {
            dirty.push(range);
        }
    }

    /// A failed `fsync`: what it was to make durable is taken as written,
    /// and so never will be.
    fn drop_unsynced(&mut self) {
        if self.dir {
            self.dirty_names = Some(BTreeSet::new());
        } else {
            self.dirty_ranges = Some(Vec::new());
        }
    }
}

/// The state behind the mount, shared with the [`Mount`] handle.
struct State {
    model: Model,
    backing: PathBuf,
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// What each backing file was last written from: (inode, version).
    written: HashMap<PathBuf, (u64, u64)>,
    cut: Option<CutAt>,
    matched: u64,
    fsync_fault: Option<FsyncFault>,
    fsync_matched: u64,
    /// The `fsync` that [`State::fsync_fault`] made fail.
    failed_fsync: Option<Op>,
    powered_off: bool,
    trace: Vec<Op>,
    /// A failure to write the backing directory (a bug or a full disk).
    disk_error: Option<String>,
}

impl State {
    fn load(backing: &Path, model: Model) -> io::Result<State> {
        let mut s = State {
            model,
            backing: backing.to_path_buf(),
            nodes: HashMap::new(),
            next_ino: 2,
            written: HashMap::new(),
            cut: None,
            matched: 0,
            fsync_fault: None,
            fsync_matched: 0,
            failed_fsync: None,
            powered_off: false,
            trace: Vec::new(),
            disk_error: None,
        };
        let mut root = Node::new(true, 0o755, 1, OsString::new());
        root.mtime = SystemTime::UNIX_EPOCH;
        s.nodes.insert(1, root);
        s.load_dir(1, backing)?;
        Ok(s)
    }

    fn load_dir(&mut self, ino: u64, path: &Path) -> io::Result<()> {
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            let meta = fs::symlink_metadata(entry.path())?;
            let name = entry.file_name();
            let perm = (meta.permissions().mode() & 0o7777) as u16;
            let child = self.next_ino;
            self.next_ino += 1;
            let mut node = Node::new(meta.is_dir(), perm, ino, name.clone());
            node.mtime = meta.modified()?;
            if meta.is_file() {
                node.data = fs::read(entry.path())?;
            } else if !meta.is_dir() {
                return Err(io::Error::other(format!(
                    "{}: only files and directories are supported",
                    entry.path().display()
                )));
            }
            node.sync_data();
            self.nodes.insert(child, node);
            self.written
                .insert(entry.path(), (child, self.nodes[&child].durable_version));
            let parent = self.nodes.get_mut(&ino).expect("loaded parent");
            parent.entries.insert(name.clone(), child);
            parent.durable_entries.insert(name, child);
            if meta.is_dir() {
                self.load_dir(child, &entry.path())?;
            }
        }
        Ok(())
    }

    fn node(&self, ino: INodeNo) -> Result<&Node, Errno> {
        self.nodes.get(&ino.0).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: INodeNo) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let n = self.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        let size = if n.dir { 4096 } else { n.data.len() as u64 };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind: if n.dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: n.perm,
            nlink: if n.dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// The live path of a node, relative to the mount.
    fn path_of(&self, mut ino: u64) -> String {
        let mut parts = Vec::new();
        while ino != 1 {
            let Some(n) = self.nodes.get(&ino) else { break };
            parts.push(n.name.to_string_lossy().into_owned());
            ino = n.parent;
        }
        parts.reverse();
        parts.join("/")
    }

    fn child_path(&self, parent: u64, name: &OsStr) -> String {
        let p = self.path_of(parent);
        let n = name.to_string_lossy();
        if p.is_empty() {
            n.into_owned()
        } else {
            format!("{p}/{n}")
        }
    }

    /// Records an operation about to be done; `Err(EIO)` when the power
    /// is (or now goes) off.
    fn begin(&mut self, kind: OpKind, path: String) -> Result<(), Errno> {
        if self.powered_off {
            return Err(Errno::EIO);
        }
        let op = Op { kind, path };
        if let Some(cut) = &self.cut
            && cut.matches(&op)
        {
            self.matched += 1;
            if self.matched >= cut.nth {
                self.powered_off = true;
                return Err(Errno::EIO);
            }
        }
        self.trace.push(op);
        Ok(())
    }

    fn alive(&self) -> Result<(), Errno> {
        if self.powered_off {
            Err(Errno::EIO)
        } else {
            Ok(())
        }
    }

    fn lookup_child(&self, parent: INodeNo, name: &OsStr) -> Result<u64, Errno> {
        let p = self.node(parent)?;
        if !p.dir {
            return Err(Errno::ENOTDIR);
        }
        p.entries.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn make(&mut self, parent: INodeNo, name: &OsStr, dir: bool, perm: u16) -> Result<u64, Errno> {
        let kind = if dir { OpKind::Mkdir } else { OpKind::Create };
        let path = self.child_path(parent.0, name);
        if self.node(parent)?.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        self.begin(kind, path)?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes
            .insert(ino, Node::new(dir, perm, parent.0, name.to_os_string()));
        let p = self.node_mut(parent)?;
        p.entries.insert(name.to_os_string(), ino);
        p.entry_changed(name);
        p.mtime = SystemTime::now();
        Ok(ino)
    }

    /// Makes what was decided durable reach the backing directory.
    fn commit(&mut self) -> Result<(), Errno> {
        let backing = self.backing.clone();
        self.write_tree(&backing, 1).map_err(|e| {
            self.disk_error = Some(format!("{}: {e}", backing.display()));
            Errno::EIO
        })
    }

    /// Makes the backing directory `path` hold the durable state of the
    /// directory node `ino`.
    fn write_tree(&mut self, path: &Path, ino: u64) -> io::Result<()> {
        let entries = self.nodes[&ino].durable_entries.clone();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if !entries.contains_key(&entry.file_name()) {
                remove_any(&entry.path())?;
                self.written.remove(&entry.path());
            }
        }
        for (name, child) in entries {
            let at = path.join(&name);
            let node = &self.nodes[&child];
            let meta = fs::symlink_metadata(&at).ok();
            if node.dir {
                if meta.as_ref().is_some_and(|m| !m.is_dir()) {
                    remove_any(&at)?;
                }
                if meta.as_ref().is_none_or(|m| !m.is_dir()) {
                    fs::create_dir(&at)?;
                }
                fs::set_permissions(&at, fs::Permissions::from_mode(node.durable_perm.into()))?;
                self.write_tree(&at, child)?;
            } else if self.written.get(&at) != Some(&(child, node.durable_version))
                || meta.as_ref().is_none_or(|m| !m.is_file())
            {
                if meta.as_ref().is_some_and(|m| !m.is_file()) {
                    remove_any(&at)?;
                }
                fs::write(&at, &node.durable_data)?;
                fs::set_permissions(&at, fs::Permissions::from_mode(node.durable_perm.into()))?;
                fs::File::options()
                    .write(true)
                    .open(&at)?
                    .set_modified(node.durable_mtime)?;
                self.written.insert(at, (child, node.durable_version));
            }
        }
        Ok(())
    }

    /// A journal commit (ext4): every directory's entries become durable,
    /// with the data of files renamed over others.
    fn journal_commit(&mut self) {
        for node in self.nodes.values_mut() {
            if node.dir {
                node.sync_entries();
            } else if node.flush_on_commit {
                node.sync_data();
            }
        }
    }

    fn fsync(&mut self, ino: INodeNo) -> Result<(), Errno> {
        let n = self.node(ino)?;
        let dir = n.dir;
        let kind = if dir { OpKind::FsyncDir } else { OpKind::Fsync };
        let path = self.path_of(ino.0);
        self.begin(kind, path.clone())?;
        if self.fsync_fails(Op { kind, path }) {
            self.node_mut(ino)?.drop_unsynced();
            return Err(Errno::EIO);
        }
        let node = self.node_mut(ino)?;
        if dir {
            node.sync_entries();
            node.durable_perm = node.perm;
        } else {
            node.sync_data();
        }
        if self.model == Model::Ext4Ordered {
            self.journal_commit();
        }
        self.commit()
    }

    /// Whether the `fsync` `op` is the one to fail (counting it).
    fn fsync_fails(&mut self, op: Op) -> bool {
        let Some(fault) = &self.fsync_fault else {
            return false;
        };
        if self.failed_fsync.is_some() || !fault.matches(&op) {
            return false;
        }
        self.fsync_matched += 1;
        if self.fsync_matched < fault.nth {
            return false;
        }
        self.failed_fsync = Some(op);
        true
    }

    /// A clean shutdown: everything becomes durable (but what a failed
    /// `fsync` dropped).
    fn sync_all(&mut self) -> Result<(), Errno> {
        for node in self.nodes.values_mut() {
            node.sync_data();
            node.sync_entries();
        }
        self.commit()
    }

    fn rename(
        &mut self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let src = self.lookup_child(parent, name)?;
        let existing = self.lookup_child(newparent, newname).ok();
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return Err(Errno::EINVAL);
        }
        if existing.is_some() && flags.contains(RenameFlags::RENAME_NOREPLACE) {
            return Err(Errno::EEXIST);
        }
        if !self.node(newparent)?.dir {
            return Err(Errno::ENOTDIR);
        }
        let src_dir = self.nodes[&src].dir;
        if let Some(dst) = existing {
            if dst == src {
                return Ok(());
            }
            let d = &self.nodes[&dst];
            match (src_dir, d.dir) {
                (false, true) => return Err(Errno::EISDIR),
                (true, false) => return Err(Errno::ENOTDIR),
                (true, true) if !d.entries.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
        }
        let path = self.child_path(parent.0, name);
        self.begin(OpKind::Rename, path)?;
        let now = SystemTime::now();
        let p = self.node_mut(parent)?;
        p.entries.remove(name);
        p.entry_changed(name);
        p.mtime = now;
        let np = self.node_mut(newparent)?;
        np.entries.insert(newname.to_os_string(), src);
        np.entry_changed(newname);
        np.mtime = now;
        let n = self.nodes.get_mut(&src).expect("renamed node");
        n.parent = newparent.0;
        n.name = newname.to_os_string();
        if existing.is_some() && !src_dir {
            n.flush_on_commit = true;
        }
        Ok(())
    }

    fn remove(&mut self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let child = self.lookup_child(parent, name)?;
        let n = &self.nodes[&child];
        match (dir, n.dir) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            (true, true) if !n.entries.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        let kind = if dir { OpKind::Rmdir } else { OpKind::Unlink };
        let path = self.child_path(parent.0, name);
        self.begin(kind, path)?;
        let p = self.node_mut(parent)?;
        p.entries.remove(name);
        p.entry_changed(name);
        p.mtime = SystemTime::now();
        Ok(())
    }

    fn write(&mut self, ino: INodeNo, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let path = self.path_of(ino.0);
        self.begin(OpKind::Write, path)?;
        let n = self.node_mut(ino)?;
        let start = usize::try_from(offset).map_err(|_| Errno::EFBIG)?;
        let end = start + data.len();
        if n.data.len() < end {
            n.data.resize(end, 0);
        }
        n.data[start..end].copy_from_slice(data);
        n.bytes_written(start..end);
        n.mtime = SystemTime::now();
        u32::try_from(data.len()).map_err(|_| Errno::EINVAL)
    }

    fn setattr(
        &mut self,
        ino: INodeNo,
        mode: Option<u32>,
        size: Option<u64>,
        mtime: Option<TimeOrNow>,
    ) -> Result<FileAttr, Errno> {
        if mode.is_some() || size.is_some() || mtime.is_some() {
            let path = self.path_of(ino.0);
            self.begin(OpKind::SetAttr, path)?;
        }
        let n = self.node_mut(ino)?;
        if let Some(mode) = mode {
            n.perm = (mode & 0o7777) as u16;
        }
        if let Some(size) = size {
            if n.dir {
                return Err(Errno::EISDIR);
            }
            n.data
                .resize(usize::try_from(size).map_err(|_| Errno::EFBIG)?, 0);
            n.mtime = SystemTime::now();
        }
        match mtime {
            Some(TimeOrNow::SpecificTime(t)) => n.mtime = t,
            Some(TimeOrNow::Now) => n.mtime = SystemTime::now(),
            None => {}
        }
        self.attr(ino.0)
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The FUSE side: every request under one lock.
struct PowerLossFs {
    state: Arc<Mutex<State>>,
}

impl PowerLossFs {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn reply_entry(s: &State, ino: Result<u64, Errno>, reply: ReplyEntry) {
    match ino.and_then(|i| s.attr(i)) {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(r: Result<(), Errno>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn perm(mode: u32, umask: u32) -> u16 {
    (mode & !umask & 0o7777) as u16
}

impl Filesystem for PowerLossFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let s = self.lock();
        let ino = s.alive().and_then(|()| s.lookup_child(parent, name));
        reply_entry(&s, ino, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = self.lock();
        match s.alive().and_then(|()| s.attr(ino.0)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.lock();
        match s.alive().and_then(|()| s.setattr(ino, mode, size, mtime)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.lock();
        let ino = s
            .alive()
            .and_then(|()| s.make(parent, name, true, perm(mode, umask)));
        reply_entry(&s, ino, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let r = s.alive().and_then(|()| s.remove(parent, name, false));
        reply_empty(r, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let r = s.alive().and_then(|()| s.remove(parent, name, true));
        reply_empty(r, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let r = s
            .alive()
            .and_then(|()| s.rename(parent, name, newparent, newname, flags));
        reply_empty(r, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let s = self.lock();
        match s.alive().and_then(|()| s.node(ino).map(|_| ())) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = self.lock();
        match s.alive().and_then(|()| s.node(ino)) {
            Ok(n) => {
                let len = n.data.len();
                let start = usize::try_from(offset).unwrap_or(len).min(len);
                let end = start.saturating_add(size as usize).min(len);
                reply.data(&n.data[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.lock();
        match s.alive().and_then(|()| s.write(ino, offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let r = s.alive().and_then(|()| s.fsync(ino));
        reply_empty(r, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let s = self.lock();
        match s.alive().and_then(|()| s.node(ino)) {
            Ok(n) if n.dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = self.lock();
        let n = match s.alive().and_then(|()| s.node(ino)) {
            Ok(n) if n.dir => n,
            Ok(_) => return reply.error(Errno::ENOTDIR),
            Err(e) => return reply.error(e),
        };
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (n.parent, FileType::Directory, "..".into()),
        ];
        for (name, child) in &n.entries {
            let kind = if s.nodes[child].dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            all.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let r = s.alive().and_then(|()| s.fsync(ino));
        reply_empty(r, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // A roomy disk: 1 TiB free, a million inodes.
        reply.statfs(1 << 28, 1 << 28, 1 << 28, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let s = self.lock();
        reply_empty(s.alive().and_then(|()| s.node(ino).map(|_| ())), reply);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.lock();
        let ino = s.alive().and_then(|()| match s.lookup_child(parent, name) {
            Ok(_) if flags & libc::O_EXCL != 0 => Err(Errno::EEXIST),
            Ok(ino) => Ok(ino),
            Err(_) => s.make(parent, name, false, perm(mode, umask)),
        });
        match ino.and_then(|i| s.attr(i)) {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted crash-test file system. Dropping it unmounts (a clean
/// shutdown unless the power was cut); [`Mount::unmount`] says how that
/// went.
pub struct Mount {
    session: Option<BackgroundSession>,
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
}

/// Why a crash-test mount cannot be made here (not root, no `/dev/fuse`):
/// `Some(reason)` to skip a test, `None` when it can run.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (mounting a FUSE file system needs root here)".into());
    }
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => None,
        Err(e) => Some(format!("/dev/fuse cannot be opened: {e}")),
    }
}

impl Mount {
    /// Mounts the file system at `mountpoint` (an empty directory) over
    /// the contents of `backing`, with power cut at `cut` (never when
    /// `None`).
    pub fn new(
        backing: &Path,
        mountpoint: &Path,
        model: Model,
        cut: Option<CutAt>,
    ) -> io::Result<Mount> {
        let mut state = State::load(backing, model)?;
        state.cut = cut;
        let state = Arc::new(Mutex::new(state));
        let fs = PowerLossFs {
            state: state.clone(),
        };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("powerloss".into()),
            MountOption::Subtype("powerloss".into()),
        ];
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;
        Ok(Mount {
            session: Some(session),
            state,
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the power has gone off.
    pub fn powered_off(&self) -> bool {
        self.lock().powered_off
    }

    /// Cuts the power now.
    pub fn cut_power(&self) {
        self.lock().powered_off = true;
    }

    /// Makes one `fsync` fail from now on (see [`FsyncFault`]); the
    /// matching `fsync`s are counted from here.
    pub fn fail_fsync(&self, fault: FsyncFault) {
        let mut s = self.lock();
        s.fsync_fault = Some(fault);
        s.fsync_matched = 0;
        s.failed_fsync = None;
    }

    /// The `fsync` that failed by [`Mount::fail_fsync`], once it has.
    pub fn failed_fsync(&self) -> Option<Op> {
        self.lock().failed_fsync.clone()
    }

    /// The operations done so far (not the one the power was cut at).
    pub fn trace(&self) -> Vec<Op> {
        self.lock().trace.clone()
    }

    /// Unmounts: after a power cut the backing directory stays as the cut
    /// left it; otherwise everything is synced to it first (a clean
    /// shutdown). Fails when the backing directory could not be written.
    pub fn unmount(mut self) -> io::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some(session) = self.session.take() {
            session.umount_and_join()?;
        }
        let mut s = self.lock();
        if !s.powered_off {
            let _ = s.sync_all();
            s.powered_off = true;
        }
        match s.disk_error.take() {
            Some(e) => Err(io::Error::other(e)),
            None => Ok(()),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
