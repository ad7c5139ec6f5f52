//! Holes found by adversarial testing, each closed: a server whose
//! `Last-Modified` lies in the future, damaged items that reruns must
//! repair, and a FIFO planted where the mirror keeps its state.

mod faults_support;
mod support;

use faults_support::{args, assert_ok, mirror, s, stderr};
use simplestreams::sample::{self, SampleSpec};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use support::Server;
use tempfile::TempDir;

const OLD: &str = "20250615";
const NEW: &str = "20250718";

fn spec(versions: &[&str]) -> SampleSpec {
    faults_support::small_spec(versions)
}

/// What a [`RawServer`] answers to one request (given its path and head):
/// raw response bytes.
type Handler = dyn Fn(&str, &str) -> Vec<u8> + Send + Sync;

/// A small HTTP/1.1 server on loopback answering with whatever its handler
/// says, byte for byte (to play servers that misbehave). Records each
/// request's head.
struct RawServer {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl RawServer {
    fn start(handler: Box<Handler>) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let handler: Arc<Handler> = Arc::from(handler);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (handler, log) = (handler.clone(), log.clone());
                std::thread::spawn(move || serve(conn, handler.as_ref(), &log));
            }
        });
        RawServer { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(conn: TcpStream, handler: &Handler, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        log.lock().unwrap().push(head.clone());
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        if out.write_all(&handler(&path, &head)).is_err() {
            return;
        }
    }
}

/// A plain answer: status line, headers, and a body with its length.
fn answer(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// The file at `path` under `root`, or a 404.
fn file_answer(root: &Path, path: &str, headers: &[(&str, String)]) -> Vec<u8> {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    match fs::read(root.join(decoded.trim_start_matches('/'))) {
        Ok(body) => answer("200 OK", headers, &body),
        Err(_) => answer("404 Not Found", &[], b""),
    }
}

/// A server with a fast clock: every answer carries a `Last-Modified` a day
/// in the future and no ETag, and it answers 304 to any
/// `If-Modified-Since`, whatever changed.
fn fast_clock_server(root: PathBuf) -> RawServer {
    RawServer::start(Box::new(move |path, head| {
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(86400));
        let now = httpdate::fmt_http_date(SystemTime::now());
        let dates = [("Date", now), ("Last-Modified", future)];
        if head.to_ascii_lowercase().contains("if-modified-since:") {
            return answer("304 Not Modified", &dates, b"");
        }
        file_answer(&root, path, &dates)
    }))
}

/// A `Last-Modified` in the future is not a validator: a changed upstream
/// is seen on the next run, however the server answers conditional requests.
#[test]
fn a_last_modified_in_the_future_cannot_keep_the_mirror_stale() {
    let src = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    sample::generate(&spec(&[OLD]), src.path(), None).unwrap();
    let server = fast_clock_server(src.path().to_path_buf());
    let run = || mirror(&args(&server.url, s(out.path()), &["--max=1"]));
    assert_ok(&run(), "day 1");
    fs::remove_dir_all(src.path().join("streams")).unwrap();
    sample::generate(&spec(&[OLD, NEW]), src.path(), None).unwrap();
    assert_ok(&run(), "day 2");
    let conditional = server
        .requests()
        .iter()
        .filter(|r| r.to_ascii_lowercase().contains("if-modified-since"))
        .count();
    assert_eq!(conditional, 0, "no conditional request on a future date");
    assert!(
        out.path()
            .join(format!("xenial/amd64/{NEW}/squashfs"))
            .is_file(),
        "day 2's version arrived"
    );
}

/// Files of the mirror: deleted, truncated, or with a byte flipped.
fn damage(out: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let base = out.join(format!("xenial/amd64/{OLD}"));
    let squashfs = base.join("squashfs");
    let manifest = base.join("squashfs.manifest");
    let kernel = base.join("ga-16.04/generic/boot-kernel");
    assert!(squashfs.is_file() && manifest.is_file() && kernel.is_file());
    fs::remove_file(&kernel).unwrap();
    let m = fs::read(&manifest).unwrap();
    fs::write(&manifest, &m[..m.len() / 2]).unwrap();
    (squashfs, manifest, kernel)
}

fn flip_a_byte(path: &Path) {
    let mut b = fs::read(path).unwrap();
    b[10] ^= 0x55;
    fs::write(path, b).unwrap();
}

