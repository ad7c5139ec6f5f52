//! The served directory, pinned: opened once at startup and every request
//! resolved under that handle, so that renaming the directory or putting a
//! symbolic link in its place (`mv root root.old; ln -s /etc root`) changes
//! nothing of what is served or listed.
//!
//! One resolution ([`Root::resolve`]) serves files, listings and the landing
//! page alike: what a listing shows is what a request gets.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::paths::inside_root;

/// A path relative to the served directory, free of symbolic links,
/// `.`/`..` and hidden names: where a request resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved(PathBuf);

impl Resolved {
    /// The served directory itself.
    pub(crate) fn top() -> Resolved {
        Resolved(PathBuf::new())
    }
}

/// The served directory, open for the life of the server.
#[derive(Debug)]
pub(crate) struct Root {
    /// Held open: the directory stays the one served whatever happens to
    /// its name.
    _dir: File,
    /// `/proc/self/fd/<fd>`: a path that reaches the open directory (the
    /// kernel follows it to the directory itself, not to its old name).
    base: PathBuf,
}

impl Root {
    /// Opens the directory `dir` (following a symbolic link given on the
    /// command line once, here).
    pub(crate) fn open(dir: &Path) -> io::Result<Root> {
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)?;
        let base = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
        // Without /proc the directory cannot be reached through its handle.
        std::fs::metadata(&base)?;
        Ok(Root { _dir: handle, base })
    }

    /// Where the directory is now, canonical (it may have been renamed).
    fn real(&self) -> io::Result<PathBuf> {
        std::fs::canonicalize(&self.base)
    }

    /// A path that reaches `resolved` through the open directory.
    pub(crate) fn path(&self, resolved: &Resolved) -> PathBuf {
        self.base.join(&resolved.0)
    }

    /// Resolves request segments (already checked: no empty, `.` or `..`
    /// ones) under the served directory. Symbolic links are followed only
    /// while they stay inside it and lead to no hidden name; anything else
    /// is not found.
    pub(crate) fn resolve<S: AsRef<OsStr>>(&self, segments: &[S]) -> io::Result<Resolved> {
        let mut path = self.base.clone();
        path.extend(segments.iter().map(AsRef::as_ref));
        let real = std::fs::canonicalize(&path)?;
        self.relative(&real)
    }

    /// Whether the canonical path `real` (e.g. where an open descriptor
    /// points) is the served directory or a visible path under it.
    pub(crate) fn holds(&self, real: &Path) -> bool {
        self.relative(real).is_ok()
    }

    /// `real` relative to the served directory, if inside and visible.
    fn relative(&self, real: &Path) -> io::Result<Resolved> {
        let root = self.real()?;
        if !inside_root(&root, real) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let rel = real
            .strip_prefix(&root)
            .map_err(|_| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Resolved(rel.to_path_buf()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("a/b")).expect("mkdir");
        fs::write(root.join("a/b/file"), b"mine").expect("write");
        fs::create_dir_all(tmp.path().join("other")).expect("mkdir");
        fs::write(tmp.path().join("other/file"), b"theirs").expect("write");
        (tmp, root)
    }

    #[test]
    fn resolves_inside_and_refuses_what_leaves() {
        let (tmp, root_dir) = tree();
        std::os::unix::fs::symlink("a/b", root_dir.join("in")).expect("symlink");
        std::os::unix::fs::symlink(tmp.path().join("other"), root_dir.join("out"))
            .expect("symlink");
        fs::create_dir(root_dir.join(".data")).expect("mkdir");
        std::os::unix::fs::symlink(".data", root_dir.join("state")).expect("symlink");
        let root = Root::open(&root_dir).expect("open");
        let r = root.resolve(&["in", "file"]).expect("inside");
        assert_eq!(r.0, Path::new("a/b/file"));
        assert_eq!(fs::read(root.path(&r)).expect("read"), b"mine");
        assert_eq!(root.resolve::<&str>(&[]).expect("top"), Resolved::top());
        for bad in [&["out", "file"][..], &["state"], &["missing"]] {
            let e = root.resolve(bad).expect_err("not served");
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{bad:?}");
        }
    }

    #[test]
    fn stays_on_the_directory_it_opened_when_its_name_is_replaced() {
        let (tmp, root_dir) = tree();
        let root = Root::open(&root_dir).expect("open");
        fs::rename(&root_dir, tmp.path().join("root.old")).expect("rename");
        std::os::unix::fs::symlink(tmp.path().join("other"), &root_dir).expect("symlink");
        let r = root.resolve(&["a", "b", "file"]).expect("still served");
        assert_eq!(fs::read(root.path(&r)).expect("read"), b"mine");
        assert!(
            root.resolve(&["file"]).is_err(),
            "the new target is not served"
        );
        assert!(!root.holds(&tmp.path().join("other/file")));
    }
}
