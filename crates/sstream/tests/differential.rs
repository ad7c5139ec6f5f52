//! Differential tests: our drop-in `sstream-mirror` against the reference
//! Python tool. Each test generates a signed sample stream, serves it with
//! `sstream serve`, runs both tools with the same arguments into two
//! directories and compares the trees (see `support::compare_trees`).

mod support;

use simplestreams::sample::{SampleRelease, SampleSpec, SampleStream};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use support::*;

/// A signed sample stream served over HTTP, and two output directories.
struct Case {
    gpg: Gpg,
    tmp: tempfile::TempDir,
    src: PathBuf,
    server: Server,
    /// What the first generation wrote.
    stream: SampleStream,
}

impl Case {
    fn new(spec: &SampleSpec) -> Case {
        let gpg = Gpg::new();
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let stream = gpg.generate(spec, &src);
        let server = Server::start(&src);
        Case {
            gpg,
            tmp,
            src,
            server,
            stream,
        }
    }

    /// Regenerates the served stream for another "day".
    fn update(&self, spec: &SampleSpec) -> SampleStream {
        self.gpg.generate(spec, &self.src)
    }

    fn out(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn keyring_opt(&self) -> String {
        format!("--keyring={}", self.gpg.keyring.display())
    }

    /// Runs the reference into `reference/<name>` and ours into `ours/<name>`
    /// with the arguments `make(OUT)`, checks both succeed, and compares.
    fn both(&self, name: &str, make: impl Fn(&str) -> Vec<String>) -> (PathBuf, PathBuf) {
        let (r, o) = (
            self.out(&format!("reference-{name}")),
            self.out(&format!("ours-{name}")),
        );
        run_ok(
            &reference_mirror(),
            &self.gpg.verify_home,
            &make(&r.to_string_lossy()),
        );
        run_ok(
            &ours_mirror(),
            &self.gpg.verify_home,
            &make(&o.to_string_lossy()),
        );
        compare_trees(&r, &o);
        (r, o)
    }
}

fn day(versions: &[&str], bootloaders: &[&str]) -> SampleSpec {
    SampleSpec {
        releases: vec![
            SampleRelease::new("xenial", "16.04"),
            SampleRelease::new("jammy", "22.04"),
        ],
        arches: vec!["amd64".into()],
        versions: versions.iter().map(|s| s.to_string()).collect(),
        bootloader_versions: bootloaders.iter().map(|s| s.to_string()).collect(),
        ..SampleSpec::default()
    }
}

/// Asserts the mirror holds (or lacks) the given item paths.
fn assert_has(out: &Path, present: &[&str], absent: &[&str]) {
    let f = files(out);
    for p in present {
        assert!(
            f.contains(*p),
            "{} lacks {p}; it has:\n{f:#?}",
            out.display()
        );
    }
    for p in absent {
        assert!(!f.contains(*p), "{} has {p}", out.display());
    }
}

#[test]
fn seed_command_lines() {
    let spec = SampleSpec {
        releases: vec![
            SampleRelease::new("trusty", "14.04"),
            SampleRelease::new("xenial", "16.04"),
            SampleRelease::new("jammy", "22.04"),
        ],
        ..SampleSpec::default()
    };
    let case = Case::new(&spec);
    let url = case.server.url.clone();
    let k = case.keyring_opt();
    let (r, _) = case.both("seed", |out| {
        args(&[
            &k,
            &url,
            out,
            "arch=amd64",
            "release~(trusty|xenial)",
            "--max=1",
            "--progress",
        ])
    });
    assert_has(
        &r,
        &[
            "streams/v1/index.sjson",
            "streams/v1/com.ubuntu.maas:stable:v3:download.sjson",
            "xenial/amd64/20250718/squashfs",
            "trusty/amd64/20250718/hwe-14.04/generic/boot-kernel",
        ],
        &[
            "streams/v1/index.json",
            "xenial/amd64/20250615/squashfs",
            "xenial/arm64/20250718/squashfs",
            "jammy/amd64/20250718/squashfs",
            "bootloaders/pxe/i386/20231004.0/syslinux.tar.xz",
        ],
    );
    // The second command line, into the same directories.
    case.both("seed", |out| {
        args(&[
            &k,
            &url,
            out,
            "os~(grub*|pxelinux)",
            "--max=1",
            "--progress",
        ])
    });
    assert_has(
        &r,
        &[
            "xenial/amd64/20250718/squashfs",
            "bootloaders/pxe/i386/20231004.0/syslinux.tar.xz",
            "bootloaders/uefi/amd64/20231004.0/shim-signed.tar.xz",
            "bootloaders/open-firmware/ppc64el/20231004.0/grub2.tar.xz",
        ],
        &["bootloaders/pxe/i386/20230222.0/syslinux.tar.xz"],
    );
}

#[test]
fn unfiltered_from_index_url() {
    let case = Case::new(&SampleSpec::default());
    let url = format!("{}streams/v1/index.sjson", case.server.url);
    let k = case.keyring_opt();
    let (r, _) = case.both("all", |out| args(&[&k, &url, out]));
    let have = files(&r);
    assert!(case.stream.files > 50);
    for p in case.stream.payloads.keys() {
        assert!(have.contains(p), "reference did not mirror {p}");
    }
}

#[test]
fn max_and_keep_over_stream_updates() {
    let days = [
        day(&["20250601", "20250615"], &["20230222.0"]),
        day(
            &["20250601", "20250615", "20250701"],
            &["20230222.0", "20231004.0"],
        ),
        day(&["20250615", "20250701"], &["20231004.0"]),
        day(&["20250715"], &["20231004.0", "20240101.0"]),
    ];
    let case = Case::new(&days[0]);
    let url = case.server.url.clone();
    let k = case.keyring_opt();
    for spec in &days {
        let _ = case.update(spec);
        case.both("max", |out| args(&[&k, "--max", "2", &url, out]));
        case.both("keep", |out| args(&[&k, &url, out, "--max", "2", "--keep"]));
    }
    let (max, keep) = (case.out("reference-max"), case.out("reference-keep"));
    assert_has(
        &max,
        &["jammy/amd64/20250715/squashfs"],
        &["jammy/amd64/20250701/squashfs"],
    );
    assert_has(
        &keep,
        &[
            "jammy/amd64/20250715/squashfs",
            "jammy/amd64/20250701/squashfs",
        ],
        &[],
    );
    assert_has(
        &max,
        &[],
        &[
            "jammy/amd64/20250615/squashfs",
            "jammy/amd64/20250601/squashfs",
        ],
    );
}

#[test]
fn stream_with_aliases() {
    let case = Case::new(&SampleSpec {
        aliases: true,
        ..SampleSpec::default()
    });
    let url = case.server.url.clone();
    let k = case.keyring_opt();
    // A filter on a field that only the aliases provide.
    let (r, _) = case.both("aliases", |out| {
        args(&[&k, &url, out, "release_title~^16", "arch=arm64"])
    });
    assert_has(
        &r,
        &[
            "xenial/arm64/20250615/squashfs",
            "xenial/arm64/20250718/squashfs",
        ],
        &[
            "trusty/arm64/20250718/squashfs",
            "xenial/amd64/20250718/squashfs",
        ],
    );
    case.both("aliases", |out| args(&[&k, &url, out, "--max=1"]));
    assert_has(
        &r,
        &["trusty/amd64/20250718/squashfs"],
        &["xenial/arm64/20250615/squashfs"],
    );
}

#[test]
fn stream_with_md5_only_items() {
    let case = Case::new(&SampleSpec {
        md5_only: true,
        ..SampleSpec::default()
    });
    let url = case.server.url.clone();
    let k = case.keyring_opt();
    let (r, _) = case.both("md5", |out| args(&[&k, &url, out, "--max=1"]));
    assert_has(
        &r,
        &["trusty/arm64/20250718/squashfs"],
        &["trusty/arm64/20250615/squashfs"],
    );
}

/// Plan lines (`+ ...`, `- ...`, `N Mb change`) of a dry run's output.
fn plan_lines(text: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| l.starts_with("+ ") || l.starts_with("- ") || l.ends_with(" Mb change"))
        .map(str::to_string)
        .collect()
}

