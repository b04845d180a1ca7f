//! Compiled modules on disk: `<sha256 of the module>-<engine compatibility
//! hash>.cwasm`, so a router restart (or a reload of an unchanged plugin)
//! deserializes in microseconds instead of compiling for milliseconds, and
//! an engine with other settings or another wasmtime never reads an
//! artifact it cannot use.
//!
//! Each file is the serialized module followed by its SHA-256, written to a
//! temporary file and renamed, so a torn or corrupted file is detected and
//! recompiled rather than loaded.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Module;

/// Feeds `Hash` output into SHA-256, for a hash that is stable across runs
/// (unlike `DefaultHasher`'s contract).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        // Not used: the digest is read with `finalize`.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Hex of the engine's compatibility hash (wasmtime version, target and
/// settings that affect compiled code).
pub(crate) fn compat_hash(engine: &wasmtime::Engine) -> String {
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex(&h.0.finalize()[..12])
}

/// Hex SHA-256 of the module's bytes.
pub(crate) fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// How a module was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Compiled now (no cache, or a miss).
    Compiled,
    /// Deserialized from the disk cache.
    Cached,
}

/// The cache file for a module.
fn path_for(dir: &Path, content: &str, compat: &str) -> PathBuf {
    dir.join(format!("{content}-{compat}.cwasm"))
}

/// The module for `bytes`: from the cache when it holds a sound artifact,
/// else compiled (and then stored, best effort).
///
/// # Errors
/// The compiler's message when the module does not validate or compile.
pub(crate) fn load_or_compile(
    engine: &wasmtime::Engine,
    dir: Option<&Path>,
    compat: &str,
    plugin: &str,
    bytes: &[u8],
) -> Result<(Module, Origin), String> {
    let Some(dir) = dir else {
        return compile(engine, bytes).map(|m| (m, Origin::Compiled));
    };
    let path = path_for(dir, &content_hash(bytes), compat);
    if let Some(module) = read(engine, &path, plugin) {
        return Ok((module, Origin::Cached));
    }
    let module = compile(engine, bytes)?;
    if let Err(e) = write(&module, dir, &path) {
        tracing::warn!(plugin, path = %path.display(), "cannot write the plugin cache: {e}");
    }
    Ok((module, Origin::Compiled))
}

fn compile(engine: &wasmtime::Engine, bytes: &[u8]) -> Result<Module, String> {
    Module::new(engine, bytes).map_err(|e| format!("{e:#}"))
}

/// A sound cached module, or `None` (missing, torn, corrupted, or refused
/// by wasmtime) after which the caller recompiles.
fn read(engine: &wasmtime::Engine, path: &Path, plugin: &str) -> Option<Module> {
    let file = std::fs::read(path).ok()?;
    let body_len = file.len().checked_sub(32)?;
    let (body, sum) = file.split_at(body_len);
    if Sha256::digest(body).as_slice() != sum {
        tracing::warn!(plugin, path = %path.display(), "plugin cache entry is corrupted; recompiling");
        return None;
    }
    // SAFETY: `Module::deserialize` requires bytes produced by
    // `Module::serialize` of a compatible engine. The file name carries this
    // engine's compatibility hash, the checksum above proves the bytes are
    // exactly what `write` stored from `Module::serialize`, and wasmtime
    // itself re-checks the version and settings in the header. The cache
    // directory is trusted like the router binary (documented on
    // `Config::cache_dir`).
    #[allow(unsafe_code)]
    let module = unsafe { Module::deserialize(engine, body) };
    match module {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(plugin, path = %path.display(), "plugin cache entry refused ({e}); recompiling");
            None
        }
    }
}

fn write(module: &Module, dir: &Path, path: &Path) -> std::io::Result<()> {
    let mut body = module.serialize().map_err(std::io::Error::other)?;
    let sum = Sha256::digest(&body);
    body.extend_from_slice(&sum);
    std::fs::create_dir_all(dir)?;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, &body)?;
    std::fs::rename(&tmp, path)
}
