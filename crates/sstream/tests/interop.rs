//! Interoperability of the served mirror with its clients: a mirror made by
//! our `sstream-mirror`, served by `sstream serve`, read by the reference's
//! `sstream-query` and `sstream-mirror` (how MAAS up to 3.7 imports) with the
//! keyring, by `curl` (Range, HEAD, conditional requests) and by a headless
//! Chromium (the landing page and a listing, as an operator sees them).

mod support;

use sha2::{Digest, Sha256};
use simplestreams::sample::{SampleRelease, SampleSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use support::*;

/// A signed stream mirrored by us with the MAAS documentation's two command
/// lines, and our server in front of the mirror.
struct Mirrored {
    gpg: Gpg,
    _tmp: tempfile::TempDir,
    mirror: std::path::PathBuf,
    served: Server,
}

fn mirrored() -> Mirrored {
    let gpg = Gpg::new();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let spec = SampleSpec {
        releases: vec![
            SampleRelease::new("trusty", "14.04"),
            SampleRelease::new("xenial", "16.04"),
            SampleRelease::new("jammy", "22.04"),
        ],
        versions: vec!["20250601".into(), "20250701".into()],
        payload_bytes: 32 * 1024,
        ..SampleSpec::default()
    };
    gpg.generate(&spec, &src);
    let upstream = Server::start(&src);
    let mirror = tmp.path().join("mirror");
    let k = format!("--keyring={}", gpg.keyring.display());
    let out = mirror.to_string_lossy().into_owned();
    for filters in [
        &["arch=amd64", "release~(trusty|xenial)"][..],
        &["os~(grub*|pxelinux)"][..],
    ] {
        let mut a = args(&[&k, &upstream.url, &out]);
        a.extend(args(filters));
        a.extend(args(&["--max=1", "--progress"]));
        run_ok(&ours_mirror(), &gpg.verify_home, &a);
    }
    let served = Server::start(&mirror);
    Mirrored {
        gpg,
        _tmp: tmp,
        mirror,
        served,
    }
}

fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "-S", "-D", "-", "-o", "/dev/stderr"])
        .args(args)
        .output()
        .expect("curl is installed by scripts/test.sh");
    assert!(out.status.success(), "curl {args:?} failed");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.stderr,
    )
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// What MAAS does: the reference's `sstream-query` reads the mirror through
/// our server, verifying every document with the keyring; the newest version
/// of each selected Ubuntu product has a kernel, an initrd, a manifest and a
/// squashfs, and every one of them downloads through the server with the
/// advertised size and sha256.
#[test]
fn reference_query_reads_the_served_mirror() {
    let m = mirrored();
    let k = format!("--keyring={}", m.gpg.keyring.display());
    let query = reference().join("sstream-query");
    let out = run_ok(
        &query,
        &m.gpg.verify_home,
        &args(&[
            &k,
            &m.served.url,
            "arch=amd64",
            "release~(trusty|xenial)",
            "--max=1",
            "--json",
        ]),
    );
    let items: Vec<BTreeMap<String, String>> = serde_json::from_slice(&out.stdout).unwrap();
    let mut ftypes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for it in &items {
        ftypes
            .entry(it["product_name"].clone())
            .or_default()
            .insert(it["ftype"].clone());
        assert_eq!(it["version_name"], "20250701", "newest only");
        let (headers, body) = curl(&[&it["item_url"]]);
        assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
        assert_eq!(body.len().to_string(), it["size"], "{}", it["item_url"]);
        assert_eq!(
            hex(&Sha256::digest(&body)),
            it["sha256"],
            "{}",
            it["item_url"]
        );
    }
    assert_eq!(
        ftypes.len(),
        4,
        "ga and hwe of trusty and xenial: {ftypes:?}"
    );
    for (product, kinds) in &ftypes {
        for want in ["boot-kernel", "boot-initrd", "manifest", "squashfs"] {
            assert!(kinds.contains(want), "{product} lacks {want}: {kinds:?}");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The reference's `sstream-mirror` mirrors from our served mirror (a
/// second-tier mirror, or MAAS up to 3.7 importing) and gets our tree.
#[test]
fn reference_mirror_copies_the_served_mirror() {
    let m = mirrored();
    let k = format!("--keyring={}", m.gpg.keyring.display());
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("copy");
    let out = copy.to_string_lossy().into_owned();
    for filters in [
        &["arch=amd64", "release~(trusty|xenial)"][..],
        &["os~(grub*|pxelinux)"][..],
    ] {
        let mut a = args(&[&k, &m.served.url, &out]);
        a.extend(args(filters));
        a.push("--max=1".into());
        run_ok(&reference_mirror(), &m.gpg.verify_home, &a);
    }
    compare_trees(&m.mirror, &copy);
}

/// Range, HEAD and conditional requests as `curl` makes them.
#[test]
fn curl_range_head_and_conditional() {
    let m = mirrored();
    let squashfs = files(&m.mirror)
        .into_iter()
        .find(|f| f.ends_with("/squashfs"))
        .unwrap();
    let url = format!("{}{squashfs}", m.served.url);
    let full = std::fs::read(m.mirror.join(&squashfs)).unwrap();

    let (h, body) = curl(&["-r", "100-199", &url]);
    assert!(h.starts_with("HTTP/1.1 206"), "{h}");
    assert_eq!(body, &full[100..200]);
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes 100-199/{}", full.len()).as_str())
    );

    // (With -I curl writes the headers where the body would go.)
    let (h, _) = curl(&["-I", &url]);
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert_eq!(
        header(&h, "content-length"),
        Some(full.len().to_string().as_str())
    );
    let etag = header(&h, "etag").expect("an ETag").to_owned();
    let modified = header(&h, "last-modified")
        .expect("a Last-Modified")
        .to_owned();

    let (h, body) = curl(&["-H", &format!("If-None-Match: {etag}"), &url]);
    assert!(h.starts_with("HTTP/1.1 304"), "{h}");
    assert!(body.is_empty());
    let (h, _) = curl(&["-H", &format!("If-Modified-Since: {modified}"), &url]);
    assert!(h.starts_with("HTTP/1.1 304"), "{h}");
    // A resume whose validator no longer matches gets the whole file.
    let (h, body) = curl(&["-r", "100-", "-H", "If-Range: \"stale\"", &url]);
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert_eq!(body, full);
    // State and partial downloads are not served.
    let (h, _) = curl(&[&format!("{}.data/references.json", m.served.url)]);
    assert!(h.starts_with("HTTP/1.1 404"), "{h}");
}

/// Renders `url` in headless Chromium and returns the DOM.
fn chromium_dom(url: &str, profile: &Path) -> String {
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("chromium is installed by scripts/test.sh");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            url,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs headless Chromium with `args` (after the common ones) and gives its
/// stdout.
fn chromium(profile: &Path, args: &[&str]) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("chromium is installed by scripts/test.sh");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The landing page as an operator reads it on a desktop (1280 px) and a
/// phone (390 px): screenshots of both (kept under `target/screenshots`),
/// no horizontal overflow on the phone (the page's own scroll width, read
/// by a same-origin page that frames it), the images by os, release, arch
/// and kernel flavour, the upstream URL and the last sync.
#[test]
fn landing_page_reads_on_a_desktop_and_a_phone() {
    let m = mirrored();
    let profile = tempfile::tempdir().unwrap();
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    for (name, width) in [("landing-desktop.png", 1280), ("landing-phone.png", 390)] {
        let shot = shots.join(name);
        let _ = std::fs::remove_file(&shot);
        chromium(
            profile.path(),
            &[
                &format!("--window-size={width},2400"),
                &format!("--screenshot={}", shot.display()),
                &m.served.url,
            ],
        );
        let png = std::fs::read(&shot).expect("a screenshot");
        assert_eq!(&png[1..4], b"PNG", "{name}");
        let shot_width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        assert_eq!(shot_width, width, "{name}");
    }

    std::fs::write(
        m.mirror.join("width-check.html"),
        "<!DOCTYPE html><html><body style=\"margin:0\">\
         <iframe id=\"f\" src=\"/\" style=\"width:390px;height:800px;border:0\"></iframe>\
         <script>document.getElementById('f').addEventListener('load', function () {\
           var d = this.contentDocument.documentElement;\
           var p = document.createElement('pre'); p.id = 'widths';\
           p.textContent = 'scroll=' + d.scrollWidth + ' client=' + d.clientWidth;\
           document.body.appendChild(p); });</script></body></html>",
    )
    .unwrap();
    let dom = chromium(
        profile.path(),
        &[
            "--virtual-time-budget=10000",
            "--dump-dom",
            &format!("{}width-check.html", m.served.url),
        ],
    );
    let widths = dom
        .split("id=\"widths\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or_else(|| panic!("the check page did not run: {dom}"));
    let width = |key: &str| -> u32 {
        widths
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {widths}"))
    };
    assert_eq!(width("client="), 390, "{widths}");
    assert!(
        width("scroll=") <= width("client="),
        "the landing page overflows a phone's width: {widths}"
    );

    let page = chromium_dom(&m.served.url, profile.path());
    for header in ["OS", "Release", "Arch", "Kernel flavour", "Version", "Age"] {
        assert!(page.contains(&format!("<th>{header}</th>")), "{header}");
    }
    assert!(
        page.contains(
            "<td>ubuntu</td><td>xenial</td><td>amd64</td><td>ga-16.04</td><td>20250701</td>"
        ),
        "{page}"
    );
    assert!(page.contains("<th>Upstream</th>"), "{page}");
    assert!(page.contains("Last sync (mirror)"), "{page}");
    // Upstream's documents, published as they are by a --max=1 mirror,
    // still offer the older version (20250601) it does not hold.
    assert!(
        page.contains("the served metadata offers ")
            && page.contains(" this mirror does not hold")
            && page.contains("<code>--sign-key</code>"),
        "{page}"
    );
}

/// The `href` targets of a rendered page.
fn links(dom: &str) -> Vec<String> {
    dom.split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(|s| s.replace("&amp;", "&"))
        .collect()
}

/// An operator "verifies the availability of the images by visiting the
/// URL": the landing page shows the boot-source URL and the mirrored
/// products, a listing shows the files, and every link resolves.
#[test]
fn browser_sees_landing_page_and_listing() {
    let m = mirrored();
    let profile = tempfile::tempdir().unwrap();
    let landing = chromium_dom(&m.served.url, profile.path());
    assert!(landing.contains(&m.served.url), "boot-source URL shown");
    // The mirror's status record says which key verified upstream's
    // documents: the test key, not the Ubuntu cloud image key.
    let record = simplestreams::status::read_blocking(
        &simplestreams::store::DirStore::new(&m.mirror),
        "mirror",
    )
    .unwrap()
    .expect("the drop-in's runs left a status record");
    let Some(simplestreams::status::Verified::Keyring(fingerprints)) = &record.verified_with else {
        panic!("verified with the test keyring: {record:?}");
    };
    assert!(landing.contains(&fingerprints[0]), "keyring named");
    assert!(!landing.contains("ubuntu-cloudimage-keyring.gpg"));
    assert!(landing.contains("com.ubuntu.maas.stable:v3:boot:16.04:amd64:ga-16.04"));
    assert!(landing.contains("20250701"), "newest version shown");
    assert!(!landing.contains("22.04:amd64"), "jammy was not mirrored");
    assert!(
        m.mirror.join(".data").read_dir().unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("sstream-cache-")
        }),
        "the mirror has a fetch cache"
    );
    assert!(
        !landing.contains("sstream-cache"),
        "bookkeeping is not a stream"
    );

    let listing_url = format!("{}xenial/amd64/20250701/", m.served.url);
    let listing = chromium_dom(&listing_url, profile.path());
    assert!(listing.contains("squashfs"), "{listing}");
    assert!(listing.contains("ga-16.04"), "{listing}");
    let mut checked = 0;
    for page in [(&m.served.url, &landing), (&listing_url, &listing)] {
        let base = url::Url::parse(page.0).unwrap();
        for href in links(page.1) {
            let target = base.join(&href).unwrap();
            if target.host_str() != Some("127.0.0.1") {
                continue; // never leave loopback
            }
            let (h, _) = curl(&["-I", target.as_str()]);
            assert!(h.starts_with("HTTP/1.1 200"), "{target}: {h}");
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} links checked");
}

/// Our `sstream-query` prints exactly what the reference's prints, in every
/// output mode, over the served mirror.
#[test]
fn query_output_matches_the_reference() {
    let m = mirrored();
    let k = format!("--keyring={}", m.gpg.keyring.display());
    let ours = std::path::PathBuf::from(env!("CARGO_BIN_EXE_sstream-query"));
    let cases: [&[&str]; 6] = [
        &["arch=amd64", "ftype=squashfs"],
        &["release=xenial", "--pretty"],
        &["os~(grub*|pxelinux)", "--json"],
        &[
            "--max=1",
            "-o",
            "%(product_name)s %(version_name)s %(size)8s %(item_url)s",
        ],
        &["release!~trusty", "subarch~^hwe", "--max", "1", "--json"],
        &["release=nothing-matches", "--json"],
    ];
    for case in cases {
        let mut a = args(&[&k, &m.served.url]);
        a.extend(args(case));
        let want = run_ok(&reference().join("sstream-query"), &m.gpg.verify_home, &a);
        let got = run_ok(&ours, &m.gpg.verify_home, &a);
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            String::from_utf8_lossy(&want.stdout),
            "sstream-query {case:?}"
        );
        assert!(!want.stdout.is_empty() || case.contains(&"--json"));
    }
}

/// `sstream-query ... | head -1` ends quietly when the pipe closes.
#[test]
fn query_into_a_closed_pipe_is_quiet() {
    let m = mirrored();
    let k = format!("--keyring={}", m.gpg.keyring.display());
    let script = format!(
        "set -o pipefail; '{}' '{k}' '{}' | head -c 10 >/dev/null",
        env!("CARGO_BIN_EXE_sstream-query"),
        m.served.url
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("GNUPGHOME", &m.gpg.verify_home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The README's first command: `sstream demo` does the whole job offline and
/// prints the boot-source URL.
#[test]
fn demo_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_sstream"))
        .args(["demo", "--dir", &dir.to_string_lossy()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Boot source:   http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("OK: http://127.0.0.1:"),
        "verified over HTTP: {stdout}"
    );
    assert!(stdout.contains("maas $PROFILE boot-resources import"));
    let mirror = dir.join("mirror");
    assert!(mirror.join("streams/v1/index.sjson").is_file());
    let got = files(&mirror);
    assert!(
        got.iter()
            .any(|f| f.starts_with("xenial/amd64/") && f.ends_with("/squashfs"))
    );
    assert!(got.iter().any(|f| f.starts_with("bootloaders/")));
    assert!(
        !got.iter().any(|f| f.starts_with("jammy/")),
        "jammy is not selected"
    );
    // It refuses to replace a directory it did not make.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_sstream"))
        .args(["demo", "--dir", &other.to_string_lossy()])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("was not made by the demo"));
}

/// `sstream` called through a link named like a drop-in (as the Debian
/// package installs `sstream-mirror` and `sstream-query`) is that drop-in:
/// the same version line and help as the drop-in's own binary, and a
/// mirror made through the link equal to one made by the drop-in.
#[test]
fn sstream_called_by_a_drop_in_name_is_that_drop_in() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |exe: &Path, args: &[&str]| {
        let o = Command::new(exe).args(args).output().unwrap();
        assert!(o.status.success(), "{}: {o:?}", exe.display());
        String::from_utf8(o.stdout).unwrap()
    };
    for (name, drop_in) in [
        ("sstream-mirror", env!("CARGO_BIN_EXE_sstream-mirror")),
        ("sstream-query", env!("CARGO_BIN_EXE_sstream-query")),
    ] {
        let link = tmp.path().join(name);
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sstream"), &link).unwrap();
        let version = run(&link, &["--version"]);
        assert_eq!(version, run(Path::new(drop_in), &["--version"]));
        assert!(version.starts_with(&format!("{name} ")), "{version}");
        assert_eq!(
            run(&link, &["--help"]),
            run(Path::new(drop_in), &["--help"])
        );
    }
    let spec = SampleSpec {
        releases: vec![SampleRelease::new("xenial", "16.04")],
        ..SampleSpec::default()
    };
    let src = tmp.path().join("src");
    simplestreams::sample::generate(&spec, &src, None).unwrap();
    let mirror_with = |exe: &Path, out: &str| {
        let dest = tmp.path().join(out);
        run(
            exe,
            &[
                "--no-verify",
                "--path",
                "streams/v1/index.json",
                src.to_str().unwrap(),
                dest.to_str().unwrap(),
            ],
        );
        dest
    };
    let through_link = mirror_with(&tmp.path().join("sstream-mirror"), "via-link");
    assert!(!files(&through_link).is_empty());
    let through_bin = mirror_with(Path::new(env!("CARGO_BIN_EXE_sstream-mirror")), "via-bin");
    compare_trees(&through_link, &through_bin);
}
