//! `devrun.toml` + command-line flags → one validated configuration, in two layers:
//!
//! - [`ProjectConfig`]: which project (root, state folder), where it serves (host, port) and how
//!   long stopping may take. It loads without a command, so `devrun status`, `stop` and `restart`
//!   use it alone.
//! - [`Config`]: the run on top of it (command, watch, readiness, env, socket, run options), what
//!   the supervisor runs with. It derefs to its project config.
//!
//! Each setting is derived in its own function from the flags and the file (flags win), the way
//! ripgrep turns its low-level flags into high-level settings. Errors point at the file, line
//! and column of the offending text (toml's spans).

use crate::cli::{describe_limit, ProjectArgs, RunArgs, MAX_DEBOUNCE, MAX_TIMEOUT};
use crate::error::ConfigError;
use crate::fast_stop::FastStop;
use crate::preload::{self, Method, Preload};
use crate::process::StopSignal;
use crate::state::StateDir;
// `[watch]` settings live with the watch that consumes them; named here too, as before.
pub use crate::watch::{PollMode, WatchConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

mod file;
mod kept_ports;
mod run;
mod stack;

use file::*;
use run::*;

pub use stack::BACKEND;

pub const CONFIG_FILE: &str = "devrun.toml";
pub const PYPROJECT_FILE: &str = "pyproject.toml";
pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_INCLUDE: &str = "**/*.py";
const DEFAULT_DEBOUNCE_MS: u64 = 50;
const DEFAULT_POLL_MS: u64 = 500;
/// A slower poll would make a save feel ignored.
const MAX_POLL: Duration = Duration::from_secs(10);
const DEFAULT_STOP_TIMEOUT_MS: u64 = 5000;
const DEFAULT_PORT_TIMEOUT_MS: u64 = 5000;
const DEFAULT_READY_TIMEOUT_MS: u64 = 30000;
/// Beyond its stop and port timeouts, how long a devrun asked to stop may take to exit.
const DEVRUN_EXIT_MARGIN: Duration = Duration::from_secs(5);

/// The project layer: enough to find, ask, stop or report on the devrun of a project.
#[derive(Debug, Clone)]
pub struct ProjectConfig {
    /// The file it came from, if any (for status lines and errors).
    pub source: Option<PathBuf>,
    /// The config file's folder (or the current folder): the backend's cwd, the base of
    /// relative paths, and where `.devrun/` lives.
    pub root: PathBuf,
    pub host: String,
    pub port: u16,
    pub stop: StopConfig,
    /// What loading it picked that the run says once at start (a new `port = "auto"`).
    pub notes: Vec<String>,
}

/// The validated configuration the supervisor runs with: the project plus the run. Paths are
/// absolute.
#[derive(Debug, Clone)]
pub struct Config {
    pub project: ProjectConfig,
    pub command: Vec<String>,
    /// The backend's working folder (`cwd`; default the root). Absolute.
    pub cwd: PathBuf,
    pub watch: WatchConfig,
    /// `[watch] reload_only`: globs (relative to the root) of files whose changes the running
    /// generation serves by dropping its template caches, without a restart.
    pub reload_only: Vec<String>,
    pub ready: ReadyConfig,
    /// `[env]`, added to the backend's environment.
    pub env: BTreeMap<String, String>,
    /// `env_file` / `--env-file` (absolute; checked readable and parsable at load): its
    /// variables go between devrun's own environment and `[env]`.
    pub env_file: Option<PathBuf>,
    /// `[server] socket = "inherit"`: devrun binds the port once and hands the listening socket
    /// to every generation as fd 3 (`{fd}` in the command, and LISTEN_FDS/LISTEN_PID); on
    /// Windows as an inherited handle its bootstrap gives uvicorn (`{fd}`: the handle value).
    pub inherit_socket: bool,
    /// `[server] preload` / `--preload`: fork each generation from a preloaded interpreter
    /// (the command already read as the Python launch it is).
    pub preload: Option<preload::Settings>,
    /// The command is a Python launch: generations run through devrun's bootstrap, which
    /// reports their imports and, with `[stop] fast` (on unless `--no-fast-stop`) when the
    /// command runs uvicorn, makes uvicorn's stop event-driven.
    pub fast_stop: Option<FastStop>,
    pub options: RunOptions,
    /// `[processes.NAME]` tables: the stack's other members, in a valid start order (each after
    /// those it names in `after`), filtered by `--only`.
    pub processes: Vec<Member>,
    /// False when `--only` names members but not `backend`: the backend is not run.
    pub run_backend: bool,
}

/// One supervised process: the backend (from the top-level keys, named `backend`) or a member
/// of the stack (`[processes.NAME]`). [`Config::members`] gives them all in one list.
#[derive(Debug, Clone)]
pub struct Member {
    /// `backend`, or a `[processes.NAME]`'s `[a-z0-9][a-z0-9_-]*` (never `backend`).
    pub name: String,
    /// `{port}`, `{host}` and `{ports.NAME}` already filled.
    pub command: Vec<String>,
    /// Absolute: the `cwd` key resolved against the project root; default the root.
    pub cwd: PathBuf,
    /// `port = N`, or `port = "auto"` (a free port picked once per run, at load).
    pub port: Option<u16>,
    /// Placeholders already filled.
    pub env: BTreeMap<String, String>,
    /// Members it starts after (once they are ready).
    pub after: Vec<String>,
    pub watch: ProcessWatch,
    pub ready: ReadyConfig,
    pub restart: RestartPolicy,
    /// Members whose restart also restarts this one.
    pub restart_with: Vec<String>,
    /// What only the top-level keys give today (the backend's), kept apart so any member can
    /// get them by a config change.
    pub extras: Extras,
}

impl Member {
    /// The backend: the top-level keys' process (messages name it differently).
    pub fn is_backend(&self) -> bool {
        self.name == BACKEND
    }
}

/// A member's optional extras: the backend has them from the top-level keys.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// `env_file`: its variables go between devrun's own environment and `env`; re-read for
    /// every generation (the watch restarts for its edits).
    pub env_file: Option<PathBuf>,
    /// `[server] preload`: generations are forked from a preloaded interpreter.
    pub preload: Option<preload::Settings>,
    /// `[server] socket = "inherit"`: devrun holds the listening socket and hands it over.
    pub inherit_socket: bool,
    /// A Python launch: its generations run through devrun's bootstrap (see `fast_stop`).
    pub fast_stop: Option<FastStop>,
    /// Lines typed in devrun's terminal go to its stdin (`rs` restarts).
    pub typed: bool,
}

