//! Hostile plugins: each misbehaviour is stopped, counted under its reason,
//! leaves the host (and other plugins) working, and the next batch runs on
//! a fresh instance; bad modules are refused at load, naming the problem.

use std::time::{Duration, Instant};

use switchyard::plugin::{
    Error, FailMode, FailurePolicy, FilterVerdict, Limits, Plugin, PluginError, Source, TrapReason,
};

use super::fixtures::{self, assemble, engine, load, wat_filter};
use super::host::msg;

/// Limits for hostile plugins: a short deadline only where the test is
/// about the deadline, so a busy machine cannot turn another failure into
/// a timeout.
fn limits_for(reason: TrapReason) -> Limits {
    Limits {
        deadline: if reason == TrapReason::Timeout {
            Duration::from_millis(50)
        } else {
            Duration::from_secs(10)
        },
        memory_bytes: 16 << 20,
        // Never trip in these tests: each checks one failure at a time.
        on_failure: FailurePolicy {
            trip_after: 1000,
            ..FailurePolicy::default()
        },
        ..Limits::default()
    }
}

/// Runs a hostile batch (first topic starts with `h`), expects `reason`,
/// then a normal batch on a fresh instance; checks the counter and that a
/// healthy plugin on the same engine is unaffected.
fn limits() -> Limits {
    limits_for(TrapReason::Trap)
}

fn hostile_then_fine(hostile: &str, reason: TrapReason) -> PluginError {
    let (engine, registry) = engine();
    let bytes = assemble(&wat_filter(hostile));
    let p = engine
        .load("bad", Source::Bytes(&bytes), "{}", limits_for(reason))
        .expect("loads: the misbehaviour is only triggered by a message");
    let good = load(&engine, "good", "attr_filter", r#"{"key":"k"}"#, limits());
    let mut inst = p.instance();
    let mut out = Vec::new();
    let started = Instant::now();
    let err = inst
        .run_filter(&[msg("hostile.x", ""), msg("d", "")], &mut out)
        .expect_err("the hostile batch fails");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped (took {:?})",
        started.elapsed()
    );
    assert_eq!(err.reason(), Some(reason), "{err}");
    assert!(out.is_empty());
    assert!(!inst.is_live(), "the failed instance is thrown away");
    assert_eq!(p.traps(reason), 1);
    let text = registry.encode();
    let line = format!(
        r#"switchyard_plugin_traps_total{{plugin="bad",reason="{}"}} 1"#,
        reason.as_str()
    );
    assert!(text.contains(&line), "{line} missing from:\n{text}");

    inst.run_filter(&[msg("fine", ""), msg("drop.me", "")], &mut out)
        .expect("the next batch runs on a fresh instance");
    assert_eq!(out, [FilterVerdict::Keep, FilterVerdict::Drop]);
    good.instance()
        .run_filter(&[msg("x", "")], &mut out)
        .expect("other plugins keep working");
    err
}

#[test]
fn an_infinite_loop_is_stopped_at_its_deadline() {
    let err = hostile_then_fine("(loop $spin (br $spin))", TrapReason::Timeout);
    assert!(err.to_string().contains("deadline"), "{err}");
}

#[test]
fn a_memory_grow_bomb_hits_the_cap() {
    let err = hostile_then_fine(
        "(loop $g (drop (memory.grow (i32.const 16))) (br $g))",
        TrapReason::Memory,
    );
    assert!(err.to_string().contains("memory cap"), "{err}");
}

#[test]
fn unreachable_is_counted() {
    hostile_then_fine("unreachable", TrapReason::Unreachable);
}

#[test]
fn deep_recursion_overflows_the_wasm_stack() {
    hostile_then_fine(
        "(drop (call $deep (i32.const 0)))",
        TrapReason::StackOverflow,
    );
}

#[test]
fn an_out_of_bounds_access_is_a_trap() {
    hostile_then_fine("(drop (i32.load (i32.const -4)))", TrapReason::Trap);
}

