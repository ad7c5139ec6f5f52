//! A fault-injecting HTTP/1.1 server for the robustness tests, plus helpers
//! to run `sstream-mirror` and to check that a mirror tree is consistent.
//!
//! The server serves a directory on 127.0.0.1 (one request per connection,
//! `Connection: close`), honours `Range: bytes=N-` and `bytes=N-M` and can be told, per path,
//! to misbehave on its next requests (a script) or on every request (a
//! standing fault). It stops when dropped: every thread polls a shutdown
//! flag, so a stalled response ends with the test.
#![allow(dead_code)] // each test file uses a different subset

use simplestreams::format::Products;
use simplestreams::hash::{Expected, verify_path as verify_file_blocking};
use simplestreams::sample::{SampleRelease, SampleSpec};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest a stalled or gated response is held (the server also stops
/// holding it when dropped).
const MAX_HOLD: Duration = Duration::from_secs(60);

/// One way to misbehave on one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Send the headers and the first `after` body bytes, then close.
    Drop { after: u64 },
    /// Answer with this status and an empty body (`retry_after`: seconds for
    /// a `Retry-After` header).
    Status { code: u16, retry_after: Option<u32> },
    /// Flip one byte of the body at this offset of the file.
    Corrupt { at: u64 },
    /// Answer a Range request with `200` and the whole body.
    IgnoreRange,
    /// Answer with `206` and a `Content-Range` whose start is off by `shift`
    /// (the body is what that wrong header says).
    WrongContentRange { shift: u64 },
    /// Send the headers and the first `after` body bytes, then nothing.
    Stall { after: u64 },
    /// Send the body in `chunk`-byte pieces, `delay_ms` apart.
    Trickle { chunk: usize, delay_ms: u64 },
    /// Announce a `Content-Length` off by `delta` and send the real body.
    LieLength { delta: i64 },
    /// Hold the response until [`FaultServer::open_gate`] is called.
    Gate,
}

#[derive(Default)]
struct Rules {
    scripts: HashMap<String, VecDeque<Fault>>,
    standing: HashMap<String, Fault>,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The path, without the leading `/`.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The fault applied, if any.
    pub fault: Option<Fault>,
}

struct Shared {
    root: PathBuf,
    stop: AtomicBool,
    gate: AtomicBool,
    rules: Mutex<Rules>,
    log: Mutex<Vec<Request>>,
    /// Every response is sent in pieces of this size with this delay.
    throttle: Mutex<Option<(usize, Duration)>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// The server; stops (and joins its threads) when dropped.
pub struct FaultServer {
    /// Base URL with a trailing slash, e.g. `http://127.0.0.1:41234/`.
    pub url: String,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultServer {
    /// Serves `root` on an ephemeral port of 127.0.0.1.
    pub fn start(root: &Path) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            stop: AtomicBool::new(false),
            gate: AtomicBool::new(false),
            rules: Mutex::default(),
            log: Mutex::default(),
            throttle: Mutex::new(None),
            workers: Mutex::default(),
        });
        let s = shared.clone();
        let acceptor = thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let s2 = s.clone();
                        let h = thread::spawn(move || handle(&s2, conn));
                        let mut w = s.workers.lock().unwrap();
                        w.retain(|h| !h.is_finished());
                        w.push(h);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FaultServer {
            url,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Queues faults for the next requests of `path` (one fault per request).
    pub fn script(&self, path: &str, faults: &[Fault]) {
        let mut r = self.shared.rules.lock().unwrap();
        r.scripts
            .entry(path.to_owned())
            .or_default()
            .extend(faults.iter().cloned());
    }

    /// Applies `fault` to every request of `path` (after its script).
    pub fn always(&self, path: &str, fault: Fault) {
        self.shared
            .rules
            .lock()
            .unwrap()
            .standing
            .insert(path.to_owned(), fault);
    }

    /// Sends every response in `chunk`-byte pieces `delay` apart.
    pub fn throttle(&self, chunk: usize, delay: Duration) {
        *self.shared.throttle.lock().unwrap() = Some((chunk, delay));
    }

    /// Lets gated responses go.
    pub fn open_gate(&self) {
        self.shared.gate.store(true, Ordering::SeqCst);
    }

    /// The requests served so far.
    pub fn log(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The requests of `path` so far.
    pub fn requests_of(&self, path: &str) -> Vec<Request> {
        self.log().into_iter().filter(|r| r.path == path).collect()
    }

    /// The faults scripted but not used yet.
    pub fn unused_faults(&self) -> usize {
        self.shared
            .rules
            .lock()
            .unwrap()
            .scripts
            .values()
            .map(VecDeque::len)
            .sum()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let workers: Vec<_> = self.shared.workers.lock().unwrap().drain(..).collect();
        for w in workers {
            let _ = w.join();
        }
    }
}

/// Sleeps in small steps until `until` or the server stops; false if stopped.
fn hold(shared: &Shared, until: impl Fn() -> bool) {
    let start = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) && !until() && start.elapsed() < MAX_HOLD {
        thread::sleep(Duration::from_millis(10));
    }
}

fn handle(shared: &Shared, conn: TcpStream) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let mut range = None;
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_owned());
        }
    }
    let path = decode_path(
        target
            .trim_start_matches('/')
            .split('?')
            .next()
            .unwrap_or(""),
    );
    let fault = {
        let mut r = shared.rules.lock().unwrap();
        let scripted = r.scripts.get_mut(&path).and_then(VecDeque::pop_front);
        scripted.or_else(|| r.standing.get(&path).cloned())
    };
    shared.log.lock().unwrap().push(Request {
        path: path.clone(),
        range: range.clone(),
        fault: fault.clone(),
    });
    let mut out = conn;
    let _ = respond(shared, &mut out, method, &path, range.as_deref(), fault);
    let _ = out.flush();
    let _ = out.shutdown(Shutdown::Both);
}

