//! Spawning a runner's next generation: the environment devrun gives it, then a fork from the
//! preloader (when the member preloads and the preloader agreed) or a fresh process.

use super::requests::Interrupts;
use super::unit::{Runner, Unit};
use crate::control::Request;
use crate::envfile;
use crate::error::Error;
use crate::fast_stop::Bootstrap;
use crate::preload::{Preloaded, Wanted};
use crate::process::Backend;
use crate::procs;
use crate::state::{self, BackendRecord, PROCESS_MARKER, PROJECT_MARKER, RUN_MARKER};
use crate::ui::{Event, Warn};
use std::collections::BTreeMap;
use std::path::Path;

impl Runner {
    /// The variables every generation of this process gets from devrun (later entries win):
    /// its env file, then its `env` (`[env]` for the backend), then devrun's own.
    fn base_env(&self) -> Vec<(String, String)> {
        let mut base: Vec<(String, String)> = self
            .env_file_vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        base.extend(self.member.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        base.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
        // Marks every process of this run, so orphan recovery finds even those that left the
        // group (setsid, double fork) after a devrun that was killed.
        base.push((RUN_MARKER.into(), self.shared.state.borrow().run.clone()));
        // Names the project, so another project's `devrun status` can say whose it is.
        let root = self.shared.config.root.display().to_string();
        base.push((PROJECT_MARKER.into(), root));
        if self.shared.stack {
            base.push((PROCESS_MARKER.into(), self.member.name.clone()));
        }
        base
    }

    /// Spawns the next generation with devrun's variables in its environment: forked from the
    /// preloader when the member preloads and it agreed, else a fresh interpreter. `Err` inside:
    /// a request came while the preloader started or forked.
    pub(super) async fn spawn(
        &mut self,
        unit: &mut Unit,
    ) -> Result<Result<Backend, Request>, Error> {
        unit.generation += 1;
        if let Some(path) = self.member.extras.env_file.clone() {
            // Read off the loop (it may have become a pipe nobody writes): a request ends the wait.
            let shown = self.relative(&path).display().to_string();
            let read = envfile::read_async(&path, &shown);
            match self.requests.wait(Interrupts::ShutdownOnly, read).await {
                Ok(read) => self.take_env_file(read, shown, unit.generation),
                Err(request) => return Ok(Err(request)),
            }
        }
        // What the preloader also starts with (some variables act only at interpreter start).
        let base = self.base_env();
        let mut env = base.clone();
        if let Some(port) = self.member.port {
            env.push(("PORT".into(), port.to_string()));
        }
        env.push(("DEVRUN_GENERATION".into(), unit.generation.to_string()));
        let command_line = shell_words::join(&self.member.command);
        let forked = match self.preloaded(unit, &base, &env).await? {
            Ok(forked) => forked,
            Err(request) => return Ok(Err(request)),
        };
        let (mut backend, preloaded) = match forked {
            Some((backend, how)) => (backend, Some(how)),
            None => {
                let command = self.fast_stop_command();
                env.extend(self.fast_stop_env(false));
                let cold = self.spawn_cold(&command, &env, unit.listener.as_ref())?;
                (cold, None)
            }
        };
        if let (Some(typed), Some(stdin)) = (&self.typed, backend.take_stdin()) {
            typed.attach(stdin);
        }
        self.ui.emit(&Event::Started {
            generation: unit.generation,
            pid: backend.pid(),
            command: command_line,
            preloaded: preloaded.map(|how| how.modules),
            spare: preloaded.is_some_and(|how| how.spare),
        });
        let pid = backend.pid();
        let record = BackendRecord {
            pid,
            pgid: backend.pgid(),
            start: procs::start_time(pid).unwrap_or(0),
            generation: unit.generation,
            command: self.member.command.clone(),
            started_at: state::unix_now(),
            ready: false,
        };
        self.shared.record(&self.ui, &self.member, Some(record));
        Ok(Ok(backend))
    }

    /// The next generation from the preloader (a fork or a warm spare) when the member
    /// preloads and it agreed; None for a cold start. `Err` inside: a request came meanwhile.
    async fn preloaded(
        &mut self,
        unit: &Unit,
        base: &[(String, String)],
        env: &[(String, String)],
    ) -> Result<Result<Option<(Backend, Preloaded)>, Request>, Error> {
        let Some(settings) = self.member.extras.preload.clone() else {
            return Ok(Ok(None));
        };
        let fast = self.fast_stop_env(true);
        let whole: BTreeMap<String, String> = std::env::vars()
            .chain(env.iter().cloned())
            .chain(fast)
            .collect();
        // Project code is what a change to would restart it (the backend's filter).
        let filter = &self.shared.backend_filter;
        let project = |path: &Path| filter.wants_file(path);
        let wanted = Wanted {
            settings: &settings,
            is_project: &project,
            base,
            env: &whole,
            listener: unit.listener.as_ref(),
            label: self.label.clone(),
        };
        let fork = self.preload.fork(&wanted, &self.ui);
        match self.requests.wait(Interrupts::ShutdownOnly, fork).await {
            Ok(forked) => Ok(Ok(forked?)),
            Err(request) => {
                // Asked to stop while the preloader (or a spare) started or forked (which can
                // take as long as the imports): end it now; a fork it made dies with it, a
                // spare being run is killed with its group.
                self.preload.stop().await;
                Ok(Err(request))
            }
        }
    }

    /// devrun's bootstrap for this run, written at the first start; None when the command is
    /// no Python launch, or it could not be written (said once).
    fn bootstrap(&mut self) -> Option<&Bootstrap> {
        self.member.extras.fast_stop.as_ref()?;
        if self.fast_stop.is_none() {
            let written = Bootstrap::write()
                .inspect_err(|e| {
                    let reason = format!("cannot write devrun's bootstrap ({e})");
                    self.ui.emit(&Warn::FastStopOff { reason }.into());
                })
                .ok();
            self.fast_stop = Some(written);
        }
        self.fast_stop.as_ref()?.as_ref()
    }

    /// The variables that ask a generation for the fast stop (a fork's name the bootstrap).
    fn fast_stop_env(&mut self, forked: bool) -> Vec<(String, String)> {
        let timeout = self.shared.config.stop.timeout;
        let fast = self.member.extras.fast_stop.clone();
        let root = self.shared.config.root.clone();
        match (self.bootstrap(), fast) {
            (Some(bootstrap), Some(fast)) => bootstrap.env(&fast, timeout, forked, &root),
            _ => Vec::new(),
        }
    }

    /// What a cold start runs: the command, through the fast-stop bootstrap when it applies.
    fn fast_stop_command(&mut self) -> Vec<String> {
        let fast = self.member.extras.fast_stop.clone();
        match (self.bootstrap(), fast) {
            (Some(bootstrap), Some(fast)) => bootstrap.command(&fast),
            _ => self.member.command.clone(),
        }
    }

    /// Once a generation is up: a uvicorn version the bootstrap did not patch is said, once.
    pub(super) fn say_fast_stop_off(&mut self) {
        let Some(Some(bootstrap)) = self.fast_stop.as_mut() else {
            return;
        };
        if let Some(version) = bootstrap.unknown_version() {
            let reason = format!(
                "uvicorn {version} is not a version devrun knows (it patches {})",
                crate::fast_stop::KNOWN_VERSIONS
            );
            self.ui.emit(&Warn::FastStopOff { reason }.into());
        }
    }

    /// A fresh process running `command`.
    fn spawn_cold(
        &self,
        command: &[String],
        env: &[(String, String)],
        listener: Option<&socket2::Socket>,
    ) -> Result<Backend, Error> {
        let command_line = shell_words::join(command);
        let label = self.label.clone();
        Backend::spawn(command, &self.member.cwd, env, listener, label).map_err(|e| {
            // A command can be megabytes long: errors show its start and its size.
            let shown = crate::ui::shorten(&command_line);
            match e.kind() {
                std::io::ErrorKind::NotFound => Error::Usage(format!(
                    "cannot start `{shown}`: {} not found (is the venv active, or use its full path?)",
                    crate::ui::shorten(&command[0])
                )),
                std::io::ErrorKind::ArgumentListTooLong => Error::Usage(format!(
                    "cannot start `{shown}`: its arguments and environment are longer than the \
                     OS allows ({} bytes of arguments; {e}); shorten the command, or move long \
                     values into a file the backend reads",
                    command.iter().map(|a| a.len() + 1).sum::<usize>()
                )),
                _ => Error::io(format!("cannot start `{shown}`"), e),
            }
        })
    }

    /// The env file as it is now (the watch restarts for its edits): the keys that changed
    /// are said, never their values; a file that cannot be read keeps the previous values.
    fn take_env_file(
        &mut self,
        read: Result<envfile::Vars, String>,
        shown: String,
        generation: u32,
    ) {
        match read {
            Ok(vars) => {
                let keys = envfile::changed_keys(&self.env_file_vars, &vars);
                if generation > 1 && !keys.is_empty() {
                    self.ui.emit(&Warn::EnvChanged { file: shown, keys }.into());
                }
                self.env_file_vars = vars;
            }
            Err(error) => self.ui.emit(&Warn::EnvFileUnreadable { error }.into()),
        }
    }
}
