//! The configuration file of `sstream sync` and `sstream status` (TOML,
//! default [`DEFAULT_PATH`]): an optional `[defaults]` table and one
//! `[[job]]` table per mirror.
//!
//! ```toml
//! [defaults]                 # any job key but `name`, inherited by every job
//! keyring = "/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg"
//!
//! [[job]]
//! name = "maas-stable"
//! source = "https://images.maas.io/ephemeral-v3/stable/"
//! dir = "/var/www/html/maas/images/ephemeral-v3/stable"
//! # filter groups: an item is mirrored when it matches every filter of ANY group
//! filters = [["arch=amd64", "release~(trusty|xenial)"], ["os~(grub*|pxelinux)"]]
//! max = 1
//! ```
//!
//! Every option of `sstream mirror` has a key (`path`, `keyring`,
//! `no_verify`, `max`, `keep`, `mirrors`, `jobs`, `retries`, `timeout`,
//! `prune`, `force`, `verify_existing`, `no_item_download`, `wait`,
//! `sign_key`, `limit_rate`, `delete_delay`, `min_free`, `content_index`),
//! plus `filters`
//! (a list of groups, or a flat list: one group), the hooks `on_success`
//! and `on_failure` and their `hook_timeout`. Relative paths (`dir`, `keyring`, `sign_key`, a source
//! directory) are relative to the directory of the configuration file.
//!
//! [`Config::load`] checks everything it can without touching the network
//! or the mirrors; each problem is a [`ConfigError`] naming the file, the
//! line and the key.

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use simplestreams::filter::FilterGroups;
use simplestreams::source::{source_url, split_source};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Where `sstream sync` and `sstream status` look without `--config`.
pub const DEFAULT_PATH: &str = "/etc/sstream/sstream.toml";

/// Concurrent downloads of a job without `jobs` (as `sstream mirror`).
pub const DEFAULT_JOBS: usize = 6;
/// Retries per transfer without `retries` (as `sstream mirror`).
pub const DEFAULT_RETRIES: u32 = 4;
/// Idle timeout of a transfer without `timeout` (as `sstream mirror`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a hook may run without `hook_timeout`.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(600);

/// The exit status of a command whose configuration is unusable.
pub const EXIT_CONFIG: u8 = 2;

/// A problem with the configuration file: where it is and what is wrong.
/// Displayed on one line as `FILE:LINE: KEY: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {}{message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// The line (1-based) the problem is on, when it is about one place.
    pub line: Option<usize>,
    /// The key the problem is about, when there is one.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// A job of the configuration, with `[defaults]` merged in, paths resolved
/// and every value checked: what one `sstream sync` run of it needs.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job's name (checked by [`simplestreams::status::check_job_name`]).
    pub name: String,
    /// The source: a URL (http, https, file) or an absolute directory.
    pub source: String,
    /// The mirror directory (absolute).
    pub dir: PathBuf,
    /// The entry document relative to the source root (`--path`).
    pub path: Option<String>,
    /// The keyring verifying signed metadata (`--keyring`).
    pub keyring: Option<PathBuf>,
    /// Do not verify signatures (`--no-verify`).
    pub no_verify: bool,
    /// The filter groups (a flat list in the file is one group).
    pub filters: FilterGroups,
    /// Versions kept per product (`--max`).
    pub max: Option<usize>,
    /// Keep versions gone from the source, within `max` (`--keep`).
    pub keep: bool,
    /// Fallback roots for items (`--mirror`, repeated).
    pub mirrors: Vec<String>,
    /// Concurrent downloads (`--jobs`).
    pub jobs: usize,
    /// Retries per transfer (`--retries`).
    pub retries: u32,
    /// Idle timeout of a transfer (`--timeout`).
    pub timeout: Duration,
    /// Also remove what the filters now exclude (`--prune`).
    pub prune: bool,
    /// Let pruning pass the wipe guard (`--force`).
    pub force: bool,
    /// Re-hash existing items (`--verify-existing`).
    pub verify_existing: bool,
    /// Mirror metadata only (`--no-item-download`).
    pub no_item_download: bool,
    /// Wait for another run on the same directory (`--wait`).
    pub wait: bool,
    /// Key re-signing the published metadata (`--sign-key`).
    pub sign_key: Option<PathBuf>,
    /// Total download rate cap in bytes per second (`--limit-rate`).
    pub limit_rate: Option<u64>,
    /// Grace period before files of removed versions are deleted (`--delete-delay`).
    pub delete_delay: Option<Duration>,
    /// Free space to keep on the mirror's filesystem, in bytes (`--min-free`).
    pub min_free: Option<u64>,
    /// The content index shared by the jobs whose mirrors are on one
    /// filesystem (`--content-index`; absolute).
    pub content_index: Option<PathBuf>,
    /// Shell command run after a successful run.
    pub on_success: Option<String>,
    /// Shell command run after a failed run.
    pub on_failure: Option<String>,
    /// How long a hook may run before it (and every process it started)
    /// is killed (`hook_timeout`; 10 minutes unless given).
    pub hook_timeout: Duration,
}