#[test]
fn a_result_pointer_outside_memory_is_a_bad_verdict() {
    let err = hostile_then_fine(
        "(return (i64.const 0x7fff000000001000))",
        TrapReason::BadVerdict,
    );
    assert!(err.to_string().contains("outside memory"), "{err}");
}

#[test]
fn a_result_length_outside_memory_is_a_bad_verdict() {
    hostile_then_fine("(return (call $ok (i32.const -1)))", TrapReason::BadVerdict);
}

#[test]
fn a_wrong_verdict_count_or_tag_is_a_bad_verdict() {
    // Status ok, count 7 for a batch of 2.
    hostile_then_fine(
        "(i32.store (i32.const 2048) (i32.const 0)) (i32.store (i32.const 2052) (i32.const 7)) (return (call $ok (i32.const 8)))",
        TrapReason::BadVerdict,
    );
    // Status ok, count 2, tags 9 and 0.
    hostile_then_fine(
        "(i32.store (i32.const 2048) (i32.const 0)) (i32.store (i32.const 2052) (i32.const 2)) (i32.store16 (i32.const 2056) (i32.const 9)) (return (call $ok (i32.const 10)))",
        TrapReason::BadVerdict,
    );
}

#[test]
fn an_error_status_is_a_plugin_error() {
    // Status 1, code 1, empty message.
    let err = hostile_then_fine(
        "(i32.store (i32.const 2048) (i32.const 1)) (i32.store (i32.const 2052) (i32.const 1)) (i32.store (i32.const 2056) (i32.const 0)) (return (call $ok (i32.const 12)))",
        TrapReason::PluginError,
    );
    assert!(matches!(err, PluginError::Guest { code: 1, .. }), "{err}");
}

