//! Real S3 servers on 127.0.0.1 for the bucket tests, installed by
//! `scripts/s3-servers.sh`: moto in server mode and s3s-fs (which checks
//! request signatures). Each test starts its own server on a free port,
//! behind a small proxy that logs every request and can inject faults
//! (error answers, delays, a dropped header). Everything is stopped when
//! dropped.
//!
//! A server whose binary is absent makes the test skip with a message,
//! unless `CI` is set: then it is a failure.
#![allow(dead_code)] // each test uses a different subset

use simplestreams::store::{S3Settings, S3Store, Store};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The credentials every test server accepts.
pub const ACCESS_KEY: &str = "sstreamtestkey";
/// The secret of [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "sstreamtestsecret0123456789";

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// moto in server mode (Python; no signature checks).
    Moto,
    /// s3s-fs (Rust; checks SigV4 signatures, stores objects as files).
    S3sFs,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Kind {
    fn binary(self) -> PathBuf {
        match self {
            Kind::Moto => repo().join("target/moto-venv/bin/moto_server"),
            Kind::S3sFs => repo().join("target/s3s-fs/bin/s3s-fs"),
        }
    }
}

/// Whether a test must fail rather than skip when a server is missing.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A running S3 server and the proxy in front of it.
pub struct S3Server {
    /// Which server.
    pub kind: Kind,
    child: Child,
    backend: SocketAddr,
    /// The proxy the tools under test talk to.
    pub proxy: Proxy,
    /// A home directory with no `~/.aws` (and the s3s-fs data).
    pub home: TempDir,
}

/// Runs `fut` (a store's request) to completion on the tests' runtime
/// (one, made by the library's builder, shared by every test of the
/// binary): the tests are synchronous, the store's methods async.
pub fn block<F: std::future::Future>(fut: F) -> F::Output {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| simplestreams::runtime::build().expect("a runtime"))
        .block_on(fut)
}

impl S3Server {
    /// Starts a server of `kind` with one bucket, `bucket`; `None` (after a
    /// message) when the server is not installed and `CI` is unset.
    pub fn start(kind: Kind, bucket: &str) -> Option<S3Server> {
        let binary = kind.binary();
        if !binary.is_file() {
            let msg = format!(
                "{} is not installed: run scripts/s3-servers.sh",
                binary.display()
            );
            assert!(!in_ci(), "CI is set and {msg}");
            eprintln!("skipping: {msg}");
            return None;
        }
        let home = TempDir::new().unwrap();
        let port = free_port();
        let data = home.path().join("s3s-fs");
        let mut cmd = Command::new(&binary);
        match kind {
            Kind::Moto => {
                cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            }
            Kind::S3sFs => {
                fs::create_dir_all(data.join(bucket)).unwrap();
                cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                    .arg(&data);
            }
        }
        let child = cmd
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let backend: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut server = S3Server {
            kind,
            child,
            backend,
            proxy: Proxy::start(backend),
            home,
        };
        server.wait_ready();
        if kind == Kind::Moto {
            server.create_bucket(bucket);
        }
        Some(server)
    }

