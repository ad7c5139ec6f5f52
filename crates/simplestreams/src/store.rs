//! The mirror directory: safe writes (never through a symlink, never outside
//! the root), atomic publication of metadata, removal of items and of the
//! directories they leave empty, the run lock, and the state under `.data/`.

use crate::error::{Error, Result};
use crate::format::Products;
use crate::path::{RelPath, check_file_name};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

pub use crate::layout::{CACHE_PREFIX, DATA_DIR, LOCK, PENDING_DELETES, REFERENCES, is_state_name};

/// `{item path: [content_id/product/version/item, ...]}`.
pub type References = BTreeMap<String, Vec<String>>;

/// A mirror rooted at a local directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// A store at `root` (created when needed).
    pub fn new(root: impl Into<PathBuf>) -> DirStore {
        DirStore { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
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
                    fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
                }
                Err(e) if create => return Err(Error::io(&dir, e)),
                _ => return Ok(None),
            }
        }
        Ok(Some(dir))
    }

    /// The local path of `rel`, after making sure every directory on the
    /// way exists and none is a symlink.
    pub fn prepare(&self, rel: &RelPath) -> Result<PathBuf> {
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

    /// Whether `rel` is a regular file (not a symlink) of `size` bytes.
    pub fn has_file(&self, rel: &RelPath, size: Option<u64>) -> bool {
        match fs::symlink_metadata(rel.under(&self.root)) {
            Ok(m) => m.is_file() && size.is_none_or(|s| s == m.len()),
            Err(_) => false,
        }
    }

    /// Reads `rel` if it exists.
    pub fn read(&self, rel: &RelPath) -> Result<Option<Vec<u8>>> {
        let path = rel.under(&self.root);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Writes `bytes` to `rel` atomically: a temporary file in the same
    /// directory, fsynced, renamed over the old one, directory fsynced.
    /// Unchanged content is left alone (its mtime too). A temporary file
    /// left by a killed run is removed first (the run lock makes its name
    /// ours), and the new one is created exclusively, so nothing planted
    /// there is written through.
    pub fn write_atomic(&self, rel: &RelPath, bytes: &[u8]) -> Result<()> {
        let path = self.prepare(rel)?;
        let tmp = temp_path(&path);
        remove_if_present(&tmp)?;
        if fs::read(&path).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| Error::io(&tmp, e))?;
            f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
            if let Ok(d) = File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Removes the item file `rel` (and a stale `.part`), then every parent
    /// directory that is left empty, up to the root.
    /// Refuses (and removes nothing) when a directory on the way is a
    /// symlink: a deletion must not reach outside the mirror.
    pub fn remove_item(&self, rel: &RelPath) -> Result<()> {
        if self.parent_dir(rel, false)?.is_none() {
            return Ok(()); // nothing there: nothing to remove
        }
        let path = rel.under(&self.root);
        for p in [crate::source::part_path(&path), path.clone()] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(p, e)),
            }
        }
        for dir in rel.ancestors() {
            let d = self.root.join(dir);
            if fs::remove_dir(&d).is_err() {
                break;
            }
        }
        Ok(())
    }

    fn data_rel(name: &str) -> Result<RelPath> {
        check_file_name(name).map_err(|e| Error::UnsafePath {
            context: DATA_DIR.into(),
            path: name.into(),
            reason: e.to_string(),
        })?;
        RelPath::parse(&format!("{DATA_DIR}/{name}")).map_err(|e| Error::UnsafePath {
            context: DATA_DIR.into(),
            path: name.into(),
            reason: e.to_string(),
        })
    }

    /// The mirrored tree of `content_id` (empty when never mirrored).
    pub fn load_state(&self, content_id: &str) -> Result<Products> {
        let rel = Self::data_rel(content_id)?;
        let Some(bytes) = self.read(&rel)? else {
            return Ok(Products::default());
        };
        let where_ = rel.under(&self.root).display().to_string();
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::metadata(&where_, format!("malformed mirror state: {e}")))?;
        match value {
            serde_json::Value::Object(map) => Products::from_map(&where_, map),
            _ => Err(Error::metadata(
                &where_,
                "malformed mirror state: not an object",
            )),
        }
    }

    /// The local path of the mirrored tree of `content_id`.
    pub fn state_path(&self, content_id: &str) -> Result<PathBuf> {
        Ok(Self::data_rel(content_id)?.under(&self.root))
    }

    /// The raw bytes of the mirrored tree of `content_id`, if any.
    pub fn state_bytes(&self, content_id: &str) -> Result<Option<Vec<u8>>> {
        self.read(&Self::data_rel(content_id)?)
    }

    /// The file holding the fetch cache of runs with `key` (one per set of
    /// options: the MAAS documentation runs two filter sets into one mirror).
    fn cache_rel(key: &str) -> Result<RelPath> {
        let digest = crate::metadata::sha256_hex(key.as_bytes());
        Self::data_rel(&format!("{CACHE_PREFIX}{}.json", &digest[..16]))
    }

    /// The fetch cache of the last successful run with `key` (empty when
    /// missing, unreadable or for another key: it only saves requests).
    pub fn load_cache(&self, key: &str) -> crate::metadata::FetchCache {
        let cache: crate::metadata::FetchCache =
            match Self::cache_rel(key).map(|rel| self.read(&rel)) {
                Ok(Ok(Some(bytes))) => serde_json::from_slice(&bytes).unwrap_or_default(),
                _ => Default::default(),
            };
        if cache.key == key {
            cache
        } else {
            Default::default()
        }
    }

    /// Saves the fetch cache under its key.
    pub fn save_cache(&self, cache: &crate::metadata::FetchCache) -> Result<()> {
        let rel = Self::cache_rel(&cache.key)?;
        let text = serde_json::to_vec_pretty(cache)
            .map_err(|e| Error::metadata(rel.as_str(), e.to_string()))?;
        self.write_atomic(&rel, &text)
    }

    /// Writes the mirrored tree of `content_id` (indent 1, sorted keys).
    pub fn save_state(&self, content_id: &str, tree: &Products) -> Result<()> {
        let rel = Self::data_rel(content_id)?;
        self.write_atomic(&rel, &to_json(&tree.to_value()))
    }

    /// The references, duplicates removed.
    pub fn load_references(&self) -> Result<References> {
        let rel = Self::data_rel(REFERENCES)?;
        let Some(bytes) = self.read(&rel)? else {
            return Ok(References::new());
        };
        let where_ = rel.under(&self.root).display().to_string();
        let mut refs: References = serde_json::from_slice(&bytes)
            .map_err(|e| Error::metadata(&where_, format!("malformed references: {e}")))?;
        for list in refs.values_mut() {
            dedup_keep_order(list);
        }
        Ok(refs)
    }

    /// Writes the references (empty lists dropped; no file while there has
    /// never been anything to reference, as the reference does).
    pub fn save_references(&self, refs: &References) -> Result<()> {
        let rel = Self::data_rel(REFERENCES)?;
        let kept: References = refs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if kept.is_empty() && !rel.under(&self.root).exists() {
            return Ok(());
        }
        let mut text = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut text, PythonCompact);
        serde::Serialize::serialize(&kept, &mut ser)
            .map_err(|e| Error::metadata(REFERENCES, e.to_string()))?;
        self.write_atomic(&rel, &text)
    }

    /// Paths whose deletion an earlier run scheduled but did not finish.
    pub fn load_pending_deletes(&self) -> Result<BTreeSet<String>> {
        let rel = Self::data_rel(PENDING_DELETES)?;
        let Some(bytes) = self.read(&rel)? else {
            return Ok(BTreeSet::new());
        };
        Ok(serde_json::from_slice(&bytes).unwrap_or_default())
    }

    /// Records (or, when empty, clears) the pending deletions.
    pub fn save_pending_deletes(&self, paths: &BTreeSet<String>) -> Result<()> {
        let rel = Self::data_rel(PENDING_DELETES)?;
        if paths.is_empty() {
            let path = self.prepare(&rel)?;
            remove_if_present(&temp_path(&path))?;
            return remove_if_present(&path);
        }
        let text = serde_json::to_vec_pretty(paths)
            .map_err(|e| Error::metadata(PENDING_DELETES, e.to_string()))?;
        self.write_atomic(&rel, &text)
    }

    /// Takes the run lock of this mirror: fails at once if another run holds
    /// it, or waits for it with `wait`. A lock left by a killed run is free
    /// (the kernel releases it with the process).
    pub fn lock(&self, wait: bool) -> Result<RunLock> {
        let rel = Self::data_rel(LOCK)?;
        let path = self.prepare(&rel)?;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) if wait => {
                log::info!("{}: waiting for another run to finish", path.display());
                file.lock().map_err(|e| Error::io(&path, e))?;
            }
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                };
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
        Ok(RunLock { _file: file })
    }
}

