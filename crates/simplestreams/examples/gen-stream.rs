//! Writes a MAAS-like sample stream (unsigned) for the benchmark.
//!
//! ```text
//! gen-stream [--payload-bytes N] [--releases trusty:14.04,xenial:16.04]
//!            [--arches amd64,arm64] [--versions 20250615,20250718]
//!            [--bootloader-versions 20230222.0,20231004.0] [--list FILE] OUT
//! ```
//!
//! Deterministic: the same options always give the same bytes. Generating
//! into a tree that already holds payloads only rewrites missing ones.
//! `--list` writes the referenced payload paths (one per line, relative to
//! OUT). Prints a one-line summary.

use simplestreams::sample::{SampleRelease, SampleSpec, generate};
use std::path::PathBuf;
use std::process::ExitCode;

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn run() -> Result<(), String> {
    let mut spec = SampleSpec::default();
    let mut out = None;
    let mut list_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--payload-bytes" => {
                let v = value()?;
                spec.payload_bytes = v.parse().map_err(|e| format!("--payload-bytes {v}: {e}"))?;
            }
            "--releases" => {
                spec.releases = list(&value()?)
                    .iter()
                    .map(|r| match r.split_once(':') {
                        Some((c, v)) => Ok(SampleRelease::new(c, v)),
                        None => Err(format!("--releases {r}: expected CODENAME:VERSION")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--arches" => spec.arches = list(&value()?),
            "--versions" => spec.versions = list(&value()?),
            "--bootloader-versions" => spec.bootloader_versions = list(&value()?),
            "--list" => list_file = Some(PathBuf::from(value()?)),
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
            _ => out = Some(PathBuf::from(arg)),
        }
    }
    let out = out.ok_or("missing output directory")?;
    let s = generate(&spec, &out, None).map_err(|e| format!("{}: {e}", out.display()))?;
    if let Some(file) = list_file {
        let text: String = s.payloads.keys().map(|p| format!("{p}\n")).collect();
        std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    println!(
        "{}: {} files, {} bytes, {} items",
        out.display(),
        s.files,
        s.bytes,
        s.items
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-stream: error: {e}");
            ExitCode::FAILURE
        }
    }
}
