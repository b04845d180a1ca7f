//! `switchyard plugin inspect`: what a module is, exports and imports,
//! without loading it into a router. Problems are listed, not fatal, so a
//! broken module can still be looked at.

use std::fmt;
use std::sync::Arc;

use switchyard_sdk::abi;
use wasmtime::{ExternType, Module};

use super::Kind;
use super::engine::{Config, Engine};
use super::error::Error;
use super::instance::Probe;
use super::load::{check_header, describe};
use crate::metrics::Registry;

/// What `inspect` found in a module.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// Module size in bytes.
    pub size: usize,
    /// Hex SHA-256 of the bytes (the cache key's first half).
    pub sha256: String,
    /// What `switchyard_abi_version` returned, if it could be called.
    pub abi_version: Option<i32>,
    /// What `switchyard_kind` returned, if it could be called.
    pub kind: Option<i32>,
    /// Every export: name and type.
    pub exports: Vec<(String, String)>,
    /// Every import: module, name and type.
    pub imports: Vec<(String, String, String)>,
    /// What would make a router refuse it (empty when loadable, config
    /// aside).
    pub problems: Vec<String>,
}

/// Inspects module bytes with a small throwaway engine: compiles it, lists
/// exports and imports, and, when its imports allow, calls
/// `switchyard_abi_version` and `switchyard_kind` (with a deadline).
///
/// # Errors
/// [`Error::NotAModule`] or [`Error::Compile`] when there is nothing to
/// inspect; everything else is reported in [`Inspection::problems`].
pub fn inspect(bytes: &[u8]) -> Result<Inspection, Error> {
    let name = "inspect";
    check_header(bytes).map_err(|why| Error::NotAModule {
        plugin: name.into(),
        why,
    })?;
    let engine = Engine::new(
        Config {
            max_instances: 2,
            max_memory_bytes: 64 << 20,
            memory_reservation: 64 << 20,
            max_module_bytes: u64::MAX,
            ..Config::default()
        },
        &Registry::new(),
    )?;
    let module = Module::new(&engine.inner.wasmtime, bytes).map_err(|e| Error::Compile {
        plugin: name.into(),
        message: format!("{e:#}"),
    })?;
    let mut out = Inspection {
        size: bytes.len(),
        sha256: super::cache::content_hash(bytes),
        abi_version: None,
        kind: None,
        exports: module
            .exports()
            .map(|e| (e.name().to_owned(), describe(&e.ty())))
            .collect(),
        imports: module
            .imports()
            .map(|i| {
                (
                    i.module().to_owned(),
                    i.name().to_owned(),
                    describe(&i.ty()),
                )
            })
            .collect(),
        problems: Vec::new(),
    };
    let mut importable = true;
    for i in module.imports() {
        let ok = i.module() == "env"
            && i.name() == "switchyard_log"
            && matches!(i.ty(), ExternType::Func(_));
        if !ok {
            importable = false;
            out.problems
                .push(format!("forbidden import {}.{}", i.module(), i.name()));
        }
    }
    for export in [
        "memory",
        "switchyard_abi_version",
        "switchyard_kind",
        "switchyard_alloc",
        "switchyard_init",
        "switchyard_batch",
    ] {
        if module.get_export(export).is_none() {
            out.problems.push(format!("missing export {export}"));
        }
    }
    if importable {
        if let Ok(pre) = engine.inner.linker.instantiate_pre(&module) {
            let plugin: Arc<str> = Arc::from(name);
            let metrics = engine.inner.families.for_plugin(name);
            match Probe::new(&engine, &pre, &plugin, 64 << 20, &metrics) {
                Ok(mut probe) => {
                    out.abi_version = probe.abi_version().ok();
                    out.kind = probe.kind().ok();
                }
                Err(e) => out.problems.push(format!("cannot instantiate: {e}")),
            }
        } else {
            out.problems.push("imports do not match the host's".into());
        }
    }
    match out.abi_version {
        Some(v) if v != abi::ABI_VERSION => out.problems.push(format!(
            "ABI version {v}, but this router speaks {}",
            abi::ABI_VERSION
        )),
        _ => {}
    }
    if let Some(k) = out.kind.filter(|k| Kind::from_abi(*k).is_none()) {
        out.problems.push(format!("unknown kind {k}"));
    }
    Ok(out)
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "size:        {} bytes", self.size)?;
        writeln!(f, "sha256:      {}", self.sha256)?;
        match self.abi_version {
            Some(v) => writeln!(f, "abi version: {v}")?,
            None => writeln!(f, "abi version: unknown")?,
        }
        let kind = match self.kind.and_then(Kind::from_abi) {
            Some(k) => k.to_string(),
            None => match self.kind {
                Some(k) => format!("unknown ({k})"),
                None => "unknown".into(),
            },
        };
        writeln!(f, "kind:        {kind}")?;
        writeln!(f, "exports:")?;
        for (name, ty) in &self.exports {
            writeln!(f, "  {name}: {ty}")?;
        }
        writeln!(
            f,
            "imports:{}",
            if self.imports.is_empty() { " none" } else { "" }
        )?;
        for (module, name, ty) in &self.imports {
            writeln!(f, "  {module}.{name}: {ty}")?;
        }
        if self.problems.is_empty() {
            writeln!(f, "status:      ok")
        } else {
            writeln!(f, "problems:")?;
            for p in &self.problems {
                writeln!(f, "  - {p}")?;
            }
            Ok(())
        }
    }
}
