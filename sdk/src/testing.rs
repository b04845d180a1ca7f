//! Runs a plugin natively, without a router, for `cargo test`: messages go
//! through the same batch encoding the router writes. As the router does,
//! the harness puts requests ([`OwnedMessage::request`]) and other
//! messages in separate batches, in order.
//!
//! ```
//! use switchyard_sdk::testing::FilterHarness;
//! use switchyard_sdk::{Config, Error, Filter, Message, OwnedMessage, Verdict};
//!
//! struct MinLevel { min: u8 }
//! impl Filter for MinLevel {
//!     fn init(_: &Config<'_>) -> Result<Self, Error> { Ok(Self { min: 5 }) }
//!     fn filter(&mut self, msg: &Message<'_>) -> Verdict {
//!         if msg.priority() >= self.min { Verdict::Keep } else { Verdict::Drop }
//!     }
//! }
//!
//! let mut h = FilterHarness::<MinLevel>::new("{}").unwrap();
//! let verdicts = h.run(&[OwnedMessage::new("a.b", "x")]);
//! assert_eq!(verdicts, [Verdict::Drop]);
//! ```

use crate::message::{Batch, BatchWriter, OwnedMessage};
use crate::{Config, Error, Filter, Message, Route, Router, Verdict};

use crate::abi;

/// One batch of `msgs`, all requests or none (the caller splits).
fn encode(time_ms: u64, msgs: &[OwnedMessage]) -> Vec<u8> {
    let requests = msgs.first().is_some_and(|m| m.request);
    let flags = if requests { abi::BATCH_REQUESTS } else { 0 };
    let mut w = BatchWriter::with_flags(time_ms, flags);
    for m in msgs {
        w.push(m);
    }
    w.finish()
}

/// Runs `each` over every message of `msgs` as the router would: one batch
/// per run of requests or of other messages.
fn run_batches<T>(
    time_ms: u64,
    msgs: &[OwnedMessage],
    mut each: impl FnMut(&Message<'_>) -> T,
) -> Vec<T> {
    let mut out = Vec::with_capacity(msgs.len());
    for run in msgs.chunk_by(|a, b| a.request == b.request) {
        let buf = encode(time_ms, run);
        let batch = Batch::decode(&buf).expect("the writer writes valid batches");
        out.extend(batch.messages().map(|m| each(&m)));
    }
    out
}

/// A filter instance fed batches, as the router would.
pub struct FilterHarness<F: Filter> {
    plugin: F,
}

impl<F: Filter> FilterHarness<F> {
    /// Builds the filter from `config_json`.
    ///
    /// # Errors
    /// The plugin's init error.
    pub fn new(config_json: &str) -> Result<Self, Error> {
        Ok(Self {
            plugin: F::init(&Config::new(config_json))?,
        })
    }

    /// The plugin, to inspect its state.
    pub fn plugin(&mut self) -> &mut F {
        &mut self.plugin
    }

    /// Runs one batch with batch time 0.
    pub fn run(&mut self, msgs: &[OwnedMessage]) -> Vec<Verdict> {
        self.run_at(0, msgs)
    }

    /// Runs one batch whose batch time is `time_ms`.
    pub fn run_at(&mut self, time_ms: u64, msgs: &[OwnedMessage]) -> Vec<Verdict> {
        run_batches(time_ms, msgs, |m| self.plugin.filter(m))
    }
}

/// A router's answer with owned names, for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routed {
    /// To these outputs.
    To(Vec<String>),
    /// Where the route sends by default.
    Default,
    /// To dead-letter handling.
    DeadLetter,
}

impl From<Route<'_>> for Routed {
    fn from(r: Route<'_>) -> Self {
        match r {
            Route::To(n) => Routed::To(vec![n.to_owned()]),
            Route::ToAll(ns) => Routed::To(ns.to_vec()),
            Route::Default => Routed::Default,
            Route::DeadLetter => Routed::DeadLetter,
        }
    }
}

/// A router instance fed batches, as the router would.
pub struct RouterHarness<R: Router> {
    plugin: R,
}

impl<R: Router> RouterHarness<R> {
    /// Builds the router from `config_json`.
    ///
    /// # Errors
    /// The plugin's init error.
    pub fn new(config_json: &str) -> Result<Self, Error> {
        Ok(Self {
            plugin: R::init(&Config::new(config_json))?,
        })
    }

    /// Runs one batch with batch time 0.
    pub fn run(&mut self, msgs: &[OwnedMessage]) -> Vec<Routed> {
        self.run_at(0, msgs)
    }

    /// Runs one batch whose batch time is `time_ms`.
    pub fn run_at(&mut self, time_ms: u64, msgs: &[OwnedMessage]) -> Vec<Routed> {
        run_batches(time_ms, msgs, |m| Routed::from(self.plugin.route(m)))
    }
}

/// Calls `f` with a borrowed view of `msg`, e.g. to test a filter function.
pub fn with_message<T>(msg: &OwnedMessage, f: impl FnOnce(&Message<'_>) -> T) -> T {
    // `encode` sets the requests flag from the one message.
    let buf = encode(0, std::slice::from_ref(msg));
    let batch = Batch::decode(&buf).expect("the writer writes valid batches");
    let m = batch.messages().next().expect("one message");
    f(&m)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Edge;
    impl Filter for Edge {
        fn init(_: &Config<'_>) -> Result<Self, Error> {
            Ok(Self)
        }
        fn filter(&mut self, msg: &Message<'_>) -> Verdict {
            match (msg.is_request(), msg.topic()) {
                (true, "ping") => Verdict::Reply(b"pong".to_vec()),
                (true, _) => Verdict::Reject(format!("no {}", msg.topic())),
                (false, _) => Verdict::Keep,
            }
        }
    }

    #[test]
    fn requests_and_other_messages_keep_their_order_and_their_flag() {
        let mut h = FilterHarness::<Edge>::new("{}").expect("init");
        let got = h.run(&[
            OwnedMessage::new("ping", "").request(),
            OwnedMessage::new("ping", ""),
            OwnedMessage::new("ping", "").request(),
            OwnedMessage::new("other", "").request(),
        ]);
        assert_eq!(
            got,
            [
                Verdict::Reply(b"pong".to_vec()),
                Verdict::Keep,
                Verdict::Reply(b"pong".to_vec()),
                Verdict::Reject("no other".into()),
            ]
        );
        let one = OwnedMessage::new("x", "").request();
        assert!(with_message(&one, |m| m.is_request()));
    }
}
