//! Signing keys: generating them, loading them from a file (with the checks
//! that make a bad key fail before anything is signed), clear-signed and
//! detached signatures, and exporting the public key for the mirror's
//! clients.
//!
//! Keys are OpenPGP v4 (RFC 4880), signatures SHA-512: what `gpgv` of
//! GnuPG 2.2 and later (every MAAS host) verifies.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::crypto::{KeyPair, Password, S2K};
use openpgp::packet::key::{PublicParts, SecretKeyMaterial, SecretParts, UnspecifiedRole};
use openpgp::packet::signature::SignatureBuilder;
use openpgp::packet::{Key, Signature};
use openpgp::parse::Parse;
use openpgp::serialize::{Serialize, SerializeInto};
use openpgp::types::{HashAlgorithm, KeyFlags, RevocationStatus, SignatureType};
use openpgp::{Cert, Fingerprint, Packet};

use super::{BEGIN_SIGNED, Keyring, POLICY, hash_cleartext, one_line};

/// A key file that cannot be loaded or unlocked: the file and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct KeyFileError {
    /// The key file.
    pub path: PathBuf,
    /// Why it cannot sign.
    #[source]
    pub source: KeyError,
}

/// Why a key cannot be generated, loaded or used to sign.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not an OpenPGP key.
    #[error("not an OpenPGP key: {0}")]
    NotAKey(String),
    /// The file holds more than one key.
    #[error("holds {0} keys; give a file with exactly one")]
    SeveralKeys(usize),
    /// A public key only: the secret key is not in the file.
    #[error(
        "public key {0} without its secret key (export the secret key, e.g. gpg --export-secret-keys --armor)"
    )]
    NoSecret(String),
    /// No key of the certificate can make signatures.
    #[error("key {key} cannot sign: {reason}")]
    CannotSign {
        /// The fingerprint of the certificate.
        key: String,
        /// Why not.
        reason: String,
    },
    /// The key (or every signing key of it) has expired.
    #[error("key {key} has expired: {reason}")]
    Expired {
        /// The fingerprint of the certificate or signing subkey.
        key: String,
        /// When, as far as the key says.
        reason: String,
    },
    /// The key (or every signing key of it) is revoked.
    #[error("key {0} is revoked")]
    Revoked(String),
    /// The secret key is protected by a passphrase and none was given.
    #[error("secret key {0} is protected by a passphrase, and none was given")]
    Encrypted(String),
    /// The passphrase given does not unlock the secret key.
    #[error("wrong passphrase for secret key {0}")]
    WrongPassphrase(String),
    /// Key generation failed.
    #[error("cannot generate key: {0}")]
    Generate(String),
    /// Making a signature failed.
    #[error("cannot sign: {0}")]
    Sign(String),
    /// Serializing a key failed.
    #[error("cannot export key: {0}")]
    Export(String),
}

/// The public-key algorithm of a generated key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// Ed25519 (EdDSA): small, fast, read by GnuPG 2.1 and later.
    #[default]
    Ed25519,
    /// RSA with a 4096-bit modulus, for sites whose policy asks for RSA.
    Rsa4096,
}

/// A secret key read from a file and checked: one certificate, valid now,
/// with a signing key whose secret is present (possibly still protected by
/// a passphrase: [`SecretKey::unlock`] makes it a [`SigningKey`]).
#[derive(Clone)]
pub struct SecretKey {
    /// The certificate, with its secret key material.
    cert: Cert,
    /// The key of `cert` that will sign (the primary key or a subkey).
    signer: Fingerprint,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("fingerprint", &self.fingerprint())
            .field("signer", &self.signer.to_hex())
            .finish_non_exhaustive()
    }
}

/// Why one signing-capable key of a certificate is not usable.
enum Unusable {
    /// Revoked.
    Revoked,
    /// Expired (the reason as Sequoia gives it).
    Expired(String),
    /// Some other reason.
    Other(String),
}

impl SecretKey {
    /// Reads and checks a key file (binary or ASCII-armored).
    pub fn from_file(path: &Path) -> Result<SecretKey, KeyError> {
        SecretKey::from_bytes(&std::fs::read(path)?)
    }

