//! Tests of `sstream serve`: the real binary on 127.0.0.1, spoken to with a
//! raw HTTP/1.1 client (so that paths reach the server unnormalized) and with
//! the real `curl`.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CURL: &str = "/usr/bin/curl";

/// A running `sstream serve`; killed on drop if still running.
struct Server {
    child: Child,
    port: u16,
    stderr_path: PathBuf,
}

impl Server {
    /// Starts `sstream serve DIR --listen 127.0.0.1:0 EXTRA...` and reads
    /// the startup line for the port.
    fn start(dir: &Path, log_dir: &Path, extra: &[&str]) -> Server {
        Server::spawn(
            Command::new(env!("CARGO_BIN_EXE_sstream")),
            dir,
            log_dir,
            extra,
        )
    }

    /// Like [`Server::start`], under a limit of `soft` open files that the
    /// process may raise up to `hard` (set by the shell's `ulimit`).
    fn start_with_fd_limit(dir: &Path, log_dir: &Path, soft: u32, hard: u32) -> Server {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""
            ))
            .arg(env!("CARGO_BIN_EXE_sstream"));
        Server::spawn(cmd, dir, log_dir, &[])
    }

    /// Runs `cmd serve DIR --listen 127.0.0.1:0 EXTRA...`.
    fn spawn(mut cmd: Command, dir: &Path, log_dir: &Path, extra: &[&str]) -> Server {
        let stderr_path = log_dir.join(format!("serve-{}.log", fastrand_suffix()));
        let stderr = fs::File::create(&stderr_path).expect("create log");
        let mut child = cmd
            .arg("serve")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn sstream serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read startup line");
        let prefix = format!("Serving {} at http://127.0.0.1:", dir.display());
        let port = line
            .trim_end()
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix('/'))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let log = fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("unexpected startup line {line:?}; stderr: {log}")
            });
        Server {
            child,
            port,
            stderr_path,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[])
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        raw_request(self.port, method, path, headers)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends `sig` (e.g. "TERM") with the real kill(1).
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the server to exit.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` (e.g. "TERM") with the real kill(1) and waits for the
    /// exit status.
    fn signal_and_wait(&mut self, sig: &str) -> std::process::ExitStatus {
        self.signal(sig);
        self.wait_exit()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn fastrand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A parsed HTTP response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request with `Connection: close` and reads the whole answer.
/// The path is sent exactly as given.
fn raw_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    raw_request_within(port, method, path, headers, Duration::from_secs(30))
}

/// [`raw_request`], failing if the server says nothing for `timeout`.
fn raw_request_within(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(timeout)).expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of header");
    let head = String::from_utf8(raw[..split].to_vec()).expect("header text");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

const CONTENT_ID: &str = "com.example:test:v1:download";
const IMAGE: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A small mirror-like tree, plus a directory outside it with a secret.
struct Tree {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    logs: PathBuf,
}

fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, data).expect("write");
}

/// A well-formed SHA-256 digest for the state file's items (a state the
/// mirror wrote has real ones; the page refuses a tree the mirror would).
const SHA256: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

/// The mirror state file describing what was mirrored.
fn state_json() -> String {
    serde_json::json!({
        "content_id": CONTENT_ID,
        "format": "products:1.0",
        "datatype": "image-downloads",
        "updated": "Mon, 01 Jan 2024 00:00:00 +0000",
        "products": {
            "com.example:p1": {
                "arch": "amd64",
                "versions": {
                    "20240101": {"items": {
                        "root": {"path": "images/p1/20240101/root.img", "size": 1000, "sha256": SHA256}
                    }},
                    "20240102.1": {"items": {
                        "root": {"path": "images/p1/20240102.1/root.img", "size": 36, "sha256": SHA256},
                        "kernel": {"path": "images/p1/20240102.1/kernel", "size": 7, "sha256": SHA256}
                    }}
                }
            },
            "com.example:<script>alert(1)</script>": {
                "versions": {"20230505": {"items": {
                    "x": {"path": "images/evil/x", "size": 5}
                }}}
            }
        }
    })
    .to_string()
}

fn make_tree() -> Tree {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("mirror");
    let outside = tmp.path().join("outside");
    let logs = tmp.path().join("logs");
    fs::create_dir_all(&logs).expect("logs");
    write(&outside.join("secret.txt"), b"TOP-SECRET");
    write(
        &root.join("streams/v1/index.json"),
        br#"{"format":"index:1.0","index":{}}"#,
    );
    write(
        &root.join(format!("streams/v1/{CONTENT_ID}.json")),
        br#"{"format":"products:1.0","products":{}}"#,
    );
    write(&root.join("streams/v1/index.json.gpg"), b"\x89signature");
    write(
        &root.join(".data").join(CONTENT_ID),
        state_json().as_bytes(),
    );
    write(&root.join(".data/broken:stream"), b"{\"products\": ");
    write(&root.join(".data/references.json"), b"{}");
    write(&root.join("images/p1/20240102.1/root.img"), IMAGE);
    write(&root.join("images/p1/20240102.1/kernel"), b"kernel!");
    write(&root.join("images/p1/20240102.1/root.img.part"), b"partial");
    write(&root.join("images/a<b>&c.txt"), b"odd name");
    write(&root.join("sstream.lock"), b"");
    std::os::unix::fs::symlink(&outside, root.join("link-out")).expect("symlink");
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("images/secret"))
        .expect("symlink");
    std::os::unix::fs::symlink("images/p1", root.join("link-in")).expect("symlink");
    std::os::unix::fs::symlink(".data", root.join("state")).expect("symlink");
    Tree {
        _tmp: tmp,
        root,
        logs,
    }
}

#[test]
fn get_head_and_content_types() {
    let t = make_tree();
    let s = Server::start(&t.root, &t.logs, &[]);

    let r = s.get("/images/p1/20240102.1/root.img");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, IMAGE);
    assert_eq!(r.header("content-length"), Some("36"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("etag").is_some());
    assert!(r.header("last-modified").is_some());

    let h = s.request("HEAD", "/images/p1/20240102.1/root.img", &[]);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("36"));
    assert_eq!(h.header("etag"), r.header("etag"));
    assert!(h.body.is_empty());

    let j = s.get("/streams/v1/index.json");
    assert_eq!(j.status, 200);
    assert_eq!(j.header("content-type"), Some("application/json"));
    let g = s.get("/streams/v1/index.json.gpg");
    assert_eq!(g.header("content-type"), Some("application/pgp-signature"));
    assert_eq!(g.body, b"\x89signature");

    let p = s.request("POST", "/streams/v1/index.json", &[]);
    assert_eq!(p.status, 405);
    assert_eq!(p.header("allow"), Some("GET, HEAD"));

    assert_eq!(s.get("/no/such/file").status, 404);
    // A file is not a directory.
    assert_eq!(s.get("/streams/v1/index.json/").status, 404);

    // The access log names method, path, status and bytes.
    let log = s.log();
    assert!(
        log.lines()
            .any(|l| l.contains("\"GET /images/p1/20240102.1/root.img\" 200 36 ")),
        "log: {log}"
    );
    assert!(log.contains("\"HEAD /images/p1/20240102.1/root.img\" 200 0 "));
    assert!(log.contains("127.0.0.1:"));
}

#[test]
fn byte_ranges() {
    let t = make_tree();
    let s = Server::start(&t.root, &t.logs, &[]);
    let path = "/images/p1/20240102.1/root.img";

    let r = s.request("GET", path, &[("Range", "bytes=2-5")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"2345");
    assert_eq!(r.header("content-range"), Some("bytes 2-5/36"));
    assert_eq!(r.header("content-length"), Some("4"));

    let r = s.request("GET", path, &[("Range", "bytes=-4")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"wxyz");
    assert_eq!(r.header("content-range"), Some("bytes 32-35/36"));

    let r = s.request("GET", path, &[("Range", "bytes=30-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"uvwxyz");

    let r = s.request("GET", path, &[("Range", "bytes=30-1000")]);
    assert_eq!(r.header("content-range"), Some("bytes 30-35/36"));

    let r = s.request("GET", path, &[("Range", "bytes=36-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */36"));
    assert!(r.body.is_empty());

    // Several ranges: the whole file (allowed by RFC 9110).
    let r = s.request("GET", path, &[("Range", "bytes=0-1,4-5")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, IMAGE);
    // Malformed: ignored.
    let r = s.request("GET", path, &[("Range", "bytes=5-2")]);
    assert_eq!(r.status, 200);
}

#[test]
fn conditional_requests() {
    let t = make_tree();
    let s = Server::start(&t.root, &t.logs, &[]);
    let path = "/images/p1/20240102.1/root.img";
    let first = s.get(path);
    let etag = first.header("etag").expect("etag").to_string();
    let lm = first.header("last-modified").expect("lm").to_string();

    let r = s.request("GET", path, &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert!(r.header("content-type").is_none());
    let r = s.request("GET", path, &[("If-None-Match", "\"other\", \"x\"")]);
    assert_eq!(r.status, 200);
    let weak = format!("W/{etag}");
    assert_eq!(
        s.request("GET", path, &[("If-None-Match", &weak)]).status,
        304
    );

    assert_eq!(
        s.request("GET", path, &[("If-Modified-Since", &lm)]).status,
        304
    );
    let r = s.request(
        "GET",
        path,
        &[("If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, IMAGE);
    // If-None-Match wins over If-Modified-Since.
    let r = s.request(
        "GET",
        path,
        &[("If-None-Match", "\"other\""), ("If-Modified-Since", &lm)],
    );
    assert_eq!(r.status, 200);

    // If-Range: a matching validator gives the range, any other the whole.
    let r = s.request("GET", path, &[("Range", "bytes=0-3"), ("If-Range", &etag)]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"0123");
    let r = s.request(
        "GET",
        path,
        &[("Range", "bytes=0-3"), ("If-Range", "\"stale-etag\"")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, IMAGE);
    assert!(r.header("content-range").is_none());
    let r = s.request("GET", path, &[("Range", "bytes=0-3"), ("If-Range", &weak)]);
    assert_eq!(r.status, 200, "weak validators never match If-Range");
    let r = s.request("GET", path, &[("Range", "bytes=0-3"), ("If-Range", &lm)]);
    assert_eq!(r.status, 206);
    let r = s.request(
        "GET",
        path,
        &[
            ("Range", "bytes=0-3"),
            ("If-Range", "Mon, 01 Jan 2001 00:00:00 GMT"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, IMAGE);

    // If-Match.
    assert_eq!(
        s.request("GET", path, &[("If-Match", "\"other\"")]).status,
        412
    );
    assert_eq!(s.request("GET", path, &[("If-Match", &etag)]).status, 200);

    // A replaced file has a new ETag: the old one no longer gives 304.
    let file = t.root.join("images/p1/20240102.1/root.img");
    let tmp = t.root.join("images/p1/20240102.1/.root.img.tmp");
    fs::write(&tmp, IMAGE).expect("write");
    fs::rename(&tmp, &file).expect("rename");
    assert_eq!(
        s.request("GET", path, &[("If-None-Match", &etag)]).status,
        200
    );
}

/// Sets the modification time of `path` to `secs` after the epoch.
fn set_mtime(path: &Path, secs: u64) {
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs)))
        .expect("set mtime");
}

#[test]
fn if_modified_since_alone_needs_the_exact_date_like_nginx() {
    let t = make_tree();
    let file = t.root.join("images/p1/20240102.1/kernel");
    let path = "/images/p1/20240102.1/kernel";
    set_mtime(&file, 1_704_153_600); // 2024-01-02 00:00:00 UTC
    let s = Server::start(&t.root, &t.logs, &[]);
    let lm = "Tue, 02 Jan 2024 00:00:00 GMT";
    assert_eq!(s.get(path).header("last-modified"), Some(lm));
    let ims = |date: &str| s.request("GET", path, &[("If-Modified-Since", date)]);

    let r = ims(lm);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    // A later date is not the file's date: nginx's `if_modified_since
    // exact` (its default) sends the file, and so do we.
    let r = ims("Wed, 03 Jan 2024 00:00:00 GMT");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"kernel!");
    assert_eq!(ims("Mon, 01 Jan 2024 00:00:00 GMT").status, 200);

    // A sync put an older file in place (its upstream mtime went
    // backwards): a client holding the newer date must get it.
    set_mtime(&file, 1_701_388_800); // 2023-12-01 00:00:00 UTC
    let r = ims(lm);
    assert_eq!(r.status, 200, "an older file is never 304");
    assert_eq!(r.body, b"kernel!");
    let older = "Fri, 01 Dec 2023 00:00:00 GMT";
    assert_eq!(r.header("last-modified"), Some(older));
    assert_eq!(ims(older).status, 304);
    // If-None-Match still decides when both are sent.
    let etag = r.header("etag").expect("etag").to_string();
    let r = s.request(
        "GET",
        path,
        &[("If-None-Match", &etag), ("If-Modified-Since", lm)],
    );
    assert_eq!(r.status, 304);
}

