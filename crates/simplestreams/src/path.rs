//! Checked relative paths.
//!
//! Every `path` in SimpleStreams metadata is relative to the mirror root. A
//! [`RelPath`] can only be built from a path that is safe to join onto a
//! local directory: no absolute paths, no `..`, `.` or empty segments, no
//! backslashes, no NUL or other control characters.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A normalised, safe, `/`-separated path relative to a mirror root.
///
/// Cheap to clone (shared): a plan names each item's path several times.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Arc<str>);

/// Why a path is not a safe relative path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("empty path")]
    Empty,
    /// The path starts with `/`.
    #[error("absolute path")]
    Absolute,
    /// A segment is `..`.
    #[error("'..' segment")]
    ParentSegment,
    /// A segment is `.`.
    #[error("'.' segment")]
    CurrentSegment,
    /// Two `/` in a row or a trailing `/`.
    #[error("empty segment")]
    EmptySegment,
    /// A backslash, which some systems treat as a separator.
    #[error("backslash")]
    Backslash,
    /// A NUL or other control character.
    #[error("control character")]
    Control,
    /// A `/` where a single file name is wanted.
    #[error("'/' in a file name")]
    Separator,
    /// Longer than any file system accepts.
    #[error("too long")]
    TooLong,
}

impl RelPath {
    /// Checks `s` and wraps it.
    pub fn parse(s: &str) -> Result<RelPath, PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.len() > 4096 {
            return Err(PathError::TooLong);
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute);
        }
        if s.contains('\\') {
            return Err(PathError::Backslash);
        }
        if s.chars().any(char::is_control) {
            return Err(PathError::Control);
        }
        for segment in s.split('/') {
            match segment {
                "" => return Err(PathError::EmptySegment),
                "." => return Err(PathError::CurrentSegment),
                ".." => return Err(PathError::ParentSegment),
                _ if segment.len() > 255 => return Err(PathError::TooLong),
                _ => {}
            }
        }
        Ok(RelPath(s.into()))
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments of the path.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The path joined onto a local directory.
    pub fn under(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        p.extend(self.segments());
        p
    }

    /// The parent directories of this path, nearest first (not the root).
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        let s: &str = &self.0;
        s.match_indices('/').rev().map(move |(i, _)| &s[..i])
    }

    /// This path with `suffix` appended to its last segment.
    pub fn with_suffix(&self, suffix: &str) -> RelPath {
        RelPath(format!("{}{}", self.0, suffix).into())
    }

    /// Joins a relative `child` path under this one.
    pub fn join(&self, child: &RelPath) -> RelPath {
        RelPath(format!("{}/{}", self.0, child.0).into())
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RelPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Checks that `name` is usable as a single file name (for `content_id`
/// under `.data/`): one safe segment, colons allowed.
pub fn check_file_name(name: &str) -> Result<(), PathError> {
    let p = RelPath::parse(name)?;
    if p.as_str().contains('/') {
        return Err(PathError::Separator);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "a",
            "streams/v1/index.sjson",
            "jammy/amd64/20250718/squashfs",
            "streams/v1/com.ubuntu.maas:stable:v3:download.json",
            "a/..b/c..",
            ".hidden/x",
        ] {
            assert_eq!(RelPath::parse(p).unwrap().as_str(), p);
        }
    }

    #[test]
    fn rejects_unsafe_paths() {
        let cases = [
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("../x", PathError::ParentSegment),
            ("a/../../x", PathError::ParentSegment),
            ("a/..", PathError::ParentSegment),
            ("a/./b", PathError::CurrentSegment),
            ("./a", PathError::CurrentSegment),
            ("a//b", PathError::EmptySegment),
            ("a/", PathError::EmptySegment),
            ("a\\..\\b", PathError::Backslash),
            ("a\0b", PathError::Control),
            ("a\nb", PathError::Control),
        ];
        for (p, want) in cases {
            assert_eq!(RelPath::parse(p), Err(want), "{p:?}");
        }
        assert_eq!(RelPath::parse(&"a/".repeat(3000)), Err(PathError::TooLong));
    }

    #[test]
    fn ancestors_nearest_first() {
        let p = RelPath::parse("a/b/c/d").unwrap();
        assert_eq!(p.ancestors().collect::<Vec<_>>(), ["a/b/c", "a/b", "a"]);
        assert_eq!(RelPath::parse("x").unwrap().ancestors().count(), 0);
    }

    #[test]
    fn under_joins_segments() {
        let p = RelPath::parse("a/b").unwrap();
        assert_eq!(p.under(Path::new("/m")), PathBuf::from("/m/a/b"));
    }

    #[test]
    fn file_names() {
        assert!(check_file_name("com.ubuntu.maas:stable:v3:download").is_ok());
        assert!(check_file_name("a/b").is_err());
        assert!(check_file_name("..").is_err());
        assert!(check_file_name("").is_err());
    }
}
