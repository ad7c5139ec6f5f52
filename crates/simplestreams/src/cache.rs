//! The fetch cache: what the last successful run with the same options
//! fetched, so that the next run asks with conditional requests and skips
//! products files that did not change.
//!
//! One cache per set of options (the MAAS documentation runs two filter
//! sets into one mirror), kept by the store under `.data/` as
//! `sstream-cache-<digest of the options>.json`. A cached answer is trusted
//! only while the mirror's published copy (and state) are still what that
//! run left, and for at most [`MAX_TRUST`]: after that the document is
//! fetched unconditionally, so a server whose validators lie cannot keep the
//! mirror stale for ever.

use crate::error::{Error, Result};
use crate::hash::sha256_hex;
use crate::layout::CACHE_PREFIX;
use crate::metadata::{Document, Previous, Stream};
use crate::path::RelPath;
use crate::source::Validators;
use crate::store::{FileStamp, Store, data_rel};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a fetched document's validators are used for conditional
/// requests before the document is fetched in full again.
pub const MAX_TRUST: Duration = Duration::from_secs(24 * 3600);

/// What the last successful run fetched.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FetchCache {
    /// The options (and source) the entries are valid for.
    pub key: String,
    /// By document path.
    pub docs: BTreeMap<String, CachedDocument>,
}

/// One remembered document.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CachedDocument {
    /// Validators the server sent with it.
    pub validators: Validators,
    /// When it was last fetched in full (seconds since the epoch).
    #[serde(default)]
    pub fetched_at: u64,
    /// SHA-256 of the bytes as served (and as published in the mirror).
    pub sha256: String,
    /// For a products file: its content id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
    /// For a products file: SHA-256 of the mirror state written for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_sha256: Option<String>,
    /// Stamp of the published copy when the run ended: while it holds, the
    /// copy is not read again to check its SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<FileStamp>,
    /// The same for the state file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_stamp: Option<FileStamp>,
    /// For a products file: the items of its state that were in the mirror
    /// when the run ended (path and size). While the document is unchanged
    /// each is checked with a stat, so a deleted or truncated item is found
    /// (and fetched again) without reading the state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<(String, Option<u64>)>,
}

/// A document this run read: fetched in full, or reported unchanged.
#[derive(Debug, Clone)]
pub struct Seen {
    rel: String,
    doc: CachedDocument,
    fetched: bool,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl FetchCache {
    /// The digest that names the cache of runs with `key`.
    fn rel(key: &str) -> Result<RelPath> {
        let digest = sha256_hex(key.as_bytes());
        data_rel(&format!("{CACHE_PREFIX}{}.json", &digest[..16]))
    }

    /// The cache of the last successful run with `key` (empty when missing,
    /// unreadable or for another key: it only saves requests).
    pub async fn load(store: &dyn Store, key: &str) -> FetchCache {
        let read = match Self::rel(key) {
            Ok(rel) => store.read(&rel).await,
            Err(e) => Err(e),
        };
        let cache: FetchCache = match read {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
            _ => FetchCache::default(),
        };
        if cache.key == key {
            cache
        } else {
            FetchCache::default()
        }
    }

    /// Saves the cache under its key.
    pub async fn save(&self, store: &dyn Store) -> Result<()> {
        let rel = Self::rel(&self.key)?;
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::metadata(store.display(&rel), e.to_string()))?;
        store.write_atomic(&rel, &text).await
    }

    /// Conditional reading against `store`'s published copies. When they
    /// are not upstream's bytes (`upstream_copies` false: a re-signed
    /// mirror), a 304 still spares parsing an unchanged products file, but
    /// a document whose bytes are needed is fetched again in full.
    pub fn previous<'a>(&'a self, store: &'a dyn Store, upstream_copies: bool) -> Conditional<'a> {
        Conditional {
            cache: self,
            store,
            upstream_copies,
        }
    }

    /// The documents of a run, to remember for conditional requests: those
    /// fetched (their stamps are filled in by [`FetchCache::after_run`]) and,
    /// as they were, those the server reported unchanged.
    pub fn seen(&self, stream: &Stream) -> Vec<Seen> {
        let now = now_secs();
        let fetched = |doc: &Document, cid: Option<&str>| Seen {
            rel: doc.rel.to_string(),
            doc: CachedDocument {
                validators: doc.validators.clone(),
                // A 304 proves nothing new: the trust keeps its age.
                fetched_at: match self.docs.get(doc.rel.as_str()) {
                    Some(old) if doc.revalidated => old.fetched_at,
                    _ => now,
                },
                sha256: sha256_hex(&doc.raw),
                content_id: cid.map(str::to_owned),
                state_sha256: None,
                stamp: None,
                state_stamp: None,
                claims: Vec::new(),
            },
            fetched: true,
        };
        let mut out: Vec<Seen> = stream.index.iter().map(|d| fetched(d, None)).collect();
        out.extend(
            stream
                .products
                .iter()
                .map(|p| fetched(&p.document, Some(&p.content_id))),
        );
        for u in &stream.unchanged {
            if let Some(cached) = self.docs.get(u.rel.as_str()) {
                out.push(Seen {
                    rel: u.rel.to_string(),
                    doc: cached.clone(),
                    fetched: false,
                });
            }
        }
        out
    }

