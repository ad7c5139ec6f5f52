//! `sstream key` and `sstream sign`, with GnuPG as the judge: keys made by
//! our command and by real `gpg` sign a tree of the real MAAS metadata,
//! `gpgv --keyring <exported keyring>` accepts every `.sjson` and `.json.gpg`
//! and rejects them once a byte changes, the reference's `sstream-query`
//! reads the signed tree over HTTP, and bad keys fail with one line naming
//! the file, writing nothing.
//!
//! Needs `gpg` and `gpgv` and the reference tools (scripts/test.sh installs
//! them), and `base64` and `flock` (coreutils, util-linux).

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::{Server, args, reference, run_ok, snapshot};

const V3: &str = "com.ubuntu.maas:stable:v3:download";

/// `sstream` with `args`, `env` added to its environment.
fn sstream_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sstream"))
        .args(args)
        .env_remove("SSTREAM_KEY_PASSPHRASE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run sstream")
}

fn sstream(args: &[&str]) -> Output {
    sstream_env(args, &[])
}

fn ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A scratch directory with a tree of the real MAAS metadata (unsigned) and
/// an empty GNUPGHOME for `gpgv`.
struct Scratch {
    tmp: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let tmp = tempfile::Builder::new()
            .prefix("sstream-sign")
            .tempdir()
            .unwrap();
        let streams = tmp.path().join("tree/streams/v1");
        fs::create_dir_all(&streams).unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/maas-real");
        for e in fs::read_dir(&fixtures).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "json") {
                fs::copy(&p, streams.join(p.file_name().unwrap())).unwrap();
            }
        }
        let home = tmp.path().join("gpgv-home");
        fs::create_dir(&home).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
        Scratch { tmp }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn tree(&self) -> PathBuf {
        self.path("tree")
    }

    fn streams(&self) -> PathBuf {
        self.path("tree/streams/v1")
    }

    /// The `.json` documents of the tree, by file name.
    fn documents(&self) -> Vec<PathBuf> {
        let mut docs: Vec<PathBuf> = fs::read_dir(self.streams())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        docs.sort();
        docs
    }

    /// Whether `gpgv --keyring <keyring>` accepts `files` (a clear-signed
    /// file, or a detached signature and its data).
    fn gpgv(&self, keyring: &Path, files: &[&Path]) -> bool {
        support::gpgv(&self.path("gpgv-home"), keyring, files)
    }

    /// Generates a key with `sstream key generate` and exports its binary
    /// keyring; returns (key, keyring).
    fn our_key(&self, name: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
        let (key, keyring) = (
            self.path(&format!("{name}.asc")),
            self.path(&format!("{name}.gpg")),
        );
        support::our_key(&key, &keyring, extra);
        (key, keyring)
    }

    /// Asserts `gpgv` accepts every `.sjson` and every `.json.gpg` of the
    /// tree with `keyring`, and rejects each once a byte of what it signs
    /// changes (restoring the tree afterwards).
    fn assert_gpgv_accepts_and_catches_tampering(&self, keyring: &Path) {
        let docs = self.documents();
        assert_eq!(docs.len(), 4);
        for json in &docs {
            let sjson = json.with_extension("sjson");
            let gpg = PathBuf::from(format!("{}.gpg", json.display()));
            assert!(self.gpgv(keyring, &[&sjson]), "gpgv {}", sjson.display());
            assert!(self.gpgv(keyring, &[&gpg, json]), "gpgv {}", gpg.display());

            for (file, check) in [(&sjson, vec![&sjson]), (json, vec![&gpg, json])] {
                let good = fs::read(file).unwrap();
                let text = String::from_utf8(good.clone()).unwrap();
                let bad = text.replacen("\"format\"", "\"formaT\"", 1);
                assert_ne!(bad, text);
                fs::write(file, bad).unwrap();
                let files: Vec<&Path> = check.iter().map(|p| p.as_path()).collect();
                assert!(
                    !self.gpgv(keyring, &files),
                    "gpgv accepts a changed {}",
                    file.display()
                );
                fs::write(file, good).unwrap();
            }
        }
    }
}

/// `sign DIR --key KEY` must succeed.
fn sign(dir: &Path, key: &Path) {
    ok("sstream sign", &sstream(&["sign", s(dir), "--key", s(key)]));
}

/// The files `sign` writes for the tree's documents, with their inode and
/// mtime, to tell whether a run rewrote them.
fn stamps(scratch: &Scratch) -> Vec<(String, u64, i64, i64)> {
    let mut out = Vec::new();
    for json in scratch.documents() {
        for p in [
            json.with_extension("sjson"),
            PathBuf::from(format!("{}.gpg", json.display())),
        ] {
            let m = fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            out.push((p.display().to_string(), m.ino(), m.mtime(), m.mtime_nsec()));
        }
    }
    out
}

