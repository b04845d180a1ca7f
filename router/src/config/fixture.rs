//! Test helpers shared by the config tests: parse a text and list its
//! problems as displayed, and a small valid file to splice mistakes into.

use super::{Config, ConfigErrors};

/// Parses `text` (as `t.toml`, no environment) and returns its problems as
/// displayed, one string each; panics if it is valid.
pub(crate) fn problems(text: &str) -> Vec<String> {
    let result: Result<Config, ConfigErrors> = Config::parse_with_env(text, "t.toml", &|_| None);
    match result {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// Parses `text` (as `t.toml`, no environment); panics with the problems
/// if it is invalid.
pub(crate) fn valid(text: &str) -> Config {
    Config::parse_with_env(text, "t.toml", &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

/// A valid file with one input (line 1), one output (line 7 or so) and one
/// route; the `*_extra` lines are spliced into each entry.
pub(crate) fn base(input_extra: &str, output_extra: &str, route_extra: &str) -> String {
    format!(
        r#"[[input]]
name = "in"
kind = "zmq-pull"
bind = "tcp://127.0.0.1:5556"
{input_extra}

[[output]]
name = "out"
kind = "zmq-push"
bind = "tcp://127.0.0.1:6556"
{output_extra}

[[route]]
name = "r"
match = "jobs.>"
to = ["out"]
{route_extra}
"#
    )
}

/// Asserts `got` holds exactly one problem, containing `needle`.
pub(crate) fn assert_one(got: &[String], needle: &str) {
    assert!(
        got.len() == 1 && got[0].contains(needle),
        "expected one problem containing {needle:?}, got {got:#?}"
    );
}
