//! The supervisor: one [`Runner`](unit::Runner) per supervised process (the backend, and each
//! `[processes.NAME]` of a stack), each moving through its own cycle (`phase`), and one
//! coordinator that owns what they share:
//!
//! - requests (Ctrl-C, SIGTERM, `devrun stop`/`restart`, `rs`): said once, handed to every
//!   runner ([`requests`]);
//! - the one watch: each batch of changes goes to the members whose watch it matches (the
//!   backend's filter for the backend and `watch = "backend"`; a member's own paths), and a
//!   member that restarts for a change takes those that name it in `restart_with` along;
//! - start order: no member starts before every port is claimed (a held port names its holder
//!   and starts nothing), nor before the members in its `after` are ready;
//! - `--once`: the stack is torn down once every member is ready, or as soon as one fails.
//!
//! Each runner keeps the invariants for its own process: the next generation is spawned only
//! after the previous group is confirmed gone and its port free.

mod config_file;
mod imports;
mod own_writes;
mod phase;
mod ports;
mod reload_only;
mod requests;
mod settle;
mod spawn;
mod start;
mod unit;

use crate::config::{Config, Member, ProcessWatch};
use crate::control::Request;
use crate::error::Error;
use crate::output::Label;
use crate::process;
use crate::project::{recover_orphan, take_project};
use crate::state::{self, BackendRecord, State, StateDir};
use crate::stdin::Typed;
use crate::ui::{Event, Ui, Warn};
use crate::watch::{Batch, Filter, Watch};
use requests::{Requests, Shutdown};
use start::{first_state, open_channel, say_at_start, start_watchdog};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use tokio::sync::{mpsc, oneshot, watch};
use unit::{Changes, Runner, Wiring};

/// Why `--once` tears a stack down that is all ready, or after a member failed.
const ONCE_DONE: &str = "every process is ready";
const ONCE_ABORT: &str = "another process failed";
/// Why the rest of a stack is stopped when a member ends devrun with an error.
const MEMBER_FAILED: &str = "a process could not go on";
/// Who a `restart_with` restart says asked for it.
const RESTART_WITH: &str = "restart_with";

/// What every runner reads or records.
pub(super) struct Shared {
    pub config: Config,
    pub state_dir: StateDir,
    /// What `.devrun/state.json` says; rewritten on every generation of any member.
    pub state: RefCell<State>,
    /// More than one member runs: status lines and output say which.
    pub stack: bool,
    /// The backend's watch filter: what `watch = "backend"` follows, and what counts as project
    /// code for preload.
    pub backend_filter: Filter,
}

impl Shared {
    /// Records `member`'s live generation (None: not running) and rewrites the state file.
    /// A failure is reported, not fatal: the lock still guarantees one devrun per project;
    /// only orphan recovery after a crash would miss this generation.
    pub fn record(&self, ui: &Ui, member: &Member, running: Option<BackendRecord>) {
        let mut state = self.state.borrow_mut();
        if running.is_some() {
            state.exited.remove(&member.name);
        }
        state.set_member(&member.name, member.port, running);
        self.write(ui, &state);
    }

    /// Records that `member`'s live generation is ready.
    pub fn record_ready(&self, ui: &Ui, member: &Member) {
        let mut state = self.state.borrow_mut();
        state.set_ready(&member.name);
        self.write(ui, &state);
    }

    /// Records how `member`'s generation ended on its own (until its next start).
    pub fn record_exit(&self, ui: &Ui, member: &Member, how: String) {
        let mut state = self.state.borrow_mut();
        state.exited.insert(member.name.clone(), how);
        self.write(ui, &state);
    }

    fn write(&self, ui: &Ui, state: &State) {
        if let Err(e) = self.state_dir.write(state) {
            let path = self.state_dir.path().join("state.json");
            ui.emit(
                &Warn::StateNotWritten {
                    path: path.display().to_string(),
                    error: e.to_string(),
                }
                .into(),
            );
        }
    }

    /// "the backend", or the member's name in a stack (for messages).
    pub fn who(&self, member: &Member) -> String {
        match self.stack {
            true => member.name.clone(),
            false => "the backend".to_string(),
        }
    }
}

/// What a runner tells the coordinator.
pub(super) enum Up {
    /// Its port is confirmed free (or it has none): it may start once the rest are too.
    Claimed(usize),
    /// Ready (its port answers, or it has no port and started): members `after` it may start.
    Ready(usize),
    /// `--once`: it failed (exited, not ready, interrupted): the rest are torn down.
    Failed(usize, Error),
    /// It restarts for a change: members naming it in `restart_with` restart too.
    Restarting(usize),
    /// Settling: deliver every change the OS has queued (the watch's fence), then answer.
    Sync(oneshot::Sender<bool>),
    /// The project files its generation imported (see `imports`).
    Imported(Vec<PathBuf>),
    /// It is done: stopped for good, or an error that ends devrun.
    Done(usize, Result<(), Error>),
}