#[test]
fn directory_listings() {
    let t = make_tree();
    let s = Server::start(&t.root, &t.logs, &[]);

    let r = s.get("/images");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/images/"));

    let r = s.get("/images/p1/20240102.1/");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/html")
    );
    let html = r.text();
    assert!(
        html.contains("href=\"/images/p1/20240102.1/root.img\""),
        "{html}"
    );
    assert!(html.contains("href=\"/images/p1/20240102.1/kernel\""));
    assert!(html.contains("href=\"/images/p1/\""), "parent link");
    assert!(!html.contains(".part"), "{html}");

    let html = s.get("/images/").text();
    assert!(html.contains("href=\"/images/p1/\""));
    // Names are escaped and encoded.
    assert!(html.contains("a&lt;b&gt;&amp;c.txt"), "{html}");
    assert!(html.contains("href=\"/images/a%3Cb%3E%26c.txt\""), "{html}");
    assert!(
        !html.contains("secret"),
        "symlink out of the root is listed"
    );
    assert_eq!(s.get("/images/a%3Cb%3E%26c.txt").body, b"odd name");

    // The landing page lists the root, without hidden things.
    let html = s.get("/").text();
    assert!(html.contains("href=\"/streams/\""));
    assert!(html.contains("href=\"/images/\""));
    assert!(html.contains("href=\"/link-in/\""));
    for hidden in ["/.data", "sstream.lock", "link-out", "href=\"/state"] {
        assert!(!html.contains(hidden), "{hidden} shown: {html}");
    }
    assert_eq!(s.get("/streams/v1/").status, 200);
    assert_eq!(s.get("/link-in/").status, 200);
    assert_eq!(s.request("HEAD", "/images/", &[]).status, 200);
}

