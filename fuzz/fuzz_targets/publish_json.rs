//! Fuzz target: arbitrary bytes as the JSON body of `POST /v1/publish`,
//! with a batch limit of 4 so both sides of it are reached. The input is
//! the body itself, so a corpus of JSON files (or `-dict`) works as is.
//!
//! Checks: no panic; every refusal is a 4xx (never `INTERNAL`); a decoded
//! body holds 1 to 4 messages with valid topics, non-empty attribute names,
//! priorities within range, the given publisher and increasing ids; and
//! writing those messages back as a body (batch form, and single form for
//! one message) decodes to the same topics, payloads, attributes and
//! priorities.

#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use switchyard::fuzzing::publish_body;
use switchyard::message::{Message, Publisher, Topic};

const MAX_BATCH: usize = 4;

fn as_json(m: &Message) -> Value {
    json!({
        "topic": m.topic.as_str(),
        "payload_base64": base64::engine::general_purpose::STANDARD.encode(&m.payload),
        "attributes": &*m.attributes,
        "priority": m.priority,
    })
}

fn content(msgs: &[Message]) -> Vec<(&Topic, &[u8], Vec<(&str, &str)>, u8)> {
    msgs.iter()
        .map(|m| {
            (
                &m.topic,
                &m.payload[..],
                m.attributes
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
                m.priority,
            )
        })
        .collect()
}

fuzz_target!(|body: &[u8]| {
    let publisher = Publisher::new("api", "127.0.0.1:1");
    let msgs = match publish_body(body, &publisher, MAX_BATCH) {
        Ok(msgs) => msgs,
        Err(e) => {
            assert!(e.status().is_client_error(), "{}: {e}", e.code());
            return;
        }
    };
    assert!((1..=MAX_BATCH).contains(&msgs.len()));
    for m in &msgs {
        assert!(Topic::new(m.topic.as_bytes().clone()).is_ok());
        assert!(m.attributes.keys().all(|k| !k.is_empty()));
        assert!(m.priority <= Message::MAX_PRIORITY);
        assert_eq!(m.publisher, publisher);
        assert!(m.request.is_none());
    }
    assert!(msgs.windows(2).all(|w| w[0].id < w[1].id));

    let mut again = vec![json!({ "messages": msgs.iter().map(as_json).collect::<Vec<_>>() })];
    if let [one] = &msgs[..] {
        again.push(as_json(one));
    }
    for doc in again {
        let text = serde_json::to_vec(&doc).expect("a JSON value serialises");
        match publish_body(&text, &publisher, MAX_BATCH) {
            Ok(back) => assert_eq!(content(&back), content(&msgs), "round trip of {doc}"),
            Err(e) => panic!("refused its own re-encoding {doc}: {e}"),
        }
    }
});
