//! Filters over flattened items: `KEY=VALUE`, `KEY!=VALUE`, `KEY~REGEX`,
//! `KEY!~REGEX`. A missing key compares as the empty string; all filters of
//! a [`FilterSet`] must match; an item passes [`FilterGroups`] when it
//! matches every filter of any one group.

use crate::error::{Error, Result};
use crate::format::FlatItem;
use regex::Regex;

/// How a filter compares.
#[derive(Debug, Clone)]
enum Op {
    Equal(String),
    NotEqual(String),
    Search(Regex),
    NotSearch(Regex),
}

/// One parsed filter.
#[derive(Debug, Clone)]
pub struct Filter {
    key: String,
    op: Op,
    text: String,
}

/// The longest regex we compile, and its compiled size limit: filters come
/// from the command line, but stay bounded anyway.
const MAX_REGEX_LEN: usize = 4096;
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Filter {
    /// Parses `KEY OP VALUE` (spaces around OP allowed).
    pub fn parse(text: &str) -> Result<Filter> {
        let bad = |reason: &str| Error::Filter {
            filter: text.to_owned(),
            reason: reason.to_owned(),
        };
        let key_end = text
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '|'))
            .ok_or_else(|| bad("expected KEY=VALUE, KEY!=VALUE, KEY~REGEX or KEY!~REGEX"))?;
        let key = &text[..key_end];
        if key.is_empty() {
            return Err(bad("empty key"));
        }
        let rest = text[key_end..].trim_start();
        let (op, value) = if let Some(v) = rest.strip_prefix("!=") {
            ("!=", v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            ("!~", v)
        } else if let Some(v) = rest.strip_prefix('=') {
            ("=", v)
        } else if let Some(v) = rest.strip_prefix('~') {
            ("~", v)
        } else {
            return Err(bad("expected one of = != ~ !~ after the key"));
        };
        let value = value.trim_start();
        let regex = |v: &str| {
            if v.len() > MAX_REGEX_LEN {
                return Err(bad("regular expression too long"));
            }
            regex::RegexBuilder::new(v)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    bad(&format!(
                        "bad regular expression: {}",
                        one_line(&e.to_string())
                    ))
                })
        };
        let op = match op {
            "=" => Op::Equal(value.to_owned()),
            "!=" => Op::NotEqual(value.to_owned()),
            "~" => Op::Search(regex(value)?),
            _ => Op::NotSearch(regex(value)?),
        };
        Ok(Filter {
            key: key.to_owned(),
            op,
            text: text.to_owned(),
        })
    }

    /// Whether `item` passes this filter.
    pub fn matches(&self, item: &FlatItem) -> bool {
        let value = item.get(&self.key).unwrap_or("");
        match &self.op {
            Op::Equal(v) => value == v,
            Op::NotEqual(v) => value != v,
            Op::Search(r) => r.is_match(value),
            Op::NotSearch(r) => !r.is_match(value),
        }
    }

    /// The filter as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The key it compares.
    pub fn key(&self) -> &str {
        &self.key
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A conjunction of filters (empty: everything matches).
#[derive(Debug, Clone, Default)]
pub struct FilterSet(Vec<Filter>);

impl FilterSet {
    /// Parses each filter argument.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<FilterSet> {
        args.iter()
            .map(|a| Filter::parse(a.as_ref()))
            .collect::<Result<_>>()
            .map(FilterSet)
    }

    /// Whether every filter passes.
    pub fn matches(&self, item: &FlatItem) -> bool {
        self.0.iter().all(|f| f.matches(item))
    }

    /// Whether there are no filters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The filters, in the order given.
    pub fn filters(&self) -> &[Filter] {
        &self.0
    }
}

/// The canonical text of a set: its filters as given, as a list of quoted
/// strings (`["arch=amd64", "release~(trusty|xenial)"]`), stable enough to
/// key a cache.
impl std::fmt::Display for FilterSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let texts: Vec<&str> = self.0.iter().map(Filter::as_str).collect();
        write!(f, "{texts:?}")
    }
}

/// A disjunction of [`FilterSet`]s: an item is wanted when it matches every
/// filter of any group. No group, or one empty group, matches everything;
/// one group behaves exactly as that [`FilterSet`].
#[derive(Debug, Clone, Default)]
pub struct FilterGroups(Vec<FilterSet>);

