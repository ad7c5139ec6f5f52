//! OpenPGP for SimpleStreams: verification of clear-signed and detached
//! signatures against a [`Keyring`], and (in [`SigningKey`] and
//! [`SecretKey`]) the keys a re-signed mirror signs its metadata with.
//!
//! Built on Sequoia (pure-Rust crypto backend). The cleartext framing
//! (RFC 4880 / RFC 9580 section 7) is parsed here, in one linear pass, so
//! that [`verify_cleartext`] and [`cleartext_body`] return exactly the same
//! bytes for the same input; Sequoia parses the signature packets, checks
//! the keys and does the cryptography.
//!
//! # Policy
//!
//! Sequoia's `StandardPolicy` is used with one relaxation: SHA-1 is accepted
//! on signatures that bind a certificate together (user-ID certifications,
//! subkey and primary-key bindings, direct-key signatures) and on
//! revocations. The Ubuntu cloud-image keyring's self-signatures use SHA-1,
//! and a collision attack on a self-signature buys an attacker nothing he
//! could not do with his own key. Data signatures (the ones over the
//! metadata) keep the strict rules: SHA-1 and weaker are rejected.
//!
//! # Time
//!
//! Like `gpgv`, a key is judged at the time the signature was made: a
//! signature made while the key was alive stays good after the key expires
//! (`gpgv` reports "Good signature" with exit code 0 for such a signature).
//! A signature made after the key expired, or before the key existed, is
//! bad. Hard revocations always count; the signature itself must not have
//! expired and must not be dated in the future (beyond Sequoia's clock-skew
//! tolerance).

mod key;

pub use key::{KeyAlgorithm, KeyError, KeyFileError, SecretKey, SigningKey};

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::LazyLock;

use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::crypto::hash::Context as HashContext;
use openpgp::packet::Signature;
use openpgp::parse::Parse;
use openpgp::policy::{HashAlgoSecurity, Policy, StandardPolicy};
use openpgp::types::{HashAlgorithm, RevocationStatus, SignatureType};
use openpgp::{Cert, KeyHandle, Packet, PacketPile};

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
    /// The signature does not match the content (tampered), or the key or
    /// signature is not acceptable (expired, revoked, weak algorithm).
    #[error("bad signature: {0}")]
    Bad(String),
}

/// Marker lines of the cleartext signature framework.
const BEGIN_SIGNED: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE: &[u8] = b"-----BEGIN PGP SIGNATURE-----";
const END_SIGNATURE: &[u8] = b"-----END PGP SIGNATURE-----";

/// At most this many signature packets are accepted on one document: each
/// one by a key of the keyring costs a pass over the (large) text.
const MAX_SIGNATURES: usize = 16;

/// The policy described in the module documentation.
#[derive(Debug)]
struct MirrorPolicy {
    /// Sequoia's standard policy, used for everything but bindings.
    strict: StandardPolicy<'static>,
    /// The standard policy plus SHA-1, for self-signatures and revocations.
    binding: StandardPolicy<'static>,
}

impl MirrorPolicy {
    fn new() -> MirrorPolicy {
        let mut binding = StandardPolicy::new();
        binding.accept_hash(HashAlgorithm::SHA1);
        MirrorPolicy {
            strict: StandardPolicy::new(),
            binding,
        }
    }
}

impl Policy for MirrorPolicy {
    fn signature(&self, sig: &Signature, sec: HashAlgoSecurity) -> openpgp::Result<()> {
        match sig.typ() {
            SignatureType::GenericCertification
            | SignatureType::PersonaCertification
            | SignatureType::CasualCertification
            | SignatureType::PositiveCertification
            | SignatureType::SubkeyBinding
            | SignatureType::PrimaryKeyBinding
            | SignatureType::DirectKey
            | SignatureType::KeyRevocation
            | SignatureType::SubkeyRevocation
            | SignatureType::CertificationRevocation => self.binding.signature(sig, sec),
            _ => self.strict.signature(sig, sec),
        }
    }

