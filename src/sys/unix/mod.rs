//! Unix (Linux and macOS): the backend leads a new process group (pgid = its pid) and signals
//! go to the whole group. What only one of the two has is in `linux.rs` / `macos.rs`.

use super::{StopSignal, INHERITED_FD, PROCESS_MARKER};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{dup2, getpgrp, getsid, Pid};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

mod detached;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod linux_tcp;
#[cfg(target_os = "linux")]
use linux as os;
#[cfg(target_os = "linux")]
pub use linux_tcp::{closing_only, listen_addresses, listener_pids, listener_pids_checked};

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as os;
#[cfg(target_os = "macos")]
pub use macos::{closing_only, listen_addresses, listener_pids, listener_pids_checked};

pub use detached::spawn_detached;
pub use os::{
    blind_filesystem, carries, children, command_line, environment_value, group_members, has_open,
    holds_open, is_zombie, marked, oom_kills, parent, prepare_supervisor, process_group,
    program_path, resident_bytes, start_time,
};

/// A stop is a signal to the group: any of SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1/2, SIGKILL.
pub const CONSOLE_EVENTS: bool = false;
/// A wildcard bind conflicts with a listener on any address of its family, so a free port
/// must also be bindable on `0.0.0.0` and `::`.
pub const WILDCARD_BIND_CONFLICTS: bool = true;
/// SO_REUSEADDR only lets a bind pass sockets in TIME_WAIT, never a live listener.
pub const REUSE_ADDRESS: bool = true;
/// A listening socket is listed under a live process (the kernel drops it with its last owner).
pub const SOCKETS_OUTLIVE_OWNER: bool = false;
/// Every process holding a descriptor of a listening socket is listed (/proc/PID/fd, libproc),
/// a backend's children that inherited devrun's held socket included.
pub const LISTS_EVERY_HOLDER: bool = true;

/// Nothing to prepare: a process group gets signals without a console.
/// Starts `cmd` in a session of its own (`devrun up`): no controlling terminal, so closing the
/// terminal or Ctrl-C there never reaches it.
pub fn detach(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches nothing of the parent's memory.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
    }
}

pub fn prepare_console() -> Option<String> {
    None
}

/// Only Windows lists every process with its parent in one call; here callers use `children`.
pub fn process_table() -> Vec<super::ProcessRow> {
    Vec::new()
}

/// The signal a `StopSignal` is on Unix.
fn native(signal: StopSignal) -> Signal {
    match signal {
        StopSignal::Terminate => Signal::SIGTERM,
        StopSignal::Interrupt => Signal::SIGINT,
        StopSignal::Hangup => Signal::SIGHUP,
        StopSignal::Quit => Signal::SIGQUIT,
        StopSignal::User1 => Signal::SIGUSR1,
        StopSignal::User2 => Signal::SIGUSR2,
        StopSignal::Kill => Signal::SIGKILL,
    }
}

fn pid_of(pid: u32) -> io::Result<Pid> {
    i32::try_from(pid)
        .map(Pid::from_raw)
        .map_err(|_| io::Error::other(format!("pid {pid} out of range")))
}

/// The backend's process group.
pub struct Group {
    pgid: Pid,
    /// devrun's own long-lived helper (the preloader): a descendant that is never an escapee.
    spare: Option<u32>,
    /// In a stack, the member whose group this is (`DEVRUN_PROCESS` in its environment): the
    /// other members' processes are devrun's descendants too, and never this group's escapees.
    member: Option<String>,
    /// Why the last look for escapees could not see (a /proc read error): the group then
    /// counts as alive, and a stop that cannot confirm it gone says why.
    blind: std::sync::Mutex<Option<String>>,
}

/// The leaders devrun spawned that may still be running: tokio owns their exit status, so the
/// zombie reaping in `Group::alive` (for re-parented escapees) never takes theirs, whichever
/// stack member's group is being checked.
static LEADERS: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// The process groups of devrun's warm spare interpreters (issue 19): a spare is a
/// descendant of devrun outside every generation's group, yet never a generation's escapee;
/// and while it is a spare, its group is only itself (the generation running beside it is
/// not its escapee either).
static HELPER_GROUPS: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Marks the group `pgid` as a spare's (`helper`), or no longer (it became a generation, or
/// it is gone).
pub fn set_helper(pgid: u32, helper: bool) {
    if let Ok(mut helpers) = HELPER_GROUPS.lock() {
        helpers.retain(|g| *g != pgid);
        if helper {
            helpers.push(pgid);
        }
    }
}

