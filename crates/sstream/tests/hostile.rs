//! A corpus of hostile streams. Each one must make `sstream-mirror` exit
//! non-zero with a one-line error naming the document or URL and the
//! reason, write nothing outside the output directory, and leave the
//! mirror already published there as it was.

mod faults_support;
mod support;

use faults_support::{FaultServer, UNCOMPARED, inconsistencies, mirror, s, stderr};
use serde_json::{Map, Value, json};
use simplestreams::sample::{self, SampleSpec};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use support::{copy_tree, snapshot};
use tempfile::TempDir;

const V3_JSON: &str = "streams/v1/com.ubuntu.maas:stable:v3:download.json";
const INDEX: &str = "streams/v1/index.json";
const OLD: &str = "20250615";
const NEW: &str = "20250718";

fn spec(versions: &[&str]) -> SampleSpec {
    faults_support::small_spec(versions)
}

/// The published files of a tree and their bytes (lock and cache left out).
fn published(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = snapshot(root);
    m.remove(".data/sstream.lock");
    for u in UNCOMPARED {
        m.remove(*u);
    }
    m
}

/// Where a hostile stream's error is detected.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Level {
    /// Before anything is written: the output must be byte-identical.
    Metadata,
    /// While fetching a new item: the files already there must be
    /// unchanged; new files may appear but nothing published names them.
    Item,
}

type Mutation = Box<dyn Fn(&Path, &Path)>;

/// Changes a signed source stream.
type SrcEdit<'a> = Box<dyn Fn(&Path) + 'a>;

struct Case {
    name: &'static str,
    level: Level,
    /// Every one must be on stderr.
    needles: Vec<String>,
    /// Changes the source stream (given the source root and the outside dir).
    mutate: Mutation,
    /// Changes the output directory before the run (given it and outside).
    plant: Option<Mutation>,
    /// Filters (after the source and the output directory).
    extra: Vec<String>,
}

