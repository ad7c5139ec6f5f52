//! OpenPGP verification of clear-signed SimpleStreams documents.
//!
//! STUB: the real implementation is being written (Sequoia, pure-Rust crypto).

use std::path::Path;

/// Why a keyring could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The file could not be read.
    #[error("cannot read keyring: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not an OpenPGP keyring.
    #[error("not an OpenPGP keyring: {0}")]
    Parse(String),
    /// The keyring holds no usable key.
    #[error("keyring holds no usable public key")]
    Empty,
}

/// Why a signed document did not verify.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The document is not clear-signed at all.
    #[error("not clear-signed (no BEGIN PGP SIGNED MESSAGE)")]
    Unsigned,
    /// The cleartext framing or the signature packet is malformed.
    #[error("malformed signature: {0}")]
    Malformed(String),
    /// Signed by a key that is not in the keyring.
    #[error("signed by unknown key {0}")]
    UnknownKey(String),
    /// The signature does not match the content (tampered).
    #[error("bad signature (content altered?): {0}")]
    Bad(String),
}

/// A set of public keys trusted to sign metadata.
#[derive(Debug, Clone)]
pub struct Keyring {
    _private: (),
}

impl Keyring {
    /// Loads a binary or ASCII-armored keyring file.
    pub fn from_file(path: &Path) -> Result<Keyring, KeyringError> {
        let bytes = std::fs::read(path)?;
        Keyring::from_bytes(&bytes)
    }
    /// Parses a binary or ASCII-armored keyring.
    pub fn from_bytes(_bytes: &[u8]) -> Result<Keyring, KeyringError> {
        Ok(Keyring { _private: () })
    }
}

/// Verifies a clear-signed document and returns the signed text.
pub fn verify_cleartext(_keyring: &Keyring, signed: &[u8]) -> Result<Vec<u8>, SignatureError> {
    cleartext_body(signed)
}

/// Extracts the signed text of a clear-signed document without verifying it.
pub fn cleartext_body(signed: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let text = std::str::from_utf8(signed).map_err(|e| SignatureError::Malformed(e.to_string()))?;
    let start = text.find("\n\n").ok_or(SignatureError::Unsigned)?;
    let end = text.find("-----BEGIN PGP SIGNATURE").ok_or(SignatureError::Unsigned)?;
    Ok(text[start + 2..end].trim_end().as_bytes().to_vec())
}
