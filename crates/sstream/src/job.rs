//! One definition of a mirror job, whether it comes from the command line
//! (`sstream mirror`, the drop-in `sstream-mirror`) or from a `[[job]]` of
//! the configuration file (`sstream sync`).
//!
//! [`JobOptions`] declares every option once: its clap attributes give the
//! flag, its serde attributes the config key (the field's name), and both
//! read their values through the same parsers ([`Size`], [`Rate`],
//! [`Delay`], [`Timeout`], [`Connections`]: a config string or number is
//! parsed as the same text on the command line would be) and the same
//! [`JobOptions::validate`]. [`MirrorJob::build`] turns a job into the
//! library's [`Mirror`]. Adding an option is one field here (with its doc
//! comment, which is its `--help` text), its use in [`MirrorJob::build`],
//! and its commented line in `dist/sstream.toml`.

use crate::error::CliError;
use crate::sign::PassphraseArgs;
use crate::stream_args::StreamArgs;
use clap::Args;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use simplestreams::content::ContentIndex;
use simplestreams::filter::FilterGroups;
use simplestreams::metadata::MetadataReader;
use simplestreams::mirror::{Mirror, RunSettings};
use simplestreams::plan::MirrorOptions;
use simplestreams::resign::Publication;
use simplestreams::source::{Source, TransferOptions, source_url};
use simplestreams::status::Verified;
use std::fmt;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Every option of a mirror job: a flag of `sstream mirror` and
/// `sstream-mirror`, and a key (the field's name) of `[defaults]` and
/// `[[job]]` in the configuration file. Defaults are the clap ones (see
/// [`JobOptions::default`]).
#[derive(Debug, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobOptions {
    /// The index or products file to start from, relative to the source root.
    #[arg(long)]
    pub path: Option<String>,
    /// OpenPGP keyring (binary or armored) used to verify signed metadata.
    #[arg(long)]
    pub keyring: Option<PathBuf>,
    /// Do not verify signatures of signed (.sjson) metadata.
    #[arg(long, short = 'U')]
    pub no_verify: bool,
    /// Keep versions that left the source, up to --max per product.
    #[arg(long)]
    pub keep: bool,
    /// Keep at most MAX versions of each product (the newest).
    #[arg(long, value_name = "MAX")]
    pub max: Option<usize>,
    /// Mirror metadata only: do not download items that have a path.
    #[arg(long)]
    pub no_item_download: bool,
    /// Another source root to fetch items from when the primary fails (repeatable).
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,
    /// Number of connections for items at once: files downloaded at the
    /// same time, and byte ranges of large files on the connections no file
    /// is waiting for.
    #[arg(long, short = 'j', default_value = "6")]
    pub jobs: Connections,
    /// Let the connections grow past --jobs, up to N, while each one added
    /// brings more throughput to the byte ranges of large files (a server
    /// or a long round trip capping what one connection carries); N at
    /// most --jobs never grows.
    #[arg(long, value_name = "N", default_value = "16")]
    pub max_connections: Connections,
    /// Fetch files of at least SIZE (e.g. 32M) in byte ranges over several
    /// connections when the server honours ranges; 0 never does.
    #[arg(long, value_name = "SIZE", default_value = "32M")]
    pub segment_threshold: Size,
    /// Cap the total download rate, all connections together, at RATE
    /// bytes per second (e.g. 20M, 500K).
    #[arg(long, value_name = "RATE")]
    pub limit_rate: Option<Rate>,
    /// Retries per transfer on timeouts, resets, 5xx and 429.
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// Re-hash every item of the mirror (and fetch the ones that are wrong)
    /// instead of trusting their size.
    #[arg(long)]
    pub verify_existing: bool,
    /// Abandon a transfer that receives nothing for this long (seconds, or
    /// a duration such as 90s or 2m).
    #[arg(long, default_value = "60", value_name = "SECS")]
    pub timeout: Timeout,
    /// Wait for another run on the same output directory to finish.
    #[arg(long)]
    pub wait: bool,
    /// Also remove versions the filters now exclude and products gone from the source.
    #[arg(long)]
    pub prune: bool,
    /// Allow pruning to delete more than half of the mirror.
    #[arg(long)]
    pub force: bool,
    /// Keep SIZE free on the mirror's filesystem: a run whose downloads
    /// would leave less fails before downloading anything (e.g. 10G, 512M;
    /// default: 5% of the filesystem, at most 1G).
    #[arg(long, value_name = "SIZE")]
    pub min_free: Option<Size>,
    /// Keep the files of versions that left the metadata this long (e.g.
    /// 2h, 1d; 0: delete them in the same run) so that clients still
    /// reading the previous metadata can finish; a later run deletes them.
    /// Default: 6h for `sstream mirror`, 0 for `sstream-mirror` (as the
    /// reference).
    #[arg(long, value_name = "DURATION")]
    pub delete_delay: Option<Delay>,
    /// Share identical content with other mirrors on this filesystem
    /// through a content index in DIR (hard links named by checksum; give
    /// every job the same DIR). Without it, content is still stored once
    /// within the mirror.
    #[arg(long, value_name = "DIR")]
    pub content_index: Option<PathBuf>,
    /// Publish metadata listing exactly what the mirror holds, signed with
    /// this key (`sstream key generate`), instead of upstream's documents.
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    /// What the mirror publishes as metadata: `upstream`, upstream's
    /// documents (with plain `.json` twins of signed ones); `held`, plain
    /// documents listing exactly what the mirror holds (for LXD and Incus,
    /// which check no signature; with --sign-key, signed as well).
    /// Default: held with --sign-key, else upstream.
    #[arg(long, value_name = "MODE")]
    pub publish: Option<PublishMode>,
}