fn case(name: &'static str, level: Level, needles: &[&str], mutate: Mutation) -> Case {
    Case {
        name,
        level,
        needles: needles.iter().map(|n| n.to_string()).collect(),
        mutate,
        plant: None,
        extra: Vec::new(),
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, v: &Value) {
    fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// Edits the products document `V3_JSON`.
fn edit_products(f: impl Fn(&mut Map<String, Value>) + 'static) -> Mutation {
    Box::new(move |src, _| {
        let p = src.join(V3_JSON);
        let mut v = read_json(&p);
        f(v.as_object_mut().unwrap());
        write_json(&p, &v);
    })
}

/// Edits the squashfs item of the new version (given the outside dir).
fn edit_new_item(f: impl Fn(&mut Map<String, Value>, &Path) + 'static) -> Mutation {
    Box::new(move |src, outside| {
        let p = src.join(V3_JSON);
        let mut v = read_json(&p);
        let products = v["products"].as_object_mut().unwrap();
        let product = products.values_mut().next().unwrap();
        let item = product["versions"][NEW]["items"]["squashfs"]
            .as_object_mut()
            .unwrap();
        f(item, outside);
        write_json(&p, &v);
    })
}

fn set_path(p: &'static str) -> Mutation {
    edit_new_item(move |item, _| {
        item.insert("path".into(), json!(p));
    })
}

/// Edits the index entry of the v3 stream.
fn edit_index(f: impl Fn(&mut Map<String, Value>, &Path) + 'static) -> Mutation {
    Box::new(move |src, outside| {
        let p = src.join(INDEX);
        let mut v = read_json(&p);
        f(v.as_object_mut().unwrap(), outside);
        write_json(&p, &v);
    })
}

fn edit_v3_entry(f: impl Fn(&mut Map<String, Value>, &Path) + 'static) -> Mutation {
    edit_index(move |index, outside| {
        let entries = index["index"].as_object_mut().unwrap();
        let entry = entries
            .values_mut()
            .find(|e| e["path"].as_str() == Some(V3_JSON))
            .unwrap();
        f(entry.as_object_mut().unwrap(), outside);
    })
}

fn raw(path: &'static str, bytes: impl Fn() -> Vec<u8> + 'static) -> Mutation {
    Box::new(move |src, _| fs::write(src.join(path), bytes()).unwrap())
}

fn corpus() -> Vec<Case> {
    use Level::*;
    let mut v = vec![
        case(
            "item path ../",
            Metadata,
            &["unsafe path", "'..' segment", V3_JSON],
            set_path("../escape"),
        ),
        case(
            "item path a/../../x",
            Metadata,
            &["unsafe path", "'..' segment"],
            set_path("a/../../x"),
        ),
        case(
            "item path absolute",
            Metadata,
            &["unsafe path", "absolute path"],
            edit_new_item(|item, outside| {
                item.insert("path".into(), json!(s(&outside.join("pwned"))));
            }),
        ),
        case(
            "item path a/./b",
            Metadata,
            &["unsafe path", "'.' segment"],
            set_path("a/./b"),
        ),
        case(
            "item path a//b",
            Metadata,
            &["unsafe path", "empty segment"],
            set_path("a//b"),
        ),
        case(
            "item path with backslashes",
            Metadata,
            &["unsafe path", "backslash"],
            set_path("a\\..\\..\\x"),
        ),
        case(
            "item path with NUL",
            Metadata,
            &["unsafe path", "control character"],
            set_path("a\u{0}b"),
        ),
        case(
            "item path very long",
            Metadata,
            &["unsafe path", "too long"],
            edit_new_item(|item, _| {
                item.insert("path".into(), json!("x/".repeat(3000) + "y"));
            }),
        ),
        case(
            "item path with a too long segment",
            Metadata,
            &["unsafe path", "too long"],
            edit_new_item(|item, _| {
                item.insert("path".into(), json!("a".repeat(300)));
            }),
        ),
        case(
            "index path ../",
            Metadata,
            &["unsafe path", "'..' segment", INDEX],
            edit_v3_entry(|e, _| {
                e.insert("path".into(), json!("../../outside/x.json"));
            }),
        ),
        case(
            "index path absolute",
            Metadata,
            &["unsafe path", "absolute path", INDEX],
            edit_v3_entry(|e, outside| {
                e.insert("path".into(), json!(s(&outside.join("x.json"))));
            }),
        ),
        case(
            "negative size",
            Metadata,
            &["invalid size", V3_JSON],
            edit_new_item(|item, _| {
                item.insert("size".into(), json!(-1));
            }),
        ),
        case(
            "non-numeric size",
            Metadata,
            &["invalid size"],
            edit_new_item(|item, _| {
                item.insert("size".into(), json!("lots"));
            }),
        ),
        case(
            "fractional size",
            Metadata,
            &["invalid size"],
            edit_new_item(|item, _| {
                item.insert("size".into(), json!(1.5));
            }),
        ),
        case(
            "size beyond u64",
            Metadata,
            &["invalid size"],
            edit_new_item(|item, _| {
                item.insert("size".into(), json!("99999999999999999999999"));
            }),
        ),
        case(
            "absurd size",
            Item,
            &["squashfs", "1152921504606846976"],
            edit_new_item(|item, _| {
                item.insert("size".into(), json!(1u64 << 60));
            }),
        ),
        case(
            "checksum of the wrong length",
            Metadata,
            &["sha256", "hex digest"],
            edit_new_item(|item, _| {
                item.insert("sha256".into(), json!("abcd"));
            }),
        ),
        case(
            "checksum not hex",
            Metadata,
            &["sha256", "hex digest"],
            edit_new_item(|item, _| {
                item.insert("sha256".into(), json!("z".repeat(64)));
            }),
        ),
        case(
            "checksum not a string",
            Metadata,
            &["sha256", "not a string"],
            edit_new_item(|item, _| {
                item.insert("sha256".into(), json!(12));
            }),
        ),
        case(
            "wrong checksum",
            Item,
            &["squashfs", "sha256 mismatch"],
            edit_new_item(|item, _| {
                item.insert("sha256".into(), json!("0".repeat(64)));
            }),
        ),
        case(
            "path not a string",
            Metadata,
            &["\"path\" is not a string"],
            edit_new_item(|item, _| {
                item.insert("path".into(), json!(["a"]));
            }),
        ),
        case(
            "duplicate keys hiding a traversal",
            Metadata,
            &["unsafe path", "'..' segment"],
            Box::new(|src, _| {
                // serde_json keeps the last of duplicate keys (as Python's
                // json does): the hostile one must still be checked.
                let p = src.join(V3_JSON);
                let text = fs::read_to_string(&p).unwrap();
                let needle = format!("\"path\": \"xenial/amd64/{NEW}/squashfs\"");
                assert!(text.contains(&needle), "sample layout changed");
                let text = text.replace(&needle, &format!("{needle}, \"path\": \"../../x\""));
                fs::write(&p, text).unwrap();
            }),
        ),
        case(
            "100k nested arrays in a products file",
            Metadata,
            &["recursion limit", V3_JSON],
            raw(V3_JSON, || {
                let mut b = b"{\"format\": \"products:1.0\", \"x\": ".to_vec();
                b.extend(std::iter::repeat_n(b'[', 100_000));
                b.extend(std::iter::repeat_n(b']', 100_000));
                b.push(b'}');
                b
            }),
        ),
        case(
            // Unclosed: the parser skips a field's value without recursing,
            // so this ends at the end of the file.
            "100k unclosed nested objects in the index",
            Metadata,
            &["malformed JSON", INDEX],
            raw(INDEX, || "{\"a\":".repeat(100_000).into_bytes()),
        ),
        case(
            "100k nested arrays in an index entry",
            Metadata,
            &["recursion limit", INDEX],
            raw(INDEX, || {
                let mut b = br#"{"format": "index:1.0", "index": {"x": {"path": "streams/v1/p.json", "products": ["a"], "z": "#.to_vec();
                b.extend(std::iter::repeat_n(b'[', 100_000));
                b.extend(std::iter::repeat_n(b']', 100_000));
                b.extend_from_slice(b"}}}");
                b
            }),
        ),
        case(
            "invalid UTF-8",
            Metadata,
            &[V3_JSON, "malformed JSON"],
            Box::new(|src, _| {
                let p = src.join(V3_JSON);
                let mut b = fs::read(&p).unwrap();
                let i = b.windows(5).position(|w| w == b"label").unwrap();
                b[i + 1] = 0xff;
                b[i + 2] = 0xfe;
                fs::write(&p, b).unwrap();
            }),
        ),
        case(
            "content_id with a slash",
            Metadata,
            &["content_id", "unsafe path"],
            edit_products(|doc| {
                doc.insert("content_id".into(), json!("evil/../../x"));
            }),
        ),
        case(
            "content_id ..",
            Metadata,
            &["content_id", "unsafe path"],
            edit_products(|doc| {
                doc.insert("content_id".into(), json!(".."));
            }),
        ),
        case(
            "content_id empty",
            Metadata,
            &["content_id", "unsafe path"],
            edit_products(|doc| {
                doc.insert("content_id".into(), json!(""));
            }),
        ),
        case(
            "unknown products format",
            Metadata,
            &["unknown format", "products:9.9", V3_JSON],
            edit_products(|doc| {
                doc.insert("format".into(), json!("products:9.9"));
            }),
        ),
        case(
            "unknown index format",
            Metadata,
            &["index.json", "format"],
            edit_index(|doc, _| {
                doc.insert("format".into(), json!("index:7"));
            }),
        ),
        case(
            "products not an object",
            Metadata,
            &["\"products\" is not an object"],
            edit_products(|doc| {
                doc.insert("products".into(), json!([1, 2]));
            }),
        ),
        case(
            "not JSON at all",
            Metadata,
            &[V3_JSON, "malformed JSON"],
            raw(V3_JSON, || b"<html>503 Service Unavailable</html>".to_vec()),
        ),
        case(
            "index entry pointing at a missing file",
            Metadata,
            &["streams/v1/missing.json"],
            edit_v3_entry(|e, _| {
                e.insert("path".into(), json!("streams/v1/missing.json"));
            }),
        ),
    ];
    for (name, filter, needle) in [
        (
            "huge repetition count",
            "arch~a{1000000000}",
            "bad regular expression",
        ),
        (
            "nested huge repetitions",
            "arch~(a{1000}){1000}",
            "bad regular expression",
        ),
        ("invalid regex", "arch~(unclosed", "bad regular expression"),
        ("regex too long", "", "too long"),
        ("no operator", "arch", "expected"),
        ("empty key", "=amd64", "empty key"),
    ] {
        let filter = if filter.is_empty() {
            format!("arch~{}", "a".repeat(10_000))
        } else {
            filter.to_owned()
        };
        let mut c = case(
            name,
            Metadata,
            &["invalid filter", needle],
            Box::new(|_, _| {}),
        );
        c.extra = vec![filter];
        v.push(c);
    }
    // Paths that collide with the mirror's own namespace.
    v.push(case(
        "item at another item's staging name",
        Metadata,
        &["squashfs.manifest.part", "ends in .part"],
        set_path("xenial/amd64/20250718/squashfs.manifest.part"),
    ));
    v.push(case(
        "item under .data",
        Metadata,
        &[".data/sstream-pending-deletes.json", "under .data/"],
        set_path(".data/sstream-pending-deletes.json"),
    ));
    v.push(case(
        "item at the references",
        Metadata,
        &[".data/references.json", "under .data/"],
        set_path(".data/references.json"),
    ));
    v.push(case(
        "item at a metadata path",
        Metadata,
        &[INDEX, "metadata document"],
        set_path("streams/v1/index.json"),
    ));
    v.push(case(
        "item named like a temporary file",
        Metadata,
        &[".squashfs.sstream-tmp", "temporary"],
        set_path("xenial/amd64/20250718/.squashfs.sstream-tmp"),
    ));
    v.push(case(
        "content id that is one of our own file names",
        Metadata,
        &["references.json", "own file names"],
        edit_products(|doc| {
            doc.insert("content_id".into(), json!("references.json"));
        }),
    ));
    // Symlinks planted in the output directory, pointing outside.
    let mut c = case(
        "symlinked item directory",
        Item,
        &["symlink", "refusing to write through it"],
        Box::new(|_, _| {}),
    );
    c.plant = Some(Box::new(|out, outside| {
        std::os::unix::fs::symlink(outside, out.join(format!("xenial/amd64/{NEW}"))).unwrap();
    }));
    v.push(c);
    let mut c = case(
        "symlinked item file",
        Item,
        &["symlink", "refusing to write through it"],
        Box::new(|_, _| {}),
    );
    c.plant = Some(Box::new(|out, outside| {
        let d = out.join(format!("xenial/amd64/{NEW}"));
        fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), d.join("squashfs")).unwrap();
    }));
    v.push(c);
    let mut c = case(
        "symlinked .data",
        Metadata,
        &[".data", "symlink"],
        Box::new(|_, _| {}),
    );
    c.plant = Some(Box::new(|out, outside| {
        let data = out.join(".data");
        copy_tree(&data, &outside.join("data"));
        fs::remove_dir_all(&data).unwrap();
        std::os::unix::fs::symlink(outside.join("data"), &data).unwrap();
    }));
    v.push(c);
    v
}