    /// Waits until the server answers HTTP.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{:?} exited at start: {status}", self.kind);
            }
            if let Ok(mut c) = TcpStream::connect(self.backend) {
                let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut first = [0u8; 12];
                if c.read_exact(&mut first).is_ok() && first.starts_with(b"HTTP/1.") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{:?} did not start", self.kind);
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates `bucket` (moto accepts an unsigned request).
    fn create_bucket(&self, bucket: &str) {
        let mut c = TcpStream::connect(self.backend).unwrap();
        write!(
            c,
            "PUT /{bucket} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.backend
        )
        .unwrap();
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "create bucket: {answer}"
        );
    }

    /// The endpoint the tools under test use (the proxy).
    pub fn endpoint(&self) -> String {
        self.proxy.url()
    }

    /// The environment of a tool run against this server: the credentials,
    /// region and endpoint in the standard AWS variables, a home without
    /// `~/.aws`, and nothing else of the caller's AWS setup.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("HOME".into(), self.home.path().display().to_string()),
        ]
    }

    /// Applies [`S3Server::env`] to `cmd` (clearing other `AWS_*`).
    pub fn apply(&self, cmd: &mut Command) {
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env_remove("RUST_LOG");
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
    }

    /// A store on `url` that talks to the server directly (not through the
    /// proxy, so the proxy's log holds only the tools' requests).
    pub fn direct(&self, url: &str) -> S3Store {
        S3Store::open(url, self.settings()).unwrap()
    }

    /// Settings that reach the server directly.
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(format!("http://{}", self.backend)),
            region: Some("us-east-1".into()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            retries: 2,
            ..S3Settings::default()
        }
    }

    /// Every object under `url`, by path relative to it.
    pub fn objects(&self, url: &str) -> BTreeMap<String, Vec<u8>> {
        let store = self.direct(url);
        let mut out = BTreeMap::new();
        for listed in block(store.list()).unwrap() {
            let rel = simplestreams::path::RelPath::parse(&listed.rel).unwrap();
            let bytes = block(store.read(&rel)).unwrap().unwrap();
            assert_eq!(bytes.len() as u64, listed.len, "{}", listed.rel);
            out.insert(listed.rel, bytes);
        }
        out
    }

    /// Copies every object under `url` into `dir` (a bucket mirror as a
    /// directory, for the directory checks).
    pub fn download(&self, url: &str, dir: &Path) {
        for (rel, bytes) in self.objects(url) {
            let path = dir.join(&rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, bytes).unwrap();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the proxy does to the requests a [`Rule`] matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status and an S3 error of this code.
    Status(u16, &'static str),
    /// Forward after this long.
    Delay(Duration),
    /// Forward without this header (e.g. `If-None-Match`).
    DropHeader(&'static str),
}

/// Which requests a fault applies to, and how many times.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The method (`PUT`, `POST`, ...), any when `None`.
    pub method: Option<&'static str>,
    /// A substring of the path (with the query), any when empty.
    pub path: String,
    /// What to do.
    pub fault: Fault,
    /// How many more requests it applies to (`None`: all).
    pub times: Option<usize>,
}

impl Rule {
    /// A rule for every request of `method` whose path holds `path`.
    pub fn new(method: Option<&'static str>, path: &str, fault: Fault) -> Rule {
        Rule {
            method,
            path: path.to_owned(),
            fault,
            times: None,
        }
    }

    /// The same rule, for its next `n` requests only.
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The method.
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// The query string (empty when none).
    pub query: String,
    /// The status answered.
    pub status: u16,
    /// The fault applied, if any.
    pub fault: Option<Fault>,
}

impl Logged {
    /// Whether this request changes the bucket (PUT, POST, DELETE).
    pub fn writes(&self) -> bool {
        matches!(self.method.as_str(), "PUT" | "POST" | "DELETE")
    }

    /// Whether this request lists the bucket.
    pub fn lists(&self) -> bool {
        self.method == "GET" && (self.query.contains("list-type") || self.query.contains("prefix="))
    }
}

struct ProxyState {
    backend: SocketAddr,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Logged>>,
    stop: AtomicBool,
}

/// An HTTP/1.1 proxy in front of a server: one request per connection
/// (`Connection: close`), logged; faults applied by rules.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(backend: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            backend,
            rules: Mutex::default(),
            log: Mutex::default(),
            stop: AtomicBool::new(false),
        });
        let s = state.clone();
        let acceptor = thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let s = s.clone();
                        thread::spawn(move || {
                            let _ = relay(&s, conn);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy {
            addr,
            state,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a rule (rules are tried in order; the first that matches applies).
    pub fn rule(&self, rule: Rule) {
        self.state.rules.lock().unwrap().push(rule);
    }

    /// Drops every rule.
    pub fn clear_rules(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    /// The requests so far.
    pub fn log(&self) -> Vec<Logged> {
        self.state.log.lock().unwrap().clone()
    }

    /// Forgets the requests so far.
    pub fn clear_log(&self) {
        self.state.log.lock().unwrap().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// A request read from a client.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("/").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        // Re-framed with a Content-Length when forwarded.
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0u8; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("transfer-encoding"));
        headers.push(("Content-Length".into(), body.len().to_string()));
    }
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

/// Relays one request: logs it, applies the first matching rule, forwards
/// it (with `Connection: close`) and sends the answer back.
fn relay(state: &ProxyState, client: TcpStream) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let Some(mut req) = read_request(&mut reader)? else {
        return Ok(());
    };
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (req.target.clone(), String::new()),
    };
    let path = percent_encoding::percent_decode_str(&path)
        .decode_utf8_lossy()
        .into_owned();
    let fault = {
        let mut rules = state.rules.lock().unwrap();
        let found = rules.iter_mut().find(|r| {
            r.method.is_none_or(|m| m == req.method)
                && (r.path.is_empty() || req.target.contains(&r.path) || path.contains(&r.path))
                && r.times != Some(0)
        });
        found.map(|r| {
            if let Some(n) = r.times.as_mut() {
                *n -= 1;
            }
            r.fault.clone()
        })
    };
    let mut client = client;
    let status = match &fault {
        Some(Fault::Status(code, s3_code)) => {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{s3_code}</Code>\
                 <Message>injected by the test proxy</Message></Error>"
            );
            write!(
                client,
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )?;
            *code
        }
        other => {
            if let Some(Fault::Delay(d)) = other {
                thread::sleep(*d);
            }
            if let Some(Fault::DropHeader(name)) = other {
                req.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            }
            forward(state.backend, &req, &mut client)?
        }
    };
    state.log.lock().unwrap().push(Logged {
        method: req.method.clone(),
        path,
        query,
        status,
        fault,
    });
    let _ = client.flush();
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}

/// Sends `req` to `backend` and its whole answer (with `Connection:
/// close`) to `client`; gives the status.
fn forward(backend: SocketAddr, req: &Request, client: &mut TcpStream) -> std::io::Result<u16> {
    let mut up = TcpStream::connect(backend)?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (k, v) in &req.headers {
        if !k.eq_ignore_ascii_case("connection") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&req.body)?;
    up.flush()?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(answer.len());
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(502);
    let mut out = String::new();
    for line in head.split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    client.write_all(out.as_bytes())?;
    client.write_all(&answer[(split + 4).min(answer.len())..])?;
    Ok(status)
}
