//! The library's error type. Every variant names the file, URL or item it is
//! about, so that one line tells an operator what went wrong and where.

use crate::openpgp::{KeyError, KeyFileError, KeyringError, SignatureError};
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
    /// A directory could not be fsynced: the entries made in it (an item
    /// renamed into place, a metadata file replaced) may not be durable.
    #[error(
        "{}: syncing the directory failed, so what was just placed in it may not be durable: {source}",
        dir.display()
    )]
    DirSync {
        /// The directory.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
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
    /// A source (a URL or path given as one) that cannot be used.
    #[error("source {given:?}: {reason}")]
    BadSource {
        /// The source as given.
        given: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A store's location that cannot be read as a source (for an audit).
    #[error("{location}: not usable as a source root")]
    NotASourceRoot {
        /// The store's location.
        location: String,
    },
    /// A client (HTTP, S3) that could not be set up.
    #[error("{context}: {reason}")]
    ClientSetup {
        /// Which client, for which target.
        context: String,
        /// Why not.
        reason: String,
    },
    /// A signed entry document, and no keyring to verify it with.
    #[error(
        "{entry} is signed and no keyring was given: pass --keyring FILE \
         (for images.maas.io: {default_keyring} from the ubuntu-keyring package) or --no-verify"
    )]
    NoKeyring {
        /// The entry document.
        entry: String,
        /// The keyring used when it exists.
        default_keyring: String,
    },
    /// The public keyring of a signing key could not be made.
    #[error("{path}: {source}")]
    PublicKeyring {
        /// Where it was to be published.
        path: String,
        /// Why it could not be made.
        #[source]
        source: KeyError,
    },
    /// A document could not be signed.
    #[error("{path}: cannot sign: {source}")]
    CannotSign {
        /// The document.
        path: String,
        /// Why it could not be signed.
        #[source]
        source: KeyError,
    },
    /// The store cannot list its files (an audit needs to).
    #[error("{location}: this store cannot be listed")]
    NotListable {
        /// The store.
        location: String,
    },
    /// A mirror target (`s3://BUCKET/PREFIX`) that is malformed.
    #[error("target {url:?}: {reason}")]
    BadTarget {
        /// The target as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Object storage settings (credentials, profile) that are missing or
    /// wrong.
    #[error("{context}: {reason}")]
    S3Settings {
        /// The target or setting concerned.
        context: String,
        /// What is missing or wrong.
        reason: String,
    },
    /// An object key that the object storage client does not accept.
    #[error(transparent)]
    ObjectKey(#[from] object_store::path::Error),
    /// An S3 service that ignores conditional writes, so that no lease
    /// can keep two runs apart.
    #[error(
        "{location}: the S3 service ignores conditional writes (If-None-Match: *): \
         it cannot keep two runs apart, so nothing is mirrored into it"
    )]
    NoConditionalWrites {
        /// The lease object.
        location: String,
    },
    /// The wipe guard: a run would delete more than the share of the
    /// mirror allowed without `--force`.
    #[error(
        "this run would delete {deleting} of {total} mirrored bytes (more than {:.0}%); pass --force if that is intended",
        max_share * 100.0
    )]
    WipeGuard {
        /// Bytes the run would delete.
        deleting: u64,
        /// Bytes the mirror references.
        total: u64,
        /// The largest share allowed.
        max_share: f64,
    },
    /// A download not started because the disk filled up.
    #[error("{path}: not started: the disk is full")]
    NotStarted {
        /// The file not downloaded.
        path: String,
    },
    /// The disk filled up during a run: what was not started and what is
    /// left to clean.
    #[error(
        "the disk filled up ({location}): {not_started} download(s) not started; {triage}; \
         free some space and run again"
    )]
    DiskFilled {
        /// The mirror.
        location: String,
        /// Downloads not started.
        not_started: usize,
        /// What became of the partial downloads.
        triage: String,
    },
    /// A snapshot that cannot be made, found or removed.
    #[error("{}: {reason}", mirror.display())]
    Snapshot {
        /// The mirror.
        mirror: PathBuf,
        /// What is wrong (naming the snapshot).
        reason: String,
    },
    /// A view that cannot be published, rolled back or read.
    #[error("{}: {reason}", view.display())]
    View {
        /// The view's directory.
        view: PathBuf,
        /// What is wrong.
        reason: String,
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

impl From<KeyFileError> for Error {
    fn from(e: KeyFileError) -> Error {
        Error::Key {
            path: e.path,
            source: e.source,
        }
    }
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
            Error::Io { source, .. } | Error::DirSync { source, .. } => {
                source.raw_os_error() == Some(libc::ENOSPC)
            }
            Error::ItemsFailed { failures } => failures.iter().any(Error::is_disk_full),
            Error::NoSpace { .. } | Error::DiskFilled { .. } | Error::NotStarted { .. } => true,
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
