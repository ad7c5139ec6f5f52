//! Shared helpers of the integration tests (`mod support;` in each test file):
//! a throwaway GnuPG key, our HTTP server, a counting static server, the
//! reference tools, running both mirror tools, and comparing mirror trees.
#![allow(dead_code)] // each test file uses a different subset

use serde_json::Value;
use simplestreams::sample::{self, SampleSpec, SampleStream};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;
use std::{fs, thread};

/// A throwaway OpenPGP signing key in a temporary GNUPGHOME, made with the
/// real `gpg`.
pub struct Gpg {
    home: tempfile::TempDir,
    /// Binary keyring (`gpg --export`) holding the public key.
    pub keyring: PathBuf,
    /// An empty GNUPGHOME for the tools under test (so they never touch
    /// `~/.gnupg` and cannot find the secret key).
    pub verify_home: PathBuf,
}

impl Gpg {
    /// Generates the key (rsa3072, sign only, no passphrase) and exports it.
    pub fn new() -> Gpg {
        let home = tempfile::Builder::new()
            .prefix("sstream-gpg")
            .tempdir()
            .unwrap();
        let gpg = Gpg {
            keyring: home.path().join("keyring.gpg"),
            verify_home: home.path().join("verify-home"),
            home,
        };
        fs::create_dir(gpg.home.path().join("g")).unwrap();
        fs::create_dir(&gpg.verify_home).unwrap();
        set_private(&gpg.home.path().join("g"));
        set_private(&gpg.verify_home);
        let out = gpg.cmd(&[
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            "sstream test <test@example.invalid>",
            "rsa3072",
            "sign",
            "never",
        ]);
        check("gpg --quick-gen-key", &out);
        let out = gpg.cmd(&["--batch", "--export"]);
        check("gpg --export", &out);
        assert!(!out.stdout.is_empty(), "gpg --export wrote nothing");
        fs::write(&gpg.keyring, &out.stdout).unwrap();
        gpg
    }

    fn gnupghome(&self) -> PathBuf {
        self.home.path().join("g")
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("gpg")
            .env("GNUPGHOME", self.gnupghome())
            .args(args)
            .output()
            .expect("run gpg (install gnupg: scripts/test.sh does)")
    }

    /// Clear-signs `data` with `gpg --clearsign`.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        let mut child = Command::new("gpg")
            .env("GNUPGHOME", self.gnupghome())
            .args([
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--clearsign",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run gpg");
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        let writer = thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        check("gpg --clearsign", &out);
        out.stdout
    }

    /// Generates a signed sample stream into `dir` (see [`sample::generate`]).
    pub fn generate(&self, spec: &SampleSpec, dir: &Path) -> SampleStream {
        let signer = |b: &[u8]| -> Result<Vec<u8>, sample::SignError> { Ok(self.sign(b)) };
        sample::generate(spec, dir, Some(&signer)).unwrap()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        // Stop the gpg-agent the key generation started.
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.gnupghome())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

#[cfg(unix)]
fn set_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Output of a background process, collected by a thread.
type Collected = Arc<Mutex<String>>;

fn collect(r: impl Read + Send + 'static) -> Collected {
    let buf: Collected = Arc::default();
    let b = buf.clone();
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            let mut b = b.lock().unwrap();
            b.push_str(&line);
            b.push('\n');
        }
    });
    buf
}

/// Our server: `sstream serve <dir> --listen 127.0.0.1:0`, killed on drop.
pub struct Server {
    child: Child,
    /// Base URL with a trailing slash, e.g. `http://127.0.0.1:41234/`.
    pub url: String,
    stderr: Collected,
}

