//! Content stored once: items are identified by their size and strongest
//! checksum ([`ContentKey`]); items with the same content are downloaded
//! once and stored once, as hard links of one file.
//!
//! Within a mirror the plan finds identical content by itself (other items
//! of the same run, and the files the mirror's state already records). To
//! share content between mirrors — the jobs of one configuration mirroring
//! `stable` and `candidate` into sibling directories — a [`ContentIndex`]
//! names each content once: a directory of hard links,
//! `DIR/<algorithm>/<first two hex digits>/<hex digest>-<size>`, each an
//! extra name of a file some mirror holds. A run finds content there before
//! downloading it, and enters what it stores.
//!
//! Nothing but the link count says who uses an entry, so removal stays
//! right by construction: deleting an item's path never takes bytes from
//! another path (each is a name of its own), and an entry whose file no
//! mirror holds any more (link count 1) is collected at the end of a run.
//! A run racing another on the same index can at worst lose an entry (the
//! item is then downloaded).
//!
//! # No wrong bytes linked
//!
//! An entry is a name of a file other mirrors hold: anyone can change its
//! bytes (an in-place edit of one mirror's file changes the entry and every
//! mirror sharing the inode). So an entry is never trusted for its name and
//! size alone. Beside each entry a record, `<entry>.verified`, keeps the
//! inode, size and modification time the entry had when a run last hashed
//! it (or linked it from a file it had just fetched and verified). An
//! entry is linked only when that record still matches ([`ContentIndex::is_fresh`]),
//! else it is hashed first; one that fails is not linked: the item is
//! downloaded and, verified, replaces the bad entry
//! ([`ContentIndex::replace`]). A mirror whose file is the entry's inode
//! while the record is stale checks that file too (see
//! [`crate::plan::Plan::check_shared_files`]; a replaced entry is kept as
//! `<entry>.suspect` until no mirror holds it, so that the mirrors still
//! sharing it find out too). The record is evidence, not proof: an edit
//! that puts the mtime back (or lands in the same timestamp tick as the
//! verification) keeps it fresh; `--verify-existing` hashes every entry
//! before linking it whatever its record says.
//!
//! The index must be on the mirrors' filesystem (hard links do not cross
//! filesystems); one elsewhere is not used. Only SHA-256 and SHA-512 name
//! content: an item with only an MD5 is always downloaded.

use crate::error::{Error, Result};
use crate::format::Checksum;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What identifies an item's content: its size and strongest checksum
/// (SHA-512 or SHA-256; MD5 is not trusted to tell contents apart).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentKey {
    size: u64,
    algorithm: &'static str,
    hex: String,
}

impl ContentKey {
    /// The key of an item with `size` and strongest `checksum`, when both
    /// are known and the checksum is strong enough.
    pub fn of(size: Option<u64>, checksum: Option<&Checksum>) -> Option<ContentKey> {
        let checksum = checksum?;
        if matches!(checksum, Checksum::Md5(_)) {
            return None;
        }
        let hex = checksum.hex();
        // Parsed metadata holds lower-case hex only; a key names a file.
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(ContentKey {
            size: size?,
            algorithm: checksum.algorithm(),
            hex: hex.to_ascii_lowercase(),
        })
    }

    /// The content's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the index keeps this content, relative to its directory.
    fn entry(&self) -> PathBuf {
        let mut p = PathBuf::from(self.algorithm);
        p.push(&self.hex[..2]);
        p.push(format!("{}-{}", self.hex, self.size));
        p
    }
}

impl std::fmt::Display for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} ({} bytes)", self.algorithm, self.hex, self.size)
    }
}

/// A directory naming each content once (see the module documentation).
#[derive(Debug, Clone)]
pub struct ContentIndex {
    dir: PathBuf,
}

/// What [`ContentIndex::collect_garbage`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Entries removed (no mirror held their file any more).
    pub entries: usize,
    /// Their bytes, freed.
    pub bytes: u64,
}