fn head(out: &mut TcpStream, status: &str, headers: &[(String, String)]) -> std::io::Result<()> {
    let mut h = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    out.write_all(h.as_bytes())
}

fn respond(
    shared: &Shared,
    out: &mut TcpStream,
    method: &str,
    path: &str,
    range: Option<&str>,
    fault: Option<Fault>,
) -> std::io::Result<()> {
    if fault == Some(Fault::Gate) {
        hold(shared, || shared.gate.load(Ordering::SeqCst));
    }
    if let Some(Fault::Status { code, retry_after }) = fault {
        let mut h = vec![("Content-Length".to_owned(), "0".to_owned())];
        if let Some(s) = retry_after {
            h.push(("Retry-After".to_owned(), s.to_string()));
        }
        return head(out, &format!("{code} Fault"), &h);
    }
    let file = shared.root.join(path);
    let body = match (path.is_empty() || path.contains(".."), fs::read(&file)) {
        (false, Ok(b)) if file.is_file() => b,
        _ => {
            return head(
                out,
                "404 Not Found",
                &[("Content-Length".to_owned(), "0".to_owned())],
            );
        }
    };
    let len = body.len() as u64;
    let asked = range.and_then(|r| r.strip_prefix("bytes="));
    let mut start = asked
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.trim().parse::<u64>().ok());
    // One past the last byte asked for (`bytes=N-M`), within the file.
    let end = asked
        .and_then(|r| r.split('-').nth(1))
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(len, |last| (last + 1).min(len));
    if fault == Some(Fault::IgnoreRange) {
        start = None;
    }
    let mut headers = Vec::new();
    let (status, from) = match start {
        Some(s) if s >= len => {
            return head(
                out,
                "416 Range Not Satisfiable",
                &[
                    ("Content-Range".to_owned(), format!("bytes */{len}")),
                    ("Content-Length".to_owned(), "0".to_owned()),
                ],
            );
        }
        Some(s) => {
            let shown = match fault {
                Some(Fault::WrongContentRange { shift }) => (s + shift).min(len - 1),
                _ => s,
            };
            let end = end.max(shown + 1);
            headers.push((
                "Content-Range".to_owned(),
                format!("bytes {shown}-{}/{len}", end - 1),
            ));
            ("206 Partial Content", shown)
        }
        None => match fault {
            Some(Fault::WrongContentRange { shift }) => {
                let shown = shift.min(len.saturating_sub(1));
                headers.push((
                    "Content-Range".to_owned(),
                    format!("bytes {shown}-{}/{len}", len.saturating_sub(1)),
                ));
                ("206 Partial Content", shown)
            }
            _ => ("200 OK", 0),
        },
    };
    let until = if status.starts_with("206") {
        end.max(from + 1).min(len)
    } else {
        len
    };
    let mut data = body[from as usize..until as usize].to_vec();
    if let Some(Fault::Corrupt { at }) = fault
        && at >= from
        && ((at - from) as usize) < data.len()
    {
        data[(at - from) as usize] ^= 0x5a;
    }
    let announced = match fault {
        Some(Fault::LieLength { delta }) => (data.len() as i64 + delta).max(0) as u64,
        _ => data.len() as u64,
    };
    headers.push(("Content-Length".to_owned(), announced.to_string()));
    head(out, status, &headers)?;
    if method == "HEAD" {
        return Ok(());
    }
    let send = match fault {
        Some(Fault::Drop { after }) | Some(Fault::Stall { after }) => {
            (after as usize).min(data.len())
        }
        _ => data.len(),
    };
    let (chunk, delay) = match fault {
        Some(Fault::Trickle { chunk, delay_ms }) => (chunk.max(1), Duration::from_millis(delay_ms)),
        _ => shared
            .throttle
            .lock()
            .unwrap()
            .unwrap_or((usize::MAX, Duration::ZERO)),
    };
    for piece in data[..send].chunks(chunk.max(1)) {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        out.write_all(piece)?;
        if !delay.is_zero() {
            out.flush()?;
            thread::sleep(delay);
        }
    }
    out.flush()?;
    if let Some(Fault::Stall { .. }) = fault {
        hold(shared, || false);
    }
    Ok(())
}

