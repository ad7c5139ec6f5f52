//! `sstream verify TARGET`: audit a mirror as a client would, with exit
//! codes a cron job or a monitoring check can act on.

use crate::error::{CliError, EXIT_FAILURE, EXIT_METADATA, EXIT_OK, EXIT_USAGE};
use crate::stream_args::StreamArgs;
use clap::Args;
use simplestreams::Result;
use simplestreams::audit::{
    AuditOptions, Offered, Problem, Report, Scheduled, SignatureCheck, audit, audit_store,
    problem_of_error, store_entry,
};
use simplestreams::path::RelPath;
use simplestreams::source::{Source, SourceSpec, TransferOptions, source_url};
use simplestreams::store::is_s3_target;
use simplestreams::units::human_size as human;
use std::io::Write;
use std::process::ExitCode;

/// Exit status: problems found (missing or corrupt items, state
/// disagreement...): the failure code.
const EXIT_PROBLEMS: u8 = EXIT_FAILURE;

const AFTER_HELP: &str = "\
Entry document:
  A mirror directory given without --path is read from the entry it has:
  streams/v1/index.sjson, else streams/v1/index.json. A URL is read from
  streams/v1/index.sjson (what MAAS reads), unless it or --path names
  another document.

What is checked:
  Every metadata document (the entry and each products file it names) must
  parse and verify. Signature policy as for `sstream mirror`: with a .sjson
  entry every document must be signed by a key of the keyring (default
  /usr/share/keyrings/ubuntu-cloudimage-keyring.gpg when present, else the
  built-in copy of it: sstream key show-default). When the
  entry's twin is published too (index.json beside index.sjson, or the
  other way), its tree is read and checked as well: clients may read
  either. An index that does not parse or names no products file is an
  error.

  Mirror directory (a path or file:// URL) or bucket (s3://BUCKET/PREFIX,
  listed once; credentials as for `sstream mirror`): every item recorded as mirrored
  in .data/<content_id> must exist with its size (--full: its checksum);
  .data/references.json must agree with the state and name existing files.
  Files nothing references are reported as orphans; .part and temporary
  files as leftovers (both warnings). Files of removed versions waiting out
  the delete delay (--delete-delay of sstream mirror) are listed as
  scheduled for deletion: neither a warning nor an error. A products file without .data state
  is checked with the client rule below.

  Served mirror (http:// or https://): .data/ is not served, so what was
  filtered is unknown. Client rule: only the newest version of each product
  counts (what MAAS uses); it counts as mirrored if at least one of its items
  is served (HEAD), and then all of its items must be served with the right
  Content-Length (--full: downloaded and hashed). A stream of which no newest
  version is served at all is a problem. A mirror filtered on item fields
  (e.g. ftype) is best audited as a directory.
  Every other listed item is probed too: served ones are checked; in a
  re-signed mirror every listed item must be served.

Signatures:
  Every published signature is checked: each .sjson read, and the .json.gpg
  beside each .json read (detached, over the .json). With a keyring
  (--keyring, or the default one) both must verify with it. Without one
  (--no-verify, or an unsigned entry): in a re-signed mirror (it publishes
  streams/v1/mirror-keyring.gpg) both must verify with the mirror's own
  keyring (this shows the mirror is consistent, not who made it);
  otherwise a .json.gpg must at least be a signature packet. Always, the
  signed content of a .sjson must be that of its .json twin when both are
  published (compared as JSON).

What clients are offered:
  Every item file the published metadata lists is held (there, with its
  size; --full: its checksum, as published, not as .data recorded it),
  missing (not there though .data or the mirror's re-signed metadata says
  it is mirrored: an error), or offered but not held (listed by upstream's
  documents, never mirrored: filtered out or older than --max keeps).
  Offered-but-not-held files are reported per release/arch (or product),
  with counts: clients get 404s for them. Not an error, but a failure with
  --strict; publish held-only (sstream mirror --publish held, or --sign-key) to list only
  what the mirror holds.

Exit status:
  0  all good (orphans, leftovers and items offered but not held fail only
     with --strict)
  1  problems found: missing, truncated or corrupt items, bad signatures,
     a bad twin tree, dangling or inconsistent references, malformed state
     (or warnings and items offered but not held with --strict)
  2  usage error (bad arguments, unusable keyring)
  3  metadata invalid (parse or signature failure) or target unreachable";

/// Options of `sstream verify`.
#[derive(Debug, Clone, Args)]
#[command(after_help = AFTER_HELP)]
pub struct VerifyArgs {
    /// Where the stream's entry is, how it is verified, and logging.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Also check every item's checksum (reads every byte).
    #[arg(long)]
    pub full: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Fail (exit 1) on warnings too: orphans, leftovers, missing state,
    /// and on items offered but not held.
    #[arg(long)]
    pub strict: bool,
    /// Items checked at the same time.
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: usize,
    /// The mirror: a directory, a bucket (s3://BUCKET/PREFIX), or a URL
    /// (http, https, file) of its root or of a streams/v1/*.json or *.sjson
    /// document (see "Entry document").
    pub target: String,
}

/// The JSON printed by `--json`.
#[derive(serde::Serialize)]
struct JsonOut<'a> {
    target: &'a str,
    ok: bool,
    exit_code: u8,
    documents: usize,
    items_checked: usize,
    bytes_checked: u64,
    versions_skipped: usize,
    errors: usize,
    warnings: usize,
    problems: &'a [Problem],
    scheduled: &'a [Scheduled],
    offered: &'a Offered,
    signatures: &'a [SignatureCheck],
}

