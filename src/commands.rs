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
use crate::state::{self, BackendRecord, ProcessRecord, State, StateDir, BACKEND};
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
    /// Part of the process that owns this port (its leader, group or descendants: the backend's
    /// for the backend's port, a member's for its port), or devrun itself.
    ours: bool,
    /// False when the OS reports no owner (pid 0: Windows for some sockets, Wine for all).
    owner_known: bool,
    /// The stack member this process belongs to, if any: another member's process on this port
    /// is this project's, but not `ours`.
    #[serde(skip_serializing_if = "Option::is_none")]
    member: Option<String>,
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

/// A member of the stack besides the backend (`[processes.NAME]`), as the state file records
/// it and the live system shows it.
#[derive(Debug, Serialize)]
struct MemberStatus {
    name: String,
    port: Option<u16>,
    /// Its recorded generation's leader; null while it is not running.
    pid: Option<u32>,
    generation: Option<u32>,
    alive: bool,
    uptime_s: Option<u64>,
    command: Vec<String>,
    /// Every process of it: leader first, then its descendants.
    tree: Vec<TreeProcess>,
    /// Every listener on its port.
    listeners: Vec<Listener>,
    /// Who serves its port; null for a member without a port.
    verdict: Option<Verdict>,
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
    /// The whole stack's verdict (the exit code): the backend's alone when it runs alone.
    verdict: Verdict,
    /// False when the devrun runs only other members (`--only`): the port is not judged.
    backend_run: bool,
    /// Who serves the backend's port; null when the backend is not run.
    backend_verdict: Option<Verdict>,
    /// The stack's other members, in the order the state file records them.
    processes: Vec<MemberStatus>,
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