/// The member a process was started for (its `DEVRUN_PROCESS`), in a stack.
fn member_of(cmd: &tokio::process::Command) -> Option<String> {
    cmd.as_std()
        .get_envs()
        .find(|(key, _)| *key == PROCESS_MARKER)
        .and_then(|(_, value)| value?.to_str().map(str::to_string))
}

pub fn spawn_group(
    mut cmd: tokio::process::Command,
    socket: Option<&socket2::Socket>,
) -> io::Result<(tokio::process::Child, Group)> {
    cmd.process_group(0);
    if let Some(socket) = socket {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        // SAFETY: dup2 and fcntl are async-signal-safe; `fd` stays open in devrun.
        unsafe {
            cmd.pre_exec(move || {
                if fd == INHERITED_FD {
                    // Already fd 3: only clear close-on-exec.
                    fcntl(INHERITED_FD, FcntlArg::F_SETFD(FdFlag::empty()))?;
                } else {
                    dup2(fd, INHERITED_FD)?;
                }
                Ok(())
            });
        }
    }
    os::die_with_supervisor(&mut cmd);
    let member = member_of(&cmd);
    let child = cmd.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the backend exited before its pid was read"))?;
    if let Ok(mut leaders) = LEADERS.lock() {
        leaders.push(pid);
    }
    Ok((
        child,
        Group {
            pgid: pid_of(pid)?,
            spare: None,
            member,
            blind: Default::default(),
        },
    ))
}

impl Group {
    /// The group led by `pid`, a process another of devrun's children forked (the preloader,
    /// `spare`, which is itself never part of the teardown).
    #[cfg(target_os = "linux")]
    pub fn adopt(pid: u32, spare: u32) -> io::Result<Group> {
        Ok(Group {
            pgid: pid_of(pid)?,
            spare: Some(spare),
            // A fork's environment as /proc shows it is the preloader's, which has the marker.
            member: os::environment_value(pid, PROCESS_MARKER),
            blind: Default::default(),
        })
    }

    /// Err: /proc could not be read, so what escaped is unknown (never "nothing").
    fn escapees(&self) -> io::Result<Vec<u32>> {
        let pgid = self.pgid.as_raw() as u32;
        let helpers = HELPER_GROUPS.lock().map(|h| h.clone()).unwrap_or_default();
        if helpers.contains(&pgid) {
            return Ok(Vec::new());
        }
        let mut escapees = os::escapees(pgid)?;
        escapees.retain(|pid| Some(*pid) != self.spare);
        if !helpers.is_empty() {
            escapees.retain(|pid| !process_group(*pid).is_some_and(|g| helpers.contains(&g)));
        }
        if let Some(member) = &self.member {
            // Another member's process is not ours; one whose environment cannot be read (or
            // that dropped the marker) is, so that nothing is ever left behind.
            let leaders = LEADERS.lock().map(|l| l.clone()).unwrap_or_default();
            escapees.retain(|pid| {
                !leaders.contains(pid)
                    && os::environment_value(*pid, PROCESS_MARKER).is_none_or(|m| &m == member)
            });
        }
        Ok(escapees)
    }

    /// Why the group's processes could not all be seen last time, if they could not.
    pub fn blind(&self) -> Option<String> {
        self.blind.lock().ok().and_then(|b| b.clone())
    }

    pub fn signal(&self, signal: StopSignal) -> io::Result<()> {
        self.send_all(native(signal))
    }

    pub fn kill(&self) -> io::Result<()> {
        self.send_all(Signal::SIGKILL)
    }

    /// The group, and every descendant that left it (setsid, daemonizing): teardown is
    /// "every process devrun started, directly or not", not just "the group".
    fn send_all(&self, signal: Signal) -> io::Result<()> {
        send(self.pgid, signal)?;
        // Escapees that cannot be listed cannot be signalled: `alive` keeps the group alive.
        for pid in self.escapees().unwrap_or_default() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
        Ok(())
    }

    /// Whether any process is still in the group, or any descendant of devrun outside it.
    /// Once the leader is reaped (by tokio), devrun's remaining zombie children (descendants
    /// re-parented to the subreaper) are reaped here; a zombie counts as alive for `kill`.
    pub fn alive(&self, leader_reaped: bool) -> bool {
        if leader_reaped {
            // Never before: reaping could take the leader's status from tokio. Only zombies,
            // one by one, and never the preloader (`spare`): tokio owns its status, and a pid
            // reaped behind its back could be reused by the time tokio signals it.
            let leaders = LEADERS.lock().map(|l| l.clone()).unwrap_or_default();
            for pid in os::children(std::process::id()) {
                if Some(pid) != self.spare && !leaders.contains(&pid) && os::is_zombie(pid) {
                    let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
                }
            }
        }
        if !matches!(killpg(self.pgid, None), Err(Errno::ESRCH)) {
            return true;
        }
        let escapees = self.escapees();
        if let Ok(mut blind) = self.blind.lock() {
            *blind = escapees
                .as_ref()
                .err()
                .map(|e| format!("cannot read /proc ({e})"));
        }
        // Fails closed: what cannot be seen is not gone.
        !escapees.is_ok_and(|e| e.is_empty())
    }
}

