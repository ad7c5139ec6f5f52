//! The views of the configuration file in operation: what `sstream sync`
//! does for them after a job's run, `sstream promote VIEW [SNAPSHOT]`, and
//! what `sstream status` and the metrics say about them. The snapshots and
//! the views themselves are the library's ([`simplestreams::snapshot`],
//! [`simplestreams::view`]); this module only decides when to take one and
//! what each view shows, from the `[[view]]` tables ([`crate::config::View`]).
//!
//! After a job's run that **changed** its mirror (or when the mirror has no
//! snapshot yet), sync takes a snapshot (dropped again when it holds the
//! same items and metadata as the newest one before it) and then, for each
//! view of that mirror: a view following `latest` is switched to the
//! newest snapshot; a promoted or pinned view that was never published
//! gets its first snapshot (the newest, or the one it names) and moves no
//! more until `sstream promote` or `sstream rollback`. Then the mirror's snapshots
//! are pruned to the largest `keep_snapshots` of its views, never one a
//! view shows or can roll back to, nor one a view pins.

use crate::config::{Config, Follows, Job, LATEST, View};
use crate::error::CliError;
use crate::sign::PassphraseArgs;
use clap::Args;
use serde::Serialize;
use simplestreams::snapshot::{self, SnapshotInfo};
use simplestreams::status::Timestamp;
use simplestreams::view::{self, ViewOptions, ViewState};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

/// The views of `config` that show the mirror of `job` (the views of every
/// job sharing its directory).
pub fn views_of<'c>(config: &'c Config, job: &Job) -> Vec<&'c View> {
    config
        .views
        .iter()
        .filter(|v| v.mirror == job.dir)
        .collect()
}

/// How sync and promote publish into `v`: its filters, key, delay, and
/// its job's `verify_existing`.
fn options(v: &View, config: &Config) -> Result<ViewOptions, String> {
    let sign_key = match &v.sign_key {
        Some(path) => Some(Arc::new(
            PassphraseArgs::default()
                .open_key(path)
                .map_err(|e| format!("{e:#}"))?,
        )),
        None => None,
    };
    let verify_existing = config
        .jobs
        .iter()
        .find(|j| j.name == v.job)
        .is_some_and(|j| j.options.verify_existing);
    Ok(ViewOptions {
        filters: v.filters.clone(),
        sign_key,
        delete_delay: v.delete_delay,
        verify_existing,
    })
}

/// The snapshot `v` should show after a sync, given the newest snapshot of
/// its mirror and the one it shows now (`None`: leave it as it is).
fn target<'a>(v: &'a View, newest: &'a str, shown: Option<&str>) -> Option<&'a str> {
    let wanted = match (&v.follows, shown) {
        (Follows::Latest, _) => newest,
        (Follows::Promoted, None) => newest,
        (Follows::Pinned(name), None) => name.as_str(),
        (Follows::Promoted | Follows::Pinned(_), Some(_)) => return None,
    };
    match shown {
        Some(s) if s == wanted => None,
        _ => Some(wanted),
    }
}

/// `FROM -> TO` of a switch, `(none)` for a first publish.
fn switch_line(from: Option<&ViewState>, to: &str) -> String {
    let from = from.map_or("(none)", |s| s.snapshot.as_str());
    format!("{from} -> {to}")
}

/// What sync does for the views of `job`'s mirror after a successful run
/// (`changed`: the run published or removed anything): the snapshot, the
/// views switched, the snapshots pruned. Progress goes through `say`; the
/// problems are returned, one line each, each naming the view or the
/// mirror (they fail the job's run as its own errors do).
pub fn after_run(config: &Config, job: &Job, changed: bool, say: &dyn Fn(&str)) -> Vec<String> {
    let views = views_of(config, job);
    if views.is_empty() {
        return Vec::new();
    }
    let mirror = job.dir.as_path();
    let mut errors = Vec::new();
    let newest = match take_snapshot(mirror, changed, say) {
        Ok(newest) => newest,
        Err(e) => return vec![e],
    };
    for v in &views {
        if let Err(e) = refresh(v, config, &newest.name, say) {
            errors.push(format!("view {}: {e}", v.name));
        }
    }
    if let Err(e) = prune(config, mirror, &views, say) {
        errors.push(e);
    }
    errors
}

