//! Waiting for facts with deadlines: poll a probe until it reports the fact,
//! backing off a little between polls, and fail with the last observation
//! when the deadline passes. This polls a fact; it never sleeps to
//! synchronise.

use anyhow::{Result, bail};
use std::fmt::Debug;
use std::time::{Duration, Instant};

/// The default deadline for facts that normally hold within milliseconds,
/// generous for a busy 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `probe` until it returns `Ok(Some(v))`, and returns `v`.
/// `Ok(None)` means "not yet"; an `Err` ends the wait at once.
///
/// # Errors
/// The probe's error, or a timeout naming `what`.
pub fn until<T>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = probe()? {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= end {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(pause.min(end - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Polls `read` until `accept` holds for the value it returns; fails with the
/// last value seen.
///
/// # Errors
/// The reader's error, or a timeout showing the last value.
pub fn value<T: Debug>(
    what: &str,
    deadline: Duration,
    mut read: impl FnMut() -> Result<T>,
    mut accept: impl FnMut(&T) -> bool,
) -> Result<T> {
    let mut last = None;
    let r = until(what, deadline, || {
        let v = read()?;
        if accept(&v) {
            return Ok(Some(v));
        }
        last = Some(v);
        Ok(None)
    });
    match r {
        Ok(v) => Ok(v),
        Err(e) => bail!("{e}; last value: {last:?}"),
    }
}
