//! `[server] preload` (Linux): a long-lived Python interpreter, the preloader, imports the
//! project's third-party modules once; each generation is then a fork of it instead of a fresh
//! interpreter. The runner is src/preload.py, embedded here and run with `python -c`.
//!
//! devrun keeps its promise that no project module survives a change: the preloader never
//! holds a module whose file devrun's watch filter would restart on (checked on every start),
//! it has one thread, it is replaced when a file it loaded changes or its environment does, and
//! each fork happens only after the old generation was torn down and the port confirmed free.
//!
//! Protocol: JSON lines over a Unix socket. The preloader says `skipped`, `refused` or `loaded`
//! once; then devrun sends a fork request per generation, answered by `forked` (or `stale`,
//! after which the preloader exits), and the preloader reports each child's raw wait status
//! (`exited`) as soon as it reaps it. A fork request carries, with SCM_RIGHTS, the descriptors
//! the child gets as in a cold start (its stdin and stderr pipes, the held socket as fd 3); the
//! preloader closes its copies as soon as it forked.

use crate::config::{Config, Preload};
use crate::error::Error;
use crate::process::{Backend, Reaped};
use crate::ui::{Ui, Warn};
use crate::watch::Filter;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{self, IoSlice, PipeReader, PipeWriter};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

const RUNNER: &str = include_str!("preload.py");
/// A fork answers in milliseconds; this only bounds a preloader that hangs.
const FORK_TIMEOUT: Duration = Duration::from_secs(10);

/// How the command runs Python: the interpreter (with its own options), then a module
/// (`-m uvicorn`) or a script (`app.py`, or a console script such as `uvicorn`), then args.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub interpreter: Vec<String>,
    pub module: Option<String>,
    pub script: Option<String>,
    pub args: Vec<String>,
}

/// Reads the command as `python [options] -m MODULE args`, `python [options] SCRIPT args`, or
/// a console script whose first line is a Python shebang. Anything else cannot be preloaded.
pub fn launch(command: &[String], cwd: &Path) -> Result<Launch, String> {
    let (program, rest) = command.split_first().ok_or("empty command")?;
    if !is_python(program) {
        return console_script(program, rest, cwd).ok_or_else(|| {
            format!(
                "preload needs a Python command (`python -m MODULE …`, `python SCRIPT …` or a \
                 console script such as `uvicorn …`); `{program}` is none of these"
            )
        });
    }
    let mut interpreter = vec![program.clone()];
    let mut words = rest.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "-m" => {
                let module = words.next().ok_or("`-m` needs a module name")?;
                return Ok(Launch {
                    interpreter,
                    module: Some(module.clone()),
                    script: None,
                    args: words.cloned().collect(),
                });
            }
            "-c" | "-" => return Err(format!("preload cannot run `python {word}`")),
            "-X" | "-W" => {
                interpreter.push(word.clone());
                interpreter.extend(words.next().cloned());
            }
            option if option.starts_with('-') => interpreter.push(word.clone()),
            script => {
                return Ok(Launch {
                    interpreter,
                    module: None,
                    script: Some(script.to_string()),
                    args: words.cloned().collect(),
                })
            }
        }
    }
    Err("preload needs a module (`-m`) or a script after the Python interpreter".into())
}

fn is_python(program: &str) -> bool {
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let version = name.strip_prefix("python").unwrap_or("x");
    version.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// `uvicorn app:app` where `uvicorn` (on PATH) starts with `#!/…/python`.
fn console_script(program: &str, args: &[String], cwd: &Path) -> Option<Launch> {
    let path = if program.contains('/') {
        cwd.join(program)
    } else {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())?
    };
    let text = std::fs::read(&path).ok()?;
    let first = String::from_utf8_lossy(text.split(|b| *b == b'\n').next()?).to_string();
    let shebang: Vec<String> = first
        .strip_prefix("#!")?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let python = shebang.iter().any(|w| is_python(w));
    python.then(|| Launch {
        interpreter: shebang,
        module: None,
        script: Some(path.display().to_string()),
        args: args.to_vec(),
    })
}

/// What starting a preloader gave.
pub enum Started {
    Ready(Box<Preloader>),
    /// It would hold project code or threads (or could not start): a cold start is used.
    Refused(String),
}

