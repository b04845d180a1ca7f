//! A process's memory, read from `/proc/PID/status` as another process
//! would: resident set now (VmRSS) and its peak (VmHWM), which can be reset
//! so a test measures the peak of one phase.

use anyhow::{Context, Result};

/// Resident memory of a process, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// VmRSS: resident set size now.
    pub rss: u64,
    /// VmHWM: the peak resident set size since start or the last reset.
    pub peak: u64,
}

/// Bytes in one mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// Reads VmRSS and VmHWM of `pid`.
///
/// # Errors
/// When the process is gone or the file has no such lines.
pub fn read(pid: u32) -> Result<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .context("no value")?
            .parse()
            .context("not a number")?;
        Ok(kib * 1024)
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

/// Resets the peak (VmHWM) of `pid` to its current resident size
/// (`echo 5 > /proc/PID/clear_refs`), so the next [`read`] reports the peak
/// since now.
///
/// # Errors
/// When the kernel refuses (another user's process).
pub fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of {pid}"))
}
