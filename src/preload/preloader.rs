//! One running preloader (Linux): started with the command's interpreter running the embedded
//! runner, spoken to over a Unix socket (see [`super::protocol`]), asked for one fork per
//! generation.

use super::protocol::{self, ProtocolError, Reply, Request, Spec};
use super::{Preload, Settings};
use crate::process::{Backend, Reaped};
use std::collections::BTreeMap;
use std::io::{self, IoSlice, PipeReader, PipeWriter};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

/// The runner: its protocol part first, then the rest, run as one script (`python -c`).
pub(super) const RUNNER: &str = concat!(
    include_str!("runner_protocol.py"),
    "\n",
    include_str!("runner.py")
);
/// A fork answers in milliseconds; this only bounds a preloader that hangs.
const FORK_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variables, in order.
pub(super) type Vars = Vec<(String, String)>;

pub(super) type Replies = Lines<BufReader<OwnedReadHalf>>;

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
    writer: OwnedWriteHalf,
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
        let (listener, path, _remove) = private_socket()?;
        let mut child = spawn(settings, env, &path)?;
        let deadline = tokio::time::Instant::now() + settings.start_timeout;
        let pid = child.id().unwrap_or(0);
        let timeout = settings.start_timeout;
        let accepted = tokio::select! {
            // A preloader that connected, said why it refused and exited is heard out.
            biased;
            accepted = tokio::time::timeout(timeout, listener.accept()) => accepted,
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
        let (reader, writer) = accepted?.0.into_split();
        let mut lines = BufReader::new(reader).lines();
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

/// Writes `line` to `writer` with `fds` attached to its first byte (SCM_RIGHTS).
pub(super) async fn send_with_fds(
    writer: &mut OwnedWriteHalf,
    line: &[u8],
    fds: &[RawFd],
) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let stream: &UnixStream = writer.as_ref();
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(line)];
            sendmsg::<UnixAddr>(
                stream.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(io::Error::from)
        })
        .await?;
    // A long environment may not fit at once: the rest follows, the descriptors went first.
    writer.write_all(&line[sent..]).await
}

/// What a preloader said before it was ready.
pub(super) struct Loaded {
    pub imported: usize,
    modules: Vec<protocol::Module>,
    read: Vec<protocol::ReadFile>,
    pub skipped: Vec<(String, String)>,
}

impl Loaded {
    /// Why what it loaded (or read) holds project code, if it does.
    pub fn project_code(&self, is_project: &dyn Fn(&Path) -> bool) -> Option<String> {
        project_module(&self.modules, is_project)
            .or_else(|| project_file_read(&self.read, is_project))
    }
}

/// Why a preloader (or spare) did not get ready.
pub(super) enum NotReady {
    /// It refused: an import started a thread or opened a socket (a spare can hold those).
    Unforkable(String),
    /// Anything else: it exited, was late, or said something devrun cannot read.
    Failed(String),
}

/// Reads the preloader's `hello` (its protocol version must be devrun's), the modules it
/// skipped, and then `loaded`. Err: why it will not serve (it refused, said something else,
/// or nothing before `deadline`).
pub(super) async fn handshake(
    lines: &mut Replies,
    deadline: tokio::time::Instant,
) -> Result<Loaded, NotReady> {
    let next = next_reply(lines, deadline)
        .await
        .map_err(NotReady::Failed)?;
    protocol::check_hello(next).map_err(|e| NotReady::Failed(e.to_string()))?;
    let mut skipped = Vec::new();
    loop {
        match next_reply(lines, deadline)
            .await
            .map_err(NotReady::Failed)?
        {
            Reply::Skipped { module, error } => skipped.push((module, error)),
            Reply::Refused { reason } => return Err(NotReady::Unforkable(reason)),
            Reply::Loaded {
                imported,
                modules,
                read,
            } => {
                return Ok(Loaded {
                    imported,
                    modules,
                    read,
                    skipped,
                })
            }
            other => return Err(NotReady::Failed(other.out_of_turn("`loaded`").to_string())),
        }
    }
}

/// The preloader's next line before `deadline`, read; Err: why there is none.
pub(super) async fn next_reply(
    lines: &mut Replies,
    deadline: tokio::time::Instant,
) -> Result<Reply, String> {
    match tokio::time::timeout_at(deadline, lines.next_line()).await {
        Ok(Ok(Some(line))) => Reply::parse(&line).map_err(|e| e.to_string()),
        Ok(Ok(None)) => Err("the preloader stopped before it was ready".into()),
        Ok(Err(e)) => Err(format!("cannot read from the preloader: {e}")),
        Err(_) => Err("the preloader was not ready in time".into()),
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
    socket: &Path,
) -> io::Result<tokio::process::Child> {
    let (command, runner_env) = runner_command(settings, socket, false)?;
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..])
        .current_dir(&settings.root)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .envs(runner_env)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    crate::sys::spawn_group(cmd, None).map(|(child, _group)| child)
}

