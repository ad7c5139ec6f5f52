//! `sstream serve` over HTTPS with a certificate from `sstream tls
//! generate`: real curl and openssl as clients (TLS 1.2 and 1.3), our
//! mirror and verify and the reference `sstream-mirror` trusting the CA
//! through `SSL_CERT_FILE`, the certificate swapped on SIGHUP, and bad
//! certificates and keys refused.

mod support;

use simplestreams::sample::SampleSpec;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::*;

fn sstream(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sstream"))
        .args(args)
        .output()
        .unwrap()
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl").args(args).output().unwrap()
}

/// `curl -sS -v` with `args`; stdout is the body (or `-w` output).
fn curl(ca: &Path, args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "-v", "--noproxy", "*", "--cacert"])
        .arg(ca)
        .args(args)
        .output()
        .unwrap()
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn signal(server: &TlsServer, name: &str) {
    let out = Command::new("kill")
        .args([&format!("-{name}"), &server.pid().to_string()])
        .output()
        .unwrap();
    ok("kill", &out);
}

#[test]
fn generated_certificate_is_a_ca_false_server_certificate_for_every_host() {
    let pki = TestPki::generate();
    let ca = pki.path("ca.pem");
    let chain = pki.path("server.pem");
    let verified = ok(
        "openssl verify",
        &openssl(&[
            "verify",
            "-CAfile",
            &ca.to_string_lossy(),
            &chain.to_string_lossy(),
        ]),
    );
    assert!(verified.contains(": OK"), "{verified}");
    let text = ok(
        "openssl x509",
        &openssl(&["x509", "-noout", "-text", "-in", &chain.to_string_lossy()]),
    );
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("DNS:localhost"), "{text}");
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    // The chain file is the server's certificate, then the CA's.
    let chain_text = fs::read_to_string(&chain).unwrap();
    assert!(chain_text.ends_with(&fs::read_to_string(&ca).unwrap()));
    for key in ["ca.key", "server.key"] {
        let mode = fs::metadata(pki.path(key)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    // Never clobbered without --force.
    let dir = pki.dir().to_string_lossy().into_owned();
    let before = fs::read(pki.path("server.key")).unwrap();
    let again = sstream(&["tls", "generate", "--host", "other", "--out", &dir]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert!(err.contains("ca.pem"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(fs::read(pki.path("server.key")).unwrap(), before);
    let forced = sstream(&[
        "tls", "generate", "--host", "other", "--out", &dir, "--force",
    ]);
    ok("tls generate --force", &forced);
    assert_ne!(fs::read(pki.path("server.key")).unwrap(), before);
}

#[test]
fn curl_over_tls_1_2_and_1_3_gets_what_http_gets() {
    let pki = TestPki::generate();
    let ca = pki.path("ca.pem");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    simplestreams::sample::generate(&SampleSpec::default(), &src, None).unwrap();
    let server = TlsServer::start(&src, &pki.path("server.pem"), &pki.path("server.key"));
    let file = "streams/v1/index.json";
    let want = fs::read(src.join(file)).unwrap();

    for (version, flags) in [
        ("TLSv1.2", &["--tlsv1.2", "--tls-max", "1.2"][..]),
        ("TLSv1.3", &["--tlsv1.3"][..]),
    ] {
        let url = format!("{}{file}", server.https_url);
        let get = curl(&ca, &[flags, &[url.as_str()]].concat());
        ok("curl GET", &get);
        assert_eq!(get.stdout, want, "{version}");
        let log = String::from_utf8_lossy(&get.stderr);
        assert!(log.contains(&format!("using {version}")), "{log}");

        let head = curl(&ca, &[flags, &["-I", url.as_str()]].concat());
        let head = ok("curl HEAD", &head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", want.len())),
            "{head}"
        );
        let etag = head
            .lines()
            .find_map(|l| l.strip_prefix("etag: "))
            .map(|e| e.trim().to_owned())
            .expect("an ETag");

        let range = curl(
            &ca,
            &[flags, &["-r", "1-4", "-w", "\n%{http_code}", url.as_str()]].concat(),
        );
        let body = ok("curl range", &range);
        let mut expect = String::from_utf8_lossy(&want[1..5]).into_owned();
        expect.push_str("\n206");
        assert_eq!(body, expect);

        let inm = format!("If-None-Match: {etag}");
        let cond = curl(
            &ca,
            &[
                flags,
                &["-H", inm.as_str(), "-w", "%{http_code}", url.as_str()],
            ]
            .concat(),
        );
        assert_eq!(ok("curl If-None-Match", &cond), "304");

        let landing = curl(&ca, &[flags, &[server.https_url.as_str()]].concat());
        let page = ok("curl landing page", &landing);
        assert!(page.contains("<html"), "{page}");
        // It tells MAAS the https:// URL it was reached by.
        let source = format!("{}streams/v1/index.json", server.https_url);
        assert!(page.contains(&source), "{page}");
    }
    // Plain HTTP beside it serves the same.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            &format!("{}{file}", server.http_url),
        ])
        .output()
        .unwrap();
    ok("curl over http", &plain);
    assert_eq!(plain.stdout, want);
}

/// `tool --no-verify --path streams/v1/index.json SOURCE OUT arch=amd64
/// --max=1`, trusting `ca` only.
fn mirror(tool: &Path, ca: &Path, source: &str, out: &Path) -> Output {
    Command::new(tool)
        .args(["--no-verify", "--path", "streams/v1/index.json"])
        .args([source, &out.to_string_lossy(), "arch=amd64", "--max=1"])
        .env_remove("SSL_CERT_DIR")
        .env("SSL_CERT_FILE", ca)
        .output()
        .unwrap()
}

#[test]
fn our_tools_and_the_reference_mirror_and_verify_over_https() {
    let pki = TestPki::generate();
    let ca = pki.path("ca.pem");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    simplestreams::sample::generate(&SampleSpec::default(), &src, None).unwrap();
    let server = TlsServer::start(&src, &pki.path("server.pem"), &pki.path("server.key"));

    let (ours, theirs) = (tmp.path().join("ours"), tmp.path().join("theirs"));
    ok(
        "sstream-mirror",
        &mirror(&ours_mirror(), &ca, &server.https_url, &ours),
    );
    ok(
        "reference sstream-mirror",
        &mirror(&reference_mirror(), &ca, &server.https_url, &theirs),
    );
    compare_trees(&theirs, &ours);
    assert!(files(&ours).iter().any(|f| f.ends_with("/squashfs")));

    let verify = Command::new(env!("CARGO_BIN_EXE_sstream"))
        .args([
            "verify",
            "--no-verify",
            "--path",
            "streams/v1/index.json",
            "--full",
        ])
        .arg(&server.https_url)
        .env_remove("SSL_CERT_DIR")
        .env("SSL_CERT_FILE", &ca)
        .output()
        .unwrap();
    let report = ok("sstream verify", &verify);
    assert!(report.starts_with("OK: "), "{report}");
    assert!(report.contains(" 0 error(s)"), "{report}");
}

/// Copies the four files of `from` over `to`.
fn install(from: &TestPki, to: &Path) {
    for name in ["ca.pem", "ca.key", "server.pem", "server.key"] {
        fs::copy(from.path(name), to.join(name)).unwrap();
    }
}

#[test]
fn sighup_gives_new_connections_the_new_certificate_and_keeps_open_ones() {
    let old = TestPki::generate();
    let new = TestPki::generate();
    let live = tempfile::tempdir().unwrap();
    install(&old, live.path());
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let big: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(src.join("big.bin"), &big).unwrap();
    let server = TlsServer::start(
        &src,
        &live.path().join("server.pem"),
        &live.path().join("server.key"),
    );
    let url = format!("{}big.bin", server.https_url);

    // A slow download, under way before the reload.
    let got = tmp.path().join("got.bin");
    let mut slow = Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--limit-rate", "400k", "--cacert"])
        .arg(old.path("ca.pem"))
        .arg("-o")
        .arg(&got)
        .arg(&url)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    while fs::metadata(&got).map_or(0, |m| m.len()) == 0 {
        assert!(
            slow.try_wait().unwrap().is_none(),
            "the download ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    install(&new, live.path());
    signal(&server, "HUP");
    server.wait_for_log("serve: SIGHUP: reloaded the certificate");

    // New connections see the new certificate: the old CA no longer
    // vouches for it, the new one does.
    let small = format!("{}big.bin", server.https_url);
    let refused = curl(&old.path("ca.pem"), &["-r", "0-9", &small]);
    assert_eq!(
        refused.status.code(),
        Some(60),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let fresh = curl(&new.path("ca.pem"), &["-r", "0-9", &small]);
    ok("curl with the new CA", &fresh);
    assert_eq!(fresh.stdout, &big[..10]);

    // The download opened before completes, whole.
    let status = slow.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(fs::read(&got).unwrap(), big);
    assert!(!server.stderr().contains("stopping"), "{}", server.stderr());

    // A key that does not match on reload: logged, the certificate kept.
    let other = TestPki::generate();
    fs::copy(other.path("server.key"), live.path().join("server.key")).unwrap();
    signal(&server, "HUP");
    let log = server.wait_for_log("keeping the certificate in use");
    let line = log
        .lines()
        .find(|l| l.contains("keeping the certificate in use"))
        .unwrap();
    assert!(line.contains("does not match the certificate"), "{line}");
    assert!(
        line.contains(&live.path().join("server.key").display().to_string()),
        "{line}"
    );
    let still = curl(&new.path("ca.pem"), &["-r", "0-9", &small]);
    ok("curl after a failed reload", &still);

    // An unreadable file on reload: the same.
    fs::write(live.path().join("server.pem"), "not a certificate\n").unwrap();
    signal(&server, "HUP");
    let log = server.wait_for_log("no PEM certificate");
    assert!(
        log.contains(&live.path().join("server.pem").display().to_string()),
        "{log}"
    );
    ok(
        "curl after a bad chain",
        &curl(&new.path("ca.pem"), &["-r", "0-9", &small]),
    );

    // SIGTERM still stops it.
    signal(&server, "TERM");
    server.wait_for_log("serve: stopped (SIGTERM)");
}

/// Starts `sstream serve` with the given chain and key; it must refuse.
fn refused_at_start(cert: &Path, key: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sstream"))
        .arg("serve")
        .arg(dir.path())
        .args(["--listen-tls", "127.0.0.1:0", "--tls-cert"])
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "served with {cert:?} {key:?}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn a_bad_certificate_or_key_is_refused_at_start_with_one_line() {
    let pki = TestPki::generate();
    let other = TestPki::generate();
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let garbage = tmp.path().join("garbage.pem");
    fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let empty = tmp.path().join("empty.pem");
    fs::write(&empty, "").unwrap();
    let missing = tmp.path().join("missing.pem");

    let err = refused_at_start(&cert, &other.path("server.key"));
    assert!(err.contains("does not match the certificate"), "{err}");
    assert!(
        err.contains(&other.path("server.key").display().to_string()),
        "{err}"
    );

    let err = refused_at_start(&missing, &key);
    assert!(
        err.contains(&format!("cannot read {}", missing.display())),
        "{err}"
    );

    let err = refused_at_start(&garbage, &key);
    assert!(err.contains(&garbage.display().to_string()), "{err}");

    let err = refused_at_start(&empty, &key);
    assert!(
        err.contains(&format!("{}: no PEM certificate", empty.display())),
        "{err}"
    );

    let err = refused_at_start(&cert, &empty);
    assert!(
        err.contains(&format!("{}: no PEM private key", empty.display())),
        "{err}"
    );

    // The CA certificate with the server's key: not its key.
    let err = refused_at_start(&pki.path("ca.pem"), &key);
    assert!(err.contains("does not match"), "{err}");

    // --listen-tls without a certificate: a usage error.
    let dir = tmp.path().to_string_lossy().into_owned();
    let out = sstream(&["serve", &dir, "--listen-tls", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-cert"), "{err}");
}
