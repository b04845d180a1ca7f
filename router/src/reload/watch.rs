//! [`Watcher`]: one notify backend watching directories, the state it shares
//! with its task, and the task that turns raw events into triggers.
//!
//! notify calls back on its own thread; the callback only forwards the raw
//! event into a bounded channel (never blocking: when that channel is full
//! it raises a flag and the task re-checks every file). The task filters by
//! name, debounces ([`super::debounce`]), then, off the runtime's worker
//! threads, follows every symlink chain again, moves the directory watches
//! to match, digests the files the batch touched, and emits one
//! [`Trigger::File`] naming those whose digest moved.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::chain::{Chain, Digest, digest};
use super::{Error, Settings, Trigger, debounce, offer};

/// Raw events buffered between notify's thread and the task. A burst past
/// this is not lost: it turns into a re-check of every watched file.
const RAW_CAPACITY: usize = 1024;

type RawEvent = notify::Result<notify::Event>;

/// Watches the config file and a set of other files (the plugins the config
/// names) and sends a [`Trigger::File`] when their content changes.
///
/// Each file is watched through its directory and through every symlink on
/// its way (see the [module docs](super)). Events are debounced per
/// [`Settings`]: one trigger per burst, after the burst.
///
/// A trigger is sent only when a file's content (its SHA-256, or that it
/// cannot be read) differs from what it was when last reported, or when it
/// was first watched if never reported. So touching a file, changing its
/// metadata or saving it unchanged sends nothing; a file changed and changed
/// back within one burst sends nothing (the content is what was reported
/// last); a file changed in one burst and changed back in a later one sends
/// a trigger each time. A file that is deleted and not recreated within the
/// burst reports a change too (the reload will fail and say so).
///
/// Dropping the `Watcher` stops watching and ends its task.
pub struct Watcher {
    config: PathBuf,
    shared: Arc<Mutex<State>>,
    task: AbortHandle,
}

/// What the [`Watcher`] handle and its task share. The lock is held only
/// for quick bookkeeping and watch calls, never across an `.await`.
struct State {
    /// `None` once the [`Watcher`] is dropped.
    backend: Option<RecommendedWatcher>,
    /// The directories watched now.
    watched: BTreeSet<PathBuf>,
    /// The config first, then the others, without repeats.
    files: Vec<File>,
}

/// One watched file.
struct File {
    /// As given by the caller; reported in triggers as such.
    path: PathBuf,
    chain: Chain,
    /// What it read when last reported (or first watched).
    digest: Digest,
}

/// The files one burst of events touched.
#[derive(Default)]
struct Batch {
    /// Re-check every file: events were lost or the backend said so.
    all: bool,
    paths: BTreeSet<PathBuf>,
}

