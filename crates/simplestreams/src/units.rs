//! Sizes and rates as people read and write them.

/// A size or rate that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad size {text:?} (e.g. \"512K\", \"20M\", \"1.5G\")")]
pub struct BadSize {
    /// The text as given.
    pub text: String,
}

/// A size in binary units: `10 B`, `512.0 MiB`, `1.5 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A size that [`parse_size`] does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad size {0:?} (e.g. \"512K\", \"20M\", \"1.5G\", \"2TiB\" or a number of bytes)")]
pub struct SizeError(pub String);

/// Parses a size: a number of bytes, or a number (decimals allowed) with a
/// unit `K`, `M`, `G`, `T` or `P` — powers of 1024, case-insensitive,
/// optionally followed by `B` or `iB` (`20M`, `20mb`, `1.5GiB`). A bare
/// `B` suffix means bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let bad = || SizeError(text.to_owned());
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let power = match unit {
        "" => 0,
        "K" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        "P" => 5,
        _ => return Err(bad()),
    };
    if power == 0
        && let Ok(bytes) = number.parse::<u64>()
    {
        return Ok(bytes);
    }
    let number: f64 = number.parse().map_err(|_| bad())?;
    let bytes = number * 1024f64.powi(power);
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(10), "10 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(512 * 1024 * 1024), "512.0 MiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn parsed_sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size(" 512 B ").unwrap(), 512);
        assert_eq!(parse_size("18446744073709551615").unwrap(), u64::MAX);
        assert_eq!(parse_size("512K").unwrap(), 512 << 10);
        assert_eq!(parse_size("20M").unwrap(), 20 << 20);
        assert_eq!(parse_size("20mb").unwrap(), 20 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("1 GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("2TiB").unwrap(), 2 << 40);
        assert_eq!(parse_size("1P").unwrap(), 1 << 50);
        for bad in ["", "G", "1X", "-1", "1..5G", "1e3", "99999999P"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }
}