#[test]
fn landing_page() {
    let t = make_tree();
    let s = Server::start(&t.root, &t.logs, &[]);
    let r = s.request("GET", "/", &[("Host", "mirror.example:8080")]);
    assert_eq!(r.status, 200);
    let html = r.text();
    // Unsigned index: the URL names it, and no keyring.
    assert!(
        html.contains("url=http://mirror.example:8080/streams/v1/index.json"),
        "{html}"
    );
    assert!(html.contains("maas $PROFILE boot-resources import"));
    assert!(html.contains("maas $PROFILE boot-sources create url="));
    assert!(!html.contains("keyring_filename="));
    assert!(html.contains(CONTENT_ID));
    assert!(html.contains("com.example:p1"));
    assert!(html.contains("20240102.1"), "newest version: {html}");
    assert!(!html.contains("20240101<"), "older version shown as newest");
    assert!(
        html.contains("43 bytes"),
        "size of the newest version: {html}"
    );
    // Escaped names from the state file.
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script>"));
    // A malformed state file is an error line, not a failure.
    assert!(html.contains(".data/broken:stream: invalid JSON"), "{html}");
    assert!(!html.contains("references.json"));

    // A HEAD of the page has its length.
    let h = s.request("HEAD", "/", &[("Host", "mirror.example:8080")]);
    assert_eq!(
        h.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert!(h.body.is_empty());

    // A new sync shows up (the state file is read again when it changes).
    let state = state_json().replace("20240102.1", "20240301");
    let tmp = t.root.join(".data/.new.tmp");
    fs::write(&tmp, state).expect("write");
    fs::rename(&tmp, t.root.join(".data").join(CONTENT_ID)).expect("rename");
    let html = s.get("/").text();
    assert!(html.contains("<td>20240301</td>"), "{html}");
    assert!(!html.contains("20240102.1"));

    // A hostile Host header is not echoed.
    let html = s.request("GET", "/", &[("Host", "\"><b>x</b>")]).text();
    assert!(!html.contains("<b>x</b>"));
    assert!(html.contains(&format!("http://127.0.0.1:{}/", s.port)));
}

#[test]
fn landing_page_for_a_deeper_signed_mirror() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("srv");
    let mirror = root.join("maas/images/ephemeral-v3/stable");
    write(
        &mirror.join("streams/v1/index.sjson"),
        b"-----BEGIN PGP SIGNED MESSAGE-----\n",
    );
    write(
        &mirror.join(".data").join(CONTENT_ID),
        state_json().as_bytes(),
    );
    let s = Server::start(&root, tmp.path(), &[]);
    let html = s.get("/").text();
    let url = format!(
        "url=http://127.0.0.1:{}/maas/images/ephemeral-v3/stable/ \
         keyring_filename=/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg",
        s.port
    );
    assert!(html.contains(&url), "{html}");
    assert!(html.contains("com.example:p1"));
    assert!(html.contains("href=\"/maas/images/ephemeral-v3/stable/streams/v1/index.sjson\""));
    let r = s.get("/maas/images/ephemeral-v3/stable/streams/v1/index.sjson");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain")
    );
    assert_eq!(s.get("/maas/images/ephemeral-v3/stable/.data/").status, 404);
}

