//! Watch paths → batches of changed files that should restart the backend.
//!
//! Ignored folders get no OS watch at all: the tree is walked once, honouring the built-in
//! ignores, `[watch] ignore` and `.gitignore`, and each kept folder is watched on its own.
//! Folders created later are walked and watched as they appear.
//!
//! A hostile tree never stops the watch: a folder devrun may not read (a database volume owned
//! by another user) is skipped with one warning that names the ignore glob silencing it, at
//! start or when it appears later; a watch root that is deleted is watched again when it comes
//! back.

use crate::config::{PollMode, WatchConfig};
use crate::poller::Poller;
use globset::{Glob, GlobSet, GlobSetBuilder};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;
use notify::event::{EventKind, ModifyKind};
use notify::RecursiveMode;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Folders that never hold code a backend should be restarted for.
pub const BUILTIN_IGNORED_DIRS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    ".venv",
    "venv",
    "node_modules",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
    ".nox",
    ".devrun",
    ".idea",
];

/// Editor swap, backup and lock files, and bytecode.
fn builtin_ignored_file(name: &str) -> bool {
    name.ends_with(".pyc")
        || name.ends_with(".pyo")
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with('~')
        || name.starts_with(".#")
        || name == "4913"
}

/// Decides which paths matter. Usable on its own (no OS watches involved).
pub struct Filter {
    root: PathBuf,
    include: GlobSet,
    ignore: GlobSet,
    use_gitignore: bool,
    /// Each folder's own `.gitignore` (and `.git/info/exclude` at a repository's top).
    gitignores: HashMap<PathBuf, Vec<Gitignore>>,
    /// Files wanted whatever the globs say (the env file).
    also: HashSet<PathBuf>,
}

fn globset(globs: &[String]) -> Result<GlobSet, globset::Error> {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        builder.add(Glob::new(glob)?);
    }
    builder.build()
}

impl Filter {
    pub fn new(config: &WatchConfig, root: &Path) -> Result<Filter, globset::Error> {
        let mut filter = Filter {
            root: root.to_path_buf(),
            include: globset(&config.include)?,
            ignore: globset(&config.ignore)?,
            use_gitignore: config.gitignore,
            gitignores: HashMap::new(),
            also: config.also.iter().cloned().collect(),
        };
        // .gitignore files above the watched folders apply too, up to the repository's top.
        for path in &config.paths {
            for dir in path.ancestors() {
                filter.load_gitignore(dir);
                if dir.join(".git").exists() {
                    break;
                }
            }
        }
        Ok(filter)
    }

    /// `path` relative to the project root, for glob matching and for display.
    pub fn relative<'a>(&self, path: &'a Path) -> &'a Path {
        path.strip_prefix(&self.root).unwrap_or(path)
    }

    fn load_gitignore(&mut self, dir: &Path) {
        if !self.use_gitignore {
            return;
        }
        let mut matchers = Vec::new();
        for file in [dir.join(".gitignore"), dir.join(".git/info/exclude")] {
            if file.is_file() {
                let mut builder = GitignoreBuilder::new(dir);
                builder.add(&file);
                if let Ok(matcher) = builder.build() {
                    matchers.push(matcher);
                }
            }
        }
        if matchers.is_empty() {
            self.gitignores.remove(dir);
        } else {
            self.gitignores.insert(dir.to_path_buf(), matchers);
        }
    }

    /// What git would say, from the nearest `.gitignore` that has an opinion.
    fn gitignored(&self, path: &Path, is_dir: bool) -> bool {
        for dir in path.ancestors().skip(1) {
            for matcher in self.gitignores.get(dir).into_iter().flatten() {
                match matcher.matched(path, is_dir) {
                    Match::Ignore(_) => return true,
                    Match::Whitelist(_) => return false,
                    Match::None => {}
                }
            }
        }
        false
    }

    fn ignored_by_glob(&self, path: &Path) -> bool {
        let relative = self.relative(path);
        relative
            .ancestors()
            .filter(|p| !p.as_os_str().is_empty())
            .any(|p| self.ignore.is_match(p))
    }

    /// A folder that gets no watch and whose contents never count: a built-in name, a folder
    /// an ignore glob names (`data`) or covers whole (`data/**`), or a gitignored one.
    pub fn ignores_dir(&self, dir: &Path) -> bool {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        BUILTIN_IGNORED_DIRS.contains(&name)
            || self.ignored_by_glob(dir)
            || self.ignored_by_glob(&dir.join("devrun-probe"))
            || self.gitignored(dir, true)
    }

    /// A file whose change restarts the backend.
    pub fn wants_file(&self, path: &Path) -> bool {
        if self.also.contains(path) {
            return true;
        }
        let relative = self.relative(path);
        let name = relative.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let in_ignored_dir = relative
            .parent()
            .into_iter()
            .flat_map(Path::components)
            .any(|c| BUILTIN_IGNORED_DIRS.iter().any(|d| c.as_os_str() == *d));
        !in_ignored_dir
            && !builtin_ignored_file(name)
            && self.include.is_match(relative)
            && !self.ignored_by_glob(path)
            && !self.gitignored(path, false)
    }
}