impl Watcher {
    /// Starts watching `config` and `others`, sending triggers on `tx`.
    /// Their current content is taken as applied: only later changes
    /// trigger. Start the watcher before reading the config for the first
    /// time, so that a save in between is not missed. The files themselves
    /// need not exist yet; their directories must.
    ///
    /// Blocking: reads every file once to digest it.
    ///
    /// # Errors
    /// [`Error::NoRuntime`] outside a tokio runtime, [`Error::NotAFile`] or
    /// [`Error::Directory`] for a path that cannot be watched,
    /// [`Error::Backend`] when the OS watcher cannot be created, and
    /// [`Error::Watch`] when a file's directory cannot be watched.
    pub fn start(
        config: &Path,
        others: &[PathBuf],
        settings: Settings,
        tx: mpsc::Sender<Trigger>,
    ) -> Result<Watcher, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let (raw_tx, raw_rx) = mpsc::channel(RAW_CAPACITY);
        let overflow = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&overflow);
        let backend = notify::recommended_watcher(move |event: RawEvent| {
            if raw_tx.try_send(event).is_err() {
                flag.store(true, Ordering::Relaxed);
            }
        })
        .map_err(|source| Error::Backend { source })?;
        let mut state = State {
            backend: Some(backend),
            watched: BTreeSet::new(),
            files: Vec::new(),
        };
        state.replace(config, others)?;
        let shared = Arc::new(Mutex::new(state));
        let task = runtime
            .spawn(run(Arc::clone(&shared), overflow, raw_rx, settings, tx))
            .abort_handle();
        Ok(Watcher {
            config: config.to_path_buf(),
            shared,
            task,
        })
    }

    /// Replaces the other watched files (after a reload, the plugins the new
    /// config names). Files already watched keep their state; new ones are
    /// taken as applied from now on. On an error nothing changes.
    ///
    /// Blocking: reads each new file once to digest it.
    ///
    /// # Errors
    /// [`Error::NotAFile`], [`Error::Directory`] or [`Error::Watch`] naming
    /// the first path that cannot be watched.
    pub fn set_others(&self, others: &[PathBuf]) -> Result<(), Error> {
        lock(&self.shared).replace(&self.config, others)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
        // Dropping the backend removes the OS watches and ends its thread.
        lock(&self.shared).backend = None;
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.shared);
        f.debug_struct("Watcher")
            .field(
                "files",
                &state
                    .files
                    .iter()
                    .map(|file| &file.path)
                    .collect::<Vec<_>>(),
            )
            .field("watched", &state.watched)
            .finish_non_exhaustive()
    }
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state stays consistent between statements; a panic elsewhere
    // while holding the lock does not make it unusable.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    /// Watches `config` and `others` (without repeats) instead of the
    /// current files. Files kept keep their digest; new ones are digested
    /// after their directories are watched, so that any change from then on
    /// shows either in an event or in the digest.
    fn replace(&mut self, config: &Path, others: &[PathBuf]) -> Result<(), Error> {
        let mut chains: Vec<(PathBuf, Chain)> = Vec::with_capacity(others.len() + 1);
        for path in std::iter::once(config).chain(others.iter().map(PathBuf::as_path)) {
            if chains.iter().all(|(seen, _)| seen != path) {
                chains.push((path.to_path_buf(), Chain::resolve(path)?));
            }
        }
        let old = std::mem::take(&mut self.files);
        let mut fresh = Vec::new();
        for (path, chain) in chains {
            let digest = match old.iter().find(|file| file.path == path) {
                Some(kept) => kept.digest,
                None => {
                    fresh.push(self.files.len());
                    None
                }
            };
            self.files.push(File {
                path,
                chain,
                digest,
            });
        }
        if let Err(e) = self.sync_dirs(true) {
            self.files = old;
            let _ = self.sync_dirs(false);
            return Err(e);
        }
        for index in fresh {
            let file = &mut self.files[index];
            file.digest = digest(&file.path);
        }
        Ok(())
    }

    /// Watches every directory the files' chains pass through and stops
    /// watching the rest. When `strict`, a file's own directory that cannot
    /// be watched is an error (and the watches added by this call are
    /// removed again); otherwise, and for directories further down a chain,
    /// it is logged: a dangling link may point into a directory that
    /// appears later, and the next event re-resolves it.
    fn sync_dirs(&mut self, strict: bool) -> Result<(), Error> {
        let State {
            backend,
            watched,
            files,
        } = self;
        let Some(backend) = backend.as_mut() else {
            return Ok(());
        };
        let mut added: Vec<PathBuf> = Vec::new();
        for file in files.iter() {
            for dir in file.chain.dirs() {
                if watched.contains(dir) || added.iter().any(|d| d == dir) {
                    continue;
                }
                match backend.watch(dir, RecursiveMode::NonRecursive) {
                    Ok(()) => added.push(dir.to_path_buf()),
                    Err(source) if strict && dir == file.chain.home() => {
                        for dir in &added {
                            let _ = backend.unwatch(dir);
                        }
                        return Err(Error::Watch {
                            path: file.path.clone(),
                            dir: dir.to_path_buf(),
                            source,
                        });
                    }
                    Err(e) => tracing::warn!(
                        file = %file.path.display(),
                        dir = %dir.display(),
                        "cannot watch directory ({e}); changes there are not seen until the next event re-resolves it"
                    ),
                }
            }
        }
        watched.extend(added);
        let wanted: BTreeSet<&Path> = files.iter().flat_map(|file| file.chain.dirs()).collect();
        let stale: Vec<PathBuf> = watched
            .iter()
            .filter(|dir| !wanted.contains(dir.as_path()))
            .cloned()
            .collect();
        for dir in stale {
            // Fails when the directory is gone, and its watch with it: fine.
            let _ = backend.unwatch(&dir);
            watched.remove(&dir);
        }
        Ok(())
    }
}

/// The task: batches of events in, triggers out. Ends when every receiver
/// of `tx` is gone or the backend is dropped.
async fn run(
    shared: Arc<Mutex<State>>,
    overflow: Arc<AtomicBool>,
    mut raw: mpsc::Receiver<RawEvent>,
    settings: Settings,
    tx: mpsc::Sender<Trigger>,
) {
    loop {
        let batch = tokio::select! {
            batch = debounce::gather(&mut raw, &settings, |event, batch| {
                absorb(&shared, &overflow, event, batch)
            }) => batch,
            () = tx.closed() => break,
        };
        let Some(batch) = batch else { break };
        let state = Arc::clone(&shared);
        let changed = match tokio::task::spawn_blocking(move || settle(&state, &batch)).await {
            Ok(changed) => changed,
            Err(e) => {
                tracing::warn!("re-checking the watched files failed: {e}");
                continue;
            }
        };
        if changed.is_empty() {
            tracing::debug!("watched files touched but their content is unchanged; no reload");
            continue;
        }
        tracing::info!(files = ?changed, "watched files changed; reload triggered");
        if !offer(&tx, Trigger::File { paths: changed }) {
            break;
        }
    }
}