/// The total a plan should print when each path counts once: downloads minus
/// removals, in whole MiB (truncated toward zero), from the `+`/`-` lines and
/// the stream's sizes.
fn distinct_total(lines: &[String], sizes: &BTreeMap<String, u64>) -> String {
    let mut plus = BTreeSet::new();
    let mut minus = BTreeSet::new();
    for l in lines {
        let f: Vec<&str> = l.split(' ').collect();
        // "+ PRODUCT VERSION ITEM PATH N Mb"
        assert_eq!(f.len(), 7, "unexpected plan line {l:?}");
        let set = if f[0] == "+" { &mut plus } else { &mut minus };
        set.insert(f[4].to_string());
    }
    let sum = |s: &BTreeSet<String>| -> i64 { s.iter().map(|p| sizes[p] as i64).sum() };
    format!("{} Mb change", (sum(&plus) - sum(&minus)) / (1024 * 1024))
}

#[test]
fn dry_run_plans() {
    let mib = 1024 * 1024;
    let spec = |versions: &[&str]| SampleSpec {
        releases: vec![SampleRelease::new("xenial", "16.04")],
        arches: vec!["amd64".into()],
        versions: versions.iter().map(|s| s.to_string()).collect(),
        payload_bytes: 3 * mib,
        ..SampleSpec::default()
    };
    let case = Case::new(&spec(&["20250615"]));
    let url = case.server.url.clone();
    let k = case.keyring_opt();
    let mut sizes = BTreeMap::new();
    let dry = |out: &Path, sizes: &BTreeMap<String, u64>, expect_changes: bool| {
        let a = args(&[&k, &url, &out.to_string_lossy(), "--dry-run", "--max=1"]);
        let before = snapshot(out);
        let r = run_ok(&reference_mirror(), &case.gpg.verify_home, &a);
        assert_eq!(
            snapshot(out),
            before,
            "the reference's dry run changed {}",
            out.display()
        );
        let o = run_ok(&ours_mirror(), &case.gpg.verify_home, &a);
        assert_eq!(
            snapshot(out),
            before,
            "our dry run changed {}",
            out.display()
        );
        let theirs = plan_lines(&r.stderr);
        let (total, steps) = theirs.split_last().expect("the reference printed a plan");
        let mut ours = plan_lines(&o.stdout);
        let our_total = ours.pop().unwrap_or_default();
        let (mut want, mut got) = (steps.to_vec(), ours.clone());
        want.sort();
        got.sort();
        assert_eq!(
            got, want,
            "plan lines: ours (stdout) vs the reference's (stderr)"
        );
        assert_eq!(
            our_total,
            distinct_total(steps, sizes),
            "total (each path once)"
        );
        // The shared squashfs makes the reference's total larger than ours.
        if expect_changes {
            assert_ne!(
                total, &our_total,
                "test stream should make the totals differ"
            );
        }
    };

    // A first run into an empty directory.
    let empty = case.out("empty");
    std::fs::create_dir(&empty).unwrap();
    sizes.extend(case.stream.payloads.clone());
    dry(&empty, &sizes, true);

    // Over an existing mirror (made by the reference), after an update:
    // downloads of the new version and removals of the old one.
    let mirror = case.out("mirror");
    run_ok(
        &reference_mirror(),
        &case.gpg.verify_home,
        &args(&[&k, &url, &mirror.to_string_lossy(), "--max=1"]),
    );
    let day1 = spec(&["20250615", "20250718"]);
    sizes.extend(case.update(&day1).payloads);
    dry(&mirror, &sizes, false);
}

