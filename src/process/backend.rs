//! One generation: the group leader devrun spawned (or had the preloader fork), its whole
//! process group, and its output streams on their way to devrun's.

use super::stop::{escalate, Stopped};
use crate::output::{Label, Streams};
use crate::summary::Witness;
use crate::sys::{self as platform, StopSignal};
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
    Forked {
        reports: tokio::sync::watch::Receiver<Reaped>,
        preloader: u32,
        /// Since when the leader has been a zombie the preloader does not reap.
        unreaped_since: Option<Instant>,
    },
}

/// A preloader reaps a fork within milliseconds: one that leaves its exited fork a zombie
/// this long is stopped (SIGSTOP, a debugger) or hung.
const UNREAPED_GRACE: Duration = Duration::from_secs(2);

impl Leader {
    /// A forked leader that exited but is not reaped by its parent, the preloader (stopped or
    /// hung), would count as a survivor of the kill for ever. Past [`UNREAPED_GRACE`] the
    /// preloader is killed: the zombie goes to devrun (the subreaper) and is reaped, its status
    /// reads as killed, and the next fork starts a fresh preloader.
    fn unstick(&mut self, pid: u32) {
        let Leader::Forked {
            preloader,
            unreaped_since,
            ..
        } = self
        else {
            return;
        };
        // The zombie's parent is the preloader right now: its pid cannot have been reused.
        if !(platform::is_zombie(pid) && platform::parent(pid) == Some(*preloader)) {
            *unreaped_since = None;
            return;
        }
        if unreaped_since.get_or_insert_with(Instant::now).elapsed() >= UNREAPED_GRACE {
            let _ = platform::terminate(*preloader, true);
        }
    }

    /// The leader's exit status if it has exited (and was reaped). Never blocks.
    fn try_status(&mut self, pid: u32) -> Option<ExitStatus> {
        match self {
            Leader::Spawned(child) => child.try_wait().ok().flatten(),
            Leader::Forked { reports, .. } => reported(&reports.borrow(), pid),
        }
    }