    fn key(
        &self,
        ka: &ValidErasedKeyAmalgamation<openpgp::packet::key::PublicParts>,
    ) -> openpgp::Result<()> {
        self.strict.key(ka)
    }

    fn symmetric_algorithm(&self, algo: openpgp::types::SymmetricAlgorithm) -> openpgp::Result<()> {
        self.strict.symmetric_algorithm(algo)
    }

    fn aead_algorithm(&self, algo: openpgp::types::AEADAlgorithm) -> openpgp::Result<()> {
        self.strict.aead_algorithm(algo)
    }

    fn packet(&self, packet: &Packet) -> openpgp::Result<()> {
        self.strict.packet(packet)
    }
}

static POLICY: LazyLock<MirrorPolicy> = LazyLock::new(MirrorPolicy::new);

/// A set of public keys trusted to sign metadata.
#[derive(Clone)]
pub struct Keyring {
    /// Public certificates, merged by fingerprint, secrets stripped.
    certs: Vec<Cert>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.key_ids())
            .finish()
    }
}

impl Keyring {
    /// Loads a binary or ASCII-armored keyring file.
    pub fn from_file(path: &Path) -> Result<Keyring, KeyringError> {
        let bytes = std::fs::read(path)?;
        Keyring::from_bytes(&bytes)
    }