/// The newest snapshot of `mirror`: a new one when the run changed it or
/// it has none (not kept when it holds the same as the newest before it).
fn take_snapshot(mirror: &Path, changed: bool, say: &dyn Fn(&str)) -> Result<SnapshotInfo, String> {
    // The library's errors name the mirror.
    let cannot = |e: simplestreams::Error| format!("snapshot: {e}");
    let existing = snapshot::list(mirror).map_err(cannot)?;
    match existing.last() {
        Some(newest) if !changed => Ok(newest.clone()),
        previous => {
            let made = snapshot::create(mirror, None).map_err(cannot)?;
            if let Some(previous) = previous
                && same_content(mirror, &previous.name, &made.name)
            {
                // A run that rewrote the metadata without changing what it
                // says (a directory source is read whole every time).
                snapshot::remove(mirror, &made.name).map_err(cannot)?;
                return Ok(previous.clone());
            }
            say(&format!(
                "snapshot {}: {} product(s), {} version(s), {} item(s), {}",
                made.name,
                made.products,
                made.versions,
                made.items,
                simplestreams::units::human_size(made.bytes)
            ));
            Ok(made)
        }
    }
}

/// Whether the snapshots `a` and `b` of `mirror` hold the same: the same
/// item files (path, size, checksums) and the same metadata, byte for
/// byte. Anything that cannot be read counts as different.
fn same_content(mirror: &Path, a: &str, b: &str) -> bool {
    let files = |name: &str| snapshot::manifest(mirror, name).ok().map(|m| m.files);
    let metadata = |name: &str| {
        let streams = snapshot::snapshot_dir(mirror, name)
            .join(snapshot::TREE)
            .join("streams");
        read_tree(&streams)
    };
    let (files_a, files_b) = (files(a), files(b));
    files_a.is_some()
        && files_a == files_b
        && matches!((metadata(a), metadata(b)), (Some(x), Some(y)) if x == y)
}

/// Every regular file under `dir` (relative path, bytes); `None` when
/// anything cannot be read.
fn read_tree(dir: &Path) -> Option<std::collections::BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).ok()? {
            let entry = entry.ok()?;
            let kind = entry.file_type().ok()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let rel = entry.path().strip_prefix(dir).ok()?.to_path_buf();
                out.insert(rel, std::fs::read(entry.path()).ok()?);
            }
        }
    }
    Some(out)
}

/// Switches `v` to the snapshot it should show, when it shows another.
fn refresh(v: &View, config: &Config, newest: &str, say: &dyn Fn(&str)) -> Result<(), String> {
    let shown = view::state(&v.dir).map_err(|e| e.to_string())?;
    let Some(wanted) = target(v, newest, shown.as_ref().map(|s| s.snapshot.as_str())) else {
        return Ok(());
    };
    let opts = options(v, config)?;
    view::publish(&v.dir, &v.mirror, wanted, &opts).map_err(|e| e.to_string())?;
    say(&format!(
        "view {}: {}",
        v.name,
        switch_line(shown.as_ref(), wanted)
    ));
    Ok(())
}

/// Prunes the snapshots of `mirror` to the largest `keep_snapshots` of its
/// views, keeping those any configured view shows, can roll back to or
/// pins (the library keeps those of the views registered in the mirror as
/// well).
fn prune(
    config: &Config,
    mirror: &Path,
    views: &[&View],
    say: &dyn Fn(&str),
) -> Result<(), String> {
    let keep = views.iter().map(|v| v.keep_snapshots).max().unwrap_or(1);
    let protected = protected_snapshots(config, mirror);
    let removed =
        snapshot::prune(mirror, keep, &protected).map_err(|e| format!("pruning snapshots: {e}"))?;
    if !removed.is_empty() {
        say(&format!(
            "removed {} old snapshot(s): {}",
            removed.len(),
            removed.join(", ")
        ));
    }
    Ok(())
}

/// The snapshots of `mirror` that the configured views show, can roll
/// back to, or pin.
fn protected_snapshots(config: &Config, mirror: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for v in config.views.iter().filter(|v| v.mirror == mirror) {
        if let Ok(Some(state)) = view::state(&v.dir) {
            names.extend(state.snapshots());
        }
        if let Follows::Pinned(name) = &v.follows {
            names.push(name.clone());
        }
    }
    names.sort();
    names.dedup();
    names
}

/// What `sync --dry-run` says about the views of a job's mirror.
#[derive(Debug, Clone, Serialize)]
pub struct ViewsDryRun {
    /// Whether a snapshot would be taken: `"yes"` (the mirror has none),
    /// `"if the run changes the mirror"`.
    pub snapshot: String,
    /// The newest snapshot now.
    pub newest: Option<String>,
    /// Each view of the mirror.
    pub views: Vec<ViewDryRun>,
    /// How many snapshots pruning keeps (besides those the views show or
    /// can roll back to).
    pub keep_snapshots: usize,
}

