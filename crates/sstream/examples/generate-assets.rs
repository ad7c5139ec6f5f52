//! Generates the man pages and shell completions of the Debian package from
//! the clap definitions of the three binaries, so they never drift from
//! `--help`. `scripts/package.sh` runs it before `cargo deb`:
//!
//! ```text
//! cargo run --release --example generate-assets -- target/assets
//! ```
//!
//! The directory must be new or empty (a stale page would be packaged). It
//! receives:
//! - `man/man1/sstream.1`, `sstream-mirror.1`, `sstream-query.1`, and
//!   `sstream-<subcommand>.1` for every other subcommand. A subcommand that
//!   has a drop-in binary (`sstream mirror`, `sstream query`) is documented
//!   by the binary's page, which has the same name; the two must take the
//!   same arguments, or generation fails.
//! - `completions/bash/<binary>`, `completions/zsh/_<binary>` and
//!   `completions/fish/<binary>.fish`, the names each shell's
//!   vendor directory expects.

use clap::Command;
use clap_complete::Shell;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: generate-assets DIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(&dir)) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("generate-assets: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// One file to write, relative to the output directory.
struct Asset {
    path: PathBuf,
    contents: Vec<u8>,
}

/// Writes every man page and completion file into `dir`.
fn generate(dir: &Path) -> Result<Vec<PathBuf>, String> {
    ensure_empty(dir)?;
    let [sstream, mirror, query] = sstream::cli::commands();
    let drop_ins = [mirror, query];
    let mut assets = man_pages(&sstream, &drop_ins)?;
    for command in std::iter::once(&sstream).chain(&drop_ins) {
        assets.extend(completions(command));
    }
    assets.iter().map(|asset| write(dir, asset)).collect()
}

fn ensure_empty(dir: &Path) -> Result<(), String> {
    match fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "{}: directory is not empty (stale files would be packaged)",
            dir.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// The pages of `sstream`, of its subcommands (but those a drop-in's page
/// documents), and of the drop-ins.
fn man_pages(sstream: &Command, drop_ins: &[Command]) -> Result<Vec<Asset>, String> {
    let mut top = sstream.clone().disable_help_subcommand(true);
    top.build();
    let mut pages = vec![man_page(&top, "")?];
    for sub in subcommands_below(&top) {
        let name = page_name(sub);
        match drop_ins.iter().find(|d| d.get_name() == name) {
            Some(drop_in) => same_arguments(sub, drop_in)?,
            None => pages.push(man_page(sub, &see_also(top.get_name(), None))?),
        }
    }
    for drop_in in drop_ins {
        let subcommand = top
            .get_subcommands()
            .find(|s| page_name(s) == drop_in.get_name())
            .and_then(Command::get_bin_name);
        pages.push(man_page(drop_in, &see_also(top.get_name(), subcommand))?);
    }
    Ok(pages)
}

/// Every visible subcommand, recursively (depth first).
fn subcommands_below(command: &Command) -> Vec<&Command> {
    command
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .flat_map(|s| std::iter::once(s).chain(subcommands_below(s)))
        .collect()
}

/// `sstream-serve` for `sstream serve` (clap's display name once built).
fn page_name(command: &Command) -> &str {
    command
        .get_display_name()
        .unwrap_or_else(|| command.get_name())
}

/// Fails unless the subcommand and its drop-in binary take the same
/// arguments, since one page documents both.
fn same_arguments(subcommand: &Command, drop_in: &Command) -> Result<(), String> {
    let ids = |c: &Command| -> BTreeSet<String> {
        c.get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| id != "help" && id != "version")
            .collect()
    };
    if ids(subcommand) == ids(drop_in) {
        Ok(())
    } else {
        Err(format!(
            "`{}` and `{}` take different arguments, but share the page {}.1",
            subcommand
                .get_bin_name()
                .unwrap_or_else(|| subcommand.get_name()),
            drop_in.get_name(),
            drop_in.get_name()
        ))
    }
}

fn man_page(command: &Command, see_also: &str) -> Result<Asset, String> {
    let man = clap_mangen::Man::new(command.clone());
    let mut contents = Vec::new();
    man.render(&mut contents)
        .map_err(|e| format!("rendering {}: {e}", man.get_filename()))?;
    contents.extend_from_slice(see_also.as_bytes());
    Ok(Asset {
        path: Path::new("man/man1").join(man.get_filename()),
        contents,
    })
}

/// The SEE ALSO section of every page but `sstream.1` (whose SUBCOMMANDS
/// section names the others): `sstream.1`, and for a drop-in the
/// subcommand it equals.
fn see_also(top: &str, same_as: Option<&str>) -> String {
    let mut section = format!(".SH \"SEE ALSO\"\n{}\n", page_ref(top));
    if let Some(subcommand) = same_as {
        section.push_str(&format!(
            ".PP\n\\fB{}\\fR takes the same arguments.\n",
            roff_escape(subcommand)
        ));
    }
    section
}

/// `\fBsstream\-mirror\fR(1)`.
fn page_ref(name: &str) -> String {
    format!("\\fB{}\\fR(1)", roff_escape(name))
}

fn roff_escape(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// The bash, zsh and fish completions of one binary.
fn completions(command: &Command) -> Vec<Asset> {
    let name = command.get_name().to_owned();
    [
        (Shell::Bash, format!("completions/bash/{name}")),
        (Shell::Zsh, format!("completions/zsh/_{name}")),
        (Shell::Fish, format!("completions/fish/{name}.fish")),
    ]
    .into_iter()
    .map(|(shell, path)| {
        let mut contents = Vec::new();
        clap_complete::generate(shell, &mut command.clone(), &name, &mut contents);
        Asset {
            path: PathBuf::from(path),
            contents,
        }
    })
    .collect()
}

fn write(dir: &Path, asset: &Asset) -> Result<PathBuf, String> {
    let path = dir.join(&asset.path);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    fs::write(&path, &asset.contents).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