/// The command line that runs the embedded runner with the command's interpreter (and its
/// options), and the variables that tell it where devrun listens (`socket`) and what to do:
/// preload and fork, or (`spare`) preload and then become the generation.
pub(super) fn runner_command(
    settings: &Settings,
    socket: &Path,
    spare: bool,
) -> io::Result<(Vec<String>, Vars)> {
    let launch = &settings.launch;
    if launch.interpreter.is_empty() {
        return Err(io::Error::other("no interpreter"));
    }
    let spec = Spec {
        version: protocol::VERSION,
        root: &settings.root,
        modules: match &settings.imports {
            Preload::Auto => None,
            Preload::Modules(names) => Some(names),
        },
        module: launch.module.as_deref(),
        script: launch.script.as_deref(),
        spare,
    };
    let spec = serde_json::to_string(&spec).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot write the preloader's spec: {e}"),
        )
    })?;
    let mut command = launch.interpreter.clone();
    command.extend(["-c".to_string(), RUNNER.to_string()]);
    let env = vec![
        ("DEVRUN_PRELOAD_SOCKET".into(), socket.display().to_string()),
        ("DEVRUN_PRELOAD_SPEC".into(), spec),
        (
            "DEVRUN_PRELOAD_PARENT".into(),
            std::process::id().to_string(),
        ),
    ];
    Ok((command, env))
}

/// The folder of the socket a preloader or a spare connects back to: only needed until it
/// connected, removed (with the socket) when dropped.
pub(super) struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh listening socket for a preloader or a spare to connect back to, in a new folder only
/// this user may enter: the requests carry the backend's environment, and another user must
/// not be the first to connect (a socket bound in the shared temp folder and made private
/// afterwards left a moment when anyone could, with umask 000). Its path is short enough for a
/// Unix socket address.
pub(super) fn private_socket() -> io::Result<(UnixListener, PathBuf, RemoveOnDrop)> {
    use std::os::unix::fs::DirBuilderExt;
    let id = crate::state::random_id()?;
    let dir = std::env::temp_dir().join(format!("devrun-preload-{}", &id[..id.len().min(16)]));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let remove = RemoveOnDrop(dir.clone());
    let path = dir.join("s");
    let listener = UnixListener::bind(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok((listener, path, remove))
}

/// The loaded modules whose files are project code, said with the first one's file and the
/// preload that imported it.
fn project_module(
    loaded: &[protocol::Module],
    is_project: &dyn Fn(&Path) -> bool,
) -> Option<String> {
    let found: Vec<&protocol::Module> = loaded.iter().filter(|m| is_project(&m.file)).collect();
    let first = found.first()?;
    let mut names: Vec<&str> = found.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    let by = match &first.by {
        None => "the interpreter's start (a .pth file or sitecustomize?)".to_string(),
        Some(by) => format!("preloading {by}"),
    };
    Some(format!(
        "project code was imported by {by}: {} ({}{})",
        names.join(", "),
        first.file.display(),
        if names.len() > 1 { ", …" } else { "" }
    ))
}

/// A project file preloading read or ran without importing it as a module (a library's
/// `spec_from_file_location` + `exec_module`, or `open` + `exec`): its contents would be stale
/// in every fork after an edit, as an imported module's would.
fn project_file_read(
    read: &[protocol::ReadFile],
    is_project: &dyn Fn(&Path) -> bool,
) -> Option<String> {
    let found: Vec<&protocol::ReadFile> = read.iter().filter(|r| is_project(&r.file)).collect();
    let first = found.first()?;
    Some(format!(
        "a project file was read by preloading {}: {}{} (it would be stale in every fork)",
        first.by,
        first.file.display(),
        match found.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket a preloader or spare connects back to is in a folder no other user can
    /// enter, from the moment it exists; the folder goes with the guard.
    #[tokio::test]
    async fn the_connect_back_socket_is_private_from_the_start_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let (listener, path, remove) = private_socket().unwrap();
        let dir = path.parent().unwrap().to_path_buf();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
        assert!(tokio::net::UnixStream::connect(&path).await.is_ok());
        drop((listener, remove));
        assert!(!dir.exists(), "{} was left", dir.display());
    }

    fn module(name: &str, file: &str, by: Option<&str>) -> protocol::Module {
        protocol::Module {
            name: name.into(),
            file: file.into(),
            by: by.map(str::to_string),
        }
    }

    #[test]
    fn project_code_is_named_with_the_preload_that_imported_it() {
        let is_project = |p: &Path| p.starts_with("/p");
        let loaded = [
            module("fastapi", "/v/fastapi/__init__.py", Some("fastapi")),
            module("app.settings", "/p/app/settings.py", Some("sneaky")),
            module("app", "/p/app/__init__.py", Some("sneaky")),
        ];
        assert_eq!(project_module(&loaded[..1], &is_project), None);
        assert_eq!(
            project_module(&loaded, &is_project).as_deref(),
            Some(
                "project code was imported by preloading sneaky: app, app.settings \
                 (/p/app/settings.py, …)"
            )
        );
        let read = |file: &str| protocol::ReadFile {
            file: file.into(),
            by: "pluggy".into(),
        };
        let files = [
            read("/v/pluggy/x.py"),
            read("/p/hooks.py"),
            read("/p/conf.py"),
        ];
        assert_eq!(project_file_read(&files[..1], &is_project), None);
        assert_eq!(
            project_file_read(&files, &is_project).as_deref(),
            Some(
                "a project file was read by preloading pluggy: /p/hooks.py and 1 more \
                 (it would be stale in every fork)"
            )
        );
        let at_start = [module("app", "/p/app/__init__.py", None)];
        let reason = project_module(&at_start, &is_project).unwrap();
        assert!(reason.contains("the interpreter's start"), "{reason}");
    }
}
