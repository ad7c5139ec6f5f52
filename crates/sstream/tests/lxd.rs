//! Mirrors that LXD and Incus clients can use: an LXD-style stream (image
//! tarballs with `metadata.yaml`, rootfs squashfs and tarballs, VM disks,
//! `.vcdiff` deltas, version names with colons), signed with GnuPG, read
//! through a signed entry and published as plain `.json` documents:
//! `--publish held` (exactly what the mirror holds) or, in upstream mode,
//! plain twins of upstream's signed documents. Checked with our `verify`,
//! the reference's `sstream-query`, and LXD's own client `lxc` (no daemon)
//! over HTTPS from `sstream serve` with a certificate from `sstream tls
//! generate`: what it lists, exports, and the fingerprints.
//!
//! Needs `gpg`, `tar`, `xz`, `lxc` (Debian's `lxd-client`) and the
//! reference tools (scripts/test.sh installs them).

mod support;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use support::{Gpg, Server, reference};
use tempfile::TempDir;

const OLD: &str = "20260101_07:42";
const NEW: &str = "20260102_07:42";
const ARCHES: [&str; 2] = ["amd64", "arm64"];

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

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Writes `bytes` at `rel` under `root` and gives the item fields that
/// describe the file.
fn file(root: &Path, rel: &str, ftype: &str, bytes: &[u8]) -> serde_json::Map<String, Value> {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
    let Value::Object(m) = json!({
        "ftype": ftype,
        "path": rel,
        "size": bytes.len(),
        "sha256": sha256(bytes),
    }) else {
        unreachable!()
    };
    m
}

/// A real `lxd.tar.xz`: a tarball (xz) holding a `metadata.yaml`.
fn metadata_tarball(work: &Path, arch: &str, version: &str) -> Vec<u8> {
    let dir = work.join(format!("meta-{arch}-{}", version.replace(':', "-")));
    fs::create_dir_all(dir.join("templates")).unwrap();
    fs::write(
        dir.join("metadata.yaml"),
        format!(
            "architecture: {arch}\ncreation_date: 1767225720\nproperties:\n  os: ubuntu\n  release: noble\n  variant: default\n  serial: \"{version}\"\n  description: Ubuntu noble {arch} ({version})\ntemplates: {{}}\n"
        ),
    )
    .unwrap();
    let out = work.join(format!("lxd-{arch}-{}.tar.xz", version.replace(':', "-")));
    let o = Command::new("tar")
        .arg("-cJf")
        .arg(&out)
        .arg("-C")
        .arg(&dir)
        .args(["metadata.yaml", "templates"])
        .output()
        .expect("run tar");
    ok("tar -cJf", &o);
    fs::read(out).unwrap()
}

/// A real rootfs tarball (xz) with one file naming the image.
fn rootfs_tarball(work: &Path, arch: &str, version: &str) -> Vec<u8> {
    let dir = work.join(format!("root-{arch}-{}", version.replace(':', "-")));
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(
        dir.join("etc/os-release"),
        format!("NAME=Ubuntu\nVERSION_CODENAME=noble\nBUILD={arch}-{version}\n"),
    )
    .unwrap();
    let out = work.join(format!("root-{arch}-{}.tar.xz", version.replace(':', "-")));
    let o = Command::new("tar")
        .arg("-cJf")
        .arg(&out)
        .arg("-C")
        .arg(&dir)
        .arg("etc")
        .output()
        .expect("run tar");
    ok("tar -cJf", &o);
    fs::read(out).unwrap()
}

