//! One running preloader (Linux): started with the command's interpreter running the embedded
//! runner, spoken to over a Unix socket (see [`super::protocol`]), asked for one fork per
//! generation.

use super::channel::{send_with_fds, Listening, Replies, Writer};
use super::protocol::{ProtocolError, Reply, Request};
use super::runner::{handshake, runner_command, NotReady};
use super::Settings;
use crate::process::{Backend, Reaped};
use std::collections::BTreeMap;
use std::io::{self, PipeReader, PipeWriter};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// A fork answers in milliseconds; this only bounds a preloader that hangs.
const FORK_TIMEOUT: Duration = Duration::from_secs(10);

/// What starting a preloader gave.
pub enum Started {
    Ready(Box<Preloader>),
    /// It would hold project code (or could not start, or said something devrun cannot
    /// read): a cold start is used.
    Refused(String),
    /// An import started a thread or opened a socket, which a fork cannot carry: a spare can.
    Unforkable(String),
}

/// What a fork request gave.
pub enum Forked {
    Backend(Box<Backend>),
    /// A file the preloader loaded changed (`pip install -U`): it exited; start a fresh one.
    Stale(String),
    /// The preloader's answer broke the protocol (or it could not read the request): a fresh
    /// one would do the same.
    Broken(ProtocolError),
}

/// The descriptors a forked generation gets as a cold start would: the read end of its stdin
/// pipe (when typed lines are forwarded), the write end of its stderr pipe, in a stack the
/// write end of its stdout pipe, and in inherit mode the held listening socket (fd 3). devrun
/// keeps the other ends.
pub struct Handover {
    /// (number in the child, descriptor), sent with the fork request.
    fds: Vec<(i32, OwnedFd)>,
    stdin: Option<PipeWriter>,
    stderr: PipeReader,
    /// In a stack, stdout too, for the member's label (else the child keeps devrun's own).
    stdout: Option<PipeReader>,
    label: Option<crate::output::Label>,
}

impl Handover {
    pub fn new(
        listener: Option<&socket2::Socket>,
        label: Option<crate::output::Label>,
    ) -> io::Result<Handover> {
        let mut fds = Vec::new();
        let stdin = match crate::stdin::forwarding() {
            true => {
                let (read, write) = std::io::pipe()?;
                fds.push((0, OwnedFd::from(read)));
                Some(write)
            }
            false => None, // the preloader's own stdin is /dev/null, as a cold start's is
        };
        let (stderr, write) = std::io::pipe()?;
        fds.push((2, OwnedFd::from(write)));
        let stdout = match label.is_some() {
            true => {
                let (read, write) = std::io::pipe()?;
                fds.push((1, OwnedFd::from(write)));
                Some(read)
            }
            false => None,
        };
        if let Some(socket) = listener {
            fds.push((
                crate::process::INHERITED_FD,
                socket.as_fd().try_clone_to_owned()?,
            ));
        }
        Ok(Handover {
            fds,
            stdin,
            stderr,
            stdout,
            label,
        })
    }
}

/// A running preloader. Dropping it kills it.
pub struct Preloader {
    child: tokio::process::Child,
    pid: u32,
    writer: Writer,
    /// What it said after it was ready, besides exit statuses: answers to fork requests, or
    /// the line that broke the protocol.
    replies: mpsc::UnboundedReceiver<Result<Reply, ProtocolError>>,
    reaped: watch::Receiver<Reaped>,
    /// The environment it started with: another one needs a fresh preloader.
    pub env: Vec<(String, String)>,
    /// How many of the modules it was given it imported.
    pub imported: usize,
    /// The modules it could not import, with the error (`skipped`).
    pub skipped: Vec<(String, String)>,
}

impl Preloader {
    /// Starts the preloader with `env` and waits (up to the start timeout) until it imported
    /// its modules. `is_project` says whether a file is project code: a loaded one means a
    /// refusal.
    pub async fn start(
        settings: &Settings,
        env: &[(String, String)],
        is_project: &dyn Fn(&Path) -> bool,
    ) -> io::Result<Started> {
        let mut listening = Listening::new()?;
        let mut child = spawn(settings, env, &listening.env)?;
        let deadline = tokio::time::Instant::now() + settings.start_timeout;
        let pid = child.id().unwrap_or(0);
        let timeout = settings.start_timeout;
        let accepted = tokio::select! {
            // A preloader that connected, said why it refused and exited is heard out.
            biased;
            accepted = tokio::time::timeout(timeout, listening.accept()) => accepted,
            status = child.wait() => {
                let status = status.map(|s| crate::process::describe_status(&s));
                return Ok(Started::Refused(format!(
                    "the preloader exited before it was ready ({})",
                    status.unwrap_or_else(|e| e.to_string())
                )));
            }
        };
        let Ok(accepted) = accepted else {
            return Ok(Started::Refused(format!(
                "the preloader was not ready within {} ms",
                timeout.as_millis()
            )));
        };
        let super::channel::Connection {
            mut lines, writer, ..
        } = accepted?;
        let loaded = match handshake(&mut lines, deadline).await {
            Ok(loaded) => loaded,
            Err(NotReady::Unforkable(reason)) => return Ok(Started::Unforkable(reason)),
            Err(NotReady::Failed(reason)) => return Ok(Started::Refused(reason)),
        };
        if let Some(reason) = loaded.project_code(is_project) {
            return Ok(Started::Refused(reason));
        }
        let (replies_tx, replies) = mpsc::unbounded_channel();
        let (reaped_tx, reaped) = watch::channel(Reaped::default());
        tokio::spawn(relay(lines, pid, replies_tx, reaped_tx));
        Ok(Started::Ready(Box::new(Preloader {
            child,
            pid,
            writer,
            replies,
            reaped,
            env: env.to_vec(),
            imported: loaded.imported,
            skipped: loaded.skipped,
        })))
    }