impl Server {
    /// Starts the server and waits for its `Serving <DIR> at <URL>` line.
    pub fn start(dir: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sstream"))
            .arg("serve")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sstream serve");
        let stderr = collect(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        // A guard against a server that neither prints nor exits.
        let first = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        // `Serving <DIR> at http://127.0.0.1:<PORT>/`
        let want = format!("Serving {} at http://127.0.0.1:<PORT>/", dir.display());
        let port = first
            .trim_end()
            .strip_prefix("Serving ")
            .and_then(|rest| rest.rsplit_once(" at http://127.0.0.1:"))
            .and_then(|(_, rest)| rest.strip_suffix('/'))
            .and_then(|p| p.parse::<u16>().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let status = child.wait().unwrap();
            thread::sleep(Duration::from_millis(100)); // let the collector finish
            panic!(
                "sstream serve: expected a first line `{want}`, got {first:?} ({status}); stderr:\n{}",
                stderr.lock().unwrap()
            );
        };
        Server {
            child,
            url: format!("http://127.0.0.1:{port}/"),
            stderr,
        }
    }

    /// What the server wrote on stderr so far (its access log).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request answered by a [`CountingServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Request method.
    pub method: String,
    /// Decoded request path, without the leading `/`.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
}

/// A minimal static HTTP/1.1 server on 127.0.0.1 that logs every request:
/// GET and HEAD, single `Range: bytes=N-` requests, `Connection: close`.
pub struct CountingServer {
    /// Base URL with a trailing slash.
    pub url: String,
    log: Arc<Mutex<Vec<Served>>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl CountingServer {
    /// Serves `dir` until dropped.
    pub fn start(dir: &Path) -> CountingServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<Served>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s, root) = (log.clone(), stop.clone(), dir.to_path_buf());
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (l, root) = (l.clone(), root.clone());
                thread::spawn(move || serve_one(conn, &root, &l));
            }
        });
        CountingServer {
            url: format!("http://{addr}/"),
            log,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    /// Requests served so far.
    pub fn log(&self) -> Vec<Served> {
        self.log.lock().unwrap().clone()
    }

    /// Forgets the requests served so far.
    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}

impl Drop for CountingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(mut conn: TcpStream, root: &Path, log: &Mutex<Vec<Served>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let range_start = read_range_start(&mut reader);
    let mut parts = request.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/");
    let path = decode_path(
        target
            .split('?')
            .next()
            .unwrap_or("")
            .trim_start_matches('/'),
    );
    let safe = !path.split('/').any(|c| c == "..");
    let file = root.join(&path);
    let data = if safe && file.is_file() {
        fs::read(&file).ok()
    } else {
        None
    };
    let (status, body, extra) = match data {
        None => (404, b"not found\n".to_vec(), String::new()),
        Some(d) => match range_start {
            Some(n) if n < d.len() as u64 => {
                let len = d.len();
                let cr = format!("Content-Range: bytes {n}-{}/{len}\r\n", len - 1);
                (206, d[n as usize..].to_vec(), cr)
            }
            Some(_) if !d.is_empty() => (
                416,
                Vec::new(),
                format!("Content-Range: bytes */{}\r\n", d.len()),
            ),
            _ => (200, d, String::new()),
        },
    };
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        _ => "Range Not Satisfiable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let sent = if method == "HEAD" {
        0
    } else {
        body.len() as u64
    };
    log.lock().unwrap().push(Served {
        method: method.clone(),
        path,
        status,
        bytes: sent,
    });
    let _ = conn.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = conn.write_all(&body);
    }
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Write);
}

/// The bin directory of the reference tools' venv (made by scripts/test.sh).
pub fn reference() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/reference-venv/bin");
    if !bin.join("sstream-mirror").is_file() {
        panic!("run scripts/test.sh (it installs the reference into target/reference-venv)");
    }
    bin
}

/// The reference `sstream-mirror`.
pub fn reference_mirror() -> PathBuf {
    reference().join("sstream-mirror")
}

/// Our drop-in `sstream-mirror`.
pub fn ours_mirror() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sstream-mirror"))
}

