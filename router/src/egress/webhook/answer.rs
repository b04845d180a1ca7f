//! What a webhook's answer means for the messages of its request, sans IO.
//!
//! | answer | messages |
//! |---|---|
//! | 2xx | accepted |
//! | 408, 429, 5xx but 501 | `failed`: retried under the output's `retry` |
//! | a connection error, a timeout, not HTTP | `failed`: retried |
//! | 3xx (redirects are not followed), 501, any other 4xx | `refused`: for good, to the dead-letter store |
//!
//! A `Retry-After` (delta-seconds or an HTTP-date) on a retried answer is
//! handed to the retry loop as the least next pause.

use std::time::{Duration, SystemTime};

use crate::egress::Reject;

/// The longest `Retry-After` taken as written; the retry loop caps it
/// again by its policy's `max`.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What an HTTP status means for the messages its request carried:
/// `None` when they were accepted, else the refusal.
pub(crate) fn classify(status: u16) -> Option<Reject> {
    match status {
        200..=299 => None,
        408 | 429 => Some(Reject::Failed),
        501 => Some(Reject::Refused),
        500..=599 => Some(Reject::Failed),
        _ => Some(Reject::Refused),
    }
}

/// A `Retry-After` header's value as a pause from `now`: delta-seconds
/// (`120`) or an HTTP-date (one in the past is no pause); `None` for
/// anything else. Capped at [`MAX_RETRY_AFTER`].
pub(crate) fn retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let after = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still "a long time".
        Duration::from_secs(
            text.parse::<u64>()
                .unwrap_or(u64::MAX)
                .min(MAX_RETRY_AFTER.as_secs()),
        )
    } else {
        let at = httpdate::parse_http_date(text).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(after.min(MAX_RETRY_AFTER))
}

/// `bytes` (an answer's first bytes, or a header) as one printable line
/// of at most `max` characters, for a log line or `/v1/status`.
pub(crate) fn printable(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_matrix() {
        for ok in [200, 201, 202, 204, 299] {
            assert_eq!(classify(ok), None, "{ok}");
        }
        for again in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify(again), Some(Reject::Failed), "{again}");
        }
        for never in [
            300, 301, 302, 303, 307, 308, 400, 401, 403, 404, 409, 413, 422, 501,
        ] {
            assert_eq!(classify(never), Some(Reject::Refused), "{never}");
        }
        assert!(Reject::Refused.is_permanent());
        assert!(!Reject::Failed.is_permanent());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_ignores_garbage() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("date");
        assert_eq!(retry_after(b"120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(b" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after(b"Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(b"Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past"
        );
        assert_eq!(retry_after(b"soon", now), None);
        assert_eq!(retry_after(b"-5", now), None);
        assert_eq!(retry_after(b"1.5", now), None);
        assert_eq!(retry_after(b"", now), None);
        assert_eq!(retry_after(&[0xff, 0xfe], now), None);
        assert_eq!(retry_after(b"86400", now), Some(MAX_RETRY_AFTER), "capped");
        assert_eq!(
            retry_after(b"99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            retry_after(b"Fri, 31 Dec 2100 00:00:00 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn printable_lines() {
        assert_eq!(printable(b"bad\r\nrequest\x00", 100), "bad  request");
        assert_eq!(printable(b"abcdef", 3), "abc");
    }
}