/// Runs the real `sstream-mirror` with `args` and waits for it.
pub fn mirror(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sstream-mirror"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run sstream-mirror")
}

/// The common arguments of an unsigned run from `source` into `out`, with
/// short timeouts and few retries.
pub fn args<'a>(source: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--no-verify", "--path", "streams/v1/index.json"];
    for (flag, default) in [("--timeout", "1"), ("--retries", "3")] {
        if !extra.contains(&flag) {
            v.extend([flag, default]);
        }
    }
    v.extend_from_slice(extra);
    v.push(source);
    v.push(out);
    v
}

/// Stderr of a finished process.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a run succeeded, printing its stderr otherwise.
pub fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: sstream-mirror failed ({}):\n{}",
        o.status,
        stderr(o)
    );
}

/// Asserts a run failed with an error on stderr containing every needle.
pub fn assert_failed(o: &Output, what: &str, needles: &[&str]) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "{what}: expected a failure, got success; stderr:\n{err}"
    );
    assert!(
        err.contains("error:"),
        "{what}: no error line on stderr:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "{what}: stderr lacks {n:?}:\n{err}");
    }
}

/// Names of the state files under `.data/` (one per mirrored content id).
pub fn state_files(root: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(root.join(".data")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            // references.json and the tool's own files (sstream-*).
            !n.starts_with('.') && n != "references.json" && !n.starts_with("sstream")
        })
        .collect();
    out.sort();
    out
}

