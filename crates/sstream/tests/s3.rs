//! Mirrors into S3-compatible object storage, against real servers on
//! 127.0.0.1 (moto in server mode, and s3s-fs, which checks request
//! signatures; both installed by scripts/s3-servers.sh), each behind a
//! proxy that counts requests and injects faults. A bucket mirror must be
//! the directory mirror of the same stream, object for object; runs that
//! change nothing must not write; killed runs must leave a consistent
//! bucket that a rerun completes; S3 errors are retried or reported
//! clearly; two runs never write at once.

mod faults_support;
mod s3_support;
mod support;

use faults_support::{Rng, assert_failed, assert_ok, inconsistencies, mirror, stderr};
use s3_support::{Fault, Kind, Logged, Rule, S3Server, block};
use simplestreams::path::RelPath;
use simplestreams::sample::{self, SampleSpec};
use simplestreams::store::Store;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use support::compare_trees;
use tempfile::TempDir;

const BUCKET: &str = "maas-images";
const LOCK_KEY: &str = ".data/sstream.lock";

fn spec(versions: &[&str], bootloaders: &[&str], payload: u64) -> SampleSpec {
    faults_support::two_release_spec(versions, bootloaders, payload)
}

fn bucket(prefix: &str) -> String {
    format!("s3://{BUCKET}/{prefix}")
}

/// The arguments of a run: those of the fault tests, but with a timeout
/// and retries that the bucket's client, which follows `--timeout` and
/// `--retries` too, lives with on a loaded machine (the source is a
/// directory: its reads neither time out nor retry).
fn args<'a>(source: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut extra = extra.to_vec();
    for (flag, value) in [("--timeout", "10"), ("--retries", "4")] {
        if !extra.contains(&flag) {
            extra.extend([flag, value]);
        }
    }
    faults_support::args(source, out, &extra)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A stream generated into a temporary directory, and its directory mirror.
struct Stream {
    _dirs: Vec<TempDir>,
    src: PathBuf,
    mirrored: PathBuf,
}

impl Stream {
    /// Generates `spec` and mirrors it (with `extra` options) into a
    /// directory with the tool under test.
    fn new(spec: &SampleSpec, extra: &[&str]) -> Stream {
        let (src, dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        sample::generate(spec, src.path(), None).unwrap();
        assert_ok(
            &mirror(&args(s(src.path()), s(dir.path()), extra)),
            "directory mirror",
        );
        Stream {
            src: src.path().to_path_buf(),
            mirrored: dir.path().to_path_buf(),
            _dirs: vec![src, dir],
        }
    }
}

/// `sstream-mirror ARGS` against `s3`, waited for.
fn s3_mirror(s3: &S3Server, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sstream-mirror"));
    s3.apply(&mut cmd);
    cmd.args(args).output().expect("run sstream-mirror")
}

/// `sstream-mirror ARGS` against `s3`, in the background.
fn spawn_s3_mirror(s3: &S3Server, args: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sstream-mirror"));
    s3.apply(&mut cmd);
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sstream-mirror")
}

/// `sstream verify ARGS` against `s3`.
fn s3_verify(s3: &S3Server, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sstream"));
    s3.apply(&mut cmd);
    cmd.arg("verify")
        .args(args)
        .output()
        .expect("run sstream verify")
}

/// Asserts `sstream verify` found no error (warnings allowed).
fn assert_verified(s3: &S3Server, target: &str, extra: &[&str], what: &str) {
    let mut a = extra.to_vec();
    a.push(target);
    let o = s3_verify(s3, &a);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{what}: sstream verify {target} failed ({}):\n{out}{}",
        o.status,
        stderr(&o)
    );
    assert!(out.contains(&format!("OK: {target}")), "{what}: {out}");
}

/// The bucket mirror at `target`, downloaded into a directory.
fn downloaded(s3: &S3Server, target: &str) -> TempDir {
    let dir = TempDir::new().unwrap();
    s3.download(target, dir.path());
    dir
}

/// Asserts the bucket mirror at `target` is the directory mirror `dir`:
/// the same keys and bytes, `.data/` equal as data (our bookkeeping aside),
/// and no lease left behind.
fn assert_same_as_dir(s3: &S3Server, target: &str, dir: &Path) {
    let copy = downloaded(s3, target);
    compare_trees(dir, copy.path());
    assert!(
        !copy.path().join(LOCK_KEY).exists(),
        "{target}: the lease is still there after the run"
    );
}

fn writes(log: &[Logged]) -> Vec<String> {
    log.iter()
        .filter(|r| r.writes())
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect()
}

