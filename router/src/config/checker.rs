//! The problem collector the validate step threads through every entry,
//! with readers that turn raw values into typed ones.
//!
//! A reader that finds a bad value records the problem and returns the
//! default, so checking goes on and every problem in the file is found; a
//! `Config` is only handed out when no problem was recorded.

use std::fmt::Display;
use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use super::error::{Error, Location, Problem, Subject, Suggestion};
use super::raw::S;
use super::source::Source;
use super::units::{Quantity, format_duration, format_size};

/// Collects problems, locating each in the file as written.
pub(crate) struct Checker<'a> {
    source: &'a Source,
    file: &'a str,
    problems: Vec<Problem>,
}

impl<'a> Checker<'a> {
    /// A collector for `file`, whose substituted text is `source`.
    pub(crate) fn new(source: &'a Source, file: &'a str) -> Self {
        Self {
            source,
            file,
            problems: Vec::new(),
        }
    }

    /// The problems so far.
    pub(crate) fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    /// How many problems so far.
    pub(crate) fn problem_count(&self) -> usize {
        self.problems.len()
    }

    /// Records `error` at the start of `span` (in the substituted text).
    pub(crate) fn report(&mut self, span: Range<usize>, error: Error) {
        self.problems.push(Problem {
            file: self.file.to_owned(),
            location: Some(self.source.location(span.start)),
            error,
        });
    }

    /// Records `error` with no place in the file.
    pub(crate) fn report_unplaced(&mut self, error: Error) {
        self.problems.push(Problem {
            file: self.file.to_owned(),
            location: None,
            error,
        });
    }

    /// Records an [`Error::Invalid`].
    pub(crate) fn invalid(
        &mut self,
        subject: &Subject,
        field: &str,
        span: Range<usize>,
        reason: impl Display,
    ) {
        self.report(
            span,
            Error::Invalid {
                subject: subject.clone(),
                field: field.to_owned(),
                reason: reason.to_string(),
            },
        );
    }

    /// The line of `span`'s start.
    pub(crate) fn line(&self, span: Range<usize>) -> usize {
        self.source.location(span.start).line
    }

    /// Where `span` starts in the file as written.
    pub(crate) fn location(&self, span: Range<usize>) -> Location {
        self.source.location(span.start)
    }

    /// The file, as the caller named it.
    pub(crate) fn file(&self) -> &'a str {
        self.file
    }

    /// Reads an optional duration, checking it lies in `range`.
    pub(crate) fn duration(
        &mut self,
        subject: &Subject,
        field: &str,
        value: Option<&S<Quantity>>,
        default: Duration,
        range: RangeInclusive<Duration>,
    ) -> Duration {
        self.duration_or_off(subject, field, value, Some(default), range, false)
            .unwrap_or(default)
    }

    /// Reads an optional duration that may also be `"off"` (`None`).
    pub(crate) fn duration_or_off(
        &mut self,
        subject: &Subject,
        field: &str,
        value: Option<&S<Quantity>>,
        default: Option<Duration>,
        range: RangeInclusive<Duration>,
        allow_off: bool,
    ) -> Option<Duration> {
        let Some(value) = value else { return default };
        match value.get_ref().duration(allow_off) {
            Ok(Some(d)) if !range.contains(&d) => {
                self.invalid(
                    subject,
                    field,
                    value.span(),
                    format!(
                        "must be from {} to {}, got {}",
                        format_duration(*range.start()),
                        format_duration(*range.end()),
                        format_duration(d)
                    ),
                );
                default
            }
            Ok(d) => d,
            Err(reason) => {
                self.invalid(subject, field, value.span(), reason);
                default
            }
        }
    }

    /// Reads an optional size in bytes, checking it lies in `range`.
    pub(crate) fn size(
        &mut self,
        subject: &Subject,
        field: &str,
        value: Option<&S<Quantity>>,
        default: usize,
        range: RangeInclusive<usize>,
    ) -> usize {
        let Some(value) = value else { return default };
        match value.get_ref().size() {
            Ok(n) if usize::try_from(n).is_ok_and(|n| range.contains(&n)) => {
                usize::try_from(n).unwrap_or(default)
            }
            Ok(n) => {
                self.invalid(
                    subject,
                    field,
                    value.span(),
                    format!(
                        "must be from {} to {}, got {}",
                        format_size(*range.start() as u64),
                        format_size(*range.end() as u64),
                        format_size(n)
                    ),
                );
                default
            }
            Err(reason) => {
                self.invalid(subject, field, value.span(), reason);
                default
            }
        }
    }

    /// Reads an optional count (messages, frames, connections), checking it
    /// lies in `range`.
    pub(crate) fn count(
        &mut self,
        subject: &Subject,
        field: &str,
        value: Option<&S<i64>>,
        default: usize,
        range: RangeInclusive<usize>,
    ) -> usize {
        let Some(value) = value else { return default };
        let n = *value.get_ref();
        match usize::try_from(n) {
            Ok(n) if range.contains(&n) => n,
            _ => {
                self.invalid(
                    subject,
                    field,
                    value.span(),
                    format!("must be from {} to {}, got {n}", range.start(), range.end()),
                );
                default
            }
        }
    }

    /// Reads a string that must be one of `choices` (`(written, value)`),
    /// suggesting the closest one when it is not.
    pub(crate) fn choice<T: Copy>(
        &mut self,
        subject: &Subject,
        field: &str,
        value: Option<&S<String>>,
        default: T,
        choices: &[(&str, T)],
    ) -> T {
        let Some(value) = value else { return default };
        let written = value.get_ref().as_str();
        if let Some((_, v)) = choices.iter().find(|(name, _)| *name == written) {
            return *v;
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let suggestion = Suggestion(closest(written, names.iter().copied()));
        let list = names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.invalid(
            subject,
            field,
            value.span(),
            format!("{written:?} is not one of {list}{suggestion}"),
        );
        default
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough
/// to be a plausible typo (at most a third of the word's length, at least 1).
pub(crate) fn closest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<String> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

/// Levenshtein distance, case-insensitive (a wrong case is a typo too).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_for_typos_only() {
        let names = ["dashboard", "workers", "archive"];
        assert_eq!(closest("dashbord", names), Some("dashboard".into()));
        assert_eq!(closest("Workers", names), Some("workers".into()));
        assert_eq!(closest("metrics", names), None);
        assert_eq!(closest("x", ["y"]), Some("y".into()));
        assert_eq!(
            closest(
                "hearbeat_interval",
                ["heartbeat_interval", "heartbeat_timeout"]
            ),
            Some("heartbeat_interval".into())
        );
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
