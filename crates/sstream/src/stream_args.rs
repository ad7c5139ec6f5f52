//! Options shared by every command that reads a stream (mirror, query,
//! verify): where its entry is, how it is verified, and logging.

use crate::error::CliError;
use clap::Args;
use simplestreams::metadata::Verification;
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
        let spec = split_source(source, self.path.as_deref())?;
        let verification =
            Verification::for_entry(&spec.entry, self.keyring.as_deref(), self.no_verify)?;
        Ok((spec, verification))
    }
}
