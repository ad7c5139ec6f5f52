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
use support::gpgv;
use support::{listed_items as listed, listed_versions as versions};
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
    assert!(
        o.status.success(),
        "publish {name}: {}in the view: {:?}",
        err_text(&o),
        support::snapshot_all(view).keys().collect::<Vec<_>>()
    );
    assert!(
        out_text(&o).contains(&format!("shows snapshot {name}")),
        "{}",
        out_text(&o)
    );
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

/// A local signing key and its exported keyring, made by `sstream key`.
fn local_key(tmp: &Path) -> (PathBuf, PathBuf) {
    let (key, ring) = (tmp.join("view-key.asc"), tmp.join("view-keyring.gpg"));
    support::our_key(&key, &ring, &[]);
    (key, ring)
}

/// The reference `sstream-query` (item paths relative to `base`).
fn reference_query(base: &str, opts: &[&str], home: &Path) -> BTreeSet<String> {
    let o = Command::new(support::reference().join("sstream-query"))
        .args(opts)
        .arg("--output-format=%(item_url)s")
        .arg(base)
        .env("GNUPGHOME", home)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "reference sstream-query: {}",
        err_text(&o)
    );
    out_text(&o)
        .lines()
        .map(|l| {
            let rel = l.strip_prefix(base).unwrap_or(l);
            rel.trim_start_matches('/').to_owned()
        })
        .collect()
}

/// A signed view, narrowed by filters: gpgv accepts every signature with
/// the exported keyring; the reference `sstream-query` (over HTTP from
/// `sstream serve`, and from the directory) and `sstream-mirror` see
/// exactly the snapshot's selected items; `sstream verify` passes on it.
#[test]
fn a_signed_view_is_read_by_the_reference_tools_and_gpgv() {
    let site = Site::new();
    let tmp = TempDir::new().unwrap();
    let (key, ring) = local_key(tmp.path());
    let view = site.view("signed");
    publish_ok(
        &view,
        site.dir(),
        "d1",
        &["--sign-key", s(&key), "item_name!=manifest"],
    );
    let expected: BTreeSet<String> = listed(&view).into_keys().collect();
    assert!(!expected.is_empty());
    assert!(
        expected.iter().all(|p| !p.ends_with(".manifest")),
        "{expected:?}"
    );
    assert_complete(&view);

    let home = tmp.path().join("gpg-home");
    fs::create_dir(&home).unwrap();
    let meta = view.join("streams/v1");
    let mut checked = 0;
    for e in fs::read_dir(&meta).unwrap() {
        let p = e.unwrap().path();
        let name = p.to_string_lossy().into_owned();
        if name.ends_with(".sjson") {
            assert!(gpgv(&home, &ring, &[&p]), "{name}");
            checked += 1;
        } else if name.ends_with(".json.gpg") {
            let json = name.trim_end_matches(".gpg");
            assert!(gpgv(&home, &ring, &[&p, Path::new(json)]), "{name}");
            checked += 1;
        }
    }
    assert_eq!(
        checked, 6,
        "index and two products files, each .sjson and .json.gpg"
    );
    assert_eq!(
        fs::read(meta.join("mirror-keyring.gpg")).unwrap(),
        fs::read(&ring).unwrap()
    );

    let served = support::Server::start(&view);
    let keyring = format!("--keyring={}", ring.display());
    let over_http = reference_query(&served.url, &[&keyring], &home);
    assert_eq!(over_http, expected);
    let from_dir = reference_query(s(&view), &[&keyring], &home);
    assert_eq!(from_dir, expected);

    let copy = tmp.path().join("copy");
    let o = Command::new(support::reference_mirror())
        .arg(&keyring)
        .arg(&served.url)
        .arg(&copy)
        .env("GNUPGHOME", &home)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "reference sstream-mirror: {}",
        err_text(&o)
    );
    for path in &expected {
        assert_eq!(
            fs::read(copy.join(path)).unwrap(),
            fs::read(view.join(path)).unwrap(),
            "{path}"
        );
    }

    let o = sstream(&["verify", s(&view), "--strict", &keyring]);
    assert!(
        o.status.success(),
        "verify: {}{}",
        out_text(&o),
        err_text(&o)
    );
}

