//! The mirror's own bookkeeping cannot be turned against it: a forged or
//! corrupt pending-deletes file deletes nothing of the mirror and wedges no
//! run, stale referrers and orphans of failed runs are collected, and a
//! filter that selects nothing fails before anything is written. Real
//! `sstream-mirror` runs on real trees.

mod faults_support;
mod support;

use faults_support::{
    FaultServer, args, assert_failed, assert_ok, inconsistencies, leftovers, mirror, s, stderr,
};
use simplestreams::sample::{self, SampleSpec};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

const OLD: &str = "20250615";
const NEW: &str = "20250718";
const NEWER: &str = "20250820";

fn spec(versions: &[&str]) -> SampleSpec {
    faults_support::small_spec(versions)
}

/// Replaces the stream in `src` by one of `versions`.
fn upstream(src: &Path, versions: &[&str]) {
    let _ = fs::remove_dir_all(src.join("streams"));
    sample::generate(&spec(versions), src, None).unwrap();
}

const PENDING: &str = ".data/sstream-pending-deletes.json";

/// Every file of the mirror (but the fetch caches, rewritten by any run).
fn mirror_files(root: &Path) -> BTreeSet<String> {
    support::files(root)
        .into_iter()
        .filter(|f| !f.starts_with(".data/sstream-cache"))
        .collect()
}

/// Every item file of the tree (not metadata, not `.data`).
fn item_files(root: &Path) -> BTreeSet<String> {
    support::files(root)
        .into_iter()
        .filter(|f| !f.starts_with(".data/") && !f.starts_with("streams/"))
        .collect()
}

/// A pending-deletes file naming the mirror's metadata, its state, its
/// references, its lock, paths outside it and a directory deletes none of
/// them; the run succeeds, warns about each entry naming the file, and the
/// file no longer holds them.
#[test]
fn a_forged_pending_deletes_file_deletes_nothing_of_the_mirror() {
    let src = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    let outside = TempDir::new().unwrap();
    fs::write(outside.path().join("victim"), b"x").unwrap();
    upstream(src.path(), &[OLD]);
    let run = || mirror(&args(s(src.path()), s(out.path()), &[]));
    assert_ok(&run(), "day 1");
    let before = mirror_files(out.path());
    let mut forged: Vec<String> = before
        .iter()
        .filter(|f| f.starts_with("streams/") || f.starts_with(".data/"))
        .cloned()
        .collect();
    forged.push(".data/sstream.lock".into());
    forged.push("xenial/amd64".into());
    forged.push(format!(
        "../{}/victim",
        outside.path().file_name().unwrap().to_str().unwrap()
    ));
    forged.push(format!("{}/victim", outside.path().display()));
    let entries: serde_json::Map<String, serde_json::Value> =
        forged.iter().map(|p| (p.clone(), 0.into())).collect();
    let file = out.path().join(PENDING);
    fs::write(&file, serde_json::to_vec(&entries).unwrap()).unwrap();

    let o = run();
    assert_ok(&o, "a run over a forged pending-deletes file");
    let err = stderr(&o);
    for entry in &forged {
        assert!(
            err.lines()
                .any(|l| l.contains(&file.display().to_string())
                    && l.contains(&format!("{entry:?}"))),
            "no warning names {entry}: {err}"
        );
    }
    let after = mirror_files(out.path());
    let lost: Vec<&String> = before.difference(&after).collect();
    assert!(lost.is_empty(), "deleted: {lost:?}\n{err}");
    assert!(out.path().join(".data/sstream.lock").is_file());
    assert!(outside.path().join("victim").is_file());
    assert!(out.path().join("xenial/amd64").is_dir());
    assert_eq!(inconsistencies(out.path()), Vec::<String>::new());
    assert!(!file.exists(), "the bad entries are gone from the file");
    assert_ok(&run(), "the next run");
}