    /// Parses and checks a transferable secret key: exactly one
    /// certificate, not expired or revoked, with a signing-capable OpenPGP
    /// v4 key that is alive and whose secret material is in the file. When
    /// several keys qualify, the newest signs (as `gpg` chooses).
    pub fn from_bytes(bytes: &[u8]) -> Result<SecretKey, KeyError> {
        let cert = single_cert(bytes)?;
        let signer = choose_signer(&cert)?;
        Ok(SecretKey { cert, signer })
    }

    /// The fingerprint of the certificate (its primary key), upper-case hex.
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }

    /// The fingerprint of the key that signs (the primary key or a signing
    /// subkey), upper-case hex.
    pub fn signer_fingerprint(&self) -> String {
        self.signer.to_hex()
    }

    /// Whether the signing key's secret is protected by a passphrase.
    pub fn is_encrypted(&self) -> bool {
        self.signer_key().is_some_and(|k| k.secret().is_encrypted())
    }

    /// Makes the key ready to sign, decrypting its secret with `passphrase`
    /// when it is protected (a passphrase given for an unprotected key is
    /// ignored).
    pub fn unlock(&self, passphrase: Option<&[u8]>) -> Result<SigningKey, KeyError> {
        let key = self
            .signer_key()
            .ok_or_else(|| KeyError::NoSecret(self.fingerprint()))?;
        let key = if key.secret().is_encrypted() {
            let Some(passphrase) = passphrase else {
                return Err(KeyError::Encrypted(self.fingerprint()));
            };
            key.decrypt_secret(&Password::from(passphrase))
                .map_err(|_| KeyError::WrongPassphrase(self.fingerprint()))?
        } else {
            key
        };
        // Fails early (not at the first signature) on unusable material.
        let keypair = key
            .clone()
            .into_keypair()
            .map_err(|e| KeyError::CannotSign {
                key: self.fingerprint(),
                reason: one_line(&e),
            })?;
        Ok(SigningKey {
            cert: self.cert.clone(),
            keypair,
        })
    }

    /// The public key as a binary keyring (what `gpgv --keyring` and MAAS's
    /// `keyring_filename` read).
    pub fn public_keyring_binary(&self) -> Result<Vec<u8>, KeyError> {
        public_binary(&self.cert)
    }

    /// The public key as an ASCII-armored keyring.
    pub fn public_keyring_armored(&self) -> Result<Vec<u8>, KeyError> {
        public_armored(&self.cert)
    }

    /// The signing key with its secret material (as in the file).
    fn signer_key(&self) -> Option<Key<SecretParts, UnspecifiedRole>> {
        self.cert
            .keys()
            .secret()
            .find(|ka| ka.key().fingerprint() == self.signer)
            .map(|ka| ka.key().clone().role_into_unspecified())
    }
}

/// Parses `bytes` as exactly one certificate.
fn single_cert(bytes: &[u8]) -> Result<Cert, KeyError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(KeyError::NotAKey("the file is empty".to_string()));
    }
    let not_a_key = |e: openpgp::anyhow::Error| {
        let text = bytes
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
        let armored = bytes.windows(14).any(|w| w == b"-----BEGIN PGP");
        KeyError::NotAKey(if text && !armored {
            "a text file without a -----BEGIN PGP PRIVATE KEY BLOCK----- line".to_string()
        } else {
            one_line(&e)
        })
    };
    let parser = CertParser::from_bytes(bytes).map_err(not_a_key)?;
    let mut certs = Vec::new();
    for cert in parser {
        certs.push(cert.map_err(not_a_key)?);
    }
    match certs.len() {
        0 => Err(KeyError::NotAKey("no OpenPGP key found".to_string())),
        1 => Ok(certs.remove(0)),
        n => Err(KeyError::SeveralKeys(n)),
    }
}

