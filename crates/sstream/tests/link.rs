//! The link: large items fetched in byte ranges over several connections
//! (each answer checked, a server that ignores or lies about ranges still
//! gives a correct file, retries, stalls and fallback roots per range,
//! resume after SIGKILL), and the rate cap (`--limit-rate`, config
//! `limit_rate`), against the fault-injecting server; connections added
//! while they add throughput, up to `--max-connections`, counted by a
//! server that paces each connection or all of them together.

mod faults_support;
mod support;

use faults_support::{
    Fault, FaultServer, Request, args, assert_ok, compare_trees, leftovers, mirror,
};
use simplestreams::sample::{self, SampleRelease, SampleSpec, SampleStream};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use std::{fs, thread};
use tempfile::TempDir;

/// Only the squashfs: one large file, every connection free for its ranges.
const ONLY_SQUASHFS: &str = "ftype=squashfs";

/// A source stream and the tree a clean run (over one connection) makes.
struct Fixture {
    _dirs: Vec<TempDir>,
    src: PathBuf,
    clean: PathBuf,
    sample: SampleStream,
    work: TempDir,
    filters: Vec<&'static str>,
}

impl Fixture {
    /// One release, one arch, one version; squashfs of about `payload`
    /// bytes; `filters` for every run.
    fn new(payload: u64, filters: &[&'static str]) -> Fixture {
        let (s, c) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let spec = SampleSpec {
            releases: vec![SampleRelease::new("jammy", "22.04")],
            arches: vec!["amd64".into()],
            versions: vec!["20250615".into()],
            bootloader_versions: vec!["20230222.0".into()],
            payload_bytes: payload,
            ..SampleSpec::default()
        };
        let sample = sample::generate(&spec, s.path(), None).unwrap();
        let mut clean = args(
            s.path().to_str().unwrap(),
            c.path().to_str().unwrap(),
            &["--segment-threshold", "0"],
        );
        clean.extend_from_slice(filters);
        let o = mirror(&clean);
        assert_ok(&o, "clean run");
        Fixture {
            src: s.path().to_path_buf(),
            clean: c.path().to_path_buf(),
            _dirs: vec![s, c],
            sample,
            work: TempDir::new().unwrap(),
            filters: filters.to_vec(),
        }
    }

    /// The squashfs and its size.
    fn big(&self) -> (String, u64) {
        let (p, s) = self
            .sample
            .payloads
            .iter()
            .find(|(p, _)| p.ends_with("/squashfs"))
            .unwrap();
        (p.clone(), *s)
    }

    fn out(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// The arguments of a run from `url` into `out`: `extra`, then the
    /// fixture's filters.
    fn args<'a>(&'a self, url: &'a str, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = args(url, out.to_str().unwrap(), extra);
        v.extend_from_slice(&self.filters);
        v
    }

    /// The record of the ranges received of the squashfs staged in `out`.
    fn ranges_record(&self, out: &Path) -> PathBuf {
        let (big, _) = self.big();
        let path = out.join(&big);
        let name = path.file_name().unwrap().to_str().unwrap();
        path.with_file_name(format!(".{name}.part.sstream-tmp"))
    }
}

/// A bounded range request as `(first, last)`: `bytes=first-last`.
fn bounded(r: &Request) -> Option<(u64, u64)> {
    let (a, b) = r
        .range
        .as_deref()?
        .strip_prefix("bytes=")?
        .split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The ranges a ranges record says were received.
fn recorded(file: &Path) -> Option<Vec<Range<u64>>> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(file).ok()?).ok()?;
    v.get("received")?
        .as_array()?
        .iter()
        .map(|r| Some(r.get(0)?.as_u64()?..r.get(1)?.as_u64()?))
        .collect()
}

fn total(ranges: &[Range<u64>]) -> u64 {
    ranges.iter().map(|r| r.end - r.start).sum()
}

