//! The mirror's disk: the space check before downloading (a tmpfs too small
//! for the plan, one filled up by another writer mid-download), content
//! stored once (hard links within a stream and across the jobs of one
//! config, removal of one path keeping the other, the reference continuing
//! such a mirror), and the delete delay (a reader holding the previous
//! metadata gets all its items during and right after a `--max=1` update).
//!
//! The filesystem tests mount a tmpfs of their own and need root; they are
//! skipped, with a message, when that is not possible.

mod support;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Deterministic pseudo-random bytes: `seed` decides the content.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One item of a hand-made stream: product, version, item name, path, bytes.
type ItemSpec<'a> = (&'a str, &'a str, &'a str, &'a str, &'a [u8]);

/// Writes an unsigned stream under `root` (`streams/v1/index.json` and one
/// products file `content_id`) with `items`, and their payloads. Payloads
/// of earlier days stay (a server keeps old files for a while).
fn write_stream(root: &Path, content_id: &str, items: &[ItemSpec<'_>]) {
    let mut products: BTreeMap<&str, BTreeMap<&str, serde_json::Map<String, Value>>> =
        BTreeMap::new();
    for (product, version, item, path, bytes) in items {
        let file = root.join(path);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, bytes).unwrap();
        products
            .entry(product)
            .or_default()
            .entry(version)
            .or_default()
            .insert(
                item.to_string(),
                json!({"ftype": item, "path": path, "size": bytes.len(), "sha256": sha256(bytes)}),
            );
    }
    let products: serde_json::Map<String, Value> = products
        .into_iter()
        .map(|(name, versions)| {
            let versions: serde_json::Map<String, Value> = versions
                .into_iter()
                .map(|(v, items)| (v.to_string(), json!({ "items": items })))
                .collect();
            (
                name.to_string(),
                json!({"arch": "amd64", "versions": versions}),
            )
        })
        .collect();
    let names: Vec<&String> = products.keys().collect();
    let rel = format!("streams/v1/{content_id}.json");
    let index = json!({"format": "index:1.0", "index": {content_id: {
        "datatype": "image-ids", "format": "products:1.0", "path": rel, "products": names,
    }}});
    let doc = json!({"content_id": content_id, "datatype": "image-ids",
        "format": "products:1.0", "products": products});
    fs::create_dir_all(root.join("streams/v1")).unwrap();
    fs::write(root.join(&rel), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let index = serde_json::to_vec_pretty(&index).unwrap();
    fs::write(root.join("streams/v1/index.json"), index).unwrap();
}

/// Runs `sstream ARGS`.
fn sstream(args: &[&str]) -> Output {
    run_tool(Path::new(env!("CARGO_BIN_EXE_sstream")), args)
}

fn run_tool(tool: &Path, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", tool.display()))
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", show(&out));
    out
}

/// `sstream mirror URL OUT` of a hand-made stream, with `extra` options.
fn mirror(url: &str, out: &Path, extra: &[&str]) -> Output {
    let out = out.to_string_lossy();
    let mut a = vec!["mirror", url, &out, "--path", "streams/v1/index.json"];
    a.extend(extra);
    sstream(&a)
}

/// Item requests (not metadata) a counting server answered.
fn item_requests(server: &CountingServer) -> Vec<Served> {
    server
        .log()
        .into_iter()
        .filter(|s| !s.path.split('/').any(|seg| seg == "streams"))
        .collect()
}

/// The tree's regular files and their bytes, but the run lock (whose
/// content is the pid of the last run).
fn contents(root: &Path) -> BTreeMap<String, Vec<u8>> {
    snapshot(root)
        .into_iter()
        .filter(|(k, _)| !k.ends_with("sstream.lock"))
        .collect()
}

fn identity(path: &Path) -> (u64, u64) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.dev(), m.ino())
}

