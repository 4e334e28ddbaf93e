//! The supervisor's preloader (or spare) across generations. The fork is Linux's; the spare
//! runs on every OS (config refuses `preload_method = "fork"` elsewhere).

#[cfg(target_os = "linux")]
use super::preloader::{Forked, Handover, Preloader, Started};
use super::spare::{Ran, Spare};
use super::{Method, Settings};
use crate::error::Error;
use crate::output::Label;
use crate::process::Backend;
use crate::ui::{Ui, Warn};
use std::collections::BTreeMap;
use std::path::Path;

/// How a generation was preloaded: the modules it got, and whether it was a spare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preloaded {
    pub modules: usize,
    pub spare: bool,
}

/// What the next generation needs from the slot. `is_project` says whether a file is project
/// code (the backend's watch filter: a change to it restarts the backend); a preloader that
/// loaded one is refused. `base` is the environment the preloader starts with (a different one
/// needs a fresh preloader); `env` the child's whole environment; `listener` the socket devrun
/// holds in `socket = "inherit"` mode (the child's fd 3, as in a cold start); `label` the
/// backend's output prefix in a stack.
pub struct Wanted<'a> {
    pub settings: &'a Settings,
    pub is_project: &'a dyn Fn(&Path) -> bool,
    pub base: &'a [(String, String)],
    pub env: &'a BTreeMap<String, String>,
    pub listener: Option<&'a socket2::Socket>,
    pub label: Option<Label>,
}

/// The preloader (or the spare) of one backend: started on first use, replaced when stale,
/// gone or when the environment changed, and switched off for the run once refused. A fork
/// refused for a thread or a socket switches the run to spares.
#[derive(Default)]
pub struct Slot {
    #[cfg(target_os = "linux")]
    preloader: Option<Preloader>,
    spare: Option<Spare>,
    /// Spares for the rest of the run (configured, or a fork was refused).
    spares: bool,
    /// What a spare could not import was said (each spare would say it again).
    skipped_said: bool,
    /// The spare to start behind the generation a spare became, once that one is ready.
    next_spare: Option<NextSpare>,
    off: bool,
}

/// What the next spare starts with.
struct NextSpare {
    settings: Settings,
    base: Vec<(String, String)>,
    label: Option<Label>,
}

impl Slot {
    /// The next generation forked from the preloader (or run from the spare), with how many
    /// modules it preloaded; or None for a cold start (preload was refused for the run: said
    /// once).
    pub async fn fork(
        &mut self,
        wanted: &Wanted<'_>,
        ui: &Ui,
    ) -> Result<Option<(Backend, Preloaded)>, Error> {
        if self.off {
            return Ok(None);
        }
        let settings = wanted.settings;
        if settings.inherit_socket && wanted.listener.is_none() {
            self.refuse(ui, "the held socket was not handed to the preloader".into());
            return Ok(None);
        }
        self.spares |= settings.method == Method::Spare || !cfg!(target_os = "linux");
        #[cfg(target_os = "linux")]
        if !self.spares {
            let forked = self.fork_preloaded(wanted, ui).await?;
            if forked.is_some() || !self.spares {
                return Ok(forked.map(|(backend, modules)| {
                    let spare = false;
                    (backend, Preloaded { modules, spare })
                }));
            }
        }
        self.run_spare(wanted, ui).await
    }

    /// Starts the spare behind the generation a spare became, if one is due: once that
    /// generation is ready (or has ended), so that the spare's imports never compete with its
    /// start. A spare that cannot start is said; the next generation starts one itself.
    pub fn start_next_spare(&mut self, ui: &Ui) {
        let Some(next) = self.next_spare.take() else {
            return;
        };
        match Spare::start(&next.settings, &next.base, next.label) {
            Ok(spare) => self.spare = Some(spare),
            Err(e) => ui.emit(&crate::ui::Event::Warning(format!(
                "cannot start a spare interpreter ({e}); the next generation starts one"
            ))),
        }
    }

    /// Ends the preloader and the spare and waits until they are reaped (a preloader's
    /// children die with it).
    pub async fn stop(&mut self) {
        self.next_spare = None;
        #[cfg(target_os = "linux")]
        if let Some(preloader) = self.preloader.take() {
            preloader.kill().await;
        }
        if let Some(spare) = self.spare.take() {
            spare.discard().await;
        }
    }

