//! The `switchyard` binary: arguments, logging, config, run, exit code.
//!
//! Exit codes: 0 clean shutdown; 1 runtime failure; 2 invalid config;
//! 3 startup failure (a port cannot be bound, ...); 130 a second signal cut
//! the graceful shutdown short. The `plugin` commands: 0 done; 1 the build
//! or the plugin failed; 2 bad arguments or input. The `dlq` commands: 0
//! done; 1 the router refused or could not be reached (or a replay left
//! entries behind); 2 bad arguments or config. `curve-keypair`: 0 done; 1
//! no randomness.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use switchyard::plugin::tooling;
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
    Plugin(tooling::Command),
    /// List, show, replay and purge the dead-letter store of a running
    /// router, through its admin API.
    #[command(
        long_about = "List, show, replay and purge the dead-letter store of a running
router, through its admin API (--admin HOST:PORT, else the [router] admin
of --config).

  switchyard dlq list --route telemetry --reason too_large
  switchyard dlq show 42
  switchyard dlq replay 42 43                 back into their route
  switchyard dlq replay --route telemetry --into telemetry-retry
  switchyard dlq purge --reason verdict
  switchyard dlq purge --all

Exit codes: 0 done; 1 the router refused or could not be reached, or a
replay left entries behind; 2 bad arguments or config."
    )]
    Dlq(switchyard::admin::cli::Dlq),
    /// Print a fresh CURVE keypair, Z85-encoded, as `public = "..."` and
    /// `secret = "..."` lines.
    #[command(
        name = "curve-keypair",
        long_about = "Print a fresh CURVE keypair (from the OS random source), Z85-encoded.

  switchyard curve-keypair > config/keys/server.key

The output is itself a valid secret_key_file. Give the `public` line to the
peers: a client's `server_key`, or a line of a server's clients_file
(`edge-7 = \"...\"`). Keep the secret out of the config file.

Exit codes: 0 done; 1 the OS random source failed."
    )]
    CurveKeypair,
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
        Command::Validate { config } => match app::validate(&config) {
            Ok(found) => {
                for warning in &found.warnings {
                    eprintln!("{}: warning: {warning}", config.display());
                }
                println!("{}: ok ({found})", config.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run { config } => run(config),
        Command::Plugin(command) => tooling::execute(command),
        Command::Dlq(command) => switchyard::admin::cli::execute(command),
        Command::CurveKeypair => curve_keypair(),
    }
}

fn curve_keypair() -> ExitCode {
    match switchyard::zmtp::curve::CurveKeypair::generate() {
        Ok(pair) => {
            println!("public = \"{}\"", pair.public());
            println!("secret = \"{}\"", pair.secret_z85().as_str());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard: the OS random source failed: {e}");
            ExitCode::from(EXIT_RUNTIME)
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
