//! The router's core: the [`Message`] model, topic patterns, the route table
//! and the bounded per-route queues.

mod message;

pub use message::{Attributes, Message, MessageId, Publisher, Topic, TopicError};
