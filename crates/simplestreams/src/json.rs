//! The two JSON layouts a mirror writes, as the reference writes them: its
//! state (indent 1, keys sorted) and `references.json` (one line, Python's
//! `", "` and `": "` separators).

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use std::io::Write;

/// JSON with indent 1 and every object's keys sorted (no final newline).
pub fn sorted_pretty(value: &Value) -> Vec<u8> {
    pretty(&Sorted(value))
}

/// `value` as JSON with indent 1 (no final newline), as it serializes
/// itself: with [`Sorted`] inside, the reference's state layout.
///
/// The text is measured first and written into a buffer of that size: a
/// state is as large as its products file (megabytes), and a buffer grown
/// by doubling would hold up to twice that.
pub fn pretty<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serializing fails only on a map key that is not a string (which a
    // JSON value never has) or on a writer that fails (neither does).
    let mut length = Length(0);
    let _ = write_pretty(value, &mut length);
    let mut out = Vec::with_capacity(length.0);
    let _ = write_pretty(value, &mut out);
    out
}

/// [`pretty`] written to `w` as it is serialized (no buffer of the whole
/// text): the writer's error, if any.
pub fn write_pretty<T: Serialize + ?Sized, W: Write>(value: &T, w: W) -> std::io::Result<()> {
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(w, fmt);
    value.serialize(&mut ser).map_err(std::io::Error::from)
}

/// A writer that only counts.
struct Length(usize);

impl Write for Length {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A JSON value serialized with every object's keys in sorted order, as it
/// is (no sorted copy is made).
#[derive(Debug, Clone, Copy)]
pub struct Sorted<'a>(pub &'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => SortedMap(map).serialize(s),
            Value::Array(items) => s.collect_seq(items.iter().map(Sorted)),
            other => other.serialize(s),
        }
    }
}

/// A JSON object serialized with its keys in sorted order.
#[derive(Debug, Clone, Copy)]
pub struct SortedMap<'a>(pub &'a Map<String, Value>);

impl Serialize for SortedMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut pairs: Vec<(&String, &Value)> = self.0.iter().collect();
        pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut map = s.serialize_map(Some(pairs.len()))?;
        for (k, v) in pairs {
            map.serialize_entry(k, &Sorted(v))?;
        }
        map.end()
    }
}

/// A copy of `value` whose objects have their keys inserted in sorted order
/// (sorted output whether or not serde_json preserves order).
pub fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut pairs: Vec<(&String, &Value)> = map.iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// [`python_compact`] written to `w` as it is serialized.
pub fn write_python_compact<T: serde::Serialize + ?Sized, W: Write>(
    value: &T,
    w: W,
) -> std::io::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(w, PythonCompact);
    value.serialize(&mut ser).map_err(std::io::Error::from)
}

/// Single-line JSON with Python's `json.dumps` separators.
///
/// Measured first, as [`pretty`] does: `references.json` of a large stream
/// is megabytes.
pub fn python_compact<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut length = Length(0);
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut length,
        PythonCompact,
    ))?;
    let mut text = Vec::with_capacity(length.0);
    let mut ser = serde_json::Serializer::with_formatter(&mut text, PythonCompact);
    value.serialize(&mut ser)?;
    Ok(text)
}

/// `", "` between values and `": "` after keys.
struct PythonCompact;

impl serde_json::ser::Formatter for PythonCompact {
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let v = serde_json::json!({"b": [1, 2], "a": {"d": 1, "c": 2}});
        assert_eq!(
            String::from_utf8(sorted_pretty(&v)).unwrap(),
            "{\n \"a\": {\n  \"c\": 2,\n  \"d\": 1\n },\n \"b\": [\n  1,\n  2\n ]\n}"
        );
        assert_eq!(
            String::from_utf8(python_compact(&v).unwrap()).unwrap(),
            r#"{"b": [1, 2], "a": {"d": 1, "c": 2}}"#
        );
    }
}