/// A plain view (no key) is read by the reference `sstream-query` from
/// its `index.json`, and lists exactly the snapshot's items: what the
/// mirror held then, not what it holds now.
#[test]
fn a_plain_view_lists_exactly_the_snapshot() {
    let site = Site::new();
    let view = site.view("plain");
    publish_ok(&view, site.dir(), "d1", &[]);
    let tmp = TempDir::new().unwrap();
    let seen = reference_query(
        s(&view),
        &["--no-verify", "--path", "streams/v1/index.json"],
        tmp.path(),
    );
    let snapshot_tree = site.dir().join(".data/snapshots/d1/tree");
    let in_snapshot: BTreeSet<String> = listed(&snapshot_tree).into_keys().collect();
    assert_eq!(seen, in_snapshot);
    assert!(seen.iter().all(|p| !p.contains(DAY2)), "{seen:?}");
    assert!(seen.iter().any(|p| p.contains(DAY1)), "{seen:?}");
    let o = sstream(&["verify", s(&view), "--strict"]);
    assert!(
        o.status.success(),
        "verify: {}{}",
        out_text(&o),
        err_text(&o)
    );
}

/// Every file of `view` with its bytes, but the lock (whose content is
/// the pid of its last holder).
fn view_bytes(view: &Path) -> BTreeMap<String, Vec<u8>> {
    support::snapshot_all(view)
        .into_iter()
        .filter(|(k, _)| !k.ends_with("sstream.lock"))
        .collect()
}

/// Asserts two file maps are the same, naming the files that differ.
fn assert_same_files(
    now: &BTreeMap<String, Vec<u8>>,
    before: &BTreeMap<String, Vec<u8>>,
    what: &str,
) {
    let keys: BTreeSet<&String> = now.keys().chain(before.keys()).collect();
    let differ: Vec<&&String> = keys
        .iter()
        .filter(|k| now.get(**k) != before.get(**k))
        .collect();
    assert!(differ.is_empty(), "{what}: files differ: {differ:?}");
}