/// The key of `cert` that will sign, or why there is none.
fn choose_signer(cert: &Cert) -> Result<Fingerprint, KeyError> {
    let name = cert.fingerprint().to_hex();
    if !cert.is_tsk() {
        return Err(KeyError::NoSecret(name));
    }
    let vc = cert
        .with_policy(&*POLICY, SystemTime::now())
        .map_err(|e| KeyError::CannotSign {
            key: name.clone(),
            reason: format!("not a valid certificate: {}", one_line(&e)),
        })?;
    if let RevocationStatus::Revoked(_) = vc.revocation_status() {
        return Err(KeyError::Revoked(name));
    }
    vc.alive().map_err(|e| KeyError::Expired {
        key: name.clone(),
        reason: one_line(&e),
    })?;
    let mut best: Option<(SystemTime, Fingerprint)> = None;
    let mut unusable = Vec::new();
    for ka in vc.keys().for_signing() {
        let fpr = ka.key().fingerprint();
        match usable(&ka) {
            Ok(()) => {
                let created = ka.key().creation_time();
                if best.as_ref().is_none_or(|(t, _)| created > *t) {
                    best = Some((created, fpr));
                }
            }
            Err(why) => unusable.push((fpr, why)),
        }
    }
    if let Some((_, fpr)) = best {
        return Ok(fpr);
    }
    Err(no_signer(name, unusable))
}

/// Whether one signing-capable key can sign now, with a secret at hand.
fn usable(ka: &ValidErasedKeyAmalgamation<'_, PublicParts>) -> Result<(), Unusable> {
    if let RevocationStatus::Revoked(_) = ka.revocation_status() {
        return Err(Unusable::Revoked);
    }
    ka.alive().map_err(|e| Unusable::Expired(one_line(&e)))?;
    let key = ka.key();
    if key.version() != 4 {
        return Err(Unusable::Other(format!(
            "it is an OpenPGP v{} key; gpgv on MAAS hosts verifies signatures of v4 keys",
            key.version()
        )));
    }
    match key.optional_secret() {
        None => Err(Unusable::Other(
            "its secret is not in the file (only other keys' secrets are)".to_string(),
        )),
        Some(SecretKeyMaterial::Encrypted(e)) if is_stub(e.s2k()) => Err(Unusable::Other(
            "its secret is a GnuPG stub (stripped, or on a smartcard)".to_string(),
        )),
        Some(_) => Ok(()),
    }
}

/// The error when no key qualifies: revoked or expired when that is true of
/// every signing key, a list of reasons otherwise.
fn no_signer(name: String, unusable: Vec<(Fingerprint, Unusable)>) -> KeyError {
    if unusable.is_empty() {
        return KeyError::CannotSign {
            key: name,
            reason: "none of its keys is marked for signing".to_string(),
        };
    }
    if unusable.iter().all(|(_, u)| matches!(u, Unusable::Revoked)) {
        return KeyError::Revoked(name);
    }
    if let [(fpr, Unusable::Expired(reason))] = unusable.as_slice() {
        return KeyError::Expired {
            key: fpr.to_hex(),
            reason: reason.clone(),
        };
    }
    let reasons: Vec<String> = unusable
        .iter()
        .map(|(fpr, u)| {
            let why = match u {
                Unusable::Revoked => "revoked".to_string(),
                Unusable::Expired(r) => format!("expired: {r}"),
                Unusable::Other(r) => r.clone(),
            };
            format!("signing key {}: {why}", fpr.to_hex())
        })
        .collect();
    KeyError::CannotSign {
        key: name,
        reason: reasons.join("; "),
    }
}

/// Whether an S2K specifier marks a GnuPG stub (`gnu-dummy`, or a key
/// diverted to a smartcard) rather than real secret key material.
fn is_stub(s2k: &S2K) -> bool {
    matches!(
        s2k,
        S2K::Private { tag: 101, .. } | S2K::Unknown { tag: 101, .. }
    )
}

fn public_binary(cert: &Cert) -> Result<Vec<u8>, KeyError> {
    cert.clone()
        .strip_secret_key_material()
        .to_vec()
        .map_err(|e| KeyError::Export(one_line(&e)))
}

fn public_armored(cert: &Cert) -> Result<Vec<u8>, KeyError> {
    cert.clone()
        .strip_secret_key_material()
        .armored()
        .to_vec()
        .map_err(|e| KeyError::Export(one_line(&e)))
}

