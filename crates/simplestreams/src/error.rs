//! The library's error type. Every variant names the file, URL or item it is
//! about, so that one line tells an operator what went wrong and where.

use crate::openpgp::{KeyError, KeyringError, SignatureError};
use crate::units::human_size;
use std::path::PathBuf;

/// A result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading, planning, mirroring or querying.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A transfer failed (connection, timeout, HTTP status, short body).
    #[error("{url}: {reason}")]
    Transfer {
        /// What was being fetched.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A metadata document is malformed or not of the expected format.
    #[error("{url}: {reason}")]
    Metadata {
        /// The document.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A metadata document failed signature verification.
    #[error("{url}: {source}")]
    Signature {
        /// The document.
        url: String,
        /// Why verification failed.
        #[source]
        source: SignatureError,
    },
    /// The keyring could not be loaded.
    #[error("{}: {source}", path.display())]
    Keyring {
        /// The keyring file.
        path: PathBuf,
        /// Why it could not be used.
        #[source]
        source: KeyringError,
    },
    /// A signing key could not be loaded or used.
    #[error("{}: {source}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why it cannot sign.
        #[source]
        source: KeyError,
    },
    /// A path named by metadata is unsafe to use.
    #[error("{context}: unsafe path {path:?}: {reason}")]
    UnsafePath {
        /// Where the path was found (document URL and item).
        context: String,
        /// The offending path.
        path: String,
        /// Why it is rejected.
        reason: String,
    },
    /// Downloaded or stored content does not match the metadata.
    #[error("{url}: {reason}")]
    Integrity {
        /// The item's URL (or the stored file).
        url: String,
        /// Whether the size or the checksum is wrong.
        kind: IntegrityKind,
        /// Expected versus actual size or checksum.
        reason: String,
    },
    /// A filter expression is invalid.
    #[error("invalid filter {filter:?}: {reason}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// Why it does not parse.
        reason: String,
    },
    /// Another run holds the mirror's lock.
    #[error("{}: {reason}", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it.
        reason: String,
    },
    /// Some items failed; nothing depending on them was published. Each
    /// failure is in the list (the first one also in the message).
    #[error("{} item(s) failed, first: {}", failures.len(), first_of(failures))]
    ItemsFailed {
        /// Every failure, in the order they were found.
        failures: Vec<Error>,
    },
    /// The mirror's filesystem lacks the room a plan needs (nothing was
    /// downloaded).
    #[error(
        "{location}: not enough free space on {filesystem}: the plan needs {} (largest file: {largest}) plus {} kept free (--min-free), {} free; free some space or lower --min-free",
        human_size(*need),
        human_size(*margin),
        human_size(*free)
    )]
    NoSpace {
        /// The mirror.
        location: String,
        /// The filesystem (its mount point).
        filesystem: String,
        /// Bytes the plan still has to write.
        need: u64,
        /// The largest file to download and its size.
        largest: String,
        /// Bytes to keep free.
        margin: u64,
        /// Bytes free.
        free: u64,
    },
    /// The run would publish an empty mirror over one that holds items
    /// (upstream lists nothing the filters select): refused like the wipe
    /// guard, unless forced.
    #[error(
        "{location}: this run would publish an empty mirror over one holding {items} item(s) (upstream now lists nothing the filters select); pass --force if that is intended"
    )]
    WouldEmpty {
        /// The mirror.
        location: String,
        /// Items of the mirror that the run would remove.
        items: usize,
    },
    /// The operation was refused by a safety guard.
    #[error("{0}")]
    Refused(String),
}

/// What is wrong with content that does not match its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntegrityKind {
    /// The size differs (or the transfer sent more than the size).
    Size,
    /// The checksum differs.
    Checksum,
}

fn first_of(failures: &[Error]) -> String {
    failures
        .first()
        .map(ToString::to_string)
        .unwrap_or_default()
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    /// An [`Error::Metadata`] for `url`.
    pub fn metadata(url: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Metadata {
            url: url.into(),
            reason: reason.into(),
        }
    }
    /// Whether this is (or, for several failures, includes) a full disk.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            Error::ItemsFailed { failures } => failures.iter().any(Error::is_disk_full),
            Error::NoSpace { .. } => true,
            _ => false,
        }
    }

    /// An [`Error::Transfer`] for `url`.
    pub fn transfer(url: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Transfer {
            url: url.into(),
            reason: reason.into(),
        }
    }
}