#[test]
fn a_filesystem_too_small_for_the_plan_is_refused_before_any_item_request() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&tmp.path().join("disk"), 8 * MIB) else {
        return;
    };
    let (src, out) = (tmp.path().join("src"), disk.dir.join("mirror"));
    let small = payload(1, MIB);
    write_stream(
        &src,
        "com.example:disk",
        &[("small", "1", "a", "small/1/a", &small)],
    );
    let server = CountingServer::start(&src);
    ok(mirror(&server.url, &out, &["--max=1"]));
    assert_eq!(fs::read(out.join("small/1/a")).unwrap(), small);

    // Day 2: two 4 MiB files, more than the 7 MiB left.
    let (b1, b2) = (payload(2, 4 * MIB), payload(3, 4 * MIB));
    write_stream(
        &src,
        "com.example:disk",
        &[
            ("small", "1", "a", "small/1/a", &small),
            ("big", "1", "a", "big/1/a", &b1),
            ("big", "1", "b", "big/1/b", &b2),
        ],
    );
    let before = contents(&out);
    server.clear();
    let dry = ok(mirror(&server.url, &out, &["--max=1", "--dry-run"]));
    let stdout = text(&dry.stdout);
    let space = stdout
        .lines()
        .find(|l| l.starts_with("space: "))
        .unwrap_or_else(|| panic!("the dry run prints the space line:\n{stdout}"));
    assert!(space.contains("8.0 MiB to write"), "{space}");
    assert!(space.contains(&disk.dir.display().to_string()), "{space}");
    assert!(space.ends_with("NOT ENOUGH"), "{space}");

    let run = mirror(&server.url, &out, &["--max=1"]);
    assert!(!run.status.success(), "{}", show(&run));
    let stderr = text(&run.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    for needle in [
        "not enough free space on",
        &disk.dir.display().to_string(),
        "the plan needs 8.0 MiB",
        "kept free",
        "MiB free",
    ] {
        assert!(lines[0].contains(needle), "{needle:?} in {stderr}");
    }
    assert_eq!(item_requests(&server), [], "no item was requested");
    assert_eq!(contents(&out), before, "the mirror is untouched");

    // With room made (the margin lowered is not enough: 8 MiB > 7 MiB).
    let run = mirror(&server.url, &out, &["--max=1", "--min-free", "0"]);
    assert!(!run.status.success(), "{}", show(&run));
    assert!(
        text(&run.stderr).contains("0 B kept free"),
        "{}",
        show(&run)
    );
    assert_eq!(item_requests(&server), []);
}

/// Requests: path and the start of its `Range`.
type RequestLog = Arc<Mutex<Vec<(String, Option<u64>)>>>;

/// A static server on 127.0.0.1 that logs each request (path, start of its
/// `Range`) and can hold one file's body after `hold_after` bytes until
/// released.
struct HoldingServer {
    url: String,
    log: RequestLog,
    held: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
}

impl HoldingServer {
    fn start(root: &Path, hold_path: &str, hold_after: usize) -> HoldingServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let log: RequestLog = Arc::default();
        let held = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let (root, hold_path) = (root.to_path_buf(), hold_path.to_owned());
        let (l, h, r) = (log.clone(), held.clone(), release.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (root, hold_path, l, h, r) = (
                    root.clone(),
                    hold_path.clone(),
                    l.clone(),
                    h.clone(),
                    r.clone(),
                );
                std::thread::spawn(move || {
                    let (path, range) = read_request(&conn);
                    l.lock().unwrap().push((path.clone(), range));
                    let Ok(body) = fs::read(root.join(&path)) else {
                        let _ = (&conn).write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        return;
                    };
                    let start = range.unwrap_or(0).min(body.len() as u64) as usize;
                    let status = if range.is_some() {
                        format!(
                            "206 Partial Content\r\nContent-Range: bytes {start}-{}/{}",
                            body.len().saturating_sub(1),
                            body.len()
                        )
                    } else {
                        "200 OK".to_owned()
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                        body.len() - start
                    );
                    let mut conn = conn;
                    let _ = conn.write_all(head.as_bytes());
                    let body = &body[start..];
                    if path == hold_path && range.is_none() && !r.load(Ordering::SeqCst) {
                        let _ = conn.write_all(&body[..hold_after]);
                        let _ = conn.flush();
                        h.store(true, Ordering::SeqCst);
                        while !r.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        let _ = conn.write_all(&body[hold_after..]);
                    } else {
                        let _ = conn.write_all(body);
                    }
                    let _ = conn.shutdown(Shutdown::Write);
                });
            }
        });
        HoldingServer {
            url,
            log,
            held,
            release,
        }
    }

    fn requests_of(&self, path: &str) -> Vec<Option<u64>> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(p, _)| p == path)
            .map(|(_, r)| *r)
            .collect()
    }
}

