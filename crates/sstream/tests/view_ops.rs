//! Views in operation, with real parts: a config with a job (a local
//! upstream that moves on day after day) and two views, a staging view that
//! follows `latest` and a signed production view that moves only on
//! `sstream promote`; `sstream sync` snapshots the mirror and refreshes the
//! staging view; `sstream rollback` goes back; `sstream status`, the
//! metrics and the landing page of `sstream serve` name each view with its
//! snapshot; the production view is read over HTTP from `sstream serve`
//! (every file it lists fetched, and the reference `sstream-query`
//! verifying its signature) throughout.

mod faults_support;
mod support;

use faults_support::{s, small_spec};
use serde_json::Value;
use simplestreams::{sample, snapshot, view};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use support::{listed_items as listed, listed_versions as versions};
use tempfile::TempDir;

const DAYS: [&str; 4] = ["20261201", "20261202", "20261203", "20261204"];

/// `sstream ARGS`.
fn sstream(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sstream"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run sstream")
}

fn out_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        out_text(o),
        err_text(o)
    );
}

/// Asserts a failure with exit `code` and one line on stderr holding every
/// needle.
fn assert_one_line_failure(o: &Output, code: i32, needles: &[&str]) {
    let err = err_text(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
}

/// The upstream of the days up to `day` (`--max 1` mirrors keep the last).
fn upstream(src: &Path, day: usize) {
    let _ = fs::remove_dir_all(src.join("streams"));
    sample::generate(&small_spec(&DAYS[..=day]), src, None).unwrap();
}

fn one_version(day: usize) -> BTreeSet<String> {
    BTreeSet::from([DAYS[day].to_owned()])
}

/// Every file of `dir` and its bytes, but its `.data/` bookkeeping.
fn served_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = support::snapshot_all(dir);
    all.retain(|k, _| !k.starts_with(".data/"));
    all
}

/// `GET URL` with curl: the body, or `None` on any failure (a 404).
fn get(url: &str) -> Option<Vec<u8>> {
    let o = Command::new("curl")
        .args(["-sf", "--max-time", "60", url])
        .output()
        .expect("run curl");
    o.status.success().then_some(o.stdout)
}

/// Fetches every file the view at `dir` lists over HTTP from `base` (its
/// URL) and checks its bytes.
fn assert_downloadable(dir: &Path, base: &str) {
    let files = listed(dir);
    assert!(!files.is_empty(), "{} lists nothing", dir.display());
    for (path, (size, sha)) in files {
        let body = get(&format!("{base}{path}")).unwrap_or_else(|| panic!("GET {base}{path}"));
        assert_eq!(body.len() as u64, size, "{path}");
        assert_eq!(simplestreams::hash::sha256_hex(&body), sha, "{path}");
    }
}

/// One client's round over the view at `base`: the index, each products
/// file it names, each item they list, its bytes checked. How many items
/// were fetched, or what went wrong.
fn read_round(base: &str) -> Result<usize, String> {
    let json = |rel: &str| -> Result<Value, String> {
        let body = get(&format!("{base}{rel}")).ok_or(format!("GET {rel} failed"))?;
        serde_json::from_slice(&body).map_err(|e| format!("{rel}: {e}"))
    };
    let index = json("streams/v1/index.json")?;
    let mut fetched = 0;
    for entry in index["index"].as_object().ok_or("no index")?.values() {
        let doc = json(entry["path"].as_str().ok_or("no path")?)?;
        for product in doc["products"].as_object().ok_or("no products")?.values() {
            for version in product["versions"]
                .as_object()
                .ok_or("no versions")?
                .values()
            {
                for item in version["items"].as_object().ok_or("no items")?.values() {
                    let path = item["path"].as_str().ok_or("no item path")?;
                    let body = get(&format!("{base}{path}")).ok_or(format!("GET {path} failed"))?;
                    if simplestreams::hash::sha256_hex(&body) != item["sha256"] {
                        return Err(format!("{path}: wrong bytes"));
                    }
                    fetched += 1;
                }
            }
        }
    }
    Ok(fetched)
}

