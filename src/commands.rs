//! `devrun status`, `devrun stop` and `devrun restart`: answers about, and actions on, the devrun
//! of a project from outside it, through `.devrun/`, its control channel and the OS. None of them
//! takes the project lock: asking must never keep a devrun from starting.

use crate::cli::ProjectArgs;
use crate::config::{ProjectConfig, DEFAULT_HOST};
use crate::control::{self, Verb};
use crate::error::{Error, ExitCode};
use crate::port;
use crate::procs;
use crate::project::{recover_orphan, stop_running_devrun};
use crate::state::{self, BackendRecord, State, StateDir};
use crate::ui::{Event, Ui};
use serde::Serialize;
use std::path::PathBuf;

/// The project's folder, and its config if it has a config file.
struct Project {
    root: PathBuf,
    config: Option<ProjectConfig>,
}

fn project(args: &ProjectArgs) -> Result<Project, Error> {
    let cwd =
        std::env::current_dir().map_err(|e| Error::io("cannot read the current folder", e))?;
    if let Some(file) = args.config.as_ref().map(|p| cwd.join(p)) {
        if !file.is_file() {
            return Err(Error::Usage(format!(
                "no config file at {}",
                file.display()
            )));
        }
    }
    // status, stop and restart need only the project layer: a config without a command is fine.
    let config = ProjectConfig::load(args)?;
    let root = config.as_ref().map_or(cwd, |c| c.root.clone());
    Ok(Project { root, config })
}

#[derive(Debug, Serialize)]
struct Listener {
    pid: u32,
    command: String,
    /// Part of this project's current backend (its leader, group or descendants).
    ours: bool,
    /// False when the OS reports no owner (pid 0: Windows for some sockets, Wine for all).
    owner_known: bool,
}

#[derive(Debug, Serialize)]
struct BackendStatus {
    pid: u32,
    generation: u32,
    alive: bool,
    uptime_s: u64,
    command: Vec<String>,
    /// Every process of the backend: leader first, then its descendants.
    tree: Vec<TreeProcess>,
}

#[derive(Debug, Serialize)]
struct TreeProcess {
    pid: u32,
    command: String,
}

#[derive(Debug, Serialize)]
struct StatusReport {
    project: PathBuf,
    /// devrun's pid, if a devrun holds the project lock.
    devrun_pid: Option<u32>,
    devrun_running: bool,
    devrun_uptime_s: Option<u64>,
    backend: Option<BackendStatus>,
    host: String,
    port: Option<u16>,
    listeners: Vec<Listener>,
    verdict: Verdict,
}

/// Who serves the project's port, as `status` judges it (its JSON name, text and exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Exactly this project's backend listens.
    Ok,
    /// Nothing listens.
    None,
    /// A process devrun did not start listens.
    Foreign,
}

impl Verdict {
    fn judge(listeners: &[Listener], backend_listens: bool) -> Verdict {
        if listeners.iter().any(|l| !l.ours) {
            Verdict::Foreign
        } else if !backend_listens {
            Verdict::None
        } else {
            Verdict::Ok
        }
    }

    pub fn exit_code(self) -> ExitCode {
        match self {
            Verdict::Ok => ExitCode::Ok,
            Verdict::None => ExitCode::BackendFailed,
            Verdict::Foreign => ExitCode::Port,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Verdict::Ok => "ok: exactly this project's backend serves the port",
            Verdict::None => "nothing listens on the port",
            Verdict::Foreign => "a process devrun did not start listens on the port",
        }
    }
}

/// Exit 0: exactly our backend listens; 1: nothing listens; 3: something else listens.
pub fn status(args: &ProjectArgs, json: bool) -> Result<ExitCode, Error> {
    let report = StatusReport::gather(&project(args)?);
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Usage(format!("cannot encode the status: {e}")))?;
        println!("{text}");
    } else {
        print_status(&report);
    }
    Ok(report.verdict.exit_code())
}