/// What restarts a member besides `devrun restart`, `rs`, and its restart policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProcessWatch {
    /// Nothing (the default).
    #[default]
    None,
    /// `watch = "backend"`: whenever a change restarts the backend (its watch filter).
    Backend,
    /// `watch = [paths]`: a change to one of these files, or under one of these folders
    /// (absolute, resolved against the project root).
    Paths(Vec<PathBuf>),
}

/// `restart = "never" | "on-failure"`: what follows an exit on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Reported; it waits for its next change (as the backend does).
    #[default]
    Never,
    /// A failing exit (non-zero status or a signal) restarts it after a backoff (1 s doubling
    /// to 30 s).
    OnFailure,
}

/// What this run may do beyond supervising (flags only: they have no key in the file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// `--once`: start, wait until ready, health check, tear down, confirm the port is free.
    pub once: bool,
    /// `--replace`: stop the devrun already running this project and take over.
    pub replace: bool,
    /// `--kill-port-holder`: end a process devrun did not start that holds the port.
    pub kill_port_holder: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopConfig {
    pub signal: StopSignal,
    pub timeout: Duration,
    pub port_timeout: Duration,
}

impl Default for StopConfig {
    fn default() -> Self {
        StopConfig {
            signal: StopSignal::default(),
            timeout: Duration::from_millis(DEFAULT_STOP_TIMEOUT_MS),
            port_timeout: Duration::from_millis(DEFAULT_PORT_TIMEOUT_MS),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReadyConfig {
    /// GET this path must answer 2xx; without it, ready = the port accepts a connection.
    pub http: Option<String>,
    pub timeout: Duration,
}

/// The flags that bear on the project layer. `status`, `stop` and `restart` only name the file;
/// a run may set them all.
#[derive(Debug, Clone, Default)]
pub struct ProjectFlags {
    pub config: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<Duration>,
    pub port_timeout: Option<Duration>,
}

impl From<&RunArgs> for ProjectFlags {
    fn from(args: &RunArgs) -> Self {
        ProjectFlags {
            config: args.config.clone(),
            host: args.host.clone(),
            port: args.port,
            stop_signal: args.stop_signal.clone(),
            stop_timeout: args.stop_timeout,
            port_timeout: args.port_timeout,
        }
    }
}

impl From<&ProjectArgs> for ProjectFlags {
    fn from(args: &ProjectArgs) -> Self {
        ProjectFlags {
            config: args.config.clone(),
            ..ProjectFlags::default()
        }
    }
}

impl ProjectConfig {
    /// The project's config file with no command needed (`status`, `stop`, `restart`):
    /// Ok(None) when there is no config file.
    pub fn load(args: &ProjectArgs) -> Result<Option<ProjectConfig>, ConfigError> {
        let inputs = Inputs::read(args.config.as_deref())?;
        if inputs.source.is_none() {
            return Ok(None);
        }
        // The port may be said only in the file's command; a command that does not parse is
        // the run's error to report, not this one's.
        let command = match &inputs.file.command {
            Some(value) => command_from_value(value.get_ref()).unwrap_or_default(),
            None => Vec::new(),
        };
        Self::derive(&inputs, &ProjectFlags::from(args), &command).map(Some)
    }

    /// What a devrun recorded in `.devrun/state.json`, with default timeouts: a project
    /// without a config file that a devrun ran in (given by flags).
    pub fn recorded(root: &Path, host: &str, port: u16) -> ProjectConfig {
        ProjectConfig {
            source: None,
            root: root.to_path_buf(),
            host: host.to_string(),
            port,
            stop: StopConfig::default(),
            notes: Vec::new(),
        }
    }

    /// `command` is the backend's command before placeholders: `--port N` in it names the port.
    fn derive(
        inputs: &Inputs,
        flags: &ProjectFlags,
        command: &[String],
    ) -> Result<ProjectConfig, ConfigError> {
        let host = derive_host(inputs, flags);
        check_host_resolves(inputs, flags, &host, 1)?;
        let (port, note) = derive_port(inputs, flags, command, &host)?;
        Ok(ProjectConfig {
            source: inputs.source.as_ref().map(|s| s.path.clone()),
            root: inputs.root(),
            host,
            port,
            stop: derive_stop(inputs, flags)?,
            notes: note.into_iter().collect(),
        })
    }

    /// The project's `.devrun/` folder.
    pub fn state_dir(&self) -> StateDir {
        StateDir::new(&self.root)
    }

    /// How long a devrun asked to stop (`devrun stop`, `--replace`) may take to finish its
    /// teardown and exit before it is killed.
    pub fn devrun_exit_timeout(&self) -> Duration {
        self.stop.timeout + self.stop.port_timeout + DEVRUN_EXIT_MARGIN
    }

    /// The config file's name as the user would write it, for status lines.
    pub fn source_name(&self) -> String {
        match &self.source {
            Some(path) => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| path.display().to_string());
                if name == PYPROJECT_FILE {
                    format!("{name} [tool.devrun]")
                } else {
                    name
                }
            }
            None => "command line".to_string(),
        }
    }
}

impl Config {
    /// Every process this run supervises, in start order: the backend first (when run), then
    /// the `[processes.NAME]` (each after those it names in `after`).
    pub fn members(&self) -> Vec<Member> {
        let backend = self.run_backend.then(|| Member {
            name: BACKEND.to_string(),
            command: self.command.clone(),
            cwd: self.cwd.clone(),
            port: Some(self.port),
            env: self.env.clone(),
            after: Vec::new(),
            watch: ProcessWatch::Backend,
            ready: self.ready.clone(),
            restart: RestartPolicy::Never,
            restart_with: Vec::new(),
            extras: Extras {
                env_file: self.env_file.clone(),
                preload: self.preload.clone(),
                inherit_socket: self.inherit_socket,
                fast_stop: self.fast_stop.clone(),
                typed: true,
            },
        });
        backend
            .into_iter()
            .chain(self.processes.iter().cloned())
            .collect()
    }

