//! No wrong bytes behind published metadata, and re-signed pairs that
//! agree: a poisoned content-index entry is never linked, an upstream
//! re-spin of a held version is fetched again, a `.json` and its
//! `.json.gpg` verify at rest after SIGKILL (or the next run repairs them
//! first thing, even with an unchanged source), an item path that turns
//! from a file into a directory is replaced, and the content index is
//! resolved (relative) and refused inside the mirror.
//!
//! Needs `gpg` and `gpgv` (scripts/test.sh installs them).

mod support;

use serde_json::Value;
use simplestreams::sample::{self, SampleRelease, SampleSpec};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{Gpg, Server};
use tempfile::TempDir;

fn spec(versions: &[&str]) -> SampleSpec {
    SampleSpec {
        releases: vec![SampleRelease::new("jammy", "22.04")],
        arches: vec!["amd64".into()],
        versions: versions.iter().map(|s| s.to_string()).collect(),
        bootloader_versions: vec!["20230222.0".into()],
        payload_bytes: 4096,
        ..SampleSpec::default()
    }
}

fn sstream(dir: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sstream"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env("GNUPGHOME", "/nonexistent")
        .stdin(Stdio::null());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd.output().expect("run sstream")
}

fn ok(what: &str, o: &Output) {
    assert!(
        o.status.success(),
        "{what}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An unsigned mirror run of the directory stream `src` into `out`.
fn mirror_unsigned(src: &Path, out: &Path, extra: &[&str]) -> Output {
    mirror_from(&s(src), out, extra)
}

/// An unsigned mirror run of the stream at `source` (a directory or a
/// URL) into `out`.
fn mirror_from(source: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["mirror", "--no-verify", "--path", "streams/v1/index.json"];
    args.extend_from_slice(extra);
    let out = s(out);
    args.push(source);
    args.push(&out);
    sstream(None, &args)
}

/// The items of the plain products files under `root`: (path, size,
/// sha256).
fn listed_items(root: &Path) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root.join("streams/v1")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name == "index.json" {
            continue;
        }
        let doc: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        for product in doc["products"].as_object().unwrap().values() {
            for version in product["versions"].as_object().unwrap().values() {
                for item in version["items"].as_object().unwrap().values() {
                    if let (Some(path), Some(size), Some(sum)) = (
                        item["path"].as_str(),
                        item["size"].as_u64(),
                        item["sha256"].as_str(),
                    ) {
                        out.push((path.to_owned(), size, sum.to_owned()));
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Every listed item of the mirror at `root` has the bytes its metadata
/// says.
fn assert_right_bytes(root: &Path) {
    assert_right_bytes_of(root, root);
}

/// Every item the plain products files under `meta` list (a mirror
/// publishing upstream's `.sjson` only: its source) has the bytes they say
/// in the mirror at `root`.
fn assert_right_bytes_of(meta: &Path, root: &Path) {
    let items = listed_items(meta);
    assert!(!items.is_empty(), "{} lists nothing", meta.display());
    for (path, size, sum) in items {
        let bytes = fs::read(root.join(&path)).unwrap();
        assert_eq!(bytes.len() as u64, size, "{path}");
        assert_eq!(
            sha256(&bytes),
            sum,
            "{path}: wrong bytes behind the metadata"
        );
    }
}

fn verify_full(root: &Path, extra: &[&str]) -> Output {
    let root = s(root);
    let mut args = vec!["verify", "--full"];
    args.extend_from_slice(extra);
    args.push(&root);
    sstream(None, &args)
}

/// Two mirrors sharing a content index; an entry is overwritten in place
/// with other bytes of the same size (the first mirror's file with it, as
/// they are one inode). The second mirror does not link it: it ends with
/// the right bytes, `verify --full` agrees, and the bad entry is replaced.
#[test]
fn a_poisoned_content_index_entry_is_never_linked() {
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("src");
    sample::generate(&spec(&["20250601"]), &src, None).unwrap();
    let index = tmp.path().join("index");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let idx = format!("--content-index={}", s(&index));
    ok("mirror A", &mirror_unsigned(&src, &a, &[&idx]));

    // Poison every entry of the index (in place: same inode, same size).
    let mut poisoned = 0;
    for entry in walk(&index) {
        let len = fs::metadata(&entry).unwrap().len() as usize;
        let junk: Vec<u8> = (0..len).map(|i| (i * 7 + 13) as u8).collect();
        fs::write(&entry, junk).unwrap();
        poisoned += 1;
    }
    assert!(poisoned > 0, "mirror A entered nothing into the index");

    let o = mirror_unsigned(&src, &b, &[&idx]);
    ok("mirror B", &o);
    assert_right_bytes(&b);
    ok("verify B --full", &verify_full(&b, &["--no-verify"]));
    // A plain rerun (the fetch cache hit) keeps it so.
    ok("mirror B again", &mirror_unsigned(&src, &b, &[&idx]));
    ok("verify B --full again", &verify_full(&b, &["--no-verify"]));
    // The bad entries were replaced by B's verified files.
    for entry in walk(&index) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if let Some((hex, _)) = name.split_once('-') {
            assert_eq!(
                sha256(&fs::read(&entry).unwrap()),
                hex,
                "{}",
                entry.display()
            );
        }
    }
}

/// Regular files under `dir` that are index entries (not records).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if !p.file_name().unwrap().to_string_lossy().contains('.') {
            out.push(p);
        }
    }
    out
}

/// An in-place edit of one mirror's file changes the other mirror's (and
/// the index entry's: one inode). The next run of each notices it (the
/// entry's record is stale; once replaced, the old file is kept as a
/// suspect the other mirror finds) and fetches its file again.
#[test]
fn an_in_place_edit_of_a_shared_file_is_noticed_by_both_mirrors() {
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("src");
    let sample = sample::generate(&spec(&["20250601"]), &src, None).unwrap();
    let index = tmp.path().join("index");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let idx = format!("--content-index={}", s(&index));
    // Served: the reruns are conditional (304, the fetch cache hits), so
    // only the states of unchanged products files tell what is held.
    let upstream = Server::start(&src);
    ok("mirror A", &mirror_from(&upstream.url, &a, &[&idx]));
    ok("mirror B", &mirror_from(&upstream.url, &b, &[&idx]));
    let path = sample
        .payloads
        .keys()
        .find(|p| p.ends_with("/boot-kernel"))
        .expect("a kernel")
        .clone();
    use std::os::unix::fs::MetadataExt;
    let ino = |root: &Path| fs::metadata(root.join(&path)).unwrap().ino();
    assert_eq!(ino(&a), ino(&b), "B did not link A's file");

    let len = fs::metadata(b.join(&path)).unwrap().len() as usize;
    fs::write(b.join(&path), vec![b'x'; len]).unwrap();
    ok("mirror A again", &mirror_from(&upstream.url, &a, &[&idx]));
    assert_right_bytes(&a);
    ok("mirror B again", &mirror_from(&upstream.url, &b, &[&idx]));
    assert_right_bytes(&b);
    ok("verify A --full", &verify_full(&a, &["--no-verify"]));
    ok("verify B --full", &verify_full(&b, &["--no-verify"]));
}

/// Replaces the bytes of the item at `path` in the directory stream `src`
/// and every products file's record of it (size and checksums), the same
/// version name kept; re-signs what was signed with `gpg`. Gives the new
/// sha256.
fn respin(src: &Path, path: &str, bytes: &[u8], gpg: Option<&Gpg>) -> String {
    fs::write(src.join(path), bytes).unwrap();
    let sum = sha256(bytes);
    for entry in fs::read_dir(src.join("streams/v1")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name == "index.json" {
            continue;
        }
        let mut doc: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        let mut changed = false;
        for product in doc["products"].as_object_mut().unwrap().values_mut() {
            for version in product["versions"].as_object_mut().unwrap().values_mut() {
                for item in version["items"].as_object_mut().unwrap().values_mut() {
                    if item["path"].as_str() == Some(path) {
                        item["size"] = bytes.len().into();
                        item["sha256"] = sum.clone().into();
                        // Only the sha256 is recomputed: an md5 goes.
                        item.as_object_mut().unwrap().remove("md5");
                        changed = true;
                    }
                }
            }
        }
        if changed {
            let json = serde_json::to_vec_pretty(&doc).unwrap();
            fs::write(&p, &json).unwrap();
            if let Some(gpg) = gpg {
                fs::write(p.with_extension("sjson"), gpg.sign(&json)).unwrap();
            }
        }
    }
    sum
}

/// Upstream re-spins a held version (same version name and path, new
/// bytes, re-signed with GnuPG): the next run fetches the item again and
/// the published file has the new checksum; `--verify-existing` then
/// checks against the new metadata and finds nothing wrong.
#[test]
fn an_upstream_respin_is_fetched_again() {
    let gpg = Gpg::new();
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("src");
    let sample = gpg.generate(&spec(&["20250601"]), &src);
    let out = tmp.path().join("mirror");
    let keyring = format!("--keyring={}", s(&gpg.keyring));
    let run = |extra: &[&str]| {
        let mut args = vec!["mirror", keyring.as_str()];
        args.extend_from_slice(extra);
        let (src, out) = (s(&src), s(&out));
        args.push(&src);
        args.push(&out);
        sstream(None, &args)
    };
    ok("first run", &run(&[]));
    let (path, size) = sample
        .payloads
        .iter()
        .find(|(p, _)| p.ends_with("/boot-kernel"))
        .map(|(p, s)| (p.clone(), *s))
        .expect("a kernel");

    // Same size, other bytes: a size-only check cannot see it.
    let same_size: Vec<u8> = (0..size).map(|i| (i % 251) as u8 ^ 0x5a).collect();
    let sum = respin(&src, &path, &same_size, Some(&gpg));
    ok("run after the re-spin", &run(&[]));
    assert_eq!(sha256(&fs::read(out.join(&path)).unwrap()), sum, "{path}");
    assert_right_bytes_of(&src, &out);

    // Another size too.
    let bigger: Vec<u8> = (0..size + 100).map(|i| (i % 241) as u8).collect();
    let sum = respin(&src, &path, &bigger, Some(&gpg));
    ok("run after the second re-spin", &run(&[]));
    assert_eq!(sha256(&fs::read(out.join(&path)).unwrap()), sum, "{path}");
    assert_right_bytes_of(&src, &out);
    ok("--verify-existing", &run(&["--verify-existing"]));
    assert_right_bytes_of(&src, &out);
    ok("verify --full", &verify_full(&out, &[&keyring]));
}

/// A local key and its exported binary keyring.
fn local_key(tmp: &Path) -> (PathBuf, PathBuf) {
    let key = tmp.join("mirror-key.asc");
    let ring = tmp.join("mirror-keyring.gpg");
    ok(
        "key generate",
        &sstream(None, &["key", "generate", "--output", &s(&key)]),
    );
    ok(
        "key export",
        &sstream(None, &["key", "export", &s(&key), "--output", &s(&ring)]),
    );
    (key, ring)
}

/// The signed metadata of a re-signed mirror that gpgv rejects with the
/// exported keyring: each `.json.gpg` against its `.json`, each `.sjson`.
fn bad_signatures(home: &Path, ring: &Path, root: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let Ok(entries) = fs::read_dir(root.join("streams/v1")) else {
        return bad;
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    for p in paths {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let files: Vec<PathBuf> = if let Some(plain) = name
            .strip_suffix(".json.gpg")
            .map(|stem| format!("{stem}.json"))
        {
            vec![p.clone(), p.with_file_name(plain)]
        } else if name.ends_with(".sjson") {
            vec![p.clone()]
        } else {
            continue;
        };
        let accepted = Command::new("gpgv")
            .env("GNUPGHOME", home)
            .arg("--keyring")
            .arg(ring)
            .args(&files)
            .output()
            .expect("run gpgv")
            .status
            .success();
        if !accepted {
            bad.push(name);
        }
    }
    bad
}

/// A `.json.gpg` that does not verify its `.json` (as a kill between the
/// two renames leaves it) is repaired by the next run, even one whose
/// source is unchanged (served: the fetch cache hits, products files are
/// answered 304 and not published again).
#[test]
fn an_unchanged_run_repairs_a_broken_signature_pair() {
    let gpg = Gpg::new();
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("src");
    gpg.generate(&spec(&["20250601"]), &src);
    // Served, so that the next run's conditional requests are answered
    // 304 Not Modified and nothing is published again.
    let upstream = Server::start(&src);
    let (key, ring) = local_key(tmp.path());
    let out = tmp.path().join("mirror");
    let args = [
        "mirror".to_owned(),
        format!("--keyring={}", s(&gpg.keyring)),
        format!("--sign-key={}", s(&key)),
        upstream.url.clone(),
        s(&out),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok("first run", &sstream(None, &args));
    let home = tmp.path().join("gpgv-home");
    fs::create_dir(&home).unwrap();
    assert_eq!(bad_signatures(&home, &ring, &out), Vec::<String>::new());

    // Each detached signature swapped for another document's (the .json
    // files untouched, as a kill between the renames leaves the older
    // signature beside a newer document), and the index's .sjson truncated.
    let v1 = out.join("streams/v1");
    let mut detached: Vec<PathBuf> = fs::read_dir(&v1)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".json.gpg"))
        .collect();
    detached.sort();
    let signatures: Vec<Vec<u8>> = detached.iter().map(|p| fs::read(p).unwrap()).collect();
    let broken = detached.len();
    for (i, p) in detached.iter().enumerate() {
        fs::write(p, &signatures[(i + 1) % broken]).unwrap();
    }
    let sjson = v1.join("index.sjson");
    let bytes = fs::read(&sjson).unwrap();
    fs::write(&sjson, &bytes[..bytes.len() / 2]).unwrap();
    assert!(broken >= 2);
    assert!(!bad_signatures(&home, &ring, &out).is_empty());
    ok("unchanged run", &sstream(None, &args));
    assert_eq!(
        bad_signatures(&home, &ring, &out),
        Vec::<String>::new(),
        "an unchanged run left signatures that do not verify"
    );
}

/// SIGKILL at points spread over `sstream mirror --sign-key` runs, each
/// round with a new version upstream (so every round re-signs): after
/// each kill, every pair either verifies at rest or the next run (the same
/// source) repairs it; the rounds where a pair was broken are counted.
#[test]
fn kills_around_resigning_leave_pairs_the_next_run_repairs() {
    let gpg = Gpg::new();
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("src");
    let (key, ring) = local_key(tmp.path());
    let out = tmp.path().join("mirror");
    let home = tmp.path().join("gpgv-home");
    fs::create_dir(&home).unwrap();
    let args = [
        "mirror".to_owned(),
        format!("--keyring={}", s(&gpg.keyring)),
        format!("--sign-key={}", s(&key)),
        "--max=1".to_owned(),
        s(&src),
        s(&out),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    gpg.generate(&spec(&["20250101"]), &src);
    ok("first run", &sstream(None, &args));
    // How long a round's run takes (a new version in, the old one out).
    gpg.generate(&spec(&["20250102"]), &src);
    let started = Instant::now();
    ok("a whole round", &sstream(None, &args));
    let full_run = started.elapsed().max(Duration::from_millis(20));
    let rounds = 12u32;
    let mut broken_at_rest = 0;
    for round in 1..=rounds {
        let version = format!("202502{round:02}");
        gpg.generate(&spec(&[&version]), &src);
        let mut child = Command::new(env!("CARGO_BIN_EXE_sstream"))
            .args(&args)
            .env("GNUPGHOME", "/nonexistent")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sstream mirror");
        // Spread the kills over the run: a tenth of it to all of it.
        let share = 0.1 + f64::from((round * 37) % 100) / 100.0 * 0.9;
        std::thread::sleep(full_run.mul_f64(share));
        let _ = child.kill(); // SIGKILL; the run may have ended already
        let _ = child.wait();
        let bad = bad_signatures(&home, &ring, &out);
        if !bad.is_empty() {
            broken_at_rest += 1;
        }
        ok("the run after a kill", &sstream(None, &args));
        assert_eq!(
            bad_signatures(&home, &ring, &out),
            Vec::<String>::new(),
            "round {round}: after a kill leaving {bad:?}, the next run did not repair"
        );
    }
    eprintln!("{broken_at_rest} of {rounds} kills left a pair for the next run to repair");
}

/// An item path that was a file becomes a directory in a new version (and
/// back): each run replaces what is in the way, and the mirror ends with
/// the right bytes. `sstream mirror` keeps removed files for the delete
/// delay; what is in the way goes at once all the same.
#[test]
fn an_item_path_turning_into_a_directory_is_replaced() {
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("streams/v1")).unwrap();
    let out = tmp.path().join("mirror");
    let write_stream = |version: &str, path: &str, bytes: &[u8]| {
        let file = src.join(path);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, bytes).unwrap();
        let products = serde_json::json!({
            "format": "products:1.0",
            "content_id": "com.example:test",
            "datatype": "image-downloads",
            "updated": "Mon, 01 Jan 2024 00:00:00 +0000",
            "products": {"p": {"arch": "amd64", "versions": {version: {"items": {
                "disk": {"path": path, "size": bytes.len(), "sha256": sha256(bytes), "ftype": "disk"}
            }}}}}
        });
        let index = serde_json::json!({
            "format": "index:1.0",
            "updated": "Mon, 01 Jan 2024 00:00:00 +0000",
            "index": {"com.example:test": {
                "path": "streams/v1/test.json", "format": "products:1.0",
                "datatype": "image-downloads", "products": ["p"],
                "updated": "Mon, 01 Jan 2024 00:00:00 +0000"
            }}
        });
        let json = |v: &Value| serde_json::to_vec_pretty(v).unwrap();
        fs::write(src.join("streams/v1/test.json"), json(&products)).unwrap();
        fs::write(src.join("streams/v1/index.json"), json(&index)).unwrap();
    };
    write_stream("1", "images/disk", b"a file at images/disk");
    ok("first run", &mirror_unsigned(&src, &out, &["--max=1"]));
    assert_right_bytes(&out);
    fs::remove_file(src.join("images/disk")).unwrap();
    write_stream("2", "images/disk/root.img", b"now a directory holds it");
    ok(
        "file to directory",
        &mirror_unsigned(&src, &out, &["--max=1"]),
    );
    assert_right_bytes(&out);
    ok("the next run", &mirror_unsigned(&src, &out, &["--max=1"]));
    fs::remove_dir_all(src.join("images/disk")).unwrap();
    write_stream("3", "images/disk", b"a file again");
    ok(
        "directory to file",
        &mirror_unsigned(&src, &out, &["--max=1"]),
    );
    assert_right_bytes(&out);
    ok("the next run", &mirror_unsigned(&src, &out, &["--max=1"]));
    assert_right_bytes(&out);
}

/// A relative `--content-index` into a new output directory is resolved
/// against the working directory: no "not on the filesystem" warning, and
/// content is linked from it.
#[test]
fn a_relative_content_index_is_used() {
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("src");
    sample::generate(&spec(&["20250601"]), &src, None).unwrap();
    let cwd = tmp.path().join("work");
    fs::create_dir(&cwd).unwrap();
    let run = |out: &str| {
        let args = [
            "mirror",
            "-v",
            "--no-verify",
            "--path",
            "streams/v1/index.json",
            "--content-index",
            "index",
            &s(&src),
            out,
        ];
        sstream(Some(&cwd), &args)
    };
    let a = run("a");
    ok("mirror a", &a);
    let b = run("b");
    ok("mirror b", &b);
    let stderr =
        String::from_utf8_lossy(&b.stderr).into_owned() + &String::from_utf8_lossy(&a.stderr);
    assert!(!stderr.contains("not on the filesystem"), "{stderr}");
    let said =
        String::from_utf8_lossy(&b.stdout).into_owned() + &String::from_utf8_lossy(&b.stderr);
    assert!(said.contains("file(s) linked"), "nothing linked:\n{said}");
    assert!(cwd.join("index").is_dir());
    assert_right_bytes(&cwd.join("b"));
}

/// A content index inside the mirror is refused with one line naming it
/// (resolved paths compared), before anything is written.
#[test]
fn a_content_index_inside_the_mirror_is_refused() {
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("src");
    sample::generate(&spec(&["20250601"]), &src, None).unwrap();
    let out = tmp.path().join("mirror");
    fs::create_dir(&out).unwrap();
    // Through a path with `..` in it, so only resolved paths match.
    let inside = format!("{}/../mirror/content", s(&out));
    let o = mirror_unsigned(&src, &out, &["--content-index", &inside]);
    assert!(!o.status.success(), "accepted an index inside the mirror");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("content index") && stderr.contains("inside"),
        "{stderr}"
    );
    assert!(!out.join("streams").exists(), "something was published");
}