fn sdk_hostile(mode: &str, limits: Limits) -> (Plugin, switchyard::metrics::Registry) {
    let (engine, registry) = engine();
    let p = load(
        &engine,
        "hostile",
        "hostile",
        &format!(r#"{{"mode":"{mode}"}}"#),
        limits,
    );
    (p, registry)
}

#[test]
fn an_sdk_plugin_that_panics_on_every_call_is_counted_then_tripped() {
    let limits = Limits {
        on_failure: FailurePolicy {
            mode: FailMode::Closed,
            trip_after: 3,
            ..FailurePolicy::default()
        },
        ..limits()
    };
    let (p, registry) = sdk_hostile("panic", limits);
    let mut inst = p.instance();
    let mut out = Vec::new();
    for _ in 0..3 {
        let err = inst.run_filter(&[msg("a.b", "")], &mut out).unwrap_err();
        assert_eq!(err.reason(), Some(TrapReason::Panic), "{err}");
        assert!(
            err.to_string().contains("hostile fixture panics on a.b"),
            "the panic message reaches the host: {err}"
        );
    }
    assert_eq!(p.traps(TrapReason::Panic), 3);
    let err = inst.run_filter(&[msg("a.b", "")], &mut out).unwrap_err();
    assert!(
        matches!(
            err,
            PluginError::CircuitOpen {
                mode: FailMode::Closed,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        registry
            .encode()
            .contains(r#"switchyard_plugin_circuit_open{plugin="hostile"} 1"#)
    );
}

#[test]
fn sdk_plugins_that_loop_hoard_or_recurse_are_stopped() {
    for (mode, reason) in [
        ("loop", TrapReason::Timeout),
        ("grow", TrapReason::Memory),
        ("recurse", TrapReason::StackOverflow),
    ] {
        let (p, _) = sdk_hostile(mode, limits_for(reason));
        let err = p
            .instance()
            .run_filter(&[msg("a", "")], &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.reason(), Some(reason), "{mode}: {err}");
    }
}

#[test]
fn a_plugin_that_refuses_to_start_is_refused_at_load() {
    let (engine, _) = engine();
    let err = engine
        .load(
            "h",
            Source::Path(&fixtures::wasm("hostile")),
            r#"{"mode":"panic_init"}"#,
            limits(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Init { .. }), "{err}");
    assert!(err.to_string().contains("refuses to start"), "{err}");
}

#[test]
fn a_plugin_whose_init_traps_is_refused_naming_init() {
    let text = wat_filter("nop").replace(
        r#"(func (export "switchyard_init") (param i32 i32) (result i64)"#,
        r#"(func (export "switchyard_init") (param i32 i32) (result i64) unreachable"#,
    );
    assert_ne!(text, wat_filter("nop"), "the WAT edit applies");
    let err = load_err(&assemble(&text));
    assert!(
        matches!(
            err,
            Error::Init {
                call: "switchyard_init",
                source: PluginError::Trap {
                    reason: TrapReason::Unreachable,
                    ..
                },
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(r#"plugin "m": switchyard_init trapped (unreachable): "#),
        "{text}"
    );
}

fn load_err(module: &[u8]) -> Error {
    let (engine, _) = engine();
    engine
        .load("m", Source::Bytes(module), "{}", limits())
        .expect_err("refused")
}

#[test]
fn a_wrong_abi_version_is_refused_naming_both_versions() {
    let text = wat_filter("nop").replace(
        r#"(func (export "switchyard_abi_version") (result i32) (i32.const 1))"#,
        r#"(func (export "switchyard_abi_version") (result i32) (i32.const 2))"#,
    );
    let err = load_err(&assemble(&text));
    assert!(
        matches!(
            err,
            Error::AbiVersion {
                found: 2,
                expected: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("ABI version 2"), "{err}");
}

#[test]
fn a_missing_abi_version_is_refused_naming_the_export() {
    let text = wat_filter("nop").replace(
        r#"(func (export "switchyard_abi_version") (result i32) (i32.const 1))"#,
        "",
    );
    let err = load_err(&assemble(&text));
    assert!(err.to_string().contains("switchyard_abi_version"), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn a_forbidden_import_is_refused_naming_it() {
    let text = wat_filter("nop").replace(
        "(memory (export",
        r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (memory (export"#,
    );
    let err = load_err(&assemble(&text));
    assert!(matches!(err, Error::ForbiddenImport { .. }), "{err}");
    assert!(
        err.to_string().contains("wasi_snapshot_preview1.fd_write"),
        "{err}"
    );
}

#[test]
fn a_100_mb_module_is_refused_before_compiling() {
    let mut big = b"\0asm\x01\0\0\0".to_vec();
    big.resize(100 << 20, 0);
    let err = load_err(&big);
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");

    // From a file: refused by its size, before it is read.
    let path = std::env::temp_dir().join(format!("switchyard-big-{}.wasm", std::process::id()));
    let f = std::fs::File::create(&path).expect("create");
    f.set_len(100 << 20).expect("sparse file");
    let (engine, _) = engine();
    let err = engine
        .load("big", Source::Path(&path), "{}", limits())
        .unwrap_err();
    let _ = std::fs::remove_file(&path);
    assert!(err.to_string().contains("104857600 bytes"), "{err}");
}

#[test]
fn text_and_components_are_refused_with_a_hint() {
    assert!(load_err(b"(module)").to_string().contains("text"));
    let component = b"\0asm\x0d\0\x01\0";
    assert!(load_err(component).to_string().contains("component"));
    assert!(load_err(b"garbage!").to_string().contains("magic"));
}

#[test]
fn a_memory_cap_above_the_engines_is_refused() {
    let (engine, _) = engine();
    let bytes = assemble(&wat_filter("nop"));
    let err = engine
        .load(
            "m",
            Source::Bytes(&bytes),
            "{}",
            Limits {
                memory_bytes: 1 << 40,
                ..limits()
            },
        )
        .unwrap_err();
    assert!(matches!(err, Error::Limits { .. }), "{err}");
}