    /// Parses a binary keyring (concatenated public keys; GnuPG trust
    /// packets are ignored) or one or more ASCII-armored key blocks.
    ///
    /// Secret key material, if any, is dropped. The same key given twice
    /// is merged into one.
    pub fn from_bytes(bytes: &[u8]) -> Result<Keyring, KeyringError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(KeyringError::Empty);
        }
        let parser =
            CertParser::from_bytes(bytes).map_err(|e| KeyringError::Parse(one_line(&e)))?;
        let mut certs: Vec<Cert> = Vec::new();
        let mut index: HashMap<openpgp::Fingerprint, usize> = HashMap::new();
        for cert in parser {
            let cert = cert.map_err(|e| KeyringError::Parse(one_line(&e)))?;
            let cert = cert.strip_secret_key_material();
            match index.get(&cert.fingerprint()) {
                Some(&i) => {
                    let merged = certs[i]
                        .clone()
                        .merge_public(cert)
                        .map_err(|e| KeyringError::Parse(one_line(&e)))?;
                    certs[i] = merged;
                }
                None => {
                    index.insert(cert.fingerprint(), certs.len());
                    certs.push(cert);
                }
            }
        }
        if certs.is_empty() {
            return Err(KeyringError::Parse(
                "no OpenPGP public key found".to_string(),
            ));
        }
        Ok(Keyring { certs })
    }

    /// Number of certificates (primary keys) in the keyring.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether the keyring holds no certificate (never true for a keyring
    /// built by [`Keyring::from_bytes`]).
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The 40-hex-digit fingerprints (upper case) of the primary keys, in
    /// keyring order.
    pub fn fingerprints(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| c.fingerprint().to_hex())
            .collect()
    }

    /// The 16-hex-digit key IDs (upper case) of the primary keys, in
    /// keyring order.
    pub fn key_ids(&self) -> Vec<String> {
        self.certs.iter().map(|c| c.keyid().to_hex()).collect()
    }

    /// The Ubuntu cloud-image keyring built into the program (see
    /// [`BUILT_IN_KEYRING`]): the trust anchor when no keyring is given and
    /// the system's is absent.
    pub fn built_in() -> Keyring {
        static BUILT_IN: LazyLock<Keyring> = LazyLock::new(|| {
            // The bytes are fixed at build time and checked by the tests.
            Keyring::from_bytes(BUILT_IN_KEYRING).unwrap_or(Keyring { certs: Vec::new() })
        });
        BUILT_IN.clone()
    }

    /// Each primary key: its fingerprint and first user ID, in keyring order.
    pub fn keys(&self) -> Vec<KeyIdentity> {
        self.certs
            .iter()
            .map(|c| KeyIdentity {
                fingerprint: c.fingerprint().to_hex(),
                user_id: c
                    .userids()
                    .next()
                    .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// The keys as a binary keyring (what `gpgv --keyring` and MAAS's
    /// `keyring_filename` read), without GnuPG trust packets.
    pub fn to_binary(&self) -> Result<Vec<u8>, KeyringError> {
        let mut out = Vec::new();
        for cert in &self.certs {
            use openpgp::serialize::Serialize;
            cert.serialize(&mut out)
                .map_err(|e| KeyringError::Parse(one_line(&e)))?;
        }
        Ok(out)
    }

    /// The keys as one ASCII-armored public key block.
    pub fn to_armored(&self) -> Result<Vec<u8>, KeyringError> {
        use openpgp::armor::{Kind, Writer};
        use openpgp::serialize::Serialize;
        let fail = |e: std::io::Error| KeyringError::Parse(one_line(&e));
        let mut writer = Writer::new(Vec::new(), Kind::PublicKey).map_err(fail)?;
        for cert in &self.certs {
            cert.serialize(&mut writer)
                .map_err(|e| KeyringError::Parse(one_line(&e)))?;
        }
        writer.finalize().map_err(fail)
    }
}

/// The Ubuntu cloud-image keyring (`ubuntu-cloudimage-keyring.gpg` of
/// Debian's and Ubuntu's `ubuntu-keyring` package, 2023.11.28.1): the UEC
/// Image Automatic Signing Key (D2EB44626FDDC30B513D5BB71A5D6C4C7DB87C81)
/// and the Ubuntu Cloud Image Builder key
/// (4A3CE3CD565D7EB5C810E2B97FF3F408476CF100), the keys images.maas.io and
/// cloud-images.ubuntu.com sign their streams with.
pub const BUILT_IN_KEYRING: &[u8] = include_bytes!("openpgp/ubuntu-cloudimage-keyring.gpg");

/// One key of a keyring, as shown to an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    /// The primary key's fingerprint (40 hex digits, upper case).
    pub fingerprint: String,
    /// Its first user ID ("" when it has none).
    pub user_id: String,
}

/// Verifies a clear-signed document and returns the signed text.
///
/// The returned bytes are exactly those of [`cleartext_body`]: the text
/// between the armor headers and the signature, dash-escaping undone,
/// trailing spaces and tabs of each line dropped (the signature does not
/// cover them, RFC 4880 section 7.1; `gpg` drops them too), the final line
/// break dropped, line endings (LF or CR LF) untouched. A signature by any
/// key (primary or signing subkey) of the keyring is enough.
pub fn verify_cleartext(keyring: &Keyring, signed: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let parsed = parse_cleartext(signed)?;
    let sigs = parse_signatures(parsed.signature)?;
    verify_signatures(keyring, &sigs, |sig, ctx| match sig.typ() {
        SignatureType::Text | SignatureType::Binary => {
            hash_cleartext(ctx, &parsed.body);
            Ok(())
        }
        other => Err(Rejection::NotADocumentSignature(other)),
    })?;
    Ok(parsed.body)
}

/// Extracts the signed text of a clear-signed document without verifying
/// it (RFC 4880 section 7): all armor headers are skipped up to the blank
/// line, dash-escaping (`- `) is undone, trailing spaces and tabs are
/// dropped from each line and the line break before
/// `-----BEGIN PGP SIGNATURE-----` is dropped. Only the framing is checked;
/// the result is the same as that of [`verify_cleartext`].
pub fn cleartext_body(signed: &[u8]) -> Result<Vec<u8>, SignatureError> {
    parse_cleartext(signed).map(|p| p.body)
}

/// Verifies a detached signature (binary or ASCII-armored) over `data`.
///
/// Binary signatures hash `data` as is; text signatures normalize line
/// endings to CR LF first. A signature by any key of the keyring is enough.
pub fn verify_detached(
    keyring: &Keyring,
    data: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let sigs = parse_signatures(signature)?;
    verify_signatures(keyring, &sigs, |sig, ctx| match sig.typ() {
        SignatureType::Binary => {
            ctx.update(data);
            Ok(())
        }
        SignatureType::Text => {
            hash_text(ctx, data);
            Ok(())
        }
        other => Err(Rejection::NotADocumentSignature(other)),
    })
}

/// Checks that `signature` is a detached signature (binary or
/// ASCII-armored signature packets) without verifying it against any key:
/// what can be said of a `.json.gpg` when no keyring is at hand.
pub fn check_detached_form(signature: &[u8]) -> Result<(), SignatureError> {
    parse_signatures(signature).map(|_| ())
}

/// Renders an error (with its chain of causes, for Sequoia's errors) on
/// one line.
fn one_line(e: impl fmt::Display) -> String {
    format!("{e:#}").replace(['\n', '\r'], " ")
}

/// A parsed clear-signed document.
struct Cleartext<'a> {
    /// The signed text (dash-unescaped, final line break dropped).
    body: Vec<u8>,
    /// The armored signature block, BEGIN to END lines inclusive.
    signature: &'a [u8],
}

