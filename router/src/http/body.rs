//! Reading a request body under a size limit and a deadline.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use tokio::time::Instant;

use super::Error;

/// How much of a body a handler reads, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// The largest body accepted, in bytes.
    pub max: usize,
    /// How long the whole body may take to arrive, from the first read.
    pub timeout: Duration,
}

/// Reads the whole body of a request.
///
/// A `Content-Length` over the limit is refused before a byte of the body is
/// read; a body without one (chunked) is refused as soon as it grows past
/// the limit, so a client never costs more than `limits.max` bytes (plus
/// one read buffer). A body that arrives as one chunk is returned without
/// copying.
///
/// # Errors
/// [`Error::PayloadTooLarge`], [`Error::BodyTimeout`] when the body is not
/// complete by the deadline, [`Error::BodyRead`] when the client breaks off
/// or the framing is malformed.
pub async fn read_body(body: Incoming, limits: &BodyLimits) -> Result<Bytes, Error> {
    let declared = body.size_hint().lower();
    if declared > limits.max as u64 {
        return Err(Error::PayloadTooLarge { limit: limits.max });
    }
    let deadline = Instant::now() + limits.timeout;
    match tokio::time::timeout_at(deadline, collect(body, limits.max, declared as usize)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(Error::BodyTimeout {
            timeout: limits.timeout,
        }),
    }
}

async fn collect(mut body: Incoming, max: usize, declared: usize) -> Result<Bytes, Error> {
    // The common case is one data frame: keep it as is. Only a second frame
    // makes us copy into a buffer sized from `Content-Length` when known.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Error::BodyRead)?;
        let Ok(data) = frame.into_data() else {
            // Trailers carry nothing a handler reads.
            continue;
        };
        len = len.saturating_add(data.len());
        if len > max {
            return Err(Error::PayloadTooLarge { limit: max });
        }
        if data.is_empty() {
            continue;
        }
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            None => buf.extend_from_slice(&data),
            Some(head) => {
                buf.reserve(declared.max(len));
                buf.extend_from_slice(&head);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}
