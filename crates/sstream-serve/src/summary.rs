//! What the landing page says about the streams a mirror holds: its state
//! trees (`.data/<content_id>`), listed and read through the library's
//! [`DirStore`], parsed into the library's [`Products`] tree and summarized
//! per product, the newest version being [`Product::newest`] (the rule the
//! mirror and the audit use).
//!
//! [`Product::newest`]: simplestreams::format::Product::newest

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use serde_json::Value;
use serde_json::value::RawValue;
use simplestreams::format::Products;
use simplestreams::store::{DirStore, FileStamp};

/// Larger state files are reported, not parsed.
const MAX_STATE_FILE: u64 = 256 * 1024 * 1024;

/// At most this many summaries are cached.
const MAX_CACHED: usize = 1000;

/// What the landing page shows about one product.
#[derive(Debug)]
pub(crate) struct ProductSummary {
    pub(crate) name: String,
    /// What the product is, from its fields (`os`, `release`, `arch`,
    /// `subarch`: the kernel flavour); "" when it does not say.
    pub(crate) os: String,
    pub(crate) release: String,
    pub(crate) arch: String,
    pub(crate) subarch: String,
    /// The newest version's name ("" without versions).
    pub(crate) newest: String,
    pub(crate) versions: usize,
    /// Items of the newest version.
    pub(crate) items: usize,
    /// Size of the items of the newest version.
    pub(crate) size: u64,
    /// Items of the newest version without a size.
    pub(crate) unsized_items: usize,
}

/// What the served metadata offers that the mirror's state does not hold.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct NotHeld {
    /// Versions offered that the state does not hold at all.
    pub(crate) versions: usize,
    /// Items offered that the state does not hold (those of the versions
    /// above included).
    pub(crate) items: usize,
}

/// Compares what the served index (`index`, read through `read` as are
/// the products files it names, clear-signed ones by their signed text)
/// offers with the state trees in `store`. Documents that cannot be read
/// or parsed are left out: the page shows the state's own errors.
pub(crate) fn offered_not_held(
    store: &DirStore,
    index: &str,
    read: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> NotHeld {
    let mut not_held = NotHeld::default();
    let Some(index_doc) = read(index).and_then(|b| json_of(index, b)) else {
        return not_held;
    };
    let Ok(index) = simplestreams::format::Index::parse(index, &index_doc) else {
        return not_held;
    };
    for entry in index.entries.values() {
        let Some(path) = &entry.path else { continue };
        let Some(offered) = read(path.as_str())
            .and_then(|b| json_of(path.as_str(), b))
            .and_then(|b| Products::parse(path.as_str(), &b).ok())
        else {
            continue;
        };
        let held = store
            .state_bytes_blocking(&entry.content_id)
            .ok()
            .flatten()
            .and_then(|b| parse_tree(&entry.content_id, &b));
        for (name, product) in &offered.products {
            for (version, v) in &product.versions {
                let held_version = held
                    .as_ref()
                    .and_then(|h| h.products.get(name))
                    .and_then(|p| p.versions.get(version));
                match held_version {
                    None => {
                        not_held.versions += 1;
                        not_held.items += v.items.len();
                    }
                    Some(h) => {
                        not_held.items +=
                            v.items.keys().filter(|i| !h.items.contains_key(*i)).count();
                    }
                }
            }
        }
    }
    not_held
}

/// The JSON of a served document: a clear-signed one's signed text.
fn json_of(rel: &str, bytes: Vec<u8>) -> Option<Vec<u8>> {
    if rel.ends_with(".sjson") {
        simplestreams::openpgp::cleartext_body(&bytes).ok()
    } else {
        Some(bytes)
    }
}

/// A state file's tree.
fn parse_tree(id: &str, bytes: &[u8]) -> Option<Products> {
    Products::parse_state(&format!(".data/{id}"), bytes)
        .ok()
        .flatten()
}

/// The age of a version named after its date (`20250718`, `20250718.1`,
/// `20250718_01`) at `now`; `None` for other names.
pub(crate) fn version_age(
    version: &str,
    now: std::time::SystemTime,
) -> Option<std::time::Duration> {
    let date = version
        .get(..8)
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))?;
    let stamp: simplestreams::status::Timestamp =
        format!("{}-{}-{}T00:00:00Z", &date[..4], &date[4..6], &date[6..8])
            .parse()
            .ok()?;
    Some(stamp.age(now))
}

/// What the landing page shows about one mirrored stream.
#[derive(Debug)]
pub(crate) struct StreamSummary {
    pub(crate) content_id: String,
    pub(crate) format: String,
    pub(crate) updated: String,
    /// By name.
    pub(crate) products: Vec<ProductSummary>,
    /// Size of all distinct item paths of all versions.
    pub(crate) total: u64,
}

