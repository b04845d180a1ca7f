//! `switchyard plugin build` and the fixture builds: cargo for wasm32.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{ToolingError, WASM_TARGET};

/// Runs `cmd` to its end; `failed` describes an unsuccessful exit.
fn run_with(
    cmd: &mut Command,
    failed: impl FnOnce(&std::process::Output) -> String,
) -> Result<std::process::Output, ToolingError> {
    let line = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| ToolingError::Command {
        command: line.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(ToolingError::Command {
            command: line,
            detail: failed(&out),
        });
    }
    Ok(out)
}

/// Runs `cmd`; a failure carries the last 30 lines of its stderr.
fn run(cmd: &mut Command) -> Result<std::process::Output, ToolingError> {
    run_with(cmd, |out| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{}\n{}", out.status, tail.join("\n"))
    })
}

/// Installs the wasm target with rustup when it is missing (a no-op when
/// present, or when rustup is not there and the target is).
///
/// # Errors
/// When the target is missing and rustup cannot add it.
pub fn ensure_wasm_target() -> Result<(), ToolingError> {
    let listed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match listed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains(WASM_TARGET) => Ok(()),
        Ok(_) => run(Command::new("rustup").args(["target", "add", WASM_TARGET])).map(drop),
        // No rustup: a distribution toolchain may still have the target;
        // cargo will say if not.
        Err(_) => Ok(()),
    }
}

/// Builds every plugin crate of the cargo workspace (or package) at
/// `manifest_dir` for wasm32 in release mode, into `target_dir`; returns
/// the directory holding the `.wasm` files. Host-only flags (`RUSTFLAGS`,
/// coverage instrumentation) are not passed on.
///
/// # Errors
/// [`ToolingError::Command`] with cargo's last lines when the build fails.
pub fn build_wasm(manifest_dir: &Path, target_dir: &Path) -> Result<PathBuf, ToolingError> {
    run(wasm_build(manifest_dir)
        .arg("--quiet")
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("CARGO_TARGET_DIR"))?;
    Ok(target_dir.join(WASM_TARGET).join("release"))
}

/// `cargo build --release --target wasm32-unknown-unknown` in `dir`,
/// without the host-only flags of the environment.
fn wasm_build(dir: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args(["build", "--release", "--target", WASM_TARGET])
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    cmd
}

/// `switchyard plugin build`: builds the cargo package or workspace at
/// `manifest` (a directory, or a `Cargo.toml`) for wasm32 in release mode,
/// into `target_dir` or wherever cargo puts it by default, and returns the
/// `.wasm` files it made. Cargo's progress and errors go to this process's
/// stderr, as if cargo had been run by hand. Does not install the target:
/// call [`ensure_wasm_target`] first.
///
/// # Errors
/// [`ToolingError::Io`] when `manifest` does not exist,
/// [`ToolingError::NoManifest`] when no `Cargo.toml` is there or above,
/// [`ToolingError::Command`] when the build fails (cargo has printed why),
/// [`ToolingError::NoWasm`] when it made no `.wasm` file.
pub fn build_plugins(
    manifest: &Path,
    target_dir: Option<&Path>,
) -> Result<Vec<PathBuf>, ToolingError> {
    let dir = if manifest.file_name().is_some_and(|n| n == "Cargo.toml") && manifest.is_file() {
        manifest.parent().unwrap_or(Path::new("."))
    } else {
        manifest
    };
    let meta = std::fs::metadata(dir).map_err(|source| ToolingError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    if !meta.is_dir() || !abs.ancestors().any(|a| a.join("Cargo.toml").is_file()) {
        return Err(ToolingError::NoManifest(dir.to_owned()));
    }
    let mut cmd = wasm_build(dir);
    cmd.arg("--message-format=json-render-diagnostics");
    if let Some(t) = target_dir {
        // Relative to where the user is, not to the crate.
        cmd.arg("--target-dir")
            .arg(std::path::absolute(t).unwrap_or_else(|_| t.to_owned()));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let out = run_with(&mut cmd, |out| {
        format!("{} (cargo's messages are above)", out.status)
    })?;
    let wasm = wasm_artifacts(&String::from_utf8_lossy(&out.stdout));
    if wasm.is_empty() {
        return Err(ToolingError::NoWasm(dir.to_owned()));
    }
    Ok(wasm)
}

/// The `.wasm` files in cargo's JSON messages (`compiler-artifact`), in
/// order, without repeats.
pub(super) fn wasm_artifacts(messages: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for line in messages.lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let files = msg["filenames"].as_array().into_iter().flatten();
        for f in files.filter_map(Value::as_str) {
            let f = PathBuf::from(f);
            if f.extension().is_some_and(|e| e == "wasm") && !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}
