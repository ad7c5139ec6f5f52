//! A small logger: `-v` levels to stderr, optionally also to `--log-file`.

use anyhow::Context;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

struct Logger {
    level: log::LevelFilter,
    file: Option<Mutex<std::fs::File>>,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Only our own crates speak; dependencies' chatter stays out.
        let target = record.target();
        if !(target.starts_with("simplestreams") || target.starts_with("sstream")) {
            return;
        }
        let line = format!(
            "{}: {}\n",
            record.level().as_str().to_lowercase(),
            record.args()
        );
        match &self.file {
            Some(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the logger: warnings by default, info with `-v`, debug with `-vv`.
pub fn init(verbose: u8, log_file: Option<&Path>) -> anyhow::Result<()> {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    let file = match log_file {
        Some(p) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| p.display().to_string())?,
        )),
        None => None,
    };
    let _ = log::set_boxed_logger(Box::new(Logger { level, file }));
    log::set_max_level(level);
    Ok(())
}
