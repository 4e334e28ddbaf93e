//! Who runs a project: the one-devrun-per-project lock, `--replace` and `devrun stop` asking the
//! running devrun to stop, and ending what a devrun that died left behind. The supervisor calls
//! these before its first generation; `devrun stop` calls them from outside.

use crate::config::ProjectConfig;
use crate::control::{self, Verb};
use crate::error::Error;
use crate::port;
use crate::process::{self, StopSignal};
use crate::state::{self, BackendRecord, ProjectLock, State, StateDir};
use crate::ui::{Ui, Warn};
use std::time::Duration;

/// One devrun per project: takes the project lock, or says who holds it (exit 4). The lock
/// alone is not the whole answer: a state file naming a live devrun that is not us (another
/// lock folder, or an older devrun whose `.devrun/` was recreated) also refuses. With
/// `replace`, asks the holder to stop (confirmed teardown) and takes over.
pub async fn take_project(
    state_dir: &StateDir,
    project: &ProjectConfig,
    ui: &Ui,
    replace: bool,
) -> Result<ProjectLock, Error> {
    let lock_error = |e| Error::io(format!("cannot lock {}", state_dir.path().display()), e);
    let mut replaced = false;
    loop {
        let mut holder = match (
            state_dir.try_lock().map_err(lock_error)?,
            state_dir.running_devrun(),
        ) {
            (Some(lock), None) => return Ok(lock),
            // Released at once: the project is not ours to take.
            (_, holder) => holder,
        };
        if replace && holder.is_none() {
            // A devrun that has just taken the lock writes its state file a moment later.
            holder = wait_for_holder(state_dir).await;
        }
        let who = match &holder {
            Some(s) => format!(
                "devrun (pid {}) already runs this project on {}",
                s.devrun_pid,
                s.describe_ports()
            ),
            None => "another devrun already runs this project".to_string(),
        };
        let holder = match holder {
            // --replace stops one devrun; if yet another took the project meanwhile, it stays.
            Some(holder) if replace && !replaced => holder,
            _ => {
                let hint = if replaced {
                    "it took the project over while the previous one stopped"
                } else if replace {
                    "no live devrun is named in state.json, so there is none to ask to stop"
                } else {
                    "use `devrun stop` or `devrun --replace`"
                };
                return Err(Error::AlreadyRunning(format!(
                    "{who} ({}); {hint}",
                    state_dir.path().display()
                )));
            }
        };
        ui.emit(
            &Warn::Replacing {
                pid: Some(holder.devrun_pid),
                port: Some(holder.port),
            }
            .into(),
        );
        let timeout = project.devrun_exit_timeout();
        stop_running_devrun(state_dir, &holder, ui, timeout, Verb::Replace).await?;
        replaced = true;
    }
}

/// The devrun holding the lock, once its state file names it (up to a second).
async fn wait_for_holder(state_dir: &StateDir) -> Option<State> {
    let mut holder = None;
    let named = async || {
        holder = state_dir.running_devrun();
        holder.is_some()
    };
    let _ = port::wait_until(named, HOLDER_TIMEOUT, |_| HOLDER_POLL).await;
    holder
}

/// How long a devrun that holds the lock may take to write its state file, and how often it is
/// looked for meanwhile.
const HOLDER_TIMEOUT: Duration = Duration::from_secs(1);
const HOLDER_POLL: Duration = Duration::from_millis(20);

/// Asks a running devrun (verified by pid and start time) to stop through its control channel;
/// it tears its backend down itself. Only if the channel cannot be reached is it sent the OS
/// stop (SIGTERM; TerminateProcess on Windows), with a warning. Waits until that process is
/// gone, and kills it if it does not exit in time (its backend is then an orphan, which
/// `recover_orphan` ends). Never takes the project lock.
pub async fn stop_running_devrun(
    state_dir: &StateDir,
    holder: &State,
    ui: &Ui,
    timeout: Duration,
    verb: Verb,
) -> Result<(), Error> {
    let pid = holder.devrun_pid;
    let asked = match &holder.control {
        Some(channel) => match control::send(channel, pid, verb).await {
            Ok(()) => true,
            Err(control::SendError::Refused(why)) => {
                return Err(Error::AlreadyRunning(format!(
                    "devrun (pid {pid}) refused the request on its control channel: {why}"
                )))
            }
            Err(e) => {
                let warn = Warn::ControlUnreachable {
                    pid,
                    control_port: channel.port,
                    control: Some(channel.describe()),
                    error: Some(e.to_string()),
                };
                ui.emit(&warn.into());
                false
            }
        },
        None => {
            let warn = Warn::ControlUnreachable {
                pid,
                control_port: None,
                control: None,
                error: None,
            };
            ui.emit(&warn.into());
            false
        }
    };
    if !asked {
        refuse_another_projects_devrun(state_dir, holder)?;
    }
    // The OS stop (SIGTERM; TerminateProcess on Windows) only when it was not asked; the kill
    // once `timeout` is over, either way.
    let first = (!asked).then_some(StopSignal::Terminate);
    let mut say_killed = || ui.emit(&Warn::DevrunKilled { pid, timeout }.into());
    let stopped = process::stop_one(pid, holder.devrun_start, first, timeout, &mut say_killed)
        .await
        .map_err(|e| Error::AlreadyRunning(format!("cannot stop devrun (pid {pid}): {e}")))?;
    if let Some(text) = stopped.and_then(|s| s.warning) {
        let signal = StopSignal::Terminate.name();
        ui.emit(&Warn::SignalUndelivered { signal, text }.into());
    }
    Ok(())
}

