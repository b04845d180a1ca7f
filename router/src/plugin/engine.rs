//! The one plugin engine per router: wasmtime settings (pooling allocator
//! sized for a small box, epoch interruption), the ticker thread that
//! advances the epoch, the `switchyard_log` linker and the metric families.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{InstanceAllocationStrategy, Linker, PoolingAllocationConfig};

use super::error::Error;
use super::host::{self, HostState};
use super::metrics::Families;
use crate::metrics::Registry;

/// Engine settings, shared by every plugin. None reload live: a change
/// needs a new engine (a restart).
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest module accepted, in bytes; bigger ones are refused before
    /// they are read or compiled. Default 16 MiB.
    pub max_module_bytes: u64,
    /// Where compiled modules are cached, keyed by the module's SHA-256 and
    /// the engine's compatibility hash. `None` (the default) disables the
    /// cache. The directory must be writable only by the router's user: a
    /// cached artifact is native code.
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch advances; deadlines are whole ticks, so a
    /// runaway call is stopped between its deadline and one tick later.
    /// Default 5 ms.
    pub epoch_tick: Duration,
    /// Instance slots in the pooling allocator: the most live plugin
    /// instances at once (one per plugin per worker). Default 64.
    pub max_instances: u32,
    /// The largest memory cap any plugin may ask for, in bytes; each pool
    /// slot reserves this much address space. Default 256 MiB.
    pub max_memory_bytes: u64,
    /// Virtual address space reserved per memory slot, in bytes, at least
    /// `max_memory_bytes`. 4 GiB (the default on 64-bit) lets compiled code
    /// skip bounds checks; smaller values save address space on boxes with
    /// a 39-bit address space, at some speed.
    pub memory_reservation: u64,
    /// Wasm stack per call, in bytes; deeper recursion traps as
    /// `stack_overflow`. Default 256 KiB.
    pub max_wasm_stack: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_module_bytes: 16 << 20,
            cache_dir: None,
            epoch_tick: Duration::from_millis(5),
            max_instances: 64,
            max_memory_bytes: 256 << 20,
            memory_reservation: if cfg!(target_pointer_width = "64") {
                4 << 30
            } else {
                256 << 20
            },
            max_wasm_stack: 256 << 10,
        }
    }
}

/// The plugin engine. Cheap to clone; the ticker thread stops when the
/// last clone (and every plugin loaded from it) is dropped.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) wasmtime: wasmtime::Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) config: Config,
    pub(crate) families: Families,
    /// Hex of the engine's compatibility hash: half of every cache key.
    pub(crate) compat: String,
    _ticker: Ticker,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds the engine and starts its epoch ticker; registers the plugin
    /// metric families in `registry`.
    ///
    /// # Errors
    /// [`Error::Engine`] when wasmtime refuses the settings (e.g. the pool
    /// cannot reserve its address space).
    pub fn new(config: Config, registry: &Registry) -> Result<Self, Error> {
        if config.epoch_tick.is_zero() {
            return Err(Error::Engine("epoch_tick must be above zero".into()));
        }
        let reservation = config.memory_reservation.max(config.max_memory_bytes);
        let max_memory = usize::try_from(config.max_memory_bytes)
            .map_err(|_| Error::Engine("max_memory_bytes does not fit in usize".into()))?;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(config.max_instances)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .table_elements(host::MAX_TABLE_ELEMENTS)
            .max_memory_size(max_memory)
            // Keep a few slots warm so re-instantiation is cheap, but give
            // memory back to the OS for the rest.
            .max_unused_warm_slots(config.max_instances.min(16));

        let mut wc = wasmtime::Config::new();
        wc.epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            .memory_reservation(reservation)
            .memory_reservation_for_growth(0)
            .memory_may_move(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let wasmtime = wasmtime::Engine::new(&wc).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let linker = host::linker(&wasmtime).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let compat = super::cache::compat_hash(&wasmtime);
        let ticker = Ticker::start(wasmtime.clone(), config.epoch_tick)?;
        Ok(Self {
            inner: Arc::new(EngineInner {
                wasmtime,
                linker,
                families: Families::register(registry),
                compat,
                config,
                _ticker: ticker,
            }),
        })
    }

    /// The settings the engine was built with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Epoch ticks for a deadline: rounded up, plus one because the next
    /// tick may come at any moment.
    pub(crate) fn deadline_ticks(&self, deadline: Duration) -> u64 {
        let tick = self.inner.config.epoch_tick.as_nanos().max(1);
        let ticks = deadline.as_nanos().div_ceil(tick);
        u64::try_from(ticks)
            .unwrap_or(u64::MAX / 2)
            .saturating_add(1)
    }
}

/// The thread that advances the engine's epoch every tick. A plain thread,
/// not a tokio task: it must keep ticking while every runtime worker is
/// inside a runaway plugin. Dropping it stops and joins the thread.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: wasmtime::Engine, tick: Duration) -> Result<Self, Error> {
        let (stop, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                // Ends when the sender is dropped (Disconnected).
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })
            .map_err(|e| Error::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            // The thread only sleeps and increments; it cannot panic.
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_ticks_plus_one() {
        let engine = Engine::new(Config::default(), &Registry::new()).expect("engine");
        assert_eq!(engine.deadline_ticks(Duration::from_millis(100)), 21);
        assert_eq!(engine.deadline_ticks(Duration::from_millis(1)), 2);
        assert_eq!(engine.deadline_ticks(Duration::ZERO), 1);
    }
}
