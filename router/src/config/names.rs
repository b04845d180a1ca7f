//! Entry names: the rule every name follows, and the names a file declares,
//! gathered before any entry is read so references resolve even to broken
//! entries.

/// A named entry of the file, gathered before entries are read.
#[derive(Debug, Clone)]
pub(crate) struct Declared {
    /// The name as written.
    pub(crate) name: String,
    /// `input`, `output`, `plugin` or `route`.
    pub(crate) section: &'static str,
    /// The line of its `name = ...`.
    pub(crate) line: usize,
}

/// Checks an input, output, plugin, route or router name: 1 to 64
/// characters from letters, digits, `_`, `-` and `.` (names are metric
/// label values).
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        // Route names name directories under data_dir.
        && !name.chars().all(|c| c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: use 1 to 64 letters, digits, `_`, `-` or `.`, not only dots"
        ))
    }
}
