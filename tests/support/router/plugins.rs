//! Plugin fixtures for the router end-to-end tests, built by the tests
//! themselves: the first-party plugins workspace (`plugins/`, with the
//! SDK-built `hostile` fixture) compiled for wasm32 once per test binary,
//! and small filters written in WebAssembly text against `sdk/ABI.md`.
//!
//! The wasm build goes to `target/plugin-fixtures`, the directory the
//! router crate's plugin tests use, so the two share one build (cargo's own
//! lock serialises concurrent builds). It is never skipped: a missing wasm
//! target is installed, and a failed build fails the test with cargo's
//! output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock, PoisonError};

use anyhow::{Context, Result, anyhow, bail, ensure};
use switchyard::plugin::tooling::{build_wasm, ensure_wasm_target};

/// The repository root.
pub fn repo() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).to_owned()
}

/// Where the plugin fixtures are built (shared with `router/tests/plugins`).
pub fn target_dir() -> PathBuf {
    repo().join("target").join("plugin-fixtures")
}

/// Builds the plugins workspace for wasm32 (once per test binary; a no-op
/// when up to date) and returns the directory holding the `.wasm` files.
///
/// # Errors
/// When the wasm target cannot be installed or the build fails; every
/// later call returns the same error.
pub fn built() -> Result<&'static Path> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        ensure_wasm_target().map_err(|e| format!("installing the wasm32 target: {e}"))?;
        build_wasm(&repo().join("plugins"), &target_dir())
            .map_err(|e| format!("building the plugins workspace for wasm32: {e}"))
    });
    match built {
        Ok(dir) => Ok(dir.as_path()),
        Err(e) => Err(anyhow!("{e}")),
    }
}

/// The absolute path of a built plugin, e.g. `wasm("attr_filter")`.
///
/// # Errors
/// When the build fails or did not produce `NAME.wasm`.
pub fn wasm(name: &str) -> Result<PathBuf> {
    let path = built()?.join(format!("{name}.wasm"));
    ensure!(path.is_file(), "{} was not built", path.display());
    Ok(path)
}