/// Every bad input gives one line and a non-zero exit, and leaves the view
/// as it was.
#[test]
fn bad_input_is_one_line_and_leaves_the_view_as_it_was() {
    let site = Site::new();
    let view = site.view("production");
    publish_ok(&view, site.dir(), "d2", &[]);
    let before = view_bytes(&view);
    let unchanged = |what: &str| assert_same_files(&view_bytes(&view), &before, what);

    let o = publish(&view, site.dir(), "nope", &[]);
    assert_one_line_failure(&o, 1, &["no snapshot \"nope\"", "d1, d2"]);
    unchanged("unknown snapshot");
    let new = site.view("new");
    let o = publish(&new, site.dir(), "nope", &[]);
    assert_one_line_failure(&o, 1, &["no snapshot \"nope\""]);
    assert!(!new.exists(), "a failed first publish leaves no directory");

    // A mirror run holds the mirror's lock: no snapshot meanwhile.
    let run = fs::File::open(site.dir().join(".data/sstream.lock")).unwrap();
    run.lock().unwrap();
    let o = sstream(&["snapshot", "create", s(site.dir())]);
    assert_one_line_failure(&o, 1, &["sstream.lock", "a mirror run holds the lock"]);
    drop(run);

    let o = publish(&view, site.dir(), "../d1", &[]);
    assert_one_line_failure(&o, 1, &["snapshot name"]);
    unchanged("bad snapshot name");

    let o = publish(&view, site.dir(), "d1", &["release=warty"]);
    assert_one_line_failure(&o, 1, &["release=warty", "selects no item"]);
    unchanged("filters selecting nothing");

    // Not a view: a directory with files, the mirror itself, inside it.
    let other = site.view("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("notes.txt"), b"mine").unwrap();
    let o = publish(&other, site.dir(), "d1", &[]);
    assert_one_line_failure(&o, 1, &["not a view", "other"]);
    assert_eq!(fs::read_dir(&other).unwrap().count(), 1);
    let o = sstream(&["rollback", s(&other)]);
    assert_one_line_failure(&o, 1, &["not a view"]);
    let o = publish(site.dir(), site.dir(), "d1", &[]);
    assert_one_line_failure(&o, 1, &["the mirror itself"]);
    let inside = site.dir().join("view");
    let o = publish(&inside, site.dir(), "d1", &[]);
    assert_one_line_failure(&o, 1, &["inside the mirror"]);
    assert!(!inside.exists());

    // A bucket: refused as bad usage.
    let o = publish(Path::new("s3://bucket/view"), site.dir(), "d1", &[]);
    assert_one_line_failure(&o, 2, &["buckets"]);
    let o = sstream(&["snapshot", "create", "s3://bucket/mirror"]);
    assert_one_line_failure(&o, 2, &["buckets"]);

    // A second publish at once: the view's lock is held.
    let lock = fs::File::open(view.join(".data/sstream.lock")).unwrap();
    lock.lock().unwrap();
    let o = publish(&view, site.dir(), "d1", &[]);
    assert_one_line_failure(&o, 1, &["sstream.lock", "another publish or rollback"]);
    let o = sstream(&["rollback", s(&view)]);
    assert_one_line_failure(&o, 1, &["another publish or rollback"]);
    drop(lock);
    unchanged("locked");

    // A snapshot item damaged by hand: its size (always checked), its
    // bytes (checked with --verify-existing). d1's items are only in the
    // snapshot now (--max 1 removed them from the mirror).
    let tree = site.dir().join(".data/snapshots/d1/tree");
    let d1_only: Vec<String> = listed(&tree)
        .into_keys()
        .filter(|p| p.contains(DAY1) && p.ends_with("squashfs"))
        .collect();
    let victim = tree.join(&d1_only[0]);
    let good = fs::read(&victim).unwrap();
    let mut flipped = good.clone();
    flipped[0] ^= 0xff;
    fs::write(&victim, &flipped).unwrap();
    let o = publish(&view, site.dir(), "d1", &["--verify-existing"]);
    assert_one_line_failure(&o, 1, &[&d1_only[0], "sha256 mismatch"]);
    unchanged("damaged bytes");
    fs::write(&victim, &good[..good.len() - 1]).unwrap();
    let o = publish(&view, site.dir(), "d1", &[]);
    assert_one_line_failure(&o, 1, &[&d1_only[0], "size"]);
    unchanged("damaged size");
    fs::write(&victim, &good).unwrap();

    // The snapshot the view shows cannot be removed; another one can.
    let o = sstream(&["snapshot", "remove", s(site.dir()), "d2"]);
    assert_one_line_failure(&o, 1, &["\"d2\"", "production"]);
    let o = sstream(&["snapshot", "remove", s(site.dir()), "d9"]);
    assert_one_line_failure(&o, 1, &["no snapshot \"d9\""]);
    let o = sstream(&["snapshot", "create", s(site.dir()), "--name", "d1"]);
    assert_one_line_failure(&o, 1, &["\"d1\" exists already"]);
    let o = sstream(&["snapshot", "create", s(other.as_path())]);
    assert_one_line_failure(&o, 1, &["not a mirror"]);
    unchanged("refused removals");

    // After all that, the view still publishes and rolls back.
    publish_ok(&view, site.dir(), "d1", &[]);
    let o = sstream(&["rollback", s(&view)]);
    assert!(o.status.success(), "{}", err_text(&o));
    assert_eq!(versions(&view), BTreeSet::from([DAY2.to_owned()]));
}

/// A snapshot's items survive every later run: our `--max 1` and
/// `--prune`, and the reference `sstream-mirror` taking the directory
/// over; the mirror's own checks neither remove nor report them.
#[test]
fn snapshots_survive_later_runs_of_both_mirror_tools() {
    let site = Site::new();
    let d2_tree = site.dir().join(".data/snapshots/d2/tree");
    // The snapshot shares the mirror's bytes.
    for path in listed(&d2_tree).keys() {
        let a = fs::metadata(d2_tree.join(path)).unwrap();
        let b = fs::metadata(site.dir().join(path)).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&a),
            std::os::unix::fs::MetadataExt::ino(&b),
            "{path}: a hard link"
        );
    }
    // Day 3, with --prune and a narrower filter: the mirror drops day 2.
    upstream(site.src.path(), &[DAY3]);
    mirror_into(
        site.src.path(),
        site.dir(),
        &["--max", "1", "--prune", "--force", "--delete-delay", "0"],
    );
    let o = sstream(&["verify", s(site.dir()), "--strict", "--full"]);
    assert!(
        o.status.success(),
        "verify: {}{}",
        out_text(&o),
        err_text(&o)
    );
    // The reference takes the directory over: day 4 replaces day 3.
    upstream(site.src.path(), &["20250921"]);
    let o = Command::new(support::reference_mirror())
        .args(["--max=1", "--path", "streams/v1/index.json"])
        .arg(site.src.path())
        .arg(site.dir())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "reference sstream-mirror: {}",
        err_text(&o)
    );
    // The mirror no longer holds day 2: only the snapshot does.
    let day2: Vec<String> = listed(&d2_tree)
        .into_keys()
        .filter(|p| p.contains(DAY2))
        .collect();
    assert!(!day2.is_empty());
    assert!(
        day2.iter().all(|p| !site.dir().join(p).exists()),
        "{day2:?}"
    );
    let held: BTreeSet<String> = listed(site.dir())
        .into_keys()
        .filter(|p| site.dir().join(p).exists())
        .collect();
    assert!(
        held.iter().all(|p| !p.contains(DAY2) && !p.contains(DAY1)),
        "{held:?}"
    );

    let o = sstream(&["snapshot", "list", s(site.dir()), "--json"]);
    assert!(o.status.success(), "{}", err_text(&o));
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["d1", "d2"]);
    for (name, day) in [("d1", DAY1), ("d2", DAY2)] {
        let view = site.view(name);
        publish_ok(&view, site.dir(), name, &["--verify-existing"]);
        assert_eq!(versions(&view), BTreeSet::from([day.to_owned()]));
        assert_complete(&view);
    }
    let o = sstream(&["snapshot", "list", s(site.dir())]);
    assert!(out_text(&o).contains("shown"), "{}", out_text(&o));
}

