//! The supervisor's preloader across generations. It compiles on every OS; only the fork
//! itself is Linux's (config refuses preload elsewhere, so there it never forks).

#[cfg(target_os = "linux")]
use super::preloader::{Forked, Handover, Preloader, Started};
use super::Settings;
use crate::error::Error;
use crate::output::Label;
use crate::process::Backend;
use crate::ui::{Ui, Warn};
use std::collections::BTreeMap;
use std::path::Path;

/// The preloader of one backend: started on first use, replaced when stale, gone or when the
/// environment changed, and switched off for the run once refused.
#[derive(Default)]
pub struct Slot {
    #[cfg(target_os = "linux")]
    preloader: Option<Preloader>,
    off: bool,
}

impl Slot {
    /// The next generation forked from the preloader, with how many modules it preloaded; or
    /// None for a cold start (preload was refused for the run: said once).
    ///
    /// `is_project` says whether a file is project code (the backend's watch filter: a change
    /// to it restarts the backend); a preloader that loaded one is refused. `base` is the
    /// environment the preloader starts with (a different one needs a fresh preloader); `env`
    /// the child's whole environment; `listener` the socket devrun holds in `socket =
    /// "inherit"` mode (the child's fd 3, as in a cold start); `label` the backend's output
    /// prefix in a stack.
    pub async fn fork(
        &mut self,
        settings: &Settings,
        is_project: &dyn Fn(&Path) -> bool,
        base: &[(String, String)],
        env: &BTreeMap<String, String>,
        (listener, label): (Option<&socket2::Socket>, Option<Label>),
        ui: &Ui,
    ) -> Result<Option<(Backend, usize)>, Error> {
        if self.off {
            return Ok(None);
        }
        if settings.inherit_socket && listener.is_none() {
            self.refuse(ui, "the held socket was not handed to the preloader".into());
            return Ok(None);
        }
        #[cfg(target_os = "linux")]
        return self
            .fork_preloaded(settings, is_project, base, env, (listener, label), ui)
            .await;
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (is_project, base, env, label);
            self.refuse(ui, "preload needs Linux (fork without exec)".into());
            Ok(None)
        }
    }

    /// Ends the preloader and waits until it is reaped (its children die with it).
    pub async fn stop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(preloader) = self.preloader.take() {
            preloader.kill().await;
        }
    }

    /// Preload is off for the rest of the run: every generation starts cold.
    fn refuse(&mut self, ui: &Ui, reason: String) {
        ui.emit(&Warn::PreloadRefused { reason }.into());
        self.off = true;
    }
}

#[cfg(target_os = "linux")]
impl Slot {
    /// [`Slot::fork`] once preload may fork: from the current preloader if it is still fit,
    /// else from a fresh one; a fresh one is tried once more if a fork fails.
    async fn fork_preloaded(
        &mut self,
        settings: &Settings,
        is_project: &dyn Fn(&Path) -> bool,
        base: &[(String, String)],
        env: &BTreeMap<String, String>,
        (listener, label): (Option<&socket2::Socket>, Option<Label>),
        ui: &Ui,
    ) -> Result<Option<(Backend, usize)>, Error> {
        for _ in 0..2 {
            if !self.replace_unfit(base, ui).await {
                return Ok(None);
            }
            if self.preloader.is_none() && !self.start(settings, is_project, base, ui).await? {
                return Ok(None);
            }
            let Some(preloader) = self.preloader.as_mut() else {
                return Ok(None);
            };
            let handover = Handover::new(listener, label.clone())
                .map_err(|e| Error::io("cannot make the pipes for a forked generation", e))?;
            let reason = match preloader.fork(settings, env, handover).await {
                Ok(Forked::Backend(backend)) => return Ok(Some((*backend, preloader.imported))),
                Ok(Forked::Stale(file)) => format!("{file} changed"),
                Ok(Forked::Broken(broken)) => {
                    self.refuse(ui, broken.to_string());
                    self.stop().await;
                    return Ok(None);
                }
                Err(e) => e.to_string(),
            };
            ui.emit(&Warn::PreloadRestarted { reason }.into());
            self.stop().await;
        }
        Ok(None)
    }

    /// Ends the current preloader if it cannot serve this generation: it exited, or it
    /// started with another environment (said as a restart); or it broke the protocol (said
    /// as a refusal: false, preload is off).
    async fn replace_unfit(&mut self, base: &[(String, String)], ui: &Ui) -> bool {
        let Some(old) = self.preloader.as_mut() else {
            return true;
        };
        if let Some(broken) = old.unasked() {
            self.refuse(ui, broken.to_string());
            self.stop().await;
            return false;
        }
        let reason = match (old.alive(), old.env.as_slice() == base) {
            (false, _) => "the preloader exited",
            (true, false) => "the backend's environment changed",
            (true, true) => return true,
        };
        let reason = reason.to_string();
        ui.emit(&Warn::PreloadRestarted { reason }.into());
        self.stop().await;
        true
    }

    /// Starts a preloader into the slot; false when it was refused (said once, preload off).
    async fn start(
        &mut self,
        settings: &Settings,
        is_project: &dyn Fn(&Path) -> bool,
        base: &[(String, String)],
        ui: &Ui,
    ) -> Result<bool, Error> {
        let root = &settings.root;
        let is_project = |p: &Path| p.starts_with(root) && is_project(p);
        let started = Preloader::start(settings, base, &is_project)
            .await
            .map_err(|e| Error::io("cannot start the preloader", e))?;
        match started {
            Started::Ready(mut preloader) => {
                // What it could not import, each child imports itself (and fails the same
                // way if it needs it): said, so a slow fork is not a mystery.
                for (module, error) in std::mem::take(&mut preloader.skipped) {
                    ui.emit(&crate::ui::Event::Warning(format!(
                        "preload: could not import {module} ({error}); each generation imports \
                         it itself"
                    )));
                }
                self.preloader = Some(*preloader);
                Ok(true)
            }
            Started::Refused(reason) => {
                self.refuse(ui, reason);
                Ok(false)
            }
        }
    }
}
