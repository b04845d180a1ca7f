//! A directory in memory, for tests and fuzzing: it keeps, per file, what a
//! sync made durable apart from what was only written, and a simulated
//! crash loses every unsynced byte but a torn prefix of them. It can also
//! be made to fail writes (a full disk), after writing part of them.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use super::storage::{Segment, Storage};

#[derive(Debug, Default)]
struct File {
    data: Vec<u8>,
    /// How much of `data` a sync covered (bytes past a truncation included
    /// until the next sync: a truncate is not durable either).
    synced: Vec<u8>,
    /// The file's creation was made durable by a directory sync.
    linked: bool,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    files: Mutex<BTreeMap<String, Arc<Mutex<File>>>>,
    /// Writes fail with `ENOSPC` (after writing half of their bytes).
    pub full: AtomicBool,
    /// `fdatasync`s done.
    pub syncs: AtomicU64,
    /// Appends wait while it is set (a disk that has fallen behind).
    hold: Mutex<bool>,
    released: Condvar,
    /// Appends waiting on `hold` now.
    held: AtomicU64,
}

/// Appends to segments wait until it is dropped: from
/// [`MemoryStorage::hold_appends`].
#[derive(Debug)]
pub struct Held(Arc<MemoryStorage>);

impl Drop for Held {
    fn drop(&mut self) {
        *locked(&self.0.hold) = false;
        self.0.released.notify_all();
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryStorage {
    /// An empty directory.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// What a power cut leaves: per file the synced bytes plus the first
    /// `tear(unsynced)` of the bytes written after them; files never linked
    /// by a directory sync are gone.
    pub fn crash(&self, mut tear: impl FnMut(usize) -> usize) {
        let mut files = locked(&self.files);
        files.retain(|_, f| locked(f).linked);
        for f in files.values() {
            let mut f = locked(f);
            let synced = f.synced.clone();
            let common = synced.len().min(f.data.len());
            let extra = if f.data[..common] == synced[..common] && f.data.len() > synced.len() {
                let unsynced = f.data.len() - synced.len();
                f.data[synced.len()..synced.len() + tear(unsynced).min(unsynced)].to_vec()
            } else {
                Vec::new()
            };
            let mut data = synced;
            data.extend_from_slice(&extra);
            f.data = data.clone();
            f.synced = data;
        }
        // The process is gone: every open handle is stale, but they are
        // only reachable through the dropped queue.
    }

    /// Makes appends to segments wait until the guard is dropped (drop it
    /// before the queue: closing one commits).
    pub fn hold_appends(self: &Arc<Self>) -> Held {
        *locked(&self.hold) = true;
        Held(Arc::clone(self))
    }

    /// How many appends wait on [`MemoryStorage::hold_appends`] now.
    pub fn appends_held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    /// The bytes of `name`.
    pub fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        locked(&self.files)
            .get(name)
            .map(|f| locked(f).data.clone())
    }

    /// Sets the bytes of `name`, durably (damage done from outside, or a
    /// file copied in).
    pub fn set_bytes(&self, name: &str, data: Vec<u8>) {
        let mut files = locked(&self.files);
        let mut f = locked(files.entry(name.to_owned()).or_default());
        f.synced = data.clone();
        f.data = data;
        f.linked = true;
    }

    /// The names of the segment files, in order.
    pub fn segments(&self) -> Vec<String> {
        locked(&self.files)
            .keys()
            .filter(|n| n.ends_with(".log"))
            .cloned()
            .collect()
    }
}

#[derive(Debug)]
struct MemoryFile {
    file: Arc<Mutex<File>>,
    storage: Arc<MemoryStorage>,
}

impl Storage for Arc<MemoryStorage> {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(locked(&self.files).keys().cloned().collect())
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn Segment>> {
        let file = Arc::clone(locked(&self.files).entry(name.to_owned()).or_default());
        Ok(Arc::new(MemoryFile {
            file,
            storage: Arc::clone(self),
        }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        locked(&self.files).remove(name);
        Ok(())
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        if self.full.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(28));
        }
        let file = File {
            data: data.to_vec(),
            synced: data.to_vec(),
            linked: true,
        };
        locked(&self.files).insert(name.to_owned(), Arc::new(Mutex::new(file)));
        Ok(())
    }

    fn read_all(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.bytes(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        for f in locked(&self.files).values() {
            locked(f).linked = true;
        }
        Ok(())
    }
}

impl Segment for MemoryFile {
    fn size(&self) -> io::Result<u64> {
        Ok(locked(&self.file).data.len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let f = locked(&self.file);
        let start = (offset as usize).min(f.data.len());
        let n = buf.len().min(f.data.len() - start);
        buf[..n].copy_from_slice(&f.data[start..start + n]);
        Ok(n)
    }

    fn append(&self, data: &[u8]) -> io::Result<()> {
        let storage = &self.storage;
        let mut hold = locked(&storage.hold);
        if *hold {
            storage.held.fetch_add(1, Ordering::SeqCst);
            while *hold {
                hold = storage
                    .released
                    .wait(hold)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            storage.held.fetch_sub(1, Ordering::SeqCst);
        }
        drop(hold);
        let mut f = locked(&self.file);
        if self.storage.full.load(Ordering::Relaxed) {
            f.data.extend_from_slice(&data[..data.len() / 2]);
            return Err(io::Error::from_raw_os_error(28));
        }
        f.data.extend_from_slice(data);
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        locked(&self.file).data.truncate(len as usize);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.storage.syncs.fetch_add(1, Ordering::Relaxed);
        let mut f = locked(&self.file);
        f.synced = f.data.clone();
        Ok(())
    }
}
