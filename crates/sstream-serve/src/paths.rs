//! Request paths: decoding and checking them, the names never served, the
//! root they may not leave, and URL paths for links.
//!
//! Shared by the request handling and the HTML pages; depends on neither.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path};

use hyper::StatusCode;

/// A request path, decoded and checked.
pub(crate) struct ReqPath {
    /// Decoded segments (no empty, `.` or `..` ones).
    pub(crate) segments: Vec<OsString>,
    /// Whether the path ended with `/`.
    pub(crate) trailing_slash: bool,
}

/// Whether a file or directory name is never served nor listed: dot files
/// (the mirror state `.data/`, temporary files, `.lock`), downloads in
/// progress (`*.part`) and lock files (`*.lock`).
pub(crate) fn is_hidden(name: &[u8]) -> bool {
    name.first() == Some(&b'.') || name.ends_with(b".part") || name.ends_with(b".lock")
}

/// Decodes and checks the path of a request. Errors: 400 for traversal and
/// malformed paths, 404 for hidden names.
pub(crate) fn parse_path(raw: &str) -> Result<ReqPath, StatusCode> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(StatusCode::BAD_REQUEST);
    };
    let mut segments = Vec::new();
    let mut hidden = false;
    for raw_seg in rest.split('/') {
        let seg = percent_decode(raw_seg).ok_or(StatusCode::BAD_REQUEST)?;
        if seg.iter().any(|&b| b == b'/' || b == b'\\' || b == 0) {
            return Err(StatusCode::BAD_REQUEST);
        }
        match seg.as_slice() {
            b"" => continue,
            b"." | b".." => return Err(StatusCode::BAD_REQUEST),
            _ => {}
        }
        hidden |= is_hidden(&seg);
        segments.push(OsString::from_vec(seg));
    }
    if hidden {
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(ReqPath {
        segments,
        trailing_slash: raw.ends_with('/'),
    })
}

/// Decodes `%XX` escapes; `None` on a malformed escape (which the
/// `percent-encoding` crate would pass through instead).
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Percent-encodes one path segment for a URL.
fn percent_encode(seg: &[u8]) -> String {
    let mut out = String::with_capacity(seg.len());
    for &b in seg {
        if b.is_ascii_alphanumeric() || b"-._~:@+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The absolute URL path of `segments`, with a trailing slash if `dir`.
pub(crate) fn url_path<S: AsRef<OsStr>>(segments: &[S], dir: bool) -> String {
    let mut out = String::from("/");
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&percent_encode(s.as_ref().as_bytes()));
    }
    if dir && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// Whether the canonical path `real` is the root or a visible path under it.
pub(crate) fn inside_root(root: &Path, real: &Path) -> bool {
    match real.strip_prefix(root) {
        Ok(rel) => rel.components().all(|c| match c {
            Component::Normal(n) => !is_hidden(n.as_bytes()),
            _ => false,
        }),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = parse_path("/streams/v1/").unwrap();
        assert_eq!(p.segments, vec![OsString::from("streams"), "v1".into()]);
        assert!(p.trailing_slash);
        let p = parse_path("/a%20b//c").unwrap();
        assert_eq!(p.segments, vec![OsString::from("a b"), "c".into()]);
        assert!(!p.trailing_slash);
        for bad in [
            "/../etc/passwd",
            "/a/%2e%2e/b",
            "/a%2fb",
            "/a%5cb",
            "/a\\b",
            "/%00",
            "/%zz",
            "/a/.",
            "relative",
        ] {
            assert_eq!(
                parse_path(bad).err(),
                Some(StatusCode::BAD_REQUEST),
                "{bad}"
            );
        }
        for hidden in [
            "/.data/x",
            "/a/b.part",
            "/mirror.lock",
            "/.lock",
            "/%2edata/",
        ] {
            assert_eq!(
                parse_path(hidden).err(),
                Some(StatusCode::NOT_FOUND),
                "{hidden}"
            );
        }
    }

    #[test]
    fn encoding() {
        assert_eq!(url_path(&["a b", "c:d"], true), "/a%20b/c:d/");
        assert_eq!(url_path::<&str>(&[], true), "/");
    }

    #[test]
    fn root() {
        let root = Path::new("/srv/m");
        assert!(inside_root(root, Path::new("/srv/m")));
        assert!(inside_root(root, Path::new("/srv/m/a/b")));
        assert!(!inside_root(root, Path::new("/srv/m/.data/x")));
        assert!(!inside_root(root, Path::new("/srv/other")));
    }
}
