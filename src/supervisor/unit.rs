//! One supervised process (the backend, or a member of a stack) through its cycle: each phase
//! (see [`super::phase`]) is one action of [`Runner`] that returns what it saw (a `Step`); every
//! wait in those actions goes through `Requests::wait`, the one place a request interrupts
//! work. At most one generation is alive: the next is spawned only after `Backend::stop`
//! confirmed that every process of the previous group is gone and `port_is_free` (the one rule,
//! plain or held socket) that nothing else listens.

use super::phase::{next, Phase, Step, Then};
use super::requests::{reason, Requests};
use super::{Member, Shared, Up};
use crate::config::RestartPolicy;
use crate::control::Request;
use crate::envfile::{self, Vars as EnvVars};
use crate::error::Error;
use crate::guard::{self, LoopGuard};
use crate::port::{self, NotReady, ReadyCheck};
use crate::process::{self, Backend};
use crate::procs;
use crate::state::{self, BackendRecord, PROCESS_MARKER, RUN_MARKER};
use crate::stdin::Typed;
use crate::ui::{Event, Ui, Warn};
use crate::watch::Batch;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// A storm of writes that never pauses still restarts the backend after this long (a longer
/// debounce is refused as a config error).
const SETTLE_CEILING: Duration = crate::cli::MAX_DEBOUNCE;
/// How often a held port is re-checked while waiting for its holder to let go.
const HELD_PORT_RECHECK: Duration = Duration::from_millis(250);
/// `restart = "on-failure"`: the first wait before a restart, doubled after each failure up to
/// the longest; a generation that got ready (or lived this long) starts the count anew.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_LONGEST: Duration = Duration::from_secs(30);

/// The outcome of waiting for the port.
enum PortWait {
    Free(Duration),
    Held,
    Interrupted,
}

/// Where one supervised process is in its cycle, its running generation, how many it has had,
/// and the socket it inherits.
struct Unit {
    phase: Phase,
    backend: Option<Backend>,
    generation: u32,
    /// The listening socket devrun holds and hands to each generation (`socket = "inherit"`).
    listener: Option<socket2::Socket>,
    guard: LoopGuard,
    /// The last generation exited on its own with a failure (non-zero status, a signal).
    failed: bool,
    /// The next `restart = "on-failure"` wait.
    backoff: Duration,
}

impl Unit {
    fn new() -> Unit {
        Unit {
            phase: Phase::Starting,
            backend: None,
            generation: 0,
            listener: None,
            guard: LoopGuard::default(),
            failed: false,
            backoff: BACKOFF_FIRST,
        }
    }
}

/// The changes the coordinator routed to this process, and the watch's fence on request.
pub(super) struct Changes {
    rx: mpsc::UnboundedReceiver<Batch>,
    up: mpsc::UnboundedSender<Up>,
}

impl Changes {
    pub(super) fn new(
        rx: mpsc::UnboundedReceiver<Batch>,
        up: mpsc::UnboundedSender<Up>,
    ) -> Changes {
        Changes { rx, up }
    }

    /// The next batch of changes for this process. Cancel-safe.
    async fn next(&mut self) -> Batch {
        match self.rx.recv().await {
            Some(batch) => batch,
            None => std::future::pending().await,
        }
    }

    /// Every change for this process that the OS had queued when this was called (the watch's
    /// fence, run by the coordinator).
    async fn sync(&mut self) -> Batch {
        let (reply, replied) = oneshot::channel();
        if self.up.send(Up::Sync(reply)).is_ok() {
            let _ = replied.await;
        }
        let (mut paths, mut last_at) = (Vec::new(), None::<Instant>);
        while let Ok(more) = self.rx.try_recv() {
            last_at = Some(last_at.map_or(more.last_at, |at| at.max(more.last_at)));
            paths.extend(more.paths);
        }
        Batch {
            paths,
            last_at: last_at.unwrap_or_else(Instant::now),
        }
    }
}