// ------------------------------------------------------------ the store

/// What a download stages is invisible under the item's key until it is
/// committed (after verification); a discarded upload leaves nothing.
fn staged_uploads_appear_only_on_commit(kind: Kind) {
    let Some(s3) = S3Server::start(kind, BUCKET) else {
        return;
    };
    let store = s3.direct(&bucket("staging"));
    let rel = RelPath::parse("a/big.img").unwrap();
    let chunk: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    for (commit, mib) in [(false, 19usize), (true, 19), (true, 1)] {
        let mut staged = block(store.stage(&rel)).unwrap();
        staged.begin(0, &mut |_| {}).unwrap();
        for _ in 0..mib {
            staged.write(&chunk).unwrap();
        }
        staged.sync().unwrap();
        assert_eq!(
            block(store.stamp(&rel)),
            None,
            "visible before commit ({mib} MiB)"
        );
        assert!(
            block(store.list()).unwrap().is_empty(),
            "{kind:?}: something listed"
        );
        if commit {
            block(staged.commit()).unwrap();
            let stamp = block(store.stamp(&rel)).expect("committed");
            assert_eq!(stamp.len, (mib << 20) as u64);
            let back = block(store.read(&rel)).unwrap().unwrap();
            assert!(back.chunks(1 << 20).all(|c| c == chunk.as_slice()));
            block(store.remove(&rel)).unwrap();
        } else {
            block(staged.discard()).unwrap();
        }
        assert_eq!(block(store.stamp(&rel)), None);
    }
    // Unchanged content is not written again (same stamp).
    let doc = RelPath::parse("streams/v1/index.json").unwrap();
    block(store.write_atomic(&doc, b"{}")).unwrap();
    let before = block(store.stamp(&doc)).unwrap();
    thread::sleep(Duration::from_millis(1100));
    block(store.write_atomic(&doc, b"{}")).unwrap();
    assert_eq!(block(store.stamp(&doc)), Some(before));
    block(store.write_atomic(&doc, b"{ }")).unwrap();
    assert_ne!(block(store.stamp(&doc)), Some(before));
}

#[test]
fn moto_staged_uploads_appear_only_on_commit() {
    staged_uploads_appear_only_on_commit(Kind::Moto);
}

#[test]
fn s3s_fs_staged_uploads_appear_only_on_commit() {
    staged_uploads_appear_only_on_commit(Kind::S3sFs);
}

