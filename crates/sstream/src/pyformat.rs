//! Python-compatible rendering for `sstream-query`: `%(name)s` formatting
//! over a flattened item, `repr()` of strings and dicts, and `pprint`.

use simplestreams::format::FlatItem;

/// Python's `repr()` of a string.
pub fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                let n = c as u32;
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a dict of strings, in the item's order.
pub fn repr_dict(item: &FlatItem) -> String {
    let pairs: Vec<String> = item
        .iter()
        .map(|(k, v)| format!("{}: {}", repr_str(k), repr_str(v)))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

/// Python's `pprint.pformat()` of a dict of strings: keys sorted, one pair
/// per line once the whole does not fit in 80 columns.
pub fn pprint_dict(item: &FlatItem) -> String {
    let mut pairs: Vec<(&str, &str)> = item.iter().collect();
    pairs.sort();
    let sorted: FlatItem = pairs.iter().map(|(k, v)| (*k, *v)).collect();
    let flat = repr_dict(&sorted);
    if flat.len() <= 80 {
        return flat;
    }
    let lines: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}: {}", repr_str(k), repr_str(v)))
        .collect();
    format!("{{{}}}", lines.join(",\n "))
}

/// Why a format could not be applied.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// `%(name)s` names a field the item does not have.
    #[error("no field {0:?} in the item")]
    Missing(String),
    /// The format string itself is malformed.
    #[error("bad format: {0}")]
    Bad(String),
}

/// Applies a Python `%`-format with a mapping (`%(name)s`, `%(name)-10s`,
/// `%(name)r`, `%(name)d`, `%%`) to an item.
pub fn format_item(fmt: &str, item: &FlatItem) -> Result<String, FormatError> {
    let mut out = String::new();
    let mut rest = fmt;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('%') {
            out.push('%');
            rest = r;
            continue;
        }
        let Some(r) = rest.strip_prefix('(') else {
            return Err(FormatError::Bad(
                "format requires a mapping: use %(name)s".into(),
            ));
        };
        let close = r
            .find(')')
            .ok_or_else(|| FormatError::Bad("unclosed %(".into()))?;
        let key = &r[..close];
        rest = &r[close + 1..];
        let flags_end = rest.find(|c| !"-+ #0".contains(c)).unwrap_or(rest.len());
        let flags = &rest[..flags_end];
        rest = &rest[flags_end..];
        let width_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let width: usize = rest[..width_end].parse().unwrap_or(0);
        rest = &rest[width_end..];
        let mut precision = None;
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            precision = Some(r[..end].parse::<usize>().unwrap_or(0));
            rest = &r[end..];
        }
        let mut chars = rest.chars();
        let conv = chars
            .next()
            .ok_or_else(|| FormatError::Bad("incomplete format".into()))?;
        rest = chars.as_str();
        let value = item
            .get(key)
            .ok_or_else(|| FormatError::Missing(key.to_owned()))?;
        let text = match conv {
            's' => precision.map_or(value.to_owned(), |p| value.chars().take(p).collect()),
            'r' => repr_str(value),
            'd' | 'i' => value
                .trim()
                .parse::<i128>()
                .map(|n| n.to_string())
                .map_err(|_| {
                    FormatError::Bad(format!("%({key}){conv} needs a number, got {value:?}"))
                })?,
            c => return Err(FormatError::Bad(format!("unsupported conversion %{c}"))),
        };
        out.push_str(&pad(
            &text,
            width,
            flags.contains('-'),
            flags.contains('0') && conv != 's' && conv != 'r',
        ));
    }
    out.push_str(rest);
    Ok(out)
}

fn pad(text: &str, width: usize, left: bool, zero: bool) -> String {
    let len = text.chars().count();
    if len >= width {
        return text.to_owned();
    }
    let fill = width - len;
    if left {
        format!("{text}{}", " ".repeat(fill))
    } else if zero {
        let (sign, digits) = text.strip_prefix('-').map_or(("", text), |d| ("-", d));
        format!("{sign}{}{digits}", "0".repeat(fill))
    } else {
        format!("{}{text}", " ".repeat(fill))
    }
}

/// JSON as Python's `json.dumps(items, indent=2, sort_keys=True)` writes it
/// (non-ASCII escaped).
pub fn json_list(items: &[FlatItem]) -> String {
    let list: Vec<serde_json::Value> = items
        .iter()
        .map(|it| {
            let mut pairs: Vec<(&str, &str)> = it.iter().collect();
            pairs.sort();
            serde_json::Value::Object(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
                    .collect(),
            )
        })
        .collect();
    let text = serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into());
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> FlatItem {
        [("arch", "amd64"), ("size", "87"), ("q", "it's")]
            .into_iter()
            .collect()
    }

    #[test]
    fn formats_like_python() {
        let it = item();
        assert_eq!(
            format_item("%(size)5s|%(arch)-8s|%%|%(arch)r", &it).unwrap(),
            "   87|amd64   |%|'amd64'"
        );
        assert_eq!(
            format_item("%(size)05d %(arch).3s", &it).unwrap(),
            "00087 amd"
        );
        assert_eq!(format_item("%(q)r", &it).unwrap(), "\"it's\"");
        assert_eq!(
            format_item("%(nope)s", &it),
            Err(FormatError::Missing("nope".into()))
        );
        assert!(format_item("%s", &it).is_err());
        assert!(format_item("%(arch", &it).is_err());
        assert!(format_item("%(arch)d", &it).is_err());
    }

    #[test]
    fn reprs_like_python() {
        assert_eq!(repr_str("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(repr_str("tab\there\\"), "'tab\\there\\\\'");
        assert_eq!(repr_str("é"), "'é'");
        assert_eq!(
            repr_dict(&item()),
            "{'arch': 'amd64', 'size': '87', 'q': \"it's\"}"
        );
    }

    #[test]
    fn pprints_sorted() {
        assert_eq!(
            pprint_dict(&item()),
            "{'arch': 'amd64', 'q': \"it's\", 'size': '87'}"
        );
        let long: FlatItem = [("b", "x".repeat(50)), ("a", "y".repeat(50))]
            .into_iter()
            .collect();
        let out = pprint_dict(&long);
        assert!(out.starts_with("{'a': 'yyy"), "{out}");
        assert!(out.contains(",\n 'b': "), "{out}");
    }

    #[test]
    fn json_like_python() {
        let it: FlatItem = [("b", "é"), ("a", "1")].into_iter().collect();
        assert_eq!(
            json_list(&[it]),
            "[\n  {\n    \"a\": \"1\",\n    \"b\": \"\\u00e9\"\n  }\n]"
        );
        assert_eq!(json_list(&[]), "[]");
    }
}
