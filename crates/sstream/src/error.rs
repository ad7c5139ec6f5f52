//! The CLI's error: what went wrong, with its cause chain, and the exit
//! code it maps to (as cargo's `CliError`); and the exit codes of every
//! command, defined here only.

use std::fmt;

/// Exit code of a run that did what it was asked.
pub const EXIT_OK: u8 = 0;
/// Exit code of a failed run (for `verify`: problems found; for `status`:
/// a job unhealthy).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a usage error: bad arguments, an unusable configuration,
/// keyring or key.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of `verify` when the metadata is invalid (parse or signature
/// failure) or the target unreachable.
pub const EXIT_METADATA: u8 = 3;

/// The exit codes, as `sstream --help` (and so its man page) lists them.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success
  1  failure: a run, a job or a hook failed; verify found problems; status
     found a job failed or stale
  2  usage error: bad arguments, an unusable configuration, keyring or key
  3  verify: metadata invalid (parse or signature failure) or target
     unreachable";

/// An error of a command, and its exit code.
#[derive(Debug)]
pub struct CliError {
    /// The error, with its causes.
    pub error: anyhow::Error,
    /// The process exit code.
    pub code: u8,
}

impl CliError {
    /// A failure (exit 1).
    pub fn new(error: impl Into<anyhow::Error>) -> CliError {
        CliError {
            error: error.into(),
            code: EXIT_FAILURE,
        }
    }

    /// A usage error (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> CliError {
        CliError {
            error: error.into(),
            code: EXIT_USAGE,
        }
    }

    /// A usage error (exit 2) told by its message.
    pub fn usage_message(message: impl fmt::Display) -> CliError {
        CliError::usage(anyhow::anyhow!("{message}"))
    }

    /// The message, one line per problem: several item failures each on
    /// their own line, then the summary.
    pub fn lines(&self) -> Vec<String> {
        match self.error.downcast_ref::<simplestreams::Error>() {
            Some(simplestreams::Error::ItemsFailed { failures }) => {
                let mut lines: Vec<String> = failures.iter().map(ToString::to_string).collect();
                lines.push(format!(
                    "{} item(s) failed; the streams that need them were not published",
                    failures.len()
                ));
                lines
            }
            _ => vec![self.to_string()],
        }
    }

    /// The same error with another exit code.
    pub fn with_code(self, code: u8) -> CliError {
        CliError { code, ..self }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> CliError {
        CliError::new(error)
    }
}

impl From<simplestreams::Error> for CliError {
    fn from(error: simplestreams::Error) -> CliError {
        CliError::new(error)
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> CliError {
        CliError::new(error)
    }
}

impl fmt::Display for CliError {
    /// The error and each cause not already part of the message before it,
    /// joined with `: ` (library errors name their cause in their own text).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = String::new();
        for cause in self.error.chain() {
            let text = cause.to_string();
            if shown.contains(&text) {
                continue;
            }
            if !shown.is_empty() {
                shown.push_str(": ");
            }
            shown.push_str(&text);
        }
        f.write_str(&shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn chain_without_repeats() {
        let io = std::io::Error::other("disk on fire");
        let lib = simplestreams::Error::io("/m/x", io);
        let e = CliError::new(Err::<(), _>(lib).context("mirroring job maas").unwrap_err());
        assert_eq!(e.to_string(), "mirroring job maas: /m/x: disk on fire");
        assert_eq!(CliError::usage_message("bad").code, EXIT_USAGE);
    }
}
