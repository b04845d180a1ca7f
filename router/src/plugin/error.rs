//! What can go wrong loading a plugin ([`Error`]) and running a batch
//! ([`PluginError`]), and the bounded set of reasons a failure is counted
//! under ([`TrapReason`]).

use std::path::PathBuf;
use std::sync::Arc;

/// Why a plugin could not be loaded. Each names the plugin and the problem,
/// so the operator can fix the file or the config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plugin file could not be read.
    #[error("plugin {plugin:?}: cannot read {path}: {source}")]
    Read {
        /// The plugin's name.
        plugin: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The module is larger than the engine accepts; refused before compiling.
    #[error("plugin {plugin:?}: module is {size} bytes, over the {max} byte limit")]
    TooLarge {
        /// The plugin's name.
        plugin: String,
        /// The module's size in bytes.
        size: u64,
        /// The limit (`plugin::Config::max_module_bytes`).
        max: u64,
    },
    /// The bytes are not a core WebAssembly module (e.g. a component or text).
    #[error("plugin {plugin:?}: not a core WebAssembly module ({why})")]
    NotAModule {
        /// The plugin's name.
        plugin: String,
        /// What the header said.
        why: &'static str,
    },
    /// The module does not validate or compile.
    #[error("plugin {plugin:?}: invalid module: {message}")]
    Compile {
        /// The plugin's name.
        plugin: String,
        /// The compiler's message.
        message: String,
    },
    /// The module imports something other than `env.switchyard_log`.
    #[error(
        "plugin {plugin:?}: forbidden import {module}.{name} ({kind}); plugins may import only env.switchyard_log"
    )]
    ForbiddenImport {
        /// The plugin's name.
        plugin: String,
        /// The import's module.
        module: String,
        /// The import's name.
        name: String,
        /// What is imported (function, memory, ...), with its type.
        kind: String,
    },
    /// A required export is missing or has the wrong type.
    #[error("plugin {plugin:?}: export {export:?} {problem}")]
    BadExport {
        /// The plugin's name.
        plugin: String,
        /// The export's name.
        export: &'static str,
        /// "is missing" or what its type is instead.
        problem: String,
    },
    /// The module speaks another ABI version.
    #[error("plugin {plugin:?}: ABI version {found}, but this router speaks version {expected}")]
    AbiVersion {
        /// The plugin's name.
        plugin: String,
        /// What `switchyard_abi_version` returned.
        found: i32,
        /// What the router speaks.
        expected: i32,
    },
    /// `switchyard_kind` returned something other than filter or router.
    #[error("plugin {plugin:?}: unknown kind {found} (1 = filter, 2 = router)")]
    UnknownKind {
        /// The plugin's name.
        plugin: String,
        /// What the export returned.
        found: i32,
    },
    /// The plugin's kind is not what the config uses it as.
    #[error("plugin {plugin:?}: is a {found}, but is used as a {expected}")]
    WrongKind {
        /// The plugin's name.
        plugin: String,
        /// Its kind.
        found: super::Kind,
        /// The kind the caller needs.
        expected: super::Kind,
    },
    /// Limits or engine settings that cannot work together.
    #[error("plugin {plugin:?}: {message}")]
    Limits {
        /// The plugin's name.
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// The first instance failed: a trap at start, or in one of the calls
    /// the load makes (`switchyard_init` refusing the config or trapping,
    /// say).
    #[error("plugin {plugin:?}: {}", init_failure(call, source))]
    Init {
        /// The plugin's name.
        plugin: String,
        /// What was running: `instantiation` (a start function, memory and
        /// tables) or the export called, e.g. `switchyard_init`.
        call: &'static str,
        /// What the instance reported.
        source: PluginError,
    },
    /// The wasmtime engine could not be built from the settings.
    #[error("plugin engine: {0}")]
    Engine(String),
}

/// An [`Error::Init`] told after the plugin's name, with what was running
/// in place of the name `source` repeats: `switchyard_init trapped
/// (unreachable): ...`, `switchyard_init failed (code 2): ...`.
fn init_failure(call: &str, source: &PluginError) -> String {
    match source {
        PluginError::Trap { reason, detail, .. } => format!("{call} trapped ({reason}): {detail}"),
        PluginError::Guest { code, message, .. } => {
            format!("{call} failed (code {code}): {message}")
        }
        PluginError::Abi { reason, detail, .. } => {
            format!("{call} broke the ABI ({reason}): {detail}")
        }
        // Not made by a load; told whole.
        other => format!("{call}: {other}"),
    }
}

