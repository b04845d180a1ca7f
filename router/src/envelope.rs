//! ZeroMQ envelopes: how a [`Message`] is laid out in the frames of one
//! ZeroMQ message. Chosen per input and per output.
//!
//! | envelope              | frames                                        |
//! |-----------------------|-----------------------------------------------|
//! | `topic-payload`       | `[topic][payload]` (the default)              |
//! | `topic-attrs-payload` | `[topic][attributes as a JSON object][payload]` |
//! | `single-frame`        | `[topic SP payload]`, split at the first space |
//!
//! The topic always leads the first frame, so ZeroMQ subscribers' prefix
//! filters work on every envelope. Decoding is strict: a message with the
//! wrong number of frames, a bad topic or attributes that are not a JSON
//! object of strings with non-empty names is rejected with a reason, never
//! guessed at.

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

pub use crate::message::Frames;
use crate::message::{Attributes, Message, Publisher, Topic, TopicError};

/// The layout of a message in ZeroMQ frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Envelope {
    /// Two frames: `[topic][payload]`.
    #[default]
    TopicPayload,
    /// Three frames: `[topic][attributes JSON object][payload]`.
    TopicAttrsPayload,
    /// One frame: `topic payload`, split at the first space.
    SingleFrame,
}

/// Why frames could not be read as a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The message has a number of frames this envelope does not allow.
    #[error("{envelope:?} envelope expects {expected} frame(s), got {got}")]
    FrameCount {
        /// The envelope in force.
        envelope: Envelope,
        /// Frames it expects.
        expected: usize,
        /// Frames that arrived.
        got: usize,
    },
    /// A single-frame message with no space between topic and payload.
    #[error("single-frame message has no space after the topic")]
    NoSeparator,
    /// The topic is invalid.
    #[error("invalid topic: {0}")]
    Topic(#[from] TopicError),
    /// The attributes frame is not a JSON object whose values are strings
    /// and whose names are not empty.
    #[error("attributes frame is not a JSON object of strings: {0}")]
    Attributes(String),
}

impl Error {
    /// A bounded label for `switchyard_input_rejected_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::FrameCount { .. } | Self::NoSeparator => "bad_envelope",
            Self::Topic(_) => "bad_topic",
            Self::Attributes(_) => "bad_attributes",
        }
    }
}

impl Envelope {
    /// How many frames a message has in this envelope.
    pub fn frames(self) -> usize {
        match self {
            Self::TopicPayload => 2,
            Self::TopicAttrsPayload => 3,
            Self::SingleFrame => 1,
        }
    }

