//! `[watch] reload_only` (default `**/templates/**`): a change to templates alone is served by
//! the running generation, which drops its template caches (Django's template loaders, every
//! Jinja2 environment) when devrun asks through its bootstrap (src/fast_stop/bootstrap.py),
//! instead of a restart. Never a stale template: devrun waits for the generation's answer, and
//! restarts it when none comes, when it loaded no template engine (it reads templates some
//! other way), or when code changed too.

use super::unit::Runner;
use crate::ui::Event;
use crate::watch::Batch;
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::time::{Duration, Instant};

/// How long the generation has to answer a reload before it is restarted instead.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// What the generation answers when it has no template engine whose caches it could drop.
const NOTHING: &str = "nothing";
/// How often its answer is looked for.
const ANSWER_POLL: Duration = Duration::from_millis(2);

/// The `reload_only` globs (invalid ones were refused at config load).
pub(super) fn globs(globs: &[String]) -> GlobSet {
    let mut builder = GlobSetBuilder::new();
    for glob in globs.iter().filter_map(|g| Glob::new(g).ok()) {
        builder.add(glob);
    }
    builder.build().unwrap_or_else(|_| GlobSet::empty())
}

impl Runner {
    /// Every file of `batch` is one `reload_only` names, and a bootstrap can be asked.
    pub(super) fn reload_only(&self, batch: &Batch) -> bool {
        let globs = &self.reload_only;
        !globs.is_empty()
            && matches!(self.fast_stop, Some(Some(_)))
            && !batch.paths.is_empty()
            && batch.paths.iter().all(|p| globs.is_match(self.relative(p)))
    }

    /// Serves a templates-only `batch` without a restart: once the saves are quiet (as
    /// settling would judge), asks the generation to drop its template caches and waits for its
    /// answer (said). None: served; Some: restart for this batch (with what came meanwhile).
    pub(super) async fn reload_templates(
        &mut self,
        batch: Batch,
        generation: u32,
    ) -> Option<Batch> {
        let batch = match self.quiet_templates(batch).await {
            Ok(templates) => templates,
            Err(code_too) => return Some(code_too),
        };
        let started = Instant::now();
        let Some(Some(bootstrap)) = self.fast_stop.as_mut() else {
            return Some(batch);
        };
        let Some(number) = bootstrap.request_reload() else {
            return Some(batch);
        };
        let dropped = loop {
            match bootstrap.reloaded(number).as_deref() {
                // No template engine loaded: nothing says those files are read afresh.
                Some(NOTHING) => return Some(batch),
                Some(dropped) => break dropped.to_string(),
                None => {}
            }
            if started.elapsed() >= ANSWER_TIMEOUT {
                let why = "the backend did not answer devrun's template reload: restarting it";
                self.ui.emit(&Event::Warning(why.to_string()));
                return Some(batch);
            }
            tokio::time::sleep(ANSWER_POLL).await;
        };
        self.changes.contents.read(&batch.paths);
        let files = batch.paths.iter();
        self.ui.emit(&Event::Reloaded {
            files: files
                .map(|p| self.relative(p).display().to_string())
                .collect(),
            generation,
            dropped,
            elapsed: started.elapsed(),
        });
        None
    }

    /// Waits until no change has come for the debounce (a fifth of it after one finished
    /// save), the OS's queue included. Ok: still templates only; Err: code changed too (the
    /// batch to restart for).
    async fn quiet_templates(&mut self, mut batch: Batch) -> Result<Batch, Batch> {
        let debounce = self.shared.config.watch.debounce;
        loop {
            let single = batch.finished && batch.paths.len() == 1;
            let wait = if single { debounce / 5 } else { debounce };
            let quiet_at = batch.last_at + wait;
            let more = tokio::select! {
                Some(more) = self.changes.rx.recv() => more,
                _ = tokio::time::sleep_until(quiet_at.into()) => {
                    let queued = self.changes.sync().await;
                    if queued.paths.is_empty() {
                        return Ok(batch);
                    }
                    queued
                }
            };
            batch.paths.extend(more.paths);
            batch.paths.sort();
            batch.paths.dedup();
            batch.last_at = batch.last_at.max(more.last_at);
            batch.finished = more.finished;
            if !self.reload_only(&batch) {
                return Err(batch);
            }
        }
    }
}
