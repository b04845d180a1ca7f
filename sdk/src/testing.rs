//! Runs a plugin natively, without a router, for `cargo test`: messages go
//! through the same batch encoding the router writes.
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

fn encode(time_ms: u64, msgs: &[OwnedMessage]) -> Vec<u8> {
    let mut w = BatchWriter::new(time_ms);
    for m in msgs {
        w.push(m);
    }
    w.finish()
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
        let buf = encode(time_ms, msgs);
        let batch = Batch::decode(&buf).expect("the writer writes valid batches");
        batch.messages().map(|m| self.plugin.filter(&m)).collect()
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
        let buf = encode(time_ms, msgs);
        let batch = Batch::decode(&buf).expect("the writer writes valid batches");
        batch
            .messages()
            .map(|m| Routed::from(self.plugin.route(&m)))
            .collect()
    }
}

/// Calls `f` with a borrowed view of `msg`, e.g. to test a filter function.
pub fn with_message<T>(msg: &OwnedMessage, f: impl FnOnce(&Message<'_>) -> T) -> T {
    let buf = encode(0, std::slice::from_ref(msg));
    let batch = Batch::decode(&buf).expect("the writer writes valid batches");
    let m = batch.messages().next().expect("one message");
    f(&m)
}
