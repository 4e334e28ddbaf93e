//! The backend as one unit: spawn it as a new process group (a job object on Windows), signal the
//! whole group, kill it, and confirm that every process of it is gone.
//!
//! What differs between operating systems (`Group`, signals, job objects) is in `crate::sys`.

use crate::sys as platform;
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Linux: become a child subreaper, so descendants the backend orphans come back to devrun.
/// Nothing to do elsewhere.
pub use platform::prepare_supervisor;

/// Windows: makes sure the backend can be sent a console control event (a hidden console when
/// devrun has none) and returns the one line to say when the terminal changes how a stop
/// works (mintty, no console). Nothing to do elsewhere.
pub use platform::prepare_console;

/// The descriptor number the inherited listening socket has in the backend (systemd's first).
pub const INHERITED_FD: i32 = 3;

/// What is sent to the backend's group first, before the kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopSignal {
    /// SIGTERM on Unix, CTRL_BREAK to the console process group on Windows.
    #[default]
    Terminate,
    Interrupt,
    Hangup,
    Quit,
    User1,
    User2,
    /// No grace: kill the group at once.
    Kill,
}

impl StopSignal {
    /// Accepts `SIGTERM`, `TERM`, `sigterm`…, and on Windows `CTRL_BREAK`. A name that has no
    /// meaning on this platform is an error that says what to use instead.
    pub fn parse(name: &str) -> Result<StopSignal, String> {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        let signal = match bare {
            "TERM" => StopSignal::Terminate,
            "INT" => StopSignal::Interrupt,
            "HUP" => StopSignal::Hangup,
            "QUIT" => StopSignal::Quit,
            "USR1" => StopSignal::User1,
            "USR2" => StopSignal::User2,
            "KILL" => StopSignal::Kill,
            "CTRL_BREAK" | "CTRL-BREAK" | "CTRL_BREAK_EVENT" if platform::CONSOLE_EVENTS => {
                StopSignal::Terminate
            }
            "CTRL_BREAK" | "CTRL-BREAK" | "CTRL_BREAK_EVENT" => {
                return Err(format!(
                    "{name} is a Windows console event; on this system use SIGTERM (the default) or SIGINT"
                ))
            }
            _ => {
                return Err(format!(
                    "unknown signal {name:?}; expected SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 or SIGKILL"
                ))
            }
        };
        if platform::CONSOLE_EVENTS && !matches!(signal, StopSignal::Terminate | StopSignal::Kill) {
            return Err(format!(
                "{name} cannot be sent to a process group on Windows; use CTRL_BREAK (the default) or SIGKILL"
            ));
        }
        Ok(signal)
    }

    /// The name as this platform delivers it.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Terminate if platform::CONSOLE_EVENTS => "CTRL_BREAK",
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Hangup => "SIGHUP",
            StopSignal::Quit => "SIGQUIT",
            StopSignal::User1 => "SIGUSR1",
            StopSignal::User2 => "SIGUSR2",
            StopSignal::Kill => "SIGKILL",
        }
    }
}

/// How a generation ended.
#[derive(Debug, Clone)]
pub struct Stopped {
    /// The group leader's exit status, if devrun reaped it.
    pub status: Option<ExitStatus>,
    /// The grace time ran out (or there was none) and the group was killed.
    pub killed: bool,
    pub elapsed: Duration,
    /// The stop signal could not be delivered (on Windows: no console shared with the
    /// backend), so the group was killed at once. One line for the user; never an error.
    pub warning: Option<String>,
}

/// Exit statuses (raw wait statuses, by pid) reported by the process that reaps a backend
/// devrun did not spawn itself: the preloader. `closed` once it can report no more.
#[derive(Debug, Clone, Default)]
pub struct Reaped {
    pub statuses: std::collections::HashMap<u32, i32>,
    pub closed: bool,
}

/// Who the group leader is to devrun: its own child, or a child of the preloader whose exit
/// the preloader reports.
enum Leader {
    Spawned(tokio::process::Child),
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Forked(tokio::sync::watch::Receiver<Reaped>),
}