    /// Reads the config file (`--config`, else `devrun.toml` in the current folder, else
    /// `[tool.devrun]` of `pyproject.toml` there) and applies the flags on top.
    pub fn load(args: &RunArgs) -> Result<Config, ConfigError> {
        Self::derive(&Inputs::read(args.config.as_deref())?, args)
    }

    fn derive(inputs: &Inputs, args: &RunArgs) -> Result<Config, ConfigError> {
        let inherit_socket = derive_inherit_socket(inputs)?;
        let command = derive_command(inputs, args)?;
        let mut project = ProjectConfig::derive(inputs, &ProjectFlags::from(args), &command)?;
        let mut stack = stack::Stack::derive(inputs, args, &project)?;
        project.notes.append(&mut stack.notes);
        let command = stack.fill_backend_command(inputs, args, command)?;
        let mut watch = derive_watch(inputs, args, &project.root)?;
        let env_file = derive_env_file(inputs, args, &project.root)?;
        watch.also.extend(env_file.clone());
        let cwd = derive_backend_cwd(inputs, &project.root)?;
        let imports = derive_preload(inputs, args)?;
        let method = derive_preload_method(inputs, cfg!(target_os = "linux"))?;
        let ready = derive_ready(inputs, args)?;
        let preload = imports
            .map(|imports| {
                preload::Settings::new(
                    (imports, method),
                    &command,
                    &cwd,
                    inherit_socket,
                    ready.timeout,
                )
            })
            .transpose()
            .map_err(|m| inputs.err(None, m))?;
        let fast_stop = derive_fast_stop(inputs, args, &command, &cwd);
        check_inherit_socket(inputs, inherit_socket, fast_stop.as_ref(), cfg!(windows))?;
        Ok(Config {
            command,
            cwd,
            fast_stop,
            watch,
            reload_only: derive_reload_only(inputs)?,
            ready,
            env: derive_env(inputs, &stack)?,
            env_file,
            preload,
            inherit_socket,
            options: RunOptions {
                once: args.once,
                replace: args.replace,
                kill_port_holder: args.kill_port_holder,
            },
            project,
            processes: stack.processes,
            run_backend: stack.run_backend,
        })
    }
}

/// A run config is read as its project config too (`config.port`, `config.root`, ...).
impl std::ops::Deref for Config {
    type Target = ProjectConfig;