struct Bench {
    _dirs: Vec<TempDir>,
    /// The stream of day 2 (a new version), to be made hostile.
    good: PathBuf,
    /// The clean mirror of day 1, already published in each output.
    existing: PathBuf,
    work: TempDir,
}

fn bench() -> Bench {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let (day1, good, existing) = (dirs[0].path(), dirs[1].path(), dirs[2].path());
    sample::generate(&spec(&[OLD]), day1, None).unwrap();
    sample::generate(&spec(&[OLD, NEW]), good, None).unwrap();
    let o = mirror(&faults_support::args(s(day1), s(existing), &[]));
    faults_support::assert_ok(&o, "day 1");
    // The good day 2 mirrors fine (so each failure below is the hostility).
    let check = TempDir::new().unwrap();
    copy_tree(existing, check.path());
    let o = mirror(&faults_support::args(s(good), s(check.path()), &[]));
    faults_support::assert_ok(&o, "good day 2");
    Bench {
        good: good.to_path_buf(),
        existing: existing.to_path_buf(),
        _dirs: dirs,
        work: TempDir::new().unwrap(),
    }
}

/// Runs one case; returns what is wrong with the outcome (empty: fine).
fn run_case(b: &Bench, n: usize, c: &Case, via_http: bool) -> Vec<String> {
    let base = b.work.path().join(format!("case-{n}"));
    let (src, out, outside) = (base.join("src"), base.join("out"), base.join("outside"));
    copy_tree(&b.good, &src);
    copy_tree(&b.existing, &out);
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("victim"), b"do not touch").unwrap();
    (c.mutate)(&src, &outside);
    if let Some(plant) = &c.plant {
        plant(&out, &outside);
    }
    let (src_before, out_before, outside_before) =
        (snapshot(&src), published(&out), snapshot(&outside));
    let server = via_http.then(|| FaultServer::start(&src));
    let source = server
        .as_ref()
        .map(|s| s.url.clone())
        .unwrap_or_else(|| s(&src).to_owned());
    let mut argv = faults_support::args(&source, s(&out), &[]);
    argv.extend(c.extra.iter().map(String::as_str));
    let o = mirror(&argv);
    let err = stderr(&o);
    let mut problems = Vec::new();
    let what = format!("{} ({})", c.name, if via_http { "http" } else { "dir" });
    if o.status.success() {
        problems.push(format!("{what}: succeeded; stderr:\n{err}"));
    }
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
    if errors.is_empty() {
        problems.push(format!("{what}: no error line:\n{err}"));
    }
    for needle in &c.needles {
        if !errors.iter().any(|l| l.contains(needle.as_str())) {
            problems.push(format!("{what}: no error line contains {needle:?}:\n{err}"));
        }
    }
    if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
        problems.push(format!("{what}: panicked:\n{err}"));
    }
    if snapshot(&src) != src_before {
        problems.push(format!("{what}: the source was written to"));
    }
    if snapshot(&outside) != outside_before {
        problems.push(format!("{what}: something was written outside the output"));
    }
    let out_after = published(&out);
    match c.level {
        Level::Metadata => {
            if out_after != out_before {
                let changed: Vec<&String> = out_after
                    .keys()
                    .chain(out_before.keys())
                    .filter(|k| out_after.get(*k) != out_before.get(*k))
                    .collect();
                problems.push(format!("{what}: the mirror changed: {changed:?}"));
            }
        }
        Level::Item => {
            for (k, v) in &out_before {
                if out_after.get(k) != Some(v) && !k.ends_with('/') {
                    problems.push(format!("{what}: published {k} changed"));
                }
            }
            let bad = inconsistencies(&out);
            if !bad.is_empty() {
                problems.push(format!("{what}: inconsistent: {bad:?}"));
            }
        }
    }
    problems
}

