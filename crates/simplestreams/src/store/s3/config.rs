//! Where a bucket mirror is (`s3://BUCKET/PREFIX`) and how to reach it: the
//! standard AWS environment variables and the shared `config` and
//! `credentials` files, the way the AWS tools read them.
//!
//! Precedence, as the AWS SDKs: credentials from `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`), else from the profile
//! (`AWS_PROFILE`, default `default`) in the credentials file, else in the
//! config file; region from `AWS_REGION`, `AWS_DEFAULT_REGION`, else the
//! profile's `region`; endpoint from `AWS_ENDPOINT_URL_S3`,
//! `AWS_ENDPOINT_URL`, else the profile's `endpoint_url`. The other
//! `AWS_*` variables (web identity, container credentials, ...) are left
//! to `object_store`'s own reading of the environment.

use crate::error::{Error, Result};
use crate::retry::Backoff;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The scheme of a bucket target.
pub const SCHEME: &str = "s3://";

/// A bucket and a key prefix: `s3://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Target {
    /// The bucket's name.
    pub bucket: String,
    /// The key prefix of the mirror's root, without leading or trailing
    /// `/` (empty: the bucket's root).
    pub prefix: String,
}

impl S3Target {
    /// Parses `s3://BUCKET[/PREFIX]`. The prefix must be a plain path:
    /// no empty, `.` or `..` segments, no backslashes or control characters.
    pub fn parse(url: &str) -> Result<S3Target> {
        let bad = |reason: &str| Error::BadTarget {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket name (s3://BUCKET/PREFIX)"));
        }
        let bucket_ok = bucket.len() <= 255
            && bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !bucket_ok {
            return Err(bad(&format!(
                "{bucket:?} is not a bucket name (letters, digits, '-', '.', '_')"
            )));
        }
        if prefix.contains('?') || prefix.contains('#') {
            return Err(bad("a query or fragment is not part of a bucket target"));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            crate::path::RelPath::parse(prefix)
                .map_err(|e| bad(&format!("unusable prefix {prefix:?}: {e}")))?;
        }
        Ok(S3Target {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// `s3://BUCKET/PREFIX` (no trailing slash).
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("{SCHEME}{}", self.bucket)
        } else {
            format!("{SCHEME}{}/{}", self.bucket, self.prefix)
        }
    }

    /// The object key of `rel` (a path relative to the mirror's root).
    pub fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }
}

/// Whether `target` names a bucket (`s3://...`) rather than a directory.
pub fn is_s3_target(target: &str) -> bool {
    target.starts_with(SCHEME)
}

/// How a store is reached and how it keeps its lease.
#[derive(Clone)]
pub struct S3Settings {
    /// The endpoint URL of an S3-compatible service (`http://127.0.0.1:9000`);
    /// `None` for AWS itself. A custom endpoint is addressed path-style
    /// (`ENDPOINT/BUCKET/KEY`); plain HTTP is allowed when it says `http://`.
    pub endpoint: Option<String>,
    /// The region (default `us-east-1`).
    pub region: Option<String>,
    /// The access key id (`None`: `object_store`'s other providers, e.g.
    /// web identity, container or instance credentials).
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// A session token for temporary credentials.
    pub session_token: Option<String>,
    /// How long a lease lasts without renewal (renewed every third of it).
    pub lease_ttl: Duration,
    /// Retries of one request on 5xx, 429 and connection errors.
    pub retries: usize,
    /// The delays between retries.
    pub backoff: Backoff,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// An idle connection that receives nothing for this long is abandoned.
    pub idle_timeout: Duration,
    /// A point request (a `HEAD`, a `GET` of a document, a `DELETE`, a
    /// listing, a lease request) with no whole answer within this, retries
    /// included, fails (a service that accepts connections and never
    /// answers does not hold a run or `sstream status` for minutes).
    pub request_timeout: Duration,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "…"),
            )
            .field("session_token", &self.session_token.as_ref().map(|_| "…"))
            .field("lease_ttl", &self.lease_ttl)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            lease_ttl: Duration::from_secs(60),
            retries: 10,
            backoff: Backoff {
                first: Duration::from_millis(100),
                max: Duration::from_secs(15),
            },
            connect_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl S3Settings {
    /// The settings of the process's environment and the AWS files of the
    /// home directory.
    ///
    /// # Errors
    /// A profile named by `AWS_PROFILE` that no file defines, or a file
    /// that cannot be read.
    pub fn from_env() -> Result<S3Settings> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Self::resolve(&|name| std::env::var(name).ok(), home.as_deref())
    }

    /// The settings given environment variables (`env`) and a home
    /// directory (for `~/.aws/`).
    pub fn resolve(
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> Result<S3Settings> {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let explicit_profile = env("AWS_PROFILE");
        let profile = explicit_profile.clone().unwrap_or_else(|| "default".into());
        let aws_dir = home.map(|h| h.join(".aws"));
        let file_of = |var: &str, name: &str| {
            env(var)
                .map(PathBuf::from)
                .or_else(|| aws_dir.as_ref().map(|d| d.join(name)))
        };
        let credentials_file = file_of("AWS_SHARED_CREDENTIALS_FILE", "credentials");
        let config_file = file_of("AWS_CONFIG_FILE", "config");
        let credentials = match &credentials_file {
            Some(f) => read_profile(f, &profile, false)?,
            None => None,
        };
        let config = match &config_file {
            Some(f) => read_profile(f, &profile, true)?,
            None => None,
        };
        if let Some(p) = &explicit_profile
            && credentials.is_none()
            && config.is_none()
        {
            let files: Vec<String> = [&credentials_file, &config_file]
                .into_iter()
                .flatten()
                .map(|f| f.display().to_string())
                .collect();
            return Err(Error::S3Settings {
                context: format!("AWS_PROFILE {p:?}"),
                reason: format!(
                    "no such profile in {}",
                    if files.is_empty() {
                        "the AWS files (no home directory)".to_owned()
                    } else {
                        files.join(" or ")
                    }
                ),
            });
        }
        let from_files = |key: &str| {
            let get = |p: &Option<BTreeMap<String, String>>| p.as_ref()?.get(key).cloned();
            get(&credentials).or_else(|| get(&config))
        };
        let (access_key_id, secret_access_key, session_token) =
            match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), secret) => (Some(id), secret, env("AWS_SESSION_TOKEN")),
                (None, _) => (
                    from_files("aws_access_key_id"),
                    from_files("aws_secret_access_key"),
                    from_files("aws_session_token"),
                ),
            };
        let config_value = |key: &str| config.as_ref()?.get(key).cloned();
        Ok(S3Settings {
            endpoint: env("AWS_ENDPOINT_URL_S3")
                .or_else(|| env("AWS_ENDPOINT_URL"))
                .or_else(|| config_value("endpoint_url")),
            region: env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .or_else(|| config_value("region")),
            access_key_id,
            secret_access_key,
            session_token,
            ..S3Settings::default()
        })
    }
}

