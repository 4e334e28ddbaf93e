//! The core loop as explicit states (`Phase`), moved by one pure function (`next`):
//!
//! ```text
//! Starting ─► Serving ─(change)──► Stopping ─► Settling ─► PortFree ─► Starting (N+1)
//!                 │ (exited on its own)                                   ▲
//!                 └──────────► Stopping ─► Waiting ─(change)─► Settling ──┘
//! Serving ─(Ctrl-C, SIGTERM, SIGHUP, `devrun stop`)─► Stopping ─► Exiting (port confirmed free)
//! any other state ─(the same)─► Exiting
//! Serving, Waiting ─(`devrun restart`)─► Stopping ─► PortFree ─► Starting (N+1)
//! ```
//!
//! Each phase is one action of `Supervisor` that returns what it saw (a `Step`); every wait
//! in those actions goes through `Shutdown::wait`, the one place a request interrupts work.
//! At most one generation is alive: the next is spawned only after `Backend::stop` confirmed
//! that every process of the previous group is gone and `port_is_free` (the one rule, plain
//! or held socket) that nothing else listens.

use crate::config::Config;
use crate::control::{self, Request};
use crate::envfile::{self, Vars as EnvVars};
use crate::error::Error;
use crate::guard::{self, LoopGuard};
use crate::port::{self, NotReady, ReadyCheck};
use crate::process::{self, Backend};
use crate::procs;
use crate::project::{recover_orphan, take_project};
use crate::state::{self, BackendRecord, ProjectLock, State, StateDir, RUN_MARKER};
use crate::stdin::Typed;
use crate::ui::{Event, Ui, Warn};
use crate::watch::{Batch, Watch};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A storm of writes that never pauses still restarts the backend after this long (a longer
/// debounce is refused as a config error).
const SETTLE_CEILING: Duration = crate::cli::MAX_DEBOUNCE;
/// How often a held port is re-checked while waiting for its holder to let go.
const HELD_PORT_RECHECK: Duration = Duration::from_millis(250);

/// Runs devrun in watch mode, or `--once`.
pub async fn run(config: Config, ui: Ui) -> Result<(), Error> {
    process::prepare_supervisor().map_err(|e| Error::io("cannot become a child subreaper", e))?;
    if let Some(text) = process::prepare_console() {
        ui.emit(&Warn::Console { text }.into());
    }
    let shutdown = Shutdown::install()?;
    // `rs` typed in the terminal is the same request as `devrun restart`.
    let typed = Typed::start(shutdown.control_sender(), ui.clone());
    let state_dir = config.state_dir();
    let lock = take_project(&state_dir, &config, &ui, config.options.replace).await?;
    recover_orphan(&state_dir, &config, &ui).await?;
    let run = state::random_id().map_err(|e| Error::io("cannot make a run id", e))?;
    // Without the channel devrun still runs: `devrun stop` then falls back to a signal.
    let control = match control::listen(shutdown.control_sender()).await {
        Ok(control) => Some(control),
        Err(e) => {
            let error = e.to_string();
            ui.emit(&Warn::ControlUnavailable { error }.into());
            None
        }
    };
    let me = std::process::id();
    let state = State {
        devrun_pid: me,
        devrun_start: procs::start_time(me).unwrap_or(0),
        port: config.port,
        host: config.host.clone(),
        started_at: state::unix_now(),
        run,
        control,
        project: Some(state_dir.project()),
        backend: None,
        backend_run: true,
        processes: Vec::new(),
    };
    let options = config.options;
    let mut supervisor = Supervisor {
        shutdown,
        config,
        ui,
        state_dir,
        state,
        _lock: lock,
        kill_port_holder: options.kill_port_holder,
        env_file_vars: EnvVars::new(),
        typed,
        preload: crate::preload::Slot::default(),
    };
    supervisor.record(None);
    let result = if options.once {
        supervisor.run_once().await
    } else {
        supervisor.run_watch().await
    };
    if result.is_ok() {
        supervisor.state_dir.clear();
    }
    result
}

/// Where one supervised process is in its cycle (the diagram at the top). Each state is one
/// action of the supervisor (`Supervisor::act`); what the action saw is a [`Step`], and
/// [`next`] — pure, unit-tested below — says where that leads. A second supervised process is a
/// second `Phase` (and `Backend`), not a second loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Spawning the next generation.
    Starting,
    /// A generation runs, until a change, its exit, or a request.
    Serving,
    /// The whole group is being stopped; `Then` says what follows.
    Stopping(Then),
    /// A burst of saves is finishing: quiet for the debounce time after `last` (or the
    /// ceiling). `ran`: a generation ran since the port was last confirmed free.
    Settling { last: Instant, ran: bool },
    /// Crashed (exited on its own) or failed to start: until a change or `devrun restart`.
    Waiting { ran: bool },
    /// Between generations: until nobody else holds the port.
    PortFree,
    /// Stopped for good: confirm the port is free, then exit.
    Exiting,
}

/// What follows `Stopping`, once the group is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Files changed (the last at this instant): settle, then start anew.
    Settle(Instant),
    /// It exited on its own: wait for a change.
    Wait,
    /// `devrun restart`: start anew now.
    Restart,
    /// A shutdown request: exit.
    Exit,
}