/// Adds what `event` means to `batch`; returns whether it is relevant.
fn absorb(
    shared: &Mutex<State>,
    overflow: &AtomicBool,
    event: RawEvent,
    batch: &mut Batch,
) -> bool {
    let event = match event {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!("file watcher error ({e}); re-checking every watched file");
            batch.all = true;
            return true;
        }
    };
    if overflow.swap(false, Ordering::Relaxed) || event.need_rescan() {
        batch.all = true;
        return true;
    }
    if !can_change_content(&event.kind) {
        return false;
    }
    let mut state = lock(shared);
    if matches!(event.kind, EventKind::Remove(_)) {
        // If a watched directory itself went, its OS watch went with it;
        // forgetting it lets a later re-resolve watch it again.
        for path in &event.paths {
            state.watched.remove(path);
        }
    }
    let mut relevant = false;
    for file in &state.files {
        if event.paths.iter().any(|path| file.chain.contains(path)) {
            batch.paths.insert(file.path.clone());
            relevant = true;
        }
    }
    relevant
}

/// Opening and reading a file (the digest here, the reload itself) changes
/// nothing; closing it after writing ends a write.
fn can_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// After a burst: follows every chain again (a swapped symlink leads
/// elsewhere now), moves the watches, then digests the touched files and
/// returns those whose digest moved, recording the new digests. Blocking.
fn settle(shared: &Mutex<State>, batch: &Batch) -> Vec<PathBuf> {
    let touched: Vec<PathBuf> = {
        let mut state = lock(shared);
        for file in &mut state.files {
            match Chain::resolve(&file.path) {
                Ok(chain) => file.chain = chain,
                Err(e) => tracing::warn!("{e}"),
            }
        }
        let _ = state.sync_dirs(false);
        state
            .files
            .iter()
            .filter(|file| batch.all || batch.paths.contains(&file.path))
            .map(|file| file.path.clone())
            .collect()
    };
    // Digest without the lock: plugin files can be large.
    let digests: Vec<(PathBuf, Digest)> = touched
        .into_iter()
        .map(|path| {
            let digest = digest(&path);
            (path, digest)
        })
        .collect();
    let mut state = lock(shared);
    let mut changed = Vec::new();
    for file in &mut state.files {
        if let Some((_, digest)) = digests.iter().find(|(path, _)| *path == file.path)
            && *digest != file.digest
        {
            file.digest = *digest;
            changed.push(file.path.clone());
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Watcher>();
    }

    /// A state watching `dir/config.toml`, with no backend (nothing is
    /// really watched).
    fn state(dir: &Path) -> Mutex<State> {
        let path = dir.join("config.toml");
        let chain = Chain::resolve(&path).expect("resolve");
        Mutex::new(State {
            backend: None,
            watched: BTreeSet::new(),
            files: vec![File {
                path,
                chain,
                digest: None,
            }],
        })
    }

    fn event(kind: EventKind, path: PathBuf) -> RawEvent {
        Ok(notify::Event::new(kind).add_path(path))
    }

    #[test]
    fn events_are_filtered_by_name_and_kind() {
        use notify::event::{AccessKind, ModifyKind, RenameMode};
        let dir = std::env::temp_dir();
        let shared = state(&dir);
        let dir = std::fs::canonicalize(dir).expect("canonical temp dir");
        let overflow = AtomicBool::new(false);
        let mut batch = Batch::default();
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));

        assert!(!absorb(
            &shared,
            &overflow,
            event(rename, dir.join("other.toml")),
            &mut batch
        ));
        assert!(!absorb(
            &shared,
            &overflow,
            event(open, dir.join("config.toml")),
            &mut batch
        ));
        assert!(batch.paths.is_empty() && !batch.all);
        assert!(absorb(
            &shared,
            &overflow,
            event(rename, dir.join("config.toml")),
            &mut batch
        ));
        assert_eq!(
            batch.paths.iter().collect::<Vec<_>>(),
            vec![&std::env::temp_dir().join("config.toml")]
        );
        assert!(!batch.all);
    }

    #[test]
    fn lost_events_and_backend_errors_recheck_everything() {
        let dir = std::env::temp_dir();
        let shared = state(&dir);
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));

        let overflow = AtomicBool::new(true);
        let mut batch = Batch::default();
        assert!(absorb(
            &shared,
            &overflow,
            event(open, dir.join("x")),
            &mut batch
        ));
        assert!(batch.all && !overflow.load(Ordering::Relaxed));

        let mut batch = Batch::default();
        let rescan = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(absorb(&shared, &overflow, Ok(rescan), &mut batch));
        assert!(batch.all);

        let mut batch = Batch::default();
        let error = notify::Error::generic("queue overflow");
        assert!(absorb(&shared, &overflow, Err(error), &mut batch));
        assert!(batch.all);
    }

    #[test]
    fn reading_a_file_is_not_a_change() {
        use notify::event::{AccessKind, CreateKind, DataChange, ModifyKind};
        assert!(!can_change_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!can_change_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(can_change_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(can_change_content(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(can_change_content(&EventKind::Create(CreateKind::File)));
    }
}