impl FilterGroups {
    /// Parses each group's filter arguments.
    pub fn parse<G: AsRef<[S]>, S: AsRef<str>>(groups: &[G]) -> Result<FilterGroups> {
        groups
            .iter()
            .map(|g| FilterSet::parse(g.as_ref()))
            .collect::<Result<_>>()
            .map(FilterGroups)
    }

    /// Whether every filter of at least one group passes (always, without
    /// groups).
    pub fn matches(&self, item: &FlatItem) -> bool {
        self.0.is_empty() || self.0.iter().any(|g| g.matches(item))
    }

    /// The groups, in the order given.
    pub fn groups(&self) -> &[FilterSet] {
        &self.0
    }

    /// Whether every item matches: no group, or a group without filters.
    pub fn matches_everything(&self) -> bool {
        self.0.is_empty() || self.0.iter().any(FilterSet::is_empty)
    }
}

impl FilterGroups {
    /// Checks that the filters can select something of a stream whose
    /// items (flattened) are `items`: see [`SelectionCheck`].
    pub fn check_selects<'a>(&self, items: impl IntoIterator<Item = &'a FlatItem>) -> Result<()> {
        let mut check = SelectionCheck::new(self);
        items.into_iter().for_each(|it| check.observe(it));
        check.finish()
    }
}

/// Whether filters can select something of a stream, learnt in one pass
/// over its items (none kept): every filter's key must be a key some item
/// has, and every group must select at least one item. Otherwise
/// [`SelectionCheck::finish`] gives an [`Error::Filter`] naming the filter
/// and the keys (or the key's values) that exist. A stream without items
/// passes (nothing to select from), and so do filters that match
/// everything.
#[derive(Debug)]
pub struct SelectionCheck<'a> {
    groups: &'a FilterGroups,
    items: usize,
    keys: std::collections::BTreeSet<String>,
    /// Per filter (groups in order, then filters): whether it alone matches
    /// some item, and up to [`LISTED_VALUES`] + 1 values of its key.
    filters: Vec<(bool, std::collections::BTreeSet<String>)>,
    /// Per group: whether it selects some item.
    selected: Vec<bool>,
}

impl<'a> SelectionCheck<'a> {
    /// A check of `groups`, having seen no item.
    pub fn new(groups: &'a FilterGroups) -> SelectionCheck<'a> {
        let n = groups.0.iter().map(|g| g.0.len()).sum();
        SelectionCheck {
            groups,
            items: 0,
            keys: Default::default(),
            filters: vec![(false, Default::default()); n],
            selected: vec![false; groups.0.len()],
        }
    }

    /// Takes one item of the stream into account.
    pub fn observe(&mut self, item: &FlatItem) {
        if self.groups.matches_everything() {
            return;
        }
        self.items += 1;
        for (k, _) in item.iter() {
            if !self.keys.contains(k) {
                self.keys.insert(k.to_owned());
            }
        }
        let all = self.groups.0.iter().flat_map(FilterSet::filters);
        for (filter, (matched, values)) in all.zip(self.filters.iter_mut()) {
            *matched |= filter.matches(item);
            if let Some(v) = item.get(filter.key())
                && values.len() <= LISTED_VALUES
            {
                values.insert(v.to_owned());
            }
        }
        for (group, selected) in self.groups.0.iter().zip(self.selected.iter_mut()) {
            *selected |= group.matches(item);
        }
    }

    /// The verdict on the items seen.
    pub fn finish(self) -> Result<()> {
        if self.items == 0 {
            return Ok(());
        }
        let all: Vec<&Filter> = self.groups.0.iter().flat_map(FilterSet::filters).collect();
        for filter in &all {
            if !self.keys.contains(filter.key()) {
                return Err(Error::Filter {
                    filter: filter.as_str().to_owned(),
                    reason: format!(
                        "no item of the stream has the key {:?}; the keys are: {}",
                        filter.key(),
                        listed(self.keys.iter().map(String::as_str), usize::MAX)
                    ),
                });
            }
        }
        let mut first = 0;
        for (group, selected) in self.groups.0.iter().zip(&self.selected) {
            let range = first..first + group.0.len();
            first = range.end;
            if *selected {
                continue;
            }
            let alone = range.clone().find(|&i| !self.filters[i].0);
            let Some(i) = alone else {
                return Err(Error::Filter {
                    filter: group.to_string(),
                    reason: "these filters together select no item of the stream".into(),
                });
            };
            let filter = all[i];
            let values = listed(self.filters[i].1.iter().map(String::as_str), LISTED_VALUES);
            return Err(Error::Filter {
                filter: filter.as_str().to_owned(),
                reason: format!(
                    "selects no item of the stream; {}: {values}{}",
                    filter.key(),
                    hint(filter)
                ),
            });
        }
        Ok(())
    }
}

/// How many values of a key an error lists before `...`.
const LISTED_VALUES: usize = 20;

/// `it` (sorted) joined by `, `, at most `max` of them, then `...`.
fn listed<'a>(it: impl Iterator<Item = &'a str>, max: usize) -> String {
    let all: Vec<&str> = it.collect();
    let mut shown: Vec<&str> = all.iter().copied().take(max).collect();
    if all.len() > max {
        shown.push("...");
    }
    shown.join(", ")
}

