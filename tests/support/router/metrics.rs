//! Samples of one `/metrics` scrape (Prometheus text format), and the
//! conservation law every route must obey: `offered = delivered + filtered +
//! answered + dead_lettered + dropped + depth`.

use anyhow::{Result, anyhow};

/// One sample: name, labels (sorted by name), value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample name, e.g. `switchyard_route_offered_total`.
    pub name: String,
    /// Label pairs, sorted by label name.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// Every sample of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: Vec<Sample>,
}

impl Scrape {
    /// Parses Prometheus text exposition.
    ///
    /// # Errors
    /// On a sample line that cannot be read.
    pub fn parse(text: &str) -> Result<Self> {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            samples.push(parse_line(line).ok_or_else(|| anyhow!("bad sample line {line:?}"))?);
        }
        Ok(Self { samples })
    }

    /// All samples.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The value of `name` whose labels are exactly `labels` (any order).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    }

    /// As [`Scrape::value`], 0 when the sample is absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// As [`Scrape::get`], as an integer count.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.get(name, labels) as u64
    }

    /// The sum of `name` over every sample whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// The samples whose names contain `focus`, one per line (for error
    /// messages).
    pub fn show(&self, focus: &str) -> String {
        self.samples
            .iter()
            .filter(|s| s.name.contains(focus))
            .map(|s| {
                let labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                format!("{}{{{}}} {}\n", s.name, labels.join(","), s.value)
            })
            .collect()
    }

    /// The counts of route `route` in this scrape.
    pub fn route(&self, route: &str) -> RouteCounts {
        let l = [("route", route)];
        let dropped = |reason: &str| {
            self.count(
                "switchyard_route_dropped_total",
                &[("route", route), ("reason", reason)],
            )
        };
        RouteCounts {
            offered: self.count("switchyard_route_offered_total", &l),
            delivered: self.count(
                "switchyard_route_messages_total",
                &[("route", route), ("outcome", "delivered")],
            ),
            filtered: self.count(
                "switchyard_route_messages_total",
                &[("route", route), ("outcome", "filtered")],
            ),
            answered: self.count(
                "switchyard_route_messages_total",
                &[("route", route), ("outcome", "answered")],
            ),
            dead_lettered: self.count(
                "switchyard_route_messages_total",
                &[("route", route), ("outcome", "dead_lettered")],
            ),
            dropped_outcome: self.count(
                "switchyard_route_messages_total",
                &[("route", route), ("outcome", "dropped")],
            ),
            dropped: self.sum("switchyard_route_dropped_total", &l) as u64,
            queue_full: dropped("queue_full"),
            no_subscriber: dropped("no_subscriber"),
            shutdown: dropped("shutdown"),
            plugin_error: dropped("plugin_error"),
            no_dead_letter: dropped("no_dead_letter"),
            depth: self.count("switchyard_route_queue_depth", &l),
            backpressure_events: self.count("switchyard_route_backpressure_events_total", &l),
            blocked_seconds: self.get("switchyard_route_blocked_seconds_total", &l),
        }
    }
}

/// One route's counts from a scrape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteCounts {
    /// `route_offered_total`.
    pub offered: u64,
    /// `route_messages_total{outcome="delivered"}`.
    pub delivered: u64,
    /// `route_messages_total{outcome="filtered"}`: a filter plugin dropped
    /// them, or the routing plugin chose no output.
    pub filtered: u64,
    /// `route_messages_total{outcome="answered"}`: a filter plugin answered
    /// the request itself.
    pub answered: u64,
    /// `route_messages_total{outcome="dead_lettered"}`: the route's
    /// dead-letter output accepted them.
    pub dead_lettered: u64,
    /// `route_messages_total{outcome="dropped"}`.
    pub dropped_outcome: u64,
    /// The sum of `route_dropped_total` over every reason.
    pub dropped: u64,
    /// `route_dropped_total{reason="queue_full"}`.
    pub queue_full: u64,
    /// `route_dropped_total{reason="no_subscriber"}`.
    pub no_subscriber: u64,
    /// `route_dropped_total{reason="shutdown"}`.
    pub shutdown: u64,
    /// `route_dropped_total{reason="plugin_error"}`.
    pub plugin_error: u64,
    /// `route_dropped_total{reason="no_dead_letter"}`.
    pub no_dead_letter: u64,
    /// `route_queue_depth`.
    pub depth: u64,
    /// `route_backpressure_events_total`.
    pub backpressure_events: u64,
    /// `route_blocked_seconds_total`.
    pub blocked_seconds: f64,
}

impl RouteCounts {
    /// `offered == delivered + filtered + answered + dead_lettered + dropped
    /// (sum over reasons) + depth`, and the `dropped` outcome agrees with the reasons.
    pub fn conserved(&self) -> bool {
        self.offered == self.left() + self.depth && self.dropped_outcome == self.dropped
    }

    /// Messages that have left the route, whatever their outcome:
    /// `delivered + filtered + answered + dead_lettered + dropped`.
    pub fn left(&self) -> u64 {
        self.delivered + self.filtered + self.answered + self.dead_lettered + self.dropped
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (&line[..open], &line[open..=close])
        }
        None => {
            let space = line.find(' ')?;
            (&line[..space], "")
        }
    };
    let after = line[name.len() + rest.len()..].trim();
    let value_text = after.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    let mut labels = Vec::new();
    if !rest.is_empty() {
        let inner = &rest[1..rest.len() - 1];
        let mut chars = inner.chars().peekable();
        loop {
            while chars.peek() == Some(&',') || chars.peek() == Some(&' ') {
                chars.next();
            }
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            if key.is_empty() {
                break;
            }
            if chars.next() != Some('"') {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()? {
                    '\\' => match chars.next()? {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((key.trim().to_owned(), value));
        }
    }
    labels.sort();
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_with_and_without_labels() {
        let text = "# HELP x y\n# TYPE a counter\na_total 3\nb{route=\"r\",reason=\"q\\\"x\"} 4.5\nc_bucket{le=\"+Inf\"} 7\n";
        let s = Scrape::parse(text).expect("parses");
        assert_eq!(s.value("a_total", &[]), Some(3.0));
        assert_eq!(
            s.value("b", &[("reason", "q\"x"), ("route", "r")]),
            Some(4.5)
        );
        assert_eq!(s.value("b", &[("route", "r")]), None);
        assert_eq!(s.sum("b", &[("route", "r")]), 4.5);
        assert_eq!(s.value("c_bucket", &[("le", "+Inf")]), Some(7.0));
    }
}