/// One process's supervisor.
pub(super) struct Runner {
    shared: Rc<Shared>,
    member: Member,
    index: usize,
    ui: Ui,
    requests: Requests,
    changes: Changes,
    go: watch::Receiver<bool>,
    /// The env file's variables as the last generation got them (the backend's).
    env_file_vars: EnvVars,
    /// Lines typed in devrun's terminal, when it is one: forwarded to the backend.
    typed: Option<Typed>,
    /// `[server] preload`: the preloader the backend's generations are forked from (Linux).
    preload: crate::preload::Slot,
}

impl Runner {
    pub(super) fn new(
        shared: Rc<Shared>,
        member: Member,
        index: usize,
        ui: Ui,
        requests: Requests,
        changes: Changes,
        go: watch::Receiver<bool>,
    ) -> Runner {
        Runner {
            shared,
            member,
            index,
            ui,
            requests,
            changes,
            go,
            env_file_vars: EnvVars::new(),
            typed: None,
            preload: crate::preload::Slot::default(),
        }
    }

    pub(super) fn with_typed(mut self, typed: Option<Typed>) -> Runner {
        self.typed = typed;
        self
    }

    /// Claims the port, waits for its turn, then runs until stopped for good; says when done.
    pub(super) async fn run(mut self) {
        let result = self.run_to_end().await;
        let _ = self.changes.up.send(Up::Done(self.index, result));
    }

    async fn run_to_end(&mut self) -> Result<(), Error> {
        let mut unit = Unit::new();
        self.claim_port(&unit).await?;
        self.bind_listener(&mut unit)?;
        self.tell(Up::Claimed(self.index));
        match self.requests.wait(false, self.go.wait_for(|go| *go)).await {
            Ok(Ok(_)) => {}
            // Stopped before its turn (a held port elsewhere, Ctrl-C): nothing ran.
            Ok(Err(_)) | Err(_) => return Ok(()),
        }
        match self.shared.config.options.once {
            true => self.run_once(unit).await,
            false => self.run_watch(unit).await,
        }
    }

    fn tell(&self, message: Up) {
        let _ = self.changes.up.send(message);
    }

    fn root(&self) -> &Path {
        &self.shared.config.root
    }

    async fn run_watch(&mut self, mut unit: Unit) -> Result<(), Error> {
        loop {
            let step = match unit.phase {
                Phase::Starting => self.start(&mut unit).await?,
                Phase::Serving => self.serve(&mut unit).await?,
                Phase::Stopping(then) => self.stop(&mut unit, then == Then::Exit).await?,
                Phase::Settling { last, .. } => self.settle(last).await,
                Phase::Waiting { .. } => self.wait_for_change(&mut unit).await,
                Phase::PortFree => self.port_free_for_restart(&unit).await,
                Phase::Exiting => return self.finish(&mut unit).await,
            };
            unit.phase = next(unit.phase, step);
        }
    }

    /// `--once`: start, wait until ready, tell the coordinator, and tear down when it says
    /// (every member ready, or one failed) or at once on a failure.
    async fn run_once(&mut self, mut unit: Unit) -> Result<(), Error> {
        unit.backend = match self.spawn(&mut unit).await? {
            Ok(backend) => Some(backend),
            Err(request) => {
                let who = self.shared.who(&self.member);
                self.tell(Up::Outcome(
                    self.index,
                    Err(Error::BackendFailed(format!(
                        "{} before {who} was started",
                        reason(request)
                    ))),
                ));
                return Ok(());
            }
        };
        let outcome = self.once_ready(&mut unit).await;
        let failed = outcome.is_err();
        self.tell(Up::Outcome(self.index, outcome));
        if !failed {
            // Until the rest of the stack is ready (or failed); exiting meanwhile is a failure.
            let Some(running) = unit.backend.as_mut() else {
                return Ok(());
            };
            let who = self.shared.who(&self.member);
            if let Ok(status) = self.requests.wait(false, running.exited()).await {
                let status = status
                    .as_ref()
                    .map_or_else(|e| e.to_string(), process::describe_status);
                self.tell(Up::Outcome(
                    self.index,
                    Err(Error::BackendFailed(format!(
                        "{who} exited with {status} while the rest of the stack started"
                    ))),
                ));
            }
        }
        // Teardown whatever happened; a signal now means "kill at once".
        self.stop(&mut unit, true).await?;
        self.finish(&mut unit).await
    }