/// Generates the LXD-style stream into `root`: `streams/v1/index.sjson`
/// and `images.sjson` (clear-signed by `gpg`), one product per arch, two
/// versions each (containers and VMs: `lxd.tar.xz` with its
/// `combined_*_sha256`, `root.squashfs`, `root.tar.xz`, `disk.qcow2`), the
/// newer with a `.vcdiff` delta from the older.
fn lxd_stream(gpg: &Gpg, root: &Path, work: &Path) {
    let mut products = serde_json::Map::new();
    for arch in ARCHES {
        let base = format!("images/ubuntu/noble/{arch}/default");
        let mut versions = serde_json::Map::new();
        for version in [OLD, NEW] {
            let dir = format!("{base}/{version}");
            let meta = metadata_tarball(work, arch, version);
            let squashfs = format!("squashfs {arch} {version}\n")
                .repeat(64)
                .into_bytes();
            let rootfs = rootfs_tarball(work, arch, version);
            let disk = format!("qcow2 {arch} {version}\n").repeat(96).into_bytes();
            let combined = |other: &[u8]| sha256(&[meta.as_slice(), other].concat());
            let mut lxd = file(root, &format!("{dir}/lxd.tar.xz"), "lxd.tar.xz", &meta);
            lxd.insert(
                "combined_squashfs_sha256".into(),
                json!(combined(&squashfs)),
            );
            lxd.insert("combined_rootxz_sha256".into(), json!(combined(&rootfs)));
            lxd.insert(
                "combined_disk-kvm-img_sha256".into(),
                json!(combined(&disk)),
            );
            let mut items = serde_json::Map::new();
            items.insert("lxd.tar.xz".into(), Value::Object(lxd));
            items.insert(
                "root.squashfs".into(),
                Value::Object(file(
                    root,
                    &format!("{dir}/rootfs.squashfs"),
                    "squashfs",
                    &squashfs,
                )),
            );
            items.insert(
                "root.tar.xz".into(),
                Value::Object(file(
                    root,
                    &format!("{dir}/rootfs.tar.xz"),
                    "root.tar.xz",
                    &rootfs,
                )),
            );
            items.insert(
                "disk.qcow2".into(),
                Value::Object(file(
                    root,
                    &format!("{dir}/disk.qcow2"),
                    "disk-kvm.img",
                    &disk,
                )),
            );
            if version == NEW {
                let delta = format!("vcdiff {arch} {OLD}..{NEW}\n").into_bytes();
                let mut d = file(
                    root,
                    &format!("{dir}/{OLD}.vcdiff"),
                    "squashfs.vcdiff",
                    &delta,
                );
                d.insert("delta_base".into(), json!(OLD));
                items.insert(format!("delta-{OLD}.vcdiff"), Value::Object(d));
            }
            versions.insert(version.into(), json!({ "items": items }));
        }
        products.insert(
            format!("ubuntu:noble:{arch}:default"),
            json!({
                "aliases": format!("ubuntu/noble/default,ubuntu/noble/{arch}"),
                "arch": arch,
                "os": "Ubuntu",
                "release": "noble",
                "release_title": "noble",
                "variant": "default",
                "requirements": {},
                "versions": versions,
            }),
        );
    }
    let images = json!({
        "content_id": "images",
        "datatype": "image-downloads",
        "format": "products:1.0",
        "updated": "Fri, 02 Jan 2026 07:42:00 +0000",
        "products": products,
    });
    let names: Vec<&String> = products.keys().collect();
    let index = json!({
        "format": "index:1.0",
        "updated": "Fri, 02 Jan 2026 07:42:00 +0000",
        "index": {
            "images": {
                "datatype": "image-downloads",
                "format": "products:1.0",
                "path": "streams/v1/images.sjson",
                "products": names,
                "updated": "Fri, 02 Jan 2026 07:42:00 +0000",
            }
        }
    });
    let streams = root.join("streams/v1");
    fs::create_dir_all(&streams).unwrap();
    for (name, doc) in [("images", images), ("index", index)] {
        let text = serde_json::to_vec_pretty(&doc).unwrap();
        fs::write(streams.join(format!("{name}.sjson")), gpg.sign(&text)).unwrap();
    }
}

