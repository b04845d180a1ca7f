//! Publish messages to Switchyard's `zmq-sub` input with the `zeromq` crate.
//!
//! Run the router (`./dev run`), then:
//!
//! ```text
//! cargo run -p switchyard-examples --bin zmq-publish -- tcp://127.0.0.1:5555 sensors.line1.temp 10
//! ```
//!
//! Each message is two frames, `[topic][payload]`: the default envelope.

use anyhow::Context;
use zeromq::{Socket, SocketSend, ZmqMessage};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| "tcp://127.0.0.1:5555".into());
    let topic = args.next().unwrap_or_else(|| "sensors.line1.temp".into());
    let count: u64 = args.next().map_or(Ok(10), |n| n.parse()).context("count")?;

    let mut publisher = zeromq::PubSocket::new();
    publisher.connect(&endpoint).await.context("connect")?;
    // PUB drops what it sends before the connection is up; give the
    // handshake a moment, as any PUB client must.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for i in 0..count {
        let payload = format!("{{\"seq\":{i},\"celsius\":{}}}", 20 + i % 5);
        let mut msg = ZmqMessage::from(topic.clone());
        msg.push_back(bytes::Bytes::from(payload));
        publisher.send(msg).await.context("send")?;
    }
    println!("published {count} messages on {topic} to {endpoint}");
    Ok(())
}
