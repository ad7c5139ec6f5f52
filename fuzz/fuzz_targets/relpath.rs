//! `RelPath::parse`: whatever it accepts is safe to join under a root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simplestreams::path::{RelPath, check_file_name};
use std::path::{Component, Path};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = check_file_name(s);
    let Ok(p) = RelPath::parse(s) else {
        return;
    };
    assert_eq!(p.as_str(), s);
    assert!(!s.starts_with('/') && !s.contains('\\') && !s.contains('\0'));
    for seg in p.segments() {
        assert!(!seg.is_empty() && seg != "." && seg != "..");
    }
    let root = Path::new("/mirror/root");
    let joined = p.under(root);
    assert!(joined.starts_with(root));
    assert!(
        joined
            .strip_prefix(root)
            .unwrap()
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    );
    assert_eq!(p.ancestors().count(), p.segments().count() - 1);
    assert_eq!(RelPath::parse(p.as_str()).as_ref(), Ok(&p));
});
