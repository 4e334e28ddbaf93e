//! Settling: between the stop of one generation and the start of the next, a burst of saves is
//! let finish, so the next process starts with the code as it is after the last save.
//!
//! The next generation starts after `debounce_ms` of quiet, or the settle ceiling. One file
//! whose write is finished (closed after writing, or renamed into place: an editor's last step,
//! as inotify reports it) starts sooner: after a fifth of the debounce, once the OS's queue
//! (the watch's fence) holds nothing more. A storm (`git checkout`, a formatter) writes more
//! than one file, and gets the full debounce.

use super::requests::Interrupts;
use super::unit::{Changes, Runner};
use super::Up;
use crate::watch::Batch;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A storm of writes that never pauses still restarts the backend after this long (a longer
/// debounce is refused as a config error).
const SETTLE_CEILING: Duration = crate::cli::MAX_DEBOUNCE;
/// A single finished save is looked at after this share of the debounce (and again as often
/// until the debounce is over).
const FINISHED_SHARE: u32 = 5;

impl Changes {
    /// Every change for this process that the OS had queued when this was called (the watch's
    /// fence, run by the coordinator), and whether every wanted write is finished.
    pub(super) async fn sync(&mut self) -> Batch {
        let (reply, replied) = oneshot::channel();
        let mut finished = false;
        if self.up.send(Up::Sync(reply)).is_ok() {
            finished = replied.await.unwrap_or(false);
        }
        let (mut paths, mut last_at) = (Vec::new(), None::<Instant>);
        while let Ok(more) = self.rx.try_recv() {
            last_at = Some(last_at.map_or(more.last_at, |at| at.max(more.last_at)));
            paths.extend(more.paths);
        }
        self.contents.read(&paths);
        Batch {
            paths,
            last_at: last_at.unwrap_or_else(Instant::now),
            finished,
        }
    }
}

impl Runner {
    /// Settling: quiet for the debounce time (or a single finished save, sooner), or the
    /// ceiling; a shutdown request ends it.
    pub(super) async fn settle(&mut self, mut last_at: Instant) -> super::phase::Step {
        use super::phase::Step;
        let ceiling = Instant::now() + SETTLE_CEILING;
        let debounce = self.shared.config.watch.debounce;
        let look_every = debounce / FINISHED_SHARE;
        let changes = &mut self.changes;
        let mut files: BTreeSet<PathBuf> = changes.restarted_for.take().into_iter().collect();
        let mut look_at = last_at + look_every;
        let quiet = async {
            loop {
                let full_at = (last_at + debounce).min(ceiling);
                if Instant::now() >= ceiling {
                    return;
                }
                let quiet_at = match files.len() <= 1 {
                    true => look_at.min(full_at),
                    false => full_at,
                };
                // Biased: changes already queued (say, during a slow stop) count before the
                // quiet time can be judged over, even when that time has passed.
                tokio::select! {
                    biased;
                    batch = changes.next() => {
                        last_at = last_at.max(batch.last_at);
                        files.extend(batch.paths);
                        look_at = last_at + look_every;
                    }
                    _ = tokio::time::sleep_until(quiet_at.into()) => {
                        // Quiet by the watcher's delivery; the OS's queue has the last word.
                        let queued = changes.sync().await;
                        if !queued.paths.is_empty() {
                            last_at = last_at.max(queued.last_at);
                            files.extend(queued.paths);
                            look_at = last_at + look_every;
                            continue;
                        }
                        if quiet_at >= full_at || queued.finished {
                            return;
                        }
                        look_at = quiet_at + look_every;
                    }
                }
            }
        };
        match self.requests.wait(Interrupts::ShutdownOnly, quiet).await {
            Ok(()) => Step::Settled,
            Err(request) => Runner::take_request(request),
        }
    }
}
