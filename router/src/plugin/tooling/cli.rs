//! `switchyard plugin ...`: the subcommands' arguments and the function
//! that runs one and says how the process exits. Main only parses and
//! hands over.
//!
//! Exit codes: 0 done; 1 the build failed, or the plugin failed on a
//! message or has problems; 2 bad arguments or input.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::{
    SdkSource, ToolingError, build_plugins, ensure_wasm_target, find_sdk, inspect_file,
    inspection_json, load_for_test, next_steps, run_jsonl, write_scaffold,
};

/// The build failed, or the plugin failed on a message or has problems.
const EXIT_FAILED: u8 = 1;
/// Bad arguments or input (the message names the file).
const EXIT_BAD_INPUT: u8 = 2;

/// The `switchyard plugin` subcommands, as clap parses them.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a filter plugin crate at DIR/NAME that builds as it is.
    ///
    /// Prints where it is and the commands to build and test it.
    ///
    /// The crate depends on the SDK by path: --sdk-path, else an `sdk/`
    /// beside DIR or the working directory or one of their parents (a
    /// Switchyard checkout), else the checkout this binary was built from;
    /// failing all three, on the registry's switchyard-sdk.
    New {
        /// The crate's name: lowercase letters, digits, '-' and '_',
        /// starting with a letter.
        name: String,
        /// Where to create the crate's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The SDK crate to depend on (a checkout's `sdk/` directory).
        #[arg(long, value_name = "PATH", env = "SWITCHYARD_SDK_PATH")]
        sdk_path: Option<PathBuf>,
    },
    /// Build a plugin crate for wasm32 and print the .wasm paths.
    ///
    /// Builds the crate (or workspace) at DIR with `cargo build --release
    /// --target wasm32-unknown-unknown`, installing that target with rustup
    /// first if it is missing, and prints the path of each .wasm file built,
    /// one per line. Cargo's progress and errors go to stderr.
    Build {
        /// The crate's directory (or its Cargo.toml).
        #[arg(long, value_name = "DIR", default_value = ".")]
        manifest_path: PathBuf,
        /// Cargo's target directory (default: cargo's, usually DIR/target).
        #[arg(long, value_name = "DIR")]
        target_dir: Option<PathBuf>,
    },
    /// Run messages (JSON Lines) through a plugin, without a router.
    ///
    /// Prints one JSON line per input line with its verdict, then a summary
    /// line on stderr.
    ///
    /// Input: one JSON object per line, {"topic": "a.b", "payload": "text"
    /// or {...}, "payload_base64": "...", "attributes": {"k": "v"},
    /// "priority": 0-9, "request": true}; only "topic" is required.
    ///
    /// Output: one JSON object per input line, {"line": N, "topic": ...,
    /// "verdict": "keep" | "drop" | "rewrite" | "reply" | "reject" |
    /// "outputs" | "default" | "dead_letter", ...}, or {"line": N, "error": ...} for a line that is
    /// not a message or a message the plugin failed on.
    ///
    /// Exit code: 0 when the plugin ran on every message, 1 when it failed
    /// on any, 2 for bad arguments, files or input lines.
    Test {
        /// The plugin module.
        plugin: PathBuf,
        /// The plugin's config, as JSON (the `config` table of its
        /// `[[plugin]]` entry).
        #[arg(long, default_value = "{}")]
        config: String,
        /// The messages, one JSON object per line; `-` is stdin.
        #[arg(long, value_name = "FILE", default_value = "-")]
        input: PathBuf,
        /// Messages per plugin call (the router batches up to the plugin's
        /// max_batch_messages); a failed call fails all of its messages.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        batch: u16,
    },
    /// Show a module's ABI version, kind, exports and imports.
    ///
    /// Also its size and SHA-256, and what would make a router refuse it
    /// (the exit code is 1 then).
    Inspect {
        /// The plugin module.
        plugin: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `switchyard plugin` subcommand: its output goes to stdout, a
/// failure is told on stderr as `switchyard: ...`; returns the exit code.
pub fn execute(command: Command) -> ExitCode {
    match dispatch(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::from(match e {
                ToolingError::Command { .. }
                | ToolingError::NoWasm(_)
                | ToolingError::Output(_) => EXIT_FAILED,
                _ => EXIT_BAD_INPUT,
            })
        }
    }
}

/// Runs `command`; [`execute`] tells its error and picks the exit code.
fn dispatch(command: Command) -> Result<ExitCode, ToolingError> {
    match command {
        Command::New {
            name,
            dir,
            sdk_path,
        } => {
            let here = PathBuf::from(".");
            let sdk = find_sdk(sdk_path.as_deref(), &[&dir, &here])?;
            if let SdkSource::Version(_) = sdk {
                eprintln!(
                    "switchyard: no Switchyard checkout found; the crate depends on {sdk} (pass --sdk-path to use a local sdk/)"
                );
            }
            let root = write_scaffold(&dir, &name, &sdk)?;
            print!("{}", next_steps(&root, &name, &sdk));
            Ok(ExitCode::SUCCESS)
        }
        Command::Build {
            manifest_path,
            target_dir,
        } => {
            ensure_wasm_target()?;
            for wasm in build_plugins(&manifest_path, target_dir.as_deref())? {
                println!("{}", wasm.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Test {
            plugin,
            config,
            input,
            batch,
        } => {
            let plugin = load_for_test(&plugin, &config)?;
            let input: Box<dyn BufRead> = if input == Path::new("-") {
                Box::new(std::io::stdin().lock())
            } else {
                let file = std::fs::File::open(&input).map_err(|source| ToolingError::Io {
                    path: input,
                    source,
                })?;
                Box::new(std::io::BufReader::new(file))
            };
            let summary = run_jsonl(&plugin, input, std::io::stdout().lock(), batch.into())?;
            eprintln!("{summary}");
            Ok(ExitCode::from(if summary.failed > 0 {
                EXIT_FAILED
            } else if summary.bad_lines > 0 {
                EXIT_BAD_INPUT
            } else {
                0
            }))
        }
        Command::Inspect { plugin, json } => {
            let report = inspect_file(&plugin)?;
            if json {
                println!("{}", inspection_json(&report));
            } else {
                print!("{report}");
            }
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            })
        }
    }
}
