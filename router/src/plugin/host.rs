//! What the host gives each instance: its store data (the memory cap, the
//! log budget, a panic message), and the one import, `env.switchyard_log`.

use std::sync::Arc;

use prometheus::IntCounter;
use switchyard_sdk::abi;
use wasmtime::{Caller, Extern, Linker, ResourceLimiter};

/// Table elements allowed per instance (Rust plugins use a few hundred).
pub(crate) const MAX_TABLE_ELEMENTS: usize = 10_000;
/// Log lines kept per call; the rest are counted and dropped.
pub(crate) const MAX_LOG_LINES_PER_CALL: u32 = 16;
/// Bytes kept of one log line.
pub(crate) const MAX_LOG_LINE: usize = 1024;

/// The data of one instance's store.
pub(crate) struct HostState {
    pub(crate) plugin: Arc<str>,
    /// The memory cap in bytes.
    memory_cap: usize,
    /// Set when the instance tried to grow past its cap.
    pub(crate) memory_exceeded: bool,
    /// The text of a panic the guest reported before aborting.
    pub(crate) panic: Option<String>,
    /// Log lines left in this call.
    log_budget: u32,
    logs_dropped: IntCounter,
}

impl HostState {
    pub(crate) fn new(plugin: Arc<str>, memory_cap: usize, logs_dropped: IntCounter) -> Self {
        Self {
            plugin,
            memory_cap,
            memory_exceeded: false,
            panic: None,
            log_budget: MAX_LOG_LINES_PER_CALL,
            logs_dropped,
        }
    }

    /// Resets the per-call state before a guest call.
    pub(crate) fn start_call(&mut self) {
        self.log_budget = MAX_LOG_LINES_PER_CALL;
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_exceeded = true;
            // An error (not `Ok(false)`) traps at once, so a grow bomb is
            // reported as `memory` instead of whatever the guest does next.
            return Err(wasmtime::format_err!(
                "memory cap of {} bytes reached (had {current}, asked for {desired})",
                self.memory_cap
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// The linker with the plugin's only import.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap("env", "switchyard_log", log)?;
    Ok(linker)
}

/// `env.switchyard_log(level, ptr, len)`: never traps; bad arguments are
/// counted and ignored.
fn log(mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32) {
    let text = match caller.get_export("memory") {
        Some(Extern::Memory(mem)) => {
            let data = mem.data(&caller);
            let start = ptr as u32 as usize;
            let end = start.saturating_add(len as u32 as usize);
            data.get(start..end)
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(|s| {
                    let mut cut = s.len().min(MAX_LOG_LINE);
                    while !s.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    s[..cut].to_owned()
                })
        }
        _ => None,
    };
    let state = caller.data_mut();
    let Some(text) = text else {
        state.logs_dropped.inc();
        return;
    };
    if level == abi::LOG_PANIC {
        // Always kept: it explains the trap that follows.
        state.panic = Some(text);
        return;
    }
    if state.log_budget == 0 {
        state.logs_dropped.inc();
        return;
    }
    state.log_budget -= 1;
    let plugin = &*state.plugin;
    match level {
        abi::LOG_ERROR => tracing::error!(plugin, "{text}"),
        abi::LOG_WARN => tracing::warn!(plugin, "{text}"),
        abi::LOG_INFO => tracing::info!(plugin, "{text}"),
        abi::LOG_DEBUG => tracing::debug!(plugin, "{text}"),
        _ => state.logs_dropped.inc(),
    }
}
