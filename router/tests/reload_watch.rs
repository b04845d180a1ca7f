//! The reload triggers against real files: every way an editor or an
//! orchestrator saves a file ends in one trigger after the final content,
//! and nothing else triggers.
//!
//! Each test has its own directory under the system temp dir. Waits for a
//! trigger have a generous deadline; "nothing else arrives" is checked over
//! a bounded quiet window, which says nothing about how fast we are.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use switchyard::reload::{self, Settings, Trigger, Watcher};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

/// How long a trigger may take to arrive before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long to listen for a trigger that must not come.
const QUIET: Duration = Duration::from_millis(1500);

/// A directory of its own for one test, removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("switchyard-reload-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the test directory");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `name` (creating directories) and returns its path.
    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).expect("create the directory");
        }
        fs::write(&path, content).expect("write the file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn start(config: &Path, others: &[PathBuf]) -> (Watcher, mpsc::Receiver<Trigger>) {
    let (tx, rx) = mpsc::channel(8);
    let watcher =
        Watcher::start(config, others, Settings::default(), tx).expect("start the watcher");
    (watcher, rx)
}

async fn next(rx: &mut mpsc::Receiver<Trigger>) -> Trigger {
    timeout(DEADLINE, rx.recv())
        .await
        .expect("a trigger within the deadline")
        .expect("the trigger channel is open")
}

async fn quiet(rx: &mut mpsc::Receiver<Trigger>) {
    if let Ok(extra) = timeout(QUIET, rx.recv()).await {
        panic!("no further trigger expected, got {extra:?}");
    }
}

fn file(paths: &[&Path]) -> Trigger {
    Trigger::File {
        paths: paths.iter().map(|p| p.to_path_buf()).collect(),
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).expect("read the file")
}

#[tokio::test]
async fn writing_in_place_triggers_once() {
    let dir = Scratch::new("in-place");
    let config = dir.write("config.toml", "version = 1\n");
    let (_watcher, mut rx) = start(&config, &[]);

    fs::write(&config, "version = 2\n").expect("save");
    assert_eq!(next(&mut rx).await, file(&[&config]));
    assert_eq!(read(&config), "version = 2\n");
    quiet(&mut rx).await;
}

#[tokio::test]
async fn writing_a_temporary_file_and_renaming_it_over_triggers_once() {
    let dir = Scratch::new("rename");
    let config = dir.write("config.toml", "version = 1\n");
    let (_watcher, mut rx) = start(&config, &[]);

    let temp = dir.write(".config.toml.swp", "version = 2\n");
    fs::rename(&temp, &config).expect("rename over");
    assert_eq!(next(&mut rx).await, file(&[&config]));
    assert_eq!(read(&config), "version = 2\n");
    quiet(&mut rx).await;

    // The file is a new inode now; it is still watched through its directory.
    let temp = dir.write("config.toml~", "version = 3\n");
    fs::rename(&temp, &config).expect("rename over again");
    assert_eq!(next(&mut rx).await, file(&[&config]));
    assert_eq!(read(&config), "version = 3\n");
    quiet(&mut rx).await;
}

#[tokio::test]
async fn deleting_and_creating_again_triggers_once() {
    let dir = Scratch::new("recreate");
    let config = dir.write("config.toml", "version = 1\n");
    let (_watcher, mut rx) = start(&config, &[]);

    fs::remove_file(&config).expect("delete");
    fs::write(&config, "version = 2\n").expect("create again");
    assert_eq!(next(&mut rx).await, file(&[&config]));
    assert_eq!(read(&config), "version = 2\n");
    quiet(&mut rx).await;
}

#[tokio::test]
async fn a_truncated_half_write_then_the_rest_triggers_once_after_the_rest() {
    let dir = Scratch::new("half");
    let config = dir.write("config.toml", "version = 1\n");
    let (_watcher, mut rx) = start(&config, &[]);
    let full = "[router]\nname = \"site-42\"\nversion = 2\n";
    let (head, tail) = full.split_at(12);

    let mut out = fs::File::create(&config).expect("truncate");
    out.write_all(head.as_bytes())
        .expect("write the first half");
    // The scenario itself: a writer that pauses mid-file.
    tokio::time::sleep(Duration::from_millis(100)).await;
    out.write_all(tail.as_bytes()).expect("write the rest");
    drop(out);

    assert_eq!(next(&mut rx).await, file(&[&config]));
    assert_eq!(
        read(&config),
        full,
        "the trigger comes after the final content"
    );
    quiet(&mut rx).await;
}