/// A loaded configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// Its jobs, in file order.
    pub jobs: Vec<Job>,
}

impl Config {
    /// Reads and checks the configuration file at `file`.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read the configuration: {e}"),
        })?;
        Config::parse(&text, file)
    }

    /// Checks the configuration `text`, read from `file` (named in errors;
    /// relative paths are resolved against its directory).
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let ctx = Context { text, file };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = std::path::absolute(&base).unwrap_or(base);
        let defaults = raw.defaults.map(Spanned::into_inner).unwrap_or_default();
        if let Some(name) = &defaults.name {
            return Err(ctx.at(
                name.span(),
                "name",
                "a job's name cannot be inherited: give it in each [[job]]",
            ));
        }
        if raw.job.is_empty() {
            return Err(ctx.error(None, None, "no [[job]] table: nothing to mirror"));
        }
        let mut jobs = Vec::new();
        for table in raw.job {
            let span = table.span();
            let job = table.into_inner().merged(&defaults);
            jobs.push(ctx.resolve(job, span, &base)?);
        }
        ctx.check_names(&jobs)?;
        ctx.check_dirs(&jobs)?;
        Ok(Config {
            file: file.to_path_buf(),
            jobs: jobs.into_iter().map(|(job, _)| job).collect(),
        })
    }

    /// The jobs named in `names` (all of them when `names` is empty), in
    /// the order given; a name the file does not define is an error.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Job>, ConfigError> {
        if names.is_empty() {
            return Ok(self.jobs.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.jobs.iter().find(|j| &j.name == n).ok_or_else(|| {
                    let known: Vec<&str> = self.jobs.iter().map(|j| j.name.as_str()).collect();
                    ConfigError {
                        file: self.file.clone(),
                        line: None,
                        key: None,
                        message: format!("no job named {n:?} (jobs: {})", known.join(", ")),
                    }
                })
            })
            .collect()
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    defaults: Option<Spanned<RawJob>>,
    #[serde(default)]
    job: Vec<Spanned<RawJob>>,
}

/// A `[[job]]` or the `[defaults]` table as written: every key optional,
/// each with where it was written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Option<Spanned<String>>,
    source: Option<Spanned<String>>,
    dir: Option<Spanned<PathBuf>>,
    path: Option<Spanned<String>>,
    keyring: Option<Spanned<PathBuf>>,
    no_verify: Option<Spanned<bool>>,
    filters: Option<Spanned<RawFilters>>,
    max: Option<Spanned<usize>>,
    keep: Option<Spanned<bool>>,
    mirrors: Option<Spanned<Vec<String>>>,
    jobs: Option<Spanned<usize>>,
    retries: Option<Spanned<u32>>,
    timeout: Option<Spanned<Seconds>>,
    prune: Option<Spanned<bool>>,
    force: Option<Spanned<bool>>,
    verify_existing: Option<Spanned<bool>>,
    no_item_download: Option<Spanned<bool>>,
    wait: Option<Spanned<bool>>,
    sign_key: Option<Spanned<PathBuf>>,
    limit_rate: Option<Spanned<Size>>,
    delete_delay: Option<Spanned<Seconds>>,
    min_free: Option<Spanned<Size>>,
    content_index: Option<Spanned<PathBuf>>,
    on_success: Option<Spanned<String>>,
    on_failure: Option<Spanned<String>>,
    hook_timeout: Option<Spanned<Seconds>>,
}

