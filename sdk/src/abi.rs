//! The numbers of the plugin ABI (`ABI.md`), shared by the SDK and the
//! router so both sides agree on one definition.

/// The ABI version this SDK speaks; `switchyard_abi_version` returns it.
pub const ABI_VERSION: i32 = 1;

/// `switchyard_kind` of a filter plugin.
pub const KIND_FILTER: i32 = 1;
/// `switchyard_kind` of a router plugin.
pub const KIND_ROUTER: i32 = 2;

/// Result status: success.
pub const STATUS_OK: u32 = 0;
/// Result status: the call failed; a code and a message follow.
pub const STATUS_ERROR: u32 = 1;

/// Error code: the plugin's own logic failed.
pub const ERROR_PLUGIN: u32 = 1;
/// Error code: the config could not be used.
pub const ERROR_CONFIG: u32 = 2;
/// Error code: the batch or config bytes could not be decoded.
pub const ERROR_INPUT: u32 = 3;
/// Error code: called out of order (a batch before init).
pub const ERROR_STATE: u32 = 4;

/// Filter verdict tag: keep the message as it is.
pub const FILTER_KEEP: u8 = 0;
/// Filter verdict tag: drop the message.
pub const FILTER_DROP: u8 = 1;
/// Filter verdict tag: keep it with some fields replaced.
pub const FILTER_REWRITE: u8 = 2;
/// Filter verdict tag: answer the request with a one-frame reply (bytes
/// follow); the message goes no further. An addition to version 1.
pub const FILTER_REPLY: u8 = 3;
/// Filter verdict tag: refuse the request with a reason (a string
/// follows); the message goes no further. An addition to version 1.
pub const FILTER_REJECT: u8 = 4;

/// The longest reason a reject verdict may give, in bytes of UTF-8.
pub const MAX_REJECT_REASON: u32 = 1024;

/// Rewrite field bit: a new topic follows.
pub const REWRITE_TOPIC: u8 = 1;
/// Rewrite field bit: a new payload follows.
pub const REWRITE_PAYLOAD: u8 = 2;
/// Rewrite field bit: a new attribute set follows.
pub const REWRITE_ATTRIBUTES: u8 = 4;

/// Router verdict tag: send to the named outputs.
pub const ROUTE_OUTPUTS: u8 = 0;
/// Router verdict tag: send to the route's dead-letter handling.
pub const ROUTE_DEAD_LETTER: u8 = 1;
/// Router verdict tag: send where the route would without a router plugin.
pub const ROUTE_DEFAULT: u8 = 2;

/// The most output names one router verdict may hold.
pub const MAX_ROUTE_OUTPUTS: u32 = 64;
/// The longest output name, in bytes.
pub const MAX_OUTPUT_NAME: u32 = 255;

/// `switchyard_log` level: the plugin is about to abort (a panic).
pub const LOG_PANIC: i32 = 0;
/// `switchyard_log` level: error.
pub const LOG_ERROR: i32 = 1;
/// `switchyard_log` level: warning.
pub const LOG_WARN: i32 = 2;
/// `switchyard_log` level: information.
pub const LOG_INFO: i32 = 3;
/// `switchyard_log` level: debugging detail.
pub const LOG_DEBUG: i32 = 4;

/// Batch flag bit: every message of the batch is a request (its sender
/// waits for a reply). An addition to version 1: the host never mixes
/// requests and other messages in one batch.
pub const BATCH_REQUESTS: u32 = 1;

/// Bytes of the batch header: count, flags, batch time.
pub const BATCH_HEADER_LEN: usize = 16;
/// Bytes of a message's fixed part: id, publish time, priority.
pub const MESSAGE_FIXED_LEN: usize = 16 + 8 + 1;

/// Packs a result buffer's address and length into the `i64` result word.
pub const fn pack_result(ptr: u32, len: u32) -> i64 {
    (((ptr as u64) << 32) | len as u64) as i64
}

/// Splits a result word into the buffer's address and length.
pub const fn unpack_result(word: i64) -> (u32, u32) {
    let w = word as u64;
    ((w >> 32) as u32, w as u32)
}
