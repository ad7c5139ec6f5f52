//! Fetching and verifying metadata documents, and walking a stream from its
//! entry document (an index or a products file) to its products files.

use crate::error::{Error, Result};
use crate::format::{Index, PRODUCTS_FORMAT, Products, document_format};
use crate::openpgp::{self, Keyring};
use crate::path::{RelPath, check_file_name};
use crate::source::{Fetched, Source, Validators};
use futures_util::StreamExt;
use std::path::{Path, PathBuf};

/// The keyring MAAS and the reference use by default.
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg";

/// How signed documents are treated.
#[derive(Debug, Clone)]
pub enum Verification {
    /// Check every `.sjson` against this keyring; when the entry is `.sjson`,
    /// every document must be signed.
    Keyring(Keyring),
    /// Strip signatures without checking them (`--no-verify`).
    Skip,
}

impl Verification {
    /// Loads `keyring`, or the default keyring when it exists, for a stream
    /// whose entry is `entry`. Unsigned entries need no keyring; a signed
    /// entry with neither is verified with the built-in Ubuntu cloud-image
    /// keyring ([`Keyring::built_in`], said once in the log).
    pub fn for_entry(
        entry: &RelPath,
        keyring: Option<&Path>,
        no_verify: bool,
    ) -> Result<Verification> {
        if no_verify {
            return Ok(Verification::Skip);
        }
        let path: PathBuf = match keyring {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_KEYRING).exists() => PathBuf::from(DEFAULT_KEYRING),
            None if !is_signed_name(entry) => return Ok(Verification::Skip),
            None => return Ok(Verification::Keyring(built_in_keyring())),
        };
        let keyring =
            Keyring::from_file(&path).map_err(|source| Error::Keyring { path, source })?;
        Ok(Verification::Keyring(keyring))
    }

    /// What a status record says of this verification of a stream whose
    /// entry is `entry`: the keyring's fingerprints when the entry is
    /// signed and checked, else unverified.
    pub fn recorded(&self, entry: &RelPath) -> crate::status::Verified {
        match self {
            Verification::Keyring(k) if is_signed_name(entry) => {
                crate::status::Verified::Keyring(k.fingerprints())
            }
            _ => crate::status::Verified::Unverified,
        }
    }
}

/// The built-in keyring, announced in the log the first time it is used.
fn built_in_keyring() -> Keyring {
    static ANNOUNCED: std::sync::Once = std::sync::Once::new();
    let keyring = Keyring::built_in();
    ANNOUNCED.call_once(|| {
        let keys: Vec<String> = keyring
            .keys()
            .into_iter()
            .map(|k| format!("{} ({})", k.fingerprint, k.user_id))
            .collect();
        log::info!(
            "verifying with the built-in Ubuntu cloud image key {} ({DEFAULT_KEYRING} is absent)",
            keys.join(", ")
        );
    });
    keyring
}

/// Whether a document name is that of a clear-signed document.
pub fn is_signed_name(rel: &RelPath) -> bool {
    rel.as_str().ends_with(".sjson")
}

/// A metadata document as fetched and verified.
#[derive(Debug, Clone)]
pub struct Document {
    /// Where it is, relative to the stream root.
    pub rel: RelPath,
    /// The URL it was read from.
    pub url: String,
    /// The bytes exactly as served (what a mirror publishes).
    pub raw: Vec<u8>,
    /// The JSON text (the signed text of a clear-signed document); emptied
    /// once a products file is parsed ([`ProductsDocument::products`]).
    pub json: Vec<u8>,
    /// Validators for conditional requests next time.
    pub validators: Validators,
    /// The server answered 304: these are the mirror's published bytes.
    pub revalidated: bool,
}

/// Reads documents of one stream, enforcing the signature policy.
#[derive(Debug, Clone)]
pub struct MetadataReader {
    source: Source,
    entry: RelPath,
    verification: Verification,
    require_signed: bool,
}

impl MetadataReader {
    /// A reader for a stream whose entry document is `entry`.
    pub fn new(source: Source, entry: RelPath, verification: Verification) -> MetadataReader {
        let require_signed =
            is_signed_name(&entry) && matches!(verification, Verification::Keyring(_));
        MetadataReader {
            source,
            entry,
            verification,
            require_signed,
        }
    }

    /// The entry document (an index or a products file).
    pub fn entry(&self) -> &RelPath {
        &self.entry
    }

