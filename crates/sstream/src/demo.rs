//! `sstream demo`: the whole job on a built-in sample, offline. It makes a
//! signed MAAS-like stream, serves it on loopback, mirrors it with the MAAS
//! documentation's two command lines, serves the mirror, verifies it over
//! HTTP as a client would, and prints the boot-source URL for MAAS.

use anyhow::{Context, Result, anyhow, bail};
use simplestreams::metadata::DEFAULT_KEYRING;
use simplestreams::openpgp::SigningKey;
use simplestreams::sample::{SampleRelease, SampleSpec, SignError, generate};
use simplestreams::units::human_size;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Options of `sstream demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where to put the sample stream, the keyring and the mirror
    /// (replaced if it holds an earlier demo).
    #[arg(long, default_value = "sstream-demo")]
    pub dir: PathBuf,
    /// Keep serving the mirror until Ctrl-C instead of stopping at the end.
    #[arg(long)]
    pub serve: bool,
}

/// Marks a directory as made by the demo, so that it may be replaced.
const MARKER: &str = ".sstream-demo";

/// A child `sstream serve`, stopped on drop.
struct Served {
    child: Child,
    url: String,
}

impl Served {
    fn start(exe: &Path, dir: &Path) -> Result<Served> {
        let mut child = Command::new(exe)
            .args(["serve", &dir.to_string_lossy(), "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the server")?;
        let line = child
            .stdout
            .take()
            .and_then(|out| BufReader::new(out).lines().next())
            .and_then(Result::ok)
            .unwrap_or_default();
        let url = line.rsplit(' ').next().unwrap_or_default().to_owned();
        if !url.starts_with("http://") {
            let _ = child.kill();
            bail!("the server did not start (said {line:?})");
        }
        Ok(Served { child, url })
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn step(text: &str) {
    println!("\n==> {text}");
}

fn run_self(exe: &Path, args: &[&str]) -> Result<()> {
    println!(
        "$ sstream {}",
        args.iter()
            .map(|a| shell_word(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let status = Command::new(exe)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(anyhow!("`sstream {}` failed ({status})", args.join(" ")))
    }
}

fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_=./:".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            bail!(
                "{} exists and was not made by the demo: choose another --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    std::fs::write(dir.join(MARKER), "made by `sstream demo`\n")
        .with_context(|| dir.display().to_string())
}

/// The sample: trusty, xenial and jammy on amd64 and arm64, three daily
/// versions, bootloaders; small payloads.
fn sample_spec() -> SampleSpec {
    SampleSpec {
        releases: vec![
            SampleRelease::new("trusty", "14.04"),
            SampleRelease::new("xenial", "16.04"),
            SampleRelease::new("jammy", "22.04"),
        ],
        versions: vec!["20250601".into(), "20250615".into(), "20250701".into()],
        payload_bytes: 256 * 1024,
        ..SampleSpec::default()
    }
}

/// The filters of the MAAS documentation's two `sstream-mirror` lines.
const SEED_FILTERS: [&[&str]; 2] = [
    &["arch=amd64", "release~(trusty|xenial)"],
    &["os~(grub*|pxelinux)"],
];

/// `mirror --keyring=K SRC OUT FILTERS... --max=1 EXTRA`, as in the documentation.
fn mirror_args<'a>(
    k: &'a str,
    src: &'a str,
    out: &'a str,
    filters: &[&'a str],
    extra: &'a str,
) -> Vec<&'a str> {
    let mut args = vec!["mirror", k, src, out];
    args.extend_from_slice(filters);
    args.extend(["--max=1", extra]);
    args
}

/// The command that serves the demo mirror, as one shell line: this
/// program (by name when it is the `sstream` found on `PATH`) with the
/// mirror's path, on the server's default address.
fn serve_command(exe: &Path, mirror: &Path) -> String {
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let found = d.join("sstream");
            found.canonicalize().ok() == exe.canonicalize().ok() && found.is_file()
        })
    });
    let program = if on_path {
        "sstream".to_owned()
    } else {
        shell_word(&exe.to_string_lossy())
    };
    format!(
        "{program} serve {} --listen 0.0.0.0:8080",
        shell_word(&mirror.to_string_lossy())
    )
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    prepare_dir(&args.dir)?;
    let dir = std::path::absolute(&args.dir).with_context(|| args.dir.display().to_string())?;
    let (source, mirror, keyring) = (
        dir.join("source"),
        dir.join("mirror"),
        dir.join("keyring.gpg"),
    );

    step("Making a signing key and a signed MAAS-like sample stream");
    let key = SigningKey::generate("sstream demo <demo@sstream.invalid>")?;
    let public = key.public_keyring_binary()?;
    std::fs::write(&keyring, public).with_context(|| keyring.display().to_string())?;
    let signer = |text: &[u8]| key.clearsign(text).map_err(SignError::from);
    let stream = generate(&sample_spec(), &source, Some(&signer))
        .with_context(|| source.display().to_string())?;
    println!(
        "{} files, {} in {}; keyring {}",
        stream.files,
        human_size(stream.bytes),
        source.display(),
        keyring.display()
    );

    step("Serving the sample stream on loopback (standing in for images.maas.io)");
    let upstream = Served::start(&exe, &source)?;
    println!("IMAGE_SRC={}", upstream.url);

    step("Mirroring with the MAAS documentation's two command lines");
    let k = format!("--keyring={}", keyring.display());
    let out = mirror.to_string_lossy().into_owned();
    for filters in SEED_FILTERS {
        run_self(
            &exe,
            &mirror_args(&k, &upstream.url, &out, filters, "--progress"),
        )?;
    }

    step(
        "Running both again, as cron would: upstream has not changed, so nothing is \
         downloaded; each products file is revalidated (\"unchanged\"), and a run \
         publishes its metadata again where the other command line's run replaced it",
    );
    for filters in SEED_FILTERS {
        run_self(&exe, &mirror_args(&k, &upstream.url, &out, filters, "-v"))?;
    }
    drop(upstream);

    step("Serving the mirror and checking it over HTTP as MAAS would");
    let local = Served::start(&exe, &mirror)?;
    run_self(&exe, &["verify", &k, &local.url])?;
    println!("The newest squashfs MAAS would boot for each mirrored kernel:");
    run_self(
        &exe,
        &[
            "query",
            &k,
            &local.url,
            "arch=amd64",
            "release~(trusty|xenial)",
            "ftype=squashfs",
            "--max=1",
            "-o",
            "%(release)s %(arch)s %(subarch)s %(version_name)s %(item_url)s",
        ],
    )?;

    step("Done");
    println!("Mirror:        {}", mirror.display());
    println!("Boot source:   {}", local.url);
    println!("Keyring:       {}", keyring.display());
    println!(
        "Point MAAS at it (for a mirror of images.maas.io, keyring_filename={DEFAULT_KEYRING}):"
    );
    println!(
        "  maas $PROFILE boot-source update 1 url={} keyring_filename={}",
        local.url,
        keyring.display()
    );
    println!("  maas $PROFILE boot-resources import");
    if args.serve {
        println!(
            "\nServing {} at {} until Ctrl-C.",
            mirror.display(),
            local.url
        );
        let mut local = local;
        let _ = local.child.wait();
    } else {
        println!("The demo's server has stopped. Serve the mirror with:");
        println!("  {}", serve_command(&exe, &mirror));
    }
    Ok(())
}
