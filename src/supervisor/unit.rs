//! One supervised process (the backend, or a member of a stack) through its cycle: each phase
//! (see [`super::phase`]) is one action of [`Runner`] that returns what it saw (a `Step`), and
//! the pure `next` says where that leads, in watch mode and `--once` alike. Every wait in those
//! actions goes through `Requests::wait`, the one place a request interrupts work. At most one
//! generation is alive: the next is spawned only after `Backend::stop` confirmed that every
//! process of the previous group is gone and the port is free (`ports`).

use super::phase::{next, Mode, Phase, Readiness, Step, Then};
use super::requests::{reason, Interrupts, Requests};
use super::{Shared, Up};
use crate::config::{Member, RestartPolicy};
use crate::control::Request;
use crate::envfile::Vars as EnvVars;
use crate::error::Error;
use crate::fast_stop::Bootstrap;
use crate::guard::{Contents, LoopGuard};
use crate::output::Label;
use crate::port::{self, NotReady, ReadyCheck};
use crate::process::{self, Backend};
use crate::stdin::Typed;
use crate::ui::{Event, Ui, Warn};
use crate::watch::Batch;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// `restart = "on-failure"`: the first wait before a restart, doubled after each failure up to
/// the longest; a generation that got ready (or lived this long) starts the count anew.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_LONGEST: Duration = Duration::from_secs(30);

/// Where one supervised process is in its cycle, its running generation, how many it has had,
/// and the socket it inherits.
pub(super) struct Unit {
    pub(super) phase: Phase,
    /// The running generation's process group (Serving and Stopping have one).
    pub(super) running: Option<Backend>,
    pub(super) generation: u32,
    /// The listening socket devrun holds and hands to each generation (`socket = "inherit"`).
    pub(super) listener: Option<socket2::Socket>,
    pub(super) guard: LoopGuard,
    /// The last generation exited on its own with a failure (non-zero status, a signal).
    failed: bool,
    /// The next `restart = "on-failure"` wait.
    backoff: Duration,
}