/// Runs a mirror tool with `args` (GNUPGHOME set to `gnupghome`) and returns
/// its output; panics with its stderr if it fails.
pub fn run_ok(tool: &Path, gnupghome: &Path, args: &[String]) -> Output {
    let out = Command::new(tool)
        .env("GNUPGHOME", gnupghome)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", tool.display()));
    assert!(
        out.status.success(),
        "{} {} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        tool.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Arguments as owned strings.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Every regular file under `root`, relative, `/`-separated, skipping
/// `*.lock` files and our own bookkeeping under `.data/` (`sstream*`: the
/// run lock, the fetch cache, pending deletions), which the reference
/// neither writes nor reads.
pub fn files(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeSet<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(&e.path(), &r, out);
            } else if !(name.ends_with(".lock") || rel == ".data" && name.starts_with("sstream")) {
                out.insert(r);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, "", &mut out);
    out
}

/// Differences between two JSON values, as `path: a != b` lines.
fn json_diff(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{at}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => json_diff(u, v, &p, out),
                    (Some(_), None) => out.push(format!("{p}: only in first")),
                    (None, _) => out.push(format!("{p}: only in second")),
                }
            }
        }
        _ if a != b => out.push(format!("{at}: {a} != {b}")),
        _ => {}
    }
}

/// `references.json` as a map of sets.
fn refs_as_sets(v: &Value) -> Option<BTreeMap<String, BTreeSet<String>>> {
    v.as_object()?
        .iter()
        .map(|(k, l)| {
            let set = l
                .as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<_>>()?;
            Some((k.clone(), set))
        })
        .collect()
}

/// Reads the header lines of a request up to the blank line; gives the
/// start `N` of a `Range: bytes=N-` among them.
pub fn read_range_start(reader: &mut impl BufRead) -> Option<u64> {
    let mut range_start = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("range")
        {
            range_start = v
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<u64>().ok());
        }
    }
    range_start
}

/// Bytes a process printed, as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A finished process's status, stdout and stderr, for an assertion's message.
pub fn show(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Differences between two mirror trees (empty when equal): the same files
/// (directories and `*.lock` ignored), the same bytes, except under `.data/`:
/// `.data/<content_id>` compared as JSON data and `.data/references.json` as a
/// map of sets (order and duplicates ignored). A file on one side only is
/// accepted when it is exactly the plain twin of a clear-signed document
/// both sides hold (what our mirror publishes beside an upstream `.sjson`
/// for LXD and Incus, and the reference does not: see [`plain_twin`]).
pub fn tree_diff(a: &Path, b: &Path) -> Vec<String> {
    let (fa, fb) = (files(a), files(b));
    let mut out = Vec::new();
    let twin = |root: &Path, f: &str| {
        let signed = f.strip_suffix(".json").map(|stem| format!("{stem}.sjson"));
        signed.is_some_and(|sj| {
            fa.contains(&sj) && fb.contains(&sj) && plain_twin(&root.join(&sj), &root.join(f))
        })
    };
    for f in fa.difference(&fb) {
        if !twin(a, f) {
            out.push(format!("only in {}: {f}", a.display()));
        }
    }
    for f in fb.difference(&fa) {
        if !twin(b, f) {
            out.push(format!("only in {}: {f}", b.display()));
        }
    }
    for f in fa.intersection(&fb) {
        let (x, y) = (fs::read(a.join(f)).unwrap(), fs::read(b.join(f)).unwrap());
        if x == y {
            continue;
        }
        if f.starts_with(".data/") {
            let (Ok(jx), Ok(jy)) = (
                serde_json::from_slice::<Value>(&x),
                serde_json::from_slice::<Value>(&y),
            ) else {
                out.push(format!("{f}: differs and is not JSON on both sides"));
                continue;
            };
            if f == ".data/references.json" {
                let (sx, sy) = (refs_as_sets(&jx), refs_as_sets(&jy));
                if sx.is_none() || sx != sy {
                    let mut d = Vec::new();
                    let to_v = |s: Option<BTreeMap<String, BTreeSet<String>>>| {
                        serde_json::to_value(s).unwrap()
                    };
                    json_diff(&to_v(sx), &to_v(sy), "", &mut d);
                    out.push(format!("{f} (as sets):\n    {}", d.join("\n    ")));
                }
            } else {
                let mut d = Vec::new();
                json_diff(&jx, &jy, "", &mut d);
                if !d.is_empty() {
                    out.push(format!("{f}:\n    {}", d.join("\n    ")));
                }
            }
        } else {
            out.push(format!(
                "{f}: bytes differ ({} vs {} bytes)",
                x.len(),
                y.len()
            ));
        }
    }
    out
}

/// Whether `plain` is the plain twin of the clear-signed document `signed`:
/// the same JSON as the text its signature covers, an index's entries'
/// `.sjson` paths pointing at the `.json` twins.
pub fn plain_twin(signed: &Path, plain: &Path) -> bool {
    let Ok(body) = simplestreams::openpgp::cleartext_body(&fs::read(signed).unwrap()) else {
        return false;
    };
    let (Ok(mut want), Ok(got)) = (
        serde_json::from_slice::<Value>(&body),
        serde_json::from_slice::<Value>(&fs::read(plain).unwrap()),
    ) else {
        return false;
    };
    if let Some(Value::Object(entries)) = want.get_mut("index") {
        for entry in entries.values_mut() {
            if let Some(Value::String(path)) = entry.get_mut("path")
                && let Some(stem) = path.strip_suffix(".sjson")
            {
                *path = format!("{stem}.json");
            }
        }
    }
    want == got
}

/// Asserts [`tree_diff`] is empty, printing the differences.
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

/// Copies a directory tree (files and directories only).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for f in files(from) {
        let dest = to.join(&f);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(from.join(&f), dest).unwrap();
    }
}

