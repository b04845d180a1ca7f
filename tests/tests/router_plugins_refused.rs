//! Plugins refused at load, end to end: `switchyard run` and `validate`
//! exit 2 naming the file, the plugin's line and the problem (wrong ABI,
//! missing export, an init that traps, forbidden import, oversized or
//! non-wasm files, a config the plugin refuses, a filter used as a router
//! and the reverse), and a plugin path resolved against the config file's
//! directory.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use switchyard_tests::router::plugin_cases::*;
use switchyard_tests::router::plugins::{self, assemble, entry, entry_at, wat_filter};
use switchyard_tests::router::{TempDir, cli};

/// How a refused case's route uses its plugin.
#[derive(Debug, Clone, Copy)]
enum Use {
    Filter,
    Router,
}

/// A plugin the router must refuse at load.
struct Refused {
    name: &'static str,
    /// The `[[plugin]]` entry.
    entry: String,
    used_as: Use,
    /// Text the problem must contain.
    needle: String,
}

/// Every kind of plugin the router refuses at load, with its files in
/// `dir`.
fn refused_cases(dir: &Path) -> Result<Vec<Refused>> {
    let write = |name: &str, bytes: &[u8]| -> Result<std::path::PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    };
    let good = wat_filter("");
    let abi2 = good.replace(
        r#"(func (export "switchyard_abi_version") (result i32) (i32.const 1))"#,
        r#"(func (export "switchyard_abi_version") (result i32) (i32.const 2))"#,
    );
    let no_batch = good.replace(r#"(export "switchyard_batch")"#, "");
    let init_traps = good.replace(
        r#"(func (export "switchyard_init") (param i32 i32) (result i64)"#,
        r#"(func (export "switchyard_init") (param i32 i32) (result i64) unreachable"#,
    );
    let wasi = good.replace(
        "(memory (export",
        "(import \"wasi_snapshot_preview1\" \"fd_write\" (func (param i32 i32 i32 i32) (result i32)))\n  (memory (export",
    );
    ensure!(
        abi2 != good && no_batch != good && init_traps != good && wasi != good,
        "the WAT edits apply"
    );
    // Past the 16 MiB cap, with a valid header; sparse, so cheap to write.
    let big = dir.join("big.wasm");
    let file = std::fs::File::create(&big)?;
    std::io::Write::write_all(&mut &file, b"\0asm\x01\0\0\0")?;
    file.set_len((16 << 20) + 1)?;

    let at = |name: &'static str, path: &Path, used_as: Use, needle: &str| Refused {
        name,
        entry: entry_at(name, path, ""),
        used_as,
        needle: needle.to_owned(),
    };
    Ok(vec![
        at(
            "abi-two",
            &write("abi2.wasm", &assemble(&abi2)?)?,
            Use::Filter,
            "ABI version 2, but this router speaks version 1",
        ),
        at(
            "no-batch",
            &write("no_batch.wasm", &assemble(&no_batch)?)?,
            Use::Filter,
            "export \"switchyard_batch\" is missing",
        ),
        at(
            "init-traps",
            &write("init_traps.wasm", &assemble(&init_traps)?)?,
            Use::Filter,
            "switchyard_init trapped (unreachable)",
        ),
        at(
            "wasi",
            &write("wasi.wasm", &assemble(&wasi)?)?,
            Use::Filter,
            "forbidden import wasi_snapshot_preview1.fd_write",
        ),
        at(
            "too-big",
            &big,
            Use::Filter,
            "module is 16777217 bytes, over the 16777216 byte limit",
        ),
        at(
            "not-wasm",
            &write("notes.wasm", b"these are notes, not a module\n")?,
            Use::Filter,
            "not a core WebAssembly module (no \\0asm magic at the start)",
        ),
        at(
            "wat-text",
            &write("text.wasm", wat_filter("").trim_start().as_bytes())?,
            Use::Filter,
            "this is WebAssembly text; build it to a binary .wasm",
        ),
        at(
            "missing",
            &dir.join("nowhere.wasm"),
            Use::Filter,
            "No such file or directory",
        ),
        Refused {
            name: "refuses-init",
            entry: entry("refuses-init", "hostile", r#"config = { mode = "panic_init" }"#)?,
            used_as: Use::Filter,
            needle: "this fixture refuses to start".into(),
        },
        Refused {
            name: "typo",
            entry: entry(
                "typo",
                "attr_filter",
                r#"config = { key = "level", dney = ["debug"] }"#,
            )?,
            used_as: Use::Filter,
            needle: "unknown field `dney`".into(),
        },
        Refused {
            name: "router-as-filter",
            entry: entry(
                "router-as-filter",
                "content_router",
                r#"config = { rules = [] }"#,
            )?,
            used_as: Use::Filter,
            needle: "is a router plugin, but route \"r-router-as-filter\" uses it in `filters`, which takes filter plugins".into(),
        },
        Refused {
            name: "filter-as-router",
            entry: entry(
                "filter-as-router",
                "attr_filter",
                r#"config = { key = "level" }"#,
            )?,
            used_as: Use::Router,
            needle: "is a filter plugin, but route \"r-filter-as-router\" uses it in `router`, which takes router plugins".into(),
        },
    ])
}

/// A config whose routes use each of `cases`' plugins (route `r-NAME`).
fn refused_config(cases: &[&Refused]) -> String {
    let mut text = format!("{HEAD}{}", output("out"));
    for (i, case) in cases.iter().enumerate() {
        let uses = match case.used_as {
            Use::Filter => format!("filters = [\"{}\"]", case.name),
            Use::Router => format!("router = \"{}\"", case.name),
        };
        text += &format!(
            "\n[[route]]\nname = \"r-{}\"\nmatch = \"t{i}.>\"\n{uses}\nto = [\"out\"]\n",
            case.name
        );
    }
    for case in cases {
        text += &case.entry;
    }
    text
}