/// What a mirror publishes as metadata (`--publish`, config `publish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// Upstream's documents, byte for byte.
    Upstream,
    /// Documents listing exactly what the mirror holds.
    Held,
}

impl Default for JobOptions {
    /// The options of a job that gives none: the defaults declared on the
    /// flags above, so that a config job and `sstream mirror` share them.
    fn default() -> JobOptions {
        static DEFAULTS: std::sync::OnceLock<JobOptions> = std::sync::OnceLock::new();
        DEFAULTS
            .get_or_init(|| {
                use clap::FromArgMatches;
                let command =
                    JobOptions::augment_args(clap::Command::new("job").no_binary_name(true));
                let matches = command.get_matches_from(std::iter::empty::<&str>());
                JobOptions::from_arg_matches(&matches)
                    .expect("every job option has a default or is optional")
            })
            .clone()
    }
}

/// An option whose value does not go with the others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidOption {
    /// The option's key (the field's name: `keep`).
    pub key: &'static str,
    /// What is wrong, naming options as the caller spells them.
    pub message: String,
}

impl JobOptions {
    /// The keys of the options, in declaration order (the config keys; the
    /// flags are their clap arguments, see [`JobOptions::flag_of`]).
    pub fn keys() -> Vec<String> {
        JobOptions::augment_args(clap::Command::new("job"))
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect()
    }

    /// The long flag of the option with config key `key` (`mirrors` →
    /// `--mirror`).
    pub fn flag_of(key: &str) -> Option<String> {
        JobOptions::augment_args(clap::Command::new("job"))
            .get_arguments()
            .find(|a| a.get_id() == key)
            .and_then(|a| a.get_long().map(|l| format!("--{l}")))
    }

    /// Checks what the options say together; `name` spells an option for
    /// the message (`--keep` on the command line, `keep` in a config).
    pub fn validate(&self, name: impl Fn(&str) -> String) -> Result<(), InvalidOption> {
        if self.keep && self.max.is_none() {
            let (keep, max) = (name("keep"), name("max"));
            return Err(InvalidOption {
                key: "keep",
                message: format!(
                    "{keep} needs {max}: it keeps versions gone from the source up to {max}"
                ),
            });
        }
        if self.sign_key.is_some() && self.publish == Some(PublishMode::Upstream) {
            let (sign_key, publish) = (name("sign_key"), name("publish"));
            return Err(InvalidOption {
                key: "publish",
                message: format!(
                    "{sign_key} publishes what the mirror holds, signed: it cannot go with {publish} upstream"
                ),
            });
        }
        Ok(())
    }