/// What a state's action saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Started,
    /// A later generation could not be spawned (failing to spawn the first is an error).
    StartFailed,
    /// Files changed, the last at this instant.
    Changed(Instant),
    /// The generation exited on its own.
    Exited,
    /// `devrun restart`.
    Restart,
    /// Ctrl-C, SIGTERM, SIGHUP, `devrun stop`.
    Shutdown,
    /// The whole group is gone; `shutdown`: a shutdown was asked for meanwhile.
    Stopped {
        shutdown: bool,
    },
    /// Quiet for the debounce time, or the settle ceiling passed.
    Settled,
    /// Nobody else holds the port.
    PortFree,
}

/// The supervisor's moves: where `step`, seen in `state`, leads. A step a state does not
/// expect leaves it where it is.
fn next(state: Phase, step: Step) -> Phase {
    use Phase::*;
    match (state, step) {
        (Exiting, _) => Exiting,
        // A running group is always stopped first; elsewhere nothing runs.
        (Serving, Step::Shutdown) => Stopping(Then::Exit),
        (Stopping(_), Step::Shutdown) => Stopping(Then::Exit),
        (_, Step::Shutdown) => Exiting,
        (Starting, Step::Started) => Serving,
        (Starting, Step::StartFailed) => Waiting { ran: false },
        (Serving, Step::Changed(last)) => Stopping(Then::Settle(last)),
        (Serving, Step::Exited) => Stopping(Then::Wait),
        (Serving, Step::Restart) => Stopping(Then::Restart),
        (Stopping(_), Step::Stopped { shutdown: true }) => Exiting,
        (Stopping(then), Step::Stopped { shutdown: false }) => match then {
            Then::Settle(last) => Settling { last, ran: true },
            Then::Wait => Waiting { ran: true },
            Then::Restart => PortFree,
            Then::Exit => Exiting,
        },
        (Waiting { ran }, Step::Changed(last)) => Settling { last, ran },
        (Settling { last, ran }, Step::Changed(at)) => Settling {
            last: last.max(at),
            ran,
        },
        // Only a port a generation used needs confirming free again.
        (Waiting { ran }, Step::Restart) | (Settling { ran, .. }, Step::Settled) => match ran {
            true => PortFree,
            false => Starting,
        },
        (PortFree, Step::PortFree) => Starting,
        (state, _) => state,
    }
}

/// The outcome of waiting for the port.
enum PortWait {
    Free(Duration),
    Held,
    Interrupted,
}

struct Supervisor {
    config: Config,
    ui: Ui,
    shutdown: Shutdown,
    state_dir: StateDir,
    /// What `.devrun/state.json` says; rewritten on every generation.
    state: State,
    _lock: ProjectLock,
    kill_port_holder: bool,
    /// The env file's variables as the last generation got them.
    env_file_vars: EnvVars,
    /// Lines typed in devrun's terminal, when it is one: forwarded to the running generation.
    typed: Option<Typed>,
    /// `[server] preload`: the preloader generations are forked from (Linux).
    preload: crate::preload::Slot,
}

/// One supervised process: where it is in its cycle, its running generation, how many it has
/// had, and the socket it inherits. What a process's cycle changes lives here; what every
/// process shares (requests, the watch, status lines, the state file, the lock) stays in
/// `Supervisor`. Issue 11's stack is one `Unit` per process driven by the same actions.
struct Unit {
    phase: Phase,
    backend: Option<Backend>,
    generation: u32,
    /// The listening socket devrun holds and hands to each generation (`socket = "inherit"`).
    listener: Option<socket2::Socket>,
    guard: LoopGuard,
}

impl Unit {
    fn new() -> Unit {
        Unit {
            phase: Phase::Starting,
            backend: None,
            generation: 0,
            listener: None,
            guard: LoopGuard::default(),
        }
    }
}

impl Supervisor {
    async fn run_watch(&mut self) -> Result<(), Error> {
        let mut watch = self.start_watch()?;
        let mut unit = Unit::new();
        self.claim_port(&unit).await?;
        self.bind_listener(&mut unit)?;
        loop {
            let step = match unit.phase {
                Phase::Starting => self.start(&mut unit).await?,
                Phase::Serving => self.serve(&mut unit, &mut watch).await?,
                Phase::Stopping(then) => self.stop(&mut unit, then == Then::Exit).await?,
                Phase::Settling { last, .. } => self.settle(&mut watch, last).await,
                Phase::Waiting { .. } => self.wait_for_change(&mut watch).await,
                Phase::PortFree => self.port_free_for_restart(&unit, &mut watch).await,
                Phase::Exiting => return self.finish(&mut unit).await,
            };
            unit.phase = next(unit.phase, step);
        }
    }

    fn start_watch(&mut self) -> Result<Watch, Error> {
        let ui = self.ui.clone();
        let warn = Box::new(move |message| ui.emit(&Event::Warning(message)));
        let watch = Watch::start(&self.config.watch, &self.config.root, warn)
            .map_err(|e| Error::Watch(e.to_string()))?;
        if let Some(reason) = &watch.poll_reason {
            let reason = reason.clone();
            self.ui.emit(&Warn::Polling { reason }.into());
        } else if watch.polling {
            self.ui.emit(&Warn::InotifyLimit.into());
        }
        self.ui.emit(&Event::Watching {
            source: self.config.source_name(),
            folders: watch.watched_folders(),
            include: self.config.watch.include.clone(),
        });
        Ok(watch)
    }

