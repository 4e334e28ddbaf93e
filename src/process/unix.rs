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

pub fn spawn_group(mut cmd: tokio::process::Command) -> io::Result<(tokio::process::Child, Group)> {
    cmd.process_group(0);
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
        send(self.pgid, signal)
    }

    pub fn kill(&self) -> io::Result<()> {
        send(self.pgid, Signal::SIGKILL)
    }

    /// Whether any process is still in the group. Once the leader is reaped (by tokio), the
    /// group's remaining zombies that are devrun's children (re-parented to the subreaper) are
    /// reaped here; a zombie still counts as alive for `kill(-pgid, 0)`.
    pub fn alive(&self, leader_reaped: bool) -> bool {
        if leader_reaped {
            // Never before: waitpid(-pgid) could take the leader's status from tokio.
            while let Ok(status) = waitpid(Pid::from_raw(-self.pgid.as_raw()), Some(WaitPidFlag::WNOHANG)) {
                if status == WaitStatus::StillAlive {
                    break;
                }
            }
        }
        !matches!(killpg(self.pgid, None), Err(Errno::ESRCH))
    }
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
