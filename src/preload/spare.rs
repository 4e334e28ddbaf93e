//! A warm spare (`preload_method = "spare"`): a fresh interpreter, started with the command's
//! interpreter and the backend's base environment as a generation of its own process group
//! (devrun's run marker, its stdio pipes as a cold start's), that runs the runner in spare mode:
//! it imports the third-party modules (with the same proofs as the preloader's), says `loaded`
//! and waits, holding no socket and serving nothing. When the next generation is due (the old
//! one gone, the port free) it is told to run the command with that generation's variables; it
//! imports project code only then, and *is* the generation from there on.

use super::preloader::{
    handshake, next_reply, private_socket, runner_command, send_with_fds, NotReady, RemoveOnDrop,
    Replies,
};
use super::protocol::{Reply, Request};
use super::Settings;
use crate::output::Label;
use crate::process::{Backend, StopSignal};
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;

/// A spare answers a run request at once; this only bounds one that hangs.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// A started spare: importing, or ready and waiting for its run request. Never dropped
/// running: [`Spare::discard`] or [`Spare::run`] end it or make it the generation.
pub struct Spare {
    backend: Backend,
    /// Kills its group if it is dropped unfinished (a shutdown while it was being run).
    guard: GroupGuard,
    listener: UnixListener,
    _remove: RemoveOnDrop,
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
        let (listener, path, remove) = private_socket()?;
        let (command, runner_env) = runner_command(settings, &path, true)?;
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
            listener,
            _remove: remove,
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
    /// as fd 3 in inherit mode). Anything but [`Ran::Backend`] leaves it ended.
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
            accepted = tokio::time::timeout(timeout, self.listener.accept()) => accepted,
            _ = self.backend.exited() => return Ok(None),
        };
        let accepted = accepted.map_err(|_| {
            Ran::Failed(format!(
                "the spare was not ready within {} ms",
                timeout.as_millis()
            ))
        })?;
        let (reader, mut writer) = accepted.map_err(|e| failed(&e))?.0.into_split();
        let mut lines: Replies = BufReader::new(reader).lines();
        let deadline = tokio::time::Instant::now() + timeout;
        let loaded = handshake(&mut lines, deadline).await.map_err(|e| match e {
            NotReady::Unforkable(reason) | NotReady::Failed(reason) => Ran::Failed(reason),
        })?;
        if let Some(reason) = loaded.project_code(is_project) {
            return Err(Ran::Refused(reason));
        }
        let held: Option<OwnedFd> = match listener {
            Some(socket) => Some(
                socket
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|e| failed(&e))?,
            ),
            None => None,
        };
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
        let fds: Vec<RawFd> = held.iter().map(|fd| fd.as_raw_fd()).collect();
        self.backend.started_running(Instant::now());
        send_with_fds(&mut writer, line.as_bytes(), &fds)
            .await
            .map_err(|e| failed(&e))?;
        drop(held);
        let deadline = tokio::time::Instant::now() + RUN_TIMEOUT;
        match next_reply(&mut lines, deadline)
            .await
            .map_err(Ran::Failed)?
        {
            Reply::Running { pid } if pid == self.backend.pid() => {
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
}

/// A spare's group, killed if the spare is dropped before it was discarded or became the
/// generation (the future running it was cancelled): it must never serve unowned.
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
            if let Ok(pgid) = i32::try_from(self.pgid) {
                let group = nix::unistd::Pid::from_raw(pgid);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            crate::sys::set_helper(self.pgid, false);
        }
    }
}
