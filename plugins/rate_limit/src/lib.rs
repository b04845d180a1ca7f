//! `rate_limit`: a token bucket per key; messages over the rate are
//! dropped.
//!
//! ```toml
//! [[plugin]]
//! name   = "per-device"
//! path   = "plugins/rate_limit.wasm"
//! config = { rate = 10.0, burst = 20, key = "attr:device" }
//! ```
//!
//! `rate` is tokens per second, `burst` the bucket size (default: `rate`,
//! at least 1). `key` is `id`, `topic`, `input`, `payload`, `attr:NAME` or
//! `json:PATH`; without one, one bucket covers everything. Messages without
//! the key share one bucket. At most `max_keys` buckets (default 10000) are
//! kept: when full, buckets that have refilled are forgotten first, and
//! new keys then share an overflow bucket.
//!
//! Time is the batch time the router stamps on each batch: plugins have
//! no clock of their own.

use std::collections::HashMap;

use serde::Deserialize;
use switchyard_plugin_common::KeySpec;
use switchyard_sdk::{Config, Error, Filter, Message, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    rate: f64,
    burst: Option<f64>,
    key: Option<String>,
    #[serde(default = "default_max_keys")]
    max_keys: usize,
}

fn default_max_keys() -> usize {
    10_000
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: u64,
}

/// The rate limiter.
pub struct RateLimit {
    rate_per_ms: f64,
    burst: f64,
    key: Option<KeySpec>,
    max_keys: usize,
    buckets: HashMap<u64, Bucket>,
    shared: Bucket,
}

impl RateLimit {
    fn refill(&self, b: &mut Bucket, now: u64) {
        let elapsed = now.saturating_sub(b.last_ms) as f64;
        b.tokens = (b.tokens + elapsed * self.rate_per_ms).min(self.burst);
        b.last_ms = b.last_ms.max(now);
    }

    fn take(&self, b: &mut Bucket, now: u64) -> bool {
        self.refill(b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets buckets that are full again (they behave like new ones).
    fn prune(&mut self, now: u64) {
        let (rate, burst) = (self.rate_per_ms, self.burst);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_sub(b.last_ms) as f64;
            b.tokens + elapsed * rate < burst
        });
    }
}

impl Filter for RateLimit {
    fn init(config: &Config<'_>) -> Result<Self, Error> {
        let s: Settings = config.parse()?;
        if !(s.rate.is_finite() && s.rate > 0.0) {
            return Err(Error::config("rate must be a positive number per second"));
        }
        let burst = s.burst.unwrap_or(s.rate).max(1.0);
        if !burst.is_finite() {
            return Err(Error::config("burst must be finite"));
        }
        Ok(Self {
            rate_per_ms: s.rate / 1000.0,
            burst,
            key: s.key.as_deref().map(KeySpec::parse).transpose()?,
            max_keys: s.max_keys.max(1),
            buckets: HashMap::new(),
            shared: Bucket {
                tokens: burst,
                last_ms: 0,
            },
        })
    }

    fn filter(&mut self, msg: &Message<'_>) -> Verdict {
        let now = msg.batch_time_ms();
        let hash = self.key.as_ref().and_then(|k| k.hash(msg));
        let allowed = match hash {
            Some(h) => {
                if !self.buckets.contains_key(&h) && self.buckets.len() >= self.max_keys {
                    self.prune(now);
                }
                if self.buckets.contains_key(&h) || self.buckets.len() < self.max_keys {
                    let mut b = *self.buckets.entry(h).or_insert(Bucket {
                        tokens: self.burst,
                        last_ms: now,
                    });
                    let ok = self.take(&mut b, now);
                    self.buckets.insert(h, b);
                    ok
                } else {
                    let mut b = self.shared;
                    let ok = self.take(&mut b, now);
                    self.shared = b;
                    ok
                }
            }
            None => {
                let mut b = self.shared;
                let ok = self.take(&mut b, now);
                self.shared = b;
                ok
            }
        };
        if allowed {
            Verdict::Keep
        } else {
            Verdict::Drop
        }
    }
}

switchyard_sdk::filter!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::OwnedMessage;
    use switchyard_sdk::testing::FilterHarness;

    fn kept(v: &[Verdict]) -> usize {
        v.iter().filter(|v| **v == Verdict::Keep).count()
    }

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let mut h = FilterHarness::<RateLimit>::new(r#"{"rate":10,"burst":5}"#).expect("config");
        let msgs = vec![OwnedMessage::new("a", ""); 8];
        assert_eq!(kept(&h.run_at(1_000, &msgs)), 5, "the burst");
        assert_eq!(kept(&h.run_at(1_000, &msgs)), 0, "empty bucket");
        assert_eq!(kept(&h.run_at(1_300, &msgs)), 3, "300 ms at 10/s");
        assert_eq!(
            kept(&h.run_at(60_000, &msgs)),
            5,
            "refills to the burst only"
        );
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let mut h = FilterHarness::<RateLimit>::new(r#"{"rate":1,"burst":1,"key":"attr:dev"}"#)
            .expect("config");
        let v = h.run_at(
            0,
            &[
                OwnedMessage::new("a", "").attr("dev", "x"),
                OwnedMessage::new("a", "").attr("dev", "x"),
                OwnedMessage::new("a", "").attr("dev", "y"),
            ],
        );
        assert_eq!(v, [Verdict::Keep, Verdict::Drop, Verdict::Keep]);
    }

    #[test]
    fn key_table_is_bounded() {
        let mut h = FilterHarness::<RateLimit>::new(
            r#"{"rate":1,"burst":1,"key":"attr:dev","max_keys":4}"#,
        )
        .expect("config");
        let msgs: Vec<_> = (0..100)
            .map(|i| OwnedMessage::new("a", "").attr("dev", &i.to_string()))
            .collect();
        h.run_at(0, &msgs);
        assert!(h.plugin().buckets.len() <= 4);
    }

    #[test]
    fn bad_configs_are_refused() {
        for cfg in [
            r#"{"rate":0}"#,
            r#"{"rate":-1}"#,
            r#"{"rate":1,"key":"x"}"#,
            "{}",
        ] {
            assert!(FilterHarness::<RateLimit>::new(cfg).is_err(), "{cfg}");
        }
    }
}