impl RawJob {
    /// This job with every key it does not give taken from `defaults`.
    fn merged(self, defaults: &RawJob) -> RawJob {
        let d = defaults.clone();
        RawJob {
            name: self.name,
            source: self.source.or(d.source),
            dir: self.dir.or(d.dir),
            path: self.path.or(d.path),
            keyring: self.keyring.or(d.keyring),
            no_verify: self.no_verify.or(d.no_verify),
            filters: self.filters.or(d.filters),
            max: self.max.or(d.max),
            keep: self.keep.or(d.keep),
            mirrors: self.mirrors.or(d.mirrors),
            jobs: self.jobs.or(d.jobs),
            retries: self.retries.or(d.retries),
            timeout: self.timeout.or(d.timeout),
            prune: self.prune.or(d.prune),
            force: self.force.or(d.force),
            verify_existing: self.verify_existing.or(d.verify_existing),
            no_item_download: self.no_item_download.or(d.no_item_download),
            wait: self.wait.or(d.wait),
            sign_key: self.sign_key.or(d.sign_key),
            limit_rate: self.limit_rate.or(d.limit_rate),
            delete_delay: self.delete_delay.or(d.delete_delay),
            min_free: self.min_free.or(d.min_free),
            content_index: self.content_index.or(d.content_index),
            on_success: self.on_success.or(d.on_success),
            on_failure: self.on_failure.or(d.on_failure),
            hook_timeout: self.hook_timeout.or(d.hook_timeout),
        }
    }
}

/// `filters`: a list of filter strings (one group) or a list of lists.
#[derive(Debug, Clone)]
struct RawFilters(Vec<Vec<String>>);

impl<'de> Deserialize<'de> for RawFilters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawFilters, D::Error> {
        d.deserialize_seq(FiltersVisitor)
    }
}

struct FiltersVisitor;

/// One element of `filters`: a filter, or a group of them.
enum FilterElement {
    One(String),
    Group(Vec<String>),
}