/// `GET path` from the server at `base` (`http://127.0.0.1:PORT/`):
/// the status and the body (HTTP/1.0, so the body ends with the
/// connection).
fn http_get(base: &str, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    write!(conn, "GET /{path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of header");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, raw[split + 4..].to_vec())
}

/// Fetches everything the served metadata lists, as a client would (the
/// index, then each products file, then each item), and gives what went
/// wrong: a status other than 200, or bytes that do not match the
/// metadata.
fn fetch_everything(base: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let (status, index) = http_get(base, "streams/v1/index.json");
    if status != 200 {
        return vec![format!("index.json: {status}")];
    }
    let index: Value = serde_json::from_slice(&index).expect("index JSON");
    for entry in index["index"].as_object().unwrap().values() {
        let path = entry["path"].as_str().unwrap();
        let (status, doc) = http_get(base, path);
        if status != 200 {
            problems.push(format!("{path}: {status}"));
            continue;
        }
        let doc: Value = serde_json::from_slice(&doc).expect("products JSON");
        for product in doc["products"].as_object().unwrap().values() {
            for version in product["versions"].as_object().unwrap().values() {
                for item in version["items"].as_object().unwrap().values() {
                    let path = item["path"].as_str().unwrap();
                    let (status, body) = http_get(base, path);
                    let sha = simplestreams::hash::sha256_hex(&body);
                    if status != 200 {
                        problems.push(format!("{path}: {status}"));
                    } else if Some(sha.as_str()) != item["sha256"].as_str() {
                        problems.push(format!("{path}: wrong bytes"));
                    }
                }
            }
        }
    }
    problems
}

/// A reader fetching everything the served metadata lists, over and over
/// from `sstream serve`, while the view is promoted and rolled back: it
/// never meets a 404 or a wrong byte.
#[test]
fn readers_never_miss_a_file_during_promotions_and_rollbacks() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let site = Site::new();
    let view = site.view("production");
    publish_ok(&view, site.dir(), "d1", &[]);
    let served = support::Server::start(&view);
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (stop, rounds, problems) = (stop.clone(), rounds.clone(), problems.clone());
        let base = served.url.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let found = fetch_everything(&base);
                problems.lock().unwrap().extend(found);
                rounds.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let mut switches = 0;
    while switches < 8 || rounds.load(Ordering::SeqCst) < 4 {
        assert!(switches < 400, "the reader made no progress");
        if switches % 3 == 2 {
            let o = sstream(&["rollback", s(&view)]);
            assert!(o.status.success(), "rollback: {}", err_text(&o));
        } else {
            let name = if switches % 2 == 0 { "d2" } else { "d1" };
            publish_ok(&view, site.dir(), name, &[]);
        }
        switches += 1;
    }
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    let problems = problems.lock().unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    // Every file either generation lists is still there (the delete delay).
    for tree in ["d1", "d2"] {
        let tree = site.dir().join(".data/snapshots").join(tree).join("tree");
        for path in listed(&tree).keys() {
            assert!(view.join(path).is_file(), "{path}");
        }
    }
}

