//! Filters over flattened items: `KEY=VALUE`, `KEY!=VALUE`, `KEY~REGEX`,
//! `KEY!~REGEX`. A missing key compares as the empty string; all filters of
//! a [`FilterSet`] must match.

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

    /// The filters as given, in order.
    pub fn texts(&self) -> Vec<&str> {
        self.0.iter().map(Filter::as_str).collect()
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