/// The lease is renewed while it is held (its expiry moves on), keeps a
/// second taker out, is deleted on release; a lease taken over while held
/// stops every further write.
fn lease_is_renewed_and_lost_when_taken_over(kind: Kind) {
    let Some(s3) = S3Server::start(kind, BUCKET) else {
        return;
    };
    let mut settings = s3.settings();
    settings.lease_ttl = Duration::from_secs(3);
    let url = bucket("lease");
    let store = simplestreams::store::S3Store::open(&url, settings).unwrap();
    let lock = RelPath::parse(LOCK_KEY).unwrap();
    let expires = || -> u64 {
        let bytes = block(store.read(&lock)).unwrap().expect("the lease object");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["expires"].as_u64().unwrap()
    };
    let held = block(store.lock(false)).unwrap();
    let first = expires();
    thread::sleep(Duration::from_millis(2600));
    assert!(expires() > first, "{kind:?}: the lease was not renewed");
    let err = block(store.lock(false)).unwrap_err().to_string();
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    drop(held);
    assert_eq!(block(store.stamp(&lock)), None, "the lease was not deleted");

    let held = block(store.lock(false)).unwrap();
    let doc = RelPath::parse("streams/v1/index.json").unwrap();
    block(store.write_atomic(&doc, b"{}")).unwrap();
    // Another run takes the lease over (as after an expiry).
    block(
        s3.direct(&url)
            .write_atomic(&lock, b"{\"host\":\"other\",\"pid\":1,\"expires\":1}"),
    )
    .unwrap();
    thread::sleep(Duration::from_millis(1600));
    let err = block(store.write_atomic(&doc, b"{ }"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("lease was lost"), "{err}");
    assert!(block(store.remove(&doc)).is_err());
    drop(held);
    assert!(
        block(store.stamp(&lock)).is_some(),
        "the other run's lease was deleted"
    );
}

#[test]
fn moto_lease_is_renewed_and_lost_when_taken_over() {
    lease_is_renewed_and_lost_when_taken_over(Kind::Moto);
}

#[test]
fn s3s_fs_lease_is_renewed_and_lost_when_taken_over() {
    lease_is_renewed_and_lost_when_taken_over(Kind::S3sFs);
}

// ------------------------------------------------------ bucket = directory

/// A stream with items larger than a part (multipart uploads) and small
/// ones (single PUTs), mirrored into a bucket and into a directory.
fn bucket_matches_directory(kind: Kind) {
    let Some(s3) = S3Server::start(kind, BUCKET) else {
        return;
    };
    let stream = Stream::new(&spec(&["20250615"], &["20230222.0"], 9 << 20), &[]);
    let target = bucket("stable");
    assert_ok(
        &s3_mirror(&s3, &args(s(&stream.src), &target, &[])),
        "bucket mirror",
    );
    let log = s3.proxy.log();
    assert!(
        log.iter()
            .any(|r| r.method == "POST" && r.query.contains("uploads")),
        "{kind:?}: no multipart upload was used"
    );
    assert!(
        !log.iter().any(Logged::lists),
        "a mirror run listed the bucket"
    );
    assert_same_as_dir(&s3, &target, &stream.mirrored);
    assert_verified(&s3, &target, &["--no-verify", "--full"], "after the mirror");

    // The run left its status record in the bucket, named after the
    // prefix; `sstream status` lists it from the bucket.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sstream"));
    s3.apply(&mut cmd);
    let o = cmd.args(["status", "--json", &target]).output().unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{report}");
    assert!(report.contains("\"job\": \"stable\""), "{report}");
    assert!(report.contains("\"health\": \"ok\""), "{report}");

    // The audit of a damaged bucket: what the state records must be there,
    // what nothing references is an orphan.
    let store = s3.direct(&target);
    let squashfs = s3
        .objects(&target)
        .into_keys()
        .find(|k| k.ends_with("/squashfs"))
        .unwrap();
    block(store.remove(&RelPath::parse(&squashfs).unwrap())).unwrap();
    let stray = RelPath::parse("trusty/stray.img").unwrap();
    block(store.write_atomic(&stray, b"stray")).unwrap();
    let o = s3_verify(&s3, &["--no-verify", &target]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "error: missing: {target}/{squashfs}: recorded as mirrored"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("warning: orphan: {target}/trusty/stray.img")),
        "{out}"
    );
}

#[test]
fn moto_bucket_matches_directory() {
    bucket_matches_directory(Kind::Moto);
}

#[test]
fn s3s_fs_bucket_matches_directory() {
    bucket_matches_directory(Kind::S3sFs);
}

// ------------------------------------------------- the documented commands

/// The two command lines of the MAAS documentation, into a bucket, from a
/// signed stream served over HTTP; then as cron runs them again: once the
/// two have seen each other's documents, nothing is written but the lease,
/// nothing is listed.
#[test]
fn maas_commands_into_a_bucket_then_a_no_op_rerun() {
    let Some(s3) = S3Server::start(Kind::S3sFs, BUCKET) else {
        return;
    };
    let gpg = support::Gpg::new();
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("src");
    gpg.generate(&SampleSpec::default(), &src);
    let server = support::Server::start(&src);
    let keyring = format!("--keyring={}", gpg.keyring.display());
    let target = bucket("ephemeral-v3/stable");
    let dir = tmp.path().join("dir");
    let commands = |out: &str| -> [Vec<String>; 2] {
        let line = |filters: &[&str]| {
            let mut v = vec![keyring.clone(), server.url.clone(), out.to_owned()];
            v.extend(filters.iter().map(|f| f.to_string()));
            v.extend(["--max=1".to_owned(), "--progress".to_owned()]);
            v
        };
        [
            line(&["arch=amd64", "release~(trusty|xenial)"]),
            line(&["os~(grub*|pxelinux)"]),
        ]
    };
    let run = |a: &[String]| -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sstream-mirror"));
        s3.apply(&mut cmd);
        cmd.env("GNUPGHOME", &gpg.verify_home)
            .args(a)
            .output()
            .unwrap()
    };
    for a in commands(s(&dir)) {
        assert_ok(&run(&a), "directory");
    }
    for a in commands(&target) {
        assert_ok(&run(&a), "bucket");
    }
    assert_same_as_dir(&s3, &target, &dir);
    assert_verified(&s3, &target, &[&keyring], "after the two commands");
    let served = format!("{target}/streams/v1/index.sjson");
    assert_verified(&s3, &served, &[&keyring], "naming the entry");

    // The second round still records, in the first command's fetch cache,
    // the products file the second command published; the third changes
    // nothing.
    for a in commands(&target) {
        assert_ok(&run(&a), "second round");
    }
    s3.proxy.clear_log();
    for a in commands(&target) {
        assert_ok(&run(&a), "no-op rerun");
    }
    let log = s3.proxy.log();
    let mut methods = std::collections::BTreeMap::<&str, usize>::new();
    for r in &log {
        *methods.entry(r.method.as_str()).or_default() += 1;
    }
    eprintln!("requests of two no-op runs: {methods:?}");
    let lock_path = format!("/{BUCKET}/ephemeral-v3/stable/{LOCK_KEY}");
    // Each run records itself (one PUT of its status record, never
    // published: `.data/`); nothing else but the lease is written.
    let is_status = |w: &String| w.contains("/.data/sstream-status-");
    let status_writes = writes(&log).into_iter().filter(is_status).count();
    assert_eq!(status_writes, 2, "one status record per run");
    let other_writes: Vec<String> = writes(&log)
        .into_iter()
        .filter(|w| !w.contains(&lock_path) && !is_status(w))
        .collect();
    assert_eq!(other_writes, Vec::<String>::new(), "a no-op run wrote");
    assert!(
        !log.iter().any(Logged::lists),
        "a no-op run listed the bucket"
    );
    // Per run: the lease created, the conditional-write probe refused, and
    // the lease deleted.
    let lease: Vec<(String, u16)> = log
        .iter()
        .filter(|r| r.writes() && !r.path.contains("/.data/sstream-status-"))
        .map(|r| (r.method.clone(), r.status))
        .collect();
    assert_eq!(
        lease,
        [("PUT", 200), ("PUT", 412), ("DELETE", 204)]
            .repeat(2)
            .into_iter()
            .map(|(m, st)| (m.to_owned(), st))
            .collect::<Vec<_>>()
    );
    assert_same_as_dir(&s3, &target, &dir);
}