/// Asserts the run made the clean tree and left nothing behind.
fn assert_clean(fx: &Fixture, out: &Path, what: &str) {
    compare_trees(&fx.clean, out);
    assert_eq!(leftovers(out), Vec::<String>::new(), "{what}: leftovers");
}

/// Asserts the run (with `-v`) said it fetched `path` over one connection
/// instead of in ranges, and why (`reason`).
fn assert_fell_back(o: &std::process::Output, path: &str, reason: &str) {
    let err = faults_support::stderr(o);
    assert!(
        err.lines()
            .any(|l| l.contains(reason)
                && l.ends_with(&format!("fetching {path} over one connection"))),
        "no fallback for {reason:?}:\n{err}"
    );
}

#[test]
fn large_items_come_in_ranges_each_answer_checked() {
    let fx = Fixture::new(4 << 20, &[ONLY_SQUASHFS]);
    let (big, size) = fx.big();
    let server = FaultServer::start(&fx.src);
    server.throttle(16 << 10, Duration::from_millis(4));
    let out = fx.out("ranges");
    let o = mirror(&fx.args(
        &server.url,
        &out,
        &["--jobs", "4", "--segment-threshold", "1M"],
    ));
    assert_ok(&o, "ranges");
    assert_clean(&fx, &out, "ranges");
    let requests = server.requests_of(&big);
    assert!(requests.len() >= 2, "one connection only: {requests:?}");
    for r in &requests {
        let (first, last) =
            bounded(r).unwrap_or_else(|| panic!("not a bounded range request: {r:?}"));
        assert!(first <= last && last < size, "{r:?} outside 0..{size}");
    }
    assert!(
        requests
            .iter()
            .any(|r| bounded(r).is_some_and(|(first, _)| first > 0)),
        "no range past the start: {requests:?}"
    );
}

#[test]
fn a_server_that_ignores_ranges_still_gives_a_correct_file() {
    let fx = Fixture::new(2 << 20, &[ONLY_SQUASHFS]);
    let (big, _) = fx.big();
    let server = FaultServer::start(&fx.src);
    server.always(&big, Fault::IgnoreRange);
    let out = fx.out("ignored");
    let o = mirror(&fx.args(
        &server.url,
        &out,
        &["-v", "--jobs", "4", "--segment-threshold", "1M"],
    ));
    assert_ok(&o, "ignored ranges");
    assert_fell_back(&o, &big, "HTTP 200 OK for bytes=");
    assert_clean(&fx, &out, "ignored ranges");
    let requests = server.requests_of(&big);
    assert!(
        requests.iter().any(|r| r.range.is_none()),
        "the fallback asks for the whole file: {requests:?}"
    );
    assert!(
        requests.len() <= 5,
        "ranges asked again and again: {requests:?}"
    );
}

#[test]
fn a_server_that_lies_about_ranges_still_gives_a_correct_file() {
    let fx = Fixture::new(2 << 20, &[ONLY_SQUASHFS]);
    let (big, _) = fx.big();
    let server = FaultServer::start(&fx.src);
    // A 206 whose Content-Range (and body) start elsewhere than asked.
    server.script(&big, &[Fault::WrongContentRange { shift: 4096 }]);
    let out = fx.out("lies");
    let o = mirror(&fx.args(
        &server.url,
        &out,
        &["-v", "--jobs", "4", "--segment-threshold", "1M"],
    ));
    assert_ok(&o, "wrong Content-Range");
    // Which range meets the fault depends on the order the answers go
    // out: the message names whichever it was.
    assert_fell_back(&o, &big, "206 with Content-Range \"bytes ");
    assert_clean(&fx, &out, "wrong Content-Range");
    assert_eq!(server.unused_faults(), 0);
    let requests = server.requests_of(&big);
    assert!(
        requests.iter().any(|r| r.range.is_none()),
        "no fallback to one connection: {requests:?}"
    );

    // The right Content-Range over wrong bytes: the whole file's checksum
    // finds it out, and the file is fetched again over one connection.
    let server = FaultServer::start(&fx.src);
    // One fault for each of the four connections' first requests: the one
    // that starts at 0 meets it.
    server.script(&big, &vec![Fault::Corrupt { at: 100 }; 4]);
    let out = fx.out("corrupt");
    let o = mirror(&fx.args(
        &server.url,
        &out,
        &["-v", "--jobs", "4", "--segment-threshold", "1M"],
    ));
    assert_ok(&o, "corrupt range");
    assert_clean(&fx, &out, "corrupt range");
    assert_fell_back(&o, &big, "sha256 mismatch");
    let requests = server.requests_of(&big);
    assert!(
        requests.iter().any(|r| r.range.is_none()),
        "not fetched again whole: {requests:?}"
    );
}

