//! Loading a plugin: every check happens here, off the hot path, so a bad
//! module or config is refused at load naming the problem, and a loaded
//! [`Plugin`] only needs instantiating.

use std::path::Path;
use std::sync::Arc;

use switchyard_sdk::abi;
use wasmtime::{ExternType, Module, ValType};

use super::Kind;
use super::breaker::Breaker;
use super::cache::{self, Origin};
use super::engine::Engine;
use super::error::Error;
use super::handle::{Plugin, PluginInner};
use super::instance;
use super::limits::Limits;

/// Where a plugin's module comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A `.wasm` file.
    Path(&'a Path),
    /// Module bytes in memory.
    Bytes(&'a [u8]),
}

impl<'a> From<&'a Path> for Source<'a> {
    fn from(p: &'a Path) -> Self {
        Source::Path(p)
    }
}

impl<'a> From<&'a [u8]> for Source<'a> {
    fn from(b: &'a [u8]) -> Self {
        Source::Bytes(b)
    }
}

impl Engine {
    /// Loads and checks a plugin: size cap, header, compile (or the cached
    /// artifact), imports, exports, ABI version, kind, and a first instance
    /// whose `switchyard_init` accepts `config_json`. Slow (milliseconds):
    /// call it off the hot path, e.g. in `spawn_blocking`.
    ///
    /// # Errors
    /// An [`Error`] naming the plugin and what is wrong with it.
    pub fn load(
        &self,
        name: &str,
        source: Source<'_>,
        config_json: &str,
        limits: Limits,
    ) -> Result<Plugin, Error> {
        let max = self.inner.config.max_module_bytes;
        let too_large = |size: u64| Error::TooLarge {
            plugin: name.to_owned(),
            size,
            max,
        };
        let read_err = |path: &Path, source| Error::Read {
            plugin: name.to_owned(),
            path: path.to_owned(),
            source,
        };
        let owned;
        let bytes: &[u8] = match source {
            Source::Bytes(b) => b,
            Source::Path(path) => {
                let meta = std::fs::metadata(path).map_err(|e| read_err(path, e))?;
                if meta.len() > max {
                    return Err(too_large(meta.len()));
                }
                owned = std::fs::read(path).map_err(|e| read_err(path, e))?;
                &owned
            }
        };
        if bytes.len() as u64 > max {
            return Err(too_large(bytes.len() as u64));
        }
        check_header(bytes).map_err(|why| Error::NotAModule {
            plugin: name.to_owned(),
            why,
        })?;
        if limits.memory_bytes > self.inner.config.max_memory_bytes {
            return Err(Error::Limits {
                plugin: name.to_owned(),
                message: format!(
                    "memory limit {} bytes is over the engine's {} bytes",
                    limits.memory_bytes, self.inner.config.max_memory_bytes
                ),
            });
        }
        if limits.max_batch_messages == 0 || limits.deadline.is_zero() {
            return Err(Error::Limits {
                plugin: name.to_owned(),
                message: "max_batch_messages and deadline must be above zero".into(),
            });
        }
        let (module, origin) = cache::load_or_compile(
            &self.inner.wasmtime,
            self.inner.config.cache_dir.as_deref(),
            &self.inner.compat,
            name,
            bytes,
        )
        .map_err(|message| Error::Compile {
            plugin: name.to_owned(),
            message,
        })?;
        check_imports(name, &module)?;
        require_func(
            name,
            &module,
            "switchyard_abi_version",
            &[],
            &[ValType::I32],
        )?;
        require_memory(name, &module)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&module)
            .map_err(|e| Error::Compile {
                plugin: name.to_owned(),
                message: format!("{e:#}"),
            })?;
        let name: Arc<str> = Arc::from(name);
        let metrics = self.inner.families.for_plugin(&name);
        let failed = |call| {
            let plugin = name.to_string();
            move |source| Error::Init {
                plugin,
                call,
                source,
            }
        };
        let mut probe = instance::Probe::new(self, &pre, &name, limits.memory_bytes, &metrics)
            .map_err(failed("instantiation"))?;
        let version = probe
            .abi_version()
            .map_err(failed("switchyard_abi_version"))?;
        if version != abi::ABI_VERSION {
            return Err(Error::AbiVersion {
                plugin: name.to_string(),
                found: version,
                expected: abi::ABI_VERSION,
            });
        }
        require_func(
            name.as_ref(),
            &module,
            "switchyard_kind",
            &[],
            &[ValType::I32],
        )?;
        require_func(
            name.as_ref(),
            &module,
            "switchyard_alloc",
            &[ValType::I32],
            &[ValType::I32],
        )?;
        for export in ["switchyard_init", "switchyard_batch"] {
            require_func(
                name.as_ref(),
                &module,
                export,
                &[ValType::I32, ValType::I32],
                &[ValType::I64],
            )?;
        }
        let kind_value = probe.kind().map_err(failed("switchyard_kind"))?;
        let kind = Kind::from_abi(kind_value).ok_or_else(|| Error::UnknownKind {
            plugin: name.to_string(),
            found: kind_value,
        })?;
        drop(probe);
        let inner = PluginInner {
            deadline_ticks: self.deadline_ticks(limits.deadline),
            breaker: Breaker::new(limits.on_failure),
            name,
            kind,
            engine: self.clone(),
            pre,
            config_json: Arc::from(config_json),
            limits,
            metrics,
            cached: origin == Origin::Cached,
            sha256: cache::content_hash(bytes),
        };
        instance::try_start(&inner).map_err(|e| Error::Init {
            plugin: inner.name.to_string(),
            call: e.call,
            source: e.error,
        })?;
        Ok(Plugin {
            inner: Arc::new(inner),
        })
    }

    /// [`Engine::load`], then checks the plugin is of `kind`.
    ///
    /// # Errors
    /// As `load`, and [`Error::WrongKind`].
    pub fn load_kind(
        &self,
        name: &str,
        source: Source<'_>,
        config_json: &str,
        limits: Limits,
        kind: Kind,
    ) -> Result<Plugin, Error> {
        let plugin = self.load(name, source, config_json, limits)?;
        if plugin.kind() != kind {
            return Err(Error::WrongKind {
                plugin: name.to_owned(),
                found: plugin.kind(),
                expected: kind,
            });
        }
        Ok(plugin)
    }
}

