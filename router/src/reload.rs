//! What starts a reload: a saved config or plugin file, SIGHUP, or the admin
//! endpoint. Every trigger goes down one bounded channel of [`Trigger`]s; the
//! reload transaction reads it and reloads everything each time.
//!
//! ```text
//! notify thread ──raw events──> debounce task ──Trigger::File──┐
//!   (one watch per directory)     filter by name, wait quiet,  ├─> mpsc::Sender<Trigger>
//!                                 hash, emit if content moved  │     (bounded; a full channel
//! SIGHUP ─────────────── sighup() task ──Trigger::Signal───────┤      already holds a pending
//! POST /v1/reload ─────────────── admin ──Trigger::Admin───────┘      trigger: coalesce)
//! ```
//!
//! Files are watched through their directories, so every way an editor or
//! an orchestrator replaces a file is seen: writing in place, writing a
//! temporary file and renaming it over the original, deleting and
//! creating it again, and Kubernetes' symlink swap (`config.toml ->
//! ..data/config.toml`, `..data` re-pointed to a new timestamped
//! directory). The symlink chain of each watched path is followed, and a
//! change to any entry of it (`..data` above) counts as a change to the
//! file.
//!
//! Files: `watch` ([`Watcher`] and its task), `debounce` (the quiet-period
//! and cap logic), `chain` (symlink chains and content digests).

mod chain;
mod debounce;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::{self, error::TrySendError};

pub use watch::Watcher;

/// Why a reload was asked for. The receiver reloads everything whatever the
/// variant says; the variant is for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Watched files changed: `paths` are the ones whose content differs
    /// from when they were last reported (or first watched), spelled as
    /// they were given to [`Watcher::start`] or [`Watcher::set_others`], the
    /// config first, then the others in the order given.
    File {
        /// The changed files.
        paths: Vec<PathBuf>,
    },
    /// The process received SIGHUP.
    Signal,
    /// An operator asked through the admin endpoint (`POST /v1/reload`).
    Admin,
}

/// How file events become triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// After a relevant event, wait until this long passes with no further
    /// relevant event before emitting one trigger. Default 200 ms. Long
    /// enough to cover an editor's truncate-then-write or
    /// delete-then-create.
    pub debounce: Duration,
    /// Emit at the latest this long after the first relevant event, even if
    /// events keep coming (a file saved over and over). Default 1 s. A value
    /// below `debounce` caps it.
    pub max_delay: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            debounce: Duration::from_millis(200),
            max_delay: Duration::from_secs(1),
        }
    }
}

/// Errors starting the reload triggers. Each names the path or the signal
/// that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The triggers spawn tokio tasks, and there is no runtime here.
    #[error("the reload triggers must be started inside a tokio runtime")]
    NoRuntime,
    /// The path cannot be watched: it ends in `..` or is a root, so it names
    /// no file in a directory.
    #[error("cannot watch {path}: it does not name a file in a directory")]
    NotAFile {
        /// The path as given.
        path: PathBuf,
    },
    /// The directory that holds the watched file cannot be resolved: it is
    /// missing or not readable.
    #[error("cannot watch {path}: its directory {dir} cannot be resolved: {source}")]
    Directory {
        /// The path as given.
        path: PathBuf,
        /// The directory.
        dir: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The operating system's file watcher (inotify on Linux) cannot be
    /// created, for instance because the per-user instance limit is reached.
    #[error("cannot start the file watcher: {source}")]
    Backend {
        /// The underlying error.
        source: notify::Error,
    },
    /// The directory of a watched file cannot be watched (watch limit,
    /// permissions, removed meanwhile).
    #[error("cannot watch directory {dir} (for {path}): {source}")]
    Watch {
        /// The watched file as given.
        path: PathBuf,
        /// The directory.
        dir: PathBuf,
        /// The underlying error.
        source: notify::Error,
    },
    /// The SIGHUP handler cannot be installed.
    #[error("cannot install a handler for SIGHUP: {source}")]
    Signal {
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Installs a SIGHUP handler and spawns a task that sends
/// [`Trigger::Signal`] on `tx` for each SIGHUP. Installing it also stops
/// SIGHUP from ending the process (its default action). The task ends when
/// every receiver of `tx` is gone.
///
/// Never blocks: when the channel is full a trigger is already pending, and
/// this one is coalesced into it.
///
/// # Errors
/// [`Error::NoRuntime`] outside a tokio runtime; [`Error::Signal`] when the
/// handler cannot be installed.
pub fn sighup(tx: mpsc::Sender<Trigger>) -> Result<(), Error> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
    // `signal` needs the runtime's context; entering it keeps the error above
    // the only way this fails outside one.
    let _entered = runtime.enter();
    let mut hup = signal(SignalKind::hangup()).map_err(|source| Error::Signal { source })?;
    runtime.spawn(async move {
        loop {
            tokio::select! {
                received = hup.recv() => {
                    if received.is_none() {
                        break;
                    }
                    tracing::info!("SIGHUP received; reload triggered");
                    if !offer(&tx, Trigger::Signal) {
                        break;
                    }
                }
                () = tx.closed() => break,
            }
        }
    });
    Ok(())
}

/// Sends `trigger` without waiting. Returns false once the receiver is gone.
fn offer(tx: &mpsc::Sender<Trigger>, trigger: Trigger) -> bool {
    match tx.try_send(trigger) {
        Ok(()) => true,
        Err(TrySendError::Full(trigger)) => {
            tracing::debug!(?trigger, "a reload is already pending; trigger coalesced");
            true
        }
        Err(TrySendError::Closed(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_are_200ms_and_1s() {
        let settings = Settings::default();
        assert_eq!(settings.debounce, Duration::from_millis(200));
        assert_eq!(settings.max_delay, Duration::from_secs(1));
    }

    #[test]
    fn sighup_outside_a_runtime_is_an_error() {
        let (tx, _rx) = mpsc::channel(1);
        assert!(matches!(sighup(tx), Err(Error::NoRuntime)));
    }

    #[tokio::test]
    async fn a_full_channel_coalesces_and_a_closed_one_stops() {
        let (tx, mut rx) = mpsc::channel(1);
        assert!(offer(&tx, Trigger::Admin));
        assert!(offer(&tx, Trigger::Signal), "full: coalesced, not an error");
        assert_eq!(rx.recv().await, Some(Trigger::Admin));
        assert!(
            rx.try_recv().is_err(),
            "the coalesced trigger is not queued"
        );
        drop(rx);
        assert!(!offer(&tx, Trigger::Signal));
    }
}
