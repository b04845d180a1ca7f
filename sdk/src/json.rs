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
    // 15 digits and one dot at most; anything longer is not for us.
    if digits.len() > 16 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut dot = None;
    for (i, &c) in digits.iter().enumerate() {
        let d = c.wrapping_sub(b'0');
        if d < 10 {
            mantissa = mantissa * 10 + u64::from(d);
        } else if c == b'.' && dot.is_none() {
            dot = Some(i);
        } else {
            return None;
        }
    }
    let count = digits.len() - usize::from(dot.is_some());
    let fraction = dot.map_or(0, |at| digits.len() - at - 1);
    if count == 0 || count > 15 || (dot.is_some() && fraction == 0) {
        return None;
    }
    let v = mantissa as f64 / POW10[fraction];
    Some(if neg { -v } else { v })
}

/// Finds the value at `path` (e.g. `"sensor.temp"`, `"items.0.id"`) in the
/// JSON document `doc`. An empty path names the whole document.
///
/// A plugin that looks up the same path in every message should compile
/// it once with [`JsonPath::new`]: same answers, without splitting the
/// path each time.
pub fn find<'a>(doc: &'a [u8], path: &str) -> Option<Value<'a>> {
    let mut s = Scan { b: doc, i: 0 };
    s.ws();
    if !path.is_empty() {
        for seg in path.split('.') {
            s.step(seg.as_bytes(), || seg.parse().ok())?;
        }
    }
    s.value()
}

/// A dotted path compiled once (split, array indexes parsed), to look up
/// in many documents with [`JsonPath::find`]; e.g. built in a plugin's
/// `init` from its config.
///
/// ```
/// use switchyard_sdk::json::{JsonPath, Value};
/// let temp = JsonPath::new("sensor.temp");
/// let doc = br#"{"sensor": {"id": "a", "temp": 21.5}}"#;
/// assert_eq!(temp.find(doc), Some(Value::Number("21.5")));
/// assert_eq!(temp.as_str(), "sensor.temp");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    segments: Vec<Segment>,
}

/// One segment of a [`JsonPath`]: a member name, and the array index it
/// names when it is a number.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    key: Box<[u8]>,
    index: Option<usize>,
}

impl JsonPath {
    /// Compiles `path`, written as for [`find`]: keys separated by dots,
    /// a number indexing an array, and the empty path naming the whole
    /// document. Every string is a valid path (one naming nothing finds
    /// nothing).
    pub fn new(path: &str) -> Self {
        let segments = if path.is_empty() {
            Vec::new()
        } else {
            path.split('.')
                .map(|seg| Segment {
                    key: seg.as_bytes().into(),
                    index: seg.parse().ok(),
                })
                .collect()
        };
        Self {
            text: path.to_owned(),
            segments,
        }
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Finds the value at this path in `doc`: exactly what
    /// [`find`]`(doc, self.as_str())` returns.
    pub fn find<'a>(&self, doc: &'a [u8]) -> Option<Value<'a>> {
        let mut s = Scan { b: doc, i: 0 };
        s.ws();
        for seg in &self.segments {
            s.step(&seg.key, || seg.index)?;
        }
        s.value()
    }
}

impl std::fmt::Display for JsonPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// `0x01` in every byte of a word.
const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of every byte of a word.
const HIGHS: u64 = 0x8080_8080_8080_8080;

// The scanner works on words where it can: in WebAssembly every loop
// iteration also pays for the epoch (deadline) check, so eight bytes per
// iteration, and no loop at all for short keys, is what makes it fast.

/// A mask whose lowest set bit is the high bit of the first byte of `w`
/// (little-endian) equal to `c`; zero when no byte is. Bits above the
/// first match may be set spuriously: only the lowest one is exact.
#[inline(always)]
fn first_byte_eq(w: u64, c: u8) -> u64 {
    let x = w ^ (ONES * u64::from(c));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// As [`first_byte_eq`], for the first byte below `n` (`n` at most 128).
#[inline(always)]
fn first_byte_below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS
}

/// The byte index in its word of the lowest match in a non-zero mask.
#[inline(always)]
fn first_index(mask: u64) -> usize {
    (mask.trailing_zeros() / 8) as usize
}

/// The 8 bytes of `b` from `i` as a little-endian word.
#[inline(always)]
fn word_at(b: &[u8], i: usize) -> Option<u64> {
    let chunk: [u8; 8] = b.get(i..i.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(chunk))
}

/// `K` (1, 2, 4 or 8) bytes of `b` from `i` as a little-endian word,
/// zero-extended (one load); zero when they are out of bounds.
#[inline(always)]
fn load<const K: usize>(b: &[u8], i: usize) -> u64 {
    let Some(src) = b.get(i..i.saturating_add(K)) else {
        return 0;
    };
    match K {
        8 => src.try_into().map_or(0, u64::from_le_bytes),
        4 => src
            .try_into()
            .map_or(0, |a| u64::from(u32::from_le_bytes(a))),
        2 => src
            .try_into()
            .map_or(0, |a| u64::from(u16::from_le_bytes(a))),
        _ => src.first().map_or(0, |&c| u64::from(c)),
    }
}