    /// The stack's verdict from each judged port's: a foreign listener anywhere, else a port
    /// nobody serves (or nothing running at all), else ok.
    fn whole(ports: &[Verdict], anything_alive: bool) -> Verdict {
        if ports.contains(&Verdict::Foreign) {
            Verdict::Foreign
        } else if ports.contains(&Verdict::None) || !anything_alive {
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

/// Exit 0: every member's port is served by that member alone; 1: a member's port has no
/// listener, or nothing runs; 3: something else listens on a member's port.
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
        // A dead devrun's record still names its members, which may be orphans now.
        let state = StateDir::new(&project.root).read();
        let running = state.as_ref().filter(|s| s.devrun_alive());
        let config = project.config.as_ref();
        let port = config.map(|c| c.port).or(state.as_ref().map(|s| s.port));
        let host = config
            .map(|c| c.host.clone())
            .or(state.as_ref().map(|s| s.host.clone()))
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        let backend_run = state.as_ref().is_none_or(|s| s.backend_run);
        let now = state::unix_now();
        let backend = state
            .as_ref()
            .and_then(|s| s.backend.as_ref())
            .map(|b| backend_status(b, now));
        let recorded: &[ProcessRecord] = state.as_ref().map_or(&[], |s| &s.processes);
        let generations: Vec<Option<BackendStatus>> = recorded
            .iter()
            .map(|p| p.running.as_ref().map(|b| backend_status(b, now)))
            .collect();
        // Every live member's processes, so a listener is named by the member it belongs to.
        let owners: Vec<(&str, &BackendStatus)> = backend
            .iter()
            .map(|b| (BACKEND, b))
            .chain(
                recorded
                    .iter()
                    .zip(&generations)
                    .filter_map(|(p, g)| Some((p.name.as_str(), g.as_ref()?))),
            )
            .collect();
        let devrun_pid = running.map(|s| s.devrun_pid);
        let judge = |port: Option<u16>, name: &str, own: Option<&BackendStatus>| {
            port.map(|port| judge_port(port, name, own, &owners, devrun_pid))
        };
        let (listeners, backend_verdict) = match judge(port, BACKEND, backend.as_ref()) {
            Some((listeners, verdict)) => (listeners, backend_run.then_some(verdict)),
            None => (Vec::new(), None),
        };
        let processes: Vec<MemberStatus> = recorded
            .iter()
            .zip(&generations)
            .map(|(p, g)| {
                let (listeners, verdict) = judge(p.port, &p.name, g.as_ref()).unzip();
                member_status(p, g.as_ref(), listeners.unwrap_or_default(), verdict)
            })
            .collect();
        let judged: Vec<Verdict> = backend_verdict
            .into_iter()
            .chain(processes.iter().filter_map(|m| m.verdict))
            .collect();
        let anything_alive = backend.as_ref().is_some_and(|b| b.alive && backend_run)
            || processes.iter().any(|m| m.alive);
        StatusReport {
            project: project.root.clone(),
            devrun_pid,
            devrun_uptime_s: running.map(|s| now.saturating_sub(s.started_at)),
            devrun_running: running.is_some(),
            verdict: Verdict::whole(&judged, anything_alive),
            backend_run,
            backend_verdict,
            backend,
            host,
            port,
            listeners,
            processes,
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

fn member_status(
    record: &ProcessRecord,
    generation: Option<&BackendStatus>,
    listeners: Vec<Listener>,
    verdict: Option<Verdict>,
) -> MemberStatus {
    let tree = generation.map_or_else(Vec::new, |g| {
        g.tree
            .iter()
            .map(|t| TreeProcess {
                pid: t.pid,
                command: t.command.clone(),
            })
            .collect()
    });
    MemberStatus {
        name: record.name.clone(),
        port: record.port,
        pid: generation.map(|g| g.pid),
        generation: generation.map(|g| g.generation),
        alive: generation.is_some_and(|g| g.alive),
        uptime_s: generation.map(|g| g.uptime_s),
        command: generation.map_or_else(Vec::new, |g| g.command.clone()),
        tree,
        listeners,
        verdict,
    }
}

/// Every listener on `port`, each marked as the process of member `name` (`own`) or not, and
/// who serves the port. Without a live `own`, anything listening is not ours (an unnamed owner
/// included); devrun itself is ours (it holds the backend's socket in inherit mode).
fn judge_port(
    port: u16,
    name: &str,
    own: Option<&BackendStatus>,
    owners: &[(&str, &BackendStatus)],
    devrun_pid: Option<u32>,
) -> (Vec<Listener>, Verdict) {
    let in_tree = |b: &BackendStatus, pid: u32| b.tree.iter().any(|t| t.pid == pid);
    let own_alive = own.is_some_and(|b| b.alive);
    let owns = |pid: u32| own.is_some_and(|b| in_tree(b, pid));
    let listeners: Vec<Listener> = port::holders(port)
        .into_iter()
        .map(|h| {
            let owner_known = h.pid != port::UNKNOWN_OWNER;
            Listener {
                ours: owns(h.pid) || devrun_pid == Some(h.pid) || (!owner_known && own_alive),
                owner_known,
                member: owners
                    .iter()
                    .find(|(_, b)| in_tree(b, h.pid))
                    .map(|(member, _)| member.to_string())
                    .or_else(|| (!owner_known && own_alive).then(|| name.to_string())),
                pid: h.pid,
                command: h.command,
            }
        })
        .collect();
    // An owner the OS does not name (pid 0) is not counted against a live member: it cannot
    // be told from it.
    let serves = listeners
        .iter()
        .any(|l| owns(l.pid) || (!l.owner_known && own_alive));
    let verdict = Verdict::judge(&listeners, serves);
    (listeners, verdict)
}

fn print_status(report: &StatusReport) {
    let width = report
        .processes
        .iter()
        .map(|m| m.name.len() + 2)
        .chain([9])
        .max()
        .unwrap_or(9);
    let label = |name: &str| format!("{:width$}", format!("{name}:"));
    let indent = " ".repeat(width);
    println!("{}{}", label("project"), report.project.display());
    match (report.devrun_pid, report.devrun_uptime_s) {
        (Some(pid), Some(up)) => println!("{}pid {pid}, up {}", label("devrun"), duration(up)),
        _ => println!("{}not running", label("devrun")),
    }
    if !report.backend_run {
        println!("{}not run by this devrun (--only)", label(BACKEND));
    } else {
        match &report.backend {
            Some(b) => print_generation(&label(BACKEND), &indent, b),
            None => println!("{}none", label(BACKEND)),
        }
    }
    match report.port {
        Some(port) => {
            let listeners = &report.listeners;
            print_port(
                &label("port"),
                &indent,
                &report.host,
                port,
                listeners,
                BACKEND,
            );
        }
        None => println!(
            "{}unknown (no devrun.toml and no running devrun)",
            label("port")
        ),
    }
    for m in &report.processes {
        match (m.pid, m.generation, m.uptime_s) {
            (Some(pid), Some(generation), Some(up)) => println!(
                "{}generation {generation}, pid {pid}{}, up {}",
                label(&m.name),
                if m.alive { "" } else { " (gone)" },
                duration(up)
            ),
            _ => println!("{}not running", label(&m.name)),
        }
        for p in &m.tree {
            println!("{indent}pid {} {}", p.pid, p.command);
        }
        match m.port {
            Some(port) => print_port(
                &label("port"),
                &indent,
                &report.host,
                port,
                &m.listeners,
                &m.name,
            ),
            None => println!("{}none", label("port")),
        }
    }
    println!("{}{}", label("verdict"), verdict_text(report));
}

fn print_generation(label: &str, indent: &str, b: &BackendStatus) {
    println!(
        "{label}generation {}, pid {}{}, up {}",
        b.generation,
        b.pid,
        if b.alive { "" } else { " (gone)" },
        duration(b.uptime_s)
    );
    for p in &b.tree {
        println!("{indent}pid {} {}", p.pid, p.command);
    }
}

/// The port line of member `name` and one line per listener, saying whose it is.
fn print_port(
    label: &str,
    indent: &str,
    host: &str,
    port: u16,
    listeners: &[Listener],
    name: &str,
) {
    println!("{label}{port} ({host}), {} listener(s)", listeners.len());
    for l in listeners {
        let whose = match (&l.member, l.ours) {
            _ if !l.owner_known => "owner unknown (the OS reports pid 0)".to_string(),
            (_, true) => format!("this project's {name}"),
            (Some(member), false) => format!("this project's {member}, not {name}"),
            (None, false) => "NOT started by devrun".to_string(),
        };
        if l.owner_known {
            println!("{indent}pid {} {} [{whose}]", l.pid, l.command);
        } else {
            println!("{indent}[{whose}]");
        }
    }
}

/// The verdict in words: as before for a backend run alone; in a stack, the first member
/// whose port decided it.
fn verdict_text(report: &StatusReport) -> String {
    if report.processes.is_empty() && report.backend_run {
        return report.verdict.describe().to_string();
    }
    if report.verdict == Verdict::Ok {
        return "ok: every member's port is served by that member".to_string();
    }
    let backend = report
        .backend_verdict
        .zip(report.port)
        .map(|(verdict, port)| (BACKEND, port, verdict));
    let members = report
        .processes
        .iter()
        .filter_map(|m| Some((m.name.as_str(), m.port?, m.verdict?)));
    let decided = backend
        .into_iter()
        .chain(members)
        .find(|(_, _, verdict)| *verdict == report.verdict);
    match decided {
        Some((name, port, Verdict::None)) => format!("nothing listens on {name}'s port {port}"),
        Some((name, port, _)) => {
            format!("a process that is not {name}'s listens on {name}'s port {port}")
        }
        None => "nothing runs".to_string(),
    }
}

fn duration(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m {}s", seconds / 60, seconds % 60),
        _ => format!("{}h {}m", seconds / 3600, (seconds % 3600) / 60),
    }
}

/// Stops the running devrun of this project (it tears every member down and exits) or, if it
/// is dead, what it left. Exit 0 when every member's port is free afterwards.
pub async fn stop(args: &ProjectArgs, ui: &Ui) -> Result<(), Error> {
    let project = project(args)?;
    let state_dir = StateDir::new(&project.root);
    let mut recorded: Vec<State> = state_dir.read().into_iter().collect();
    // The port and timeouts: the config's, else what the dead devrun recorded.
    let config = match project.config {
        Some(config) => config,
        None => {
            let Some(state) = recorded.first() else {
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
            "stopping devrun (pid {}) and {}",
            running.devrun_pid,
            its_members(&running)
        )));
        stop_running_devrun(&running, ui, timeout, Verb::Stop).await?;
    }
    recover_orphan(&state_dir, &config, ui).await?;
    // A devrun that started meanwhile is running, not left over: it is stopped too.
    if let Some(running) = state_dir.running_devrun() {
        ui.emit(&Event::Warning(format!(
            "devrun (pid {}) started meanwhile: stopping it and {} too",
            running.devrun_pid,
            its_members(&running)
        )));
        stop_running_devrun(&running, ui, timeout, Verb::Stop).await?;
        recover_orphan(&state_dir, &config, ui).await?;
        recorded.push(running);
    }
    let ports = ports_to_free(&config, &recorded);
    let mut held = Vec::new();
    for (name, port) in &ports {
        if port::wait_free(&config.host, *port, config.stop.port_timeout)
            .await
            .is_err()
        {
            let holders = port::describe_holders(&port::holders(*port));
            held.push(format!("port {port} ({name}) is still held by {holders}"));
        }
    }
    if !held.is_empty() {
        return Err(Error::Port(held.join("; ")));
    }
    let free = match ports.as_slice() {
        [] => "none of its processes has a port".to_string(),
        ports => {
            let verb = if ports.len() == 1 { "is" } else { "are" };
            format!("{} {verb} free", state::describe_ports(ports))
        }
    };
    ui.emit(&Event::Warning(format!("stopped; {free}")));
    Ok(())
}

/// "its backend" for a backend run alone, else "its 3 processes (backend, web, worker)".
fn its_members(state: &State) -> String {
    let names: Vec<&str> = state
        .backend_run
        .then_some(BACKEND)
        .into_iter()
        .chain(state.processes.iter().map(|p| p.name.as_str()))
        .collect();
    match names.as_slice() {
        [BACKEND] => "its backend".to_string(),
        [name] => format!("its process {name}"),
        names => format!("its {} processes ({})", names.len(), names.join(", ")),
    }
}

/// The ports `stop` must see free: the backend's (the config's; unless the stopped runs did
/// not run it) and every member port they recorded, each once, with its member's name.
fn ports_to_free(config: &ProjectConfig, recorded: &[State]) -> Vec<(String, u16)> {
    let backend_run = recorded.is_empty() || recorded.iter().any(|s| s.backend_run);
    let mut ports: Vec<(String, u16)> = Vec::new();
    if backend_run {
        ports.push((BACKEND.to_string(), config.port));
    }
    for (name, port) in recorded.iter().flat_map(State::ports) {
        if name != BACKEND && !ports.iter().any(|(_, p)| *p == port) {
            ports.push((name.to_string(), port));
        }
    }
    ports
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
            let what = match running.processes.is_empty() {
                true => "its backend".to_string(),
                false => format!(
                    "its {} processes",
                    running.processes.len() + usize::from(running.backend_run)
                ),
            };
            ui.emit(&Event::Warning(format!(
                "devrun (pid {pid}) is restarting {what}"
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
    use std::path::Path;

    fn listener(pid: u32, ours: bool) -> Listener {
        Listener {
            pid,
            command: String::new(),
            ours,
            owner_known: true,
            member: None,
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

    #[test]
    fn the_stack_verdict_is_its_worst_port() {
        use Verdict::{Foreign, None as Nothing, Ok};
        assert_eq!(Verdict::whole(&[Ok, Ok], true), Ok);
        assert_eq!(Verdict::whole(&[Ok, Nothing], true), Nothing);
        assert_eq!(Verdict::whole(&[Nothing, Foreign, Ok], true), Foreign);
        // Members without ports: judged only by whether anything runs.
        assert_eq!(Verdict::whole(&[], true), Ok);
        assert_eq!(Verdict::whole(&[], false), Nothing);
        assert_eq!(Verdict::whole(&[Foreign], false), Foreign);
    }

    fn state(backend_run: bool, members: &[(&str, Option<u16>)]) -> State {
        let mut state = State {
            devrun_pid: 1,
            devrun_start: 2,
            port: 8001,
            host: DEFAULT_HOST.into(),
            started_at: 3,
            run: String::new(),
            control: None,
            project: None,
            backend: None,
            backend_run,
            processes: Vec::new(),
        };
        for (name, port) in members {
            state.set_process(name, *port, None);
        }
        state
    }

    #[test]
    fn stop_names_the_members_and_waits_for_each_port() {
        assert_eq!(its_members(&state(true, &[])), "its backend");
        assert_eq!(
            its_members(&state(true, &[("web", Some(5173)), ("worker", None)])),
            "its 3 processes (backend, web, worker)"
        );
        assert_eq!(
            its_members(&state(false, &[("web", Some(5173))])),
            "its process web"
        );

        let config = ProjectConfig::recorded(Path::new("/p"), DEFAULT_HOST, 9000);
        assert_eq!(ports_to_free(&config, &[]), [("backend".to_string(), 9000)]);
        // The config's backend port wins over the recorded one; portless members need nothing.
        let stack = state(true, &[("web", Some(5173)), ("worker", None)]);
        assert_eq!(
            ports_to_free(&config, &[stack]),
            [("backend".to_string(), 9000), ("web".to_string(), 5173)]
        );
        // A run without the backend (`--only web`) does not own the backend's port.
        let only_web = state(false, &[("web", Some(5173))]);
        assert_eq!(
            ports_to_free(&config, &[only_web]),
            [("web".to_string(), 5173)]
        );
    }
}
