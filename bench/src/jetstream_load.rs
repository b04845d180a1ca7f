//! `jetstream-load`: the store benchmark's reference, a JetStream file stream
//! used as the buffer between a producer and a consumer.
//!
//! It does the job the router's durable route does in `bench/run.py --suite
//! store` (PUSH -> durable route -> PULL), with a local `nats-server -js` in
//! the router's place:
//!
//! - the producer publishes `--count` messages of `--size` bytes to a
//!   file-storage stream (work-queue retention: a message leaves the stream
//!   once acknowledged, as a durable route releases a record once its output
//!   took it), paced at `--rate` msgs/s (0 = as fast as the acks allow), with
//!   at most `--window` PubAcks outstanding: publish, and once the window is
//!   full await the oldest ack before the next publish;
//! - the consumer, a durable pull consumer with explicit acks, takes them out
//!   in batches (`--batch` messages per pull request) and acks each one.
//!
//! Every payload ends in its sequence number (8 bytes, little-endian, as the
//! libzmq load programs write it). The consumer checks loss, duplicates and
//! order by that number and by the stream sequence JetStream assigned, and the
//! program prints one JSON line in the shape `bench/run.py` reads from
//! `zsend` and `zrecv`: what was sent and at what rate, what arrived, lost,
//! duplicated or reordered, and the receive rate from the first message to
//! the last.
//!
//! Other modes, for the uplink benchmark (`bench/uplink.py`), which
//! compares the router's NATS outputs with a direct client:
//!
//! - `--mode publish`: the producer alone, into a fresh file stream (limits
//!   retention), with `--window` PubAcks outstanding (and a `Nats-Msg-Id`
//!   per message with `--msg-id`);
//! - `--mode core`: `--count` core NATS publishes to `--subject` (each
//!   with a `Nats-Msg-Id` header with `--msg-id`, as the router's `nats`
//!   output sends them), then a flush;
//! - `--mode count`: a core subscriber on `--subject` counting arrivals
//!   (printing `{"ready":true}` once subscribed), the rate from the first to
//!   the last by its own clock;
//! - `--mode watch`: (with `--create`, first makes a stream on `--subject`,
//!   `--memory` for memory storage, and prints `{"ready":true}`) waits
//!   until stream `--stream` holds `--count` messages.
//!
//! `publish` and `watch` report the stream's arrival rate by the server's
//! own clock, `(messages - 1) / (last_timestamp - first_timestamp)`, so a
//! direct publisher and the router feeding the same kind of stream are
//! measured alike.
//!
//! The server is not started here: `bench/run.py` starts `nats-server -js`
//! with an empty store directory and this program connects to it, retrying
//! until the connection succeeds or `--connect-timeout-s` passes (readiness
//! by a fact, not a sleep).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, consumer, stream};
use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use futures::StreamExt;

/// What the program does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// Producer -> work-queue stream -> pull consumer (the store benchmark).
    Buffer,
    /// The JetStream producer alone.
    Publish,
    /// Core NATS publishes, then a flush.
    Core,
    /// Wait until a stream holds `--count` messages.
    Watch,
    /// Count what a core subscriber receives.
    Count,
}

/// Drives a JetStream file stream as a buffer: producer -> stream -> pull consumer (benchmark tool).
#[derive(Clone, Debug, Parser)]
#[command(version)]
struct Args {
    /// What to do.
    #[arg(long, value_enum, default_value_t = Mode::Buffer)]
    mode: Mode,
    /// `--mode watch`: create the stream on `--subject` first.
    #[arg(long)]
    create: bool,
    /// `--mode watch --create`: memory storage instead of file.
    #[arg(long)]
    memory: bool,
    /// `--mode core` and `publish`: give each message a `Nats-Msg-Id`
    /// header (so a stream dedupes it, as it does the router's).
    #[arg(long)]
    msg_id: bool,
    /// The server, e.g. `nats://127.0.0.1:4222`.
    #[arg(long)]
    server: String,
    /// Messages to send.
    #[arg(long)]
    count: u64,
    /// Payload bytes per message (at least 8: the sequence number).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Paced publish rate in msgs/s; 0 publishes as fast as the ack window allows.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Most PubAcks outstanding at once.
    #[arg(long, default_value_t = 4096)]
    window: usize,
    /// Messages per pull request of the consumer.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// The consumer's `max_ack_pending` (messages delivered and not yet acked).
    #[arg(long, default_value_t = 4096)]
    max_ack_pending: i64,
    /// Stream name.
    #[arg(long, default_value = "BENCH")]
    stream: String,
    /// Subject the stream captures and the producer publishes to.
    #[arg(long, default_value = "bench.data")]
    subject: String,
    /// Seconds to keep trying to connect (the server may still be starting).
    #[arg(long, default_value_t = 30)]
    connect_timeout_s: u64,
    /// The consumer gives up after this long without a message.
    #[arg(long, default_value_t = 10_000)]
    idle_ms: u64,
}