#[test]
fn hostile_streams_fail_cleanly_and_leave_the_mirror_alone() {
    let b = bench();
    let cases = corpus();
    assert!(cases.len() >= 25, "only {} cases", cases.len());
    let mut problems = Vec::new();
    for (n, c) in cases.iter().enumerate() {
        problems.extend(run_case(&b, n, c, false));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n---\n")
    );
}

#[test]
fn hostile_streams_over_http_fail_cleanly() {
    // The same checks when the stream is served: errors name the URL.
    let b = bench();
    let cases = corpus();
    let mut problems = Vec::new();
    for (n, c) in cases.iter().enumerate() {
        if c.plant.is_some() || !c.extra.is_empty() {
            continue;
        }
        problems.extend(run_case(&b, 1000 + n, c, true));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n---\n")
    );
}

#[test]
fn a_planted_part_symlink_is_replaced_not_written_through() {
    let b = bench();
    let base = b.work.path().join("part");
    let (out, outside) = (base.join("out"), base.join("outside"));
    copy_tree(&b.existing, &out);
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("victim"), b"do not touch").unwrap();
    let dir = out.join(format!("xenial/amd64/{NEW}"));
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), dir.join("squashfs.part")).unwrap();
    let before = snapshot(&outside);
    let o = mirror(&faults_support::args(s(&b.good), s(&out), &[]));
    faults_support::assert_ok(&o, "planted .part");
    assert_eq!(
        snapshot(&outside),
        before,
        "wrote through the .part symlink"
    );
    let m = fs::symlink_metadata(dir.join("squashfs")).unwrap();
    assert!(m.is_file(), "the item is not a regular file");
    assert_eq!(inconsistencies(&out), Vec::<String>::new());
}

