//! Hello, plugin: drops messages whose `level` attribute is `debug`, keeps
//! the rest. Build: `cargo build --release --target wasm32-unknown-unknown`.

use switchyard_sdk::{Message, Verdict};

fn drop_debug(msg: &Message<'_>) -> Verdict {
    if msg.attr("level") == Some("debug") {
        Verdict::Drop
    } else {
        Verdict::Keep
    }
}

switchyard_sdk::filter!(fn drop_debug);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::OwnedMessage;
    use switchyard_sdk::testing::with_message;

    #[test]
    fn drops_debug_only() {
        let debug = OwnedMessage::new("app.log", "x").attr("level", "debug");
        let info = OwnedMessage::new("app.log", "x").attr("level", "info");
        assert_eq!(with_message(&debug, drop_debug), Verdict::Drop);
        assert_eq!(with_message(&info, drop_debug), Verdict::Keep);
    }
}