/// The landing page shows a mirror's own keyring (`keyring_data`) only
/// when the file would be served: not through a symbolic link that leaves
/// the root.
#[test]
fn landing_page_shows_no_keyring_that_would_not_be_served() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("srv");
    let (own, planted) = (root.join("own"), root.join("planted"));
    for mirror in [&own, &planted] {
        write(
            &mirror.join("streams/v1/index.sjson"),
            b"-----BEGIN PGP SIGNED MESSAGE-----\n",
        );
    }
    write(&own.join("streams/v1/mirror-keyring.gpg"), b"OWN-KEY");
    write(&tmp.path().join("outside.gpg"), b"OUTSIDE");
    std::os::unix::fs::symlink(
        tmp.path().join("outside.gpg"),
        planted.join("streams/v1/mirror-keyring.gpg"),
    )
    .expect("symlink");
    let s = Server::start(&root, tmp.path(), &[]);
    let html = s.get("/").text();
    // base64 of "OWN-KEY" and of "OUTSIDE".
    assert!(html.contains("<code>T1dOLUtFWQ==</code>"), "{html}");
    assert!(!html.contains("T1VUU0lERQ=="), "{html}");
    assert_eq!(s.get("/planted/streams/v1/mirror-keyring.gpg").status, 404);
}

#[test]
fn nothing_escapes_the_root_and_hidden_files_stay_hidden() {
    let t = make_tree();
    let s = Server::start(&t.root, &t.logs, &[]);
    for path in [
        "/../outside/secret.txt",
        "/images/../../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/images/%2E%2E/%2e%2e/outside/secret.txt",
        "/images%2f..%2f..%2foutside%2fsecret.txt",
        "/images/..%2f..%2foutside/secret.txt",
        "/images\\..\\..\\outside\\secret.txt",
        "/images/%5c..%5c..%5coutside/secret.txt",
        "/./images/",
        "/%00",
        "/%zz",
    ] {
        let r = s.get(path);
        assert!(r.status == 400 || r.status == 404, "{path}: {}", r.status);
        assert!(!r.text().contains("TOP-SECRET"), "{path}");
    }
    for path in [
        "/link-out/secret.txt",
        "/link-out/",
        "/images/secret",
        "/.data/",
        "/.data",
        &format!("/.data/{CONTENT_ID}"),
        "/%2edata/references.json",
        "/state/references.json",
        "/images/p1/20240102.1/root.img.part",
        "/sstream.lock",
    ] {
        let r = s.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert!(!r.text().contains("TOP-SECRET"));
    }
    // Symlinks inside the root are followed.
    let r = s.get("/link-in/20240102.1/root.img");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, IMAGE);
}

