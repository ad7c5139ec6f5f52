//! What a run publishes ([`Publication`]): upstream's documents byte for
//! byte (the default, as the reference; beside a clear-signed `.sjson`, its
//! plain `.json` twin too, [`publish_plain_twin`], since LXD and Incus read
//! only `streams/v1/index.json`), or products files and an index that list
//! exactly what the mirror holds: plain `.json` only ([`Publication::Held`],
//! for LXD and Incus, which check no signature), or — with a local key —
//! clear-signed with that key as well ([`Publication::Resigned`]). Held
//! documents leave out `.vcdiff` deltas whose base version is not held.
//!
//! A re-signed products file is made from the mirror's state after the run
//! (only the items whose file is in the mirror), with every field upstream
//! gave; it is written as the plain `.json`, the clear-signed `.sjson` and a
//! detached `.json.gpg`, each only when its content changed (so a run that
//! changes nothing leaves them, and their validators, alone). The index
//! names every products file of the upstream index the mirror holds
//! anything of, whether this run or an earlier one (with other filters)
//! mirrored it.
//!
//! Back to upstream's documents, a mirror re-signed before (its keyring is
//! there) loses what re-signing published beside them ([`Withdrawal`]):
//! left, a `.json` or `.sjson` would keep listing the holdings of the
//! last re-signed run, signed and current-looking.

use crate::error::{Error, Result};
use crate::format::Products;
use crate::holdings::{
    Listed, detached_path, index_document, json_path, keep_updated, plain_index, products_document,
    render, retain_items, signed_index, sjson_path, without_orphan_deltas,
};
use crate::metadata::Document;
use crate::openpgp::{KeyError, SigningKey};
use crate::path::RelPath;
use crate::plan::StreamPlan;
use crate::store::Store;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

/// How a run publishes metadata.
#[derive(Debug, Clone, Default)]
pub enum Publication {
    /// Upstream's documents, byte for byte (upstream's signatures stay
    /// valid).
    #[default]
    Upstream,
    /// Plain documents (`.json`, unsigned) listing what the mirror holds:
    /// for clients that read only plain metadata and check no signature
    /// (LXD, Incus). Upstream's signatures are still verified on the way in.
    Held,
    /// Documents listing what the mirror holds, signed with this key.
    Resigned(Arc<SigningKey>),
}

impl Publication {
    /// What tells publications apart in the fetch cache's key: switching
    /// re-reads (and so republishes) everything.
    pub fn cache_token(&self) -> Option<String> {
        match self {
            Publication::Upstream => None,
            Publication::Held => Some("held".to_owned()),
            Publication::Resigned(key) => Some(key.fingerprint()),
        }
    }

    /// The key held documents are signed with: `None` for plain ones (and
    /// for upstream's, which are not made here).
    pub fn signing_key(&self) -> Option<&SigningKey> {
        match self {
            Publication::Resigned(key) => Some(key),
            Publication::Upstream | Publication::Held => None,
        }
    }
}

/// A products file published in this run, to list in the index.
#[derive(Debug, Clone)]
pub struct Published {
    /// The plain (`.json`) path.
    pub path: RelPath,
    /// The document.
    pub document: Map<String, Value>,
}

/// Publishes the products file of `sp` from its state: the products,
/// versions and items whose files the mirror holds, signed with `key` when
/// there is one (plain only otherwise). `None` when it holds nothing of it
/// (no file is written then).
pub async fn publish_products(
    store: &dyn Store,
    key: Option<&SigningKey>,
    sp: &StreamPlan,
) -> Result<Option<Published>> {
    let files: Vec<(RelPath, Option<u64>)> = sp
        .state
        .items()
        .filter_map(|e| Some((e.item.path.clone()?, e.item.size)))
        .collect();
    let present = store.have_files(&files).await;
    let in_store: BTreeSet<(RelPath, Option<u64>)> = files
        .into_iter()
        .zip(present)
        .filter_map(|(file, there)| there.then_some(file))
        .collect();
    let held = without_orphan_deltas(retain_items(&sp.state, |item| {
        item.path
            .as_ref()
            .is_none_or(|p| in_store.contains(&(p.clone(), item.size)))
    }));
    let Some(document) = products_document(&sp.source.products, &held)? else {
        return Ok(None);
    };
    let path = json_path(&sp.source.document.rel);
    let document = write_signed(store, key, &path, document).await?;
    Ok(Some(Published { path, document }))
}

