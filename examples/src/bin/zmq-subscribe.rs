//! Watch Switchyard's `zmq-pub` output with the `zeromq` crate.
//!
//! Run the router (`./dev run`), then:
//!
//! ```text
//! cargo run -p switchyard-examples --bin zmq-subscribe -- tcp://127.0.0.1:6555 sensors.
//! ```
//!
//! Prints each message's topic and payload. The prefix is a ZeroMQ
//! subscription: the router sends only messages whose topic starts with it.

use anyhow::Context;
use zeromq::{Socket, SocketRecv};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| "tcp://127.0.0.1:6555".into());
    let prefix = args.next().unwrap_or_default();

    let mut subscriber = zeromq::SubSocket::new();
    subscriber.connect(&endpoint).await.context("connect")?;
    subscriber.subscribe(&prefix).await.context("subscribe")?;
    println!("subscribed to {prefix:?} at {endpoint}; Ctrl-C to stop");
    loop {
        let msg = subscriber.recv().await.context("recv")?;
        let frames = msg.into_vec();
        let topic = frames
            .first()
            .map(|f| String::from_utf8_lossy(f).into_owned());
        let payload = frames
            .last()
            .map(|f| String::from_utf8_lossy(f).into_owned());
        println!(
            "{} {}",
            topic.unwrap_or_default(),
            payload.unwrap_or_default()
        );
    }
}