/// Pending deletions dated in 2100 are capped at now: their files go once
/// the delete delay has passed since, with a warning.
#[test]
fn a_pending_deletion_dated_in_the_future_waits_only_the_delay() {
    let src = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    upstream(src.path(), &[OLD]);
    let run = || {
        mirror(&args(
            s(src.path()),
            s(out.path()),
            &["--max=1", "--delete-delay", "1s"],
        ))
    };
    assert_ok(&run(), "day 1");
    upstream(src.path(), &[OLD, NEW]);
    assert_ok(&run(), "day 2");
    let file = out.path().join(PENDING);
    let pending: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    assert!(!pending.is_empty());
    let future: serde_json::Map<String, serde_json::Value> = pending
        .keys()
        .map(|k| (k.clone(), 4_102_444_800u64.into()))
        .collect();
    fs::write(&file, serde_json::to_vec(&future).unwrap()).unwrap();
    let o = run();
    assert_ok(&o, "the run that finds dates in 2100");
    assert!(
        stderr(&o).contains("in the future") && stderr(&o).contains(&file.display().to_string()),
        "{}",
        stderr(&o)
    );
    // More than the delay later, the next run deletes them.
    std::thread::sleep(Duration::from_millis(2100));
    assert_ok(&run(), "a run after the delay");
    for p in pending.keys() {
        assert!(!out.path().join(p).exists(), "{p} kept for ever");
    }
    assert!(!file.exists());
}

/// A run killed between writing the references and the states (the tree
/// as such a kill leaves it: day 2's references over day 1's states and
/// documents, day 2's new files in place), then an upstream that moved on:
/// the stale referrers are dropped and their files deleted, no orphan is
/// left, and the tree is what a clean run makes.
#[test]
fn stale_referrers_of_a_killed_run_are_reconciled() {
    let src = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    let clean = TempDir::new().unwrap();
    upstream(src.path(), &[OLD]);
    let run = |dir: &Path| mirror(&args(s(src.path()), s(dir), &[]));
    assert_ok(&run(out.path()), "day 1");
    let day1 = support::snapshot(out.path());
    upstream(src.path(), &[OLD, NEW]);
    assert_ok(&run(out.path()), "day 2");
    let refs = fs::read(out.path().join(".data/references.json")).unwrap();
    // Back to day 1's states and documents, day 2's references and files.
    for (rel, bytes) in &day1 {
        if rel != ".data/references.json" && !rel.ends_with('/') {
            fs::write(out.path().join(rel), bytes).unwrap();
        }
    }
    fs::write(out.path().join(".data/references.json"), &refs).unwrap();
    upstream(src.path(), &[OLD, NEWER]);
    let o = run(out.path());
    assert_ok(&o, "day 3");
    assert_ok(&run(clean.path()), "a clean day 3");
    let refs = fs::read_to_string(out.path().join(".data/references.json")).unwrap();
    assert!(!refs.contains(NEW), "stale referrers kept: {refs}");
    assert_eq!(
        item_files(out.path()),
        item_files(clean.path()),
        "files of the killed run's version left: {}",
        stderr(&o)
    );
    assert_eq!(
        fs::read(out.path().join(".data/references.json")).unwrap(),
        fs::read(clean.path().join(".data/references.json")).unwrap()
    );
}

/// One item of a new version answers 404 on day 1 (the content id is not
/// published, the version's other files arrived); on day 2 upstream moved
/// on: those files are collected, and so are `.part` files of items no
/// longer wanted.
#[test]
fn orphans_and_parts_of_a_failed_day_are_collected() {
    let src = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    let clean = TempDir::new().unwrap();
    upstream(src.path(), &[OLD]);
    let server = FaultServer::start(src.path());
    let run = |dir: &Path| mirror(&args(&server.url, s(dir), &["--retries", "0"]));
    assert_ok(&run(out.path()), "day 1");
    upstream(src.path(), &[OLD, NEW]);
    let broken = format!("xenial/amd64/{NEW}/squashfs");
    server.always(
        &broken,
        faults_support::Fault::Status {
            code: 404,
            retry_after: None,
        },
    );
    assert_failed(&run(out.path()), "day 2 with a 404", &[&broken]);
    let orphans: Vec<String> = item_files(out.path())
        .into_iter()
        .filter(|f| f.contains(NEW))
        .collect();
    assert!(!orphans.is_empty(), "the version's other files arrived");
    // A staging file of an item no state wants (as a killed run leaves).
    let part = out
        .path()
        .join(format!("xenial/amd64/{NEW}/boot-initrd.part"));
    fs::write(&part, b"partial").unwrap();
    upstream(src.path(), &[OLD, NEWER]);
    assert_ok(&run(out.path()), "day 3, upstream moved on");
    assert_ok(&run(clean.path()), "a clean day 3");
    assert_eq!(item_files(out.path()), item_files(clean.path()));
    assert_eq!(leftovers(out.path()), Vec::<String>::new());
    assert_eq!(inconsistencies(out.path()), Vec::<String>::new());
}

