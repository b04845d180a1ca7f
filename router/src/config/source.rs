//! The config text before parsing: `${ENV}` substitution, and the map from
//! positions in the substituted text back to lines and columns of the file
//! as the operator wrote it.
//!
//! Substitution is textual and runs before TOML parsing, so a variable can
//! supply a string's contents (`name = "site-${SITE_ID}"`) or a bare value
//! (`capacity = ${QUEUE_CAPACITY:-10000}`). Forms:
//!
//! - `${NAME}`: the variable's value; an error when it is not set.
//! - `${NAME:-default}`: the default when the variable is unset or empty.
//! - `$${`: a literal `${`.
//!
//! Comments are left alone, so `# export ${SITE_ID}` needs nothing set.
//! A value may not contain a line break, so line numbers never move.

use std::ops::Range;

use super::error::{Error, Location};

/// The text to parse and how to map its positions back to the original.
#[derive(Debug)]
pub(crate) struct Source {
    /// The substituted text.
    pub(crate) text: String,
    /// The text as written, for line and column numbers.
    original: String,
    /// Byte offsets where each line of `original` starts.
    line_starts: Vec<usize>,
    /// Replaced regions, in order.
    edits: Vec<Edit>,
}

/// One replaced region: `original[orig]` became `text[new]`.
#[derive(Debug, Clone)]
struct Edit {
    orig: Range<usize>,
    new: Range<usize>,
}

/// Lexical state of the scanner that finds comments; only `#` outside
/// strings starts one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lex {
    Normal,
    Comment,
    Basic,
    Literal,
    MultiBasic,
    MultiLiteral,
}

impl Source {
    /// Substitutes `${...}` in `original`, looking variables up with `env`.
    /// Problems come back with their spans in `original`; the text then has
    /// the failed substitutions removed and should not be parsed.
    pub(crate) fn substitute(
        original: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (Self, Vec<(Range<usize>, Error)>) {
        let mut text = String::with_capacity(original.len());
        let mut edits = Vec::new();
        let mut problems = Vec::new();
        let bytes = original.as_bytes();
        let mut state = Lex::Normal;
        let mut copied = 0; // original[..copied] is already in `text`
        let mut i = 0;
        while i < bytes.len() {
            let rest = &bytes[i..];
            match state {
                Lex::Comment => {
                    if bytes[i] == b'\n' {
                        state = Lex::Normal;
                    }
                    i += 1;
                    continue;
                }
                Lex::Normal => {
                    if rest.starts_with(b"\"\"\"") {
                        state = Lex::MultiBasic;
                        i += 3;
                        continue;
                    }
                    if rest.starts_with(b"'''") {
                        state = Lex::MultiLiteral;
                        i += 3;
                        continue;
                    }
                    match bytes[i] {
                        b'#' => state = Lex::Comment,
                        b'"' => state = Lex::Basic,
                        b'\'' => state = Lex::Literal,
                        _ => {}
                    }
                }
                Lex::Basic | Lex::MultiBasic if bytes[i] == b'\\' => {
                    // An escape; `\$` is not one TOML knows, so `$` stays.
                    i += 2;
                    continue;
                }
                Lex::Basic => {
                    if bytes[i] == b'"' || bytes[i] == b'\n' {
                        state = Lex::Normal;
                    }
                }
                Lex::Literal => {
                    if bytes[i] == b'\'' || bytes[i] == b'\n' {
                        state = Lex::Normal;
                    }
                }
                Lex::MultiBasic => {
                    if rest.starts_with(b"\"\"\"") {
                        state = Lex::Normal;
                        i += 3;
                        continue;
                    }
                }
                Lex::MultiLiteral => {
                    if rest.starts_with(b"'''") {
                        state = Lex::Normal;
                        i += 3;
                        continue;
                    }
                }
            }
            if rest.starts_with(b"$${") {
                text.push_str(&original[copied..i]);
                let start = text.len();
                text.push_str("${");
                edits.push(Edit {
                    orig: i..i + 3,
                    new: start..text.len(),
                });
                i += 3;
                copied = i;
                continue;
            }
            if rest.starts_with(b"${") {
                let end = match original[i..].find(['}', '\n']) {
                    Some(n) if bytes[i + n] == b'}' => i + n + 1,
                    _ => {
                        problems.push((
                            i..i + 2,
                            Error::Substitution {
                                reason: "`${` without a closing `}` on the same line \
                                         (write `$${` for a literal `${`)"
                                    .into(),
                            },
                        ));
                        i += 2;
                        continue;
                    }
                };
                text.push_str(&original[copied..i]);
                let start = text.len();
                match expand(&original[i + 2..end - 1], env) {
                    Ok(value) => text.push_str(&value),
                    Err(error) => problems.push((i..end, error)),
                }
                edits.push(Edit {
                    orig: i..end,
                    new: start..text.len(),
                });
                i = end;
                copied = i;
                continue;
            }
            i += 1;
        }
        text.push_str(&original[copied..]);
        let line_starts = std::iter::once(0)
            .chain(original.match_indices('\n').map(|(n, _)| n + 1))
            .collect();
        let source = Self {
            text,
            original: original.to_owned(),
            line_starts,
            edits,
        };
        (source, problems)
    }

    /// The line and column in the original file of byte `offset` in the
    /// substituted text. A position inside a substituted value maps to the
    /// `$` that produced it.
    pub(crate) fn location(&self, offset: usize) -> Location {
        let idx = self.edits.partition_point(|e| e.new.start <= offset);
        let orig = match idx.checked_sub(1).map(|k| &self.edits[k]) {
            None => offset,
            Some(edit) if offset < edit.new.end => edit.orig.start,
            Some(edit) => offset - edit.new.end + edit.orig.end,
        };
        self.original_location(orig)
    }

    /// The line and column of byte `offset` in the original text.
    pub(crate) fn original_location(&self, offset: usize) -> Location {
        let offset = offset.min(self.original.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        // Offsets from the parser are char boundaries; be lenient anyway.
        let column = self
            .original
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        Location {
            line,
            column: column + 1,
        }
    }
}

/// Expands the inside of one `${...}`.
fn expand(inner: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Error> {
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(Error::Substitution {
            reason: format!(
                "`${{{inner}}}`: a variable name is letters, digits and `_`, \
                 not starting with a digit (forms: `${{NAME}}`, `${{NAME:-default}}`)"
            ),
        });
    }
    let value = match (env(name), default) {
        (Some(v), Some(d)) if v.is_empty() => d.to_owned(),
        (Some(v), _) => v,
        (None, Some(d)) => d.to_owned(),
        (None, None) => {
            return Err(Error::UnsetVariable {
                name: name.to_owned(),
            });
        }
    };
    if value.contains(['\n', '\r']) {
        return Err(Error::Substitution {
            reason: format!("the value of `{name}` contains a line break, which is not allowed"),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SITE_ID" => Some("42".into()),
            "EMPTY" => Some(String::new()),
            "LONG" => Some("a-much-longer-value".into()),
            _ => None,
        }
    }

    fn sub(text: &str) -> (Source, Vec<(Range<usize>, Error)>) {
        Source::substitute(text, &env)
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        let (s, p) = sub("name = \"site-${SITE_ID}\"\ncap = ${CAP:-100}\nx = \"${EMPTY:-d}\"\n");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(s.text, "name = \"site-42\"\ncap = 100\nx = \"d\"\n");
    }

    #[test]
    fn set_but_empty_without_default_is_empty() {
        let (s, p) = sub("x = \"${EMPTY}\"");
        assert!(p.is_empty());
        assert_eq!(s.text, "x = \"\"");
    }

    #[test]
    fn unset_variable_is_an_error_at_its_place() {
        let (s, p) = sub("a = 1\nb = \"${NOPE}\"\n");
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].1,
            Error::UnsetVariable {
                name: "NOPE".into()
            }
        );
        let at = s.original_location(p[0].0.start);
        assert_eq!((at.line, at.column), (2, 6));
    }

    #[test]
    fn every_bad_substitution_is_reported() {
        let (_, p) = sub("a = \"${A}\"\nb = \"${1X}\"\nc = \"${OPEN\"\nd = \"${B}\"\n");
        assert_eq!(p.len(), 4, "{p:?}");
    }

    #[test]
    fn comments_and_escapes_are_left_alone() {
        let (s, p) = sub("# uses ${SITE_ID} and ${UNSET}\nx = \"$${literal}\" # ${UNSET}\n");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            s.text,
            "# uses ${SITE_ID} and ${UNSET}\nx = \"${literal}\" # ${UNSET}\n"
        );
    }