/// A snapshot of a tree: every entry (including `*.lock`) and its bytes;
/// symlinks recorded as their target (`"path -> "`), not followed;
/// directories as empty (`"path/"`). Left out, as bookkeeping that no
/// client reads (`.data/` is never served): status records
/// (`.data/sstream-status-*.json`, which every run writes, failed or not)
/// and the marker of a run that has not collected its leftovers yet
/// (`.data/sstream-unclean`, left by a failed run).
pub fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = snapshot_all(root);
    all.retain(|k, _| {
        let status = k.starts_with(".data/sstream-status-") && k.ends_with(".json");
        !(status || k == ".data/sstream-unclean")
    });
    all
}

/// [`snapshot`] with the status records.
pub fn snapshot_all(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                let target = fs::read_link(e.path()).unwrap();
                out.insert(
                    format!("{r} -> "),
                    target.into_os_string().into_encoded_bytes(),
                );
            } else if ft.is_dir() {
                out.insert(format!("{r}/"), Vec::new());
                walk(&e.path(), &r, out);
            } else {
                out.insert(r, fs::read(e.path()).unwrap());
            }
        }
    }
    let mut all = BTreeMap::new();
    walk(root, "", &mut all);
    all
}

/// A request path with `%XX` escapes decoded (malformed ones kept as they are).
fn decode_path(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A private CA and a server certificate for `localhost` and 127.0.0.1,
/// made by `sstream tls generate` in a temporary directory.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Runs `sstream tls generate --host localhost --host 127.0.0.1`.
    pub fn generate() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sstream"))
            .args([
                "tls",
                "generate",
                "--host",
                "localhost",
                "--host",
                "127.0.0.1",
            ])
            .arg("--out")
            .arg(dir.path())
            .output()
            .unwrap();
        check("sstream tls generate", &out);
        TestPki { dir }
    }

    /// The directory holding `ca.pem`, `ca.key`, `server.pem`, `server.key`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// One of the four files.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Our server over HTTP and HTTPS: `sstream serve <dir> --listen
/// 127.0.0.1:0 --listen-tls 127.0.0.1:0 --tls-cert CHAIN --tls-key KEY`,
/// killed on drop.
pub struct TlsServer {
    child: Child,
    /// The plain HTTP base URL, e.g. `http://127.0.0.1:41234/`.
    pub http_url: String,
    /// The HTTPS base URL, e.g. `https://127.0.0.1:41235/`.
    pub https_url: String,
    stderr: Collected,
}