impl StatusReport {
    fn gather(project: &Project) -> StatusReport {
        // A dead devrun's record still names its backend, which may be an orphan now.
        let state = StateDir::new(&project.root).read();
        let running = state.as_ref().filter(|s| s.devrun_alive());
        let config = project.config.as_ref();
        let port = config.map(|c| c.port).or(state.as_ref().map(|s| s.port));
        let host = config
            .map(|c| c.host.clone())
            .or(state.as_ref().map(|s| s.host.clone()))
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        let now = state::unix_now();
        let backend = state
            .as_ref()
            .and_then(|s| s.backend.as_ref())
            .map(|b| backend_status(b, now));
        let devrun_pid = running.map(|s| s.devrun_pid);
        let listeners = listeners(port, backend.as_ref(), devrun_pid);
        // An owner the OS does not name (pid 0) is not counted against a live backend: it
        // cannot be told from it.
        let backend_alive = backend.as_ref().is_some_and(|b| b.alive);
        let backend_listens = listeners.iter().any(|l| {
            backend
                .as_ref()
                .is_some_and(|b| b.tree.iter().any(|t| t.pid == l.pid))
                || (!l.owner_known && backend_alive)
        });
        StatusReport {
            project: project.root.clone(),
            devrun_pid,
            devrun_uptime_s: running.map(|s| now.saturating_sub(s.started_at)),
            devrun_running: running.is_some(),
            verdict: Verdict::judge(&listeners, backend_listens),
            backend,
            host,
            port,
            listeners,
        }
    }
}

/// The recorded generation, and its live process tree if its leader is still that process.
fn backend_status(b: &BackendRecord, now: u64) -> BackendStatus {
    let alive = procs::is_same(b.pid, b.start);
    let mut tree = Vec::new();
    if alive {
        tree.push(b.pid);
        tree.extend(procs::descendants(b.pid));
        tree.extend(procs::group_members(b.pgid));
        tree.sort_unstable();
        tree.dedup();
        tree.retain(|p| !procs::is_zombie(*p));
    }
    BackendStatus {
        pid: b.pid,
        generation: b.generation,
        alive,
        uptime_s: now.saturating_sub(b.started_at),
        command: b.command.clone(),
        tree: tree
            .into_iter()
            .map(|pid| TreeProcess {
                pid,
                command: procs::command_line(pid),
            })
            .collect(),
    }
}

/// Every listener on the port, each marked as this project's or not. Without a live backend,
/// anything listening is not this project's (an unnamed owner included).
fn listeners(
    port: Option<u16>,
    backend: Option<&BackendStatus>,
    devrun_pid: Option<u32>,
) -> Vec<Listener> {
    let backend_alive = backend.is_some_and(|b| b.alive);
    port.map(port::holders)
        .unwrap_or_default()
        .into_iter()
        .map(|h| Listener {
            // devrun itself listens when it holds the socket for its backends (inherit mode).
            ours: backend.is_some_and(|b| b.tree.iter().any(|t| t.pid == h.pid))
                || devrun_pid == Some(h.pid)
                || (h.pid == port::UNKNOWN_OWNER && backend_alive),
            owner_known: h.pid != port::UNKNOWN_OWNER,
            pid: h.pid,
            command: h.command,
        })
        .collect()
}

fn print_status(report: &StatusReport) {
    println!("project: {}", report.project.display());
    match (report.devrun_pid, report.devrun_uptime_s) {
        (Some(pid), Some(up)) => println!("devrun:  pid {pid}, up {}", duration(up)),
        _ => println!("devrun:  not running"),
    }
    match &report.backend {
        Some(b) => {
            println!(
                "backend: generation {}, pid {}{}, up {}",
                b.generation,
                b.pid,
                if b.alive { "" } else { " (gone)" },
                duration(b.uptime_s)
            );
            for p in &b.tree {
                println!("         pid {} {}", p.pid, p.command);
            }
        }
        None => println!("backend: none"),
    }
    match report.port {
        Some(port) => {
            println!(
                "port:    {port} ({}), {} listener(s)",
                report.host,
                report.listeners.len()
            );
            for l in &report.listeners {
                let whose = if !l.owner_known {
                    "owner unknown (the OS reports pid 0)"
                } else if l.ours {
                    "this project's backend"
                } else {
                    "NOT started by devrun"
                };
                if l.owner_known {
                    println!("         pid {} {} [{whose}]", l.pid, l.command);
                } else {
                    println!("         [{whose}]");
                }
            }
        }
        None => println!("port:    unknown (no devrun.toml and no running devrun)"),
    }
    println!("verdict: {}", report.verdict.describe());
}

fn duration(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m {}s", seconds / 60, seconds % 60),
        _ => format!("{}h {}m", seconds / 3600, (seconds % 3600) / 60),
    }
}