#[test]
fn dropped_and_stalled_ranges_resume_where_they_stopped() {
    let fx = Fixture::new(4 << 20, &[ONLY_SQUASHFS]);
    let (big, _) = fx.big();
    let server = FaultServer::start(&fx.src);
    server.throttle(16 << 10, Duration::from_millis(2));
    const AFTER: u64 = 64 << 10;
    server.script(
        &big,
        &[
            Fault::Drop { after: AFTER },
            Fault::Stall { after: AFTER },
            Fault::Status {
                code: 503,
                retry_after: None,
            },
        ],
    );
    let out = fx.out("drops");
    let o = mirror(&fx.args(
        &server.url,
        &out,
        &["--jobs", "4", "--segment-threshold", "1M", "--timeout", "1"],
    ));
    assert_ok(&o, "drop, stall, 503");
    assert_clean(&fx, &out, "drop, stall, 503");
    assert_eq!(server.unused_faults(), 0);
    let requests = server.requests_of(&big);
    for (i, r) in requests.iter().enumerate() {
        if !matches!(r.fault, Some(Fault::Drop { .. } | Fault::Stall { .. })) {
            continue;
        }
        let (first, _) = bounded(r).unwrap();
        assert!(
            requests[i + 1..]
                .iter()
                .any(|later| bounded(later).is_some_and(|(f, _)| f == first + AFTER)),
            "{r:?} not resumed at {}: {requests:?}",
            first + AFTER
        );
    }
}

#[test]
fn ranges_fall_back_to_mirror_roots_one_by_one() {
    let fx = Fixture::new(2 << 20, &[ONLY_SQUASHFS]);
    let (big, _) = fx.big();
    let primary = FaultServer::start(&fx.src);
    primary.always(
        &big,
        Fault::Status {
            code: 404,
            retry_after: None,
        },
    );
    let fallback = FaultServer::start(&fx.src);
    let out = fx.out("fallback");
    let o = mirror(&fx.args(
        &primary.url,
        &out,
        &[
            "--jobs",
            "4",
            "--segment-threshold",
            "1M",
            "--mirror",
            &fallback.url,
        ],
    ));
    assert_ok(&o, "fallback root");
    assert_clean(&fx, &out, "fallback root");
    let from_fallback = fallback.requests_of(&big);
    assert!(
        !from_fallback.is_empty() && from_fallback.iter().all(|r| bounded(r).is_some()),
        "the ranges did not come from the fallback root: {from_fallback:?}"
    );
    assert!(
        primary
            .requests_of(&big)
            .iter()
            .all(|r| bounded(r).is_some()),
        "the primary was asked for the whole file"
    );

    // A local fallback root takes the file whole.
    let out = fx.out("local-fallback");
    let local = fx.src.to_str().unwrap();
    let o = mirror(&fx.args(
        &primary.url,
        &out,
        &[
            "--jobs",
            "4",
            "--segment-threshold",
            "1M",
            "--mirror",
            local,
        ],
    ));
    assert_ok(&o, "local fallback root");
    assert_clean(&fx, &out, "local fallback root");
}