    async fn run_once(&mut self) -> Result<(), Error> {
        let mut unit = Unit::new();
        self.claim_port(&unit).await?;
        self.bind_listener(&mut unit)?;
        unit.backend = match self.spawn(&mut unit).await? {
            Ok(backend) => Some(backend),
            Err(request) => {
                self.take_request(request);
                return Err(Error::BackendFailed(
                    "asked to stop before the backend was started".into(),
                ));
            }
        };
        let http = self.config.ready.http.clone();
        let (generation, check) = (unit.generation, ready_check(&unit, &http));
        let Some(running) = unit.backend.as_mut() else {
            return Err(Error::BackendFailed("no backend was started".into()));
        };
        let (host, port) = (self.config.host.clone(), self.config.port);
        let timeout = self.config.ready.timeout;
        let ready = async {
            tokio::select! {
                biased;
                status = running.exited() => Err(Error::BackendFailed(format!(
                    "the backend exited early with {}",
                    status.as_ref().map_or_else(|e| e.to_string(), process::describe_status)
                ))),
                ready = port::wait_ready(&host, port, check, timeout) => match ready {
                    Ok(elapsed) => Ok(elapsed),
                    Err(NotReady::Status(code)) => Err(Error::BackendFailed(format!(
                        "health check GET {} returned HTTP {code}",
                        http.as_deref().unwrap_or("/")
                    ))),
                    Err(reason) => Err(Error::BackendFailed(format!(
                        "not ready in {} ms: {reason}",
                        timeout.as_millis()
                    ))),
                },
            }
        };
        let outcome = match self.shutdown.wait(false, ready).await {
            Ok(Ok(elapsed)) => {
                self.ui.emit(&Event::Ready {
                    generation,
                    elapsed,
                    address: format!("{host}:{port}"),
                });
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(request) => Err(Error::BackendFailed(format!(
                "{} before the backend was ready",
                reason(request)
            ))),
        };
        // Teardown whatever happened; a signal now means "kill at once".
        self.stop(&mut unit, true).await?;
        self.finish(&mut unit).await?;
        outcome
    }

    /// Starting: the next generation, or (for a later one that cannot be spawned) the error
    /// said and a wait for a change. The first generation failing to spawn ends devrun.
    async fn start(&mut self, unit: &mut Unit) -> Result<Step, Error> {
        match self.spawn(unit).await {
            Ok(Ok(started)) => {
                unit.backend = Some(started);
                Ok(Step::Started)
            }
            Ok(Err(request)) => Ok(self.take_request(request)),
            Err(e) if unit.generation == 1 => Err(e),
            Err(e) => {
                self.ui.error(&e.to_string());
                Ok(Step::StartFailed)
            }
        }
    }

    /// Spawns the next generation with devrun's variables in its environment: forked from the
    /// preloader when preload is on and it agreed, else a fresh interpreter.
    async fn spawn(&mut self, unit: &mut Unit) -> Result<Result<Backend, Request>, Error> {
        unit.generation += 1;
        self.reread_env_file(unit.generation);
        let config = &self.config;
        // What the preloader also starts with (some variables act only at interpreter start).
        // Later entries win: the env file, then `[env]`, then devrun's own variables.
        let mut base: Vec<(String, String)> = self
            .env_file_vars
            .iter()
            .chain(&config.env)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        base.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
        // Marks every process of this run, so orphan recovery finds even those that left the
        // group (setsid, double fork) after a devrun that was killed.
        base.push((RUN_MARKER.into(), self.state.run.clone()));
        let mut env = base.clone();
        env.push(("PORT".into(), config.port.to_string()));
        env.push(("DEVRUN_GENERATION".into(), unit.generation.to_string()));
        let whole: std::collections::BTreeMap<String, String> =
            std::env::vars().chain(env.iter().cloned()).collect();
        let command_line = shell_words::join(&config.command);
        let fork = self.preload.fork(config, &base, &whole, &self.ui);
        let forked = match self.shutdown.wait(false, fork).await {
            Ok(forked) => forked?,
            Err(request) => {
                // Asked to stop while the preloader started or forked (which can take as long
                // as the imports): end it now; a fork it made dies with it.
                self.preload.stop().await;
                return Ok(Err(request));
            }
        };
        let (mut backend, preloaded) = match forked {
            Some((backend, modules)) => (backend, Some(modules)),
            None => (self.spawn_cold(&env, unit.listener.as_ref())?, None),
        };
        if let (Some(typed), Some(stdin)) = (&self.typed, backend.take_stdin()) {
            typed.attach(stdin);
        }
        self.ui.emit(&Event::Started {
            generation: unit.generation,
            pid: backend.pid(),
            command: command_line,
            preloaded,
        });
        let pid = backend.pid();
        self.record(Some(BackendRecord {
            pid,
            pgid: backend.pgid(),
            start: procs::start_time(pid).unwrap_or(0),
            generation: unit.generation,
            command: self.config.command.clone(),
            started_at: state::unix_now(),
        }));
        Ok(Ok(backend))
    }

    /// A fresh interpreter running the command.
    fn spawn_cold(
        &self,
        env: &[(String, String)],
        listener: Option<&socket2::Socket>,
    ) -> Result<Backend, Error> {
        let config = &self.config;
        let command_line = shell_words::join(&config.command);
        Backend::spawn(&config.command, &config.root, env, listener).map_err(|e| {
            // A command can be megabytes long: errors show its start and its size.
            let shown = crate::ui::shorten(&command_line);
            match e.kind() {
                std::io::ErrorKind::NotFound => Error::Usage(format!(
                    "cannot start `{shown}`: {} not found (is the venv active, or use its full path?)",
                    crate::ui::shorten(&config.command[0])
                )),
                std::io::ErrorKind::ArgumentListTooLong => Error::Usage(format!(
                    "cannot start `{shown}`: its arguments and environment are longer than the \
                     OS allows ({} bytes of arguments; {e}); shorten the command, or move long \
                     values into a file the backend reads",
                    config.command.iter().map(|a| a.len() + 1).sum::<usize>()
                )),
                _ => Error::io(format!("cannot start `{shown}`"), e),
            }
        })
    }

    /// The env file as it is now (the watch restarts for its edits): the keys that changed
    /// are said, never their values; a file that cannot be read keeps the previous values.
    fn reread_env_file(&mut self, generation: u32) {
        let Some(path) = &self.config.env_file else {
            return;
        };
        let shown = path
            .strip_prefix(&self.config.root)
            .unwrap_or(path)
            .display()
            .to_string();
        match envfile::read(path, &shown) {
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

    /// The reload-loop guard on a batch that would restart generation `unit.generation`:
    /// paths the generation itself wrote (see `guard`) in three generations in a row are
    /// given up on, said once; while given up on, only their changes during a start are left
    /// out of the batch (a change after the start is a person's and restarts).
    fn guard_batch(
        &self,
        (guard, generation, pgid): (&mut LoopGuard, u32, u32),
        watch: &Watch,
        batch: &mut Batch,
        ready_at: Option<Instant>,
    ) {
        let members = match ready_at {
            Some(_) => crate::sys::group_members(pgid),
            None => Vec::new(),
        };
        let last_at = batch.last_at;
        let suspect = |path: &std::path::Path| match ready_at {
            None => true,
            Some(at) => last_at <= at + guard::JUST_READY && crate::sys::holds_open(&members, path),
        };
        for path in guard.filter(generation, &mut batch.paths, suspect) {
            let relative = watch.filter().relative(&path).to_path_buf();
            self.ui.emit(
                &Warn::ReloadLoop {
                    path: relative.display().to_string(),
                    glob: guard::ignore_glob(&relative),
                }
                .into(),
            );
        }
    }

    /// Serving: reports readiness, and returns at the first change, exit or request.
    async fn serve(&mut self, unit: &mut Unit, watch: &mut Watch) -> Result<Step, Error> {
        let http = self.config.ready.http.clone();
        let (generation, check) = (unit.generation, ready_check(unit, &http));
        let Some(backend) = unit.backend.as_mut() else {
            return Ok(Step::Exited);
        };
        let (host, port) = (self.config.host.clone(), self.config.port);
        let timeout = self.config.ready.timeout;
        let ready = port::wait_ready(&host, port, check, timeout);
        tokio::pin!(ready);
        let mut ready_reported = false;
        let mut ready_at = None;
        let spawned_at = backend.spawned_at();
        let pgid = backend.pgid();
        let ui = &self.ui;
        loop {
            let seen = self.shutdown.wait(true, async {
                tokio::select! {
                    biased;
                    status = backend.exited() => Some(Err(status)),
                    batch = watch.next() => Some(Ok(batch)),
                    result = &mut ready, if !ready_reported => {
                        ready_reported = true;
                        ready_at = Some(Instant::now());
                        ui.emit(&match result {
                            Ok(elapsed) => Event::Ready {
                                generation,
                                elapsed,
                                address: format!("{host}:{port}"),
                            },
                            Err(reason) => Event::NotReady {
                                generation,
                                elapsed: timeout,
                                reason: reason.to_string(),
                            },
                        });
                        None
                    }
                }
            });
            match seen.await {
                Err(request) => return Ok(self.take_request(request)),
                Ok(Some(Err(status))) => {
                    let status = status.map_err(|e| Error::io("cannot wait for the backend", e))?;
                    let summary = backend.summary(&self.config.root).await;
                    self.ui.emit(&Event::Exited {
                        generation,
                        status: process::describe_status(&status),
                        summary,
                    });
                    return Ok(Step::Exited);
                }
                // Changes seen before this interpreter started are already in it (invariant 3
                // holds): only later ones restart it.
                Ok(Some(Ok(mut batch))) if batch.last_at >= spawned_at => {
                    let unit_guard = (&mut unit.guard, generation, pgid);
                    self.guard_batch(unit_guard, watch, &mut batch, ready_at);
                    if batch.paths.is_empty() {
                        continue;
                    }
                    self.report_change(watch, &batch);
                    return Ok(Step::Changed(batch.last_at));
                }
                Ok(_) => {}
            }
        }
    }

    fn bind_listener(&self, unit: &mut Unit) -> Result<(), Error> {
        if self.config.inherit_socket {
            let (host, port) = (&self.config.host, self.config.port);
            let socket = port::bind_listener(host, port).map_err(|e| {
                Error::Port(format!(
                    "cannot bind {host}:{port} to hand it to the backend: {e}"
                ))
            })?;
            unit.listener = Some(socket);
        }
        Ok(())
    }

    fn report_change(&self, watch: &Watch, batch: &Batch) {
        let files = batch
            .paths
            .iter()
            .map(|p| watch.filter().relative(p).display().to_string())
            .collect();
        self.ui.emit(&Event::Changed { files });
    }

    /// A request that interrupted a wait, said and turned into the step it is.
    fn take_request(&mut self, request: Request) -> Step {
        match request {
            Request::Stop(reason) => {
                self.ui.emit(&Event::ShuttingDown {
                    reason: reason.to_string(),
                });
                Step::Shutdown
            }
            Request::Restart(by) => {
                self.ui.emit(&Warn::RestartRequested { by }.into());
                Step::Restart
            }
        }
    }

    /// Stopping: the whole group, escalating to a kill. A shutdown request meanwhile makes this
    /// the last stop; one more (or any, when `exiting` already) kills at once.
    async fn stop(&mut self, unit: &mut Unit, exiting: bool) -> Result<Step, Error> {
        let (mut shutdown, generation) = (false, unit.generation);
        if let Some(typed) = &self.typed {
            typed.detach(); // its stdin closes; lines typed from now on are dropped
        }
        let Some(mut backend) = unit.backend.take() else {
            return Ok(Step::Stopped { shutdown });
        };
        if !backend.alive() {
            // Exited on its own with nothing left behind: nothing to stop or report.
            backend.drain_output().await;
            self.record(None);
            return Ok(Step::Stopped { shutdown });
        }
        let signal = self.config.stop.signal;
        self.ui.emit(&Event::Stopping {
            generation,
            pid: backend.pid(),
            signal: signal.name(),
        });
        let (requests, ui) = (&mut self.shutdown, &self.ui);
        let mut hurry = || {
            while let Some(reason) = requests.try_recv() {
                if exiting || shutdown {
                    ui.emit(
                        &Warn::KillNow {
                            reason: reason.into(),
                        }
                        .into(),
                    );
                    return true;
                }
                ui.emit(&Event::ShuttingDown {
                    reason: reason.to_string(),
                });
                shutdown = true;
            }
            false
        };
        let stopped = backend
            .stop(signal, self.config.stop.timeout, &mut hurry)
            .await
            .map_err(|e| Error::io(format!("cannot stop generation {generation}"), e))?;
        if let Some(text) = stopped.warning {
            let signal = signal.name();
            self.ui
                .emit(&Warn::SignalUndelivered { signal, text }.into());
        }
        self.ui.emit(&Event::Stopped {
            generation,
            elapsed: stopped.elapsed,
            killed: stopped.killed && signal != process::StopSignal::Kill,
        });
        self.record(None);
        Ok(Step::Stopped { shutdown })
    }

    /// Rewrites the state file. A failure is reported, not fatal: the lock still guarantees
    /// one devrun per project; only orphan recovery after a crash would miss this generation.
    fn record(&mut self, backend: Option<BackendRecord>) {
        self.state.backend = backend;
        if let Err(e) = self.state_dir.write(&self.state) {
            self.ui.emit(
                &Warn::StateNotWritten {
                    path: self
                        .state_dir
                        .path()
                        .join("state.json")
                        .display()
                        .to_string(),
                    error: e.to_string(),
                }
                .into(),
            );
        }
    }

    /// Settling: lets a burst of saves finish (quiet for the debounce time, or the ceiling),
    /// so the next interpreter imports the code as it is after the last save.
    async fn settle(&mut self, watch: &mut Watch, mut last_at: Instant) -> Step {
        let ceiling = Instant::now() + SETTLE_CEILING;
        let debounce = self.config.watch.debounce;
        let quiet = async {
            loop {
                if Instant::now() >= ceiling {
                    return;
                }
                let quiet_at = (last_at + debounce).min(ceiling);
                // Biased: changes already queued (say, during a slow stop) count before the
                // quiet time can be judged over, even when that time has passed.
                tokio::select! {
                    biased;
                    batch = watch.next() => last_at = last_at.max(batch.last_at),
                    _ = tokio::time::sleep_until(quiet_at.into()) => {
                        // Quiet by the watcher's delivery; the OS's queue has the last word.
                        let queued = watch.sync().await;
                        if queued.paths.is_empty() {
                            return;
                        }
                        last_at = last_at.max(queued.last_at);
                    }
                }
            }
        };
        match self.shutdown.wait(false, quiet).await {
            Ok(()) => Step::Settled,
            Err(request) => self.take_request(request),
        }
    }

    /// Waiting: after a crash, until a change or `devrun restart`, or a shutdown request.
    async fn wait_for_change(&mut self, watch: &mut Watch) -> Step {
        self.ui.emit(&Event::Waiting);
        match self.shutdown.wait(true, watch.next()).await {
            Ok(batch) => {
                self.report_change(watch, &batch);
                Step::Changed(batch.last_at)
            }
            Err(request) => self.take_request(request),
        }
    }

    /// Waits up to `timeout` for the port to be free (by `port_is_free`), or for a shutdown
    /// request.
    async fn wait_port(&mut self, unit: &Unit, timeout: Duration) -> PortWait {
        let began = Instant::now();
        let (config, held_socket) = (&self.config, unit.listener.is_some());
        let free = async {
            loop {
                if port_is_free(config, held_socket) {
                    return PortWait::Free(began.elapsed());
                }
                if began.elapsed() >= timeout {
                    return PortWait::Held;
                }
                tokio::time::sleep(process::poll_interval(began.elapsed())).await;
            }
        };
        match self.shutdown.wait(false, free).await {
            Ok(outcome) => outcome,
            Err(request) => {
                self.take_request(request);
                PortWait::Interrupted
            }
        }
    }

    fn held_port_message(&self) -> String {
        let port = self.config.port;
        if let Some(closing) = port::closing_only(port) {
            return format!(
                "port {port} cannot be bound yet: no process holds it, but it is blocked by \
                 {closing} left by a stopped process (whose listener did not set SO_REUSEADDR); \
                 the kernel drops them within about a minute (net.ipv4.tcp_fin_timeout). Start \
                 again then, or use another port (--port)"
            );
        }
        format!(
            "port {port} is held by {}: devrun will not start a second backend beside it. \
             Stop that process, pass --kill-port-holder to have devrun end it, or use another \
             port (--port)",
            port::describe_holders(&port::holders(port))
        )
    }

    /// Before the first generation: the port must be free (a process that is just exiting gets
    /// the port timeout to let go of it).
    async fn claim_port(&mut self, unit: &Unit) -> Result<(), Error> {
        if port_is_free(&self.config, unit.listener.is_some()) {
            return Ok(());
        }
        // Refused with nobody listening (a port Windows reserved): waiting would not help.
        let (host, port) = (&self.config.host, self.config.port);
        if let Some(refused) = port::bind_error(host, port).and_then(|e| {
            port::refusal_message(port, e.raw_os_error(), !port::holders(port).is_empty())
        }) {
            return Err(Error::Port(refused));
        }
        if self.kill_port_holder {
            self.end_port_holders().await?;
        }
        self.ui.emit(
            &Warn::PortBusy {
                port,
                timeout: self.config.stop.port_timeout,
            }
            .into(),
        );
        match self.wait_port(unit, self.config.stop.port_timeout).await {
            PortWait::Free(_) => Ok(()),
            PortWait::Held => Err(Error::Port(self.held_port_message())),
            PortWait::Interrupted => {
                Err(Error::Port("interrupted while waiting for the port".into()))
            }
        }
    }

    /// `--kill-port-holder`: ends each process holding the port, with the usual escalation.
    async fn end_port_holders(&mut self) -> Result<(), Error> {
        let port = self.config.port;
        for holder in port::holders(port) {
            self.ui.emit(
                &Warn::KillPortHolder {
                    pid: holder.pid,
                    command: holder.command.clone(),
                    port,
                }
                .into(),
            );
            let stopped = process::stop_foreign(
                holder.pid,
                self.config.stop.signal,
                self.config.stop.timeout,
            )
            .await
            .map_err(|e| Error::io(format!("cannot end pid {}", holder.pid), e))?;
            if let Some(text) = stopped.and_then(|s| s.warning) {
                let signal = self.config.stop.signal.name();
                self.ui
                    .emit(&Warn::SignalUndelivered { signal, text }.into());
            }
        }
        Ok(())
    }

    /// PortFree, between generations: free at once, or (while someone else holds it) says who
    /// and keeps waiting; changes meanwhile are folded into the coming start.
    async fn port_free_for_restart(&mut self, unit: &Unit, watch: &mut Watch) -> Step {
        let port = self.config.port;
        match self.wait_port(unit, self.config.stop.port_timeout).await {
            PortWait::Free(waited) => {
                self.ui.emit(&Event::PortReleased { port, waited });
                return Step::PortFree;
            }
            PortWait::Interrupted => return Step::Shutdown,
            PortWait::Held => {}
        }
        self.ui.emit(&Event::PortHeld {
            port,
            holders: format!(
                "{}; waiting for it to be released (Ctrl-C to quit)",
                port::describe_busy(port)
            ),
        });
        let (config, held_socket) = (&self.config, unit.listener.is_some());
        let mut recheck = tokio::time::interval(HELD_PORT_RECHECK);
        let free = async {
            loop {
                tokio::select! {
                    _ = watch.next() => {}
                    _ = recheck.tick() => {
                        if port_is_free(config, held_socket) {
                            return;
                        }
                    }
                }
            }
        };
        match self.shutdown.wait(false, free).await {
            Ok(()) => {
                self.ui.emit(&Event::PortReleased {
                    port,
                    waited: Duration::ZERO,
                });
                Step::PortFree
            }
            Err(request) => self.take_request(request),
        }
    }

    /// Exiting: the backend is stopped; confirm the port is free before exiting.
    async fn finish(&mut self, unit: &mut Unit) -> Result<(), Error> {
        self.preload.stop().await;
        // devrun's own socket goes first; then the port must be free for everyone.
        unit.listener = None;
        let port = self.config.port;
        match port::wait_free(&self.config.host, port, self.config.stop.port_timeout).await {
            Ok(waited) => {
                self.ui.emit(&Event::PortReleased { port, waited });
                Ok(())
            }
            Err(waited) => Err(Error::Port(format!(
                "port {port} was not released within {} ms: held by {}",
                waited.as_millis(),
                port::describe_busy(port)
            ))),
        }
    }
}

/// With a held socket a TCP connect always succeeds (the kernel queues it), so readiness is an
/// HTTP answer: `[ready] http` → 2xx if set, else any answer to GET /.
fn ready_check<'a>(unit: &Unit, http: &'a Option<String>) -> ReadyCheck<'a> {
    match (http.as_deref(), unit.listener.is_some()) {
        (Some(path), _) => ReadyCheck::Http2xx(path),
        (None, true) => ReadyCheck::HttpAnswer("/"),
        (None, false) => ReadyCheck::Connect,
    }
}

/// The one rule for "the port is free": with a socket devrun holds for the backend, no process
/// but devrun holds it (a survivor would otherwise go on accepting with stale code); without,
/// the port can be bound.
fn port_is_free(config: &Config, held_socket: bool) -> bool {
    if held_socket {
        port::held_by_others(config.port).is_empty()
    } else {
        port::is_free(&config.host, config.port)
    }
}

/// Ctrl-C, SIGTERM and SIGHUP (Ctrl-C, Ctrl-Break and closing the console on Windows), and the
/// control channel's `stop` and `restart`, as messages the supervisor handles in its own time.
struct Shutdown {
    requests: mpsc::UnboundedReceiver<&'static str>,
    control: mpsc::UnboundedReceiver<Request>,
    control_sender: mpsc::UnboundedSender<Request>,
}

impl Shutdown {
    fn install() -> Result<Shutdown, Error> {
        let (tx, requests) = mpsc::unbounded_channel();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            for (kind, reason) in [
                (SignalKind::interrupt(), "interrupted"),
                (SignalKind::terminate(), "SIGTERM received"),
                (SignalKind::hangup(), "SIGHUP received"),
            ] {
                let mut stream =
                    signal(kind).map_err(|e| Error::io("cannot install a signal handler", e))?;
                let tx = tx.clone();
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        if tx.send(reason).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        #[cfg(windows)]
        {
            use tokio::signal::windows;
            let install = |e| Error::io("cannot install a console control handler", e);
            let mut ctrl_c = windows::ctrl_c().map_err(install)?;
            let mut ctrl_break = windows::ctrl_break().map_err(install)?;
            let mut ctrl_close = windows::ctrl_close().map_err(install)?;
            // Logoff and shutdown reach devrun run as a service or scheduled task.
            let mut ctrl_logoff = windows::ctrl_logoff().map_err(install)?;
            let mut ctrl_shutdown = windows::ctrl_shutdown().map_err(install)?;
            tokio::spawn(async move {
                loop {
                    let reason = tokio::select! {
                        _ = ctrl_c.recv() => "interrupted",
                        _ = ctrl_break.recv() => "Ctrl-Break received",
                        _ = ctrl_close.recv() => "console closed",
                        _ = ctrl_logoff.recv() => "user logging off",
                        _ = ctrl_shutdown.recv() => "Windows shutting down",
                    };
                    if tx.send(reason).is_err() {
                        break;
                    }
                }
            });
        }
        let (control_sender, control) = mpsc::unbounded_channel();
        Ok(Shutdown {
            requests,
            control,
            control_sender,
        })
    }

    /// Where the control channel delivers its requests.
    fn control_sender(&self) -> mpsc::UnboundedSender<Request> {
        self.control_sender.clone()
    }

    /// The next request of any kind. Cancel-safe.
    async fn next(&mut self) -> Request {
        tokio::select! {
            biased;
            Some(reason) = self.requests.recv() => Request::Stop(reason),
            Some(request) = self.control.recv() => request,
            else => std::future::pending().await,
        }
    }

    /// The one shutdown-aware wait: `work`, unless a request comes first (then that request;
    /// `work` is dropped, so it must be cancel-safe or done with). A restart request
    /// interrupts only with `restarts` (Serving, Waiting); elsewhere one is under way anyway
    /// (stopping, settling, waiting for the port) and it is dropped.
    async fn wait<T>(
        &mut self,
        restarts: bool,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Request> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                request = self.next() => match request {
                    Request::Restart(_) if !restarts => continue,
                    request => return Err(request),
                },
                done = &mut work => return Ok(done),
            }
        }
    }