/// A root renamed and replaced by a symbolic link while the server runs
/// (`mv root root.old; ln -s elsewhere root`): the server keeps serving the
/// directory it was started on, files and listings alike, and shows nothing
/// of the link's target.
#[test]
fn a_root_replaced_by_a_symlink_is_still_the_directory_served() {
    let t = make_tree();
    let s = Server::start(&t.root, &t.logs, &[]);
    assert_eq!(s.get("/images/p1/20240102.1/kernel").status, 200);
    let parent = t.root.parent().expect("parent");
    let elsewhere = parent.join("elsewhere");
    write(&elsewhere.join("planted.txt"), b"PLANTED");
    fs::rename(&t.root, parent.join("mirror.old")).expect("rename the root");
    std::os::unix::fs::symlink(&elsewhere, &t.root).expect("symlink in its place");

    let r = s.get("/images/p1/20240102.1/kernel");
    assert_eq!(r.status, 200, "a file of the served directory");
    assert_eq!(r.body, b"kernel!");
    assert_eq!(s.request("HEAD", "/streams/v1/index.json", &[]).status, 200);
    let r = s.get("/planted.txt");
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("PLANTED"));

    let html = s.get("/").text();
    assert!(html.contains("href=\"/images/\""), "{html}");
    assert!(
        html.contains("com.example:p1"),
        "the mirror's streams: {html}"
    );
    assert!(!html.contains("planted.txt"), "{html}");
    let listing = s.get("/images/p1/");
    assert_eq!(listing.status, 200);
    assert!(listing.text().contains("20240102.1/"));
}