/// Stops the running devrun of this project (it tears its backend down and exits) or, if it
/// is dead, the orphan it left. Exit 0 when the port is free afterwards.
pub async fn stop(args: &ProjectArgs, ui: &Ui) -> Result<(), Error> {
    let project = project(args)?;
    let state_dir = StateDir::new(&project.root);
    let recorded: Option<State> = state_dir.read();
    // The port and timeouts: the config's, else what the dead devrun recorded.
    let config = match project.config {
        Some(config) => config,
        None => {
            let Some(state) = &recorded else {
                ui.emit(&Event::Warning(
                    "nothing to stop: no devrun has run in this folder".into(),
                ));
                return Ok(());
            };
            ProjectConfig::recorded(&project.root, &state.host, state.port)
        }
    };
    let timeout = config.devrun_exit_timeout();
    if let Some(running) = state_dir.running_devrun() {
        ui.emit(&Event::Warning(format!(
            "stopping devrun (pid {}) and its backend",
            running.devrun_pid
        )));
        stop_running_devrun(&running, ui, timeout, Verb::Stop).await?;
    }
    recover_orphan(&state_dir, &config, ui).await?;
    // A devrun that started meanwhile is running, not left over: it is stopped too.
    if let Some(running) = state_dir.running_devrun() {
        ui.emit(&Event::Warning(format!(
            "devrun (pid {}) started meanwhile: stopping it too",
            running.devrun_pid
        )));
        stop_running_devrun(&running, ui, timeout, Verb::Stop).await?;
        recover_orphan(&state_dir, &config, ui).await?;
    }
    match port::wait_free(&config.host, config.port, config.stop.port_timeout).await {
        Ok(_) => {
            ui.emit(&Event::Warning(format!(
                "stopped; port {} is free",
                config.port
            )));
            Ok(())
        }
        Err(_) => Err(Error::Port(format!(
            "port {} is still held by {}",
            config.port,
            port::describe_holders(&port::holders(config.port))
        ))),
    }
}

/// Asks the running devrun of this project to restart its backend now (full confirmed
/// teardown, also while the backend is crashed). Exit 0 once it acknowledged; 1 when no devrun
/// runs this project or it cannot be reached.
pub async fn restart(args: &ProjectArgs, ui: &Ui) -> Result<ExitCode, Error> {
    let project = project(args)?;
    let state_dir = StateDir::new(&project.root);
    let Some(running) = state_dir.running_devrun() else {
        ui.error(&format!(
            "no devrun runs this project ({}): nothing to restart; start one with `devrun`",
            project.root.display()
        ));
        return Ok(ExitCode::BackendFailed);
    };
    let pid = running.devrun_pid;
    let Some(channel) = &running.control else {
        ui.error(&format!(
            "devrun (pid {pid}) runs this project but has no control channel (an older devrun?); \
             restart it by saving a watched file"
        ));
        return Ok(ExitCode::BackendFailed);
    };
    match control::send(channel, Verb::Restart).await {
        Ok(()) => {
            ui.emit(&Event::Warning(format!(
                "devrun (pid {pid}) is restarting its backend"
            )));
            Ok(ExitCode::Ok)
        }
        Err(e) => {
            ui.error(&format!(
                "devrun (pid {pid}) did not take the restart on its control channel \
                 127.0.0.1:{}: {e}",
                channel.port
            ));
            Ok(ExitCode::BackendFailed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(pid: u32, ours: bool) -> Listener {
        Listener {
            pid,
            command: String::new(),
            ours,
            owner_known: true,
        }
    }

    #[test]
    fn the_verdict_and_its_exit_code() {
        let judge = Verdict::judge;
        assert_eq!(judge(&[], false), Verdict::None);
        assert_eq!(judge(&[listener(1, true)], true), Verdict::Ok);
        assert_eq!(
            judge(&[listener(1, true), listener(2, false)], true),
            Verdict::Foreign
        );
        // devrun's own held socket is ours, but without the backend listening nothing serves.
        assert_eq!(judge(&[listener(1, true)], false), Verdict::None);
        let codes: Vec<u8> = [Verdict::Ok, Verdict::None, Verdict::Foreign]
            .map(|v| v.exit_code().code())
            .to_vec();
        assert_eq!(codes, [0, 1, 3]);
        assert_eq!(
            serde_json::to_string(&Verdict::Foreign).unwrap(),
            "\"foreign\""
        );
    }
}
