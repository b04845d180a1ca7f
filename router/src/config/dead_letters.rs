//! `[dead_letters]`: the dead-letter store's retention and sync policy.
//! The store itself exists whenever `[router] data_dir` is set (in
//! `<data_dir>/dead-letters/`); this table only tunes it, and is refused
//! without a `data_dir`.

use std::time::Duration;

use serde::Serialize;

use super::checker::Checker;
use super::error::Subject;
use super::policy::Fsync;
use super::raw::RawDeadLetters;
use super::units::serialize_duration;

/// The `[dead_letters]` table. The whole table may be left out. Not
/// reloaded: a change needs a restart (listed in `restart_required`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeadLetters {
    /// Most entries kept; past it the oldest are dropped (and counted in
    /// `switchyard_dead_letter_expired_total`). Default 1_000_000; 1 to
    /// 1_000_000_000. Restart required.
    pub max_entries: u64,
    /// Most bytes of the store's files, in bytes (or a string with a
    /// unit); past it the oldest entries are dropped. Default "1GiB"; 1MiB
    /// to 1TiB. Restart required.
    pub max_bytes: u64,
    /// Entries older than this (since they were dead-lettered) are
    /// dropped. Default "7d"; 1s to 3650d. Restart required.
    #[serde(serialize_with = "serialize_duration")]
    pub max_age: Duration,
    /// When an entry counts as stored: `"always"` (an `fdatasync` before
    /// it counts), `"batch"` (one `fdatasync` per `fsync_interval` covers
    /// all), `"os"` (written, not synced). Default `"batch"`. Restart
    /// required.
    pub fsync: Fsync,
    /// Under `fsync = "batch"`, the group-commit window. Default "10ms";
    /// 1ms to 10s; only valid with `fsync = "batch"`. Restart required.
    #[serde(serialize_with = "serialize_duration")]
    pub fsync_interval: Duration,
}

impl Default for DeadLetters {
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(7 * 86_400),
            fsync: Fsync::default(),
            fsync_interval: Duration::from_millis(10),
        }
    }
}

/// Reads `[dead_letters]`; `data_dir_written` says whether `[router]`
/// sets a `data_dir`, which the store needs. `span` is the table's.
pub(crate) fn build(
    raw: &RawDeadLetters,
    span: std::ops::Range<usize>,
    data_dir_written: bool,
    c: &mut Checker<'_>,
) -> DeadLetters {
    let subject = Subject::table("dead_letters");
    let d = DeadLetters::default();
    if !data_dir_written {
        c.invalid(
            &Subject::top(),
            "dead_letters",
            span,
            "the dead-letter store lives in the data directory: set `[router] data_dir` (e.g. data_dir = \"var/switchyard\"), or remove this table",
        );
    }
    let max_entries = c.count(
        &subject,
        "max_entries",
        raw.max_entries.as_ref(),
        d.max_entries as usize,
        1..=1_000_000_000,
    ) as u64;
    let max_bytes = c.size(
        &subject,
        "max_bytes",
        raw.max_bytes.as_ref(),
        d.max_bytes as usize,
        (1 << 20)..=(1 << 40),
    ) as u64;
    let max_age = c.duration(
        &subject,
        "max_age",
        raw.max_age.as_ref(),
        d.max_age,
        Duration::from_secs(1)..=Duration::from_secs(3650 * 86_400),
    );
    let (fsync, fsync_interval) = super::route::sync_policy(
        c,
        &subject,
        "",
        raw.fsync.as_ref(),
        raw.fsync_interval.as_ref(),
        (d.fsync, d.fsync_interval),
    );
    DeadLetters {
        max_entries,
        max_bytes,
        max_age,
        fsync,
        fsync_interval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixture::{base, problems, valid};

    #[test]
    fn defaults_and_values() {
        let config = valid(&format!(
            "[router]\ndata_dir = \"var\"\n{}",
            base("", "", "")
        ));
        assert_eq!(config.dead_letters, DeadLetters::default());
        let config = valid(&format!(
            "[router]\ndata_dir = \"var\"\n[dead_letters]\nmax_entries = 10\nmax_bytes = \"2MiB\"\nmax_age = \"1h\"\nfsync = \"always\"\n{}",
            base("", "", "")
        ));
        assert_eq!(
            config.dead_letters,
            DeadLetters {
                max_entries: 10,
                max_bytes: 2 << 20,
                max_age: Duration::from_secs(3600),
                fsync: Fsync::Always,
                ..DeadLetters::default()
            }
        );
    }

    #[test]
    fn a_change_needs_a_restart() {
        let old = valid(&format!(
            "[router]\ndata_dir = \"var\"\n{}",
            base("", "", "")
        ));
        let new = valid(&format!(
            "[router]\ndata_dir = \"var\"\n[dead_letters]\nmax_age = \"1d\"\n{}",
            base("", "", "")
        ));
        assert_eq!(old.diff(&new).restart_required, ["dead_letters"]);
        assert!(old.diff(&old).is_empty());
    }

    #[test]
    fn mistakes_are_each_reported_with_their_lines() {
        let got = problems(&format!(
            "[dead_letters]\nmax_entries = 0\nmax_bytes = \"1KiB\"\nfsync = \"alway\"\nfsync_interval = \"5ms\"\nmax_agee = \"1d\"\n{}",
            base("", "", "")
        ));
        assert!(
            got.iter()
                .any(|p| p.contains("t.toml:6:1: [dead_letters]: unknown field `max_agee`")),
            "{got:#?}"
        );
        let got = problems(&format!(
            "[dead_letters]\nmax_entries = 0\nmax_bytes = \"1KiB\"\nfsync = \"alway\"\n{}",
            base("", "", "")
        ));
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(
            got[0].starts_with(
                "t.toml:1:1: dead_letters: the dead-letter store lives in the data directory"
            ) && got[0].contains("data_dir"),
            "{got:#?}"
        );
        assert!(
            got[1].starts_with("t.toml:2:15: [dead_letters]: max_entries:"),
            "{got:#?}"
        );
        assert!(
            got[2].starts_with("t.toml:3:13: [dead_letters]: max_bytes:"),
            "{got:#?}"
        );
        assert!(
            got[3].contains("fsync: \"alway\" is not one of"),
            "{got:#?}"
        );
        let got = problems(&format!(
            "[router]\ndata_dir = \"var\"\n[dead_letters]\nfsync = \"os\"\nfsync_interval = \"5ms\"\n{}",
            base("", "", "")
        ));
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].contains("fsync_interval: only applies with fsync = \"batch\""),
            "{got:#?}"
        );
    }
}
