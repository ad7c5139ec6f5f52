//! `sstream sign DIR --key KEY`: sign an unsigned tree, as the reference's
//! `js2signed` does. Beside each `streams/v1/**/*.json` document it writes a
//! clear-signed `.sjson` and a detached, armored `.json.gpg`; the index's
//! `.sjson` names the `.sjson` products files. Every document is read and
//! checked, and the key loaded, before anything is written; each file is
//! written atomically; a file already signed by this key over the same
//! content is left alone, so a second run writes nothing.
//!
//! [`PassphraseArgs`] is how every command that signs gets a passphrase.

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde_json::{Map, Value};
use simplestreams::format::INDEX_FORMAT;
use simplestreams::holdings::{detached_path, json_path, render, signed_index, sjson_path};
use simplestreams::layout::{DATA_DIR, is_temp_name};
use simplestreams::openpgp::{KeyError, SecretKey, SigningKey};
use simplestreams::path::RelPath;
use simplestreams::store::DirStore;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The environment variable read for a key's passphrase when no
/// `--passphrase-file` is given.
pub const PASSPHRASE_ENV: &str = "SSTREAM_KEY_PASSPHRASE";

/// Where the passphrase of a protected signing key comes from.
#[derive(Debug, Clone, Default, Args)]
pub struct PassphraseArgs {
    /// Read the signing key's passphrase from FILE (one line) [default: the
    /// SSTREAM_KEY_PASSPHRASE environment variable, when set].
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

impl PassphraseArgs {
    /// Loads the key at `key` and unlocks it; a one-line error naming the
    /// file (the key or the passphrase file) and the reason otherwise.
    pub fn open_key(&self, key: &Path) -> Result<SigningKey> {
        let at = |e: KeyError| {
            let hint = match e {
                KeyError::Encrypted(_) => {
                    format!(" (give it with --passphrase-file FILE or {PASSPHRASE_ENV})")
                }
                _ => String::new(),
            };
            anyhow!("{}: {e}{hint}", key.display())
        };
        let secret = SecretKey::from_file(key).map_err(at)?;
        let passphrase = if secret.is_encrypted() {
            self.passphrase()?
        } else {
            None
        };
        secret.unlock(passphrase.as_deref()).map_err(at)
    }

