//! The event loop: OS events (or the poller's) → batches of wanted changes, keeping the watches
//! in step with folders that appear and disappear.

use super::anchors::{Kind, ANCHOR_CHECK};
use super::{describe_notify_error, Batch, Watch};
use notify::event::{EventKind, ModifyKind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long `sync` waits for its fence before it trusts what the watcher delivered so far.
const FENCE_TIMEOUT: Duration = Duration::from_secs(1);

impl Watch {
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
            finished: false,
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
                        // Late, or `.devrun/` (or the project folder) is another folder than
                        // the one watched: the anchors are watched as they are now.
                        let changed = self.check_anchors();
                        if !changed.is_empty() {
                            batch.last_at = Instant::now();
                            batch.paths.extend(changed);
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
        batch.finished = self.writes_finished();
        batch
    }

    /// The next batch of wanted changes: whatever is queued once one has arrived.
    /// Cancel-safe: nothing is lost if the future is dropped while waiting.
    pub async fn next(&mut self) -> Batch {
        loop {
            let received = if self.anchors.is_empty() {
                self.raw.recv().await
            } else {
                // A deadline, so a stream of events cannot put the check off.
                tokio::select! {
                    received = self.raw.recv() => received,
                    _ = tokio::time::sleep_until(self.recheck_at.into()) => {
                        self.recheck_at = Instant::now() + ANCHOR_CHECK;
                        let mut paths = self.check_anchors();
                        if paths.is_empty() {
                            continue;
                        }
                        paths.sort();
                        paths.dedup();
                        let finished = self.writes_finished();
                        return Batch { paths, last_at: Instant::now(), finished };
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
                finished: false,
            };
            self.absorb(event, at, &mut batch);
            while let Ok((at, event)) = self.raw.try_recv() {
                self.absorb(event, at, &mut batch);
            }
            if !batch.paths.is_empty() {
                batch.paths.sort();
                batch.paths.dedup();
                batch.finished = self.writes_finished();
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

    /// The wanted paths of one OS event (keeping the watches in step with folders).
    fn process(&mut self, event: notify::Event) -> Vec<PathBuf> {
        if event.need_rescan() {
            // The OS dropped events (queue overflow): assume anything may have changed.
            return vec![self.filter.root().to_path_buf()];
        }
        let mut wanted = Vec::new();
        self.track_writes(&event);
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
            if self.lose_by_event(&path, &event.kind, &mut wanted) {
                continue;
            }
            let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if is_dir {
                self.folder_appeared(path, &event.kind, &mut wanted);
                continue;
            }
            // A watched folder deleted or moved away may have held wanted files.
            if self.watched.contains(&path) && !path.exists() {
                if self.forget_tree(&path) {
                    wanted.push(path);
                }
                continue;
            }
            if self.filter.wants_file(&path)
                && (self.in_a_watch_path(&path) || self.filter.is_also(&path))
            {
                wanted.push(path);
            }
        }
        wanted
    }

    /// Under a folder of `[watch] paths` (not only in a folder watched for one file).
    fn in_a_watch_path(&self, path: &std::path::Path) -> bool {
        self.anchors
            .iter()
            .any(|a| a.kind == Kind::Tree && path.starts_with(&a.path))
    }

    /// A folder `dir` was named by an event: watched (with its tree) if it is new, or if it was
    /// skipped and its permissions changed (it may be readable now).
    fn folder_appeared(&mut self, dir: PathBuf, kind: &EventKind, wanted: &mut Vec<PathBuf>) {
        let appeared = matches!(
            kind,
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_)) | EventKind::Any
        );
        let retry = self.skipped.contains(&dir)
            && matches!(kind, EventKind::Modify(ModifyKind::Metadata(_)));
        // A lost watch path that comes back where its parent is watched (for the config file,
        // say) is its anchor's to watch again, and to say so.
        let lost = self
            .anchors
            .iter()
            .position(|a| a.kind == Kind::Tree && a.id.is_none() && a.path == dir);
        if let (true, Some(i)) = (appeared, lost) {
            if let Some(id) = super::anchors::folder_id(&dir) {
                self.watch_anchor(i, id, wanted);
            }
            return;
        }
        // Only inside a watch path: a folder watched alone for one file (the env file's, the
        // config file's) gets no tree for a folder that appears in it.
        if (appeared || retry)
            && self.in_a_watch_path(&dir)
            && !self.watched.contains(&dir)
            && !self.filter.ignores_dir(&dir)
        {
            if let Err(e) = self.add_tree(&dir, Some(wanted)) {
                // Out of watches: this folder goes unwatched, and the user is told why.
                self.skip(&dir, &describe_notify_error(&e));
            }
        }
    }
}
