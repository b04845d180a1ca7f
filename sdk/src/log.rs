//! Logging to the router's log through the one host import,
//! `env.switchyard_log`. Natively (in `cargo test`) lines go to stderr.
//!
//! The router keeps at most 16 lines per call, so log on rare events, not
//! per message.

use crate::abi;

/// How important a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Something worth knowing happened.
    Info,
    /// Detail for debugging.
    Debug,
}

impl Level {
    fn code(self) -> i32 {
        match self {
            Level::Error => abi::LOG_ERROR,
            Level::Warn => abi::LOG_WARN,
            Level::Info => abi::LOG_INFO,
            Level::Debug => abi::LOG_DEBUG,
        }
    }
}

/// Writes `text` to the router's log at `level`.
pub fn write(level: Level, text: &str) {
    raw(level.code(), text);
}

/// Writes an error line.
pub fn error(text: &str) {
    write(Level::Error, text);
}

/// Writes a warning line.
pub fn warn(text: &str) {
    write(Level::Warn, text);
}

/// Writes an information line.
pub fn info(text: &str) {
    write(Level::Info, text);
}

/// Writes a debugging line.
pub fn debug(text: &str) {
    write(Level::Debug, text);
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn switchyard_log(level: i32, ptr: *const u8, len: usize);
}

pub(crate) fn raw(level: i32, text: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the host reads `len` bytes at `ptr` from our memory, which
    // `text` keeps alive and unchanged for the duration of the call.
    unsafe {
        switchyard_log(level, text.as_ptr(), text.len());
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[plugin log {level}] {text}");
}