    /// The passphrase: the file's content without its final line break, or
    /// the environment variable's value.
    fn passphrase(&self) -> Result<Option<Vec<u8>>> {
        if let Some(file) = &self.passphrase_file {
            let mut text = fs::read(file)
                .with_context(|| format!("{}: cannot read passphrase", file.display()))?;
            for end in [&b"\n"[..], b"\r"] {
                if text.ends_with(end) {
                    text.pop();
                }
            }
            return Ok(Some(text));
        }
        Ok(std::env::var_os(PASSPHRASE_ENV).map(|v| v.into_encoded_bytes()))
    }
}

/// Options of `sstream sign`.
#[derive(Debug, Clone, Args)]
pub struct SignArgs {
    /// The tree to sign (its streams/v1/ documents).
    pub dir: PathBuf,
    /// The secret key (armored or binary), e.g. from `sstream key generate`.
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// How a protected key is unlocked.
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// In a mirror directory, wait for a mirror run to finish instead of failing.
    #[arg(long)]
    pub wait: bool,
    /// List each file written or left as it was.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// One `.json` document to sign, read and checked.
struct Document {
    /// Its path under the tree.
    rel: RelPath,
    /// Its bytes (what the detached signature covers).
    json: Vec<u8>,
    /// What the `.sjson` clear-signs: the same bytes, or for an index, the
    /// index with its paths pointing at the `.sjson` files.
    signed_text: Vec<u8>,
    /// Whether it is an index (written last).
    is_index: bool,
}

/// Runs `sstream sign`.
pub fn run(args: SignArgs) -> Result<()> {
    crate::logging::init(args.verbose, None).map_err(|e| anyhow!(e))?;
    let key = args.passphrase.open_key(&args.key)?;
    let store = DirStore::new(&args.dir);
    // In a mirror directory, no mirror run writes while we read and sign.
    let _lock = if args.dir.join(DATA_DIR).is_dir() {
        Some(store.lock_blocking(args.wait)?)
    } else {
        None
    };
    let mut documents = read_tree(&args.dir)?;
    // Products files first, the index last: a client never finds a signed
    // index naming a products file not yet signed.
    documents.sort_by_key(|d| d.is_index);
    let (mut written, mut kept) = (0, 0);
    for doc in &documents {
        for changed in sign_document(&store, &key, doc)? {
            if changed {
                written += 1;
            } else {
                kept += 1;
            }
        }
    }
    log::info!(
        "{}: {written} file(s) signed, {kept} already signed",
        args.dir.display()
    );
    Ok(())
}

/// Reads and checks every `.json` document under `DIR/streams/v1/`.
fn read_tree(dir: &Path) -> Result<Vec<Document>> {
    let top = RelPath::parse("streams/v1")?;
    let mut rels = Vec::new();
    collect_json(dir, &top, &mut rels)?;
    if rels.is_empty() {
        bail!("{}: no .json documents under streams/v1/", dir.display());
    }
    rels.sort();
    let names: BTreeSet<&RelPath> = rels.iter().collect();
    let mut documents = Vec::new();
    for rel in &rels {
        documents.push(read_document(dir, rel, &names)?);
    }
    Ok(documents)
}

/// Adds the `.json` files under `rel` (a directory of the tree) to `out`,
/// without following symbolic links.
fn collect_json(root: &Path, rel: &RelPath, out: &mut Vec<RelPath>) -> Result<()> {
    let path = rel.under(root);
    let entries = match fs::read_dir(&path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context(path.display().to_string()),
    };
    for entry in entries {
        let entry = entry.with_context(|| path.display().to_string())?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if is_temp_name(name) {
            continue;
        }
        let Ok(child) = RelPath::parse(name).map(|n| rel.join(&n)) else {
            continue;
        };
        let kind = entry
            .file_type()
            .with_context(|| entry.path().display().to_string())?;
        if kind.is_dir() {
            collect_json(root, &child, out)?;
        } else if kind.is_file() && name.ends_with(".json") {
            out.push(child);
        }
    }
    Ok(())
}

fn read_document(root: &Path, rel: &RelPath, names: &BTreeSet<&RelPath>) -> Result<Document> {
    let path = rel.under(root);
    let json = fs::read(&path).with_context(|| path.display().to_string())?;
    let doc: Map<String, Value> = match serde_json::from_slice(&json) {
        Ok(Value::Object(map)) => map,
        Ok(_) => bail!("{}: not a JSON object", path.display()),
        Err(e) => return Err(e).with_context(|| format!("{}: malformed JSON", path.display())),
    };
    let is_index = doc.get("format").and_then(Value::as_str) == Some(INDEX_FORMAT);
    let signed_text = if is_index {
        check_index_paths(root, &path, &doc, names)?;
        render(&signed_index(&doc))
    } else {
        json.clone()
    };
    Ok(Document {
        rel: rel.clone(),
        json,
        signed_text,
        is_index,
    })
}

/// Every products file the index names must be in the tree (signed with
/// it, or already there), or the signed index would send clients to a 404.
fn check_index_paths(
    root: &Path,
    path: &Path,
    doc: &Map<String, Value>,
    names: &BTreeSet<&RelPath>,
) -> Result<()> {
    let Some(entries) = doc.get("index").and_then(Value::as_object) else {
        bail!("{}: no \"index\" object", path.display());
    };
    for (content_id, entry) in entries {
        let Some(p) = entry.get("path") else {
            continue; // metadata only
        };
        let rel = p
            .as_str()
            .and_then(|s| RelPath::parse(s).ok())
            .ok_or_else(|| {
                anyhow!(
                    "{}: index entry {content_id:?}: unusable path {p}",
                    path.display()
                )
            })?;
        let present = names.contains(&json_path(&rel)) || rel.under(root).is_file();
        if !present {
            bail!(
                "{}: index entry {content_id:?} names {rel}, which is not in {}",
                path.display(),
                root.display()
            );
        }
    }
    Ok(())
}

/// Writes the `.sjson` and `.json.gpg` of `doc` unless the ones there are
/// already this key's signatures over the same content; says, for each,
/// whether it was written.
fn sign_document(store: &DirStore, key: &SigningKey, doc: &Document) -> Result<[bool; 2]> {
    let fail = |rel: &RelPath, e: &dyn std::fmt::Display| {
        anyhow!("{}: {e}", rel.under(store.root()).display())
    };
    let sjson = sjson_path(&doc.rel).ok_or_else(|| fail(&doc.rel, &"not a .json file"))?;
    let gpg = detached_path(&doc.rel);

    let current = store.read_blocking(&sjson)?;
    let sjson_ok = current.is_some_and(|signed| key.verifies_cleartext(&signed, &doc.signed_text));
    if !sjson_ok {
        let signed = key
            .clearsign(&doc.signed_text)
            .map_err(|e| fail(&sjson, &e))?;
        store.write_atomic_blocking(&sjson, &signed)?;
    }
    report(store, &sjson, !sjson_ok);

    let current = store.read_blocking(&gpg)?;
    let gpg_ok = current.is_some_and(|sig| key.verifies_detached(&sig, &doc.json));
    if !gpg_ok {
        let sig = key.sign_detached(&doc.json).map_err(|e| fail(&gpg, &e))?;
        store.write_atomic_blocking(&gpg, &sig)?;
    }
    report(store, &gpg, !gpg_ok);
    Ok([!sjson_ok, !gpg_ok])
}

fn report(store: &DirStore, rel: &RelPath, written: bool) {
    let what = if written { "signed" } else { "already signed" };
    log::info!("{}: {what}", rel.under(store.root()).display());
}