/// Runs `sstream verify`: its exit status is the audit's verdict; an
/// unusable target or keyring is a usage error.
pub fn run(args: VerifyArgs) -> Result<ExitCode, CliError> {
    args.stream
        .init_logging()
        .map_err(|e| e.with_code(EXIT_USAGE))?;
    let options = AuditOptions {
        full: args.full,
        jobs: args.jobs.max(1),
    };
    let runtime = crate::runtime().map_err(|e| {
        CliError::new(anyhow::Error::new(e).context("cannot start the runtime"))
            .with_code(EXIT_METADATA)
    })?;
    let result = if is_s3_target(&args.target) {
        audit_bucket(&args, &options, &runtime)?
    } else {
        audit_tree(&args, &options, &runtime)?
    };
    conclude(&args, result).map(ExitCode::from)
}

/// Audits the mirror directory or served mirror `args.target` (its entry
/// found as "Entry document" says). An unusable target or keyring is a
/// usage error (`Err`); what the audit finds is the inner result.
fn audit_tree(
    args: &VerifyArgs,
    options: &AuditOptions,
    runtime: &tokio::runtime::Runtime,
) -> Result<Result<Report>, CliError> {
    let opened = args
        .stream
        .open_with(&args.target, |spec| {
            runtime.block_on(find_entry(args, spec))
        })
        .map_err(|e| e.with_code(EXIT_USAGE))?;
    Ok(match opened {
        Ok((spec, verification)) => runtime.block_on(audit(&spec, verification, options)),
        Err(e) => Err(e),
    })
}

/// Audits the bucket mirror `args.target` (its entry: `--path`, the
/// document the URL names, else the one the mirror has). An unusable
/// target, AWS configuration or keyring is a usage error (`Err`).
fn audit_bucket(
    args: &VerifyArgs,
    options: &AuditOptions,
    runtime: &tokio::runtime::Runtime,
) -> Result<Result<Report>, CliError> {
    let (url, named) = crate::target::split_bucket_target(&args.target);
    let store = crate::target::open_store(url).map_err(|e| e.with_code(EXIT_USAGE))?;
    let entry = match args.stream.path.as_deref().or(named) {
        Some(p) => {
            RelPath::parse(p).map_err(|e| CliError::usage_message(format!("--path {p:?}: {e}")))?
        }
        None => match runtime.block_on(store_entry(store.clone())) {
            Ok(entry) => entry,
            Err(e) => return Ok(Err(e)),
        },
    };
    let verification = args
        .stream
        .verification(&entry)
        .map_err(|e| e.with_code(EXIT_USAGE))?;
    Ok(runtime.block_on(audit_store(store, entry, verification, options)))
}

/// Prints the outcome of an audit and gives the exit status.
fn conclude(args: &VerifyArgs, result: Result<Report>) -> Result<u8, CliError> {
    let (report, code) = match result {
        Ok(report) => {
            let code = if report.fails(args.strict) {
                EXIT_PROBLEMS
            } else {
                EXIT_OK
            };
            (report, code)
        }
        Err(e) => {
            let report = Report {
                problems: vec![problem_of_error(&e)],
                ..Report::default()
            };
            (report, EXIT_METADATA)
        }
    };
    print(args, &report, code)
        .map_err(|e| CliError::new(anyhow::Error::new(e).context("stdout")).with_code(code))?;
    Ok(code)
}

