//! The files a log lives in, behind a small trait: the real directory
//! ([`Directory`]) and, for tests and fuzzing, one in memory that loses at
//! a simulated crash every write no sync covered
//! ([`super::MemoryStorage`]).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One directory of named files.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// The names of the files in it.
    ///
    /// # Errors
    /// The directory cannot be read.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens `name` for appending and reading, creating it if missing.
    ///
    /// # Errors
    /// It cannot be opened or created.
    fn open(&self, name: &str) -> io::Result<Arc<dyn Segment>>;
    /// Deletes `name`.
    ///
    /// # Errors
    /// It cannot be removed.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Replaces `name` with `data` atomically and durably: after a crash the
    /// file holds either the old or the new contents, whole.
    ///
    /// # Errors
    /// Writing, syncing or renaming failed.
    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Reads all of `name`, or `None` when there is no such file.
    ///
    /// # Errors
    /// It exists but cannot be read.
    fn read_all(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Makes the creation and removal of files durable (fsync of the
    /// directory).
    ///
    /// # Errors
    /// The sync failed.
    fn sync_dir(&self) -> io::Result<()>;
}

/// One open file of a [`Storage`].
pub trait Segment: Send + Sync + fmt::Debug {
    /// Its length in bytes.
    ///
    /// # Errors
    /// Its metadata cannot be read.
    fn size(&self) -> io::Result<u64>;
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end.
    ///
    /// # Errors
    /// The read failed.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Appends `data` at the end.
    ///
    /// # Errors
    /// The write failed (`ENOSPC` among others); part of `data` may have
    /// been written, so the caller truncates back to where it was.
    fn append(&self, data: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    ///
    /// # Errors
    /// The truncation failed.
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// Makes what was appended durable (`fdatasync`).
    ///
    /// # Errors
    /// The sync failed.
    fn sync(&self) -> io::Result<()>;
}

/// A real directory.
#[derive(Debug)]
pub struct Directory {
    path: PathBuf,
}

impl Directory {
    /// The directory at `path`, created (with its parents) if missing.
    ///
    /// # Errors
    /// It cannot be created.
    pub fn create(path: &Path) -> io::Result<Self> {
        fs::create_dir_all(path)?;
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Storage for Directory {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn Segment>> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(self.path.join(name))?;
        Ok(Arc::new(DiskFile { file }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.path.join(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let tmp = self.path.join(format!("{name}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_data()?;
        }
        fs::rename(&tmp, self.path.join(name))?;
        self.sync_dir()
    }

    fn read_all(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path.join(name)) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}

#[derive(Debug)]
struct DiskFile {
    file: File,
}

impl Segment for DiskFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn append(&self, data: &[u8]) -> io::Result<()> {
        (&self.file).write_all(data)
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Holds a directory for one process: the lock is an open file with an
/// exclusive `flock`, released when this is dropped or the process dies.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Locks the directory at `path` (created if missing) for this process.
///
/// # Errors
/// Another process holds it (`WouldBlock`, naming the path), or the lock
/// file cannot be opened.
pub fn lock_dir(path: &Path) -> io::Result<DirLock> {
    fs::create_dir_all(path)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path.join("LOCK"))?;
    file.try_lock().map_err(|e| match e {
        fs::TryLockError::WouldBlock => io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("{} is in use by another router", path.display()),
        ),
        fs::TryLockError::Error(e) => e,
    })?;
    Ok(DirLock { _file: file })
}
