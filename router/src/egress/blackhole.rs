//! `blackhole`: takes every message and discards it, counted in
//! `switchyard_output_messages_total`. No socket, no peers, never waits: a
//! route to a blackhole measures the router alone (benchmarks), or keeps
//! a route's counts without a consumer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;

use super::{
    AttachError, Context, Delivery, Handle, Lifecycle, LifecycleFuture, Output, OutputStats,
    Refusals, SendFuture,
};
use crate::config;
use crate::message::Message;

/// A `blackhole` output.
#[derive(Debug)]
pub struct BlackholeOutput {
    name: String,
    taken: IntCounter,
    refused: Refusals,
}

impl BlackholeOutput {
    /// The output `name`, counting into `ctx`'s families.
    pub fn build(name: &str, _settings: &config::Blackhole, ctx: &Context) -> Handle {
        ctx.outputs.declare_peers(name);
        Arc::new(Self {
            name: name.to_owned(),
            taken: ctx.outputs.messages(name),
            refused: ctx.outputs.refusals(name),
        })
    }
}

impl Output for BlackholeOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        self.taken.inc_by(batch.len() as u64);
        let delivery = Delivery::accepted();
        self.refused.count(&delivery, batch.len());
        Box::pin(std::future::ready(Ok(delivery)))
    }
}

impl Lifecycle for BlackholeOutput {
    fn attach(&self) -> LifecycleFuture<'_, Result<Option<SocketAddr>, AttachError>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    fn wait_connected(&self, _timeout: Duration) -> LifecycleFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Always: it needs no peer.
    fn connected(&self) -> bool {
        true
    }

    fn stats(&self) -> OutputStats {
        OutputStats {
            name: self.name.clone(),
            kind: "blackhole".into(),
            sent: self.taken.get(),
            ..OutputStats::default()
        }
    }

    fn flush_and_close(&self, _linger: Duration) -> LifecycleFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Publisher, Topic};
    use crate::metrics::Registry;

    #[tokio::test]
    async fn takes_and_counts_everything() {
        let registry = Registry::new();
        let ctx = Context {
            outputs: super::super::Metrics::register(&registry),
            zmtp: crate::zmtp::metrics::Metrics::new(&registry),
            dealers: super::super::dealer::DealerMetrics::register(&registry),
            requests: crate::message::request::RequestMetrics::register(&registry),
            security: crate::auth::open_for_tests(),
            tls: (
                crate::http::tls::Metrics::register(
                    &registry,
                    prometheus::IntCounterVec::new(
                        prometheus::Opts::new("t_auth_failures", "test"),
                        &["listener", "reason"],
                    )
                    .expect("a family"),
                ),
                crate::http::tls::Reloads::default(),
            ),
        };
        let output = BlackholeOutput::build("void", &config::Blackhole::default(), &ctx);
        let batch: Vec<Message> = (0..3)
            .map(|i| {
                Message::new(
                    Topic::try_from("a.b").expect("topic"),
                    bytes::Bytes::from(format!("{i}")),
                    Publisher::new("in", ""),
                )
            })
            .collect();
        let delivery = output.send(&batch).await.expect("taken");
        assert!(delivery.is_complete());
        assert_eq!(output.attach().await.expect("attached"), None);
        assert_eq!(output.stats().sent, 3);
        let text = registry.encode();
        assert!(text.contains("switchyard_output_messages_total{output=\"void\"} 3"));
        assert!(text.contains("switchyard_output_peers{output=\"void\"} 0"));
        assert!(text.contains(
            "switchyard_output_dropped_total{output=\"void\",reason=\"no_subscriber\"} 0"
        ));
    }
}
