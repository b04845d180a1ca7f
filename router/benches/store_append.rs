//! Durable queue throughput against this disk's ceiling.
//!
//! The ceiling: raw `write` + `fdatasync` of groups of encoded records, on
//! the same file system, with the group size the queue itself reached. The
//! queue: one producer appending as fast as the writer commits
//! (`fsync = "batch"`, 10 ms), 64 concurrent publishers each waiting for
//! its own message to be durable (`fsync = "always"`: group commit across
//! them), and `fsync = "os"`; a reader pops and acknowledges alongside, so
//! the backlog stays small. Messages of 64 B and 1 KiB.
//!
//! Run: `cargo bench -p switchyard --bench store_append` (`-- --quick` for
//! a short run). Files go to `$BENCH_DIR` (default: cargo's target tmp
//! dir), which must be on the disk under test.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard::message::{Message, Publisher, Topic};
use switchyard::store::{Directory, Fsync, Options, Queue, encoded_len};

fn message(size: usize) -> Message {
    Message::new(
        Topic::try_from("bench.t").expect("valid topic"),
        Bytes::from(vec![0x5a; size]),
        Publisher::new("bench", "127.0.0.1:1"),
    )
}

/// Groups of `group` records of `record` bytes written and synced for
/// `secs`: records per second.
fn ceiling(dir: &Path, record: usize, group: usize, secs: f64) -> f64 {
    let path = dir.join("ceiling.bin");
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("ceiling file");
    let buf = vec![0xa5u8; record * group.max(1)];
    let start = Instant::now();
    let mut groups = 0u64;
    let mut written = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        file.write_all(&buf).expect("write");
        file.sync_data().expect("sync");
        groups += 1;
        written += buf.len() as u64;
        if written > 256 << 20 {
            file.set_len(0).expect("truncate");
            file.sync_all().expect("sync");
            written = 0;
        }
    }
    let rate = (groups * group.max(1) as u64) as f64 / start.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(path);
    rate
}

struct Run {
    rate: f64,
    group: f64,
}

fn open(dir: &Path, fsync: Fsync) -> Queue {
    let _ = std::fs::remove_dir_all(dir);
    let storage = Arc::new(Directory::create(dir).expect("queue dir"));
    Queue::open(
        storage,
        Options {
            fsync,
            ..Options::default()
        },
    )
    .expect("opens")
    .0
}

/// A reader that pops and acknowledges until `stop`; counts records.
fn reader(
    q: Arc<Queue>,
    stop: Arc<AtomicBool>,
    rt: Arc<tokio::runtime::Runtime>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            out.clear();
            let got = q.pop(0, 1024, usize::MAX, &mut out).expect("reads");
            if got == 0 {
                rt.block_on(async {
                    let _ = tokio::time::timeout(Duration::from_millis(50), q.readable(0)).await;
                });
                continue;
            }
            q.ack(0);
            n += got as u64;
        }
        n
    })
}

/// Stops the reader, closes the queue, and reports `rate` with the group
/// size the queue reached.
fn finish(
    q: Arc<Queue>,
    rate: f64,
    stop: &AtomicBool,
    reading: std::thread::JoinHandle<u64>,
) -> Run {
    stop.store(true, Ordering::Relaxed);
    let _ = reading.join();
    let stats = q.stats();
    q.close().expect("closes");
    Run {
        rate,
        group: stats.committed as f64 / stats.commits.max(1) as f64,
    }
}

/// One producer appending runs of 256, at most 256 Ki records ahead of
/// what is durable.
fn producer(dir: &Path, size: usize, fsync: Fsync, secs: f64) -> Run {
    let rt = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("rt"),
    );
    let q = Arc::new(open(dir, fsync));
    let stop = Arc::new(AtomicBool::new(false));
    let reading = reader(Arc::clone(&q), Arc::clone(&stop), Arc::clone(&rt));
    let run: Vec<Message> = (0..256).map(|_| message(size)).collect();
    let start = Instant::now();
    let mut end = 0;
    while start.elapsed().as_secs_f64() < secs {
        end = q.append(run.iter()).expect("appends");
        let behind = end.saturating_sub(256 << 10);
        if !q.is_durable(behind) {
            rt.block_on(q.durable(behind)).expect("durable");
        }
    }
    rt.block_on(q.durable(end)).expect("durable");
    finish(
        q,
        end as f64 / start.elapsed().as_secs_f64(),
        &stop,
        reading,
    )
}

/// `publishers` tasks, each appending one message and waiting for it to be
/// durable before the next.
fn publishers(dir: &Path, size: usize, publishers: usize, secs: f64) -> Run {
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("rt"),
    );
    let q = Arc::new(open(dir, Fsync::Always));
    let stop = Arc::new(AtomicBool::new(false));
    let reading = reader(Arc::clone(&q), Arc::clone(&stop), Arc::clone(&rt));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..publishers {
            let (q, done) = (Arc::clone(&q), Arc::clone(&done));
            let m = message(size);
            tasks.push(tokio::spawn(async move {
                while start.elapsed().as_secs_f64() < secs {
                    let end = q.append([&m]).expect("appends");
                    q.durable(end).await.expect("durable");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.expect("publisher");
        }
    });
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    finish(q, rate, &stop, reading)
}

fn main() {
    // `cargo test --all-targets` runs this without `--bench`: a smoke run.
    let quick =
        std::env::args().any(|a| a == "--quick") || !std::env::args().any(|a| a == "--bench");
    let secs = if quick { 1.0 } else { 3.0 };
    let dir = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
        .join("store-bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    println!("files in {}", dir.display());
    println!(
        "{:<28} {:>6} {:>12} {:>10} {:>14} {:>7}",
        "mode", "size", "msgs/s", "per sync", "ceiling msg/s", "ratio"
    );
    for size in [64, 1024] {
        let record = encoded_len(&message(size));
        let rows = [
            (
                "batch 10ms, 1 producer",
                producer(
                    &dir.join("q"),
                    size,
                    Fsync::Batch(Duration::from_millis(10)),
                    secs,
                ),
            ),
            (
                "always, 64 publishers",
                publishers(&dir.join("q"), size, 64, secs),
            ),
            (
                "os, 1 producer",
                producer(&dir.join("q"), size, Fsync::Os, secs),
            ),
        ];
        for (mode, run) in rows {
            let group = run.group.round().max(1.0) as usize;
            let (ceiling, ratio) = if mode.starts_with("os") {
                (f64::NAN, f64::NAN)
            } else {
                let c = ceiling(&dir, record, group, secs);
                (c, run.rate / c)
            };
            println!(
                "{mode:<28} {size:>6} {:>12.0} {:>10.1} {:>14.0} {:>7.2}",
                run.rate, run.group, ceiling, ratio
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