    /// The cache a successful run leaves: the validators of what it saw,
    /// with the stamps of the published copies and of the state each
    /// products file left behind.
    pub async fn after_run(key: String, seen: Vec<Seen>, store: &dyn Store) -> Result<FetchCache> {
        let mut cache = FetchCache {
            key,
            docs: BTreeMap::new(),
        };
        for Seen {
            rel,
            mut doc,
            fetched,
        } in seen
        {
            if doc.validators.is_empty() {
                continue;
            }
            if fetched {
                if let Ok(rel) = RelPath::parse(&rel) {
                    doc.stamp = store.stamp(&rel).await;
                }
                if let Some(cid) = &doc.content_id {
                    let state = store.state_bytes(cid).await?;
                    doc.state_sha256 = state.as_ref().map(|b| sha256_hex(b));
                    doc.state_stamp = store.state_stamp(cid).await;
                    doc.claims = claims(store, cid, state).await?;
                }
            }
            cache.docs.insert(rel, doc);
        }
        Ok(cache)
    }
}

/// The items of `content_id`'s state (its text `bytes`, as just read) that
/// are in the mirror.
async fn claims(
    store: &dyn Store,
    content_id: &str,
    bytes: Option<Vec<u8>>,
) -> Result<Vec<(String, Option<u64>)>> {
    let state = match bytes {
        // Read once: a state is megabytes in a large stream.
        Some(bytes) => {
            let rel = format!(".data/{content_id}");
            let tree = crate::format::Products::parse_state(&rel, &bytes)?;
            drop(bytes);
            match tree {
                Some(tree) => tree,
                // Not an object: as the store says it.
                None => store.load_state(content_id).await?,
            }
        }
        None => store.load_state(content_id).await?,
    };
    let items: Vec<(RelPath, Option<u64>)> = state
        .items()
        .filter_map(|e| Some((e.item.path.clone()?, e.item.size)))
        .collect();
    let present = store.have_files(&items).await;
    let mut out: Vec<(String, Option<u64>)> = items
        .into_iter()
        .zip(present)
        .filter(|(_, there)| *there)
        .map(|((path, size), _)| (path.to_string(), size))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The last run's cache over the mirror's published copies.
pub struct Conditional<'a> {
    cache: &'a FetchCache,
    store: &'a dyn Store,
    upstream_copies: bool,
}

impl Conditional<'_> {
    /// The cached entry of `rel`, while it may be trusted.
    fn trusted(&self, rel: &RelPath) -> Option<&CachedDocument> {
        let cached = self.cache.docs.get(rel.as_str())?;
        let age = now_secs().saturating_sub(cached.fetched_at);
        (!cached.validators.is_empty() && age < MAX_TRUST.as_secs()).then_some(cached)
    }
}

#[async_trait::async_trait]
impl Previous for Conditional<'_> {
    async fn validators(&self, rel: &RelPath) -> Option<Validators> {
        let cached = self.trusted(rel)?;
        // A re-signed copy is ours, not upstream's bytes: only its stamp can
        // tell it is still what the last run left.
        let intact = (cached.stamp.is_some() && self.store.stamp(rel).await == cached.stamp)
            || (self.upstream_copies
                && self
                    .store
                    .read(rel)
                    .await
                    .ok()?
                    .is_some_and(|b| sha256_hex(&b) == cached.sha256));
        intact.then(|| cached.validators.clone())
    }

    async fn published(&self, rel: &RelPath) -> Option<(Vec<u8>, Validators)> {
        if !self.upstream_copies {
            return None;
        }
        let raw = self.store.read(rel).await.ok()??;
        Some((raw, self.cache.docs.get(rel.as_str())?.validators.clone()))
    }

    async fn state_intact(&self, rel: &RelPath, content_id: &str) -> bool {
        let Some(cached) = self.trusted(rel) else {
            return false;
        };
        if cached.content_id.as_deref() != Some(content_id) || cached.state_sha256.is_none() {
            return false;
        }
        let stamp = self.store.state_stamp(content_id).await;
        let state_intact = (cached.state_stamp.is_some() && stamp == cached.state_stamp) || {
            let state = self.store.state_bytes(content_id).await.ok().flatten();
            state.map(|b| sha256_hex(&b)) == cached.state_sha256
        };
        state_intact && self.items_present(cached).await
    }
}

impl Conditional<'_> {
    /// Whether every item the last run left in the mirror is still there,
    /// with its size.
    async fn items_present(&self, cached: &CachedDocument) -> bool {
        let mut claimed = Vec::with_capacity(cached.claims.len());
        for (path, size) in &cached.claims {
            let Ok(rel) = RelPath::parse(path) else {
                log::info!("{path}: missing or damaged in the mirror; reading its metadata again");
                return false;
            };
            claimed.push((rel, *size));
        }
        let present = self.store.have_files(&claimed).await;
        match claimed.iter().zip(present).find(|(_, there)| !there) {
            Some(((path, _), _)) => {
                log::info!("{path}: missing or damaged in the mirror; reading its metadata again");
                false
            }
            None => true,
        }
    }
}