#[tokio::test]
async fn fifty_saves_within_a_second_are_coalesced() {
    let dir = Scratch::new("fifty");
    let config = dir.write("config.toml", "version = 0\n");
    let (_watcher, mut rx) = start(&config, &[]);

    let path = config.clone();
    let saver = tokio::task::spawn_blocking(move || {
        let begin = std::time::Instant::now();
        let mut last_started = begin;
        for i in 1..=50u32 {
            // Paced against the start, not after each save, so slow saves do
            // not stretch the whole run: save i at (i - 1) * 20 ms.
            let due = begin + Duration::from_millis(20) * (i - 1);
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            last_started = std::time::Instant::now();
            fs::write(&path, format!("version = {i}\n")).expect("save");
        }
        Instant::from_std(last_started)
    });

    // Collect until the saver is done and a quiet window has passed.
    let mut triggers = Vec::new();
    let mut saver = Some(saver);
    let mut last_save = None;
    let give_up = Instant::now() + DEADLINE;
    loop {
        if let Some(handle) = saver.as_mut() {
            tokio::select! {
                done = handle => {
                    last_save = Some(done.expect("the saver ran"));
                    saver = None;
                }
                trigger = rx.recv() => triggers.push((Instant::now(), trigger.expect("open"))),
                () = tokio::time::sleep_until(give_up) => panic!("the saves did not finish"),
            }
        } else {
            match timeout(QUIET, rx.recv()).await {
                Ok(trigger) => triggers.push((Instant::now(), trigger.expect("open"))),
                Err(_) => break,
            }
            assert!(
                Instant::now() < give_up,
                "triggers kept coming: {triggers:?}"
            );
        }
    }
    let last_save = last_save.expect("the saver finished");
    assert!(
        (1..=2).contains(&triggers.len()),
        "50 saves gave {} triggers: {triggers:?}",
        triggers.len()
    );
    for (_, trigger) in &triggers {
        assert_eq!(trigger, &file(&[&config]));
    }
    let (last_at, _) = triggers.last().expect("at least one");
    assert!(
        *last_at >= last_save,
        "the last trigger comes after the final save"
    );
    assert_eq!(read(&config), "version = 50\n");
}

#[tokio::test]
async fn a_changed_plugin_file_triggers_with_its_path() {
    let dir = Scratch::new("plugin");
    let config = dir.write("config.toml", "version = 1\n");
    let plugin = dir.write("plugins/filter.wasm", "\0asm v1");
    let (_watcher, mut rx) = start(&config, std::slice::from_ref(&plugin));

    let temp = dir.write("plugins/filter.wasm.tmp", "\0asm v2");
    fs::rename(&temp, &plugin).expect("drop the new build into place");
    assert_eq!(next(&mut rx).await, file(&[&plugin]));
    quiet(&mut rx).await;

    // Both in one burst: one trigger naming both, the config first.
    fs::write(&plugin, "\0asm v3").expect("plugin");
    fs::write(&config, "version = 2\n").expect("config");
    assert_eq!(next(&mut rx).await, file(&[&config, &plugin]));
    quiet(&mut rx).await;
}

#[tokio::test]
async fn unrelated_files_and_unchanged_saves_do_not_trigger() {
    let dir = Scratch::new("unrelated");
    let config = dir.write("config.toml", "version = 1\n");
    let (_watcher, mut rx) = start(&config, &[]);

    dir.write("notes.txt", "hello");
    dir.write("config.toml.bak", "version = 9\n");
    fs::rename(dir.path("notes.txt"), dir.path("notes.md")).expect("rename");
    fs::remove_file(dir.path("notes.md")).expect("delete");
    // Saved unchanged, and read (as the reload does): same content, no reload.
    fs::write(&config, "version = 1\n").expect("save unchanged");
    assert_eq!(read(&config), "version = 1\n");
    quiet(&mut rx).await;

    // The watcher is alive: a real change still triggers.
    fs::write(&config, "version = 2\n").expect("save");
    assert_eq!(next(&mut rx).await, file(&[&config]));
}

#[tokio::test]
async fn a_change_and_a_change_back_in_separate_bursts_trigger_twice() {
    let dir = Scratch::new("back");
    let config = dir.write("config.toml", "version = 1\n");
    let (_watcher, mut rx) = start(&config, &[]);

    fs::write(&config, "version = 2\n").expect("save");
    assert_eq!(next(&mut rx).await, file(&[&config]));
    fs::write(&config, "version = 1\n").expect("save back");
    assert_eq!(next(&mut rx).await, file(&[&config]));
    quiet(&mut rx).await;
}

