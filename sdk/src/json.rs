//! Looks up one field of a JSON payload without parsing the whole document
//! or allocating: the scanner skips what the path does not name. For full
//! documents use `serde_json` (the `json` feature re-exports it).
//!
//! ```
//! use switchyard_sdk::json::{self, Value};
//! let doc = br#"{"sensor": {"temp": 21.5, "tags": ["a", "b"]}, "ok": true}"#;
//! assert_eq!(json::find(doc, "sensor.temp").and_then(|v| v.as_f64()), Some(21.5));
//! assert_eq!(json::find(doc, "sensor.tags.1").and_then(|v| v.as_str()).as_deref(), Some("b"));
//! assert_eq!(json::find(doc, "ok"), Some(Value::Bool(true)));
//! assert_eq!(json::find(doc, "missing"), None);
//! ```
//!
//! Paths are keys separated by dots; a segment that is a number indexes an
//! array. Keys that themselves hold dots cannot be named. Malformed JSON
//! gives `None` (or a value from the part before the damage), never a
//! panic.

use std::borrow::Cow;

/// A JSON value found by [`find`], borrowed from the document.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written (parse it with [`Value::as_f64`] or `str::parse`).
    Number(&'a str),
    /// A string, as written between the quotes (escapes not yet decoded).
    String(&'a str),
    /// An object, as written, braces included.
    Object(&'a [u8]),
    /// An array, as written, brackets included.
    Array(&'a [u8]),
}

impl<'a> Value<'a> {
    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => parse_number(n),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The string with escapes decoded (borrowed when it has none).
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        match self {
            Value::String(raw) => unescape(raw),
            _ => None,
        }
    }

    /// The value as text for templates and comparisons: strings decoded,
    /// numbers, booleans and `null` as written, containers as their JSON.
    pub fn to_text(&self) -> Cow<'a, str> {
        match self {
            Value::Null => Cow::Borrowed("null"),
            Value::Bool(true) => Cow::Borrowed("true"),
            Value::Bool(false) => Cow::Borrowed("false"),
            Value::Number(n) => Cow::Borrowed(n),
            Value::String(raw) => unescape(raw).unwrap_or(Cow::Borrowed(raw)),
            Value::Object(b) | Value::Array(b) => String::from_utf8_lossy(b),
        }
    }
}

/// Parses a decimal number as `str::parse::<f64>` does, with a fast path
/// for plain decimals (the common case in payloads and attributes).
pub fn parse_number(n: &str) -> Option<f64> {
    fast_f64(n).or_else(|| n.parse().ok())
}

/// Plain decimals of at most 15 digits without an exponent, exactly as
/// `str::parse` would round them: the mantissa and the power of ten are
/// both exact in an f64, and one IEEE division rounds correctly.
fn fast_f64(n: &str) -> Option<f64> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (neg, digits) = match n.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        all => (false, all),
    };
    let mut mantissa: u64 = 0;
    let mut count = 0usize;
    let mut fraction = 0usize;
    let mut dot = false;
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                count += 1;
                fraction += usize::from(dot);
            }
            b'.' if !dot => dot = true,
            _ => return None,
        }
        if count > 15 {
            return None;
        }
    }
    if count == 0 || (dot && fraction == 0) {
        return None;
    }
    let v = mantissa as f64 / POW10[fraction];
    Some(if neg { -v } else { v })
}

