//! The persisted cursors of a log: for each target output, the sequence
//! number of the first record it has not yet accepted, and the head (the
//! first record not yet released).
//!
//! One small file, replaced atomically (write, sync, rename, sync the
//! directory), so after a crash it holds one whole version: the newest or
//! an older one. An older one only means records are sent again
//! (at-least-once); a missing or damaged one means the same from the start
//! of the log.
//!
//! ```text
//! magic b"SYC1", head u64, count u32, each: name (u16 length + UTF-8),
//! seq u64; then a CRC-32C of everything before it (u32)
//! ```

use std::collections::BTreeMap;

const MAGIC: [u8; 4] = *b"SYC1";
/// The file's name in the queue's directory.
pub(crate) const FILE: &str = "cursors";

/// The cursors as saved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    /// The first sequence number not yet released.
    pub head: u64,
    /// Per target output: the first sequence number it has not accepted.
    pub targets: BTreeMap<String, u64>,
}

impl Saved {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.targets.len() * 32);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.head.to_le_bytes());
        out.extend_from_slice(&(self.targets.len() as u32).to_le_bytes());
        for (name, seq) in &self.targets {
            let n = name.len().min(usize::from(u16::MAX));
            out.extend_from_slice(&(n as u16).to_le_bytes());
            out.extend_from_slice(&name.as_bytes()[..n]);
            out.extend_from_slice(&seq.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads the file's bytes; `None` when they are damaged.
    pub fn decode(data: &[u8]) -> Option<Self> {
        let (body, crc) = data.split_at_checked(data.len().checked_sub(4)?)?;
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let rest = body.strip_prefix(&MAGIC)?;
        let (head, mut rest) = rest.split_at_checked(8)?;
        let head = u64::from_le_bytes(head.try_into().ok()?);
        let (count, r) = rest.split_at_checked(4)?;
        rest = r;
        let count = u32::from_le_bytes(count.try_into().ok()?);
        let mut targets = BTreeMap::new();
        for _ in 0..count {
            let (n, r) = rest.split_at_checked(2)?;
            let n = usize::from(u16::from_le_bytes(n.try_into().ok()?));
            let (name, r) = r.split_at_checked(n)?;
            let (seq, r) = r.split_at_checked(8)?;
            rest = r;
            targets.insert(
                std::str::from_utf8(name).ok()?.to_owned(),
                u64::from_le_bytes(seq.try_into().ok()?),
            );
        }
        rest.is_empty().then_some(Self { head, targets })
    }
}
