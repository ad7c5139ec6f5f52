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
//! Every option of `sstream mirror` has a key: the fields of
//! [`JobOptions`], read through the same parsers and checks as the flags
//! (`mirrors` is `--mirror`, repeated). Besides them a job has `name`,
//! `source`, `dir`, `filters` (a list of groups, or a flat list: one
//! group), the hooks `on_success` and `on_failure` and their
//! `hook_timeout`. Relative paths (`dir`, `keyring`, `sign_key`,
//! `content_index`, a source directory) are relative to the directory of
//! the configuration file.
//!
//! `[[view]]` tables (see [`View`]) name a directory that publishes one
//! snapshot of a job's mirror:
//!
//! ```toml
//! [[view]]
//! name = "staging"           # names the view in status, metrics, `sstream promote`
//! dir = "/var/www/html/maas/views/staging"
//! job = "maas-stable"        # the [[job]] whose mirror it shows
//! snapshot = "latest"        # follows each new snapshot; "promoted" (default): moves on promote
//! ```
//!
//! [`Config::load`] checks everything it can without touching the network
//! or the mirrors; each problem is a [`ConfigError`] naming the file, the
//! line and the key. Directories are compared with their symlinks
//! resolved: two jobs of different sources cannot share a mirror
//! directory under two names, nor a content index lie in a mirror.

use crate::job::{DEFAULT_DELETE_DELAY, Delay, JobOptions, MirrorJob, Timeout};
use crate::sign::PassphraseArgs;
use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
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

/// How long a hook may run without `hook_timeout`.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(600);

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
    /// The mirror directory (absolute), or a bucket URL.
    pub dir: PathBuf,
    /// The filter groups (a flat list in the file is one group).
    pub filters: FilterGroups,
    /// The options of `sstream mirror`, their paths absolute.
    pub options: JobOptions,
    /// Shell command run after a successful run.
    pub on_success: Option<String>,
    /// Shell command run after a failed run.
    pub on_failure: Option<String>,
    /// How long a hook may run before it (and every process it started)
    /// is killed (`hook_timeout`; 10 minutes unless given).
    pub hook_timeout: Duration,
}

impl Job {
    /// The mirror job this config job runs (as `sstream mirror` would with
    /// the same options).
    pub fn mirror_job(&self) -> MirrorJob {
        MirrorJob {
            source: self.source.clone(),
            dir: self.dir.clone(),
            filters: self.filters.clone(),
            options: self.options.clone(),
            default_delete_delay: DEFAULT_DELETE_DELAY,
            plain_twins: true,
            passphrase: PassphraseArgs::default(),
        }
    }
}

/// A loaded configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// Its jobs, in file order.
    pub jobs: Vec<Job>,
    /// Its views, in file order.
    pub views: Vec<View>,
}

/// What a view shows, the `snapshot` key of a `[[view]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follows {
    /// `"latest"`: a staging view. Each `sstream sync` that changed the
    /// job's mirror snapshots it and publishes the new snapshot here.
    Latest,
    /// `"promoted"` (the default): the first sync publishes the mirror's
    /// newest snapshot; from then on the view moves only on
    /// `sstream promote` and `sstream rollback`.
    Promoted,
    /// A snapshot's name: the first sync publishes that snapshot (and
    /// fails while it does not exist); from then on the view moves only on
    /// `sstream promote` and `sstream rollback`, as a promoted one. Sync
    /// never prunes the snapshot.
    Pinned(String),
}

impl Follows {
    /// The value as written in the config.
    pub fn as_str(&self) -> &str {
        match self {
            Follows::Latest => LATEST,
            Follows::Promoted => PROMOTED,
            Follows::Pinned(name) => name,
        }
    }
}

/// The `snapshot` of a staging view.
pub const LATEST: &str = "latest";
/// The `snapshot` of a view that moves only on promote (the default).
pub const PROMOTED: &str = "promoted";

/// How many snapshots of a mirror `sstream sync` keeps without
/// `keep_snapshots`.
pub const DEFAULT_KEEP_SNAPSHOTS: usize = 10;