    /// How the stream is read (the logging fields are the caller's).
    pub fn stream(&self, verbose: u8, log_file: Option<PathBuf>) -> StreamArgs {
        StreamArgs {
            path: self.path.clone(),
            verbose,
            log_file,
            keyring: self.keyring.clone(),
            no_verify: self.no_verify,
        }
    }
}

/// A job, from the command line or a config: what is mirrored from where
/// to where, and how.
#[derive(Debug, Clone)]
pub struct MirrorJob {
    /// The source: a URL (http, https, file) or a directory.
    pub source: String,
    /// The mirror directory (or `s3://BUCKET/PREFIX`).
    pub dir: PathBuf,
    /// The filter groups.
    pub filters: FilterGroups,
    /// Everything else.
    pub options: JobOptions,
    /// The delete delay without `delete_delay`: [`DEFAULT_DELETE_DELAY`],
    /// or zero for the drop-in (as the reference).
    pub default_delete_delay: Duration,
    /// Whether upstream's clear-signed documents get their plain `.json`
    /// twins (not for the drop-in, whose tree is the reference's).
    pub plain_twins: bool,
    /// Where the signing key's passphrase comes from.
    pub passphrase: PassphraseArgs,
}

/// Refuses a source given without a scheme that names no local file or
/// directory but looks like a host (`127.0.0.1:8000`, `images.maas.io/...`),
/// suggesting the URL meant.
pub fn check_source_scheme(source: &str) -> Result<(), CliError> {
    if source.contains("://") || std::fs::symlink_metadata(source).is_ok() {
        return Ok(());
    }
    let host = source.split('/').next().unwrap_or_default();
    let (name, port) = host.rsplit_once(':').unwrap_or((host, ""));
    let port_ok = port.is_empty() || port.bytes().all(|b| b.is_ascii_digit());
    let looks_like_host = !name.is_empty()
        && (name.contains('.') || !port.is_empty())
        && port_ok
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !name.starts_with('.');
    if !looks_like_host {
        return Ok(());
    }
    let scheme = if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') || name == "localhost" {
        "http"
    } else {
        "https"
    };
    Err(CliError::usage_message(format_args!(
        "source {source:?}: no such file or directory, and no URL scheme: did you mean {scheme}://{source}?"
    )))
}

impl MirrorJob {
    /// The library's job: the source opened, its verification loaded, the
    /// store and the signing key opened.
    pub fn build(&self) -> Result<Mirror, CliError> {
        let o = &self.options;
        crate::target::check_mirror_dir(&self.dir)?;
        check_source_scheme(&self.source)?;
        let (spec, verification) = o.stream(0, None).open(&self.source)?;
        let mirrors = o
            .mirrors
            .iter()
            .map(|m| source_url(m))
            .collect::<Result<Vec<_>, _>>()?;
        let transfer = TransferOptions {
            // The connection budget is the number of jobs.
            connections: o.jobs.get(),
            max_connections: o.max_connections.get(),
            retries: o.retries,
            idle_timeout: o.timeout.get(),
            segment_threshold: (o.segment_threshold.0 > 0).then_some(o.segment_threshold.0),
            limit_rate: o.limit_rate.map(Rate::get),
            ..TransferOptions::default()
        };
        // A bucket's client retries and times out as the source does.
        let store = crate::target::store_for_run(&self.dir, &transfer)?;
        let source = Source::new(spec.root, mirrors, transfer)?;
        let reader = MetadataReader::new(source, spec.entry, verification);
        let options = MirrorOptions {
            filters: self.filters.clone(),
            max: o.max,
            keep: o.keep,
            item_download: !o.no_item_download,
            prune: o.prune,
            verify_existing: o.verify_existing,
        };
        let settings = RunSettings {
            jobs: o.jobs.get(),
            wait: o.wait,
            wipe_guard: (!o.force).then_some(WIPE_GUARD),
            min_free: o.min_free.map(|s| s.0),
            delete_delay: o.delete_delay.map_or(self.default_delete_delay, |d| d.0),
            content_index: self.content_index()?,
            publication: self.publication()?,
            plain_twins: self.plain_twins,
        };
        Ok(Mirror::new(reader, store, options, settings))
    }