/// The view's files a client can see (metadata and items), with their
/// bytes.
fn visible(view: &Path) -> BTreeMap<String, Vec<u8>> {
    view_bytes(view)
        .into_iter()
        .filter(|(k, _)| !k.starts_with(".data/") && !k.ends_with('/'))
        .collect()
}

/// Upstream moves on for several days, the mirror follows (`--max 1`)
/// and a staging view follows the mirror's snapshots, while a view pinned
/// to the first day's snapshot serves it byte for byte, over HTTP too.
#[test]
fn a_pinned_view_keeps_serving_its_snapshot_while_upstream_moves_on() {
    let site = Site::new();
    let pinned = site.view("production");
    let staging = site.view("staging");
    publish_ok(&pinned, site.dir(), "d1", &["--delete-delay", "0"]);
    let shown = visible(&pinned);
    let served = support::Server::start(&pinned);
    for (n, day) in ["20250801", "20250901", "20251001"].iter().enumerate() {
        upstream(site.src.path(), &[day]);
        mirror_into(
            site.src.path(),
            site.dir(),
            &["--max", "1", "--delete-delay", "0"],
        );
        let name = format!("day{n}");
        snapshot(site.dir(), &name);
        publish_ok(&staging, site.dir(), &name, &["--delete-delay", "0"]);
        assert_eq!(versions(&staging), BTreeSet::from([day.to_string()]));
        assert_complete(&staging);
        assert_same_files(&visible(&pinned), &shown, day);
        assert!(shown.len() > 10, "{:?}", shown.keys());
        for (path, bytes) in &shown {
            let (status, body) = http_get(&served.url, path);
            assert_eq!(status, 200, "{path}");
            assert_eq!(&body, bytes, "{path}");
        }
        assert!(fetch_everything(&served.url).is_empty());
    }
    assert_eq!(versions(&pinned), BTreeSet::from([DAY1.to_owned()]));
}

/// What a view at rest must be: not published yet, or complete — every
/// listed file whole, every signature accepted by `gpgv`, and one of the
/// `allowed` generations (image versions).
fn assert_at_rest(view: &Path, home: &Path, ring: &Path, allowed: &[&str], round: usize) {
    if !view.join("streams/v1/index.json").exists() {
        assert!(
            !view.join("streams").exists(),
            "round {round}: half a streams/"
        );
        return;
    }
    assert_complete(view);
    let shown = versions(view);
    assert!(
        allowed
            .iter()
            .any(|d| shown == BTreeSet::from([d.to_string()])),
        "round {round}: shows {shown:?}"
    );
    let meta = view.join("streams/v1");
    for e in fs::read_dir(&meta).unwrap() {
        let p = e.unwrap().path();
        let name = p.to_string_lossy().into_owned();
        if name.ends_with(".sjson") {
            assert!(gpgv(home, ring, &[&p]), "round {round}: {name}");
        } else if name.ends_with(".json.gpg") {
            let json = name.trim_end_matches(".gpg");
            assert!(
                gpgv(home, ring, &[&p, Path::new(json)]),
                "round {round}: {name}"
            );
        }
    }
}