impl TlsServer {
    /// Starts the server and waits for its two `Serving` lines.
    pub fn start(dir: &Path, cert: &Path, key: &Path) -> TlsServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sstream"))
            .arg("serve")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--listen-tls", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sstream serve");
        let stderr = collect(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            for _ in 0..2 {
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let _ = tx.send(line);
            }
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let prefix = format!("Serving {} at ", dir.display());
        let url = || {
            let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
            line.trim_end()
                .strip_prefix(&prefix)
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    panic!("sstream serve said {line:?}, {}", stderr.lock().unwrap())
                })
        };
        let http_url = url();
        let https_url = url();
        assert!(http_url.starts_with("http://127.0.0.1:"), "{http_url}");
        assert!(https_url.starts_with("https://127.0.0.1:"), "{https_url}");
        TlsServer {
            child,
            http_url,
            https_url,
            stderr,
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (up to a minute) until stderr contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        for _ in 0..600 {
            let log = self.stderr();
            if log.contains(needle) {
                return log;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("no {needle:?} in the server's log:\n{}", self.stderr());
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every product of every products file that the plain index
/// `streams/v1/index.json` under `root` names, with its name.
pub fn listed_products(root: &Path) -> Vec<(String, Value)> {
    let read = |rel: &str| -> Value {
        let bytes = fs::read(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    let index = read("streams/v1/index.json");
    let mut out = Vec::new();
    for entry in index["index"].as_object().expect("an index").values() {
        let doc = read(entry["path"].as_str().expect("a path"));
        for (name, product) in doc["products"].as_object().expect("products") {
            out.push((name.clone(), product.clone()));
        }
    }
    out
}

/// The item paths the plain metadata under `root` lists, each with its
/// size and SHA-256 (empty when the item gives none).
pub fn listed_items(root: &Path) -> BTreeMap<String, (u64, String)> {
    let mut out = BTreeMap::new();
    for (_, product) in listed_products(root) {
        for version in product["versions"].as_object().expect("versions").values() {
            for item in version["items"].as_object().expect("items").values() {
                out.insert(
                    item["path"].as_str().expect("a path").to_owned(),
                    (
                        item["size"].as_u64().expect("a size"),
                        item["sha256"].as_str().unwrap_or_default().to_owned(),
                    ),
                );
            }
        }
    }
    out
}

/// The image versions the plain metadata under `root` lists (not the
/// bootloaders', whose names have a dot: `20230222.0`).
pub fn listed_versions(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, product) in listed_products(root) {
        let names = product["versions"].as_object().expect("versions").keys();
        out.extend(names.filter(|v| !v.contains('.')).cloned());
    }
    out
}

/// A tmpfs of `size` bytes mounted at `dir` (made), unmounted on drop;
/// `None` (after saying why) when this test cannot mount one.
pub struct Tmpfs {
    /// Where it is mounted.
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts it (root only).
    pub fn mount(dir: &Path, size: usize) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                dir: dir.to_path_buf(),
            }),
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr);
                eprintln!("skipped: mount -t tmpfs failed: {}", why.trim());
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Whether `gpgv` (with GNUPGHOME `home`) verifies every one of `files`
/// (detached signature and data, or clear-signed documents) with the
/// keyring `ring`.
pub fn gpgv(home: &Path, ring: &Path, files: &[&Path]) -> bool {
    Command::new("gpgv")
        .env("GNUPGHOME", home)
        .arg("--keyring")
        .arg(ring)
        .args(files)
        .output()
        .expect("run gpgv")
        .status
        .success()
}

/// Makes a signing key with `sstream key generate` (with `extra`
/// arguments, e.g. `--rsa`) at `key` and exports its binary keyring to
/// `ring`, asserting both succeed.
pub fn our_key(key: &Path, ring: &Path, extra: &[&str]) {
    let run = |args: &[&std::ffi::OsStr]| {
        let o = Command::new(env!("CARGO_BIN_EXE_sstream"))
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("run sstream");
        assert!(
            o.status.success(),
            "sstream {:?}: {}",
            args,
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let mut generate: Vec<&std::ffi::OsStr> = vec!["key".as_ref(), "generate".as_ref()];
    generate.extend(["--output".as_ref(), key.as_os_str()]);
    generate.extend(extra.iter().map(std::ffi::OsStr::new));
    run(&generate);
    run(&[
        "key".as_ref(),
        "export".as_ref(),
        key.as_os_str(),
        "--output".as_ref(),
        ring.as_os_str(),
    ]);
}