/// Why a state file cannot be summarized; each names the file as
/// `.data/<name>` (not where the server keeps it).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    /// The file cannot be read.
    #[error(".data/{name}: {reason}")]
    Unreadable { name: String, reason: String },
    /// The file is too large to parse for a page.
    #[error(".data/{name}: larger than {MAX_STATE_FILE} bytes, not read")]
    TooLarge { name: String },
    /// The file is not JSON.
    #[error(".data/{name}: invalid JSON: {source}")]
    Json {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    /// The file is JSON, but not an object.
    #[error(".data/{name}: not a JSON object")]
    NotAnObject { name: String },
    /// The tree is not a valid products tree (the library's message,
    /// naming `.data/<name>`).
    #[error(transparent)]
    Tree(simplestreams::Error),
}

/// A summary of a state file, or why there is none.
pub(crate) type Summary = Arc<Result<StreamSummary, StateError>>;

/// A state file: its mirror's root and its content id.
type StateKey = (PathBuf, String);

/// Summaries of state files, with the stamp of the file each was made
/// from: the landing page parses a state file again only when it has
/// changed.
static SUMMARIES: LazyLock<Mutex<HashMap<StateKey, (FileStamp, Summary)>>> =
    LazyLock::new(Default::default);

/// The summaries of the streams mirrored at `mirror`, by content id.
/// `None` when the mirror has no state directory.
pub(crate) fn mirror_streams(mirror: &Path) -> Option<Vec<Summary>> {
    let store = DirStore::new(mirror);
    let ids = store.state_ids().ok()??;
    Some(ids.iter().map(|id| cached(&store, id)).collect())
}

/// The summary of `id`'s state, from the cache while its file is unchanged.
fn cached(store: &DirStore, id: &str) -> Summary {
    let key = (store.root().to_path_buf(), id.to_owned());
    let stamp = store.state_stamp_blocking(id);
    if let Some(stamp) = stamp
        && let Ok(cache) = SUMMARIES.lock()
        && let Some((s, summary)) = cache.get(&key)
        && *s == stamp
    {
        return summary.clone();
    }
    let summary: Summary = Arc::new(read(store, id, stamp));
    if let Some(stamp) = stamp
        && let Ok(mut cache) = SUMMARIES.lock()
    {
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, (stamp, summary.clone()));
    }
    summary
}

/// Reads and summarizes `id`'s state.
fn read(store: &DirStore, id: &str, stamp: Option<FileStamp>) -> Result<StreamSummary, StateError> {
    let name = id.to_owned();
    if stamp.is_some_and(|s| s.len > MAX_STATE_FILE) {
        return Err(StateError::TooLarge { name });
    }
    let bytes = match store.state_bytes_blocking(id) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            let reason = "gone while being read".to_owned();
            return Err(StateError::Unreadable { name, reason });
        }
        Err(simplestreams::Error::Io { source, .. }) => {
            let reason = source.to_string();
            return Err(StateError::Unreadable { name, reason });
        }
        Err(e) => return Err(StateError::Tree(e)),
    };
    parse(id, &bytes)
}

/// Summarizes the state file of `id` holding `bytes`.
pub(crate) fn parse(id: &str, bytes: &[u8]) -> Result<StreamSummary, StateError> {
    let name = id.to_owned();
    // JSON checked first (no tree built) for serde's own error.
    serde_json::from_slice::<&RawValue>(bytes).map_err(|source| StateError::Json {
        name: name.clone(),
        source,
    })?;
    let tree = Products::parse_state(&format!(".data/{id}"), bytes)
        .map_err(StateError::Tree)?
        .ok_or(StateError::NotAnObject { name })?;
    Ok(summarize(id, &tree))
}

