//! The line protocol between a test and the processes it drives (the
//! `zmtp-node` binary, the pyzmq peer `tests/peers/zpeer.py` and the
//! `zeromq-peer` binary).
//!
//! A process prints one ready line first,
//! `{"ready":true,"endpoint":"tcp://127.0.0.1:PORT"}` (the node adds
//! `"metrics":"127.0.0.1:PORT"`), then reads one JSON [`Command`] per stdin
//! line and answers each with one JSON [`Event`] line on stdout. It exits on
//! `quit`, when stdin closes (the test died) or when its lifetime runs out, so
//! a peer can never outlive a test run.
//!
//! Messages are built from frame templates: `{seq}` becomes the message's
//! sequence number and `{ts}` the send time in microseconds since the Unix
//! epoch; the last frame is padded with `.` up to `size` bytes. Receivers
//! that count read the last frame as `"<seq> <ts> ..."` when it has that
//! shape, to check order and measure latency.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// One instruction from a test, one JSON object per stdin line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Sends `count` messages (0 = until `stop`) built from `frames`, with
    /// sequence numbers from `start`, paced at `rate` per second (0 = as
    /// fast as the socket takes them). Answered by [`Event::Sent`].
    Send {
        /// How many messages; 0 keeps sending until a `stop` command.
        count: u64,
        /// Frame templates (`{seq}`, `{ts}`).
        frames: Vec<String>,
        /// First sequence number.
        #[serde(default)]
        start: u64,
        /// Messages per second, 0 = unpaced.
        #[serde(default)]
        rate: u64,
        /// Minimum size of the last frame in bytes (padded with `.`).
        #[serde(default)]
        size: usize,
    },
    /// Receives up to `count` messages within `timeout_ms`, skipping those
    /// whose first frame starts with `skip_prefix`. Answered by
    /// [`Event::Received`].
    Recv {
        /// How many messages to collect.
        count: u64,
        /// Deadline for the whole command.
        timeout_ms: u64,
        /// Messages whose first frame starts with this are read and ignored.
        #[serde(default)]
        skip_prefix: Option<String>,
    },
    /// Like `recv` but only counts, checks sequence order and measures gaps
    /// and latency. Answered by [`Event::Counted`].
    Count {
        /// How many messages to count.
        count: u64,
        /// Deadline for the whole command.
        timeout_ms: u64,
        /// Messages whose first frame starts with this are read and ignored.
        #[serde(default)]
        skip_prefix: Option<String>,
    },
    /// Subscribes to a prefix (SUB roles). Answered by [`Event::Ok`].
    Sub {
        /// The topic prefix.
        prefix: String,
    },
    /// Cancels a subscription (SUB roles). Answered by [`Event::Ok`].
    Unsub {
        /// The topic prefix.
        prefix: String,
    },
    /// Request-reply (REQ, DEALER): sends a request built from `frames`,
    /// waits up to `timeout_ms` for its reply and checks the reply echoes the
    /// request; `count` times (0 = until `stop`), paced at `rate`.
    /// Answered by [`Event::Replies`].
    Request {
        /// How many requests; 0 keeps going until a `stop` command.
        count: u64,
        /// Frame templates of each request.
        frames: Vec<String>,
        /// First sequence number.
        #[serde(default)]
        start: u64,
        /// Requests per second, 0 = unpaced.
        #[serde(default)]
        rate: u64,
        /// Deadline for each reply.
        timeout_ms: u64,
    },
    /// Ends a running `send` or `request` with `count` 0.
    Stop,
    /// Reports counters kept by the process. Answered by [`Event::Stats`].
    Stats,
    /// Closes the socket and exits.
    Quit,
}

/// One answer to a [`Command`], one JSON object per stdout line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Answer to `send`.
    Sent {
        /// Messages handed to the socket.
        count: u64,
        /// Why sending stopped early, if it did.
        #[serde(default)]
        error: Option<String>,
    },
    /// Answer to `recv`.
    Received {
        /// The messages, each a list of frames (lossy UTF-8).
        messages: Vec<Vec<String>>,
        /// True when the deadline passed before `count` messages arrived.
        timed_out: bool,
    },
    /// Answer to `count`.
    Counted {
        /// Messages counted (skipped ones excluded).
        count: u64,
        /// Messages whose sequence number was not above the previous one.
        seq_errors: u64,
        /// Longest wait between two consecutive counted messages.
        max_gap_ms: f64,
        /// Longest send-to-receive time seen (when frames carry `{ts}`).
        max_latency_ms: f64,
        /// True when the deadline passed before `count` messages arrived.
        timed_out: bool,
    },
    /// Answer to `request`.
    Replies {
        /// Requests answered with an exact echo.
        count: u64,
        /// Replies that did not echo their request.
        mismatches: u64,
        /// Why the run stopped early, if it did.
        #[serde(default)]
        error: Option<String>,
    },
    /// Answer to `stats`.
    Stats {
        /// Messages received by the process so far.
        received: u64,
        /// Messages sent (or requests echoed) by the process so far.
        sent: u64,
    },
    /// Answer to `sub` and `unsub`.
    Ok,
    /// The command is not supported by this role or failed.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// Microseconds since the Unix epoch (wall clock, comparable across