/// Iterates over lines, yielding `(content, with_terminator)`, where
/// `content` has its `\n` or `\r\n` removed.
fn lines(buf: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    buf.split_inclusive(|&b| b == b'\n').map(|full| {
        let mut content = full;
        if let Some(rest) = content.strip_suffix(b"\n") {
            content = rest;
            if let Some(rest) = content.strip_suffix(b"\r") {
                content = rest;
            }
        }
        (content, full)
    })
}

/// `line` without trailing spaces, tabs and carriage returns.
fn trim_trailing_ws(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|&b| !matches!(b, b' ' | b'\t' | b'\r'))
        .map_or(0, |i| i + 1);
    &line[..end]
}

fn is_blank(line: &[u8]) -> bool {
    trim_trailing_ws(line).is_empty()
}

/// Parses the cleartext signature framework, in one pass.
fn parse_cleartext(signed: &[u8]) -> Result<Cleartext<'_>, SignatureError> {
    let signed = signed.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(signed);
    let mut it = lines(signed);
    let mut offset = 0usize;

    // Leading blank lines, then the BEGIN line.
    loop {
        let Some((line, full)) = it.next() else {
            return Err(SignatureError::Unsigned);
        };
        offset += full.len();
        if is_blank(line) {
            continue;
        }
        if trim_trailing_ws(line) == BEGIN_SIGNED {
            break;
        }
        let marker_later = signed
            .windows(BEGIN_SIGNED.len() + 1)
            .any(|w| w[0] == b'\n' && &w[1..] == BEGIN_SIGNED);
        return Err(if marker_later {
            SignatureError::Malformed("text before -----BEGIN PGP SIGNED MESSAGE-----".to_string())
        } else {
            SignatureError::Unsigned
        });
    }

    // Armor headers (Hash:, Comment:, ...) up to the first blank line.
    loop {
        let Some((line, full)) = it.next() else {
            return Err(SignatureError::Malformed(
                "no blank line after the armor headers".to_string(),
            ));
        };
        offset += full.len();
        if is_blank(line) {
            break;
        }
        if line.starts_with(b"-----") {
            return Err(SignatureError::Malformed(
                "no blank line after the armor headers".to_string(),
            ));
        }
    }

    // The signed text, up to the BEGIN PGP SIGNATURE line.
    let mut body = Vec::with_capacity(signed.len().saturating_sub(offset));
    let mut last_eol = 0usize;
    let sig_start;
    loop {
        let Some((line, full)) = it.next() else {
            return Err(SignatureError::Malformed(
                "no -----BEGIN PGP SIGNATURE----- line".to_string(),
            ));
        };
        if trim_trailing_ws(line) == BEGIN_SIGNATURE {
            sig_start = offset;
            offset += full.len();
            break;
        }
        offset += full.len();
        let content = line.strip_prefix(b"- ").unwrap_or(line);
        let eol = &full[line.len()..];
        body.extend_from_slice(trim_trailing_ws(content));
        body.extend_from_slice(eol);
        last_eol = eol.len();
    }
    // Drop the line break before the signature (`\n` or `\r\n`).
    body.truncate(body.len() - last_eol.min(body.len()));

    // The signature block up to the END line; only whitespace may follow.
    let sig_end;
    loop {
        let Some((line, full)) = it.next() else {
            return Err(SignatureError::Malformed(
                "truncated signature block (no -----END PGP SIGNATURE-----)".to_string(),
            ));
        };
        offset += full.len();
        if trim_trailing_ws(line) == END_SIGNATURE {
            sig_end = offset;
            break;
        }
    }
    if !signed[sig_end..].iter().all(u8::is_ascii_whitespace) {
        return Err(SignatureError::Malformed(
            "data after -----END PGP SIGNATURE-----".to_string(),
        ));
    }
    Ok(Cleartext {
        body,
        signature: &signed[sig_start..sig_end],
    })
}