/// Reruns repair what they find damaged: a missing or truncated item is
/// fetched again on a plain rerun (also when every metadata document is
/// answered 304), a changed byte with `--verify-existing`.
#[test]
fn damaged_items_are_fetched_again() {
    let src = TempDir::new().unwrap();
    sample::generate(&spec(&[OLD]), src.path(), None).unwrap();
    let good = TempDir::new().unwrap();
    assert_ok(
        &mirror(&args(s(src.path()), s(good.path()), &["--max=1"])),
        "reference copy",
    );
    let same_as_good = |out: &Path, p: &Path| {
        let rel = p.strip_prefix(out).unwrap();
        fs::read(p).ok() == fs::read(good.path().join(rel)).ok()
    };
    // A directory source (no validators) and a served one (all 304).
    let server = Server::start(src.path());
    for source in [s(src.path()).to_owned(), server.url.clone()] {
        let out = TempDir::new().unwrap();
        let run = |extra: &[&str]| {
            let mut e = vec!["--max=1"];
            e.extend_from_slice(extra);
            mirror(&args(&source, s(out.path()), &e))
        };
        assert_ok(&run(&[]), "first run");
        assert_ok(&run(&[]), "no-op");
        let (squashfs, manifest, kernel) = damage(out.path());
        let o = run(&["-v"]);
        assert_ok(&o, "repairing run");
        assert!(stderr(&o).contains("fetching it again"), "{}", stderr(&o));
        for p in [&manifest, &kernel] {
            assert!(same_as_good(out.path(), p), "{} repaired", p.display());
        }
        flip_a_byte(&squashfs);
        assert_ok(&run(&["--verify-existing"]), "verifying run");
        assert!(same_as_good(out.path(), &squashfs), "squashfs repaired");
    }
}

/// A FIFO where the mirror keeps its references makes the run fail at once
/// with a clear error, not hang holding the lock; one at a published
/// metadata path is replaced by the real document.
#[test]
fn a_fifo_in_the_mirror_is_refused_not_waited_on() {
    let src = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    sample::generate(&spec(&[OLD]), src.path(), None).unwrap();
    assert_ok(&mirror(&args(s(src.path()), s(out.path()), &[])), "day 1");
    fs::remove_dir_all(src.path().join("streams")).unwrap();
    sample::generate(&spec(&[OLD, NEW]), src.path(), None).unwrap();
    let mkfifo = |p: &Path| {
        let _ = fs::remove_file(p);
        let st = Command::new("mkfifo").arg(p).status().unwrap();
        assert!(st.success());
    };
    let refs = out.path().join(".data/references.json");
    mkfifo(&refs);
    let mut cmd = Command::new("timeout");
    cmd.arg("60")
        .arg(env!("CARGO_BIN_EXE_sstream-mirror"))
        .args(args(s(src.path()), s(out.path()), &[]));
    let o = cmd.output().unwrap();
    assert_ne!(o.status.code(), Some(124), "the run hung on the FIFO");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&refs.display().to_string()), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    fs::remove_file(&refs).unwrap();
    let mut body = String::new();
    let index = out.path().join("streams/v1/index.json");
    mkfifo(&index);
    let o = cmd.output().unwrap();
    assert_ne!(o.status.code(), Some(124), "the run hung on the FIFO");
    assert_ok(&o, "the run replaces a FIFO at a metadata path");
    fs::File::open(&index)
        .unwrap()
        .read_to_string(&mut body)
        .unwrap();
    assert!(body.contains("\"index\""), "{body}");
}

/// A server that misbehaves on one path (`bad`) and serves the stream
/// otherwise: a run from it fails with a clear error naming what came
/// back, makes the bad request `tries` times at most, and leaves no
/// `.part` of the bad answer.
fn misbehaving(bad: &'static str, reply: Vec<u8>, needles: &[&str], tries: usize) {
    let src = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    sample::generate(&spec(&[OLD]), src.path(), None).unwrap();
    let root = src.path().to_path_buf();
    let server = RawServer::start(Box::new(move |path, _| {
        if path == bad {
            reply.clone()
        } else {
            file_answer(&root, path, &[])
        }
    }));
    let o = mirror(&args(&server.url, s(out.path()), &[]));
    let err = stderr(&o);
    assert!(!o.status.success(), "{bad}: {err}");
    for n in needles {
        assert!(err.contains(n), "{bad}: {n:?} not in {err}");
    }
    let line = format!("GET {bad} ");
    let asked = server
        .requests()
        .iter()
        .filter(|r| r.starts_with(&line))
        .count();
    assert!(asked <= tries, "{bad}: asked {asked} times: {err}");
    let part = out
        .path()
        .join(format!("{}.part", bad.trim_start_matches('/')));
    assert!(!part.exists(), "{bad}: a .part of the bad answer was left");
}