/// The item paths a state file claims are mirrored, with what they must be.
pub fn claimed_items(root: &Path, content_id: &str) -> Result<Vec<(String, Expected)>, String> {
    let file = root.join(".data").join(content_id);
    let bytes = fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let tree = Products::parse(&file.display().to_string(), &bytes).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for product in tree.products.values() {
        for version in product.versions.values() {
            for item in version.items.values() {
                if let Some(p) = &item.path {
                    out.push((
                        p.to_string(),
                        Expected {
                            size: item.size,
                            checksum: item.checksum.clone(),
                        },
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// Checks the published tree at `root`: every item a state file claims is a
/// regular file of the right size and checksum; every products file the
/// published index names exists and every published products file of a
/// mirrored content id parses. Returns the problems found (empty: consistent).
pub fn inconsistencies(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut checked = BTreeSet::new();
    for cid in state_files(root) {
        match claimed_items(root, &cid) {
            Err(e) => problems.push(format!("state {cid}: {e}")),
            Ok(items) => {
                for (path, expected) in items {
                    if !checked.insert(path.clone()) {
                        continue;
                    }
                    let file = root.join(&path);
                    match fs::symlink_metadata(&file) {
                        Ok(m) if m.is_file() => {}
                        Ok(_) => {
                            problems.push(format!("{cid}: {path} is not a regular file"));
                            continue;
                        }
                        Err(e) => {
                            problems.push(format!("{cid}: {path} claimed but missing: {e}"));
                            continue;
                        }
                    }
                    if let Err(e) = verify_file_blocking(&file, &expected, &path) {
                        problems.push(format!("{cid}: {e}"));
                    }
                }
            }
        }
    }
    for index in ["streams/v1/index.json", "streams/v1/index.sjson"] {
        let Ok(bytes) = fs::read(root.join(index)) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            if index.ends_with(".json") {
                problems.push(format!("{index}: not JSON"));
            }
            continue;
        };
        if let Some(entries) = v.get("index").and_then(|i| i.as_object()) {
            for (cid, e) in entries {
                if let Some(p) = e.get("path").and_then(|p| p.as_str())
                    && !root.join(p).is_file()
                {
                    problems.push(format!("{index}: entry {cid} names missing {p}"));
                }
            }
        }
    }
    problems
}

/// Every file under `root` whose name ends in `.part` or holds `tmp`.
pub fn leftovers(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = crate::support::files(root)
        .into_iter()
        .filter(|f| {
            let name = f.rsplit('/').next().unwrap_or(f);
            name.ends_with(".part") || name.contains("tmp")
        })
        .collect();
    out.sort();
    out
}

/// Files that are not part of the published mirror and may differ between
/// two runs of the same stream (a fetch cache holds the server's URL).
pub const UNCOMPARED: &[&str] = &[".data/sstream-cache.json", ".data/sstream-unclean"];

/// Differences between two mirror trees ([`crate::support::tree_diff`]),
/// leaving out [`UNCOMPARED`] files.
pub fn tree_diff(a: &Path, b: &Path) -> Vec<String> {
    crate::support::tree_diff(a, b)
        .into_iter()
        .filter(|d| !UNCOMPARED.iter().any(|u| d.contains(u)))
        .collect()
}

/// Asserts two mirror trees are the same (see [`tree_diff`]).
pub fn compare_trees(a: &Path, b: &Path) {
    let d = tree_diff(a, b);
    assert!(
        d.is_empty(),
        "mirror trees differ ({} vs {}):\n  {}",
        a.display(),
        b.display(),
        d.join("\n  ")
    );
}

/// A small deterministic PRNG (SplitMix64) for reproducible random tests.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Reads a whole stream for a test-side check.
pub fn read_all(r: &mut impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = r.read_to_end(&mut v);
    v
}

/// A request path with `%XX` escapes decoded (malformed ones kept as they are).
fn decode_path(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A small stream: xenial/amd64 in `versions`, one bootloader version,
/// 4 KiB payloads.
pub fn small_spec(versions: &[&str]) -> SampleSpec {
    SampleSpec {
        releases: vec![SampleRelease::new("xenial", "16.04")],
        arches: vec!["amd64".into()],
        versions: versions.iter().map(|s| s.to_string()).collect(),
        bootloader_versions: vec!["20230222.0".into()],
        payload_bytes: 4096,
        ..SampleSpec::default()
    }
}

/// Trusty and xenial on amd64 with these image and bootloader versions and
/// payloads of `payload` bytes (the fault and S3 tests' stream).
pub fn two_release_spec(versions: &[&str], bootloaders: &[&str], payload: u64) -> SampleSpec {
    SampleSpec {
        releases: vec![
            SampleRelease::new("trusty", "14.04"),
            SampleRelease::new("xenial", "16.04"),
        ],
        arches: vec!["amd64".into()],
        versions: versions.iter().map(|s| s.to_string()).collect(),
        bootloader_versions: bootloaders.iter().map(|s| s.to_string()).collect(),
        payload_bytes: payload,
        ..SampleSpec::default()
    }
}

/// The first argument of a path, as `&str`.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The JSON text of a published document: the signed text of a
/// clear-signed one.
fn document_json(bytes: &[u8]) -> Vec<u8> {
    if bytes.starts_with(b"-----BEGIN PGP SIGNED MESSAGE") {
        simplestreams::openpgp::cleartext_body(bytes).unwrap_or_default()
    } else {
        bytes.to_vec()
    }
}

/// What a client of the published tree at `root` may rely on: with a
/// `keyring`, every signed document under `streams/v1` verifies with the
/// real `gpgv` (and the index is signed); every item every products file
/// of the published index lists is a regular file of the right size and
/// checksum. Returns the problems found (empty: all good).
pub fn published_problems(root: &Path, keyring: Option<&Path>) -> Vec<String> {
    let mut problems = Vec::new();
    let meta = root.join("streams/v1");
    let index = if keyring.is_some() {
        "index.sjson"
    } else {
        "index.json"
    };
    if let Some(keyring) = keyring {
        for entry in fs::read_dir(&meta).into_iter().flatten().flatten() {
            let path = entry.path();
            if !path.to_string_lossy().ends_with(".sjson") {
                continue;
            }
            let home = tempfile::TempDir::new().unwrap();
            let o = Command::new("gpgv")
                .env("GNUPGHOME", home.path())
                .arg("--keyring")
                .arg(keyring)
                .arg(&path)
                .output()
                .expect("run gpgv (install gnupg: scripts/test.sh does)");
            if !o.status.success() {
                problems.push(format!(
                    "{}: gpgv: {}",
                    path.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
        }
    }
    let Ok(bytes) = fs::read(meta.join(index)) else {
        return problems; // nothing published yet
    };
    let v: serde_json::Value = match serde_json::from_slice(&document_json(&bytes)) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("{index}: not JSON: {e}"));
            return problems;
        }
    };
    let entries = v.get("index").and_then(|i| i.as_object()).cloned();
    for (cid, e) in entries.unwrap_or_default() {
        let Some(p) = e.get("path").and_then(|p| p.as_str()) else {
            continue;
        };
        let Ok(doc) = fs::read(root.join(p)) else {
            problems.push(format!("{index}: entry {cid} names missing {p}"));
            continue;
        };
        let tree = match Products::parse(p, &document_json(&doc)) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{p}: {e}"));
                continue;
            }
        };
        for item in tree.items() {
            let Some(path) = &item.item.path else {
                continue;
            };
            let expected = Expected {
                size: item.item.size,
                checksum: item.item.checksum.clone(),
            };
            let file = root.join(path.as_str());
            if let Err(e) = verify_file_blocking(&file, &expected, path.as_str()) {
                problems.push(format!("{p} lists {path}: {e}"));
            }
        }
    }
    problems
}

/// Item paths the mirror's own records name: the states' items, the
/// references and the pending deletions.
pub fn recorded_paths(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for cid in state_files(root) {
        out.extend(
            claimed_items(root, &cid)
                .unwrap_or_default()
                .into_iter()
                .map(|(p, _)| p),
        );
    }
    for name in ["references.json", "sstream-pending-deletes.json"] {
        let Ok(bytes) = fs::read(root.join(".data").join(name)) else {
            continue;
        };
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(m)) => out.extend(m.keys().cloned()),
            Ok(serde_json::Value::Array(a)) => {
                out.extend(a.iter().filter_map(|v| v.as_str().map(str::to_owned)))
            }
            _ => {}
        }
    }
    out
}

/// The files of the item area of `root` (outside `.data/` and `streams/`,
/// `.part` files included; ranges records left out) that neither the
/// mirror's records ([`recorded_paths`]) nor `also` name (for a `.part`:
/// its item), with their total size: orphans and abandoned downloads.
pub fn unaccounted(root: &Path, also: &BTreeSet<String>) -> (u64, Vec<String>) {
    let named = recorded_paths(root);
    let mut bytes = 0;
    let mut files = Vec::new();
    for f in crate::support::files(root) {
        let name = f.rsplit('/').next().unwrap_or(&f);
        if f.starts_with(".data/") || f.starts_with("streams/") || name.starts_with('.') {
            continue;
        }
        let item = f.strip_suffix(".part").unwrap_or(&f);
        if named.contains(item) || also.contains(item) {
            continue;
        }
        bytes += fs::metadata(root.join(&f)).map_or(0, |m| m.len());
        files.push(f);
    }
    (bytes, files)
}

/// Every item path the products files of the stream at `src` (its
/// `index.json`) list.
pub fn listed_paths(src: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(bytes) = fs::read(src.join("streams/v1/index.json")) else {
        return out;
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let entries = v.get("index").and_then(|i| i.as_object()).cloned();
    for e in entries.unwrap_or_default().values() {
        let Some(p) = e.get("path").and_then(|p| p.as_str()) else {
            continue;
        };
        let Ok(doc) = fs::read(src.join(p)) else {
            continue;
        };
        if let Ok(tree) = Products::parse(p, &doc) {
            out.extend(
                tree.items()
                    .filter_map(|i| i.item.path.as_ref().map(|p| p.to_string())),
            );
        }
    }
    out
}
