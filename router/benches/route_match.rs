//! Route matching cost with 10,000 routes: the trie in
//! `switchyard::pipeline::RouteTable` against a plain scan of every pattern.
//!
//! Run: `cargo bench -p switchyard --bench route_match`
//! (`-- --quick` for a short run). Prints nanoseconds per matched message.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard::message::Pattern;
use switchyard::message::{Message, Publisher, Topic};
use switchyard::pipeline::{Matches, RouteTable};

const ROUTES: usize = 10_000;
const TOPICS: usize = 4096;

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

const METRICS: [&str; 4] = ["temp", "pressure", "vibration", "power"];

/// 10,000 patterns shaped like an edge site's routes: exact topics, `*` in
/// the middle, `>` tails and a few leading wildcards.
fn patterns(rng: &mut Rng) -> Vec<Pattern> {
    (0..ROUTES)
        .map(|i| {
            let site = rng.below(100);
            let line = rng.below(20);
            let machine = rng.below(50);
            let metric = METRICS[rng.below(4) as usize];
            let text = match i % 10 {
                0..=3 => format!("site{site}.line{line}.m{machine}.{metric}"),
                4..=6 => format!("site{site}.*.m{machine}.{metric}"),
                7 | 8 => format!("site{site}.line{line}.>"),
                _ => format!("*.line{line}.*.{metric}"),
            };
            Pattern::parse(&text).expect("generated patterns are valid")
        })
        .collect()
}

/// Topics in the same space (many match some route, some match none).
fn topics(rng: &mut Rng) -> Vec<String> {
    (0..TOPICS)
        .map(|_| {
            let site = rng.below(120);
            let line = rng.below(25);
            let machine = rng.below(60);
            let metric = METRICS[rng.below(4) as usize];
            format!("site{site}.line{line}.m{machine}.{metric}")
        })
        .collect()
}

/// Runs `f` over the topics until `budget` has passed; returns ns per call
/// and the total number of matches seen.
fn measure(topics: &[String], budget: Duration, mut f: impl FnMut(&str) -> usize) -> (f64, usize) {
    // Warm-up pass.
    for t in topics {
        black_box(f(t));
    }
    let start = Instant::now();
    let mut calls = 0usize;
    let mut found = 0usize;
    while start.elapsed() < budget {
        for t in topics {
            found += f(black_box(t));
        }
        calls += topics.len();
    }
    let ns = start.elapsed().as_nanos() as f64 / calls as f64;
    (ns, found / (calls / topics.len()))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = Duration::from_millis(if quick { 300 } else { 3000 });
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let patterns = patterns(&mut rng);
    let topics = topics(&mut rng);

    let build = Instant::now();
    let mut table = RouteTable::new();
    let no_conditions = BTreeMap::new();
    for p in &patterns {
        table.insert(p, &no_conditions);
    }
    let build = build.elapsed();

    let mut m = Matches::new();
    // The trie and the scan must agree before their speeds mean anything.
    for t in &topics[..256] {
        table.matches_topic(t, &mut m);
        let scan: Vec<usize> = (0..patterns.len())
            .filter(|&i| patterns[i].matches_str(t))
            .collect();
        assert_eq!(m.iter().collect::<Vec<_>>(), scan, "topic {t}");
    }
    let (trie_ns, trie_found) = measure(&topics, budget, |t| {
        table.matches_topic(t, &mut m);
        m.len()
    });

    let publisher = Publisher::new("bench", "");
    let messages: Vec<Message> = topics
        .iter()
        .map(|t| {
            let topic = Topic::try_from(t.as_str()).expect("valid topic");
            Message::new(topic, Bytes::from_static(b"payload"), publisher.clone())
        })
        .collect();
    let mut next = 0;
    let (msg_ns, _) = measure(&topics, budget, |_| {
        next = (next + 1) % messages.len();
        table.matches(&messages[next], &mut m);
        m.len()
    });

    let (scan_ns, scan_found) = measure(&topics[..256], budget, |t| {
        patterns.iter().filter(|p| p.matches_str(t)).count()
    });

    println!("route_match: {ROUTES} routes, {TOPICS} topics, table built in {build:?}");
    println!(
        "  trie, topic only:        {trie_ns:>10.1} ns/match  ({:.2} routes matched per topic)",
        trie_found as f64 / TOPICS as f64
    );
    println!("  trie, message + attrs:   {msg_ns:>10.1} ns/match");
    println!(
        "  naive scan (reference):  {scan_ns:>10.1} ns/match  ({:.2} routes matched per topic)",
        scan_found as f64 / 256.0
    );
}