impl Leader {
    /// The leader's exit status if it has exited (and was reaped). Never blocks.
    fn try_status(&mut self, pid: u32) -> Option<ExitStatus> {
        match self {
            Leader::Spawned(child) => child.try_wait().ok().flatten(),
            Leader::Forked(reports) => reported(&reports.borrow(), pid),
        }
    }

    async fn wait(&mut self, pid: u32) -> io::Result<ExitStatus> {
        match self {
            Leader::Spawned(child) => child.wait().await,
            Leader::Forked(reports) => loop {
                if let Some(status) = reported(&reports.borrow_and_update(), pid) {
                    return Ok(status);
                }
                if reports.changed().await.is_err() {
                    return reported(&reports.borrow(), pid)
                        .ok_or_else(|| io::Error::other("the preloader stopped reporting"));
                }
            },
        }
    }
}

/// A reported status; once the preloader is gone its children were killed with it
/// (parent-death signal): SIGKILL, as the kernel delivered it.
fn reported(reaped: &Reaped, pid: u32) -> Option<ExitStatus> {
    #[cfg(unix)]
    use std::os::unix::process::ExitStatusExt;
    #[cfg(windows)]
    use std::os::windows::process::ExitStatusExt;
    match reaped.statuses.get(&pid) {
        Some(raw) => Some(ExitStatus::from_raw(*raw as _)),
        None if reaped.closed => Some(ExitStatus::from_raw(9)),
        None => None,
    }
}

/// One running generation: the group leader devrun spawned (or had the preloader fork) and
/// its whole group.
pub struct Backend {
    child: Leader,
    pid: u32,
    /// Taken just before the spawn: files changed earlier are what this interpreter imports.
    spawned_at: Instant,
    group: platform::Group,
    status: Option<ExitStatus>,
    /// The write end of the backend's stdin, when typed lines are forwarded to it.
    stdin: Option<std::io::PipeWriter>,
    /// Passes its stderr through, keeping what a crash summary reads.
    witness: crate::summary::Witness,
}

/// devrun's ends of the pipes handed to a forked generation, as [`Backend::spawn`] makes them
/// for a cold start: stdin (typed lines), stderr, and in a stack stdout with the member's label.
#[cfg(target_os = "linux")]
pub struct ForkPipes {
    pub stdin: Option<std::io::PipeWriter>,
    pub stderr: Option<std::io::PipeReader>,
    pub stdout: Option<std::io::PipeReader>,
    pub label: Option<crate::output::Label>,
}

/// After SIGKILL the kernel ends a group within milliseconds; only a process stuck in the
/// kernel (uninterruptible I/O) outlives this.
const KILL_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