/// Whether the entry document was left to the default: no `--path`, and a
/// target naming no document (its URL is the root).
fn entry_defaulted(args: &VerifyArgs, spec: &SourceSpec) -> bool {
    let bare = |url: &str| url.trim_end_matches('/').to_owned();
    args.stream.path.is_none()
        && source_url(&args.target).is_ok_and(|url| bare(url.as_str()) == bare(spec.root.as_str()))
}

/// For a mirror directory whose entry was left to the default, the entry it
/// has (see [`Source::find_entry`]): `sstream mirror` publishes the index
/// under the name the source gives it, signed or not.
async fn find_entry(args: &VerifyArgs, spec: &mut SourceSpec) -> Result<()> {
    if spec.root.scheme() == "file" && entry_defaulted(args, spec) {
        let source = Source::new(spec.root.clone(), Vec::new(), TransferOptions::default())?;
        spec.entry = source.find_entry().await?;
    }
    Ok(())
}

fn print(args: &VerifyArgs, report: &Report, code: u8) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = JsonOut {
            target: &args.target,
            ok: code == EXIT_OK,
            exit_code: code,
            documents: report.documents,
            items_checked: report.items_checked,
            bytes_checked: report.bytes_checked,
            versions_skipped: report.versions_skipped,
            errors: report.errors(),
            warnings: report.warnings(),
            problems: &report.problems,
            scheduled: &report.scheduled,
            offered: &report.offered,
            signatures: &report.signatures,
        };
        serde_json::to_writer(&mut out, &json).map_err(std::io::Error::other)?;
        writeln!(out)?;
        return out.flush();
    }
    for p in &report.problems {
        let level = if p.kind.is_warning() && !args.strict {
            "warning"
        } else {
            "error"
        };
        if p.location.is_empty() {
            writeln!(out, "{level}: {}: {}", p.kind.as_str(), p.detail)?;
        } else if p.detail.starts_with(&p.location) {
            // Errors that already name their file or URL.
            writeln!(out, "{level}: {}: {}", p.kind.as_str(), p.detail)?;
        } else {
            writeln!(
                out,
                "{level}: {}: {}: {}",
                p.kind.as_str(),
                p.location,
                p.detail
            )?;
        }
    }
    let level = if args.strict { "error" } else { "note" };
    for g in &report.offered.not_held_groups {
        writeln!(
            out,
            "{level}: offered-not-held: {}: {}: {} item(s) of {} version(s), {}, listed by the published metadata but not held: clients get 404s (publish held-only: sstream mirror --publish held, or --sign-key)",
            g.content_id,
            g.group,
            g.items,
            g.versions,
            human(g.bytes)
        )?;
    }
    for s in &report.scheduled {
        let since = std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.since);
        writeln!(
            out,
            "note: scheduled: {}: waiting out the delete delay since {}; a later run deletes it",
            s.location,
            humantime::format_rfc3339_seconds(since)
        )?;
    }
    let scheduled = if report.scheduled.is_empty() {
        String::new()
    } else {
        format!(
            "; {} file(s) scheduled for deletion",
            report.scheduled.len()
        )
    };
    let verdict = match code {
        EXIT_OK => "OK",
        EXIT_METADATA => "FAILED (metadata)",
        _ => "FAILED",
    };
    let skipped = if report.versions_skipped > 0 {
        format!(
            ", {} unmirrored version(s) skipped",
            report.versions_skipped
        )
    } else {
        String::new()
    };
    let offered = &report.offered;
    let not_held = if offered.not_held > 0 {
        format!("; {} item(s) offered but not held", offered.not_held)
    } else {
        String::new()
    };
    writeln!(
        out,
        "{verdict}: {}: {} document(s), {} item(s), {} checked{}{skipped}; {} error(s), {} warning(s){scheduled}{not_held}",
        args.target,
        report.documents,
        report.items_checked,
        human(report.bytes_checked),
        if args.full { " and hashed" } else { "" },
        report.errors(),
        report.warnings()
    )?;
    out.flush()
}
