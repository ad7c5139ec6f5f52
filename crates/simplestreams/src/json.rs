//! The two JSON layouts a mirror writes, as the reference writes them: its
//! state (indent 1, keys sorted) and `references.json` (one line, Python's
//! `", "` and `": "` separators).

use serde_json::Value;
use std::io::Write;

/// JSON with indent 1 and every object's keys sorted (no final newline).
pub fn sorted_pretty(value: &Value) -> Vec<u8> {
    let value = sorted(value);
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing a Value into a Vec cannot fail.
    let _ = serde::Serialize::serialize(&value, &mut ser);
    out
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

/// Single-line JSON with Python's `json.dumps` separators.
pub fn python_compact<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut text = Vec::new();
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