    /// The source documents are read from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Fetches and verifies `rel`. With `validators`, a 304 gives `None`.
    pub async fn read_conditional(
        &self,
        rel: &RelPath,
        validators: Option<&Validators>,
    ) -> Result<Option<Document>> {
        let url = self.source.url_of(rel).to_string();
        let (raw, validators) = match self.source.fetch(rel, validators).await? {
            Fetched::NotModified => return Ok(None),
            Fetched::Body { bytes, validators } => (bytes, validators),
        };
        let json = self.open(rel, &url, &raw)?;
        Ok(Some(Document {
            rel: rel.clone(),
            url,
            raw,
            json,
            validators,
            revalidated: false,
        }))
    }

    /// Fetches and verifies `rel`.
    pub async fn read(&self, rel: &RelPath) -> Result<Document> {
        match self.read_conditional(rel, None).await? {
            Some(doc) => Ok(doc),
            None => Err(Error::transfer(
                self.source.url_of(rel).as_str(),
                "unexpected 304 Not Modified",
            )),
        }
    }

    /// Verifies (or strips) the signature of raw document bytes.
    pub fn open(&self, rel: &RelPath, url: &str, raw: &[u8]) -> Result<Vec<u8>> {
        let sig_err = |source| Error::Signature {
            url: url.to_owned(),
            source,
        };
        if is_signed_name(rel) {
            match &self.verification {
                Verification::Keyring(k) => openpgp::verify_cleartext(k, raw).map_err(sig_err),
                Verification::Skip => openpgp::cleartext_body(raw).map_err(sig_err),
            }
        } else if self.require_signed {
            Err(Error::Signature {
                url: url.to_owned(),
                source: openpgp::SignatureError::Unsigned,
            })
        } else {
            Ok(raw.to_vec())
        }
    }
}

/// One products file of a stream, fetched, verified and parsed.
#[derive(Debug, Clone)]
pub struct ProductsDocument {
    /// The content id (checked to be a safe file name).
    pub content_id: String,
    /// The document as fetched.
    pub document: Document,
    /// The parsed tree, aliases expanded.
    pub products: Products,
}

/// A stream read from its entry: the index (if the entry is one) and every
/// products file it names.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The entry document, when it is an index.
    pub index: Option<Document>,
    /// The products files, in index order.
    pub products: Vec<ProductsDocument>,
    /// Products files unchanged since the last run (not parsed).
    pub unchanged: Vec<UnchangedDocument>,
}

/// A products file the server reported unchanged since the last run (its
/// published copy and mirror state are as that run left them).
#[derive(Debug, Clone)]
pub struct UnchangedDocument {
    /// Its content id.
    pub content_id: String,
    /// Where it is, relative to the stream root.
    pub rel: RelPath,
}

/// Parses a fetched products document and checks its content id.
pub fn parse_products(
    mut document: Document,
    content_id_hint: Option<&str>,
) -> Result<ProductsDocument> {
    let products = Products::parse(&document.url, &document.json)?;
    // The tree holds it now: a products file is the largest document.
    document.json = Vec::new();
    let content_id = match (products.content_id(), content_id_hint) {
        (Some(c), _) => c.to_owned(),
        (None, Some(h)) => h.to_owned(),
        (None, None) => return Err(Error::metadata(&document.url, "no \"content_id\"")),
    };
    check_file_name(&content_id).map_err(|e| Error::UnsafePath {
        context: format!("{}: content_id", document.url),
        path: content_id.clone(),
        reason: e.to_string(),
    })?;
    Ok(ProductsDocument {
        content_id,
        document,
        products,
    })
}

/// What the mirror keeps of its last run, for conditional reading: the
/// validators the server sent, and whether the mirror's published copies
/// and states are still what that run left.
/// Async: the answers come from the mirror's store.
#[async_trait::async_trait]
pub trait Previous: Sync {
    /// The validators to send for `rel`, when the mirror's published copy
    /// is still what was fetched with them.
    async fn validators(&self, rel: &RelPath) -> Option<Validators>;
    /// The mirror's published copy of `rel` and its validators, to stand
    /// for the document when the server answers 304.
    async fn published(&self, rel: &RelPath) -> Option<(Vec<u8>, Validators)>;
    /// Whether the mirror state of `content_id` is as the last run left it
    /// after reading the products file `rel`.
    async fn state_intact(&self, rel: &RelPath, content_id: &str) -> bool;
}

