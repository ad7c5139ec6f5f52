//! The space check made before anything is downloaded: the bytes the plan
//! adds against the free space of the store's filesystem, less a margin
//! kept free.
//!
//! What the plan needs counts each path once, nothing for content stored
//! once (linked, not downloaded: see [`crate::content`]) and, for a
//! download that resumes, only what is still missing from its staged
//! `.part`. The margin is `--min-free`, by default [`default_margin`]: 5%
//! of the filesystem or 1 GiB, whichever is smaller. Deletions are not
//! counted: they happen after the new files are in place.

use crate::error::{Error, Result};
use crate::path::RelPath;
use crate::store::Store;
use crate::units::human_size;

/// The default free space kept: 5% of a filesystem of `total` bytes, at
/// most 1 GiB.
pub fn default_margin(total: u64) -> u64 {
    (total / 20).min(1 << 30)
}

/// A plan's needs against a store's free space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceCheck {
    /// Bytes still to write: the new files, less what is staged already and
    /// what is linked.
    pub need: u64,
    /// Bytes already staged by interrupted downloads (counted as done).
    pub staged: u64,
    /// The largest file to download and its size, for messages.
    pub largest: Option<(String, u64)>,
    /// Bytes free on the filesystem.
    pub free: u64,
    /// Bytes to keep free.
    pub margin: u64,
    /// The filesystem (its mount point).
    pub filesystem: String,
    /// The mirror, for messages.
    pub location: String,
}

impl SpaceCheck {
    /// The check of the files a plan fetches (`fetches`: each path with
    /// its size; linked and verified ones left out) against `store`,
    /// keeping `min_free` bytes free (default: [`default_margin`]). `None`
    /// when the store cannot tell its free space.
    pub async fn of<'a>(
        fetches: impl IntoIterator<Item = (&'a RelPath, u64)>,
        store: &dyn Store,
        min_free: Option<u64>,
    ) -> Option<SpaceCheck> {
        let space = store.space().await?;
        let fetches: Vec<(&RelPath, u64)> = fetches.into_iter().collect();
        let (mut need, mut staged) = (0u64, 0u64);
        let mut largest: Option<(String, u64)> = None;
        for (path, size) in fetches {
            let have = store.staged_len(path).await.min(size);
            staged += have;
            need = need.saturating_add(size - have);
            if largest.as_ref().is_none_or(|(_, l)| size > *l) {
                largest = Some((path.to_string(), size));
            }
        }
        Some(SpaceCheck {
            need,
            staged,
            largest,
            free: space.free,
            margin: min_free.unwrap_or_else(|| default_margin(space.total)),
            filesystem: space.filesystem,
            location: store.location(),
        })
    }

    /// Whether the plan fits, margin kept (a plan that writes nothing
    /// always fits: an up-to-date mirror on a full disk is not a failure).
    pub fn fits(&self) -> bool {
        self.need == 0 || self.need.saturating_add(self.margin) <= self.free
    }

    /// The line a dry run and `-v` print.
    pub fn line(&self) -> String {
        let staged = if self.staged > 0 {
            format!(" ({} already staged)", human_size(self.staged))
        } else {
            String::new()
        };
        format!(
            "space: {} to write{staged}, {} free on {}, {} kept free: {}",
            human_size(self.need),
            human_size(self.free),
            self.filesystem,
            human_size(self.margin),
            if self.fits() { "ok" } else { "NOT ENOUGH" }
        )
    }

    /// Refuses a plan that does not fit, with one line giving the need,
    /// the free space and the filesystem.
    pub fn require(&self) -> Result<()> {
        if self.fits() {
            return Ok(());
        }
        Err(Error::NoSpace {
            location: self.location.clone(),
            filesystem: self.filesystem.clone(),
            need: self.need,
            largest: self
                .largest
                .as_ref()
                .map(|(path, size)| format!("{path}, {size} bytes"))
                .unwrap_or_else(|| "none".into()),
            margin: self.margin,
            free: self.free,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins() {
        assert_eq!(default_margin(10 << 20), 512 << 10, "5% of a small disk");
        assert_eq!(default_margin(1 << 40), 1 << 30, "at most 1 GiB");
    }

    #[test]
    fn fits_and_says_so() {
        let check = SpaceCheck {
            need: 3 << 20,
            staged: 1 << 20,
            largest: Some(("a/squashfs".into(), 2 << 20)),
            free: 4 << 20,
            margin: 1 << 20,
            filesystem: "/srv".into(),
            location: "/srv/mirror".into(),
        };
        assert!(check.fits());
        assert_eq!(
            check.line(),
            "space: 3.0 MiB to write (1.0 MiB already staged), 4.0 MiB free on /srv, 1.0 MiB kept free: ok"
        );
        let short = SpaceCheck {
            free: (7 << 20) / 2,
            ..check
        };
        assert!(!short.fits());
        let nothing = SpaceCheck {
            need: 0,
            free: 0,
            ..short.clone()
        };
        assert!(nothing.fits(), "nothing to write: nothing to refuse");
        let e = short.require().unwrap_err().to_string();
        assert_eq!(
            e,
            "/srv/mirror: not enough free space on /srv: the plan needs 3.0 MiB \
             (largest file: a/squashfs, 2097152 bytes) plus 1.0 MiB kept free \
             (--min-free), 3.5 MiB free; free some space or lower --min-free"
        );
    }
}