/// A slice of under 8 bytes as two overlapping halves of 4, 2 or 1 bytes
/// (zero-extended words), without a loop: together they hold every byte.
#[inline(always)]
fn halves(b: &[u8]) -> (u64, u64) {
    let n = b.len();
    if n >= 4 {
        (load::<4>(b, 0), load::<4>(b, n - 4))
    } else if n >= 2 {
        (load::<2>(b, 0), load::<2>(b, n - 2))
    } else {
        (load::<1>(b, 0), 0)
    }
}

/// True when every byte is ASCII (and so the bytes are UTF-8): by words,
/// the last one overlapping the one before.
#[inline(always)]
fn is_ascii(b: &[u8]) -> bool {
    let n = b.len();
    if n < 8 {
        let (lo, hi) = halves(b);
        return (lo | hi) & HIGHS == 0;
    }
    let mut acc = load::<8>(b, n - 8);
    let mut i = 0;
    while i + 8 < n {
        acc |= load::<8>(b, i);
        i += 8;
    }
    acc & HIGHS == 0
}

/// Byte-slice equality by words, without a call to `memcmp`: keys are
/// short.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return halves(a) == halves(b);
    }
    if load::<8>(a, n - 8) != load::<8>(b, n - 8) {
        return false;
    }
    let mut i = 0;
    while i + 8 < n {
        if load::<8>(a, i) != load::<8>(b, i) {
            return false;
        }
        i += 8;
    }
    true
}