/// Reads `rel`, conditionally when possible. `Ok(None)`: the server says
/// the published copy is current (304).
async fn read_if_changed(
    reader: &MetadataReader,
    rel: &RelPath,
    previous: Option<&dyn Previous>,
) -> Result<Option<Document>> {
    let validators = match previous {
        Some(c) => c.validators(rel).await,
        None => None,
    };
    reader.read_conditional(rel, validators.as_ref()).await
}

/// Reads `rel`, conditionally when possible; a 304 is answered with the
/// mirror's published copy, verified and opened as if fetched.
async fn read_current(
    reader: &MetadataReader,
    rel: &RelPath,
    previous: Option<&dyn Previous>,
) -> Result<Document> {
    if let Some(doc) = read_if_changed(reader, rel, previous).await? {
        return Ok(doc);
    }
    let published = match previous {
        Some(c) => c.published(rel).await,
        None => None,
    };
    let Some((raw, validators)) = published else {
        return reader.read(rel).await;
    };
    let url = reader.source.url_of(rel).to_string();
    let json = reader.open(rel, &url, &raw)?;
    Ok(Document {
        rel: rel.clone(),
        url,
        raw,
        json,
        validators,
        revalidated: true,
    })
}

/// Whether `previous` says the state of `content_id` is as the last run
/// left it (never without a `previous`).
async fn state_intact(previous: Option<&dyn Previous>, rel: &RelPath, content_id: &str) -> bool {
    match previous {
        Some(c) => c.state_intact(rel, content_id).await,
        None => false,
    }
}

/// Reads the entry document and, for an index, every products file it
/// names (each fetched once). With `previous`, requests are conditional:
/// products files the server reports unchanged, whose mirror state is as
/// the last run left it, are not parsed again and are listed in
/// [`Stream::unchanged`].
pub async fn read_stream(
    reader: &MetadataReader,
    previous: Option<&dyn Previous>,
) -> Result<Stream> {
    let entry = &reader.entry;
    let doc = read_current(reader, entry, previous).await?;
    let format = document_format(&doc.url, &doc.json)?;
    if format == PRODUCTS_FORMAT {
        let products = parse_products(doc, None)?;
        return Ok(Stream {
            index: None,
            products: vec![products],
            unchanged: Vec::new(),
        });
    }
    let index = Index::parse(&doc.url, &doc.json)?;
    let wanted = index.entries.values().filter_map(|entry| {
        let path = entry.path.as_ref()?;
        if entry
            .format
            .as_deref()
            .is_some_and(|f| f != PRODUCTS_FORMAT)
        {
            log::info!(
                "{}: skipping index entry {} of format {:?}",
                doc.url,
                entry.content_id,
                entry.format
            );
            return None;
        }
        Some((entry.content_id.clone(), path.clone()))
    });
    // Products files are fetched concurrently (a few at a time), kept in
    // index order. One that the server reports unchanged, and whose mirror
    // state is as the last run left it, is neither read nor verified again.
    let fetched: Vec<Result<(String, RelPath, Option<Document>)>> =
        futures_util::stream::iter(wanted)
            .map(|(content_id, path)| async move {
                let doc = match read_if_changed(reader, &path, previous).await? {
                    Some(doc) => Some(doc),
                    None if state_intact(previous, &path, &content_id).await => None,
                    None => Some(read_current(reader, &path, previous).await?),
                };
                Ok((content_id, path, doc))
            })
            .buffered(4)
            .collect()
            .await;
    let mut products = Vec::new();
    let mut unchanged = Vec::new();
    for result in fetched {
        let (content_id, rel, pdoc) = result?;
        let Some(pdoc) = pdoc else {
            log::info!("{}: unchanged", reader.source.url_of(&rel));
            unchanged.push(UnchangedDocument { content_id, rel });
            continue;
        };
        let parsed = parse_products(pdoc, Some(&content_id))?;
        if parsed.content_id != content_id {
            log::warn!(
                "{}: content_id {:?} differs from its index entry {:?}",
                parsed.document.url,
                parsed.content_id,
                content_id
            );
        }
        products.push(parsed);
    }
    Ok(Stream {
        index: Some(doc),
        products,
        unchanged,
    })
}