    async fn wait(&mut self, pid: u32) -> io::Result<ExitStatus> {
        match self {
            Leader::Spawned(child) => child.wait().await,
            Leader::Forked { reports, .. } => loop {
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

/// The command that hands the held socket over. Unix: LISTEN_PID must be the backend's pid,
/// known only after fork: a shell exports it and execs the command, so the pid does not change.
#[cfg(unix)]
fn handing_over(command: &[String], _socket: &socket2::Socket) -> Vec<String> {
    let mut wrapped: Vec<String> = [
        "/bin/sh",
        "-c",
        "export LISTEN_PID=$$; exec \"$@\"",
        "devrun-backend",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    wrapped.extend(command.iter().cloned());
    wrapped
}

/// Windows: `{fd}` (left unfilled by the config: the handle value exists only once devrun
/// bound the port) becomes the inherited socket's handle value.
#[cfg(windows)]
fn handing_over(command: &[String], socket: &socket2::Socket) -> Vec<String> {
    use std::os::windows::io::AsRawSocket;
    let value = socket.as_raw_socket().to_string();
    command
        .iter()
        .map(|arg| arg.replace("{fd}", &value))
        .collect()
}

/// One running generation: the group leader devrun spawned (or had the preloader fork), its
/// whole group, and the copies of its output.
pub struct Backend {
    child: Leader,
    pid: u32,
    /// Taken just before the spawn: files changed earlier are what this interpreter imports.
    spawned_at: Instant,
    group: platform::Group,
    status: Option<ExitStatus>,
    /// The write end of the backend's stdin, when typed lines are forwarded to it.
    stdin: Option<std::io::PipeWriter>,
    /// Its stderr (and a stack member's stdout) on the way to devrun's.
    output: Streams,
    /// Samples its memory for the crash summary.
    witness: Witness,
}

/// devrun's ends of the pipes handed to a forked generation, as [`Backend::spawn`] makes them
/// for a cold start: stdin (typed lines), stderr, and in a stack stdout with the member's label.
#[cfg(target_os = "linux")]
pub struct ForkPipes {
    pub stdin: Option<std::io::PipeWriter>,
    pub stderr: Option<std::io::PipeReader>,
    pub stdout: Option<std::io::PipeReader>,
    pub label: Option<Label>,
}

impl Backend {
    /// Starts `command` in `cwd` as the leader of a new process group with `env` added.
    /// stdin is a pipe devrun writes typed lines into when devrun's stdin is a terminal
    /// ([`crate::stdin`]), else /dev/null (never the terminal: a background group reading it
    /// would be stopped). stdout is devrun's, untouched; stderr is a pipe devrun copies to its
    /// own unchanged, keeping a tail for the crash summary.
    ///
    /// With `socket`, the listening socket devrun holds becomes the backend's fd 3, with
    /// `LISTEN_FDS=1` and `LISTEN_PID` set to the backend's own pid (systemd's convention). On
    /// Windows it is an inherited handle whose value `{fd}` in the command stands for (and
    /// [`platform::HELD_SOCKET`] in the environment, for devrun's bootstrap).
    /// With a `label` (a stack member), stdout is a pipe too and both are copied line by line
    /// with the label in front.
    pub fn spawn(
        command: &[String],
        cwd: &Path,
        env: &[(String, String)],
        socket: Option<&socket2::Socket>,
        label: Option<Label>,
    ) -> io::Result<Backend> {
        let spawned_at = Instant::now();
        let command = match socket {
            Some(socket) => handing_over(command, socket),
            None => command.to_vec(),
        };
        let (program, args) = command
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let mut cmd = tokio::process::Command::new(program);
        if cfg!(unix) && socket.is_some() {
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
            output: Streams::start(Some(stderr_reader), stdout_reader, label),
            witness: Witness::start(pid),
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
            child: Leader::Forked {
                reports,
                preloader,
                unreaped_since: None,
            },
            pid,
            spawned_at,
            group: platform::Group::adopt(pid, preloader)?,
            status: None,
            stdin,
            output: Streams::start(stderr, stdout, label),
            witness: Witness::start(pid),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The write end of the backend's stdin, for [`crate::stdin::Typed::attach`].
    pub fn take_stdin(&mut self) -> Option<std::io::PipeWriter> {
        self.stdin.take()
    }

    /// Waits (at most briefly) until what the backend wrote to its piped stderr (and a stack
    /// member to its stdout) reached devrun's.
    pub async fn drain_output(&mut self) {
        self.output.drained().await;
    }

    /// After it exited on its own: what killed it, in one line, if its status and stderr say.
    /// `root` tells the project's files from installed ones in a traceback.
    pub async fn summary(&mut self, root: &Path) -> Option<String> {
        let status = self.status?;
        // Waits (briefly) for the rest of stderr: the traceback is at its end.
        self.output.drained().await;
        let tail = self.output.stderr_tail().text();
        self.witness.summary(&status, &tail, root)
    }

    pub fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// Whether `pid` is a process of this generation's job (a venv's `python.exe` launcher
    /// runs the interpreter as its child, in the same job).
    #[cfg(windows)]
    pub fn holds(&self, pid: u32) -> bool {
        self.group.holds(pid)
    }

    /// A spare interpreter became this generation at `at`: it imported the project's code
    /// only then, so a change before `at` is what it runs.
    pub fn started_running(&mut self, at: Instant) {
        self.spawned_at = at;
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
                child.unstick(pid);
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
        let stopped = escalate(members, send, signal, grace, hurry, Some(&whom))
            .await
            .map_err(|e| match group.blind() {
                // Not stuck: unseen. No next generation starts beside what may survive.
                Some(why) => io::Error::other(format!(
                    "cannot confirm that every process of the group of pid {pid} is gone: {why}"
                )),
                None => e,
            })?;
        // The group is gone: what it wrote last reaches devrun's stderr before anything else.
        self.output.drained().await;
        Ok(stopped.unwrap_or(Stopped {
            killed: false,
            elapsed: began.elapsed(),
            warning: None,
        }))
    }
}
