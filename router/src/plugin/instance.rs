//! One plugin instance per worker: a wasmtime store from the plugin's
//! `InstancePre`, the guest region batches are written into, and the calls.
//! Any failure throws the store away; the next call builds a fresh one.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use switchyard_sdk::abi;
use wasmtime::{Instance, InstancePre, Memory, Store, Trap, TypedFunc};

use super::Kind;
use super::breaker::Admit;
use super::engine::Engine;
use super::error::{PluginError, TrapReason};
use super::handle::{Plugin, PluginInner};
use super::host::HostState;
use super::metrics::PluginMetrics;
use super::wire::{self, FilterVerdict, NameCache, RouteVerdict, Status, VerdictError};
use crate::message::Message;

/// A plugin instance for one worker. Not shared between threads at once;
/// `Send`, so it can move with its worker task.
pub struct PluginInstance {
    plugin: Plugin,
    live: Option<Live>,
    names: NameCache,
}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInstance")
            .field("plugin", &self.plugin.name())
            .field("live", &self.live.is_some())
            .finish()
    }
}

/// An export that takes a region (address, length) and returns a result
/// word: `switchyard_init`, `switchyard_batch`.
type RegionCall = TypedFunc<(i32, i32), i64>;

/// A running instance: its store and the exports the host calls.
struct Live {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    batch: RegionCall,
    /// The region `switchyard_alloc` last returned: address and size.
    region: (usize, usize),
}

fn new_store(
    engine: &Engine,
    name: &Arc<str>,
    memory_cap: u64,
    metrics: &PluginMetrics,
) -> Store<HostState> {
    let cap = usize::try_from(memory_cap).unwrap_or(usize::MAX);
    let mut store = Store::new(
        &engine.inner.wasmtime,
        HostState::new(name.clone(), cap, metrics.logs_dropped.clone()),
    );
    store.limiter(|s| s);
    store.epoch_deadline_trap();
    store
}

fn instantiate(
    store: &mut Store<HostState>,
    pre: &InstancePre<HostState>,
    deadline_ticks: u64,
) -> Result<Instance, wasmtime::Error> {
    // A start function runs during instantiation: it gets a deadline too.
    store.set_epoch_deadline(deadline_ticks);
    pre.instantiate(&mut *store)
}

/// Names the failure of a guest call, consuming the store's panic note.
fn classify(plugin: &Arc<str>, state: &mut HostState, err: &wasmtime::Error) -> PluginError {
    let trap = err.downcast_ref::<Trap>().copied();
    let (reason, detail) = if state.memory_exceeded {
        (TrapReason::Memory, err.root_cause().to_string())
    } else if let Some(text) = state.panic.take() {
        (TrapReason::Panic, text)
    } else {
        let reason = match trap {
            Some(Trap::Interrupt) => TrapReason::Timeout,
            Some(Trap::StackOverflow) => TrapReason::StackOverflow,
            Some(Trap::UnreachableCodeReached) => TrapReason::Unreachable,
            _ => TrapReason::Trap,
        };
        let detail = match trap {
            Some(Trap::Interrupt) => "the call ran past its deadline".to_owned(),
            Some(t) => t.to_string(),
            None => err.root_cause().to_string(),
        };
        (reason, detail)
    };
    PluginError::Trap {
        plugin: plugin.clone(),
        reason,
        detail,
    }
}

fn abi_error(plugin: &Arc<str>, detail: String) -> PluginError {
    PluginError::Abi {
        plugin: plugin.clone(),
        reason: TrapReason::AbiError,
        detail,
    }
}

fn bad_verdict(plugin: &Arc<str>, e: VerdictError) -> PluginError {
    PluginError::Abi {
        plugin: plugin.clone(),
        reason: TrapReason::BadVerdict,
        detail: e.to_string(),
    }
}

/// Why an instance did not start: what was running (`instantiation` or
/// the export called) and how it failed.
pub(crate) struct StartError {
    pub(crate) call: &'static str,
    pub(crate) error: PluginError,
}

impl Live {
    /// Instantiates and runs `switchyard_init` with the plugin's config.
    fn start(p: &PluginInner) -> Result<Live, StartError> {
        let at = |call| move |error| StartError { call, error };
        let (mut live, init) = Live::instantiate(p).map_err(at("instantiation"))?;
        // One deadline for the config's region and init together.
        live.store.set_epoch_deadline(p.deadline_ticks);
        let config = p.config_json.as_bytes();
        let ptr = live
            .write(&p.name, config.len(), |dst| dst.copy_from_slice(config))
            .map_err(at("switchyard_alloc"))?;
        live.init(p, init, ptr, config.len())
            .map_err(at("switchyard_init"))?;
        Ok(live)
    }

