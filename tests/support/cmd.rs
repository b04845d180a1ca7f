//! Short constructors for the protocol's commands, and answer checks.

use crate::protocol::{Command, Event};
use anyhow::{Result, bail};

fn owned(frames: &[&str]) -> Vec<String> {
    frames.iter().map(|s| (*s).to_owned()).collect()
}

/// `send`: `count` messages from frame templates, unpaced.
pub fn send(count: u64, frames: &[&str]) -> Command {
    Command::Send {
        count,
        frames: owned(frames),
        start: 0,
        rate: 0,
        size: 0,
    }
}

/// `send` with every field.
pub fn send_with(count: u64, frames: &[&str], start: u64, rate: u64, size: usize) -> Command {
    Command::Send {
        count,
        frames: owned(frames),
        start,
        rate,
        size,
    }
}

/// `recv`: up to `count` messages within `timeout_ms`.
pub fn recv(count: u64, timeout_ms: u64) -> Command {
    Command::Recv {
        count,
        timeout_ms,
        skip_prefix: None,
    }
}

/// `recv` ignoring messages whose first frame starts with `skip`.
pub fn recv_skipping(count: u64, timeout_ms: u64, skip: &str) -> Command {
    Command::Recv {
        count,
        timeout_ms,
        skip_prefix: Some(skip.to_owned()),
    }
}

/// `count`: counts up to `count` messages within `timeout_ms`.
pub fn count(count: u64, timeout_ms: u64, skip: Option<&str>) -> Command {
    Command::Count {
        count,
        timeout_ms,
        skip_prefix: skip.map(str::to_owned),
    }
}

/// `request`: `count` request-reply round trips.
pub fn request(count: u64, frames: &[&str], rate: u64, timeout_ms: u64) -> Command {
    Command::Request {
        count,
        frames: owned(frames),
        start: 0,
        rate,
        timeout_ms,
    }
}

/// `sub`.
pub fn sub(prefix: &str) -> Command {
    Command::Sub {
        prefix: prefix.to_owned(),
    }
}

/// `unsub`.
pub fn unsub(prefix: &str) -> Command {
    Command::Unsub {
        prefix: prefix.to_owned(),
    }
}

/// The messages of a [`Event::Received`] that did not time out.
///
/// # Errors
/// For any other answer, showing what was received.
pub fn messages(e: Event) -> Result<Vec<Vec<String>>> {
    match e {
        Event::Received {
            messages,
            timed_out: false,
        } => Ok(messages),
        Event::Received { messages, .. } => bail!(
            "timed out after {} messages; last: {:?}",
            messages.len(),
            messages.last()
        ),
        other => bail!("expected received, got {other:?}"),
    }
}

/// Checks an [`Event::Sent`] sent exactly `n` messages.
///
/// # Errors
/// For any other answer.
pub fn sent(e: Event, n: u64) -> Result<()> {
    match e {
        Event::Sent { count, error: None } if count == n => Ok(()),
        other => bail!("expected {n} sent, got {other:?}"),
    }
}

/// Checks an [`Event::Replies`] got exactly `n` replies, none mismatched
/// and no error.
///
/// # Errors
/// For any other answer.
pub fn replied(e: Event, n: u64) -> Result<()> {
    match e {
        Event::Replies {
            count,
            mismatches: 0,
            error: None,
        } if count == n => Ok(()),
        other => bail!("expected {n} matching replies, got {other:?}"),
    }
}

/// Expected messages: for each `i` in `range`, the frames with `{seq}`
/// replaced by `i`.
pub fn expected(range: std::ops::Range<u64>, frames: &[&str]) -> Vec<Vec<String>> {
    range
        .map(|i| {
            frames
                .iter()
                .map(|f| f.replace("{seq}", &i.to_string()))
                .collect()
        })
        .collect()
}

/// Like [`expected`], with the last frame padded with `.` to `size` bytes
/// (as `send` pads it).
pub fn expected_padded(
    range: std::ops::Range<u64>,
    frames: &[&str],
    size: usize,
) -> Vec<Vec<String>> {
    let mut out = expected(range, frames);
    for m in &mut out {
        if let Some(last) = m.last_mut()
            && last.len() < size
        {
            let pad = size - last.len();
            last.extend(std::iter::repeat_n('.', pad));
        }
    }
    out
}