    /// Preload is off for the rest of the run: every generation starts cold.
    fn refuse(&mut self, ui: &Ui, reason: String) {
        ui.emit(&Warn::PreloadRefused { reason }.into());
        self.off = true;
    }
}

impl Slot {
    /// The next generation from the warm spare if it is still fit (alive, same base
    /// environment, nothing it loaded changed), else from a fresh one; a new spare is started
    /// right behind it.
    async fn run_spare(
        &mut self,
        wanted: &Wanted<'_>,
        ui: &Ui,
    ) -> Result<Option<(Backend, Preloaded)>, Error> {
        let (settings, base, label) = (wanted.settings, wanted.base, &wanted.label);
        let root = &settings.root;
        let is_project = |p: &Path| p.starts_with(root) && (wanted.is_project)(p);
        // Not started yet (this generation came before the last one was ready): a fresh one
        // serves it below.
        self.next_spare = None;
        for _ in 0..2 {
            let spare = match self.spare.take() {
                Some(mut old) => {
                    let unfit = match (old.alive(), old.env.as_slice() == base) {
                        (false, _) => Some("it exited"),
                        (true, false) => Some("the backend's environment changed"),
                        (true, true) => None,
                    };
                    match unfit {
                        None => old,
                        Some(reason) => {
                            let reason = reason.to_string();
                            ui.emit(&Warn::SpareDiscarded { reason }.into());
                            old.discard().await;
                            self.start_spare(settings, base, label.clone())?
                        }
                    }
                }
                None => self.start_spare(settings, base, label.clone())?,
            };
            let reason = match spare
                .run(settings, &is_project, wanted.env, wanted.listener)
                .await
            {
                Ran::Backend(backend, modules, skipped) => {
                    if !std::mem::replace(&mut self.skipped_said, true) {
                        say_skipped(ui, skipped);
                    }
                    // The next one starts once this one is ready (`start_next_spare`): its
                    // imports would take the CPU this generation's start needs.
                    self.next_spare = Some(NextSpare {
                        settings: settings.clone(),
                        base: base.to_vec(),
                        label: label.clone(),
                    });
                    return Ok(Some((
                        *backend,
                        Preloaded {
                            modules,
                            spare: true,
                        },
                    )));
                }
                Ran::Refused(reason) => {
                    self.refuse(ui, reason);
                    return Ok(None);
                }
                Ran::Stale(file) => format!("{file} changed"),
                Ran::Failed(reason) => reason,
            };
            ui.emit(&Warn::SpareDiscarded { reason }.into());
        }
        self.refuse(ui, "no spare interpreter became ready".into());
        Ok(None)
    }

    /// A fresh spare with the base environment `base`.
    fn start_spare(
        &self,
        settings: &Settings,
        base: &[(String, String)],
        label: Option<Label>,
    ) -> Result<Spare, Error> {
        Spare::start(settings, base, label)
            .map_err(|e| Error::io("cannot start a spare interpreter", e))
    }
}

#[cfg(target_os = "linux")]
impl Slot {
    /// [`Slot::fork`] once preload may fork: from the current preloader if it is still fit,
    /// else from a fresh one; a fresh one is tried once more if a fork fails.
    async fn fork_preloaded(
        &mut self,
        wanted: &Wanted<'_>,
        ui: &Ui,
    ) -> Result<Option<(Backend, usize)>, Error> {
        let Wanted {
            settings,
            is_project,
            base,
            env,
            listener,
            ref label,
        } = *wanted;
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
                say_skipped(ui, std::mem::take(&mut preloader.skipped));
                self.preloader = Some(*preloader);
                Ok(true)
            }
            Started::Refused(reason) => {
                self.refuse(ui, reason);
                Ok(false)
            }
            Started::Unforkable(reason) => {
                ui.emit(&Warn::PreloadSpare { reason }.into());
                self.spares = true;
                Ok(false)
            }
        }
    }
}

/// What a preloader (or spare) could not import, each generation imports itself (and fails the
/// same way if it needs it): said, so a slow start is not a mystery.
fn say_skipped(ui: &Ui, skipped: Vec<(String, String)>) {
    for (module, error) in skipped {
        ui.emit(&crate::ui::Event::Warning(format!(
            "preload: could not import {module} ({error}); each generation imports it itself"
        )));
    }
}