    #[test]
    fn hash_inside_strings_is_not_a_comment() {
        let (s, p) = sub("x = \"#${SITE_ID}\"\ny = '#${SITE_ID}'\nz = \"\"\"\n#${SITE_ID}\"\"\"\n");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(s.text, "x = \"#42\"\ny = '#42'\nz = \"\"\"\n#42\"\"\"\n");
    }

    #[test]
    fn locations_map_back_through_substitutions() {
        let original = "name = \"${LONG}\" x\nnext = 1\n";
        let (s, p) = sub(original);
        assert!(p.is_empty());
        // `x` after the longer value maps back to its original column.
        let x = s.text.find(" x").expect("x present") + 1;
        assert_eq!(
            s.location(x),
            Location {
                line: 1,
                column: 18
            }
        );
        // Inside the value maps to the `$`.
        let inside = s.text.find("longer").expect("value present");
        assert_eq!(s.location(inside), Location { line: 1, column: 9 });
        let next = s.text.find("next").expect("next present");
        assert_eq!(s.location(next), Location { line: 2, column: 1 });
    }

    #[test]
    fn line_breaks_in_values_are_refused() {
        let env = |_: &str| Some("a\nb".to_owned());
        let (_, p) = Source::substitute("x = \"${X}\"", &env);
        assert!(matches!(p[0].1, Error::Substitution { .. }), "{p:?}");
    }

    proptest::proptest! {
        /// Text without `$` comes through unchanged, positions included.
        #[test]
        fn text_without_dollars_is_unchanged(text in "[^$]{0,200}") {
            let (s, p) = sub(&text);
            proptest::prop_assert!(p.is_empty());
            proptest::prop_assert_eq!(&s.text, &text);
            for (offset, _) in text.char_indices() {
                proptest::prop_assert_eq!(s.location(offset), s.original_location(offset));
            }
        }

        /// Whatever the values, every line keeps its number.
        #[test]
        fn substitution_keeps_line_numbers(
            lines in proptest::collection::vec("[a-z =\"]{0,10}(\\$\\{SITE_ID\\}|\\$\\{X:-[a-z]{0,8}\\})?[a-z \"]{0,10}", 1..20),
        ) {
            let text = lines.join("\n");
            let (s, p) = sub(&text);
            proptest::prop_assume!(p.is_empty());
            for (n, start) in std::iter::once(0)
                .chain(s.text.match_indices('\n').map(|(i, _)| i + 1))
                .enumerate()
            {
                proptest::prop_assert_eq!(s.location(start).line, n + 1);
            }
        }
    }
}