/// A client reading the view at `base` over and over until stopped:
/// gives the rounds it completed and every failure it met.
struct Reader {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    rounds: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Reader {
    fn start(base: String) -> Reader {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rounds = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, r) = (stop.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match read_round(&base) {
                    Ok(n) if n > 0 => {}
                    Ok(_) => failures.push("the view listed nothing".to_owned()),
                    Err(e) => failures.push(e),
                }
                r.fetch_add(1, Ordering::SeqCst);
            }
            failures
        });
        Reader {
            stop,
            rounds,
            thread,
        }
    }

    /// Waits until `n` more rounds are done.
    fn wait_rounds(&self, n: usize) {
        use std::sync::atomic::Ordering;
        let until = self.rounds.load(Ordering::SeqCst) + n;
        while self.rounds.load(Ordering::SeqCst) < until && !self.thread.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn finish(self) -> Vec<String> {
        self.wait_rounds(1);
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// `sstream serve DIR --metrics` on a free port, killed on drop.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start(dir: &Path) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sstream"))
            .arg("serve")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--metrics"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sstream serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().rsplit(" at ").next().unwrap().to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "{line}");
        Serve { child, url }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The site: an upstream directory, the config, the key of the production
/// view, and the directory `sstream serve` serves the views from.
struct Site {
    tmp: TempDir,
    config: PathBuf,
}

impl Site {
    fn new() -> Site {
        let tmp = TempDir::new().unwrap();
        let config = tmp.path().join("sstream.toml");
        fs::create_dir_all(tmp.path().join("www")).unwrap();
        support::our_key(
            &tmp.path().join("view-key.asc"),
            &tmp.path().join("production-keyring.gpg"),
            &[],
        );
        fs::write(&config, CONFIG).unwrap();
        Site { tmp, config }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn sstream(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--config", s(&self.config)]);
        sstream(&all)
    }

    /// Upstream moves to `day`; `sstream sync` (with the metrics textfile).
    fn day(&self, day: usize) -> Output {
        upstream(&self.path("src"), day);
        let metrics = self.path("metrics");
        fs::create_dir_all(&metrics).unwrap();
        let o = self.sstream(&["sync", "--metrics-textfile", s(&metrics)]);
        assert_ok(&o, &format!("sync on day {}", DAYS[day]));
        o
    }

    fn shows(&self, view: &str) -> String {
        view::state(&self.path(&format!("www/{view}")))
            .unwrap()
            .unwrap_or_else(|| panic!("{view} is not a view"))
            .snapshot
    }

    fn snapshots(&self) -> Vec<String> {
        snapshot::list(&self.path("mirror"))
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect()
    }

    /// The reference `sstream-query` reads the signed production view over
    /// HTTP, verifying it with the view's exported keyring: the versions
    /// of the images it lists.
    fn reference_versions(&self, base: &str) -> BTreeSet<String> {
        let home = self.path("gnupghome");
        fs::create_dir_all(&home).unwrap();
        let ring = self.path("production-keyring.gpg");
        let out = Command::new(support::reference().join("sstream-query"))
            .env("GNUPGHOME", &home)
            .arg(format!("--keyring={}", ring.display()))
            .arg("--output-format=%(product_name)s %(version_name)s")
            .arg(format!("{base}streams/v1/index.sjson"))
            .output()
            .expect("run the reference sstream-query");
        assert_ok(&out, "reference sstream-query of the production view");
        out_text(&out)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .filter(|v| !v.contains('.'))
            .collect()
    }
}

const CONFIG: &str = r#"
[[job]]
name = "stable"
source = "src"
dir = "mirror"
path = "streams/v1/index.json"
no_verify = true
max = 1
delete_delay = "0"
timeout = 5

[[view]]
name = "staging"
dir = "www/staging"
job = "stable"
snapshot = "latest"
keep_snapshots = 2
delete_delay = "0"

[[view]]
name = "production"
dir = "www/production"
job = "stable"
sign_key = "view-key.asc"
keep_snapshots = 2
delete_delay = "1h"
url = "http://maas-mirror.example:8080/production/"
"#;

/// The issue's "done means": the production view keeps listing its pinned
/// images over several upstream days (byte for byte, every file there and
/// downloadable, though the mirror dropped them), sees the new ones after
/// one promote and the old ones after one rollback; the staging view
/// follows each day; old snapshots are pruned, never one a view shows or
/// can roll back to; status, metrics and the landing page name each view
/// with its snapshot.
#[test]
fn production_stays_pinned_over_upstream_days_until_promoted_and_rolled_back() {
    let site = Site::new();
    let www = site.path("www");
    let production = site.path("www/production");
    let staging = site.path("www/staging");
    let mirror = site.path("mirror");

    // Day 1: one snapshot, both views show it.
    let o = site.day(0);
    let a = site.shows("staging");
    assert_eq!(site.shows("production"), a);
    assert_eq!(site.snapshots(), std::slice::from_ref(&a));
    assert!(
        err_text(&o).contains(&format!("view production: (none) -> {a}")),
        "{}",
        err_text(&o)
    );
    assert_eq!(versions(&production), one_version(0));
    let pinned = served_files(&production);
    let pinned_items = listed(&production);
    let server = Serve::start(&www);
    let production_url = format!("{}production/", server.url);
    let staging_url = format!("{}staging/", server.url);
    assert_downloadable(&production, &production_url);
    assert_eq!(site.reference_versions(&production_url), one_version(0));

    // Days 2 to 4: staging follows, production stays byte for byte.
    let mut shown_by_staging = vec![a.clone()];
    for (day, name) in DAYS.iter().enumerate().skip(1) {
        if day == 2 {
            // A snapshot no view ever shows: pruned once older than the
            // newest `keep_snapshots`.
            assert_ok(
                &sstream(&["snapshot", "create", s(&mirror), "--name", "by-hand"]),
                "snapshot create",
            );
        }
        site.day(day);
        let now = site.shows("staging");
        assert!(
            !shown_by_staging.contains(&now),
            "a new snapshot on day {day}"
        );
        shown_by_staging.push(now);
        assert_eq!(versions(&staging), one_version(day));
        assert_downloadable(&staging, &staging_url);
        assert_eq!(site.shows("production"), a, "day {name}");
        assert_eq!(
            served_files(&production),
            pinned,
            "production changed on day {name}"
        );
        assert_downloadable(&production, &production_url);
        assert_eq!(site.reference_versions(&production_url), one_version(0));
        // The mirror itself dropped day 1's files (max 1, no delay): the
        // snapshot is what keeps them.
        let day1_file = pinned_items.keys().find(|p| p.contains(DAYS[0])).unwrap();
        assert!(
            !mirror.join(day1_file).exists(),
            "{day1_file} in the mirror"
        );
    }
    // Pruned to the newest two (keep_snapshots), and what a view shows or
    // its next rollback shows stays (production's A); the older steps of
    // staging's history and the one made by hand are gone.
    let mut kept = vec![a.clone()];
    kept.extend_from_slice(&shown_by_staging[shown_by_staging.len() - 2..]);
    kept.dedup();
    assert_eq!(site.snapshots(), kept);
    assert!(kept.len() < shown_by_staging.len(), "something was pruned");
    let d = shown_by_staging.last().unwrap().clone();

    // Status, text and JSON.
    let o = site.sstream(&["status", "--json"]);
    assert_ok(&o, "status --json");
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let views = report["views"].as_array().unwrap();
    let entry = |name: &str| views.iter().find(|v| v["view"] == name).unwrap().clone();
    assert_eq!(entry("staging")["snapshot"], d.as_str(), "{report}");
    assert_eq!(entry("staging")["follows"], "latest");
    assert_eq!(entry("production")["snapshot"], a.as_str(), "{report}");
    assert_eq!(entry("production")["follows"], "promoted");
    assert!(
        entry("production")["snapshot_age_seconds"].is_u64(),
        "{report}"
    );
    assert!(entry("production")["published"].is_string(), "{report}");
    let command = entry("production")["maas_command"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        command,
        format!(
            "maas $PROFILE boot-sources create url=http://maas-mirror.example:8080/production/ \
             keyring_filename= keyring_data@={}",
            production.join("streams/v1/mirror-keyring.gpg").display()
        )
    );
    assert!(
        production.join("streams/v1/mirror-keyring.gpg").is_file(),
        "the keyring the command uploads"
    );
    let staging_command = entry("staging")["maas_command"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        staging_command.ends_with("url=http://<myserver>:8080/staging/streams/v1/index.json"),
        "{staging_command}"
    );
    let o = site.sstream(&["status"]);
    assert_ok(&o, "status");
    let text = out_text(&o);
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l.split_whitespace().nth(1) == Some("stable"))
            .unwrap_or_else(|| panic!("no row of {name}:\n{text}"))
            .to_owned()
    };
    assert!(
        row("production").contains(&format!(" promoted  {a} ")),
        "{text}"
    );
    assert!(
        row("staging").contains(&format!(" latest    {d} ")),
        "{text}"
    );
    assert!(text.contains(&format!("production: {command}")), "{text}");

    // The metrics: the textfile of the last sync, and serve's /metrics.
    let textfile = fs::read_to_string(site.path("metrics/sstream.prom")).unwrap();
    for (view, shown) in [("staging", &d), ("production", &a)] {
        let info = format!("sstream_view_info{{view=\"{view}\",snapshot=\"{shown}\"}} 1.0");
        assert!(textfile.lines().any(|l| l == info), "{info}\n{textfile}");
        let age = format!("sstream_view_snapshot_age_seconds{{view=\"{view}\"}} ");
        assert!(textfile.lines().any(|l| l.starts_with(&age)), "{textfile}");
    }
    let served = String::from_utf8(get(&format!("{}metrics", server.url)).unwrap()).unwrap();
    let info = format!("sstream_view_info{{view=\"/production/\",snapshot=\"{a}\"}} 1.0");
    assert!(served.lines().any(|l| l == info), "{info}\n{served}");
    assert!(
        served
            .lines()
            .any(|l| l.starts_with("sstream_view_published_timestamp_seconds{view=\"/staging/\"}")),
        "{served}"
    );

    // The landing page lists both views with their snapshots.
    let page = String::from_utf8(get(&server.url).unwrap()).unwrap();
    for (view, shown) in [("staging", &d), ("production", &a)] {
        let heading = format!("<h2>View at <a href=\"/{view}/\">/{view}/</a></h2>");
        let at = page
            .find(&heading)
            .unwrap_or_else(|| panic!("{heading}\n{page}"));
        let section = &page[at..];
        let section = &section[..section[1..].find("<h2>").map_or(section.len(), |i| i + 1)];
        assert!(
            section.contains(&format!(
                "<tr><th>Snapshot</th><td><strong>{shown}</strong>"
            )),
            "{section}"
        );
        assert!(section.contains("<tr><th>Published</th>"), "{section}");
        assert!(
            section.contains("maas $PROFILE boot-sources create"),
            "{section}"
        );
    }

    // Served from above, the mirror's section names its views.
    let above = Serve::start(site.tmp.path());
    let page = String::from_utf8(get(&above.url).unwrap()).unwrap();
    let at = page
        .find("<h2>Mirror at <a href=\"/mirror/\">")
        .unwrap_or_else(|| panic!("{page}"));
    let section = &page[at..];
    let section = &section[..section[1..].find("<h2>").map_or(section.len(), |i| i + 1)];
    for (view, shown) in [("staging", &d), ("production", &a)] {
        let row = format!(
            "<tr><th>View</th><td><a href=\"/www/{view}/\">/www/{view}/</a> shows snapshot \
             <strong>{shown}</strong>"
        );
        assert!(section.contains(&row), "{row}\n{section}");
    }
    drop(above);

    // One promote: production shows what staging shows; a client reads
    // production over HTTP throughout, the promote and the rollback.
    let reader = Reader::start(production_url.clone());
    reader.wait_rounds(1);
    let o = site.sstream(&["promote", "production"]);
    assert_ok(&o, "promote production");
    assert_eq!(out_text(&o), format!("production: {a} -> {d}\n"));
    assert_eq!(site.shows("production"), d);
    assert_eq!(versions(&production), one_version(DAYS.len() - 1));
    assert_downloadable(&production, &production_url);
    assert_eq!(
        site.reference_versions(&production_url),
        one_version(DAYS.len() - 1)
    );

    // One rollback: the pinned images again, every file there.
    let key = site.path("view-key.asc");
    reader.wait_rounds(1);
    let o = sstream(&["rollback", s(&production), "--sign-key", s(&key)]);
    assert_ok(&o, "rollback production");
    assert_eq!(site.shows("production"), a);
    assert_eq!(listed(&production), pinned_items);
    assert_downloadable(&production, &production_url);
    assert_eq!(site.reference_versions(&production_url), one_version(0));
    let failures = reader.finish();
    assert!(failures.is_empty(), "the reader met: {failures:?}");

    // Promote to a named snapshot, and the refusals: the view unchanged.
    let b = shown_by_staging[shown_by_staging.len() - 2].clone();
    let o = site.sstream(&["promote", "production", &b]);
    assert_ok(&o, "promote production B");
    assert_eq!(out_text(&o), format!("production: {a} -> {b}\n"));
    let before = served_files(&production);
    let o = site.sstream(&["promote", "nope"]);
    assert_one_line_failure(
        &o,
        2,
        &[
            "sstream promote: error: ",
            "sstream.toml: no view named \"nope\" (views: staging, production)",
        ],
    );
    let o = site.sstream(&["promote", "production", "no-such-snapshot"]);
    assert_one_line_failure(
        &o,
        1,
        &["no snapshot named \"no-such-snapshot\"", s(&mirror), &a],
    );
    assert_eq!(served_files(&production), before);
    assert_eq!(site.shows("production"), b);

    // A rollback by the view's name: the config gives its directory and
    // key (the view is signed).
    let o = site.sstream(&["rollback", "production"]);
    assert_ok(&o, "rollback production by name");
    assert_eq!(out_text(&o), format!("production: {b} -> {a} (rollback)\n"));
    assert_eq!(site.shows("production"), a);
    assert_eq!(listed(&production), pinned_items);
    let o = site.sstream(&["rollback", "nope"]);
    assert_one_line_failure(&o, 2, &["no view named \"nope\""]);
}

/// `sync --dry-run` says what it would do for each view and does nothing.
#[test]
fn sync_dry_run_tells_what_it_would_do_for_the_views() {
    let site = Site::new();
    upstream(&site.path("src"), 0);
    let o = site.sstream(&["sync", "--dry-run"]);
    assert_ok(&o, "sync --dry-run");
    let text = out_text(&o);
    for line in [
        "# snapshots: would snapshot the mirror (it has none yet)",
        &format!(
            "# view staging (latest, {}): shows nothing yet; would publish the new snapshot",
            site.path("www/staging").display()
        ),
        &format!(
            "# view production (promoted, {}): shows nothing yet; would publish the new snapshot",
            site.path("www/production").display()
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
    }
    let o = site.sstream(&["sync", "--dry-run", "--json"]);
    assert_ok(&o, "sync --dry-run --json");
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let views = &doc["jobs"][0]["views"];
    assert_eq!(views["snapshot"], "yes", "{doc}");
    assert_eq!(views["views"][0]["name"], "staging", "{doc}");
    assert_eq!(views["views"][0]["would_publish"], "the new snapshot");
    assert_eq!(views["views"][1]["name"], "production");
    assert_eq!(views["views"][1]["follows"], "promoted");
    assert_eq!(views["keep_snapshots"], 2);
    assert!(!site.path("www/staging/streams").exists());
    assert!(!site.path("mirror/.data/snapshots").exists());

    // Once synced: staging would follow a new snapshot, production stays.
    assert_ok(&site.sstream(&["sync"]), "sync");
    let a = site.shows("staging");
    let o = site.sstream(&["sync", "--dry-run"]);
    assert_ok(&o, "sync --dry-run");
    let text = out_text(&o);
    for line in [
        format!("# snapshots: would snapshot the mirror if the run changes it (newest: {a})"),
        format!(
            "# view staging (latest, {}): shows {a}; would publish the new snapshot, if one is taken",
            site.path("www/staging").display()
        ),
        format!(
            "# view production (promoted, {}): shows {a}; stays (moves on `sstream promote`)",
            site.path("www/production").display()
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
    }
    assert_eq!(site.snapshots(), [a]);
}

/// Each bad view is refused by `sstream sync` and `sstream promote` with
/// one line naming the file, line and key; exit 2.
#[test]
fn bad_views_are_one_line_errors_naming_file_line_and_key() {
    let tmp = TempDir::new().unwrap();
    let file = tmp.path().join("sstream.toml");
    let job = "[[job]]\nname = \"a\"\nsource = \"http://127.0.0.1:9/s/\"\ndir = \"mirror\"\n\
               [[job]]\nname = \"b\"\nsource = \"http://127.0.0.1:9/s/\"\ndir = \"s3://bucket/b\"\n";
    let view = |job: &str, dir: &str| {
        format!("[[view]]\nname = \"v\"\njob = \"{job}\"\ndir = \"{dir}\"\n")
    };
    let cases = [
        (
            view("c", "www/v"),
            ":11: job: no job named \"c\" (jobs: a, b)",
        ),
        (
            view("b", "www/v"),
            ":11: job: job \"b\" mirrors into a bucket",
        ),
        (view("a", "mirror"), ":12: dir: "),
        (view("a", "mirror/views/v"), ":12: dir: "),
        (
            format!(
                "{}{}",
                view("a", "www/v"),
                view("a", "www/v/").replace("\"v\"", "\"w\"")
            ),
            ":16: dir: ",
        ),
        (
            format!("{}snapshot = \"..\"\n", view("a", "www/v")),
            ":13: snapshot: \"..\": \"latest\", \"promoted\" or a snapshot's name",
        ),
        (
            format!("{}keep = 3\n", view("a", "www/v")),
            ":13: unknown key \"keep\" (known keys: name, dir, job, snapshot,",
        ),
    ];
    for (views, want) in cases {
        fs::write(&file, format!("{job}{views}")).unwrap();
        for command in [vec!["sync"], vec!["promote", "v"]] {
            let mut a = command.clone();
            a.extend(["--config", s(&file)]);
            let o = sstream(&a);
            let line = format!("{}{want}", file.display());
            assert_one_line_failure(&o, 2, &[&line]);
        }
    }
    // The directory errors say what is wrong with the directory.
    fs::write(&file, format!("{job}{}", view("a", "mirror/views/v"))).unwrap();
    let o = sstream(&["sync", "--config", s(&file)]);
    assert!(
        err_text(&o).contains("is inside the mirror directory"),
        "{}",
        err_text(&o)
    );
}

/// A view that cannot be refreshed fails its job's run (status record,
/// exit status, `on_failure` hook) and stops neither the job's other views
/// nor the other jobs; the next sync refreshes it once it can.
#[test]
fn a_failing_view_fails_its_job_but_not_the_others() {
    let site = Site::new();
    upstream(&site.path("src"), 0);
    let other_src = site.path("other-src");
    upstream(&other_src, 1);
    let missing_key = site.path("no-such-key.asc");
    let config = CONFIG.replace("view-key.asc", s(&missing_key)).replace(
        "[[view]]\nname = \"staging\"",
        &format!(
            "on_failure = \"touch {failed}\"\n\n\
             [[job]]\nname = \"other\"\nsource = \"other-src\"\ndir = \"other-mirror\"\n\
             path = \"streams/v1/index.json\"\nno_verify = true\n\n\
             [[view]]\nname = \"staging\"",
            failed = site.path("stable-failed").display()
        ),
    );
    fs::write(&site.config, config).unwrap();
    let o = site.sstream(&["sync"]);
    assert_eq!(o.status.code(), Some(1), "{}", err_text(&o));
    let err = err_text(&o);
    let line = format!(
        "sstream sync: stable: view production: {}",
        missing_key.display()
    );
    assert!(err.lines().any(|l| l.starts_with(&line)), "{line}\n{err}");
    assert!(out_text(&o).contains("stable: FAILED"), "{}", out_text(&o));
    assert!(out_text(&o).contains("other: ok"), "{}", out_text(&o));
    assert!(
        site.path("stable-failed").exists(),
        "the on_failure hook ran"
    );
    let record = simplestreams::status::read_blocking(
        &simplestreams::store::DirStore::new(site.path("mirror")),
        "stable",
    )
    .unwrap()
    .unwrap();
    assert!(!record.is_ok());
    assert!(
        record
            .errors
            .iter()
            .any(|e| e.starts_with("view production: ")),
        "{:?}",
        record.errors
    );
    // The job's other view was refreshed; the failed one shows nothing.
    let a = site.shows("staging");
    assert!(view::state(&site.path("www/production")).unwrap().is_none());
    let o = site.sstream(&["status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err_text(&o).contains("sstream status: view production: never published"),
        "{}",
        err_text(&o)
    );

    // With the key back, the next sync (the mirror unchanged) publishes it.
    fs::write(&site.config, CONFIG).unwrap();
    let o = site.sstream(&["sync", "stable"]);
    assert_ok(&o, "sync with the key");
    assert_eq!(site.shows("production"), a);
    assert_eq!(site.snapshots(), [a]);
}