    /// The name used in config files, e.g. `topic-payload`.
    pub fn name(self) -> &'static str {
        match self {
            Self::TopicPayload => "topic-payload",
            Self::TopicAttrsPayload => "topic-attrs-payload",
            Self::SingleFrame => "single-frame",
        }
    }

    /// Reads `frames` as a message accepted from `publisher`.
    ///
    /// # Errors
    /// An [`Error`] naming what is wrong with the frames.
    pub fn decode(self, frames: &[Bytes], publisher: &Publisher) -> Result<Message, Error> {
        let expect = |expected: usize| {
            if frames.len() == expected {
                Ok(())
            } else {
                Err(Error::FrameCount {
                    envelope: self,
                    expected,
                    got: frames.len(),
                })
            }
        };
        let (topic, payload, attributes) = match self {
            Self::TopicPayload => {
                expect(2)?;
                (frames[0].clone(), frames[1].clone(), Attributes::new())
            }
            Self::TopicAttrsPayload => {
                expect(3)?;
                let attributes = if frames[1].is_empty() {
                    Attributes::new()
                } else {
                    serde_json::from_slice::<Attributes>(&frames[1])
                        .map_err(|e| Error::Attributes(e.to_string()))?
                };
                // Refused as at the HTTP inputs: the ABI forbids empty names
                // in a plugin's rewrite, so a plugin passing such a set on
                // would have its verdict refused and count as failing.
                if attributes.contains_key("") {
                    return Err(Error::Attributes(
                        "attribute names must not be empty".into(),
                    ));
                }
                (frames[0].clone(), frames[2].clone(), attributes)
            }
            Self::SingleFrame => {
                expect(1)?;
                let frame = &frames[0];
                let space = frame
                    .iter()
                    .position(|&b| b == b' ')
                    .ok_or(Error::NoSeparator)?;
                (
                    frame.slice(..space),
                    frame.slice(space + 1..),
                    Attributes::new(),
                )
            }
        };
        let mut message = Message::new(Topic::new(topic)?, payload, publisher.clone());
        message.attributes = attributes;
        Ok(message)
    }

    /// Lays `message` out as frames. Topic and payload are shared, not
    /// copied, except in the single-frame envelope, which must join them.
    pub fn encode(self, message: &Message) -> Frames {
        let topic = message.topic.as_bytes().clone();
        match self {
            Self::TopicPayload => {
                SmallVec::from_buf_and_len([topic, message.payload.clone(), Bytes::new()], 2)
            }
            Self::TopicAttrsPayload => {
                let attrs = if message.attributes.is_empty() {
                    Bytes::from_static(b"{}")
                } else {
                    // A map of strings always serialises.
                    Bytes::from(
                        serde_json::to_vec(&message.attributes)
                            .expect("a string map serialises to JSON"),
                    )
                };
                SmallVec::from_buf([topic, attrs, message.payload.clone()])
            }
            Self::SingleFrame => {
                let mut joined = BytesMut::with_capacity(topic.len() + 1 + message.payload.len());
                joined.put_slice(&topic);
                joined.put_u8(b' ');
                joined.put_slice(&message.payload);
                let mut frames = Frames::new();
                frames.push(joined.freeze());
                frames
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher() -> Publisher {
        Publisher::new("in", "")
    }

    fn round_trip(envelope: Envelope) {
        let mut msg = Message::new(
            Topic::try_from("a.b").unwrap(),
            Bytes::from_static(b"pay load"),
            publisher(),
        );
        if envelope == Envelope::TopicAttrsPayload {
            msg.attributes.insert("site".into(), "42".into());
        }
        let frames = envelope.encode(&msg);
        let back = envelope.decode(&frames, &publisher()).unwrap();
        assert_eq!(back.topic, msg.topic);
        assert_eq!(back.payload, msg.payload);
        assert_eq!(back.attributes, msg.attributes);
    }

    #[test]
    fn every_envelope_round_trips() {
        round_trip(Envelope::TopicPayload);
        round_trip(Envelope::TopicAttrsPayload);
        round_trip(Envelope::SingleFrame);
    }

    #[test]
    fn malformed_envelopes_are_rejected_with_a_reason() {
        let p = publisher();
        let one = [Bytes::from_static(b"a.b")];
        let err = Envelope::TopicPayload.decode(&one, &p).unwrap_err();
        assert_eq!(err.reason(), "bad_envelope");
        let err = Envelope::SingleFrame.decode(&one, &p).unwrap_err();
        assert_eq!(err, Error::NoSeparator);
        let bad_topic = [Bytes::from_static(b"a..b"), Bytes::new()];
        assert_eq!(
            Envelope::TopicPayload
                .decode(&bad_topic, &p)
                .unwrap_err()
                .reason(),
            "bad_topic"
        );
        let bad_attrs = [
            Bytes::from_static(b"a"),
            Bytes::from_static(b"{\"n\":1}"),
            Bytes::new(),
        ];
        assert_eq!(
            Envelope::TopicAttrsPayload
                .decode(&bad_attrs, &p)
                .unwrap_err()
                .reason(),
            "bad_attributes"
        );
    }

    #[test]
    fn empty_attribute_names_are_rejected() {
        // Accepted before: the HTTP inputs refuse such names and a plugin
        // rewrite may not carry them, so passing them on failed the plugin.
        let frames = [
            Bytes::from_static(b"a"),
            Bytes::from_static(b"{\"\":\"x\",\"site\":\"42\"}"),
            Bytes::new(),
        ];
        let err = Envelope::TopicAttrsPayload
            .decode(&frames, &publisher())
            .unwrap_err();
        assert_eq!(err.reason(), "bad_attributes");
        assert!(err.to_string().contains("must not be empty"), "{err}");
    }
}
