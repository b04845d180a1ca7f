//! Config problems: each one names the file, the line and column, the thing
//! it concerns (`route "telemetry"`) and the reason.

use std::fmt;

/// A line and column in the config file as the operator wrote it (before
/// `${ENV}` substitution), both counted from 1. Columns count characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub column: usize,
}

/// One thing wrong with a config file.
///
/// Displays as `file:line:column: reason`, or `file: reason` when the
/// problem has no place in the file (an unreadable file, a missing section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, as the caller named it (used only in messages).
    pub file: String,
    /// Where in the file, when the problem has a place.
    pub location: Option<Location>,
    /// What is wrong.
    pub error: Error,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(Location { line, column }) => {
                write!(f, "{}:{line}:{column}: {}", self.file, self.error)
            }
            None => write!(f, "{}: {}", self.file, self.error),
        }
    }
}

/// Every problem found in a config file, in file order. Displays one
/// problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    problems: Vec<Problem>,
}

impl ConfigErrors {
    /// Wraps `problems`, sorting them into file order (problems without a
    /// place come last). Used by the config itself and by callers that find
    /// problems later, such as plugins that fail to load (see
    /// [`Plugin::problem`](super::Plugin::problem)).
    ///
    /// Callers pass at least one problem: an empty list gives an empty
    /// `ConfigErrors` that displays as nothing, which reads as "no reason".
    pub fn from_problems(mut problems: Vec<Problem>) -> Self {
        problems.sort_by_key(|p| (p.location.is_none(), p.location));
        Self { problems }
    }

    /// The problems, in file order.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// How many problems were found (at least one).
    pub fn len(&self) -> usize {
        self.problems.len()
    }

    /// False for every `ConfigErrors` the config builds (it holds at least
    /// one problem). Present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// Iterates over the problems, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.problems.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a Problem;
    type IntoIter = std::slice::Iter<'a, Problem>;

    fn into_iter(self) -> Self::IntoIter {
        self.problems.iter()
    }
}

/// What the problem concerns, printed before the reason: `input "api": `,
/// `plugin "drop-debug": `, `route #3: ` (no usable name), `[router]: `, or
/// nothing at the top level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(pub(crate) String);

impl Subject {
    /// The subject as text: `input "api"`, `route #3`, `[router]`, or empty
    /// for the top level.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The top level of the file: prints nothing.
    pub(crate) fn top() -> Self {
        Self(String::new())
    }

    /// A named or numbered entry of a section such as `input "api"`.
    pub(crate) fn entry(section: &str, name: Option<&str>, index: usize) -> Self {
        match name {
            Some(name) => Self(format!("{section} {name:?}")),
            None => Self(format!("{section} #{}", index + 1)),
        }
    }

    /// The `[[plugin]]` called `name`: `plugin "name"`.
    pub fn plugin(name: &str) -> Self {
        Self::entry("plugin", Some(name), 0)
    }

    /// A table section such as `[router]`.
    pub(crate) fn table(section: &str) -> Self {
        Self(format!("[{section}]"))
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "{}: ", self.0)
        }
    }
}

/// ` (did you mean "x"?)` when there is a close match, else nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Suggestion(pub Option<String>);

impl fmt::Display for Suggestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(s) => write!(f, " (did you mean {s:?}?)"),
            None => Ok(()),
        }
    }
}

/// Why a config file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read the config file: {reason}")]
    Read {
        /// The operating system's reason.
        reason: String,
    },
    /// The text is not valid TOML. Only the first syntax error is reported:
    /// later ones are usually echoes of it.
    #[error("TOML syntax error: {reason} (the rest of the file was not checked)")]
    Syntax {
        /// The parser's reason.
        reason: String,
    },
    /// `${NAME}` names an environment variable that is not set and gives no
    /// default.
    #[error("environment variable `{name}` is not set (set it, or write `${{{name}:-default}}`)")]
    UnsetVariable {
        /// The variable's name.
        name: String,
    },
    /// A `${` that is not a well-formed substitution, or a value that cannot
    /// be substituted.
    #[error("bad substitution: {reason}")]
    Substitution {
        /// What is wrong with it.
        reason: String,
    },
    /// A key the config does not know (usually a typo).
    #[error("{subject}unknown field `{field}`{suggestion}")]
    UnknownField {
        /// Where the key was found.
        subject: Subject,
        /// The key as written.
        field: String,
        /// The closest known key, if any is close.
        suggestion: Suggestion,
    },
    /// The value has the wrong shape: a wrong type or a missing field.
    #[error("{subject}{reason}")]
    Shape {
        /// Which entry.
        subject: Subject,
        /// The deserializer's reason.
        reason: String,
    },
    /// A value that does not parse, is out of range, or does not fit the
    /// rest of the entry.
    #[error("{subject}{field}: {reason}")]
    Invalid {
        /// Which entry.
        subject: Subject,
        /// The field (dotted for nested tables: `queue.capacity`).
        field: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// A name that refers to nothing defined.
    #[error("{subject}{what} {name:?} is not defined{suggestion}")]
    Undefined {
        /// Which entry refers to it.
        subject: Subject,
        /// What kind of thing was expected (`output`).
        what: &'static str,
        /// The name as written.
        name: String,
        /// The closest defined name, if any is close.
        suggestion: Suggestion,
    },
    /// Two entries share a name. Names are unique across inputs, outputs,
    /// plugins and routes, since they label metrics together.
    #[error("{subject}name {name:?} is already used by {other} (line {other_line})")]
    DuplicateName {
        /// The later entry.
        subject: Subject,
        /// The shared name.
        name: String,
        /// The earlier entry, e.g. `input "api"`.
        other: String,
        /// The earlier entry's line.
        other_line: usize,
    },
    /// Two listeners would bind the same address.
    #[error("{subject}{field}: {addr} is already bound by {other} (line {other_line})")]
    AddressInUse {
        /// The later entry.
        subject: Subject,
        /// `bind`, `listen` or `admin`.
        field: &'static str,
        /// The address as parsed.
        addr: String,
        /// The earlier entry.
        other: String,
        /// The earlier entry's line.
        other_line: usize,
    },
    /// A plugin's module could not be loaded or does not fit where a route
    /// uses it (unreadable file, bad module, wrong ABI, a filter named as a
    /// router...). Found when the router loads the plugins, after the file
    /// validated; built by [`Plugin::problem`](super::Plugin::problem).
    #[error("{subject}{reason}")]
    Load {
        /// The plugin, `plugin "name"`.
        subject: Subject,
        /// What went wrong.
        reason: String,
    },
    /// A section the router cannot run without is absent or empty.
    #[error("{reason}")]
    Missing {
        /// What is missing and why it is needed.
        reason: String,
    },
}
