//! Hard limits the ZMTP decoder enforces on untrusted peers.
//!
//! Every limit is checked against the frame *header*, before a single byte of
//! the body is buffered or allocated, so a peer that declares a 2^40-byte frame
//! is refused after reading at most 9 bytes.

/// Size and count limits applied to everything a peer sends.
///
/// The defaults are safe for an edge router: a peer can make the connection
/// hold at most about `max_message_size` bytes of its data at any time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest body of one frame, in bytes. Default 1 MiB.
    pub max_frame_size: usize,
    /// Largest sum of the frame bodies of one message, in bytes. Default 1 MiB.
    pub max_message_size: usize,
    /// Most frames in one message. Default 64.
    pub max_frames: usize,
    /// Largest body of one command frame (READY, SUBSCRIBE, PING, ...), in
    /// bytes. Default 64 KiB.
    pub max_command_size: usize,
}

impl Limits {
    /// Default for [`Limits::max_frame_size`]: 1 MiB.
    pub const DEFAULT_MAX_FRAME_SIZE: usize = 1 << 20;
    /// Default for [`Limits::max_message_size`]: 1 MiB.
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
    /// Default for [`Limits::max_frames`]: 64.
    pub const DEFAULT_MAX_FRAMES: usize = 64;
    /// Default for [`Limits::max_command_size`]: 64 KiB.
    pub const DEFAULT_MAX_COMMAND_SIZE: usize = 64 << 10;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_size: Self::DEFAULT_MAX_FRAME_SIZE,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            max_frames: Self::DEFAULT_MAX_FRAMES,
            max_command_size: Self::DEFAULT_MAX_COMMAND_SIZE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_values() {
        let l = Limits::default();
        assert_eq!(l.max_frame_size, 1024 * 1024);
        assert_eq!(l.max_message_size, 1024 * 1024);
        assert_eq!(l.max_frames, 64);
        assert_eq!(l.max_command_size, 64 * 1024);
    }
}