/// Checks the 8-byte header: a core module, version 1.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), &'static str> {
    if bytes.starts_with(b"(module") || bytes.starts_with(b"(component") {
        return Err("this is WebAssembly text; build it to a binary .wasm");
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("no \\0asm magic at the start");
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => Ok(()),
        [_, _, 1, 0] => Err("this is a component; Switchyard plugins are core modules"),
        _ => Err("unknown binary format version"),
    }
}

fn check_imports(plugin: &str, module: &Module) -> Result<(), Error> {
    for import in module.imports() {
        let allowed = import.module() == "env"
            && import.name() == "switchyard_log"
            && matches!(import.ty(), ExternType::Func(ref f)
                if f.params().map(|p| p.is_i32()).eq([true, true, true])
                    && f.results().len() == 0);
        if !allowed {
            return Err(Error::ForbiddenImport {
                plugin: plugin.to_owned(),
                module: import.module().to_owned(),
                name: import.name().to_owned(),
                kind: describe(&import.ty()),
            });
        }
    }
    Ok(())
}

/// A short description of an import or export type for messages.
pub(crate) fn describe(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => {
            let params: Vec<String> = f.params().map(|p| p.to_string()).collect();
            let results: Vec<String> = f.results().map(|p| p.to_string()).collect();
            format!("func ({}) -> ({})", params.join(", "), results.join(", "))
        }
        ExternType::Memory(_) => "memory".into(),
        ExternType::Table(_) => "table".into(),
        ExternType::Global(_) => "global".into(),
        ExternType::Tag(_) => "tag".into(),
    }
}

fn require_func(
    plugin: &str,
    module: &Module,
    export: &'static str,
    params: &[ValType],
    results: &[ValType],
) -> Result<(), Error> {
    let bad = |problem: String| Error::BadExport {
        plugin: plugin.to_owned(),
        export,
        problem,
    };
    let expected = || {
        let p: Vec<String> = params.iter().map(|t| t.to_string()).collect();
        let r: Vec<String> = results.iter().map(|t| t.to_string()).collect();
        format!("func ({}) -> ({})", p.join(", "), r.join(", "))
    };
    match module.get_export(export) {
        None => Err(bad(format!(
            "is missing (expected {}); is this a Switchyard plugin built for ABI version {}?",
            expected(),
            abi::ABI_VERSION
        ))),
        Some(ExternType::Func(f)) => {
            let same = f.params().len() == params.len()
                && f.results().len() == results.len()
                && f.params().zip(params).all(|(a, b)| ValType::eq(&a, b))
                && f.results().zip(results).all(|(a, b)| ValType::eq(&a, b));
            if same {
                Ok(())
            } else {
                Err(bad(format!(
                    "is {}, expected {}",
                    describe(&ExternType::Func(f)),
                    expected()
                )))
            }
        }
        Some(other) => Err(bad(format!(
            "is a {}, expected {}",
            describe(&other),
            expected()
        ))),
    }
}

fn require_memory(plugin: &str, module: &Module) -> Result<(), Error> {
    let bad = |problem: &str| Error::BadExport {
        plugin: plugin.to_owned(),
        export: "memory",
        problem: problem.to_owned(),
    };
    match module.get_export("memory") {
        Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => Ok(()),
        Some(ExternType::Memory(_)) => Err(bad("must be a 32-bit, unshared memory")),
        Some(_) => Err(bad("is not a memory")),
        None => Err(bad("is missing")),
    }
}
