//! Unix: the backend leads a new process group (pgid = its pid); signals go to the whole group.

use super::StopSignal;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// Linux: become a child subreaper, so descendants orphaned by the backend are re-parented to
/// devrun (and reaped by it) instead of to init, which in a container may never reap them.
pub fn prepare_supervisor() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with integer arguments has no memory effects.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub struct Group {
    pgid: Pid,
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
                let target = super::INHERITED_FD;
                if fd == target {
                    // Already fd 3: only clear close-on-exec.
                    if libc::fcntl(target, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, target) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(target_os = "linux")]
    {
        let supervisor = std::process::id();
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls.
        unsafe {
            cmd.pre_exec(move || {
                // If devrun dies without a teardown (SIGKILL, crash), the leader dies with it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // devrun may have died between fork and prctl: then nobody would end us.
                if libc::getppid() as u32 != supervisor {
                    return Err(io::Error::other("devrun exited while starting the backend"));
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the backend exited before its pid was read"))?;
    let pgid = Pid::from_raw(
        i32::try_from(pid).map_err(|_| io::Error::other(format!("pid {pid} out of range")))?,
    );
    Ok((child, Group { pgid }))
}

impl Group {
    pub fn signal(&self, signal: StopSignal) -> io::Result<()> {
        let signal = match signal {
            StopSignal::Terminate => Signal::SIGTERM,
            StopSignal::Interrupt => Signal::SIGINT,
            StopSignal::Hangup => Signal::SIGHUP,
            StopSignal::Quit => Signal::SIGQUIT,
            StopSignal::User1 => Signal::SIGUSR1,
            StopSignal::User2 => Signal::SIGUSR2,
            StopSignal::Kill => Signal::SIGKILL,
        };
        self.send_all(signal)
    }

    pub fn kill(&self) -> io::Result<()> {
        self.send_all(Signal::SIGKILL)
    }

    /// The group, and every descendant that left it (setsid, daemonizing): teardown is
    /// "every process devrun started, directly or not", not just "the group".
    fn send_all(&self, signal: Signal) -> io::Result<()> {
        send(self.pgid, signal)?;
        for pid in escapees(self.pgid) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), signal);
        }
        Ok(())
    }

    /// Whether any process is still in the group, or any descendant of devrun outside it.
    /// Once the leader is reaped (by tokio), devrun's remaining zombie children (descendants
    /// re-parented to the subreaper) are reaped here; a zombie counts as alive for `kill`.
    pub fn alive(&self, leader_reaped: bool) -> bool {
        if leader_reaped {
            // Never before: waitpid(-1) could take the leader's status from tokio.
            while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                if status == WaitStatus::StillAlive {
                    break;
                }
            }
        }
        !matches!(killpg(self.pgid, None), Err(Errno::ESRCH)) || !escapees(self.pgid).is_empty()
    }
}

/// Linux: devrun's descendants outside the backend's group. devrun starts nothing but
/// backends, and as a subreaper it inherits whatever they orphan, so these are escapees.
#[cfg(target_os = "linux")]
fn escapees(pgid: Pid) -> Vec<u32> {
    crate::procs::descendants(std::process::id())
        .into_iter()
        .filter(|pid| {
            crate::procs::process_group(*pid) != Some(pgid.as_raw() as u32)
                && !crate::procs::is_zombie(*pid)
        })
        .collect()
}

/// Elsewhere there is no subreaper: the group is what devrun can answer for.
#[cfg(not(target_os = "linux"))]
fn escapees(_pgid: Pid) -> Vec<u32> {
    Vec::new()
}

/// The live processes of a backend recorded by a devrun that is gone, once `stop_orphan` has
/// proven that the leader is the recorded process and leads its own group: the leader, its
/// descendants, and the members of its group that started after it.
pub fn orphan_members(pid: u32, pgid: u32, start: u64) -> Vec<u32> {
    use crate::procs;
    if !procs::is_same(pid, start) {
        return Vec::new();
    }
    let mut members = vec![pid];
    members.extend(procs::descendants(pid));
    members.extend(
        procs::group_members(pgid)
            .into_iter()
            .filter(|p| procs::start_time(*p).is_some_and(|t| t >= start)),
    );
    members.sort_unstable();
    members.dedup();
    members.retain(|p| !procs::is_zombie(*p));
    members
}

/// Signals verified processes, and their group if given and they are still in it.
pub fn signal_pids(pgid: Option<u32>, members: &[u32], signal: StopSignal) -> io::Result<()> {
    let signal = match signal {
        StopSignal::Kill => Signal::SIGKILL,
        StopSignal::Interrupt => Signal::SIGINT,
        StopSignal::Hangup => Signal::SIGHUP,
        StopSignal::Quit => Signal::SIGQUIT,
        StopSignal::User1 => Signal::SIGUSR1,
        StopSignal::User2 => Signal::SIGUSR2,
        StopSignal::Terminate => Signal::SIGTERM,
    };
    if let Some(pgid) = pgid.filter(|g| *g > 1) {
        if members
            .iter()
            .any(|p| crate::procs::process_group(*p) == Some(pgid))
        {
            send(Pid::from_raw(pgid as i32), signal)?;
        }
    }
    for pid in members {
        let _ = nix::sys::signal::kill(Pid::from_raw(*pid as i32), signal);
    }
    Ok(())
}

fn send(pgid: Pid, signal: Signal) -> io::Result<()> {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

pub fn describe_signal_exit(status: &ExitStatus) -> Option<String> {
    let number = status.signal()?;
    Some(match Signal::try_from(number) {
        Ok(signal) => format!("signal {number} ({})", signal.as_str()),
        Err(_) => format!("signal {number}"),
    })
}
