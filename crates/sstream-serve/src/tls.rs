//! HTTPS: the certificate and key the server presents, loaded at start and
//! reloaded on SIGHUP.
//!
//! The chain file holds the server's certificate first, then the
//! certificates that sign it; the key file holds its private key (PKCS#8,
//! PKCS#1 or SEC1, in PEM). Both are checked when loaded: every PEM
//! certificate parses, the key is usable, and it matches the first
//! certificate. A reload that fails keeps the certificate in use.
//!
//! Every handshake takes the certificate in use at its start
//! ([`Certificates`] is the resolver of the one `rustls` configuration), so
//! a reload changes what new connections see and leaves open ones alone.
//! The crypto provider is aws-lc-rs (the one reqwest uses); TLS 1.2 and 1.3
//! are offered.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no (well-formed) PEM certificate.
    #[error("{}: no PEM certificate (BEGIN CERTIFICATE) in it", path.display())]
    NoCertificate {
        /// The chain file.
        path: PathBuf,
    },
    /// A PEM section of the file is malformed.
    #[error("{}: malformed PEM", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The first certificate of the chain does not parse.
    #[error("{}: not a valid X.509 certificate", path.display())]
    Certificate {
        /// The chain file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: rustls::Error,
    },
    /// The file holds no PEM private key.
    #[error("{}: no PEM private key in it", path.display())]
    NoKey {
        /// The key file.
        path: PathBuf,
    },
    /// The private key cannot be used.
    #[error("{}: unusable private key", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: rustls::Error,
    },
    /// The key is not the certificate's.
    #[error(
        "{} does not match the certificate in {}",
        key.display(),
        cert.display()
    )]
    Mismatch {
        /// The chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the protocol versions (never with this provider).
    #[error("TLS configuration")]
    Config(#[source] rustls::Error),
}

/// Where the certificate chain and its key are read from.
#[derive(Debug, Clone)]
pub(crate) struct CertFiles {
    /// The chain (PEM): the server's certificate first.
    pub(crate) cert: PathBuf,
    /// The private key (PEM).
    pub(crate) key: PathBuf,
}

impl CertFiles {
    /// Reads and checks the pair.
    fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let chain = read_chain(&self.cert)?;
        let key = read_key(&self.key)?;
        let signer = provider
            .key_provider
            .load_private_key(key)
            .map_err(|source| TlsError::Key {
                path: self.key.clone(),
                source,
            })?;
        let certified = CertifiedKey::new(chain, signer);
        match certified.keys_match() {
            Ok(()) => Ok(certified),
            Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
                cert: self.cert.clone(),
                key: self.key.clone(),
            }),
            Err(source) => Err(TlsError::Certificate {
                path: self.cert.clone(),
                source,
            }),
        }
    }
}

/// The certificates of a PEM chain file, in order.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| pem_error(path, source))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// The first private key of a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        source => pem_error(path, source),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, source: rustls::pki_types::pem::Error) -> TlsError {
    match source {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Read {
            path: path.to_owned(),
            source,
        },
        source => TlsError::Pem {
            path: path.to_owned(),
            source,
        },
    }
}

/// The certificate in use, swapped by [`Tls::reload`]; every handshake
/// takes the one in use at its start.
struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Certificates")
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl Certificates {
    fn current(&self) -> Arc<CertifiedKey> {
        // The lock only guards a pointer swap: a poisoned one is still whole.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace(&self, new: CertifiedKey) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
    }
}

/// The server's TLS side: the files, the certificate in use and the
/// acceptor that every HTTPS listener shares.
pub(crate) struct Tls {
    files: CertFiles,
    provider: Arc<CryptoProvider>,
    certificates: Arc<Certificates>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl Tls {
    /// Loads and checks the certificate and key.
    pub(crate) fn load(files: CertFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let first = files.load(&provider)?;
        let certificates = Arc::new(Certificates {
            current: RwLock::new(Arc::new(first)),
        });
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(certificates.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            files,
            provider,
            certificates,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the files again; on success new connections get the new
    /// certificate, on failure the one in use stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let new = self.files.load(&self.provider)?;
        self.certificates.replace(new);
        Ok(())
    }

    /// The files, for log lines.
    pub(crate) fn files(&self) -> &CertFiles {
        &self.files
    }

    /// The acceptor for HTTPS connections.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.clone()
    }
}