/// What `sync --dry-run` says about one view.
#[derive(Debug, Clone, Serialize)]
pub struct ViewDryRun {
    /// The view's name.
    pub name: String,
    /// `latest`, `promoted` or the pinned snapshot.
    pub follows: String,
    /// Its directory.
    pub dir: PathBuf,
    /// The snapshot it shows now.
    pub shows: Option<String>,
    /// The snapshot sync would publish (`"the new snapshot"`: the one the
    /// run would take); `None`: it stays.
    pub would_publish: Option<String>,
}

/// The snapshot a run would take, in the dry run's words.
const NEW_SNAPSHOT: &str = "the new snapshot";

/// What sync would do for the views of `job`'s mirror (`None` when it has
/// none): read only.
pub fn dry_run(config: &Config, job: &Job) -> Option<ViewsDryRun> {
    let views = views_of(config, job);
    if views.is_empty() {
        return None;
    }
    let snapshots = snapshot::list(&job.dir).unwrap_or_default();
    let newest = snapshots.last().map(|s| s.name.clone());
    let views = views
        .iter()
        .map(|v| {
            let shows = view::state(&v.dir).ok().flatten().map(|s| s.snapshot);
            let would_publish = target(v, NEW_SNAPSHOT, shows.as_deref()).map(str::to_owned);
            ViewDryRun {
                name: v.name.clone(),
                follows: v.follows.as_str().to_owned(),
                dir: v.dir.clone(),
                shows,
                would_publish,
            }
        })
        .collect::<Vec<_>>();
    let keep_snapshots = views_of(config, job)
        .iter()
        .map(|v| v.keep_snapshots)
        .max()
        .unwrap_or(1);
    Some(ViewsDryRun {
        snapshot: if newest.is_none() {
            "yes".to_owned()
        } else {
            "if the run changes the mirror".to_owned()
        },
        newest,
        views,
        keep_snapshots,
    })
}

/// The lines `sync --dry-run` prints about the views of `job`'s mirror.
pub fn dry_run_lines(config: &Config, job: &Job) -> Vec<String> {
    let Some(plan) = dry_run(config, job) else {
        return Vec::new();
    };
    let mut lines = vec![match &plan.newest {
        None => "# snapshots: would snapshot the mirror (it has none yet)".to_owned(),
        Some(n) => {
            format!("# snapshots: would snapshot the mirror if the run changes it (newest: {n})")
        }
    }];
    for v in &plan.views {
        let now = v.shows.as_deref().unwrap_or("nothing yet");
        let what = match (&v.would_publish, v.follows.as_str()) {
            (Some(t), _) if t == NEW_SNAPSHOT && v.shows.is_some() => {
                format!("would publish {t}, if one is taken")
            }
            (Some(t), _) => format!("would publish {t}"),
            (None, LATEST) => "stays".to_owned(),
            (None, _) => "stays (moves on `sstream promote`)".to_owned(),
        };
        lines.push(format!(
            "# view {} ({}, {}): shows {now}; {what}",
            v.name,
            v.follows,
            v.dir.display()
        ));
    }
    lines.push(format!(
        "# snapshots: would keep the newest {} and those the views show or can roll back to",
        plan.keep_snapshots
    ));
    lines
}

/// Options of `sstream promote`.
#[derive(Debug, Clone, Args)]
pub struct PromoteArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// The view to move (a `[[view]]` name).
    #[arg(value_name = "VIEW")]
    pub view: String,
    /// The snapshot to publish into it (default: the one the staging view
    /// of the same job shows, the view following `latest`).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: Option<String>,
}

/// Runs `sstream promote`: one line saying from which snapshot to which.
pub fn promote(args: PromoteArgs) -> Result<ExitCode, CliError> {
    let config = Config::load(&args.config).map_err(CliError::usage)?;
    let v = find_view(&config, &args.view)?;
    let snapshot = match &args.snapshot {
        Some(name) => name.clone(),
        None => staging_snapshot(&config, v)?,
    };
    let known = snapshot::list(&v.mirror).map_err(CliError::new)?;
    if !known.iter().any(|s| s.name == snapshot) {
        let names: Vec<&str> = known.iter().map(|s| s.name.as_str()).collect();
        return Err(CliError::new(anyhow::anyhow!(
            "{}: no snapshot named {snapshot:?} (snapshots: {})",
            v.mirror.display(),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )));
    }
    let before = view::state(&v.dir).map_err(CliError::new)?;
    let opts = options(v, &config).map_err(|e| CliError::new(anyhow::anyhow!(e)))?;
    view::publish(&v.dir, &v.mirror, &snapshot, &opts).map_err(CliError::new)?;
    println!("{}: {}", v.name, switch_line(before.as_ref(), &snapshot));
    Ok(ExitCode::SUCCESS)
}

