//! Operations: `sstream sync` and `sstream status` driven by a config file,
//! against a signed sample stream served by `sstream serve`: status records,
//! hooks and their environment, Prometheus metrics read by the official
//! Python client's parsers, a multi-group job against the reference's two
//! command lines, bad configs, and the shipped systemd units and config.

mod support;

use serde_json::Value;
use simplestreams::sample::{SampleRelease, SampleSpec};
use simplestreams::status::{self, RunResult, StatusRecord, Timestamp};
use simplestreams::store::DirStore;
use sstream::config::Config;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};
use support::*;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `sstream ARGS` with an empty GNUPGHOME.
fn sstream(gnupghome: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sstream"))
        .env("GNUPGHOME", gnupghome)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sstream")
}

/// A signed sample stream served over HTTP, and a scratch directory.
struct Site {
    gpg: Gpg,
    tmp: tempfile::TempDir,
    server: Server,
}

impl Site {
    fn new(spec: &SampleSpec) -> Site {
        let gpg = Gpg::new();
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        gpg.generate(spec, &src);
        let server = Server::start(&src);
        Site { gpg, tmp, server }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Writes `body` as `sstream.toml`, after a `[defaults]` with the test
    /// keyring, and returns its path.
    fn config(&self, body: &str) -> PathBuf {
        let path = self.path("sstream.toml");
        let text = format!(
            "[defaults]\nkeyring = {:?}\n\n{body}",
            self.gpg.keyring.display().to_string()
        );
        fs::write(&path, text).unwrap();
        path
    }

    fn sstream(&self, args: &[&str]) -> Output {
        sstream(&self.gpg.verify_home, args)
    }
}

fn seed_spec() -> SampleSpec {
    SampleSpec {
        releases: vec![
            SampleRelease::new("trusty", "14.04"),
            SampleRelease::new("xenial", "16.04"),
            SampleRelease::new("jammy", "22.04"),
        ],
        ..SampleSpec::default()
    }
}

fn record(dir: &Path, job: &str) -> StatusRecord {
    status::read_blocking(&DirStore::new(dir), job)
        .unwrap()
        .unwrap_or_else(|| panic!("no status record of {job} in {}", dir.display()))
}

/// The `SSTREAM_*` variables a hook saw, from the file it wrote.
fn hook_env(path: &Path) -> BTreeMap<String, String> {
    let t = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the hook did not write {}: {e}", path.display()));
    t.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Parses a metrics file with the Python client's Prometheus text parser
/// and its (strict) OpenMetrics parser: `{parser: {sample: {job: value}}}`,
/// plus `{parser: {"#types": {family: type}}}`.
fn parse_metrics(file: &Path) -> Value {
    let script = r##"
import json, sys
from prometheus_client.parser import text_string_to_metric_families as prometheus
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
text = open(sys.argv[1]).read()
out = {}
for name, parse in [("prometheus", prometheus), ("openmetrics", openmetrics)]:
    families = {}
    for family in parse(text):
        families.setdefault("#types", {})[family.name] = family.type
        for s in family.samples:
            families.setdefault(s.name, {})[s.labels["job"]] = s.value
    out[name] = families
print(json.dumps(out))
"##;
    let out = Command::new(reference().join("python"))
        .args(["-c", script])
        .arg(file)
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "prometheus_client could not parse {}: {}\n{}",
        file.display(),
        show(&out),
        fs::read_to_string(file).unwrap_or_default()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file of a mirror and its bytes, but our own bookkeeping
/// (`.data/sstream*`: lock, caches, status records).
fn mirror_content(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    snapshot(dir)
        .into_iter()
        .filter(|(k, _)| !k.starts_with(".data/sstream"))
        .collect()
}

#[test]
fn sync_records_status_runs_hooks_and_writes_metrics() {
    let site = Site::new(&seed_spec());
    let (good, bad) = (site.path("good"), site.path("bad"));
    let (hooks, prom) = (site.path("hooks"), site.path("prom"));
    fs::create_dir_all(&hooks).unwrap();
    fs::create_dir_all(&prom).unwrap();
    // Each hook writes what it saw to hooks/<job>.<n>; good's fails while
    // hooks/fail exists.
    let hook = format!(
        "n=$(ls {h} | wc -l); env | grep ^SSTREAM_ | sort > {h}/$SSTREAM_JOB.$n; test ! -e {h}/fail",
        h = hooks.display()
    );
    let config = site.config(&format!(
        r#"
[[job]]
name = "good"
source = "{url}"
dir = "good"
filters = ["arch=amd64", "release~(trusty|xenial)"]
max = 1
on_success = '{hook}'
on_failure = 'echo unexpected > {h}/good-failed'

[[job]]
name = "bad"
source = "{url}missing/"
dir = "bad"
on_success = 'echo unexpected > {h}/bad-ok'
on_failure = '{hook}'
"#,
        url = site.server.url,
        h = hooks.display(),
    ));
    let config = config.to_str().unwrap();
    let prom_dir = prom.to_str().unwrap();

    // 1. Both jobs: one fails, the other is mirrored all the same.
    let out = site.sstream(&["sync", "--config", config, "--metrics-textfile", prom_dir]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        stdout.lines().any(|l| l.starts_with("good: ok in ")),
        "{}",
        show(&out)
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("bad: FAILED after ")),
        "{}",
        show(&out)
    );
    assert!(
        stderr.contains("sstream sync: bad: ") && stderr.contains("missing/streams/v1/index.sjson"),
        "the failure names the URL: {stderr}"
    );
    assert!(good.join("xenial/amd64/20250718/squashfs").is_file());
    let good1 = record(&good, "good");
    assert_eq!(good1.result, RunResult::Ok);
    assert!(good1.errors.is_empty());
    assert!(good1.changed);
    assert!(
        good1.files_downloaded > 0 && good1.bytes_downloaded > 0,
        "{good1:?}"
    );
    assert!(good1.bytes_on_disk >= good1.bytes_downloaded, "{good1:?}");
    assert_eq!(good1.last_success, Some(good1.finished));
    assert_eq!(good1.source, site.server.url);
    let bad1 = record(&bad, "bad");
    assert_eq!(bad1.result, RunResult::Failed);
    assert_eq!(bad1.last_success, None);
    assert!(!bad1.changed);
    assert!(
        bad1.errors
            .iter()
            .any(|e| e.contains("missing/streams/v1/index.sjson")),
        "{bad1:?}"
    );
    let env = hook_env(&hooks.join("good.0"));
    assert_eq!(env["SSTREAM_JOB"], "good");
    assert_eq!(env["SSTREAM_DIR"], good.display().to_string());
    assert_eq!(env["SSTREAM_RESULT"], "ok");
    assert_eq!(env["SSTREAM_CHANGED"], "1");
    assert_eq!(env["SSTREAM_BYTES"], good1.bytes_downloaded.to_string());
    let env = hook_env(&hooks.join("bad.1"));
    assert_eq!(env["SSTREAM_JOB"], "bad");
    assert_eq!(env["SSTREAM_RESULT"], "failed");
    assert_eq!(env["SSTREAM_CHANGED"], "0");
    assert!(!hooks.join("good-failed").exists() && !hooks.join("bad-ok").exists());

    // The metrics, read by the official client's two parsers.
    let metrics = parse_metrics(&prom.join("sstream.prom"));
    for parser in ["prometheus", "openmetrics"] {
        let m = &metrics[parser];
        let value = |name: &str, job: &str| {
            m[name][job]
                .as_f64()
                .unwrap_or_else(|| panic!("{parser}: no {name}{{job={job:?}}} in {m}"))
        };
        assert_eq!(
            m["#types"]["sstream_last_success_timestamp_seconds"],
            "gauge"
        );
        assert_eq!(value("sstream_last_run_success", "good"), 1.0);
        assert_eq!(value("sstream_last_run_success", "bad"), 0.0);
        let at = value("sstream_last_success_timestamp_seconds", "good");
        assert!((at - good1.finished.unix_seconds()).abs() < 0.01, "{at}");
        assert_eq!(value("sstream_last_success_timestamp_seconds", "bad"), 0.0);
        let took = value("sstream_last_run_duration_seconds", "good");
        assert!(
            (took - good1.duration().as_secs_f64()).abs() < 0.01,
            "{took}"
        );
        assert_eq!(
            value("sstream_last_run_downloaded_bytes", "good"),
            good1.bytes_downloaded as f64
        );
        assert_eq!(
            value("sstream_last_run_downloaded_files", "good"),
            good1.files_downloaded as f64
        );
        assert_eq!(
            value("sstream_mirror_size_bytes", "good"),
            good1.bytes_on_disk as f64
        );
        assert_eq!(value("sstream_last_run_changed", "good"), 1.0);
    }

    // `status` backs a monitoring check: bad's last run failed.
    let out = site.sstream(&["status", "--config", config]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("bad: last run failed"),
        "{}",
        show(&out)
    );

    // 2. good again: a no-op that changes nothing and says so.
    let before = mirror_content(&good);
    let out = site.sstream(&["sync", "--config", config, "good"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("good: ok in ") && text(&out.stdout).contains("nothing changed"),
        "{}",
        show(&out)
    );
    assert_eq!(
        mirror_content(&good),
        before,
        "a no-op run changed the mirror"
    );
    let good2 = record(&good, "good");
    assert!(!good2.changed && good2.files_downloaded == 0 && good2.bytes_downloaded == 0);
    assert!(good2.started > good1.finished);
    let env = hook_env(&hooks.join("good.2"));
    assert_eq!(env["SSTREAM_CHANGED"], "0");
    assert_eq!(env["SSTREAM_BYTES"], "0");
    assert_eq!(record(&bad, "bad"), bad1, "a job not named is left alone");

    // 3. A failing hook is reported and fails the command, but the run
    // stays a success in its record.
    fs::write(hooks.join("fail"), b"").unwrap();
    let out = site.sstream(&["sync", "--config", config, "good"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("sstream sync: good: on_success hook failed (exit status: 1)"),
        "{}",
        show(&out)
    );
    assert!(text(&out.stdout).contains("good: ok in "), "{}", show(&out));
    let good3 = record(&good, "good");
    assert_eq!(good3.result, RunResult::Ok);
    assert_eq!(good3.last_success, Some(good3.finished));
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// A hook that hangs is killed after `hook_timeout`, with the processes it
/// started, and fails the command; the run itself stays a success.
#[test]
fn a_hung_hook_is_killed_with_its_children_after_hook_timeout() {
    let site = Site::new(&seed_spec());
    let pids = site.path("pids");
    // The shell records its pid and that of a child it waits for.
    let hook = format!(
        "echo $$ > {p}.sh; sleep 300 & echo $! > {p}.sleep; wait",
        p = pids.display()
    );
    let config = site.config(&format!(
        r#"
[[job]]
name = "hung"
source = "{url}"
dir = "hung"
filters = ["arch=amd64", "release=trusty"]
max = 1
hook_timeout = "1s"
on_success = '{hook}'
"#,
        url = site.server.url,
    ));
    let out = site.sstream(&["sync", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("hung: on_success hook timed out after 1s and was killed: echo $$"),
        "{}",
        show(&out)
    );
    let pid_of = |which: &str| {
        let file = format!("{}.{which}", pids.display());
        fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("the hook did not write {file}: {e}"))
            .trim()
            .to_owned()
    };
    let (sh, sleep) = (pid_of("sh"), pid_of("sleep"));
    // The shell is reaped by sstream; its orphaned child by whoever
    // adopts it: give that a moment.
    assert!(ended(&sh), "the hook's shell {sh} still runs");
    let mut waited = 0;
    while !ended(&sleep) && waited < 100 {
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    assert!(ended(&sleep), "the hook's child {sleep} still runs");
    assert_eq!(record(&site.path("hung"), "hung").result, RunResult::Ok);
}

/// The config-driven job with two filter groups ends with the same tree as
/// the MAAS documentation's two command lines run by the reference.
#[test]
fn a_job_with_two_filter_groups_gives_the_reference_two_runs_tree() {
    let site = Site::new(&seed_spec());
    let url = site.server.url.clone();
    let reference_dir = site.path("reference");
    let r = reference_dir.to_str().unwrap();
    let keyring = format!("--keyring={}", site.gpg.keyring.display());
    for filters in [
        &["arch=amd64", "release~(trusty|xenial)"][..],
        &["os~(grub*|pxelinux)"][..],
    ] {
        let mut a = vec![keyring.as_str(), url.as_str(), r];
        a.extend(filters);
        a.push("--max=1");
        run_ok(&reference_mirror(), &site.gpg.verify_home, &args(&a));
    }
    let config = site.config(&format!(
        r#"
[[job]]
name = "maas"
source = "{url}"
dir = "ours"
filters = [["arch=amd64", "release~(trusty|xenial)"], ["os~(grub*|pxelinux)"]]
max = 1
"#
    ));
    let config = config.to_str().unwrap();
    let ours = site.path("ours");
    // A dry run prints each group's plan and touches nothing.
    let out = site.sstream(&["sync", "--config", config, "--dry-run"]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("# job maas: "), "{stdout}");
    assert!(
        stdout.contains("trusty/amd64/20250718/squashfs"),
        "{stdout}"
    );
    assert!(
        stdout.contains("bootloaders/pxe/i386/20231004.0/syslinux.tar.xz"),
        "{stdout}"
    );
    assert!(!ours.exists(), "a dry run wrote {}", ours.display());
    let out = site.sstream(&["sync", "--config", config]);
    assert!(out.status.success(), "{}", show(&out));
    compare_trees(&reference_dir, &ours);
    assert!(
        ours.join("bootloaders/pxe/i386/20231004.0/syslinux.tar.xz")
            .is_file()
    );
    assert!(ours.join("trusty/amd64/20250718/squashfs").is_file());
    assert!(!ours.join("jammy/amd64/20250718/squashfs").exists());
    assert!(record(&ours, "maas").is_ok());
}

/// A record of `job` in `dir` that ended `ago` ago.
fn write_record(
    dir: &Path,
    job: &str,
    result: RunResult,
    ago: Duration,
    last_ok: Option<Duration>,
) {
    let now = SystemTime::now();
    let finished = Timestamp::from(now - ago);
    let r = StatusRecord {
        job: job.into(),
        source: "http://127.0.0.1:9/".into(),
        started: Timestamp::from(now - ago - Duration::from_secs(5)),
        finished,
        result,
        errors: match result {
            RunResult::Ok => vec![],
            RunResult::Failed => {
                vec!["http://127.0.0.1:9/streams/v1/index.sjson: connection refused".into()]
            }
        },
        changed: false,
        files_downloaded: 0,
        bytes_downloaded: 0,
        files_removed: 0,
        bytes_on_disk: 3 << 20,
        last_success: last_ok.map(|d| Timestamp::from(now - d)),
        verified_with: None,
    };
    store_record(dir, &r);
}

/// Writes `record` as the mirror at `dir`'s status record of its job.
fn store_record(dir: &Path, record: &StatusRecord) {
    let runtime = simplestreams::runtime::build().unwrap();
    runtime
        .block_on(status::write(&DirStore::new(dir), record))
        .unwrap();
}

#[test]
fn status_flags_failed_stale_and_never_run_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut body = String::new();
    for job in ["fresh", "stale", "failed", "never"] {
        body.push_str(&format!(
            "[[job]]\nname = \"{job}\"\nsource = \"http://127.0.0.1:9/\"\ndir = \"{job}\"\n\n"
        ));
    }
    let config = tmp.path().join("sstream.toml");
    fs::write(&config, body).unwrap();
    let config = config.to_str().unwrap();
    let (hour, day) = (Duration::from_secs(3600), Duration::from_secs(86400));
    write_record(
        &tmp.path().join("fresh"),
        "fresh",
        RunResult::Ok,
        hour,
        Some(hour),
    );
    write_record(
        &tmp.path().join("stale"),
        "stale",
        RunResult::Ok,
        3 * day,
        Some(3 * day),
    );
    write_record(
        &tmp.path().join("failed"),
        "failed",
        RunResult::Failed,
        hour,
        Some(day),
    );
    let home = tmp.path();

    let out = sstream(home, &["status", "--config", config]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = text(&out.stdout);
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "JOB", "STATUS", "LAST", "RUN", "LAST", "SUCCESS", "AGE", "SIZE"
        ]
    );
    let row = |job: &str| {
        rows.iter()
            .find(|r| r[0] == job)
            .unwrap_or_else(|| panic!("no row for {job}:\n{stdout}"))
            .clone()
    };
    assert_eq!(row("fresh")[1], "ok");
    assert_eq!(row("fresh")[4], "1h", "age of the last success");
    assert_eq!(row("fresh")[5..], ["3.0", "MiB"]);
    assert_eq!(row("stale")[1], "stale");
    assert_eq!(row("stale")[4], "3days");
    assert_eq!(row("failed")[1], "failed");
    assert_eq!(row("failed")[4], "1day");
    assert_eq!(row("never")[1..], ["never", "-", "-", "-", "-"]);
    let stderr = text(&out.stderr);
    for want in [
        "sstream status: stale: last success 3days ago, older than --max-age 2days",
        "sstream status: failed: last run failed at ",
        "connection refused",
        "sstream status: never: never run",
    ] {
        assert!(stderr.contains(want), "{want:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("fresh"), "{stderr}");

    // The same as JSON, for scripts.
    let out = sstream(home, &["status", "--config", config, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["healthy"], false);
    assert_eq!(report["max_age_seconds"], 2 * 86400);
    let health: BTreeMap<&str, &str> = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["job"].as_str().unwrap(), j["health"].as_str().unwrap()))
        .collect();
    assert_eq!(
        health,
        BTreeMap::from([
            ("failed", "failed"),
            ("fresh", "ok"),
            ("never", "never"),
            ("stale", "stale")
        ])
    );
    assert_eq!(report["jobs"][0]["record"]["bytes_on_disk"], 3 << 20);
    assert_eq!(report["jobs"][0]["last_success_age_seconds"], 3600);

    // Only the healthy jobs, or a longer --max-age: exit 0.
    let out = sstream(home, &["status", "--config", config, "fresh"]);
    assert!(out.status.success(), "{}", show(&out));
    let out = sstream(
        home,
        &[
            "status",
            "--config",
            config,
            "--max-age",
            "4d",
            "fresh",
            "stale",
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    let out = sstream(
        home,
        &[
            "status",
            "--config",
            config,
            "--max-age",
            "36h",
            "fresh",
            "stale",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
}

/// A status record is the mirror's, not the config's: one forged with
/// escape sequences in its errors prints them escaped, and one whose last
/// success is in the future is not healthy.
#[test]
fn status_escapes_a_forged_record_and_flags_a_success_in_the_future() {
    let tmp = tempfile::tempdir().unwrap();
    let mut body = String::new();
    for job in ["forged", "future"] {
        body.push_str(&format!(
            "[[job]]\nname = \"{job}\"\nsource = \"http://127.0.0.1:9/\"\ndir = \"{job}\"\n\n"
        ));
    }
    let config = tmp.path().join("sstream.toml");
    fs::write(&config, body).unwrap();
    let config = config.to_str().unwrap();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let forged = StatusRecord {
        job: "forged".into(),
        source: "http://127.0.0.1:9/".into(),
        started: Timestamp::from(now - hour),
        finished: Timestamp::from(now - hour),
        result: RunResult::Failed,
        errors: vec!["\u{1b}]0;owned\u{7}\u{1b}[2J\rall fine\nreally".into()],
        changed: false,
        files_downloaded: 0,
        bytes_downloaded: 0,
        files_removed: 0,
        bytes_on_disk: 0,
        last_success: Some(Timestamp::from(now - hour)),
        verified_with: None,
    };
    store_record(&tmp.path().join("forged"), &forged);
    let future = StatusRecord {
        job: "future".into(),
        result: RunResult::Ok,
        errors: vec![],
        last_success: Some(Timestamp::from(now + 24 * hour)),
        ..forged.clone()
    };
    store_record(&tmp.path().join("future"), &future);

    let out = sstream(tmp.path(), &["status", "--config", config]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    for shown in [&stdout, &stderr] {
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "raw control characters: {shown:?}"
        );
    }
    assert!(
        stderr.contains("sstream status: forged: last run failed at ")
            && stderr.contains("\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\rall fine\\nreally"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sstream status: future: last success at ")
            && stderr.contains("is in the future"),
        "{stderr}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("future "))
        .unwrap_or_else(|| panic!("no row for future:\n{stdout}"));
    assert!(!row.contains(" ok "), "{row}");

    let out = sstream(
        tmp.path(),
        &["status", "--config", config, "--json", "future"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["healthy"], false);
    assert_eq!(report["jobs"][0]["health"], "stale");
}

#[test]
fn bad_configs_are_one_line_errors_naming_file_line_and_key_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("sstream.toml");
    let f = file.display().to_string();
    let job = |name: &str, source: &str, dir: &str| {
        format!("[[job]]\nname = \"{name}\"\nsource = \"{source}\"\ndir = \"{dir}\"\n")
    };
    let a = job("a", "http://127.0.0.1:9/s/", "/m/a");
    let cases = [
        (
            format!("{a}kep = true\n"),
            format!("{f}:5: unknown key \"kep\""),
        ),
        (
            format!("{a}max = \"1\"\n"),
            format!("{f}:5: max: invalid type: string \"1\""),
        ),
        (
            format!("{a}{a}"),
            format!("{f}:6: name: duplicate job name \"a\" (first at line 2)"),
        ),
        (
            format!("{a}{}", job("b", "http://127.0.0.1:9/other/", "/m/a/")),
            format!("{f}:8: dir: /m/a is also the dir of job \"a\" (line 4)"),
        ),
        (
            format!("{a}filters = [[\"arch=amd64\"], [\"release~(xenial\"]]\n"),
            format!("{f}:5: filters: invalid filter \"release~(xenial\": bad regular expression"),
        ),
        (
            "[defaults]\nmax = 1\n".to_owned(),
            format!("{f}: no [[job]] table"),
        ),
    ];
    for (body, want) in cases {
        fs::write(&file, &body).unwrap();
        for command in ["sync", "status"] {
            let out = sstream(tmp.path(), &[command, "--config", &f]);
            let stderr = text(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} on\n{body}\n{}",
                show(&out)
            );
            assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
            let want = format!("sstream {command}: error: {want}");
            assert!(
                stderr.starts_with(&want),
                "{body}\nwanted {want:?}\ngot    {stderr:?}"
            );
            assert!(out.stdout.is_empty(), "{}", show(&out));
        }
    }
    // A config that cannot be read, and a job it does not define.
    let missing = tmp.path().join("nope.toml");
    let out = sstream(tmp.path(), &["sync", "--config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains(&format!(
        "{}: cannot read the configuration",
        missing.display()
    )));
    fs::write(&file, &a).unwrap();
    let out = sstream(tmp.path(), &["sync", "--config", &f, "b"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("no job named \"b\" (jobs: a)"),
        "{}",
        show(&out)
    );
    assert!(!Path::new("/m/a").exists());
}

/// The config the Debian package installs as /etc/sstream/sstream.toml.
#[test]
fn the_shipped_config_parses() {
    let file = repo().join("dist/sstream.toml");
    let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let [job] = &config.jobs[..] else {
        panic!("one job: {:?}", config.jobs)
    };
    assert_eq!(job.name, "maas-stable");
    assert_eq!(job.source, "https://images.maas.io/ephemeral-v3/stable/");
    assert_eq!(
        job.dir,
        Path::new("/var/www/html/maas/images/ephemeral-v3/stable")
    );
    assert_eq!(
        job.options.keyring.as_deref(),
        Some(Path::new(
            "/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg"
        ))
    );
    assert_eq!(
        job.filters.to_string(),
        r#"["arch=amd64", "release~(trusty|xenial)"] | ["os~(grub*|pxelinux)"]"#
    );
    assert_eq!(job.options.max, Some(1));
    // Every commented-out key is a real key: uncommented, the file still parses.
    let text = fs::read_to_string(&file).unwrap();
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
            Some(table @ "[[view]]") => table,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(uncommented, text);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("sstream.toml");
    fs::write(&copy, &uncommented).unwrap();
    let all = Config::load(&copy).unwrap_or_else(|e| panic!("uncommented: {e}"));
    let job = &all.jobs[0];
    assert!(job.on_success.is_some() && job.on_failure.is_some());
    assert!(job.options.sign_key.is_some() && job.options.limit_rate.is_some());
    assert!(job.options.delete_delay.is_some() && job.options.min_free.is_some());
    assert_eq!(job.options.mirrors.len(), 1);
    let names: Vec<&str> = all.views.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["staging", "production"]);
    assert!(config.views.is_empty(), "no view unless uncommented");
}

/// The shipped units, as `systemd-analyze verify` sees them (with the
/// binary path pointed at the one under test), and what they promise.
#[test]
fn systemd_units_verify() {
    let units = repo().join("dist/systemd");
    let names = [
        "sstream-sync.service",
        "sstream-sync.timer",
        "sstream-serve.service",
    ];
    let read = |n: &str| fs::read_to_string(units.join(n)).unwrap();
    let lines = |n: &str| -> Vec<String> { read(n).lines().map(str::to_owned).collect() };
    let has = |n: &str, line: &str| lines(n).iter().any(|l| l == line);
    for line in [
        "Type=oneshot",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
    ] {
        assert!(
            has("sstream-sync.service", line),
            "sstream-sync.service lacks {line}"
        );
    }
    for line in [
        "OnCalendar=hourly",
        "Persistent=true",
        "WantedBy=timers.target",
    ] {
        assert!(
            has("sstream-sync.timer", line),
            "sstream-sync.timer lacks {line}"
        );
    }
    assert!(
        lines("sstream-sync.timer")
            .iter()
            .any(|l| l.starts_with("RandomizedDelaySec="))
    );
    // The shipped config's job directories are writable in the sandbox.
    let writable: Vec<PathBuf> = lines("sstream-sync.service")
        .iter()
        .filter_map(|l| l.strip_prefix("ReadWritePaths="))
        .map(|p| PathBuf::from(p.trim_start_matches('-')))
        .collect();
    let config = Config::load(&repo().join("dist/sstream.toml")).unwrap();
    for job in &config.jobs {
        assert!(
            writable.iter().any(|w| job.dir.starts_with(w)),
            "{} is not under the ReadWritePaths {writable:?}",
            job.dir.display()
        );
    }

    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!(
                "skipping systemd-analyze verify: systemd-analyze cannot run here ({other:?})"
            );
            return;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_sstream");
    let mut paths = Vec::new();
    for n in names {
        let unit = read(n);
        assert!(
            n.ends_with(".timer") || unit.contains("ExecStart=/usr/bin/sstream "),
            "{n}"
        );
        let path = tmp.path().join(n);
        fs::write(
            &path,
            unit.replace("/usr/bin/sstream ", &format!("{binary} ")),
        )
        .unwrap();
        paths.push(path);
    }
    // The man pages of Documentation= are installed by the package (whose
    // test verifies the installed units with them), not here.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .unwrap();
    // verify exits 0 on unknown keys and bad values ("..., ignoring"): it
    // must say nothing at all.
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        show(&out)
    );
    // And the sandbox is real: systemd's own exposure score stays low.
    for n in ["sstream-sync.service", "sstream-serve.service"] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=30", "--no-pager"])
            .arg(tmp.path().join(n))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemd-analyze security {n}: {}",
            show(&out)
        );
    }
}

/// `sstream serve --metrics` serves every served mirror's metrics at
/// `/metrics` (read by the official client's parsers), and the landing
/// page shows each job's last sync and result.
#[test]
fn serve_shows_the_last_sync_and_serves_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let mirror = tmp.path().join("mirror");
    fs::create_dir_all(mirror.join("streams/v1")).unwrap();
    fs::write(
        mirror.join("streams/v1/index.json"),
        br#"{"format": "index:1.0", "index": {}}"#,
    )
    .unwrap();
    write_record(
        &mirror,
        "stable",
        RunResult::Ok,
        Duration::from_secs(60),
        Some(Duration::from_secs(60)),
    );
    write_record(
        &mirror,
        "daily",
        RunResult::Failed,
        Duration::from_secs(30),
        None,
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_sstream"))
        .arg("serve")
        .arg(&mirror)
        .args(["--listen", "127.0.0.1:0", "--metrics"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let url = line.trim().rsplit(" at ").next().unwrap().to_owned();
    let get = |path: &str| {
        let o = Command::new("curl")
            .args(["-sf", &format!("{url}{path}")])
            .output()
            .unwrap();
        assert!(o.status.success(), "GET {path}: {}", show(&o));
        text(&o.stdout)
    };
    let page = get("");
    assert!(
        page.contains("Last sync (stable)") && page.contains("<strong>ok</strong>"),
        "{page}"
    );
    assert!(
        page.contains("Last sync (daily)") && page.contains("<strong>FAILED</strong>"),
        "{page}"
    );
    assert!(page.contains("connection refused"), "{page}");
    assert!(page.contains("<a href=\"/metrics\">/metrics</a>"), "{page}");
    let file = tmp.path().join("metrics.txt");
    fs::write(&file, get("metrics")).unwrap();
    let metrics = parse_metrics(&file);
    for parser in ["prometheus", "openmetrics"] {
        let m = &metrics[parser];
        assert_eq!(m["sstream_last_run_success"]["stable"], 1.0, "{m}");
        assert_eq!(m["sstream_last_run_success"]["daily"], 0.0, "{m}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The fingerprints of the keys in `keyring`, as gpg lists them.
fn gpg_fingerprints(home: &Path, keyring: &Path) -> Vec<String> {
    let out = Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--with-colons", "--show-keys"])
        .arg(keyring)
        .output()
        .expect("run gpg");
    assert!(out.status.success(), "{}", show(&out));
    let mut fprs = Vec::new();
    let mut primary = false;
    for line in text(&out.stdout).lines() {
        let fields: Vec<&str> = line.split(':').collect();
        match fields[0] {
            "pub" => primary = true,
            "sub" => primary = false,
            "fpr" if primary => {
                fprs.push(fields[9].to_owned());
                primary = false;
            }
            _ => {}
        }
    }
    fprs
}

#[test]
fn hand_run_mirrors_leave_status_records_that_status_lists_by_directory() {
    let site = Site::new(&seed_spec());
    let keyring = site.gpg.keyring.to_str().unwrap().to_owned();
    let url = site.server.url.clone();
    let fingerprints = gpg_fingerprints(&site.gpg.verify_home, &site.gpg.keyring);
    assert_eq!(fingerprints.len(), 1, "{fingerprints:?}");

    // `sstream mirror` into a directory: a record named after it.
    let hand = site.path("maas-hand");
    let out = site.sstream(&[
        "mirror",
        "--keyring",
        &keyring,
        "--max",
        "1",
        &url,
        hand.to_str().unwrap(),
        "arch=amd64",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let r = record(&hand, "maas-hand");
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.source, url);
    assert_eq!(
        r.verified_with,
        Some(status::Verified::Keyring(fingerprints))
    );
    assert!(r.files_downloaded > 0 && r.bytes_on_disk > 0, "{r:?}");
    assert!(r.last_success.is_some());

    // The drop-in, unsigned and unverified, under a name of its own.
    let out = Command::new(env!("CARGO_BIN_EXE_sstream-mirror"))
        .env("GNUPGHOME", &site.gpg.verify_home)
        .args(["--no-verify", "--max=1", "--job-name", "cron-job"])
        .arg(&url)
        .arg(&hand)
        .arg("arch=amd64")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let cron = record(&hand, "cron-job");
    assert!(cron.is_ok(), "{cron:?}");
    assert_eq!(cron.verified_with, Some(status::Verified::Unverified));

    // A failing hand run is recorded as failed; its last success is kept.
    let out = site.sstream(&[
        "mirror",
        "--keyring",
        &keyring,
        &format!("{url}missing/"),
        hand.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let failed = record(&hand, "maas-hand");
    assert_eq!(failed.result, RunResult::Failed);
    assert!(
        failed
            .errors
            .iter()
            .any(|e| e.contains("missing/streams/v1/")),
        "{failed:?}"
    );
    assert_eq!(failed.last_success, r.last_success);

    // A bad --job-name is a usage error.
    let out = site.sstream(&["mirror", "--job-name", "../x", &url, hand.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("job name"), "{}", show(&out));

    // `sstream status DIR` lists every record in the mirror, without a config.
    let out = site.sstream(&["status", "--json", hand.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs: Vec<(&str, &str)> = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["job"].as_str().unwrap(), j["health"].as_str().unwrap()))
        .collect();
    assert_eq!(jobs, [("cron-job", "ok"), ("maas-hand", "failed")]);
    let out = site.sstream(&["status", site.path("nowhere/").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("not a directory"),
        "{}",
        show(&out)
    );
    let empty = site.path("empty");
    fs::create_dir_all(&empty).unwrap();
    let out = site.sstream(&["status", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("never run"), "{}", show(&out));
}