/// Publishes the index: upstream's index (`upstream`) naming only the
/// products files the mirror holds anything of, signed with `key` when
/// there is one. `published` are this run's; the others are read back from
/// the mirror (what an earlier run published for them).
pub async fn publish_index(
    store: &dyn Store,
    key: Option<&SigningKey>,
    upstream: &Document,
    published: &[Published],
) -> Result<()> {
    let index: Map<String, Value> = serde_json::from_slice(&upstream.json)
        .map_err(|e| Error::metadata(&upstream.url, format!("malformed JSON: {e}")))?;
    let mut files: Vec<Published> = published.to_vec();
    for path in index_paths(&index) {
        let path = json_path(&path);
        if files.iter().any(|f| f.path == path) {
            continue;
        }
        if let Some(document) = read_published(store, &path).await {
            files.push(Published { path, document });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let listed: Vec<Listed<'_>> = files
        .iter()
        .map(|f| Listed {
            path: &f.path,
            products: &f.document,
        })
        .collect();
    let document = index_document(&index, &listed)?;
    let path = json_path(&upstream.rel);
    let previous = read_published(store, &path).await;
    let mut plain = document;
    if let Some(previous) = &previous {
        keep_updated(&mut plain, previous);
    }
    let bytes = render(&plain);
    let Some(key) = key else {
        return write_plain(store, &path, &bytes).await;
    };
    write_pair(store, key, &path, &bytes).await?;
    sign_beside(store, key, &path, &render(&signed_index(&plain)), &bytes).await?;
    publish_keyring(store, key).await
}

/// Writes `bytes` at `path` unless they are there already (so that a run
/// that changes nothing leaves the file, and its validators, alone).
async fn write_plain(store: &dyn Store, path: &RelPath, bytes: &[u8]) -> Result<()> {
    if store.read(path).await.ok().flatten().as_deref() == Some(bytes) {
        return Ok(());
    }
    store.write_atomic(path, bytes).await
}

/// Beside upstream's clear-signed document `upstream` (an `.sjson`),
/// publishes its plain twin (the `.json`), for clients that read only plain
/// metadata (LXD, Incus): the text the signature covers (verified on the
/// way in) for a products file, with the final line break clear-signing
/// takes off; for an index, with its entries' paths pointing at the plain
/// twins ([`plain_index`]). Nothing
/// for a plain document, nor when the twin is there already with the same
/// bytes.
pub async fn publish_plain_twin(store: &dyn Store, upstream: &Document) -> Result<()> {
    let twin = json_path(&upstream.rel);
    if twin == upstream.rel {
        return Ok(());
    }
    let text =
        crate::openpgp::cleartext_body(&upstream.raw).map_err(|source| Error::Signature {
            url: upstream.url.clone(),
            source,
        })?;
    let doc: Map<String, Value> = serde_json::from_slice(&text)
        .map_err(|e| Error::metadata(&upstream.url, format!("malformed JSON: {e}")))?;
    let bytes = if doc.get("index").is_some_and(Value::is_object) {
        render(&plain_index(&doc))
    } else {
        with_final_line_break(text)
    };
    write_plain(store, &twin, &bytes).await
}

/// `text` ending in a line break: clear-signing drops the one before the
/// signature (RFC 4880 section 7.1), which upstream's plain documents (one
/// JSON text and a line break, as images.maas.io serves them) have.
fn with_final_line_break(mut text: Vec<u8>) -> Vec<u8> {
    if text.last() != Some(&b'\n') {
        text.push(b'\n');
    }
    text
}

/// Publishes the public keyring that verifies the mirror beside its
/// metadata ([`crate::layout::MIRROR_KEYRING`]), for clients to fetch.
async fn publish_keyring(store: &dyn Store, key: &SigningKey) -> Result<()> {
    let rel = keyring_path()?;
    let ring = key
        .public_keyring_binary()
        .map_err(|source| Error::PublicKeyring {
            path: store.display(&rel),
            source,
        })?;
    store.write_atomic(&rel, &ring).await
}

/// The products files an index names.
fn index_paths(index: &Map<String, Value>) -> Vec<RelPath> {
    index
        .get("index")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|entries| entries.values())
        .filter_map(|e| e.get("path")?.as_str())
        .filter_map(|p| RelPath::parse(p).ok())
        .collect()
}

/// The plain document published at `path`, if it is one of ours: a JSON
/// object whose products tree (none, for an index) reads, format not
/// required. The whole object is kept: it is compared whole with what is
/// to be published.
async fn read_published(store: &dyn Store, path: &RelPath) -> Option<Map<String, Value>> {
    let bytes = store.read(path).await.ok()??;
    Products::parse_state(path.as_str(), &bytes).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Writes `document` at `path` (keeping the `updated` of what was there
/// when nothing else changed) with its two signatures; gives what was
/// written.
async fn write_signed(
    store: &dyn Store,
    key: Option<&SigningKey>,
    path: &RelPath,
    mut document: Map<String, Value>,
) -> Result<Map<String, Value>> {
    if let Some(previous) = read_published(store, path).await {
        keep_updated(&mut document, &previous);
    }
    let bytes = render(&document);
    match key {
        None => write_plain(store, path, &bytes).await?,
        Some(key) => {
            write_pair(store, key, path, &bytes).await?;
            sign_beside(store, key, path, &bytes, &bytes).await?;
        }
    }
    Ok(document)
}

/// Writes the clear-signed `text` as the `.sjson` beside the plain
/// document `path`, and a detached signature of `plain` (its bytes) as the
/// `.json.gpg`; each only when what is there is not already this key's
/// signature of the same content.
///
/// # The `.json` / `.json.gpg` pair
///
/// Two files cannot be renamed into place at once, so a reader between
/// the two renames, or a kill there, sees a `.json` beside the signature
/// of its previous content. The window is narrowed, not closed: the
/// signature is computed before the `.json` is written (by
/// [`write_pair`]), so the two renames follow each other with only the
/// small signature file's write between them. What a kill leaves there
/// is repaired first thing by the next run with the key
/// ([`repair_signatures`]), whatever that run then fetches or publishes.
/// The `.sjson` carries its own signature: it is always whole.
async fn sign_beside(
    store: &dyn Store,
    key: &SigningKey,
    path: &RelPath,
    text: &[u8],
    plain: &[u8],
) -> Result<()> {
    if let Some(sjson) = sjson_path(path) {
        let current = store.read(&sjson).await.ok().flatten();
        if !current.is_some_and(|c| key.verifies_cleartext(&c, text)) {
            let signed = key.clearsign(text).map_err(|e| signing(store, path, e))?;
            store.write_atomic(&sjson, &signed).await?;
        }
    }
    let gpg = detached_path(path);
    let current = store.read(&gpg).await.ok().flatten();
    if !current.is_some_and(|c| key.verifies_detached(&c, plain)) {
        let signature = key
            .sign_detached(plain)
            .map_err(|e| signing(store, path, e))?;
        store.write_atomic(&gpg, &signature).await?;
    }
    Ok(())
}

/// Writes the plain document `path` as `bytes` and, right after, its
/// detached signature (made before the first write, so that the two
/// renames are as close as they can be; see [`sign_beside`]). Nothing is
/// written when both are already there.
async fn write_pair(
    store: &dyn Store,
    key: &SigningKey,
    path: &RelPath,
    bytes: &[u8],
) -> Result<()> {
    let gpg = detached_path(path);
    let same_plain = store.read(path).await.ok().flatten().as_deref() == Some(bytes);
    let signed = store
        .read(&gpg)
        .await
        .ok()
        .flatten()
        .is_some_and(|c| key.verifies_detached(&c, bytes));
    if same_plain && signed {
        return Ok(());
    }
    let signature = if signed {
        None
    } else {
        Some(
            key.sign_detached(bytes)
                .map_err(|e| signing(store, path, e))?,
        )
    };
    store.write_atomic(path, bytes).await?;
    if let Some(signature) = signature {
        store.write_atomic(&gpg, &signature).await?;
    }
    Ok(())
}

/// The error of signing the document at `path`.
fn signing(store: &dyn Store, path: &RelPath, source: KeyError) -> Error {
    Error::CannotSign {
        path: store.display(path),
        source,
    }
}

/// What [`repair_signatures`] found and fixed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repaired {
    /// The signature files written again (`.json.gpg`, `.sjson`).
    pub files: Vec<RelPath>,
}

/// First thing in a re-signed run (before anything is fetched): checks that
/// each re-signed document published in the mirror — the index `index`
/// (its plain path) and every products file it names — verifies with
/// `key`: its `.json.gpg` against its `.json`, its `.sjson` by itself and
/// against the `.json`. One that does not (a kill between the renames of a
/// pair, a damaged file) is signed again from the `.json`, which is
/// whole (written atomically). A mirror not re-signed with this key (its
/// published keyring is not this key's: upstream's documents, or another
/// key's, which the run replaces anyway) is left alone.
pub async fn repair_signatures(
    store: &dyn Store,
    key: &SigningKey,
    index: &RelPath,
) -> Result<Repaired> {
    let mut repaired = Repaired::default();
    if !resigned_with(store, key).await? {
        return Ok(repaired);
    }
    let Some(plain_index) = read_published_index(store, index).await else {
        return Ok(repaired);
    };
    for path in index_paths(&plain_index) {
        let path = json_path(&path);
        if let Ok(Some(bytes)) = store.read(&path).await {
            repair_pair(store, key, &path, &bytes, &bytes, &mut repaired).await?;
        }
    }
    if let Ok(Some(bytes)) = store.read(index).await {
        let text = render(&signed_index(&plain_index));
        repair_pair(store, key, index, &text, &bytes, &mut repaired).await?;
    }
    for file in &repaired.files {
        log::warn!(
            "{}: did not verify with the mirror's key; signed again",
            store.display(file)
        );
    }
    Ok(repaired)
}

/// Signs again what of the pair at `path` does not verify: the `.sjson`
/// (clear-signed `text`) and the `.json.gpg` (of `plain`).
async fn repair_pair(
    store: &dyn Store,
    key: &SigningKey,
    path: &RelPath,
    text: &[u8],
    plain: &[u8],
    repaired: &mut Repaired,
) -> Result<()> {
    let gpg = detached_path(path);
    let before_gpg = store.read(&gpg).await.ok().flatten();
    let sjson = sjson_path(path);
    let before_sjson = match &sjson {
        Some(p) => store.read(p).await.ok().flatten(),
        None => None,
    };
    sign_beside(store, key, path, text, plain).await?;
    if store.read(&gpg).await.ok().flatten() != before_gpg {
        repaired.files.push(gpg);
    }
    if let Some(sjson) = sjson
        && store.read(&sjson).await.ok().flatten() != before_sjson
    {
        repaired.files.push(sjson);
    }
    Ok(())
}

/// Whether the mirror was re-signed with `key`: the keyring it publishes
/// is this key's.
async fn resigned_with(store: &dyn Store, key: &SigningKey) -> Result<bool> {
    let Ok(Some(published)) = store.read(&keyring_path()?).await else {
        return Ok(false);
    };
    Ok(key
        .public_keyring_binary()
        .is_ok_and(|ours| ours == published))
}

/// The plain index published at `path`, if it is an index.
async fn read_published_index(store: &dyn Store, path: &RelPath) -> Option<Map<String, Value>> {
    let bytes = store.read(path).await.ok()??;
    let doc: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    doc.get("index")?.as_object()?;
    Some(doc)
}

/// Removes, as upstream's documents are published again in a mirror that
/// was re-signed before (or as plain held documents are published), what
/// was published beside them: the plain or clear-signed twin and the
/// detached signature of each, then the mirror's keyring (last: while it is there, a later run knows there is
/// something to withdraw, so an interrupted withdrawal is finished).
#[derive(Debug, Clone, Copy)]
pub struct Withdrawal;

impl Withdrawal {
    /// `Some` when the mirror in `store` was re-signed before (one look for
    /// its keyring).
    pub async fn needed(store: &dyn Store) -> Result<Option<Withdrawal>> {
        let keyring = keyring_path()?;
        Ok(store.stamp(&keyring).await.map(|_| Withdrawal))
    }

    /// After upstream's document `upstream` was written: removes the
    /// re-signed files beside it.
    pub async fn beside(&self, store: &dyn Store, upstream: &RelPath) -> Result<()> {
        let plain = json_path(upstream);
        let twin = if plain == *upstream {
            sjson_path(&plain)
        } else {
            Some(plain.clone())
        };
        for rel in twin.into_iter().chain([detached_path(&plain)]) {
            if rel != *upstream && store.stamp(&rel).await.is_some() {
                store.remove(&rel).await?;
            }
        }
        Ok(())
    }

    /// After the index was written: removes the mirror's keyring, if it
    /// has one.
    pub async fn finish(&self, store: &dyn Store) -> Result<()> {
        let keyring = keyring_path()?;
        if store.stamp(&keyring).await.is_some() {
            store.remove(&keyring).await?;
        }
        Ok(())
    }
}

fn keyring_path() -> Result<RelPath> {
    RelPath::parse(crate::layout::MIRROR_KEYRING)
        .map_err(|e| Error::metadata(crate::layout::MIRROR_KEYRING, e.to_string()))
}
