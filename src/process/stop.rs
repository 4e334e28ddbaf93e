//! The one escalation: `signal`, wait for the grace time (or until hurried), kill, and wait
//! until every process is confirmed gone. For a generation's group (`Backend::stop`), what a
//! dead devrun left (`stop_orphan`), a process holding the port and another devrun.

use crate::port::poll_interval;
use crate::procs;
use crate::sys::{self as platform, StopSignal};
use std::io;
use std::time::{Duration, Instant};

/// How a stop ended: a generation's group, or the processes of another escalation.
#[derive(Debug, Clone)]
pub struct Stopped {
    /// The grace time ran out (or there was none) and what was left was killed.
    pub killed: bool,
    pub elapsed: Duration,
    /// The stop signal could not be delivered (on Windows: no console shared with the
    /// backend), so the group was killed at once. One line for the user; never an error.
    pub warning: Option<String>,
}

/// After SIGKILL the kernel ends a group within milliseconds; only a process stuck in the
/// kernel (uninterruptible I/O) outlives this.
const KILL_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Ends one process devrun did not start (the user asked: --kill-port-holder), verified by
/// its start time at every step, and nothing else: not its group, not its parent.
pub async fn stop_foreign(
    pid: u32,
    signal: StopSignal,
    grace: Duration,
) -> io::Result<Option<Stopped>> {
    // Even when asked: never init, devrun itself or a process devrun runs inside (the IDE,
    // the shell, a terminal multiplexer that holds the port).
    if pid <= 1 || procs::self_and_ancestors().contains(&pid) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("pid {pid} is init, devrun itself or one of its ancestors: not ending it"),
        ));
    }
    let Some(start) = procs::start_time(pid) else {
        return Ok(None);
    };
    stop_one(pid, start, Some(signal), grace, &mut || {}).await
}

/// Ends the one process `pid` that started at `start`, checked at every step, and nothing
/// else (not its group, not its children): `first` (None when it was asked some other way,
/// e.g. on its control channel, and ends itself), the kill once `grace` is over, and
/// `before_kill()` just before any kill. `None` when it was gone already.
pub async fn stop_one(
    pid: u32,
    start: u64,
    first: Option<StopSignal>,
    grace: Duration,
    before_kill: &mut dyn FnMut(),
) -> io::Result<Option<Stopped>> {
    let alive = || procs::is_same(pid, start);
    let send = |members: &[u32], signal: StopSignal| {
        match (signal, first) {
            (StopSignal::Kill, _) => before_kill(),
            (_, None) => return Ok(()),
            _ => {}
        }
        // A process that exited meanwhile has nothing left to be sent.
        platform::signal_pids(&[], members, signal).or_else(|e| match alive() {
            true => Err(e),
            false => Ok(()),
        })
    };
    let members = || match alive() {
        true => vec![pid],
        false => Vec::new(),
    };
    let signal = first.unwrap_or(StopSignal::Terminate);
    escalate(members, send, signal, grace, &mut || false, None).await
}