impl ContentIndex {
    /// The index in `dir` (created when something is first entered).
    pub fn new(dir: impl Into<PathBuf>) -> ContentIndex {
        ContentIndex { dir: dir.into() }
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the index can hold hard links of files in `dir`: both on
    /// one filesystem (the index, or its nearest existing parent).
    pub fn shares_filesystem_with(&self, dir: &Path) -> bool {
        let dev = |p: &Path| {
            p.ancestors()
                .find_map(|a| fs::metadata(a).ok())
                .map(|m| m.dev())
        };
        matches!((dev(&self.dir), dev(dir)), (Some(a), Some(b)) if a == b)
    }

    /// The entry holding `key`'s content: a regular file of its size.
    pub fn find(&self, key: &ContentKey) -> Option<PathBuf> {
        let path = self.dir.join(key.entry());
        let m = fs::symlink_metadata(&path).ok()?;
        (m.is_file() && m.len() == key.size).then_some(path)
    }

    /// Whether the record beside `entry` still describes it: same inode,
    /// size and modification time as when it was last verified.
    pub fn is_fresh(&self, entry: &Path) -> bool {
        let (Ok(m), Ok(record)) = (
            fs::symlink_metadata(entry),
            fs::read_to_string(record_path(entry)),
        ) else {
            return false;
        };
        m.is_file() && record.trim() == fingerprint(&m)
    }

    /// Records `entry` as verified now (best effort: without a record it is
    /// only hashed again before its next use).
    pub fn vouch(&self, entry: &Path) {
        let Ok(m) = fs::symlink_metadata(entry) else {
            return;
        };
        let record = record_path(entry);
        let tmp = record.with_extension("verified.tmp");
        let written = fs::write(&tmp, format!("{}\n", fingerprint(&m)))
            .and_then(|()| fs::rename(&tmp, &record));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            log::warn!(
                "content index {}: cannot record it as verified: {e}",
                entry.display()
            );
        }
    }

