//! `devrun up`: this project's devrun in the background, for scripts, editors and coding agents.
//! It starts a devrun in a session of its own (stdin closed, its output and every member's to
//! `.devrun/devrun.log`), waits until every member is ready, prints one line per member and
//! exits 0. A project that already runs under a devrun gets nothing new: the same lines. A
//! member that fails before it is ready ends the run it started (exit 1, with how it ended and
//! its last lines), so nothing is left running.

use crate::cli::ProjectArgs;
use crate::config::Config;
use crate::control::Verb;
use crate::error::{Error, ExitCode};
use crate::logfile::{self, LOG_FILE, LOG_VARIABLE};
use crate::project::stop_running_devrun;
use crate::state::{State, StateDir};
use crate::ui::Ui;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often the state file is read while waiting.
const POLL: Duration = Duration::from_millis(20);
/// How long to wait before starting again when the project lock was still held.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The lines of a failed member's output shown.
const FAILED_LINES: usize = 20;

/// What `devrun up` was asked.
pub struct UpArgs<'a> {
    pub config: &'a Config,
    pub project: ProjectArgs,
    /// The run's own arguments (after `up`), handed to the devrun it starts.
    pub forward: Vec<OsString>,
    pub json: bool,
    pub wait_timeout: Duration,
}

/// How the wait ended.
enum Outcome {
    Ready(State),
    /// A member exited before it was ready: its name and how it ended.
    MemberFailed(State, String, String),
    /// The devrun started here exited first (a config error, a held port, another devrun).
    DevrunExited(i32),
    TimedOut(Option<State>),
}

pub async fn up(args: UpArgs<'_>, ui: &Ui) -> Result<ExitCode, Error> {
    let started = Instant::now();
    let state_dir = args.config.state_dir();
    let log = state_dir.path().join(LOG_FILE);
    let timeout = args.config.devrun_exit_timeout();
    let mut child = match state_dir.running_devrun() {
        Some(_) => None,
        None => {
            // What loading the config picked (a new `port = "auto"`) is said here: the devrun
            // started next finds it kept and says nothing.
            for note in &args.config.notes {
                ui.emit(&crate::ui::Event::Warning(note.clone()));
            }
            Some(start_detached(&args, &state_dir)?)
        }
    };
    loop {
        let deadline = started + args.wait_timeout;
        match wait(&state_dir, child.as_mut(), deadline).await {
            Outcome::Ready(state) => {
                report_ready(&state, &args, ui)?;
                return Ok(ExitCode::Ok);
            }
            // Another `devrun up` (or devrun) took the project first: wait for that one. A
            // lock that no live devrun's record explains is still being let go (a devrun
            // killed a moment ago, its last threads exiting): try again.
            Outcome::DevrunExited(4) if child.is_some() => {
                child = match state_dir.running_devrun() {
                    Some(_) => None,
                    None if Instant::now() < started + args.wait_timeout => {
                        tokio::time::sleep(RETRY_PAUSE).await;
                        Some(start_detached(&args, &state_dir)?)
                    }
                    None => None,
                };
            }
            Outcome::DevrunExited(code) => {
                ui.error(&format!(
                    "devrun exited with code {code} before every process was ready; its \
                     last lines ({}):",
                    log.display()
                ));
                print_tail(&log, None, false);
                return Ok(exit_code(code));
            }
            Outcome::MemberFailed(state, name, how) => {
                let stack = !state.processes.is_empty();
                ui.error(&format!("{} {how}; its last lines:", who(&name, stack)));
                print_tail(&log, Some(&name), stack);
                end_what_we_started(&state_dir, &state, child.as_mut(), ui, timeout).await?;
                return Ok(ExitCode::BackendFailed);
            }
            Outcome::TimedOut(state) => {
                let waited = args.wait_timeout.as_secs_f64();
                ui.error(&format!(
                    "not every process was ready within {waited:.1} s (--wait-timeout); the \
                     last lines of {}:",
                    log.display()
                ));
                print_tail(&log, None, false);
                if let Some(state) = state {
                    end_what_we_started(&state_dir, &state, child.as_mut(), ui, timeout).await?;
                }
                return Ok(ExitCode::BackendFailed);
            }
        }
    }
}

/// "the backend", or the member's name in a stack.
fn who(name: &str, stack: bool) -> String {
    match stack {
        true => name.to_string(),
        false => "the backend".to_string(),
    }
}

/// A devrun's exit code, as this command's.
fn exit_code(code: i32) -> ExitCode {
    match code {
        2 => ExitCode::Usage,
        3 => ExitCode::Port,
        4 => ExitCode::AlreadyRunning,
        _ => ExitCode::BackendFailed,
    }
}