/// A key ready to sign: its secret is decrypted and usable.
#[derive(Clone)]
pub struct SigningKey {
    /// The certificate (with its secret key material as loaded).
    cert: Cert,
    /// The key that signs, with its unencrypted secret.
    keypair: KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.cert.fingerprint().to_hex())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates an Ed25519 key (see [`SigningKey::generate_with`]).
    pub fn generate(user_id: &str) -> Result<SigningKey, KeyError> {
        SigningKey::generate_with(user_id, KeyAlgorithm::Ed25519)
    }

    /// Generates a new OpenPGP v4 key whose primary key certifies and
    /// signs, that never expires, carries `user_id` (e.g. `"Mirror
    /// <ops@example.org>"`) and has no passphrase (mirror runs are
    /// unattended).
    pub fn generate_with(user_id: &str, algorithm: KeyAlgorithm) -> Result<SigningKey, KeyError> {
        let fail = |e: openpgp::anyhow::Error| KeyError::Generate(one_line(&e));
        let suite = match algorithm {
            KeyAlgorithm::Ed25519 => CipherSuite::Cv25519,
            KeyAlgorithm::Rsa4096 => CipherSuite::RSA4k,
        };
        let (cert, _revocation) = CertBuilder::new()
            .set_profile(openpgp::Profile::RFC4880)
            .map_err(fail)?
            .set_cipher_suite(suite)
            .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
            .set_validity_period(None)
            .add_userid(user_id)
            .generate()
            .map_err(fail)?;
        let keypair = cert
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .and_then(|k| k.into_keypair())
            .map_err(fail)?;
        Ok(SigningKey { cert, keypair })
    }

    /// Reads a key file and unlocks it: [`SecretKey::from_file`], then
    /// [`SecretKey::unlock`]. Errors name the file.
    pub fn open(path: &Path, passphrase: Option<&[u8]>) -> Result<SigningKey, KeyFileError> {
        let wrap = |source: KeyError| KeyFileError {
            path: PathBuf::from(path),
            source,
        };
        SecretKey::from_file(path)
            .and_then(|k| k.unlock(passphrase))
            .map_err(wrap)
    }

    /// The fingerprint of the certificate (its primary key), upper-case hex.
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }

    /// The user IDs of the key, as given when it was made.
    pub fn user_ids(&self) -> Vec<String> {
        self.cert
            .userids()
            .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
            .collect()
    }

    /// A keyring holding this key's public part, to check its own output.
    pub fn keyring(&self) -> Keyring {
        Keyring {
            certs: vec![self.cert.clone().strip_secret_key_material()],
        }
    }

    /// Clear-signs `text` (SHA-512 text signature). The output verifies
    /// with `gpgv` and with [`super::verify_cleartext`], which returns `text`
    /// unchanged except for trailing spaces and tabs on lines (unlike
    /// `gpg --clearsign`, a final line break of `text` is kept).
    pub fn clearsign(&self, text: &[u8]) -> Result<Vec<u8>, KeyError> {
        let sig = self.sign(SignatureType::Text, |ctx| hash_cleartext(ctx, text))?;
        let mut out = frame_cleartext(text);
        armor_signature(&mut out, sig)?;
        Ok(out)
    }

    /// An ASCII-armored detached signature over `data` (SHA-512, binary
    /// mode, as `gpg --armor --detach-sign` makes: a `.json.gpg` file).
    pub fn sign_detached(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        let sig = self.sign(SignatureType::Binary, |ctx| ctx.update(data))?;
        let mut out = Vec::with_capacity(1024);
        armor_signature(&mut out, sig)?;
        Ok(out)
    }

    /// Whether `signed` is a good clear-signed document by this key whose
    /// text is what [`SigningKey::clearsign`] of `text` signs: a published
    /// `.sjson` that need not be signed again.
    pub fn verifies_cleartext(&self, signed: &[u8], text: &[u8]) -> bool {
        super::verify_cleartext(&self.keyring(), signed)
            .is_ok_and(|body| body == clearsigned_text(text))
    }

    /// Whether `signature` is a good detached signature by this key over
    /// `data`: a published `.json.gpg` that need not be made again.
    pub fn verifies_detached(&self, signature: &[u8], data: &[u8]) -> bool {
        super::verify_detached(&self.keyring(), data, signature).is_ok()
    }

    /// The public key as an ASCII-armored keyring.
    pub fn public_keyring_armored(&self) -> Result<Vec<u8>, KeyError> {
        public_armored(&self.cert)
    }

    /// The public key as a binary keyring (what `gpgv --keyring` and MAAS's
    /// `keyring_filename` read).
    pub fn public_keyring_binary(&self) -> Result<Vec<u8>, KeyError> {
        public_binary(&self.cert)
    }

    /// The secret key, ASCII-armored (`-----BEGIN PGP PRIVATE KEY
    /// BLOCK-----`), as loaded: a key generated here is unprotected.
    pub fn secret_key_armored(&self) -> Result<Vec<u8>, KeyError> {
        self.cert
            .as_tsk()
            .armored()
            .to_vec()
            .map_err(|e| KeyError::Export(one_line(&e)))
    }

    /// A signature of type `typ` over what `hash` feeds (SHA-512).
    fn sign(
        &self,
        typ: SignatureType,
        hash: impl FnOnce(&mut openpgp::crypto::hash::Context),
    ) -> Result<Signature, KeyError> {
        let fail = |e: openpgp::anyhow::Error| KeyError::Sign(one_line(&e));
        let mut ctx = HashAlgorithm::SHA512
            .context()
            .map_err(fail)?
            .for_signature(4);
        hash(&mut ctx);
        // The signer is not borrowed mutably by the caller: work on a copy.
        let mut keypair = self.keypair.clone();
        SignatureBuilder::new(typ)
            .sign_hash(&mut keypair, ctx)
            .map_err(fail)
    }
}