impl Drop for Group {
    /// The group is gone (or given up on): its leader's pid is no longer tokio's to reap.
    fn drop(&mut self) {
        let leader = self.pgid.as_raw() as u32;
        if let Ok(mut leaders) = LEADERS.lock() {
            leaders.retain(|pid| *pid != leader);
        }
    }
}

/// Why group `pgid`, led by `pid`, must not be signalled as a group: `pid` no longer leads
/// it, or it is devrun's own process group or session. None when it may be.
pub fn group_refusal(pid: u32, pgid: u32) -> Option<String> {
    let current = process_group(pid);
    if current != Some(pid) {
        return Some(format!(
            "pid {pid} is now in process group {}, not leading its own",
            current.map_or_else(|| "?".to_string(), |g| g.to_string())
        ));
    }
    let own_session = getsid(None).ok();
    if [Some(getpgrp()), own_session].contains(&Some(Pid::from_raw(pgid as i32))) {
        return Some(format!(
            "process group {pgid} is devrun's own process group or session"
        ));
    }
    None
}

/// The live processes of a backend recorded by a devrun that is gone, once `stop_orphan` has
/// proven that the leader is the recorded process and leads its own group: the leader, its
/// descendants, and the members of its group that started after it.
pub fn orphan_members(pid: u32, pgid: u32, start: u64) -> Vec<u32> {
    if !super::is_same(pid, start) {
        return Vec::new();
    }
    let mut members = vec![pid];
    members.extend(super::descendants(pid));
    members.extend(
        group_members(pgid)
            .into_iter()
            .filter(|p| start_time(*p).is_some_and(|t| t >= start)),
    );
    members.sort_unstable();
    members.dedup();
    members.retain(|p| !is_zombie(*p));
    members
}

/// Signals verified processes, and each of the given groups that one of them is still in.
pub fn signal_pids(groups: &[u32], members: &[u32], signal: StopSignal) -> io::Result<()> {
    let signal = native(signal);
    for pgid in groups.iter().copied().filter(|g| *g > 1) {
        if members.iter().any(|p| process_group(*p) == Some(pgid)) {
            send(pid_of(pgid)?, signal)?;
        }
    }
    for pid in members {
        let _ = kill(pid_of(*pid)?, signal);
    }
    Ok(())
}

/// SIGKILL (`hard`) or SIGTERM to one process; one that is already gone is not an error.
pub fn terminate(pid: u32, hard: bool) -> io::Result<()> {
    let signal = if hard {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    match kill(pid_of(pid)?, signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn send(pgid: Pid, signal: Signal) -> io::Result<()> {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// The name of the signal that ended a process ("SIGKILL"), if one did.
pub fn exit_signal(status: &ExitStatus) -> Option<&'static str> {
    Signal::try_from(status.signal()?).ok().map(Signal::as_str)
}

/// "signal 9 (SIGKILL)".
pub fn describe_signal_exit(status: &ExitStatus) -> Option<String> {
    let number = status.signal()?;
    Some(match Signal::try_from(number) {
        Ok(signal) => format!("signal {number} ({})", signal.as_str()),
        Err(_) => format!("signal {number}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_fresh_group_leader_may_be_signalled_as_a_group_but_devruns_own_group_never() {
        let _alone = crate::children_lock();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        assert_eq!(process_group(pid), Some(pid));
        assert!(start_time(pid).is_some() && !is_zombie(pid));
        assert!(children(std::process::id()).contains(&pid));
        assert_eq!(group_refusal(pid, pid), None);
        let own = getpgrp().as_raw() as u32;
        let why = group_refusal(std::process::id(), own).expect("devrun's own group is refused");
        assert!(why.contains("process group"), "{why}");
        terminate(pid, true).unwrap();
        child.wait().unwrap();
        assert_eq!(start_time(pid), None, "reaped: no such process");
        terminate(pid, true).expect("a process that is gone is not an error");
    }

    #[test]
    fn names_the_signal_a_backend_died_of() {
        let status = ExitStatus::from_raw(9);
        assert_eq!(
            describe_signal_exit(&status).as_deref(),
            Some("signal 9 (SIGKILL)")
        );
        assert_eq!(describe_signal_exit(&ExitStatus::from_raw(1 << 8)), None);
    }
}
