//! A warm spare (`preload_method = "spare"`; the only method off Linux): a fresh interpreter,
//! started with the command's interpreter and the backend's base environment as a generation
//! of its own process group or job (devrun's run marker, its stdio pipes as a cold start's),
//! that runs the runner in spare mode: it imports the third-party modules (with the same proofs
//! as the preloader's), says `loaded` and waits, holding no socket and serving nothing. When
//! the next generation is due (the old one gone, the port free) it is told to run the command
//! with that generation's variables; it imports project code only then, and *is* the generation
//! from there on.
//!
//! The held socket (`socket = "inherit"`) reaches it only with that request: on Unix as fd 3
//! (SCM_RIGHTS), on Windows duplicated for the interpreter's pid (`WSADuplicateSocketW`) and
//! named in the request's environment, for the bootstrap's `socket.fromshare`.

use super::channel::{self, Connection, Listening, RemoveOnDrop};
use super::protocol::{Reply, Request};
use super::runner::{handshake, next_reply, runner_command, NotReady};
use super::Settings;
use crate::output::Label;
use crate::process::{Backend, StopSignal};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// A spare answers a run request at once; this only bounds one that hangs.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// Windows: the variable of the run request's environment that carries the held socket, as
/// the hex of the WSAPROTOCOL_INFOW duplicated for the spare (bootstrap.py reads it).
#[cfg_attr(unix, allow(dead_code))]
const HELD_SOCKET_SHARE: &str = "DEVRUN_HELD_SOCKET_SHARE";

/// A started spare: importing, or ready and waiting for its run request. Never dropped
/// running: [`Spare::discard`] or [`Spare::run`] end it or make it the generation.
pub struct Spare {
    backend: Backend,
    /// Kills its group if it is dropped unfinished (a shutdown while it was being run).
    guard: GroupGuard,
    listening: Listening,
    /// Windows: the folder holding the runner's script.
    _written: Option<RemoveOnDrop>,
    /// The base environment it started with: the next generation's must be the same.
    pub env: Vec<(String, String)>,
}

/// What asking a spare to run gave.
pub enum Ran {
    /// It runs the command: the generation, with how many modules it preloaded and the
    /// modules it could not import.
    Backend(Box<Backend>, usize, Vec<(String, String)>),
    /// A file it loaded changed: it exited unused.
    Stale(String),
    /// It holds project code: no spare of this command can serve (preload off).
    Refused(String),
    /// It exited, was late or broke the protocol: it was ended.
    Failed(String),
}

impl Spare {
    /// Starts a spare with `env` (the backend's base environment); `label` is the backend's
    /// output prefix in a stack. It imports in the background: [`Spare::run`] waits for it.
    pub fn start(
        settings: &Settings,
        env: &[(String, String)],
        label: Option<Label>,
    ) -> io::Result<Spare> {
        let listening = Listening::new()?;
        let (command, runner_env, written) = runner_command(settings, &listening.env, true)?;
        let mut all = env.to_vec();
        all.extend(runner_env);
        let backend = Backend::spawn(&command, &settings.root, &all, None, label)?;
        crate::sys::set_helper(backend.pgid(), true);
        Ok(Spare {
            guard: GroupGuard {
                pgid: backend.pgid(),
                armed: true,
            },
            backend,
            listening,
            _written: written,
            env: env.to_vec(),
        })
    }

    /// Whether it still runs (it exits on its own only when it fails).
    pub fn alive(&mut self) -> bool {
        self.backend.alive()
    }

    /// Ends its whole group and waits until it is gone.
    pub async fn discard(mut self) {
        let _ = self
            .backend
            .stop(StopSignal::Kill, Duration::ZERO, &mut || true)
            .await;
        self.guard.disarm();
    }

    /// Waits (up to the start timeout) until it imported its modules, checks that none is
    /// project code, and tells it to run the command with exactly `env` (and the held socket
    /// in inherit mode). Anything but [`Ran::Backend`] leaves it ended.
    pub async fn run(
        mut self,
        settings: &Settings,
        is_project: &dyn Fn(&Path) -> bool,
        env: &BTreeMap<String, String>,
        listener: Option<&socket2::Socket>,
    ) -> Ran {
        match self.talk(settings, is_project, env, listener).await {
            Ok(Some((imported, skipped))) => {
                // A generation from now on: what it starts outside its group is its escapee.
                self.guard.disarm();
                Ran::Backend(Box::new(self.backend), imported, skipped)
            }
            Ok(None) => {
                self.discard().await;
                Ran::Failed("the spare exited".into())
            }
            Err(ran) => {
                self.discard().await;
                ran
            }
        }
    }

