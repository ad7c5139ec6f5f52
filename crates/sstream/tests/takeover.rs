//! Take-over: one tool continues a mirror the other one made, downloading
//! only the items that are new, and ends with the tree the reference makes
//! on its own. Served by the counting server of `support` so the test can
//! see every request.

mod support;

use simplestreams::sample::{SampleRelease, SampleSpec, SampleStream};
use std::collections::BTreeSet;
use std::path::Path;
use support::*;

fn spec(versions: &[&str], bootloaders: &[&str]) -> SampleSpec {
    SampleSpec {
        releases: vec![
            SampleRelease::new("xenial", "16.04"),
            SampleRelease::new("jammy", "22.04"),
        ],
        versions: versions.iter().map(|s| s.to_string()).collect(),
        bootloader_versions: bootloaders.iter().map(|s| s.to_string()).collect(),
        payload_bytes: 64 * 1024,
        ..SampleSpec::default()
    }
}

/// `first` mirrors day 0, `second` continues with day 1 in the same
/// directory; the reference alone does both days elsewhere.
fn take_over(first: &Path, second: &Path, second_is_ours: bool) {
    let gpg = Gpg::new();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let day0 = gpg.generate(&spec(&["20250601", "20250615"], &["20230222.0"]), &src);
    let server = CountingServer::start(&src);
    let k = format!("--keyring={}", gpg.keyring.display());
    let run = |tool: &Path, out: &Path| {
        run_ok(
            tool,
            &gpg.verify_home,
            &args(&[&k, "--max=2", &server.url, &out.to_string_lossy()]),
        );
    };
    let (shared, alone) = (
        tmp.path().join("shared"),
        tmp.path().join("reference-alone"),
    );
    run(first, &shared);
    run(&reference_mirror(), &alone);
    compare_trees(&alone, &shared);

    // Day 1: a new version of every product (the oldest leaves with --max=2)
    // and a new bootloader version.
    let day1: SampleStream = gpg.generate(
        &spec(
            &["20250601", "20250615", "20250701"],
            &["20230222.0", "20231004.0"],
        ),
        &src,
    );
    server.clear();
    run(second, &shared);
    let log = server.log();

    let known: BTreeSet<&String> = day0.payloads.keys().chain(day1.payloads.keys()).collect();
    let new: BTreeSet<&String> = day1
        .payloads
        .keys()
        .filter(|p| !day0.payloads.contains_key(*p))
        .collect();
    assert!(
        new.iter().any(|p| p.ends_with("20250701/squashfs")),
        "{new:?}"
    );
    let item_requests: Vec<&Served> = log.iter().filter(|r| known.contains(&r.path)).collect();
    let requested: BTreeSet<&String> = item_requests.iter().map(|r| &r.path).collect();
    assert_eq!(
        requested, new,
        "item paths requested on day 1 (expected only the new ones)"
    );
    if second_is_ours {
        // Each new path is fetched once, in full; nothing else is downloaded.
        let bytes: u64 = item_requests.iter().map(|r| r.bytes).sum();
        let expected: u64 = new.iter().map(|p| day1.payloads[*p]).sum();
        assert_eq!(
            bytes, expected,
            "item bytes served on day 1; requests: {item_requests:#?}"
        );
        assert_eq!(
            item_requests.len(),
            new.len(),
            "requests: {item_requests:#?}"
        );
    }

    run(&reference_mirror(), &alone);
    compare_trees(&alone, &shared);
    let f = files(&shared);
    assert!(f.contains("jammy/amd64/20250701/squashfs"));
    assert!(!f.contains("jammy/amd64/20250601/squashfs"));
}

#[test]
fn ours_continues_a_reference_mirror() {
    take_over(&reference_mirror(), &ours_mirror(), true);
}

#[test]
fn reference_continues_our_mirror() {
    take_over(&ours_mirror(), &reference_mirror(), false);
}

/// The GET request lines in our server's access log, as `(path, status)`.
fn gets(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split("\"GET ").nth(1)?;
            let (path, after) = rest.split_once('"')?;
            let status = after.split_whitespace().next()?;
            Some((path.to_owned(), status.to_owned()))
        })
        .collect()
}

/// A nightly run against an unchanged source costs one conditional request
/// per metadata file, each answered 304, and changes nothing; once a
/// products file changes, it alone is fetched again and its new items
/// arrive.
#[test]
fn noop_runs_are_conditional_and_cheap() {
    let gpg = Gpg::new();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    gpg.generate(&spec(&["20250601"], &["20230222.0"]), &src);
    let server = Server::start(&src);
    let out = tmp.path().join("out");
    let k = format!("--keyring={}", gpg.keyring.display());
    let run = || {
        run_ok(
            &ours_mirror(),
            &gpg.verify_home,
            &args(&[&k, "--max=1", &server.url, &out.to_string_lossy()]),
        )
    };
    // The reference does the same days in its own directory.
    let alone = tmp.path().join("alone");
    let reference_run = || {
        run_ok(
            &reference_mirror(),
            &gpg.verify_home,
            &args(&[&k, "--max=1", &server.url, &alone.to_string_lossy()]),
        )
    };
    run();
    reference_run();
    let before = snapshot(&out);
    let first = gets(&server.stderr()).len();
    run();
    let noop: Vec<_> = gets(&server.stderr()).into_iter().skip(first).collect();
    let metadata = 3; // index.sjson + two products files
    assert_eq!(noop.len(), metadata, "{noop:?}");
    assert!(
        noop.iter()
            .all(|(p, s)| p.ends_with(".sjson") && s == "304"),
        "{noop:?}"
    );
    let after = snapshot(&out);
    let changed: Vec<&String> = after
        .keys()
        .chain(before.keys())
        .filter(|k| !k.ends_with(".lock") && before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "a no-op run changed {changed:?}");

    // A published copy changed behind our back (same size) is not trusted
    // for a conditional request: it is fetched again and restored.
    let v3 = out.join("streams/v1/com.ubuntu.maas:stable:v3:download.sjson");
    let good = std::fs::read(&v3).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 10;
    bad[last] ^= 0x20;
    std::fs::write(&v3, &bad).unwrap();
    let seen = gets(&server.stderr()).len();
    run();
    let again: Vec<_> = gets(&server.stderr()).into_iter().skip(seen).collect();
    assert!(
        again
            .iter()
            .any(|(p, s)| p.ends_with("v3:download.sjson") && s == "200"),
        "{again:?}"
    );
    assert_eq!(std::fs::read(&v3).unwrap(), good, "the copy is restored");

    // The bootloader stream gets a new version; the v3 products file keeps
    // its bytes (and so its validators).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    gpg.generate(&spec(&["20250601"], &["20230222.0", "20231004.0"]), &src);
    let seen = gets(&server.stderr()).len();
    run();
    let update: Vec<_> = gets(&server.stderr()).into_iter().skip(seen).collect();
    assert!(
        update
            .iter()
            .any(|(p, s)| p.contains("bootloader-download.sjson") && s == "200"),
        "{update:?}"
    );
    assert!(
        update
            .iter()
            .any(|(p, s)| p.contains("20231004.0") && s == "200"),
        "new bootloaders fetched: {update:?}"
    );
    reference_run();
    compare_trees(&alone, &out);
}