#[test]
fn signed_tree_verifies_with_gpgv_and_a_second_run_writes_nothing() {
    let scratch = Scratch::new();
    let (key, keyring) = scratch.our_key("ours", &["--uid", "Mirror Ops <ops@example.invalid>"]);
    sign(&scratch.tree(), &key);
    scratch.assert_gpgv_accepts_and_catches_tampering(&keyring);

    // The signed index names the signed products files, which exist; the
    // products files are signed byte for byte.
    let index = fs::read(scratch.streams().join("index.sjson")).unwrap();
    let body = simplestreams::openpgp::cleartext_body(&index).unwrap();
    let index: Value = serde_json::from_slice(&body).unwrap();
    let entries = index["index"].as_object().unwrap();
    assert_eq!(entries.len(), 3);
    for entry in entries.values() {
        let path = entry["path"].as_str().unwrap();
        assert!(path.ends_with(".sjson"), "{path}");
        assert!(scratch.tree().join(path).is_file(), "{path}");
    }
    let v3 = scratch.streams().join(format!("{V3}.json"));
    let v3_signed = fs::read(v3.with_extension("sjson")).unwrap();
    assert_eq!(
        simplestreams::openpgp::cleartext_body(&v3_signed).unwrap(),
        fs::read(&v3).unwrap()
    );

    // Idempotent: a second run rewrites nothing; a changed document gets
    // only its own two files signed again.
    let before = stamps(&scratch);
    sign(&scratch.tree(), &key);
    assert_eq!(stamps(&scratch), before, "a second run rewrote files");
    let text = fs::read_to_string(&v3).unwrap();
    fs::write(&v3, text.replacen("image-ids", "image-ids ", 1)).unwrap();
    sign(&scratch.tree(), &key);
    let after = stamps(&scratch);
    let changed: Vec<&String> = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| &a.0)
        .collect();
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert!(changed.iter().all(|p| p.contains(V3)), "{changed:?}");
    scratch.assert_gpgv_accepts_and_catches_tampering(&keyring);

    // Another key: everything is signed again, and only the new key verifies.
    let (other, other_ring) = scratch.our_key("other", &[]);
    sign(&scratch.tree(), &other);
    scratch.assert_gpgv_accepts_and_catches_tampering(&other_ring);
    let sjson = scratch.streams().join("index.sjson");
    assert!(
        !scratch.gpgv(&keyring, &[&sjson]),
        "the old key no longer verifies"
    );
}

/// What MAAS up to 3.7 runs: the reference's `sstream-query` reads the
/// signed tree through our server with the exported keyring, and lists what
/// the unsigned tree lists; with another keyring it refuses the tree.
#[test]
fn reference_query_reads_the_signed_tree_with_the_exported_keyring() {
    let scratch = Scratch::new();
    let (key, keyring) = scratch.our_key("ours", &[]);
    sign(&scratch.tree(), &key);
    let served = Server::start(&scratch.tree());
    let home = scratch.path("gpgv-home");
    let query = reference().join("sstream-query");
    let format = "%(content_id)s %(product_name)s %(version_name)s %(item_name)s %(sha256)s";

    let k = format!("--keyring={}", keyring.display());
    let signed = run_ok(&query, &home, &args(&[&k, &served.url, "-o", format]));
    let plain_url = format!("{}streams/v1/index.json", served.url);
    let plain = run_ok(&query, &home, &args(&[&plain_url, "-o", format]));
    let lines = |o: &Output| -> BTreeSet<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let listed = lines(&signed);
    assert!(listed.len() > 20, "{listed:?}");
    assert_eq!(listed, lines(&plain));
    assert!(listed.iter().any(|l| l.starts_with(V3)));

    let log = served.stderr();
    assert!(
        log.contains("index.sjson") && log.contains(&format!("{V3}.sjson")),
        "{log}"
    );

    let ubuntu = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/keys/ubuntu-cloudimage-keyring.gpg");
    let wrong = Command::new(&query)
        .env("GNUPGHOME", &home)
        .arg(format!("--keyring={}", ubuntu.display()))
        .arg(&served.url)
        .output()
        .unwrap();
    assert!(
        !wrong.status.success(),
        "the reference accepted another key's signatures"
    );
}