/// Runs devrun in watch mode, or `--once`.
pub async fn run(config: Config, ui: Ui) -> Result<(), Error> {
    process::prepare_supervisor().map_err(|e| Error::io("cannot become a child subreaper", e))?;
    if let Some(text) = process::prepare_console() {
        ui.emit(&Warn::Console { text }.into());
    }
    let members = config.members();
    say_at_start(&config, &members, &ui);
    let shutdown = Shutdown::install()?;
    // `rs` typed in the terminal is the same request as `devrun restart`.
    let typed = Typed::start(shutdown.control_sender(), ui.clone());
    let state_dir = config.state_dir();
    let lock = take_project(&state_dir, &config, &ui, config.options.replace).await?;
    recover_orphan(&state_dir, &config, &ui).await?;
    let run = state::random_id().map_err(|e| Error::io("cannot make a run id", e))?;
    let control = open_channel(&shutdown, &state_dir, &ui).await;
    let state = first_state(&config, &state_dir, run, control);
    if let Some(log) = state.log.clone() {
        // Started by `devrun up`: its output goes to this file, kept bounded while it runs.
        tokio::spawn(crate::logfile::keep_bounded(log));
    }
    let backend_filter = Filter::new(&config.watch, &config.root)
        .map_err(|e| Error::Watch(format!("invalid watch globs: {e}")))?;
    let shared = Rc::new(Shared {
        stack: members.len() > 1,
        backend_filter,
        config,
        state_dir,
        state: RefCell::new(state),
    });
    for member in &members {
        shared.record(&ui, member, None);
    }
    let watchdog = start_watchdog(&shared.config, &ui);
    let local = tokio::task::LocalSet::new();
    let result = local
        .run_until(coordinate(shared.clone(), members, shutdown, typed, ui))
        .await;
    if result.is_ok() {
        shared.state_dir.clear();
    }
    // Closes its pipe and waits for it: it finds no record (or a live devrun) and ends.
    drop(watchdog);
    drop(lock);
    result
}

/// The prefix of each member's output lines, in a stack: its name padded to the longest, in a
/// colour of its own (none for a backend alone, whose output stays untouched).
fn labels(members: &[Member], ui: &Ui) -> Vec<Option<Label>> {
    let width = members.iter().map(|m| m.name.len()).max().unwrap_or(0);
    (0..members.len())
        .map(|index| {
            (members.len() > 1).then(|| Label::new(&members[index].name, width, index, ui.colour()))
        })
        .collect()
}

/// How far a member got towards serving, as the coordinator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Progress {
    /// Its port is not confirmed free yet.
    Claiming,
    /// Its port is free: it starts once every port is and its `after` members are ready.
    Claimed,
    /// Let start.
    Released,
    /// A generation of it got ready (once is enough for those `after` it).
    Ready,
}

/// The coordinator's view of one runner.
struct Handle {
    name: String,
    requests: mpsc::UnboundedSender<Request>,
    changes: mpsc::UnboundedSender<Batch>,
    go: watch::Sender<bool>,
    /// Indices of the members it starts after.
    after: Vec<usize>,
    /// Indices of the members that restart when it restarts for a change.
    restarted_with_it: Vec<usize>,
    watch: ProcessWatch,
    progress: Progress,
    /// Its runner ended (stopped for good, or an error).
    done: bool,
}

impl Handle {
    fn ready(&self) -> bool {
        self.progress == Progress::Ready
    }
}

/// Everything the coordinator decides on while the runners run.
struct Coordinator {
    handles: Vec<Handle>,
    ui: Ui,
    once: bool,
    /// A shutdown was asked for, or the stack is being torn down: no member starts after it.
    stopping: bool,
    /// The first error (a member that could not go on, or `--once`'s first failure).
    error: Option<Error>,
    /// Edits to it are said, never routed (see `config_file`).
    config_file: Option<config_file::ConfigFile>,
    /// Imported files `.gitignore` names that restart the backend anyway (see `imports`).
    imports: imports::Imports,
}