#[tokio::test]
async fn a_kubernetes_style_symlink_swap_triggers_and_moves_the_watch() {
    let dir = Scratch::new("k8s");
    dir.write("..2024_01/config.toml", "version = 1\n");
    dir.write("..2024_02/config.toml", "version = 2\n");
    symlink("..2024_01", dir.path("..data")).expect("link ..data");
    symlink("..data/config.toml", dir.path("config.toml")).expect("link config");
    let config = dir.path("config.toml");
    let (_watcher, mut rx) = start(&config, &[]);

    // Flip ..data atomically: a new link renamed over the old one.
    symlink("..2024_02", dir.path("..data_tmp")).expect("link ..data_tmp");
    fs::rename(dir.path("..data_tmp"), dir.path("..data")).expect("swap ..data");
    assert_eq!(next(&mut rx).await, file(&[&config]));
    assert_eq!(read(&config), "version = 2\n");
    quiet(&mut rx).await;

    // The old directory is removed, as the kubelet does: content unchanged.
    fs::remove_dir_all(dir.path("..2024_01")).expect("remove the old data");
    quiet(&mut rx).await;

    // The watch moved to the new target: an edit there is seen.
    fs::write(dir.path("..2024_02/config.toml"), "version = 3\n").expect("edit");
    assert_eq!(next(&mut rx).await, file(&[&config]));
    assert_eq!(read(&config), "version = 3\n");
}

#[tokio::test]
async fn set_others_replaces_the_watched_plugins() {
    let dir = Scratch::new("others");
    let config = dir.write("config.toml", "version = 1\n");
    let old = dir.write("old-plugins/a.wasm", "a1");
    let new = dir.write("new-plugins/b.wasm", "b1");
    let (watcher, mut rx) = start(&config, std::slice::from_ref(&old));

    watcher
        .set_others(std::slice::from_ref(&new))
        .expect("replace the plugin set");
    fs::write(&old, "a2").expect("no longer watched");
    quiet(&mut rx).await;
    fs::write(&new, "b2").expect("watched now");
    assert_eq!(next(&mut rx).await, file(&[&new]));

    // A path that cannot be watched is refused, naming it, and the set stays.
    let missing = dir.path("nowhere/c.wasm");
    let err = watcher
        .set_others(&[new.clone(), missing.clone()])
        .expect_err("its directory does not exist");
    assert!(matches!(err, reload::Error::Directory { .. }), "{err}");
    assert!(err.to_string().contains("nowhere"), "{err}");
    fs::write(&new, "b3").expect("still watched");
    assert_eq!(next(&mut rx).await, file(&[&new]));
    quiet(&mut rx).await;
}

#[tokio::test]
async fn dropping_the_watcher_stops_it() {
    let dir = Scratch::new("drop");
    let config = dir.write("config.toml", "version = 1\n");
    let (watcher, mut rx) = start(&config, &[]);
    drop(watcher);
    fs::write(&config, "version = 2\n").expect("save");
    let end = timeout(DEADLINE, rx.recv())
        .await
        .expect("the channel closes");
    assert_eq!(end, None, "no trigger after the watcher is dropped");
}

#[tokio::test]
async fn a_config_in_a_missing_directory_is_an_error_naming_it() {
    let dir = Scratch::new("missing");
    let (tx, _rx) = mpsc::channel(1);
    let config = dir.path("absent/config.toml");
    let err = Watcher::start(&config, &[], Settings::default(), tx).expect_err("no directory");
    assert!(err.to_string().contains("absent"), "{err}");
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let dir = Scratch::new("noruntime");
    let config = dir.write("config.toml", "");
    let (tx, _rx) = mpsc::channel(1);
    let err = Watcher::start(&config, &[], Settings::default(), tx).expect_err("no runtime");
    assert!(matches!(err, reload::Error::NoRuntime), "{err}");
}

#[tokio::test]
async fn sighup_sends_a_signal_trigger() {
    let (tx, mut rx) = mpsc::channel(1);
    // Installed before the signal is raised: SIGHUP no longer ends the process.
    reload::sighup(tx).expect("install the SIGHUP handler");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    assert_eq!(next(&mut rx).await, Trigger::Signal);
}
