//! Reading a process's metrics: one HTTP GET of the Prometheus text
//! exposition, and look-ups of a family's samples by label.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One series: family name, labels, value.
type Series = (String, Vec<(String, String)>, f64);

/// The samples of one scrape.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    series: Vec<Series>,
}

/// Fetches `http://{addr}/metrics` and parses it.
///
/// # Errors
/// On connection errors, timeouts or a non-200 answer.
pub fn scrape(addr: &str) -> Result<Sample> {
    let mut s =
        TcpStream::connect(addr).with_context(|| format!("connecting to metrics {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text).context("reading metrics")?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no HTTP header end in metrics answer: {text:?}");
    };
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("metrics answer: {head}");
    }
    Ok(parse(body))
}

/// Parses the text exposition format (enough of it for our own families).
pub fn parse(body: &str) -> Sample {
    let mut series = Vec::new();
    for line in body.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name_labels, value) = match line.rsplit_once(' ') {
            Some(p) => p,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
            None => (name_labels, Vec::new()),
        };
        series.push((name.to_owned(), labels, value));
    }
    Sample { series }
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((k, v)) = rest.split_once("=\"") {
        let mut val = String::new();
        let mut chars = v.char_indices();
        let mut end = v.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        val.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => val.push(c),
            }
        }
        out.push((k.trim_start_matches(',').trim().to_owned(), val));
        rest = &v[end..];
    }
    out
}

impl Sample {
    /// The sum of every sample of `name` whose labels include all of
    /// `labels` (0 when there is none: counters start absent).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(n, ls, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Every sample of families whose name starts with `prefix`, one per
    /// line, for failure messages.
    pub fn dump(&self, prefix: &str) -> String {
        self.series
            .iter()
            .filter(|(n, _, _)| n.starts_with(prefix))
            .map(|(n, ls, v)| {
                let ls: Vec<String> = ls.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                format!("{n}{{{}}} {v}\n", ls.join(","))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_matching_series() {
        let s = parse(
            "# HELP x y\nswitchyard_a_total{socket=\"in\",reason=\"b\\\"c\"} 2\n\
             switchyard_a_total{socket=\"in\",reason=\"d\"} 3\nswitchyard_g 7\n",
        );
        assert_eq!(s.sum("switchyard_a_total", &[("socket", "in")]), 5.0);
        assert_eq!(s.sum("switchyard_a_total", &[("reason", "b\"c")]), 2.0);
        assert_eq!(s.sum("switchyard_g", &[]), 7.0);
        assert_eq!(s.sum("switchyard_missing", &[]), 0.0);
    }
}