/// Runs `sstream-mirror` until the squashfs's ranges record shows at least
/// two ranges and less than the whole file, then kills it with SIGKILL.
/// Gives the ranges recorded.
fn kill_while_ranges_arrive(fx: &Fixture, server: &FaultServer, out: &Path) -> Vec<Range<u64>> {
    let (_, size) = fx.big();
    let record = fx.ranges_record(out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sstream-mirror"))
        .args(fx.args(
            &server.url,
            out,
            &["--jobs", "4", "--segment-threshold", "1M"],
        ))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sstream-mirror");
    let started = Instant::now();
    loop {
        if let Some(r) = recorded(&record)
            && r.len() >= 2
            && total(&r) < size
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no ranges recorded in {}",
            record.display()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let r = recorded(&record).expect("the record survives the kill");
    assert!(total(&r) > 0 && total(&r) < size, "{r:?}");
    r
}

#[test]
fn resume_across_segments_after_sigkill() {
    let fx = Fixture::new(8 << 20, &[ONLY_SQUASHFS]);
    let (big, size) = fx.big();
    let server = FaultServer::start(&fx.src);
    server.throttle(8 << 10, Duration::from_millis(10));
    let out = fx.out("killed");
    let received = kill_while_ranges_arrive(&fx, &server, &out);
    let before = server.requests_of(&big).len();

    server.throttle(1 << 20, Duration::ZERO);
    let o = mirror(&fx.args(
        &server.url,
        &out,
        &["--jobs", "4", "--segment-threshold", "1M"],
    ));
    assert_ok(&o, "run after the kill");
    assert_clean(&fx, &out, "run after the kill");
    let again = &server.requests_of(&big)[before..];
    assert!(!again.is_empty());
    for r in again {
        let (first, last) = bounded(r).unwrap_or_else(|| panic!("not a range: {r:?}"));
        for have in &received {
            assert!(
                last < have.start || first >= have.end,
                "{r:?} asks again for bytes received before the kill ({have:?})"
            );
        }
        assert!(last < size, "{r:?}");
    }
}

#[test]
fn ranges_received_resume_over_one_connection_too() {
    let fx = Fixture::new(8 << 20, &[ONLY_SQUASHFS]);
    let (big, _) = fx.big();
    let server = FaultServer::start(&fx.src);
    server.throttle(8 << 10, Duration::from_millis(10));
    let out = fx.out("killed");
    let received = kill_while_ranges_arrive(&fx, &server, &out);
    let before = server.requests_of(&big).len();

    // The next run fetches over one connection: it resumes after the
    // prefix received, and drops the rest.
    server.throttle(1 << 20, Duration::ZERO);
    let o = mirror(&fx.args(&server.url, &out, &["--segment-threshold", "0"]));
    assert_ok(&o, "one connection after the kill");
    assert_clean(&fx, &out, "one connection after the kill");
    let again = &server.requests_of(&big)[before..];
    let prefix = received
        .first()
        .filter(|r| r.start == 0)
        .map_or(0, |r| r.end);
    let want = (prefix > 0).then(|| format!("bytes={prefix}-"));
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].range, want, "not resumed after the prefix");
}

/// Bytes of every item of `fx`'s stream (what a run with no filter fetches).
fn stream_bytes(fx: &Fixture) -> u64 {
    fx.sample.payloads.values().sum()
}

/// The least time `bytes` take at `rate` bytes per second, less the
/// bucket's burst (a twentieth of a second) and 10%.
fn least_time(bytes: u64, rate: u64) -> Duration {
    Duration::from_secs_f64(0.9 * (bytes as f64 / rate as f64 - 0.05))
}

