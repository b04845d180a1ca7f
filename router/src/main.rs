//! The `switchyard` binary: arguments, logging, config, run, exit code.
//!
//! Exit codes: 0 clean shutdown; 1 runtime failure; 2 invalid config;
//! 3 startup failure (a port cannot be bound, ...); 130 a second signal cut
//! the graceful shutdown short. The `plugin` commands: 0 done; 1 the build
//! or the plugin failed; 2 bad arguments or input.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use switchyard::plugin::tooling::{self, ToolingError};
use switchyard::{app, config, shutdown};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "WebAssembly-extensible edge message router"
)]
struct Cli {
    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or
    /// `switchyard=debug,warn`.
    #[arg(long, global = true, env = "SWITCHYARD_LOG", default_value = "info")]
    log: String,
    /// Log line format.
    #[arg(long, global = true, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router.
    Run {
        /// The config file.
        #[arg(long, short, default_value = "config/switchyard.toml")]
        config: PathBuf,
    },
    /// Check a config file as `run` would, without binding any port: every
    /// value, name and plugin (each module is loaded and its config checked);
    /// print every problem with file, line and reason.
    Validate {
        /// The config file.
        #[arg(long, short, default_value = "config/switchyard.toml")]
        config: PathBuf,
    },
    /// Write, build, test and inspect plugins.
    #[command(
        subcommand,
        long_about = "Write, build, test and inspect plugins.

  switchyard plugin new drop-debug          scaffold a filter crate in ./drop-debug
  cd drop-debug
  switchyard plugin build                   build it for wasm32 (installs the target once)
  switchyard plugin test target/wasm32-unknown-unknown/release/drop_debug.wasm \\
      --config '{\"drop_level\":\"debug\"}' --input msgs.jsonl
  switchyard plugin inspect target/wasm32-unknown-unknown/release/drop_debug.wasm

Exit codes: 0 done; 1 the build failed, or the plugin failed on a message or
has problems; 2 bad arguments or input (the message names the file)."
    )]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
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

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_STARTUP: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli.log, cli.log_format) {
        eprintln!("switchyard: invalid --log filter {:?}: {e}", cli.log);
        return ExitCode::from(EXIT_CONFIG);
    }
    match cli.command {
        Command::Validate { config } => {
            let checked = config::Config::load(&config).and_then(|cfg| {
                app::check_plugins(&cfg, &config.display().to_string()).map(|n| (cfg, n))
            });
            match checked {
                Ok((cfg, plugins)) => {
                    println!(
                        "{}: ok ({} inputs, {} outputs, {} routes, {plugins} plugins)",
                        config.display(),
                        cfg.inputs.len(),
                        cfg.outputs.len(),
                        cfg.routes.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Run { config } => run(config),
        Command::Plugin(cmd) => match plugin(cmd) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("switchyard: {e}");
                ExitCode::from(match e {
                    ToolingError::Command { .. }
                    | ToolingError::NoWasm(_)
                    | ToolingError::Output(_) => EXIT_RUNTIME,
                    _ => EXIT_CONFIG,
                })
            }
        },
    }
}

fn plugin(cmd: PluginCommand) -> Result<ExitCode, ToolingError> {
    match cmd {
        PluginCommand::New {
            name,
            dir,
            sdk_path,
        } => {
            let here = PathBuf::from(".");
            let sdk = tooling::find_sdk(sdk_path.as_deref(), &[&dir, &here])?;
            if let tooling::SdkSource::Version(_) = sdk {
                eprintln!(
                    "switchyard: no Switchyard checkout found; the crate depends on {sdk} (pass --sdk-path to use a local sdk/)"
                );
            }
            let root = tooling::write_scaffold(&dir, &name, &sdk)?;
            print!("{}", tooling::next_steps(&root, &name, &sdk));
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Build {
            manifest_path,
            target_dir,
        } => {
            tooling::ensure_wasm_target()?;
            for wasm in tooling::build_plugins(&manifest_path, target_dir.as_deref())? {
                println!("{}", wasm.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Test {
            plugin,
            config,
            input,
            batch,
        } => {
            let plugin = tooling::load_for_test(&plugin, &config)?;
            let input: Box<dyn BufRead> = if input == Path::new("-") {
                Box::new(std::io::stdin().lock())
            } else {
                let file = std::fs::File::open(&input).map_err(|source| ToolingError::Io {
                    path: input,
                    source,
                })?;
                Box::new(std::io::BufReader::new(file))
            };
            let summary =
                tooling::run_jsonl(&plugin, input, std::io::stdout().lock(), batch.into())?;
            eprintln!("{summary}");
            Ok(ExitCode::from(if summary.failed > 0 {
                EXIT_RUNTIME
            } else if summary.bad_lines > 0 {
                EXIT_CONFIG
            } else {
                0
            }))
        }
        PluginCommand::Inspect { plugin, json } => {
            let report = tooling::inspect_file(&plugin)?;
            if json {
                println!("{}", tooling::inspection_json(&report));
            } else {
                print!("{report}");
            }
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_RUNTIME)
            })
        }
    }
}

fn run(path: PathBuf) -> ExitCode {
    let cfg = match config::Config::load(&path) {
        Ok(cfg) => cfg,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("switchyard")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(EXIT_STARTUP);
        }
    };
    runtime.block_on(async move {
        let stop = match shutdown::install() {
            Ok(token) => token,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return ExitCode::from(EXIT_STARTUP);
            }
        };
        let running = match app::App::start(cfg, path).await {
            Ok(app) => app,
            Err(app::Error::Plugins(errors)) => {
                eprintln!("{errors}");
                return ExitCode::from(EXIT_CONFIG);
            }
            Err(e) => {
                tracing::error!(error = %e, "startup failed");
                return ExitCode::from(EXIT_STARTUP);
            }
        };
        stop.cancelled().await;
        match running.shutdown().await {
            Ok(report) => {
                report.log();
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "shutdown failed");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    })
}

fn init_logging(
    filter: &str,
    format: LogFormat,
) -> Result<(), tracing_subscriber::filter::ParseError> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