// ---------------------------------------------------------------- signatures

#[test]
fn bad_signatures_are_refused() {
    let gpg = support::Gpg::new();
    let other = support::Gpg::new();
    let dirs: Vec<TempDir> = (0..4).map(|_| TempDir::new().unwrap()).collect();
    let (day1, good, existing, work) = (
        dirs[0].path(),
        dirs[1].path(),
        dirs[2].path(),
        dirs[3].path(),
    );
    gpg.generate(&spec(&[OLD]), day1);
    gpg.generate(&spec(&[OLD, NEW]), good);
    let keyring = s(&gpg.keyring).to_owned();
    let run = |src: &Path, out: &Path| {
        mirror(&[
            "--keyring",
            &keyring,
            "--timeout",
            "1",
            "--retries",
            "0",
            s(src),
            s(out),
        ])
    };
    faults_support::assert_ok(&run(day1, existing), "signed day 1");
    let check = work.join("check");
    copy_tree(existing, &check);
    faults_support::assert_ok(&run(good, &check), "signed day 2");

    let v3 = "streams/v1/com.ubuntu.maas:stable:v3:download.sjson";
    let index = "streams/v1/index.sjson";
    let other_signed = other.sign(&fs::read(good.join(V3_JSON)).unwrap());
    let cases: Vec<(&str, SrcEdit, &str)> = vec![
        (
            "tampered signed text",
            Box::new(|src: &Path| {
                let p = src.join(v3);
                let t = fs::read_to_string(&p).unwrap();
                fs::write(&p, t.replacen("squashfs", "squashfx", 1)).unwrap();
            }),
            v3,
        ),
        (
            "signed by another key",
            Box::new(move |src: &Path| fs::write(src.join(v3), &other_signed).unwrap()),
            v3,
        ),
        (
            "not signed at all",
            Box::new(|src: &Path| {
                fs::copy(src.join(V3_JSON), src.join(v3))
                    .map(|_| ())
                    .unwrap()
            }),
            v3,
        ),
        (
            "signature block cut off",
            Box::new(|src: &Path| {
                let p = src.join(v3);
                let t = fs::read_to_string(&p).unwrap();
                let i = t.find("-----BEGIN PGP SIGNATURE-----").unwrap();
                fs::write(&p, &t[..i + 40]).unwrap();
            }),
            v3,
        ),
        (
            "signed index naming an unsigned products file",
            Box::new(|src: &Path| {
                // The plain index (naming the .json products files), signed:
                // only the policy "a signed stream is signed throughout"
                // can refuse it.
                let plain = fs::read(src.join(INDEX)).unwrap();
                fs::write(src.join(index), gpg.sign(&plain)).unwrap();
            }),
            "bootloader-download.json: not clear-signed",
        ),
    ];
    let mut problems = Vec::new();
    for (n, (name, mutate, needle)) in cases.iter().enumerate() {
        let (src, out) = (work.join(format!("src-{n}")), work.join(format!("out-{n}")));
        copy_tree(good, &src);
        copy_tree(existing, &out);
        mutate(&src);
        let before = published(&out);
        let o = run(&src, &out);
        let err = stderr(&o);
        if o.status.success() {
            problems.push(format!("{name}: succeeded"));
        }
        let line = err.lines().find(|l| l.contains("error:")).unwrap_or("");
        if !line.contains(needle) {
            problems.push(format!("{name}: error line lacks {needle:?}:\n{err}"));
        }
        if published(&out) != before {
            problems.push(format!("{name}: the mirror changed"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n---\n"));
}
