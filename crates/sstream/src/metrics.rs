//! `sstream sync --metrics-textfile DIR`: the Prometheus metrics of the
//! configured jobs in a file for node_exporter's textfile collector. The
//! text is [`simplestreams::metrics::render_with_views`]'s, as the
//! server's `/metrics`, with a gauge per view of the configuration.

use simplestreams::metrics::{ViewSample, render_with_views};
use simplestreams::path::RelPath;
use simplestreams::status::StatusRecord;
use simplestreams::store::DirStore;
use std::path::Path;

/// The file `--metrics-textfile DIR` writes.
pub const TEXTFILE_NAME: &str = "sstream.prom";

/// Writes the metrics of `records` and `views`
/// ([`render_with_views`]) to `DIR/`[`TEXTFILE_NAME`] atomically (a
/// temporary file, hidden from the collector, renamed over the old one).
pub fn write_textfile(
    dir: &Path,
    records: &[StatusRecord],
    views: &[ViewSample],
) -> anyhow::Result<()> {
    if !dir.is_dir() {
        anyhow::bail!(
            "{}: not a directory (the metrics textfile directory)",
            dir.display()
        );
    }
    let rel = RelPath::parse(TEXTFILE_NAME)?;
    DirStore::new(dir).write_atomic_blocking(
        &rel,
        render_with_views(records, views, std::time::SystemTime::now()).as_bytes(),
    )?;
    Ok(())
}