/// Held while a run works on a mirror; released on drop or process death.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// The temporary file [`DirStore::write_atomic`] writes `path` through.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(crate::layout::temp_name(&name))
}

/// Removes a file (or a symlink, not its target) if it exists.
fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

fn dedup_keep_order(list: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    list.retain(|x| seen.insert(x.clone()));
}

/// Single-line JSON with `", "` and `": "` separators, as Python's
/// `json.dumps` writes `references.json`.
struct PythonCompact;

impl serde_json::ser::Formatter for PythonCompact {
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// JSON with indent 1, as the reference writes its state (keys sorted).
pub fn to_json(value: &serde_json::Value) -> Vec<u8> {
    let value = &sorted(value);
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing a Value cannot fail.
    let _ = serde::Serialize::serialize(value, &mut ser);
    out
}

/// A copy of `value` with every object's keys sorted.
fn sorted(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut pairs: Vec<(&String, &Value)> = map.iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn writes_atomically_and_removes_empty_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        store.write_atomic(&rel("a/b/c/file"), b"x").unwrap();
        store.write_atomic(&rel("a/keep"), b"y").unwrap();
        assert_eq!(fs::read(dir.path().join("a/b/c/file")).unwrap(), b"x");
        store.remove_item(&rel("a/b/c/file")).unwrap();
        assert!(!dir.path().join("a/b").exists());
        assert!(dir.path().join("a/keep").exists());
    }

