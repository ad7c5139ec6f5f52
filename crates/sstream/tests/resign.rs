//! Re-signed mirrors (`--sign-key`): the published metadata lists exactly
//! what the mirror holds, signed with a local key. GnuPG's `gpgv` is the
//! verifier; the reference's `sstream-query` and `sstream-mirror` read the
//! result as MAAS would; switching to and from upstream-signed publishing
//! converges.
//!
//! Needs `gpg`, `gpgv` and the reference tools (scripts/test.sh installs
//! them).

mod support;

use serde_json::Value;
use simplestreams::sample::{SampleRelease, SampleSpec};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::gpgv;
use support::{Gpg, Server, args, ours_mirror, reference, run_ok};
use tempfile::TempDir;

fn spec(versions: &[&str]) -> SampleSpec {
    SampleSpec {
        releases: vec![
            SampleRelease::new("focal", "20.04"),
            SampleRelease::new("jammy", "22.04"),
            SampleRelease::new("noble", "24.04"),
        ],
        arches: vec!["amd64".into(), "arm64".into()],
        versions: versions.iter().map(|s| s.to_string()).collect(),
        bootloader_versions: vec!["20230222.0".into()],
        payload_bytes: 4096,
        ..SampleSpec::default()
    }
}

fn sstream(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sstream"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(what: &str, o: &Output) {
    assert!(
        o.status.success(),
        "{what}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A local key and its exported binary keyring.
fn local_key(tmp: &Path) -> (PathBuf, PathBuf) {
    let (key, ring) = (tmp.join("mirror-key.asc"), tmp.join("mirror-keyring.gpg"));
    support::our_key(&key, &ring, &[]);
    (key, ring)
}

/// The signed metadata files of a mirror.
fn signed_files(out: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(out.join("streams/v1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".sjson") || n.ends_with(".json.gpg")
        })
        .collect();
    v.sort();
    v
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

/// Every item a products document lists: (release, arch, path, size, sha256).
fn listed(doc: &Value) -> Vec<(String, String, String, u64, String)> {
    let mut out = Vec::new();
    for p in doc["products"].as_object().unwrap().values() {
        for v in p["versions"].as_object().unwrap().values() {
            for i in v["items"].as_object().unwrap().values() {
                out.push((
                    p["release"].as_str().unwrap_or("").to_owned(),
                    p["arch"].as_str().unwrap_or("").to_owned(),
                    i["path"].as_str().unwrap().to_owned(),
                    i["size"].as_u64().unwrap(),
                    i["sha256"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    out
}

fn sha256(p: &Path) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(fs::read(p).unwrap()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The seed's two command lines with `--sign-key` into one directory: an
/// index naming both products files, each listing exactly its holdings,
/// accepted by gpgv, read by the reference tools, unchanged by a no-op, and
/// a switch back to upstream's documents (and again) converges.
#[test]
fn resigned_mirror_lists_what_it_holds() {
    let gpg = Gpg::new();
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("src");
    gpg.generate(&spec(&["20250601", "20250615"]), &src);
    let upstream = Server::start(&src);
    let (key, ring) = local_key(tmp.path());
    let out = tmp.path().join("mirror");
    let k = format!("--keyring={}", gpg.keyring.display());
    let sk = format!("--sign-key={}", key.display());
    let images = || {
        run_ok(
            &ours_mirror(),
            &gpg.verify_home,
            &args(&[
                &k,
                &sk,
                &upstream.url,
                &s(&out),
                "arch=amd64",
                "release~(focal|jammy)",
                "--max=1",
            ]),
        )
    };
    let bootloaders = || {
        run_ok(
            &ours_mirror(),
            &gpg.verify_home,
            &args(&[
                &k,
                &sk,
                &upstream.url,
                &s(&out),
                "os~(grub*|pxelinux)",
                "--max=1",
            ]),
        )
    };
    images();
    bootloaders();

    // The index names both products files; each lists only what is held.
    let index = read_json(&out.join("streams/v1/index.json"));
    let entries = index["index"].as_object().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    let mut all = Vec::new();
    for e in entries.values() {
        let doc = read_json(&out.join(e["path"].as_str().unwrap()));
        let items = listed(&doc);
        assert!(!items.is_empty());
        all.extend(items);
    }
    for (release, arch, path, size, sum) in &all {
        if !release.is_empty() {
            assert!(["focal", "jammy"].contains(&release.as_str()), "{release}");
            assert_eq!(arch, "amd64");
        }
        let file = out.join(path);
        assert_eq!(fs::metadata(&file).unwrap().len(), *size, "{path}");
        assert_eq!(&sha256(&file), sum, "{path}");
    }
    let sindex = read_json(&out.join("streams/v1/index.json"));
    assert!(sindex.to_string().contains("products"));

    // gpgv accepts every signature with the exported keyring, and catches
    // a changed byte.
    let home = tmp.path().join("gpgv-home");
    fs::create_dir(&home).unwrap();
    let signed = signed_files(&out);
    assert!(signed.len() >= 6, "{signed:?}");
    for f in &signed {
        let name = f.to_string_lossy().into_owned();
        if let Some(json) = name.strip_suffix(".gpg") {
            assert!(gpgv(&home, &ring, &[f, Path::new(json)]), "{name}");
        } else {
            assert!(gpgv(&home, &ring, &[f]), "{name}");
            let mut bad = fs::read(f).unwrap();
            let at = bad.iter().position(|&b| b == b'{').unwrap() + 3;
            bad[at] ^= 0x01;
            let copy = tmp.path().join("tampered.sjson");
            fs::write(&copy, bad).unwrap();
            assert!(!gpgv(&home, &ring, &[&copy]), "tampered {name}");
        }
    }

    // The reference's query, through our server, with the local keyring:
    // exactly the held items; nothing for a release the mirror lacks.
    let served = Server::start(&out);
    let query = |filters: &[&str]| {
        let mut a = vec![
            format!("--keyring={}", ring.display()),
            "--output-format=%(item_url)s".to_owned(),
            served.url.clone(),
        ];
        a.extend(filters.iter().map(|f| f.to_string()));
        let o = Command::new(reference().join("sstream-query"))
            .args(&a)
            .env("GNUPGHOME", &home)
            .output()
            .unwrap();
        ok("reference sstream-query", &o);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let urls: Vec<String> = query(&[]).lines().map(str::to_owned).collect();
    assert_eq!(urls.len(), all.len(), "{urls:?}");
    for (_, _, path, _, _) in &all {
        assert!(urls.contains(&format!("{}{path}", served.url)), "{path}");
    }
    assert_eq!(query(&["release=noble"]), "");
    // The landing page offers the local keyring, and it is the exported one.
    let get = |path: &str| {
        Command::new("curl")
            .args(["-sf", &format!("{}{path}", served.url)])
            .output()
            .unwrap()
            .stdout
    };
    let page = String::from_utf8(get("")).unwrap();
    assert!(
        page.contains("mirror-keyring.gpg") && page.contains("keyring_data"),
        "{page}"
    );
    assert_eq!(
        get("streams/v1/mirror-keyring.gpg"),
        fs::read(&ring).unwrap()
    );
    assert_eq!(query(&["arch=arm64", "ftype=squashfs"]), "");
    // The reference mirrors it too, every file verified.
    let copy = tmp.path().join("copy");
    let o = Command::new(reference().join("sstream-mirror"))
        .arg(format!("--keyring={}", ring.display()))
        .arg(&served.url)
        .arg(&copy)
        .env("GNUPGHOME", &home)
        .output()
        .unwrap();
    ok("reference sstream-mirror of the re-signed mirror", &o);
    for (_, _, path, _, _) in &all {
        assert!(copy.join(path).is_file(), "{path}");
    }

    // A no-op run leaves the signed files as they are.
    let stamp = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.ino(), m.mtime_nsec())
    };
    let before: Vec<_> = signed.iter().map(|f| stamp(f)).collect();
    images();
    bootloaders();
    let after: Vec<_> = signed.iter().map(|f| stamp(f)).collect();
    assert_eq!(before, after, "a no-op rewrote signed metadata");

    // Back to upstream's documents: byte for byte upstream's index.
    run_ok(
        &ours_mirror(),
        &gpg.verify_home,
        &args(&[
            &k,
            &upstream.url,
            &s(&out),
            "os~(grub*|pxelinux)",
            "--max=1",
        ]),
    );
    assert_eq!(
        fs::read(out.join("streams/v1/index.sjson")).unwrap(),
        fs::read(src.join("streams/v1/index.sjson")).unwrap()
    );
    // Nothing of the re-signed publication is left beside upstream's
    // documents: no plain twin still listing the old holdings, no detached
    // signature, no keyring.
    let leftovers: Vec<String> = fs::read_dir(out.join("streams/v1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            fs::read(out.join("streams/v1").join(name)).ok()
                != fs::read(src.join("streams/v1").join(name)).ok()
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "files of the re-signed publication left beside upstream's: {leftovers:?}"
    );
    // And re-signed again.
    bootloaders();
    assert!(gpgv(&home, &ring, &[&out.join("streams/v1/index.sjson")]));
    assert_eq!(
        read_json(&out.join("streams/v1/index.json"))["index"]
            .as_object()
            .unwrap()
            .len(),
        2
    );

    // verify --strict with the local keyring: all good; a listed item that
    // goes missing is an error.
    let verify = || sstream(&["verify", &s(&out), "--keyring", &s(&ring), "--strict"]);
    ok("verify --strict", &verify());
    fs::remove_file(out.join(&all[0].2)).unwrap();
    let o = verify();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&all[0].2) && text.contains("missing"),
        "{text}"
    );
}

/// A tampered upstream document or a key that cannot sign re-signs and
/// publishes nothing.
#[test]
fn bad_upstream_or_bad_key_publishes_nothing() {
    let gpg = Gpg::new();
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("src");
    gpg.generate(&spec(&["20250601"]), &src);
    let upstream = Server::start(&src);
    let (key, _) = local_key(tmp.path());
    let out = tmp.path().join("mirror");
    let k = format!("--keyring={}", gpg.keyring.display());
    let sk = format!("--sign-key={}", key.display());
    run_ok(
        &ours_mirror(),
        &gpg.verify_home,
        &args(&[&k, &sk, &upstream.url, &s(&out), "arch=amd64", "--max=1"]),
    );
    let snapshot = support::snapshot(&out);
    // Tampered upstream index.
    let index = src.join("streams/v1/index.sjson");
    let good = fs::read(&index).unwrap();
    let text = String::from_utf8(good.clone()).unwrap();
    fs::write(&index, text.replacen("\"updated\"", "\"updateD\"", 1)).unwrap();
    let o = Command::new(ours_mirror())
        .args(args(&[
            &k,
            &sk,
            &upstream.url,
            &s(&out),
            "arch=amd64",
            "--max=1",
        ]))
        .env("GNUPGHOME", &gpg.verify_home)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("index.sjson"), "{err}");
    fs::write(&index, good).unwrap();
    // A public keyring where the secret key should be.
    let public = tmp.path().join("public.asc");
    ok(
        "export armored",
        &sstream(&[
            "key",
            "export",
            &s(&key),
            "--armor",
            "--output",
            &s(&public),
        ]),
    );
    let o = Command::new(ours_mirror())
        .args(args(&[
            &k,
            &format!("--sign-key={}", public.display()),
            &upstream.url,
            &s(&out),
        ]))
        .env("GNUPGHOME", &gpg.verify_home)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&s(&public)) && err.lines().count() == 1,
        "{err}"
    );
    let mut now = support::snapshot(&out);
    let mut was = snapshot;
    for m in [&mut now, &mut was] {
        m.retain(|k, _| !k.starts_with(".data/sstream"));
    }
    assert_eq!(now, was, "nothing was published");
}