/// A `[[view]]` of the configuration, checked: a directory publishing one
/// snapshot of a job's mirror.
#[derive(Debug, Clone)]
pub struct View {
    /// The view's name (the rules of a job's name).
    pub name: String,
    /// The view directory (absolute; not in a mirror, no mirror in it).
    pub dir: PathBuf,
    /// The job whose mirror the view shows.
    pub job: String,
    /// That job's mirror directory.
    pub mirror: PathBuf,
    /// What the view shows.
    pub follows: Follows,
    /// The key the view's metadata is signed with (without one: plain
    /// `.json` documents).
    pub sign_key: Option<PathBuf>,
    /// The filters narrowing the snapshot's items in the view (one group:
    /// an item is shown when it matches them all), each checked.
    pub filters: Vec<String>,
    /// How many snapshots of the mirror sync keeps (the largest of its
    /// views' values), besides those a view shows or would roll back to.
    pub keep_snapshots: usize,
    /// How long the files a view stopped listing stay for clients that
    /// read its previous metadata (default: its job's `delete_delay`).
    pub delete_delay: Duration,
    /// The URL clients reach the view by, for the MAAS command `sstream
    /// status` prints (default: a placeholder).
    pub url: Option<String>,
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
        let ctx = Context::new(text, file);
        let top: BTreeMap<String, Spanned<toml::Value>> =
            toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
        if let Some((key, value)) = top.iter().find(|(k, _)| !TOP_KEYS.contains(&k.as_str())) {
            return Err(ctx.unknown_key(key, value.span(), &TOP_KEYS.map(String::from)));
        }
        let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = std::path::absolute(&base).unwrap_or(base);
        let defaults = raw.defaults.map(Spanned::into_inner).unwrap_or_default();
        if let Some(name) = defaults.get("name") {
            return Err(ctx.at(
                name.span(),
                "name",
                "a job's name cannot be inherited: give it in each [[job]]",
            ));
        }
        if raw.job.is_empty() {
            return Err(ctx.error(None, None, "no [[job]] table: nothing to mirror"));
        }
        let jobs = raw
            .job
            .into_iter()
            .map(|table| {
                let span = table.span();
                ctx.resolve(merged(table.into_inner(), &defaults), span, &base)
            })
            .collect::<Result<Vec<_>, _>>()?;
        ctx.check_names(&jobs)?;
        let dirs = ctx.check_dirs(&jobs)?;
        ctx.check_content_indexes(&jobs, &dirs)?;
        let jobs: Vec<Job> = jobs.into_iter().map(|(job, _)| job).collect();
        let views = raw
            .view
            .into_iter()
            .map(|table| {
                let span = table.span();
                ctx.resolve_view(table.into_inner(), span, &base, &jobs)
            })
            .collect::<Result<Vec<_>, _>>()?;
        ctx.check_views(&views, &jobs)?;
        Ok(Config {
            file: file.to_path_buf(),
            jobs,
            views: views.into_iter().map(|(view, _)| view).collect(),
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

/// A `[[job]]` or the `[defaults]` table as written: each key's value with
/// where it was written.
type Table = BTreeMap<String, Spanned<toml::Value>>;

/// The tables of the file: `[defaults]`, `[[job]]` and `[[view]]`.
const TOP_KEYS: [&str; 3] = ["defaults", "job", "view"];

/// The file as written (its keys checked first: see [`TOP_KEYS`]).
#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    defaults: Option<Spanned<Table>>,
    #[serde(default)]
    job: Vec<Spanned<Table>>,
    #[serde(default)]
    view: Vec<Spanned<Table>>,
}

/// This job's table with every key it does not give taken from `defaults`.
fn merged(job: Table, defaults: &Table) -> Table {
    let mut table = defaults.clone();
    table.extend(job);
    table
}

/// The keys of a job besides its [`JobOptions`].
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct JobKeys {
    name: Option<String>,
    source: Option<String>,
    dir: Option<PathBuf>,
    filters: Option<RawFilters>,
    on_success: Option<String>,
    on_failure: Option<String>,
    hook_timeout: Option<Timeout>,
}

/// The fields of [`JobKeys`].
const JOB_KEYS: [&str; 7] = [
    "name",
    "source",
    "dir",
    "filters",
    "on_success",
    "on_failure",
    "hook_timeout",
];

/// The keys of a `[[view]]` (see [`View`]).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ViewKeys {
    name: Option<String>,
    dir: Option<PathBuf>,
    job: Option<String>,
    snapshot: Option<String>,
    sign_key: Option<PathBuf>,
    filters: Option<RawFilters>,
    keep_snapshots: Option<usize>,
    delete_delay: Option<Delay>,
    url: Option<String>,
}

/// The fields of [`ViewKeys`].
pub const VIEW_KEYS: [&str; 9] = [
    "name",
    "dir",
    "job",
    "snapshot",
    "sign_key",
    "filters",
    "keep_snapshots",
    "delete_delay",
    "url",
];

/// A value of a table that could not be read, and its key.
#[derive(Debug)]
struct KeyedError {
    key: Option<String>,
    message: String,
}

impl fmt::Display for KeyedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KeyedError {}

impl de::Error for KeyedError {
    fn custom<T: fmt::Display>(message: T) -> KeyedError {
        KeyedError {
            key: None,
            message: message.to_string(),
        }
    }
}

/// Deserializes `T` from the entries of a table, each error naming the
/// key it is about.
fn from_entries<T: for<'de> Deserialize<'de>>(
    entries: Vec<(String, toml::Value)>,
) -> Result<T, KeyedError> {
    T::deserialize(EntriesDeserializer(entries.into_iter()))
}

struct EntriesDeserializer(std::vec::IntoIter<(String, toml::Value)>);

impl<'de> Deserializer<'de> for EntriesDeserializer {
    type Error = KeyedError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyedError> {
        visitor.visit_map(EntriesAccess {
            entries: self.0,
            value: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct EntriesAccess {
    entries: std::vec::IntoIter<(String, toml::Value)>,
    value: Option<(String, toml::Value)>,
}

impl<'de> MapAccess<'de> for EntriesAccess {
    type Error = KeyedError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, KeyedError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let deserializer: de::value::StringDeserializer<KeyedError> =
            key.clone().into_deserializer();
        let k = seed.deserialize(deserializer).map_err(|e| KeyedError {
            key: Some(key.clone()),
            message: e.message,
        })?;
        self.value = Some((key, value));
        Ok(Some(k))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, KeyedError> {
        let (key, value) = self
            .value
            .take()
            .ok_or_else(|| <KeyedError as de::Error>::custom("a value without its key"))?;
        seed.deserialize(value).map_err(|e| KeyedError {
            key: Some(key),
            message: e.message().to_owned(),
        })
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

/// The file being checked, for errors.
struct Context<'a> {
    text: &'a str,
    file: &'a Path,
    /// Where each line starts: a line is found by a binary search, not by
    /// counting the lines before it (a config of many jobs stays linear).
    line_starts: Vec<usize>,
    /// Every key a `[[job]]` may have (its own and its options'), found once.
    job_keys: Vec<String>,
}

impl<'a> Context<'a> {
    fn new(text: &'a str, file: &'a Path) -> Context<'a> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let mut job_keys: Vec<String> = JOB_KEYS.iter().map(|k| k.to_string()).collect();
        job_keys.extend(JobOptions::keys());
        Context {
            text,
            file,
            line_starts,
            job_keys,
        }
    }

    /// The line (1-based) of byte `offset`.
    fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
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
        let message = if key.as_deref() == Some("job") && self.job_is_not_an_array() {
            format!("{message}; write each job as [[job]] (an array of tables)")
        } else {
            message
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

    /// Checks one merged job and resolves it; also returns where its keys
    /// were written, for the checks across jobs.
    fn resolve(
        &self,
        table: Table,
        span: Range<usize>,
        base: &Path,
    ) -> Result<(Job, JobSpans), ConfigError> {
        let table_line = self.line(span.start);
        let spans: BTreeMap<String, Range<usize>> =
            table.iter().map(|(k, v)| (k.clone(), v.span())).collect();
        let at_key = |key: &str, message: &str| match spans.get(key) {
            Some(span) => self.at(span.clone(), key, message),
            None => self.error(Some(table_line), Some(key), message),
        };
        if let Some((key, value)) = table.iter().find(|(k, _)| !self.job_keys.contains(*k)) {
            return Err(self.unknown_key(key, value.span(), &self.job_keys));
        }
        let (own, options): (Vec<_>, Vec<_>) = table
            .into_iter()
            .map(|(k, v)| (k, v.into_inner()))
            .partition(|(k, _)| JOB_KEYS.contains(&k.as_str()));
        let keys: JobKeys = from_entries(own).map_err(|e| self.key_error(e, &spans))?;
        let mut options: JobOptions =
            from_entries(options).map_err(|e| self.key_error(e, &spans))?;
        options
            .validate(str::to_owned)
            .map_err(|e| at_key(e.key, &e.message))?;
        let missing = |key: &str| {
            self.error(
                Some(table_line),
                Some(key),
                "missing in this [[job]] (and not in [defaults])",
            )
        };
        let name = keys.name.ok_or_else(|| missing("name"))?;
        simplestreams::status::check_job_name(&name).map_err(|e| at_key("name", &e.to_string()))?;
        let source = keys.source.ok_or_else(|| missing("source"))?;
        let dir = keys.dir.ok_or_else(|| missing("dir"))?;
        if dir.as_os_str().is_empty() {
            return Err(at_key("dir", "empty directory"));
        }
        if crate::target::is_bucket(&dir) {
            simplestreams::store::S3Target::parse(&dir.to_string_lossy())
                .map_err(|e| at_key("dir", &e.to_string()))?;
        }
        let source = resolve_source(&source, base);
        split_source(&source, options.path.as_deref())
            .map_err(|e| at_key("source", &e.to_string()))?;
        for url in &options.mirrors {
            source_url(url).map_err(|e| at_key("mirrors", &e.to_string()))?;
        }
        let filters = match keys.filters {
            Some(f) => FilterGroups::parse(&f.0).map_err(|e| at_key("filters", &e.to_string()))?,
            None => FilterGroups::default(),
        };
        let hook = |command: Option<String>, key: &str| match command {
            Some(c) if c.trim().is_empty() => Err(at_key(key, "empty command")),
            other => Ok(other),
        };
        let on_success = hook(keys.on_success, "on_success")?;
        let on_failure = hook(keys.on_failure, "on_failure")?;
        options.keyring = options.keyring.map(|k| base.join(k));
        options.sign_key = options.sign_key.map(|k| base.join(k));
        options.content_index = options.content_index.map(|d| normalize(&base.join(d)));
        let job_spans = JobSpans {
            name: spans.get("name").cloned().unwrap_or(span.clone()),
            dir: spans.get("dir").cloned().unwrap_or(span.clone()),
            content_index: spans.get("content_index").cloned().unwrap_or(span),
        };
        let job = Job {
            name,
            source,
            dir: job_dir(dir, base),
            filters,
            options,
            on_success,
            on_failure,
            hook_timeout: keys.hook_timeout.map_or(DEFAULT_HOOK_TIMEOUT, Timeout::get),
        };
        Ok((job, job_spans))
    }

    /// An unknown `key` written at `span`, with the keys there are.
    fn unknown_key(&self, key: &str, span: Range<usize>, known: &[String]) -> ConfigError {
        let message = format!("unknown key {key:?} (known keys: {})", known.join(", "));
        self.error(Some(self.line(span.start)), None, &message)
    }

    /// A value of a job that could not be read: on the line of its key.
    fn key_error(&self, e: KeyedError, spans: &BTreeMap<String, Range<usize>>) -> ConfigError {
        let line = e
            .key
            .as_ref()
            .and_then(|k| spans.get(k))
            .map(|s| self.line(s.start));
        let message = e
            .message
            .replace("expected usize", "expected a whole number")
            .replace("expected u32", "expected a whole number");
        self.error(line, e.key.as_deref(), &message)
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
    /// Directories are compared with their symlinks resolved. Gives each
    /// mirror directory (resolved) and the job that owns it.
    fn check_dirs<'j>(
        &self,
        jobs: &'j [(Job, JobSpans)],
    ) -> Result<BTreeMap<PathBuf, (&'j Job, usize)>, ConfigError> {
        let mut owners: BTreeMap<PathBuf, (&Job, usize)> = BTreeMap::new();
        for (job, spans) in jobs {
            if crate::target::is_bucket(&job.dir) {
                continue;
            }
            let line = self.line(spans.dir.start);
            let real = resolved(&job.dir);
            match owners.get(&real) {
                Some((other, _)) if same_source(other, job) => {}
                Some((other, other_line)) => {
                    let through = if other.dir == job.dir {
                        String::new()
                    } else {
                        format!(" (as {}, through a symlink)", other.dir.display())
                    };
                    return Err(self.at(
                        spans.dir.clone(),
                        "dir",
                        &format!(
                            "{} is also the dir of job {:?} (line {other_line}){through}, which \
                             mirrors another source ({} vs {}): a mirror directory holds one source",
                            job.dir.display(),
                            other.name,
                            other.source,
                            job.source
                        ),
                    ));
                }
                None => {
                    owners.insert(real, (job, line));
                }
            }
        }
        Ok(owners)
    }

    /// A content index holds hard links of its own: it cannot lie in a
    /// mirror directory (symlinks resolved), where it would be published
    /// and pruned as part of the mirror.
    fn check_content_indexes(
        &self,
        jobs: &[(Job, JobSpans)],
        dirs: &BTreeMap<PathBuf, (&Job, usize)>,
    ) -> Result<(), ConfigError> {
        let mut checked = std::collections::BTreeSet::new();
        for (job, spans) in jobs {
            let Some(index) = &job.options.content_index else {
                continue;
            };
            if !checked.insert(index) {
                continue;
            }
            let real = resolved(index);
            if let Some((owner, _)) = real.ancestors().find_map(|a| dirs.get(a)) {
                return Err(self.at(
                    spans.content_index.clone(),
                    "content_index",
                    &format!(
                        "{} is inside the mirror directory {} of job {:?}: give a directory \
                         beside the mirrors, not in one",
                        index.display(),
                        owner.dir.display(),
                        owner.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Context<'_> {
    /// Checks one `[[view]]` and resolves it against the jobs; also
    /// returns where its keys were written, for the checks across views.
    fn resolve_view(
        &self,
        table: Table,
        span: Range<usize>,
        base: &Path,
        jobs: &[Job],
    ) -> Result<(View, ViewSpans), ConfigError> {
        let table_line = self.line(span.start);
        let spans: BTreeMap<String, Range<usize>> =
            table.iter().map(|(k, v)| (k.clone(), v.span())).collect();
        let at_key = |key: &str, message: &str| match spans.get(key) {
            Some(span) => self.at(span.clone(), key, message),
            None => self.error(Some(table_line), Some(key), message),
        };
        let known: Vec<String> = VIEW_KEYS.map(String::from).to_vec();
        if let Some((key, value)) = table.iter().find(|(k, _)| !known.contains(*k)) {
            return Err(self.unknown_key(key, value.span(), &known));
        }
        let entries = table
            .into_iter()
            .map(|(k, v)| (k, v.into_inner()))
            .collect();
        let keys: ViewKeys = from_entries(entries).map_err(|e| self.key_error(e, &spans))?;
        let missing =
            |key: &str| self.error(Some(table_line), Some(key), "missing in this [[view]]");
        let name = keys.name.ok_or_else(|| missing("name"))?;
        simplestreams::status::check_job_name(&name)
            .map_err(|e| at_key("name", &e.to_string().replace("a job name", "a view name")))?;
        let job_name = keys.job.ok_or_else(|| missing("job"))?;
        let Some(job) = jobs.iter().find(|j| j.name == job_name) else {
            let known: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
            return Err(at_key(
                "job",
                &format!("no job named {job_name:?} (jobs: {})", known.join(", ")),
            ));
        };
        if crate::target::is_bucket(&job.dir) {
            return Err(at_key(
                "job",
                &format!(
                    "job {job_name:?} mirrors into a bucket ({}): views are made of a mirror \
                     directory's files; a bucket's mirror has no views",
                    job.dir.display()
                ),
            ));
        }
        let dir = keys.dir.ok_or_else(|| missing("dir"))?;
        if dir.as_os_str().is_empty() {
            return Err(at_key("dir", "empty directory"));
        }
        if crate::target::is_bucket(&dir) {
            return Err(at_key("dir", "a view is a directory, not a bucket"));
        }
        let follows = match keys.snapshot.as_deref() {
            None | Some(PROMOTED) => Follows::Promoted,
            Some(LATEST) => Follows::Latest,
            Some(name) => {
                simplestreams::snapshot::check_name(name).map_err(|m| {
                    at_key(
                        "snapshot",
                        &format!("{name:?}: \"latest\", \"promoted\" or a snapshot's name: {m}"),
                    )
                })?;
                Follows::Pinned(name.to_owned())
            }
        };
        let filters = match keys.filters.map(|f| f.0) {
            None => Vec::new(),
            Some(groups) if groups.len() > 1 => {
                return Err(at_key(
                    "filters",
                    "a view takes one group of filters (a flat list: an item is shown when it \
                     matches them all), not groups",
                ));
            }
            Some(groups) => {
                let group = groups.into_iter().next().unwrap_or_default();
                simplestreams::filter::FilterSet::parse(&group)
                    .map_err(|e| at_key("filters", &e.to_string()))?;
                group
            }
        };
        let keep_snapshots = match keys.keep_snapshots {
            Some(0) => {
                return Err(at_key(
                    "keep_snapshots",
                    "must be at least 1 (the snapshot a view shows is always kept)",
                ));
            }
            Some(n) => n,
            None => DEFAULT_KEEP_SNAPSHOTS,
        };
        if let Some(url) = &keys.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(at_key(
                "url",
                &format!("{url:?}: not an http:// or https:// URL"),
            ));
        }
        let view_spans = ViewSpans {
            name: spans.get("name").cloned().unwrap_or(span.clone()),
            dir: spans.get("dir").cloned().unwrap_or(span),
        };
        let view = View {
            name,
            dir: normalize(&base.join(dir)),
            job: job_name,
            mirror: job.dir.clone(),
            follows,
            sign_key: keys.sign_key.map(|k| base.join(k)),
            filters,
            keep_snapshots,
            delete_delay: keys.delete_delay.map_or_else(
                || {
                    job.options
                        .delete_delay
                        .map_or(DEFAULT_DELETE_DELAY, |d| d.0)
                },
                |d| d.0,
            ),
            url: keys.url,
        };
        Ok((view, view_spans))
    }

    /// Views have names of their own, and directories of their own: not
    /// another view's, not a mirror's or in one, holding no mirror
    /// (directories compared with their symlinks resolved).
    fn check_views(&self, views: &[(View, ViewSpans)], jobs: &[Job]) -> Result<(), ConfigError> {
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut dirs: BTreeMap<PathBuf, (&View, usize)> = BTreeMap::new();
        let mirrors: Vec<(PathBuf, &Job)> = jobs
            .iter()
            .filter(|j| !crate::target::is_bucket(&j.dir))
            .map(|j| (resolved(&j.dir), j))
            .collect();
        for (view, spans) in views {
            let line = self.line(spans.name.start);
            if let Some(first) = names.insert(&view.name, line) {
                return Err(self.at(
                    spans.name.clone(),
                    "name",
                    &format!(
                        "duplicate view name {:?} (first at line {first})",
                        view.name
                    ),
                ));
            }
            let real = resolved(&view.dir);
            let dir_error = |message: String| self.at(spans.dir.clone(), "dir", &message);
            if let Some((other, other_line)) = dirs.get(&real) {
                return Err(dir_error(format!(
                    "{} is also the dir of view {:?} (line {other_line}): a directory shows one view",
                    view.dir.display(),
                    other.name
                )));
            }
            for (mirror, job) in &mirrors {
                let problem = if real == *mirror {
                    "is the mirror directory"
                } else if real.starts_with(mirror) {
                    "is inside the mirror directory"
                } else if mirror.starts_with(&real) {
                    "holds the mirror directory"
                } else {
                    continue;
                };
                return Err(dir_error(format!(
                    "{} {problem} {} of job {:?}: give a view a directory beside the mirrors",
                    view.dir.display(),
                    job.dir.display(),
                    job.name
                )));
            }
            dirs.insert(real, (view, self.line(spans.dir.start)));
        }
        Ok(())
    }
}

/// Where a view's keys were written.
struct ViewSpans {
    name: Range<usize>,
    dir: Range<usize>,
}

/// Where a job's keys were written (its table when inherited from nowhere).
struct JobSpans {
    name: Range<usize>,
    dir: Range<usize>,
    content_index: Range<usize>,
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
    a.source.trim_end_matches('/') == b.source.trim_end_matches('/')
        && a.options.path == b.options.path
}

/// A job's `dir`: a bucket URL (without a trailing `/`), or a path
/// relative to the config file's directory.
fn job_dir(dir: PathBuf, base: &Path) -> PathBuf {
    if crate::target::is_bucket(&dir) {
        PathBuf::from(dir.to_string_lossy().trim_end_matches('/'))
    } else {
        normalize(&base.join(dir))
    }
}

/// `path` with `.` and `..` components resolved lexically and no trailing
/// separator, so that two spellings of one directory compare equal.
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

/// The absolute, normalized `path` with the symlinks of the part of it
/// that exists resolved (the rest appended as written): one directory
/// reached through a symlink and by its own name gives one path.
fn resolved(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut existing = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(real, |p, name| p.join(name));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Delay, Rate, Size, parse_duration};

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
        assert_eq!(stable.options.max, Some(1), "inherited");
        assert_eq!(
            stable.options.keyring.as_deref(),
            Some(Path::new(
                "/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg"
            ))
        );
        assert_eq!(stable.filters.groups().len(), 2);
        assert_eq!(
            stable.filters.to_string(),
            r#"["arch=amd64", "release~(trusty|xenial)"] | ["os~(grub*|pxelinux)"]"#
        );
        assert_eq!(stable.options.jobs.get(), 6);
        assert_eq!(stable.options.timeout.get(), Duration::from_secs(60));
        assert_eq!(candidate.options.max, Some(2), "the job's own value wins");
        assert!(candidate.options.keep);
        assert_eq!(candidate.dir, Path::new("/etc/sstream/mirrors/candidate"));
        assert_eq!(
            candidate.filters.groups().len(),
            1,
            "a flat list is one group"
        );
        assert_eq!(candidate.options.timeout.get(), Duration::from_secs(120));
        assert_eq!(candidate.options.limit_rate.map(Rate::get), Some(20 << 20));
        assert_eq!(candidate.options.min_free, Some(Size(1 << 30)));
        assert_eq!(
            candidate.options.delete_delay,
            Some(Delay(Duration::from_secs(86400)))
        );
        assert_eq!(
            candidate.options.content_index.as_deref(),
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

    /// A config of 16,000 jobs parses (each job's lines found without
    /// counting from the start of the file again).
    #[test]
    fn sixteen_thousand_jobs_parse() {
        let text: String = (0..16_000)
            .map(|i| {
                format!("[[job]]\nname = \"j{i}\"\nsource = \"http://h/s/\"\ndir = \"/m/{i}\"\n")
            })
            .collect();
        let config = parse(&text).unwrap();
        assert_eq!(config.jobs.len(), 16_000);
        assert_eq!(config.jobs[15_999].dir, Path::new("/m/15999"));
        let e = err(&format!(
            "{text}[[job]]\nname = \"j7\"\nsource = \"http://h/s/\"\ndir = \"/m/x\"\n"
        ));
        assert_eq!(e.line, Some(64_002), "{e}");
        assert!(e.to_string().contains("first at line 30"), "{e}");
    }

    /// Two spellings of one directory through a symlink are one mirror
    /// directory: jobs of different sources cannot share it.
    #[test]
    fn a_dir_reached_through_a_symlink_is_the_same_dir() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("real")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("real"), tmp.path().join("link")).unwrap();
        let file = tmp.path().join("sstream.toml");
        let text = "[[job]]\nname = \"a\"\nsource = \"http://h/a/\"\ndir = \"real/stable\"\n\
                    [[job]]\nname = \"b\"\nsource = \"http://h/b/\"\ndir = \"link/stable\"\n";
        let e = Config::parse(text, &file).expect_err("one directory, two sources");
        let shown = e.to_string();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(8), Some("dir")),
            "{shown}"
        );
        assert!(
            shown.contains("is also the dir of job \"a\" (line 4)")
                && shown.contains("through a symlink"),
            "{shown}"
        );
        assert!(!shown.contains('\n'), "{shown}");
    }

    /// A content index in a mirror directory, by its name or through a
    /// symlink, is refused.
    #[test]
    fn a_content_index_inside_a_mirror_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("mirrors")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("mirrors"), tmp.path().join("link")).unwrap();
        let file = tmp.path().join("sstream.toml");
        let job = "[[job]]\nname = \"a\"\nsource = \"http://h/a/\"\ndir = \"mirrors/a\"\n";
        for index in ["mirrors/a/.content", "link/a/x/content"] {
            let text = format!("[defaults]\ncontent_index = \"{index}\"\n{job}");
            let e = Config::parse(&text, &file).expect_err(index);
            let shown = e.to_string();
            assert_eq!(e.line, Some(2), "{shown}");
            assert_eq!(e.key.as_deref(), Some("content_index"), "{shown}");
            assert!(
                shown.contains("is inside the mirror directory") && shown.contains("job \"a\""),
                "{shown}"
            );
        }
        let text = format!("[defaults]\ncontent_index = \"link/.content\"\n{job}");
        assert!(Config::parse(&text, &file).is_ok(), "beside the mirror");
    }

    const VIEW_JOBS: &str = "[[job]]\nname = \"a\"\nsource = \"http://h/s/\"\ndir = \"/m/a\"\n\
                             delete_delay = \"2h\"\n\
                             [[job]]\nname = \"b\"\nsource = \"http://h/s/\"\ndir = \"s3://bucket/b\"\n";

    #[test]
    fn views_resolve_against_their_jobs() {
        let text = format!(
            "{VIEW_JOBS}[[view]]\nname = \"staging\"\ndir = \"views/staging\"\njob = \"a\"\n\
             snapshot = \"latest\"\nkeep_snapshots = 3\nfilters = [\"arch=amd64\"]\n\
             [[view]]\nname = \"production\"\ndir = \"/srv/production\"\njob = \"a\"\n\
             sign_key = \"key.asc\"\ndelete_delay = \"1d\"\nurl = \"http://maas-mirror:8080/production/\"\n\
             [[view]]\nname = \"old\"\ndir = \"/srv/old\"\njob = \"a\"\nsnapshot = \"20261201T000000Z\"\n"
        );
        let config = parse(&text).unwrap();
        let [staging, production, old] = &config.views[..] else {
            panic!("three views: {:?}", config.views);
        };
        assert_eq!(staging.follows, Follows::Latest);
        assert_eq!(staging.dir, Path::new("/etc/sstream/views/staging"));
        assert_eq!(staging.mirror, Path::new("/m/a"));
        assert_eq!(staging.keep_snapshots, 3);
        assert_eq!(staging.delete_delay, Duration::from_secs(7200), "the job's");
        assert_eq!(staging.filters, ["arch=amd64"]);
        assert_eq!(production.follows, Follows::Promoted, "the default");
        assert_eq!(production.keep_snapshots, DEFAULT_KEEP_SNAPSHOTS);
        assert_eq!(production.delete_delay, Duration::from_secs(86400));
        assert_eq!(
            production.sign_key.as_deref(),
            Some(Path::new("/etc/sstream/key.asc"))
        );
        assert_eq!(old.follows, Follows::Pinned("20261201T000000Z".into()));
    }

    /// Each bad view: (its table, line, key, part of the message).
    #[test]
    fn bad_views_name_file_line_and_key() {
        let view = |rest: &str| {
            format!("{VIEW_JOBS}[[view]]\nname = \"v\"\njob = \"a\"\ndir = \"/srv/v\"\n{rest}")
        };
        let cases: Vec<(String, Option<usize>, Option<&str>, &str)> = vec![
            (
                view("snapshots = 1\n"),
                Some(14),
                None,
                "unknown key \"snapshots\"",
            ),
            (
                format!("{VIEW_JOBS}[[view]]\nname = \"v\"\njob = \"c\"\ndir = \"/srv/v\"\n"),
                Some(12),
                Some("job"),
                "no job named \"c\" (jobs: a, b)",
            ),
            (
                format!("{VIEW_JOBS}[[view]]\nname = \"v\"\njob = \"b\"\ndir = \"/srv/v\"\n"),
                Some(12),
                Some("job"),
                "mirrors into a bucket",
            ),
            (
                format!("{VIEW_JOBS}[[view]]\nname = \"v\"\njob = \"a\"\ndir = \"/m/a\"\n"),
                Some(13),
                Some("dir"),
                "/m/a is the mirror directory /m/a of job \"a\"",
            ),
            (
                format!("{VIEW_JOBS}[[view]]\nname = \"v\"\njob = \"a\"\ndir = \"/m/a/views/v\"\n"),
                Some(13),
                Some("dir"),
                "is inside the mirror directory /m/a",
            ),
            (
                format!("{VIEW_JOBS}[[view]]\nname = \"v\"\njob = \"a\"\ndir = \"/m\"\n"),
                Some(13),
                Some("dir"),
                "holds the mirror directory /m/a",
            ),
            (
                format!(
                    "{}[[view]]\nname = \"w\"\njob = \"a\"\ndir = \"/srv/./v/\"\n",
                    view("")
                ),
                Some(17),
                Some("dir"),
                "is also the dir of view \"v\" (line 13)",
            ),
            (
                format!(
                    "{}[[view]]\nname = \"v\"\njob = \"a\"\ndir = \"/srv/w\"\n",
                    view("")
                ),
                Some(15),
                Some("name"),
                "duplicate view name \"v\" (first at line 11)",
            ),
            (
                view("snapshot = \"../x\"\n"),
                Some(14),
                Some("snapshot"),
                "a snapshot's name",
            ),
            (
                view("keep_snapshots = 0\n"),
                Some(14),
                Some("keep_snapshots"),
                "at least 1",
            ),
            (
                view("keep_snapshots = -2\n"),
                Some(14),
                Some("keep_snapshots"),
                "invalid value",
            ),
            (
                view("delete_delay = \"soon\"\n"),
                Some(14),
                Some("delete_delay"),
                "bad duration",
            ),
            (
                view("filters = [\"arch\"]\n"),
                Some(14),
                Some("filters"),
                "invalid filter",
            ),
            (
                view("url = \"maas:8080\"\n"),
                Some(14),
                Some("url"),
                "not an http",
            ),
            (
                format!("{VIEW_JOBS}[[view]]\nname = \"v\"\njob = \"a\"\n"),
                Some(10),
                Some("dir"),
                "missing in this [[view]]",
            ),
            (
                format!("{VIEW_JOBS}[[view]]\nname = \"v w\"\njob = \"a\"\ndir = \"/v\"\n"),
                Some(11),
                Some("name"),
                "a view name is",
            ),
            (
                format!("{VIEW_JOBS}[[view]]\nname = \"v\"\njob = \"a\"\ndir = \"s3://x/v\"\n"),
                Some(13),
                Some("dir"),
                "not a bucket",
            ),
        ];
        for (text, line, key, want) in cases {
            let e = err(&text);
            let shown = e.to_string();
            assert_eq!(e.line, line, "{text}\n=> {shown}");
            assert_eq!(e.key.as_deref(), key, "{text}\n=> {shown}");
            assert!(shown.contains(want), "{text}\n=> {shown}\nwanted: {want}");
            assert!(!shown.contains('\n'), "one line: {shown}");
            assert!(shown.starts_with("/etc/sstream/sstream.toml:"), "{shown}");
        }
    }

    /// The error of `sstream mirror FLAG VALUE SOURCE DIR`.
    fn mirror_flag_error(flag: &str, value: &str) -> String {
        use clap::Args;
        let cmd = crate::mirror::MirrorArgs::augment_args(clap::Command::new("m"));
        cmd.try_get_matches_from(["m", flag, value, "http://h/", "/tmp/x"])
            .expect_err("refused on the command line too")
            .to_string()
    }

    /// The same value is refused or accepted the same way as on the command
    /// line: `limit_rate = 0` as `--limit-rate 0`; `segment_threshold` has
    /// its key.
    #[test]
    fn option_values_are_checked_as_their_flags() {
        let job = "[[job]]\nname = \"a\"\nsource = \"http://h/s/\"\ndir = \"/m/a\"\n";
        for (key, value) in [
            ("limit_rate", "0"),
            ("limit_rate", "\"0K\""),
            ("jobs", "0"),
            ("timeout", "0"),
        ] {
            let e = err(&format!("{job}{key} = {value}\n"));
            assert_eq!((e.line, e.key.as_deref()), (Some(5), Some(key)), "{e}");
            let flag = format!("--{}", key.replace('_', "-"));
            let cli = mirror_flag_error(&flag, value.trim_matches('"'));
            assert!(cli.contains(&e.message), "{cli} vs {e}");
        }
        let config = parse(&format!("{job}segment_threshold = \"1M\"\ntimeout = 0.5\n")).unwrap();
        assert_eq!(config.jobs[0].options.segment_threshold, Size(1 << 20));
        assert_eq!(
            config.jobs[0].options.timeout.get(),
            Duration::from_millis(500)
        );
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
        let parse_size = |t: &str| t.parse::<Size>().map(|s| s.0);
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
        let text = "[[job]]\nname = \"a\"\nsource = \"http://h/\"\ndir = \"/tmp/x\"\n";
        let job = &parse(text).unwrap().jobs[0];
        assert_eq!(format!("{:?}", args.job), format!("{:?}", job.options));
    }
}