/// Why one call into a plugin failed. The instance that failed is thrown
/// away; the next call builds a fresh one.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PluginError {
    /// A wasm trap or limit stopped the call.
    #[error("plugin {plugin:?} trapped ({reason}): {detail}")]
    Trap {
        /// The plugin's name.
        plugin: Arc<str>,
        /// The counted reason.
        reason: TrapReason,
        /// The trap or limit message (a panic's text for panics).
        detail: String,
    },
    /// The plugin answered with an error status (`ABI.md` §6).
    #[error("plugin {plugin:?} failed (code {code}): {message}")]
    Guest {
        /// The plugin's name.
        plugin: Arc<str>,
        /// The ABI error code.
        code: u32,
        /// The plugin's message.
        message: String,
    },
    /// The plugin broke the ABI: a result outside memory, a malformed
    /// verdict, or no region for the batch.
    #[error("plugin {plugin:?} broke the ABI ({reason}): {detail}")]
    Abi {
        /// The plugin's name.
        plugin: Arc<str>,
        /// `bad_verdict` or `abi_error`.
        reason: TrapReason,
        /// What exactly was wrong.
        detail: String,
    },
    /// A fresh instance could not be built or initialised.
    #[error("plugin {plugin:?}: instance failed to start: {detail}")]
    InitFailed {
        /// The plugin's name.
        plugin: Arc<str>,
        /// Why.
        detail: String,
    },
    /// The circuit breaker is open after repeated failures: the plugin was
    /// not called. The caller applies `mode` (pass through or drop).
    #[error("plugin {plugin:?} is tripped after repeated failures ({mode})")]
    CircuitOpen {
        /// The plugin's name.
        plugin: Arc<str>,
        /// What the plugin's config says to do meanwhile.
        mode: super::FailMode,
    },
    /// The caller used a filter as a router or the other way round.
    #[error("plugin {plugin:?} is a {kind}, not usable here")]
    WrongKind {
        /// The plugin's name.
        plugin: Arc<str>,
        /// Its kind.
        kind: super::Kind,
    },
}

impl PluginError {
    /// The reason this failure is counted under, if it is counted (an open
    /// circuit and a wrong kind are not plugin failures).
    pub fn reason(&self) -> Option<TrapReason> {
        match self {
            PluginError::Trap { reason, .. } | PluginError::Abi { reason, .. } => Some(*reason),
            PluginError::Guest { .. } => Some(TrapReason::PluginError),
            PluginError::InitFailed { .. } => Some(TrapReason::InitFailed),
            PluginError::CircuitOpen { .. } | PluginError::WrongKind { .. } => None,
        }
    }
}

/// The bounded set of reasons in `switchyard_plugin_traps_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrapReason {
    /// The epoch deadline for the batch passed.
    Timeout,
    /// The instance tried to grow memory past its cap.
    Memory,
    /// An `unreachable` instruction (also a Rust abort without a panic message).
    Unreachable,
    /// The wasm stack limit was hit.
    StackOverflow,
    /// Any other wasm trap (out-of-bounds access, division by zero, ...).
    Trap,
    /// The plugin panicked (it said so through `switchyard_log` level 0).
    Panic,
    /// The plugin returned an error status.
    PluginError,
    /// The result buffer or a verdict broke the ABI layout.
    BadVerdict,
    /// The plugin broke the calling protocol (e.g. no region for a batch).
    AbiError,
    /// A fresh instance failed to instantiate or initialise.
    InitFailed,
}

impl TrapReason {
    /// Every reason, for registering label values up front.
    pub const ALL: [TrapReason; 10] = [
        TrapReason::Timeout,
        TrapReason::Memory,
        TrapReason::Unreachable,
        TrapReason::StackOverflow,
        TrapReason::Trap,
        TrapReason::Panic,
        TrapReason::PluginError,
        TrapReason::BadVerdict,
        TrapReason::AbiError,
        TrapReason::InitFailed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TrapReason::Timeout => "timeout",
            TrapReason::Memory => "memory",
            TrapReason::Unreachable => "unreachable",
            TrapReason::StackOverflow => "stack_overflow",
            TrapReason::Trap => "trap",
            TrapReason::Panic => "panic",
            TrapReason::PluginError => "plugin_error",
            TrapReason::BadVerdict => "bad_verdict",
            TrapReason::AbiError => "abi_error",
            TrapReason::InitFailed => "init_failed",
        }
    }

    /// Position in [`TrapReason::ALL`] (declaration order), for
    /// per-reason arrays.
    pub(crate) fn slot(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for TrapReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
