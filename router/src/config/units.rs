//! Durations and sizes as people write them.
//!
//! - Durations are strings: a number and a unit, `ms`, `s`, `m`, `h` or
//!   `d` (`"250ms"`, `"5s"`, `"1.5s"`, `"1m"`, `"1h"`, `"7d"`; a day is
//!   24h), and parts may be chained (`"1m30s"`). A bare number is refused: `5` could mean seconds or
//!   milliseconds, and the reader should not have to guess.
//! - Sizes are a plain integer of bytes (`65536`) or a string with a unit:
//!   `B`; binary `KiB`, `MiB`, `GiB` (powers of 1024); decimal `kB`, `MB`,
//!   `GB` (powers of 1000). Units ignore case; decimals are allowed
//!   (`"1.5MiB"`) and round down to whole bytes.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Visitor};

/// A duration or size field as written: a string or a number. Parsing
/// happens in the validate step, so a bad value is one reported problem
/// rather than the end of the entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Quantity {
    /// `"5s"`, `"1MiB"`.
    Text(String),
    /// `65536`.
    Integer(i64),
    /// `1.5`.
    Float(f64),
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string with a unit, such as \"5s\" or \"1MiB\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity::Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity::Integer(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity::Integer(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity::Float(v))
            }
        }
        d.deserialize_any(V)
    }
}

const DURATION_HINT: &str = "write a number and a unit: \"250ms\", \"5s\", \"1m\", \"1h\"";
const SIZE_HINT: &str = "write bytes as an integer, or a number and a unit: \
                         \"512B\", \"64KiB\", \"1MiB\", \"1GiB\" (or decimal kB, MB, GB)";

impl Quantity {
    /// Reads a duration. `"off"` is accepted only when `allow_off`, and
    /// gives `None`.
    pub(crate) fn duration(&self, allow_off: bool) -> Result<Option<Duration>, String> {
        match self {
            Quantity::Text(s) if allow_off && s.trim() == "off" => Ok(None),
            Quantity::Text(s) => parse_duration(s).map(Some),
            Quantity::Integer(n) => Err(format!(
                "{n} has no unit; {DURATION_HINT} (as a string, in quotes)"
            )),
            Quantity::Float(n) => Err(format!(
                "{n} has no unit; {DURATION_HINT} (as a string, in quotes)"
            )),
        }
    }

    /// Reads a size in bytes.
    pub(crate) fn size(&self) -> Result<u64, String> {
        match self {
            Quantity::Text(s) => parse_size(s),
            Quantity::Integer(n) => {
                u64::try_from(*n).map_err(|_| format!("{n} is negative; {SIZE_HINT}"))
            }
            Quantity::Float(n) => Err(format!("{n} is not a whole number of bytes; {SIZE_HINT}")),
        }
    }
}

/// Splits `s` into a leading decimal number and the rest.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Parses `"250ms"`, `"5s"`, `"1.5m"`, `"1h30m"`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration; {DURATION_HINT}"));
    }
    let mut rest = s;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let (number, after) = split_number(rest);
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if number.is_empty() {
            return Err(format!("{text:?} is not a duration; {DURATION_HINT}"));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{number:?} in {text:?} is not a number"))?;
        let unit_secs = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "" => return Err(format!("{text:?} has no unit; {DURATION_HINT}")),
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}; {DURATION_HINT}"
                ));
            }
        };
        let part = Duration::try_from_secs_f64(value * unit_secs)
            .map_err(|_| format!("{text:?} is too long"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{text:?} is too long"))?;
        rest = next.trim_start();
    }
    // Round to whole microseconds so "0.1s" reads back as 100ms exactly.
    let micros = (total.as_secs_f64() * 1e6).round();
    Ok(Duration::from_micros(micros as u64))
}