    /// Replaces the entry of `key` (one that failed its check, or whose
    /// record is stale) by `file`, a verified item of that content: linked
    /// under a temporary name, renamed over it, recorded. Gives whether it
    /// is now in the index.
    pub fn replace(&self, key: &ContentKey, file: &Path) -> Result<bool> {
        let entry = self.dir.join(key.entry());
        self.keep_suspect(&entry);
        let tmp = entry.with_extension("replacing");
        let _ = fs::remove_file(&tmp);
        match fs::hard_link(file, &tmp) {
            Ok(()) => {}
            Err(e) if cannot_link(&e) => return Ok(false),
            Err(e) => return Err(Error::io(&tmp, e)),
        }
        if let Err(e) = fs::rename(&tmp, &entry) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(&entry, e));
        }
        self.vouch(&entry);
        Ok(true)
    }

    /// Before an entry whose record is stale is replaced: its file is kept
    /// as `<entry>.suspect` (another name of the same inode), so that the
    /// mirrors still holding it find out and check their file
    /// ([`ContentIndex::suspect`]). Collected as entries are, once no
    /// mirror holds it.
    fn keep_suspect(&self, entry: &Path) {
        if !fs::symlink_metadata(entry).is_ok_and(|m| m.is_file()) || self.is_fresh(entry) {
            return;
        }
        let suspect = suspect_path(entry);
        let tmp = suspect.with_extension("suspect.tmp");
        let _ = fs::remove_file(&tmp);
        if fs::hard_link(entry, &tmp).is_ok() && fs::rename(&tmp, &suspect).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// The file a replaced entry of `key` had, when some mirror may still
    /// hold it (see [`ContentIndex::replace`]).
    pub fn suspect(&self, key: &ContentKey) -> Option<PathBuf> {
        let path = suspect_path(&self.dir.join(key.entry()));
        fs::symlink_metadata(&path)
            .is_ok_and(|m| m.is_file())
            .then_some(path)
    }

    /// Enters `file` (an item of `key`'s content) as a hard link; with
    /// `verified` (hashed by this run) it is recorded as such. Gives whether
    /// it is now in the index; `false` when it cannot be linked from here
    /// (another filesystem): nothing is copied.
    pub fn add(&self, key: &ContentKey, file: &Path, verified: bool) -> Result<bool> {
        if self.find(key).is_some() {
            return Ok(true);
        }
        let m = fs::symlink_metadata(file).map_err(|e| Error::io(file, e))?;
        if !m.is_file() || m.len() != key.size {
            return Ok(false);
        }
        let entry = self.dir.join(key.entry());
        if let Some(parent) = entry.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        match fs::hard_link(file, &entry) {
            Ok(()) => {
                if verified {
                    self.vouch(&entry);
                }
                Ok(true)
            }
            // Another run entered it meanwhile (or a wrong file sits there:
            // `find` will keep ignoring it).
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(self.find(key).is_some()),
            Err(e) if cannot_link(&e) => Ok(false),
            Err(e) => Err(Error::io(&entry, e)),
        }
    }

    /// Removes the entries no mirror holds any more (link count 1), and
    /// directories left empty. Only files named as entries are looked at
    /// (`<algorithm>/<hh>/<digest>-<size>` of their own size), so a
    /// directory given by mistake loses nothing else.
    pub fn collect_garbage(&self) -> Result<Collected> {
        let mut done = Collected::default();
        for (algorithm, digits) in [("sha256", 64), ("sha512", 128)] {
            let dir = self.dir.join(algorithm);
            let Ok(prefixes) = fs::read_dir(&dir) else {
                continue; // nothing entered
            };
            for prefix in prefixes.flatten() {
                let prefix_name = prefix.file_name().to_string_lossy().into_owned();
                if !(prefix_name.len() == 2 && is_hex(&prefix_name)) {
                    continue;
                }
                let Ok(entries) = fs::read_dir(prefix.path()) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Ok(m) = fs::symlink_metadata(&path) else {
                        continue;
                    };
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let is_entry = name.split_once('-').is_some_and(|(hex, size)| {
                        hex.len() == digits
                            && is_hex(hex)
                            && hex.starts_with(&prefix_name)
                            && size.parse::<u64>().ok() == Some(m.len())
                    });
                    if let Some(of) = name.strip_suffix(".verified")
                        && fs::symlink_metadata(prefix.path().join(of)).is_err()
                    {
                        let _ = fs::remove_file(&path); // the record of a removed entry
                        continue;
                    }
                    if name.ends_with(".suspect") && m.is_file() && m.nlink() == 1 {
                        let _ = fs::remove_file(&path); // no mirror holds it any more
                        continue;
                    }
                    if is_entry && m.is_file() && m.nlink() == 1 {
                        match fs::remove_file(&path) {
                            Ok(()) => {
                                let _ = fs::remove_file(record_path(&path));
                                done.entries += 1;
                                done.bytes += m.len();
                            }
                            Err(e) if e.kind() == ErrorKind::NotFound => {}
                            Err(e) => return Err(Error::io(&path, e)),
                        }
                    }
                }
                let _ = fs::remove_dir(prefix.path()); // only when empty
            }
            let _ = fs::remove_dir(&dir);
        }
        Ok(done)
    }
}

/// `dir` made absolute (against the working directory) and resolved:
/// symlinks and `..` of its longest existing ancestor resolved by the
/// filesystem, the rest (not made yet) normalised by name. Two resolved
/// paths can be compared by prefix: one inside the other.
pub fn resolve_dir(dir: &Path) -> std::io::Result<PathBuf> {
    let absolute = std::path::absolute(dir)?;
    let mut missing = Vec::new();
    let mut existing = absolute.as_path();
    let base = loop {
        match fs::canonicalize(existing) {
            Ok(real) => break real,
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    missing.push(name.to_os_string());
                    existing = parent;
                }
                // `..` or the root: normalise by name below.
                _ => break PathBuf::from("/"),
            },
        }
    };
    let mut out = base;
    for part in missing.iter().rev() {
        out.push(part);
    }
    // What is left of `..` (in a part that does not exist yet).
    let mut normal = PathBuf::new();
    for c in out.components() {
        match c {
            std::path::Component::ParentDir => {
                normal.pop();
            }
            std::path::Component::CurDir => {}
            other => normal.push(other),
        }
    }
    Ok(normal)
}

/// Where the file of a replaced `entry` is kept (see
/// [`ContentIndex::suspect`]).
fn suspect_path(entry: &Path) -> PathBuf {
    let mut name = entry.file_name().unwrap_or_default().to_os_string();
    name.push(".suspect");
    entry.with_file_name(name)
}