/// Finds the value at `path` (e.g. `"sensor.temp"`, `"items.0.id"`) in the
/// JSON document `doc`. An empty path names the whole document.
pub fn find<'a>(doc: &'a [u8], path: &str) -> Option<Value<'a>> {
    let mut s = Scan { b: doc, i: 0 };
    s.ws();
    if !path.is_empty() {
        for seg in path.split('.') {
            match s.peek()? {
                b'{' => s.enter_member(seg)?,
                b'[' => s.enter_element(seg.parse().ok()?)?,
                _ => return None,
            }
        }
    }
    s.value()
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        if self.peek()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// At an opening quote: returns the raw contents (escapes as written)
    /// and moves past the closing quote.
    fn string_bytes(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let rest = self.b.get(self.i..)?;
        let mut end = 0;
        loop {
            end += rest
                .get(end..)?
                .iter()
                .position(|&c| c == b'"' || c == b'\\')?;
            if rest[end] == b'"' {
                break;
            }
            end += 2;
        }
        self.i += end + 1;
        Some(&rest[..end])
    }

    fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.string_bytes()?).ok()
    }

    /// Moves past one value of any kind.
    fn skip(&mut self) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'"' => self.string_bytes().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string_bytes()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while let Some(c) = self.peek() {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.i += 1;
                }
                Some(())
            }
        }
    }

    /// At `{`: moves to the value of member `key`.
    fn enter_member(&mut self, key: &str) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            return None;
        }
        loop {
            let k = self.string_bytes()?;
            self.eat(b':')?;
            let hit = if k.contains(&b'\\') {
                std::str::from_utf8(k)
                    .ok()
                    .and_then(unescape)
                    .is_some_and(|k| k == key)
            } else {
                k == key.as_bytes()
            };
            if hit {
                self.ws();
                return Some(());
            }
            self.skip()?;
            self.eat(b',')?;
            self.ws();
        }
    }

    /// At `[`: moves to element `n`.
    fn enter_element(&mut self, n: usize) -> Option<()> {
        self.eat(b'[')?;
        self.ws();
        if self.peek()? == b']' {
            return None;
        }
        for _ in 0..n {
            self.skip()?;
            self.eat(b',')?;
        }
        self.ws();
        Some(())
    }

    /// Reads the value here.
    fn value(&mut self) -> Option<Value<'a>> {
        self.ws();
        let start = self.i;
        Some(match self.peek()? {
            b'"' => Value::String(self.string()?),
            b'{' => {
                self.skip()?;
                Value::Object(self.b.get(start..self.i)?)
            }
            b'[' => {
                self.skip()?;
                Value::Array(self.b.get(start..self.i)?)
            }
            _ => {
                self.skip()?;
                let raw = std::str::from_utf8(self.b.get(start..self.i)?).ok()?;
                match raw {
                    "null" => Value::Null,
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    n if n.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
                        Value::Number(n)
                    }
                    _ => return None,
                }
            }
        })
    }
}

/// Decodes JSON string escapes; `None` on a malformed escape.
fn unescape(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('\\') {
        return Some(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hi = hex4(&mut chars)?;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    if chars.next()? != '\\' || chars.next()? != 'u' {
                        return None;
                    }
                    let lo = hex4(&mut chars)?;
                    0x10000 + ((hi - 0xD800) << 10) + (lo.checked_sub(0xDC00)? & 0x3FF)
                } else {
                    hi
                };
                out.push(char::from_u32(code)?);
            }
            _ => return None,
        }
    }
    Some(Cow::Owned(out))
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    let mut v = 0;
    for _ in 0..4 {
        v = v * 16 + chars.next()?.to_digit(16)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_fields_and_skips_others() {
        let doc = br#" { "a" : {"x": [1, {"y": "}"}], "b": "q\"z"}, "n": -1.5e3, "s": "\u00e9\n", "e": {} } "#;
        assert_eq!(
            find(doc, "a.b").and_then(|v| v.as_str()).as_deref(),
            Some("q\"z")
        );
        assert_eq!(
            find(doc, "a.x.1.y").and_then(|v| v.as_str()).as_deref(),
            Some("}")
        );
        assert_eq!(find(doc, "n").and_then(|v| v.as_f64()), Some(-1500.0));
        assert_eq!(
            find(doc, "s").and_then(|v| v.as_str()).as_deref(),
            Some("é\n")
        );
        assert_eq!(find(doc, "e"), Some(Value::Object(b"{}")));
        assert_eq!(find(doc, "e.z"), None);
        assert_eq!(find(doc, "a.x.5"), None);
        assert_eq!(find(doc, "n.deeper"), None);
        assert!(matches!(find(doc, "a.x"), Some(Value::Array(_))));
    }

    #[test]
    fn numbers_parse_exactly() {
        for n in [
            "0",
            "-0",
            "31.5",
            "-12.25",
            "123456789012345",
            "0.1",
            "1e3",
            "1.5E-2",
            "99.99",
        ] {
            let want: f64 = n.parse().expect("number");
            assert_eq!(Value::Number(n).as_f64(), Some(want), "{n}");
        }
        for bad in ["", "-", ".", "1.", "1.2.3", "abc"] {
            assert_eq!(fast_f64(bad), None, "{bad}");
        }
    }

    #[test]
    fn malformed_documents_never_panic() {
        let docs: [&[u8]; 9] = [
            b"",
            b"{",
            b"{\"a\"",
            b"{\"a\":",
            b"[1,",
            b"\"\\",
            b"{\"a\":}}}",
            b"]]]",
            b"{\"a\\u12",
        ];
        for d in docs {
            for p in ["", "a", "a.b", "0", "a.0"] {
                let _ = find(d, p);
            }
        }
        for len in 0..64 {
            let doc = br#"{"a": {"b": [true, null, "x\u0041"]}, "c": 1}"#;
            let cut = &doc[..len.min(doc.len())];
            let _ = find(cut, "a.b.2");
            let _ = find(cut, "c");
        }
    }
}
