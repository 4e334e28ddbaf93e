//! The reload-loop guard (`crate::guard`) applied to the batches that would restart a serving
//! generation: what the generation wrote itself while starting is held back (said once), and a
//! rewrite with the content the generation started with restarts nothing (said).

use super::phase::{Readiness, Step};
use super::unit::Runner;
use crate::guard::{self, LoopGuard};
use crate::ui::{Event, Warn};
use crate::watch::Batch;
use std::path::PathBuf;
use std::time::Instant;

impl Runner {
    /// A batch of changes for the serving generation (`generation`, group `pgid`, spawned at
    /// `spawned_at`): the step it leads to, or None (none of it asks for a restart).
    pub(super) fn take_batch(
        &mut self,
        (guard, generation, pgid): (&mut LoopGuard, u32, u32),
        mut batch: Batch,
        (spawned_at, readiness): (Instant, Readiness),
    ) -> Option<Step> {
        let ready_at = readiness.started_at();
        let before_guard = batch.paths.clone();
        self.guard_batch((guard, generation, pgid), &mut batch, ready_at);
        // What the guard held back is read too (for the generations after this one).
        let held: Vec<PathBuf> = before_guard
            .into_iter()
            .filter(|p| !batch.paths.contains(p))
            .collect();
        self.changes.contents.read(&held);
        // Only once it answered is the generation done importing (but for lazy imports,
        // which a rewrite within one batch would have to race).
        let serving = matches!(readiness, Readiness::Ready(at) if at < batch.last_at);
        let contents = &mut self.changes.contents;
        let (same, changed): (Vec<PathBuf>, Vec<PathBuf>) = std::mem::take(&mut batch.paths)
            .into_iter()
            .partition(|path| contents.unchanged_since(path, spawned_at) && serving);
        for path in same {
            let shown = self.relative(&path).display().to_string();
            self.ui.emit(&Event::Warning(format!(
                "{shown} was rewritten with the content generation {generation} started with: \
                 not restarting for it (its code did not change; type rs to restart anyway)"
            )));
        }
        batch.paths = changed;
        match batch.paths.is_empty() {
            true => None,
            false => Some(self.restart_for(&batch)),
        }
    }

    /// The reload-loop guard on a batch that would restart generation `generation`:
    /// paths the generation itself wrote (see `guard`) in three generations in a row are
    /// given up on, said once; while given up on, only their changes during a start are left
    /// out of the batch (a change after the start is a person's and restarts).
    fn guard_batch(
        &self,
        (guard, generation, pgid): (&mut LoopGuard, u32, u32),
        batch: &mut Batch,
        ready_at: Option<Instant>,
    ) {
        let members = match ready_at {
            Some(_) => crate::sys::group_members(pgid),
            None => Vec::new(),
        };
        let last_at = batch.last_at;
        // A change the watch stamped before ready was made during the start, even when it is
        // delivered after the probe answered (a loaded machine).
        let suspect = |path: &std::path::Path| match ready_at {
            None => true,
            Some(at) if last_at < at => true,
            Some(at) => last_at <= at + guard::JUST_READY && crate::sys::holds_open(&members, path),
        };
        for path in guard.filter(generation, &mut batch.paths, suspect) {
            let relative = self.relative(&path);
            self.ui.emit(
                &Warn::ReloadLoop {
                    path: relative.display().to_string(),
                    glob: guard::ignore_glob(&relative),
                }
                .into(),
            );
        }
    }
}