impl Backend {
    /// Starts `command` in `cwd` as the leader of a new process group with `env` added.
    /// stdin is a pipe devrun writes typed lines into when devrun's stdin is a terminal
    /// ([`crate::stdin`]), else /dev/null (never the terminal: a background group reading it
    /// would be stopped). stdout is devrun's, untouched; stderr is a pipe devrun copies to its
    /// own unchanged, keeping a tail for the crash summary.
    ///
    /// With `socket`, the listening socket devrun holds becomes the backend's fd 3, with
    /// `LISTEN_FDS=1` and `LISTEN_PID` set to the backend's own pid (systemd's convention).
    /// With a `label` (a stack member), stdout is a pipe too and both are copied line by line
    /// with the label in front.
    pub fn spawn(
        command: &[String],
        cwd: &Path,
        env: &[(String, String)],
        socket: Option<&socket2::Socket>,
        label: Option<crate::output::Label>,
    ) -> io::Result<Backend> {
        let spawned_at = Instant::now();
        let mut command = command.to_vec();
        if socket.is_some() {
            // LISTEN_PID must be the backend's pid, known only after fork: a shell exports it
            // and execs the command, so the pid does not change.
            let mut wrapped: Vec<String> = [
                "/bin/sh",
                "-c",
                "export LISTEN_PID=$$; exec \"$@\"",
                "devrun-backend",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            wrapped.extend(command);
            command = wrapped;
        }
        let (program, args) = command
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let mut cmd = tokio::process::Command::new(program);
        if socket.is_some() {
            cmd.env("LISTEN_FDS", "1");
        }
        let (stdin, stdin_writer) = match crate::stdin::forwarding() {
            true => {
                let (read, write) = std::io::pipe()?;
                (Stdio::from(read), Some(write))
            }
            false => (Stdio::null(), None),
        };
        let (stderr_reader, stderr) = std::io::pipe()?;
        let stdout_reader = match label.is_some() {
            true => {
                let (read, write) = std::io::pipe()?;
                cmd.stdout(write);
                Some(read)
            }
            false => None,
        };
        cmd.args(args)
            .current_dir(cwd)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(stdin)
            .stderr(stderr)
            .kill_on_drop(false);
        // The command (and with it devrun's copy of the pipes' other ends) is gone after this.
        let (child, group) = platform::spawn_group(cmd, socket)?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the backend exited before its pid was read"))?;
        Ok(Backend {
            child: Leader::Spawned(child),
            pid,
            spawned_at,
            group,
            status: None,
            stdin: stdin_writer,
            witness: crate::summary::Witness::start(pid, Some(stderr_reader), stdout_reader, label),
        })
    }

    /// The generation the preloader (`preloader`, a child of devrun) forked as `pid`, leading
    /// its own group; `reports` carries its exit status once the preloader reaped it. `stdin`
    /// and `stderr` are devrun's ends of the pipes handed to the fork, as [`Backend::spawn`]
    /// makes them for a cold start.
    #[cfg(target_os = "linux")]
    pub fn adopt(
        pid: u32,
        preloader: u32,
        spawned_at: Instant,
        reports: tokio::sync::watch::Receiver<Reaped>,
        pipes: ForkPipes,
    ) -> io::Result<Backend> {
        let ForkPipes {
            stdin,
            stderr,
            stdout,
            label,
        } = pipes;
        Ok(Backend {
            child: Leader::Forked(reports),
            pid,
            spawned_at,
            group: platform::Group::adopt(pid, preloader)?,
            status: None,
            stdin,
            witness: crate::summary::Witness::start(pid, stderr, stdout, label),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The write end of the backend's stdin, for [`crate::stdin::Typed::attach`].
    pub fn take_stdin(&mut self) -> Option<std::io::PipeWriter> {
        self.stdin.take()
    }

    /// Waits (at most briefly) until what the backend wrote to stderr reached devrun's.
    pub async fn drain_output(&mut self) {
        self.witness.drained().await;
    }

    /// After it exited on its own: what killed it, in one line, if its status and stderr say.
    /// `root` tells the project's files from installed ones in a traceback.
    pub async fn summary(&mut self, root: &Path) -> Option<String> {
        let status = self.status?;
        self.witness.summary(&status, root).await
    }

    pub fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// The process group id to record (the leader's pid: it leads its own group).
    pub fn pgid(&self) -> u32 {
        self.pid
    }

    /// Resolves when the group leader exits. Cancel-safe, so it can sit in a `select!`.
    pub async fn exited(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.child.wait(self.pid).await?;
        self.status = Some(status);
        Ok(status)
    }

    /// Whether any process of the group (or, on Linux, any escaped descendant) is alive.
    /// Reaps what it may.
    pub fn alive(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_status(self.pid);
        }
        self.group.alive(self.status.is_some())
    }

    /// Stops the whole group: `signal`, then after `grace` (or as soon as `hurry()` says so) a
    /// kill, then waits until no process of the group is left. Every path out of here with
    /// `Ok` means the group is gone.
    pub async fn stop(
        &mut self,
        signal: StopSignal,
        grace: Duration,
        hurry: &mut dyn FnMut() -> bool,
    ) -> io::Result<Stopped> {
        let began = Instant::now();
        let (pid, child, status, group) =
            (self.pid, &mut self.child, &mut self.status, &self.group);
        let members = || {
            if status.is_none() {
                *status = child.try_status(pid);
            }
            match group.alive(status.is_some()) {
                true => vec![pid],
                false => Vec::new(),
            }
        };
        let send = |_: &[u32], signal| match signal {
            StopSignal::Kill => group.kill(),
            signal => group.signal(signal),
        };
        let whom = format!("pid {pid}");
        let stopped = escalate(members, send, signal, grace, hurry, Some(&whom)).await?;
        // The group is gone: what it wrote last reaches devrun's stderr before anything else.
        self.witness.drained().await;
        Ok(Stopped {
            status: self.status,
            ..stopped.unwrap_or(Stopped {
                status: None,
                killed: false,
                elapsed: began.elapsed(),
                warning: None,
            })
        })
    }
}

/// A backend leader as a dead devrun recorded it. Evidence to check, never orders.
#[derive(Debug, Clone, Copy)]
pub struct LeaderRecord {
    pub pid: u32,
    pub pgid: u32,
    pub start: u64,
}

/// A dead devrun's run: every process it started carries `DEVRUN_RUN=<id>` and started at or
/// after `start` (devrun's own start time).
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: String,
    pub start: u64,
}

/// What orphan recovery did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The leader records (by index in the records given) that name a live process devrun
    /// cannot have started: nothing of theirs was signalled. The text says why.
    pub refused: Vec<(usize, String)>,
    /// What was ended (pids as first found), if anything proven ours was alive.
    pub stopped: Option<(Vec<u32>, Stopped)>,
}

/// Is the recorded leader still the live leader of its own group, safe to signal as a group?
enum LeaderCheck {
    Ours,
    /// Exited, or the pid now belongs to a process with another start time.
    Gone,
    NotOurs(String),
}

fn check_leader(leader: &LeaderRecord) -> LeaderCheck {
    let LeaderRecord { pid, pgid, start } = *leader;
    if pid <= 1 || pid == std::process::id() {
        return LeaderCheck::NotOurs(format!("pid {pid} can never be a backend devrun started"));
    }
    if pgid != pid {
        return LeaderCheck::NotOurs(format!(
            "its process group {pgid} is not its own pid {pid}, and devrun's backends always \
             lead their own group"
        ));
    }
    if !crate::procs::is_same(pid, start) {
        return LeaderCheck::Gone;
    }
    match platform::group_refusal(pid, pgid) {
        Some(why) => LeaderCheck::NotOurs(why),
        None => LeaderCheck::Ours,
    }
}

/// Ends what a devrun that is gone (killed, crashed) left running, with the usual escalation.
/// Everything is re-derived from the live system first, and only proven processes are touched:
/// each recorded leader (the backend's and every other member's) if it is the same process (pid
/// *and* start time) and still leads its own group (never group 0 or 1, never devrun's own group
/// or session), with its group and descendants; and, where the OS lets devrun read another
/// process's environment (Linux), every process of this user carrying the run's marker that
/// started after the run did, with its descendants. A record that names a live process failing
/// those checks ends nothing of its own. All of it is stopped at once: one grace period in all.
pub async fn stop_orphan(
    leaders: &[LeaderRecord],
    run: Option<&RunRecord>,
    signal: StopSignal,
    grace: Duration,
) -> io::Result<Recovery> {
    // A leader record that fails the checks is left alone; the others, and the run's marked
    // processes, are proven on their own and still ended.
    let mut refused = Vec::new();
    let mut proven = Vec::new();
    for (index, leader) in leaders.iter().enumerate() {
        match check_leader(leader) {
            LeaderCheck::NotOurs(why) => refused.push((index, why)),
            LeaderCheck::Ours => proven.push(*leader),
            LeaderCheck::Gone => {}
        }
    }
    // The group is signalled only while its leader is still proven to lead it.
    let still_leading = |proven: &[LeaderRecord]| -> Vec<LeaderRecord> {
        proven
            .iter()
            .filter(|l| matches!(check_leader(l), LeaderCheck::Ours))
            .copied()
            .collect()
    };
    let never = crate::procs::self_and_ancestors();
    let mut marked: Vec<(u32, u64)> = run
        .filter(|r| r.id.len() >= 16 && r.start > 0)
        .map(|r| crate::procs::marked(crate::state::RUN_MARKER, &r.id, r.start))
        .unwrap_or_default();
    let mut first = Vec::new();
    let members = || {
        // Once proven, a process stays proven while it lives (same pid and start time).
        marked.retain(|(pid, start)| crate::procs::is_same(*pid, *start));
        let mut members: Vec<u32> = marked.iter().map(|(pid, _)| *pid).collect();
        for (pid, _) in &marked {
            members.extend(crate::procs::descendants(*pid));
        }
        for l in still_leading(&proven) {
            members.extend(platform::orphan_members(l.pid, l.pgid, l.start));
        }
        members.sort_unstable();
        members.dedup();
        members.retain(|p| *p > 1 && !never.contains(p) && !crate::procs::is_zombie(*p));
        if first.is_empty() {
            first = members.clone();
        }
        members
    };
    let send = |members: &[u32], signal| {
        let groups: Vec<u32> = still_leading(&proven).iter().map(|l| l.pgid).collect();
        platform::signal_pids(&groups, members, signal)
    };
    let stopped = escalate(members, send, signal, grace, &mut || false, None).await?;
    Ok(Recovery {
        refused,
        stopped: stopped.map(|stopped| (first, stopped)),
    })
}

/// Ends one process devrun did not start (the user asked: --kill-port-holder), verified by
/// its start time at every step, and nothing else: not its group, not its parent.
pub async fn stop_foreign(
    pid: u32,
    signal: StopSignal,
    grace: Duration,
) -> io::Result<Option<Stopped>> {
    // Even when asked: never init, devrun itself or a process devrun runs inside (the IDE,
    // the shell, a terminal multiplexer that holds the port).
    if pid <= 1 || crate::procs::self_and_ancestors().contains(&pid) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("pid {pid} is init, devrun itself or one of its ancestors: not ending it"),
        ));
    }
    let Some(start) = crate::procs::start_time(pid) else {
        return Ok(None);
    };
    escalate(
        || {
            if crate::procs::is_same(pid, start) && !crate::procs::is_zombie(pid) {
                vec![pid]
            } else {
                Vec::new()
            }
        },
        |members, signal| platform::signal_pids(&[], members, signal),
        signal,
        grace,
        &mut || false,
        None,
    )
    .await
}

