//! OpenPGP verification against real material: the Ubuntu cloud-image
//! keyring and signature fixtures, and documents signed by real GnuPG.
//!
//! These tests need `gpg` and `gpgv` (package gnupg). They fail, rather than
//! skip, when GnuPG is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use simplestreams::openpgp::{
    Keyring, KeyringError, SignatureError, SigningKey, cleartext_body, verify_cleartext,
    verify_detached,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/keys")
        .join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    let path = fixture(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// A throwaway GnuPG home with helpers. Kills its agent on drop.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        for tool in ["gpg", "gpgv"] {
            let ok = Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                ok,
                "`{tool}` is required by these tests but was not found: install GnuPG (apt-get install gnupg)"
            );
        }
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir()
            .expect("create temporary GNUPGHOME");
        Gpg { home }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args([
                "--batch",
                "--yes",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .output()
            .expect("run gpg");
        assert!(
            out.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Generates a key and returns its fingerprint.
    fn gen_key(&self, uid: &str, algo: &str) -> String {
        self.gen_key_with(uid, algo, "never", &[])
    }

    fn gen_key_with(&self, uid: &str, algo: &str, expire: &str, extra: &[&str]) -> String {
        let mut args = extra.to_vec();
        args.extend(["--quick-gen-key", uid, algo, "sign", expire]);
        self.run(&args);
        let out = self.run(&["--with-colons", "--list-keys", uid]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .expect("fingerprint in gpg --list-keys output")
    }

    fn export(&self, fpr: &str, armor: bool) -> Vec<u8> {
        let mut args = vec!["--export"];
        if armor {
            args.push("--armor");
        }
        args.push(fpr);
        let out = self.run(&args);
        assert!(!out.stdout.is_empty(), "empty export of {fpr}");
        out.stdout
    }

    /// `gpg --clearsign` of `data` with key `fpr` (plus extra options).
    fn clearsign(&self, fpr: &str, data: &[u8], extra: &[&str]) -> Vec<u8> {
        self.sign_as(fpr, data, extra, "--clearsign", "input.txt")
    }

    fn detach_sign(&self, fpr: &str, data: &[u8], extra: &[&str]) -> Vec<u8> {
        self.sign_as(fpr, data, extra, "--detach-sign", "detached.txt")
    }

    /// Runs `gpg <mode>` on `data` (written to `name`) with key `fpr`.
    fn sign_as(&self, fpr: &str, data: &[u8], extra: &[&str], mode: &str, name: &str) -> Vec<u8> {
        let input = self.path(name);
        let output = self.path(&format!("{name}.out"));
        std::fs::write(&input, data).expect("write input");
        let mut args = vec!["--local-user", fpr];
        args.extend_from_slice(extra);
        args.extend(["--output", output.to_str().expect("utf-8 path"), mode]);
        args.push(input.to_str().expect("utf-8 path"));
        self.run(&args);
        std::fs::read(&output).expect("read gpg output")
    }

    /// Runs `gpgv --keyring <keyring> <files>` and returns whether it
    /// reported a good signature (exit 0).
    fn gpgv(&self, keyring: &[u8], files: &[&[u8]]) -> bool {
        let ring = self.path("gpgv-keyring.gpg");
        std::fs::write(&ring, keyring).expect("write keyring");
        let mut paths = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let p = self.path(&format!("gpgv-input-{i}"));
            std::fs::write(&p, f).expect("write gpgv input");
            paths.push(p);
        }
        let out = Command::new("gpgv")
            .env("GNUPGHOME", self.home.path())
            .arg("--keyring")
            .arg(&ring)
            .args(&paths)
            .output()
            .expect("run gpgv");
        if !out.status.success() {
            eprintln!("gpgv: {}", String::from_utf8_lossy(&out.stderr));
        }
        out.status.success()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A small products-like JSON document with trailing whitespace and lines
/// that start with `-` (which gpg dash-escapes).
const JSON: &str = "{\n  \"content_id\": \"com.ubuntu.maas:stable:v3:download\",   \n\t\"format\": \"products:1.0\",\t\n-\"odd\": \"line starting with a dash\",\n- \"also\": 1,\n-----BEGIN PGP SIGNATURE----- is just text here\n  \"updated\": \"Thu, 01 Jan 2026 00:00:00 +0000\"\n}\n";

/// What the signed text of `JSON` is: trailing blanks and the final line
/// break dropped.
fn expected_body(text: &str) -> Vec<u8> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.trim_end_matches([' ', '\t']))
        .collect();
    lines.join("\n").into_bytes()
}

#[test]
fn fixture_keyrings_load() {
    let ring =
        Keyring::from_file(&fixture("ubuntu-cloudimage-keyring.gpg")).expect("binary keyring");
    assert_eq!(ring.len(), 2);
    assert!(!ring.is_empty());
    assert_eq!(ring.key_ids(), vec!["1A5D6C4C7DB87C81", "7FF3F408476CF100"]);

    let armored = Keyring::from_file(&fixture("uec-key-2025.asc")).expect("armored keyring");
    assert_eq!(armored.key_ids(), vec!["1A5D6C4C7DB87C81"]);
}

#[test]
fn concatenated_keyrings_load() {
    let gpg = Gpg::new();
    let fpr = gpg.gen_key("Extra <extra@example.invalid>", "ed25519");
    let data = read_fixture("ubuntu-noble-SHA256SUMS");
    let sig = read_fixture("ubuntu-noble-SHA256SUMS.gpg");

    // Several armored blocks in one file.
    let mut armored = read_fixture("uec-key-2025.asc");
    armored.extend(gpg.export(&fpr, true));
    let ring = Keyring::from_bytes(&armored).expect("concatenated armored keyring");
    assert_eq!(
        ring.key_ids(),
        vec!["1A5D6C4C7DB87C81".to_string(), fpr[24..].to_string()]
    );
    verify_detached(&ring, &data, &sig).expect("verifies");

    // Binary keyrings concatenated; the UEC key, present in both, is merged.
    let asc = fixture("uec-key-2025.asc");
    let out = gpg.run(&[
        "--dearmor",
        "--output",
        "-",
        asc.to_str().expect("utf-8 path"),
    ]);
    let mut binary = read_fixture("ubuntu-cloudimage-keyring.gpg");
    binary.extend(out.stdout);
    binary.extend(gpg.export(&fpr, false));
    let ring = Keyring::from_bytes(&binary).expect("concatenated binary keyring");
    assert_eq!(
        ring.key_ids(),
        vec![
            "1A5D6C4C7DB87C81".to_string(),
            "7FF3F408476CF100".to_string(),
            fpr[24..].to_string()
        ]
    );
    verify_detached(&ring, &data, &sig).expect("verifies");
}

#[test]
fn fixture_detached_signature_verifies() {
    let data = read_fixture("ubuntu-noble-SHA256SUMS");
    let sig = read_fixture("ubuntu-noble-SHA256SUMS.gpg");
    for ring in ["ubuntu-cloudimage-keyring.gpg", "uec-key-2025.asc"] {
        let keyring = Keyring::from_file(&fixture(ring)).expect("keyring");
        verify_detached(&keyring, &data, &sig).unwrap_or_else(|e| panic!("{ring}: {e}"));

        let mut altered = data.clone();
        altered[100] ^= 0x01;
        let err = verify_detached(&keyring, &altered, &sig).expect_err("altered data must fail");
        assert!(matches!(err, SignatureError::Bad(_)), "{ring}: {err:?}");
    }
}

#[test]
fn fixture_signature_by_key_not_in_keyring_is_unknown() {
    let gpg = Gpg::new();
    let fpr = gpg.gen_key("Other <other@example.invalid>", "ed25519");
    let keyring = Keyring::from_bytes(&gpg.export(&fpr, false)).expect("keyring");
    let data = read_fixture("ubuntu-noble-SHA256SUMS");
    let sig = read_fixture("ubuntu-noble-SHA256SUMS.gpg");
    match verify_detached(&keyring, &data, &sig) {
        Err(SignatureError::UnknownKey(who)) => {
            assert!(who.contains("1A5D6C4C7DB87C81"), "{who}");
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
}

#[test]
fn bad_keyrings_are_errors() {
    assert!(matches!(Keyring::from_bytes(b""), Err(KeyringError::Empty)));
    assert!(matches!(
        Keyring::from_bytes(b" \n"),
        Err(KeyringError::Empty)
    ));
    assert!(matches!(
        Keyring::from_bytes(b"this is not a keyring at all\n"),
        Err(KeyringError::Parse(_))
    ));
    assert!(matches!(
        Keyring::from_bytes(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot base64 !!!\n-----END PGP PUBLIC KEY BLOCK-----\n"),
        Err(KeyringError::Parse(_))
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        Keyring::from_file(&dir.path().join("missing.gpg")),
        Err(KeyringError::Io(_))
    ));
    // A signature is not a keyring.
    assert!(Keyring::from_bytes(&read_fixture("ubuntu-noble-SHA256SUMS.gpg")).is_err());
}

/// The whole clear-signing story for one key algorithm.
fn cleartext_suite(algo: &str) {
    let gpg = Gpg::new();
    let fpr = gpg.gen_key(&format!("Signer {algo} <signer@example.invalid>"), algo);
    let other = gpg.gen_key(&format!("Stranger {algo} <stranger@example.invalid>"), algo);
    let binary = gpg.export(&fpr, false);
    let armored = gpg.export(&fpr, true);
    let keyring = Keyring::from_bytes(&binary).expect("binary export loads");
    let keyring_armored = Keyring::from_bytes(&armored).expect("armored export loads");
    assert_eq!(keyring.key_ids(), keyring_armored.key_ids());
    assert_eq!(keyring.key_ids(), vec![fpr[24..].to_string()]);

    // Good signature; the signed text comes back exactly.
    let signed = gpg.clearsign(&fpr, JSON.as_bytes(), &[]);
    assert!(
        String::from_utf8_lossy(&signed).contains("\n- -\"odd\""),
        "gpg dash-escapes"
    );
    let body = verify_cleartext(&keyring, &signed).expect("good signature");
    assert_eq!(
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&expected_body(JSON))
    );
    assert_eq!(
        verify_cleartext(&keyring_armored, &signed).expect("armored keyring"),
        body
    );
    assert_eq!(cleartext_body(&signed).expect("body"), body);

    // Tampered: one JSON byte changed.
    let text = String::from_utf8(signed.clone()).expect("utf-8");
    let tampered = text.replacen("products:1.0", "products:1.1", 1);
    assert_ne!(tampered, text);
    let err = verify_cleartext(&keyring, tampered.as_bytes()).expect_err("tampered");
    assert!(matches!(err, SignatureError::Bad(_)), "{err:?}");
    // Unverified extraction still works on it.
    assert!(cleartext_body(tampered.as_bytes()).is_ok());

    // Signed by a key not in the keyring.
    let foreign = gpg.clearsign(&other, JSON.as_bytes(), &[]);
    match verify_cleartext(&keyring, &foreign) {
        Err(SignatureError::UnknownKey(who)) => {
            assert!(who.contains(&other[24..]), "{who} should name {other}");
        }
        r => panic!("expected UnknownKey, got {r:?}"),
    }
    // Signed by both: one known signer is enough.
    let both = gpg.clearsign(&other, JSON.as_bytes(), &["--local-user", &fpr]);
    assert_eq!(
        verify_cleartext(&keyring, &both).expect("one good signer"),
        body
    );

    // Not signed at all.
    let err = verify_cleartext(&keyring, JSON.as_bytes()).expect_err("unsigned");
    assert!(matches!(err, SignatureError::Unsigned), "{err:?}");

    // Truncated signature block.
    let cut = text.find("-----END PGP SIGNATURE-----").expect("END line");
    let truncated = &text[..cut - 20];
    let err = verify_cleartext(&keyring, truncated.as_bytes()).expect_err("truncated");
    assert!(matches!(err, SignatureError::Malformed(_)), "{err:?}");
    // Truncated base64, END line intact.
    let sig_start = text
        .find("-----BEGIN PGP SIGNATURE-----")
        .expect("BEGIN line");
    let b64_start = sig_start + text[sig_start..].find("\n\n").expect("blank line") + 2;
    let garbled = format!(
        "{}{}\n{}",
        &text[..b64_start],
        &text[b64_start..b64_start + 30],
        &text[cut..]
    );
    let err = verify_cleartext(&keyring, garbled.as_bytes()).expect_err("garbled");
    assert!(matches!(err, SignatureError::Malformed(_)), "{err:?}");
    // Not base64 at all.
    let garbled = format!("{}@@@ not base64 @@@\n{}", &text[..b64_start], &text[cut..]);
    let err = verify_cleartext(&keyring, garbled.as_bytes()).expect_err("garbled");
    assert!(matches!(err, SignatureError::Malformed(_)), "{err:?}");

    // Several armor headers: all skipped, none leaks into the text.
    let headers = text.replacen(
        "-----BEGIN PGP SIGNED MESSAGE-----\n",
        "-----BEGIN PGP SIGNED MESSAGE-----\nComment: first\nHash: SHA256\nHash: SHA512\n",
        1,
    );
    assert_eq!(
        verify_cleartext(&keyring, headers.as_bytes()).expect("extra headers"),
        body
    );
    assert_eq!(
        cleartext_body(headers.as_bytes()).expect("extra headers"),
        body
    );

    // CRLF line endings in the signed file: kept in the text, not converted.
    let crlf_json = JSON.replace('\n', "\r\n");
    let signed_crlf = gpg.clearsign(&fpr, crlf_json.as_bytes(), &[]);
    let body_crlf = verify_cleartext(&keyring, &signed_crlf).expect("CRLF document");
    let expected_crlf = String::from_utf8(expected_body(JSON))
        .expect("utf-8")
        .replace('\n', "\r\n");
    assert_eq!(String::from_utf8_lossy(&body_crlf), expected_crlf);
    assert_eq!(cleartext_body(&signed_crlf).expect("CRLF body"), body_crlf);
    // The whole clear-signed file converted to CRLF (e.g. by a transfer).
    let all_crlf = text.replace('\n', "\r\n");
    assert_eq!(
        verify_cleartext(&keyring, all_crlf.as_bytes()).expect("CRLF framing"),
        expected_crlf.as_bytes()
    );

    // Detached signatures, binary and armored, binary and text mode.
    let data = JSON.replace('\n', "\r\n").into_bytes();
    for extra in [
        &[][..],
        &["--armor"][..],
        &["--textmode"][..],
        &["--textmode", "--armor"][..],
    ] {
        let sig = gpg.detach_sign(&fpr, &data, extra);
        verify_detached(&keyring, &data, &sig).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        let mut altered = data.clone();
        altered[5] ^= 0x20;
        let err = verify_detached(&keyring, &altered, &sig).expect_err("altered");
        assert!(matches!(err, SignatureError::Bad(_)), "{extra:?}: {err:?}");
    }
    let err = verify_detached(&keyring, &data, b"garbage").expect_err("garbage signature");
    assert!(matches!(err, SignatureError::Malformed(_)), "{err:?}");
}

#[test]
fn gnupg_rsa3072_cleartext() {
    cleartext_suite("rsa3072");
}

#[test]
fn gnupg_ed25519_cleartext() {
    cleartext_suite("ed25519");
}

#[test]
fn sha1_data_signature_is_rejected() {
    let gpg = Gpg::new();
    let fpr = gpg.gen_key("SHA1 <sha1@example.invalid>", "rsa2048");
    let keyring = Keyring::from_bytes(&gpg.export(&fpr, false)).expect("keyring");
    let good = gpg.clearsign(&fpr, JSON.as_bytes(), &["--digest-algo", "SHA256"]);
    verify_cleartext(&keyring, &good).expect("SHA-256 is fine");
    let weak = gpg.clearsign(&fpr, JSON.as_bytes(), &["--digest-algo", "SHA1"]);
    assert!(String::from_utf8_lossy(&weak).contains("Hash: SHA1"));
    let err = verify_cleartext(&keyring, &weak).expect_err("SHA-1 data signature");
    assert!(matches!(err, SignatureError::Bad(_)), "{err:?}");
}

#[test]
fn signature_made_before_key_expired_is_good_like_gpgv() {
    let gpg = Gpg::new();
    let fpr = gpg.gen_key_with(
        "Expired <expired@example.invalid>",
        "ed25519",
        "2d",
        &["--faked-system-time", "20200101T000000"],
    );
    let signed = gpg.clearsign(
        &fpr,
        JSON.as_bytes(),
        &["--faked-system-time", "20200101T010000"],
    );
    let binary = gpg.export(&fpr, false);
    assert!(gpg.gpgv(&binary, &[&signed]), "gpgv accepts it");
    let keyring = Keyring::from_bytes(&binary).expect("keyring");
    assert_eq!(
        verify_cleartext(&keyring, &signed).expect("good"),
        expected_body(JSON)
    );
}

#[test]
fn large_document_verifies() {
    let gpg = Gpg::new();
    let fpr = gpg.gen_key("Large <large@example.invalid>", "ed25519");
    let keyring = Keyring::from_bytes(&gpg.export(&fpr, false)).expect("keyring");
    let mut json = String::with_capacity(21 << 20);
    json.push_str("{\n \"products\": {\n");
    let mut i = 0u64;
    while json.len() < 20 << 20 {
        json.push_str(&format!(
            "  \"com.ubuntu.maas:v3:boot:{i}\": {{\"sha256\": \"{:064x}\", \"size\": {i}, \"path\": \"-x/{i}\"}},\n",
            i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ));
        if i.is_multiple_of(7) {
            json.push_str("-- a line gpg dash-escapes\n");
        }
        i += 1;
    }
    json.push_str("  \"end\": {}\n }\n}\n");
    let signed = gpg.clearsign(&fpr, json.as_bytes(), &[]);
    let body = verify_cleartext(&keyring, &signed).expect("large document verifies");
    assert_eq!(body.len(), json.len() - 1);
    assert!(
        body == json.as_bytes()[..json.len() - 1],
        "large body differs"
    );
    let mut tampered = signed.clone();
    let pos = tampered.len() / 2;
    tampered[pos] = if tampered[pos] == b'1' { b'2' } else { b'1' };
    assert!(matches!(
        verify_cleartext(&keyring, &tampered),
        Err(SignatureError::Bad(_))
    ));
}

#[test]
fn signing_key_round_trip_with_gnupg() {
    let key = SigningKey::generate("Demo Stream <demo@example.invalid>").expect("generate");
    let binary = key.public_keyring_binary().expect("binary export");
    let armored = key.public_keyring_armored().expect("armored export");
    assert!(armored.starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    let ring = Keyring::from_bytes(&binary).expect("binary keyring loads");
    let ring_armored = Keyring::from_bytes(&armored).expect("armored keyring loads");
    assert_eq!(ring.key_ids(), ring_armored.key_ids());

    let text = "{\n  \"a\": 1,\n-\"dash\": 2,\n- \"dash space\": 3,\n  \"ws\": 4  \n}\n\n";
    let signed = key.clearsign(text.as_bytes()).expect("clearsign");
    let body = verify_cleartext(&ring, &signed).expect("verifies with our verifier");
    // Unchanged but for trailing blanks (final line breaks are kept).
    assert_eq!(String::from_utf8_lossy(&body), text.replace("4  \n", "4\n"));
    assert_eq!(
        verify_cleartext(&ring_armored, &signed).expect("armored"),
        body
    );
    let no_newline = key.clearsign(b"{}").expect("clearsign");
    assert_eq!(
        verify_cleartext(&ring, &no_newline).expect("verifies"),
        b"{}"
    );

    // Real gpgv accepts it with the binary keyring.
    let gpg = Gpg::new();
    assert!(
        gpg.gpgv(&binary, &[&signed]),
        "gpgv verifies SigningKey output"
    );
    // And detects tampering (so the check above means something).
    let tampered = String::from_utf8(signed.clone())
        .expect("utf-8")
        .replacen("\"a\": 1", "\"a\": 2", 1);
    assert!(
        !gpg.gpgv(&binary, &[tampered.as_bytes()]),
        "gpgv rejects tampered output"
    );

    // The armored export imports into GnuPG, which then verifies too.
    let asc = gpg.path("demo.asc");
    std::fs::write(&asc, &armored).expect("write armored key");
    gpg.run(&["--import", asc.to_str().expect("utf-8 path")]);
    let sjson = gpg.path("demo.sjson");
    std::fs::write(&sjson, &signed).expect("write signed");
    gpg.run(&["--verify", sjson.to_str().expect("utf-8 path")]);

    // A different generated key is unknown to this keyring.
    let other = SigningKey::generate("Other <other@example.invalid>").expect("generate");
    let foreign = other.clearsign(text.as_bytes()).expect("clearsign");
    assert!(matches!(
        verify_cleartext(&ring, &foreign),
        Err(SignatureError::UnknownKey(_))
    ));
}