/// processes on one machine).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Renders frame templates for message number `seq`.
pub fn render(frames: &[String], seq: u64, size: usize) -> Vec<bytes::Bytes> {
    let ts = now_micros();
    let last = frames.len().saturating_sub(1);
    frames
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut s = t
                .replace("{seq}", &seq.to_string())
                .replace("{ts}", &ts.to_string());
            if i == last && s.len() < size {
                s.extend(std::iter::repeat_n('.', size - s.len()));
            }
            bytes::Bytes::from(s)
        })
        .collect()
}

/// Frames as lossy UTF-8 strings, for an [`Event::Received`].
pub fn frames_to_strings<'a>(frames: impl IntoIterator<Item = &'a bytes::Bytes>) -> Vec<String> {
    frames
        .into_iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// Whether a message's first frame starts with `prefix`.
pub fn skipped(first: Option<&[u8]>, prefix: Option<&str>) -> bool {
    match (first, prefix) {
        (Some(f), Some(p)) => f.starts_with(p.as_bytes()),
        _ => false,
    }
}

/// Running statistics of a `count` command.
#[derive(Debug, Default)]
pub struct Tally {
    count: u64,
    seq_errors: u64,
    last_seq: Option<u64>,
    last_at: Option<std::time::Instant>,
    max_gap: std::time::Duration,
    max_latency_us: u64,
}

impl Tally {
    /// Accounts one received message given its last frame.
    pub fn add(&mut self, last_frame: &[u8]) {
        let now = std::time::Instant::now();
        if let Some(prev) = self.last_at {
            self.max_gap = self.max_gap.max(now - prev);
        }
        self.last_at = Some(now);
        self.count += 1;
        let text = std::str::from_utf8(last_frame).unwrap_or("");
        let mut words = text.split(' ');
        if let Some(seq) = words.next().and_then(|w| w.parse::<u64>().ok()) {
            if self.last_seq.is_some_and(|p| seq <= p) {
                self.seq_errors += 1;
            }
            self.last_seq = Some(seq);
            if let Some(ts) = words.next().and_then(|w| w.parse::<u64>().ok()) {
                self.max_latency_us = self.max_latency_us.max(now_micros().saturating_sub(ts));
            }
        }
    }

    /// Messages counted so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The answer to the `count` command.
    pub fn event(&self, timed_out: bool) -> Event {
        Event::Counted {
            count: self.count,
            seq_errors: self.seq_errors,
            max_gap_ms: self.max_gap.as_secs_f64() * 1000.0,
            max_latency_ms: self.max_latency_us as f64 / 1000.0,
            timed_out,
        }
    }
}

/// Prints one protocol line on stdout and flushes it.
pub fn emit<T: Serialize>(value: &T) {
    use std::io::Write;
    let line = serde_json::to_string(value).expect("protocol values serialize");
    let mut out = std::io::stdout().lock();
    // A closed stdout means the test is gone; the process exits on stdin EOF.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_as_tagged_json() {
        let c: Command = serde_json::from_str(r#"{"cmd":"send","count":3,"frames":["a","{seq}"]}"#)
            .expect("parses");
        assert_eq!(
            c,
            Command::Send {
                count: 3,
                frames: vec!["a".into(), "{seq}".into()],
                start: 0,
                rate: 0,
                size: 0
            }
        );
        let e = serde_json::to_string(&Event::Ok).expect("serializes");
        assert_eq!(e, r#"{"event":"ok"}"#);
    }

    #[test]
    fn render_pads_the_last_frame_and_tally_checks_order() {
        let f = render(&["t".into(), "{seq} {ts} x".into()], 7, 64);
        assert_eq!(f[0].as_ref(), b"t");
        assert_eq!(f[1].len(), 64);
        let mut t = Tally::default();
        t.add(&f[1]);
        t.add(&render(&["{seq}".into()], 7, 0)[0]);
        t.add(b"8");
        match t.event(false) {
            Event::Counted {
                count, seq_errors, ..
            } => {
                assert_eq!((count, seq_errors), (3, 1));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
