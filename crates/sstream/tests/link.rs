//! The link: large items fetched in byte ranges over several connections
//! (each answer checked, a server that ignores or lies about ranges still
//! gives a correct file, retries, stalls and fallback roots per range,
//! resume after SIGKILL), and the rate cap (`--limit-rate`, config
//! `limit_rate`), against the fault-injecting server.

mod faults_support;
mod support;

use faults_support::{
    Fault, FaultServer, Request, args, assert_ok, compare_trees, leftovers, mirror,
};
use simplestreams::sample::{self, SampleRelease, SampleSpec, SampleStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
