//! Folders watched by their path — the watch paths, the env file's folder, `.devrun/` — whose
//! folder may be swapped for another under devrun: deleted, moved away, recreated (a re-clone,
//! a restore from a copy).
//!
//! An OS watch follows an inode, not a path, and nothing above an anchor is watched to see it
//! go or come back. Worse, a folder that is some process's working directory (the project
//! folder is devrun's and the backend's) sends no delete event when it is removed: the kernel
//! keeps it until the last of them lets go. So besides reacting to the events that do come,
//! each anchor's identity (device and inode) is compared with the one watched every
//! [`ANCHOR_CHECK`]; one that is gone is looked for until it is back, one that is another
//! folder is watched as it is now.

use super::Watch;
use notify::event::{EventKind, ModifyKind};
use notify::RecursiveMode;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often each anchor is looked at (and a missing one looked for).
pub(super) const ANCHOR_CHECK: Duration = Duration::from_millis(250);

/// Which folder a path named when it was looked at: device and inode (elsewhere than Unix,
/// only that there was one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FolderId(u64, u64);

/// The folder at `path` now; None if there is none.
pub(super) fn folder_id(path: &Path) -> Option<FolderId> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_dir())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(FolderId(meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some(FolderId(0, 0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A folder of `[watch] paths`: its whole tree is watched, and its files are the change
    /// when it is watched anew.
    Tree,
    /// The folder of a file wanted whatever the globs say (the env file), when no watch path
    /// covers it: watched alone.
    Folder,
    /// `.devrun/`, watched for `sync`'s fences only: coming back is no change.
    Fence,
}

pub(super) struct Anchor {
    pub path: PathBuf,
    pub kind: Kind,
    /// The folder watched, taken before its watch was placed (so a swap after it is seen);
    /// None while it is missing (or there but could not be watched).
    pub id: Option<FolderId>,
    /// Whether the user was told it is missing (once, at the first check that misses it).
    pub announced: bool,
}

impl Anchor {
    pub fn new(path: &Path, kind: Kind) -> Anchor {
        Anchor {
            path: path.to_path_buf(),
            kind,
            id: None,
            announced: false,
        }
    }
}

impl Watch {
    /// Every anchor that is no longer the folder watched is forgotten, and every one that is
    /// at its path but not watched is watched as it is now. Returns the changes: each lost
    /// tree's path, and the wanted files of each folder watched anew (they may predate its
    /// watch). The first check that still misses a watch path says so, once.
    pub(super) fn check_anchors(&mut self) -> Vec<PathBuf> {
        let mut changed = Vec::new();
        for i in 0..self.anchors.len() {
            let now = folder_id(&self.anchors[i].path);
            let watched = self.anchors[i].id;
            if watched.is_some() && now == watched {
                continue;
            }
            if watched.is_some() {
                changed.extend(self.lose_anchor(i));
            }
            match now {
                Some(id) => self.watch_anchor(i, id, &mut changed),
                None => self.announce_missing(i),
            }
        }
        changed
    }

    /// An event saying anchor `path` was deleted or moved away (or another folder moved to
    /// its path): forgotten, to be looked for at the next check even if a new one is already
    /// there. False when `path` is no watched anchor.
    pub(super) fn lose_by_event(
        &mut self,
        path: &Path,
        kind: &EventKind,
        wanted: &mut Vec<PathBuf>,
    ) -> bool {
        let gone = matches!(
            kind,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
        );
        let Some(i) = self
            .anchors
            .iter()
            .position(|a| a.id.is_some() && a.path == path)
            .filter(|_| gone)
        else {
            return false;
        };
        wanted.extend(self.lose_anchor(i));
        self.recheck_at = Instant::now() + ANCHOR_CHECK;
        true
    }

    /// Drops anchor `i`'s watches; a tree's path is a change (it may have held wanted files).
    fn lose_anchor(&mut self, i: usize) -> Option<PathBuf> {
        let anchor = &mut self.anchors[i];
        anchor.id = None;
        let path = anchor.path.clone();
        match anchor.kind {
            Kind::Tree => {
                self.forget_tree(&path);
                Some(path)
            }
            Kind::Folder | Kind::Fence => {
                self.watched.remove(&path);
                let _ = self.watcher.unwatch(&path);
                None
            }
        }
    }

    /// Watches anchor `i`, whose folder is `id` (taken before the watch): on success, its
    /// files join `changed` and its id is kept; else it is tried again at the next check.
    pub(super) fn watch_anchor(&mut self, i: usize, id: FolderId, changed: &mut Vec<PathBuf>) {
        let path = self.anchors[i].path.clone();
        let watched = match self.anchors[i].kind {
            Kind::Tree => {
                let mut files = Vec::new();
                // Out of watches or unreadable (`skip` has said so): retried like a missing one.
                let ok =
                    self.add_tree(&path, Some(&mut files)).is_ok() && self.watched.contains(&path);
                if ok {
                    changed.push(path.clone());
                    changed.extend(files);
                }
                ok
            }
            Kind::Folder => {
                let ok = self
                    .watcher
                    .watch(&path, RecursiveMode::NonRecursive)
                    .is_ok();
                if ok {
                    self.watched.insert(path.clone());
                    changed.extend(self.filter.also_in(&path));
                }
                ok
            }
            Kind::Fence => self
                .watcher
                .watch(&path, RecursiveMode::NonRecursive)
                .is_ok(),
        };
        if !watched {
            return;
        }
        let anchor = &mut self.anchors[i];
        anchor.id = Some(id);
        if std::mem::take(&mut anchor.announced) {
            let shown = self.shown_root(&path);
            (self.warn)(format!("{shown} is back: watching it again"));
        }
    }

    fn announce_missing(&mut self, i: usize) {
        let anchor = &mut self.anchors[i];
        if anchor.kind != Kind::Tree || anchor.announced {
            return;
        }
        anchor.announced = true;
        let path = anchor.path.clone();
        let shown = self.shown_root(&path);
        (self.warn)(format!(
            "{shown} is missing (deleted or moved): it will be watched again when it comes back"
        ));
    }

    /// "watch path app", or "watch path . (the project folder /x/y)" for the root itself.
    fn shown_root(&self, path: &Path) -> String {
        let relative = self.filter.relative(path);
        match relative.as_os_str().is_empty() {
            true => format!("watch path . (the project folder {})", path.display()),
            false => format!("watch path {}", relative.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PollMode, Watch, WatchConfig};
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    /// Generous: this only bounds how long a broken build takes to fail.
    const WAIT: Duration = Duration::from_secs(20);

    fn config(paths: Vec<PathBuf>, also: Vec<PathBuf>, poll: PollMode) -> WatchConfig {
        WatchConfig {
            paths,
            include: vec!["**/*.py".to_string()],
            ignore: Vec::new(),
            gitignore: true,
            debounce: Duration::from_millis(50),
            also,
            poll,
            poll_interval: Duration::from_millis(100),
        }
    }

    fn watch(root: &Path, poll: PollMode) -> Watch {
        let config = config(vec![root.to_path_buf()], Vec::new(), poll);
        Watch::start(&config, root, Box::new(|_| {})).unwrap()
    }

    /// Batches until each of `paths` has come in one.
    async fn wait_for(watch: &mut Watch, paths: &[PathBuf]) {
        let mut missing = paths.to_vec();
        let seen = tokio::time::timeout(WAIT, async {
            while !missing.is_empty() {
                let batch = watch.next().await;
                missing.retain(|p| !batch.paths.contains(p));
            }
        });
        if seen.await.is_err() {
            panic!("{paths:?} never came in a batch");
        }
    }

    /// Deleted while something holds it open (as a working directory does, so the OS sends no
    /// event for the folder itself) and made anew at its path: the new folder is watched.
    async fn root_deleted_while_held_and_made_anew_is_watched(poll: PollMode) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("app.py"), "V = 1\n").unwrap();
        let mut watch = watch(&root, poll);

        let held = fs::File::open(&root).unwrap();
        fs::remove_dir_all(&root).unwrap();
        fs::create_dir(&root).unwrap();
        // Only the walk of the new folder can find this one.
        fs::write(root.join("new.py"), "V = 2\n").unwrap();
        wait_for(&mut watch, &[root.join("new.py")]).await;

        fs::write(root.join("later.py"), "V = 3\n").unwrap();
        wait_for(&mut watch, &[root.join("later.py")]).await;
        drop(held);
    }

    #[tokio::test]
    async fn a_root_deleted_while_held_and_made_anew_is_watched() {
        root_deleted_while_held_and_made_anew_is_watched(PollMode::Never).await;
    }

    #[tokio::test]
    async fn a_polled_root_deleted_while_held_and_made_anew_is_watched() {
        root_deleted_while_held_and_made_anew_is_watched(PollMode::Always).await;
    }

    /// `[watch] paths = ["app"]` and an env file beside it, the whole project moved away and
    /// copied back: the OS tells of the project folder's move only (it is watched for the env
    /// file), yet `app` is another folder too. Both are watched as they are now.
    #[tokio::test]
    async fn a_watch_path_and_the_env_files_folder_swapped_with_the_project_are_watched() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        let make = |root: &Path, version: &str| {
            fs::create_dir_all(root.join("app")).unwrap();
            fs::write(root.join("app/main.py"), version).unwrap();
            fs::write(root.join(".env"), version).unwrap();
        };
        make(&root, "1");
        let config = config(
            vec![root.join("app")],
            vec![root.join(".env")],
            PollMode::Never,
        );
        let mut watch = Watch::start(&config, &root, Box::new(|_| {})).unwrap();

        fs::rename(&root, dir.path().join("project.old")).unwrap();
        make(&root, "2");
        wait_for(&mut watch, &[root.join(".env"), root.join("app/main.py")]).await;

        fs::write(root.join("app/later.py"), "").unwrap();
        wait_for(&mut watch, &[root.join("app/later.py")]).await;
        fs::write(root.join(".env"), "3").unwrap();
        wait_for(&mut watch, &[root.join(".env")]).await;
    }
}