/// The keys of `profile` in an AWS INI file (`None`: no such section, or
/// no such file). In the config file a profile's section is
/// `[profile NAME]` (`[default]` for the default one); in the credentials
/// file it is `[NAME]`.
fn read_profile(
    file: &Path,
    profile: &str,
    config: bool,
) -> Result<Option<BTreeMap<String, String>>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(file, e)),
    };
    let wanted = |section: &str| {
        let section = section.trim();
        if config && profile != "default" {
            section
                .strip_prefix("profile ")
                .is_some_and(|name| name.trim() == profile)
        } else {
            section == profile || (config && section == "profile default")
        }
    };
    let mut found: Option<BTreeMap<String, String>> = None;
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = wanted(section);
            if inside {
                found.get_or_insert_with(BTreeMap::new);
            }
            continue;
        }
        if !inside {
            continue;
        }
        // Nested sub-sections (`s3 =` followed by indented keys) are not
        // read; a top-level `key = value` is.
        if let Some((key, value)) = line.split_once('=')
            && let Some(map) = found.as_mut()
        {
            let value = value.trim();
            if !value.is_empty() {
                map.insert(key.trim().to_ascii_lowercase(), value.to_owned());
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = S3Target::parse("s3://bucket/a/b/").unwrap();
        assert_eq!((t.bucket.as_str(), t.prefix.as_str()), ("bucket", "a/b"));
        assert_eq!(t.url(), "s3://bucket/a/b");
        assert_eq!(t.key(".data/x"), "a/b/.data/x");
        let t = S3Target::parse("s3://bucket").unwrap();
        assert_eq!((t.prefix.as_str(), t.key("x")), ("", "x".to_owned()));
        for bad in [
            "s3://",
            "s3:///x",
            "s3://b/../x",
            "s3://b/a//c",
            "http://b/x",
            "s3://b c/x",
        ] {
            assert!(S3Target::parse(bad).is_err(), "{bad}");
        }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn environment_wins_over_files() {
        let home = tempfile::tempdir().unwrap();
        let aws = home.path().join(".aws");
        std::fs::create_dir(&aws).unwrap();
        std::fs::write(
            aws.join("credentials"),
            "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = FILESECRET\n\
             [ceph]\naws_access_key_id=CEPHKEY\naws_secret_access_key=CEPHSECRET\n",
        )
        .unwrap();
        std::fs::write(
            aws.join("config"),
            "[default]\nregion = eu-west-1\n\n[profile ceph]\nregion = ceph\n\
             endpoint_url = http://rgw.example:7480\ns3 =\n  addressing_style = path\n",
        )
        .unwrap();
        let s = S3Settings::resolve(&env_of(&[]), Some(home.path())).unwrap();
        assert_eq!(s.access_key_id.as_deref(), Some("FILEKEY"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.endpoint, None);
        let s =
            S3Settings::resolve(&env_of(&[("AWS_PROFILE", "ceph")]), Some(home.path())).unwrap();
        assert_eq!(s.access_key_id.as_deref(), Some("CEPHKEY"));
        assert_eq!(s.secret_access_key.as_deref(), Some("CEPHSECRET"));
        assert_eq!(s.endpoint.as_deref(), Some("http://rgw.example:7480"));
        assert_eq!(s.region.as_deref(), Some("ceph"));
        let env = env_of(&[
            ("AWS_PROFILE", "ceph"),
            ("AWS_ACCESS_KEY_ID", "ENVKEY"),
            ("AWS_SECRET_ACCESS_KEY", "ENVSECRET"),
            ("AWS_REGION", "garage"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:3900"),
        ]);
        let s = S3Settings::resolve(&env, Some(home.path())).unwrap();
        assert_eq!(s.access_key_id.as_deref(), Some("ENVKEY"));
        assert_eq!(s.region.as_deref(), Some("garage"));
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert!(!format!("{s:?}").contains("ENVSECRET"));
        let err = S3Settings::resolve(&env_of(&[("AWS_PROFILE", "nope")]), Some(home.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"nope\"") && err.contains("credentials"),
            "{err}"
        );
    }
}
