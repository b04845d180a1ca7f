//! Where a watched path leads: every directory entry whose replacement can
//! change what the path reads (the path itself, each symlink on the way,
//! the final target), and a digest of what it reads now.
//!
//! Symlinks in the directories *above* the watched file are resolved once
//! and taken as fixed; symlinks from the file name on are followed hop by
//! hop, so that re-pointing any of them (Kubernetes' `..data`) is seen.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::Error;

/// Symlinks followed before giving up on a loop (the kernel's limit is 40).
const MAX_HOPS: usize = 40;

/// What a file reads, as a SHA-256 digest; `None` when it cannot be read
/// (missing, a directory, no permission).
pub(super) type Digest = Option<[u8; 32]>;

/// The directory entries a watched path depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chain {
    /// The path with its directory canonicalized, every symlink met while
    /// following it, then the final target; in that order, without repeats.
    entries: Vec<PathBuf>,
}

impl Chain {
    /// Follows `path`.
    ///
    /// # Errors
    /// [`Error::NotAFile`] when `path` names no file in a directory;
    /// [`Error::Directory`] when its directory cannot be canonicalized.
    /// Anything past that (a dangling link, a missing target) is recorded
    /// as far as it goes, not an error: the file may appear later.
    pub(super) fn resolve(path: &Path) -> Result<Chain, Error> {
        let not_a_file = || Error::NotAFile {
            path: path.to_path_buf(),
        };
        let absolute = std::path::absolute(path).map_err(|_| not_a_file())?;
        let (Some(dir), Some(name)) = (absolute.parent(), absolute.file_name()) else {
            return Err(not_a_file());
        };
        let dir = fs::canonicalize(dir).map_err(|source| Error::Directory {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            source,
        })?;
        let start = dir.join(name);
        let mut entries = vec![start];
        // Components still to walk, last first, below the part `resolved`
        // holds; `resolved` never contains a symlink.
        let mut pending = vec![Step::Name(name.to_owned())];
        let mut resolved = dir;
        let mut hops = 0;
        while let Some(step) = pending.pop() {
            match step {
                Step::Root(root) => resolved = root,
                Step::Up => {
                    resolved.pop();
                }
                Step::Name(name) => {
                    let candidate = resolved.join(&name);
                    let link = match fs::symlink_metadata(&candidate) {
                        Ok(meta) if meta.file_type().is_symlink() && hops < MAX_HOPS => {
                            fs::read_link(&candidate).ok()
                        }
                        _ => None,
                    };
                    match link {
                        Some(target) => {
                            hops += 1;
                            push_unique(&mut entries, candidate);
                            pending.extend(steps(&target).into_iter().rev());
                        }
                        None => resolved = candidate,
                    }
                }
            }
        }
        push_unique(&mut entries, resolved);
        Ok(Chain { entries })
    }

    /// Whether `path` (as an event reports it) is one of the entries.
    pub(super) fn contains(&self, path: &Path) -> bool {
        self.entries.iter().any(|entry| entry == path)
    }

    /// The directory of the watched path itself: it must exist.
    pub(super) fn home(&self) -> &Path {
        self.entries
            .first()
            .and_then(|entry| entry.parent())
            .unwrap_or_else(|| Path::new("/"))
    }

    /// The directories to watch, without repeats, the home first.
    pub(super) fn dirs(&self) -> Vec<&Path> {
        let mut seen = HashSet::new();
        self.entries
            .iter()
            .filter_map(|entry| entry.parent())
            .filter(|dir| seen.insert(*dir))
            .collect()
    }

    /// Where the chain ends: the file that is read.
    #[cfg(test)]
    fn target(&self) -> &Path {
        self.entries.last().map_or(Path::new("/"), PathBuf::as_path)
    }
}

/// One component still to walk.
enum Step {
    /// Start again from this root.
    Root(PathBuf),
    /// Go to the parent.
    Up,
    /// Enter or read this entry.
    Name(OsString),
}

fn steps(target: &Path) -> Vec<Step> {
    target
        .components()
        .filter_map(|component| match component {
            Component::Prefix(_) | Component::RootDir => {
                Some(Step::Root(PathBuf::from(component.as_os_str())))
            }
            Component::CurDir => None,
            Component::ParentDir => Some(Step::Up),
            Component::Normal(name) => Some(Step::Name(name.to_owned())),
        })
        .collect()
}

fn push_unique(entries: &mut Vec<PathBuf>, entry: PathBuf) {
    if !entries.contains(&entry) {
        entries.push(entry);
    }
}