    /// A fresh instance, and its `switchyard_init`.
    fn instantiate(p: &PluginInner) -> Result<(Live, RegionCall), PluginError> {
        let mut store = new_store(&p.engine, &p.name, p.limits.memory_bytes, &p.metrics);
        let instance = instantiate(&mut store, &p.pre, p.deadline_ticks)
            .map_err(|e| classify(&p.name, store.data_mut(), &e))?;
        let missing = |what: &str| abi_error(&p.name, format!("export {what} vanished"));
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| missing("memory"))?;
        let alloc = instance
            .get_typed_func(&mut store, "switchyard_alloc")
            .map_err(|_| missing("switchyard_alloc"))?;
        let init = instance
            .get_typed_func(&mut store, "switchyard_init")
            .map_err(|_| missing("switchyard_init"))?;
        let batch = instance
            .get_typed_func(&mut store, "switchyard_batch")
            .map_err(|_| missing("switchyard_batch"))?;
        let live = Live {
            store,
            memory,
            alloc,
            batch,
            region: (0, 0),
        };
        Ok((live, init))
    }

    /// Calls `init` on the config written at `ptr` (`len` bytes).
    fn init(
        &mut self,
        p: &PluginInner,
        init: RegionCall,
        ptr: usize,
        len: usize,
    ) -> Result<(), PluginError> {
        let word = init
            .call(&mut self.store, (ptr as i32, len as i32))
            .map_err(|e| classify(&p.name, self.store.data_mut(), &e))?;
        let buf = self.result(&p.name, word)?;
        match wire::status(buf).map_err(|e| bad_verdict(&p.name, e))? {
            Status::Ok(_) => Ok(()),
            Status::Error { code, message } => Err(PluginError::Guest {
                plugin: p.name.clone(),
                code,
                message,
            }),
        }
    }

    /// Writes `len` bytes with `fill` into the host region (asking the
    /// guest for a bigger one when needed); returns its address.
    fn write(
        &mut self,
        plugin: &Arc<str>,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<usize, PluginError> {
        if len > i32::MAX as usize {
            return Err(abi_error(plugin, format!("a batch of {len} bytes")));
        }
        if len > self.region.1 || self.region.0 == 0 {
            // Round up so slowly growing batches do not ask every time.
            let want = len.next_power_of_two().clamp(4096, i32::MAX as usize);
            let ptr = self
                .alloc
                .call(&mut self.store, want as i32)
                .map_err(|e| classify(plugin, self.store.data_mut(), &e))?;
            if ptr == 0 {
                return Err(abi_error(
                    plugin,
                    format!("switchyard_alloc({want}) returned 0"),
                ));
            }
            self.region = (ptr as u32 as usize, want);
        }
        let (ptr, cap) = self.region;
        let data = self.memory.data_mut(&mut self.store);
        let size = data.len();
        let dst = ptr
            .checked_add(cap)
            .filter(|end| *end <= size)
            .and_then(|_| data.get_mut(ptr..ptr + len))
            .ok_or_else(|| {
                abi_error(
                    plugin,
                    format!("switchyard_alloc gave {ptr:#x}+{cap}, outside memory of {size} bytes"),
                )
            })?;
        fill(dst);
        Ok(ptr)
    }

    /// The result buffer a result word names, checked against memory.
    fn result(&self, plugin: &Arc<str>, word: i64) -> Result<&[u8], PluginError> {
        let (ptr, len) = abi::unpack_result(word);
        let data = self.memory.data(&self.store);
        let (start, len) = (ptr as usize, len as usize);
        start
            .checked_add(len)
            .and_then(|end| data.get(start..end))
            .ok_or_else(|| {
                bad_verdict(
                    plugin,
                    VerdictError::Invalid {
                        index: 0,
                        why: format!(
                            "result buffer {ptr:#x}+{len} is outside memory of {} bytes",
                            data.len()
                        ),
                    },
                )
            })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// Here rather than beside `Plugin`, so the handle need not know about
// instances: an instance is made from a plugin, not the other way round.
impl Plugin {
    /// A new instance for one worker; it starts on first use (or
    /// [`PluginInstance::start`]).
    pub fn instance(&self) -> PluginInstance {
        PluginInstance {
            plugin: self.clone(),
            live: None,
            names: NameCache::default(),
        }
    }
}

impl PluginInstance {
    /// The plugin this is an instance of.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Builds the instance now rather than on the first batch.
    ///
    /// # Errors
    /// [`PluginError::InitFailed`] (counted as `init_failed`).
    pub fn start(&mut self) -> Result<(), PluginError> {
        if self.live.is_none() {
            let inner = &self.plugin.inner;
            match Live::start(inner) {
                Ok(live) => self.live = Some(live),
                Err(e) => {
                    inner.metrics.trap(TrapReason::InitFailed);
                    return Err(PluginError::InitFailed {
                        plugin: inner.name.clone(),
                        detail: e.error.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// True when a live instance exists (false before the first call and
    /// after a failure threw it away).
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Runs a filter over `msgs`; on success `out` holds one verdict per
    /// message, in order. Uses the wall clock as the batch time.
    ///
    /// # Errors
    /// A [`PluginError`]: the whole slice failed (apply the route's
    /// `on_error`), or the circuit is open (apply its `mode`). `out` is
    /// then empty.
    pub fn run_filter(
        &mut self,
        msgs: &[Message],
        out: &mut Vec<FilterVerdict>,
    ) -> Result<(), PluginError> {
        self.run_filter_at(now_ms(), msgs, out)
    }

    /// [`PluginInstance::run_filter`] with an explicit batch time (Unix ms).
    ///
    /// # Errors
    /// As `run_filter`.
    pub fn run_filter_at(
        &mut self,
        time_ms: u64,
        msgs: &[Message],
        out: &mut Vec<FilterVerdict>,
    ) -> Result<(), PluginError> {
        out.clear();
        self.check_kind(Kind::Filter)?;
        let r = self.run(time_ms, msgs, |_, r, n| wire::filter_verdicts(r, n, out));
        if r.is_err() {
            out.clear();
        }
        r
    }

    /// Runs a router over `msgs`; on success `out` holds one verdict per
    /// message, in order.
    ///
    /// # Errors
    /// As [`PluginInstance::run_filter`].
    pub fn run_router(
        &mut self,
        msgs: &[Message],
        out: &mut Vec<RouteVerdict>,
    ) -> Result<(), PluginError> {
        self.run_router_at(now_ms(), msgs, out)
    }

    /// [`PluginInstance::run_router`] with an explicit batch time (Unix ms).
    ///
    /// # Errors
    /// As `run_filter`.
    pub fn run_router_at(
        &mut self,
        time_ms: u64,
        msgs: &[Message],
        out: &mut Vec<RouteVerdict>,
    ) -> Result<(), PluginError> {
        out.clear();
        self.check_kind(Kind::Router)?;
        let r = self.run(time_ms, msgs, |names, r, n| {
            wire::route_verdicts(r, n, out, names)
        });
        if r.is_err() {
            out.clear();
        }
        r
    }

    fn check_kind(&self, kind: Kind) -> Result<(), PluginError> {
        if self.plugin.kind() == kind {
            Ok(())
        } else {
            Err(PluginError::WrongKind {
                plugin: self.plugin.inner.name.clone(),
                kind: self.plugin.kind(),
            })
        }
    }

    /// Splits `msgs` into calls within the batch limits and runs them.
    fn run(
        &mut self,
        time_ms: u64,
        msgs: &[Message],
        mut decode: impl FnMut(&mut NameCache, wire::Reader<'_>, usize) -> Result<(), VerdictError>,
    ) -> Result<(), PluginError> {
        if msgs.is_empty() {
            return Ok(());
        }
        let inner = self.plugin.inner.clone();
        if inner.breaker.admit() == Admit::Refuse {
            return Err(PluginError::CircuitOpen {
                plugin: inner.name.clone(),
                mode: inner.limits.on_failure.mode,
            });
        }
        let limits = &inner.limits;
        let mut start = 0;
        while start < msgs.len() {
            // Take messages while both caps allow; always at least one.
            // Requests and other messages go in separate calls: the batch
            // header's flag covers all of a batch (`ABI.md` §5.1).
            let mut end = start;
            let mut bytes = abi::BATCH_HEADER_LEN;
            while end < msgs.len() && end - start < limits.max_batch_messages {
                if end > start && !wire::same_kind(&msgs[start], &msgs[end]) {
                    break;
                }
                let len = wire::encoded_len(&msgs[end]);
                if end > start && bytes + len > limits.max_batch_bytes {
                    break;
                }
                bytes += len;
                end += 1;
            }
            let chunk = &msgs[start..end];
            if let Err(e) = self.call(&inner, time_ms, chunk, bytes, &mut decode) {
                self.live = None;
                if let Some(reason) = e.reason() {
                    inner.metrics.trap(reason);
                }
                if inner.breaker.failure() {
                    inner.metrics.circuit_open.set(1);
                }
                tracing::debug!(plugin = &*inner.name, "plugin call failed: {e}");
                return Err(e);
            }
            start = end;
        }
        if inner.breaker.success() {
            inner.metrics.circuit_open.set(0);
            tracing::info!(plugin = &*inner.name, "plugin recovered; circuit closed");
        }
        Ok(())
    }

    /// One guest call for `chunk` (whose batch is `bytes` long).
    fn call(
        &mut self,
        inner: &PluginInner,
        time_ms: u64,
        chunk: &[Message],
        bytes: usize,
        decode: &mut impl FnMut(&mut NameCache, wire::Reader<'_>, usize) -> Result<(), VerdictError>,
    ) -> Result<(), PluginError> {
        if self.live.is_none() {
            self.live = Some(Live::start(inner).map_err(|e| PluginError::InitFailed {
                plugin: inner.name.clone(),
                detail: e.error.to_string(),
            })?);
        }
        let live = self.live.as_mut().expect("started above");
        let t0 = Instant::now();
        inner.metrics.calls.inc();
        live.store.data_mut().start_call();
        live.store.set_epoch_deadline(inner.deadline_ticks);
        let name = &inner.name;
        let ptr = live.write(name, bytes, |dst| wire::write_batch(dst, chunk, time_ms))?;
        let word = live
            .batch
            .call(&mut live.store, (ptr as i32, bytes as i32))
            .map_err(|e| classify(name, live.store.data_mut(), &e));
        let result = word.and_then(|word| {
            let buf = live.result(name, word)?;
            match wire::status(buf).map_err(|e| bad_verdict(name, e))? {
                Status::Ok(r) => {
                    decode(&mut self.names, r, chunk.len()).map_err(|e| bad_verdict(name, e))
                }
                Status::Error { code, message } => Err(PluginError::Guest {
                    plugin: name.clone(),
                    code,
                    message,
                }),
            }
        });
        inner.metrics.duration.observe(t0.elapsed().as_secs_f64());
        result
    }
}

/// The first instance of a plugin being loaded, used to ask its ABI
/// version and kind and to check its config before it is accepted.
pub(crate) struct Probe {
    store: Store<HostState>,
    instance: Instance,
    name: Arc<str>,
    deadline_ticks: u64,
}

impl Probe {
    pub(crate) fn new(
        engine: &Engine,
        pre: &InstancePre<HostState>,
        name: &Arc<str>,
        memory_cap: u64,
        metrics: &PluginMetrics,
    ) -> Result<Self, PluginError> {
        // Loading uses a fixed, generous deadline: the plugin's own limits
        // are checked against its real calls.
        let deadline_ticks = engine.deadline_ticks(std::time::Duration::from_secs(5));
        let mut store = new_store(engine, name, memory_cap, metrics);
        let instance = instantiate(&mut store, pre, deadline_ticks)
            .map_err(|e| classify(name, store.data_mut(), &e))?;
        Ok(Self {
            store,
            instance,
            name: name.clone(),
            deadline_ticks,
        })
    }

    fn call_i32(&mut self, export: &str) -> Result<i32, PluginError> {
        let f = self
            .instance
            .get_typed_func::<(), i32>(&mut self.store, export)
            .map_err(|e| abi_error(&self.name, format!("{export}: {e}")))?;
        self.store.set_epoch_deadline(self.deadline_ticks);
        f.call(&mut self.store, ())
            .map_err(|e| classify(&self.name, self.store.data_mut(), &e))
    }

    pub(crate) fn abi_version(&mut self) -> Result<i32, PluginError> {
        self.call_i32("switchyard_abi_version")
    }

    pub(crate) fn kind(&mut self) -> Result<i32, PluginError> {
        self.call_i32("switchyard_kind")
    }
}

/// Starts (and drops) one instance of a plugin being loaded, exactly as a
/// worker would: instantiation and `switchyard_init` with its config.
pub(crate) fn try_start(inner: &PluginInner) -> Result<(), StartError> {
    Live::start(inner).map(drop)
}