/// Feeds the canonical form of a cleartext body to `ctx`: trailing spaces,
/// tabs and carriage returns removed from every line, lines joined by
/// CR LF, no line break after the last line.
fn hash_cleartext(ctx: &mut HashContext, body: &[u8]) {
    let mut first = true;
    for line in body.split(|&b| b == b'\n') {
        if !first {
            ctx.update(b"\r\n");
        }
        first = false;
        ctx.update(trim_trailing_ws(line));
    }
}

/// Feeds `data` to `ctx` with every line ending (`\n`, `\r\n` or a lone
/// `\r`) replaced by CR LF, as text-mode signatures require.
fn hash_text(ctx: &mut HashContext, data: &[u8]) {
    let mut rest = data;
    while let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
        ctx.update(&rest[..i]);
        ctx.update(b"\r\n");
        let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[i + skip..];
    }
    ctx.update(rest);
}

/// Parses binary or armored bytes that must hold only signature packets.
fn parse_signatures(bytes: &[u8]) -> Result<Vec<Signature>, SignatureError> {
    let pile = PacketPile::from_bytes(bytes).map_err(|e| {
        SignatureError::Malformed(format!("cannot parse signature: {}", one_line(&e)))
    })?;
    let mut sigs = Vec::new();
    for packet in pile.into_children() {
        match packet {
            Packet::Signature(sig) => sigs.push(sig),
            Packet::Marker(_) | Packet::Padding(_) => {}
            Packet::Unknown(u) => {
                return Err(SignatureError::Malformed(format!(
                    "cannot parse {} packet: {}",
                    u.tag(),
                    one_line(u.error())
                )));
            }
            other => {
                return Err(SignatureError::Malformed(format!(
                    "expected only signature packets, found a {} packet",
                    other.tag()
                )));
            }
        }
    }
    if sigs.is_empty() {
        return Err(SignatureError::Malformed("no signature packet".to_string()));
    }
    if sigs.len() > MAX_SIGNATURES {
        return Err(SignatureError::Malformed(format!(
            "{} signature packets (at most {MAX_SIGNATURES} accepted)",
            sigs.len()
        )));
    }
    Ok(sigs)
}

/// How one signature fared.
enum Outcome {
    Good,
    Unknown(String),
    Bad(String),
}

