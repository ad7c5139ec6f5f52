//! What an item must be (size and strongest checksum) and the hashing that
//! checks it, shared by downloads, stores and the audit.

use crate::error::{Error, IntegrityKind, Result};
use crate::format::Checksum;
use md5::Md5;
use sha2::{Digest, Sha256, Sha512};
use std::io::Read;

/// Read buffer for hashing files.
pub const IO_BUFFER: usize = 1 << 20;

/// What a downloaded file must be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// The size in bytes, if known.
    pub size: Option<u64>,
    /// The strongest checksum, if known.
    pub checksum: Option<Checksum>,
}

impl Expected {
    /// Checks a finished transfer or file of `size` bytes with `digest` (as
    /// given by a [`Hasher`] made for this expectation); `what` names it.
    pub fn check(&self, what: &str, size: u64, digest: Option<String>) -> Result<()> {
        if let Some(want) = self.size
            && size != want
        {
            return Err(Error::Integrity {
                url: what.to_owned(),
                kind: IntegrityKind::Size,
                reason: format!("size {size}, expected {want}"),
            });
        }
        if let (Some(want), Some(got)) = (&self.checksum, digest)
            && got != want.hex()
        {
            return Err(Error::Integrity {
                url: what.to_owned(),
                kind: IntegrityKind::Checksum,
                reason: format!(
                    "{} mismatch: got {got}, expected {}",
                    want.algorithm(),
                    want.hex()
                ),
            });
        }
        Ok(())
    }

    /// A hasher for this expectation's checksum.
    pub fn hasher(&self) -> Hasher {
        Hasher::for_checksum(self.checksum.as_ref())
    }

    /// Reads `reader` to its end and checks it (`what` names it in errors).
    pub fn check_reader(&self, what: &str, reader: &mut dyn Read) -> Result<()> {
        let mut hasher = self.hasher();
        let mut buf = vec![0u8; IO_BUFFER];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(what, e)),
            };
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        self.check(what, size, hasher.finish())
    }
}

/// Hashes with the algorithm of an expected checksum (nothing when there
/// is none).
pub enum Hasher {
    /// SHA-512.
    Sha512(Sha512),
    /// SHA-256.
    Sha256(Sha256),
    /// MD5.
    Md5(Md5),
    /// No checksum to compute.
    None,
}

impl Hasher {
    /// A hasher for `c`'s algorithm.
    pub fn for_checksum(c: Option<&Checksum>) -> Hasher {
        match c {
            Some(Checksum::Sha512(_)) => Hasher::Sha512(Sha512::new()),
            Some(Checksum::Sha256(_)) => Hasher::Sha256(Sha256::new()),
            Some(Checksum::Md5(_)) => Hasher::Md5(Md5::new()),
            None => Hasher::None,
        }
    }
    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha512(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
            Hasher::None => {}
        }
    }
    /// The digest in lower-case hex (`None` without a checksum).
    pub fn finish(self) -> Option<String> {
        match self {
            Hasher::Sha512(h) => Some(hex::encode(h.finalize())),
            Hasher::Sha256(h) => Some(hex::encode(h.finalize())),
            Hasher::Md5(h) => Some(hex::encode(h.finalize())),
            Hasher::None => None,
        }
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads the local file at `path` and checks it against `expected` (`what`
/// names it in errors). Blocking.
pub fn verify_path(path: &std::path::Path, expected: &Expected, what: &str) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    expected.check_reader(what, &mut f)
}