/// What the producer reports.
struct Sent {
    count: u64,
    elapsed: Duration,
    last_stream_seq: u64,
}

/// What the consumer counts.
#[derive(Default)]
struct Received {
    received: u64,
    duplicates: u64,
    reorders: u64,
    /// Messages whose stream sequence did not follow the previous one's.
    stream_seq_gaps: u64,
    redelivered: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    timed_out: bool,
}

async fn connect(args: &Args) -> Result<async_nats::Client> {
    let deadline = Instant::now() + Duration::from_secs(args.connect_timeout_s);
    loop {
        match async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(args.server.as_str())
            .await
        {
            Ok(client) => return Ok(client),
            // Not up yet: try again shortly.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {}", args.server)),
        }
    }
}

/// A `Nats-Msg-Id` header as the router's outputs write it (32 hex digits).
fn msg_id(seq: u64) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("{:032x}", u128::from(seq)).as_str(),
    );
    headers
}

fn payload(size: usize, seq: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(size);
    buf.put_bytes(b'x', size - 8);
    buf.put_u64_le(seq);
    buf.freeze()
}

async fn produce(js: jetstream::Context, args: &Args) -> Result<Sent> {
    let subject = async_nats::Subject::from(args.subject.as_str());
    let mut window: VecDeque<jetstream::context::PublishAckFuture> =
        VecDeque::with_capacity(args.window);
    let mut last_stream_seq = 0;
    let start = Instant::now();
    for seq in 0..args.count {
        if args.rate > 0 {
            let due = start + Duration::from_secs_f64(seq as f64 / args.rate as f64);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        if window.len() == args.window {
            let ack = window
                .pop_front()
                .expect("the window is full, so not empty");
            last_stream_seq = ack.await.context("awaiting a PubAck")?.sequence;
        }
        let ack = if args.msg_id {
            js.publish_with_headers(subject.clone(), msg_id(seq), payload(args.size, seq))
                .await
        } else {
            js.publish(subject.clone(), payload(args.size, seq)).await
        }
        .context("publishing")?;
        window.push_back(ack);
    }
    for ack in window {
        last_stream_seq = ack.await.context("awaiting a PubAck")?.sequence;
    }
    Ok(Sent {
        count: args.count,
        elapsed: start.elapsed(),
        last_stream_seq,
    })
}

async fn consume(consumer: consumer::PullConsumer, args: &Args) -> Result<Received> {
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(args.batch)
        .messages()
        .await
        .context("starting the pull stream")?;
    let mut got = Received::default();
    let mut seen = vec![false; usize::try_from(args.count).context("count fits memory")?];
    let mut next_seq = 0u64;
    let mut last_stream_seq = 0u64;
    let idle = Duration::from_millis(args.idle_ms);
    while got.received < args.count {
        let msg = match tokio::time::timeout(idle, messages.next()).await {
            Ok(Some(msg)) => msg.map_err(|e| anyhow::anyhow!("pull stream: {e}"))?,
            Ok(None) => bail!("the pull stream ended"),
            Err(_) => {
                got.timed_out = true;
                break;
            }
        };
        let now = Instant::now();
        got.first.get_or_insert(now);
        got.last = Some(now);
        let info = msg
            .info()
            .map_err(|e| anyhow::anyhow!("message info: {e}"))?;
        if info.delivered > 1 {
            got.redelivered += 1;
        }
        if info.stream_sequence != last_stream_seq + 1 {
            got.stream_seq_gaps += 1;
        }
        last_stream_seq = info.stream_sequence;
        let p = &msg.payload;
        if p.len() < 8 {
            bail!("a {}-byte payload has no sequence number", p.len());
        }
        let seq = u64::from_le_bytes(p[p.len() - 8..].try_into().expect("8 bytes"));
        match seen.get_mut(usize::try_from(seq).unwrap_or(usize::MAX)) {
            Some(s) if *s => got.duplicates += 1,
            Some(s) => {
                *s = true;
                got.received += 1;
                if seq != next_seq {
                    got.reorders += 1;
                }
                next_seq = seq + 1;
            }
            None => bail!("sequence number {seq} was never sent"),
        }
        msg.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    }
    Ok(got)
}

async fn run(args: Args) -> Result<serde_json::Value> {
    if args.size < 8 {
        bail!("--size must be at least 8 (the sequence number)");
    }
    if args.window == 0 {
        bail!("--window must be at least 1");
    }
    let producer_client = connect(&args).await?;
    let consumer_client = connect(&args).await?;
    let js = jetstream::context::ContextBuilder::new()
        .max_ack_inflight(args.window)
        .backpressure_on_inflight(true)
        .timeout(Duration::from_secs(30))
        .build(producer_client);
    let stream = js
        .create_stream(stream::Config {
            name: args.stream.clone(),
            subjects: vec![args.subject.clone()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating stream {}: {e}", args.stream))?;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: args.max_ack_pending,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the consumer: {e}"))?;
    // The consumer reads through its own connection, as zrecv does through
    // its own socket; `consumer` is bound to the producer's context, so give
    // it a context on the second connection.
    let consumer_js = jetstream::new(consumer_client);
    let consumer: consumer::PullConsumer = consumer_js
        .get_stream(&args.stream)
        .await
        .map_err(|e| anyhow::anyhow!("looking up stream {}: {e}", args.stream))?
        .get_consumer(consumer.cached_info().name.as_str())
        .await
        .map_err(|e| anyhow::anyhow!("looking up the consumer: {e}"))?;

    let consume_args = args.clone();
    let reader = tokio::spawn(async move { consume(consumer, &consume_args).await });
    let sent = produce(js, &args).await?;
    let got = reader.await.context("the consumer task")??;

    let elapsed = match (got.first, got.last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let lost = sent.count - got.received;
    Ok(serde_json::json!({
        "sent": sent.count,
        "send_elapsed_s": sent.elapsed.as_secs_f64(),
        "achieved_rate": sent.count as f64 / sent.elapsed.as_secs_f64().max(1e-9),
        "last_stream_seq": sent.last_stream_seq,
        "received": got.received,
        "lost": lost,
        "duplicates": got.duplicates,
        "reorders": got.reorders,
        "stream_seq_gaps": got.stream_seq_gaps,
        "redelivered": got.redelivered,
        "timed_out": got.timed_out,
        "elapsed_s": elapsed,
        "msgs_per_s": if elapsed > 0.0 { got.received as f64 / elapsed } else { 0.0 },
    }))
}

/// The stream's count and arrival rate by the server's timestamps.
async fn stream_rate(stream: &mut stream::Stream) -> Result<serde_json::Value> {
    let state = stream
        .info()
        .await
        .map_err(|e| anyhow::anyhow!("stream info: {e}"))?
        .state
        .clone();
    let span = (state.last_timestamp - state.first_timestamp).as_seconds_f64();
    let rate = if span > 0.0 {
        state.messages.saturating_sub(1) as f64 / span
    } else {
        0.0
    };
    Ok(serde_json::json!({
        "messages": state.messages,
        "span_s": span,
        "msgs_per_s": rate,
    }))
}

/// `--mode publish`: the producer alone into a fresh limits stream.
async fn publish_only(args: &Args) -> Result<serde_json::Value> {
    let js = jetstream::context::ContextBuilder::new()
        .max_ack_inflight(args.window)
        .backpressure_on_inflight(true)
        .timeout(Duration::from_secs(30))
        .build(connect(args).await?);
    let mut stream = js
        .create_stream(stream::Config {
            name: args.stream.clone(),
            subjects: vec![args.subject.clone()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating stream {}: {e}", args.stream))?;
    let sent = produce(js, args).await?;
    let mut report = stream_rate(&mut stream).await?;
    report["sent"] = sent.count.into();
    report["send_elapsed_s"] = sent.elapsed.as_secs_f64().into();
    Ok(report)
}

/// `--mode core`: core publishes, then a flush.
async fn core_only(args: &Args) -> Result<serde_json::Value> {
    let client = connect(args).await?;
    let subject = async_nats::Subject::from(args.subject.as_str());
    let start = Instant::now();
    for seq in 0..args.count {
        if args.msg_id {
            client
                .publish_with_headers(subject.clone(), msg_id(seq), payload(args.size, seq))
                .await
                .context("publishing")?;
        } else {
            client
                .publish(subject.clone(), payload(args.size, seq))
                .await
                .context("publishing")?;
        }
    }
    client.flush().await.context("flushing")?;
    let elapsed = start.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "sent": args.count,
        "send_elapsed_s": elapsed,
        "achieved_rate": args.count as f64 / elapsed.max(1e-9),
    }))
}

/// `--mode count`: a core subscriber on `--subject` (printing
/// `{"ready":true}` once subscribed) counting what arrives until `--count`
/// messages or `--idle-ms` without one; the rate from the first arrival to
/// the last, by this process's clock.
async fn count(args: &Args) -> Result<serde_json::Value> {
    let client = connect(args).await?;
    let mut sub = client
        .subscribe(args.subject.clone())
        .await
        .map_err(|e| anyhow::anyhow!("subscribe {}: {e}", args.subject))?;
    client.flush().await.context("flushing the subscription")?;
    println!("{}", serde_json::json!({ "ready": true }));
    let idle = Duration::from_millis(args.idle_ms);
    let (mut got, mut first, mut last) = (0u64, None, None);
    while got < args.count {
        match tokio::time::timeout(idle, sub.next()).await {
            Ok(Some(_)) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = Some(now);
                got += 1;
            }
            _ => break,
        }
    }
    let span = match (first, last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let rate = if span > 0.0 {
        got.saturating_sub(1) as f64 / span
    } else {
        0.0
    };
    Ok(serde_json::json!({ "messages": got, "span_s": span, "msgs_per_s": rate }))
}

/// `--mode watch`: waits until the stream holds `--count` messages (or
/// `--idle-ms` passes with no new one).
async fn watch(args: &Args) -> Result<serde_json::Value> {
    let js = jetstream::new(connect(args).await?);
    let mut stream = if args.create {
        let stream = js
            .create_stream(stream::Config {
                name: args.stream.clone(),
                subjects: vec![args.subject.clone()],
                storage: if args.memory {
                    stream::StorageType::Memory
                } else {
                    stream::StorageType::File
                },
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("creating stream {}: {e}", args.stream))?;
        // The stream is there: the caller may start sending.
        println!("{}", serde_json::json!({ "ready": true }));
        stream
    } else {
        let deadline = Instant::now() + Duration::from_secs(args.connect_timeout_s);
        loop {
            match js.get_stream(&args.stream).await {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => bail!("stream {}: {e}", args.stream),
            }
        }
    };
    let idle = Duration::from_millis(args.idle_ms);
    let mut held = u64::MAX;
    let mut moved = Instant::now();
    loop {
        let now = stream
            .info()
            .await
            .map_err(|e| anyhow::anyhow!("stream info: {e}"))?
            .state
            .messages;
        if now >= args.count {
            break;
        }
        if now != held {
            held = now;
            moved = Instant::now();
        } else if moved.elapsed() > idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stream_rate(&mut stream).await
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let result = match args.mode {
        Mode::Buffer => run(args).await,
        Mode::Publish => publish_only(&args).await,
        Mode::Core => core_only(&args).await,
        Mode::Watch => watch(&args).await,
        Mode::Count => count(&args).await,
    };
    match result {
        Ok(report) => {
            println!("{report}");
            Ok(())
        }
        Err(e) => {
            println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            Err(e)
        }
    }
}