    fn deref(&self) -> &ProjectConfig {
        &self.project
    }
}

// ---- the project layer's settings ----

fn derive_host(inputs: &Inputs, flags: &ProjectFlags) -> String {
    match (&flags.host, &inputs.file.host) {
        (Some(host), _) => host.clone(),
        (None, Some(host)) => host.get_ref().clone(),
        (None, None) => DEFAULT_HOST.to_string(),
    }
}

/// Flag, else `port` (a number, or `"auto"`: kept per checkout, see `kept_ports`), else
/// `--port N` in the command: devrun must know it. With it, what to say about an auto pick.
fn derive_port(
    inputs: &Inputs,
    flags: &ProjectFlags,
    command: &[String],
    host: &str,
) -> Result<(u16, Option<String>), ConfigError> {
    let from_file = match (&flags.port, &inputs.file.port) {
        (None, Some(value)) => {
            let at = Some(value.span().start);
            match value.get_ref() {
                toml::Value::String(s) if s == "auto" => {
                    let picked = kept_ports::pick(&inputs.root(), BACKEND, host, &[])
                        .map_err(|e| inputs.err(at, format!("port = \"auto\": {e}")))?;
                    return Ok((picked.port, picked.note));
                }
                toml::Value::Integer(n) => match u16::try_from(*n) {
                    Ok(port) if port > 0 => Some(port),
                    _ => None,
                },
                _ => None,
            }
            .map(Some)
            .ok_or_else(|| {
                inputs.err(
                    at,
                    format!(
                        "port must be a port number (1-65535) or \"auto\", found {}",
                        value.get_ref()
                    ),
                )
            })?
        }
        _ => None,
    };
    match flags
        .port
        .or(from_file)
        .or_else(|| port_in_command(command))
    {
        Some(port) if port > 0 => Ok((port, None)),
        _ => Err(inputs.err(
            None,
            "no port: set `port` in devrun.toml or pass --port (devrun must know which port the \
             backend serves to confirm it is released)",
        )),
    }
}

/// A host that does not resolve is a typo to fix, not a port someone holds.
fn check_host_resolves(
    inputs: &Inputs,
    flags: &ProjectFlags,
    host: &str,
    port: u16,
) -> Result<(), ConfigError> {
    let Err(e) = crate::port::resolve(host, port) else {
        return Ok(());
    };
    let why = format!("host {host:?} does not resolve ({e})");
    Err(match (&flags.host, &inputs.file.host) {
        (Some(_), _) => ConfigError::plain(format!("--host: {why}")),
        (None, Some(spanned)) => inputs.err(Some(spanned.span().start), format!("`host`: {why}")),
        (None, None) => ConfigError::plain(why),
    })
}

fn derive_stop(inputs: &Inputs, flags: &ProjectFlags) -> Result<StopConfig, ConfigError> {
    let stop = &inputs.file.stop;
    let signal = match (&flags.stop_signal, &stop.signal) {
        (Some(name), _) => StopSignal::parse(name)
            .map_err(|m| ConfigError::plain(format!("--stop-signal: {m}")))?,
        (None, Some(name)) => StopSignal::parse(name.get_ref())
            .map_err(|m| inputs.err(Some(name.span().start), format!("[stop] signal: {m}")))?,
        (None, None) => StopSignal::default(),
    };
    let timeout = match flags.stop_timeout {
        Some(timeout) => timeout,
        None => inputs.millis(
            "[stop] timeout_ms",
            &stop.timeout_ms,
            DEFAULT_STOP_TIMEOUT_MS,
            MAX_TIMEOUT,
        )?,
    };
    let port_timeout = match flags.port_timeout {
        Some(timeout) => timeout,
        None => inputs.millis(
            "[stop] port_timeout_ms",
            &stop.port_timeout_ms,
            DEFAULT_PORT_TIMEOUT_MS,
            MAX_TIMEOUT,
        )?,
    };
    Ok(StopConfig {
        signal,
        timeout,
        port_timeout,
    })
}

#[cfg(test)]
mod tests;