    fn try_recv(&mut self) -> Option<&'static str> {
        if let Ok(reason) = self.requests.try_recv() {
            return Some(reason);
        }
        while let Ok(request) = self.control.try_recv() {
            if let Request::Stop(reason) = request {
                return Some(reason);
            }
        }
        None
    }
}

/// What a request that ended a wait says, for an error message.
fn reason(request: Request) -> &'static str {
    match request {
        Request::Stop(reason) => reason,
        Request::Restart(_) => "restart requested",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Phase::*;

    fn walk(from: Phase, steps: &[Step]) -> Vec<Phase> {
        let mut phase = from;
        steps
            .iter()
            .map(|step| {
                phase = next(phase, *step);
                phase
            })
            .collect()
    }

    #[test]
    fn a_change_stops_settles_confirms_the_port_and_starts_anew() {
        let t = Instant::now();
        assert_eq!(
            walk(
                Starting,
                &[
                    Step::Started,
                    Step::Changed(t),
                    Step::Stopped { shutdown: false },
                    Step::Settled,
                    Step::PortFree,
                ]
            ),
            [
                Serving,
                Stopping(Then::Settle(t)),
                Settling { last: t, ran: true },
                PortFree,
                Starting
            ]
        );
    }

    #[test]
    fn changes_while_settling_move_the_quiet_time_never_back() {
        let t = Instant::now();
        let later = t + Duration::from_millis(300);
        let settling = Settling { last: t, ran: true };
        assert_eq!(
            next(settling, Step::Changed(later)),
            Settling {
                last: later,
                ran: true
            }
        );
        // A batch stamped earlier (delivered late) does not shorten the wait.
        let after_later = Settling {
            last: later,
            ran: true,
        };
        assert_eq!(next(after_later, Step::Changed(t)), after_later);
    }

    #[test]
    fn a_crash_waits_for_a_change_then_settles_and_confirms_the_port() {
        let t = Instant::now();
        assert_eq!(
            walk(
                Serving,
                &[
                    Step::Exited,
                    Step::Stopped { shutdown: false },
                    Step::Changed(t),
                    Step::Settled,
                    Step::PortFree,
                ]
            ),
            [
                Stopping(Then::Wait),
                Waiting { ran: true },
                Settling { last: t, ran: true },
                PortFree,
                Starting
            ]
        );
        assert_eq!(next(Waiting { ran: true }, Step::Restart), PortFree);
    }

    /// A later generation that cannot be spawned ran no process: after the wait it starts
    /// again without confirming a port nobody used.
    #[test]
    fn a_failed_spawn_waits_then_starts_without_a_port_check() {
        let t = Instant::now();
        assert_eq!(
            walk(
                Starting,
                &[Step::StartFailed, Step::Changed(t), Step::Settled]
            ),
            [
                Waiting { ran: false },
                Settling {
                    last: t,
                    ran: false
                },
                Starting
            ]
        );
        assert_eq!(next(Waiting { ran: false }, Step::Restart), Starting);
    }

    #[test]
    fn restart_stops_then_confirms_the_port_without_settling() {
        assert_eq!(
            walk(
                Serving,
                &[
                    Step::Restart,
                    Step::Stopped { shutdown: false },
                    Step::PortFree
                ]
            ),
            [Stopping(Then::Restart), PortFree, Starting]
        );
    }

    /// Invariant: a shutdown request always ends in `Exiting`, and a running group is
    /// stopped first, whatever the state.
    #[test]
    fn a_shutdown_stops_what_runs_and_exits_from_every_state() {
        let t = Instant::now();
        assert_eq!(next(Serving, Step::Shutdown), Stopping(Then::Exit));
        for then in [Then::Settle(t), Then::Wait, Then::Restart, Then::Exit] {
            assert_eq!(next(Stopping(then), Step::Shutdown), Stopping(Then::Exit));
            assert_eq!(
                next(Stopping(then), Step::Stopped { shutdown: true }),
                Exiting
            );
        }
        assert_eq!(
            next(Stopping(Then::Exit), Step::Stopped { shutdown: false }),
            Exiting
        );
        for phase in [
            Starting,
            Settling { last: t, ran: true },
            Waiting { ran: true },
            Waiting { ran: false },
            PortFree,
            Exiting,
        ] {
            assert_eq!(next(phase, Step::Shutdown), Exiting, "from {phase:?}");
        }
    }

    /// Exiting is final, and no step starts a generation except from `Starting`'s
    /// predecessors: a change while the port is held is folded into the coming start.
    #[test]
    fn exiting_is_final_and_a_held_port_folds_changes_in() {
        let t = Instant::now();
        for step in [
            Step::Started,
            Step::Changed(t),
            Step::Restart,
            Step::Settled,
            Step::PortFree,
            Step::Stopped { shutdown: false },
        ] {
            assert_eq!(next(Exiting, step), Exiting, "{step:?}");
        }
        assert_eq!(next(PortFree, Step::Changed(t)), PortFree);
        assert_eq!(next(PortFree, Step::Restart), PortFree);
    }

    /// At most one generation is alive: `Starting` is reached only once the port is confirmed
    /// free after a generation ran, never straight from `Serving` or `Stopping`.
    #[test]
    fn starting_follows_only_a_confirmed_free_port_after_a_generation_ran() {
        let t = Instant::now();
        let phases = [
            Serving,
            Stopping(Then::Settle(t)),
            Stopping(Then::Wait),
            Stopping(Then::Restart),
            Stopping(Then::Exit),
            Settling { last: t, ran: true },
            Waiting { ran: true },
            PortFree,
        ];
        let steps = [
            Step::Started,
            Step::StartFailed,
            Step::Changed(t),
            Step::Exited,
            Step::Restart,
            Step::Shutdown,
            Step::Stopped { shutdown: false },
            Step::Stopped { shutdown: true },
            Step::Settled,
            Step::PortFree,
        ];
        for phase in phases {
            for step in steps {
                if next(phase, step) == Starting {
                    assert_eq!((phase, step), (PortFree, Step::PortFree));
                }
            }
        }
    }
}