/// Redirect loops, redirects to `file://`, a captive portal's page, a
/// compressed document and an oversized header each say what they are,
/// and what cannot get better is not retried.
#[test]
fn misbehaving_servers_are_named_for_what_they_do() {
    let index = "/streams/v1/index.json";
    misbehaving(
        index,
        answer("302 Found", &[("Location", index.to_owned())], b""),
        &["redirect loop"],
        11,
    );
    misbehaving(
        index,
        answer(
            "302 Found",
            &[("Location", "file:///etc/passwd".to_owned())],
            b"",
        ),
        &["file:///etc/passwd", "only http and https"],
        1,
    );
    misbehaving(
        index,
        answer(
            "200 OK",
            &[("Content-Encoding", "gzip".to_owned())],
            b"\x1f\x8b\x08",
        ),
        &["Content-Encoding: gzip", "does not decode"],
        1,
    );
    let huge = "x".repeat(1 << 20);
    misbehaving(
        index,
        answer("200 OK", &[("X-Padding", huge)], b"{}"),
        &["too large"],
        1,
    );
    let squashfs: &'static str =
        Box::leak(format!("/xenial/amd64/{OLD}/squashfs").into_boxed_str());
    misbehaving(
        squashfs,
        answer(
            "200 OK",
            &[("Content-Type", "text/html; charset=utf-8".to_owned())],
            b"<html><body>Please log in to use the Wi-Fi</body></html>",
        ),
        &[squashfs, "text/html", "captive portal"],
        1,
    );
}

/// A `.data/` the run cannot write is found before anything is downloaded.
#[test]
fn an_unwritable_state_directory_is_found_before_downloading() {
    if !is_root() {
        eprintln!("skipped: needs root (chattr +i)");
        return;
    }
    let src = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    sample::generate(&spec(&[OLD]), src.path(), None).unwrap();
    assert_ok(&mirror(&args(s(src.path()), s(out.path()), &[])), "day 1");
    fs::remove_dir_all(src.path().join("streams")).unwrap();
    sample::generate(&spec(&[OLD, NEW]), src.path(), None).unwrap();
    let data = out.path().join(".data");
    struct Immutable<'a>(&'a Path);
    impl Drop for Immutable<'_> {
        fn drop(&mut self) {
            let _ = Command::new("chattr").arg("-i").arg(self.0).status();
        }
    }
    let st = Command::new("chattr")
        .arg("+i")
        .arg(&data)
        .status()
        .unwrap();
    if !st.success() {
        eprintln!("skipped: chattr +i is not supported here");
        return;
    }
    let _guard = Immutable(&data);
    let served = Server::start(src.path());
    let o = mirror(&args(&served.url, s(out.path()), &[]));
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(&data.display().to_string()) && err.contains("not writable"),
        "{err}"
    );
    let items = served.stderr().lines().filter(|l| l.contains(NEW)).count();
    assert_eq!(
        items,
        0,
        "nothing of the new version was requested:\n{}",
        served.stderr()
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A no-op run (every document answered 304, every item in place) reads
/// neither the references nor the states: a references file it cannot
/// parse is not even opened.
#[test]
fn a_noop_run_reads_no_references() {
    let src = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    sample::generate(&spec(&[OLD]), src.path(), None).unwrap();
    let server = Server::start(src.path());
    let run = || mirror(&args(&server.url, s(out.path()), &[]));
    assert_ok(&run(), "first run");
    let refs = out.path().join(".data/references.json");
    let good = fs::read(&refs).unwrap();
    fs::write(&refs, b"not json").unwrap();
    assert_ok(&run(), "no-op");
    assert_eq!(fs::read(&refs).unwrap(), b"not json");
    // Once something changes they are read, and a broken file is named.
    fs::remove_file(out.path().join(format!("xenial/amd64/{OLD}/squashfs"))).unwrap();
    let o = run();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("malformed references"),
        "{}",
        stderr(&o)
    );
    fs::write(&refs, good).unwrap();
    assert_ok(&run(), "repaired");
}