/// A lease whose `expires` lies far in the future (forged, or written with
/// a wrong clock: here the year 3000) is believed for one lease lifetime
/// after it was written, not until then: it is reported as held until
/// then, and a run that waits takes it over.
fn a_forged_lease_expires_one_lifetime_after_it_was_written(kind: Kind) {
    let Some(s3) = S3Server::start(kind, BUCKET) else {
        return;
    };
    let mut settings = s3.settings();
    settings.lease_ttl = Duration::from_secs(3);
    let store = simplestreams::store::S3Store::open(&bucket("forged"), settings).unwrap();
    let lock = RelPath::parse(LOCK_KEY).unwrap();
    let year_3000 = 32_503_680_000u64;
    let forged = format!(
        r#"{{"host":"elsewhere","pid":4242,"boot_id":"x","pid_namespace":"y","expires":{year_3000}}}"#
    );
    block(store.write_atomic(&lock, forged.as_bytes())).unwrap();

    let err = block(store.lock(false)).unwrap_err().to_string();
    assert!(err.contains("host elsewhere, pid 4242"), "{err}");
    assert!(
        !err.contains("3000-01-01"),
        "the forged expiry was believed: {err}"
    );
    // Bounded so that a lease believed fails the test instead of hanging it.
    let waited =
        block(async { tokio::time::timeout(Duration::from_secs(120), store.lock(true)).await });
    let held = waited
        .expect("a waiting run is still blocked by the forged lease")
        .unwrap();
    let bytes = block(store.read(&lock)).unwrap().expect("the lease object");
    let lease: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(lease["pid"].as_u64(), Some(u64::from(std::process::id())));
    drop(held);
}

#[test]
fn moto_a_forged_lease_expires_one_lifetime_after_it_was_written() {
    a_forged_lease_expires_one_lifetime_after_it_was_written(Kind::Moto);
}

#[test]
fn s3s_fs_a_forged_lease_expires_one_lifetime_after_it_was_written() {
    a_forged_lease_expires_one_lifetime_after_it_was_written(Kind::S3sFs);
}