/// Starts `devrun <the same arguments>` in a session of its own, its output appended to the
/// log (one descriptor shared with every member: see `logfile::keep_bounded`).
fn start_detached(args: &UpArgs, state_dir: &StateDir) -> Result<Child, Error> {
    let log_path = state_dir.path().join(LOG_FILE);
    state_dir
        .ensure()
        .map_err(|e| Error::io(format!("cannot make {}", state_dir.path().display()), e))?;
    let cannot = |e| Error::io(format!("cannot open {}", log_path.display()), e);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(cannot)?;
    let log_err = log.try_clone().map_err(cannot)?;
    let exe =
        std::env::current_exe().map_err(|e| Error::io("cannot find devrun's own executable", e))?;
    let cwd =
        std::env::current_dir().map_err(|e| Error::io("cannot read the current folder", e))?;
    let mut command = Command::new(exe);
    command
        .args(&args.forward)
        .current_dir(cwd)
        .env(LOG_VARIABLE, &log_path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    crate::sys::detach(&mut command);
    command
        .spawn()
        .map_err(|e| Error::io("cannot start devrun in the background", e))
}

/// Waits until every member of the running devrun is ready, one fails, the devrun started
/// here exits, or the deadline.
async fn wait(state_dir: &StateDir, mut child: Option<&mut Child>, deadline: Instant) -> Outcome {
    let mut last = None;
    loop {
        if let Some(child) = child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Outcome::DevrunExited(status.code().unwrap_or(1));
            }
        }
        if let Some(state) = state_dir.running_devrun() {
            match judge(&state) {
                Judged::Ready => return Outcome::Ready(state),
                Judged::Failed(name, how) => return Outcome::MemberFailed(state, name, how),
                Judged::Starting => last = Some(state),
            }
        }
        if Instant::now() >= deadline {
            return Outcome::TimedOut(last);
        }
        tokio::time::sleep(POLL).await;
    }
}

enum Judged {
    Ready,
    Failed(String, String),
    Starting,
}

/// Every member this devrun runs: ready, one failed (exited on its own and not running), or
/// still starting.
fn judge(state: &State) -> Judged {
    let mut all_ready = true;
    for (name, running) in state.members() {
        match (running, state.exited.get(name)) {
            (Some(running), _) if running.ready => {}
            (None, Some(how)) => return Judged::Failed(name.to_string(), how.clone()),
            _ => all_ready = false,
        }
    }
    match all_ready {
        true => Judged::Ready,
        false => Judged::Starting,
    }
}

/// One line per member (`backend  http://localhost:8001  pid 4242  generation 1`), or the
/// `status --json` object.
fn report_ready(state: &State, args: &UpArgs, ui: &Ui) -> Result<(), Error> {
    if args.json {
        super::status(&args.project, true)?;
        return Ok(());
    }
    let ports: Vec<(&str, u16)> = state.ports();
    let width = state
        .members()
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0);
    for (name, running) in state.members() {
        let url = match ports.iter().find(|(n, _)| *n == name) {
            Some((_, port)) => crate::port::browser_url(&state.host, *port),
            None => "(no port)".to_string(),
        };
        let (pid, generation) = running.map_or((0, 0), |r| (r.pid, r.generation));
        println!("{name:<width$}  {url}  pid {pid}  generation {generation}");
    }
    if let Some(log) = &state.log {
        ui.emit(&crate::ui::Event::Warning(format!(
            "devrun (pid {}) runs in the background; its output: {} (`devrun logs -f`), \
             `devrun down` stops it",
            state.devrun_pid,
            log.display()
        )));
    }
    Ok(())
}

/// The last lines of the log (a member's, in a stack), on stderr.
fn print_tail(log: &Path, member: Option<&str>, stack: bool) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let keep = |line: &str| member.is_none_or(|name| logfile::is_members(line, name, stack));
    for line in logfile::last_lines(&text, FAILED_LINES, keep) {
        eprintln!("    {line}");
    }
}

/// A run this command started, stopped with the full teardown (and reaped), so a failed
/// `devrun up` leaves nothing running. A devrun that was already running is left alone.
async fn end_what_we_started(
    state_dir: &StateDir,
    state: &State,
    child: Option<&mut Child>,
    ui: &Ui,
    timeout: Duration,
) -> Result<(), Error> {
    let Some(child) = child else {
        ui.emit(&crate::ui::Event::Warning(format!(
            "devrun (pid {}) was already running: it keeps running and restarts on the next \
             change",
            state.devrun_pid
        )));
        return Ok(());
    };
    stop_running_devrun(state_dir, state, ui, timeout, Verb::Stop).await?;
    let _ = child.wait();
    Ok(())
}
