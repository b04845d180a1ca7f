//! The cost of one plugin stage per message: the first-party JSON-field
//! filter over ~100-byte JSON messages at batch sizes 1, 16, 64 and 256,
//! with the epoch deadline on, next to the same check in native Rust.
//! Also instantiation, compile and cached-load times.
//!
//! Run: `cargo bench -p switchyard --bench plugin_stage` (builds the plugin
//! fixtures for wasm32 first if needed). Prints tables in Markdown; figures
//! are medians of 7 rounds of ~300 ms, in on-CPU nanoseconds of the bench
//! thread (Linux schedstat), so other load on the machine inflates them
//! less than wall time would. Rows: the JSON-field filter, the ABI's own
//! cost (an SDK filter that only looks up an attribute, and a WAT filter
//! with no SDK), instance start, compile and cached load.
//!
//! `PLUGIN_BENCH_EXTRA=my.wasm cargo bench ...` times your own filter
//! (config `{}`) at batches of 64 and 256 instead of the rest.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard::message::{Message, Publisher, Topic};
use switchyard::metrics::Registry;
use switchyard::plugin::{self, Engine, FilterVerdict, Limits, Source};

// Shared with the integration tests; a bench uses only part of it.
#[allow(dead_code)]
#[path = "../tests/plugins/fixtures.rs"]
mod fixtures;

const CONFIG: &str = r#"{"path":"sensor.temp","op":"gt","value":30}"#;

fn messages(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let temp = 20 + (i % 20);
            let payload = format!(
                r#"{{"sensor":{{"id":"line-1-a","temp":{temp}.5}},"unit":"C","seq":{i:08},"ok":true,"site":"42"}}"#
            );
            Message::new(
                Topic::try_from("sensors.line1.temp").expect("topic"),
                Bytes::from(payload),
                Publisher::new("sensors", ""),
            )
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Nanoseconds this thread has spent on a CPU (Linux schedstat), so a
/// busy machine's other processes do not count against the figure;
/// falls back to wall time elsewhere.
fn cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// (on-CPU, wall) ns per message for `f` over batches of `batch`: medians
/// of 7 rounds of about 300 ms each.
fn time_per_msg(batch: usize, mut f: impl FnMut()) -> (f64, f64) {
    let per_round = Duration::from_millis(300);
    for _ in 0..200 {
        f();
    }
    let mut cpu = Vec::new();
    let mut wall = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        let cpu_start = cpu_ns();
        let mut iters = 0u64;
        while start.elapsed() < per_round {
            for _ in 0..16 {
                f();
            }
            iters += 16;
        }
        let msgs = iters as f64 * batch as f64;
        let elapsed = start.elapsed().as_nanos() as f64;
        wall.push(elapsed / msgs);
        let on_cpu = match (cpu_start, cpu_ns()) {
            (Some(a), Some(b)) => (b - a) as f64,
            _ => elapsed,
        };
        cpu.push(on_cpu / msgs);
    }
    (median(cpu), median(wall))
}

/// The epoch check runs on every loop back-edge and call whatever the
/// deadline; a long one keeps a busy machine from timing a batch out.
fn limits() -> Limits {
    Limits {
        deadline: Duration::from_secs(10),
        memory_bytes: 32 << 20,
        ..Limits::default()
    }
}

fn engine(reservation: u64) -> Engine {
    Engine::new(
        plugin::Config {
            memory_reservation: reservation,
            max_memory_bytes: reservation.min(256 << 20),
            ..plugin::Config::default()
        },
        &Registry::new(),
    )
    .expect("engine")
}

