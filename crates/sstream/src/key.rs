//! `sstream key generate`, `sstream key export` and `sstream key
//! show-default` (the built-in Ubuntu cloud-image keyring): the local signing key of
//! a re-signed mirror, and its public part for the mirror's clients (MAAS's
//! `keyring_filename` or `keyring_data`).

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use simplestreams::durable::sync_dir;
use simplestreams::layout::temp_name;
use simplestreams::openpgp::{KeyAlgorithm, Keyring, SecretKey, SigningKey};
use std::fs;
use std::io::{ErrorKind, IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Options of `sstream key`.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// What to do with the key.
    #[command(subcommand)]
    pub command: KeyCommand,
}

/// The `sstream key` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum KeyCommand {
    /// Generate a signing key (Ed25519, or RSA 4096 with --rsa; OpenPGP v4,
    /// no passphrase), written ASCII-armored with mode 0600; prints its
    /// fingerprint.
    Generate(GenerateArgs),
    /// Write the public key of a signing key for the mirror's clients: a
    /// binary keyring (MAAS keyring_filename, gpgv --keyring), armored, or
    /// the base64 text of the binary keyring (MAAS keyring_data).
    Export(ExportArgs),
    /// Show the built-in Ubuntu cloud-image keyring (the trust anchor when
    /// no --keyring is given and /usr/share/keyrings/ubuntu-cloudimage-keyring.gpg
    /// is absent): each key's fingerprint and user ID; with --output, write
    /// it as `key export` does.
    ShowDefault(ShowDefaultArgs),
}

/// Options of `sstream key show-default`.
#[derive(Debug, Clone, Args)]
pub struct ShowDefaultArgs {
    /// Also write the keyring here ("-": standard output, instead of the list).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// An ASCII-armored public key block instead of a binary keyring.
    #[arg(long, conflicts_with = "base64", requires = "output")]
    pub armor: bool,
    /// The binary keyring as one line of base64 (MAAS keyring_data).
    #[arg(long, requires = "output")]
    pub base64: bool,
}

/// Options of `sstream key generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Where to write the secret key.
    #[arg(long, short = 'o', value_name = "KEY")]
    pub output: PathBuf,
    /// The key's user ID (default: "sstream mirror (HOSTNAME)").
    #[arg(long, value_name = "'NAME <EMAIL>'")]
    pub uid: Option<String>,
    /// An RSA 4096 key instead of Ed25519.
    #[arg(long)]
    pub rsa: bool,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

/// Options of `sstream key export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The secret key file (armored or binary).
    pub key: PathBuf,
    /// Where to write the public key ("-": standard output).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
    /// An ASCII-armored public key block instead of a binary keyring.
    #[arg(long, conflicts_with = "base64")]
    pub armor: bool,
    /// The binary keyring as one line of base64 (MAAS keyring_data).
    #[arg(long)]
    pub base64: bool,
}

/// Runs `sstream key`.
pub fn run(args: KeyArgs) -> Result<()> {
    match args.command {
        KeyCommand::Generate(a) => generate(a),
        KeyCommand::Export(a) => export(a),
        KeyCommand::ShowDefault(a) => show_default(a),
    }
}

fn generate(args: GenerateArgs) -> Result<()> {
    let out = &args.output;
    if !args.force && fs::symlink_metadata(out).is_ok() {
        bail!(
            "{}: already exists; use --force to replace it",
            out.display()
        );
    }
    let uid = args.uid.clone().unwrap_or_else(default_uid);
    let algorithm = if args.rsa {
        KeyAlgorithm::Rsa4096
    } else {
        KeyAlgorithm::Ed25519
    };
    let key = SigningKey::generate_with(&uid, algorithm)?;
    let armored = key
        .secret_key_armored()
        .with_context(|| out.display().to_string())?;
    write_file(out, &armored, 0o600, args.force)?;
    println!("{}", key.fingerprint());
    Ok(())
}

/// "sstream mirror (HOSTNAME)", or "sstream mirror" when the host has no name.
fn default_uid() -> String {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    match host.trim() {
        "" => "sstream mirror".to_string(),
        host => format!("sstream mirror ({host})"),
    }
}

fn export(args: ExportArgs) -> Result<()> {
    let at = || args.key.display().to_string();
    let key = SecretKey::from_file(&args.key).with_context(at)?;
    let bytes = if args.armor {
        key.public_keyring_armored().with_context(at)?
    } else {
        key.public_keyring_binary().with_context(at)?
    };
    let form = PublicForm::of(args.armor, args.base64);
    write_public(&args.output, form, bytes)
}

fn show_default(args: ShowDefaultArgs) -> Result<()> {
    let keyring = Keyring::built_in();
    let to_stdout = args.output.as_deref() == Some(Path::new("-"));
    if !to_stdout {
        for key in keyring.keys() {
            println!("{}  {}", key.fingerprint, key.user_id);
        }
    }
    let Some(output) = args.output else {
        return Ok(());
    };
    let at = "the built-in keyring";
    let bytes = if args.armor {
        keyring.to_armored().context(at)?
    } else {
        keyring.to_binary().context(at)?
    };
    write_public(&output, PublicForm::of(args.armor, args.base64), bytes)
}

/// How a public keyring is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PublicForm {
    /// A binary keyring.
    Binary,
    /// ASCII armor (the bytes are already armored).
    Armored,
    /// The binary keyring as one line of base64.
    Base64,
}

impl PublicForm {
    fn of(armor: bool, base64: bool) -> PublicForm {
        match (armor, base64) {
            (true, _) => PublicForm::Armored,
            (false, true) => PublicForm::Base64,
            (false, false) => PublicForm::Binary,
        }
    }
}

/// Writes a public keyring (`bytes`: binary, or armored for
/// [`PublicForm::Armored`]) to `output` ("-": standard output, never a
/// binary one to a terminal) in `form`.
fn write_public(output: &Path, form: PublicForm, bytes: Vec<u8>) -> Result<()> {
    let bytes = match form {
        PublicForm::Base64 => {
            let mut text = base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into_bytes();
            text.push(b'\n');
            text
        }
        PublicForm::Binary | PublicForm::Armored => bytes,
    };
    if output == Path::new("-") {
        let mut stdout = std::io::stdout();
        if form == PublicForm::Binary && stdout.is_terminal() {
            bail!(
                "refusing to write a binary keyring to a terminal; use --output FILE, --armor or --base64"
            );
        }
        return stdout
            .write_all(&bytes)
            .and_then(|()| stdout.flush())
            .context("standard output");
    }
    write_file(output, &bytes, 0o644, true)
}

/// Writes `bytes` to `path` through a temporary file of mode `mode` (the
/// umask aside) in the
/// same directory, fsynced, then renamed into place (`replace`) or linked
/// there only if nothing is (so that an existing file is never clobbered).
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", path.display()))?;
    let tmp = path.with_file_name(temp_name(&name.to_string_lossy()));
    let io = |p: &Path, e: std::io::Error| anyhow::Error::new(e).context(p.display().to_string());
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(io(&tmp, e)),
        _ => {}
    }
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // Exactly `mode`, whatever the umask.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(&tmp, e));
    }
    let placed = if replace {
        fs::rename(&tmp, path)
    } else {
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        linked
    };
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(match e.kind() {
            ErrorKind::AlreadyExists => anyhow!(
                "{}: already exists; use --force to replace it",
                path.display()
            ),
            _ => io(path, e),
        });
    }
    // The new entry is made durable too: a key reported written must not
    // vanish with a power cut (the library's one directory sync).
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    sync_dir(dir.unwrap_or(Path::new(".")))?;
    Ok(())
}
