//! Generation of MAAS-like sample streams for demos and tests.
//!
//! [`generate`] writes a SimpleStreams tree shaped like images.maas.io's
//! `ephemeral-v3/<stream>`: an index, a `com.ubuntu.maas:<stream>:v3:download`
//! products file (one `ga-` and one `hwe-` kernel flavour per release and
//! arch, sharing the `squashfs` and `squashfs.manifest` paths of their
//! release/arch/version), a `com.ubuntu.maas:<stream>:1:bootloader-download`
//! products file (grub-efi-signed, grub-efi, grub-ieee1275 and pxelinux), and
//! every item's payload.
//!
//! Payloads are pseudo-random bytes derived from the item path only, so a path
//! always has the same content and size whatever the spec ("paths are
//! immutable"). The metadata carries the payloads' real sizes and checksums.
//!
//! Generating into a directory that already holds a sample (a later "day",
//! usually with other `versions`) replaces the metadata under `streams/v1/`
//! and writes the payloads that are missing or have the wrong size. Payloads
//! of versions no longer listed are **kept** (a real server keeps serving old
//! files for a while; nothing references them any more).

use md5::Md5;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// One Ubuntu release of a sample stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRelease {
    /// Codename, e.g. `xenial`.
    pub codename: String,
    /// Version number, e.g. `16.04`.
    pub version: String,
}

impl SampleRelease {
    /// A release from its codename and version number.
    pub fn new(codename: &str, version: &str) -> Self {
        SampleRelease {
            codename: codename.to_string(),
            version: version.to_string(),
        }
    }
}

/// What [`generate`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSpec {
    /// Stream name used in content ids and product names, e.g. `stable`.
    pub stream: String,
    /// Ubuntu releases; each gets a `ga-` and an `hwe-` product per arch.
    pub releases: Vec<SampleRelease>,
    /// Architectures of the Ubuntu products, e.g. `amd64`, `arm64`.
    pub arches: Vec<String>,
    /// Version names of every Ubuntu product, e.g. `20250615`.
    pub versions: Vec<String>,
    /// Version names of every bootloader product, e.g. `20230222.0`.
    pub bootloader_versions: Vec<String>,
    /// Nominal squashfs size in bytes; the other items are scaled down from
    /// it (at least 16 bytes each). Sizes vary a little per path.
    pub payload_bytes: u64,
    /// Move the release's descriptive fields (`release_title`,
    /// `release_codename`, `support_eol`, `support_esm_eol`) into a top-level
    /// `_aliases.release.<codename>` of the Ubuntu products file.
    pub aliases: bool,
    /// Items carry `md5` and `size` but no `sha256`.
    pub md5_only: bool,
}