    #[test]
    fn refuses_symlinked_directories() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("evil")).unwrap();
        let store = DirStore::new(dir.path());
        let err = store
            .write_atomic(&rel("evil/x"), b"x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("symlink"), "{err}");
        assert!(!outside.path().join("x").exists());
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("f")).unwrap();
        assert!(store.prepare(&rel("f")).is_err());
    }

    #[test]
    fn references_heal_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(".data")).unwrap();
        fs::write(
            dir.path().join(".data/references.json"),
            r#"{"p": ["a", "b", "a"], "q": []}"#,
        )
        .unwrap();
        let store = DirStore::new(dir.path());
        let refs = store.load_references().unwrap();
        assert_eq!(refs["p"], ["a", "b"]);
        store.save_references(&refs).unwrap();
        let back = store.load_references().unwrap();
        assert!(!back.contains_key("q"));
        let text = fs::read_to_string(dir.path().join(".data/references.json")).unwrap();
        assert_eq!(text, r#"{"p": ["a", "b"]}"#);
    }

    #[test]
    fn second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        let held = store.lock(false).unwrap();
        let err = store.lock(false).unwrap_err().to_string();
        assert!(err.contains("another run"), "{err}");
        drop(held);
        store.lock(false).unwrap();
    }

    #[test]
    fn state_round_trips_with_indent_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        let doc = r#"{"format":"products:1.0","content_id":"c:1","products":{"p":{"arch":"amd64","versions":{"1":{"items":{"i":{"path":"x","size":1}}}}}}}"#;
        let tree = Products::parse("u", doc.as_bytes()).unwrap();
        store.save_state("c:1", &tree).unwrap();
        let text = fs::read_to_string(dir.path().join(".data/c:1")).unwrap();
        assert!(text.starts_with("{\n \"content_id\""), "{text}");
        let back = store.load_state("c:1").unwrap();
        assert_eq!(back.to_value(), tree.to_value());
        assert!(store.save_state("../x", &tree).is_err());
    }
}