/// Builds of the `stamp` fixture (`plugins/fixtures/stamp`), one per
/// version in `versions`, each stamping its version into the `version`
/// attribute of every message; returns the `.wasm` file of each, in
/// order. Each build is a real `cargo build` with `STAMP_VERSION` set, in
/// `target/plugin-fixtures-stamp` (its own target dir: changing the
/// variable rebuilds only the fixture crate there, and the shared
/// fixtures dir is never overwritten under another test), copied to
/// `builds/stamp-VERSION.wasm` beside it. Builds made earlier by this
/// test binary are reused.
///
/// # Errors
/// When the wasm target cannot be installed, a build fails (with cargo's
/// output) or a copy fails.
pub fn stamp_builds(versions: &[&str]) -> Result<Vec<PathBuf>> {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    // One build at a time: they share a target dir and its stamp.wasm.
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    ensure_wasm_target().map_err(|e| anyhow!("installing the wasm32 target: {e}"))?;
    let target = repo().join("target").join("plugin-fixtures-stamp");
    let builds = target.join("builds");
    std::fs::create_dir_all(&builds).with_context(|| format!("mkdir {}", builds.display()))?;
    let mut out = Vec::with_capacity(versions.len());
    for version in versions {
        ensure!(
            !version.is_empty() && version.chars().all(|c| c.is_ascii_alphanumeric()),
            "stamp version {version:?}: letters and digits only"
        );
        if let Some(path) = built.get(*version) {
            out.push(path.clone());
            continue;
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let result = Command::new(cargo)
            .current_dir(repo().join("plugins"))
            .args(["build", "--quiet", "--release", "--target"])
            .arg(switchyard::plugin::tooling::WASM_TARGET)
            .args(["-p", "stamp", "--target-dir"])
            .arg(&target)
            .env("STAMP_VERSION", version)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .output()
            .context("run cargo build -p stamp")?;
        if !result.status.success() {
            bail!(
                "building the stamp fixture as {version}: {}\n{}",
                result.status,
                String::from_utf8_lossy(&result.stderr)
            );
        }
        let wasm = target
            .join(switchyard::plugin::tooling::WASM_TARGET)
            .join("release")
            .join("stamp.wasm");
        let copy = builds.join(format!("stamp-{version}.wasm"));
        std::fs::copy(&wasm, &copy)
            .with_context(|| format!("copy {} to {}", wasm.display(), copy.display()))?;
        built.insert((*version).to_owned(), copy.clone());
        out.push(copy);
    }
    Ok(out)
}

/// A module that declares ABI version 99 (the router speaks 1): otherwise
/// the keep-everything filter of [`wat_filter`]. The router refuses it at
/// load.
///
/// # Errors
/// When the text does not assemble.
pub fn wrong_abi_module() -> Result<Vec<u8>> {
    let text = wat_filter("").replace(
        r#"(func (export "switchyard_abi_version") (result i32) (i32.const 1))"#,
        r#"(func (export "switchyard_abi_version") (result i32) (i32.const 99))"#,
    );
    ensure!(text.contains("(i32.const 99)"), "the ABI splice missed");
    assemble(&text)
}

/// `path` as a TOML basic string (quoted, escaped).
pub fn toml_path(path: &Path) -> String {
    toml_string(&path.display().to_string())
}

/// `text` as a TOML basic string.
pub fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `[[plugin]]` entry for the built plugin `file` (`attr_filter`,
/// `hostile`, ...) called `name`, with `extra` lines (`config = {...}`,
/// `deadline = "50ms"`, ...) after its path.
///
/// # Errors
/// As [`wasm`].
pub fn entry(name: &str, file: &str, extra: &str) -> Result<String> {
    Ok(entry_at(name, &wasm(file)?, extra))
}

/// A `[[plugin]]` entry for the module at `path`.
pub fn entry_at(name: &str, path: &Path, extra: &str) -> String {
    format!(
        "\n[[plugin]]\nname = {}\npath = {}\n{extra}\n",
        toml_string(name),
        toml_path(path)
    )
}

/// A filter written in WebAssembly text against `sdk/ABI.md`, without the
/// SDK: it keeps every message. `hostile` is spliced in at the start of
/// `switchyard_batch` (where `$n` holds the batch's message count), so it
/// misbehaves on every batch: `unreachable`, or a `return` of a broken
/// result built with `$result`.
pub fn wat_filter(hostile: &str) -> String {
    WAT_FILTER.replace("HOSTILE", hostile)
}

/// A router written in WebAssembly text: it answers *default* (the
/// route's own outputs) for every message, except that it traps
/// (`unreachable`) on a batch whose first message's topic starts with `h`,
/// so a test decides which batches fail.
pub fn wat_router() -> String {
    WAT_FILTER
        .replace(
            r#"(func (export "switchyard_kind") (result i32) (i32.const 1))"#,
            r#"(func (export "switchyard_kind") (result i32) (i32.const 2))"#,
        )
        // header 16 + id 16 + publish_ms 8 + priority 1 + topic length 4:
        // the first topic byte. 104 is 'h'.
        .replace(
            "HOSTILE",
            "(if (i32.eq (i32.load8_u (i32.add (local.get $ptr) (i32.const 45))) (i32.const 104)) (then unreachable))",
        )
        // verdict tag 2: default
        .replace(
            "(memory.fill (i32.const 1032) (i32.const 0) (local.get $n))",
            "(memory.fill (i32.const 1032) (i32.const 2) (local.get $n))",
        )
}

/// Assembles WebAssembly text into a module.
///
/// # Errors
/// When the text does not parse.
pub fn assemble(text: &str) -> Result<Vec<u8>> {
    wat::parse_str(text).context("assembling a fixture module")
}

/// `switchyard_batch` of [`wat_filter`] returning a result whose count
/// (0) is not the batch's: a `bad_verdict`.
pub const WAT_WRONG_COUNT: &str = "(i32.store (i32.const 1024) (i32.const 0)) \
     (i32.store (i32.const 1028) (i32.const 0)) \
     (return (call $result (i32.const 8)))";

/// The result buffer is at 1024 (page 0); the host's region is page 1.
const WAT_FILTER: &str = r#"
(module
  (memory (export "memory") 2)
  (func (export "switchyard_abi_version") (result i32) (i32.const 1))
  (func (export "switchyard_kind") (result i32) (i32.const 1))
  (func (export "switchyard_alloc") (param $len i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $len) (i32.const 65536))
      (then (i32.const 0))
      (else (i32.const 65536))))
  ;; The result word for `$len` bytes at 1024.
  (func $result (param $len i32) (result i64)
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.extend_i32_u (local.get $len))))
  (func (export "switchyard_init") (param i32 i32) (result i64)
    (i32.store (i32.const 1024) (i32.const 0))
    (call $result (i32.const 4)))
  (func (export "switchyard_batch") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32)
    (local.set $n (i32.load (local.get $ptr)))
    HOSTILE
    ;; status 0, count n, n verdicts 0 (keep)
    (i32.store (i32.const 1024) (i32.const 0))
    (i32.store (i32.const 1028) (local.get $n))
    (memory.fill (i32.const 1032) (i32.const 0) (local.get $n))
    (call $result (i32.add (local.get $n) (i32.const 8))))
)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("x\ny"), r#""x\u000Ay""#);
    }

    #[test]
    fn the_wat_filter_assembles_with_each_splice() -> Result<()> {
        for hostile in ["", "unreachable", WAT_WRONG_COUNT] {
            let module = assemble(&wat_filter(hostile))?;
            assert!(module.starts_with(b"\0asm"));
        }
        let router = wat_router();
        assert!(!router.contains("HOSTILE") && router.contains("(i32.const 2) (local.get $n)"));
        assemble(&router)?;
        Ok(())
    }
}
