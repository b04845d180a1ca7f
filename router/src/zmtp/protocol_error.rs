//! What a peer can do wrong on the wire past the greeting: break the
//! framing rules, a limit, or a command's layout. Shared by the decoder
//! ([`super::frame`]) and the command parser ([`super::command`]), which
//! both stand on it.

/// A peer broke the framing rules or a limit; the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A frame header declares a body larger than `max_frame_size`.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Declared body size.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message's frames would add up to more than `max_message_size`.
    #[error("message of at least {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Size of the message including the frame being announced.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message has more than `max_frames` frames.
    #[error("message has more than {max} frames")]
    TooManyFrames {
        /// The configured limit.
        max: usize,
    },
    /// A command frame header declares a body larger than `max_command_size`.
    #[error("command of {size} bytes exceeds the limit of {max} bytes")]
    CommandTooLarge {
        /// Declared body size.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A command body could not be parsed.
    #[error("malformed {command} command: {detail}")]
    MalformedCommand {
        /// Which command (`"READY"`, `"HELLO"`, or `"command"` when the name
        /// itself is broken).
        command: &'static str,
        /// What is wrong.
        detail: &'static str,
    },
    /// A command frame arrived between the frames of a multipart message.
    #[error("command frame inside a multipart message")]
    CommandInsideMessage,
    /// A frame header is invalid (e.g. a command with the MORE flag).
    #[error("malformed frame: {detail}")]
    MalformedFrame {
        /// What is wrong.
        detail: &'static str,
    },
    /// A message frame arrived where only a command is allowed (handshake).
    #[error("message frame where a command was expected")]
    ExpectedCommand,
    /// CURVE: a traffic frame is not a well-formed MESSAGE, or its box does
    /// not open with the connection's keys.
    #[error("bad CURVE MESSAGE: {detail}")]
    CurveMessage {
        /// What is wrong.
        detail: &'static str,
    },
    /// CURVE: a MESSAGE whose short nonce is not larger than the last one
    /// (a replayed or reordered frame).
    #[error("CURVE MESSAGE nonce did not increase (replay)")]
    CurveReplay,
}

impl ProtocolError {
    /// A short, bounded label for metrics (`reason="frame_too_large"`).
    pub fn reason(&self) -> &'static str {
        match self {
            ProtocolError::FrameTooLarge { .. } => "frame_too_large",
            ProtocolError::MessageTooLarge { .. } => "message_too_large",
            ProtocolError::TooManyFrames { .. } => "too_many_frames",
            ProtocolError::CommandTooLarge { .. } => "command_too_large",
            ProtocolError::MalformedCommand { .. } => "malformed_command",
            ProtocolError::CommandInsideMessage => "command_inside_message",
            ProtocolError::MalformedFrame { .. } => "malformed_frame",
            ProtocolError::ExpectedCommand => "expected_command",
            ProtocolError::CurveMessage { .. } => "curve_bad_message",
            ProtocolError::CurveReplay => "curve_replay",
        }
    }
}
