//! Fuzz target: arbitrary frames into `Envelope::decode`, for each envelope.
//!
//! The first byte picks the envelope and the number of frames (0 to 3, so
//! wrong counts are reached too); the next bytes are the lengths of all
//! frames but the last, which takes the rest.
//!
//! Checks: no panic; a frame-count error exactly when the count is wrong;
//! a decoded message has a valid topic, non-empty attribute names, the
//! given publisher and the defaults; re-encoding it decodes to the same topic, payload and
//! attributes under every envelope (which also checks that a topic never
//! holds the space the single-frame envelope splits at); and for the
//! envelopes without an attributes frame, re-encoding gives back exactly
//! the frames that came in.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchyard::envelope::{Envelope, Error};
use switchyard::message::{Message, Publisher, Topic};

const ALL: [Envelope; 3] = [
    Envelope::TopicPayload,
    Envelope::TopicAttrsPayload,
    Envelope::SingleFrame,
];

fn frames(count: usize, data: &[u8]) -> Vec<Bytes> {
    let (lens, mut rest) = data.split_at(count.saturating_sub(1).min(data.len()));
    let mut frames = Vec::with_capacity(count);
    for &len in lens {
        let (frame, tail) = rest.split_at(usize::from(len).min(rest.len()));
        frames.push(Bytes::copy_from_slice(frame));
        rest = tail;
    }
    if count > 0 {
        frames.push(Bytes::copy_from_slice(rest));
    }
    frames
}

fn same_content(a: &Message, b: &Message) -> bool {
    a.topic == b.topic && a.payload == b.payload && a.attributes == b.attributes
}

fuzz_target!(|data: &[u8]| {
    let [sel, rest @ ..] = data else {
        return;
    };
    let envelope = ALL[usize::from(sel % 3)];
    let frames = frames(usize::from(sel >> 2 & 3), rest);
    let publisher = Publisher::new("fuzz", "peer");

    let message = match envelope.decode(&frames, &publisher) {
        Ok(message) => message,
        Err(e) => {
            assert_eq!(
                matches!(e, Error::FrameCount { .. }),
                frames.len() != envelope.frames(),
                "{e}"
            );
            assert!(matches!(
                e.reason(),
                "bad_envelope" | "bad_topic" | "bad_attributes"
            ));
            return;
        }
    };
    assert_eq!(frames.len(), envelope.frames());
    assert!(Topic::new(message.topic.as_bytes().clone()).is_ok());
    assert_eq!(message.publisher, publisher);
    assert_eq!(message.priority, Message::DEFAULT_PRIORITY);
    assert!(message.request.is_none());
    // As at every other input, and as the ABI demands of a rewrite: a
    // plugin that passes the attributes on must not have its verdict
    // refused for a name the router let in.
    assert!(
        message.attributes.keys().all(|k| !k.is_empty()),
        "an empty attribute name got in: {message:?}"
    );

    let again = envelope.encode(&message);
    match envelope {
        Envelope::TopicPayload | Envelope::SingleFrame => {
            assert_eq!(&again[..], &frames[..], "re-encoding changed the frames");
        }
        Envelope::TopicAttrsPayload => {
            assert_eq!(again[0], frames[0]);
            assert_eq!(again[2], frames[2]);
        }
    }
    for other in ALL {
        let wire = other.encode(&message);
        assert_eq!(wire.len(), other.frames());
        match other.decode(&wire, &publisher) {
            Ok(back) => assert!(
                same_content(&back, &message),
                "{other:?} round trip: {back:?} != {message:?}"
            ),
            Err(e) => panic!("{other:?} refuses its own encoding of {message:?}: {e}"),
        }
    }
});