/// Digests what `path` reads now, following symlinks. Blocking: reads the
/// whole file.
pub(super) fn digest(path: &Path) -> Digest {
    let read = || -> io::Result<[u8; 32]> {
        let mut file = fs::File::open(path)?;
        let mut hasher = Sha256::new();
        io::copy(&mut file, &mut hasher)?;
        Ok(hasher.finalize().into())
    };
    read().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "switchyard-reload-chain-{test}-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create the test directory");
            TempDir(fs::canonicalize(&dir).expect("canonicalize the test directory"))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_plain_file_is_its_own_chain() {
        let tmp = TempDir::new("plain");
        let file = tmp.0.join("config.toml");
        fs::write(&file, "a").expect("write");
        let chain = Chain::resolve(&file).expect("resolve");
        assert_eq!(chain.entries, vec![file.clone()]);
        assert_eq!(chain.home(), tmp.0);
        assert_eq!(chain.dirs(), vec![tmp.0.as_path()]);
    }

    #[test]
    fn a_missing_file_in_an_existing_directory_resolves() {
        let tmp = TempDir::new("missing");
        let file = tmp.0.join("later.toml");
        let chain = Chain::resolve(&file).expect("resolve");
        assert_eq!(chain.entries, vec![file]);
        assert_eq!(digest(&tmp.0.join("later.toml")), None);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_path() {
        let tmp = TempDir::new("nodir");
        let file = tmp.0.join("nope").join("config.toml");
        let err = Chain::resolve(&file).expect_err("no directory");
        assert!(matches!(err, Error::Directory { .. }));
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let err = Chain::resolve(Path::new("/")).expect_err("root");
        assert!(matches!(err, Error::NotAFile { .. }), "{err}");
        let err = Chain::resolve(Path::new("a/..")).expect_err("dot dot");
        assert!(matches!(err, Error::NotAFile { .. }), "{err}");
    }

    #[test]
    fn a_kubernetes_style_chain_lists_every_hop() {
        let tmp = TempDir::new("k8s");
        let d = &tmp.0;
        fs::create_dir(d.join("..2024_1")).expect("mkdir");
        fs::write(d.join("..2024_1/config.toml"), "one").expect("write");
        symlink("..2024_1", d.join("..data")).expect("link data");
        symlink("..data/config.toml", d.join("config.toml")).expect("link file");

        let chain = Chain::resolve(&d.join("config.toml")).expect("resolve");
        assert_eq!(
            chain.entries,
            vec![
                d.join("config.toml"),
                d.join("..data"),
                d.join("..2024_1/config.toml")
            ]
        );
        assert_eq!(chain.dirs(), vec![d.as_path(), &d.join("..2024_1")]);
        assert!(chain.contains(&d.join("..data")));
        assert!(!chain.contains(&d.join("..data_tmp")));
    }

    #[test]
    fn absolute_and_dot_dot_links_are_followed() {
        let tmp = TempDir::new("abs");
        let d = &tmp.0;
        fs::create_dir_all(d.join("real/sub")).expect("mkdir");
        fs::create_dir(d.join("watched")).expect("mkdir");
        fs::write(d.join("real/f.wasm"), "x").expect("write");
        // watched/f.wasm -> /abs/real/sub/../f.wasm, where sub is a real dir.
        symlink(d.join("real/sub/../f.wasm"), d.join("watched/f.wasm")).expect("link");
        let chain = Chain::resolve(&d.join("watched/f.wasm")).expect("resolve");
        assert_eq!(chain.target(), d.join("real/f.wasm"));
        assert_eq!(chain.entries.len(), 2);
    }

    #[test]
    fn a_symlink_loop_ends_without_hanging() {
        let tmp = TempDir::new("loop");
        let d = &tmp.0;
        symlink("b", d.join("a")).expect("link");
        symlink("a", d.join("b")).expect("link");
        let chain = Chain::resolve(&d.join("a")).expect("resolve");
        assert!(chain.contains(&d.join("a")) && chain.contains(&d.join("b")));
        assert_eq!(digest(&d.join("a")), None);
    }

    #[test]
    fn digest_follows_content() {
        let tmp = TempDir::new("digest");
        let file = tmp.0.join("f");
        fs::write(&file, "one").expect("write");
        let one = digest(&file);
        assert!(one.is_some());
        fs::write(&file, "two").expect("write");
        assert_ne!(digest(&file), one);
        fs::write(&file, "one").expect("write");
        assert_eq!(digest(&file), one);
    }
}