    /// Asks for the next generation: a child running the command in the project folder with
    /// exactly `env`, given the descriptors of `handover`.
    pub async fn fork(
        &mut self,
        settings: &Settings,
        env: &BTreeMap<String, String>,
        handover: Handover,
    ) -> io::Result<Forked> {
        let spawned_at = Instant::now();
        let request = Request::Fork {
            env,
            cwd: &settings.root,
            module: settings.launch.module.as_deref(),
            script: settings.launch.script.as_deref(),
            args: &settings.launch.args,
            fds: handover.fds.iter().map(|(target, _)| *target).collect(),
            title: &settings.title,
        };
        let line = request.line().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot write the fork request: {e}"),
            )
        })?;
        let fds: Vec<RawFd> = handover.fds.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        send_with_fds(&mut self.writer, line.as_bytes(), &fds).await?;
        // The preloader holds its own copies now; the child's ends of the pipes must not stay
        // open here (devrun would never see the child's stderr end).
        drop(handover.fds);
        let reply = tokio::time::timeout(FORK_TIMEOUT, self.replies.recv())
            .await
            .map_err(|_| io::Error::other("the preloader did not answer a fork request"))?
            .ok_or_else(|| io::Error::other("the preloader exited"))?;
        let pid = match reply {
            Ok(Reply::Forked { pid }) => pid,
            Ok(Reply::Stale { file }) => return Ok(Forked::Stale(file)),
            Ok(other) => return Ok(Forked::Broken(other.out_of_turn("`forked` or `stale`"))),
            Err(broken) => return Ok(Forked::Broken(broken)),
        };
        // Evidence, not orders: the pid must be the preloader's own child leading its group.
        if pid <= 1
            || crate::sys::parent(pid) != Some(self.pid)
            || crate::procs::process_group(pid) != Some(pid)
        {
            return Err(io::Error::other(format!(
                "the preloader named pid {pid}, which is not its child leading its own group"
            )));
        }
        let backend = Backend::adopt(
            pid,
            self.pid,
            spawned_at,
            self.reaped.clone(),
            crate::process::ForkPipes {
                stdin: handover.stdin,
                stderr: Some(handover.stderr),
                stdout: handover.stdout,
                label: handover.label,
            },
        )?;
        Ok(Forked::Backend(Box::new(backend)))
    }

    /// What it said unasked since the last fork (nothing, in a preloader that keeps to the
    /// protocol): the first such reply, as the error it is.
    pub fn unasked(&mut self) -> Option<ProtocolError> {
        match self.replies.try_recv().ok()? {
            Ok(reply) => Some(reply.out_of_turn("nothing (no fork was asked for)")),
            Err(broken) => Some(broken),
        }
    }

    /// Whether it still runs (it exits after a stale check, or if it crashed).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None)) && !self.reaped.borrow().closed
    }

    /// Ends it and waits until it is reaped (its children die with it).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Everything the preloader (`pid`) says after it is ready: exit statuses into `reaped` (as
/// soon as it reaped a child), the rest into `replies`; `closed` when it is gone. A line that
/// breaks the protocol may have been a lost exit status: the preloader is killed (its children
/// die with it), so that `closed` says what happened to them.
async fn relay(
    mut lines: Replies,
    pid: u32,
    replies: mpsc::UnboundedSender<Result<Reply, ProtocolError>>,
    reaped: watch::Sender<Reaped>,
) {
    let mut killed = false;
    while let Ok(Some(line)) = lines.next_line().await {
        match Reply::parse(&line) {
            Ok(Reply::Exited { pid, status }) => reaped.send_modify(|r| {
                r.statuses.insert(pid, status);
            }),
            Ok(reply) => {
                // A new fork may reuse the pid of an earlier one: its old status is not its.
                if let Reply::Forked { pid } = reply {
                    reaped.send_modify(|r| {
                        r.statuses.remove(&pid);
                    });
                }
                let _ = replies.send(Ok(reply));
            }
            Err(broken) => {
                if !killed {
                    // Not yet reaped (its Child is held until then): the pid is still its.
                    let target = nix::unistd::Pid::from_raw(pid as i32);
                    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
                    killed = true;
                }
                let _ = replies.send(Err(broken));
            }
        }
    }
    reaped.send_modify(|r| r.closed = true);
}

fn spawn(
    settings: &Settings,
    env: &[(String, String)],
    channel: &(String, String),
) -> io::Result<tokio::process::Child> {
    // Unix: the runner is given with `-c`, no file to keep.
    let (command, runner_env, _written) = runner_command(settings, channel, false)?;
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..])
        .current_dir(&settings.root)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .envs(runner_env)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    crate::sys::spawn_group(cmd, None).map(|(child, _group)| child)
}
