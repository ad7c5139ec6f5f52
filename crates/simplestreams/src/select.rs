//! Which versions of a product are mirrored: the reference's `--max` and
//! `--keep` semantics. Version names compare as plain strings; the greatest
//! is the newest.

use std::collections::BTreeSet;

/// What to do with a product's versions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Source versions to add to the mirror, newest first.
    pub add: Vec<String>,
    /// Mirror versions to remove, newest first.
    pub remove: Vec<String>,
}

/// Decides which versions to add and remove.
///
/// `source` are the source's versions (after item filters), `target` the
/// mirror's. Without `max`, every new source version is added and every
/// target version gone from the source is removed. With `keep` (which needs
/// `max`), versions gone from the source are kept, newest first, while the
/// total stays within `max`. With `max`, only the newest `max` of the result
/// are kept: a surplus target version is removed, a surplus new one is not
/// added.
pub fn select_versions<S: AsRef<str>>(
    source: &[S],
    target: &[S],
    max: Option<usize>,
    keep: bool,
) -> Selection {
    let source: BTreeSet<&str> = source.iter().map(AsRef::as_ref).collect();
    let target: BTreeSet<&str> = target.iter().map(AsRef::as_ref).collect();
    let mut add: BTreeSet<&str> = source.difference(&target).copied().collect();
    let mut remove: BTreeSet<&str> = target.difference(&source).copied().collect();
    if let (Some(max), true) = (max, keep) {
        let mut count = source.intersection(&target).count() + add.len();
        for v in remove.clone().into_iter().rev() {
            if count < max {
                remove.remove(v);
                count += 1;
            }
        }
    }
    if let Some(max) = max {
        let result: BTreeSet<&str> = target
            .union(&add)
            .copied()
            .filter(|v| !remove.contains(v))
            .collect();
        for v in result.into_iter().rev().skip(max) {
            if target.contains(v) {
                remove.insert(v);
            } else {
                add.remove(v);
            }
        }
    }
    let newest_first = |s: BTreeSet<&str>| s.into_iter().rev().map(str::to_owned).collect();
    Selection {
        add: newest_first(add),
        remove: newest_first(remove),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[u32]) -> Vec<String> {
        // Zero-padded so that string order is numeric order, as in dated versions.
        xs.iter().map(|x| format!("{x:02}")).collect()
    }

    fn check(
        src: &[u32],
        tgt: &[u32],
        max: Option<usize>,
        keep: bool,
        add: &[u32],
        remove: &[u32],
    ) {
        let got = select_versions(&v(src), &v(tgt), max, keep);
        assert_eq!(
            got,
            Selection {
                add: v(add),
                remove: v(remove)
            },
            "src {src:?} tgt {tgt:?} max {max:?} keep {keep}"
        );
    }

    #[test]
    fn reference_vectors() {
        check(
            &[10, 9, 8],
            &[7, 6, 5],
            None,
            false,
            &[10, 9, 8],
            &[7, 6, 5],
        );
        check(
            &[10, 9, 8],
            &[7, 6, 5],
            Some(2),
            false,
            &[10, 9],
            &[7, 6, 5],
        );
        check(&[10, 9, 8], &[7, 6, 5], Some(4), true, &[10, 9, 8], &[6, 5]);
        check(&[3], &[3, 2, 1], Some(3), true, &[], &[]);
        check(&[2, 1], &[2, 1], Some(1), false, &[], &[1]);
        check(&[1, 2, 3, 4], &[4], Some(1), false, &[], &[]);
        check(
            &[9, 5, 8, 4, 7, 3, 6, 2, 1],
            &[9, 8, 7, 6, 5],
            Some(4),
            false,
            &[],
            &[5],
        );
    }

    #[test]
    fn plain_string_order() {
        let got = select_versions(&["20240622_01", "20240604_01"], &[], Some(1), false);
        assert_eq!(got.add, ["20240622_01"]);
        let got = select_versions(&["20231004.0", "20230222.0"], &[], Some(1), false);
        assert_eq!(got.add, ["20231004.0"]);
        // Plain strings: "9" sorts after "10".
        let got = select_versions(&["9", "10"], &[], Some(1), false);
        assert_eq!(got.add, ["9"]);
    }

    #[test]
    fn keep_without_max_removes_as_usual() {
        check(&[3], &[2], None, true, &[3], &[2]);
    }

    #[test]
    fn max_zero_keeps_nothing() {
        check(&[2, 1], &[1], Some(0), false, &[], &[1]);
    }
}
