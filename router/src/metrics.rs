//! The Prometheus registry every module registers its families into, and the
//! text encoding `/metrics` serves.
//!
//! Names follow `switchyard_<area>_<thing>_<unit>`; counters end in
//! `_total`; label values come from bounded sets only (route, input, output,
//! plugin, reason), never a topic or a peer address. Each module registers
//! its own families through the helpers here, so a name is defined once, in
//! the module that counts it; look-ups of labelled children happen when a
//! component is built, never per message.
//!
//! One family per concept across kinds: every output kind counts into
//! `switchyard_output_messages_total{output}`,
//! `switchyard_output_dropped_total{output,reason}`,
//! `switchyard_output_peers{output}` and `switchyard_output_connected{output}`
//! ([`crate::egress::Metrics`]; `connected` is read from each output at
//! every scrape), and the route workers count
//! `switchyard_output_retries_total{output,reason}`,
//! `switchyard_output_inflight{output}` and
//! `switchyard_output_ack_latency_seconds{output}` around every send, the
//! same for every kind (`pipeline/metrics.rs`); every input kind into `switchyard_input_messages_total{input}`
//! and `switchyard_input_rejected_total{input,reason}`
//! ([`crate::ingress::Metrics`]). A kind adds families of its own only for
//! what the shared ones cannot say, under its area's prefix (`output_` for
//! a `zmq-dealer`'s services, `request_` for requests). The wire layer's
//! `switchyard_zmtp_*{socket}` families stay beside them. The test
//! `every_kind_reports_the_shared_families` in `tests/` checks this rule
//! on a router with every kind configured.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, TextEncoder,
};

/// The router's metric registry. Cheap to clone (shared inside).
#[derive(Clone, Default)]
pub struct Registry {
    inner: prometheus::Registry,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(reg: &Registry, c: C) -> C {
    // Names are fixed at compile time and each family is registered once per
    // registry; a clash is a programming error caught by every test.
    reg.inner
        .register(Box::new(c.clone()))
        .expect("metric family registered twice or with an invalid name");
    c
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an integer counter family with `labels`.
    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        register(
            self,
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter opts"),
        )
    }

    /// Registers an unlabelled integer counter.
    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        register(
            self,
            IntCounter::new(name, help).expect("valid counter opts"),
        )
    }

    /// Registers an integer gauge family with `labels`.
    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        register(
            self,
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge opts"),
        )
    }

    /// Registers an unlabelled integer gauge.
    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        register(self, IntGauge::new(name, help).expect("valid gauge opts"))
    }

    /// Registers a float counter family (for seconds) with `labels`.
    pub fn float_counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::CounterVec {
        register(
            self,
            prometheus::CounterVec::new(Opts::new(name, help), labels).expect("valid counter opts"),
        )
    }

    /// Registers a float gauge family (for seconds) with `labels`.
    pub fn float_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
        register(
            self,
            prometheus::GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge opts"),
        )
    }

    /// Registers a histogram family with `labels` and `buckets` (seconds).
    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> HistogramVec {
        register(
            self,
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("valid histogram opts"),
        )
    }

    /// Registers an unlabelled histogram with `buckets` (seconds).
    pub fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        register(
            self,
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid histogram opts"),
        )
    }

    /// The whole registry in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for I/O reasons; the families are
        // all valid by construction.
        TextEncoder::new()
            .encode(&self.inner.gather(), &mut out)
            .expect("text encoding of valid families");
        String::from_utf8(out).expect("the text encoder writes UTF-8")
    }
}

/// Latency buckets, in seconds, from 10 µs to 10 s.
pub fn latency_buckets() -> Vec<f64> {
    vec![
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
        0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registered_families() {
        let reg = Registry::new();
        let c = reg.counter_vec("switchyard_test_total", "A test counter.", &["reason"]);
        c.with_label_values(&["x"]).inc();
        let text = reg.encode();
        assert!(text.contains("switchyard_test_total{reason=\"x\"} 1"));
    }
}