impl Unit {
    fn new() -> Unit {
        Unit {
            phase: Phase::Claiming,
            running: None,
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
    pub(super) rx: mpsc::UnboundedReceiver<Batch>,
    pub(super) up: mpsc::UnboundedSender<Up>,
    /// What changed files held when Serving last read them (see `guard::Contents`).
    pub(super) contents: Contents,
    /// The files of the change that began this restart (the settle phase takes them).
    pub(super) restarted_for: RefCell<Vec<PathBuf>>,
}

impl Changes {
    pub(super) fn new(
        rx: mpsc::UnboundedReceiver<Batch>,
        up: mpsc::UnboundedSender<Up>,
    ) -> Changes {
        Changes {
            rx,
            up,
            contents: Contents::default(),
            restarted_for: RefCell::new(Vec::new()),
        }
    }

    /// The next batch of changes for this process, outside Serving (its paths are read: what
    /// they hold now is what the next generation starts with). Cancel-safe.
    pub(super) async fn next(&mut self) -> Batch {
        match self.rx.recv().await {
            Some(batch) => {
                self.contents.read(&batch.paths);
                batch
            }
            None => std::future::pending().await,
        }
    }
}

/// What Serving saw.
enum Seen {
    Exited(std::io::Result<ExitStatus>),
    Probed(Result<Duration, NotReady>),
    Changed(Batch),
    /// Time to look at the generation's import report (see `imports`).
    Imports,
    /// The reload-loop guard's held changes are due (see `guard`).
    Deferred,
}

/// One process's supervisor.
pub(super) struct Runner {
    pub(super) shared: Rc<Shared>,
    pub(super) member: Member,
    /// In a stack, the prefix of its output lines.
    pub(super) label: Option<Label>,
    index: usize,
    mode: Mode,
    pub(super) ui: Ui,
    pub(super) requests: Requests,
    pub(super) changes: Changes,
    go: watch::Receiver<bool>,
    /// The env file's variables as the last generation got them.
    pub(super) env_file_vars: EnvVars,
    /// Lines typed in devrun's terminal, when it is one: forwarded to its stdin.
    pub(super) typed: Option<Typed>,
    /// `[server] preload`: the preloader its generations are forked from (Linux).
    pub(super) preload: crate::preload::Slot,
    /// The fast-stop bootstrap, written at the first start (None inside: it could not be).
    pub(super) fast_stop: Option<Option<Bootstrap>>,
    /// `[watch] reload_only`: template changes its generation serves (see `reload_only`).
    pub(super) reload_only: globset::GlobSet,
}

/// What a runner is given: its member, where it reports, and its part of what it shares.
pub(super) struct Wiring {
    pub member: Member,
    pub label: Option<Label>,
    pub index: usize,
    pub ui: Ui,
    pub requests: Requests,
    pub changes: Changes,
    pub go: watch::Receiver<bool>,
    pub typed: Option<Typed>,
}

impl Runner {
    pub(super) fn new(shared: Rc<Shared>, wiring: Wiring) -> Runner {
        let mode = match shared.config.options.once {
            true => Mode::Once,
            false => Mode::Watch,
        };
        Runner {
            member: wiring.member,
            label: wiring.label,
            index: wiring.index,
            mode,
            ui: wiring.ui,
            requests: wiring.requests,
            changes: wiring.changes,
            go: wiring.go,
            env_file_vars: EnvVars::new(),
            typed: wiring.typed,
            preload: crate::preload::Slot::default(),
            fast_stop: None,
            reload_only: super::reload_only::globs(&shared.config.reload_only),
            shared,
        }
    }

    /// Runs the cycle until stopped for good; says when done.
    pub(super) async fn run(mut self) {
        let result = self.run_to_end().await;
        let _ = self.changes.up.send(Up::Done(self.index, result));
    }

    async fn run_to_end(&mut self) -> Result<(), Error> {
        let mut unit = Unit::new();
        loop {
            let step = match unit.phase {
                Phase::Claiming => self.claim(&mut unit).await?,
                Phase::Gated => self.wait_for_turn().await,
                Phase::Starting => self.start(&mut unit).await?,
                Phase::Serving(readiness) => self.serve(&mut unit, readiness).await?,
                Phase::Stopping(then) => self.stop(&mut unit, then).await?,
                Phase::Settling { last, .. } => self.settle(last).await,
                Phase::Waiting { .. } => self.wait_for_change(&mut unit).await,
                Phase::PortFree => self.port_free_for_restart(&unit).await,
                Phase::Exiting => return self.finish(&mut unit).await,
            };
            let after = next(self.mode, unit.phase, step);
            self.report(unit.phase, after);
            // A spare behind a generation starts once it is ready (or ended), never during its
            // start; `--once` needs none.
            let done = matches!(
                after,
                Phase::Serving(Readiness::Ready(_)) | Phase::Waiting { .. }
            );
            if done && self.mode == Mode::Watch {
                self.preload.start_next_spare(&self.ui);
            }
            unit.phase = after;
        }
    }

    /// What the coordinator hears of a move: the port claimed, and each generation ready.
    fn report(&self, before: Phase, after: Phase) {
        match (before, after) {
            (Phase::Claiming, Phase::Gated) => self.tell(Up::Claimed(self.index)),
            (Phase::Serving(Readiness::Ready(_)), _) => {}
            (_, Phase::Serving(Readiness::Ready(_))) => {
                self.shared.record_ready(&self.ui, &self.member);
                self.tell(Up::Ready(self.index));
            }
            _ => {}
        }
    }

    pub(super) fn tell(&self, message: Up) {
        let _ = self.changes.up.send(message);
    }

    /// `--once`: this member failed (the rest of the stack is torn down).
    fn fail_once(&self, why: String) {
        if self.mode == Mode::Once {
            self.tell(Up::Failed(self.index, Error::BackendFailed(why)));
        }
    }

    fn root(&self) -> &Path {
        &self.shared.config.root
    }

    /// Gated: until the coordinator lets it start (stopped before its turn: nothing ran).
    async fn wait_for_turn(&mut self) -> Step {
        match self
            .requests
            .wait(Interrupts::ShutdownOnly, self.go.wait_for(|go| *go))
            .await
        {
            Ok(Ok(_)) => Step::Go,
            Ok(Err(_)) | Err(_) => Step::Shutdown,
        }
    }

    /// Starting: the next generation, or (for a later one that cannot be spawned) the error
    /// said and a wait for a change. The first generation failing to spawn ends devrun.
    async fn start(&mut self, unit: &mut Unit) -> Result<Step, Error> {
        match self.spawn(unit).await {
            Ok(Ok(started)) => {
                // What the guard held back is in this generation: it read the files as they are.
                unit.guard.take_deferred();
                let at = started.spawned_at();
                unit.running = Some(started);
                let probe = self.member.port.is_some();
                Ok(Step::Started { at, probe })
            }
            Ok(Err(request)) => {
                let who = self.shared.who(&self.member);
                self.fail_once(format!("{} before {who} was started", reason(request)));
                Ok(Runner::take_request(request))
            }
            Err(e) if unit.generation == 1 => Err(e),
            Err(e) => {
                self.ui.error(&e.to_string());
                Ok(Step::StartFailed)
            }
        }
    }

    /// `path` relative to the project root, for display.
    pub(super) fn relative(&self, path: &Path) -> PathBuf {
        path.strip_prefix(self.root()).unwrap_or(path).to_path_buf()
    }

    /// Serving: probes readiness (while it is pending), and returns at the generation's exit,
    /// the probe's answer, the first change that restarts it, or a request.
    async fn serve(&mut self, unit: &mut Unit, readiness: Readiness) -> Result<Step, Error> {
        let http = self.member.ready.http.clone();
        let (generation, check) = (unit.generation, ready_check(unit, &http));
        let Some(running) = unit.running.as_mut() else {
            return Ok(Step::Exited);
        };
        let (spawned_at, pgid) = (running.spawned_at(), running.pgid());
        let host = self.shared.config.host.clone();
        let (port, timeout) = (self.member.port, self.member.ready.timeout);
        let probe = async {
            match (port, readiness) {
                (Some(port), Readiness::Pending) => {
                    port::wait_ready(&host, port, check, timeout).await
                }
                _ => std::future::pending().await,
            }
        };
        tokio::pin!(probe);
        let ready_at = readiness.started_at();
        let interrupts = match self.mode {
            Mode::Watch => Interrupts::Any,
            Mode::Once => Interrupts::ShutdownOnly,
        };
        loop {
            // Held changes of the reload-loop guard restart it after their pause.
            let deferred = unit.guard.deferred_until();
            let changes = &mut self.changes.rx;
            let seen = self.requests.wait(interrupts, async {
                tokio::select! {
                    biased;
                    status = running.exited() => Seen::Exited(status),
                    // Readiness before changes: a change is judged (the reload-loop guard)
                    // knowing whether the generation was already answering.
                    result = &mut probe => Seen::Probed(result),
                    Some(batch) = changes.recv() => Seen::Changed(batch),
                    _ = tokio::time::sleep(super::imports::IMPORTS_EVERY) => Seen::Imports,
                    _ = until(deferred) => Seen::Deferred,
                }
            });
            match seen.await {
                Err(request) => {
                    if ready_at.is_none() {
                        let who = self.shared.who(&self.member);
                        self.fail_once(format!("{} before {who} was ready", reason(request)));
                    }
                    return Ok(Runner::take_request(request));
                }
                Ok(Seen::Exited(status)) => {
                    let status = status.map_err(|e| Error::io("cannot wait for the backend", e))?;
                    return Ok(self.exited(unit, status, readiness).await);
                }
                Ok(Seen::Probed(result)) => {
                    self.say_fast_stop_off();
                    return Ok(self.probed(generation, result, spawned_at));
                }
                // Changes seen before this process started are already in it (invariant 3
                // holds): only later ones restart it.
                Ok(Seen::Changed(mut batch)) if batch.last_at >= spawned_at => {
                    if self.reload_only(&batch) {
                        match self.reload_templates(batch, generation).await {
                            Some(restart) => batch = restart,
                            None => continue,
                        }
                    }
                    let judged = (&mut unit.guard, generation, pgid);
                    let started = (spawned_at, readiness);
                    if let Some(step) = self.take_batch(judged, batch, started) {
                        return Ok(step);
                    }
                }
                Ok(Seen::Changed(before_start)) => {
                    self.changes.contents.read(&before_start.paths);
                }
                Ok(Seen::Imports) => self.report_imports(),
                Ok(Seen::Deferred) => return Ok(self.restart_for_held(unit.guard.take_deferred())),
            }
        }
    }

    /// The reload-loop guard's held changes are due: they restart the generation (said).
    fn restart_for_held(&self, paths: Vec<PathBuf>) -> Step {
        let files: Vec<String> = paths
            .iter()
            .map(|p| self.relative(p).display().to_string())
            .collect();
        self.ui.emit(&Event::Warning(format!(
            "restarting for {}, held back by the reload-loop guard",
            files.join(", ")
        )));
        let batch = Batch {
            paths,
            last_at: Instant::now(),
            finished: true,
        };
        self.restart_for(&batch)
    }

    /// A batch restarts the generation: said, and members that restart with it are told.
    pub(super) fn restart_for(&self, batch: &Batch) -> Step {
        self.report_change(batch);
        self.tell(Up::Restarting(self.index));
        Step::Changed(batch.last_at)
    }

    /// The readiness probe answered: said (and in `--once` a failure ends the run).
    fn probed(&self, generation: u32, result: Result<Duration, NotReady>, since: Instant) -> Step {
        let (port, timeout) = (self.member.port.unwrap_or(0), self.member.ready.timeout);
        let path = self.member.ready.http.as_deref().unwrap_or("/");
        match result {
            Ok(elapsed) => {
                let host = &self.shared.config.host;
                self.ui.emit(&Event::Ready {
                    generation,
                    elapsed,
                    address: format!("{host}:{port}"),
                    url: port::browser_url(host, port),
                });
                Step::Ready(Instant::now())
            }
            Err(reason) if self.mode == Mode::Once => {
                // In a stack, a readiness failure says whose.
                let whose = match self.shared.stack {
                    true => format!("{}: ", self.member.name),
                    false => String::new(),
                };
                self.fail_once(match reason {
                    NotReady::Status(code) => {
                        format!("{whose}health check GET {path} returned HTTP {code}")
                    }
                    reason => format!("{whose}not ready in {} ms: {reason}", timeout.as_millis()),
                });
                Step::NotReady(Instant::now())
            }
            // A 4xx ends the wait at once (see `port::wait_ready`): said as it came.
            Err(NotReady::Status(code)) => {
                self.ui.emit(&Event::NotReady {
                    generation,
                    elapsed: since.elapsed().min(timeout),
                    reason: format!("the health check GET {path} returned HTTP {code}"),
                });
                Step::NotReady(Instant::now())
            }
            Err(reason) => {
                self.ui.emit(&Event::NotReady {
                    generation,
                    elapsed: timeout,
                    reason: reason.to_string(),
                });
                Step::NotReady(Instant::now())
            }
        }
    }

    /// Serving saw the generation exit on its own: said with its crash summary (in `--once`,
    /// as the run's failure); the backoff of `restart = "on-failure"` starts anew after a
    /// generation that got ready or ran a while.
    async fn exited(&mut self, unit: &mut Unit, status: ExitStatus, readiness: Readiness) -> Step {
        let root = self.shared.config.root.clone();
        let Some(running) = unit.running.as_mut() else {
            return Step::Exited;
        };
        let summary = running.summary(&root).await.or_else(|| {
            // Exit 127 with no shell line naming what is missing: the command's program.
            let program = self.member.command.first()?;
            (status.code() == Some(crate::summary::COMMAND_NOT_FOUND))
                .then(|| format!("command not found: {program}"))
        });
        let got_ready = matches!(readiness, Readiness::Ready(_));
        let described = process::describe_status(&status);
        if self.mode == Mode::Once {
            let who = self.shared.who(&self.member);
            self.fail_once(match (got_ready, summary) {
                (true, _) => {
                    format!("{who} exited with {described} while the rest of the stack started")
                }
                (false, Some(summary)) => format!("{who} exited early with {described}: {summary}"),
                (false, None) => format!("{who} exited early with {described}"),
            });
            return Step::Exited;
        }
        if got_ready || running.spawned_at().elapsed() >= BACKOFF_LONGEST {
            unit.backoff = BACKOFF_FIRST;
        }
        // A Ctrl-C or Ctrl-Break ending (0xC000013A, KeyboardInterrupt) is no failure.
        unit.failed = !status.success() && summary.as_deref() != Some(crate::summary::CLEAN_STOP);
        let how = match &summary {
            Some(summary) => format!("exited with {described}: {summary}"),
            None => format!("exited with {described}"),
        };
        self.shared.record_exit(&self.ui, &self.member, how);
        self.ui.emit(&Event::Exited {
            generation: unit.generation,
            status: described,
            summary,
        });
        Step::Exited
    }

    fn report_change(&self, batch: &Batch) {
        self.changes.restarted_for.replace(batch.paths.clone());
        let files = batch
            .paths
            .iter()
            .map(|p| self.relative(p).display().to_string())
            .collect();
        self.ui.emit(&Event::Changed { files });
    }

    /// A request that interrupted a wait, as the step it is (the coordinator said it).
    pub(super) fn take_request(request: Request) -> Step {
        match request {
            Request::Stop(_) => Step::Shutdown,
            Request::Restart(_) => Step::Restart,
        }
    }

    /// Stopping: the whole group, escalating to a kill. A shutdown request meanwhile makes this
    /// the last stop; one more (or any, when this is the last stop already) kills at once.
    async fn stop(&mut self, unit: &mut Unit, then: Then) -> Result<Step, Error> {
        let generation = unit.generation;
        let mut last_stop = then == Then::Exit;
        let mut shutdown = false;
        if let Some(typed) = &self.typed {
            typed.detach(); // its stdin closes; lines typed from now on are dropped
        }
        let Some(mut running) = unit.running.take() else {
            return Ok(Step::Stopped { shutdown });
        };
        if !running.alive() {
            // Exited on its own with nothing left behind: nothing to stop or report.
            running.drain_output().await;
            self.shared.record(&self.ui, &self.member, None);
            return Ok(Step::Stopped { shutdown });
        }
        // Before a stop that may be uvicorn's own slow one, if not said yet.
        self.say_fast_stop_off();
        let signal = self.shared.config.stop.signal;
        self.ui.emit(&Event::Stopping {
            generation,
            pid: running.pid(),
            signal: signal.name(),
        });
        let (requests, ui) = (&mut self.requests, &self.ui);
        let mut hurry = || {
            while let Some(reason) = requests.try_recv() {
                if last_stop {
                    let reason = reason.into();
                    ui.emit(&Warn::KillNow { reason }.into());
                    return true;
                }
                (last_stop, shutdown) = (true, true);
            }
            false
        };
        let stopped = running
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
        match self.requests.wait(Interrupts::Any, changed_or_due).await {
            Ok(Some(batch)) => {
                self.report_change(&batch);
                Step::Changed(batch.last_at)
            }
            Ok(None) => Step::Restart,
            Err(request) => Runner::take_request(request),
        }
    }
}

/// Sleeps until `at`; forever without one.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
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