/// `sstream status` on a job whose bucket's endpoint accepts connections
/// and never answers (a plain TCP listener on 127.0.0.1): the job is
/// unreadable, with one line naming the bucket, once the job's `timeout`
/// has passed, instead of after the S3 client's minutes of retries.
#[test]
fn status_of_a_bucket_that_never_answers_is_bounded() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    // Accepts every connection and holds it open, unanswered, until the
    // test process ends.
    thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let tmp = TempDir::new().unwrap();
    let config = tmp.path().join("sstream.toml");
    std::fs::write(
        &config,
        "[[job]]\nname = \"silent\"\nsource = \"http://127.0.0.1:9/\"\n\
         dir = \"s3://silent-bucket/mirror/\"\ntimeout = \"2s\"\n",
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sstream"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .env_remove("RUST_LOG")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("HOME", tmp.path())
        .args(["status", "--config", s(&config)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Far more than the job's timeout, far less than the client's retries.
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sstream status still waiting for a silent endpoint after 90 s");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("silent") && l.contains("unreadable")),
        "{out}"
    );
    let line = err
        .lines()
        .find(|l| l.contains("s3://silent-bucket/mirror/"))
        .unwrap_or_else(|| panic!("no line names the bucket: {err}"));
    assert!(
        line.contains("no answer from the S3 service within 2s"),
        "{err}"
    );
}

// ------------------------------------------------------------ config jobs

/// A config job whose `dir` is a bucket: `sstream sync` mirrors into it and
/// keeps the job's status record there, `sstream status` reads it back.
#[test]
fn a_config_job_mirrors_into_a_bucket() {
    let Some(s3) = S3Server::start(Kind::Moto, BUCKET) else {
        return;
    };
    let stream = Stream::new(&spec(&["20250615"], &["20230222.0"], 4096), &[]);
    let tmp = TempDir::new().unwrap();
    let config = tmp.path().join("sstream.toml");
    let target = bucket("synced");
    std::fs::write(
        &config,
        format!(
            "[[job]]\nname = \"maas\"\nsource = {:?}\ndir = \"{target}/\"\n\
             path = \"streams/v1/index.json\"\nno_verify = true\n",
            s(&stream.src)
        ),
    )
    .unwrap();
    let sstream = |a: &[&str]| -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sstream"));
        s3.apply(&mut cmd);
        cmd.args(a).output().unwrap()
    };
    let o = sstream(&["sync", "--config", s(&config)]);
    assert!(o.status.success(), "sync: {}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("maas: ok"));
    let objects = s3.objects(&target);
    let record: serde_json::Value =
        serde_json::from_slice(&objects[".data/sstream-status-maas.json"]).unwrap();
    assert_eq!(record["result"], "ok", "{record}");
    // What the bucket takes: every object of it, as listed after the run.
    let stored: usize = objects.values().map(Vec::len).sum();
    let status_len = objects[".data/sstream-status-maas.json"].len();
    assert_eq!(
        record["bytes_on_disk"].as_u64(),
        Some((stored - status_len) as u64),
        "{record}"
    );
    assert_same_as_dir(&s3, &target, &stream.mirrored);
    let o = sstream(&["status", "--config", s(&config)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "status: {out}{}", stderr(&o));
    assert!(out.contains("maas") && out.contains("ok"), "{out}");
}

// ------------------------------------------------------------------ day 2

/// Day 2 of a stream with `--max=1`: a new version replaces the old one;
/// the old version's objects are deleted, as from a directory.
#[test]
fn day_two_with_max_one() {
    let Some(s3) = S3Server::start(Kind::Moto, BUCKET) else {
        return;
    };
    let payload = 64 << 10;
    let day1 = Stream::new(&spec(&["20250101"], &["20230222.0"], payload), &["--max=1"]);
    let (src2, dir2) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    sample::generate(
        &spec(
            &["20250101", "20250201"],
            &["20230222.0", "20231004.0"],
            payload,
        ),
        src2.path(),
        None,
    )
    .unwrap();
    support::copy_tree(&day1.mirrored, dir2.path());
    assert_ok(
        &mirror(&args(s(src2.path()), s(dir2.path()), &["--max=1"])),
        "day 2 dir",
    );
    let target = bucket("stable");
    assert_ok(
        &s3_mirror(&s3, &args(s(&day1.src), &target, &["--max=1"])),
        "day 1",
    );
    assert_same_as_dir(&s3, &target, &day1.mirrored);
    s3.proxy.clear_log();
    let o = s3_mirror(
        &s3,
        &args(s(src2.path()), &target, &["--max=1", "--dry-run"]),
    );
    assert_ok(&o, "day 2, dry run");
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(
        plan.lines()
            .any(|l| l.starts_with("+ ") && l.contains("20250201")),
        "{plan}"
    );
    assert!(
        plan.lines()
            .any(|l| l.starts_with("- ") && l.contains("20250101")),
        "{plan}"
    );
    assert_eq!(
        writes(&s3.proxy.log()),
        Vec::<String>::new(),
        "a dry run wrote"
    );
    assert_ok(
        &s3_mirror(&s3, &args(s(src2.path()), &target, &["--max=1"])),
        "day 2",
    );
    let deleted = s3
        .proxy
        .log()
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("20250101"))
        .count();
    assert!(deleted > 0, "day 2 deleted nothing of the old version");
    assert_same_as_dir(&s3, &target, dir2.path());
    let objects = s3.objects(&target);
    assert!(
        !objects.keys().any(|k| k.contains("/20250101/")),
        "old version kept"
    );
    assert!(!objects.contains_key(".data/sstream-pending-deletes.json"));
    // Upstream's documents still list what --max=1 left out: offered but
    // not held, which --strict fails on; nothing else is wrong.
    assert_verified(&s3, &target, &["--no-verify"], "day 2");
    let o = s3_verify(&s3, &["--no-verify", "--strict", "--json", &target]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(1), "{v}");
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
    assert_eq!(v["offered"]["missing"], 0, "{v}");
    assert!(v["offered"]["not_held"].as_u64() > Some(0), "{v}");
}

// ------------------------------------------------------------------ kills

/// Kills during uploads (SIGKILL at random times of a day-1 → day-2 run,
/// slowed down at the server): after each kill the published bucket is
/// consistent (every item a state claims is there and right, every products
/// file the index names exists; `sstream verify` finds no error), and a
/// rerun (which takes over the dead run's lease at once) completes it.
#[test]
fn sigkill_during_uploads_leaves_a_consistent_bucket() {
    let Some(s3) = S3Server::start(Kind::Moto, BUCKET) else {
        return;
    };
    let rounds = std::env::var("SSTREAM_S3_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6u64);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    eprintln!("s3 kill test: seed {seed}, {rounds} kills");
    let mut rng = Rng(seed);
    let payload = 10 << 20;
    let day1 = Stream::new(&spec(&["20250101"], &["20230222.0"], payload), &[]);
    let (src2, dir2) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    sample::generate(
        &spec(&["20250201"], &["20231004.0"], payload),
        src2.path(),
        None,
    )
    .unwrap();
    support::copy_tree(&day1.mirrored, dir2.path());
    assert_ok(
        &mirror(&args(s(src2.path()), s(dir2.path()), &[])),
        "day 2 dir",
    );
    // Every write waits a little at the server: runs last long enough to
    // be killed in the middle of uploads.
    let slow = |s3: &S3Server| {
        s3.proxy.clear_rules();
        for m in ["PUT", "POST"] {
            s3.proxy.rule(Rule::new(
                Some(m),
                "",
                Fault::Delay(Duration::from_millis(60)),
            ));
        }
    };
    let day2_args = |target: &str| -> Vec<String> {
        args(s(src2.path()), target, &[])
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    let probe = bucket("probe");
    assert_ok(
        &s3_mirror(&s3, &args(s(&day1.src), &probe, &[])),
        "probe day 1",
    );
    slow(&s3);
    let t = Instant::now();
    let a = day2_args(&probe);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_ok(&s3_mirror(&s3, &a), "probe day 2");
    let full = t.elapsed().as_millis() as u64;
    assert_same_as_dir(&s3, &probe, dir2.path());

    // Two kills per prefix: the second run has only what the first left
    // to do, so it is killed sooner.
    let chain = 2;
    let mut target = String::new();
    let mut killed = 0;
    for round in 0..rounds {
        if round % chain == 0 {
            s3.proxy.clear_rules();
            target = bucket(&format!("kill-{round}"));
            assert_ok(&s3_mirror(&s3, &args(s(&day1.src), &target, &[])), "day 1");
            slow(&s3);
        }
        let window = if round % chain == 0 {
            full * 8 / 10
        } else {
            full * 4 / 10
        };
        let at = rng.below(window + 1);
        let a = day2_args(&target);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let mut child = spawn_s3_mirror(&s3, &a);
        thread::sleep(Duration::from_millis(at));
        let _ = child.kill();
        let status = child.wait().unwrap();
        killed += usize::from(status.signal() == Some(9));
        eprintln!("round {round}: {status} at {at} of {full} ms");
        let copy = downloaded(&s3, &target);
        let problems = inconsistencies(copy.path());
        assert!(
            problems.is_empty(),
            "seed {seed}, round {round}, killed at {at} of {full} ms ({status}):\n  {}",
            problems.join("\n  ")
        );
        // No `verify` here: a kill between the references and the states
        // (written in that order on purpose, see execute.rs) leaves them
        // disagreeing until the next run redoes the same changes; what a
        // client sees (every item the published state claims) is checked
        // above, and `verify --strict` after the rerun.
        if round % chain == chain - 1 || round + 1 == rounds {
            let o = s3_mirror(&s3, &a);
            assert_ok(&o, &format!("seed {seed}: rerun after round {round}"));
            assert_same_as_dir(&s3, &target, dir2.path());
            assert_verified(
                &s3,
                &target,
                &["--no-verify", "--strict"],
                "after the rerun",
            );
        }
    }
    eprintln!("s3 kill test: {killed} of {rounds} runs killed before they ended");
    assert!(
        killed * 3 >= rounds as usize,
        "too few runs were killed mid-way"
    );
}

// ------------------------------------------------------------------ errors

/// 503 SlowDown and 500 answers are retried; the run ends as a clean one.
#[test]
fn slow_down_and_server_errors_are_retried() {
    let Some(s3) = S3Server::start(Kind::Moto, BUCKET) else {
        return;
    };
    let stream = Stream::new(&spec(&["20250615"], &["20230222.0"], 64 << 10), &[]);
    s3.proxy
        .rule(Rule::new(Some("PUT"), "", Fault::Status(503, "SlowDown")).times(4));
    s3.proxy
        .rule(Rule::new(Some("HEAD"), "", Fault::Status(500, "InternalError")).times(2));
    s3.proxy
        .rule(Rule::new(Some("GET"), "", Fault::Status(503, "ServiceUnavailable")).times(2));
    let target = bucket("stable");
    assert_ok(
        &s3_mirror(&s3, &args(s(&stream.src), &target, &[])),
        "with faults",
    );
    let injected = s3.proxy.log().iter().filter(|r| r.fault.is_some()).count();
    assert_eq!(injected, 8, "not every fault was met");
    assert_same_as_dir(&s3, &target, &stream.mirrored);
}

/// The bucket's client retries as `--retries` says: with none, one 503 on
/// an item's upload fails the run (publishing nothing); with one, the same
/// fault is met and the run ends clean.
#[test]
fn the_bucket_is_retried_as_often_as_retries_says() {
    let Some(s3) = S3Server::start(Kind::Moto, BUCKET) else {
        return;
    };
    let stream = Stream::new(&spec(&["20250615"], &["20230222.0"], 64 << 10), &[]);
    let target = bucket("stable");
    let slow_down = || Rule::new(Some("PUT"), "squashfs", Fault::Status(503, "SlowDown")).times(1);
    s3.proxy.rule(slow_down());
    let o = s3_mirror(&s3, &args(s(&stream.src), &target, &["--retries", "0"]));
    assert_failed(&o, "--retries 0", &["squashfs"]);
    let objects = s3.objects(&target);
    assert!(
        !objects.keys().any(|k| k.ends_with("index.json")),
        "the index was published: {:?}",
        objects.keys()
    );
    s3.proxy.clear_rules();
    s3.proxy.rule(slow_down());
    assert_ok(
        &s3_mirror(&s3, &args(s(&stream.src), &target, &["--retries", "1"])),
        "--retries 1",
    );
    assert_same_as_dir(&s3, &target, &stream.mirrored);
}

/// A 403 on the items' uploads ends the run with a clear error naming the
/// object and the S3 error, and publishes nothing; so does a missing bucket.
#[test]
fn access_denied_is_a_clear_error_and_publishes_nothing() {
    let Some(s3) = S3Server::start(Kind::Moto, BUCKET) else {
        return;
    };
    let stream = Stream::new(&spec(&["20250615"], &["20230222.0"], 64 << 10), &[]);
    s3.proxy.rule(Rule::new(
        Some("PUT"),
        "squashfs",
        Fault::Status(403, "AccessDenied"),
    ));
    let target = bucket("stable");
    let o = s3_mirror(&s3, &args(s(&stream.src), &target, &[]));
    assert_failed(
        &o,
        "403 on items",
        &[
            "access denied (AccessDenied)",
            &format!("{target}/"),
            "squashfs",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let objects = s3.objects(&target);
    let published: Vec<&String> = objects
        .keys()
        .filter(|k| k.starts_with("streams/") || k.contains("squashfs"))
        .collect();
    assert!(
        !published.iter().any(|k| k.ends_with("index.json")),
        "the index was published: {published:?}"
    );
    assert!(
        !published.iter().any(|k| k.contains("squashfs")),
        "{published:?}"
    );
    assert!(!objects.contains_key(LOCK_KEY), "the lease was left behind");
    let o = s3_mirror(&s3, &args(s(&stream.src), "s3://no-such-bucket/x", &[]));
    assert_failed(
        &o,
        "missing bucket",
        &["s3://no-such-bucket/x/.data/sstream.lock: no such bucket"],
    );
}

/// Wrong credentials, refused by a server that checks signatures; no
/// credentials at all for a custom endpoint (a usage error).
#[test]
fn a_wrong_secret_is_a_clear_error() {
    let Some(s3) = S3Server::start(Kind::S3sFs, BUCKET) else {
        return;
    };
    let stream = Stream::new(&spec(&["20250615"], &[], 4096), &[]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sstream-mirror"));
    s3.apply(&mut cmd);
    let o = cmd
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .args(args(s(&stream.src), &bucket("stable"), &[]))
        .output()
        .unwrap();
    assert_failed(
        &o,
        "wrong secret",
        &["access denied", "SignatureDoesNotMatch", LOCK_KEY],
    );
    assert!(
        stderr(&o).lines().filter(|l| l.contains("error")).count() == 1,
        "{}",
        stderr(&o)
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sstream-mirror"));
    s3.apply(&mut cmd);
    let o = cmd
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(args(s(&stream.src), &bucket("stable"), &[]))
        .output()
        .unwrap();
    assert_failed(
        &o,
        "no credentials",
        &["no credentials for", "AWS_ACCESS_KEY_ID"],
    );
    assert_eq!(o.status.code(), Some(2), "a usage error");
}

// ------------------------------------------------------------------ lease

/// Two runs at once: the second is refused with the first's host and pid,
/// or (`--wait`) waits for it; both end with the clean bucket.
#[test]
fn two_runs_at_once_are_kept_apart_by_the_lease() {
    let Some(s3) = S3Server::start(Kind::Moto, BUCKET) else {
        return;
    };
    let stream = Stream::new(&spec(&["20250615"], &["20230222.0"], 256 << 10), &[]);
    let target = bucket("stable");
    let a = args(s(&stream.src), &target, &[]);
    s3.proxy.rule(Rule::new(
        Some("PUT"),
        "squashfs",
        Fault::Delay(Duration::from_millis(1500)),
    ));
    let mut first = spawn_s3_mirror(&s3, &a);
    let store = s3.direct(&target);
    let lock = RelPath::parse(LOCK_KEY).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while block(store.stamp(&lock)).is_none() {
        assert!(Instant::now() < deadline, "the first run took no lease");
        thread::sleep(Duration::from_millis(20));
    }
    let o = s3_mirror(&s3, &a);
    assert_failed(
        &o,
        "second run",
        &[
            "another run is mirroring into this bucket",
            &format!("pid {}", first.id()),
            "--wait",
            &format!("{target}/{LOCK_KEY}"),
        ],
    );
    let mut w = a.clone();
    w.push("--wait");
    let waited = s3_mirror(&s3, &w);
    let status = first.wait().unwrap();
    assert!(status.success(), "first run: {status}");
    assert_ok(&waited, "waiting run");
    assert_same_as_dir(&s3, &target, &stream.mirrored);
}

/// A lease whose holder is gone: an expired one is taken over; a live one
/// of another host is respected; a service that ignores conditional writes
/// is refused.
#[test]
fn expired_leases_are_taken_over_and_conditional_writes_are_required() {
    let Some(s3) = S3Server::start(Kind::Moto, BUCKET) else {
        return;
    };
    let stream = Stream::new(&spec(&["20250615"], &[], 4096), &[]);
    let target = bucket("stable");
    let a = args(s(&stream.src), &target, &[]);
    let store = s3.direct(&target);
    let lock = RelPath::parse(LOCK_KEY).unwrap();
    let lease = |expires: u64| {
        format!(
            r#"{{"host":"elsewhere","pid":4242,"boot_id":"x","pid_namespace":"y","expires":{expires}}}"#
        )
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    block(store.write_atomic(&lock, lease(now + 3600).as_bytes())).unwrap();
    let o = s3_mirror(&s3, &a);
    assert_failed(
        &o,
        "live lease",
        &["host elsewhere, pid 4242", "lease until"],
    );
    assert!(block(store.stamp(&RelPath::parse("streams/v1/index.json").unwrap())).is_none());

    block(store.write_atomic(&lock, lease(now - 10).as_bytes())).unwrap();
    let o = s3_mirror(&s3, &a);
    assert_ok(&o, "expired lease");
    assert!(
        stderr(&o).contains("taking over the lease"),
        "{}",
        stderr(&o)
    );
    assert_same_as_dir(&s3, &target, &stream.mirrored);

    s3.proxy.rule(Rule::new(
        Some("PUT"),
        "",
        Fault::DropHeader("If-None-Match"),
    ));
    let o = s3_mirror(&s3, &a);
    assert_failed(
        &o,
        "no conditional writes",
        &["ignores conditional writes", "If-None-Match"],
    );
}
