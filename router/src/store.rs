//! Durable queues: what keeps a route's messages on disk across crashes,
//! power cuts and dead uplinks.
//!
//! Files: `record` (one record's framing: length, CRC-32C, the message),
//! `scan` (walking a segment's bytes, resynchronising after damage),
//! `log` ([`Log`]: the segments of one queue, their recovery, writes,
//! reads and release), `cursors` (the persisted delivery cursors),
//! `queue` ([`Queue`]: a log, its group-commit writer and its read cache),
//! `storage` (the files behind a small trait), `memory`
//! ([`MemoryStorage`]: files in memory, for tests and fuzzing, with a
//! simulated crash that loses every unsynced write), `dead`
//! ([`DeadLetters`]: the dead-letter store, a log of entries and
//! tombstones with its own retention).
//!
//! Why our own format and not a crate: the workload is a queue, append at
//! the tail, release from the head, a cursor per target, group commit
//! across producers; the embedded stores on crates.io are key-value trees
//! (sled, redb, fjall) whose write path costs a B-tree or LSM update per
//! message and whose compaction fights a FIFO. A log of CRC-framed records
//! is a few hundred lines and does exactly one fsync per group. See
//! `docs/ARCHITECTURE.md`.

mod cursors;
pub mod dead;
mod log;
mod memory;
mod queue;
mod record;
mod scan;
mod storage;

pub use cursors::Saved as SavedCursors;
pub use dead::{DeadLetter, DeadLetters, DeadReason};
pub use log::{Log, Options as LogOptions, Position, ReadReport, Recovery};
pub use memory::MemoryStorage;
pub use queue::{Error, Fsync, ONLY, Opened, Options, Queue, Released, Stats, SyncObserver};
pub use record::{Decoded, Frame, Framed, Record, decode, encode, encoded_len};
pub use scan::Damage;
pub use storage::{DirLock, Directory, Segment, Storage, lock_dir};

#[cfg(test)]
mod tests;