/// Succeeds if any signature is good; otherwise reports a bad signature by
/// a known key in preference to signatures by unknown keys.
fn verify_signatures<F>(
    keyring: &Keyring,
    sigs: &[Signature],
    mut hash: F,
) -> Result<(), SignatureError>
where
    F: FnMut(&Signature, &mut HashContext) -> Result<(), Rejection>,
{
    let mut unknown = Vec::new();
    let mut bad = Vec::new();
    for sig in sigs {
        match verify_one(keyring, sig, &mut hash) {
            Outcome::Good => return Ok(()),
            Outcome::Unknown(who) => unknown.push(who),
            Outcome::Bad(why) => bad.push(why),
        }
    }
    if !bad.is_empty() {
        return Err(SignatureError::Bad(bad.join("; ")));
    }
    Err(SignatureError::UnknownKey(unknown.join(", ")))
}

/// The best name of a signature's issuer: its fingerprint if given, else
/// its key ID, in upper-case hex.
fn issuer_name(sig: &Signature) -> String {
    match sig.get_issuers().first() {
        Some(h) => h.to_hex(),
        None => "(no issuer given)".to_string(),
    }
}

fn verify_one<F>(keyring: &Keyring, sig: &Signature, hash: &mut F) -> Outcome
where
    F: FnMut(&Signature, &mut HashContext) -> Result<(), Rejection>,
{
    let policy: &dyn Policy = &*POLICY;
    let issuers = sig.get_issuers();
    let Some(sig_time) = sig.signature_creation_time() else {
        return Outcome::Bad("signature has no creation time".to_string());
    };

    // Candidate keys: those whose handle matches an issuer (all keys if the
    // signature names no issuer).
    let mut candidates: Vec<(&Cert, KeyHandle)> = Vec::new();
    for cert in &keyring.certs {
        for ka in cert.keys() {
            let handle = ka.key().key_handle();
            if issuers.is_empty() || issuers.iter().any(|i| i.aliases(&handle)) {
                candidates.push((cert, handle));
            }
        }
    }
    if candidates.is_empty() {
        return Outcome::Unknown(issuer_name(sig));
    }

    let mut reasons = Vec::new();
    for (cert, handle) in candidates {
        let name = handle.to_hex();
        match check_key(policy, cert, &handle, sig, sig_time, hash) {
            Ok(()) => return Outcome::Good,
            Err(why) => reasons.push(format!("key {name}: {why}")),
        }
    }
    Outcome::Bad(reasons.join("; "))
}

/// Checks `sig` against the key `handle` of `cert`, with the key judged at
/// the signature's creation time.
fn check_key<F>(
    policy: &dyn Policy,
    cert: &Cert,
    handle: &KeyHandle,
    sig: &Signature,
    sig_time: std::time::SystemTime,
    hash: &mut F,
) -> Result<(), Rejection>
where
    F: FnMut(&Signature, &mut HashContext) -> Result<(), Rejection>,
{
    let vc = cert
        .with_policy(policy, sig_time)
        .map_err(|e| Rejection::CertificateInvalid(one_line(&e)))?;
    vc.alive()
        .map_err(|e| Rejection::CertificateNotAlive(one_line(&e)))?;
    if let RevocationStatus::Revoked(_) = vc.revocation_status() {
        return Err(Rejection::CertificateRevoked);
    }
    let ka = vc
        .keys()
        .key_handle(handle.clone())
        .next()
        .ok_or(Rejection::NoValidBinding)?;
    if !ka.for_signing() {
        return Err(Rejection::NotASigningKey);
    }
    ka.alive()
        .map_err(|e| Rejection::KeyNotAlive(one_line(&e)))?;
    if let RevocationStatus::Revoked(_) = ka.revocation_status() {
        return Err(Rejection::KeyRevoked);
    }
    policy
        .signature(sig, HashAlgoSecurity::CollisionResistance)
        .map_err(|e| Rejection::Policy(one_line(&e)))?;
    sig.signature_alive(None, None)
        .map_err(|e| Rejection::SignatureNotAlive(one_line(&e)))?;

    let mut ctx = sig
        .hash_algo()
        .context()
        .map_err(|e| Rejection::HashAlgorithm(one_line(&e)))?
        .for_signature(sig.version());
    if let Some(salt) = sig.salt() {
        ctx.update(salt);
    }
    hash(sig, &mut ctx)?;
    sig.verify_hash(ka.key(), ctx)
        .map_err(|e| Rejection::Mismatch(one_line(&e)))
}

