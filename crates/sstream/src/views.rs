//! `sstream snapshot create|list|remove`, `sstream publish` and
//! `sstream rollback`: the command line of [`simplestreams::snapshot`] and
//! [`simplestreams::view`]. Each prints one line of what it did (or a JSON
//! list); a failure is one line, with its exit code, through
//! `cli::finish`. Buckets (`s3://`) are refused as a usage error.

use crate::error::CliError;
use crate::job::{DEFAULT_DELETE_DELAY, Delay};
use crate::sign::PassphraseArgs;
use clap::{Args, Subcommand};
use simplestreams::snapshot::{self, SnapshotInfo};
use simplestreams::units::human_size;
use simplestreams::view::{self, ViewOptions, ViewState};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Options of `sstream snapshot`.
#[derive(Debug, Clone, Args)]
pub struct SnapshotArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: SnapshotAction,
}

/// The actions of `sstream snapshot`.
#[derive(Debug, Clone, Subcommand)]
pub enum SnapshotAction {
    /// Record what the mirror holds now (its items are hard-linked, not copied).
    Create {
        /// The mirror directory.
        dir: PathBuf,
        /// The snapshot's name [default: the UTC time, 20261207T001500Z].
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// List the mirror's snapshots, oldest first.
    List {
        /// The mirror directory.
        dir: PathBuf,
        /// One JSON document (a list of snapshots) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a snapshot (refused while a view shows it or can roll back to it).
    Remove {
        /// The mirror directory.
        dir: PathBuf,
        /// The snapshot.
        name: String,
    },
}

/// Options of `sstream publish`.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// The view directory (new, empty, or a view of the same mirror).
    pub view_dir: PathBuf,
    /// The mirror whose snapshot the view shows.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The snapshot to show (`sstream snapshot list DIR`).
    #[arg(long, value_name = "NAME")]
    pub snapshot: String,
    /// The view's options shared with `sstream rollback`.
    #[command(flatten)]
    pub view: ViewArgs,
    /// Check every item's checksum (not only its size) before publishing.
    #[arg(long)]
    pub verify_existing: bool,
    /// Filters: KEY=VALUE, KEY!=VALUE, KEY~REGEX, KEY!~REGEX.
    pub filters: Vec<String>,
}

/// Options of `sstream rollback`.
#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    /// The view directory; with `--config`, a `[[view]]` name.
    #[arg(value_name = "VIEWDIR|VIEW")]
    pub view_dir: PathBuf,
    /// Take the view from this configuration file: VIEW is a `[[view]]`
    /// name, and its directory and signing key come from the config.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["sign_key", "delete_delay"])]
    pub config: Option<PathBuf>,
    /// The view's options shared with `sstream publish`.
    #[command(flatten)]
    pub view: ViewArgs,
    /// Check every item's checksum (not only its size) before switching.
    #[arg(long)]
    pub verify_existing: bool,
}

/// Options of both `sstream publish` and `sstream rollback`.
#[derive(Debug, Clone, Args)]
pub struct ViewArgs {
    /// Sign the view's metadata with this key (`.sjson`, `.json.gpg` and
    /// streams/v1/mirror-keyring.gpg), as a re-signed mirror; without it,
    /// plain `.json` only.
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    /// How long item files the view stops listing stay for clients that
    /// read its previous metadata [default: 6h].
    #[arg(long, value_name = "DURATION")]
    pub delete_delay: Option<Delay>,
    /// How a protected key is unlocked.
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
}

impl ViewArgs {
    /// The library's options (the key loaded and unlocked).
    fn options(
        &self,
        filters: Vec<String>,
        verify_existing: bool,
    ) -> Result<ViewOptions, CliError> {
        let sign_key = match &self.sign_key {
            Some(path) => Some(Arc::new(
                self.passphrase.open_key(path).map_err(CliError::usage)?,
            )),
            None => None,
        };
        Ok(ViewOptions {
            filters,
            sign_key,
            delete_delay: self
                .delete_delay
                .as_ref()
                .map_or(DEFAULT_DELETE_DELAY, |d| d.0),
            verify_existing,
        })
    }
}