/// The summary of a parsed state tree (`id` names it when it has no
/// content id of its own).
fn summarize(id: &str, tree: &Products) -> StreamSummary {
    let text = |key: &str| {
        tree.fields
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut seen_paths = HashSet::new();
    let mut total = 0u64;
    for entry in tree.items() {
        let item = entry.item;
        if let Some(size) = item.size
            && item
                .path
                .as_ref()
                .is_none_or(|p| seen_paths.insert(p.as_str().to_owned()))
        {
            total = total.saturating_add(size);
        }
    }
    let products = tree
        .products
        .iter()
        .map(|(name, product)| {
            let field = |key: &str| {
                product
                    .fields
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let mut summary = ProductSummary {
                name: name.clone(),
                os: field("os"),
                release: field("release"),
                arch: field("arch"),
                subarch: field("subarch"),
                newest: String::new(),
                versions: product.versions.len(),
                items: 0,
                size: 0,
                unsized_items: 0,
            };
            if let Some((newest, version)) = product.newest() {
                summary.newest = newest.to_owned();
                summary.items = version.items.len();
                for item in version.items.values() {
                    match item.size {
                        Some(s) => summary.size = summary.size.saturating_add(s),
                        None => summary.unsized_items += 1,
                    }
                }
            }
            summary
        })
        .collect::<Vec<_>>();
    let mut products = products;
    products.sort_by(|a, b| {
        (&a.os, &a.release, &a.arch, &a.subarch, &a.name)
            .cmp(&(&b.os, &b.release, &b.arch, &b.subarch, &b.name))
    });
    StreamSummary {
        content_id: tree
            .content_id()
            .filter(|c| !c.is_empty())
            .unwrap_or(id)
            .to_owned(),
        format: text("format"),
        updated: text("updated"),
        products,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_summary() {
        let json = br#"{"content_id":"c:1","products":{"p2":{"versions":{}},
            "p1":{"versions":{"20240101":{"items":{"a":{"path":"x/a","size":10}}},
                              "20240102":{"items":{"a":{"path":"y/a","size":5},
                                                   "b":{"path":"x/a","size":10},
                                                   "c":{"path":"z"}}}}}}}"#;
        let s = parse("file", json).unwrap();
        assert_eq!(s.content_id, "c:1");
        assert_eq!(s.products[0].name, "p1");
        assert_eq!(s.products[0].newest, "20240102");
        assert_eq!(s.products[0].versions, 2);
        assert_eq!(s.products[0].items, 3);
        assert_eq!(s.products[0].size, 15);
        assert_eq!(s.products[0].unsized_items, 1);
        assert_eq!(s.total, 15);
        assert_eq!(s.products[1].newest, "");
        let day = std::time::Duration::from_secs(86400);
        let now = std::time::UNIX_EPOCH + 20_000 * day;
        assert_eq!(version_age("19700102.1", now), Some(19_999 * day));
        assert_eq!(version_age("v1", now), None);
        let err = |bytes: &[u8]| parse("f", bytes).unwrap_err().to_string();
        assert!(
            err(b"{").starts_with(".data/f: invalid JSON: "),
            "{}",
            err(b"{")
        );
        assert_eq!(err(b"[]"), ".data/f: not a JSON object");
        assert_eq!(
            err(br#"{"products":[]}"#),
            ".data/f: \"products\" is not an object"
        );
    }

    #[test]
    fn offered_versions_and_items_the_state_does_not_hold_are_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join(".data")).unwrap();
        std::fs::create_dir_all(root.join("streams/v1")).unwrap();
        std::fs::write(
            root.join("streams/v1/index.json"),
            br#"{"format":"index:1.0","index":{"c:1":{"format":"products:1.0",
                "path":"streams/v1/c.json","products":["p"]}}}"#,
        )
        .unwrap();
        let offered = br#"{"format":"products:1.0","content_id":"c:1","products":{"p":{"versions":{
            "1":{"items":{"a":{"path":"1/a","size":1}}},
            "2":{"items":{"a":{"path":"2/a","size":1},"b":{"path":"2/b","size":1}}}}}}}"#;
        std::fs::write(root.join("streams/v1/c.json"), offered).unwrap();
        let read = |rel: &str| std::fs::read(root.join(rel)).ok();
        let store = DirStore::new(root);
        let held_all = offered.to_vec();
        std::fs::write(root.join(".data/c:1"), &held_all).unwrap();
        assert_eq!(
            offered_not_held(&store, "streams/v1/index.json", &read),
            NotHeld::default()
        );
        std::fs::write(
            root.join(".data/c:1"),
            br#"{"content_id":"c:1","products":{"p":{"versions":{
                "2":{"items":{"a":{"path":"2/a","size":1}}}}}}}"#,
        )
        .unwrap();
        assert_eq!(
            offered_not_held(&store, "streams/v1/index.json", &read),
            NotHeld {
                versions: 1,
                items: 2
            }
        );
    }

    #[test]
    fn unsafe_item_paths_are_refused_as_the_mirror_refuses_them() {
        let json = br#"{"products":{"p":{"versions":{"1":{"items":{"a":{"path":"../x"}}}}}}}"#;
        let e = parse("f", json).unwrap_err().to_string();
        assert!(e.starts_with(".data/f: "), "{e}");
        assert!(e.contains("unsafe path"), "{e}");
    }
}
