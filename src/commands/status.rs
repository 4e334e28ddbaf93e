//! `devrun status`: who serves each member's port (devrun's backend, another member, or a
//! process devrun did not start), with every recorded generation's live process tree.

use super::{project, Project};
use crate::cli::ProjectArgs;
use crate::config::DEFAULT_HOST;
use crate::error::{Error, ExitCode};
use crate::port;
use crate::procs;
use crate::state::{self, BackendRecord, ProcessRecord, StateDir, BACKEND};
use serde::Serialize;
use std::path::PathBuf;

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
    /// For a process of none of this project's members: the devrun that started it, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    started_by: Option<StartedBy>,
}

/// The devrun that started a process, from the markers devrun puts in every process's
/// environment (its project folder and run id), checked against that project's state file.
#[derive(Debug, Serialize)]
struct StartedBy {
    /// That devrun's project folder.
    project: PathBuf,
    /// That project's state file names a live devrun of the same run: it runs the process now.
    /// False: the devrun that started it is gone (an orphan it left), or its record is.
    running: bool,
}

impl StartedBy {
    /// Reads `pid`'s markers (Linux; elsewhere None: the listener is then "NOT started by
    /// devrun", as before).
    fn of(pid: u32) -> Option<StartedBy> {
        let project = PathBuf::from(procs::environment_value(pid, state::PROJECT_MARKER)?);
        let run = procs::environment_value(pid, state::RUN_MARKER)?;
        let running = StateDir::new(&project)
            .read()
            .is_some_and(|s| s.devrun_alive() && s.run == run);
        Some(StartedBy { project, running })
    }

    /// How a listener line names it.
    fn describe(&self, this_project: &std::path::Path) -> String {
        let project = self.project.display();
        match (self.project == this_project, self.running) {
            (true, _) => "left by an earlier devrun of this project".to_string(),
            (false, true) => format!("another project's devrun ({project})"),
            (false, false) => format!("left by another project's devrun, now gone ({project})"),
        }
    }
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
    /// Started by `devrun up`: it runs in the background and its output goes here.
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<PathBuf>,
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
        // One list inside, the backend first: (name, port, recorded generation).
        let recorded: &[ProcessRecord] = state.as_ref().map_or(&[], |s| &s.processes);
        let backend_record = state.as_ref().and_then(|s| s.backend.as_ref());
        let entries: Vec<(&str, Option<u16>, Option<&BackendRecord>)> =
            std::iter::once((BACKEND, port, backend_record))
                .chain(
                    recorded
                        .iter()
                        .map(|p| (p.name.as_str(), p.port, p.running.as_ref())),
                )
                .collect();
        let generations: Vec<Option<BackendStatus>> = entries
            .iter()
            .map(|(_, _, record)| record.map(|b| backend_status(b, now)))
            .collect();
        // Every live member's processes, so a listener is named by the member it belongs to.
        let owners: Vec<(&str, &BackendStatus)> = entries
            .iter()
            .zip(&generations)
            .filter_map(|((name, _, _), g)| Some((*name, g.as_ref()?)))
            .collect();
        let devrun_pid = running.map(|s| s.devrun_pid);
        let mut judged = entries
            .iter()
            .zip(generations.iter())
            .map(|((name, port, _), g)| {
                let judged =
                    port.map(|port| judge_port(port, name, g.as_ref(), &owners, devrun_pid));
                judged.unzip()
            });
        // The backend's fields keep their place at the top of the report (its `status --json`
        // shape), the other members' go in `processes`.
        let (listeners, verdict) = judged.next().unwrap_or_default();
        let listeners = listeners.unwrap_or_default();
        let backend_verdict = verdict.filter(|_| backend_run);
        let processes: Vec<MemberStatus> = recorded
            .iter()
            .zip(&generations[1..])
            .zip(judged)
            .map(|((p, g), (listeners, verdict))| {
                member_status(p, g.as_ref(), listeners.unwrap_or_default(), verdict)
            })
            .collect();
        let backend = generations.into_iter().next().flatten();
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
            log: running.and_then(|s| s.log.clone()),
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
                started_by: owner_known.then(|| StartedBy::of(h.pid)).flatten(),
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
    if let Some(log) = &report.log {
        println!(
            "{indent}in the background (devrun up); output: {}",
            log.display()
        );
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
                (BACKEND, &report.project),
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
                (&m.name, &report.project),
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
    (name, project): (&str, &std::path::Path),
) {
    println!("{label}{port} ({host}), {} listener(s)", listeners.len());
    for l in listeners {
        let whose = match (&l.member, l.ours) {
            _ if !l.owner_known => "owner unknown (the OS reports pid 0)".to_string(),
            (_, true) => format!("this project's {name}"),
            (Some(member), false) => format!("this project's {member}, not {name}"),
            (None, false) => match &l.started_by {
                Some(by) => by.describe(project),
                None => "NOT started by devrun".to_string(),
            },
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
        // Held by another project's devrun: say which, not "a process devrun did not start".
        let other = report.listeners.iter().filter(|l| !l.ours).find_map(|l| {
            l.started_by
                .as_ref()
                .filter(|by| by.project != report.project)
        });
        if let (Verdict::Foreign, Some(by)) = (report.verdict, other) {
            return format!("{} listens on the port", by.describe(&report.project));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(pid: u32, ours: bool) -> Listener {
        Listener {
            pid,
            command: String::new(),
            ours,
            owner_known: true,
            member: None,
            started_by: None,
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
}