/// SIGKILL at a random moment of a signed publish or rollback, many
/// rounds (15, or `SSTREAM_VIEWS_KILL_ROUNDS`): each resting point is the
/// old view or the new one, complete and verified by `gpgv`, and the next
/// call carries on from it.
#[test]
fn a_killed_publish_leaves_the_old_view_or_the_new_one() {
    let rounds: usize = std::env::var("SSTREAM_VIEWS_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let site = Site::new();
    let tmp = TempDir::new().unwrap();
    let (key, ring) = local_key(tmp.path());
    let home = tmp.path().join("gpg-home");
    fs::create_dir(&home).unwrap();
    let view = site.view("production");
    // A publish of `name`, or with `None` a rollback.
    let publish_cmd = |view: &Path, name: Option<&str>| {
        let what: Vec<&str> = match name {
            Some(name) => vec![
                "publish",
                s(view),
                "--from",
                s(site.dir()),
                "--snapshot",
                name,
            ],
            None => vec!["rollback", s(view)],
        };
        Command::new(env!("CARGO_BIN_EXE_sstream"))
            .args(what)
            .args(["--sign-key", s(&key), "--delete-delay", "0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run sstream publish")
    };
    // How long a whole publish takes here, to kill within it (the first
    // rounds kill first publishes too).
    let started = std::time::Instant::now();
    let timing = publish_cmd(&site.view("timing"), Some("d1"))
        .wait()
        .unwrap();
    assert!(timing.success());
    let whole = started.elapsed().as_micros() as u64;
    let mut rng = faults_support::Rng(20);
    let mut killed = 0;
    for round in 0..rounds {
        // Publishes of d2 and d1 in turn, and every third round a rollback.
        let name = match round % 3 {
            2 => None,
            _ if round % 2 == 0 => Some("d2"),
            _ => Some("d1"),
        };
        let mut child = publish_cmd(&view, name);
        std::thread::sleep(std::time::Duration::from_micros(rng.below(whole * 6 / 5)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        assert_at_rest(&view, &home, &ring, &[DAY1, DAY2], round);
    }
    assert!(killed > 0, "no publish was killed");
    // The view carries on: two publishes, a rollback, a clean audit.
    for name in ["d1", "d2"] {
        publish_ok(
            &view,
            site.dir(),
            name,
            &["--sign-key", s(&key), "--delete-delay", "0"],
        );
    }
    assert_at_rest(&view, &home, &ring, &[DAY2], rounds);
    let o = sstream(&[
        "rollback",
        s(&view),
        "--sign-key",
        s(&key),
        "--delete-delay",
        "0",
    ]);
    assert!(o.status.success(), "{}", err_text(&o));
    assert_at_rest(&view, &home, &ring, &[DAY1], rounds + 1);
    let keyring = format!("--keyring={}", ring.display());
    let o = sstream(&["verify", s(&view), "--strict", &keyring]);
    assert!(
        o.status.success(),
        "verify: {}{}",
        out_text(&o),
        err_text(&o)
    );
}

/// A view on another filesystem than the mirror gets copies (with a
/// warning); when that filesystem is full, a publish fails with one line
/// and the view stays as it was; with room again, it goes through.
#[test]
fn a_view_on_a_full_disk_stays_as_it_was() {
    let site = Site::new();
    let Some(disk) = support::Tmpfs::mount(&site.views.path().join("disk"), 1 << 20) else {
        return;
    };
    let view = disk.dir.join("view");
    let o = publish(&view, site.dir(), "d1", &[]);
    assert!(o.status.success(), "{}", err_text(&o));
    assert!(
        err_text(&o).contains("copied, not linked"),
        "{}",
        err_text(&o)
    );
    assert_complete(&view);
    let before = view_bytes(&view);
    let filler = disk.dir.join("filler");
    {
        use std::io::Write;
        let mut f = fs::File::create(&filler).unwrap();
        let chunk = vec![0xffu8; 4096];
        while f.write_all(&chunk).is_ok() {}
    }
    let o = publish(&view, site.dir(), "d2", &[]);
    assert_one_line_failure(&o, 1, &["No space left on device"]);
    assert_same_files(&view_bytes(&view), &before, "the view as it was");
    // Then more and more room, 4 KiB at a time: each publish that fails
    // (writing metadata, the state, copying items) leaves the view as it
    // was, until one has room enough.
    let full = fs::metadata(&filler).unwrap().len();
    let mut item_failures = 0;
    for step in 1..=64u64 {
        let filled = fs::OpenOptions::new().write(true).open(&filler).unwrap();
        filled.set_len(full.saturating_sub(step * 4096)).unwrap();
        drop(filled);
        let o = publish(&view, site.dir(), "d2", &[]);
        if o.status.success() {
            break;
        }
        let err = err_text(&o);
        let errors: Vec<&str> = err.lines().filter(|l| !l.starts_with("warn:")).collect();
        assert_eq!(errors.len(), 1, "step {step}: {err}");
        assert!(
            errors[0].contains("No space left on device"),
            "step {step}: {err}"
        );
        item_failures +=
            usize::from(errors[0].contains("/xenial/") || errors[0].contains("/bootloaders/"));
        assert_same_files(&view_bytes(&view), &before, &format!("step {step}"));
    }
    assert!(item_failures > 0, "no failure while copying items");
    fs::remove_file(&filler).unwrap();
    assert_eq!(versions(&view), BTreeSet::from([DAY2.to_owned()]));
    assert_complete(&view);
}

/// Pruning keeps the newest snapshots and every one a view shows or can
/// roll back to; a view that is gone protects nothing; `sstream serve`
/// never serves the snapshots.
#[test]
fn prune_keeps_what_views_show_and_serve_hides_snapshots() {
    use simplestreams::snapshot;
    let site = Site::new();
    snapshot(site.dir(), "d3");
    let names = |dir: &Path| -> Vec<String> {
        snapshot::list(dir)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    let production = site.view("production");
    publish_ok(&production, site.dir(), "d1", &[]);
    assert_eq!(snapshot::prune(site.dir(), 1, &[]).unwrap(), ["d2"]);
    assert_eq!(names(site.dir()), ["d1", "d3"]);
    publish_ok(&production, site.dir(), "d3", &[]);
    assert_eq!(snapshot::protected(site.dir()).unwrap(), ["d1", "d3"]);
    assert!(snapshot::prune(site.dir(), 0, &[]).unwrap().is_empty());
    let o = sstream(&["snapshot", "remove", s(site.dir()), "d1"]);
    assert_one_line_failure(&o, 1, &["\"d1\"", "rollback"]);

    let served = support::Server::start(site.dir());
    for hidden in [
        ".data/snapshots/d1/snapshot.json",
        ".data/snapshots/d1/tree/streams/v1/index.json",
    ] {
        assert_ne!(http_get(&served.url, hidden).0, 200, "{hidden}");
    }

    // A view deleted by hand protects nothing any more.
    fs::remove_dir_all(&production).unwrap();
    assert!(snapshot::protected(site.dir()).unwrap().is_empty());
    assert_eq!(
        snapshot::prune(site.dir(), 1, &["d1".into()]).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(snapshot::prune(site.dir(), 0, &[]).unwrap(), ["d1", "d3"]);
    assert!(names(site.dir()).is_empty());
    let o = sstream(&["snapshot", "list", s(site.dir())]);
    assert!(o.status.success(), "{}", err_text(&o));
}

/// A first publish killed after it linked items in but before its switch
/// (its state says `switching`, no `streams/` yet) is forgotten by the
/// next publish, which then goes through.
#[test]
fn a_first_publish_killed_before_its_switch_is_forgotten() {
    let site = Site::new();
    let view = site.view("production");
    let shown = serde_json::json!({
        "snapshot": "d1", "published": "2026-12-07T00:00:00.000Z", "filters": [],
        "signed": false, "items": 1, "bytes": 1,
    });
    let mut state = shown.clone();
    state["format"] = "sstream-view:1".into();
    state["mirror"] = s(site.dir()).into();
    state["history"] = serde_json::json!([]);
    state["switching"] = serde_json::json!({"shown": shown, "index_sha256": "00", "kind": "first"});
    fs::create_dir_all(view.join(".data")).unwrap();
    fs::write(
        view.join(".data/sstream-view.json"),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();
    fs::create_dir_all(view.join("xenial/amd64")).unwrap();
    fs::write(view.join("xenial/amd64/linked-before-the-kill"), b"x").unwrap();
    publish_ok(&view, site.dir(), "d2", &[]);
    assert_eq!(versions(&view), BTreeSet::from([DAY2.to_owned()]));
    assert!(!view.join("xenial/amd64/linked-before-the-kill").exists());
    let o = sstream(&["rollback", s(&view)]);
    assert_one_line_failure(&o, 1, &["nothing to roll back to"]);
}

/// Files a promotion stops listing stay for the delete delay (pending,
/// and the view still verifies as a mirror), then go.
#[test]
fn files_no_longer_listed_stay_for_the_delete_delay() {
    let site = Site::new();
    let view = site.view("production");
    publish_ok(&view, site.dir(), "d1", &[]);
    let d1: BTreeSet<String> = listed(&view).into_keys().collect();
    publish_ok(&view, site.dir(), "d2", &["--delete-delay", "1h"]);
    let d2: BTreeSet<String> = listed(&view).into_keys().collect();
    let gone: Vec<&String> = d1.difference(&d2).collect();
    assert!(!gone.is_empty());
    for path in &gone {
        assert!(view.join(path).is_file(), "{path} kept for the delay");
    }
    let pending: Value =
        serde_json::from_slice(&fs::read(view.join(".data/sstream-pending-deletes.json")).unwrap())
            .unwrap();
    for path in &gone {
        assert!(pending.get(path.as_str()).is_some(), "{path} pending");
    }
    assert_eq!(simplestreams::view::collect(&view).unwrap(), 0);
    let o = sstream(&["verify", s(&view), "--strict"]);
    assert!(
        o.status.success(),
        "verify: {}{}",
        out_text(&o),
        err_text(&o)
    );
    // The same snapshot again, without a delay: the old files go.
    publish_ok(&view, site.dir(), "d2", &["--delete-delay", "0"]);
    for path in &gone {
        assert!(!view.join(path).exists(), "{path} removed");
    }
    assert!(!view.join(".data/sstream-pending-deletes.json").exists());
    assert_complete(&view);
    let o = sstream(&["verify", s(&view), "--strict"]);
    assert!(
        o.status.success(),
        "verify: {}{}",
        out_text(&o),
        err_text(&o)
    );
    // Publishing d2 again was a refresh, not a step to roll back to.
    let o = sstream(&["rollback", s(&view)]);
    assert!(
        out_text(&o).contains("shows snapshot d1"),
        "{}{}",
        out_text(&o),
        err_text(&o)
    );
    assert_complete(&view);
}

/// A mirror of a signed upstream made by the reference `sstream-mirror`
/// (which publishes the clear-signed `.sjson` documents only) snapshots
/// and publishes like ours: the view lists what the mirror holds.
#[test]
fn a_reference_mirror_of_a_signed_stream_snapshots_and_publishes() {
    let gpg = support::Gpg::new();
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("src");
    let dir = tmp.path().join("mirror");
    gpg.generate(&small_spec(&[DAY1, DAY2]), &src);
    let o = Command::new(support::reference_mirror())
        .arg(format!("--keyring={}", gpg.keyring.display()))
        .args(["--max=1"])
        .arg(&src)
        .arg(&dir)
        .env("GNUPGHOME", &gpg.verify_home)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "reference sstream-mirror: {}",
        err_text(&o)
    );
    assert!(
        !dir.join("streams/v1/index.json").exists(),
        "the reference writes .sjson only"
    );
    snapshot(&dir, "ref");
    let view = tmp.path().join("view");
    publish_ok(&view, &dir, "ref", &[]);
    assert_eq!(versions(&view), BTreeSet::from([DAY2.to_owned()]));
    assert_complete(&view);
    let held: BTreeSet<String> = support::files(&dir)
        .into_iter()
        .filter(|f| !f.starts_with(".data/") && !f.starts_with("streams/"))
        .collect();
    assert_eq!(listed(&view).into_keys().collect::<BTreeSet<_>>(), held);
}

/// A promotion whose view no longer lists a content id (here the
/// filters drop the bootloaders) keeps that products file, and its
/// signatures, where a client that read the old index finds them, for
/// the delete delay; then they go, while the index never lists them.
#[test]
fn a_products_file_the_new_view_drops_stays_for_the_delete_delay() {
    let site = Site::new();
    let view = site.view("production");
    let (key_file, _) = local_key(site.views.path());
    let key = ["--sign-key", s(&key_file)];
    let index_paths = |view: &Path| -> BTreeSet<String> {
        let index: Value =
            serde_json::from_slice(&fs::read(view.join("streams/v1/index.json")).unwrap()).unwrap();
        index["index"]
            .as_object()
            .unwrap()
            .values()
            .map(|e| e["path"].as_str().unwrap().to_owned())
            .collect()
    };
    publish_ok(&view, site.dir(), "d1", &key);
    let before = index_paths(&view);
    let mut narrowed = key.to_vec();
    narrowed.extend(["--delete-delay", "1h", "release=xenial"]);
    publish_ok(&view, site.dir(), "d2", &narrowed);
    let after = index_paths(&view);
    let dropped: Vec<&String> = before.difference(&after).collect();
    assert!(
        !dropped.is_empty(),
        "the filter drops a content id: {before:?}"
    );
    for path in &dropped {
        let sjson = path.replace(".json", ".sjson");
        for rel in [path.to_string(), sjson, format!("{path}.gpg")] {
            assert!(view.join(&rel).is_file(), "{rel} kept for the delay");
        }
    }
    assert_complete(&view);
    // Due at once: the next switch (a refresh) leaves them behind.
    let mut due = key.to_vec();
    due.extend(["--delete-delay", "0", "release=xenial"]);
    publish_ok(&view, site.dir(), "d2", &due);
    for path in &dropped {
        assert!(!view.join(path.as_str()).exists(), "{path} removed");
    }
    assert_complete(&view);
}