/// A batch of wanted changes and when the first and last of them happened.
#[derive(Debug, Clone)]
pub struct Batch {
    pub paths: Vec<PathBuf>,
    pub last_at: Instant,
}

type RawEvent = (Instant, notify::Result<notify::Event>);

/// How long `sync` waits for its fence before it trusts what the watcher delivered so far.
const FENCE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a watch root that was deleted is looked for.
const ROOT_RECHECK: Duration = Duration::from_millis(250);

/// Where the watch sends warnings (status lines) about folders it cannot watch.
pub type Warn = Box<dyn Fn(String) + Send>;

/// A watch root that is not there (deleted or moved away).
struct MissingRoot {
    path: PathBuf,
    /// Whether the user was told (once, when it is still missing at the next check).
    announced: bool,
}

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
    /// The folders of `[watch] paths`, watched again when they come back after a delete.
    roots: Vec<PathBuf>,
    missing: Vec<MissingRoot>,
    /// When missing roots are next looked for (a deadline, so a stream of events cannot put
    /// it off).
    recheck_at: Instant,
    /// Folders that could not be watched, each warned about once.
    skipped: HashSet<PathBuf>,
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
        let poll_reason = poll_reason(config);
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
            roots: config
                .paths
                .iter()
                .filter(|p| p.is_dir())
                .cloned()
                .collect(),
            missing: Vec::new(),
            recheck_at: Instant::now(),
            skipped: HashSet::new(),
            warn,
        };
        match watch.add_paths(&config.paths) {
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                watch.watcher = Box::new(poller(&watch.sender, config.poll_interval));
                watch.polling = true;
                watch.watched.clear();
                watch.missing.clear();
                watch.add_paths(&config.paths)?;
            }
            other => other?,
        }
        watch.watch_also(&config.also);
        if cfg!(target_os = "linux") && !watch.polling {
            let dir = root.join(crate::state::STATE_DIR);
            let watched = std::fs::create_dir_all(&dir)
                .map_err(notify::Error::io)
                .and_then(|()| watch.watcher.watch(&dir, RecursiveMode::NonRecursive));
            watch.fence_dir = watched.is_ok().then_some(dir);
        }
        Ok(watch)
    }

    /// Every wanted change the OS had queued when this was called, including what the
    /// watcher's thread has not delivered yet: on a loaded machine that thread can lag the
    /// writes by more than the debounce, so "no event for debounce_ms" alone would call a storm
    /// over while its last writes are still queued. It writes a fence file into `.devrun/` and
    /// reads events until the fence's own event arrives. Without a fence (polling, other OSes,
    /// `.devrun/` not writable, the fence late) it returns what has been delivered.
    pub async fn sync(&mut self) -> Batch {
        let mut batch = Batch {
            paths: Vec::new(),
            last_at: Instant::now(),
        };
        let fence = self.fence_dir.as_ref().and_then(|dir| {
            self.fences += 1;
            let path = dir.join(format!("fence-{}", self.fences));
            std::fs::write(&path, b"").is_ok().then_some(path)
        });
        let deadline = tokio::time::Instant::now() + FENCE_TIMEOUT;
        loop {
            let (at, event) = if fence.is_some() {
                match tokio::time::timeout_at(deadline, self.raw.recv()).await {
                    Ok(Some(raw)) => raw,
                    _ => {
                        // Late, or `.devrun/` was deleted and made anew without its watch.
                        if let Some(dir) = &self.fence_dir {
                            let _ = self.watcher.watch(dir, RecursiveMode::NonRecursive);
                        }
                        break;
                    }
                }
            } else {
                match self.raw.try_recv() {
                    Ok(raw) => raw,
                    Err(_) => break,
                }
            };
            if let (Some(fence), Ok(event)) = (&fence, &event) {
                if event.paths.contains(fence) {
                    break;
                }
            }
            self.absorb(event, at, &mut batch);
        }
        if let Some(fence) = fence {
            // Its removal is one more event, which the filter drops (`.devrun` is ignored).
            let _ = std::fs::remove_file(fence);
        }
        batch.paths.sort();
        batch.paths.dedup();
        batch
    }

    /// The env file's folder, when no watch path covers it.
    fn watch_also(&mut self, files: &[PathBuf]) {
        for dir in files.iter().filter_map(|f| f.parent()) {
            if !self.watched.contains(dir)
                && self.watcher.watch(dir, RecursiveMode::NonRecursive).is_ok()
            {
                self.watched.insert(dir.to_path_buf());
            }
        }
    }

    fn add_paths(&mut self, paths: &[PathBuf]) -> Result<(), notify::Error> {
        for path in paths {
            if self.roots.contains(path) {
                self.add_tree(path, None)?;
                if !self.watched.contains(path) && !path.is_dir() {
                    // Gone between the config check and now.
                    self.missing.push(MissingRoot {
                        path: path.clone(),
                        announced: false,
                    });
                }
            } else {
                // A single file: watched by itself.
                self.watcher.watch(path, RecursiveMode::NonRecursive)?;
            }
        }
        Ok(())
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// How many folders have an OS watch.
    pub fn watched_folders(&self) -> usize {
        self.watched.len()
    }

    /// Walks `top`, watching each kept folder; with `found`, collects the wanted files in it
    /// (for a folder that appeared after the watch began: its files may predate its watch).
    fn add_tree(
        &mut self,
        top: &Path,
        mut found: Option<&mut Vec<PathBuf>>,
    ) -> Result<(), notify::Error> {
        let mut stack = vec![top.to_path_buf()];
        while let Some(dir) = stack.pop() {
            if !self.watched.insert(dir.clone()) {
                continue;
            }
            self.filter.load_gitignore(&dir);
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.skipped.remove(&dir);
                }
                // Gone already (a short-lived folder): nothing to watch.
                Err(e) if matches!(&e.kind, notify::ErrorKind::PathNotFound) => {
                    self.watched.remove(&dir);
                    continue;
                }
                Err(e) if matches!(&e.kind, notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound) =>
                {
                    self.watched.remove(&dir);
                    continue;
                }
                // Out of watches: the caller falls back to polling.
                Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => return Err(e),
                // Unreadable (EACCES) or otherwise unwatchable: this folder only, never devrun.
                Err(e) => {
                    self.watched.remove(&dir);
                    let reason = match &e.kind {
                        notify::ErrorKind::Io(io) => io.to_string(),
                        _ => e.to_string(),
                    };
                    self.skip(&dir, &reason);
                    continue;
                }
            }
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    // Watched, but its contents cannot be listed: their changes still arrive.
                    self.skip(&dir, &e.to_string());
                    continue;
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                // Symlinked folders are not followed: they could loop or leave the project.
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    if !self.filter.ignores_dir(&path) {
                        stack.push(path);
                    }
                } else if let Some(found) = found.as_deref_mut() {
                    if self.filter.wants_file(&path) {
                        found.push(path);
                    }
                }
            }
        }
        Ok(())
    }

    /// Says once per folder that it is not watched, and how to silence that.
    fn skip(&mut self, dir: &Path, reason: &str) {
        if !self.skipped.insert(dir.to_path_buf()) {
            return;
        }
        let shown = self.filter.relative(dir).display().to_string();
        let glob = format!("{}/**", globset::escape(&shown));
        (self.warn)(format!(
            "cannot watch folder {shown} ({reason}): skipping it; changes in it will not \
             restart the backend. To silence this, add \"{glob}\" to [watch] ignore (or pass \
             --ignore '{glob}')"
        ));
    }

    /// Roots that went missing and are back: watched again (their files are the change).
    /// The first check that still misses one says so, once.
    fn recheck_roots(&mut self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut missing = std::mem::take(&mut self.missing);
        missing.retain_mut(|root| {
            let shown = self.filter.relative(&root.path).display().to_string();
            if root.path.is_dir() {
                let mut files = Vec::new();
                if self.add_tree(&root.path, Some(&mut files)).is_ok()
                    && self.watched.contains(&root.path)
                {
                    if root.announced {
                        (self.warn)(format!("watch path {shown} is back: watching it again"));
                    }
                    found.push(root.path.clone());
                    found.extend(files);
                    return false;
                }
            }
            // There but unreadable: `skip` has said so; it is retried like a missing one.
            if !root.announced && !root.path.exists() {
                root.announced = true;
                (self.warn)(format!(
                    "watch path {shown} is missing (deleted or moved): it will be watched again \
                     when it comes back"
                ));
            }
            true
        });
        self.missing = missing;
        found
    }

    fn forget_tree(&mut self, top: &Path) -> bool {
        let gone: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|p| p.starts_with(top))
            .cloned()
            .collect();
        for dir in &gone {
            self.watched.remove(dir);
            let _ = self.watcher.unwatch(dir);
        }
        !gone.is_empty()
    }

    /// The wanted paths of one OS event (keeping the watches in step with folders).
    fn process(&mut self, event: notify::Event) -> Vec<PathBuf> {
        if event.need_rescan() {
            // The OS dropped events (queue overflow): assume anything may have changed.
            return vec![self.filter.root.clone()];
        }
        let mut wanted = Vec::new();
        if matches!(event.kind, EventKind::Access(_)) {
            return wanted;
        }
        for path in event.paths {
            if path.file_name().is_some_and(|n| n == ".gitignore") {
                if let Some(dir) = path.parent() {
                    self.filter.load_gitignore(dir);
                }
                continue;
            }
            // A root deleted or moved away: its watch is gone with it, and nothing above it is
            // watched to see it come back, so it is looked for (recheck_roots), even if a new
            // one is already there.
            if self.roots.contains(&path)
                && matches!(
                    event.kind,
                    EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                )
                && !self.missing.iter().any(|m| m.path == path)
            {
                self.forget_tree(&path);
                self.missing.push(MissingRoot {
                    path: path.clone(),
                    announced: false,
                });
                self.recheck_at = Instant::now() + ROOT_RECHECK;
                wanted.push(path);
                continue;
            }
            let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            let appeared = matches!(
                event.kind,
                EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_)) | EventKind::Any
            );
            // A skipped folder whose permissions changed may be readable now.
            let retry = self.skipped.contains(&path)
                && matches!(event.kind, EventKind::Modify(ModifyKind::Metadata(_)));
            if is_dir {
                if (appeared || retry)
                    && !self.watched.contains(&path)
                    && !self.filter.ignores_dir(&path)
                {
                    if let Err(e) = self.add_tree(&path, Some(&mut wanted)) {
                        // Out of watches: this folder goes unwatched, and the user is told why.
                        self.skip(&path, &describe_notify_error(&e));
                    }
                }
                continue;
            }
            // A watched folder deleted or moved away may have held wanted files.
            if self.watched.contains(&path) && !path.exists() {
                if self.forget_tree(&path) {
                    wanted.push(path);
                }
                continue;
            }
            if self.filter.wants_file(&path) {
                wanted.push(path);
            }
        }
        wanted
    }

    /// The next batch of wanted changes: whatever is queued once one has arrived.
    /// Cancel-safe: nothing is lost if the future is dropped while waiting.
    pub async fn next(&mut self) -> Batch {
        loop {
            let received = if self.missing.is_empty() {
                self.raw.recv().await
            } else {
                tokio::select! {
                    received = self.raw.recv() => received,
                    _ = tokio::time::sleep_until(self.recheck_at.into()) => {
                        self.recheck_at = Instant::now() + ROOT_RECHECK;
                        let back = self.recheck_roots();
                        if back.is_empty() {
                            continue;
                        }
                        return Batch { paths: back, last_at: Instant::now() };
                    }
                }
            };
            let Some((at, event)) = received else {
                // The OS watcher is gone: never wake the supervisor again.
                return std::future::pending().await;
            };
            let mut batch = Batch {
                paths: Vec::new(),
                last_at: at,
            };
            self.absorb(event, at, &mut batch);
            while let Ok((at, event)) = self.raw.try_recv() {
                self.absorb(event, at, &mut batch);
            }
            if !batch.paths.is_empty() {
                batch.paths.sort();
                batch.paths.dedup();
                return batch;
            }
        }
    }

    fn absorb(&mut self, event: notify::Result<notify::Event>, at: Instant, batch: &mut Batch) {
        if let Ok(event) = event {
            let wanted = self.process(event);
            if !wanted.is_empty() {
                batch.last_at = at;
                batch.paths.extend(wanted);
            }
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

/// Why the watch polls, per `[watch] poll`: forced, or ("auto") the first watch path on a
/// filesystem whose notifications miss changes made from outside. None: OS notifications.
fn poll_reason(config: &WatchConfig) -> Option<String> {
    let every = format!("every {} ms", config.poll_interval.as_millis());
    match config.poll {
        PollMode::Never => None,
        PollMode::Always => Some(format!("polling {every} ([watch] poll = true)")),
        PollMode::Auto => config.paths.iter().find_map(|path| {
            let why = crate::sys::blind_filesystem(path)?;
            Some(format!(
                "polling {every}: {} is on {why}, whose change notifications miss edits made \
                 from outside (set [watch] poll = false to use them anyway)",
                path.display()
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(include: &[&str], ignore: &[&str], root: &Path) -> WatchConfig {
        WatchConfig {
            paths: vec![root.to_path_buf()],
            include: include.iter().map(|s| s.to_string()).collect(),
            ignore: ignore.iter().map(|s| s.to_string()).collect(),
            gitignore: true,
            debounce: Duration::from_millis(50),
            also: Vec::new(),
            poll: PollMode::Auto,
            poll_interval: Duration::from_millis(500),
        }
    }

    #[test]
    fn filter_keeps_code_and_drops_noise() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join(".gitignore"), "secret/\n*.gen.py\n!keep.gen.py\n").unwrap();
        let f = Filter::new(&config(&["**/*.py"], &["data/**"], root), root).unwrap();
        assert!(f.wants_file(&root.join("app/main.py")));
        assert!(f.wants_file(&root.join("main.py")));
        assert!(!f.wants_file(&root.join("notes.txt")));
        assert!(!f.wants_file(&root.join("data/x.py")));
        assert!(!f.wants_file(&root.join("app/__pycache__/x.py")));
        assert!(!f.wants_file(&root.join("app/.#main.py")));
        assert!(!f.wants_file(&root.join("app/x.gen.py")));
        assert!(f.wants_file(&root.join("app/keep.gen.py")));
        assert!(f.ignores_dir(&root.join("node_modules")));
        assert!(f.ignores_dir(&root.join("data")));
        assert!(f.ignores_dir(&root.join("secret")));
        assert!(!f.ignores_dir(&root.join("app")));
    }
}