/// Runs curl and returns (stdout, stderr); panics if curl fails.
fn curl(args: &[&str]) -> (Vec<u8>, String) {
    let out = Command::new(CURL)
        .args(["--silent", "--show-error", "--fail"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn real_curl_range_head_conditional_and_resume() {
    let t = make_tree();
    // A bigger file, so that several read chunks and a resume are involved.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write(&t.root.join("images/big.img"), &big);
    let s = Server::start(&t.root, &t.logs, &[]);
    let url = s.url("/images/big.img");

    let (body, _) = curl(&[&url]);
    assert_eq!(body, big);

    let (head, _) = curl(&["--head", &url]);
    let head_as_sent = String::from_utf8_lossy(&head).into_owned();
    let head = head_as_sent.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 3000000"));

    let (part, _) = curl(&["--range", "1000-1999", &url]);
    assert_eq!(part, &big[1000..2000]);

    // --fail makes 416 an error: run that one without it.
    let out = Command::new(CURL)
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-r",
            "5000000-",
            &url,
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "416");

    // ETag round trip with curl's own support.
    let etag_file = t.logs.join("etag");
    let etag_file = etag_file.to_str().expect("utf-8 path");
    curl(&["--etag-save", etag_file, "-o", "/dev/null", &url]);
    let out = Command::new(CURL)
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--etag-compare",
            etag_file,
            &url,
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "304");

    // If-Modified-Since (curl -z): 304 for the file's own date only, as
    // nginx by default; a later date is not a match. (curl reports a 200
    // older than -z as 304 in %{http_code}: read the status line itself.)
    let modified = head_as_sent
        .lines()
        .find_map(|l| {
            l.strip_prefix("Last-Modified:")
                .or(l.strip_prefix("last-modified:"))
        })
        .expect("last-modified")
        .trim()
        .to_string();
    for (date, status) in [
        (modified.as_str(), "HTTP/1.1 304"),
        ("Fri, 01 Jan 2100 00:00:00 GMT", "HTTP/1.1 200"),
    ] {
        let out = Command::new(CURL)
            .args(["-s", "-o", "/dev/null", "-D", "-", "-z", date, &url])
            .output()
            .expect("curl");
        let head = String::from_utf8_lossy(&out.stdout);
        assert!(head.starts_with(status), "-z {date}: {head}");
    }

    // Resume a partial download the way a mirror client does.
    let dest = t.logs.join("big.download");
    fs::write(&dest, &big[..1_234_567]).expect("write partial");
    let dest_s = dest.to_str().expect("utf-8 path");
    curl(&["--continue-at", "-", "--output", dest_s, &url]);
    assert_eq!(fs::read(&dest).expect("read"), big);
}

#[test]
fn serving_while_files_are_replaced() {
    let t = make_tree();
    let versions: Vec<Vec<u8>> = (0..4u8)
        .map(|v| vec![b'a' + v; 100_000 + usize::from(v) * 50_000])
        .collect();
    let target = t.root.join("streams/v1/products.json");
    fs::write(&target, &versions[0]).expect("write");
    let s = Server::start(&t.root, &t.logs, &[]);
    let port = s.port;

    let writer = {
        let versions = versions.clone();
        let dir = t.root.join("streams/v1");
        std::thread::spawn(move || {
            for i in 0..200 {
                let tmp = dir.join(".products.json.tmp");
                fs::write(&tmp, &versions[i % versions.len()]).expect("write");
                fs::rename(&tmp, dir.join("products.json")).expect("rename");
            }
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let versions = versions.clone();
            std::thread::spawn(move || {
                for _ in 0..40 {
                    let r = raw_request(port, "GET", "/streams/v1/products.json", &[]);
                    assert_eq!(r.status, 200);
                    assert_eq!(
                        r.header("content-length"),
                        Some(r.body.len().to_string().as_str())
                    );
                    assert!(versions.contains(&r.body), "torn body");
                }
            })
        })
        .collect();
    writer.join().expect("writer");
    for r in readers {
        r.join().expect("reader");
    }
}

#[test]
fn sigterm_exits_zero() {
    let t = make_tree();
    let mut s = Server::start(&t.root, &t.logs, &[]);
    assert_eq!(s.get("/streams/v1/index.json").status, 200);
    let st = s.signal_and_wait("TERM");
    assert_eq!(st.code(), Some(0), "log: {}", s.log());
    assert!(TcpStream::connect(("127.0.0.1", s.port)).is_err());
}

#[test]
fn sigint_cuts_a_stalled_download_after_the_grace_period() {
    let t = make_tree();
    let big = t.root.join("images/huge.img");
    fs::File::create(&big)
        .and_then(|f| f.set_len(256 * 1024 * 1024))
        .expect("sparse file");
    let mut s = Server::start(&t.root, &t.logs, &["--grace", "1"]);
    // A client that starts a download and then stops reading.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    c.write_all(b"GET /images/huge.img HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut first = [0u8; 16];
    c.read_exact(&mut first).expect("response starts");
    assert_eq!(&first[..12], b"HTTP/1.1 200");
    let st = s.signal_and_wait("INT");
    assert_eq!(st.code(), Some(0), "log: {}", s.log());
    let log = s.log();
    assert!(log.contains("\"GET /images/huge.img\" 200 "), "{log}");
    assert!(log.contains("incomplete"), "{log}");
}

#[test]
fn sighup_stops_gracefully_and_lets_a_download_finish() {
    let t = make_tree();
    let len: u64 = 64 * 1024 * 1024;
    fs::File::create(t.root.join("images/huge.img"))
        .and_then(|f| f.set_len(len))
        .expect("sparse file");
    let mut s = Server::start(&t.root, &t.logs, &["--grace", "60"]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    c.write_all(b"GET /images/huge.img HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut first = [0u8; 12];
    c.read_exact(&mut first).expect("response starts");
    assert_eq!(&first, b"HTTP/1.1 200");

    // The download is under way (64 MiB do not fit in socket buffers).
    s.signal("HUP");
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("read the rest");
    let split = rest
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of header");
    assert_eq!(
        (rest.len() - split - 4) as u64,
        len,
        "the download in flight was finished"
    );
    let st = s.wait_exit();
    assert_eq!(st.code(), Some(0), "log: {}", s.log());
    let log = s.log();
    assert!(log.contains("serve: SIGHUP: stopping"), "{log}");
    assert!(log.contains("serve: stopped (SIGHUP)"), "{log}");
    assert!(
        log.contains(&format!("\"GET /images/huge.img\" 200 {len} ")),
        "{log}"
    );
    assert!(TcpStream::connect(("127.0.0.1", s.port)).is_err());
}

#[test]
fn real_requests_are_served_when_idle_and_slow_clients_hold_every_descriptor() {
    let t = make_tree();
    fs::File::create(t.root.join("images/huge.img"))
        .and_then(|f| f.set_len(64 * 1024 * 1024))
        .expect("sparse file");
    // Soft limit 64, hard 256: the server raises it to 256, room for about
    // 100 connections; the clients below open 300.
    let s = Server::start_with_fd_limit(&t.root, &t.logs, 64, 256);

    let mut held = Vec::new();
    for i in 0..300 {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
        match i % 20 {
            // A download whose client stops reading.
            0 => c
                .write_all(b"GET /images/huge.img HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("send"),
            // A request header that never ends.
            1..10 => c
                .write_all(b"GET /images/p1/20240102.1/root.img HTTP/1.1\r\nHost: x\r\n")
                .expect("send"),
            // Connected, silent.
            _ => {}
        }
        held.push(c);
    }

    // Real clients still get their answers (the idle ones would only be
    // cut by the server's 30 s header timeout).
    for _ in 0..20 {
        let r = raw_request_within(
            s.port,
            "GET",
            "/images/p1/20240102.1/root.img",
            &[],
            Duration::from_secs(10),
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.body, IMAGE);
    }
    let r = raw_request_within(s.port, "GET", "/", &[], Duration::from_secs(10));
    assert_eq!(r.status, 200);
    let log = s.log();
    assert!(
        log.contains("serve: open files limit 256:"),
        "soft limit raised to the hard one: {log}"
    );
    assert!(
        log.contains("closing the longest idle or stalled ones"),
        "closings reported: {log}"
    );
    drop(held);
}

#[test]
fn large_files_in_parallel_ranges_across_read_chunks_and_a_file_that_shrinks() {
    let t = make_tree();
    // Not a multiple of any read size; ranges straddle 128 KiB multiples.
    let big: Vec<u8> = (0..5_000_003u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&t.root.join("images/big.img"), &big);
    let s = Server::start(&t.root, &t.logs, &[]);
    let port = s.port;
    let big = std::sync::Arc::new(big);
    let clients: Vec<_> = (0..16u64)
        .map(|i| {
            let big = big.clone();
            std::thread::spawn(move || {
                let r = raw_request(port, "GET", "/images/big.img", &[]);
                assert_eq!(r.status, 200);
                assert!(r.body == *big, "client {i}: body differs");
                let k = 128 * 1024 * (i + 1);
                let (first, last) = (k - 1 - i, k + 524_288 + i);
                let range = format!("bytes={first}-{last}");
                let r = raw_request(port, "GET", "/images/big.img", &[("Range", &range)]);
                assert_eq!(r.status, 206);
                let want = &big[first as usize..=last as usize];
                assert!(r.body == want, "client {i}: range {range} differs");
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }

    // A file cut short while it is sent: the response stops short (the
    // client can tell from Content-Length) and the log says so.
    let path = t.root.join("images/shrinks.img");
    fs::write(&path, vec![7u8; 64 * 1024 * 1024]).expect("write");
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.write_all(b"GET /images/shrinks.img HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut first = [0u8; 12];
    c.read_exact(&mut first).expect("response starts");
    fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(1024 * 1024))
        .expect("truncate");
    let mut rest = Vec::new();
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let _ = c.read_to_end(&mut rest);
    assert!(rest.len() < 64 * 1024 * 1024, "got the whole file?");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.log().contains("\"GET /images/shrinks.img\" 200") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains("\"GET /images/shrinks.img\" 200"))
        .unwrap_or_else(|| panic!("no log line: {log}"));
    assert!(line.ends_with("incomplete"), "{line}");
}