#[test]
fn the_rate_cap_holds_on_average() {
    let fx = Fixture::new(2 << 20, &[]);
    let server = FaultServer::start(&fx.src);
    let bytes = stream_bytes(&fx);
    const RATE: u64 = 1 << 20;
    let out = fx.out("capped");
    let started = Instant::now();
    let o = mirror(&fx.args(
        &server.url,
        &out,
        &[
            "--jobs",
            "4",
            "--segment-threshold",
            "1M",
            "--limit-rate",
            "1M",
        ],
    ));
    let took = started.elapsed();
    assert_ok(&o, "capped");
    assert_clean(&fx, &out, "capped");
    let least = least_time(bytes, RATE);
    assert!(
        took >= least,
        "{bytes} bytes in {took:?} at a cap of {RATE}/s: faster than the cap ({least:?})"
    );
    // Generous: the cap must not starve the run either.
    let most = least * 4 + Duration::from_secs(20);
    assert!(took <= most, "{bytes} bytes in {took:?} at {RATE}/s");
    // Several connections were used, the cap holding for all together;
    // and under a cap no request is cut short (what is in flight on a
    // slowly read connection would be wasted): the squashfs was asked for
    // in disjoint pieces that add up to it.
    let (big, size) = fx.big();
    let mut pieces: Vec<(u64, u64)> = server
        .requests_of(&big)
        .iter()
        .filter_map(bounded)
        .collect();
    assert!(pieces.len() >= 2, "no ranges: {pieces:?}");
    pieces.sort();
    let mut at = 0;
    for &(first, last) in &pieces {
        assert_eq!(first, at, "pieces overlap or leave a gap: {pieces:?}");
        at = last + 1;
    }
    assert_eq!(at, size, "{pieces:?}");

    let bad = mirror(&fx.args(&server.url, &fx.out("zero"), &["--limit-rate", "0"]));
    assert!(!bad.status.success());
    let bad = mirror(&fx.args(&server.url, &fx.out("fast"), &["--limit-rate", "fast"]));
    let err = faults_support::stderr(&bad);
    assert!(!bad.status.success() && err.contains("\"fast\""), "{err}");
}