/// Runs `sstream rollback --config FILE VIEW`: the view of the config named
/// `name` shows again what it showed before; one line saying from which
/// snapshot to which.
pub fn rollback(config: &Path, name: &str, verify_existing: bool) -> Result<ExitCode, CliError> {
    let config = Config::load(config).map_err(CliError::usage)?;
    let v = find_view(&config, name)?;
    let before = view::state(&v.dir).map_err(CliError::new)?;
    let mut opts = options(v, &config).map_err(|e| CliError::new(anyhow::anyhow!(e)))?;
    opts.verify_existing |= verify_existing;
    let after = view::rollback(&v.dir, &opts).map_err(CliError::new)?;
    println!(
        "{}: {} (rollback)",
        v.name,
        switch_line(before.as_ref(), &after.snapshot)
    );
    Ok(ExitCode::SUCCESS)
}

/// The view named `name`, or a usage error listing the views.
fn find_view<'c>(config: &'c Config, name: &str) -> Result<&'c View, CliError> {
    config.views.iter().find(|v| v.name == name).ok_or_else(|| {
        let known: Vec<&str> = config.views.iter().map(|v| v.name.as_str()).collect();
        CliError::usage(anyhow::anyhow!(
            "{}: no view named {name:?} (views: {})",
            config.file.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    })
}

/// What the staging view of `v`'s job shows: the one view of the same
/// job following `latest`.
fn staging_snapshot(config: &Config, v: &View) -> Result<String, CliError> {
    let staging: Vec<&View> = config
        .views
        .iter()
        .filter(|s| s.job == v.job && s.follows == Follows::Latest && s.name != v.name)
        .collect();
    let fail = |m: String| Err(CliError::usage(anyhow::anyhow!(m)));
    let s = match staging[..] {
        [s] => s,
        [] => {
            return fail(format!(
                "view {}: no view of job {:?} follows \"latest\" to promote from: name the snapshot \
                 (sstream promote {} SNAPSHOT; sstream snapshot list {})",
                v.name,
                v.job,
                v.name,
                v.mirror.display()
            ));
        }
        _ => {
            let names: Vec<&str> = staging.iter().map(|s| s.name.as_str()).collect();
            return fail(format!(
                "view {}: views {} of job {:?} all follow \"latest\": name the snapshot",
                v.name,
                names.join(", "),
                v.job
            ));
        }
    };
    match view::state(&s.dir).map_err(CliError::new)? {
        Some(state) => Ok(state.snapshot),
        None => fail(format!(
            "view {}: the staging view {} shows nothing yet (run sstream sync first)",
            v.name, s.name
        )),
    }
}

/// One view of `sstream status`.
#[derive(Debug, Serialize)]
pub struct ViewStatus {
    /// The view's name.
    pub view: String,
    /// Its job.
    pub job: String,
    /// Its directory.
    pub dir: PathBuf,
    /// `latest`, `promoted` or the pinned snapshot.
    pub follows: String,
    /// The snapshot it shows (`None`: never published).
    pub snapshot: Option<String>,
    /// When that snapshot was made.
    pub snapshot_created: Option<Timestamp>,
    /// Its age, in seconds.
    pub snapshot_age_seconds: Option<u64>,
    /// When the view switched to it.
    pub published: Option<Timestamp>,
    /// Whether its metadata is signed.
    pub signed: bool,
    /// The snapshot a rollback goes back to.
    pub rollback_to: Option<String>,
    /// The MAAS command that adds it as a boot source.
    pub maas_command: Option<String>,
    /// Why it is not showing anything, or cannot be read.
    pub problem: Option<String>,
}

impl ViewStatus {
    /// The sample of the metrics, for a view that shows a snapshot.
    pub fn sample(&self) -> Option<simplestreams::metrics::ViewSample> {
        Some(simplestreams::metrics::ViewSample {
            view: self.view.clone(),
            snapshot: self.snapshot.clone()?,
            snapshot_created: self.snapshot_created,
            published: self.published?,
        })
    }
}

/// The status of every view of `config` at `now`.
pub fn statuses(config: &Config, now: SystemTime) -> Vec<ViewStatus> {
    config.views.iter().map(|v| status_of(v, now)).collect()
}

/// The status of `v`.
fn status_of(v: &View, now: SystemTime) -> ViewStatus {
    let mut status = ViewStatus {
        view: v.name.clone(),
        job: v.job.clone(),
        dir: v.dir.clone(),
        follows: v.follows.as_str().to_owned(),
        snapshot: None,
        snapshot_created: None,
        snapshot_age_seconds: None,
        published: None,
        signed: false,
        rollback_to: None,
        maas_command: None,
        problem: None,
    };
    let state = match view::state(&v.dir) {
        Ok(Some(state)) => state,
        Ok(None) => {
            status.problem = Some(format!(
                "never published (no view in {}; sstream sync publishes it)",
                v.dir.display()
            ));
            return status;
        }
        Err(e) => {
            status.problem = Some(e.to_string());
            return status;
        }
    };
    let created = snapshot::list(&state.mirror)
        .ok()
        .and_then(|all| all.into_iter().find(|s| s.name == state.snapshot))
        .map(|s| s.created);
    status.snapshot_created = created;
    status.snapshot_age_seconds = created.map(|t| t.age(now).as_secs());
    status.published = Some(state.published);
    status.signed = state.signed;
    status.rollback_to = state.history.last().map(|s| s.snapshot.clone());
    status.maas_command = Some(maas_command(v, state.signed));
    status.snapshot = Some(state.snapshot);
    status
}

/// The boot-source URL MAAS is given for `v`: its `url` (or a placeholder
/// for where it is served) for a signed view, whose `index.sjson` MAAS
/// finds under it; the unsigned index itself otherwise.
fn boot_source_url(v: &View, signed: bool) -> String {
    let base = match &v.url {
        Some(url) if url.ends_with('/') => url.clone(),
        Some(url) => format!("{url}/"),
        None => format!("http://<myserver>:8080/{}/", v.name),
    };
    if signed {
        base
    } else {
        format!("{base}streams/v1/index.json")
    }
}

/// The MAAS command that adds `v` as a boot source: a signed view with its
/// own keyring uploaded from the view (`streams/v1/mirror-keyring.gpg`),
/// no keyring for an unsigned one.
pub fn maas_command(v: &View, signed: bool) -> String {
    let url = boot_source_url(v, signed);
    if signed {
        format!(
            "maas $PROFILE boot-sources create url={url} keyring_filename= keyring_data@={}",
            v.dir.join(simplestreams::layout::MIRROR_KEYRING).display()
        )
    } else {
        format!("maas $PROFILE boot-sources create url={url}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(follows: Follows) -> View {
        View {
            name: "production".into(),
            dir: "/srv/views/production".into(),
            job: "stable".into(),
            mirror: "/srv/mirror".into(),
            follows,
            sign_key: None,
            filters: Vec::new(),
            keep_snapshots: 3,
            delete_delay: std::time::Duration::ZERO,
            url: None,
        }
    }

    #[test]
    fn what_a_sync_publishes_into_each_kind_of_view() {
        let latest = view(Follows::Latest);
        let promoted = view(Follows::Promoted);
        let pinned = view(Follows::Pinned("A".into()));
        assert_eq!(target(&latest, "B", None), Some("B"));
        assert_eq!(target(&latest, "B", Some("A")), Some("B"));
        assert_eq!(target(&latest, "B", Some("B")), None);
        assert_eq!(target(&promoted, "B", None), Some("B"), "a first publish");
        assert_eq!(target(&promoted, "B", Some("A")), None);
        assert_eq!(target(&pinned, "B", None), Some("A"));
        assert_eq!(target(&pinned, "B", Some("C")), None, "promoted since");
    }

    #[test]
    fn maas_commands_for_signed_and_unsigned_views() {
        let mut v = view(Follows::Promoted);
        assert_eq!(
            maas_command(&v, false),
            "maas $PROFILE boot-sources create \
             url=http://<myserver>:8080/production/streams/v1/index.json"
        );
        v.url = Some("http://mirror.example/views/production".into());
        assert_eq!(
            maas_command(&v, true),
            "maas $PROFILE boot-sources create url=http://mirror.example/views/production/ \
             keyring_filename= keyring_data@=/srv/views/production/streams/v1/mirror-keyring.gpg"
        );
    }
}