    /// [`Spare::run`]'s conversation: Ok(None) when it exited before it connected.
    async fn talk(
        &mut self,
        settings: &Settings,
        is_project: &dyn Fn(&Path) -> bool,
        env: &BTreeMap<String, String>,
        listener: Option<&socket2::Socket>,
    ) -> Result<Option<(usize, Vec<(String, String)>)>, Ran> {
        let failed = |e: &dyn std::fmt::Display| Ran::Failed(e.to_string());
        let timeout = settings.start_timeout;
        let accepted = tokio::select! {
            biased;
            accepted = tokio::time::timeout(timeout, self.listening.accept()) => accepted,
            _ = self.backend.exited() => return Ok(None),
        };
        let accepted = accepted.map_err(|_| {
            Ran::Failed(format!(
                "the spare was not ready within {} ms",
                timeout.as_millis()
            ))
        })?;
        let mut connection = accepted.map_err(|e| failed(&e))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let loaded = handshake(&mut connection.lines, deadline)
            .await
            .map_err(|e| match e {
                NotReady::Unforkable(reason) | NotReady::Failed(reason) => Ran::Failed(reason),
            })?;
        if let Some(reason) = loaded.project_code(is_project) {
            return Err(Ran::Refused(reason));
        }
        self.send_run(&mut connection, settings, env, listener)
            .await?;
        let deadline = tokio::time::Instant::now() + RUN_TIMEOUT;
        match next_reply(&mut connection.lines, deadline)
            .await
            .map_err(Ran::Failed)?
        {
            Reply::Running { pid } if self.is_the_spare(pid, connection.peer) => {
                Ok(Some((loaded.imported, loaded.skipped)))
            }
            Reply::Running { pid } => Err(Ran::Failed(format!(
                "the spare {} said it is pid {pid}",
                self.backend.pid()
            ))),
            Reply::Stale { file } => Err(Ran::Stale(file)),
            other => Err(failed(&other.out_of_turn("`running` or `stale`"))),
        }
    }

    /// Sends the run request: the command, `env`, and in inherit mode the held socket (Unix:
    /// fd 3 with the line; Windows: duplicated for the interpreter that opened the channel,
    /// once it is proven to be of the spare's job).
    async fn send_run(
        &mut self,
        connection: &mut Connection,
        settings: &Settings,
        env: &BTreeMap<String, String>,
        listener: Option<&socket2::Socket>,
    ) -> Result<(), Ran> {
        let failed = |e: &dyn std::fmt::Display| Ran::Failed(e.to_string());
        #[cfg(unix)]
        let held = {
            use std::os::fd::AsFd;
            listener
                .map(|socket| socket.as_fd().try_clone_to_owned())
                .transpose()
                .map_err(|e| failed(&e))?
        };
        // Windows: no descriptor travels on a pipe; the socket goes in the environment.
        #[cfg(windows)]
        let held: Option<()> = None;
        #[cfg(windows)]
        let with_socket = self.socket_env(connection, env, listener)?;
        #[cfg(windows)]
        let env = with_socket.as_ref().unwrap_or(env);
        let request = Request::Run {
            env,
            cwd: &settings.root,
            module: settings.launch.module.as_deref(),
            script: settings.launch.script.as_deref(),
            args: &settings.launch.args,
            fds: held.iter().map(|_| crate::process::INHERITED_FD).collect(),
            title: &settings.title,
        };
        let line = request.line().map_err(|e| failed(&e))?;
        self.backend.started_running(Instant::now());
        #[cfg(unix)]
        let sent = {
            use std::os::fd::AsRawFd;
            let fds: Vec<std::os::fd::RawFd> = held.iter().map(|fd| fd.as_raw_fd()).collect();
            channel::send_with_fds(&mut connection.writer, line.as_bytes(), &fds).await
        };
        #[cfg(windows)]
        let sent = channel::send(&mut connection.writer, line.as_bytes()).await;
        sent.map_err(|e| failed(&e))
    }

    /// Windows, inherit mode: `env` with the held socket duplicated for the interpreter that
    /// opened the channel, once that is proven to be of the spare's job.
    #[cfg(windows)]
    fn socket_env(
        &self,
        connection: &Connection,
        env: &BTreeMap<String, String>,
        listener: Option<&socket2::Socket>,
    ) -> Result<Option<BTreeMap<String, String>>, Ran> {
        let Some(socket) = listener else {
            return Ok(None);
        };
        let pid = connection
            .peer
            .filter(|pid| self.is_the_spare(*pid, connection.peer))
            .ok_or_else(|| {
                Ran::Failed(format!(
                    "the process on the spare's pipe ({}) is not of the spare's job (pid {})",
                    connection
                        .peer
                        .map_or("unknown".to_string(), |p| format!("pid {p}")),
                    self.backend.pid()
                ))
            })?;
        let info = crate::sys::share_socket(socket, pid)
            .map_err(|e| Ran::Failed(format!("cannot hand the socket to the spare: {e}")))?;
        let mut env = env.clone();
        env.insert(HELD_SOCKET_SHARE.into(), hex(&info));
        Ok(Some(env))
    }

    /// Whether `pid`, which says it runs the command, is the spare: the process devrun
    /// started (Unix), or the interpreter that opened the channel inside the spare's job
    /// (Windows, where `python.exe` may be a venv's launcher).
    fn is_the_spare(&self, pid: u32, _peer: Option<u32>) -> bool {
        if pid == self.backend.pid() {
            return true;
        }
        #[cfg(windows)]
        return _peer == Some(pid) && self.backend.holds(pid);
        #[cfg(unix)]
        false
    }
}

/// `bytes` as lowercase hex (Python's `bytes.fromhex` reads it).
#[cfg_attr(unix, allow(dead_code))]
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A spare's group, killed if the spare is dropped before it was discarded or became the
/// generation (the future running it was cancelled): it must never serve unowned. (On
/// Windows its job dies when the dropped spare's handle to it closes.)
struct GroupGuard {
    pgid: u32,
    armed: bool,
}

impl GroupGuard {
    /// The spare is gone or is a generation: no longer a helper, nothing to kill.
    fn disarm(&mut self) {
        self.armed = false;
        crate::sys::set_helper(self.pgid, false);
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            #[cfg(unix)]
            if let Ok(pgid) = i32::try_from(self.pgid) {
                let group = nix::unistd::Pid::from_raw(pgid);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            crate::sys::set_helper(self.pgid, false);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_what_python_fromhex_reads() {
        assert_eq!(super::hex(&[0, 1, 0xab, 0xff]), "0001abff");
    }
}