/// A hint for a value that starts with an operator character
/// (`arch==amd64` compares with `=amd64`).
fn hint(filter: &Filter) -> String {
    match &filter.op {
        Op::Equal(v) | Op::NotEqual(v) if v.starts_with(['=', '~']) => format!(
            " (the value compared is {v:?}: the operator is the first = or ~, so write {}{}{})",
            filter.key,
            if matches!(filter.op, Op::Equal(_)) {
                "="
            } else {
                "!="
            },
            &v[1..]
        ),
        _ => String::new(),
    }
}

impl From<FilterSet> for FilterGroups {
    fn from(set: FilterSet) -> FilterGroups {
        FilterGroups(vec![set])
    }
}

/// The canonical text: each group's [`FilterSet`] text, joined by ` | `.
/// One group reads exactly as its set (no group reads as `[]`, like an
/// empty set), so a single-group key is the same as before groups existed.
/// Unambiguous: a `|` or `]` inside a filter is within its quoted string.
impl std::fmt::Display for FilterGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("[]");
        }
        for (i, group) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{group}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, &str)]) -> FlatItem {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn seed_filters() {
        let f = FilterSet::parse(&["arch=amd64", "release~(trusty|xenial)"]).unwrap();
        assert!(f.matches(&item(&[("arch", "amd64"), ("release", "xenial")])));
        assert!(f.matches(&item(&[("arch", "amd64"), ("release", "trusty")])));
        assert!(!f.matches(&item(&[("arch", "arm64"), ("release", "xenial")])));
        assert!(!f.matches(&item(&[("arch", "amd64"), ("release", "jammy")])));
        let b = FilterSet::parse(&["os~(grub*|pxelinux)"]).unwrap();
        for os in ["grub-efi-signed", "grub-efi", "grub-ieee1275", "pxelinux"] {
            assert!(b.matches(&item(&[("os", os)])), "{os}");
        }
        assert!(!b.matches(&item(&[("os", "ubuntu")])));
        assert!(!b.matches(&item(&[("os", "centos")])));
    }

    #[test]
    fn operators() {
        let it = item(&[("arch", "amd64"), ("subarch", "hwe-16.04")]);
        assert!(Filter::parse("arch != arm64").unwrap().matches(&it));
        assert!(!Filter::parse("arch!=amd64").unwrap().matches(&it));
        assert!(Filter::parse("subarch ~ ^hwe").unwrap().matches(&it));
        assert!(
            Filter::parse("subarch~16").unwrap().matches(&it),
            "unanchored"
        );
        assert!(Filter::parse("subarch!~^ga").unwrap().matches(&it));
        assert!(!Filter::parse("subarch!~hwe").unwrap().matches(&it));
    }

    #[test]
    fn missing_key_is_empty() {
        let it = item(&[]);
        assert!(Filter::parse("label=").unwrap().matches(&it));
        assert!(!Filter::parse("label=stable").unwrap().matches(&it));
        assert!(Filter::parse("label!=stable").unwrap().matches(&it));
        assert!(Filter::parse("label~^$").unwrap().matches(&it));
    }

    #[test]
    fn value_may_contain_operators() {
        let f = Filter::parse("a=b=c").unwrap();
        assert!(f.matches(&item(&[("a", "b=c")])));
        let f = Filter::parse("key-with|bar=x").unwrap();
        assert!(f.matches(&item(&[("key-with|bar", "x")])));
    }

    #[test]
    fn groups_match_any_group() {
        let g = FilterGroups::parse(&[
            vec!["arch=amd64", "release~(trusty|xenial)"],
            vec!["os~(grub*|pxelinux)"],
        ])
        .unwrap();
        assert!(g.matches(&item(&[("arch", "amd64"), ("release", "xenial")])));
        assert!(g.matches(&item(&[("os", "pxelinux"), ("arch", "i386")])));
        assert!(!g.matches(&item(&[("arch", "arm64"), ("release", "xenial")])));
        assert!(!g.matches(&item(&[("os", "ubuntu"), ("arch", "amd64")])));
        assert!(!g.matches_everything());
    }

    #[test]
    fn one_group_is_the_set() {
        let texts = ["arch=amd64", "release~(trusty|xenial)"];
        let set = FilterSet::parse(&texts).unwrap();
        let groups = FilterGroups::from(set.clone());
        for it in [
            item(&[("arch", "amd64"), ("release", "xenial")]),
            item(&[("arch", "arm64"), ("release", "xenial")]),
            item(&[]),
        ] {
            assert_eq!(set.matches(&it), groups.matches(&it));
        }
        // The cache key of a single group is the Debug text of its arguments,
        // as the mirror command has always keyed its cache.
        assert_eq!(groups.to_string(), format!("{texts:?}"));
        assert_eq!(set.to_string(), format!("{texts:?}"));
    }

    #[test]
    fn no_group_or_an_empty_group_matches_everything() {
        let none = FilterGroups::default();
        let empty = FilterGroups::parse::<Vec<&str>, &str>(&[vec![]]).unwrap();
        let it = item(&[("arch", "s390x")]);
        assert!(none.matches(&it) && empty.matches(&it));
        assert!(none.matches_everything() && empty.matches_everything());
        assert_eq!(none.to_string(), "[]");
        assert_eq!(empty.to_string(), "[]");
    }

    #[test]
    fn group_text_is_canonical_and_unambiguous() {
        let g = FilterGroups::parse(&[vec!["a=1", "b~x|y"], vec!["c=\"] | [\""]]).unwrap();
        assert_eq!(g.to_string(), r#"["a=1", "b~x|y"] | ["c=\"] | [\""]"#);
        let split = FilterGroups::parse(&[vec!["a=1"], vec!["b~x|y"]]).unwrap();
        assert_ne!(g.to_string(), split.to_string());
        let err = FilterGroups::parse(&[vec!["a=1"], vec!["release~(x"]]).unwrap_err();
        assert!(err.to_string().contains("release~(x"), "{err}");
    }

    #[test]
    fn filters_that_select_nothing_are_named() {
        let items = [
            item(&[("arch", "amd64"), ("release", "noble")]),
            item(&[("arch", "arm64"), ("release", "jammy")]),
        ];
        let check = |groups: &[Vec<&str>]| {
            FilterGroups::parse(groups)
                .unwrap()
                .check_selects(&items)
                .map_err(|e| e.to_string())
        };
        assert!(check(&[vec!["arch=amd64"]]).is_ok());
        assert!(check(&[vec!["arch=amd64"], vec!["release=jammy"]]).is_ok());
        let err = check(&[vec!["arhc=amd64"]]).unwrap_err();
        assert!(
            err.contains("\"arhc=amd64\"") && err.contains("arch, release"),
            "{err}"
        );
        let err = check(&[vec!["arch==amd64"]]).unwrap_err();
        assert!(
            err.contains("arch: amd64, arm64") && err.contains("arch=amd64"),
            "{err}"
        );
        let err = check(&[vec!["arch=amd64", "release=jammy"]]).unwrap_err();
        assert!(err.contains("together"), "{err}");
        let err = check(&[vec!["arch=amd64"], vec!["release~^x"]]).unwrap_err();
        assert!(
            err.contains("release~^x") && err.contains("jammy, noble"),
            "{err}"
        );
        assert!(FilterGroups::default().check_selects(&items).is_ok());
        assert!(
            FilterGroups::parse(&[vec!["arhc=x"]])
                .unwrap()
                .check_selects(&[] as &[FlatItem])
                .is_ok()
        );
    }

    #[test]
    fn bad_filters_are_clear() {
        for (text, want) in [
            ("arch", "expected"),
            ("=amd64", "empty key"),
            ("arch>amd64", "expected one of"),
            ("release~(trusty", "bad regular expression"),
            ("x~a{99999999}", "bad regular expression"),
        ] {
            let err = Filter::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.contains(text), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