/// Why one key does not verify one signature (a part of
/// [`SignatureError::Bad`]).
#[derive(Debug, thiserror::Error)]
enum Rejection {
    /// The signature is not over a document (text or binary).
    #[error("signature type {0} is not a document signature")]
    NotADocumentSignature(SignatureType),
    /// The policy rejects the certificate at the signature's time.
    #[error("certificate not valid when the signature was made: {0}")]
    CertificateInvalid(String),
    /// The certificate had expired (or was not yet valid).
    #[error("certificate not alive when the signature was made: {0}")]
    CertificateNotAlive(String),
    /// The certificate is revoked.
    #[error("certificate is revoked")]
    CertificateRevoked,
    /// The key has no valid binding to the certificate.
    #[error("key not valid when the signature was made (bad or missing binding)")]
    NoValidBinding,
    /// The key may not sign.
    #[error("key is not a signing key")]
    NotASigningKey,
    /// The key had expired (or was not yet valid).
    #[error("key not alive when the signature was made: {0}")]
    KeyNotAlive(String),
    /// The key is revoked.
    #[error("key is revoked")]
    KeyRevoked,
    /// The policy rejects the signature (e.g. a weak hash).
    #[error("signature rejected by policy: {0}")]
    Policy(String),
    /// The signature has expired (or is from the future).
    #[error("signature not alive: {0}")]
    SignatureNotAlive(String),
    /// The signature's hash algorithm is not available.
    #[error("{0}")]
    HashAlgorithm(String),
    /// The content does not match the signature.
    #[error("signature does not match the content (altered?): {0}")]
    Mismatch(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in keyring is the Ubuntu cloud-image keyring: its two
    /// keys, a real Ubuntu signature verifies with it, and its exports
    /// read back as the same keys.
    #[test]
    fn built_in_keyring_is_the_ubuntu_cloud_image_keyring() {
        let ring = Keyring::built_in();
        let fingerprints: Vec<String> = ring.keys().into_iter().map(|k| k.fingerprint).collect();
        assert_eq!(
            fingerprints,
            [
                "D2EB44626FDDC30B513D5BB71A5D6C4C7DB87C81",
                "4A3CE3CD565D7EB5C810E2B97FF3F408476CF100"
            ]
        );
        assert_eq!(
            ring.keys()[0].user_id,
            "UEC Image Automatic Signing Key <cdimage@ubuntu.com>"
        );
        let data = include_bytes!("../../../tests/fixtures/keys/ubuntu-noble-SHA256SUMS");
        let sig = include_bytes!("../../../tests/fixtures/keys/ubuntu-noble-SHA256SUMS.gpg");
        verify_detached(&ring, data, sig).expect("a real Ubuntu signature");
        assert!(verify_detached(&ring, b"other data", sig).is_err());
        for export in [ring.to_binary().unwrap(), ring.to_armored().unwrap()] {
            let back = Keyring::from_bytes(&export).unwrap();
            assert_eq!(back.keys(), ring.keys());
        }
        assert_eq!(
            BUILT_IN_KEYRING,
            include_bytes!("../../../tests/fixtures/keys/ubuntu-cloudimage-keyring.gpg")
        );
    }

    const SIG: &str = "-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n";

    fn doc(headers: &str, body: &str) -> Vec<u8> {
        format!("-----BEGIN PGP SIGNED MESSAGE-----\n{headers}\n{body}\n{SIG}").into_bytes()
    }

    #[test]
    fn body_skips_all_headers() {
        let d = doc("Hash: SHA256\nHash: SHA512\nComment: hello\n", "{\"a\": 1}");
        assert_eq!(cleartext_body(&d).unwrap(), b"{\"a\": 1}");
    }

    #[test]
    fn body_without_headers() {
        let d = doc("", "{}\n[]");
        assert_eq!(cleartext_body(&d).unwrap(), b"{}\n[]");
    }

    #[test]
    fn body_undoes_dash_escaping_only_at_line_start() {
        let d = doc("Hash: SHA256\n", "- -x\n- - y\na - b\n- ");
        assert_eq!(cleartext_body(&d).unwrap(), b"-x\n- y\na - b\n");
    }

    #[test]
    fn body_keeps_crlf_and_drops_final_break() {
        let d = b"-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\n{\"a\": 1}  \r\n- -\r\nend\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\nAAAA\r\n-----END PGP SIGNATURE-----\r\n";
        assert_eq!(cleartext_body(d).unwrap(), b"{\"a\": 1}\r\n-\r\nend");
    }

    #[test]
    fn body_keeps_trailing_newline_if_empty_line_before_signature() {
        let d = doc("Hash: SHA256\n", "x\n");
        assert_eq!(cleartext_body(&d).unwrap(), b"x\n");
    }

    #[test]
    fn body_drops_trailing_blanks() {
        let d = doc("Hash: SHA256\n", "a \t\n- b  \n \nc\t");
        assert_eq!(cleartext_body(&d).unwrap(), b"a\nb\n\nc");
    }

    #[test]
    fn keyring_and_key_are_shareable() {
        fn check<T: Send + Sync + Clone + fmt::Debug>() {}
        check::<Keyring>();
        check::<SigningKey>();
    }

    #[test]
    fn empty_body() {
        let d = format!("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{SIG}");
        assert_eq!(cleartext_body(d.as_bytes()).unwrap(), b"");
    }

    #[test]
    fn unsigned_documents() {
        assert!(matches!(
            cleartext_body(b"{\"a\": 1}\n"),
            Err(SignatureError::Unsigned)
        ));
        assert!(matches!(cleartext_body(b""), Err(SignatureError::Unsigned)));
        assert!(matches!(
            cleartext_body(b"\n\n"),
            Err(SignatureError::Unsigned)
        ));
    }

    #[test]
    fn framing_errors_are_malformed() {
        let cases: Vec<Vec<u8>> = vec![
            b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n".to_vec(),
            b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{}\n".to_vec(),
            b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{}\n-----BEGIN PGP SIGNATURE-----\n\nAAAA\n".to_vec(),
            format!("-----BEGIN PGP SIGNED MESSAGE-----\n{SIG}").into_bytes(),
            format!("junk\n-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{{}}\n{SIG}").into_bytes(),
            format!("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{{}}\n{SIG}trailing").into_bytes(),
        ];
        for c in cases {
            let r = cleartext_body(&c);
            assert!(
                matches!(r, Err(SignatureError::Malformed(_))),
                "{:?}: {r:?}",
                String::from_utf8_lossy(&c)
            );
        }
    }

    #[test]
    fn leading_blank_lines_and_bom_are_accepted() {
        let mut d = b"\xEF\xBB\xBF\n\n".to_vec();
        d.extend(doc("Hash: SHA256\n", "{}"));
        assert_eq!(cleartext_body(&d).unwrap(), b"{}");
    }

    fn digest(f: impl FnOnce(&mut HashContext)) -> Vec<u8> {
        let mut ctx = HashAlgorithm::SHA256.context().unwrap().for_digest();
        f(&mut ctx);
        ctx.into_digest().unwrap()
    }

    #[test]
    fn cleartext_canonical_form() {
        let a = digest(|c| hash_cleartext(c, b"a \t\r\nb\t\n\nc  "));
        let b = digest(|c| c.update(b"a\r\nb\r\n\r\nc"));
        assert_eq!(a, b);
    }

    #[test]
    fn text_canonical_form() {
        let a = digest(|c| hash_text(c, b"a \n b\r\nc\rd\n"));
        let b = digest(|c| c.update(b"a \r\n b\r\nc\r\nd\r\n"));
        assert_eq!(a, b);
    }
}