/// The one escalation, for a backend's group, a dead devrun's leftovers and a port holder:
/// `signal`, wait for `grace` (or until `hurry()`), kill, wait until `members()` is empty.
/// A signal that cannot be delivered is one warning and the kill at once, never an error.
/// `whom` names the target in messages (else its pids). `None` when nothing was alive.
async fn escalate(
    mut members: impl FnMut() -> Vec<u32>,
    send: impl Fn(&[u32], StopSignal) -> io::Result<()>,
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
        status: None,
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

/// Poll fast while a stop is likely to finish soon, slower when the backend takes its time.
pub(crate) fn poll_interval(elapsed: Duration) -> Duration {
    match elapsed.as_millis() {
        0..=100 => Duration::from_millis(1),
        101..=1000 => Duration::from_millis(5),
        _ => Duration::from_millis(20),
    }
}

/// "code 1", "signal 9 (SIGKILL)".
pub fn describe_status(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("code {code}");
    }
    platform::describe_signal_exit(status).unwrap_or_else(|| status.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Point 1 of issue 14, on every OS: a stop signal that cannot be sent is one warning and
    /// an immediate kill, never an error (Windows' CTRL_BREAK without a shared console).
    #[cfg(unix)]
    #[tokio::test]
    async fn a_signal_that_cannot_be_sent_is_one_warning_then_the_kill() {
        let child = std::cell::RefCell::new(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        );
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
    #[cfg(unix)]
    #[tokio::test]
    async fn hurry_kills_before_the_grace_time_is_over() {
        let child = std::cell::RefCell::new(
            // SIGTERM is only recorded, never sent: it stays running until the kill.
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        );
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

    #[test]
    fn parses_signal_names() {
        assert_eq!(StopSignal::parse("SIGTERM"), Ok(StopSignal::Terminate));
        assert_eq!(StopSignal::parse("kill"), Ok(StopSignal::Kill));
        assert!(StopSignal::parse("SIGNOPE").is_err());
        #[cfg(unix)]
        {
            assert_eq!(StopSignal::parse("int"), Ok(StopSignal::Interrupt));
            assert!(StopSignal::parse("CTRL_BREAK")
                .unwrap_err()
                .contains("Windows"));
        }
    }
}
