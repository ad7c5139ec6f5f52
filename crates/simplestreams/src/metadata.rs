//! Fetching and verifying metadata documents, and walking a stream from its
//! entry document (an index or a products file) to its products files.

use crate::error::{Error, Result};
use crate::format::{Index, PRODUCTS_FORMAT, Products, document_format};
use crate::openpgp::{self, Keyring};
use crate::path::{RelPath, check_file_name};
use crate::source::{Fetched, Source, Validators};
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
    /// whose entry is `entry`. Unsigned entries need no keyring.
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
            None => {
                return Err(Error::Refused(format!(
                    "{entry} is signed and no keyring was given: pass --keyring FILE \
                     (for images.maas.io: {DEFAULT_KEYRING} from the ubuntu-keyring package) or --no-verify"
                )));
            }
        };
        let keyring =
            Keyring::from_file(&path).map_err(|source| Error::Keyring { path, source })?;
        Ok(Verification::Keyring(keyring))
    }
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
    /// The JSON text (the signed text of a clear-signed document).
    pub json: Vec<u8>,
    /// Validators for conditional requests next time.
    pub validators: Validators,
}

/// Reads documents of one stream, enforcing the signature policy.
#[derive(Debug, Clone)]
pub struct MetadataReader {
    source: Source,
    verification: Verification,
    require_signed: bool,
}

impl MetadataReader {
    /// A reader for a stream whose entry document is `entry`.
    pub fn new(source: Source, entry: &RelPath, verification: Verification) -> MetadataReader {
        let require_signed =
            is_signed_name(entry) && matches!(verification, Verification::Keyring(_));
        MetadataReader {
            source,
            verification,
            require_signed,
        }
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
}

/// Parses a fetched products document and checks its content id.
pub fn parse_products(
    document: Document,
    content_id_hint: Option<&str>,
) -> Result<ProductsDocument> {
    let products = Products::parse(&document.url, &document.json)?;
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

/// Reads the entry document and, for an index, every products file it
/// names (each fetched once).
pub async fn read_stream(reader: &MetadataReader, entry: &RelPath) -> Result<Stream> {
    let doc = reader.read(entry).await?;
    let format = document_format(&doc.url, &doc.json)?;
    if format == PRODUCTS_FORMAT {
        let products = parse_products(doc, None)?;
        return Ok(Stream {
            index: None,
            products: vec![products],
        });
    }
    let index = Index::parse(&doc.url, &doc.json)?;
    let mut products = Vec::new();
    for entry in index.entries.values() {
        let Some(path) = &entry.path else { continue };
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
            continue;
        }
        let pdoc = reader.read(path).await?;
        let parsed = parse_products(pdoc, Some(&entry.content_id))?;
        if parsed.content_id != entry.content_id {
            log::warn!(
                "{}: content_id {:?} differs from its index entry {:?}",
                parsed.document.url,
                parsed.content_id,
                entry.content_id
            );
        }
        products.push(parsed);
    }
    Ok(Stream {
        index: Some(doc),
        products,
    })
}