    /// `--once`: ready, or why not.
    async fn once_ready(&mut self, unit: &mut Unit) -> Result<(), Error> {
        let who = self.shared.who(&self.member);
        // In a stack, a readiness failure says whose.
        let whose = match self.shared.stack {
            true => format!("{who}: "),
            false => String::new(),
        };
        let http = self.member.ready.http.clone();
        let (generation, check) = (unit.generation, ready_check(unit, &http));
        let Some(running) = unit.backend.as_mut() else {
            return Err(Error::BackendFailed(format!("{who} was not started")));
        };
        let host = self.shared.config.host.clone();
        let port = self.member.port;
        let timeout = self.member.ready.timeout;
        let ready = async {
            let Some(port) = port else {
                return Ok(None); // nothing to wait for: started is ready
            };
            tokio::select! {
                biased;
                // Said below, with its crash summary.
                _ = running.exited() => Err(None),
                ready = port::wait_ready(&host, port, check, timeout) => match ready {
                    Ok(elapsed) => Ok(Some(elapsed)),
                    Err(NotReady::Status(code)) => Err(Some(format!(
                        "{}health check GET {} returned HTTP {code}",
                        whose,
                        http.as_deref().unwrap_or("/")
                    ))),
                    Err(reason) => Err(Some(format!(
                        "{}not ready in {} ms: {reason}",
                        whose,
                        timeout.as_millis()
                    ))),
                },
            }
        };
        match self.requests.wait(false, ready).await {
            Ok(Ok(Some(elapsed))) => {
                self.ui.emit(&Event::Ready {
                    generation,
                    elapsed,
                    address: format!("{host}:{}", port.unwrap_or(0)),
                });
                Ok(())
            }
            Ok(Ok(None)) => Ok(()),
            Ok(Err(Some(why))) => Err(Error::BackendFailed(why)),
            Ok(Err(None)) => {
                let status = match running.exited().await {
                    Ok(status) => process::describe_status(&status),
                    Err(e) => e.to_string(),
                };
                let root = self.shared.config.root.clone();
                Err(Error::BackendFailed(match running.summary(&root).await {
                    Some(summary) => format!("{who} exited early with {status}: {summary}"),
                    None => format!("{who} exited early with {status}"),
                }))
            }
            Err(request) => Err(Error::BackendFailed(format!(
                "{} before {who} was ready",
                reason(request)
            ))),
        }
    }