fn main() {
    let path = fixtures::wasm("json_filter");
    let msgs = messages(256);
    let avg = msgs.iter().map(|m| m.payload.len()).sum::<usize>() / msgs.len();
    println!("plugin stage: json_filter {CONFIG}, payload ~{avg} bytes, epoch deadline on");
    println!("ns per message: on-CPU time of this thread (wall time in brackets)");
    println!();
    println!("| batch | wasm, 4 GiB reservation | wasm, 64 MiB reservation | native Rust |");
    println!("|---:|---:|---:|---:|");
    let big = engine(4 << 30);
    let small = engine(64 << 20);
    let p_big = big
        .load("jf", Source::Path(&path), CONFIG, limits())
        .expect("load");
    let p_small = small
        .load("jf", Source::Path(&path), CONFIG, limits())
        .expect("load");
    for batch in [1usize, 16, 64, 256] {
        let slice = &msgs[..batch];
        let mut out: Vec<FilterVerdict> = Vec::with_capacity(256);
        let mut inst = p_big.instance();
        let wasm_big = time_per_msg(batch, || {
            inst.run_filter(slice, &mut out).expect("runs");
            black_box(&out);
        });
        let mut inst = p_small.instance();
        let wasm_small = time_per_msg(batch, || {
            inst.run_filter(slice, &mut out).expect("runs");
            black_box(&out);
        });
        let mut native_out: Vec<bool> = Vec::with_capacity(256);
        let native = time_per_msg(batch, || {
            native_out.clear();
            for m in slice {
                let v =
                    switchyard_sdk::json::find(&m.payload, "sensor.temp").and_then(|v| v.as_f64());
                native_out.push(v.is_some_and(|t| t > 30.0));
            }
            black_box(&native_out);
        });
        let cell = |(cpu, wall): (f64, f64)| format!("{cpu:.1} ({wall:.1})");
        println!(
            "| {batch} | {} | {} | {} |",
            cell(wasm_big),
            cell(wasm_small),
            cell(native)
        );
    }

    // The ABI's own cost: a filter that only looks up one attribute
    // (hello-filter) over the same messages.
    let hello = big
        .load(
            "hello",
            Source::Path(&fixtures::wasm("hello_filter")),
            "{}",
            limits(),
        )
        .expect("load");
    // And with a filter written in WebAssembly text (no SDK): the host's
    // share of the cost.
    let wat_bytes = fixtures::assemble(&fixtures::wat_filter("nop"));
    let wat = big
        .load("wat", Source::Bytes(&wat_bytes), "{}", limits())
        .expect("load");
    println!();
    println!(
        "| batch | ABI only: hello_filter (SDK, attribute lookup) | ABI only: WAT filter (no SDK) |"
    );
    println!("|---:|---:|---:|");
    for batch in [1usize, 16, 64, 256] {
        let slice = &msgs[..batch];
        let mut out: Vec<FilterVerdict> = Vec::with_capacity(256);
        let mut inst = hello.instance();
        let (cpu, wall) = time_per_msg(batch, || {
            inst.run_filter(slice, &mut out).expect("runs");
            black_box(&out);
        });
        let mut inst = wat.instance();
        let (wcpu, wwall) = time_per_msg(batch, || {
            inst.run_filter(slice, &mut out).expect("runs");
            black_box(&out);
        });
        println!("| {batch} | {cpu:.1} ({wall:.1}) | {wcpu:.1} ({wwall:.1}) |");
    }

    // Any other filter: PLUGIN_BENCH_EXTRA=path.wasm (config "{}").
    if let Some(extra) = std::env::var_os("PLUGIN_BENCH_EXTRA") {
        let p = big
            .load(
                "extra",
                Source::Path(std::path::Path::new(&extra)),
                "{}",
                limits(),
            )
            .expect("load extra");
        for batch in [64usize, 256] {
            let slice = &msgs[..batch];
            let mut out: Vec<FilterVerdict> = Vec::with_capacity(256);
            let mut inst = p.instance();
            let (cpu, wall) = time_per_msg(batch, || {
                inst.run_filter(slice, &mut out).expect("runs");
                black_box(&out);
            });
            println!("extra {extra:?} batch {batch}: {cpu:.1} ({wall:.1}) ns/msg");
        }
        return;
    }

    // Instantiation (fresh store + switchyard_init), compile, cached load.
    let mut starts = Vec::new();
    for _ in 0..200 {
        let mut inst = p_big.instance();
        let t = Instant::now();
        inst.start().expect("starts");
        starts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let bytes = std::fs::read(&path).expect("read");
    let mut compiles = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        big.load(&format!("c{i}"), Source::Bytes(&bytes), CONFIG, limits())
            .expect("load");
        compiles.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let dir = std::env::temp_dir().join(format!("switchyard-bench-cache-{}", std::process::id()));
    let cached = Engine::new(
        plugin::Config {
            cache_dir: Some(dir.clone()),
            ..plugin::Config::default()
        },
        &Registry::new(),
    )
    .expect("engine");
    cached
        .load("warm", Source::Bytes(&bytes), CONFIG, limits())
        .expect("load");
    let mut hits = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let p = cached
            .load(&format!("h{i}"), Source::Bytes(&bytes), CONFIG, limits())
            .expect("load");
        hits.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(p.from_cache());
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!();
    println!(
        "instance start (instantiate + switchyard_init): {:.1} µs median",
        median(starts)
    );
    println!(
        "load with compile ({} KiB module): {:.1} ms median",
        bytes.len() / 1024,
        median(compiles)
    );
    println!(
        "load from the disk cache (checksum + deserialize + checks + first instance): {:.2} ms median",
        median(hits)
    );
}