/// A filter on a key no item has, or one that selects no item
/// (`arch==amd64` compares with `=amd64`), fails before anything is
/// written, naming the filter and what exists.
#[test]
fn a_filter_that_selects_nothing_is_an_error() {
    let src = TempDir::new().unwrap();
    upstream(src.path(), &[OLD]);
    for (filter, needles) in [
        (
            "arhc=amd64",
            vec!["arhc=amd64", "no item of the stream has the key", "arch"],
        ),
        (
            "arch==amd64",
            vec![
                "arch==amd64",
                "selects no item",
                "arch: amd64",
                "arch=amd64",
            ],
        ),
        ("release~^zesty", vec!["release~^zesty", "release: xenial"]),
    ] {
        let out = TempDir::new().unwrap();
        let target = out.path().join("mirror");
        let mut a = args(s(src.path()), s(&target), &["-v"]);
        a.push(filter);
        let o = mirror(&a);
        assert_failed(&o, filter, &needles);
        let written: Vec<String> = support::files(&target)
            .into_iter()
            .filter(|f| f != ".data/sstream.lock")
            .collect();
        assert!(written.is_empty(), "{filter}: written {written:?}");
    }
    // A filter that selects something still mirrors.
    let out = TempDir::new().unwrap();
    let mut a = args(s(src.path()), s(out.path()), &[]);
    a.push("arch=amd64");
    assert_ok(&mirror(&a), "a good filter");
}

/// An upstream that lists nothing any more would empty a published mirror
/// under `--prune`: refused like the wipe guard (also where the wipe guard
/// sees no bytes: a mirror of metadata only), done with `--force`.
#[test]
fn emptying_a_mirror_needs_force() {
    for extra in [&[][..], &["--no-item-download"][..]] {
        let src = TempDir::new().unwrap();
        let out = TempDir::new().unwrap();
        upstream(src.path(), &[OLD]);
        let run = |more: &[&str]| {
            let mut e = vec!["--prune"];
            e.extend_from_slice(extra);
            e.extend_from_slice(more);
            mirror(&args(s(src.path()), s(out.path()), &e))
        };
        assert_ok(&run(&[]), "day 1");
        let state = |p: &Path| {
            let mut snap = support::snapshot(p);
            snap.retain(|k, _| !k.starts_with(".data/sstream"));
            snap
        };
        let before = state(out.path());
        // Upstream lists no image and no bootloader any more.
        let _ = fs::remove_dir_all(src.path().join("streams"));
        let empty = SampleSpec {
            bootloader_versions: Vec::new(),
            ..spec(&[])
        };
        sample::generate(&empty, src.path(), None).unwrap();
        let o = run(&[]);
        let mut needles = vec!["--force"];
        if !extra.is_empty() {
            needles.push("empty mirror");
        }
        assert_failed(&o, "emptying run", &needles);
        let after = state(out.path());
        let changed: Vec<&String> = after
            .keys()
            .chain(before.keys())
            .filter(|k| before.get(*k) != after.get(*k))
            .collect();
        assert!(
            changed.is_empty(),
            "{extra:?}: the mirror changed: {changed:?}"
        );
        assert_ok(&run(&["--force"]), "forced");
        assert!(
            !out.path().join(".data/references.json").exists()
                || !fs::read_to_string(out.path().join(".data/references.json"))
                    .unwrap()
                    .contains(OLD),
            "{extra:?}: forced, the versions are gone"
        );
    }
}