    /// Starting: the next generation, or (for a later one that cannot be spawned) the error
    /// said and a wait for a change. The first generation failing to spawn ends devrun.
    async fn start(&mut self, unit: &mut Unit) -> Result<Step, Error> {
        match self.spawn(unit).await {
            Ok(Ok(started)) => {
                unit.backend = Some(started);
                if self.member.port.is_none() {
                    self.tell(Up::Ready(self.index)); // nothing to wait for
                }
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

    /// The variables every generation of this process gets from devrun (later entries win):
    /// the backend's env file then `[env]`, or the member's `env`; then devrun's own.
    fn base_env(&self) -> Vec<(String, String)> {
        let mut base: Vec<(String, String)> = match self.member.backend {
            true => self
                .env_file_vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            false => Vec::new(),
        };
        base.extend(self.member.env.iter().cloned());
        base.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
        // Marks every process of this run, so orphan recovery finds even those that left the
        // group (setsid, double fork) after a devrun that was killed.
        base.push((RUN_MARKER.into(), self.shared.state.borrow().run.clone()));
        if self.shared.stack {
            base.push((PROCESS_MARKER.into(), self.member.name.clone()));
        }
        base
    }

    /// Spawns the next generation with devrun's variables in its environment: forked from the
    /// preloader when preload is on and it agreed, else a fresh interpreter.
    async fn spawn(&mut self, unit: &mut Unit) -> Result<Result<Backend, Request>, Error> {
        unit.generation += 1;
        if self.member.backend {
            self.reread_env_file(unit.generation);
        }
        // What the preloader also starts with (some variables act only at interpreter start).
        let base = self.base_env();
        let mut env = base.clone();
        if let Some(port) = self.member.port {
            env.push(("PORT".into(), port.to_string()));
        }
        env.push(("DEVRUN_GENERATION".into(), unit.generation.to_string()));
        let command_line = shell_words::join(&self.member.command);
        let config = &self.shared.config;
        let forked = match (self.member.backend, config.preload.as_ref()) {
            (true, Some(settings)) => {
                let whole: std::collections::BTreeMap<String, String> =
                    std::env::vars().chain(env.iter().cloned()).collect();
                let filter = crate::watch::Filter::new(&config.watch, &config.root)
                    .map_err(|e| Error::Watch(format!("invalid watch globs: {e}")))?;
                let handed = (unit.listener.as_ref(), self.member.label.clone());
                let project = |path: &Path| filter.wants_file(path);
                let fork = self
                    .preload
                    .fork(settings, &project, &base, &whole, handed, &self.ui);
                match self.requests.wait(false, fork).await {
                    Ok(forked) => forked?,
                    Err(request) => {
                        // Asked to stop while the preloader started or forked (which can take
                        // as long as the imports): end it now; a fork it made dies with it.
                        self.preload.stop().await;
                        return Ok(Err(request));
                    }
                }
            }
            _ => None,
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
        let record = BackendRecord {
            pid,
            pgid: backend.pgid(),
            start: procs::start_time(pid).unwrap_or(0),
            generation: unit.generation,
            command: self.member.command.clone(),
            started_at: state::unix_now(),
        };
        self.shared.record(&self.ui, &self.member, Some(record));
        Ok(Ok(backend))
    }

    /// A fresh process running the command.
    fn spawn_cold(
        &self,
        env: &[(String, String)],
        listener: Option<&socket2::Socket>,
    ) -> Result<Backend, Error> {
        let command = &self.member.command;
        let command_line = shell_words::join(command);
        let label = self.member.label.clone();
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
    fn reread_env_file(&mut self, generation: u32) {
        let Some(path) = &self.shared.config.env_file else {
            return;
        };
        let shown = path
            .strip_prefix(self.root())
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

    /// `path` relative to the project root, for display.
    fn relative(&self, path: &Path) -> PathBuf {
        path.strip_prefix(self.root()).unwrap_or(path).to_path_buf()
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
        let suspect = |path: &std::path::Path| match ready_at {
            None => true,
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

    /// Serving: reports readiness, and returns at the first change, exit or request.
    async fn serve(&mut self, unit: &mut Unit) -> Result<Step, Error> {
        let http = self.member.ready.http.clone();
        let (generation, check) = (unit.generation, ready_check(unit, &http));
        let Some(backend) = unit.backend.as_mut() else {
            return Ok(Step::Exited);
        };
        let host = self.shared.config.host.clone();
        let port = self.member.port;
        let timeout = self.member.ready.timeout;
        let ready = async {
            match port {
                Some(port) => port::wait_ready(&host, port, check, timeout).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(ready);
        let mut ready_reported = false;
        let mut ready_at = None;
        let spawned_at = backend.spawned_at();
        let pgid = backend.pgid();
        let index = self.index;
        loop {
            let (ui, up) = (&self.ui, &self.changes.up);
            let changes = &mut self.changes.rx;
            let seen = self.requests.wait(true, async {
                tokio::select! {
                    biased;
                    status = backend.exited() => Some(Err(status)),
                    // Readiness before changes: a change is judged (the reload-loop guard)
                    // knowing whether the generation was already answering.
                    result = &mut ready, if !ready_reported => {
                        ready_reported = true;
                        ready_at = Some(Instant::now());
                        ui.emit(&match result {
                            Ok(elapsed) => {
                                let _ = up.send(Up::Ready(index));
                                Event::Ready {
                                    generation,
                                    elapsed,
                                    address: format!("{host}:{}", port.unwrap_or(0)),
                                }
                            }
                            Err(reason) => Event::NotReady {
                                generation,
                                elapsed: timeout,
                                reason: reason.to_string(),
                            },
                        });
                        None
                    }
                    Some(batch) = changes.recv() => Some(Ok(batch)),
                }
            });
            match seen.await {
                Err(request) => return Ok(self.take_request(request)),
                Ok(Some(Err(status))) => {
                    let status = status.map_err(|e| Error::io("cannot wait for the backend", e))?;
                    return Ok(self.exited(unit, status, ready_reported).await);
                }
                // Changes seen before this process started are already in it (invariant 3
                // holds): only later ones restart it.
                Ok(Some(Ok(mut batch))) if batch.last_at >= spawned_at => {
                    let unit_guard = (&mut unit.guard, generation, pgid);
                    self.guard_batch(unit_guard, &mut batch, ready_at);
                    if batch.paths.is_empty() {
                        continue;
                    }
                    self.report_change(&batch);
                    self.tell(Up::Restarting(self.index));
                    return Ok(Step::Changed(batch.last_at));
                }
                Ok(_) => {}
            }
        }
    }

    /// Serving saw the generation exit on its own: said with its crash summary; the backoff of
    /// `restart = "on-failure"` starts anew after a generation that got ready or ran a while.
    async fn exited(&mut self, unit: &mut Unit, status: ExitStatus, got_ready: bool) -> Step {
        let root = self.shared.config.root.clone();
        let Some(backend) = unit.backend.as_mut() else {
            return Step::Exited;
        };
        let summary = backend.summary(&root).await;
        if got_ready || backend.spawned_at().elapsed() >= BACKOFF_LONGEST {
            unit.backoff = BACKOFF_FIRST;
        }
        unit.failed = !status.success();
        self.ui.emit(&Event::Exited {
            generation: unit.generation,
            status: process::describe_status(&status),
            summary,
        });
        Step::Exited
    }

    fn bind_listener(&self, unit: &mut Unit) -> Result<(), Error> {
        let config = &self.shared.config;
        if self.member.backend && config.inherit_socket {
            let (host, port) = (&config.host, config.port);
            let socket = port::bind_listener(host, port).map_err(|e| {
                Error::Port(format!(
                    "cannot bind {host}:{port} to hand it to the backend: {e}"
                ))
            })?;
            unit.listener = Some(socket);
        }
        Ok(())
    }

    fn report_change(&self, batch: &Batch) {
        let files = batch
            .paths
            .iter()
            .map(|p| self.relative(p).display().to_string())
            .collect();
        self.ui.emit(&Event::Changed { files });
    }

    /// A request that interrupted a wait, as the step it is (the coordinator said it).
    fn take_request(&mut self, request: Request) -> Step {
        match request {
            Request::Stop(_) => Step::Shutdown,
            Request::Restart(_) => Step::Restart,
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
            self.shared.record(&self.ui, &self.member, None);
            return Ok(Step::Stopped { shutdown });
        }
        let signal = self.shared.config.stop.signal;
        self.ui.emit(&Event::Stopping {
            generation,
            pid: backend.pid(),
            signal: signal.name(),
        });
        let (requests, ui) = (&mut self.requests, &self.ui);
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
                shutdown = true;
            }
            false
        };
        let stopped = backend
            .stop(signal, self.shared.config.stop.timeout, &mut hurry)
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
        self.shared.record(&self.ui, &self.member, None);
        Ok(Step::Stopped { shutdown })
    }

    /// Settling: lets a burst of saves finish (quiet for the debounce time, or the ceiling),
    /// so the next process starts with the code as it is after the last save.
    async fn settle(&mut self, mut last_at: Instant) -> Step {
        let ceiling = Instant::now() + SETTLE_CEILING;
        let debounce = self.shared.config.watch.debounce;
        let changes = &mut self.changes;
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
                    batch = changes.next() => last_at = last_at.max(batch.last_at),
                    _ = tokio::time::sleep_until(quiet_at.into()) => {
                        // Quiet by the watcher's delivery; the OS's queue has the last word.
                        let queued = changes.sync().await;
                        if queued.paths.is_empty() {
                            return;
                        }
                        last_at = last_at.max(queued.last_at);
                    }
                }
            }
        };
        match self.requests.wait(false, quiet).await {
            Ok(()) => Step::Settled,
            Err(request) => self.take_request(request),
        }
    }

    /// Waiting: after an exit on its own, until a change or `devrun restart` (or, with
    /// `restart = "on-failure"` after a failure, the backoff), or a shutdown request.
    async fn wait_for_change(&mut self, unit: &mut Unit) -> Step {
        let backoff = match (self.member.restart, unit.failed) {
            (RestartPolicy::OnFailure, true) => Some(unit.backoff),
            _ => None,
        };
        match backoff {
            Some(wait) => {
                self.ui.emit(&Event::Warning(format!(
                    "restarting in {} s (restart = \"on-failure\")",
                    wait.as_secs()
                )));
                unit.backoff = (wait * 2).min(BACKOFF_LONGEST);
            }
            None => self.ui.emit(&Event::Waiting),
        }
        let changes = &mut self.changes;
        let changed_or_due = async {
            tokio::select! {
                batch = changes.next() => Some(batch),
                _ = async {
                    match backoff {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => std::future::pending().await,
                    }
                } => None,
            }
        };
        match self.requests.wait(true, changed_or_due).await {
            Ok(Some(batch)) => {
                self.report_change(&batch);
                Step::Changed(batch.last_at)
            }
            Ok(None) => Step::Restart,
            Err(request) => self.take_request(request),
        }
    }

    /// The rule for "the port is free" for this process's port (none: always).
    fn port_is_free(&self, held_socket: bool) -> bool {
        match self.member.port {
            Some(port) => port_is_free(&self.shared.config.host, port, held_socket),
            None => true,
        }
    }

    /// Waits up to `timeout` for the port to be free (by `port_is_free`), or for a shutdown
    /// request.
    async fn wait_port(&mut self, unit: &Unit, timeout: Duration) -> PortWait {
        let began = Instant::now();
        let held_socket = unit.listener.is_some();
        let (host, port) = (self.shared.config.host.clone(), self.member.port);
        let free = async {
            loop {
                if port.is_none_or(|port| port_is_free(&host, port, held_socket)) {
                    return PortWait::Free(began.elapsed());
                }
                if began.elapsed() >= timeout {
                    return PortWait::Held;
                }
                tokio::time::sleep(process::poll_interval(began.elapsed())).await;
            }
        };
        match self.requests.wait(false, free).await {
            Ok(outcome) => outcome,
            Err(_) => PortWait::Interrupted,
        }
    }

    /// How to pick another port for this process, for messages.
    fn other_port_hint(&self) -> String {
        match self.member.backend {
            true => "use another port (--port)".to_string(),
            false => format!("set another `port` in [processes.{}]", self.member.name),
        }
    }

    fn held_port_message(&self, port: u16) -> String {
        let hint = self.other_port_hint();
        if let Some(closing) = port::closing_only(port) {
            return format!(
                "port {port} cannot be bound yet: no process holds it, but it is blocked by \
                 {closing} left by a stopped process (whose listener did not set SO_REUSEADDR); \
                 the kernel drops them within about a minute (net.ipv4.tcp_fin_timeout). Start \
                 again then, or {hint}"
            );
        }
        let what = match self.member.backend {
            true => "a second backend",
            false => &self.member.name,
        };
        format!(
            "port {port} is held by {}: devrun will not start {what} beside it. Stop that \
             process, pass --kill-port-holder to have devrun end it, or {hint}",
            port::describe_holders(&port::holders(port))
        )
    }

    /// Before the first generation: the port must be free (a process that is just exiting gets
    /// the port timeout to let go of it).
    async fn claim_port(&mut self, unit: &Unit) -> Result<(), Error> {
        let Some(port) = self.member.port else {
            return Ok(());
        };
        if self.port_is_free(unit.listener.is_some()) {
            return Ok(());
        }
        // Refused with nobody listening (a port Windows reserved): waiting would not help.
        let host = self.shared.config.host.clone();
        if let Some(refused) = port::bind_error(&host, port).and_then(|e| {
            port::refusal_message(port, e.raw_os_error(), !port::holders(port).is_empty())
        }) {
            return Err(Error::Port(refused));
        }
        if self.shared.config.options.kill_port_holder {
            self.end_port_holders(port).await?;
        }
        let timeout = self.shared.config.stop.port_timeout;
        self.ui.emit(&Warn::PortBusy { port, timeout }.into());
        match self.wait_port(unit, timeout).await {
            PortWait::Free(_) => Ok(()),
            PortWait::Held => Err(Error::Port(self.held_port_message(port))),
            PortWait::Interrupted => {
                Err(Error::Port("interrupted while waiting for the port".into()))
            }
        }
    }

    /// `--kill-port-holder`: ends each process holding the port, with the usual escalation.
    async fn end_port_holders(&mut self, port: u16) -> Result<(), Error> {
        let stop = &self.shared.config.stop;
        for holder in port::holders(port) {
            self.ui.emit(
                &Warn::KillPortHolder {
                    pid: holder.pid,
                    command: holder.command.clone(),
                    port,
                }
                .into(),
            );
            let stopped = process::stop_foreign(holder.pid, stop.signal, stop.timeout)
                .await
                .map_err(|e| Error::io(format!("cannot end pid {}", holder.pid), e))?;
            if let Some(text) = stopped.and_then(|s| s.warning) {
                let signal = stop.signal.name();
                self.ui
                    .emit(&Warn::SignalUndelivered { signal, text }.into());
            }
        }
        Ok(())
    }

    /// PortFree, between generations: free at once, or (while someone else holds it) says who
    /// and keeps waiting; changes meanwhile are folded into the coming start.
    async fn port_free_for_restart(&mut self, unit: &Unit) -> Step {
        let Some(port) = self.member.port else {
            return Step::PortFree;
        };
        match self
            .wait_port(unit, self.shared.config.stop.port_timeout)
            .await
        {
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
        let (host, held_socket) = (self.shared.config.host.clone(), unit.listener.is_some());
        let changes = &mut self.changes;
        let mut recheck = tokio::time::interval(HELD_PORT_RECHECK);
        let free = async {
            loop {
                tokio::select! {
                    _ = changes.next() => {}
                    _ = recheck.tick() => {
                        if port_is_free(&host, port, held_socket) {
                            return;
                        }
                    }
                }
            }
        };
        match self.requests.wait(false, free).await {
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

    /// Exiting: the process is stopped; confirm its port is free before exiting.
    async fn finish(&mut self, unit: &mut Unit) -> Result<(), Error> {
        self.preload.stop().await;
        // devrun's own socket goes first; then the port must be free for everyone.
        unit.listener = None;
        let Some(port) = self.member.port else {
            return Ok(());
        };
        let config = &self.shared.config;
        match port::wait_free(&config.host, port, config.stop.port_timeout).await {
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
fn port_is_free(host: &str, port: u16, held_socket: bool) -> bool {
    if held_socket {
        port::held_by_others(port).is_empty()
    } else {
        port::is_free(host, port)
    }
}