/// The bytes as `&str` if they are UTF-8; ASCII, the usual case, is
/// recognised without the general validator.
#[inline]
pub(crate) fn utf8(b: &[u8]) -> Option<&str> {
    if is_ascii(b) {
        // SAFETY: every byte is below 0x80, and ASCII is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(b) })
    } else {
        std::str::from_utf8(b).ok()
    }
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    #[inline(always)]
    fn eat(&mut self, c: u8) -> Option<()> {
        // Compact JSON has no whitespace: look for `c` first.
        if self.peek() == Some(c) {
            self.i += 1;
            return Some(());
        }
        self.ws();
        if self.peek()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// One path segment: into member `key` of an object, or element
    /// `index()` of an array.
    #[inline(always)]
    fn step(&mut self, key: &[u8], index: impl FnOnce() -> Option<usize>) -> Option<()> {
        match self.peek()? {
            b'{' => self.enter_member(key),
            b'[' => self.enter_element(index()?),
            _ => None,
        }
    }

    /// From just after an opening quote, the index of the closing quote
    /// and whether a backslash came before it: eight bytes at a time
    /// while they hold neither, then byte by byte.
    #[inline(always)]
    fn string_end(&self) -> Option<(usize, bool)> {
        let b = self.b;
        let mut i = self.i;
        let mut escaped = false;
        loop {
            while let Some(w) = word_at(b, i) {
                let hits = first_byte_eq(w, b'"') | first_byte_eq(w, b'\\');
                if hits != 0 {
                    i += first_index(hits);
                    break;
                }
                i += 8;
            }
            match *b.get(i)? {
                b'"' => return Some((i, escaped)),
                b'\\' => {
                    // The escaped character is never the closing quote.
                    escaped = true;
                    i += 2;
                }
                _ => i += 1,
            }
        }
    }

    /// At an opening quote (after whitespace): returns the raw contents
    /// (escapes as written), whether they hold a backslash, and moves past
    /// the closing quote.
    #[inline(always)]
    fn string_bytes(&mut self) -> Option<(&'a [u8], bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let (end, escaped) = self.string_end()?;
        self.i = end + 1;
        Some((self.b.get(start..end)?, escaped))
    }

    /// Moves past one value of any kind.
    #[inline(always)]
    fn skip(&mut self) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'"' => self.string_bytes().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    // Words holding no quote and no bracket are skipped
                    // whole ('[' and '{', ']' and '}' differ only in 0x20).
                    while let Some(w) = word_at(self.b, self.i) {
                        let folded = w | (ONES * 0x20);
                        let hits = first_byte_eq(w, b'"')
                            | first_byte_eq(folded, b'{')
                            | first_byte_eq(folded, b'}');
                        if hits != 0 {
                            self.i += first_index(hits);
                            break;
                        }
                        self.i += 8;
                    }
                    match self.peek()? {
                        b'"' => {
                            self.i += 1;
                            self.i = self.string_end()?.0 + 1;
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
                self.scalar_end();
                Some(())
            }
        }
    }

    /// Moves to the end of a number or literal: the next delimiter or
    /// whitespace, or the end of the document.
    #[inline(always)]
    fn scalar_end(&mut self) {
        loop {
            // Skip words with no candidate: a byte below b'-' (which holds
            // ',', the whitespace and a few bytes that are not
            // delimiters), ']' or '}'.
            while let Some(w) = word_at(self.b, self.i) {
                let hits =
                    first_byte_below(w, b'-') | first_byte_eq(w, b']') | first_byte_eq(w, b'}');
                if hits != 0 {
                    self.i += first_index(hits);
                    break;
                }
                self.i += 8;
            }
            match self.peek() {
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') => return,
                Some(_) => self.i += 1,
            }
        }
    }

    /// At `{`: moves to the value of member `key`.
    #[inline(always)]
    fn enter_member(&mut self, key: &[u8]) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            return None;
        }
        loop {
            let (k, escaped) = self.string_bytes()?;
            self.eat(b':')?;
            let hit = if escaped {
                utf8(k)
                    .and_then(unescape)
                    .is_some_and(|k| k.as_bytes() == key)
            } else {
                same_bytes(k, key)
            };
            if hit {
                self.ws();
                return Some(());
            }
            // A string value (the usual kind) is skipped here, without
            // the call and the dispatch on its first byte.
            self.ws();
            if self.peek() == Some(b'"') {
                self.i += 1;
                self.i = self.string_end()?.0 + 1;
            } else {
                self.skip()?;
            }
            self.eat(b',')?;
            self.ws();
        }
    }

    /// At `[`: moves to element `n`.
    #[inline(always)]
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
    #[inline(always)]
    fn value(&mut self) -> Option<Value<'a>> {
        self.ws();
        let start = self.i;
        Some(match self.peek()? {
            b'"' => Value::String(utf8(self.string_bytes()?.0)?),
            b'{' => {
                self.skip()?;
                Value::Object(self.b.get(start..self.i)?)
            }
            b'[' => {
                self.skip()?;
                Value::Array(self.b.get(start..self.i)?)
            }
            _ => {
                self.scalar_end();
                match self.b.get(start..self.i)? {
                    b"null" => Value::Null,
                    b"true" => Value::Bool(true),
                    b"false" => Value::Bool(false),
                    n @ [b'-' | b'0'..=b'9', ..] => Value::Number(utf8(n)?),
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

    /// The scanner as it was before it worked on words: the reference the
    /// word-wise one must agree with.
    mod reference {
        use super::super::{Value, unescape};

        pub(super) fn find<'a>(doc: &'a [u8], path: &str) -> Option<Value<'a>> {
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
    }

    /// A few thousand pseudo-random documents built from JSON's special
    /// bytes: the word-wise scanner, a compiled path and the reference
    /// give the same answer for every path.
    #[test]
    fn agrees_with_the_reference_scanner() {
        const PIECES: [&[u8]; 25] = [
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"",
            b"\\",
            b":",
            b",",
            b" ",
            b"\n",
            b"a",
            b"b",
            b"\"a\"",
            b"\"b\":",
            b"1",
            b"-2.5",
            b"true",
            b"null",
            b"\\\"",
            b"\xc3\xa9",
            b"\xff",
            b"\"longer key here\"",
            b"0",
            b"\t",
            b"abcdefghijklmnopqrst",
        ];
        let paths = [
            "",
            "a",
            "b",
            "a.b",
            "0",
            "a.0",
            "b.a",
            "longer key here",
            "a.1.b",
            "x",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut docs: Vec<Vec<u8>> =
            vec![br#"{"a":{"b":[1,{"c":"}"}]},"b":"q\"z","longer key here":[true,null]}"#.to_vec()];
        for _ in 0..4000 {
            let n = (next() % 40) as usize;
            let mut d = Vec::new();
            if next() % 2 == 0 {
                d.extend_from_slice(b"{\"a\":");
            }
            for _ in 0..n {
                d.extend_from_slice(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            docs.push(d);
        }
        let mut found = 0;
        for d in &docs {
            for p in paths {
                let want = reference::find(d, p);
                found += usize::from(want.is_some());
                assert_eq!(
                    find(d, p),
                    want,
                    "{:?} at {p:?}",
                    String::from_utf8_lossy(d)
                );
                assert_eq!(JsonPath::new(p).find(d), want, "compiled {p:?}");
            }
        }
        assert!(found > 2000, "only {found} lookups found something");
    }

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
        // Every short string of digits, dots and a sign: whenever the fast
        // path answers, it answers as `str::parse` does, and it declines
        // exactly what it declined before (more than 15 digits, a second
        // dot, no digit, or a dot with no digit after it).
        let alphabet = [b'0', b'7', b'9', b'.', b'-', b'e'];
        let mut text = Vec::new();
        for len in 1..=6u32 {
            for mut k in 0..alphabet.len().pow(len) {
                text.clear();
                for _ in 0..len {
                    text.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                let n = std::str::from_utf8(&text).expect("ASCII");
                let digits = n.strip_prefix('-').unwrap_or(n);
                let dots = digits.matches('.').count();
                let plain = !digits.is_empty()
                    && digits.bytes().all(|c| c.is_ascii_digit() || c == b'.')
                    && dots <= 1
                    && digits.bytes().any(|c| c.is_ascii_digit())
                    && !digits.ends_with('.');
                let fast = fast_f64(n);
                assert_eq!(fast.is_some(), plain, "{n}");
                if let Some(v) = fast {
                    assert_eq!(Some(v), n.parse().ok(), "{n}");
                }
            }
        }
        assert_eq!(fast_f64("1234567890123456"), None, "16 digits");
        assert_eq!(fast_f64("123456789.012345"), Some(123456789.012345));
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