/// Starts a runner per member and coordinates them until every one is done.
async fn coordinate(
    shared: Rc<Shared>,
    members: Vec<Member>,
    mut shutdown: Shutdown,
    typed: Option<Typed>,
    ui: Ui,
) -> Result<(), Error> {
    let config = &shared.config;
    let once = config.options.once;
    let (handles, mut up) = start_runners(&shared, members, typed, &ui);
    let mut watch = match once {
        true => None,
        false => Some(start_watch(&shared, &ui)?),
    };
    let backend_filter = &shared.backend_filter;
    let mut coordinator = Coordinator {
        handles,
        ui,
        once,
        stopping: false,
        error: None,
        config_file: config_file::ConfigFile::new(config),
        imports: imports::Imports::new(&config.root),
    };
    while !coordinator.handles.iter().all(|h| h.done) {
        tokio::select! {
            request = shutdown.next() => coordinator.forward(request),
            batch = next_batch(&mut watch) => coordinator.route(batch, backend_filter),
            message = up.recv() => match message {
                Some(Up::Sync(reply)) => {
                    let mut finished = false;
                    if let Some(watch) = watch.as_mut() {
                        let batch = watch.sync().await;
                        finished = batch.finished;
                        coordinator.route(batch, backend_filter);
                    }
                    let _ = reply.send(finished);
                }
                Some(Up::Imported(files)) => coordinator.take_imports(files, watch.as_mut()),
                Some(message) => coordinator.take(message),
                // Every runner is gone (a panic would end up here too).
                None => break,
            },
        }
    }
    coordinator.finish()
}

/// Starts a runner per member (each waits for its turn); the coordinator's handles on them,
/// and where they all report.
fn start_runners(
    shared: &Rc<Shared>,
    members: Vec<Member>,
    mut typed: Option<Typed>,
    ui: &Ui,
) -> (Vec<Handle>, mpsc::UnboundedReceiver<Up>) {
    let (up_sender, up) = mpsc::unbounded_channel();
    let labels = labels(&members, ui);
    let mut handles: Vec<Handle> = Vec::new();
    for (index, (member, label)) in members.iter().zip(labels).enumerate() {
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let (go, go_rx) = watch::channel(false);
        handles.push(Handle {
            name: member.name.clone(),
            requests,
            changes,
            go,
            after: Vec::new(),
            restarted_with_it: Vec::new(),
            watch: member.watch.clone(),
            progress: Progress::Claiming,
            done: false,
        });
        let ui = match shared.stack {
            true => ui.for_process(&member.name),
            false => ui.clone(),
        };
        let wiring = Wiring {
            typed: typed.take().filter(|_| member.extras.typed),
            member: member.clone(),
            label,
            index,
            ui,
            requests: Requests { rx: requests_rx },
            changes: Changes::new(changes_rx, up_sender.clone()),
            go: go_rx,
        };
        tokio::task::spawn_local(Runner::new(shared.clone(), wiring).run());
    }
    link(&mut handles, &members);
    (handles, up)
}

/// Fills `after` and `restarted_with_it` by index (names left out by `--only` are dropped).
fn link(handles: &mut [Handle], members: &[Member]) {
    let index = |handles: &[Handle], name: &str| handles.iter().position(|h| h.name == name);
    for (me, member) in members.iter().enumerate() {
        let after: Vec<usize> = member
            .after
            .iter()
            .filter_map(|name| index(handles, name))
            .collect();
        handles[me].after = after;
        for name in &member.restart_with {
            if let Some(leader) = index(handles, name) {
                handles[leader].restarted_with_it.push(me);
            }
        }
    }
}

/// The one watch: the backend's paths and filter, plus each member's watched files and folders.
fn start_watch(shared: &Shared, ui: &Ui) -> Result<Watch, Error> {
    let config = &shared.config;
    let mut watching = config.watch.clone();
    // Watched whatever `include` says, so an edit is said (see `config_file`).
    watching.also.extend(config.source.clone());
    for process in &config.processes {
        let ProcessWatch::Paths(paths) = &process.watch else {
            continue;
        };
        for path in paths {
            if !path.is_dir() {
                watching.also.push(path.clone());
                continue;
            }
            let relative = path.strip_prefix(&config.root).unwrap_or(path);
            let glob = globset::escape(&relative.display().to_string());
            watching.include.push(format!("{glob}/**"));
            if !watching.paths.iter().any(|p| path.starts_with(p)) {
                watching.paths.push(path.clone());
            }
        }
    }
    let warner = ui.clone();
    let warn = Box::new(move |message| warner.emit(&Event::Warning(message)));
    let watch =
        Watch::start(&watching, &config.root, warn).map_err(|e| Error::Watch(e.to_string()))?;
    if let Some(reason) = &watch.poll_reason {
        let reason = reason.clone();
        ui.emit(&Warn::Polling { reason }.into());
    } else if watch.polling {
        let every = config.watch.poll_interval;
        ui.emit(&Warn::InotifyLimit { every }.into());
    }
    ui.emit(&Event::Watching {
        source: config.source_name(),
        folders: watch.watched_folders(),
        include: config.watch.include.clone(),
    });
    Ok(watch)
}

