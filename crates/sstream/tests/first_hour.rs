//! The operator's first hour: the built-in trust anchor, the hints a first
//! mistake gets, the plan in human units and as JSON, and the demo's last
//! word. Real processes, real GnuPG, our HTTP server on 127.0.0.1.

mod support;

use serde_json::Value;
use simplestreams::sample::{SampleRelease, SampleSpec, SampleStream};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::*;

/// The primary keys of the Ubuntu cloud-image keyring.
const UEC_KEY: &str = "D2EB44626FDDC30B513D5BB71A5D6C4C7DB87C81";
const BUILDER_KEY: &str = "4A3CE3CD565D7EB5C810E2B97FF3F408476CF100";

/// The keyring MAAS and the reference use when it is installed.
const SYSTEM_KEYRING: &str = "/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `sstream ARGS` with an empty GNUPGHOME.
fn sstream(gnupghome: &Path, args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_sstream"), gnupghome, args)
}

fn run(exe: &str, gnupghome: &Path, args: &[&str]) -> Output {
    Command::new(exe)
        .env("GNUPGHOME", gnupghome)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sstream")
}

/// A signed sample stream (signed by a throwaway key) served over HTTP.
struct Site {
    gpg: Gpg,
    tmp: tempfile::TempDir,
    server: Server,
    stream: SampleStream,
}

impl Site {
    fn new() -> Site {
        let gpg = Gpg::new();
        let tmp = tempfile::tempdir().unwrap();
        let spec = SampleSpec {
            releases: vec![
                SampleRelease::new("trusty", "14.04"),
                SampleRelease::new("xenial", "16.04"),
            ],
            ..SampleSpec::default()
        };
        let stream = gpg.generate(&spec, &tmp.path().join("src"));
        let server = Server::start(&tmp.path().join("src"));
        Site {
            gpg,
            tmp,
            server,
            stream,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn keyring_opt(&self) -> String {
        format!("--keyring={}", self.gpg.keyring.display())
    }

    fn sstream(&self, args: &[&str]) -> Output {
        sstream(&self.gpg.verify_home, args)
    }
}

fn stderr_lines(out: &Output) -> Vec<String> {
    text(&out.stderr).lines().map(str::to_owned).collect()
}

/// A usage error: exit 2, one line on stderr containing every needle.
fn assert_one_line_usage_error(out: &Output, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "{}", show(out));
    let lines = stderr_lines(out);
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} in {:?}", lines[0]);
    }
}