impl Default for SampleSpec {
    /// Small: trusty and xenial, amd64 and arm64, two versions, two
    /// bootloader versions, squashfs of 4 KiB.
    fn default() -> Self {
        SampleSpec {
            stream: "stable".to_string(),
            releases: vec![
                SampleRelease::new("trusty", "14.04"),
                SampleRelease::new("xenial", "16.04"),
            ],
            arches: vec!["amd64".to_string(), "arm64".to_string()],
            versions: vec!["20250615".to_string(), "20250718".to_string()],
            bootloader_versions: vec!["20230222.0".to_string(), "20231004.0".to_string()],
            payload_bytes: 4096,
            aliases: false,
            md5_only: false,
        }
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleStream {
    /// The stream root (the directory given to [`generate`]).
    pub root: PathBuf,
    /// Number of distinct payload files the metadata references.
    pub files: usize,
    /// Total size of those distinct payload files.
    pub bytes: u64,
    /// Number of items (a shared path counts once per item naming it).
    pub items: usize,
    /// Distinct payload paths (relative to the root) and their sizes.
    pub payloads: BTreeMap<String, u64>,
    /// The content ids written, in index order.
    pub content_ids: Vec<String>,
    /// The index entry path: `streams/v1/index.sjson` when signed, else
    /// `streams/v1/index.json`.
    pub index_path: String,
}

/// Signs a document: given the exact bytes of a `.json` file, returns an
/// OpenPGP cleartext-signed document (the `.sjson`), or why it cannot.
pub type Signer<'a> = dyn Fn(&[u8]) -> Result<Vec<u8>, SignError> + 'a;

/// Why a [`Signer`] could not sign (any error of the signing code).
pub type SignError = Box<dyn std::error::Error + Send + Sync>;

/// A payload's size and checksums.
#[derive(Debug, Clone)]
struct Payload {
    size: u64,
    sha256: String,
    md5: String,
}

/// Kernel flavours of an Ubuntu release: (subarch, kpackage).
fn flavours(rel: &SampleRelease) -> Vec<(String, String)> {
    vec![
        (format!("ga-{}", rel.version), "linux-generic".to_string()),
        (
            format!("hwe-{}", rel.version),
            format!("linux-generic-hwe-{}", rel.version),
        ),
    ]
}

/// Bootloader products: (os, bootloader-type, arch, arches, items).
const BOOTLOADERS: &[(&str, &str, &str, &str, &[&str])] = &[
    (
        "grub-efi-signed",
        "uefi",
        "amd64",
        "amd64",
        &["grub2-signed", "shim-signed"],
    ),
    (
        "grub-efi",
        "uefi",
        "arm64",
        "arm64",
        &["grub2-signed", "shim-signed"],
    ),
    (
        "grub-ieee1275",
        "open-firmware",
        "ppc64el",
        "ppc64el,ppc64",
        &["grub2"],
    ),
    ("pxelinux", "pxe", "amd64", "amd64, i386", &["syslinux"]),
    ("pxelinux", "pxe", "i386", "i386,amd64", &["syslinux"]),
];

/// Writes a sample stream into `out` (created if needed) and returns what
/// it wrote.
///
/// Always writes `streams/v1/index.json` and one `.json` products file per
/// content id. With a `signer` (given the exact bytes of a `.json` file, it
/// returns an OpenPGP cleartext-signed document), it also writes
/// `streams/v1/index.sjson` and `.sjson` products files; index.sjson's entries
/// point at the `.sjson` paths, index.json's at the `.json` ones.
///
/// # Errors
/// Any I/O error, or the signer's error (as [`io::ErrorKind::Other`]).
pub fn generate(
    spec: &SampleSpec,
    out: &Path,
    signer: Option<&Signer<'_>>,
) -> io::Result<SampleStream> {
    let meta_dir = out.join("streams").join("v1");
    fs::create_dir_all(&meta_dir)?;
    // Remove the metadata of an earlier generation.
    for entry in fs::read_dir(&meta_dir)? {
        let path = entry?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if path.is_file() && (ext == "json" || ext == "sjson") {
            fs::remove_file(&path)?;
        }
    }

    let mut payloads: HashMap<String, Payload> = HashMap::new();
    let mut items = 0usize;
    let newest = spec.versions.iter().max().cloned().unwrap_or_default();
    let updated = rfc2822_from_version(&newest);

    // Ubuntu images.
    let v3_id = format!("com.ubuntu.maas:{}:v3:download", spec.stream);
    let mut products = Map::new();
    let mut aliases = Map::new();
    for rel in &spec.releases {
        let descriptive = release_fields(rel);
        if spec.aliases {
            aliases.insert(rel.codename.clone(), Value::Object(descriptive.clone()));
        }
        for arch in &spec.arches {
            for (subarch, kpackage) in flavours(rel) {
                let name = format!(
                    "com.ubuntu.maas.{}:v3:boot:{}:{}:{}",
                    spec.stream, rel.version, arch, subarch
                );
                let mut versions = Map::new();
                for ver in &spec.versions {
                    let base = format!("{}/{}/{}", rel.codename, arch, ver);
                    let kdir = format!("{base}/{subarch}/generic");
                    let mut its = Map::new();
                    let p = spec.payload_bytes;
                    for (iname, path, nominal, kpkg) in [
                        ("boot-initrd", format!("{kdir}/boot-initrd"), p / 3, true),
                        ("boot-kernel", format!("{kdir}/boot-kernel"), p / 25, true),
                        (
                            "manifest",
                            format!("{base}/squashfs.manifest"),
                            p / 20_000,
                            false,
                        ),
                        ("squashfs", format!("{base}/squashfs"), p, false),
                    ] {
                        let mut item =
                            item_fields(spec, out, &mut payloads, iname, &path, nominal)?;
                        if kpkg {
                            item.insert("kpackage".into(), json!(kpackage));
                        }
                        its.insert(iname.into(), Value::Object(item));
                        items += 1;
                    }
                    versions.insert(ver.clone(), json!({ "items": its }));
                }
                let mut product = Map::new();
                product.insert("arch".into(), json!(arch));
                product.insert("kflavor".into(), json!("generic"));
                product.insert("krel".into(), json!(rel.codename));
                product.insert("label".into(), json!(spec.stream));
                product.insert("os".into(), json!("ubuntu"));
                product.insert("release".into(), json!(rel.codename));
                if !spec.aliases {
                    product.extend(descriptive.clone());
                }
                product.insert("subarch".into(), json!(subarch));
                product.insert("subarches".into(), json!(format!("generic,{subarch}")));
                product.insert("version".into(), json!(rel.version));
                product.insert("versions".into(), Value::Object(versions));
                products.insert(name, Value::Object(product));
            }
        }
    }
    let mut v3 = Map::new();
    if spec.aliases {
        v3.insert("_aliases".into(), json!({ "release": aliases }));
    }
    v3.insert("content_id".into(), json!(v3_id));
    v3.insert("datatype".into(), json!("image-ids"));
    v3.insert("format".into(), json!("products:1.0"));
    v3.insert("products".into(), Value::Object(products));
    v3.insert("updated".into(), json!(updated));

    // Bootloaders.
    let bl_id = format!("com.ubuntu.maas:{}:1:bootloader-download", spec.stream);
    let mut bl_products = Map::new();
    for (os, btype, arch, arches, names) in BOOTLOADERS {
        let name = format!("com.ubuntu.maas.{}:1:{os}:{btype}:{arch}", spec.stream);
        let mut versions = Map::new();
        for ver in &spec.bootloader_versions {
            let mut its = Map::new();
            for iname in *names {
                let path = format!("bootloaders/{btype}/{arch}/{ver}/{iname}.tar.xz");
                let mut item = item_fields(
                    spec,
                    out,
                    &mut payloads,
                    iname,
                    &path,
                    spec.payload_bytes / 300,
                )?;
                item.insert("ftype".into(), json!("archive.tar.xz"));
                item.insert("src_package".into(), json!(iname));
                item.insert("src_release".into(), json!("jammy"));
                item.insert("src_version".into(), json!(format!("1.0~{ver}")));
                its.insert((*iname).into(), Value::Object(item));
                items += 1;
            }
            versions.insert(ver.clone(), json!({ "items": its }));
        }
        bl_products.insert(
            name,
            json!({
                "arch": arch,
                "arches": arches,
                "bootloader-type": btype,
                "label": spec.stream,
                "os": os,
                "versions": versions,
            }),
        );
    }
    let bl_updated = rfc2822_from_version(
        spec.bootloader_versions
            .iter()
            .max()
            .map(String::as_str)
            .unwrap_or(""),
    );
    let bl = json!({
        "content_id": bl_id,
        "datatype": "image-ids",
        "format": "products:1.0",
        "products": bl_products,
        "updated": bl_updated,
    });

    // Index order: sorted content ids, like the real index.
    let mut docs = vec![(bl_id, bl), (v3_id, Value::Object(v3))];
    docs.sort_by(|a, b| a.0.cmp(&b.0));

    let mut plain_index = Map::new();
    let mut signed_index = Map::new();
    for (id, doc) in &docs {
        let text = to_pretty(doc);
        let plain_path = format!("streams/v1/{id}.json");
        fs::write(out.join(&plain_path), text.as_bytes())?;
        let product_names: Vec<Value> = doc["products"]
            .as_object()
            .map(|m| m.keys().map(|k| json!(k)).collect())
            .unwrap_or_default();
        let entry = |path: &str| {
            json!({
                "datatype": "image-ids",
                "format": "products:1.0",
                "path": path,
                "products": product_names,
                "updated": doc["updated"],
            })
        };
        plain_index.insert(id.clone(), entry(&plain_path));
        if let Some(sign) = signer {
            let signed_path = format!("streams/v1/{id}.sjson");
            fs::write(
                out.join(&signed_path),
                sign(text.as_bytes()).map_err(io::Error::other)?,
            )?;
            signed_index.insert(id.clone(), entry(&signed_path));
        }
    }
    let index = |entries: Map<String, Value>| {
        to_pretty(&json!({ "format": "index:1.0", "index": entries, "updated": updated }))
    };
    let plain = index(plain_index);
    fs::write(meta_dir.join("index.json"), plain.as_bytes())?;
    let index_path = if let Some(sign) = signer {
        let signed = index(signed_index);
        fs::write(
            meta_dir.join("index.sjson"),
            sign(signed.as_bytes()).map_err(io::Error::other)?,
        )?;
        "streams/v1/index.sjson"
    } else {
        "streams/v1/index.json"
    };

    let payloads: BTreeMap<String, u64> = payloads.into_iter().map(|(k, v)| (k, v.size)).collect();
    Ok(SampleStream {
        root: out.to_path_buf(),
        files: payloads.len(),
        bytes: payloads.values().sum(),
        items,
        payloads,
        content_ids: docs.into_iter().map(|(id, _)| id).collect(),
        index_path: index_path.to_string(),
    })
}

/// The descriptive fields of a release (moved to `_aliases` on request).
fn release_fields(rel: &SampleRelease) -> Map<String, Value> {
    let mut m = Map::new();
    let mut codename = rel.codename.clone();
    if let Some(first) = codename.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    m.insert("release_codename".into(), json!(codename));
    m.insert(
        "release_title".into(),
        json!(format!("{} LTS", rel.version)),
    );
    let year: u32 = rel
        .version
        .get(0..2)
        .and_then(|y| y.parse().ok())
        .unwrap_or(0);
    m.insert(
        "support_eol".into(),
        json!(format!("20{:02}-04-30", year + 5)),
    );
    m.insert(
        "support_esm_eol".into(),
        json!(format!("20{:02}-04-30", year + 10)),
    );
    m
}

/// The fields of an item with a payload: ftype, path, size and checksums.
/// Writes the payload if it is missing or has the wrong size.
fn item_fields(
    spec: &SampleSpec,
    out: &Path,
    payloads: &mut HashMap<String, Payload>,
    ftype: &str,
    path: &str,
    nominal: u64,
) -> io::Result<Map<String, Value>> {
    let payload = match payloads.get(path) {
        Some(p) => p.clone(),
        None => {
            let p = write_payload(out, path, nominal)?;
            payloads.insert(path.to_string(), p.clone());
            p
        }
    };
    let mut m = Map::new();
    m.insert("ftype".into(), json!(ftype));
    if spec.md5_only {
        m.insert("md5".into(), json!(payload.md5));
    }
    m.insert("path".into(), json!(path));
    if !spec.md5_only {
        m.insert("sha256".into(), json!(payload.sha256));
    }
    m.insert("size".into(), json!(payload.size));
    Ok(m)
}

/// SplitMix64 step: a fast, good-enough generator for payload bytes.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of the path: the seed of its payload.
fn seed_of(path: &str) -> u64 {
    path.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The size of a path's payload: the nominal size (at least 16) plus up to
/// 1/16 more, chosen by the path.
pub fn payload_size(path: &str, nominal: u64) -> u64 {
    let base = nominal.max(16);
    let mut s = seed_of(path);
    base + splitmix64(&mut s) % (base / 16 + 1)
}

/// Generates the payload of `path` (streaming it to `out/path` unless a file
/// of the right size is already there) and returns its size and checksums.
fn write_payload(out: &Path, path: &str, nominal: u64) -> io::Result<Payload> {
    let size = payload_size(path, nominal);
    let dest = out.join(path);
    let present = fs::metadata(&dest)
        .map(|m| m.is_file() && m.len() == size)
        .unwrap_or(false);
    let mut file = if present {
        None
    } else {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        Some(io::BufWriter::new(fs::File::create(&dest)?))
    };
    let mut state = seed_of(path);
    splitmix64(&mut state); // the first output chose the size
    let mut sha = Sha256::new();
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        for chunk in buf[..n].chunks_mut(8) {
            let word = splitmix64(&mut state).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        sha.update(&buf[..n]);
        md5.update(&buf[..n]);
        if let Some(f) = file.as_mut() {
            f.write_all(&buf[..n])?;
        }
        left -= n as u64;
    }
    if let Some(mut f) = file {
        f.flush()?;
    }
    Ok(Payload {
        size,
        sha256: hex::encode(sha.finalize()),
        md5: hex::encode(md5.finalize()),
    })
}

/// JSON with indent 1, sorted keys and a final newline, like the real files.
fn to_pretty(v: &Value) -> String {
    let v = sorted(v);
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing a Value into a Vec cannot fail.
    let _ = serde::Serialize::serialize(&v, &mut ser);
    let mut s = String::from_utf8_lossy(&out).into_owned();
    s.push('\n');
    s
}

/// A copy of `v` whose objects have their keys inserted in sorted order (so
/// the output is sorted whether or not serde_json preserves order).
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// An RFC 2822 date for a version name starting with `YYYYMMDD` (08:01:49
/// that day); a fixed date for other names.
fn rfc2822_from_version(version: &str) -> String {
    let digits = |r: std::ops::Range<usize>| version.get(r).and_then(|s| s.parse::<i64>().ok());
    let (y, m, d) = match (digits(0..4), digits(4..6), digits(6..8)) {
        (Some(y), Some(m), Some(d)) if (1..=12).contains(&m) && (1..=31).contains(&d) => (y, m, d),
        _ => (2025, 7, 24),
    };
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} 08:01:49 +0000",
        WD[days.rem_euclid(7) as usize],
        d,
        MON[(m - 1) as usize],
        y
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_json(p: &Path) -> Value {
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    }

    /// Every item of every products file: (content_id, product, version, item, fields).
    fn all_items(root: &Path) -> Vec<(String, String, String, String, Value)> {
        let index = read_json(&root.join("streams/v1/index.json"));
        let mut out = Vec::new();
        for (id, entry) in index["index"].as_object().unwrap() {
            let doc = read_json(&root.join(entry["path"].as_str().unwrap()));
            assert_eq!(doc["content_id"], json!(id));
            for (pn, p) in doc["products"].as_object().unwrap() {
                for (vn, v) in p["versions"].as_object().unwrap() {
                    for (iname, it) in v["items"].as_object().unwrap() {
                        out.push((
                            id.clone(),
                            pn.clone(),
                            vn.clone(),
                            iname.clone(),
                            it.clone(),
                        ));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn checksums_and_sizes_match_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = generate(&SampleSpec::default(), dir.path(), None).unwrap();
        let items = all_items(dir.path());
        assert_eq!(items.len(), s.items);
        // 2 releases x 2 arches x 2 flavours x 2 versions x 4 items + bootloaders (7 items x 2 versions).
        assert_eq!(s.items, 2 * 2 * 2 * 2 * 4 + 7 * 2);
        for (_, _, _, _, it) in &items {
            let data = fs::read(dir.path().join(it["path"].as_str().unwrap())).unwrap();
            assert_eq!(it["size"], json!(data.len()));
            assert_eq!(it["sha256"], json!(hex::encode(Sha256::digest(&data))));
            assert!(it.get("md5").is_none());
        }
        assert_eq!(s.files, s.payloads.len());
        assert_eq!(s.bytes, s.payloads.values().sum::<u64>());
        assert!(!dir.path().join("streams/v1/index.sjson").exists());
        assert_eq!(s.index_path, "streams/v1/index.json");
    }

    #[test]
    fn md5_only_items() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SampleSpec {
            md5_only: true,
            ..SampleSpec::default()
        };
        generate(&spec, dir.path(), None).unwrap();
        for (_, _, _, _, it) in all_items(dir.path()) {
            let data = fs::read(dir.path().join(it["path"].as_str().unwrap())).unwrap();
            assert_eq!(it["md5"], json!(hex::encode(Md5::digest(&data))));
            assert!(it.get("sha256").is_none());
        }
    }

    #[test]
    fn flavours_share_squashfs_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let s = generate(&SampleSpec::default(), dir.path(), None).unwrap();
        let items = all_items(dir.path());
        let path_of = |prod: &str, item: &str| {
            items
                .iter()
                .find(|(_, p, v, i, _)| p == prod && v == "20250718" && i == item)
                .map(|t| t.4["path"].as_str().unwrap().to_string())
                .unwrap()
        };
        let ga = "com.ubuntu.maas.stable:v3:boot:16.04:amd64:ga-16.04";
        let hwe = "com.ubuntu.maas.stable:v3:boot:16.04:amd64:hwe-16.04";
        assert_eq!(path_of(ga, "squashfs"), "xenial/amd64/20250718/squashfs");
        assert_eq!(path_of(ga, "squashfs"), path_of(hwe, "squashfs"));
        assert_eq!(path_of(ga, "manifest"), path_of(hwe, "manifest"));
        assert_ne!(path_of(ga, "boot-kernel"), path_of(hwe, "boot-kernel"));
        // Shared paths count once.
        assert_eq!(s.files, s.items - 2 * 2 * 2 * 2);
        let oses: std::collections::BTreeSet<String> = all_items(dir.path())
            .into_iter()
            .filter(|t| t.0.ends_with(":1:bootloader-download"))
            .map(|t| t.1)
            .collect();
        assert_eq!(oses.len(), 5);
    }

    #[test]
    fn deterministic_and_incremental() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let day0 = SampleSpec::default();
        generate(&day0, a.path(), None).unwrap();
        generate(&day0, b.path(), None).unwrap();
        for f in [
            "streams/v1/index.json",
            "streams/v1/com.ubuntu.maas:stable:v3:download.json",
        ] {
            assert_eq!(
                fs::read(a.path().join(f)).unwrap(),
                fs::read(b.path().join(f)).unwrap()
            );
        }
        let sq = "xenial/amd64/20250718/squashfs";
        let before = fs::read(a.path().join(sq)).unwrap();
        // Day 1: a new version, the oldest dropped; the shared path keeps its bytes.
        let day1 = SampleSpec {
            versions: vec!["20250718".into(), "20250801".into()],
            ..SampleSpec::default()
        };
        let s = generate(&day1, a.path(), None).unwrap();
        assert_eq!(fs::read(a.path().join(sq)).unwrap(), before);
        assert!(s.payloads.contains_key("xenial/amd64/20250801/squashfs"));
        assert!(!s.payloads.contains_key("xenial/amd64/20250615/squashfs"));
        assert!(a.path().join("xenial/amd64/20250801/squashfs").is_file());
        let text = fs::read_to_string(a.path().join("streams/v1/index.json")).unwrap();
        assert!(text.contains("Fri, 01 Aug 2025 08:01:49 +0000"), "{text}");
        for (_, _, v, _, _) in all_items(a.path())
            .iter()
            .filter(|t| t.0.ends_with("v3:download"))
        {
            assert_ne!(v, "20250615");
        }
    }

    #[test]
    fn aliases_replace_release_fields() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SampleSpec {
            aliases: true,
            ..SampleSpec::default()
        };
        generate(&spec, dir.path(), None).unwrap();
        let doc = read_json(
            &dir.path()
                .join("streams/v1/com.ubuntu.maas:stable:v3:download.json"),
        );
        assert_eq!(
            doc["_aliases"]["release"]["xenial"]["release_title"],
            json!("16.04 LTS")
        );
        let p = &doc["products"]["com.ubuntu.maas.stable:v3:boot:16.04:arm64:ga-16.04"];
        assert_eq!(p["release"], json!("xenial"));
        assert!(p.get("release_title").is_none());
    }

    #[test]
    fn signer_writes_sjson_family() {
        let dir = tempfile::tempdir().unwrap();
        let signer = |b: &[u8]| -> Result<Vec<u8>, SignError> {
            let mut v = b"SIGNED\n".to_vec();
            v.extend_from_slice(b);
            Ok(v)
        };
        let s = generate(&SampleSpec::default(), dir.path(), Some(&signer)).unwrap();
        assert_eq!(s.index_path, "streams/v1/index.sjson");
        let signed = fs::read_to_string(dir.path().join("streams/v1/index.sjson")).unwrap();
        let plain = fs::read_to_string(dir.path().join("streams/v1/index.json")).unwrap();
        assert!(signed.starts_with("SIGNED\n"));
        assert!(signed.contains("download.sjson\""));
        assert!(!plain.contains(".sjson"));
        let id = "com.ubuntu.maas:stable:1:bootloader-download";
        let p = fs::read(dir.path().join(format!("streams/v1/{id}.json"))).unwrap();
        let sp = fs::read(dir.path().join(format!("streams/v1/{id}.sjson"))).unwrap();
        assert_eq!(&sp[7..], &p[..]);
        let failing = |_: &[u8]| -> Result<Vec<u8>, SignError> { Err("no key".into()) };
        let err = generate(&SampleSpec::default(), dir.path(), Some(&failing)).unwrap_err();
        assert!(err.to_string().contains("no key"));
    }

    #[test]
    fn pretty_like_real_files() {
        let s = to_pretty(&json!({"b": 1, "a": {"d": [1], "c": "x"}}));
        assert_eq!(
            s,
            "{\n \"a\": {\n  \"c\": \"x\",\n  \"d\": [\n   1\n  ]\n },\n \"b\": 1\n}\n"
        );
        assert_eq!(
            rfc2822_from_version("20250724"),
            "Thu, 24 Jul 2025 08:01:49 +0000"
        );
        assert_eq!(
            rfc2822_from_version("20240229_01"),
            "Thu, 29 Feb 2024 08:01:49 +0000"
        );
    }
}