/// Runs `sstream snapshot`.
pub fn run_snapshot(args: SnapshotArgs) -> Result<ExitCode, CliError> {
    init_logging()?;
    match args.action {
        SnapshotAction::Create { dir, name } => {
            refuse_bucket(&dir)?;
            let info = snapshot::create(&dir, name.as_deref())?;
            println!(
                "snapshot {} of {}: {} product(s), {} version(s), {} item(s), {}",
                info.name,
                dir.display(),
                info.products,
                info.versions,
                info.items,
                human_size(info.bytes)
            );
        }
        SnapshotAction::List { dir, json } => {
            refuse_bucket(&dir)?;
            let all = snapshot::list(&dir)?;
            print_list(&dir, &all, json)?;
        }
        SnapshotAction::Remove { dir, name } => {
            refuse_bucket(&dir)?;
            snapshot::remove(&dir, &name)?;
            println!("snapshot {name} of {} removed", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the snapshots: a table, or one JSON list.
fn print_list(dir: &Path, all: &[SnapshotInfo], json: bool) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if json {
        let shown = snapshot::protected(dir)?;
        let list: Vec<serde_json::Value> = all
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["shown"] = serde_json::Value::Bool(shown.contains(&s.name));
                v
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &list).map_err(CliError::new)?;
        writeln!(out)?;
        return Ok(());
    }
    let shown = snapshot::protected(dir)?;
    writeln!(
        out,
        "{:<24} {:<24} {:>8} {:>8} {:>10}  VIEWS",
        "NAME", "CREATED", "PRODUCTS", "VERSIONS", "SIZE"
    )?;
    for s in all {
        let mark = if shown.contains(&s.name) { "shown" } else { "" };
        writeln!(
            out,
            "{:<24} {:<24} {:>8} {:>8} {:>10}  {mark}",
            s.name,
            s.created.to_string(),
            s.products,
            s.versions,
            human_size(s.bytes)
        )?;
    }
    Ok(())
}

/// Runs `sstream publish`.
pub fn run_publish(args: PublishArgs) -> Result<ExitCode, CliError> {
    init_logging()?;
    refuse_bucket(&args.view_dir)?;
    refuse_bucket(&args.from)?;
    simplestreams::filter::FilterGroups::parse(&[&args.filters]).map_err(CliError::usage)?;
    let opts = args
        .view
        .options(args.filters.clone(), args.verify_existing)?;
    let state = view::publish(&args.view_dir, &args.from, &args.snapshot, &opts)?;
    println!("{}", shown_line(&args.view_dir, &state));
    Ok(ExitCode::SUCCESS)
}

/// Runs `sstream rollback`.
pub fn run_rollback(args: RollbackArgs) -> Result<ExitCode, CliError> {
    init_logging()?;
    if let Some(config) = &args.config {
        let name = args.view_dir.to_string_lossy();
        return crate::view_ops::rollback(config, &name, args.verify_existing);
    }
    refuse_bucket(&args.view_dir)?;
    let opts = args.view.options(Vec::new(), args.verify_existing)?;
    let state = view::rollback(&args.view_dir, &opts)?;
    println!("{}", shown_line(&args.view_dir, &state));
    Ok(ExitCode::SUCCESS)
}

/// What a view shows now, in one line.
fn shown_line(dir: &Path, state: &ViewState) -> String {
    let signed = if state.signed { ", signed" } else { "" };
    format!(
        "view {} shows snapshot {} of {}: {} item(s), {}{signed}",
        dir.display(),
        state.snapshot,
        state.mirror.display(),
        state.items,
        human_size(state.bytes)
    )
}

/// Refuses a bucket: these commands are for directory mirrors.
fn refuse_bucket(dir: &Path) -> Result<(), CliError> {
    if crate::target::is_bucket(dir) {
        return Err(CliError::usage_message(format!(
            "{}: snapshots and views are for directory mirrors; buckets (s3://) are not supported",
            dir.display()
        )));
    }
    Ok(())
}

/// Warnings (a copy across filesystems) on stderr.
fn init_logging() -> Result<(), CliError> {
    crate::logging::init(0, None).map_err(CliError::new)
}