/// The path (without the leading `/`) and `Range: bytes=N-` start of a
/// request.
fn read_request(conn: &TcpStream) -> (String, Option<u64>) {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_owned();
    let path = percent_encoding::percent_decode_str(&path)
        .decode_utf8_lossy()
        .into_owned();
    (path, read_range_start(&mut reader))
}

/// Fills the filesystem of `dir` with one file, until it is full.
fn fill(file: &Path) {
    let mut f = fs::File::create(file).unwrap();
    let chunk = vec![0xffu8; 64 * KIB];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
}

#[test]
fn a_disk_filling_up_mid_download_fails_clearly_and_the_download_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&tmp.path().join("disk"), 16 * MIB) else {
        return;
    };
    let (src, out) = (tmp.path().join("src"), disk.dir.join("mirror"));
    let small = payload(1, 64 * KIB);
    write_stream(
        &src,
        "com.example:fill",
        &[("small", "1", "a", "small/1/a", &small)],
    );
    let server = HoldingServer::start(&src, "big/1/image", 8 * MIB);
    ok(mirror(&server.url, &out, &["--max=1"]));

    let big = payload(2, 10 * MIB);
    write_stream(
        &src,
        "com.example:fill",
        &[
            ("small", "1", "a", "small/1/a", &small),
            ("big", "1", "image", "big/1/image", &big),
        ],
    );
    let before = contents(&out);
    let child = Command::new(env!("CARGO_BIN_EXE_sstream"))
        .args(["mirror", &server.url, &out.to_string_lossy()])
        .args(["--path", "streams/v1/index.json", "--max=1", "-j", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Another writer takes the space while the download is held at 8 MiB.
    let part = out.join("big/1/image.part");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(server.held.load(Ordering::SeqCst)
        && fs::metadata(&part).is_ok_and(|m| m.len() >= 7 * MIB as u64))
    {
        assert!(Instant::now() < deadline, "the download never got to 7 MiB");
        std::thread::sleep(Duration::from_millis(20));
    }
    let filler = disk.dir.join("filler");
    fill(&filler);
    server.release.store(true, Ordering::SeqCst);
    let run = child.wait_with_output().unwrap();
    assert!(!run.status.success(), "{}", show(&run));
    let stderr = text(&run.stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains(&part.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(stderr.contains("kept to resume: big/1/image"), "{stderr}");
    let mut after = contents(&out);
    let staged = after
        .remove("big/1/image.part")
        .expect("the partial download is kept");
    assert!(staged.len() >= 7 * MIB && big.starts_with(&staged));
    after.remove("big/");
    after.remove("big/1/");
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert_eq!(after, before, "nothing published: the mirror as it was");

    // Space freed: the next run resumes where the download stopped.
    fs::remove_file(&filler).unwrap();
    ok(mirror(&server.url, &out, &["--max=1"]));
    assert_eq!(fs::read(out.join("big/1/image")).unwrap(), big);
    let requests = server.requests_of("big/1/image");
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        requests[1].is_some_and(|start| start >= 7 * MIB as u64),
        "resumed with a Range request: {requests:?}"
    );
    ok(sstream(&["verify", &out.to_string_lossy(), "--strict"]));
}

/// Item bytes of the content-stored-once test.
struct Contents {
    kernel: Vec<u8>,
    squashfs: Vec<u8>,
    extra: Vec<u8>,
    kernel2: Vec<u8>,
    squashfs2: Vec<u8>,
}

impl Contents {
    fn new() -> Contents {
        Contents {
            kernel: payload(10, 300 * KIB),
            squashfs: payload(11, 700 * KIB),
            extra: payload(12, 100 * KIB),
            kernel2: payload(13, 310 * KIB),
            squashfs2: payload(14, 710 * KIB),
        }
    }
}

/// Writes the `stable` and `candidate` streams of day `day` under `srv`.
/// Day 1: `ga` and `hwe` share a kernel (two paths) and a squashfs (one
/// path); candidate has the same kernel at the same path and the same
/// squashfs at another path, and a file of its own. Day 2: `ga` moves to
/// version 2. Day 3: `hwe` moves to version 2 with ga's version 2 kernel.
fn write_day(srv: &Path, c: &Contents, day: u32) {
    let mut stable: Vec<ItemSpec<'_>> = Vec::new();
    if day == 1 {
        stable.push(("ga", "1", "kernel", "ga/1/kernel", &c.kernel));
        stable.push(("ga", "1", "squashfs", "shared/1/squashfs", &c.squashfs));
    } else {
        stable.push(("ga", "2", "kernel", "ga/2/kernel", &c.kernel2));
        stable.push(("ga", "2", "squashfs", "shared/2/squashfs", &c.squashfs2));
    }
    if day < 3 {
        stable.push(("hwe", "1", "kernel", "hwe/1/kernel", &c.kernel));
        stable.push(("hwe", "1", "squashfs", "shared/1/squashfs", &c.squashfs));
    } else {
        stable.push(("hwe", "2", "kernel", "hwe/2/kernel", &c.kernel2));
        stable.push(("hwe", "2", "squashfs", "shared/2/squashfs", &c.squashfs2));
    }
    write_stream(&srv.join("stable"), "com.example:stable", &stable);
    write_stream(
        &srv.join("candidate"),
        "com.example:candidate",
        &[
            ("ga", "1", "kernel", "ga/1/kernel", &c.kernel),
            ("ga", "1", "squashfs", "cand/1/squashfs", &c.squashfs),
            ("ga", "1", "extra", "cand/1/extra", &c.extra),
        ],
    );
}

#[test]
fn identical_content_is_downloaded_once_and_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (srv, site) = (tmp.path().join("srv"), tmp.path().join("site"));
    let c = Contents::new();
    write_day(&srv, &c, 1);
    let server = CountingServer::start(&srv);
    fs::create_dir_all(&site).unwrap();
    let config = site.join("sstream.toml");
    fs::write(
        &config,
        format!(
            r#"
[defaults]
path = "streams/v1/index.json"
max = 1
delete_delay = "0"
content_index = "content"

[[job]]
name = "stable"
source = "{url}stable/"
dir = "mirrors/stable"

[[job]]
name = "candidate"
source = "{url}candidate/"
dir = "mirrors/candidate"
"#,
            url = server.url
        ),
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    let (stable, candidate) = (site.join("mirrors/stable"), site.join("mirrors/candidate"));

    // The plan says what content stored once saves.
    let dry = ok(sstream(&[
        "sync",
        "--config",
        &config,
        "--dry-run",
        "stable",
    ]));
    let stdout = text(&dry.stdout);
    assert!(
        stdout.contains("stored once: 1 file(s) linked to identical content, 0 Mb not downloaded"),
        "{stdout}"
    );
    assert!(stdout.contains("\nspace: "), "{stdout}");
    assert_eq!(item_requests(&server), []);

    // Both jobs: each content is requested once.
    ok(sstream(&["sync", "--config", &config]));
    let mut requested: Vec<(String, u64)> = item_requests(&server)
        .into_iter()
        .map(|s| (s.path, s.bytes))
        .collect();
    requested.sort();
    assert_eq!(
        requested,
        [
            ("candidate/cand/1/extra".to_owned(), c.extra.len() as u64),
            ("stable/ga/1/kernel".to_owned(), c.kernel.len() as u64),
            (
                "stable/shared/1/squashfs".to_owned(),
                c.squashfs.len() as u64
            ),
        ],
        "each content once, whatever its paths and mirrors"
    );
    // One inode per content.
    let kernels = [
        stable.join("ga/1/kernel"),
        stable.join("hwe/1/kernel"),
        candidate.join("ga/1/kernel"),
    ];
    for k in &kernels {
        assert_eq!(fs::read(k).unwrap(), c.kernel, "{}", k.display());
        assert_eq!(identity(k), identity(&kernels[0]), "{}", k.display());
    }
    assert_eq!(
        identity(&stable.join("shared/1/squashfs")),
        identity(&candidate.join("cand/1/squashfs"))
    );
    assert_eq!(
        fs::read(candidate.join("cand/1/squashfs")).unwrap(),
        c.squashfs
    );
    assert!(site.join("content/sha256").is_dir(), "the shared index");
    for dir in [&stable, &candidate] {
        let v = ok(sstream(&[
            "verify",
            &dir.to_string_lossy(),
            "--strict",
            "--full",
        ]));
        assert!(text(&v.stdout).starts_with("OK: "), "{}", show(&v));
    }
    let refs: Value =
        serde_json::from_slice(&fs::read(stable.join(".data/references.json")).unwrap()).unwrap();
    assert_eq!(
        refs["ga/1/kernel"],
        json!(["com.example:stable/ga/1/kernel"])
    );
    assert_eq!(
        refs["hwe/1/kernel"],
        json!(["com.example:stable/hwe/1/kernel"])
    );

    // Day 2: ga leaves version 1. Its kernel path goes; the same bytes stay
    // at hwe's path and in the other mirror.
    write_day(&srv, &c, 2);
    server.clear();
    ok(sstream(&["sync", "--config", &config]));
    assert!(!stable.join("ga/1/kernel").exists());
    assert_eq!(fs::read(stable.join("hwe/1/kernel")).unwrap(), c.kernel);
    assert_eq!(fs::read(candidate.join("ga/1/kernel")).unwrap(), c.kernel);
    assert_eq!(
        fs::read(stable.join("shared/1/squashfs")).unwrap(),
        c.squashfs
    );
    assert_eq!(fs::read(stable.join("ga/2/kernel")).unwrap(), c.kernel2);
    for dir in [&stable, &candidate] {
        ok(sstream(&[
            "verify",
            &dir.to_string_lossy(),
            "--strict",
            "--full",
        ]));
    }
    // A rerun converges: nothing to fetch, link or remove.
    server.clear();
    let again = ok(sstream(&["sync", "--config", &config]));
    assert_eq!(item_requests(&server), []);
    for job in ["stable", "candidate"] {
        let line = text(&again.stdout)
            .lines()
            .find(|l| l.starts_with(&format!("{job}: ok in")))
            .map(str::to_owned);
        assert!(
            line.is_some_and(|l| l.contains("0 file(s), 0 B downloaded, 0 file(s) removed")),
            "{}",
            show(&again)
        );
    }

    // Day 3 with the reference: it continues the stable mirror (hwe moves
    // to version 2, whose kernel is ga's), and ends with the tree it makes
    // on its own; ours then has nothing to do.
    write_day(&srv, &c, 3);
    let alone = tmp.path().join("reference-alone");
    let url = format!("{}stable/", server.url);
    for out in [&stable, &alone] {
        let out = out.to_string_lossy();
        let a = ["--path", "streams/v1/index.json", &url, &out, "--max=1"];
        run_ok(&reference_mirror(), tmp.path(), &args(&a));
    }
    compare_trees(&alone, &stable);
    assert!(!stable.join("hwe/1/kernel").exists());
    assert_eq!(fs::read(candidate.join("ga/1/kernel")).unwrap(), c.kernel);
    ok(sstream(&[
        "verify",
        &stable.to_string_lossy(),
        "--strict",
        "--full",
    ]));
    server.clear();
    ok(sstream(&["sync", "--config", &config]));
    assert_eq!(item_requests(&server), [], "ours continues the reference's");
    compare_trees(&alone, &stable);
}

#[test]
fn identical_content_within_one_stream_with_the_drop_in_and_v() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let c = Contents::new();
    write_day(&src, &c, 1);
    let server = CountingServer::start(&src.join("stable"));
    let out = tmp.path().join("out");
    let run = ok(run_tool(
        Path::new(env!("CARGO_BIN_EXE_sstream-mirror")),
        &[
            "--path",
            "streams/v1/index.json",
            &server.url,
            &out.to_string_lossy(),
            "-v",
        ],
    ));
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains("1 file(s) linked to identical content (300.0 KiB not downloaded)"),
        "{stderr}"
    );
    let paths: BTreeSet<String> = item_requests(&server).into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        BTreeSet::from(["ga/1/kernel".to_owned(), "shared/1/squashfs".to_owned()])
    );
    assert_eq!(
        identity(&out.join("ga/1/kernel")),
        identity(&out.join("hwe/1/kernel"))
    );
    // The same tree as the reference's (which stores the kernel twice).
    let theirs = tmp.path().join("theirs");
    let a = [
        "--path",
        "streams/v1/index.json",
        &server.url,
        &theirs.to_string_lossy(),
    ];
    run_ok(&reference_mirror(), tmp.path(), &args(&a));
    compare_trees(&theirs, &out);
}

