//! Process signals: the first SIGTERM or SIGINT starts a graceful shutdown
//! (stop intake, drain queues up to the grace period); a second one of
//! either ends the process at once.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code used when a second signal cuts a graceful shutdown short.
pub const EXIT_FORCED: i32 = 130;

/// Errors installing the signal handlers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused a signal handler.
    #[error("cannot install a handler for {signal}: {source}")]
    Install {
        /// The signal's name.
        signal: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Installs SIGTERM and SIGINT handlers. The returned token is cancelled on
/// the first signal; the second signal exits the process immediately with
/// [`EXIT_FORCED`]. SIGHUP is left to the reload machinery.
///
/// # Errors
/// [`Error::Install`] when a handler cannot be installed.
pub fn install() -> Result<CancellationToken, Error> {
    let mut term = signal(SignalKind::terminate()).map_err(|source| Error::Install {
        signal: "SIGTERM",
        source,
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|source| Error::Install {
        signal: "SIGINT",
        source,
    })?;
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = first,
            "shutdown requested; draining (signal again to exit at once)"
        );
        trigger.cancel();
        let second = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = second, "second signal: exiting without draining");
        std::process::exit(EXIT_FORCED);
    });
    Ok(token)
}
