//! `dedup`: drops a message whose key was already seen within a window.
//!
//! ```toml
//! [[plugin]]
//! name   = "once"
//! path   = "plugins/dedup.wasm"
//! config = { by = "attr:msg-id", window_ms = 60000 }
//! ```
//!
//! `by` is `id` (the default), `topic`, `payload`, `input`, `attr:NAME` or
//! `json:PATH`; messages without the key are kept. Keys are remembered as
//! 64-bit hashes for `window_ms` (default 60000) of batch time, at most
//! `max_entries` (default 100000) of them; when full the oldest are
//! forgotten first. State is per instance: with several workers a repeat
//! reaching another worker is not caught.

use std::collections::{HashMap, VecDeque};

use serde::Deserialize;
use switchyard_plugin_common::KeySpec;
use switchyard_sdk::{Config, Error, Filter, Message, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_by")]
    by: String,
    #[serde(default = "default_window")]
    window_ms: u64,
    #[serde(default = "default_max")]
    max_entries: usize,
}

fn default_by() -> String {
    "id".into()
}

fn default_window() -> u64 {
    60_000
}

fn default_max() -> usize {
    100_000
}

/// The de-duplicator.
pub struct Dedup {
    key: KeySpec,
    window_ms: u64,
    max_entries: usize,
    /// Key hash -> when it was last seen.
    seen: HashMap<u64, u64>,
    /// (time, hash) in arrival order, for expiry.
    order: VecDeque<(u64, u64)>,
}

impl Dedup {
    fn expire(&mut self, now: u64) {
        while let Some(&(t, h)) = self.order.front() {
            let stale = now.saturating_sub(t) >= self.window_ms;
            if !stale && self.order.len() <= self.max_entries {
                break;
            }
            self.order.pop_front();
            // Only forget the key if this entry is its latest sighting.
            if self.seen.get(&h) == Some(&t) {
                self.seen.remove(&h);
            }
        }
    }
}

impl Filter for Dedup {
    fn init(config: &Config<'_>) -> Result<Self, Error> {
        let s: Settings = config.parse()?;
        if s.window_ms == 0 || s.max_entries == 0 {
            return Err(Error::config(
                "window_ms and max_entries must be above zero",
            ));
        }
        Ok(Self {
            key: KeySpec::parse(&s.by)?,
            window_ms: s.window_ms,
            max_entries: s.max_entries,
            seen: HashMap::new(),
            order: VecDeque::new(),
        })
    }

    fn filter(&mut self, msg: &Message<'_>) -> Verdict {
        let Some(h) = self.key.hash(msg) else {
            return Verdict::Keep;
        };
        let now = msg.batch_time_ms();
        self.expire(now);
        if self
            .seen
            .get(&h)
            .is_some_and(|&t| now.saturating_sub(t) < self.window_ms)
        {
            return Verdict::Drop;
        }
        self.seen.insert(h, now);
        self.order.push_back((now, h));
        self.expire(now);
        Verdict::Keep
    }
}

switchyard_sdk::filter!(Dedup);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::OwnedMessage;
    use switchyard_sdk::testing::FilterHarness;

    #[test]
    fn repeats_within_the_window_are_dropped() {
        let mut h = FilterHarness::<Dedup>::new(r#"{"window_ms":1000}"#).expect("config");
        let a = OwnedMessage::new("t", "").id(1);
        let b = OwnedMessage::new("t", "").id(2);
        assert_eq!(
            h.run_at(0, &[a.clone(), b.clone(), a.clone()]),
            [Verdict::Keep, Verdict::Keep, Verdict::Drop]
        );
        assert_eq!(h.run_at(999, std::slice::from_ref(&a)), [Verdict::Drop]);
        assert_eq!(
            h.run_at(1_000, std::slice::from_ref(&b)),
            [Verdict::Keep],
            "window passed"
        );
    }

    #[test]
    fn by_attribute_and_bounded() {
        let mut h =
            FilterHarness::<Dedup>::new(r#"{"by":"attr:k","max_entries":3}"#).expect("config");
        let msgs: Vec<_> = (0..10)
            .map(|i| OwnedMessage::new("t", "").attr("k", &i.to_string()))
            .collect();
        assert!(h.run_at(0, &msgs).iter().all(|v| *v == Verdict::Keep));
        assert!(h.plugin().seen.len() <= 3 && h.plugin().order.len() <= 3);
        // The oldest was forgotten, the newest is still known.
        assert_eq!(h.run_at(1, &msgs[..1]), [Verdict::Keep]);
        assert_eq!(h.run_at(1, &msgs[9..]), [Verdict::Drop]);
        assert_eq!(h.run_at(1, &[OwnedMessage::new("t", "")]), [Verdict::Keep]);
    }

    #[test]
    fn bad_configs_are_refused() {
        for cfg in [r#"{"by":"nope"}"#, r#"{"window_ms":0}"#] {
            assert!(FilterHarness::<Dedup>::new(cfg).is_err(), "{cfg}");
        }
    }
}