/// A state file is evidence, never an order: before a recorded devrun is signalled, it must hold
/// this project's lock (where the OS shows open files: Linux). A true pid and start time copied
/// into a forged record (another project's devrun) are refused, and nothing is signalled.
fn refuse_another_projects_devrun(state_dir: &StateDir, holder: &State) -> Result<(), Error> {
    let pid = holder.devrun_pid;
    let Ok(lock) = state::project_lock_path(state_dir.root()) else {
        return Ok(());
    };
    // Either lock will do: the per-user one, or `.devrun/lock` (a devrun started with another
    // lock folder, say from another login's XDG_RUNTIME_DIR, holds only that one).
    let local = state_dir.path().join("lock");
    let holds = |path: &std::path::Path| {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        crate::sys::has_open(pid, &path)
    };
    match holds(&lock).zip(holds(&local)) {
        Some((false, false)) => Err(Error::AlreadyRunning(format!(
            "devrun (pid {pid}), named in {}, does not hold this project's lock ({}): it runs \
             another project or the record is not its own; nothing was signalled",
            state_dir.path().join("state.json").display(),
            lock.display()
        ))),
        _ => Ok(()),
    }
}

/// A devrun that died (SIGKILL, crash, closed terminal) leaves its record behind: end what is
/// proven to be left of its run, every member's group at once (see `process::stop_orphan`). A
/// record whose devrun is alive is a running devrun, not an orphan, and is left alone.
pub async fn recover_orphan(
    state_dir: &StateDir,
    project: &ProjectConfig,
    ui: &Ui,
) -> Result<(), Error> {
    let Some(recorded) = state_dir.read() else {
        return Ok(());
    };
    if recorded.devrun_alive() {
        return Ok(());
    }
    let generations = recorded.generations();
    let stack = !recorded.processes.is_empty();
    let leaders: Vec<process::LeaderRecord> = generations
        .iter()
        .map(|(_, g)| process::LeaderRecord {
            pid: g.pid,
            pgid: g.pgid,
            start: g.start,
        })
        .collect();
    let names: Vec<String> = generations
        .iter()
        .map(|(name, g)| describe_generation(name, g, stack))
        .collect();
    let what = match names.as_slice() {
        [] => "processes".to_string(),
        names => names.join(", "),
    };
    let run = process::RunRecord {
        id: recorded.run.clone(),
        start: recorded.devrun_start,
    };
    let recovery = process::stop_orphan(
        &leaders,
        Some(&run),
        project.stop.signal,
        project.stop.timeout,
    )
    .await
    .map_err(|e| Error::io(format!("cannot stop what a dead devrun left ({what})"), e))?;
    for (index, why) in recovery.refused {
        let warn = Warn::OrphanRefused {
            state_dir: state_dir.path().display().to_string(),
            what: names.get(index).cloned().unwrap_or_default(),
            why,
        };
        ui.emit(&warn.into());
    }
    if let Some((pids, stopped)) = recovery.stopped {
        if let Some(text) = stopped.warning {
            let signal = project.stop.signal.name();
            ui.emit(&Warn::SignalUndelivered { signal, text }.into());
        }
        let warn = Warn::OrphanStopped {
            what,
            pids,
            elapsed: stopped.elapsed,
            killed: stopped.killed,
        };
        ui.emit(&warn.into());
    }
    state_dir.clear_if(&recorded);
    Ok(())
}

/// "generation 3 (pid 40)" for a backend run alone; in a stack "web generation 1 (pid 41)".
fn describe_generation(name: &str, generation: &BackendRecord, stack: bool) -> String {
    let what = format!(
        "generation {} (pid {})",
        generation.generation, generation.pid
    );
    if stack {
        format!("{name} {what}")
    } else {
        what
    }
}
