//! HTTPS sources, as images.maas.io is: a private CA made with `openssl`,
//! Python's standard HTTPS file server as the peer (on 127.0.0.1), the CA
//! trusted through `SSL_CERT_FILE` (honoured by us and by the reference).

mod support;

use simplestreams::sample::SampleSpec;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use support::*;

/// A certificate authority and a server certificate for 127.0.0.1.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=sstream test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            dir.path().join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A Python server on 127.0.0.1: HTTPS serving `dir`, or (without `dir`)
/// plain HTTP answering every GET with a redirect to `redirect_to`.
struct PyServer {
    child: Child,
    url: String,
}

const SERVER: &str = r#"
import http.server, ssl, sys, functools
mode = sys.argv[1]
if mode == "https":
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    scheme = "https"
else:
    target = sys.argv[2]
    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(301)
            self.send_header("Location", target + self.path.lstrip("/"))
            self.send_header("Content-Length", "0")
            self.end_headers()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    scheme = "http"
print(f"{scheme}://127.0.0.1:{httpd.server_address[1]}/", flush=True)
httpd.serve_forever()
"#;

impl PyServer {
    fn start(args: &[&str]) -> PyServer {
        let mut child = Command::new("python3")
            .args(["-c", SERVER])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("http"), "server said {line:?}");
        PyServer {
            child,
            url: line.trim().to_owned(),
        }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mirror(tool: &Path, ca: Option<&Path>, source: &str, out: &Path) -> Output {
    let mut cmd = Command::new(tool);
    cmd.args(["--no-verify", "--path", "streams/v1/index.json"])
        .args([source, &out.to_string_lossy(), "arch=amd64", "--max=1"])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    if let Some(ca) = ca {
        cmd.env("SSL_CERT_FILE", ca);
    }
    cmd.output().unwrap()
}

/// A sample stream under `dir`, served over HTTPS with the PKI's leaf.
fn sample_over_https(pki: &Pki, dir: &Path) -> PyServer {
    let src = dir.join("src");
    simplestreams::sample::generate(&SampleSpec::default(), &src, None).unwrap();
    PyServer::start(&[
        "https",
        &src.to_string_lossy(),
        &pki.path("leaf.pem").to_string_lossy(),
        &pki.path("leaf.key").to_string_lossy(),
    ])
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn https_source_with_a_trusted_ca() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let server = sample_over_https(&pki, tmp.path());
    let ca = pki.path("ca.pem");

    let (ours, theirs) = (tmp.path().join("ours"), tmp.path().join("theirs"));
    let out = mirror(&ours_mirror(), Some(&ca), &server.url, &ours);
    assert_ok(&out);
    let out = mirror(&reference_mirror(), Some(&ca), &server.url, &theirs);
    assert_ok(&out);
    compare_trees(&theirs, &ours);
    assert!(files(&ours).iter().any(|f| f.ends_with("/squashfs")));

    // An http:// source that redirects to the https one is followed.
    let redirect = PyServer::start(&["redirect", &server.url]);
    let via = tmp.path().join("via-redirect");
    let out = mirror(&ours_mirror(), Some(&ca), &redirect.url, &via);
    assert_ok(&out);
    compare_trees(&theirs, &via);
}

#[test]
fn untrusted_certificate_fails_at_once_with_a_clear_error() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let server = sample_over_https(&pki, tmp.path());
    let out_dir = tmp.path().join("out");
    let out = mirror(&ours_mirror(), None, &server.url, &out_dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS certificate not trusted"), "{err}");
    assert!(
        err.contains(&format!("{}streams/v1/index.json", server.url)),
        "{err}"
    );
    assert!(
        !err.contains("retrying"),
        "a bad certificate is not retried: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!out_dir.join("streams").exists());
}

/// `sstream verify DIR-or-URL`, trusting `ca` only.
fn verify(ca: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sstream"))
        .arg("verify")
        .args(["--no-verify", "--path", "streams/v1/index.json"])
        .args(args)
        .env_remove("SSL_CERT_DIR")
        .env("SSL_CERT_FILE", ca)
        .output()
        .unwrap()
}

#[test]
fn verify_over_https_and_through_a_redirect_to_it() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let server = sample_over_https(&pki, tmp.path());
    let ca = pki.path("ca.pem");
    // HEAD probes and hashing, over TLS.
    let out = verify(&ca, &["--full", &server.url]);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("OK: "), "{stdout}");
    assert!(stdout.contains(" 0 error(s)"), "{stdout}");

    // The redirecting server answers HEAD with 501: the probes fall back to
    // GET, and the redirect to https is handed over to the TLS client.
    let redirect = PyServer::start(&["redirect", &server.url]);
    let out = verify(&ca, &["--full", &redirect.url]);
    assert_ok(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        stdout.replace(&server.url, &redirect.url)
    );
}
