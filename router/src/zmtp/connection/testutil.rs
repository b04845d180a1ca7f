//! Helpers for the in-crate socket tests.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::metrics::Registry;
use crate::zmtp::frame::Multipart;
use crate::zmtp::metrics::Metrics;

/// Generous deadline for facts that normally take milliseconds.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A fresh registry and its ZMTP metrics.
pub(crate) fn metrics() -> (Registry, Metrics) {
    let reg = Registry::new();
    let m = Metrics::new(&reg);
    (reg, m)
}

/// A one- or multi-frame message.
pub(crate) fn msg(frames: &[&[u8]]) -> Multipart {
    frames.iter().map(|f| Bytes::copy_from_slice(f)).collect()
}

/// Awaits `fut` or panics after [`DEADLINE`].
pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls `cond` until true, or panics after [`DEADLINE`].
pub(crate) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// The value of the first sample line of `name` with all `labels` in the
/// registry's text output (0 when absent).
pub(crate) fn metric(reg: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = reg.encode();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        {
            if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse().ok()) {
                return v;
            }
        }
    }
    0.0
}