/// The 1-based line of `name`'s `path = ...` in `text`.
fn path_line(text: &str, name: &str) -> Result<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == format!("name = \"{name}\""))
        .with_context(|| format!("no plugin {name:?} in the config"))?;
    let path = lines[at..]
        .iter()
        .position(|l| l.starts_with("path = "))
        .context("no path line")?;
    Ok(at + path + 1)
}

/// Checks `stderr` has the problem of `case` in `file` (as
/// `file:line:col: plugin "name": ...`, at its `path` value).
fn assert_problem(stderr: &str, file: &Path, text: &str, case: &Refused) -> Result<()> {
    let line = path_line(text, case.name)?;
    let prefix = format!("{}:{line}:8: plugin \"{}\": ", file.display(), case.name);
    let Some(found) = stderr.lines().find(|l| l.starts_with(&prefix)) else {
        bail!("no line starting {prefix:?} in stderr:\n{stderr}");
    };
    ensure!(
        found.contains(&case.needle),
        "{found:?} should contain {:?}",
        case.needle
    );
    Ok(())
}

#[test]
fn plugins_that_cannot_load_make_run_and_validate_exit_2_naming_them() -> Result<()> {
    let started = Instant::now();
    let dir = TempDir::new()?;
    let cases = refused_cases(dir.path())?;
    let limit = Duration::from_secs(60);

    for (i, case) in cases.iter().enumerate() {
        let text = refused_config(&[case]);
        let file = dir.write(&format!("case-{i}.toml"), &text)?;
        let exited = cli::run(
            ["run".as_ref(), "--config".as_ref(), file.as_os_str()],
            limit,
        )?;
        assert_eq!(
            exited.code(),
            Some(2),
            "{}: run should refuse the config; stderr:\n{}",
            case.name,
            exited.stderr
        );
        assert_problem(&exited.stderr, &file, &text, case)
            .with_context(|| format!("switchyard run, case {}", case.name))?;
    }

    // validate loads the plugins too, and reports every problem at once.
    let all: Vec<&Refused> = cases.iter().collect();
    let text = refused_config(&all);
    let file = dir.write("all.toml", &text)?;
    let exited = cli::run(
        ["validate".as_ref(), "--config".as_ref(), file.as_os_str()],
        limit,
    )?;
    assert_eq!(exited.code(), Some(2), "stderr:\n{}", exited.stderr);
    for case in &cases {
        assert_problem(&exited.stderr, &file, &text, case)
            .with_context(|| format!("switchyard validate, case {}", case.name))?;
    }
    let problems = exited
        .stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{}:", file.display())))
        .count();
    assert_eq!(
        problems,
        cases.len(),
        "one problem each:\n{}",
        exited.stderr
    );

    // A config whose plugins all load validates.
    let good = format!(
        "{HEAD}{}\n[[route]]\nname = \"r\"\nmatch = \"t.>\"\nfilters = [\"ok\"]\nrouter = \"by-content\"\nto = [\"out\"]\n{}{}",
        output("out"),
        entry_at(
            "ok",
            &{
                let p = dir.path().join("keep.wasm");
                std::fs::write(&p, assemble(&wat_filter(""))?)?;
                p
            },
            ""
        ),
        entry(
            "by-content",
            "content_router",
            r#"config = { rules = [{ topic = "t.a", to = ["out"] }] }"#
        )?,
    );
    let file = dir.write("good.toml", &good)?;
    let exited = cli::run(
        ["validate".as_ref(), "--config".as_ref(), file.as_os_str()],
        limit,
    )?;
    assert_eq!(
        exited.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        exited.stdout,
        exited.stderr
    );
    assert!(
        exited.stdout.contains("ok (") && exited.stdout.contains("2 plugins"),
        "{}",
        exited.stdout
    );
    println!("refused at load: {:?}", started.elapsed());
    Ok(())
}

#[test]
fn a_plugin_path_is_resolved_against_the_config_files_directory() -> Result<()> {
    // Not the working directory: the router runs from its own temp dir,
    // the config names the plugin relative to where the config is.
    let dir = TempDir::new()?;
    std::fs::create_dir_all(dir.path().join("conf/wasm"))?;
    std::fs::copy(
        plugins::wasm("attr_filter")?,
        dir.path().join("conf/wasm/f.wasm"),
    )?;
    let text = format!(
        "{HEAD}{}\n[[route]]\nname = \"r\"\nmatch = \"t.>\"\nfilters = [\"f\"]\nto = [\"out\"]\n\n[[plugin]]\nname = \"f\"\npath = \"wasm/f.wasm\"\nconfig = {{ key = \"level\" }}\n",
        output("out")
    );
    let file = dir.path().join("conf/switchyard.toml");
    std::fs::write(&file, text)?;
    let validate = |config: &Path| {
        cli::run(
            ["validate".as_ref(), "--config".as_ref(), config.as_os_str()],
            Duration::from_secs(60),
        )
    };
    let exited = validate(&file)?;
    assert_eq!(exited.code(), Some(0), "stderr:\n{}", exited.stderr);
    // The same file one directory up no longer finds it.
    let moved = dir.path().join("switchyard.toml");
    std::fs::rename(&file, &moved)?;
    let exited = validate(&moved)?;
    assert_eq!(exited.code(), Some(2), "stderr:\n{}", exited.stderr);
    assert!(
        exited.stderr.contains("wasm/f.wasm: No such file"),
        "{}",
        exited.stderr
    );
    Ok(())
}
