//! Secrets in the config: passwords, tokens, key seeds. A secret never
//! shows in `Debug` or `Serialize` (so neither in logs nor in
//! `/v1/config`). Keep them out of the file itself: write `"${ENV_VAR}"`
//! (substituted from the router's environment, like any value) or use the
//! `*_file` form, a path read when the config is loaded (and again by
//! each reload, so a rotated file or variable takes effect on the next
//! reload).

use std::fmt;
use std::path::PathBuf;

use super::checker::Checker;
use super::error::Subject;
use super::plugin::resolve_path;
use super::raw::S;

/// A secret value: shown as `<redacted>` by `Debug` and `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub(crate) fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl serde::Serialize for Secret {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Reads the secret `field` (its value, usually `"${ENV_VAR}"`) or
/// `<field>_file` (a path, relative to the config file's directory). `None` when neither is
/// written, or when what is written cannot be read (reported).
pub(crate) fn read(
    field: &str,
    inline: Option<&S<String>>,
    file: Option<&S<String>>,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> Option<Secret> {
    match (inline, file) {
        (Some(_), Some(file)) => {
            c.invalid(
                subject,
                field,
                file.span(),
                format!("write `{field}` or `{field}_file`, not both"),
            );
            None
        }
        (Some(inline), None) if inline.get_ref().is_empty() => {
            c.invalid(subject, field, inline.span(), "is empty");
            None
        }
        (Some(inline), None) => Some(Secret(inline.get_ref().clone())),
        (None, Some(file)) => {
            let field = format!("{field}_file");
            let path = path(file, c);
            match std::fs::read_to_string(&path) {
                Ok(text) if !text.trim().is_empty() => Some(Secret(text.trim_end().to_owned())),
                Ok(_) => {
                    c.invalid(
                        subject,
                        &field,
                        file.span(),
                        format!("{} is empty", path.display()),
                    );
                    None
                }
                Err(e) => {
                    c.invalid(
                        subject,
                        &field,
                        file.span(),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            }
        }
        (None, None) => None,
    }
}

/// `written` as a path, resolved against the config file's directory.
pub(crate) fn path(written: &S<String>, c: &Checker<'_>) -> PathBuf {
    resolve_path(c.file(), written.get_ref())
}