/// What a fork request gave.
pub enum Forked {
    Backend(Box<Backend>),
    /// A file the preloader loaded changed (`pip install -U`): it exited; start a fresh one.
    Stale(String),
}

/// The descriptors a forked generation gets as a cold start would: the read end of its stdin
/// pipe (when typed lines are forwarded), the write end of its stderr pipe, and in inherit
/// mode the held listening socket (fd 3). devrun keeps the other ends.
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
    replies: mpsc::UnboundedReceiver<Value>,
    reaped: watch::Receiver<Reaped>,
    /// The environment it started with: another one needs a fresh preloader.
    pub env: Vec<(String, String)>,
    /// How many modules it imported.
    pub modules: usize,
}

impl Preloader {
    /// Starts the preloader and waits (up to `timeout`) until it imported its modules.
    /// `is_project` is the watch filter: a loaded file it wants means a refusal.
    pub async fn start(
        launch: &Launch,
        preload: &Preload,
        root: &Path,
        env: &[(String, String)],
        timeout: Duration,
        is_project: &dyn Fn(&Path) -> bool,
    ) -> io::Result<Started> {
        let path = socket_path()?;
        let listener = UnixListener::bind(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let _remove = RemoveOnDrop(path.clone());
        // Only this user may connect (the fork requests carry the backend's environment).
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let mut child = spawn(launch, preload, root, env, &path)?;
        let pid = child.id().unwrap_or(0);
        let accepted = tokio::select! {
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
        let deadline = tokio::time::Instant::now() + timeout;
        let (loaded, modules) = loop {
            let line = tokio::time::timeout_at(deadline, lines.next_line()).await;
            let Ok(Ok(Some(line))) = line else {
                return Ok(Started::Refused(
                    "the preloader stopped before it was ready".into(),
                ));
            };
            let reply: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if let Some(reason) = reply["refused"].as_str() {
                return Ok(Started::Refused(reason.to_string()));
            }
            if let Some(loaded) = reply["loaded"].as_array() {
                break (
                    loaded.clone(),
                    reply["modules"].as_u64().unwrap_or(0) as usize,
                );
            }
        };
        if let Some(reason) = project_module(&loaded, is_project) {
            return Ok(Started::Refused(reason));
        }
        let (replies_tx, replies) = mpsc::unbounded_channel();
        let (reaped_tx, reaped) = watch::channel(Reaped::default());
        tokio::spawn(relay(lines, replies_tx, reaped_tx));
        Ok(Started::Ready(Box::new(Preloader {
            child,
            pid,
            writer,
            replies,
            reaped,
            env: env.to_vec(),
            modules,
        })))
    }

    /// Asks for the next generation: a child running `launch` in `cwd` with exactly `env`,
    /// given the descriptors of `handover`, and shown by `ps` as `title`.
    pub async fn fork(
        &mut self,
        launch: &Launch,
        cwd: &Path,
        env: &BTreeMap<String, String>,
        title: &str,
        handover: Handover,
    ) -> io::Result<Forked> {
        let spawned_at = Instant::now();
        let targets: Vec<i32> = handover.fds.iter().map(|(target, _)| *target).collect();
        let request = json!({
            "env": env,
            "cwd": cwd,
            "module": launch.module,
            "script": launch.script,
            "args": launch.args,
            "fds": targets,
            "title": title,
        });
        let mut line = request.to_string();
        line.push('\n');
        let fds: Vec<RawFd> = handover.fds.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        self.send(line.as_bytes(), &fds).await?;
        // The preloader holds its own copies now; the child's ends of the pipes must not stay
        // open here (devrun would never see the child's stderr end).
        drop(handover.fds);
        let reply = tokio::time::timeout(FORK_TIMEOUT, self.replies.recv())
            .await
            .map_err(|_| io::Error::other("the preloader did not answer a fork request"))?
            .ok_or_else(|| io::Error::other("the preloader exited"))?;
        if let Some(file) = reply["stale"].as_str() {
            return Ok(Forked::Stale(file.to_string()));
        }
        let pid = reply["forked"]
            .as_u64()
            .ok_or_else(|| io::Error::other(format!("unexpected preloader answer {reply}")))?;
        // Evidence, not orders: the pid must be the preloader's own child leading its group.
        let pid = u32::try_from(pid)
            .ok()
            .filter(|pid| {
                *pid > 1
                    && crate::sys::parent(*pid) == Some(self.pid)
                    && crate::procs::process_group(*pid) == Some(*pid)
            })
            .ok_or_else(|| {
                io::Error::other(format!(
                    "the preloader named pid {pid}, which is not its child leading its own group"
                ))
            })?;
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

    /// Writes `line` with `fds` attached to its first byte (SCM_RIGHTS).
    async fn send(&mut self, line: &[u8], fds: &[RawFd]) -> io::Result<()> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
        let stream: &UnixStream = self.writer.as_ref();
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
        self.writer.write_all(&line[sent..]).await
    }

    /// Whether it still runs (it exits after a stale check, or if it crashed).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None)) && !self.reaped.borrow().closed
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// The supervisor's preloader across generations: started on first use, replaced when stale or
/// when the environment changed, and switched off for the run once refused.
#[derive(Default)]
pub struct Slot {
    preloader: Option<Preloader>,
    off: bool,
}

impl Slot {
    /// The next generation forked from the preloader with `modules` preloaded, or None for a
    /// cold start (preload is off, or was refused: said once). `base` is the environment the
    /// preloader starts with; `env` the child's whole environment; `listener` the socket
    /// devrun holds in `socket = "inherit"` mode (the child's fd 3, as in a cold start);
    /// `label` the backend's output prefix in a stack.
    pub async fn fork(
        &mut self,
        config: &Config,
        base: &[(String, String)],
        env: &BTreeMap<String, String>,
        (listener, label): (Option<&socket2::Socket>, Option<crate::output::Label>),
        ui: &Ui,
    ) -> Result<Option<(Backend, usize)>, Error> {
        let Some(preload) = config.preload.as_ref().filter(|_| !self.off) else {
            return Ok(None);
        };
        if config.inherit_socket && listener.is_none() {
            let reason = "the held socket was not handed to the preloader".to_string();
            ui.emit(&Warn::PreloadRefused { reason }.into());
            self.off = true;
            return Ok(None);
        }
        let launch = launch(&config.command, &config.root).map_err(Error::Usage)?;
        let title = config.command.join(" ");
        for _ in 0..2 {
            if let Some(old) = self.preloader.as_mut() {
                let reason = match (old.alive(), old.env.as_slice() == base) {
                    (false, _) => Some("the preloader exited"),
                    (true, false) => Some("the backend's environment changed"),
                    (true, true) => None,
                };
                if let Some(reason) = reason {
                    let reason = reason.to_string();
                    ui.emit(&Warn::PreloadRestarted { reason }.into());
                    self.stop().await;
                }
            }
            if self.preloader.is_none() && !self.start(config, preload, &launch, base, ui).await? {
                return Ok(None);
            }
            let Some(preloader) = self.preloader.as_mut() else {
                return Ok(None);
            };
            let handover = Handover::new(listener, label.clone())
                .map_err(|e| Error::io("cannot make the pipes for a forked generation", e))?;
            let forked = preloader
                .fork(&launch, &config.root, env, &title, handover)
                .await;
            let reason = match forked {
                Ok(Forked::Backend(backend)) => return Ok(Some((*backend, preloader.modules))),
                Ok(Forked::Stale(file)) => format!("{file} changed"),
                Err(e) => e.to_string(),
            };
            ui.emit(&Warn::PreloadRestarted { reason }.into());
            self.stop().await;
        }
        Ok(None)
    }

    /// Starts a preloader into the slot; false when it was refused (said once, preload off).
    async fn start(
        &mut self,
        config: &Config,
        preload: &Preload,
        launch: &Launch,
        base: &[(String, String)],
        ui: &Ui,
    ) -> Result<bool, Error> {
        let filter =
            Filter::new(&config.watch, &config.root).map_err(|e| Error::Watch(e.to_string()))?;
        let root = config.root.clone();
        let is_project = |p: &Path| p.starts_with(&root) && filter.wants_file(p);
        let timeout = config.ready.timeout;
        let started = Preloader::start(launch, preload, &config.root, base, timeout, &is_project)
            .await
            .map_err(|e| Error::io("cannot start the preloader", e))?;
        match started {
            Started::Ready(preloader) => {
                self.preloader = Some(*preloader);
                Ok(true)
            }
            Started::Refused(reason) => {
                ui.emit(&Warn::PreloadRefused { reason }.into());
                self.off = true;
                Ok(false)
            }
        }
    }

    /// Ends the preloader and waits until it is reaped (its children die with it).
    pub async fn stop(&mut self) {
        if let Some(mut preloader) = self.preloader.take() {
            let _ = preloader.child.kill().await;
        }
    }
}

/// Everything the preloader says after it is ready: exit statuses into `reaped` (as soon as
/// it reaped a child), answers to fork requests into `replies`; `closed` when it is gone.
async fn relay(
    mut lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    replies: mpsc::UnboundedSender<Value>,
    reaped: watch::Sender<Reaped>,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        let reply: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        match (reply["exited"].as_u64(), reply["status"].as_i64()) {
            (Some(pid), Some(status)) => reaped.send_modify(|r| {
                r.statuses.insert(pid as u32, status as i32);
            }),
            _ => {
                // A new fork may reuse the pid of an earlier one: its old status is not its.
                if let Some(pid) = reply["forked"].as_u64() {
                    reaped.send_modify(|r| {
                        r.statuses.remove(&(pid as u32));
                    });
                }
                let _ = replies.send(reply);
            }
        }
    }
    reaped.send_modify(|r| r.closed = true);
}

fn spawn(
    launch: &Launch,
    preload: &Preload,
    root: &Path,
    env: &[(String, String)],
    socket: &Path,
) -> io::Result<tokio::process::Child> {
    let (program, options) = launch
        .interpreter
        .split_first()
        .ok_or_else(|| io::Error::other("no interpreter"))?;
    let modules = match preload {
        Preload::Auto => Value::Null,
        Preload::Modules(names) => json!(names),
    };
    let spec = json!({
        "root": root,
        "modules": modules,
        "module": launch.module,
        "script": launch.script,
    });
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(options)
        .arg("-c")
        .arg(RUNNER)
        .current_dir(root)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("DEVRUN_PRELOAD_SOCKET", socket)
        .env("DEVRUN_PRELOAD_SPEC", spec.to_string())
        .env("DEVRUN_PRELOAD_PARENT", std::process::id().to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    crate::sys::spawn_group(cmd, None).map(|(child, _group)| child)
}

/// The socket's file is only needed until the preloader connected.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fresh socket path, short enough for a Unix socket address.
fn socket_path() -> io::Result<PathBuf> {
    let id = crate::state::random_id()?;
    Ok(std::env::temp_dir().join(format!("devrun-preload-{}.sock", &id[..id.len().min(16)])))
}

/// The loaded modules whose files the watch filter wants, said with the first one's file and
/// the preload that imported it.
fn project_module(loaded: &[Value], is_project: &dyn Fn(&Path) -> bool) -> Option<String> {
    let found: Vec<(&str, &str, &str)> = loaded
        .iter()
        .filter_map(|entry| Some((entry[0].as_str()?, entry[1].as_str()?, entry[2].as_str()?)))
        .filter(|(_, file, _)| is_project(Path::new(file)))
        .collect();
    let (_, file, by) = *found.first()?;
    let mut names: Vec<&str> = found.iter().map(|(name, _, _)| *name).collect();
    names.sort_unstable();
    let by = match by {
        "" => "the interpreter's start (a .pth file or sitecustomize?)".to_string(),
        by => format!("preloading {by}"),
    };
    Some(format!(
        "project code was imported by {by}: {} ({file}{})",
        names.join(", "),
        if names.len() > 1 { ", …" } else { "" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn reads_module_and_script_commands() {
        let cwd = Path::new("/");
        let m = launch(
            &words(".venv/bin/python3.12 -u -X dev -m uvicorn app:app"),
            cwd,
        )
        .unwrap();
        assert_eq!(m.interpreter, words(".venv/bin/python3.12 -u -X dev"));
        assert_eq!(m.module.as_deref(), Some("uvicorn"));
        assert_eq!(m.args, words("app:app"));
        let s = launch(&words("python server.py --port 1"), cwd).unwrap();
        assert_eq!(s.script.as_deref(), Some("server.py"));
        assert_eq!(s.args, words("--port 1"));
        assert!(launch(&words("python -c pass"), cwd).is_err());
        assert!(launch(&words("node server.js"), cwd).is_err());
    }
}