/// `GET url` (HTTP/1.1, one request per connection): status and body.
fn get(url: &str) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut conn = TcpStream::connect(host).unwrap();
    write!(
        conn,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    conn.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, all[split + 4..].to_vec())
}

/// The item paths of the products file a mirror serves.
fn served_items(base: &str, content_id: &str) -> Vec<(String, String)> {
    let (status, body) = get(&format!("{base}streams/v1/{content_id}.json"));
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let mut out = Vec::new();
    for product in doc["products"].as_object().unwrap().values() {
        for version in product["versions"].as_object().unwrap().values() {
            for item in version["items"].as_object().unwrap().values() {
                let path = item["path"].as_str().unwrap().to_owned();
                out.push((path, item["sha256"].as_str().unwrap().to_owned()));
            }
        }
    }
    out
}

/// A reader that read the mirror's metadata: fetches every item it names.
fn fetch_all(base: &str, items: &[(String, String)]) -> Result<(), String> {
    for (path, sum) in items {
        let (status, body) = get(&format!("{base}{path}"));
        if status != 200 {
            return Err(format!("{path}: {status}"));
        }
        if sha256(&body) != *sum {
            return Err(format!("{path}: wrong content"));
        }
    }
    Ok(())
}

#[test]
fn a_reader_of_the_previous_metadata_gets_its_items_during_the_delete_delay() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
    let cid = "com.example:grace";
    let (a1, b1, a2, b2) = (
        payload(20, 512 * KIB),
        payload(21, 64 * KIB),
        payload(22, 512 * KIB),
        payload(23, 64 * KIB),
    );
    write_stream(
        &src,
        cid,
        &[("p", "1", "a", "p/1/a", &a1), ("p", "1", "b", "p/1/b", &b1)],
    );
    let source = CountingServer::start(&src);
    let grace = ["--max=1", "--delete-delay", "4s"];
    ok(mirror(&source.url, &out, &grace));
    let served = Server::start(&out);
    let reader = served_items(&served.url, cid);
    assert_eq!(reader.len(), 2);
    fetch_all(&served.url, &reader).unwrap();

    // The update, while the reader keeps fetching what its metadata names.
    write_stream(
        &src,
        cid,
        &[("p", "2", "a", "p/2/a", &a2), ("p", "2", "b", "p/2/b", &b2)],
    );
    let done = Arc::new(AtomicBool::new(false));
    let reading = {
        let (base, items, done) = (served.url.clone(), reader.clone(), done.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !done.load(Ordering::SeqCst) || rounds == 0 {
                fetch_all(&base, &items)?;
                rounds += 1;
            }
            Ok::<usize, String>(rounds)
        })
    };
    let run = mirror(&source.url, &out, &grace);
    let updated = Instant::now();
    done.store(true, Ordering::SeqCst);
    ok(run);
    reading
        .join()
        .unwrap()
        .expect("every item during the update");
    fetch_all(&served.url, &reader).expect("every item right after the update");
    // A no-op run within the delay keeps them.
    source.clear();
    ok(mirror(&source.url, &out, &grace));
    assert!(
        updated.elapsed() < Duration::from_secs(4),
        "the machine is too slow for this test"
    );
    fetch_all(&served.url, &reader).expect("still within the delay");
    let now = served_items(&served.url, cid);
    assert!(now.iter().all(|(p, _)| p.starts_with("p/2/")), "{now:?}");
    fetch_all(&served.url, &now).unwrap();
    // Unreferenced by anything published, reported as scheduled.
    let refs = fs::read_to_string(out.join(".data/references.json")).unwrap();
    assert!(!refs.contains("p/1/"), "{refs}");
    let v = ok(sstream(&["verify", &out.to_string_lossy(), "--strict"]));
    let report = text(&v.stdout);
    for p in ["p/1/a", "p/1/b"] {
        let line = format!(
            "note: scheduled: {}: waiting out the delete delay",
            out.join(p).display()
        );
        assert!(report.contains(&line), "{line}\n{report}");
    }
    assert!(!report.contains("orphan"), "{report}");
    assert!(
        report.contains("0 warning(s); 2 file(s) scheduled for deletion"),
        "{report}"
    );
    let json = ok(sstream(&["verify", &out.to_string_lossy(), "--json"]));
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        json["scheduled"].as_array().map(Vec::len),
        Some(2),
        "{json}"
    );
    assert_eq!(json["warnings"], 0);

    // A no-op run after the delay removes them.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(updated.elapsed()));
    let after = ok(mirror(&source.url, &out, &[&grace[..], &["-v"]].concat()));
    assert!(
        text(&after.stderr).contains("2 file(s) removed"),
        "{}",
        show(&after)
    );
    assert_eq!(item_requests(&source), [], "no-op runs: metadata only");
    assert_eq!(get(&format!("{}p/1/a", served.url)).0, 404);
    assert!(!out.join("p/1").exists());
    assert!(!out.join(".data/sstream-pending-deletes.json").exists());
    let v = ok(sstream(&["verify", &out.to_string_lossy(), "--strict"]));
    assert!(!text(&v.stdout).contains("scheduled"), "{}", show(&v));

    // The drop-in deletes at once, as the reference does.
    let dropin = tmp.path().join("dropin");
    let tool = Path::new(env!("CARGO_BIN_EXE_sstream-mirror"));
    let d = dropin.to_string_lossy();
    let a = [
        "--path",
        "streams/v1/index.json",
        "--max=1",
        &source.url,
        &d,
    ];
    write_stream(
        &src,
        cid,
        &[("p", "1", "a", "p/1/a", &a1), ("p", "1", "b", "p/1/b", &b1)],
    );
    ok(run_tool(tool, &a));
    write_stream(
        &src,
        cid,
        &[("p", "2", "a", "p/2/a", &a2), ("p", "2", "b", "p/2/b", &b2)],
    );
    ok(run_tool(tool, &a));
    assert!(!dropin.join("p/1").exists());
    assert!(dropin.join("p/2/a").is_file());
}