/// Parses a size: `"512B"`, `"64KiB"`, `"1MiB"`, `"1.5GB"`, `"4096"`.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let (number, unit) = split_number(s);
    if number.is_empty() {
        return Err(format!("{text:?} is not a size; {SIZE_HINT}"));
    }
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "unknown unit {:?} in {text:?}; {SIZE_HINT}",
                unit.trim_start()
            ));
        }
    };
    if let Ok(n) = number.parse::<u64>() {
        return n
            .checked_mul(multiplier)
            .ok_or_else(|| format!("{text:?} is too large"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{number:?} in {text:?} is not a number"))?;
    let bytes = (value * multiplier as f64).floor();
    if bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

/// Formats a duration the way the config writes it: `"250ms"`, `"5s"`,
/// `"1m30s"`, `"1h"`, `"7d"`.
pub(crate) fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        let ms = d.as_secs_f64() * 1000.0;
        return if ms.fract() == 0.0 {
            format!("{}ms", ms as u64)
        } else {
            format!("{}s", d.as_secs_f64())
        };
    }
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if n != 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// Formats a byte count with the largest unit that divides it, binary
/// first (`"1MiB"`), then decimal (`"2MB"`), else bytes (`"1500B"`).
pub(crate) fn format_size(bytes: u64) -> String {
    if bytes != 0 {
        for (unit, size) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if bytes.is_multiple_of(size) {
                return format!("{}{unit}", bytes / size);
            }
        }
        for (unit, size) in [("GB", 1_000_000_000), ("MB", 1_000_000), ("kB", 1_000)] {
            if bytes.is_multiple_of(size) {
                return format!("{}{unit}", bytes / size);
            }
        }
    }
    format!("{bytes}B")
}

/// Serializes a [`Duration`] as the config writes it.
pub(crate) fn serialize_duration<S: serde::Serializer>(
    d: &Duration,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// Serializes an optional [`Duration`] that has no `"off"` spelling;
/// `None` (not set) becomes `null`.
pub(crate) fn serialize_duration_or_none<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

/// Serializes an optional [`Duration`]; `None` becomes `"off"`.
pub(crate) fn serialize_opt_duration<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_str("off"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_people_write_them() {
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("5s", Duration::from_secs(5)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("1d12h", Duration::from_secs(36 * 3600)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.1s", Duration::from_millis(100)),
            ("1m30s", Duration::from_secs(90)),
            (" 5 s ", Duration::from_secs(5)),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "5", "5 secs", "s", "1w", "-1s", "1..5s", "5sm"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn duration_errors_say_what_to_write() {
        let e = Quantity::Integer(5).duration(false).unwrap_err();
        assert!(e.contains("\"5s\""), "{e}");
        let e = parse_duration("5 secs").unwrap_err();
        assert!(e.contains("unknown unit \"secs\""), "{e}");
    }

    #[test]
    fn off_only_where_allowed() {
        assert_eq!(Quantity::Text("off".into()).duration(true), Ok(None));
        assert!(Quantity::Text("off".into()).duration(false).is_err());
    }

    #[test]
    fn sizes_binary_decimal_and_plain() {
        let ok = [
            ("512B", 512),
            ("64KiB", 65_536),
            ("1MiB", 1 << 20),
            ("1GiB", 1 << 30),
            ("1kB", 1_000),
            ("1MB", 1_000_000),
            ("2GB", 2_000_000_000),
            ("1mib", 1 << 20),
            ("1.5KiB", 1536),
            ("64 KiB", 65_536),
            ("4096", 4096),
        ];
        for (text, want) in ok {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for bad in ["", "MiB", "1TiB", "1 mega", "-1", "99999999999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(Quantity::Integer(1024).size(), Ok(1024));
        assert!(Quantity::Integer(-1).size().is_err());
        assert!(Quantity::Float(1.5).size().is_err());
    }

    #[test]
    fn formats_round_trip() {
        for d in ["250ms", "5s", "1m30s", "1h", "0s", "1500ms", "7d", "1d1h"] {
            let parsed = parse_duration(d).expect("valid");
            assert_eq!(parse_duration(&format_duration(parsed)), Ok(parsed), "{d}");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(format_duration(Duration::from_secs(25 * 3600)), "1d1h");
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(1000), "1kB");
        assert_eq!(format_size(2_000_000), "2MB");
        assert_eq!(format_size(1500), "1500B");
        assert_eq!(format_size(0), "0B");
    }
}
