//! A polling watcher for folders whose filesystem does not report changes made from outside
//! (9p and drvfs of WSL2, virtiofs, NFS, SMB, FUSE), and the fallback when the OS refuses
//! more watches. Each watched folder (non-recursive, like the OS watches `Watch` places) is
//! listed every interval and each entry's size, modification time, change time and inode are
//! compared for *inequality*: a copy that keeps an older mtime (`cp -p`) still differs in its
//! change time and inode. notify's own `PollWatcher` compares mtimes in whole seconds with `>`,
//! which misses exactly that copy.

use notify::event::{CreateKind, DataChange, EventKind, ModifyKind, RemoveKind};
use notify::{Event, EventHandler, RecursiveMode, WatcherKind};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// What is compared of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    is_dir: bool,
    len: u64,
    modified: Option<SystemTime>,
    /// Unix: change time (ns) and inode, which no copy can carry over.
    changed: i64,
    inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let (changed, inode) = {
            use std::os::unix::fs::MetadataExt;
            (meta.ctime() * 1_000_000_000 + meta.ctime_nsec(), meta.ino())
        };
        #[cfg(not(unix))]
        let (changed, inode) = (0, 0);
        Stamp {
            is_dir: meta.is_dir(),
            len: meta.len(),
            modified: meta.modified().ok(),
            changed,
            inode,
        }
    }
}

/// A folder's entries by name; a watched single file is the entry with the empty name.
type Snapshot = HashMap<OsString, Stamp>;

/// None: the path is gone.
fn scan(path: &Path) -> Option<Snapshot> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let mut snapshot = Snapshot::new();
    if !meta.is_dir() {
        snapshot.insert(OsString::new(), Stamp::of(&meta));
        return Some(snapshot);
    }
    for entry in std::fs::read_dir(path).ok()?.flatten() {
        if let Ok(meta) = entry.metadata() {
            snapshot.insert(entry.file_name(), Stamp::of(&meta));
        }
    }
    Some(snapshot)
}

type Watched = Arc<Mutex<HashMap<PathBuf, Snapshot>>>;

pub struct Poller {
    watched: Watched,
    stop: Arc<AtomicBool>,
}

impl Poller {
    pub fn start<F: EventHandler>(handler: F, interval: Duration) -> Poller {
        let watched: Watched = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (w, s) = (watched.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut handler = handler;
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                poll_once(&w, &mut handler);
            }
        });
        Poller { watched, stop }
    }
}

/// One pass over every watched path, sending an event per difference.
fn poll_once(watched: &Watched, handler: &mut impl EventHandler) {
    let paths: Vec<PathBuf> = match watched.lock() {
        Ok(w) => w.keys().cloned().collect(),
        Err(_) => return,
    };
    for path in paths {
        // Listed without the lock, so `watch` never waits for a slow filesystem.
        let now = scan(&path);
        let old = match watched.lock() {
            Ok(mut w) => match now {
                Some(snapshot) => w.insert(path.clone(), snapshot),
                None => w.remove(&path),
            },
            Err(_) => return,
        };
        let Some(old) = old else { continue };
        let events = match watched.lock() {
            Ok(w) => match w.get(&path) {
                Some(now) => differences(&path, &old, now),
                None => vec![event(EventKind::Remove(RemoveKind::Any), path.clone())],
            },
            Err(_) => return,
        };
        for event in events {
            handler.handle_event(Ok(event));
        }
    }
}

/// One event per entry created, changed or removed between two listings of `path`.
fn differences(path: &Path, old: &Snapshot, now: &Snapshot) -> Vec<Event> {
    let at = |name: &OsString| match name.is_empty() {
        true => path.to_path_buf(),
        false => path.join(name),
    };
    let mut events = Vec::new();
    for (name, stamp) in now {
        let kind = match old.get(name) {
            None => EventKind::Create(CreateKind::Any),
            Some(before) if before != stamp => EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            Some(_) => continue,
        };
        events.push(event(kind, at(name)));
    }
    for name in old.keys().filter(|n| !now.contains_key(*n)) {
        events.push(event(EventKind::Remove(RemoveKind::Any), at(name)));
    }
    events
}

fn event(kind: EventKind, path: PathBuf) -> Event {
    Event::new(kind).add_path(path)
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl notify::Watcher for Poller {
    fn new<F: EventHandler>(handler: F, config: notify::Config) -> notify::Result<Poller> {
        let interval = config.poll_interval().unwrap_or(Duration::from_millis(500));
        Ok(Poller::start(handler, interval))
    }

    fn watch(&mut self, path: &Path, _mode: RecursiveMode) -> notify::Result<()> {
        let Some(snapshot) = scan(path) else {
            return Err(notify::Error::path_not_found().add_path(path.to_path_buf()));
        };
        if let Ok(mut w) = self.watched.lock() {
            w.insert(path.to_path_buf(), snapshot);
        }
        Ok(())
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        if let Ok(mut w) = self.watched.lock() {
            w.remove(path);
        }
        Ok(())
    }

    fn kind() -> WatcherKind {
        WatcherKind::PollWatcher
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::Watcher;

    /// Reads events until one names `path` (a pass may split one edit in two events).
    fn wait_for(rx: &std::sync::mpsc::Receiver<notify::Result<Event>>, path: &Path, gone: bool) {
        loop {
            let event = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
            if event.paths == [path] && event.kind.is_remove() == gone {
                return;
            }
        }
    }

    /// A copy that keeps an older mtime, a new file and a removed one are each seen.
    #[test]
    fn sees_an_older_mtime_copy_a_new_file_and_a_removal() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.py");
        std::fs::write(&file, "v1").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut poller = Poller::start(tx, Duration::from_millis(100));
        poller
            .watch(dir.path(), RecursiveMode::NonRecursive)
            .unwrap();
        // Same size, mtime set back: only the change time tells.
        std::fs::write(&file, "v2").unwrap();
        let old = std::fs::File::options().write(true).open(&file).unwrap();
        old.set_modified(SystemTime::UNIX_EPOCH).unwrap();
        wait_for(&rx, &file, false);
        std::fs::write(dir.path().join("b.py"), "").unwrap();
        wait_for(&rx, &dir.path().join("b.py"), false);
        std::fs::remove_file(&file).unwrap();
        wait_for(&rx, &file, true);
    }
}