/// The watch's next batch; never, without a watch (`--once`).
async fn next_batch(watch: &mut Option<Watch>) -> Batch {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

impl Coordinator {
    /// A request from outside: said once here, handed to every runner.
    fn forward(&mut self, request: Request) {
        match request {
            Request::Stop(reason) => {
                self.ui.emit(&Event::ShuttingDown {
                    reason: reason.to_string(),
                });
                self.stopping = true;
            }
            Request::Restart(by) => self.ui.emit(&Warn::RestartRequested { by }.into()),
        }
        self.send_all(request);
    }

    fn send_all(&self, request: Request) {
        for handle in self.handles.iter().filter(|h| !h.done) {
            let _ = handle.requests.send(request);
        }
    }

    /// Hands each member the paths of `batch` its route wants.
    fn route(&mut self, mut batch: Batch, backend: &Filter) {
        if let Some(config_file) = self.config_file.as_mut() {
            config_file.take(&mut batch, &self.ui);
        }
        for handle in self.handles.iter().filter(|h| !h.done) {
            let paths: Vec<PathBuf> = batch
                .paths
                .iter()
                .filter(|p| self.imports.wants(&handle.watch, p, backend))
                .cloned()
                .collect();
            if !paths.is_empty() {
                let last_at = batch.last_at;
                let finished = batch.finished;
                let _ = handle.changes.send(Batch {
                    paths,
                    last_at,
                    finished,
                });
            }
        }
    }

    fn take(&mut self, message: Up) {
        match message {
            Up::Claimed(i) => self.handles[i].progress = Progress::Claimed,
            Up::Ready(i) => self.handles[i].progress = Progress::Ready,
            Up::Failed(i, e) => {
                self.error.get_or_insert(e);
                self.stopping = true;
                // The one that failed is tearing down already: one more request would read
                // as a second Ctrl-C (kill at once).
                for (j, handle) in self.handles.iter().enumerate() {
                    if j != i && !handle.done {
                        let _ = handle.requests.send(Request::Stop(ONCE_ABORT));
                    }
                }
            }
            Up::Restarting(i) => {
                for &j in &self.handles[i].restarted_with_it {
                    let _ = self.handles[j]
                        .requests
                        .send(Request::Restart(RESTART_WITH));
                }
            }
            Up::Sync(_) | Up::Imported(_) => {}
            Up::Done(i, result) => {
                self.handles[i].done = true;
                if let Err(e) = result {
                    self.error.get_or_insert(e);
                    if !self.stopping {
                        self.stopping = true;
                        self.send_all(Request::Stop(MEMBER_FAILED));
                    }
                }
            }
        }
        self.release();
    }

    /// Lets every member start whose port is claimed (all of them are, first) and whose
    /// `after` members are ready; with `--once`, tears the stack down once all are ready.
    fn release(&mut self) {
        let claiming = |h: &Handle| h.progress == Progress::Claiming && !h.done;
        if self.stopping || self.handles.iter().any(claiming) {
            return;
        }
        let ready: Vec<bool> = self.handles.iter().map(|h| h.ready()).collect();
        for handle in self.handles.iter_mut() {
            if handle.progress == Progress::Claimed && handle.after.iter().all(|&i| ready[i]) {
                handle.progress = Progress::Released;
                let _ = handle.go.send(true);
            }
        }
        if self.once && ready.iter().all(|&ready| ready) {
            self.stopping = true;
            self.send_all(Request::Stop(ONCE_DONE));
        }
    }

    fn finish(self) -> Result<(), Error> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if self.once && !self.handles.iter().all(Handle::ready) {
            let waiting: Vec<&str> = self
                .handles
                .iter()
                .filter(|h| !h.ready())
                .map(|h| h.name.as_str())
                .collect();
            return Err(Error::BackendFailed(format!(
                "stopped before {} started",
                waiting.join(", ")
            )));
        }
        if self.once {
            let members = self.handles.iter().map(|h| h.name.clone()).collect();
            self.ui.emit(&Event::OncePassed { members });
        }
        Ok(())
    }
}

#[cfg(test)]
mod runner_tests;
#[cfg(test)]
mod tests;
