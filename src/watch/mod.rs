//! Watch paths → batches of changed files that should restart the backend.
//!
//! Ignored folders get no OS watch at all: the tree is walked once, honouring the built-in
//! ignores, `[watch] ignore` and `.gitignore`, and each kept folder is watched on its own.
//! Folders created later are walked and watched as they appear.
//!
//! A hostile tree never stops the watch: a folder devrun may not read (a database volume owned
//! by another user) is skipped with one warning that names the ignore glob silencing it, at
//! start or when it appears later; a watch root that is deleted, moved away or swapped for
//! another folder (the project folder itself re-cloned or restored from a copy) is watched
//! again as it is now (see `anchors`).
//!
//! - `settings`: `WatchConfig` and `PollMode`, and whether to poll.
//! - `filter`: which paths matter (`Filter`, `NEVER_PROJECT_DIRS`).
//! - `tree`: placing and dropping the OS watches, folder by folder.
//! - `anchors`: the folders watched by their path, checked for being swapped.
//! - `events`: OS events → batches (`Watch::next`, `Watch::sync`).

mod anchors;
mod events;
mod filter;
mod settings;
mod tree;
mod writes;

pub use filter::{Filter, NEVER_PROJECT_DIRS};
pub use settings::{PollMode, WatchConfig};

use crate::poller::Poller;
use anchors::{folder_id, Anchor, Kind};
use notify::RecursiveMode;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A batch of wanted changes and when the last of them happened.
#[derive(Debug, Clone)]
pub struct Batch {
    pub paths: Vec<PathBuf>,
    pub last_at: Instant,
    /// Every wanted file written so far was closed or renamed into place (an editor's last
    /// step), as the OS said by the end of this batch. Only inotify says so: elsewhere false.
    pub finished: bool,
}

type RawEvent = (Instant, notify::Result<notify::Event>);

/// Where the watch sends warnings (status lines) about folders it cannot watch.
pub type Warn = Box<dyn Fn(String) + Send>;

/// The live watch: OS watches on every kept folder, and the filter.
pub struct Watch {
    watcher: Box<dyn notify::Watcher + Send>,
    /// Set when the kept folders are polled (see `poll_reason`; without one, the OS refused
    /// more watches).
    pub polling: bool,
    /// Why polling was chosen by `[watch] poll` ("auto": which root sits on what filesystem).
    pub poll_reason: Option<String>,
    sender: mpsc::UnboundedSender<RawEvent>,
    raw: mpsc::UnboundedReceiver<RawEvent>,
    filter: Filter,
    /// `.devrun/`, watched on its own so a file written there marks a point in the OS's queue
    /// (Linux: inotify keeps one ordered queue for all watches). None where that cannot be had.
    fence_dir: Option<PathBuf>,
    fences: u64,
    watched: HashSet<PathBuf>,
    /// The folders watched by their path: the watch paths' folders, the env file's folder,
    /// `.devrun/`; each watched again as it is now when it is swapped or comes back.
    anchors: Vec<Anchor>,
    /// When the anchors are next looked at (a deadline, so a stream of events cannot put it
    /// off).
    recheck_at: Instant,
    /// Folders that could not be watched, each warned about once.
    skipped: HashSet<PathBuf>,
    /// Wanted files written (or created) and not yet closed (see `writes`).
    open_writes: HashSet<PathBuf>,
    warn: Warn,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("invalid glob: {0}")]
    Glob(#[from] globset::Error),
    #[error("{}", describe_notify_error(.0))]
    Notify(#[from] notify::Error),
}

fn describe_notify_error(e: &notify::Error) -> String {
    match e.kind {
        notify::ErrorKind::MaxFilesWatch => format!(
            "the OS refused more file watches ({e}); raise the limit with \
             `sudo sysctl fs.inotify.max_user_watches=524288` or ignore more folders"
        ),
        _ => format!("cannot watch {:?}: {e}", e.paths),
    }
}

impl Watch {
    /// Watches the kept folders with the OS's notifications; if the OS refuses more watches
    /// (inotify's limit), says so and polls the kept folders instead of giving up.
    pub fn start(config: &WatchConfig, root: &Path, warn: Warn) -> Result<Watch, WatchError> {
        let (sender, raw) = mpsc::unbounded_channel();
        let poll_reason = settings::poll_reason(config);
        let watcher: Box<dyn notify::Watcher + Send> = match poll_reason {
            Some(_) => Box::new(poller(&sender, config.poll_interval)),
            None => {
                let tx = sender.clone();
                Box::new(notify::recommended_watcher(move |event| {
                    // Stamped here, so the debounce measures quiet from the real event time.
                    let _ = tx.send((Instant::now(), event));
                })?)
            }
        };
        let mut watch = Watch {
            watcher,
            polling: poll_reason.is_some(),
            poll_reason,
            sender,
            raw,
            filter: Filter::new(config, root)?,
            watched: HashSet::new(),
            fence_dir: None,
            fences: 0,
            anchors: Vec::new(),
            recheck_at: Instant::now() + anchors::ANCHOR_CHECK,
            skipped: HashSet::new(),
            open_writes: HashSet::new(),
            warn,
        };
        match watch.add_paths(&config.paths) {
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                watch.watcher = Box::new(poller(&watch.sender, config.poll_interval));
                watch.polling = true;
                watch.watched.clear();
                watch.anchors.clear();
                watch.add_paths(&config.paths)?;
            }
            other => other?,
        }
        watch.watch_also(&config.also);
        if cfg!(target_os = "linux") && !watch.polling {
            watch.watch_fence_dir(&root.join(crate::state::STATE_DIR));
        }
        Ok(watch)
    }

    /// Makes and watches `.devrun/` for `sync`'s fences (an anchor: a new `.devrun/`, the
    /// project folder re-cloned, is watched again). Without it, `sync` has no fence.
    fn watch_fence_dir(&mut self, dir: &Path) {
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let mut anchor = Anchor::new(dir, Kind::Fence);
        anchor.id = folder_id(dir);
        if anchor.id.is_some() && self.watcher.watch(dir, RecursiveMode::NonRecursive).is_ok() {
            self.fence_dir = Some(dir.to_path_buf());
            self.anchors.push(anchor);
        }
    }
}

/// The polling watcher, sending into the same queue as the OS's.
fn poller(sender: &mpsc::UnboundedSender<RawEvent>, interval: Duration) -> Poller {
    let tx = sender.clone();
    Poller::start(
        move |event| {
            let _ = tx.send((Instant::now(), event));
        },
        interval,
    )
}
