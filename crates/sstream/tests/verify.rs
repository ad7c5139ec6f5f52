//! `sstream verify`: mirrors made by the real `sstream-mirror` from a
//! generated sample stream, damaged in known ways, audited from the
//! directory and over HTTP (`sstream serve`), checking exit codes and output.

mod support;

use serde_json::Value;
use simplestreams::sample::{self, SampleSpec, SampleStream};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::{Gpg, Server};

/// A mirror of the amd64 part of an unsigned sample stream.
struct Mirror {
    _tmp: tempfile::TempDir,
    out: PathBuf,
    sample: SampleStream,
}

impl Mirror {
    fn path(&self) -> String {
        self.out.to_string_lossy().into_owned()
    }

    /// A mirrored item of a newest version (an amd64 squashfs), relative to
    /// the root.
    fn item(&self) -> String {
        let rel = self
            .sample
            .payloads
            .keys()
            .filter(|p| p.contains("/amd64/") && p.ends_with("/squashfs"))
            .max()
            .expect("an amd64 squashfs")
            .clone();
        assert!(self.out.join(&rel).is_file(), "{rel} was not mirrored");
        rel
    }
}

fn mirror_tool() -> &'static str {
    env!("CARGO_BIN_EXE_sstream-mirror")
}

fn run_tool(tool: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"))
}

