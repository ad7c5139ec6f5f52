//! `sstream tls generate`: a small private certificate authority and a
//! server certificate signed by it, for `sstream serve --listen-tls` on a
//! private site (the LXD client accepts only HTTPS simplestreams remotes).
//!
//! Written into `--out`: `ca.pem` (the CA's certificate, what clients
//! trust), `ca.key`, `server.pem` (the server's certificate, then the CA's:
//! the chain `--tls-cert` takes) and `server.key` (`--tls-key`); keys are
//! mode 0600. The server certificate is `CA:FALSE`, for `serverAuth` only,
//! with a subject alternative name for every `--host` (a DNS name, or an
//! IP address). Keys are ECDSA P-256. Existing files are never replaced
//! without `--force`.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Options of `sstream tls`.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TlsCommand,
}

/// The `sstream tls` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum TlsCommand {
    /// Make a private CA (ca.pem, ca.key) and a server certificate signed
    /// by it (server.pem: the certificate then the CA; server.key) for
    /// `sstream serve --listen-tls`; prints how each client trusts it.
    Generate(GenerateArgs),
}

/// Options of `sstream tls generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// A name clients reach the server by: a DNS name or an IP address
    /// (repeatable; every one goes in the certificate).
    #[arg(long = "host", value_name = "NAME", required = true)]
    pub hosts: Vec<String>,
    /// The directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// How many days the server certificate is valid (the CA: ten years,
    /// or as long as the server certificate if that is longer).
    #[arg(long, value_name = "N", default_value_t = 365,
          value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: u32,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

/// The CA's validity, at least.
const CA_DAYS: u32 = 3650;

/// The four files, as PEM text.
pub struct Credentials {
    /// The CA's certificate.
    pub ca_pem: String,
    /// The CA's private key.
    pub ca_key: String,
    /// The server's certificate, then the CA's.
    pub server_chain: String,
    /// The server's private key.
    pub server_key: String,
}

/// Runs `sstream tls`.
pub fn run(args: TlsArgs) -> Result<()> {
    match args.command {
        TlsCommand::Generate(a) => generate(&a),
    }
}

fn generate(args: &GenerateArgs) -> Result<()> {
    let files = OutFiles::in_dir(&args.out);
    if !args.force {
        files.refuse_existing()?;
    }
    let creds = make_credentials(&args.hosts, args.days, OffsetDateTime::now_utc())?;
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;
    let write = |path: &Path, text: &str, mode: u32| {
        crate::key::write_file(path, text.as_bytes(), mode, args.force)
    };
    write(&files.ca_pem, &creds.ca_pem, 0o644)?;
    write(&files.ca_key, &creds.ca_key, 0o600)?;
    write(&files.server_pem, &creds.server_chain, 0o644)?;
    write(&files.server_key, &creds.server_key, 0o600)?;
    print!("{}", instructions(&files, &args.hosts, args.days));
    Ok(())
}

/// Where the four files go.
struct OutFiles {
    ca_pem: PathBuf,
    ca_key: PathBuf,
    server_pem: PathBuf,
    server_key: PathBuf,
}

impl OutFiles {
    fn in_dir(dir: &Path) -> Self {
        OutFiles {
            ca_pem: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_pem: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }

    fn all(&self) -> [&Path; 4] {
        [
            &self.ca_pem,
            &self.ca_key,
            &self.server_pem,
            &self.server_key,
        ]
    }

    /// Fails, before anything is written, if one of the files exists.
    fn refuse_existing(&self) -> Result<()> {
        for path in self.all() {
            if path.symlink_metadata().is_ok() {
                bail!(
                    "{}: already exists; use --force to replace it",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

/// Makes the CA and the server certificate for `hosts`, the server's valid
/// for `days` from `now`.
pub fn make_credentials(hosts: &[String], days: u32, now: OffsetDateTime) -> Result<Credentials> {
    let not_before = now - Duration::hours(1);
    let ca_key = KeyPair::generate().context("cannot generate the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA certificate")?;
    ca.distinguished_name = name("sstream private CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = now + Duration::days(i64::from(days.max(CA_DAYS)));
    let ca_cert = ca
        .self_signed(&ca_key)
        .context("cannot sign the CA certificate")?;

    let server_key = KeyPair::generate().context("cannot generate the server key")?;
    let mut server =
        CertificateParams::new(hosts.to_vec()).context("--host: not a DNS name or IP address")?;
    server.distinguished_name = name(&hosts[0]);
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    server.not_before = not_before;
    server.not_after = now + Duration::days(i64::from(days));
    let issuer = Issuer::new(ca, &ca_key);
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .context("cannot sign the server certificate")?;

    Ok(Credentials {
        ca_pem: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        server_chain: format!("{}{}", server_cert.pem(), ca_cert.pem()),
        server_key: server_key.serialize_pem(),
    })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// What to run next, and how each client comes to trust the server.
fn instructions(files: &OutFiles, hosts: &[String], days: u32) -> String {
    let host = &hosts[0];
    let ca = files.ca_pem.display();
    let chain = files.server_pem.display();
    let key = files.server_key.display();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Wrote {ca} (the private CA), {} (mode 0600), {chain} (server certificate for {}, \
         valid {days} days, then the CA) and {key} (mode 0600).",
        files.ca_key.display(),
        hosts.join(", ")
    );
    let _ = writeln!(
        out,
        "\nServe:\n  sstream serve MIRROR_DIR --listen-tls 0.0.0.0:8443 --tls-cert {chain} --tls-key {key}\n  \
         (kill -HUP the server after replacing the files: new connections get the new certificate)"
    );
    let _ = writeln!(out, "\nTrust it on each client:");
    let _ = writeln!(
        out,
        "  curl, Python, sstream:  SSL_CERT_FILE={ca}  (curl: --cacert {ca})"
    );
    let _ = writeln!(
        out,
        "  the system store:       sudo cp {ca} /usr/local/share/ca-certificates/sstream-ca.crt \
         && sudo update-ca-certificates"
    );
    let _ = writeln!(
        out,
        "  lxc:                    cp {chain} \"$LXD_CONF/servercerts/{host}.crt\"  \
         (LXD_CONF: ~/snap/lxd/common/config for the snap)\n                          \
         then: lxc remote add {host} https://{host}:8443/ --protocol simplestreams"
    );
    let _ = writeln!(
        out,
        "  MAAS:                   the CA in its host's system store (above), then restart the \
         region controller;\n                          boot source URL https://{host}:8443/"
    );
    let _ = writeln!(
        out,
        "\nKeep {} private: it signs certificates every client above trusts.",
        files.ca_key.display()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_that_is_neither_name_nor_address_is_refused() {
        let now = OffsetDateTime::now_utc();
        let err = make_credentials(&["bad name\u{e9}".to_owned()], 30, now)
            .err()
            .map(|e| format!("{e:#}"));
        assert!(
            err.as_deref().is_some_and(|e| e.contains("--host")),
            "{err:?}"
        );
    }

    #[test]
    fn the_chain_is_the_server_then_the_ca() {
        let now = OffsetDateTime::now_utc();
        let c = make_credentials(&["mirror.example".to_owned()], 30, now).expect("made");
        let n = c.server_chain.matches("BEGIN CERTIFICATE").count();
        assert_eq!(n, 2);
        assert!(c.server_chain.ends_with(&c.ca_pem));
        assert!(c.server_key.contains("PRIVATE KEY"));
    }
}
