//! The mirror engine under faults: a misbehaving HTTP server, SIGKILL at
//! random points, a reader polling the published tree during a sync, and
//! the run lock. Every run must end in the tree of a clean run, or in a
//! clear failure that publishes nothing inconsistent.

mod faults_support;
mod support;

use faults_support::{
    Fault, FaultServer, Rng, args, assert_failed, assert_ok, compare_trees, inconsistencies,
    leftovers, listed_paths, mirror, published_problems, state_files, tree_diff, unaccounted,
};
use simplestreams::sample::{self, SampleSpec, SampleStream};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use std::{fs, thread};
use support::{copy_tree, snapshot};
use tempfile::TempDir;

const BL: &str = "com.ubuntu.maas:stable:1:bootloader-download";
const V3_JSON: &str = "streams/v1/com.ubuntu.maas:stable:v3:download.json";
const INDEX: &str = "streams/v1/index.json";

fn spec(versions: &[&str], bootloaders: &[&str], payload: u64) -> SampleSpec {
    faults_support::two_release_spec(versions, bootloaders, payload)
}

/// A source stream and the tree a clean run makes of it.
struct Fixture {
    _dirs: Vec<TempDir>,
    src: PathBuf,
    clean: PathBuf,
    sample: SampleStream,
    work: TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let (s, c) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let sample = sample::generate(
            &spec(&["20250615"], &["20230222.0"], 192 * 1024),
            s.path(),
            None,
        )
        .unwrap();
        let o = mirror(&args(
            s.path().to_str().unwrap(),
            c.path().to_str().unwrap(),
            &[],
        ));
        assert_ok(&o, "clean run");
        Fixture {
            src: s.path().to_path_buf(),
            clean: c.path().to_path_buf(),
            _dirs: vec![s, c],
            sample,
            work: TempDir::new().unwrap(),
        }
    }

    /// The largest payload (a squashfs) and its size.
    fn big(&self) -> (String, u64) {
        let (p, s) = self
            .sample
            .payloads
            .iter()
            .max_by_key(|(p, s)| (**s, (*p).clone()))
            .unwrap();
        (p.clone(), *s)
    }

    /// A bootloader payload.
    fn bootloader(&self) -> String {
        self.sample
            .payloads
            .keys()
            .find(|p| p.starts_with("bootloaders/"))
            .unwrap()
            .clone()
    }

    fn out(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs against a server with `faults` scripted, expects the clean tree,
/// and checks every scripted fault was used. Returns the server.
fn recovers(
    fx: &Fixture,
    name: &str,
    faults: &[(&str, Vec<Fault>)],
    extra: &[&str],
) -> FaultServer {
    let server = FaultServer::start(&fx.src);
    for (path, f) in faults {
        server.script(path, f);
    }
    let out = fx.out(name);
    let o = mirror(&args(&server.url, s(&out), extra));
    assert_ok(&o, name);
    compare_trees(&fx.clean, &out);
    assert_eq!(leftovers(&out), Vec::<String>::new(), "{name}: leftovers");
    assert_eq!(server.unused_faults(), 0, "{name}: not every fault was hit");
    server
}

#[test]
fn dropped_connections_resume_with_range() {
    let fx = Fixture::new();
    let (big, size) = fx.big();
    let server = recovers(
        &fx,
        "drop",
        &[(
            &big,
            vec![
                Fault::Drop { after: size / 3 },
                Fault::Drop {
                    after: size / 3 + 1000,
                },
            ],
        )],
        &[],
    );
    let reqs = server.requests_of(&big);
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(
        reqs[1..].iter().all(|r| r.range.is_some()),
        "resumed attempts must ask for a Range: {reqs:?}"
    );
}

#[test]
fn server_errors_and_429_are_retried() {
    let fx = Fixture::new();
    let (big, _) = fx.big();
    recovers(
        &fx,
        "5xx",
        &[
            (
                &big,
                vec![
                    Fault::Status {
                        code: 503,
                        retry_after: None,
                    },
                    Fault::Status {
                        code: 500,
                        retry_after: None,
                    },
                    Fault::Status {
                        code: 429,
                        retry_after: Some(1),
                    },
                ],
            ),
            (
                INDEX,
                vec![Fault::Status {
                    code: 503,
                    retry_after: None,
                }],
            ),
            (
                V3_JSON,
                vec![Fault::Status {
                    code: 429,
                    retry_after: Some(1),
                }],
            ),
        ],
        &[],
    );
}

#[test]
fn a_corrupted_byte_is_caught_and_refetched() {
    let fx = Fixture::new();
    let (big, size) = fx.big();
    let boot = fx.bootloader();
    recovers(
        &fx,
        "corrupt",
        &[
            (&big, vec![Fault::Corrupt { at: size / 2 }]),
            (&boot, vec![Fault::Corrupt { at: 0 }]),
        ],
        &[],
    );
}

#[test]
fn ignored_and_wrong_ranges_restart_cleanly() {
    let fx = Fixture::new();
    let (big, size) = fx.big();
    let boot = fx.bootloader();
    recovers(
        &fx,
        "ranges",
        &[
            (
                &big,
                vec![Fault::Drop { after: size / 2 }, Fault::IgnoreRange],
            ),
            (
                &boot,
                vec![
                    Fault::Drop { after: 10 },
                    Fault::WrongContentRange { shift: 3 },
                ],
            ),
        ],
        &[],
    );
    // A 206 to a request without Range, starting elsewhere than 0.
    recovers(
        &fx,
        "ranges-unasked",
        &[(&big, vec![Fault::WrongContentRange { shift: 100 }])],
        &[],
    );
}

#[test]
fn stalls_time_out_and_trickles_complete() {
    let fx = Fixture::new();
    let (big, size) = fx.big();
    let boot = fx.bootloader();
    recovers(
        &fx,
        "stall",
        &[
            (&big, vec![Fault::Stall { after: size / 4 }]),
            (V3_JSON, vec![Fault::Stall { after: 100 }]),
            // Slow but never idle for a whole --timeout: must not be cut off.
            (
                &boot,
                vec![Fault::Trickle {
                    chunk: 64,
                    delay_ms: 150,
                }],
            ),
        ],
        &[],
    );
}

#[test]
fn lying_content_lengths_are_survived() {
    let fx = Fixture::new();
    let (big, _) = fx.big();
    let boot = fx.bootloader();
    recovers(
        &fx,
        "lie",
        &[
            (&big, vec![Fault::LieLength { delta: 5000 }]),
            (&boot, vec![Fault::LieLength { delta: -7 }]),
            (V3_JSON, vec![Fault::LieLength { delta: 300 }]),
        ],
        &[],
    );
}

#[test]
fn a_persistently_bad_item_fails_only_its_stream() {
    let fx = Fixture::new();
    let (big, size) = fx.big();
    let server = FaultServer::start(&fx.src);
    server.always(&big, Fault::Corrupt { at: size - 1 });
    let out = fx.out("bad-item");
    let o = mirror(&args(&server.url, s(&out), &["--retries", "1"]));
    let url = format!("{}{big}", server.url);
    assert_failed(&o, "bad item", &[&url, "mismatch"]);
    // The other stream is published, the failed one is not, nor the index.
    assert_eq!(state_files(&out), vec![BL.to_string()]);
    assert!(out.join(format!("streams/v1/{BL}.json")).is_file());
    assert!(!out.join(V3_JSON).exists());
    assert!(!out.join(INDEX).exists());
    assert!(!out.join(&big).exists(), "a bad item was taken");
    assert_eq!(inconsistencies(&out), Vec::<String>::new());
    // Once the server behaves, a rerun converges to the clean tree.
    drop(server);
    let server = FaultServer::start(&fx.src);
    assert_ok(&mirror(&args(&server.url, s(&out), &[])), "rerun");
    compare_trees(&fx.clean, &out);
    assert_eq!(leftovers(&out), Vec::<String>::new());
}

#[test]
fn every_failure_is_reported_and_an_existing_mirror_kept() {
    let fx = Fixture::new();
    let (big, _) = fx.big();
    let boot = fx.bootloader();
    // An existing mirror of the same stream, minus the two failing items:
    // the state must go back to what it was.
    let out = fx.out("two-failures");
    let server = FaultServer::start(&fx.src);
    server.always(
        &big,
        Fault::Status {
            code: 500,
            retry_after: None,
        },
    );
    server.always(&boot, Fault::Drop { after: 5 });
    let o = mirror(&args(&server.url, s(&out), &["--retries", "1"]));
    let (u1, u2) = (
        format!("{}{big}", server.url),
        format!("{}{boot}", server.url),
    );
    assert_failed(&o, "two failures", &[&u1, &u2, "500", "2 item(s) failed"]);
    assert_eq!(state_files(&out), Vec::<String>::new());
    assert!(!out.join(INDEX).exists());
    assert_eq!(inconsistencies(&out), Vec::<String>::new());

    // With a complete mirror in place and a new day that fails, the
    // published metadata is left as it was.
    let out2 = fx.out("kept");
    copy_tree(&fx.clean, &out2);
    let day2 = TempDir::new().unwrap();
    let day2_sample = sample::generate(
        &spec(&["20250615", "20250718"], &["20230222.0"], 192 * 1024),
        day2.path(),
        None,
    )
    .unwrap();
    let new_big = day2_sample
        .payloads
        .keys()
        .find(|p| p.contains("20250718") && p.ends_with("squashfs"))
        .unwrap()
        .clone();
    let server = FaultServer::start(day2.path());
    server.always(&new_big, Fault::Corrupt { at: 3 });
    let before = snapshot(&out2);
    let o = mirror(&args(&server.url, s(&out2), &["--retries", "0"]));
    assert_failed(&o, "day 2", &[&new_big, "mismatch"]);
    let after = snapshot(&out2);
    let changed: Vec<&String> = after
        .keys()
        .chain(before.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .filter(|k| !k.ends_with(".lock") && !k.ends_with('/'))
        .filter(|k| !faults_support::UNCOMPARED.contains(&k.as_str()))
        .filter(|k| !k.contains("20250718"))
        .collect();
    assert!(
        changed.is_empty(),
        "published files changed after a failed run: {changed:?}"
    );
    assert!(!out2.join(&new_big).exists());
    assert_eq!(inconsistencies(&out2), Vec::<String>::new());
}

#[test]
fn mirror_fallback_on_any_primary_failure() {
    let fx = Fixture::new();
    let (big, size) = fx.big();
    let cases = [
        Fault::Status {
            code: 404,
            retry_after: None,
        },
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        // Each attempt adds a few bytes to the .part: the backup resumes it.
        Fault::Drop { after: 10 },
        Fault::Corrupt { at: size / 2 },
        Fault::Stall { after: 10 },
        Fault::LieLength { delta: -1000 },
    ];
    for (n, fault) in cases.into_iter().enumerate() {
        let primary = FaultServer::start(&fx.src);
        let backup = FaultServer::start(&fx.src);
        primary.always(&big, fault.clone());
        let out = fx.out(&format!("fallback-{n}"));
        let o = mirror(&args(
            &primary.url,
            s(&out),
            &["--retries", "1", "--mirror", &backup.url],
        ));
        assert_ok(&o, &format!("fallback on {fault:?}"));
        compare_trees(&fx.clean, &out);
        assert!(
            !primary.requests_of(&big).is_empty() && !backup.requests_of(&big).is_empty(),
            "{fault:?}: the item was not tried at both roots"
        );
        // Metadata comes from the primary only.
        assert!(backup.requests_of(INDEX).is_empty());
    }
    // Both roots failing: one error naming the item and the attempts.
    let primary = FaultServer::start(&fx.src);
    let backup = FaultServer::start(&fx.src);
    primary.always(&big, Fault::Corrupt { at: 0 });
    backup.always(
        &big,
        Fault::Status {
            code: 500,
            retry_after: None,
        },
    );
    let out = fx.out("fallback-both");
    let o = mirror(&args(
        &primary.url,
        s(&out),
        &["--retries", "0", "--mirror", &backup.url],
    ));
    assert_failed(&o, "both roots", &[&big, "500"]);
    assert!(!out.join(&big).exists());
    assert_eq!(inconsistencies(&out), Vec::<String>::new());
}

#[test]
fn metadata_failures_publish_nothing() {
    let fx = Fixture::new();
    for (n, (path, fault)) in [
        (
            V3_JSON,
            Fault::Status {
                code: 503,
                retry_after: None,
            },
        ),
        (INDEX, Fault::Stall { after: 20 }),
        (V3_JSON, Fault::Drop { after: 100 }),
    ]
    .into_iter()
    .enumerate()
    {
        let server = FaultServer::start(&fx.src);
        server.always(path, fault.clone());
        let out = fx.out(&format!("meta-{n}"));
        copy_tree(&fx.clean, &out);
        let before = snapshot(&out);
        let o = mirror(&args(&server.url, s(&out), &["--retries", "1"]));
        assert_failed(
            &o,
            &format!("{fault:?}"),
            &[&format!("{}{path}", server.url)],
        );
        let mut after = snapshot(&out);
        let mut before = before;
        for m in [&mut after, &mut before] {
            m.remove(".data/sstream.lock");
            for u in faults_support::UNCOMPARED {
                m.remove(*u);
            }
        }
        assert!(before == after, "{fault:?}: the mirror changed");
    }
}

// ---------------------------------------------------------------- kills

/// Two days of a stream: day 2 drops a version and adds one, so a run
/// from day 1 to day 2 downloads, publishes and deletes.
struct TwoDays {
    _dirs: Vec<TempDir>,
    day1: PathBuf,
    day2: PathBuf,
    /// The clean mirror of day 1.
    tree1: PathBuf,
    /// The clean mirror of day 2 made from `tree1`.
    tree2: PathBuf,
}

impl TwoDays {
    fn new(payload: u64) -> TwoDays {
        let dirs: Vec<TempDir> = (0..4).map(|_| TempDir::new().unwrap()).collect();
        let p: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
        sample::generate(
            &spec(&["20250101", "20250201"], &["20230222.0"], payload),
            &p[0],
            None,
        )
        .unwrap();
        sample::generate(
            &spec(&["20250201", "20250301"], &["20231004.0"], payload),
            &p[1],
            None,
        )
        .unwrap();
        assert_ok(&mirror(&args(s(&p[0]), s(&p[2]), &[])), "day 1");
        copy_tree(&p[2], &p[3]);
        assert_ok(&mirror(&args(s(&p[1]), s(&p[3]), &[])), "day 2");
        let t = TwoDays {
            day1: p[0].clone(),
            day2: p[1].clone(),
            tree1: p[2].clone(),
            tree2: p[3].clone(),
            _dirs: dirs,
        };
        assert!(
            !tree_diff(&t.tree1, &t.tree2).is_empty(),
            "the two days must differ"
        );
        t
    }
}

fn spawn_mirror(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sstream-mirror"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sstream-mirror")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn sigkill_at_random_points_never_leaves_an_inconsistent_tree() {
    let rounds = env_u64("SSTREAM_KILL_ROUNDS").unwrap_or(60);
    let seed = env_u64("SSTREAM_KILL_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    println!("kill test: seed {seed} (SSTREAM_KILL_SEED={seed} to replay), {rounds} kills");
    eprintln!("kill test: seed {seed} (SSTREAM_KILL_SEED={seed} to replay), {rounds} kills");
    let mut rng = Rng(seed);
    let days = TwoDays::new(96 * 1024);
    let server = FaultServer::start(&days.day2);
    server.throttle(8 * 1024, Duration::from_millis(4));
    let work = TempDir::new().unwrap();
    // How long an uninterrupted run takes (to spread the kills over it).
    let probe = work.path().join("probe");
    copy_tree(&days.tree1, &probe);
    let t = Instant::now();
    assert_ok(&mirror(&args(&server.url, s(&probe), &[])), "probe run");
    let full = t.elapsed().max(Duration::from_millis(50));
    compare_trees(&days.tree2, &probe);

    let out = work.path().join("out");
    copy_tree(&days.tree1, &out);
    let chain = 4;
    // At rest the item area holds what the records name and the downloads
    // of day 2 in progress; anything else (orphans, abandoned .part files)
    // stays within one payload (a file being collected when killed).
    let day2_items = listed_paths(&days.day2);
    let slack = 96 * 1024;
    for round in 0..rounds {
        // Half the kills anywhere, half near the end (publication, deletions).
        let ms = full.as_millis() as u64;
        let at = if rng.below(2) == 0 {
            rng.below(ms + 1)
        } else {
            ms * 7 / 10 + rng.below(ms * 4 / 10 + 1)
        };
        let mut child = spawn_mirror(&args(&server.url, s(&out), &[]));
        thread::sleep(Duration::from_millis(at));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let mut problems = inconsistencies(&out);
        problems.extend(published_problems(&out, None));
        assert!(
            problems.is_empty(),
            "seed {seed}, round {round}, killed at {at} ms ({status}): inconsistent tree:\n  {}",
            problems.join("\n  ")
        );
        let (extra, files) = unaccounted(&out, &day2_items);
        assert!(
            extra <= slack,
            "seed {seed}, round {round}: {extra} bytes unaccounted for: {files:?}"
        );
        if round % chain == chain - 1 || round + 1 == rounds {
            let o = mirror(&args(&server.url, s(&out), &[]));
            assert_ok(&o, &format!("seed {seed}, rerun after round {round}"));
            let d = tree_diff(&days.tree2, &out);
            assert!(
                d.is_empty(),
                "seed {seed}, round {round}: the rerun did not converge:\n  {}",
                d.join("\n  ")
            );
            assert_eq!(leftovers(&out), Vec::<String>::new(), "seed {seed}");
            assert_eq!(published_problems(&out, None), Vec::<String>::new());
            fs::remove_dir_all(&out).unwrap();
            copy_tree(&days.tree1, &out);
        }
    }
}

/// The kill loop over an upstream that moves on every round (each
/// generation replaces the newest version by another), with clear-signed
/// documents verified against the test key. At every resting point (after
/// each kill and each rerun) every published signature verifies with
/// `gpgv`, every item the published products files list is whole, and no
/// orphan or `.part` piles up: after each rerun the item area holds exactly
/// what the mirror's records name, and after a kill nothing more than the
/// current upstream's items and the leftovers of the last few killed runs.
#[test]
fn sigkill_over_a_moving_upstream_piles_nothing_up() {
    let rounds = env_u64("SSTREAM_KILL_ROUNDS").map_or(24, |n| n as usize / 2 + 1);
    let seed = env_u64("SSTREAM_KILL_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    eprintln!("moving kill test: seed {seed} (SSTREAM_KILL_SEED={seed} to replay), {rounds} kills");
    let mut rng = Rng(seed);
    let gpg = support::Gpg::new();
    let payload: u64 = 48 * 1024;
    let src = TempDir::new().unwrap();
    let versions: Vec<String> = (0..rounds + 3)
        .map(|n| format!("2025{:02}{:02}", 1 + n / 28, 1 + n % 28))
        .collect();
    // Generation g: the first version, and a new one that the next
    // generation replaces (a killed run's downloads of it become orphans).
    let generation = |g: usize| {
        let _ = fs::remove_dir_all(src.path().join("streams"));
        let spec = spec(&[&versions[0], &versions[g + 1]], &["20230222.0"], payload);
        gpg.generate(&spec, src.path());
        let listed = listed_paths(src.path());
        let new_bytes: u64 = listed
            .iter()
            .filter(|p| p.contains(&versions[g + 1]))
            .map(|p| fs::metadata(src.path().join(p)).map_or(0, |m| m.len()))
            .sum();
        (listed, new_bytes)
    };
    let server = FaultServer::start(src.path());
    server.throttle(8 * 1024, Duration::from_millis(4));
    let keyring = gpg.keyring.to_str().unwrap().to_owned();
    let run_args = |out: &Path| -> Vec<String> {
        [
            "--keyring",
            keyring.as_str(),
            "--path",
            "streams/v1/index.sjson",
            "--timeout",
            "1",
            "--retries",
            "3",
            server.url.as_str(),
            s(out),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let run = |out: &Path| {
        let a = run_args(out);
        mirror(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let work = TempDir::new().unwrap();
    let out = work.path().join("out");
    generation(0);
    let t = Instant::now();
    assert_ok(&run(&out), "generation 0");
    let full = t.elapsed().max(Duration::from_millis(50));
    let at_rest = |what: &str, problems: Vec<String>| {
        assert!(
            problems.is_empty(),
            "seed {seed}, {what}:\n  {}",
            problems.join("\n  ")
        );
    };
    let mut killed_since_rerun: u64 = 0;
    for round in 0..rounds {
        let (current, version_bytes) = generation(round + 1);
        let ms = full.as_millis() as u64;
        let at = rng.below(ms + 1);
        let a = run_args(&out);
        let mut child = spawn_mirror(&a.iter().map(String::as_str).collect::<Vec<_>>());
        thread::sleep(Duration::from_millis(at));
        let _ = child.kill();
        let status = child.wait().unwrap();
        killed_since_rerun += 1;
        let what = format!("round {round}, killed at {at} ms ({status})");
        let mut problems = inconsistencies(&out);
        problems.extend(published_problems(&out, Some(&gpg.keyring)));
        at_rest(&what, problems);
        let (extra, files) = unaccounted(&out, &current);
        // What the killed runs since the last rerun may have left: at
        // most each of them the files of its new version.
        let bound = killed_since_rerun * version_bytes;
        assert!(
            extra <= bound,
            "seed {seed}, {what}: {extra} bytes unaccounted for (> {bound}): {files:?}"
        );
        if round % 3 == 2 || round + 1 == rounds {
            assert_ok(
                &run(&out),
                &format!("seed {seed}, rerun after round {round}"),
            );
            killed_since_rerun = 0;
            let what = format!("rerun after round {round}");
            let mut problems = inconsistencies(&out);
            problems.extend(published_problems(&out, Some(&gpg.keyring)));
            at_rest(&what, problems);
            let (extra, files) = unaccounted(&out, &BTreeSet::new());
            assert!(
                extra == 0,
                "seed {seed}, {what}: {extra} bytes no record names: {files:?}"
            );
            assert_eq!(leftovers(&out), Vec::<String>::new(), "seed {seed}, {what}");
        }
    }
}

// ---------------------------------------------------------------- reader

/// One pass of a reader: index → products files → `.data` state → items.
/// Returns a dangling reference, if one was seen while the state it came
/// from was unchanged.
fn read_once(root: &Path) -> Option<String> {
    // Index entries must name products files that exist.
    if let Ok(bytes) = fs::read(root.join(INDEX)) {
        let v: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => return Some(format!("{INDEX} is not JSON: {e}")),
        };
        let mut missing = Vec::new();
        if let Some(entries) = v.get("index").and_then(|i| i.as_object()) {
            for e in entries.values() {
                if let Some(p) = e.get("path").and_then(|p| p.as_str())
                    && !root.join(p).is_file()
                {
                    missing.push(p.to_owned());
                }
            }
        }
        if !missing.is_empty() && fs::read(root.join(INDEX)).ok().as_ref() == Some(&bytes) {
            return Some(format!("{INDEX} names missing {missing:?}"));
        }
    }
    for cid in state_files(root) {
        let file = root.join(".data").join(&cid);
        let Ok(before) = fs::read(&file) else {
            continue;
        };
        let Ok(items) = faults_support::claimed_items(root, &cid) else {
            // Written atomically: a half-written state is a bug.
            if fs::read(&file).ok().as_ref() == Some(&before) {
                return Some(format!("{cid}: unreadable state"));
            }
            continue;
        };
        let missing: Vec<String> = items
            .into_iter()
            .filter(|(p, _)| !root.join(p).is_file())
            .map(|(p, _)| p)
            .collect();
        // The state may have been replaced while we looked: only a state
        // that stayed the same throughout proves a dangling reference.
        if !missing.is_empty() && fs::read(&file).ok().as_ref() == Some(&before) {
            return Some(format!("{cid} claims missing {missing:?}"));
        }
    }
    None
}

#[test]
fn a_reader_never_meets_a_dangling_reference() {
    let days = TwoDays::new(64 * 1024);
    let work = TempDir::new().unwrap();
    let out = work.path().join("out");
    for (n, (source, start)) in [(&days.day1, None), (&days.day2, Some(&days.tree1))]
        .into_iter()
        .enumerate()
    {
        if let Some(t) = start {
            fs::remove_dir_all(&out).unwrap();
            copy_tree(t, &out);
        }
        let server = FaultServer::start(source);
        server.throttle(8 * 1024, Duration::from_millis(3));
        let done = Arc::new(AtomicBool::new(false));
        let (d, o) = (done.clone(), out.clone());
        let reader = thread::spawn(move || {
            let mut passes = 0u64;
            let mut after = 0;
            while after < 5 {
                if d.load(Ordering::SeqCst) {
                    after += 1;
                }
                if let Some(problem) = read_once(&o) {
                    return Err(problem);
                }
                passes += 1;
            }
            Ok(passes)
        });
        let r = mirror(&args(&server.url, s(&out), &[]));
        done.store(true, Ordering::SeqCst);
        let passes = reader.join().unwrap();
        assert_ok(&r, &format!("sync {n}"));
        match passes {
            Ok(p) => println!("sync {n}: the reader made {p} passes"),
            Err(problem) => panic!("sync {n}: reader met a dangling reference: {problem}"),
        }
    }
    compare_trees(&days.tree2, &out);
}

// ---------------------------------------------------------------- lock

fn wait_for_request(server: &FaultServer, path: &str) {
    let t = Instant::now();
    while server.requests_of(path).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no request for {path}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn finish(child: Child, what: &str) -> std::process::Output {
    let o = child.wait_with_output().unwrap();
    assert_ok(&o, what);
    o
}

#[test]
fn a_second_run_is_refused_or_waits_and_a_killed_run_frees_the_lock() {
    let fx = Fixture::new();
    let out = fx.out("locked");
    let server = FaultServer::start(&fx.src);
    server.script(INDEX, &[Fault::Gate]);
    let first = spawn_mirror(&args(&server.url, s(&out), &[]));
    // The first run asks for the index only after taking the lock.
    wait_for_request(&server, INDEX);
    let o = mirror(&args(&server.url, s(&out), &[]));
    assert_failed(&o, "second run", &["another run", "--wait", "sstream.lock"]);
    let waiting = spawn_mirror(&args(&server.url, s(&out), &["--wait"]));
    thread::sleep(Duration::from_millis(300));
    let mut waiting = waiting;
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "--wait did not wait for the lock holder"
    );
    server.open_gate();
    finish(first, "first run");
    finish(waiting, "--wait run");
    compare_trees(&fx.clean, &out);

    // A run killed while holding the lock does not block the next one.
    let out2 = fx.out("killed");
    let server = FaultServer::start(&fx.src);
    server.script(INDEX, &[Fault::Gate]);
    let mut victim = spawn_mirror(&args(&server.url, s(&out2), &[]));
    wait_for_request(&server, INDEX);
    victim.kill().unwrap();
    victim.wait().unwrap();
    let o = mirror(&args(&server.url, s(&out2), &[]));
    assert_ok(&o, "run after a killed run");
    compare_trees(&fx.clean, &out2);
}
