//! `sstream verify`: mirrors made by the real `sstream-mirror` from a
//! generated sample stream, damaged in known ways, audited from the
//! directory and over HTTP (`sstream serve`), checking exit codes and output.

mod faults_support;
mod support;

use faults_support::{Fault, FaultServer};
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

/// Removes the plain twins our mirror publishes beside upstream's signed
/// documents (for LXD), leaving the tree the reference makes: for the
/// tests of the signed documents themselves.
fn without_plain_twins(out: &Path) {
    let streams = out.join("streams/v1");
    for e in fs::read_dir(&streams).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".json")
            && streams.join(format!("{stem}.sjson")).exists()
        {
            fs::remove_file(streams.join(&name)).unwrap();
        }
    }
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
    without_plain_twins(&out);
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

#[test]
fn directory_without_path_is_read_from_the_entry_it_has() {
    // The unsigned mirror has streams/v1/index.json only.
    let m = unsigned_mirror();
    assert!(!m.out.join("streams/v1/index.sjson").exists());
    let (code, stdout, stderr) = verify(&["--no-verify", "--json", &m.path()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v = json(&stdout);
    assert_eq!(v["documents"], 3, "{stdout}");
    assert_eq!(problems(&v), []);
    // An unsigned entry needs no keyring nor --no-verify.
    let (code, stdout, stderr) = verify(&[&m.path()]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    // A damaged item is still found through the entry found.
    let item = m.item();
    fs::remove_file(m.out.join(&item)).unwrap();
    let (code, stdout, _) = verify(&["--json", &m.path()]);
    assert_eq!(code, 1, "{stdout}");
    let missing = m.out.join(&item).display().to_string();
    assert_eq!(problems(&json(&stdout)), [("missing".to_owned(), missing)]);

    // Neither entry: the default one is named as unreachable.
    fs::remove_file(m.out.join("streams/v1/index.json")).unwrap();
    let (code, stdout, _) = verify(&["--no-verify", "--json", &m.path()]);
    assert_eq!(code, 3, "{stdout}");
    let found = problems(&json(&stdout));
    assert_eq!(found[0].0, "unreachable", "{stdout}");
    assert!(stdout.contains("index.sjson"), "{stdout}");
}

#[test]
fn directory_with_both_entries_is_read_from_the_signed_one() {
    let gpg = Gpg::new();
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("mirror"));
    gpg.generate(&SampleSpec::default(), &src);
    let keyring = gpg.keyring.to_string_lossy().into_owned();
    mirror_ok(&[
        "--keyring",
        &keyring,
        &src.to_string_lossy(),
        &out.to_string_lossy(),
        "arch=amd64",
    ]);
    without_plain_twins(&out);
    let target = out.to_string_lossy().into_owned();
    let (code, stdout, stderr) = verify(&["--keyring", &keyring, "--json", &target]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(json(&stdout)["documents"], 3, "{stdout}");
    // An unsigned index beside the signed one, naming nothing mirrored:
    // the signed one is the entry (its tree is read), and the other is
    // checked as the twin clients may read (an error: it differs from the
    // signed content and names a products file that is not there).
    let junk = r#"{"format":"index:1.0","index":{"x:1":{"path":"streams/v1/x.json"}}}"#;
    fs::write(out.join("streams/v1/index.json"), junk).unwrap();
    let twin_errors = |stdout: &str| {
        let v = json(stdout);
        assert_eq!(v["documents"], 3, "{stdout}");
        assert_eq!(problems_at(&v, "signature", "streams/v1/index.sjson"), 1);
        assert_eq!(problems_at(&v, "unreachable", "streams/v1/x.json"), 1);
    };
    let (code, stdout, stderr) = verify(&["--keyring", &keyring, "--json", &target]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    twin_errors(&stdout);
    // Unchecked signatures do not make the unsigned index preferred.
    let (code, stdout, stderr) = verify(&["--no-verify", "--json", &target]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    twin_errors(&stdout);
}

#[test]
fn interrupted_metadata_write_is_a_leftover_not_an_orphan() {
    let m = unsigned_mirror();
    // What a write of the index and of a state killed before its rename
    // leaves: the store's temporary names.
    let index_tmp = m
        .out
        .join("streams/v1")
        .join(simplestreams::layout::temp_name("index.json"));
    let state_tmp = m
        .out
        .join(".data")
        .join(simplestreams::layout::temp_name(&m.sample.content_ids[0]));
    for tmp in [&index_tmp, &state_tmp] {
        fs::write(tmp, b"{\"format\": \"ind").unwrap();
    }
    let (code, stdout, _) = verify_unsigned(&m.path(), &["--json"]);
    assert_eq!(code, 0, "{stdout}");
    let mut found = problems(&json(&stdout));
    found.sort();
    let mut want = vec![
        ("leftover".to_owned(), index_tmp.display().to_string()),
        ("leftover".to_owned(), state_tmp.display().to_string()),
    ];
    want.sort();
    assert_eq!(found, want);
    let (code, stdout, _) = verify_unsigned(&m.path(), &["--strict"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("error: leftover: ") && l.contains(".sstream-tmp")),
        "{stdout}"
    );
}

#[test]
fn served_mirror_is_probed_and_hashed_with_retries() {
    let m = unsigned_mirror();
    let item = m.item();
    let size = m.sample.payloads[&item];
    let server = FaultServer::start(&m.out);
    let url = format!("{}{item}", server.url);
    let requests = || server.requests_of(&item).len();
    // One fault per request of the item; the faults used here change
    // nothing in the answer to a HEAD but its status or Content-Length.
    let cut = Fault::Drop { after: 10 };
    let corrupt = Fault::Corrupt { at: 0 };

    // A 503 to the HEAD is tried again, and not reported.
    server.script(
        &item,
        &[Fault::Status {
            code: 503,
            retry_after: None,
        }],
    );
    let (code, stdout, stderr) = verify_unsigned(&server.url, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!((requests(), server.unused_faults()), (2, 0));

    // A server that does not do HEAD (405) is asked with a GET.
    server.script(
        &item,
        &[Fault::Status {
            code: 405,
            retry_after: None,
        }],
    );
    let (code, stdout, _) = verify_unsigned(&server.url, &[]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!((requests(), server.unused_faults()), (4, 0));

    // A Content-Length that disagrees is a size problem.
    server.script(&item, &[Fault::LieLength { delta: -1 }]);
    let (code, stdout, _) = verify_unsigned(&server.url, &["--json"]);
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(problems(&json(&stdout)), [("size".to_owned(), url.clone())]);
    let detail = json(&stdout)["problems"][0]["detail"].clone();
    let want = format!("Content-Length {}, expected {size}", size - 1);
    assert!(detail.as_str().unwrap().starts_with(&want), "{detail}");
    assert_eq!(requests(), 5);

    // --full: a download cut short is read again from the start.
    server.script(&item, &[cut.clone(), cut]);
    let (code, stdout, stderr) = verify_unsigned(&server.url, &["--full"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!((requests(), server.unused_faults()), (8, 0));

    // --full: wrong bytes are a checksum problem, found on the first read
    // (a clean second read would hide it).
    server.script(&item, &[corrupt.clone(), corrupt]);
    let (code, stdout, _) = verify_unsigned(&server.url, &["--full", "--json"]);
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(
        problems(&json(&stdout)),
        [("checksum".to_owned(), url.clone())]
    );
    assert_eq!((requests(), server.unused_faults()), (10, 0));

    // An item that always fails is unreadable, after the retries.
    server.always(
        &item,
        Fault::Status {
            code: 503,
            retry_after: None,
        },
    );
    let (code, stdout, _) = verify_unsigned(&server.url, &["--json"]);
    assert_eq!(code, 1, "{stdout}");
    let v = json(&stdout);
    assert_eq!(problems(&v), [("unreadable".to_owned(), url)]);
    assert!(
        v["problems"][0]["detail"].as_str().unwrap().contains("503"),
        "{stdout}"
    );
    assert_eq!(requests(), 13, "a first try and two retries");
}

/// A mirror of the amd64 part of a GnuPG-signed sample stream, its key
/// and the keyring a verify needs.
struct SignedMirror {
    _tmp: tempfile::TempDir,
    gpg: Gpg,
    src: PathBuf,
    out: PathBuf,
    sample: SampleStream,
    /// The keyring the mirror's documents verify with: upstream's, or the
    /// mirror's own when re-signed.
    keyring: String,
}

impl SignedMirror {
    fn path(&self) -> String {
        self.out.to_string_lossy().into_owned()
    }

    /// `sstream verify --keyring KEYRING EXTRA TARGET`.
    fn verify(&self, target: &str, extra: &[&str]) -> (i32, String, String) {
        let mut args = vec!["--keyring", &self.keyring];
        args.extend_from_slice(extra);
        args.push(target);
        verify(&args)
    }
}

/// `sstream-mirror --keyring UPSTREAM EXTRA SRC OUT FILTERS` of a signed
/// sample stream; with `resign`, published re-signed with a local key.
fn signed_mirror(resign: bool, extra: &[&str], filters: &[&str]) -> SignedMirror {
    let gpg = Gpg::new();
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("mirror"));
    let sample = gpg.generate(&SampleSpec::default(), &src);
    let upstream = gpg.keyring.to_string_lossy().into_owned();
    let mut keyring = upstream.clone();
    let mut args: Vec<String> = vec!["--keyring".into(), upstream];
    if resign {
        let key = tmp.path().join("mirror-key.asc");
        let ring = tmp.path().join("mirror-keyring.gpg");
        for sub in [
            vec!["key", "generate", "--output", &*key.to_string_lossy()],
            vec![
                "key",
                "export",
                &*key.to_string_lossy(),
                "--output",
                &*ring.to_string_lossy(),
            ],
        ] {
            let o = run_tool(env!("CARGO_BIN_EXE_sstream"), &sub);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        args.push(format!("--sign-key={}", key.display()));
        keyring = ring.to_string_lossy().into_owned();
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(src.to_string_lossy().into_owned());
    args.push(out.to_string_lossy().into_owned());
    args.extend(filters.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    mirror_ok(&args);
    SignedMirror {
        _tmp: tmp,
        gpg,
        src,
        out,
        sample,
        keyring,
    }
}

/// Removes every item whose path is `rel` from a products tree.
fn drop_item(tree: &mut Value, rel: &str) -> usize {
    let mut dropped = 0;
    for product in tree["products"].as_object_mut().unwrap().values_mut() {
        for version in product["versions"].as_object_mut().unwrap().values_mut() {
            let items = version["items"].as_object_mut().unwrap();
            let before = items.len();
            items.retain(|_, item| item["path"] != rel);
            dropped += before - items.len();
        }
    }
    dropped
}

/// The problems of a `--json` report of `kind` whose location ends with
/// `suffix`.
fn problems_at(v: &Value, kind: &str, suffix: &str) -> usize {
    problems(v)
        .iter()
        .filter(|(k, at)| k == kind && at.ends_with(suffix))
        .count()
}

#[test]
fn resigned_mirror_missing_a_listed_kernel_fails_though_state_forgot_it() {
    let m = signed_mirror(true, &[], &["arch=amd64"]);
    let (code, stdout, stderr) = m.verify(&m.path(), &["--strict"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let kernel = m
        .sample
        .payloads
        .keys()
        .filter(|p| p.contains("/amd64/") && p.contains("kernel"))
        .max()
        .expect("an amd64 kernel")
        .clone();
    assert!(m.out.join(&kernel).is_file(), "{kernel} was mirrored");
    // Gone from disk and from the bookkeeping; the published (re-signed)
    // metadata still lists it.
    fs::remove_file(m.out.join(&kernel)).unwrap();
    let mut forgotten = 0;
    for cid in &m.sample.content_ids {
        let state = m.out.join(".data").join(cid);
        let mut tree: Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
        forgotten += drop_item(&mut tree, &kernel);
        fs::write(&state, serde_json::to_vec(&tree).unwrap()).unwrap();
    }
    assert!(forgotten > 0, "{kernel} was in the state");
    let refs_path = m.out.join(".data/references.json");
    let mut refs: serde_json::Map<String, Value> =
        serde_json::from_slice(&fs::read(&refs_path).unwrap()).unwrap();
    assert!(
        refs.remove(&kernel).is_some(),
        "{kernel} in references.json"
    );
    fs::write(&refs_path, serde_json::to_vec(&refs).unwrap()).unwrap();

    let (code, stdout, _) = m.verify(&m.path(), &["--strict", "--json"]);
    assert_eq!(code, 1, "{stdout}");
    let v = json(&stdout);
    let missing = m.out.join(&kernel).display().to_string();
    assert_eq!(problems(&v), [("missing".to_owned(), missing)], "{stdout}");
    assert_eq!(v["offered"]["missing"], 1, "{stdout}");
    assert_eq!(
        v["offered"]["not_held"], 0,
        "re-signed: lists only holdings"
    );
    // The same mirror served: the same finding.
    let server = Server::start(&m.out);
    let (code, stdout, _) = m.verify(&server.url, &["--strict", "--json"]);
    assert_eq!(code, 1, "{stdout}");
    let url = format!("{}{kernel}", server.url);
    assert_eq!(problems(&json(&stdout)), [("missing".to_owned(), url)]);
}

#[test]
fn empty_twin_index_and_wrong_detached_signature_fail() {
    let m = signed_mirror(true, &[], &["arch=amd64"]);
    let meta = m.out.join("streams/v1");
    let (code, stdout, _) = m.verify(&m.path(), &["--strict", "--json"]);
    assert_eq!(code, 0, "{stdout}");
    let v = json(&stdout);
    // Both trees read: the signed one and its plain twin.
    assert_eq!(v["documents"], 6, "{stdout}");
    let verdicts: Vec<(&str, &str)> = v["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["form"].as_str().unwrap(), s["verdict"].as_str().unwrap()))
        .collect();
    assert_eq!(
        verdicts.iter().filter(|f| f.0 == "clear-signed").count(),
        3,
        "{stdout}"
    );
    assert_eq!(
        verdicts.iter().filter(|f| f.0 == "detached").count(),
        3,
        "{stdout}"
    );
    assert!(verdicts.iter().all(|f| f.1 == "verified"), "{stdout}");

    // The plain index emptied, and one products file's detached signature
    // swapped for another document's (a signature, of other bytes).
    let [first, second] = [0, 1].map(|i| format!("{}.json.gpg", m.sample.content_ids[i]));
    fs::write(meta.join("index.json"), b"{}").unwrap();
    fs::copy(meta.join(&second), meta.join(&first)).unwrap();
    let (code, stdout, _) = m.verify(&m.path(), &["--strict", "--json"]);
    assert_eq!(code, 1, "{stdout}");
    let v = json(&stdout);
    assert_eq!(
        problems_at(&v, "metadata", "streams/v1/index.json"),
        1,
        "{stdout}"
    );
    assert_eq!(
        problems_at(&v, "signature", &format!("streams/v1/{first}")),
        1,
        "{stdout}"
    );
    // Text: one line per problem, and the summary.
    let (code, stdout, _) = m.verify(&m.path(), &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("error: signature: ") && l.contains(&first)),
        "{stdout}"
    );
    assert!(stdout.lines().last().unwrap().starts_with("FAILED: "));

    // Without a keyring the mirror's own keyring still finds the swapped
    // signature; a .json.gpg that is no signature at all is an error too.
    let (code, stdout, _) = verify(&["--no-verify", "--json", &m.path()]);
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(
        problems_at(&json(&stdout), "signature", &first),
        1,
        "{stdout}"
    );
    fs::remove_file(meta.join("mirror-keyring.gpg")).unwrap();
    fs::write(meta.join(&first), b"not a signature").unwrap();
    let (code, stdout, _) = verify(&["--no-verify", "--json", &m.path()]);
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(
        problems_at(&json(&stdout), "signature", &first),
        1,
        "{stdout}"
    );
}

#[test]
fn max_one_upstream_mirror_reports_what_it_offers_but_does_not_hold() {
    let m = signed_mirror(false, &["--max=1"], &[]);
    let not_held: Vec<(&String, &u64)> = m
        .sample
        .payloads
        .iter()
        .filter(|(p, _)| !m.out.join(p).exists())
        .collect();
    assert!(!not_held.is_empty(), "--max=1 leaves older versions out");

    let (code, stdout, stderr) = m.verify(&m.path(), &[]);
    assert_eq!(code, 0, "not an error by default: {stdout}{stderr}");
    let groups: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("note: offered-not-held: "))
        .collect();
    assert!(!groups.is_empty(), "{stdout}");
    assert!(
        groups.iter().all(|l| l.contains("--sign-key")),
        "the advice: {stdout}"
    );
    let summary = stdout.lines().last().unwrap();
    assert!(summary.starts_with("OK: "), "{stdout}");
    let counted = format!("; {} item(s) offered but not held", not_held.len());
    assert!(summary.ends_with(&counted), "{summary}");

    let (code, stdout, _) = m.verify(&m.path(), &["--json"]);
    assert_eq!(code, 0, "{stdout}");
    let v = json(&stdout);
    let offered = &v["offered"];
    assert_eq!(offered["not_held"], not_held.len() as u64, "{stdout}");
    assert_eq!(offered["missing"], 0, "{stdout}");
    let groups = offered["not_held_groups"].as_array().unwrap();
    let in_groups: u64 = groups.iter().map(|g| g["items"].as_u64().unwrap()).sum();
    assert_eq!(in_groups, not_held.len() as u64, "{stdout}");
    let bytes: u64 = groups.iter().map(|g| g["bytes"].as_u64().unwrap()).sum();
    assert_eq!(bytes, not_held.iter().map(|(_, s)| **s).sum::<u64>());
    // Images per release/arch: every release and arch of the sample has
    // an older version left out.
    for group in [
        "trusty/amd64",
        "trusty/arm64",
        "xenial/amd64",
        "xenial/arm64",
    ] {
        let g = groups
            .iter()
            .find(|g| g["group"] == group)
            .unwrap_or_else(|| panic!("{group} in {stdout}"));
        assert!(g["items"].as_u64().unwrap() > 0, "{stdout}");
        assert!(g["versions"].as_u64().unwrap() > 0, "{stdout}");
    }

    let (code, stdout, _) = m.verify(&m.path(), &["--strict"]);
    assert_eq!(code, 1, "a failure with --strict: {stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("error: offered-not-held: ")),
        "{stdout}"
    );
    // Served, the same is offered and not held.
    let server = Server::start(&m.out);
    let (code, stdout, _) = m.verify(&server.url, &["--json"]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(
        json(&stdout)["offered"]["not_held"],
        not_held.len() as u64,
        "{stdout}"
    );
    let (code, stdout, _) = m.verify(&server.url, &["--strict"]);
    assert_eq!(code, 1, "{stdout}");
}

#[test]
fn respin_published_over_old_files_is_found_from_the_directory_as_when_served() {
    let m = signed_mirror(false, &[], &["arch=amd64"]);
    without_plain_twins(&m.out);
    let cid = &m.sample.content_ids[1];
    let products = m.out.join(format!("streams/v1/{cid}.sjson"));
    let signed = fs::read(&products).unwrap();
    let body = simplestreams::openpgp::cleartext_body(&signed).unwrap();
    let mut tree: Value = serde_json::from_slice(&body).unwrap();
    // Upstream re-spun one squashfs: same version and path, new bytes
    // (another item's), so new checksums; the mirror kept the old file
    // and its .data state.
    let mut squashfs: Vec<(String, Value)> = Vec::new();
    for product in tree["products"].as_object().unwrap().values() {
        for version in product["versions"].as_object().unwrap().values() {
            for item in version["items"].as_object().unwrap().values() {
                let path = item["path"].as_str().unwrap();
                if path.contains("/amd64/") && path.ends_with("/squashfs") {
                    squashfs.push((path.to_owned(), item.clone()));
                }
            }
        }
    }
    squashfs.sort_by(|a, b| a.0.cmp(&b.0));
    let respun = squashfs[0].0.clone();
    let other = squashfs
        .iter()
        .map(|(_, item)| item.clone())
        .find(|item| item["sha256"] != squashfs[0].1["sha256"])
        .expect("two squashfs of different bytes");
    for product in tree["products"].as_object_mut().unwrap().values_mut() {
        for version in product["versions"].as_object_mut().unwrap().values_mut() {
            for item in version["items"].as_object_mut().unwrap().values_mut() {
                if item["path"] == respun.as_str() {
                    for sum in ["md5", "sha256", "sha512"] {
                        if other.get(sum).is_some() {
                            item[sum] = other[sum].clone();
                        }
                    }
                }
            }
        }
    }
    let state_before = fs::read(m.out.join(".data").join(cid)).unwrap();
    fs::write(&products, m.gpg.sign(&serde_json::to_vec(&tree).unwrap())).unwrap();
    assert_eq!(
        fs::read(m.out.join(".data").join(cid)).unwrap(),
        state_before
    );

    let (code, stdout, _) = m.verify(&m.path(), &[]);
    assert_eq!(code, 0, "same size: not seen without --full\n{stdout}");
    let (code, stdout, _) = m.verify(&m.path(), &["--full", "--json"]);
    assert_eq!(code, 1, "{stdout}");
    let from_dir = json(&stdout);
    let at = m.out.join(&respun).display().to_string();
    assert_eq!(
        problems(&from_dir),
        [("checksum".to_owned(), at)],
        "{stdout}"
    );
    assert_eq!(from_dir["offered"]["damaged"], 1, "{stdout}");

    let server = Server::start(&m.out);
    let (code, stdout, _) = m.verify(&server.url, &["--full", "--json"]);
    assert_eq!(code, 1, "{stdout}");
    let served = json(&stdout);
    let url = format!("{}{respun}", server.url);
    assert_eq!(
        problems(&served),
        [("checksum".to_owned(), url)],
        "{stdout}"
    );
    assert_eq!(served["offered"]["damaged"], 1, "{stdout}");
    assert!(m.src.is_dir());
}