    /// How a run of this job verifies the source's metadata, for its status
    /// record (`None` when the source or keyring cannot be opened: the run
    /// fails on it and says why).
    pub fn verified_with(&self) -> Option<Verified> {
        let (spec, verification) = self.options.stream(0, None).open(&self.source).ok()?;
        Some(verification.recorded(&spec.entry))
    }

    /// The content index, when it can serve this mirror.
    fn content_index(&self) -> Result<Option<PathBuf>, CliError> {
        let Some(given) = self.options.content_index.as_deref() else {
            return Ok(None);
        };
        let dir = content_index_for(given, &self.dir)?;
        let mirror = simplestreams::content::resolve_dir(&self.dir).unwrap_or(self.dir.clone());
        if ContentIndex::new(&dir).shares_filesystem_with(&mirror) {
            return Ok(Some(dir));
        }
        log::warn!(
            "content index {}: not on the filesystem of {} (hard links cannot cross filesystems); not used",
            dir.display(),
            self.dir.display()
        );
        Ok(None)
    }

    /// Upstream's documents, held ones (`publish = "held"`), or held ones
    /// re-signed with the key of `sign_key` (loaded and checked before
    /// anything is fetched).
    fn publication(&self) -> Result<Publication, CliError> {
        Ok(match (&self.options.sign_key, self.options.publish) {
            (Some(path), _) => Publication::Resigned(Arc::new(self.passphrase.open_key(path)?)),
            (None, Some(PublishMode::Held)) => Publication::Held,
            (None, Some(PublishMode::Upstream) | None) => Publication::Upstream,
        })
    }
}

/// The content index `dir` of the mirror in `mirror` (a directory or an
/// S3 URL), resolved (a relative path against the working directory, as
/// the mirror's own); refused inside the mirror, where a run would take
/// its entries for files of the mirror's own (resolved paths compared).
fn content_index_for(dir: &Path, mirror: &Path) -> Result<PathBuf, CliError> {
    use simplestreams::content::resolve_dir;
    let unresolvable = |e: std::io::Error| {
        CliError::usage(anyhow::anyhow!("content index {}: {e}", dir.display()))
    };
    let index = resolve_dir(dir).map_err(unresolvable)?;
    if !mirror.to_string_lossy().contains("://") {
        let mirror_dir = resolve_dir(mirror).map_err(unresolvable)?;
        if index.starts_with(&mirror_dir) {
            return Err(CliError::usage(anyhow::anyhow!(
                "content index {}: inside the mirror {} (give a directory beside it)",
                dir.display(),
                mirror.display()
            )));
        }
    }
    Ok(index)
}

/// Share of the mirror pruning may delete without `force`.
pub const WIPE_GUARD: f64 = 0.5;

/// How long `sstream mirror` and `sstream sync` keep the files of versions
/// that left the metadata: a MAAS region that read the previous metadata
/// just before a run finishes its import (and its retries, about two hours)
/// well within it, and an hourly or daily run removes them at its first
/// run after it. The drop-in `sstream-mirror` deletes at once, as the
/// reference.
pub const DEFAULT_DELETE_DELAY: Duration = Duration::from_secs(6 * 3600);

/// Reads a value written as a string or a TOML number through its
/// [`FromStr`], so that a config value passes the parser of the flag.
fn text_or_number<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    struct TextOrNumber<T>(std::marker::PhantomData<T>);
    impl<T: FromStr<Err = String>> Visitor<'_> for TextOrNumber<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number or a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
    }
    d.deserialize_any(TextOrNumber(std::marker::PhantomData))
}

/// Implements [`Deserialize`] for a value type through [`text_or_number`].
macro_rules! deserialize_as_text {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                text_or_number(d)
            }
        }
    )*};
}
deserialize_as_text!(Size, Rate, Delay, Timeout, Connections);

/// A number of bytes: a number, or one with a binary unit (`512K`, `20M`,
/// `1.5G`; see [`simplestreams::units::parse_size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;
    fn from_str(text: &str) -> Result<Size, String> {
        simplestreams::units::parse_size(text)
            .map(Size)
            .map_err(|e| e.to_string())
    }
}

/// A download rate in bytes per second, more than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(NonZeroU64);

