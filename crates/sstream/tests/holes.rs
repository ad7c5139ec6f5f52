//! Holes found by adversarial testing, each closed: a server whose
//! `Last-Modified` lies in the future, damaged items that reruns must
//! repair, and a FIFO planted where the mirror keeps its state.

mod faults_support;
mod support;

use faults_support::{args, assert_ok, mirror, stderr};
use simplestreams::sample::{self, SampleRelease, SampleSpec};
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
    SampleSpec {
        releases: vec![SampleRelease::new("xenial", "16.04")],
        arches: vec!["amd64".into()],
        versions: versions.iter().map(|s| s.to_string()).collect(),
        bootloader_versions: vec!["20230222.0".into()],
        payload_bytes: 4096,
        ..SampleSpec::default()
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A server with a fast clock: every answer carries a `Last-Modified` a day
/// in the future and no ETag, and it answers 304 to any
/// `If-Modified-Since`, whatever changed. Records each request's headers.
struct FastClockServer {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FastClockServer {
    fn start(root: PathBuf) -> FastClockServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (root, log) = (root.clone(), log.clone());
                std::thread::spawn(move || serve(conn, &root, &log));
            }
        });
        FastClockServer { url, requests }
    }
}

fn serve(conn: TcpStream, root: &Path, log: &Mutex<Vec<String>>) {
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
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(86400));
        let now = httpdate::fmt_http_date(SystemTime::now());
        let response = if head.to_ascii_lowercase().contains("if-modified-since:") {
            format!("HTTP/1.1 304 Not Modified\r\nDate: {now}\r\nLast-Modified: {future}\r\n\r\n")
                .into_bytes()
        } else {
            let decoded = percent_encoding::percent_decode_str(&path).decode_utf8_lossy();
            match fs::read(root.join(decoded.trim_start_matches('/'))) {
                Ok(body) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nDate: {now}\r\nLast-Modified: {future}\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&body);
                    r
                }
                Err(_) => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            }
        };
        if out.write_all(&response).is_err() {
            return;
        }
    }
}

/// A `Last-Modified` in the future is not a validator: a changed upstream
/// is seen on the next run, however the server answers conditional requests.
#[test]
fn a_last_modified_in_the_future_cannot_keep_the_mirror_stale() {
    let src = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    sample::generate(&spec(&[OLD]), src.path(), None).unwrap();
    let server = FastClockServer::start(src.path().to_path_buf());
    let run = || mirror(&args(&server.url, s(out.path()), &["--max=1"]));
    assert_ok(&run(), "day 1");
    fs::remove_dir_all(src.path().join("streams")).unwrap();
    sample::generate(&spec(&[OLD, NEW]), src.path(), None).unwrap();
    assert_ok(&run(), "day 2");
    let conditional = server
        .requests
        .lock()
        .unwrap()
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