/// The one escalation, for a backend's group, a dead devrun's leftovers and one process:
/// `signal`, wait for `grace` (or until `hurry()`), kill, wait until `members()` is empty.
/// A signal that cannot be delivered is one warning and the kill at once, never an error.
/// `whom` names the target in messages (else its pids). `None` when nothing was alive.
pub(super) async fn escalate(
    mut members: impl FnMut() -> Vec<u32>,
    mut send: impl FnMut(&[u32], StopSignal) -> io::Result<()>,
    signal: StopSignal,
    grace: Duration,
    hurry: &mut dyn FnMut() -> bool,
    whom: Option<&str>,
) -> io::Result<Option<Stopped>> {
    let began = Instant::now();
    let first = members();
    if first.is_empty() {
        return Ok(None);
    }
    let mut killed = signal == StopSignal::Kill;
    let mut warning = None;
    if let Err(e) = send(&first, signal) {
        if killed {
            return Err(e);
        }
        let whom = whom.map_or_else(|| format!("pids {first:?}"), str::to_string);
        warning = Some(undelivered(signal, &whom, &e));
        send(&first, StopSignal::Kill)?;
        killed = true;
    }
    let mut kill_at = began + grace;
    loop {
        let left = members();
        if left.is_empty() {
            break;
        }
        let now = Instant::now();
        if !killed && (now >= kill_at || hurry()) {
            send(&left, StopSignal::Kill)?;
            killed = true;
            kill_at = now;
        }
        if killed && now.duration_since(kill_at) > KILL_CONFIRM_TIMEOUT {
            let whom = whom.map_or_else(|| format!("{left:?}"), |w| format!("of {w}'s group"));
            return Err(io::Error::other(format!(
                "processes {whom} survived a kill for {} s (stuck in the kernel?)",
                KILL_CONFIRM_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(poll_interval(began.elapsed())).await;
    }
    Ok(Some(Stopped {
        killed,
        elapsed: began.elapsed(),
        warning,
    }))
}

/// The one line said when a stop signal could not be sent and the kill follows at once.
fn undelivered(signal: StopSignal, whom: &str, error: &io::Error) -> String {
    format!(
        "cannot send {} to {whom} ({error}): killing it instead, without a graceful shutdown",
        signal.name()
    )
}

/// They stop real `sleep` processes: Unix only.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A process to stop, shared by the escalation's closures.
    fn sleeper() -> std::cell::RefCell<std::process::Child> {
        let child = std::process::Command::new("sleep").arg("30").spawn();
        std::cell::RefCell::new(child.unwrap())
    }

    /// Point 1 of issue 14, on every OS: a stop signal that cannot be sent is one warning and
    /// an immediate kill, never an error (Windows' CTRL_BREAK without a shared console).
    #[tokio::test]
    // The lock only orders tests; each runs on a runtime of its own.
    #[allow(clippy::await_holding_lock)]
    async fn a_signal_that_cannot_be_sent_is_one_warning_then_the_kill() {
        let _alone = crate::children_lock();
        let child = sleeper();
        let pid = child.borrow().id();
        let kills = std::cell::Cell::new(0);
        let stopped = escalate(
            || match child.borrow_mut().try_wait() {
                Ok(None) => vec![pid],
                _ => Vec::new(),
            },
            |_, signal| {
                if signal != StopSignal::Kill {
                    return Err(io::Error::other("no console shared with the group"));
                }
                kills.set(kills.get() + 1);
                child.borrow_mut().kill()
            },
            StopSignal::Terminate,
            Duration::from_secs(60),
            &mut || false,
            None,
        )
        .await
        .expect("a failed signal is not an error")
        .expect("the process was running");
        assert!(stopped.killed);
        assert_eq!(kills.get(), 1, "killed at once, not after the 60 s grace");
        assert!(stopped.elapsed < Duration::from_secs(60));
        let warning = stopped.warning.expect("one warning line");
        assert!(warning.contains("cannot send SIGTERM"), "{warning}");
        assert!(warning.contains("no console shared"), "{warning}");
        assert!(child.borrow_mut().try_wait().unwrap().is_some(), "reaped");
    }

    /// The one escalation also serves the backend's stop: `hurry()` (a second Ctrl-C) turns
    /// the grace time into a kill at once.
    #[tokio::test]
    // The lock only orders tests; each runs on a runtime of its own.
    #[allow(clippy::await_holding_lock)]
    async fn hurry_kills_before_the_grace_time_is_over() {
        let _alone = crate::children_lock();
        // SIGTERM is only recorded, never sent: it stays running until the kill.
        let child = sleeper();
        let pid = child.borrow().id();
        let signals = std::cell::RefCell::new(Vec::new());
        let mut asked = 0;
        let stopped = escalate(
            || match child.borrow_mut().try_wait() {
                Ok(None) => vec![pid],
                _ => Vec::new(),
            },
            |_, signal| {
                signals.borrow_mut().push(signal);
                match signal {
                    StopSignal::Kill => child.borrow_mut().kill(),
                    _ => Ok(()),
                }
            },
            StopSignal::Terminate,
            Duration::from_secs(60),
            &mut || {
                asked += 1;
                asked > 3
            },
            Some("pid under test"),
        )
        .await
        .expect("stopped")
        .expect("the process was running");
        assert!(stopped.killed);
        assert!(stopped.warning.is_none());
        assert_eq!(*signals.borrow(), [StopSignal::Terminate, StopSignal::Kill]);
        assert!(
            stopped.elapsed < Duration::from_secs(60),
            "not after the grace"
        );
    }

    /// Another devrun asked on its control channel gets no signal: only the kill once the grace
    /// time is over, announced just before it.
    #[tokio::test]
    // The lock only orders tests; each runs on a runtime of its own.
    #[allow(clippy::await_holding_lock)]
    async fn one_process_already_asked_is_only_killed_after_the_grace_time() {
        let _alone = crate::children_lock();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = procs::start_time(pid).expect("a start time while it runs");
        let mut announced = 0;
        let grace = Duration::from_millis(200);
        let stopped = stop_one(pid, start, None, grace, &mut || announced += 1)
            .await
            .expect("stopped")
            .expect("it was running");
        assert!(stopped.killed);
        assert!(stopped.warning.is_none());
        assert!(stopped.elapsed >= grace, "not killed before the grace time");
        assert_eq!(announced, 1, "the kill is announced once");
        assert!(child.wait().unwrap().code().is_none(), "ended by a signal");
        let again = stop_one(pid, start, Some(StopSignal::Terminate), grace, &mut || {}).await;
        assert!(
            again.unwrap().is_none(),
            "a process that is gone is left alone"
        );
    }
}