impl<'de> Deserialize<'de> for FilterElement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FilterElement, D::Error> {
        struct ElementVisitor;
        impl<'de> Visitor<'de> for ElementVisitor {
            type Value = FilterElement;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a filter string or a list of filter strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FilterElement, E> {
                Ok(FilterElement::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FilterElement, A::Error> {
                let mut group = Vec::new();
                while let Some(f) = seq.next_element::<String>()? {
                    group.push(f);
                }
                Ok(FilterElement::Group(group))
            }
        }
        d.deserialize_any(ElementVisitor)
    }
}

impl<'de> Visitor<'de> for FiltersVisitor {
    type Value = RawFilters;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of filters (one group) or a list of lists of filters (groups)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawFilters, A::Error> {
        let (mut flat, mut groups) = (Vec::new(), Vec::new());
        while let Some(element) = seq.next_element::<FilterElement>()? {
            match element {
                FilterElement::One(f) => flat.push(f),
                FilterElement::Group(g) => groups.push(g),
            }
        }
        match (flat.is_empty(), groups.is_empty()) {
            (_, true) => Ok(RawFilters(if flat.is_empty() {
                Vec::new()
            } else {
                vec![flat]
            })),
            (true, false) => Ok(RawFilters(groups)),
            (false, false) => Err(de::Error::custom(
                "mixes filters and groups: give either a list of filters (one group) \
                 or a list of lists (groups)",
            )),
        }
    }
}

/// A duration: a number of seconds or a string such as `"90s"`, `"2h 30m"`
/// or `"7days"`.
#[derive(Debug, Clone, Copy)]
struct Seconds(Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Seconds, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds or a duration such as \"90s\" or \"2h 30m\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(|s| Seconds(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format!("a duration cannot be negative: {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(Duration::from_secs(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Duration::try_from_secs_f64(v)
                    .map(Seconds)
                    .map_err(|_| E::custom(format!("not a usable number of seconds: {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                parse_duration(v).map(Seconds).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a duration such as `90s`, `2h 30m`, `2d` or `1week` (a bare
/// number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("bad duration {text:?}: {e} (e.g. \"90s\", \"2h 30m\", \"2d\")"))
}

/// A size in bytes: a number, or a string with a binary unit (`"512K"`,
/// `"20M"`, `"1.5G"`, `"2TiB"`; `K`=1024).
#[derive(Debug, Clone, Copy)]
struct Size(u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a size such as \"20M\" or \"1.5G\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("a size cannot be negative: {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a size (the library's, shared with the command line).
pub use simplestreams::units::parse_size;

/// The file being checked, for errors.
struct Context<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Context<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn error(&self, line: Option<usize>, key: Option<&str>, message: &str) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: key.map(str::to_owned),
            message: message.to_owned(),
        }
    }

    fn at(&self, span: Range<usize>, key: &str, message: &str) -> ConfigError {
        self.error(Some(self.line(span.start)), Some(key), message)
    }

    /// A parse or type error of the `toml` crate, on one line, with the
    /// key it is about when the line shows one.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e
            .message()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace("expected usize", "expected a whole number")
            .replace("expected u32", "expected a whole number");
        let Some(span) = e.span() else {
            return self.error(None, None, &message);
        };
        let line = self.line(span.start);
        let key = self.key_before(span.start);
        let message = if let Some(field) = unknown_field(&message) {
            format!("unknown key {field:?}{}", known_keys_hint(&message))
        } else if key.as_deref() == Some("job") && self.job_is_not_an_array() {
            format!("{message}; write each job as [[job]] (an array of tables)")
        } else {
            message
        };
        let key = match unknown_field(e.message()) {
            Some(_) => None,
            None => key,
        };
        self.error(Some(line), key.as_deref(), &message)
    }

    /// Whether the document has a `job` that is not an array of tables
    /// (`[job]` written for `[[job]]`).
    fn job_is_not_an_array(&self) -> bool {
        self.text
            .parse::<toml::Table>()
            .is_ok_and(|t| t.get("job").is_some_and(|j| !j.is_array()))
    }

    /// The key whose value starts at or around `offset`: the `KEY =` on its
    /// line, or on the nearest line above it within the same table.
    fn key_before(&self, offset: usize) -> Option<String> {
        let start = offset.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let prefix = &self.text[line_start..start];
        // The `KEY =` before the value, or the whole line when the error is
        // at its start (a table header, a key).
        let own = if prefix.contains('=') {
            prefix
        } else {
            &self.text[line_start..line_end]
        };
        let above = self.text[..line_start].lines().rev();
        for (i, line) in std::iter::once(own).chain(above).enumerate() {
            let t = line.trim_start();
            if t.starts_with('[') {
                let name = t.trim_matches(|c| c == '[' || c == ']' || c == ' ');
                return (i == 0 && !name.is_empty()).then(|| name.to_owned());
            }
            if let Some((k, _)) = t.split_once('=') {
                let k = k.trim();
                if !k.is_empty() && !k.starts_with('#') && !k.contains(['"', '[', ',']) {
                    return Some(k.to_owned());
                }
            }
        }
        None
    }

    /// Checks one merged job and resolves it; also returns the spans of
    /// its name and dir, for the checks across jobs.
    fn resolve(
        &self,
        raw: RawJob,
        table: Range<usize>,
        base: &Path,
    ) -> Result<(Job, JobSpans), ConfigError> {
        let table_line = self.line(table.start);
        let missing = |key: &str| {
            self.error(
                Some(table_line),
                Some(key),
                "missing in this [[job]] (and not in [defaults])",
            )
        };
        let name = raw.name.ok_or_else(|| missing("name"))?;
        simplestreams::status::check_job_name(name.get_ref())
            .map_err(|e| self.at(name.span(), "name", &e.to_string()))?;
        let source = raw.source.ok_or_else(|| missing("source"))?;
        let dir = raw.dir.ok_or_else(|| missing("dir"))?;
        if dir.get_ref().as_os_str().is_empty() {
            return Err(self.at(dir.span(), "dir", "empty directory"));
        }
        if crate::target::is_bucket(dir.get_ref()) {
            let url = dir.get_ref().to_string_lossy();
            simplestreams::store::S3Target::parse(&url)
                .map_err(|e| self.at(dir.span(), "dir", &e.to_string()))?;
        }
        let resolved_source = resolve_source(source.get_ref(), base);
        let path = raw.path.map(Spanned::into_inner);
        split_source(&resolved_source, path.as_deref())
            .map_err(|e| self.at(source.span(), "source", &e.to_string()))?;
        let mirrors = match raw.mirrors {
            Some(m) => {
                for url in m.get_ref() {
                    source_url(url).map_err(|e| self.at(m.span(), "mirrors", &e.to_string()))?;
                }
                m.into_inner()
            }
            None => Vec::new(),
        };
        let filters = match raw.filters {
            Some(f) => FilterGroups::parse(&f.get_ref().0)
                .map_err(|e| self.at(f.span(), "filters", &e.to_string()))?,
            None => FilterGroups::default(),
        };
        let keep = flag(&raw.keep);
        if keep && raw.max.is_none() {
            let span = raw
                .keep
                .as_ref()
                .map(Spanned::span)
                .unwrap_or(table.clone());
            return Err(self.at(
                span,
                "keep",
                "keep needs max: it keeps versions gone from the source up to max",
            ));
        }
        let jobs = match raw.jobs {
            Some(j) if *j.get_ref() == 0 => {
                return Err(self.at(j.span(), "jobs", "must be at least 1"));
            }
            Some(j) => j.into_inner(),
            None => DEFAULT_JOBS,
        };
        let timeout = match raw.timeout {
            Some(t) if t.get_ref().0.is_zero() => {
                return Err(self.at(t.span(), "timeout", "must be more than zero"));
            }
            Some(t) => t.into_inner().0,
            None => DEFAULT_TIMEOUT,
        };
        let on_success = self.hook(raw.on_success, "on_success")?;
        let on_failure = self.hook(raw.on_failure, "on_failure")?;
        let hook_timeout = match raw.hook_timeout {
            Some(t) if t.get_ref().0.is_zero() => {
                return Err(self.at(t.span(), "hook_timeout", "must be more than zero"));
            }
            Some(t) => t.into_inner().0,
            None => DEFAULT_HOOK_TIMEOUT,
        };
        let spans = JobSpans {
            name: name.span(),
            dir: dir.span(),
        };
        let job = Job {
            name: name.into_inner(),
            source: resolved_source,
            dir: job_dir(dir.into_inner(), base),
            path,
            keyring: raw.keyring.map(|k| base.join(k.into_inner())),
            no_verify: flag(&raw.no_verify),
            filters,
            max: raw.max.map(Spanned::into_inner),
            keep,
            mirrors,
            jobs,
            retries: raw.retries.map_or(DEFAULT_RETRIES, Spanned::into_inner),
            timeout,
            prune: flag(&raw.prune),
            force: flag(&raw.force),
            verify_existing: flag(&raw.verify_existing),
            no_item_download: flag(&raw.no_item_download),
            wait: flag(&raw.wait),
            sign_key: raw.sign_key.map(|k| base.join(k.into_inner())),
            limit_rate: raw.limit_rate.map(|r| r.into_inner().0),
            delete_delay: raw.delete_delay.map(|d| d.into_inner().0),
            min_free: raw.min_free.map(|m| m.into_inner().0),
            content_index: raw
                .content_index
                .map(|d| normalize(&base.join(d.into_inner()))),
            on_success,
            on_failure,
            hook_timeout,
        };
        Ok((job, spans))
    }

    fn hook(
        &self,
        value: Option<Spanned<String>>,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        match value {
            Some(c) if c.get_ref().trim().is_empty() => {
                Err(self.at(c.span(), key, "empty command"))
            }
            Some(c) => Ok(Some(c.into_inner())),
            None => Ok(None),
        }
    }

    fn check_names(&self, jobs: &[(Job, JobSpans)]) -> Result<(), ConfigError> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (job, spans) in jobs {
            let line = self.line(spans.name.start);
            if let Some(first) = seen.insert(&job.name, line) {
                return Err(self.at(
                    spans.name.clone(),
                    "name",
                    &format!("duplicate job name {:?} (first at line {first})", job.name),
                ));
            }
        }
        Ok(())
    }

    /// Two jobs may share a directory only when they mirror the same source
    /// (e.g. with other filters): a mirror's state belongs to one stream.
    fn check_dirs(&self, jobs: &[(Job, JobSpans)]) -> Result<(), ConfigError> {
        let mut owners: BTreeMap<&Path, (&Job, usize)> = BTreeMap::new();
        for (job, spans) in jobs {
            let line = self.line(spans.dir.start);
            match owners.get(job.dir.as_path()) {
                Some((other, _)) if same_source(other, job) => {}
                Some((other, other_line)) => {
                    return Err(self.at(
                        spans.dir.clone(),
                        "dir",
                        &format!(
                            "{} is also the dir of job {:?} (line {other_line}), which mirrors \
                             another source ({} vs {}): a mirror directory holds one source",
                            job.dir.display(),
                            other.name,
                            other.source,
                            job.source
                        ),
                    ));
                }
                None => {
                    owners.insert(&job.dir, (job, line));
                }
            }
        }
        Ok(())
    }
}

/// Where a job's name and dir were written.
struct JobSpans {
    name: Range<usize>,
    dir: Range<usize>,
}

fn flag(value: &Option<Spanned<bool>>) -> bool {
    value.as_ref().is_some_and(|v| *v.get_ref())
}

/// A source directory relative to the configuration's directory becomes
/// absolute; URLs stay as written.
fn resolve_source(source: &str, base: &Path) -> String {
    if source.contains("://") {
        source.to_owned()
    } else {
        normalize(&base.join(source)).display().to_string()
    }
}

fn same_source(a: &Job, b: &Job) -> bool {
    a.source.trim_end_matches('/') == b.source.trim_end_matches('/') && a.path == b.path
}

/// `path` with `.` and `..` components resolved lexically and no trailing
/// separator, so that two spellings of one directory compare equal.
/// A job's `dir`: a bucket URL (without a trailing `/`), or a path
/// relative to the config file's directory.
fn job_dir(dir: PathBuf, base: &Path) -> PathBuf {
    if crate::target::is_bucket(&dir) {
        PathBuf::from(dir.to_string_lossy().trim_end_matches('/'))
    } else {
        normalize(&base.join(dir))
    }
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The field of serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(field, _)| field)
}

/// ", expected one of ..." from serde's message, as a hint.
fn known_keys_hint(message: &str) -> String {
    match message.split_once(", expected ") {
        Some((_, keys)) => format!(" (known keys: {})", keys.trim_start_matches("one of ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/sstream/sstream.toml"))
    }

    fn err(text: &str) -> ConfigError {
        parse(text).expect_err("config should be refused")
    }

    const GOOD: &str = r#"
[defaults]
keyring = "/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg"
max = 1
content_index = "content"

[[job]]
name = "maas-stable"
source = "https://images.maas.io/ephemeral-v3/stable/"
dir = "/var/www/html/maas/images/ephemeral-v3/stable"
filters = [["arch=amd64", "release~(trusty|xenial)"], ["os~(grub*|pxelinux)"]]

[[job]]
name = "candidate"
source = "https://images.maas.io/ephemeral-v3/candidate/"
dir = "mirrors/candidate/"
filters = ["arch=amd64"]
max = 2
keep = true
timeout = "2m"
limit_rate = "20M"
min_free = 1073741824
delete_delay = "1d"
on_success = "echo done"
"#;

    #[test]
    fn a_good_config_resolves_defaults_and_paths() {
        let config = parse(GOOD).unwrap();
        let [stable, candidate] = &config.jobs[..] else {
            panic!("two jobs: {:?}", config.jobs);
        };
        assert_eq!(stable.name, "maas-stable");
        assert_eq!(stable.max, Some(1), "inherited");
        assert_eq!(
            stable.keyring.as_deref(),
            Some(Path::new(
                "/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg"
            ))
        );
        assert_eq!(stable.filters.groups().len(), 2);
        assert_eq!(
            stable.filters.to_string(),
            r#"["arch=amd64", "release~(trusty|xenial)"] | ["os~(grub*|pxelinux)"]"#
        );
        assert_eq!(stable.jobs, DEFAULT_JOBS);
        assert_eq!(stable.timeout, DEFAULT_TIMEOUT);
        assert_eq!(candidate.max, Some(2), "the job's own value wins");
        assert!(candidate.keep);
        assert_eq!(candidate.dir, Path::new("/etc/sstream/mirrors/candidate"));
        assert_eq!(
            candidate.filters.groups().len(),
            1,
            "a flat list is one group"
        );
        assert_eq!(candidate.timeout, Duration::from_secs(120));
        assert_eq!(candidate.limit_rate, Some(20 << 20));
        assert_eq!(candidate.min_free, Some(1 << 30));
        assert_eq!(candidate.delete_delay, Some(Duration::from_secs(86400)));
        assert_eq!(
            candidate.content_index.as_deref(),
            Some(Path::new("/etc/sstream/content")),
            "inherited, relative to the file"
        );
        assert_eq!(candidate.on_success.as_deref(), Some("echo done"));
        assert_eq!(candidate.on_failure, None);
        let names: Vec<&str> = config
            .select(&["candidate".into()])
            .unwrap()
            .iter()
            .map(|j| j.name.as_str())
            .collect();
        assert_eq!(names, ["candidate"]);
        let e = config.select(&["nope".into()]).unwrap_err().to_string();
        assert!(
            e.contains("no job named \"nope\" (jobs: maas-stable, candidate)"),
            "{e}"
        );
    }

    /// Each bad config: (text, line, key, part of the message).
    #[test]
    fn bad_configs_name_file_line_and_key() {
        let job = "[[job]]\nname = \"a\"\nsource = \"http://h/s/\"\ndir = \"/m/a\"\n";
        let cases: Vec<(String, Option<usize>, Option<&str>, &str)> = vec![
            (
                format!("{job}kep = true\n"),
                Some(5),
                None,
                "unknown key \"kep\"",
            ),
            (
                format!("{job}max = \"one\"\n"),
                Some(5),
                Some("max"),
                "invalid type",
            ),
            (
                format!("{job}max = -1\n"),
                Some(5),
                Some("max"),
                "invalid value",
            ),
            (
                format!("{job}prune = 1\n"),
                Some(5),
                Some("prune"),
                "expected a boolean",
            ),
            (
                format!("{job}filters = [\"arch\"]\n"),
                Some(5),
                Some("filters"),
                "invalid filter \"arch\"",
            ),
            (
                format!("{job}filters = [\"a=1\", [\"b=2\"]]\n"),
                Some(5),
                Some("filters"),
                "mixes filters and groups",
            ),
            (
                format!("{job}filters = [1]\n"),
                Some(5),
                Some("filters"),
                "a filter string or a list",
            ),
            (
                format!("{job}keep = true\n"),
                Some(5),
                Some("keep"),
                "keep needs max",
            ),
            (
                format!("{job}jobs = 0\n"),
                Some(5),
                Some("jobs"),
                "at least 1",
            ),
            (
                format!("{job}timeout = \"soon\"\n"),
                Some(5),
                Some("timeout"),
                "bad duration",
            ),
            (
                format!("{job}limit_rate = \"fast\"\n"),
                Some(5),
                Some("limit_rate"),
                "bad size",
            ),
            (
                format!("{job}on_success = \" \"\n"),
                Some(5),
                Some("on_success"),
                "empty command",
            ),
            (
                format!("{job}hook_timeout = 0\n"),
                Some(5),
                Some("hook_timeout"),
                "must be more than zero",
            ),
            (
                format!("{job}source2 = 1\n"),
                Some(5),
                None,
                "unknown key \"source2\"",
            ),
            (
                format!("{job}mirrors = [\"ftp://x/\"]\n"),
                Some(5),
                Some("mirrors"),
                "unsupported scheme",
            ),
            (
                format!("{job}{job}"),
                Some(6),
                Some("name"),
                "duplicate job name \"a\" (first at line 2)",
            ),
            (
                format!(
                    "{job}[[job]]\nname = \"b\"\nsource = \"http://other/s/\"\ndir = \"/m/a/\"\n"
                ),
                Some(8),
                Some("dir"),
                "also the dir of job \"a\" (line 4), which mirrors another source",
            ),
            (
                "[[job]]\nname = \"a\"\ndir = \"/m\"\n".into(),
                Some(1),
                Some("source"),
                "missing",
            ),
            (
                "[[job]]\nname = \"a/b\"\nsource = \"http://h/\"\ndir = \"/m\"\n".into(),
                Some(2),
                Some("name"),
                "job name",
            ),
            (
                "[defaults]\nname = \"x\"\n".into(),
                Some(2),
                Some("name"),
                "cannot be inherited",
            ),
            ("[defaults]\nmax = 1\n".into(), None, None, "no [[job]]"),
            (
                "[job]\nname = \"a\"\n".into(),
                Some(1),
                Some("job"),
                "[[job]]",
            ),
            (
                "[[job]\nname = 1\n".into(),
                Some(1),
                Some("job"),
                "unclosed array table",
            ),
            (
                format!("{job}name = \"again\"\n"),
                Some(5),
                Some("name"),
                "duplicate key",
            ),
            ("[jobs]\n".into(), Some(1), None, "unknown key \"jobs\""),
        ];
        for (text, line, key, want) in cases {
            let e = err(&text);
            let shown = e.to_string();
            eprintln!("{shown}");
            assert_eq!(e.file, Path::new("/etc/sstream/sstream.toml"), "{shown}");
            assert_eq!(e.line, line, "{text}\n=> {shown}");
            assert_eq!(e.key.as_deref(), key, "{text}\n=> {shown}");
            assert!(shown.contains(want), "{text}\n=> {shown}\nwanted: {want}");
            assert!(!shown.contains('\n'), "one line: {shown}");
            assert!(shown.starts_with("/etc/sstream/sstream.toml"), "{shown}");
        }
    }

    #[test]
    fn a_job_table_for_an_array_of_tables_gets_a_hint() {
        let text = "[job]\nname = \"b\"\nsource = \"http://h/s/\"\ndir = \"/m\"\n";
        let e = err(text).to_string();
        assert!(e.contains("write each job as [[job]]"), "{e}");
        let text = "[[job]]\nname = \"b\"\nsource = \"http://h/s/\"\ndir = 3\n";
        let e = err(text).to_string();
        assert!(!e.contains("[[job]]"), "{e}");
    }

    #[test]
    fn same_dir_same_source_is_allowed() {
        let text = "[[job]]\nname = \"images\"\nsource = \"http://h/s/\"\ndir = \"/m\"\nfilters = [\"arch=amd64\"]\n\
                    [[job]]\nname = \"bootloaders\"\nsource = \"http://h/s\"\ndir = \"/m/./\"\nfilters = [\"os~grub\"]\n";
        assert_eq!(parse(text).unwrap().jobs.len(), 2);
    }

    #[test]
    fn bucket_dirs_are_kept_as_urls() {
        let text =
            "[[job]]\nname = \"b\"\nsource = \"http://h/s/\"\ndir = \"s3://maas-images/stable/\"\n";
        let config = parse(text).unwrap();
        assert_eq!(config.jobs[0].dir, Path::new("s3://maas-images/stable"));
        let text = "[[job]]\nname = \"b\"\nsource = \"http://h/s/\"\ndir = \"s3://bad bucket/x\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("dir") && err.contains("bucket"), "{err}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("512K").unwrap(), 512 << 10);
        assert_eq!(parse_size("20M").unwrap(), 20 << 20);
        assert_eq!(parse_size("20mb").unwrap(), 20 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("2TiB").unwrap(), 2 << 40);
        for bad in ["", "M", "1X", "-1K", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("2d").unwrap(),
            Duration::from_secs(2 * 86400)
        );
        assert_eq!(parse_duration("2h 30m").unwrap(), Duration::from_secs(9000));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn defaults_match_sstream_mirror() {
        use clap::{Args, FromArgMatches};
        let cmd = crate::mirror::MirrorArgs::augment_args(clap::Command::new("m"));
        let m = cmd
            .try_get_matches_from(["m", "http://h/", "/tmp/x"])
            .unwrap();
        let args = crate::mirror::MirrorArgs::from_arg_matches(&m).unwrap();
        assert_eq!(args.jobs, DEFAULT_JOBS);
        assert_eq!(args.retries, DEFAULT_RETRIES);
        assert_eq!(Duration::from_secs_f64(args.timeout), DEFAULT_TIMEOUT);
    }
}