/// Where the record of `entry`'s last verification is.
fn record_path(entry: &Path) -> PathBuf {
    let mut name = entry.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    entry.with_file_name(name)
}

/// What a record holds of a file: inode, size and modification time (to
/// the nanosecond). Linking changes none of them; writing changes the
/// time, replacing changes the inode.
fn fingerprint(m: &fs::Metadata) -> String {
    format!(
        "{} {} {}.{:09}",
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    )
}

/// Whether a failed hard link means the index cannot link this file
/// (another filesystem, too many links, no hard links).
fn cannot_link(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV | libc::EMLINK | libc::EPERM | libc::EOPNOTSUPP)
    )
}

/// Whether `s` is lower-case hex.
fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: char, size: u64) -> ContentKey {
        ContentKey::of(
            Some(size),
            Some(&Checksum::Sha256(byte.to_string().repeat(64))),
        )
        .unwrap()
    }

    #[test]
    fn keys_need_a_size_and_a_strong_checksum() {
        let sha = Checksum::Sha256("ab".repeat(32));
        assert!(ContentKey::of(Some(1), Some(&sha)).is_some());
        assert!(ContentKey::of(None, Some(&sha)).is_none());
        assert!(ContentKey::of(Some(1), None).is_none());
        assert!(ContentKey::of(Some(1), Some(&Checksum::Md5("ab".repeat(16)))).is_none());
        let other_size = ContentKey::of(Some(2), Some(&sha));
        assert_ne!(ContentKey::of(Some(1), Some(&sha)), other_size);
        let entry = key('a', 5).entry();
        assert_eq!(entry, Path::new(&format!("sha256/aa/{}-5", "a".repeat(64))));
    }

    #[test]
    fn entries_are_links_and_go_when_no_mirror_holds_them() {
        let tmp = tempfile::tempdir().unwrap();
        let index = ContentIndex::new(tmp.path().join("index"));
        let item = tmp.path().join("item");
        fs::write(&item, b"12345").unwrap();
        let k = key('a', 5);
        assert!(index.find(&k).is_none());
        assert!(index.add(&k, &item, true).unwrap());
        let entry = index.find(&k).unwrap();
        assert_eq!(
            fs::metadata(&entry).unwrap().ino(),
            fs::metadata(&item).unwrap().ino()
        );
        assert!(
            !index.add(&key('b', 4), &item, true).unwrap(),
            "wrong size: not entered"
        );
        assert!(
            index.find(&key('a', 4)).is_none(),
            "another size is another content"
        );
        assert!(index.is_fresh(&entry), "entered verified: recorded");
        fs::write(&item, b"54321").unwrap();
        let earlier = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
        let file = fs::File::options().write(true).open(&item).unwrap();
        file.set_modified(earlier).unwrap();
        assert!(!index.is_fresh(&entry), "written in place: stale");
        index.vouch(&entry);
        assert!(index.is_fresh(&entry));
        assert!(index.shares_filesystem_with(tmp.path()));
        assert_eq!(index.collect_garbage().unwrap(), Collected::default());
        fs::remove_file(&item).unwrap();
        assert_eq!(
            index.collect_garbage().unwrap(),
            Collected {
                entries: 1,
                bytes: 5
            }
        );
        assert!(index.find(&k).is_none());
        assert!(
            !tmp.path().join("index/sha256").exists(),
            "empty directories go"
        );
    }

    #[test]
    fn only_entries_are_collected() {
        let tmp = tempfile::tempdir().unwrap();
        // An index given the directory of a mirror by mistake.
        let index = ContentIndex::new(tmp.path());
        for rel in [
            "sha256/1/kernel",
            "sha256/ab/file",
            "sha256/ab/ab-3",
            "ga/1/kernel",
        ] {
            let p = tmp.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, b"abc").unwrap();
        }
        let wrong_size = tmp.path().join(format!("sha256/aa/{}-4", "a".repeat(64)));
        fs::create_dir_all(wrong_size.parent().unwrap()).unwrap();
        fs::write(&wrong_size, b"abc").unwrap();
        assert_eq!(index.collect_garbage().unwrap(), Collected::default());
        assert!(wrong_size.exists() && tmp.path().join("ga/1/kernel").exists());
    }
}