fn mirror_ok(args: &[&str]) {
    let out = run_tool(mirror_tool(), args);
    assert!(
        out.status.success(),
        "sstream-mirror {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unsigned_mirror() -> Mirror {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let out = tmp.path().join("mirror");
    let sample = sample::generate(&SampleSpec::default(), &src, None).unwrap();
    mirror_ok(&[
        "--path",
        "streams/v1/index.json",
        "--no-verify",
        &src.to_string_lossy(),
        &out.to_string_lossy(),
        "arch=amd64",
    ]);
    Mirror {
        _tmp: tmp,
        out,
        sample,
    }
}

/// `sstream verify ARGS`: exit code, stdout, stderr.
fn verify(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sstream"))
        .arg("verify")
        .args(args)
        // An empty GNUPGHOME: nothing of the user's is used.
        .env("GNUPGHOME", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .expect("run sstream verify");
    (
        out.status.code().expect("an exit code, not a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Verifies the unsigned mirror at `target`.
fn verify_unsigned(target: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["--path", "streams/v1/index.json", "--no-verify"];
    args.extend_from_slice(extra);
    args.push(target);
    verify(&args)
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The problems of a `--json` report as (kind, path_or_url).
fn problems(v: &Value) -> Vec<(String, String)> {
    v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["path_or_url"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn flip_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    bytes[0] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

#[test]
fn clean_mirror_passes_and_json_has_the_facts() {
    let m = unsigned_mirror();
    let (code, stdout, stderr) = verify_unsigned(&m.path(), &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let summary = stdout.lines().last().unwrap();
    assert!(summary.starts_with("OK: "), "{stdout}");
    assert!(summary.contains("0 error(s), 0 warning(s)"), "{stdout}");

    let (code, stdout, _) = verify_unsigned(&m.path(), &["--json", "--full"]);
    assert_eq!(code, 0, "{stdout}");
    let v = json(&stdout);
    assert_eq!(v["ok"], true);
    assert_eq!(v["exit_code"], 0);
    // The index and two products files.
    assert_eq!(v["documents"], 3);
    let mirrored: Vec<(&String, &u64)> = m
        .sample
        .payloads
        .iter()
        .filter(|(p, _)| m.out.join(p).is_file())
        .collect();
    assert!(
        mirrored.len() < m.sample.payloads.len(),
        "arm64 was filtered"
    );
    assert_eq!(v["items_checked"], mirrored.len() as u64);
    let bytes: u64 = mirrored.iter().map(|(_, s)| **s).sum();
    assert_eq!(v["bytes_checked"], bytes);
    assert_eq!(problems(&v), []);
}

#[test]
fn missing_and_truncated_items_fail() {
    let m = unsigned_mirror();
    let item = m.item();
    let file = m.out.join(&item);
    let bytes = fs::read(&file).unwrap();
    fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let (code, stdout, _) = verify_unsigned(&m.path(), &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("error: size: ") && l.contains(&item)),
        "{stdout}"
    );
    assert!(stdout.lines().last().unwrap().starts_with("FAILED: "));

    fs::remove_file(&file).unwrap();
    let (code, stdout, _) = verify_unsigned(&m.path(), &["--json"]);
    assert_eq!(code, 1, "{stdout}");
    let v = json(&stdout);
    assert_eq!(v["ok"], false);
    assert_eq!(
        problems(&v),
        [("missing".to_owned(), file.display().to_string())]
    );
}

#[test]
fn flipped_byte_is_found_only_with_full() {
    let m = unsigned_mirror();
    let item = m.item();
    flip_byte(&m.out.join(&item));
    let (code, stdout, _) = verify_unsigned(&m.path(), &[]);
    assert_eq!(code, 0, "same size: not noticed without --full\n{stdout}");
    let (code, stdout, _) = verify_unsigned(&m.path(), &["--full", "-j", "3"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("error: checksum: ") && l.contains(&item)),
        "{stdout}"
    );
}

#[test]
fn orphans_and_leftovers_are_warnings_unless_strict() {
    let m = unsigned_mirror();
    let item = m.item();
    fs::write(m.out.join("stray.iso"), b"not ours").unwrap();
    fs::write(m.out.join(format!("{item}-new.part")), b"half").unwrap();
    let (code, stdout, _) = verify_unsigned(&m.path(), &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("warning: orphan: ") && l.contains("stray.iso")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("warning: leftover: ") && l.contains("-new.part")),
        "{stdout}"
    );
    assert!(stdout.contains("0 error(s), 2 warning(s)"), "{stdout}");

    let (code, stdout, _) = verify_unsigned(&m.path(), &["--strict", "--json"]);
    assert_eq!(code, 1, "{stdout}");
    let v = json(&stdout);
    let mut kinds: Vec<String> = problems(&v).into_iter().map(|(k, _)| k).collect();
    kinds.sort();
    assert_eq!(kinds, ["leftover", "orphan"]);
}

#[test]
fn references_must_agree_with_state_and_files() {
    let m = unsigned_mirror();
    let item = m.item();
    let refs_path = m.out.join(".data/references.json");
    let mut refs: serde_json::Map<String, Value> =
        serde_json::from_slice(&fs::read(&refs_path).unwrap()).unwrap();
    assert!(refs.remove(&item).is_some(), "{item} in references.json");
    refs.insert("gone/file".into(), serde_json::json!(["x:1/p/v/i"]));
    fs::write(&refs_path, serde_json::to_vec(&refs).unwrap()).unwrap();
    let (code, stdout, _) = verify_unsigned(&m.path(), &["--json"]);
    assert_eq!(code, 1, "{stdout}");
    let found = problems(&json(&stdout));
    let at = |rel: &str| m.out.join(rel).display().to_string();
    for want in [
        ("references", at(&item)),
        ("references", at("gone/file")),
        ("dangling", at("gone/file")),
    ] {
        let want = (want.0.to_owned(), want.1);
        assert!(found.contains(&want), "{want:?} not in {found:?}");
    }
}

#[test]
fn usage_and_unreachable_exit_codes() {
    let (code, _, stderr) = verify(&["--no-such-flag", "x"]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = verify(&["--no-verify", "ftp://example.invalid/"]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = verify(&["--keyring", "/nonexistent/keyring.gpg", "/tmp"]);
    assert_eq!(code, 2, "{stderr}");

    let tmp = tempfile::tempdir().unwrap();
    let gone = tmp.path().join("gone");
    let (code, stdout, _) = verify_unsigned(&gone.to_string_lossy(), &["--json"]);
    assert_eq!(code, 3, "{stdout}");
    let v = json(&stdout);
    assert_eq!(v["ok"], false);
    assert_eq!(problems(&v)[0].0, "unreachable");

    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let (code, stdout, _) = verify_unsigned(&url, &[]);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("unreachable"), "{stdout}");
}

#[test]
fn malformed_products_file_is_exit_3() {
    let m = unsigned_mirror();
    let products = m
        .out
        .join(format!("streams/v1/{}.json", m.sample.content_ids[0]));
    fs::write(&products, b"{\"format\": \"products:1.0\", \"products\": [").unwrap();
    let (code, stdout, _) = verify_unsigned(&m.path(), &[]);
    assert_eq!(code, 3, "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("error: metadata: ")),
        "{stdout}"
    );
}

#[test]
fn signed_mirror_verifies_and_tampering_is_exit_3() {
    let gpg = Gpg::new();
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("mirror"));
    let sample = gpg.generate(&SampleSpec::default(), &src);
    let keyring = gpg.keyring.to_string_lossy().into_owned();
    mirror_ok(&[
        "--keyring",
        &keyring,
        &src.to_string_lossy(),
        &out.to_string_lossy(),
        "arch=amd64",
    ]);
    let target = out.to_string_lossy().into_owned();
    let (code, stdout, stderr) = verify(&["--keyring", &keyring, &target]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(" 3 document(s)"), "{stdout}");

    // The index names .sjson products files: tamper with one (same length).
    let products = out.join(format!("streams/v1/{}.sjson", sample.content_ids[0]));
    let text = fs::read_to_string(&products).unwrap();
    let tampered = text.replacen("\"amd64\"", "\"amd65\"", 1);
    assert_ne!(text, tampered);
    fs::write(&products, tampered).unwrap();
    let (code, stdout, _) = verify(&["--keyring", &keyring, "--json", &target]);
    assert_eq!(code, 3, "{stdout}");
    let v = json(&stdout);
    assert_eq!(problems(&v)[0].0, "metadata");
    assert!(
        problems(&v)[0].1.contains(&sample.content_ids[0]),
        "{stdout}"
    );

    // An unsigned products file where the .sjson entry demands signatures.
    fs::write(&products, text.as_bytes()).unwrap();
    let (code, _, _) = verify(&["--keyring", &keyring, &target]);
    assert_eq!(code, 0);
    let index = out.join("streams/v1/index.sjson");
    let idx = fs::read_to_string(&index).unwrap();
    let plain = idx.split("-----BEGIN PGP SIGNATURE-----").next().unwrap();
    let body = plain
        .split_once("\n\n")
        .map(|(_, b)| b)
        .unwrap_or(plain)
        .to_owned();
    fs::write(&index, body).unwrap();
    let (code, stdout, _) = verify(&["--keyring", &keyring, &target]);
    assert_eq!(code, 3, "{stdout}");
}

#[test]
fn served_mirror_over_http() {
    let m = unsigned_mirror();
    let item = m.item();
    let server = Server::start(&m.out);
    let (code, stdout, stderr) = verify_unsigned(&server.url, &["--json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v = json(&stdout);
    assert_eq!(v["documents"], 3);
    assert!(v["items_checked"].as_u64().unwrap() > 0, "{stdout}");
    // arm64 products are not mirrored: skipped, not missing.
    assert!(v["versions_skipped"].as_u64().unwrap() > 0, "{stdout}");

    // The URL may name the entry document.
    let named = format!("{}streams/v1/index.json", server.url);
    let (code, stdout, _) = verify(&["--no-verify", "--full", &named]);
    assert_eq!(code, 0, "{stdout}");

    flip_byte(&m.out.join(&item));
    let (code, stdout, _) = verify_unsigned(&server.url, &[]);
    assert_eq!(code, 0, "{stdout}");
    let (code, stdout, _) = verify_unsigned(&server.url, &["--full"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("error: checksum: ") && l.contains(&item)),
        "{stdout}"
    );

    fs::remove_file(m.out.join(&item)).unwrap();
    let (code, stdout, _) = verify_unsigned(&server.url, &["--json"]);
    assert_eq!(code, 1, "{stdout}");
    let url = format!("{}{item}", server.url);
    assert_eq!(problems(&json(&stdout)), [("missing".to_owned(), url)]);
}