#[test]
fn unsigned_family_via_path_and_no_verify() {
    let case = Case::new(&SampleSpec::default());
    let url = case.server.url.clone();
    let (r, _) = case.both("plain", |out| {
        args(&[
            &url,
            "--path",
            "streams/v1/index.json",
            out,
            "arch=arm64",
            "--max=1",
        ])
    });
    assert_has(
        &r,
        &["streams/v1/index.json", "xenial/arm64/20250718/squashfs"],
        &["streams/v1/index.sjson", "xenial/amd64/20250718/squashfs"],
    );
    // Signed metadata, no keyring, verification off.
    let (r, _) = case.both("no-verify", |out| {
        args(&["--no-verify", &url, out, "release=trusty", "--max=1"])
    });
    assert_has(
        &r,
        &["streams/v1/index.sjson", "trusty/amd64/20250718/squashfs"],
        &["streams/v1/index.json"],
    );
}

/// The tree comparison itself: what it ignores and what it reports.
#[test]
fn tree_comparison_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let write = |root: &Path, rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(&a, "x/item", "payload");
    write(&b, "x/item", "payload");
    write(
        &a,
        ".data/references.json",
        r#"{"x/item": ["c/p/v/i1", "c/p/v/i2", "c/p/v/i1"]}"#,
    );
    write(
        &b,
        ".data/references.json",
        "{\n \"x/item\": [\"c/p/v/i2\", \"c/p/v/i1\"]\n}\n",
    );
    write(&a, ".data/c:id", r#"{"b": 1, "a": [1, 2], "updated": "x"}"#);
    write(
        &b,
        ".data/c:id",
        "{\n \"a\": [\n  1,\n  2\n ],\n \"b\": 1,\n \"updated\": \"x\"\n}\n",
    );
    write(&a, ".sstream.lock", "");
    std::fs::create_dir_all(b.join("empty/dir")).unwrap();
    assert_eq!(tree_diff(&a, &b), Vec::<String>::new());

    write(&b, "x/item", "PAYLOAD");
    write(&b, "x/other", "");
    write(&b, ".data/references.json", r#"{"x/item": ["c/p/v/i2"]}"#);
    write(&b, ".data/c:id", r#"{"b": 2, "a": [1, 2]}"#);
    let d = tree_diff(&a, &b).join("\n");
    for want in [
        "x/item: bytes differ",
        "only in",
        "x/other",
        ".data/references.json",
        "/b: 1 != 2",
    ] {
        assert!(d.contains(want), "{want:?} missing from:\n{d}");
    }
    assert_eq!(tree_diff(&a, &b).len(), 4, "{d}");
}

/// `--no-item-download` writes state but no items and no references; a later
/// run with downloads behaves as the reference's does on such a mirror.
#[test]
fn no_item_download_then_a_full_run() {
    let case = Case::new(&day(&["20250601", "20250615"], &["20231004.0"]));
    let k = case.keyring_opt();
    let (r, o) = case.both("noitems", |out| {
        args(&[&k, "--no-item-download", "--max=1", &case.server.url, out])
    });
    assert!(
        !files(&o).iter().any(|f| f.ends_with("squashfs")),
        "no items"
    );
    assert!(!o.join(".data/references.json").exists());
    // Day 2 brings a new version; both runs download it.
    case.update(&day(&["20250601", "20250615", "20250701"], &["20231004.0"]));
    for (tool, out) in [(reference_mirror(), &r), (ours_mirror(), &o)] {
        run_ok(
            &tool,
            &case.gpg.verify_home,
            &args(&[&k, "--max=1", &case.server.url, &out.to_string_lossy()]),
        );
    }
    compare_trees(&r, &o);
    assert_has(&o, &["xenial/amd64/20250701/squashfs"], &[]);
}

/// `--keep` without `--max` is refused up front (the reference crashes with
/// a traceback), and nothing is written.
#[test]
fn keep_without_max_is_a_usage_error() {
    let case = Case::new(&day(&["20250601"], &["20231004.0"]));
    let out = case.out("keep");
    let result = std::process::Command::new(ours_mirror())
        .args(["--keep", &case.server.url, &out.to_string_lossy()])
        .env("GNUPGHOME", &case.gpg.verify_home)
        .output()
        .unwrap();
    assert!(!result.status.success());
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(err.contains("--keep needs --max"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!out.exists());
}

/// Concurrency changes nothing: with `--jobs 1` and `--jobs 16` our tree is
/// the reference's, over a sequence of days with removals.
#[test]
fn any_concurrency_gives_the_reference_tree() {
    let case = Case::new(&day(&["20250601", "20250615"], &["20230222.0"]));
    let k = case.keyring_opt();
    let outs = ["reference-jobs", "ours-jobs-1", "ours-jobs-16"].map(|n| case.out(n));
    let run_all = || {
        run_ok(
            &reference_mirror(),
            &case.gpg.verify_home,
            &args(&[&k, "--max=2", &case.server.url, &outs[0].to_string_lossy()]),
        );
        for (out, jobs) in [(&outs[1], "1"), (&outs[2], "16")] {
            run_ok(
                &ours_mirror(),
                &case.gpg.verify_home,
                &args(&[
                    &k,
                    "--max=2",
                    "--jobs",
                    jobs,
                    &case.server.url,
                    &out.to_string_lossy(),
                ]),
            );
        }
        compare_trees(&outs[0], &outs[1]);
        compare_trees(&outs[0], &outs[2]);
    };
    run_all();
    case.update(&day(
        &["20250615", "20250701", "20250715"],
        &["20230222.0", "20231004.0"],
    ));
    run_all();
    assert_has(
        &outs[2],
        &["xenial/amd64/20250715/squashfs"],
        &["xenial/amd64/20250601/squashfs"],
    );
}

/// The real (trimmed) images.maas.io metadata from `tests/fixtures`, with
/// its real sizes: the dry-run plan of the seed's command lines and queries
/// are the reference's, line for line (our total counts each file once).
#[test]
fn real_maas_metadata_plans_and_queries() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/maas-real");
    let tmp = tempfile::tempdir().unwrap();
    let streams = tmp.path().join("src/streams/v1");
    std::fs::create_dir_all(&streams).unwrap();
    let mut sizes = BTreeMap::new();
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_name().unwrap();
            std::fs::copy(&path, streams.join(name)).unwrap();
            let doc: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            for product in doc["products"]
                .as_object()
                .into_iter()
                .flat_map(|p| p.values())
            {
                for version in product["versions"].as_object().unwrap().values() {
                    for item in version["items"].as_object().unwrap().values() {
                        sizes.insert(
                            item["path"].as_str().unwrap().to_owned(),
                            item["size"].as_u64().unwrap(),
                        );
                    }
                }
            }
        }
    }
    assert!(sizes.len() > 20, "the fixtures hold items");
    let server = Server::start(&tmp.path().join("src"));
    let home = tempfile::tempdir().unwrap();
    let common = ["--no-verify", "--path", "streams/v1/index.json"];
    for filters in [
        &["arch=amd64", "release~(trusty|xenial|jammy|noble)"][..],
        &["os~(grub*|pxelinux)"][..],
        &["os=centos"][..],
        &[][..],
    ] {
        let out = tmp.path().join("out");
        let mut a = args(&common);
        a.extend(args(&[&server.url, &out.to_string_lossy()]));
        a.extend(args(filters));
        // (The reference's parser takes options after the filters, not
        // between the directory and the filters.)
        a.extend(args(&["--max=1", "--dry-run"]));
        let theirs = run_ok(&reference_mirror(), home.path(), &a);
        let ours = run_ok(&ours_mirror(), home.path(), &a);
        let (want, got) = (plan_lines(&theirs.stderr), plan_lines(&ours.stdout));
        assert!(want.len() > 2, "{filters:?} selects something");
        assert_eq!(got[..got.len() - 1], want[..want.len() - 1], "{filters:?}");
        let items: Vec<String> = got[..got.len() - 1].to_vec();
        assert_eq!(
            got.last().unwrap(),
            &distinct_total(&items, &sizes),
            "{filters:?}"
        );
        assert!(!out.exists(), "a dry run writes nothing");

        let mut q = args(&common);
        q.push(server.url.clone());
        q.extend(args(filters));
        q.extend(args(&[
            "--max=1",
            "-o",
            "%(product_name)s %(version_name)s %(item_name)s %(size)s %(item_url)s",
        ]));
        let want = run_ok(&reference().join("sstream-query"), home.path(), &q);
        let got = run_ok(
            Path::new(env!("CARGO_BIN_EXE_sstream-query")),
            home.path(),
            &q,
        );
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            String::from_utf8_lossy(&want.stdout),
            "{filters:?}"
        );
    }
}