impl Rate {
    /// Bytes per second.
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(text: &str) -> Result<Rate, String> {
        let Size(bytes) = text.parse()?;
        NonZeroU64::new(bytes).map(Rate).ok_or_else(|| {
            "a rate of 0 would never finish; leave the rate limit out for no limit".to_owned()
        })
    }
}

/// A duration, zero allowed (see [`parse_duration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay(pub Duration);

impl FromStr for Delay {
    type Err = String;
    fn from_str(text: &str) -> Result<Delay, String> {
        parse_duration(text).map(Delay)
    }
}

/// A duration of more than zero (see [`parse_duration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(Duration);

impl Timeout {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for Timeout {
    type Err = String;
    fn from_str(text: &str) -> Result<Timeout, String> {
        match parse_duration(text)? {
            d if d.is_zero() => Err("must be more than zero".to_owned()),
            d => Ok(Timeout(d)),
        }
    }
}

/// A number of connections (or of anything done at once), at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections(NonZeroUsize);

impl Connections {
    /// The number.
    pub fn get(self) -> usize {
        self.0.get()
    }
}

impl FromStr for Connections {
    type Err = String;
    fn from_str(text: &str) -> Result<Connections, String> {
        let n: usize = text
            .trim()
            .parse()
            .map_err(|e| format!("{text:?}: {e} (a whole number)"))?;
        NonZeroUsize::new(n)
            .map(Connections)
            .ok_or_else(|| "must be at least 1".to_owned())
    }
}

/// Parses a duration: a number of seconds (`90`, `0.5`) or a duration such
/// as `90s`, `2h 30m`, `2d` or `1week`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("bad duration {text:?}: not a usable number of seconds"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("bad duration {text:?}: {e} (e.g. \"90s\", \"2h 30m\", \"2d\"))"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_without_a_scheme_that_look_like_hosts_are_refused() {
        let hint = |s: &str| check_source_scheme(s).err().map(|e| e.to_string());
        for (source, meant) in [
            ("127.0.0.1:19651", "http://127.0.0.1:19651?"),
            ("localhost:8080/stable", "http://localhost:8080/stable?"),
            (
                "images.maas.io/ephemeral-v3/stable",
                "https://images.maas.io/ephemeral-v3/stable?",
            ),
        ] {
            let message = hint(source).unwrap_or_default();
            assert!(
                message.ends_with(&format!("did you mean {meant}")),
                "{message}"
            );
        }
        for fine in [
            "http://127.0.0.1:1/",
            "file:///srv/m",
            "mirror",
            "./stream",
            "/nonexistent/x",
            "a:b",
        ] {
            assert_eq!(hint(fine), None, "{fine}");
        }
    }

    #[test]
    fn values_parse_the_same_from_text_and_numbers() {
        assert_eq!("20M".parse::<Size>().unwrap(), Size(20 << 20));
        assert!("0".parse::<Rate>().is_err());
        assert_eq!("512K".parse::<Rate>().unwrap().get(), 512 << 10);
        assert_eq!(
            "0.5".parse::<Timeout>().unwrap().get(),
            Duration::from_millis(500)
        );
        assert!("0".parse::<Timeout>().is_err());
        assert_eq!("0".parse::<Delay>().unwrap(), Delay(Duration::ZERO));
        assert_eq!(
            "2h 30m".parse::<Delay>().unwrap(),
            Delay(Duration::from_secs(9000))
        );
        assert!("0".parse::<Connections>().is_err());
        assert!("-1".parse::<Size>().is_err());
        let from_toml = |t: &str| toml::from_str::<JobOptions>(t).map_err(|e| e.to_string());
        assert!(
            from_toml("limit_rate = 0")
                .unwrap_err()
                .contains("rate of 0")
        );
        assert!(from_toml("jobs = 0").unwrap_err().contains("at least 1"));
        assert!(
            from_toml("max_connections = 0")
                .unwrap_err()
                .contains("at least 1")
        );
        assert_eq!(
            from_toml("max_connections = \"24\"")
                .unwrap()
                .max_connections
                .get(),
            24
        );
        let o = from_toml("min_free = 1024\ntimeout = 1.5\nsegment_threshold = \"1M\"").unwrap();
        assert_eq!(o.min_free, Some(Size(1024)));
        assert_eq!(o.timeout.get(), Duration::from_millis(1500));
        assert_eq!(o.segment_threshold, Size(1 << 20));
    }

    #[test]
    fn defaults_are_the_flags_defaults() {
        let o = JobOptions::default();
        assert_eq!(o.jobs.get(), 6);
        assert_eq!(o.max_connections.get(), 16);
        assert_eq!(
            o.max_connections.get(),
            simplestreams::source::DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(o.retries, 4);
        assert_eq!(o.timeout.get(), Duration::from_secs(60));
        assert_eq!(o.segment_threshold, Size(32 << 20));
        assert_eq!(o.limit_rate, None);
        assert!(JobOptions::keys().contains(&"segment_threshold".to_owned()));
        assert_eq!(JobOptions::flag_of("mirrors").as_deref(), Some("--mirror"));
    }

    /// The options of `sstream mirror` that are about one run, not the
    /// job: they have no config key.
    const RUN_ONLY: [&str; 12] = [
        "dry_run",
        "json",
        "progress",
        "verbose",
        "log_file",
        "no_checksumming_reader",
        "passphrase_file",
        "job_name",
        "source",
        "output_dir",
        "filters",
        "help",
    ];

    /// The next option cannot drift: every option of `sstream mirror
    /// --help` but those about one run is a job option, every job option is
    /// a config key, and the shipped example config names each.
    #[test]
    fn every_mirror_option_has_a_config_key_in_the_example() {
        let keys = JobOptions::keys();
        let [sstream, _, _] = crate::cli::commands();
        let mirror = sstream
            .find_subcommand("mirror")
            .expect("sstream mirror")
            .clone();
        for arg in mirror.get_arguments() {
            let id = arg.get_id().as_str();
            assert!(
                keys.iter().any(|k| k == id) || RUN_ONLY.contains(&id),
                "--{}: an option of sstream mirror that is neither a job option \
                 (in JobOptions, so a config key) nor listed as about one run",
                arg.get_long().unwrap_or(id)
            );
        }
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dist/sstream.toml");
        let shipped = std::fs::read_to_string(shipped).unwrap();
        for key in &keys {
            let toml = format!("{key} = ");
            assert!(
                shipped
                    .lines()
                    .any(|l| l.trim_start_matches("# ").starts_with(&toml)),
                "dist/sstream.toml does not name the job option {key}"
            );
            let value = match JobOptions::augment_args(clap::Command::new("j"))
                .get_arguments()
                .find(|a| a.get_id() == key.as_str())
                .map(|a| a.get_action().takes_values())
            {
                Some(false) => "true",
                _ if key == "mirrors" => "[\"http://h/m/\"]",
                _ if key == "max"
                    || key == "jobs"
                    || key == "max_connections"
                    || key == "retries" =>
                {
                    "1"
                }
                _ if key == "publish" => "\"held\"",
                _ => "\"1\"",
            };
            let one: Result<JobOptions, _> = toml::from_str(&format!("{key} = {value}"));
            assert!(one.is_ok(), "config key {key}: {one:?}");
        }
    }

    #[test]
    fn keep_needs_max_on_both_paths() {
        let o = JobOptions {
            keep: true,
            ..JobOptions::default()
        };
        let e = o
            .validate(|k| format!("--{}", k.replace('_', "-")))
            .unwrap_err();
        assert_eq!(e.key, "keep");
        assert_eq!(
            e.message,
            "--keep needs --max: it keeps versions gone from the source up to --max"
        );
    }

    #[test]
    fn publish_is_upstream_or_held_and_refuses_upstream_with_a_key() {
        let held: JobOptions = toml::from_str("publish = \"held\"").unwrap();
        assert_eq!(held.publish, Some(PublishMode::Held));
        assert_eq!(JobOptions::default().publish, None);
        let bad = toml::from_str::<JobOptions>("publish = \"mine\"").unwrap_err();
        assert!(bad.to_string().contains("mine"), "{bad}");
        let both: JobOptions =
            toml::from_str("publish = \"upstream\"\nsign_key = \"/k.asc\"").unwrap();
        let err = both.validate(str::to_owned).unwrap_err();
        assert_eq!(err.key, "publish");
        assert!(err.message.contains("sign_key"), "{}", err.message);
    }
}