/// A signed LXD-style stream served by `sstream serve`, and a work dir.
struct Upstream {
    gpg: Gpg,
    tmp: TempDir,
    server: Server,
}

fn upstream() -> Upstream {
    let gpg = Gpg::new();
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("upstream");
    let work = tmp.path().join("work");
    fs::create_dir_all(&work).unwrap();
    lxd_stream(&gpg, &root, &work);
    let server = Server::start(&root);
    Upstream { gpg, tmp, server }
}

fn mirror(up: &Upstream, out: &Path, extra: &[&str]) -> Output {
    let ring = s(&up.gpg.keyring);
    let mut a = vec![
        "mirror",
        "--keyring",
        &ring,
        "--delete-delay",
        "0",
        &up.server.url,
    ];
    let out = s(out);
    a.push(&out);
    a.extend(extra);
    sstream(&a)
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// (product, version, item, path, sha256) of every item `doc` lists.
fn listed(doc: &Value) -> BTreeSet<(String, String, String, String, String)> {
    let mut out = BTreeSet::new();
    for (p, product) in doc["products"].as_object().unwrap() {
        for (v, version) in product["versions"].as_object().unwrap() {
            for (i, item) in version["items"].as_object().unwrap() {
                out.insert((
                    p.clone(),
                    v.clone(),
                    i.clone(),
                    item["path"].as_str().unwrap().to_owned(),
                    item["sha256"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    out
}

/// The reference's `sstream-query` of the plain index of the mirror served
/// at `url` (no signature: as LXD reads it): the item URLs it offers.
fn query(url: &str, filters: &[&str]) -> BTreeSet<String> {
    let mut a = vec![
        "--output-format=%(item_url)s".to_owned(),
        format!("{url}streams/v1/index.json"),
    ];
    a.extend(filters.iter().map(|f| f.to_string()));
    let home = TempDir::new().unwrap();
    let o = Command::new(reference().join("sstream-query"))
        .args(&a)
        .env("GNUPGHOME", home.path())
        .output()
        .unwrap();
    ok("reference sstream-query", &o);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn held_publishing_lists_exactly_what_the_mirror_holds_in_plain_json() {
    let up = upstream();
    let out = up.tmp.path().join("held");
    let o = mirror(&up, &out, &["--max=1", "--publish", "held", "arch=amd64"]);
    ok("mirror --publish held", &o);

    let streams = out.join("streams/v1");
    let names: BTreeSet<String> = fs::read_dir(&streams)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> = ["images.json", "index.json"].map(String::from).into();
    assert_eq!(names, want, "plain documents only: no .sjson, no signature");
    assert!(!out.join(simplestreams::layout::MIRROR_KEYRING).exists());

    let index = read_json(&streams.join("index.json"));
    let entry = &index["index"]["images"];
    assert_eq!(entry["path"], "streams/v1/images.json");
    assert_eq!(entry["products"], json!(["ubuntu:noble:amd64:default"]));

    // Exactly the newest amd64 version, without the delta whose base is
    // not held; every listed file is there with upstream's checksum.
    let images = read_json(&streams.join("images.json"));
    let items = listed(&images);
    let names: BTreeSet<(String, String)> = items
        .iter()
        .map(|(_, v, i, _, _)| (v.clone(), i.clone()))
        .collect();
    let want: BTreeSet<(String, String)> =
        ["disk.qcow2", "lxd.tar.xz", "root.squashfs", "root.tar.xz"]
            .map(|i| (NEW.to_owned(), i.to_owned()))
            .into();
    assert_eq!(names, want);
    let upstream_root = up.tmp.path().join("upstream");
    for (_, _, _, path, sum) in &items {
        assert_eq!(&sha256(&fs::read(out.join(path)).unwrap()), sum, "{path}");
        assert_eq!(
            fs::read(out.join(path)).unwrap(),
            fs::read(upstream_root.join(path)).unwrap(),
            "{path}"
        );
    }
    // LXD's fields come through: the combined checksums, the product's.
    let lxd =
        &images["products"]["ubuntu:noble:amd64:default"]["versions"][NEW]["items"]["lxd.tar.xz"];
    assert!(lxd["combined_squashfs_sha256"].is_string(), "{lxd}");
    assert_eq!(
        images["products"]["ubuntu:noble:amd64:default"]["aliases"],
        "ubuntu/noble/default,ubuntu/noble/amd64"
    );

    // Our verify (plain entry, no keyring needed) is clean, strictly.
    let o = sstream(&["verify", "--strict", &s(&out)]);
    ok("verify --strict of a held mirror", &o);

    // A peer reading the plain index offers exactly the held files.
    let served = Server::start(&out);
    let offered = query(&served.url, &[]);
    let held: BTreeSet<String> = items
        .iter()
        .map(|(_, _, _, path, _)| format!("{}{path}", served.url))
        .collect();
    assert_eq!(offered, held);

    // A second run changes nothing it published.
    let before = fs::read(streams.join("images.json")).unwrap();
    ok(
        "second run",
        &mirror(&up, &out, &["--max=1", "--publish", "held", "arch=amd64"]),
    );
    assert_eq!(fs::read(streams.join("images.json")).unwrap(), before);
}

#[test]
fn deltas_are_published_when_their_base_is_held() {
    let up = upstream();
    let out = up.tmp.path().join("both");
    let o = mirror(
        &up,
        &out,
        &["--publish", "held", "arch=arm64", "ftype~(squashfs|lxd)"],
    );
    ok("mirror --publish held, two versions", &o);
    let images = read_json(&out.join("streams/v1/images.json"));
    let versions = &images["products"]["ubuntu:noble:arm64:default"]["versions"];
    let items = versions[NEW]["items"].as_object().unwrap();
    let names: BTreeSet<&str> = items.keys().map(String::as_str).collect();
    let want_delta = format!("delta-{OLD}.vcdiff");
    let want: BTreeSet<&str> = ["lxd.tar.xz", "root.squashfs", want_delta.as_str()].into();
    assert_eq!(names, want);
    assert_eq!(items[&want_delta]["delta_base"], OLD);
    assert!(versions[OLD]["items"]["root.squashfs"].is_object());
}

#[test]
fn upstream_mode_publishes_plain_twins_of_signed_documents() {
    let up = upstream();
    let out = up.tmp.path().join("twins");
    ok("mirror --max=1", &mirror(&up, &out, &["--max=1"]));
    let streams = out.join("streams/v1");
    let upstream_root = up.tmp.path().join("upstream");
    // Upstream's signed documents, byte for byte, and their plain twins:
    // the signed content (the index's paths pointing at the twins).
    for name in ["index.sjson", "images.sjson"] {
        assert_eq!(
            fs::read(streams.join(name)).unwrap(),
            fs::read(upstream_root.join("streams/v1").join(name)).unwrap(),
            "{name}"
        );
    }
    let signed = |name: &str| -> Value {
        let raw = fs::read(streams.join(name)).unwrap();
        let body = simplestreams::openpgp::cleartext_body(&raw).unwrap();
        serde_json::from_slice(&body).unwrap()
    };
    assert_eq!(
        read_json(&streams.join("images.json")),
        signed("images.sjson")
    );
    let mut index = signed("index.sjson");
    index["index"]["images"]["path"] = json!("streams/v1/images.json");
    assert_eq!(read_json(&streams.join("index.json")), index);

    // A peer reading the plain index is offered upstream's images: the
    // held ones are there, the older versions are not.
    let served = Server::start(&out);
    let offered = query(&served.url, &[]);
    let all = listed(&signed("images.sjson"));
    assert_eq!(offered.len(), all.len());
    for (_, v, _, path, _) in &all {
        let url = format!("{}{path}", served.url);
        assert!(offered.contains(&url), "{url}");
        assert_eq!(out.join(path).exists(), v == NEW, "{path}");
    }
    // verify --strict reports what is offered but not held (and a plain
    // verify passes).
    let ring = s(&up.gpg.keyring);
    ok(
        "verify",
        &sstream(&["verify", "--keyring", &ring, &s(&out)]),
    );
    let o = sstream(&["verify", "--strict", "--keyring", &ring, &s(&out)]);
    assert!(
        !o.status.success(),
        "verify --strict passed a --max=1 mirror"
    );
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    for arch in ARCHES {
        let line = format!("offered-not-held: images: noble/{arch}: 4 item(s) of 1 version(s)");
        assert!(text.contains(&line), "{text}");
    }
}

#[test]
fn switching_publication_modes_republishes() {
    let up = upstream();
    let out = up.tmp.path().join("switch");
    let streams = out.join("streams/v1");
    ok("upstream", &mirror(&up, &out, &["--max=1"]));
    let upstream_images = read_json(&streams.join("images.json"));
    ok(
        "held",
        &mirror(&up, &out, &["--max=1", "--publish", "held"]),
    );
    // Upstream's signed documents are withdrawn: left, they would go on
    // listing what is not held.
    assert!(!streams.join("images.sjson").exists());
    assert!(!streams.join("index.sjson").exists());
    let held = read_json(&streams.join("images.json"));
    assert!(listed(&held).len() < listed(&upstream_images).len());
    assert!(listed(&held).iter().all(|(_, v, _, _, _)| v == NEW));
    ok(
        "upstream again",
        &mirror(&up, &out, &["--max=1", "--publish", "upstream"]),
    );
    assert_eq!(read_json(&streams.join("images.json")), upstream_images);
    assert!(streams.join("index.sjson").exists());
}

#[test]
fn sign_key_with_publish_upstream_is_refused() {
    let tmp = TempDir::new().unwrap();
    let key = tmp.path().join("k.asc");
    let o = sstream(&[
        "mirror",
        "--sign-key",
        &s(&key),
        "--publish",
        "upstream",
        "http://127.0.0.1:9/",
        &s(&tmp.path().join("m")),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--sign-key") && err.contains("--publish"),
        "{err}"
    );
    let o = sstream(&["mirror", "--publish", "mine", "http://127.0.0.1:9/", "m"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("mine"));
}

/// LXD's client `lxc` (no daemon: image list, info and export run in the
/// client), pointed at the mirror served over HTTPS with a certificate from
/// `sstream tls generate`, trusted through `SSL_CERT_FILE`.
struct Lxc {
    conf: TempDir,
    ca: std::path::PathBuf,
}

impl Lxc {
    fn new(url: &str, ca: &Path) -> Lxc {
        let lxc = Lxc {
            conf: TempDir::new().unwrap(),
            ca: ca.to_owned(),
        };
        let o = lxc.run(&["remote", "add", "m", url, "--protocol=simplestreams"]);
        ok("lxc remote add", &o);
        lxc
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("lxc")
            .args(args)
            .env("LXD_CONF", self.conf.path())
            .env("SSL_CERT_FILE", &self.ca)
            .env("HOME", self.conf.path())
            .output()
            .expect("run lxc (install lxd-client: scripts/test.sh does)")
    }
}

/// The images `lxc image list` shows of remote `m:`: fingerprint → type.
fn lxc_images(lxc: &Lxc) -> std::collections::BTreeMap<String, String> {
    let o = lxc.run(&["image", "list", "m:", "--format", "json"]);
    ok("lxc image list", &o);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let fp = i["fingerprint"].as_str().unwrap().to_owned();
            (fp, i["type"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// The images of the source for `arch` and `version`: fingerprint (sha256
/// of the metadata tarball then the rootfs) → (type, metadata, rootfs).
fn source_images(
    root: &Path,
    arch: &str,
    version: &str,
) -> Vec<(String, String, Vec<u8>, Vec<u8>)> {
    let dir = root.join(format!("images/ubuntu/noble/{arch}/default/{version}"));
    let meta = fs::read(dir.join("lxd.tar.xz")).unwrap();
    ["rootfs.squashfs", "rootfs.tar.xz", "disk.qcow2"]
        .iter()
        .map(|f| {
            let rootfs = fs::read(dir.join(f)).unwrap();
            let fp = sha256(&[meta.as_slice(), &rootfs].concat());
            let kind = if *f == "disk.qcow2" {
                "virtual-machine"
            } else {
                "container"
            };
            (fp, kind.to_owned(), meta.clone(), rootfs)
        })
        .collect()
}

/// Exports image `fp` of `m:` and checks the two files are the source's
/// metadata and rootfs, and that their sha256 is the fingerprint.
fn export_matches(lxc: &Lxc, fp: &str, meta: &[u8], rootfs: &[u8]) {
    let dir = TempDir::new().unwrap();
    let o = lxc.run(&["image", "export", &format!("m:{fp}"), &s(dir.path())]);
    ok(&format!("lxc image export {fp}"), &o);
    let mut got: Vec<Vec<u8>> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    got.sort();
    let mut want = vec![meta.to_vec(), rootfs.to_vec()];
    want.sort();
    assert_eq!(got, want, "exported files of {fp}");
    assert_eq!(sha256(&[meta, rootfs].concat()), fp);
}

#[test]
fn lxc_lists_and_exports_exactly_the_held_images() {
    let up = upstream();
    let out = up.tmp.path().join("held");
    let o = mirror(&up, &out, &["--max=1", "--publish", "held", "arch=amd64"]);
    ok("mirror --publish held", &o);
    let pki = support::TestPki::generate();
    let served = support::TlsServer::start(&out, &pki.path("server.pem"), &pki.path("server.key"));
    let lxc = Lxc::new(served.https_url.trim_end_matches('/'), &pki.path("ca.pem"));

    let root = up.tmp.path().join("upstream");
    let held = source_images(&root, "amd64", NEW);
    let want: std::collections::BTreeMap<String, String> = held
        .iter()
        .map(|(fp, kind, _, _)| (fp.clone(), kind.clone()))
        .collect();
    assert_eq!(
        lxc_images(&lxc),
        want,
        "lxc image list: exactly the held images"
    );
    for (fp, _, meta, rootfs) in &held {
        export_matches(&lxc, fp, meta, rootfs);
    }
}

#[test]
fn lxc_over_plain_twins_lists_upstream_and_exports_what_is_held() {
    let up = upstream();
    let out = up.tmp.path().join("twins");
    ok("mirror --max=1", &mirror(&up, &out, &["--max=1"]));
    let pki = support::TestPki::generate();
    let served = support::TlsServer::start(&out, &pki.path("server.pem"), &pki.path("server.key"));
    let lxc = Lxc::new(served.https_url.trim_end_matches('/'), &pki.path("ca.pem"));

    let root = up.tmp.path().join("upstream");
    let listed = lxc_images(&lxc);
    let mut upstream_fps = BTreeSet::new();
    for arch in ARCHES {
        for version in [OLD, NEW] {
            for (fp, kind, meta, rootfs) in source_images(&root, arch, version) {
                assert_eq!(listed.get(&fp), Some(&kind), "{arch} {version}: {listed:?}");
                upstream_fps.insert(fp.clone());
                if version == NEW {
                    export_matches(&lxc, &fp, &meta, &rootfs);
                } else {
                    let dir = TempDir::new().unwrap();
                    let o = lxc.run(&["image", "export", &format!("m:{fp}"), &s(dir.path())]);
                    assert!(!o.status.success(), "export of {fp}, not held, succeeded");
                }
            }
        }
    }
    assert_eq!(
        listed.keys().cloned().collect::<BTreeSet<_>>(),
        upstream_fps
    );
}