#[test]
fn a_config_job_honours_limit_rate() {
    let fx = Fixture::new(1 << 20, &[]);
    let server = FaultServer::start(&fx.src);
    let bytes = stream_bytes(&fx);
    let config = fx.out("sstream.toml");
    fs::write(
        &config,
        format!(
            "[[job]]\nname = \"capped\"\nsource = \"{}\"\ndir = \"capped\"\n\
             path = \"streams/v1/index.json\"\nno_verify = true\nlimit_rate = \"512K\"\n",
            server.url
        ),
    )
    .unwrap();
    let started = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_sstream"))
        .args(["sync", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(o.status.success(), "{}", faults_support::stderr(&o));
    compare_trees(&fx.clean, &fx.out("capped"));
    let least = least_time(bytes, 512 << 10);
    assert!(took >= least, "{bytes} bytes in {took:?} at 512K/s");
}

/// How [`PacedServer`] holds back what it sends.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Each connection gets at most this many bytes per second (a CDN's
    /// per-connection limit, a long round trip): more connections, more
    /// throughput.
    PerConnection(u64),
    /// All connections together get this many bytes per second, shared:
    /// each added connection slows the others down.
    Total(u64),
}

/// One response being sent: of `path`, from `start`; `sent` is the offset
/// after the bytes handed to the socket so far, `end` the offset where it
/// stops (lowered when the client hands the rest of the range to another
/// connection).
struct InFlight {
    id: u64,
    path: String,
    start: u64,
    sent: AtomicU64,
    end: AtomicU64,
}

/// What the threads of a [`PacedServer`] share.
struct PacedShared {
    root: PathBuf,
    pace: Pace,
    stop: AtomicBool,
    open: Mutex<Vec<Arc<InFlight>>>,
    most_open: AtomicUsize,
    /// For [`Pace::Total`]: when the next chunk of any connection may go.
    next_slot: Mutex<Instant>,
    next_id: AtomicU64,
}

/// A small HTTP/1.1 server on 127.0.0.1 (one request per connection,
/// `Connection: close`, `Range: bytes=N-M` honoured) that paces what it
/// sends and counts the connections carrying a response at once.
///
/// The count is exact about what the client keeps: when a request for a
/// range that starts inside a response being sent arrives (the client
/// handed the rest of that range to another connection, and stops reading
/// the first at that offset), the first response ends there: it stops
/// counting before its last byte is written (or at once, if it already
/// sent past it), so the client's next request on the connection slot it
/// frees, which can only follow that byte, is never counted with it.
struct PacedServer {
    url: String,
    shared: Arc<PacedShared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

/// Bytes written at once by [`PacedServer`].
const PACED_CHUNK: usize = 16 << 10;

impl PacedServer {
    fn start(root: &Path, pace: Pace) -> PacedServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let shared = Arc::new(PacedShared {
            root: root.to_path_buf(),
            pace,
            stop: AtomicBool::new(false),
            open: Mutex::default(),
            most_open: AtomicUsize::new(0),
            next_slot: Mutex::new(Instant::now()),
            next_id: AtomicU64::new(0),
        });
        let s = shared.clone();
        let acceptor = thread::spawn(move || {
            let mut workers = Vec::new();
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let s2 = s.clone();
                        workers.push(thread::spawn(move || s2.serve(conn)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        PacedServer {
            url,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The most responses that were being sent at once.
    fn most_open(&self) -> usize {
        self.shared.most_open.load(Ordering::SeqCst)
    }
}

impl Drop for PacedServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

impl PacedShared {
    fn serve(&self, conn: TcpStream) {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let Ok(read_half) = conn.try_clone() else {
            return;
        };
        let mut reader = std::io::BufReader::new(read_half);
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut reader, &mut line);
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let mut range = None;
        loop {
            let mut h = String::new();
            match std::io::BufRead::read_line(&mut reader, &mut h) {
                Ok(0) | Err(_) => return,
                Ok(_) if h.trim_end().is_empty() => break,
                Ok(_) => {}
            }
            if let Some((k, v)) = h.trim_end().split_once(':')
                && k.eq_ignore_ascii_case("range")
            {
                range = v.trim().strip_prefix("bytes=").map(str::to_owned);
            }
        }
        let path = target.trim_start_matches('/').to_owned();
        let mut out = conn;
        let _ = self.respond(&mut out, method == "HEAD", &path, range.as_deref());
        let _ = out.shutdown(std::net::Shutdown::Both);
    }

    fn respond(
        &self,
        out: &mut TcpStream,
        head_only: bool,
        path: &str,
        range: Option<&str>,
    ) -> std::io::Result<()> {
        let file = self.root.join(path);
        let body = match fs::read(&file) {
            Ok(b) if !path.contains("..") && file.is_file() => b,
            _ => {
                return out.write_all(
                    b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                );
            }
        };
        let len = body.len() as u64;
        let asked = range.and_then(|r| {
            let (a, b) = r.split_once('-')?;
            let a: u64 = a.parse().ok()?;
            let b = if b.is_empty() {
                len
            } else {
                b.parse::<u64>().ok()? + 1
            };
            (a < b.min(len)).then_some(a..b.min(len))
        });
        let (status, span) = match &asked {
            Some(r) => (
                format!(
                    "206 Partial Content\r\nContent-Range: bytes {}-{}/{len}",
                    r.start,
                    r.end - 1
                ),
                r.clone(),
            ),
            None => ("200 OK".to_owned(), 0..len),
        };
        write!(
            out,
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            span.end - span.start
        )?;
        if head_only {
            return Ok(());
        }
        let me = self.open_response(path, &span);
        let sent = self.send(out, &body, &me);
        self.close_response(&me);
        sent
    }

    /// Counts a response from `span.start`; ends the responses it takes
    /// the rest of (see [`PacedServer`]).
    fn open_response(&self, path: &str, span: &Range<u64>) -> Arc<InFlight> {
        let me = Arc::new(InFlight {
            id: self.next_id.fetch_add(1, Ordering::SeqCst),
            path: path.to_owned(),
            start: span.start,
            sent: AtomicU64::new(span.start),
            end: AtomicU64::new(span.end),
        });
        let mut open = self.open.lock().unwrap();
        open.retain(|r| {
            let cut =
                r.path == me.path && r.start < me.start && me.start < r.end.load(Ordering::SeqCst);
            if cut {
                r.end.fetch_min(me.start, Ordering::SeqCst);
            }
            // Already past the cut: the client reads no more of it.
            !(cut && r.sent.load(Ordering::SeqCst) >= me.start)
        });
        open.push(me.clone());
        self.most_open.fetch_max(open.len(), Ordering::SeqCst);
        me
    }

    fn close_response(&self, me: &InFlight) {
        self.open.lock().unwrap().retain(|r| r.id != me.id);
    }

    /// Sends the body of `me` in paced chunks until its end; stops
    /// counting it before its last chunk is written.
    fn send(&self, out: &mut TcpStream, body: &[u8], me: &InFlight) -> std::io::Result<()> {
        loop {
            let at = me.sent.load(Ordering::SeqCst);
            let end = me.end.load(Ordering::SeqCst);
            if at >= end || self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let next = end.min(at + PACED_CHUNK as u64);
            me.sent.store(next, Ordering::SeqCst);
            if next >= me.end.load(Ordering::SeqCst) {
                self.close_response(me);
            }
            self.wait_for_slot(next - at);
            out.write_all(&body[at as usize..next as usize])?;
            if let Pace::PerConnection(rate) = self.pace {
                thread::sleep(Duration::from_secs_f64((next - at) as f64 / rate as f64));
            }
        }
    }

    /// Under [`Pace::Total`]: waits for the turn of a chunk of `n` bytes.
    fn wait_for_slot(&self, n: u64) {
        let Pace::Total(rate) = self.pace else {
            return;
        };
        let slot = {
            let mut next = self.next_slot.lock().unwrap();
            let slot = (*next).max(Instant::now());
            *next = slot + Duration::from_secs_f64(n as f64 / rate as f64);
            slot
        };
        thread::sleep(slot.saturating_duration_since(Instant::now()));
    }
}

/// A run of the squashfs alone over `server` with `--jobs 2` and
/// `--max-connections max`: the run succeeds and makes the clean tree.
fn run_paced(fx: &Fixture, server: &PacedServer, name: &str, max: &str) {
    let out = fx.out(name);
    let o = mirror(&fx.args(
        &server.url,
        &out,
        &[
            "--jobs",
            "2",
            "--max-connections",
            max,
            "--segment-threshold",
            "1M",
            "--timeout",
            "10",
        ],
    ));
    assert_ok(&o, name);
    assert_clean(fx, &out, name);
}

#[test]
fn connections_are_added_while_they_add_throughput_never_past_the_bound() {
    let fx = Fixture::new(16 << 20, &[ONLY_SQUASHFS]);
    let server = PacedServer::start(&fx.src, Pace::PerConnection(1 << 20));
    run_paced(&fx, &server, "grown", "4");
    // Each connection added brought its 1 MiB/s: the budget grew past the
    // two of --jobs (one at a time, each step measured over a second and a
    // half; on a loaded machine a step may measure short and stop early),
    // and never past the bound.
    let open = server.most_open();
    assert!((3..=4).contains(&open), "{open} connections open at once");
}

#[test]
fn a_bound_of_jobs_adds_no_connection() {
    let fx = Fixture::new(4 << 20, &[ONLY_SQUASHFS]);
    let server = PacedServer::start(&fx.src, Pace::PerConnection(512 << 10));
    run_paced(&fx, &server, "jobs", "2");
    assert_eq!(server.most_open(), 2, "connections open at once");
}

#[test]
fn a_server_whose_total_rate_is_fixed_gets_no_more_connections_than_needed() {
    let fx = Fixture::new(8 << 20, &[ONLY_SQUASHFS]);
    let server = PacedServer::start(&fx.src, Pace::Total(1 << 20));
    run_paced(&fx, &server, "fixed", "16");
    // One connection added to measure what it brings (nothing), and at
    // most one more if a window's noise passed the margin: near the two of
    // --jobs, far from the bound.
    let open = server.most_open();
    assert!((2..=4).contains(&open), "{open} connections open at once");
}