/// `sstream key show-default` names both keys of the built-in keyring and
/// exports it in each form; real `gpgv` verifies a real Ubuntu signature
/// with the binary export, and real `gpg` reads the armored one.
#[test]
fn show_default_lists_and_exports_the_ubuntu_cloud_image_keyring() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("gnupg");
    fs::create_dir(&home).unwrap();
    let listed = sstream(&home, &["key", "show-default"]);
    assert!(listed.status.success(), "{}", show(&listed));
    let listing = text(&listed.stdout);
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        vec![
            format!("{UEC_KEY}  UEC Image Automatic Signing Key <cdimage@ubuntu.com>"),
            format!(
                "{BUILDER_KEY}  Ubuntu Cloud Image Builder (Canonical Internal Cloud Image \
                 Builder) <ubuntu-cloudbuilder-noreply@canonical.com>"
            ),
        ]
    );

    let binary = tmp.path().join("ubuntu.gpg");
    let out = sstream(
        &home,
        &["key", "show-default", "--output", &binary.to_string_lossy()],
    );
    assert!(out.status.success(), "{}", show(&out));
    let keys = repo().join("tests/fixtures/keys");
    let gpgv = Command::new("gpgv")
        .env("GNUPGHOME", &home)
        .arg("--keyring")
        .arg(&binary)
        .arg(keys.join("ubuntu-noble-SHA256SUMS.gpg"))
        .arg(keys.join("ubuntu-noble-SHA256SUMS"))
        .output()
        .expect("run gpgv");
    assert!(gpgv.status.success(), "gpgv: {}", show(&gpgv));
    assert!(
        text(&gpgv.stderr).contains("Good signature"),
        "{}",
        show(&gpgv)
    );

    let armored = tmp.path().join("ubuntu.asc");
    let out = sstream(
        &home,
        &[
            "key",
            "show-default",
            "--armor",
            "-o",
            &armored.to_string_lossy(),
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(text(&fs::read(&armored).unwrap()).starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    let shown = Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--with-colons", "--show-keys"])
        .arg(&armored)
        .output()
        .expect("run gpg");
    let fingerprints: Vec<String> = text(&shown.stdout)
        .lines()
        .filter(|l| l.starts_with("fpr:"))
        .filter_map(|l| l.split(':').nth(9).map(str::to_owned))
        .collect();
    assert_eq!(fingerprints, vec![UEC_KEY, BUILDER_KEY], "{}", show(&shown));

    // --base64 to standard output: MAAS's keyring_data, the binary export.
    let out = sstream(&home, &["key", "show-default", "--base64", "-o", "-"]);
    assert!(out.status.success(), "{}", show(&out));
    let line = text(&out.stdout);
    assert_eq!(line.lines().count(), 1, "{line}");
    let decoded = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(line.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(decoded.stdout, fs::read(&binary).unwrap());
}

/// Without --keyring and without the system keyring, a signed stream is
/// checked against the built-in key (said once with `-v`): a stream signed
/// by another key is refused, and the new directory the run made is gone
/// again. An explicit --keyring wins.
#[test]
fn a_signed_stream_without_keyring_is_checked_against_the_built_in_key() {
    if Path::new(SYSTEM_KEYRING).exists() {
        eprintln!("{SYSTEM_KEYRING} is installed: it, not the built-in key, is the default");
        return;
    }
    let site = Site::new();
    let out_dir = site.path("mirror");
    let out = out_dir.to_string_lossy();
    let refused = site.sstream(&["mirror", "-v", &site.server.url, &out, "--max=1"]);
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
    let stderr = text(&refused.stderr);
    let announced = format!("verifying with the built-in Ubuntu cloud image key {UEC_KEY}");
    assert_eq!(stderr.matches(&announced).count(), 1, "{stderr}");
    assert!(stderr.contains("index.sjson"), "{stderr}");
    assert!(!stderr.contains("no keyring was given"), "{stderr}");
    assert!(
        !out_dir.exists(),
        "the failed run left {}",
        out_dir.display()
    );

    let k = site.keyring_opt();
    let ok = site.sstream(&["mirror", "-v", &k, &site.server.url, &out, "--max=1"]);
    assert!(ok.status.success(), "{}", show(&ok));
    assert!(!text(&ok.stderr).contains("built-in"), "{}", show(&ok));
    assert!(out_dir.join("streams/v1/index.sjson").is_file());
}

/// The first mistakes each get one line saying what to do, and a failed
/// run leaves no empty mirror directory behind it.
#[test]
fn first_mistakes_get_one_line_hints() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("gnupg");
    fs::create_dir(&home).unwrap();
    let at = |name: &str| tmp.path().join(name).to_string_lossy().into_owned();

    let typo = sstream(
        &home,
        &["mirror", "--progres", "http://127.0.0.1:1/", &at("m")],
    );
    assert_eq!(typo.status.code(), Some(2), "{}", show(&typo));
    assert!(
        text(&typo.stderr).contains("a similar argument exists: '--progress'"),
        "{}",
        show(&typo)
    );

    let file = at("a-file");
    fs::write(&file, "not a mirror").unwrap();
    let out = sstream(
        &home,
        &["mirror", "--no-verify", "http://127.0.0.1:1/", &file],
    );
    assert_one_line_usage_error(&out, &[&file, "not a directory (the mirror directory)"]);
    assert_eq!(fs::read_to_string(&file).unwrap(), "not a mirror");

    for (source, meant) in [
        ("127.0.0.1:19651", "did you mean http://127.0.0.1:19651?"),
        (
            "images.maas.io/ephemeral-v3/stable",
            "did you mean https://images.maas.io/ephemeral-v3/stable?",
        ),
    ] {
        let out = sstream(&home, &["mirror", source, &at("new")]);
        assert_one_line_usage_error(&out, &[source, meant]);
        assert!(!tmp.path().join("new").exists());
    }

    let missing = at("nowhere.toml");
    let out = sstream(&home, &["sync", "--config", &missing]);
    assert_one_line_usage_error(
        &out,
        &[
            &missing,
            "--config",
            "dist/sstream.toml",
            "/etc/sstream/sstream.toml",
        ],
    );

    // Connection refused: a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let new = at("refused");
    let out = sstream(&home, &["mirror", "--retries=0", &url, &new]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains(&url), "{}", show(&out));
    assert!(!Path::new(&new).exists(), "the failed run left {new}");
    // A directory that was there keeps what it held.
    let kept = tmp.path().join("kept");
    fs::create_dir(&kept).unwrap();
    fs::write(kept.join("notes"), "mine").unwrap();
    let out = sstream(
        &home,
        &["mirror", "--retries=0", &url, &kept.to_string_lossy()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(fs::read_to_string(kept.join("notes")).unwrap(), "mine");
}

/// The actions of a `--dry-run --json` plan by kind: path -> bytes.
fn actions(plan: &Value, kind: &str) -> Vec<(String, u64)> {
    plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["kind"] == kind)
        .map(|a| {
            (
                a["path"].as_str().expect("path").to_owned(),
                a["bytes"].as_u64().expect("bytes"),
            )
        })
        .collect()
}

/// `sstream mirror --dry-run` shows sizes in human units, the drop-in keeps
/// the reference's whole Mb, and `--dry-run --json` is one document whose
/// fetches are exactly what the run then downloads; `sync --dry-run
/// --json` gives every job's plan.
#[test]
fn dry_run_plans_in_human_units_and_as_json() {
    let site = Site::new();
    let k = site.keyring_opt();
    let out_dir = site.path("mirror");
    let out = out_dir.to_string_lossy().into_owned();
    let base = [
        k.as_str(),
        site.server.url.as_str(),
        out.as_str(),
        "--max=1",
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut a = vec!["mirror"];
        a.extend(base);
        a.extend(extra);
        a
    };

    let human = site.sstream(&with(&["--dry-run"]));
    assert!(human.status.success(), "{}", show(&human));
    let lines = text(&human.stdout);
    let plus: Vec<&str> = lines.lines().filter(|l| l.starts_with("+ ")).collect();
    assert!(!plus.is_empty(), "{lines}");
    assert!(
        plus.iter()
            .all(|l| l.ends_with(" B") || l.ends_with(" KiB") || l.ends_with(" MiB")),
        "{lines}"
    );
    assert!(!lines.contains(" Mb"), "{lines}");
    assert!(lines.lines().any(|l| l.starts_with("change: +")), "{lines}");

    let drop_in = run(
        env!("CARGO_BIN_EXE_sstream-mirror"),
        &site.gpg.verify_home,
        &[&k, &site.server.url, &out, "--max=1", "--dry-run"],
    );
    assert!(drop_in.status.success(), "{}", show(&drop_in));
    assert!(
        text(&drop_in.stdout)
            .lines()
            .any(|l| l.ends_with(" Mb change"))
    );

    let json = site.sstream(&with(&["--dry-run", "--json"]));
    assert!(json.status.success(), "{}", show(&json));
    let plan: Value = serde_json::from_slice(&json.stdout).expect("one JSON document");
    let fetches = actions(&plan, "fetch");
    assert!(!fetches.is_empty(), "{plan}");
    let first = &plan["actions"][0];
    for key in ["content_id", "product", "version", "item"] {
        assert!(first[key].is_string(), "{key} in {first}");
    }
    let total: u64 = fetches.iter().map(|(_, b)| b).sum();
    assert_eq!(plan["totals"]["fetch"]["bytes"], total);
    assert_eq!(plan["totals"]["fetch"]["files"], fetches.len());
    assert_eq!(plan["space"]["need"], total, "{plan}");
    assert_eq!(plan["space"]["fits"], true);
    assert!(!out_dir.exists(), "a dry run wrote {}", out_dir.display());
    for (path, bytes) in &fetches {
        assert_eq!(site.stream.payloads.get(path), Some(bytes), "{path}");
    }

    let mirrored = site.sstream(&with(&[]));
    assert!(mirrored.status.success(), "{}", show(&mirrored));
    let held: BTreeSet<String> = files(&out_dir)
        .into_iter()
        .filter(|f| site.stream.payloads.contains_key(f))
        .collect();
    let planned: BTreeSet<String> = fetches.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(held, planned);

    // Up to date: nothing to fetch; --verify-existing checks each file.
    let again = site.sstream(&with(&["--dry-run", "--json", "--verify-existing"]));
    assert!(again.status.success(), "{}", show(&again));
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert!(actions(&again, "fetch").is_empty(), "{again}");
    let verified: BTreeSet<String> = actions(&again, "verify")
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(verified, planned);

    let config = site.path("sstream.toml");
    fs::write(
        &config,
        format!(
            "[[job]]\nname = \"one\"\nsource = {:?}\ndir = \"fresh\"\nkeyring = {:?}\nmax = 1\n",
            site.server.url,
            site.gpg.keyring.display().to_string()
        ),
    )
    .unwrap();
    let sync = site.sstream(&[
        "sync",
        "--config",
        &config.to_string_lossy(),
        "--dry-run",
        "--json",
    ]);
    assert!(sync.status.success(), "{}", show(&sync));
    let doc: Value = serde_json::from_slice(&sync.stdout).expect("one JSON document");
    let jobs = doc["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1, "{doc}");
    assert_eq!(jobs[0]["name"], "one");
    assert_eq!(actions(&jobs[0]["plan"], "fetch"), fetches);
    assert!(!site.path("fresh").exists());
}

/// The demo ends with the command that serves its mirror, and that
/// command serves it.
#[test]
fn demo_ends_with_the_serve_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_sstream"))
        .args(["demo", "--dir", &dir.to_string_lossy()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("only 304s"), "{stdout}");
    assert!(!stdout.contains(" Mb"), "{stdout}");
    let last = stdout.lines().last().unwrap_or_default().trim();
    let mirror = dir.join("mirror").canonicalize().unwrap();
    let words: Vec<&str> = last.split(' ').collect();
    assert_eq!(words.len(), 5, "{last}");
    assert_eq!(
        words[1..],
        [
            "serve",
            &mirror.to_string_lossy(),
            "--listen",
            "0.0.0.0:8080"
        ]
    );
    let program = Path::new(words[0]);
    assert_eq!(
        program.canonicalize().unwrap(),
        Path::new(env!("CARGO_BIN_EXE_sstream"))
            .canonicalize()
            .unwrap()
    );
    // The command (the same program, on a loopback port) serves the mirror:
    // a client verifies it over HTTP with the demo's keyring.
    let served = Server::start(&mirror);
    let k = format!("--keyring={}", dir.join("keyring.gpg").display());
    let home = tmp.path().join("gnupg");
    fs::create_dir(&home).unwrap();
    let verified = sstream(&home, &["verify", &k, &served.url]);
    assert!(verified.status.success(), "{}", show(&verified));
}
