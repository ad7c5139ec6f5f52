//! Snapshots and views with real parts: mirrors made by our
//! `sstream-mirror` (and the reference's), views published and switched by
//! `sstream`, read back by the reference `sstream-query` and
//! `sstream-mirror`, by `gpgv`, and over HTTP from `sstream serve`.

mod faults_support;
mod support;

use faults_support::{args, assert_ok, mirror, s, small_spec};
use serde_json::Value;
use simplestreams::sample;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

const DAY1: &str = "20250615";
const DAY2: &str = "20250718";
const DAY3: &str = "20250820";

/// `sstream ARGS`.
fn sstream(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sstream"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run sstream")
}

fn out_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failure with one line on stderr holding every needle.
fn assert_one_line_failure(o: &Output, code: i32, needles: &[&str]) {
    let err = err_text(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
}

/// An upstream sample stream, unsigned, of these versions (replacing the
/// metadata of the day before; old payloads stay, as on a real server).
fn upstream(src: &Path, versions: &[&str]) {
    let _ = fs::remove_dir_all(src.join("streams"));
    sample::generate(&small_spec(versions), src, None).unwrap();
}

/// Mirrors `src` into `dir` with our `sstream-mirror` and `extra` options.
fn mirror_into(src: &Path, dir: &Path, extra: &[&str]) {
    assert_ok(&mirror(&args(s(src), s(dir), extra)), "mirror");
}

/// Creates a snapshot named `name` of `dir`.
fn snapshot(dir: &Path, name: &str) {
    let o = sstream(&["snapshot", "create", s(dir), "--name", name]);
    assert!(o.status.success(), "snapshot create: {}", err_text(&o));
    assert!(out_text(&o).contains(name), "{}", out_text(&o));
}

/// Publishes the snapshot `name` of `dir` into `view` with `extra`.
fn publish(view: &Path, dir: &Path, name: &str, extra: &[&str]) -> Output {
    let mut a = vec!["publish", s(view), "--from", s(dir), "--snapshot", name];
    a.extend_from_slice(extra);
    sstream(&a)
}

fn publish_ok(view: &Path, dir: &Path, name: &str, extra: &[&str]) {
    let o = publish(view, dir, name, extra);
    assert!(o.status.success(), "publish {name}: {}", err_text(&o));
    assert!(
        out_text(&o).contains(&format!("shows snapshot {name}")),
        "{}",
        out_text(&o)
    );
}

/// The item paths (with their bytes) the metadata under `root` lists:
/// every products file its `streams/v1/index.json` names.
fn listed(root: &Path) -> BTreeMap<String, (u64, String)> {
    let index: Value =
        serde_json::from_slice(&fs::read(root.join("streams/v1/index.json")).unwrap()).unwrap();
    let mut out = BTreeMap::new();
    for entry in index["index"].as_object().unwrap().values() {
        let path = entry["path"].as_str().unwrap();
        let doc: Value = serde_json::from_slice(&fs::read(root.join(path)).unwrap()).unwrap();
        for product in doc["products"].as_object().unwrap().values() {
            for version in product["versions"].as_object().unwrap().values() {
                for item in version["items"].as_object().unwrap().values() {
                    out.insert(
                        item["path"].as_str().unwrap().to_owned(),
                        (
                            item["size"].as_u64().unwrap(),
                            item["sha256"].as_str().unwrap_or_default().to_owned(),
                        ),
                    );
                }
            }
        }
    }
    out
}

/// The image versions (not the bootloaders') the metadata under `root`
/// lists.
fn versions(root: &Path) -> BTreeSet<String> {
    let index: Value =
        serde_json::from_slice(&fs::read(root.join("streams/v1/index.json")).unwrap()).unwrap();
    let mut out = BTreeSet::new();
    for entry in index["index"].as_object().unwrap().values() {
        let path = entry["path"].as_str().unwrap();
        let doc: Value = serde_json::from_slice(&fs::read(root.join(path)).unwrap()).unwrap();
        for product in doc["products"].as_object().unwrap().values() {
            let names = product["versions"].as_object().unwrap().keys();
            out.extend(names.filter(|v| !v.contains('.')).cloned());
        }
    }
    out
}

/// Every listed file of the view is there, whole (size and SHA-256).
fn assert_complete(view: &Path) {
    for (path, (size, sha)) in listed(view) {
        let bytes = fs::read(view.join(&path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(bytes.len() as u64, size, "{path}");
        assert_eq!(simplestreams::hash::sha256_hex(&bytes), sha, "{path}");
    }
}

/// A mirror of day 1 and day 2 (`--max 1`: day 2 replaces day 1) with a
/// snapshot of each, `d1` and `d2`.
struct Site {
    src: TempDir,
    mirror: TempDir,
    views: TempDir,
}

impl Site {
    fn new() -> Site {
        let site = Site {
            src: TempDir::new().unwrap(),
            mirror: TempDir::new().unwrap(),
            views: TempDir::new().unwrap(),
        };
        upstream(site.src.path(), &[DAY1]);
        mirror_into(site.src.path(), site.mirror.path(), &["--max", "1"]);
        snapshot(site.mirror.path(), "d1");
        upstream(site.src.path(), &[DAY1, DAY2]);
        mirror_into(site.src.path(), site.mirror.path(), &["--max", "1"]);
        snapshot(site.mirror.path(), "d2");
        site
    }

    fn dir(&self) -> &Path {
        self.mirror.path()
    }

    fn view(&self, name: &str) -> PathBuf {
        self.views.path().join(name)
    }
}

/// A view shows exactly its snapshot; promotion and rollback switch it,
/// and the history goes back step by step.
#[test]
fn a_view_shows_its_snapshot_and_switches_on_promotion_and_rollback() {
    let site = Site::new();
    let view = site.view("production");
    publish_ok(&view, site.dir(), "d1", &["--delete-delay", "0"]);
    assert_eq!(versions(&view), BTreeSet::from([DAY1.to_owned()]));
    assert_complete(&view);
    assert!(
        !view.join("streams/v1/index.sjson").exists(),
        "no key: plain only"
    );

    publish_ok(&view, site.dir(), "d2", &["--delete-delay", "0"]);
    assert_eq!(versions(&view), BTreeSet::from([DAY2.to_owned()]));
    assert_complete(&view);

    let o = sstream(&["rollback", s(&view)]);
    assert!(o.status.success(), "{}", err_text(&o));
    assert!(
        out_text(&o).contains("shows snapshot d1"),
        "{}",
        out_text(&o)
    );
    assert_eq!(versions(&view), BTreeSet::from([DAY1.to_owned()]));
    assert_complete(&view);

    let o = sstream(&["rollback", s(&view)]);
    assert_one_line_failure(&o, 1, &["nothing to roll back to", "\"d1\""]);
    assert_eq!(versions(&view), BTreeSet::from([DAY1.to_owned()]));
}
