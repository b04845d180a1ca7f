//! Entry points for the cargo-fuzz targets in `fuzz/`; not part of the API.
//!
//! The decoders of untrusted bytes that the router does not otherwise
//! export are crate-private on purpose: the plugin verdict reader
//! (`plugin::wire`) and the HTTP publish body parser
//! (`ingress::http::json`). The fuzz workspace links this crate as an
//! ordinary dependency, so it can only reach public items; this module is
//! the smallest public surface that lets it feed those decoders bytes,
//! without making their modules, readers and error types public. It is
//! `#[doc(hidden)]` and not gated by a feature, so that a plain
//! `cargo check` of `fuzz/` compiles the same code the fuzzer runs.
//!
//! The ZeroMQ envelope decoder needs no entry point here:
//! [`crate::envelope::Envelope::decode`] is public already.

use crate::http::Error as HttpError;
use crate::message::{Message, Publisher};
use crate::plugin::wire::{self, NameCache, Status};
use crate::plugin::{FilterVerdict, RouteVerdict};

/// What a plugin's result buffer says about a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdicts<T> {
    /// One verdict per message of the batch, in order.
    Ok(Vec<T>),
    /// The guest reported an error for the whole call.
    Guest {
        /// The ABI error code.
        code: u32,
        /// The guest's message (at most 1024 bytes).
        message: String,
    },
}

/// Reads a filter's result buffer for a batch of `batch` messages, as the
/// host does after a `switchyard_batch` call.
///
/// # Errors
/// The reason the host refuses the buffer (`bad_verdict`), as text.
pub fn filter_verdicts(result: &[u8], batch: usize) -> Result<Verdicts<FilterVerdict>, String> {
    match wire::status(result).map_err(|e| e.to_string())? {
        Status::Ok(r) => {
            let mut out = Vec::new();
            wire::filter_verdicts(r, batch, &mut out).map_err(|e| e.to_string())?;
            Ok(Verdicts::Ok(out))
        }
        Status::Error { code, message } => Ok(Verdicts::Guest { code, message }),
    }
}

/// Reads router result buffers, interning output names across calls as a
/// plugin instance does.
#[derive(Default)]
pub struct RouteVerdictReader {
    names: NameCache,
}

impl RouteVerdictReader {
    /// Reads a router's result buffer for a batch of `batch` messages.
    ///
    /// # Errors
    /// The reason the host refuses the buffer (`bad_verdict`), as text.
    pub fn read(&mut self, result: &[u8], batch: usize) -> Result<Verdicts<RouteVerdict>, String> {
        match wire::status(result).map_err(|e| e.to_string())? {
            Status::Ok(r) => {
                let mut out = Vec::new();
                wire::route_verdicts(r, batch, &mut out, &mut self.names)
                    .map_err(|e| e.to_string())?;
                Ok(Verdicts::Ok(out))
            }
            Status::Error { code, message } => Ok(Verdicts::Guest { code, message }),
        }
    }
}

/// Decodes the JSON body of `POST /v1/publish` into messages from
/// `publisher`, at most `max_batch` of them, as the HTTP input does.
///
/// # Errors
/// The HTTP error the input answers with.
pub fn publish_body(
    body: &[u8],
    publisher: &Publisher,
    max_batch: usize,
) -> Result<Vec<Message>, HttpError> {
    crate::ingress::http::json::decode(body, publisher, max_batch)
}
