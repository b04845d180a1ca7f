//! What the `switchyard plugin ...` commands do: [`Command`] (their
//! arguments) and [`execute`], which main hands the parsed one to, built on
//! these functions: `new` ([`find_sdk`], [`write_scaffold`], [`next_steps`]), `build`
//! ([`ensure_wasm_target`], [`build_plugins`]), `test` ([`load_for_test`],
//! [`run_jsonl`], [`Summary`]), `inspect` ([`inspect_file`],
//! [`inspect_text`], [`inspection_json`]), and [`build_wasm`], which the
//! test suite uses for its fixtures.

use std::path::PathBuf;

mod build;
mod cli;
mod run;
mod scaffold;

pub use build::{build_plugins, build_wasm, ensure_wasm_target};
pub use cli::{Command, execute};
pub use run::{Summary, inspect_file, inspect_text, inspection_json, load_for_test, run_jsonl};
pub use scaffold::{SDK_VERSION, SdkSource, find_sdk, next_steps, scaffold, write_scaffold};

/// The wasm target plugins are built for.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Why a tooling command failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolingError {
    /// The plugin name cannot be a crate name.
    #[error(
        "plugin name {0:?}: use lowercase letters, digits, '-' and '_', starting with a letter"
    )]
    BadName(String),
    /// The target directory exists already.
    #[error("{0} already exists; pick another name or remove it")]
    Exists(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A command (cargo, rustup) could not run or failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and the end of its output.
        detail: String,
    },
    /// Loading or inspecting the plugin failed.
    #[error(transparent)]
    Plugin(#[from] super::Error),
    /// Writing the report failed.
    #[error("writing output: {0}")]
    Output(std::io::Error),
    /// A path given as the SDK is not the `switchyard-sdk` crate.
    #[error(
        "{0} is not the switchyard-sdk crate (no Cargo.toml with package name \"switchyard-sdk\")"
    )]
    NotSdk(PathBuf),
    /// There is no cargo package or workspace to build.
    #[error("{0}: no Cargo.toml there or in a parent directory")]
    NoManifest(PathBuf),
    /// The build succeeded but made no `.wasm` file.
    #[error(
        "{0}: built, but no crate there is a cdylib; add `crate-type = [\"cdylib\"]` under [lib]"
    )]
    NoWasm(PathBuf),
    /// The plugin config given for a test run is not JSON.
    #[error("plugin config is not valid JSON: {0}")]
    BadConfig(String),
    /// The file is not a WebAssembly module that compiles.
    #[error("{path}: {why}")]
    BadModule {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::Value;

    use super::build::wasm_artifacts;
    use super::scaffold::first_sdk;
    use super::*;

    /// A fresh scratch directory per test.
    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("switchyard-tooling-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch dir");
        dir
    }

    fn fake_sdk(dir: &Path, package: &str) {
        std::fs::create_dir_all(dir).expect("sdk dir");
        std::fs::write(
            dir.join("Cargo.toml"),
            format!("[package]\nname = \"{package}\"\nversion = \"0.1.0\"\n"),
        )
        .expect("sdk manifest");
    }

    #[test]
    fn find_sdk_takes_the_given_path_or_the_nearest_checkout() {
        let root = scratch("find-sdk");
        let sdk = root.join("checkout").join("sdk");
        fake_sdk(&sdk, "switchyard-sdk");
        let canonical = std::fs::canonicalize(&sdk)
            .expect("canonical")
            .to_string_lossy()
            .into_owned();

        for given in [sdk.clone(), sdk.join("Cargo.toml")] {
            match find_sdk(Some(&given), &[]).expect("an sdk") {
                SdkSource::Path(p) => assert_eq!(p, canonical),
                other => panic!("{other:?}"),
            }
        }
        let other = root.join("other");
        fake_sdk(&other, "not-the-sdk");
        for bad in [other.clone(), root.join("missing")] {
            let err = find_sdk(Some(&bad), &[]).expect_err("not the sdk");
            assert!(
                matches!(&err, ToolingError::NotSdk(p) if *p == bad),
                "{err}"
            );
            assert!(err.to_string().contains(&*bad.to_string_lossy()), "{err}");
        }

        // From a directory inside the checkout (which need not exist yet).
        let inside = root.join("checkout").join("plugins").join("new");
        match find_sdk(None, &[&inside]).expect("an sdk") {
            SdkSource::Path(p) => assert_eq!(p, canonical),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn no_sdk_among_the_candidates_means_the_registry() {
        let root = scratch("no-sdk");
        assert_eq!(first_sdk([root.join("sdk"), root.join("a/sdk")]), None);
        // The checkout this test runs in is found from anywhere, since the
        // binary was built from it.
        assert!(matches!(
            find_sdk(None, &[&root]).expect("an sdk"),
            SdkSource::Path(_)
        ));
        let v = SdkSource::Version(SDK_VERSION.to_owned());
        assert_eq!(
            v.to_string(),
            format!("switchyard-sdk {SDK_VERSION} from crates.io")
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn next_steps_name_the_crate_and_its_commands() {
        let text = next_steps(
            Path::new("plugins/my-filter"),
            "my-filter",
            &SdkSource::Path("/src/switchyard/sdk".into()),
        );
        assert!(
            text.starts_with(
                "created filter plugin my-filter in plugins/my-filter (switchyard-sdk at /src/switchyard/sdk)\n"
            ),
            "{text}"
        );
        assert!(text.contains("  cd plugins/my-filter\n"), "{text}");
        assert!(text.contains("switchyard plugin build"), "{text}");
        assert!(
            text.contains(
                "switchyard plugin test target/wasm32-unknown-unknown/release/my_filter.wasm --config '{\"drop_level\":\"debug\"}' --input msgs.jsonl"
            ),
            "{text}"
        );
    }

    #[test]
    fn summaries_read_as_a_sentence() {
        let s = Summary {
            messages: 3,
            bad_lines: 1,
            passed: 1,
            stopped: 1,
            failed: 1,
        };
        assert_eq!(
            s.to_string(),
            "3 messages: 1 passed, 1 stopped, 1 failed; 1 bad line"
        );
        let s = Summary {
            messages: 1,
            passed: 1,
            ..Summary::default()
        };
        assert_eq!(
            s.to_string(),
            "1 message: 1 passed, 0 stopped, 0 failed; 0 bad lines"
        );
    }

    #[test]
    fn wasm_artifacts_come_from_cargo_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","filenames":["/t/release/deps/libserde.rlib"]}"#,
            "\n",
            r#"{"reason":"compiler-artifact","filenames":["/t/release/a.wasm","/t/release/liba.rlib"]}"#,
            "\n",
            "not json\n",
            r#"{"reason":"compiler-message","filenames":["/t/release/x.wasm"]}"#,
            "\n",
            r#"{"reason":"compiler-artifact","filenames":["/t/release/a.wasm"]}"#,
            "\n",
            r#"{"reason":"compiler-artifact","filenames":["/t/release/b.wasm"]}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n",
        );
        assert_eq!(
            wasm_artifacts(messages),
            [
                PathBuf::from("/t/release/a.wasm"),
                PathBuf::from("/t/release/b.wasm")
            ]
        );
    }

    #[test]
    fn build_refuses_what_is_not_a_crate() {
        let root = scratch("build");
        let missing = root.join("missing");
        let err = build_plugins(&missing, None).expect_err("missing");
        assert!(
            matches!(&err, ToolingError::Io { path, .. } if *path == missing),
            "{err}"
        );
        if !root.ancestors().any(|a| a.join("Cargo.toml").is_file()) {
            let err = build_plugins(&root, None).expect_err("no manifest");
            assert!(
                matches!(&err, ToolingError::NoManifest(p) if *p == root),
                "{err}"
            );
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn bad_modules_and_configs_are_named() {
        let root = scratch("modules");
        let text = root.join("notes.txt");
        std::fs::write(&text, "hello").expect("write");
        let err = inspect_file(&text).expect_err("not a module");
        assert!(
            matches!(&err, ToolingError::BadModule { path, .. } if *path == text),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("notes.txt: not a core WebAssembly module")
        );
        let err = load_for_test(&text, "{}").expect_err("not a module");
        assert!(
            err.to_string()
                .contains("notes.txt: not a core WebAssembly module")
        );

        let err = load_for_test(&text, "{nope").expect_err("bad config");
        assert!(matches!(err, ToolingError::BadConfig(_)), "{err}");
        let missing = root.join("missing.wasm");
        let err = inspect_file(&missing).expect_err("missing");
        assert!(err.to_string().contains("missing.wasm"), "{err}");
        let err = load_for_test(&missing, "{}").expect_err("missing");
        assert!(err.to_string().contains("missing.wasm"), "{err}");

        // Valid wasm that is not a plugin: inspected, with problems.
        let empty = root.join("empty.wasm");
        std::fs::write(&empty, wat::parse_str("(module)").expect("wat")).expect("write");
        let report = inspect_file(&empty).expect("inspects");
        let json = inspection_json(&report);
        assert_eq!(json["ok"], false);
        assert_eq!(json["kind"], Value::Null);
        assert!(
            json["problems"]
                .as_array()
                .expect("problems")
                .iter()
                .any(|p| p == "missing export switchyard_batch"),
            "{json}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