#[test]
fn key_generate_writes_a_private_v4_key_and_never_clobbers() {
    let scratch = Scratch::new();
    let key = scratch.path("k.asc");
    let out = sstream(&[
        "key",
        "generate",
        "--output",
        s(&key),
        "--uid",
        "A <a@example.invalid>",
    ]);
    ok("key generate", &out);
    let fpr = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(fpr.len(), 40, "{fpr}");
    assert!(fpr.bytes().all(|b| b.is_ascii_hexdigit()), "{fpr}");
    let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    let armored = fs::read(&key).unwrap();
    assert!(armored.starts_with(b"-----BEGIN PGP PRIVATE KEY BLOCK-----"));

    // GnuPG reads it: a v4 ed25519 key that certifies and signs.
    let colons = gpg_show(&scratch, &key);
    let pubrec = colons
        .lines()
        .find(|l| l.starts_with("sec:") || l.starts_with("pub:"))
        .unwrap();
    let f: Vec<&str> = pubrec.split(':').collect();
    assert_eq!(f[3], "22", "EdDSA: {pubrec}");
    assert!(
        f[11].contains('s') && f[11].contains('c'),
        "usage: {pubrec}"
    );
    assert!(colons.contains(&format!("fpr:::::::::{fpr}:")), "{colons}");
    assert!(colons.contains("A <a@example.invalid>"), "{colons}");

    // An existing file is kept, unless --force.
    let again = sstream(&["key", "generate", "--output", s(&key)]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(s(&key)) && err.contains("--force"), "{err}");
    assert_eq!(fs::read(&key).unwrap(), armored);
    let forced = sstream(&["key", "generate", "--output", s(&key), "--force"]);
    ok("key generate --force", &forced);
    assert_ne!(fs::read(&key).unwrap(), armored);
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let leftovers: Vec<_> = fs::read_dir(scratch.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("sstream-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `gpg --with-colons --show-keys FILE`, in a scratch GNUPGHOME.
fn gpg_show(scratch: &Scratch, file: &Path) -> String {
    let home = scratch.path("show-home");
    fs::create_dir_all(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
    let out = Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--batch", "--with-colons", "--show-keys"])
        .arg(file)
        .output()
        .expect("run gpg");
    ok("gpg --show-keys", &out);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn rsa_key_signs_what_gpgv_accepts() {
    let scratch = Scratch::new();
    let (key, keyring) = scratch.our_key("rsa", &["--rsa"]);
    let colons = gpg_show(&scratch, &keyring);
    let pubrec = colons.lines().find(|l| l.starts_with("pub:")).unwrap();
    let f: Vec<&str> = pubrec.split(':').collect();
    assert_eq!((f[2], f[3]), ("4096", "1"), "RSA 4096: {pubrec}");
    sign(&scratch.tree(), &key);
    scratch.assert_gpgv_accepts_and_catches_tampering(&keyring);
}

#[test]
fn exports_armored_and_base64_are_the_same_public_key() {
    let scratch = Scratch::new();
    let (key, keyring) = scratch.our_key("k", &[]);
    let binary = fs::read(&keyring).unwrap();
    assert!(!binary.starts_with(b"-----"));
    assert!(
        !gpg_show(&scratch, &keyring).contains("sec:"),
        "public only"
    );

    let asc = scratch.path("k.pub.asc");
    ok(
        "export --armor",
        &sstream(&["key", "export", s(&key), "--output", s(&asc), "--armor"]),
    );
    let text = fs::read_to_string(&asc).unwrap();
    assert!(
        text.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{text}"
    );
    assert_eq!(gpg_show(&scratch, &asc), gpg_show(&scratch, &keyring));
    let mode = fs::metadata(&asc).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "readable by MAAS: {mode:o}");

    let out = sstream(&["key", "export", s(&key), "--output", "-", "--base64"]);
    ok("export --base64", &out);
    let line = String::from_utf8(out.stdout).unwrap();
    assert_eq!(line.lines().count(), 1, "one line: {line}");
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
        .expect("run base64 -d");
    ok("base64 -d", &decoded);
    assert_eq!(decoded.stdout, binary, "base64 of the binary keyring");
}

/// A GnuPG home with keys made by real `gpg`.
struct GnuPg {
    home: PathBuf,
}

impl GnuPg {
    fn new(scratch: &Scratch) -> GnuPg {
        let home = scratch.path("gnupg");
        fs::create_dir(&home).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
        GnuPg { home }
    }

    fn run(&self, passphrase: &str, a: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &self.home)
            .args([
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                passphrase,
            ])
            .args(a)
            .output()
            .expect("run gpg (install gnupg: scripts/test.sh does)");
        ok(&format!("gpg {a:?}"), &out);
        out.stdout
    }

    /// `gpg --quick-gen-key` and the new key's fingerprint.
    fn generate(&self, uid: &str, algo: &str, usage: &str, passphrase: &str) -> String {
        self.run(passphrase, &["--quick-gen-key", uid, algo, usage, "never"]);
        let colons =
            String::from_utf8(self.run("", &["--with-colons", "--list-keys", uid])).unwrap();
        colons
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .expect("a fingerprint")
    }

    /// Writes `gpg --export[-secret-keys] FPR` to `file`.
    fn export(&self, fpr: &str, secret: bool, passphrase: &str, file: &Path) {
        let what = if secret {
            "--export-secret-keys"
        } else {
            "--export"
        };
        let bytes = self.run(passphrase, &["--armor", what, fpr]);
        assert!(!bytes.is_empty(), "{what} {fpr}: nothing");
        fs::write(file, bytes).unwrap();
    }
}

impl Drop for GnuPg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

#[test]
fn keys_made_by_gnupg_sign_what_gpgv_accepts() {
    let scratch = Scratch::new();
    let gpg = GnuPg::new(&scratch);
    // A primary key that signs, and one that only certifies with a signing
    // subkey (the layout `gpg --full-gen-key` makes).
    let primary = gpg.generate("Signs <signs@example.invalid>", "ed25519", "sign", "");
    let certifier = gpg.generate("Sub <sub@example.invalid>", "ed25519", "cert", "");
    gpg.run(
        "",
        &["--quick-add-key", &certifier, "ed25519", "sign", "never"],
    );
    for fpr in [primary, certifier] {
        let key = scratch.path(&format!("{fpr}.sec.asc"));
        gpg.export(&fpr, true, "", &key);
        let keyring = scratch.path(&format!("{fpr}.gpg"));
        // The keyring gpg itself exports, and ours, both verify.
        let gpg_ring = gpg.run("", &["--export", &fpr]);
        fs::write(&keyring, gpg_ring).unwrap();
        sign(&scratch.tree(), &key);
        scratch.assert_gpgv_accepts_and_catches_tampering(&keyring);
        let ours = scratch.path(&format!("{fpr}.ours.gpg"));
        ok(
            "export",
            &sstream(&["key", "export", s(&key), "--output", s(&ours)]),
        );
        scratch.assert_gpgv_accepts_and_catches_tampering(&ours);
    }
}

/// Runs `sign` with `key` expecting a failure: one line on stderr naming
/// the key file and containing `reason`, a non-zero exit, the tree as it was.
fn assert_refused(
    scratch: &Scratch,
    key: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
    reason: &str,
) {
    let before = snapshot(&scratch.tree());
    let tree = scratch.tree();
    let mut a = vec!["sign", s(&tree), "--key", s(key)];
    a.extend_from_slice(extra);
    let out = sstream_env(&a, env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{reason}: accepted");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(s(key)), "names the key file: {err}");
    assert!(err.contains(reason), "{reason:?} in {err}");
    assert_eq!(
        snapshot(&scratch.tree()),
        before,
        "{reason}: something was written"
    );
}

#[test]
fn bad_keys_fail_with_one_line_and_write_nothing() {
    let scratch = Scratch::new();
    let gpg = GnuPg::new(&scratch);

    let text = scratch.path("notes.txt");
    fs::write(&text, "not a key at all\n").unwrap();
    assert_refused(&scratch, &text, &[], &[], "not an OpenPGP key");
    let missing = scratch.path("missing.asc");
    assert_refused(&scratch, &missing, &[], &[], "cannot read key");

    let fpr = gpg.generate("Pub <pub@example.invalid>", "ed25519", "sign", "");
    let public = scratch.path("public.asc");
    gpg.export(&fpr, false, "", &public);
    assert_refused(&scratch, &public, &[], &[], "without its secret key");

    let certify_only = gpg.generate("Cert <cert@example.invalid>", "ed25519", "cert", "");
    let cert_key = scratch.path("cert.sec.asc");
    gpg.export(&certify_only, true, "", &cert_key);
    assert_refused(&scratch, &cert_key, &[], &[], "cannot sign");

    let locked = gpg.generate(
        "Locked <locked@example.invalid>",
        "ed25519",
        "sign",
        "s3cret pass",
    );
    let locked_key = scratch.path("locked.sec.asc");
    gpg.export(&locked, true, "s3cret pass", &locked_key);
    assert_refused(&scratch, &locked_key, &[], &[], "protected by a passphrase");
    let wrong = scratch.path("wrong.pass");
    fs::write(&wrong, "not it\n").unwrap();
    assert_refused(
        &scratch,
        &locked_key,
        &["--passphrase-file", s(&wrong)],
        &[],
        "wrong passphrase",
    );
    assert_refused(
        &scratch,
        &locked_key,
        &[],
        &[("SSTREAM_KEY_PASSPHRASE", "nope")],
        "wrong passphrase",
    );

    // With the right passphrase, from a file or the environment, it signs.
    let right = scratch.path("right.pass");
    fs::write(&right, "s3cret pass\n").unwrap();
    let out = sstream(&[
        "sign",
        s(&scratch.tree()),
        "--key",
        s(&locked_key),
        "--passphrase-file",
        s(&right),
    ]);
    ok("sign --passphrase-file", &out);
    let keyring = scratch.path("locked.gpg");
    fs::write(&keyring, gpg.run("", &["--export", &locked])).unwrap();
    scratch.assert_gpgv_accepts_and_catches_tampering(&keyring);
    for json in scratch.documents() {
        fs::remove_file(json.with_extension("sjson")).unwrap();
    }
    let out = sstream_env(
        &["sign", s(&scratch.tree()), "--key", s(&locked_key)],
        &[("SSTREAM_KEY_PASSPHRASE", "s3cret pass")],
    );
    ok("sign with SSTREAM_KEY_PASSPHRASE", &out);
    scratch.assert_gpgv_accepts_and_catches_tampering(&keyring);
}

#[test]
fn bad_trees_fail_with_one_line_and_write_nothing() {
    let scratch = Scratch::new();
    let (key, _) = scratch.our_key("k", &[]);
    let refused = |what: &str, want: &[&str]| {
        let before = snapshot(&scratch.tree());
        let out = sstream(&["sign", s(&scratch.tree()), "--key", s(&key)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
        for w in want {
            assert!(err.contains(w), "{what}: {w:?} in {err}");
        }
        assert_eq!(
            snapshot(&scratch.tree()),
            before,
            "{what}: something was written"
        );
    };

    // A malformed products file: named, and not even the others are signed.
    let v3 = scratch.streams().join(format!("{V3}.json"));
    let good = fs::read(&v3).unwrap();
    fs::write(&v3, &good[..good.len() / 2]).unwrap();
    refused("malformed JSON", &[s(&v3), "malformed JSON"]);
    fs::write(&v3, &good).unwrap();

    // An index naming a products file that is not there.
    fs::remove_file(&v3).unwrap();
    refused(
        "missing products file",
        &["index.json", &format!("{V3}.json"), "not in"],
    );
    fs::write(&v3, &good).unwrap();

    // No documents at all.
    let empty = scratch.path("empty");
    fs::create_dir(&empty).unwrap();
    let out = sstream(&["sign", s(&empty), "--key", s(&key)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no .json documents"));
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
}

/// In a mirror directory, `sign` takes the mirror's run lock (a mirror run
/// and a signing run never write side by side), and it never writes
/// through a symlink planted where a signature goes.
#[test]
fn a_mirror_being_written_or_a_planted_symlink_is_refused() {
    let scratch = Scratch::new();
    let (key, keyring) = scratch.our_key("k", &[]);
    let data = scratch.tree().join(".data");
    fs::create_dir(&data).unwrap();
    let lock = data.join("sstream.lock");
    fs::write(&lock, "").unwrap();
    let mut holder = Command::new("flock")
        .args(["--exclusive", "--close"])
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .expect("run flock (util-linux)");
    // Wait until the holder has the lock: a non-blocking attempt fails.
    let held = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(25));
        let probe = Command::new("flock")
            .args(["--exclusive", "--nonblock"])
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap();
        !probe.success()
    });
    assert!(held, "flock never took the lock");
    let before = snapshot(&scratch.tree());
    let out = sstream(&["sign", s(&scratch.tree()), "--key", s(&key)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "signed while a run held the lock");
    assert!(err.contains("another run"), "{err}");
    assert_eq!(snapshot(&scratch.tree()), before);
    let _ = holder.kill();
    let _ = holder.wait();

    let outside = scratch.path("outside.txt");
    fs::write(&outside, "precious").unwrap();
    std::os::unix::fs::symlink(&outside, scratch.streams().join("index.sjson")).unwrap();
    let out = sstream(&["sign", s(&scratch.tree()), "--key", s(&key)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "wrote through a symlink");
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(fs::read_to_string(&outside).unwrap(), "precious");

    // With the symlink gone, the tree is signed.
    fs::remove_file(scratch.streams().join("index.sjson")).unwrap();
    sign(&scratch.tree(), &key);
    scratch.assert_gpgv_accepts_and_catches_tampering(&keyring);
}