/// The cleartext framework around `text`, up to the signature block: the
/// BEGIN line, a `Hash: SHA512` header, a blank line, then `text`
/// dash-escaped, every line (the last one too) ending in a line break.
fn frame_cleartext(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 16 + 1024);
    out.extend_from_slice(BEGIN_SIGNED);
    out.extend_from_slice(b"\nHash: SHA512\n\n");
    for line in text.split(|&b| b == b'\n') {
        if line.first() == Some(&b'-') {
            out.extend_from_slice(b"- ");
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// The text that [`super::verify_cleartext`] returns for the output of
/// [`SigningKey::clearsign`] over `text`: `text` without trailing spaces
/// and tabs on its lines. To tell whether a signed document already signs
/// `text` without signing again.
fn clearsigned_text(text: &[u8]) -> Vec<u8> {
    let mut framed = frame_cleartext(text);
    framed.extend_from_slice(b"-----BEGIN PGP SIGNATURE-----\n-----END PGP SIGNATURE-----\n");
    // The framing is our own, so it always parses.
    super::cleartext_body(&framed).unwrap_or_default()
}

/// Appends `sig` as an armored `PGP SIGNATURE` block.
fn armor_signature(out: &mut Vec<u8>, sig: Signature) -> Result<(), KeyError> {
    let fail = |e: openpgp::anyhow::Error| KeyError::Sign(one_line(&e));
    let mut writer = openpgp::armor::Writer::new(out, openpgp::armor::Kind::Signature)
        .map_err(|e| fail(e.into()))?;
    Packet::from(sig).serialize(&mut writer).map_err(fail)?;
    writer.finalize().map_err(|e| fail(e.into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openpgp::{verify_cleartext, verify_detached};
    use openpgp::types::ReasonForRevocation;
    use std::time::Duration;

    /// A certificate made by Sequoia with the builder tweaked by `f`.
    fn cert_with(f: impl FnOnce(CertBuilder<'static>) -> CertBuilder<'static>) -> Cert {
        let builder = CertBuilder::new()
            .set_profile(openpgp::Profile::RFC4880)
            .unwrap()
            .set_cipher_suite(CipherSuite::Cv25519)
            .add_userid("t <t@example.invalid>");
        f(builder).generate().unwrap().0
    }

    fn secret_bytes(cert: &Cert) -> Vec<u8> {
        cert.as_tsk().armored().to_vec().unwrap()
    }

    fn load(cert: &Cert) -> Result<SecretKey, KeyError> {
        SecretKey::from_bytes(&secret_bytes(cert))
    }

    #[test]
    fn generated_key_round_trips_through_its_armored_secret() {
        let key = SigningKey::generate("Mirror <ops@example.invalid>").unwrap();
        assert_eq!(key.user_ids(), ["Mirror <ops@example.invalid>"]);
        let armored = key.secret_key_armored().unwrap();
        assert!(armored.starts_with(b"-----BEGIN PGP PRIVATE KEY BLOCK-----"));
        let loaded = SecretKey::from_bytes(&armored).unwrap();
        assert_eq!(loaded.fingerprint(), key.fingerprint());
        assert_eq!(loaded.signer_fingerprint(), key.fingerprint());
        assert!(!loaded.is_encrypted());
        let signer = loaded.unlock(None).unwrap();

        let ring = key.keyring();
        let signed = signer.clearsign(b"{\"a\": 1}\n").unwrap();
        assert_eq!(verify_cleartext(&ring, &signed).unwrap(), b"{\"a\": 1}\n");
        let detached = signer.sign_detached(b"data\r\n").unwrap();
        assert!(detached.starts_with(b"-----BEGIN PGP SIGNATURE-----"));
        verify_detached(&ring, b"data\r\n", &detached).unwrap();
        // A binary signature: line endings matter.
        assert!(verify_detached(&ring, b"data\n", &detached).is_err());

        // The binary secret key loads too, and the exports are public only.
        let binary = key.cert.as_tsk().to_vec().unwrap();
        assert_eq!(
            SecretKey::from_bytes(&binary).unwrap().fingerprint(),
            key.fingerprint()
        );
        let public = loaded.public_keyring_binary().unwrap();
        assert_eq!(public, key.public_keyring_binary().unwrap());
        assert!(!Cert::from_bytes(&public).unwrap().is_tsk());
        assert!(Keyring::from_bytes(&loaded.public_keyring_armored().unwrap()).is_ok());
    }

    #[test]
    fn clearsigned_text_is_what_verification_returns() {
        let key = SigningKey::generate("x").unwrap();
        let ring = key.keyring();
        for text in [
            &b""[..],
            b"{}",
            b"{}\n",
            b"a \t\n- b\r\n-----\n\n",
            b"line\r\nlast  ",
        ] {
            let signed = key.clearsign(text).unwrap();
            assert_eq!(
                verify_cleartext(&ring, &signed).unwrap(),
                clearsigned_text(text),
                "{:?}",
                String::from_utf8_lossy(text)
            );
            assert!(key.verifies_cleartext(&signed, text));
            assert!(!key.verifies_cleartext(&signed, b"{\"other\": 1}"));
        }
        let other = SigningKey::generate("y").unwrap();
        let signed = other.clearsign(b"{}").unwrap();
        assert!(!key.verifies_cleartext(&signed, b"{}"), "another key's");
        let sig = key.sign_detached(b"{}").unwrap();
        assert!(key.verifies_detached(&sig, b"{}"));
        assert!(!key.verifies_detached(&sig, b"{} "));
        assert!(!other.verifies_detached(&sig, b"{}"));
        assert!(!key.verifies_detached(b"garbage", b"{}"));
    }

    #[test]
    fn generated_keys_are_v4_and_never_expire() {
        let key = SigningKey::generate("x").unwrap();
        assert_eq!(key.cert.primary_key().key().version(), 4);
        let vc = key.cert.with_policy(&*POLICY, None).unwrap();
        assert_eq!(vc.primary_key().key_expiration_time(), None);
        assert!(vc.primary_key().for_signing());
    }

    #[test]
    fn not_a_key() {
        for bytes in [&b""[..], b"  \n", b"hello, world\n", b"\x99\x01\x02"] {
            let err = SecretKey::from_bytes(bytes).unwrap_err();
            assert!(matches!(err, KeyError::NotAKey(_)), "{bytes:?}: {err}");
        }
        // A signature is not a key either.
        let key = SigningKey::generate("x").unwrap();
        let sig = key.sign_detached(b"x").unwrap();
        assert!(matches!(
            SecretKey::from_bytes(&sig),
            Err(KeyError::NotAKey(_))
        ));
    }

    #[test]
    fn public_key_without_secret() {
        let key = SigningKey::generate("x").unwrap();
        let public = key.public_keyring_armored().unwrap();
        let err = SecretKey::from_bytes(&public).unwrap_err();
        assert!(
            matches!(&err, KeyError::NoSecret(f) if *f == key.fingerprint()),
            "{err}"
        );
    }

    #[test]
    fn several_keys() {
        let mut both = SigningKey::generate("a")
            .unwrap()
            .secret_key_armored()
            .unwrap();
        both.extend(
            SigningKey::generate("b")
                .unwrap()
                .secret_key_armored()
                .unwrap(),
        );
        assert!(matches!(
            SecretKey::from_bytes(&both),
            Err(KeyError::SeveralKeys(2))
        ));
    }

    #[test]
    fn key_that_cannot_sign() {
        let cert = cert_with(|b| {
            b.set_primary_key_flags(KeyFlags::empty().set_certification())
                .add_transport_encryption_subkey()
        });
        let err = load(&cert).unwrap_err();
        assert!(matches!(err, KeyError::CannotSign { .. }), "{err}");
        assert!(err.to_string().contains("marked for signing"), "{err}");
    }

    #[test]
    fn signing_subkey_is_chosen_and_its_missing_secret_reported() {
        let cert = cert_with(|b| {
            b.set_primary_key_flags(KeyFlags::empty().set_certification())
                .add_signing_subkey()
        });
        let loaded = load(&cert).unwrap();
        assert_ne!(loaded.signer_fingerprint(), loaded.fingerprint());
        let signer = loaded.unlock(None).unwrap();
        let ring = Keyring::from_bytes(&loaded.public_keyring_binary().unwrap()).unwrap();
        verify_cleartext(&ring, &signer.clearsign(b"x").unwrap()).unwrap();

        // Without the subkey's secret (only the primary's), it cannot sign.
        let sub = cert.keys().subkeys().next().unwrap().key().fingerprint();
        let packets: Vec<Packet> = cert
            .as_tsk()
            .set_filter(|k| k.fingerprint() != sub)
            .to_vec()
            .map(|b| {
                openpgp::PacketPile::from_bytes(&b)
                    .unwrap()
                    .into_children()
                    .collect()
            })
            .unwrap();
        let stripped = Cert::from_packets(packets.into_iter()).unwrap();
        let err = load(&stripped).unwrap_err();
        assert!(
            matches!(&err, KeyError::CannotSign { reason, .. } if reason.contains("not in the file")),
            "{err}"
        );
    }

    #[test]
    fn encrypted_key_needs_its_passphrase() {
        let cert = cert_with(|b| {
            b.set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
                .set_password(Some("correct horse".into()))
        });
        let loaded = load(&cert).unwrap();
        assert!(loaded.is_encrypted());
        assert!(matches!(loaded.unlock(None), Err(KeyError::Encrypted(_))));
        assert!(matches!(
            loaded.unlock(Some(b"wrong")),
            Err(KeyError::WrongPassphrase(_))
        ));
        let signer = loaded.unlock(Some(b"correct horse")).unwrap();
        verify_cleartext(&signer.keyring(), &signer.clearsign(b"x").unwrap()).unwrap();
    }

    #[test]
    fn expired_key() {
        let day = Duration::from_secs(86400);
        let cert = cert_with(|b| {
            b.set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
                .set_creation_time(SystemTime::now() - 3 * day)
                .set_validity_period(day)
        });
        let err = load(&cert).unwrap_err();
        assert!(matches!(err, KeyError::Expired { .. }), "{err}");
    }

    #[test]
    fn revoked_key() {
        let cert = cert_with(|b| {
            b.set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
        });
        let mut keypair = cert
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap()
            .into_keypair()
            .unwrap();
        let rev = cert
            .revoke(&mut keypair, ReasonForRevocation::KeyCompromised, b"lost")
            .unwrap();
        let (cert, _) = cert.insert_packets(rev).unwrap();
        let err = load(&cert).unwrap_err();
        assert!(matches!(err, KeyError::Revoked(_)), "{err}");
    }

    #[test]
    fn v6_keys_are_refused() {
        let cert = CertBuilder::new()
            .set_profile(openpgp::Profile::RFC9580)
            .unwrap()
            .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
            .add_userid("v6")
            .generate()
            .unwrap()
            .0;
        let err = load(&cert).unwrap_err();
        assert!(err.to_string().contains("v6"), "{err}");
    }
}
