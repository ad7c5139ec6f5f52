//! Options shared by every command that reads a stream (mirror, query,
//! verify): where its entry is, how it is verified, and logging.

use crate::error::CliError;
use clap::Args;
use simplestreams::metadata::Verification;
use simplestreams::path::RelPath;
use simplestreams::source::{SourceSpec, split_source};
use std::path::PathBuf;

/// How a stream is read and logged.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// The index or products file to start from, relative to the source root.
    #[arg(long)]
    pub path: Option<String>,
    /// More output (repeatable).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Write the log to this file as well as to stderr.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// OpenPGP keyring (binary or armored) used to verify signed metadata.
    #[arg(long)]
    pub keyring: Option<PathBuf>,
    /// Do not verify signatures of signed (.sjson) metadata.
    #[arg(long, short = 'U')]
    pub no_verify: bool,
}

impl StreamArgs {
    /// Installs the logger these options ask for.
    pub fn init_logging(&self) -> Result<(), CliError> {
        Ok(crate::logging::init(
            self.verbose,
            self.log_file.as_deref(),
        )?)
    }

    /// Splits `source` into root and entry document, and loads what
    /// verifying it takes (see [`Verification::for_entry`]).
    pub fn open(&self, source: &str) -> Result<(SourceSpec, Verification), CliError> {
        self.open_with(source, |_| Ok::<(), std::convert::Infallible>(()))?
            .map_err(|never| match never {})
    }

    /// [`open`](Self::open), with `discover` settling the entry document
    /// after the source is split and before its verification is loaded
    /// (`sstream verify` reads a mirror directory's entry from what it
    /// has). A failure of `discover` is given as the inner error.
    pub fn open_with<E>(
        &self,
        source: &str,
        discover: impl FnOnce(&mut SourceSpec) -> Result<(), E>,
    ) -> Result<Result<(SourceSpec, Verification), E>, CliError> {
        let mut spec = split_source(source, self.path.as_deref())?;
        if let Err(e) = discover(&mut spec) {
            return Ok(Err(e));
        }
        let verification = self.verification(&spec.entry)?;
        Ok(Ok((spec, verification)))
    }

    /// What verifying the entry document `entry` takes (see
    /// [`Verification::for_entry`]).
    pub fn verification(&self, entry: &RelPath) -> Result<Verification, CliError> {
        Ok(Verification::for_entry(
            entry,
            self.keyring.as_deref(),
            self.no_verify,
        )?)
    }
}
