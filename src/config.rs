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
use crate::preload::{self, Preload};
use crate::process::StopSignal;
use crate::state::StateDir;
// `[watch]` settings live with the watch that consumes them; named here too, as before.
pub use crate::watch::{PollMode, WatchConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

mod stack;

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
}

/// The validated configuration the supervisor runs with: the project plus the run. Paths are
/// absolute.
#[derive(Debug, Clone)]
pub struct Config {
    pub project: ProjectConfig,
    pub command: Vec<String>,
    pub watch: WatchConfig,
    pub ready: ReadyConfig,
    /// `[env]`, added to the backend's environment.
    pub env: BTreeMap<String, String>,
    /// `env_file` / `--env-file` (absolute; checked readable and parsable at load): its
    /// variables go between devrun's own environment and `[env]`.
    pub env_file: Option<PathBuf>,
    /// `[server] socket = "inherit"`: devrun binds the port once and hands the listening socket
    /// to every generation as fd 3 (`{fd}` in the command, and LISTEN_FDS/LISTEN_PID).
    pub inherit_socket: bool,
    /// `[server] preload` / `--preload`: fork each generation from a preloaded interpreter
    /// (the command already read as the Python launch it is).
    pub preload: Option<preload::Settings>,
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

// ---- the file's shape: every key the README documents, nothing else ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    command: Option<Spanned<toml::Value>>,
    port: Option<u16>,
    host: Option<Spanned<String>>,
    env_file: Option<Spanned<String>>,
    #[serde(default)]
    watch: FileWatch,
    #[serde(default)]
    stop: FileStop,
    #[serde(default)]
    ready: FileReady,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    server: FileServer,
    /// `[processes.NAME]`: the stack's other members (see `stack`).
    #[serde(default)]
    processes: BTreeMap<Spanned<String>, stack::FileProcess>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWatch {
    paths: Option<Vec<String>>,
    include: Option<Vec<Spanned<String>>>,
    ignore: Option<Vec<Spanned<String>>>,
    gitignore: Option<bool>,
    debounce_ms: Option<Spanned<u64>>,
    poll: Option<Spanned<toml::Value>>,
    poll_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStop {
    signal: Option<Spanned<String>>,
    timeout_ms: Option<Spanned<u64>>,
    port_timeout_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileReady {
    http: Option<Spanned<String>>,
    timeout_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    socket: Option<Spanned<String>>,
    preload: Option<Spanned<toml::Value>>,
}

/// `pyproject.toml`: only `[tool.devrun]` is read (same keys, same errors); the rest is the
/// other tools' business.
#[derive(Debug, Default, Deserialize)]
struct PyProject {
    #[serde(default)]
    tool: PyProjectTools,
}

#[derive(Debug, Default, Deserialize)]
struct PyProjectTools {
    devrun: Option<FileConfig>,
}

/// A parsed file with what is needed to locate errors in it.
struct Source {
    path: PathBuf,
    display: String,
    text: String,
}

impl Source {
    fn error(&self, offset: Option<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.display, &self.text, offset, message)
    }
}

/// What the derive functions read: the file's values (all unset without a file), where its
/// errors point, and the folder relative flags start from.
struct Inputs {
    source: Option<Source>,
    file: FileConfig,
    cwd: PathBuf,
}

impl Inputs {
    /// Finds and parses the config file: `flags.config`, else `devrun.toml` in the current folder,
    /// else `[tool.devrun]` of `pyproject.toml` there. Without one, every key is unset.
    fn read(explicit: Option<&Path>) -> Result<Inputs, ConfigError> {
        let cwd = std::env::current_dir()
            .map_err(|e| ConfigError::plain(format!("cannot read the current folder: {e}")))?;
        let candidates = match explicit {
            Some(path) => vec![cwd.join(path)],
            None => vec![cwd.join(CONFIG_FILE), cwd.join(PYPROJECT_FILE)],
        };
        for path in candidates {
            if explicit.is_none() && !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::plain(format!("cannot read {}: {e}", path.display())))?;
            let source = Source {
                display: display_path(&path, &cwd),
                path,
                text,
            };
            let Some(file) = source.parse(explicit.is_some())? else {
                continue;
            };
            return Ok(Inputs {
                source: Some(source),
                file,
                cwd,
            });
        }
        Ok(Inputs {
            source: None,
            file: FileConfig::default(),
            cwd,
        })
    }

    /// An error at `offset` of the file, or a plain one without a file.
    fn err(&self, offset: Option<usize>, message: impl Into<String>) -> ConfigError {
        match &self.source {
            Some(s) => s.error(offset, message),
            None => ConfigError::plain(message),
        }
    }

    /// Where `needle` is inside the file's text at `span` (a placeholder in a string, one item
    /// of an array), else the span's start: errors point at the very text.
    fn find_in(&self, span: std::ops::Range<usize>, needle: &str) -> usize {
        self.source
            .as_ref()
            .and_then(|s| s.text.get(span.clone()))
            .and_then(|text| text.find(needle))
            .map_or(span.start, |at| span.start + at)
    }

    /// The config file's folder, or the current folder without one.
    fn root(&self) -> PathBuf {
        match &self.source {
            Some(s) => s.path.parent().unwrap_or(&self.cwd).to_path_buf(),
            None => self.cwd.clone(),
        }
    }

    /// A `*_ms` key, checked against its limit (flags were checked as they were parsed).
    fn millis(
        &self,
        key: &str,
        value: &Option<Spanned<u64>>,
        default: u64,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(Duration::from_millis(default));
        };
        let duration = Duration::from_millis(*value.get_ref());
        if duration > max {
            return Err(self.err(
                Some(value.span().start),
                format!(
                    "{key} = {} is above the limit of {}",
                    value.get_ref(),
                    describe_limit(max)
                ),
            ));
        }
        Ok(duration)
    }
}

impl Source {
    /// The devrun table of this file: None for a `pyproject.toml` without `[tool.devrun]` that
    /// was only looked at, not named.
    fn parse(&self, named: bool) -> Result<Option<FileConfig>, ConfigError> {
        let locate = |e: toml::de::Error| {
            self.error(
                e.span().map(|s| s.start),
                e.message().trim_end().to_string(),
            )
        };
        if self.path.file_name().is_some_and(|n| n == PYPROJECT_FILE) {
            let pyproject: PyProject = toml::from_str(&self.text).map_err(locate)?;
            return match pyproject.tool.devrun {
                Some(file) => Ok(Some(file)),
                None if !named => Ok(None),
                None => Err(self.error(None, "no [tool.devrun] table")),
            };
        }
        toml::from_str(&self.text).map_err(locate).map(Some)
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
        }
    }

    /// `command` is the backend's command before placeholders: `--port N` in it names the port.
    fn derive(
        inputs: &Inputs,
        flags: &ProjectFlags,
        command: &[String],
    ) -> Result<ProjectConfig, ConfigError> {
        let host = derive_host(inputs, flags);
        let port = derive_port(inputs, flags, command)?;
        check_host_resolves(inputs, flags, &host, port)?;
        Ok(ProjectConfig {
            source: inputs.source.as_ref().map(|s| s.path.clone()),
            root: inputs.root(),
            host,
            port,
            stop: derive_stop(inputs, flags)?,
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
            cwd: self.root.clone(),
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
        let project = ProjectConfig::derive(inputs, &ProjectFlags::from(args), &command)?;
        let stack = stack::Stack::derive(inputs, args, &project)?;
        let command = stack.fill_backend_command(inputs, args, command)?;
        let mut watch = derive_watch(inputs, args, &project.root)?;
        let env_file = derive_env_file(inputs, args, &project.root)?;
        watch.also.extend(env_file.clone());
        let imports = derive_preload(inputs, args)?;
        let ready = derive_ready(inputs, args)?;
        let preload = imports
            .map(|imports| {
                preload::Settings::new(
                    imports,
                    &command,
                    &project.root,
                    inherit_socket,
                    ready.timeout,
                )
            })
            .transpose()
            .map_err(|m| inputs.err(None, m))?;
        Ok(Config {
            command,
            watch,
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

/// Flag, else `port`, else `--port N` in the command: devrun must know it.
fn derive_port(
    inputs: &Inputs,
    flags: &ProjectFlags,
    command: &[String],
) -> Result<u16, ConfigError> {
    match flags
        .port
        .or(inputs.file.port)
        .or_else(|| port_in_command(command))
    {
        Some(port) if port > 0 => Ok(port),
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

// ---- the run layer's settings ----

/// `[server] socket`: "none" (the default) or "inherit" (not on Windows).
fn derive_inherit_socket(inputs: &Inputs) -> Result<bool, ConfigError> {
    let Some(socket) = &inputs.file.server.socket else {
        return Ok(false);
    };
    let at = Some(socket.span().start);
    match socket.get_ref().as_str() {
        "none" => Ok(false),
        "inherit" if cfg!(windows) => Err(inputs.err(
            at,
            "[server] socket = \"inherit\" is not supported on Windows; use \"none\"",
        )),
        "inherit" => Ok(true),
        other => Err(inputs.err(
            at,
            format!("[server] socket must be \"none\" or \"inherit\", not {other:?}"),
        )),
    }
}

/// `[server] preload`: false (the default), "auto" or a list of modules; `--preload` is "auto".
/// Linux only: fork without exec is unsafe on macOS, and Windows has no fork. The command it
/// runs is read in [`preload::Settings::new`].
fn derive_preload(inputs: &Inputs, args: &RunArgs) -> Result<Option<Preload>, ConfigError> {
    let at = inputs.file.server.preload.as_ref().map(|v| v.span().start);
    let preload = match inputs.file.server.preload.as_ref().map(|v| v.get_ref()) {
        _ if args.preload => Some(Preload::Auto),
        None | Some(toml::Value::Boolean(false)) => None,
        Some(toml::Value::Boolean(true)) => Some(Preload::Auto),
        Some(toml::Value::String(s)) if s == "auto" => Some(Preload::Auto),
        Some(toml::Value::Array(items)) => {
            let names: Option<Vec<String>> = items
                .iter()
                .map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_string))
                .collect();
            match names {
                Some(names) => Some(Preload::Modules(names)),
                None => return Err(inputs.err(at, "[server] preload lists module names (strings)")),
            }
        }
        Some(other) => {
            return Err(inputs.err(
                at,
                format!(
                    "[server] preload must be false, \"auto\" or a list of modules, not {other}"
                ),
            ))
        }
    };
    if preload.is_none() {
        return Ok(None);
    }
    if cfg!(target_os = "macos") {
        return Err(inputs.err(
            at,
            "preload is not supported on macOS: forking a process that loaded system frameworks \
             without exec is unsafe there; remove `preload` / --preload",
        ));
    }
    if !cfg!(target_os = "linux") {
        return Err(inputs.err(
            at,
            "preload is not supported on this system: it needs fork (Linux only); remove \
             `preload` / --preload",
        ));
    }
    Ok(preload)
}

/// The command: flags win; a string is split shell-style, an array is used as is.
fn derive_command(inputs: &Inputs, args: &RunArgs) -> Result<Vec<String>, ConfigError> {
    let command = if !args.command.is_empty() {
        args.command.clone()
    } else {
        match &inputs.file.command {
            None => Vec::new(),
            Some(value) => command_from_value(value.get_ref())
                .map_err(|m| inputs.err(Some(value.span().start), m))?,
        }
    };
    if command.is_empty() {
        return Err(inputs.err(
            None,
            "no command to run: set `command` in devrun.toml or pass it after `--`",
        ));
    }
    Ok(command)
}

fn derive_watch(inputs: &Inputs, args: &RunArgs, root: &Path) -> Result<WatchConfig, ConfigError> {
    let debounce = match args.debounce {
        Some(debounce) => debounce,
        None => inputs.millis(
            "[watch] debounce_ms",
            &inputs.file.watch.debounce_ms,
            DEFAULT_DEBOUNCE_MS,
            MAX_DEBOUNCE,
        )?,
    };
    Ok(WatchConfig {
        paths: derive_watch_paths(inputs, args, root)?,
        include: derive_include(inputs, args)?,
        ignore: derive_ignore(inputs, args)?,
        gitignore: inputs.file.watch.gitignore.unwrap_or(true),
        debounce,
        also: Vec::new(),
        poll: derive_poll(inputs)?,
        poll_interval: inputs.millis(
            "[watch] poll_ms",
            &inputs.file.watch.poll_ms,
            DEFAULT_POLL_MS,
            MAX_POLL,
        )?,
    })
}

fn derive_poll(inputs: &Inputs) -> Result<PollMode, ConfigError> {
    let Some(value) = &inputs.file.watch.poll else {
        return Ok(PollMode::Auto);
    };
    match value.get_ref() {
        toml::Value::Boolean(true) => Ok(PollMode::Always),
        toml::Value::Boolean(false) => Ok(PollMode::Never),
        toml::Value::String(s) if s == "auto" => Ok(PollMode::Auto),
        other => Err(inputs.err(
            Some(value.span().start),
            format!("[watch] poll must be true, false or \"auto\", found {other}"),
        )),
    }
}

/// Flags are relative to the current folder, the file's paths to its folder; all must exist.
fn derive_watch_paths(
    inputs: &Inputs,
    args: &RunArgs,
    root: &Path,
) -> Result<Vec<PathBuf>, ConfigError> {
    let paths: Vec<PathBuf> = if !args.watch.is_empty() {
        args.watch.iter().map(|p| inputs.cwd.join(p)).collect()
    } else {
        match &inputs.file.watch.paths {
            Some(paths) => paths.iter().map(|p| root.join(p)).collect(),
            None => vec![root.to_path_buf()],
        }
    };
    if let Some(missing) = paths.iter().find(|p| !p.exists()) {
        return Err(inputs.err(
            None,
            format!("watch path {} does not exist", missing.display()),
        ));
    }
    Ok(paths)
}

/// `--ext py,html` replaces `[watch] include`.
fn derive_include(inputs: &Inputs, args: &RunArgs) -> Result<Vec<String>, ConfigError> {
    if !args.ext.is_empty() {
        return args
            .ext
            .iter()
            .map(|ext| match ext.trim().trim_start_matches('.') {
                "" => Err(ConfigError::plain("--ext: empty extension")),
                ext => Ok(format!("**/*.{ext}")),
            })
            .collect();
    }
    match &inputs.file.watch.include {
        Some(globs) => {
            check_globs(inputs, globs)?;
            Ok(globs.iter().map(|g| g.get_ref().clone()).collect())
        }
        None => Ok(vec![DEFAULT_INCLUDE.to_string()]),
    }
}

/// `--ignore` adds to `[watch] ignore`.
fn derive_ignore(inputs: &Inputs, args: &RunArgs) -> Result<Vec<String>, ConfigError> {
    let mut ignore: Vec<String> = Vec::new();
    if let Some(globs) = &inputs.file.watch.ignore {
        check_globs(inputs, globs)?;
        ignore.extend(globs.iter().map(|g| g.get_ref().clone()));
    }
    for glob in &args.ignore {
        globset::Glob::new(glob)
            .map_err(|e| ConfigError::plain(format!("--ignore {glob:?}: {}", e.kind())))?;
        ignore.push(glob.clone());
    }
    Ok(ignore)
}

fn derive_ready(inputs: &Inputs, args: &RunArgs) -> Result<ReadyConfig, ConfigError> {
    let ready = &inputs.file.ready;
    let http = match (&args.ready_http, &ready.http) {
        (Some(path), _) => Some(check_http_path(path).map_err(ConfigError::plain)?),
        (None, Some(path)) => Some(
            check_http_path(path.get_ref())
                .map_err(|m| inputs.err(Some(path.span().start), format!("[ready] http: {m}")))?,
        ),
        (None, None) => None,
    };
    let timeout = match args.ready_timeout {
        Some(timeout) => timeout,
        None => inputs.millis(
            "[ready] timeout_ms",
            &ready.timeout_ms,
            DEFAULT_READY_TIMEOUT_MS,
            MAX_TIMEOUT,
        )?,
    };
    Ok(ReadyConfig { http, timeout })
}

/// `[env]`, its values' placeholders filled as in the command.
fn derive_env(
    inputs: &Inputs,
    stack: &stack::Stack,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let fill = stack.placeholders(BACKEND);
    derive_env_table(inputs, "[env]", &inputs.file.env, &fill)
}

/// An env table (`[env]`, a member's `env`): names must be valid variable names, values free
/// of NUL bytes; placeholders are filled.
fn derive_env_table(
    inputs: &Inputs,
    table: &str,
    entries: &BTreeMap<Spanned<String>, Spanned<String>>,
    fill: &stack::Placeholders,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut env = BTreeMap::new();
    for (key, value) in entries {
        let at = Some(key.span().start);
        let name = key.get_ref();
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(inputs.err(
                at,
                format!(
                    "{table} {name:?} is not a valid variable name (it must not be empty or \
                     contain `=` or a NUL byte)"
                ),
            ));
        }
        if value.get_ref().contains('\0') {
            return Err(inputs.err(
                at,
                format!("{table} {name}: the value must not contain a NUL byte"),
            ));
        }
        let what = format!("{table} {name}");
        env.insert(name.clone(), fill.fill_spanned(inputs, &what, value)?);
    }
    Ok(env)
}

/// `--env-file` (relative to the current folder) or `env_file` (relative to the config file):
/// a named file must exist and parse, so a typo is an error now, not a surprise later.
fn derive_env_file(
    inputs: &Inputs,
    args: &RunArgs,
    root: &Path,
) -> Result<Option<PathBuf>, ConfigError> {
    let (path, at) = match (&args.env_file, &inputs.file.env_file) {
        (Some(path), _) => (inputs.cwd.join(path), None),
        (None, Some(path)) => (root.join(path.get_ref()), Some(path.span().start)),
        (None, None) => return Ok(None),
    };
    let shown = display_path(&path, &inputs.cwd);
    crate::envfile::read(&path, &shown).map_err(|message| match at {
        Some(at) => inputs.err(Some(at), format!("env_file: {message}")),
        None => ConfigError::plain(format!("--env-file: {message}")),
    })?;
    Ok(Some(path))
}

fn command_from_value(value: &toml::Value) -> Result<Vec<String>, String> {
    match value {
        toml::Value::String(line) => shell_words::split(line)
            .map_err(|e| format!("`command` cannot be split into arguments: {e}")),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "`command` array items must be strings, found {}",
                    other.type_str()
                )),
            })
            .collect(),
        other => Err(format!(
            "`command` must be a string or an array of strings, found {}",
            other.type_str()
        )),
    }
}

/// `--port N` or `--port=N` in the backend's command, so the port is said once.
fn port_in_command(command: &[String]) -> Option<u16> {
    command.iter().enumerate().find_map(|(i, arg)| {
        if arg == "--port" {
            command.get(i + 1)?.parse().ok()
        } else {
            arg.strip_prefix("--port=")?.parse().ok()
        }
    })
}

fn check_globs(inputs: &Inputs, globs: &[Spanned<String>]) -> Result<(), ConfigError> {
    for glob in globs {
        globset::Glob::new(glob.get_ref()).map_err(|e| {
            inputs.err(
                Some(glob.span().start),
                format!("invalid glob {:?}: {}", glob.get_ref(), e.kind()),
            )
        })?;
    }
    Ok(())
}

fn check_http_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') && !path.contains(char::is_whitespace) {
        Ok(path.to_string())
    } else {
        Err(format!("expected a path like \"/health\", found {path:?}"))
    }
}

fn display_path(path: &Path, cwd: &Path) -> String {
    path.strip_prefix(cwd).unwrap_or(path).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, args: &RunArgs) -> Result<Config, ConfigError> {
        let source = Source {
            path: PathBuf::from("/project/devrun.toml"),
            display: "devrun.toml".into(),
            text: text.into(),
        };
        let file: FileConfig = toml::from_str(text)
            .map_err(|e| source.error(e.span().map(|s| s.start), e.message().to_string()))?;
        // Watch paths must exist: point them at this crate's folder.
        let mut args = args.clone();
        if args.watch.is_empty() {
            args.watch = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
        }
        let inputs = Inputs {
            source: Some(source),
            file,
            cwd: PathBuf::from("/"),
        };
        Config::derive(&inputs, &args)
    }

    #[test]
    fn string_command_is_split_and_port_substituted() {
        let c = load(
            "command = \"python -m uvicorn 'app.main:app' --port {port}\"\nport = 8001\n",
            &RunArgs::default(),
        )
        .unwrap();
        assert_eq!(
            c.command,
            ["python", "-m", "uvicorn", "app.main:app", "--port", "8001"]
        );
        assert_eq!(c.watch.include, [DEFAULT_INCLUDE]);
        assert_eq!(c.stop.timeout, Duration::from_millis(5000));
    }

    #[test]
    fn port_is_read_from_the_command() {
        let c = load(
            "command = [\"x\", \"--port\", \"9001\"]\n",
            &RunArgs::default(),
        )
        .unwrap();
        assert_eq!(c.port, 9001);
    }

    #[test]
    fn flags_override_the_file() {
        let args = RunArgs {
            port: Some(9),
            command: vec!["y".into()],
            ext: vec!["py".into(), ".html".into()],
            ..RunArgs::default()
        };
        let c = load("command = \"x\"\nport = 8001\n", &args).unwrap();
        assert_eq!(
            (c.port, c.command.as_slice()),
            (9, ["y".to_string()].as_slice())
        );
        assert_eq!(c.watch.include, ["**/*.py", "**/*.html"]);
    }

    #[test]
    fn unknown_key_is_located() {
        let e = load(
            "command = \"x\"\nport = 1\n[watch]\npaths = [\".\"]\nincludes = []\n",
            &RunArgs::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("devrun.toml:5:1:"), "{e}");
        assert!(e.contains("includes"), "{e}");
    }

    #[test]
    fn bad_glob_and_signal_are_located() {
        let e = load(
            "command = \"x\"\nport = 1\n[watch]\nignore = [\"a/{b\"]\n",
            &RunArgs::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("devrun.toml:4:11:"), "{e}");
        let e = load(
            "command = \"x\"\nport = 1\n[stop]\nsignal = \"SIGNOPE\"\n",
            &RunArgs::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("devrun.toml:4:10:"), "{e}");
    }

    #[test]
    fn pyproject_table_is_read_and_located() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(PYPROJECT_FILE);
        let args = RunArgs {
            config: Some(file.clone()),
            ..RunArgs::default()
        };
        std::fs::write(
            &file,
            "[project]\nname = \"x\"\n[tool.devrun]\ncommand = \"y\"\nport = 7\n",
        )
        .unwrap();
        let c = Config::load(&args).unwrap();
        assert_eq!((c.port, c.root.as_path()), (7, dir.path()));
        assert_eq!(c.source_name(), "pyproject.toml [tool.devrun]");
        std::fs::write(
            &file,
            "[tool.devrun]\ncommand = \"y\"\nport = 7\nbogus = 1\n",
        )
        .unwrap();
        let e = Config::load(&args).unwrap_err().to_string();
        assert!(e.contains("pyproject.toml:4:1:"), "{e}");
    }

    #[test]
    fn durations_above_their_limit_are_located() {
        let e = load(
            "command = \"x\"\nport = 1\n[stop]\ntimeout_ms = 18446744073709552\n",
            &RunArgs::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("devrun.toml:4:14:"), "{e}");
        assert!(
            e.contains("[stop] timeout_ms") && e.contains("86400000 ms (24 h)"),
            "{e}"
        );
        let e = load(
            "command = \"x\"\nport = 1\n[watch]\ndebounce_ms = 2001\n",
            &RunArgs::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("devrun.toml:4:15:") && e.contains("2000 ms"),
            "{e}"
        );
        let c = load(
            "command = \"x\"\nport = 1\n[watch]\ndebounce_ms = 2000\n[ready]\ntimeout_ms = 86400000\n",
            &RunArgs::default(),
        )
        .unwrap();
        assert_eq!(c.watch.debounce, MAX_DEBOUNCE);
        assert_eq!(c.ready.timeout, MAX_TIMEOUT);
    }

    #[test]
    fn bad_env_names_are_located() {
        for (key, col) in [("\"A=B\"", 1), ("\"\"", 1), ("  \"X\\u0000\"", 3)] {
            let text = format!("command = \"x\"\nport = 1\n[env]\nOK = \"1\"\n{key} = \"v\"\n");
            let e = load(&text, &RunArgs::default()).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("devrun.toml:5:{col}:")),
                "{key}: {e}"
            );
            assert!(e.contains("not a valid variable name"), "{e}");
        }
        let c = load(
            "command = \"x\"\nport = 1\n[env]\nAPP_ENV = \"a=b\"\n",
            &RunArgs::default(),
        )
        .unwrap();
        assert_eq!(c.env.get("APP_ENV").map(String::as_str), Some("a=b"));
    }

    #[test]
    fn poll_and_env_file_are_read_and_located() {
        let c = load("command = \"x\"\nport = 1\n", &RunArgs::default()).unwrap();
        assert_eq!(
            (c.watch.poll, c.watch.poll_interval, c.env_file.as_ref()),
            (PollMode::Auto, Duration::from_millis(DEFAULT_POLL_MS), None)
        );
        let c = load(
            "command = \"x\"\nport = 1\n[watch]\npoll = true\npoll_ms = 250\n",
            &RunArgs::default(),
        )
        .unwrap();
        assert_eq!(
            (c.watch.poll, c.watch.poll_interval),
            (PollMode::Always, Duration::from_millis(250))
        );
        let e = load(
            "command = \"x\"\nport = 1\n[watch]\npoll = \"sometimes\"\n",
            &RunArgs::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("devrun.toml:4:8:"), "{e}");
        let e = load(
            "command = \"x\"\nport = 1\nenv_file = \"no-such.env\"\n",
            &RunArgs::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("devrun.toml:3:12:") && e.contains("no-such.env"),
            "{e}"
        );
    }

    #[test]
    fn a_host_that_does_not_resolve_is_a_config_error() {
        let e = load(
            "command = \"x\"\nport = 1\nhost = \"no-such-host.invalid\"\n",
            &RunArgs::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("devrun.toml:3:8:"), "{e}");
        assert!(e.contains("no-such-host.invalid"), "{e}");
        let args = RunArgs {
            host: Some("no-such-host.invalid".into()),
            ..RunArgs::default()
        };
        let e = load("command = \"x\"\nport = 1\n", &args)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--host: host \"no-such-host.invalid\""),
            "{e}"
        );
    }

    #[test]
    fn the_project_layer_loads_without_a_command() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(CONFIG_FILE);
        let args = ProjectArgs {
            config: Some(file.clone()),
            ..ProjectArgs::default()
        };
        std::fs::write(&file, "port = 7\n[stop]\ntimeout_ms = 100\n").unwrap();
        let p = ProjectConfig::load(&args).unwrap().expect("a config file");
        assert_eq!((p.port, p.root.as_path()), (7, dir.path()));
        assert_eq!(p.stop.timeout, Duration::from_millis(100));
        assert_eq!(
            p.devrun_exit_timeout(),
            Duration::from_millis(100) + p.stop.port_timeout + DEVRUN_EXIT_MARGIN
        );
        // The port said only in the file's command counts; a command that does not parse is
        // the run's error, not the project's.
        std::fs::write(&file, "command = \"x --port 9002\"\n").unwrap();
        assert_eq!(
            ProjectConfig::load(&args).unwrap().map(|p| p.port),
            Some(9002)
        );
        std::fs::write(&file, "command = 5\nport = 8\n").unwrap();
        assert_eq!(ProjectConfig::load(&args).unwrap().map(|p| p.port), Some(8));
        std::fs::write(&file, "command = \"x\"\n").unwrap();
        assert!(ProjectConfig::load(&args).is_err());
        // The same places as a run: `[tool.devrun]` of a pyproject.toml too.
        let pyproject = dir.path().join(PYPROJECT_FILE);
        std::fs::write(&pyproject, "[tool.devrun]\nport = 9\n").unwrap();
        let args = ProjectArgs {
            config: Some(pyproject),
            ..ProjectArgs::default()
        };
        let p = ProjectConfig::load(&args).unwrap().expect("a config file");
        assert_eq!(
            (p.port, p.source_name().as_str()),
            (9, "pyproject.toml [tool.devrun]")
        );
    }

    #[test]
    fn run_options_come_from_the_flags_and_the_project_from_the_run() {
        let args = RunArgs {
            once: true,
            kill_port_holder: true,
            stop_timeout: Some(Duration::from_millis(10)),
            ..RunArgs::default()
        };
        let c = load("command = \"x\"\nport = 8001\n", &args).unwrap();
        assert_eq!(
            c.options,
            RunOptions {
                once: true,
                replace: false,
                kill_port_holder: true,
            }
        );
        assert_eq!(c.project.stop.timeout, Duration::from_millis(10));
        assert_eq!((c.port, c.host.as_str()), (8001, DEFAULT_HOST));
    }

    /// Issue 12: `[server] preload` takes false, "auto" or a list; `--preload` is "auto"; the
    /// command must be one preload can fork (Linux only).
    #[cfg(target_os = "linux")]
    #[test]
    fn preload_values_and_the_commands_it_can_run() {
        let python = "command = \"python -m uvicorn app:app\"\nport = 1\n";
        let with = |server: &str| {
            load(
                &format!("{python}[server]\n{server}\n"),
                &RunArgs::default(),
            )
        };
        let imports = |c: Config| c.preload.map(|settings| settings.imports);
        assert_eq!(with("preload = false").unwrap().preload, None);
        assert_eq!(
            imports(with("preload = \"auto\"").unwrap()),
            Some(Preload::Auto)
        );
        assert_eq!(
            imports(with("preload = [\"fastapi\"]").unwrap()),
            Some(Preload::Modules(vec!["fastapi".into()]))
        );
        let bad = with("preload = 3").unwrap_err().to_string();
        assert!(bad.contains("[server] preload must be"), "{bad}");
        // Issue 12: the held socket is handed to each forked generation (was refused).
        let both = with("preload = \"auto\"\nsocket = \"inherit\"").unwrap();
        assert!(both.inherit_socket && both.preload.is_some_and(|s| s.inherit_socket));
        let flag = RunArgs {
            preload: true,
            ..RunArgs::default()
        };
        // The launch is read once, here: what the preloader and each fork run.
        let settings = load(python, &flag).unwrap().preload.unwrap();
        assert_eq!(settings.imports, Preload::Auto);
        assert_eq!(settings.launch.interpreter, ["python"]);
        assert_eq!(settings.launch.module.as_deref(), Some("uvicorn"));
        assert_eq!(settings.launch.args, ["app:app"]);
        assert_eq!(settings.title, "python -m uvicorn app:app");
        assert_eq!(
            settings.start_timeout,
            Duration::from_millis(DEFAULT_READY_TIMEOUT_MS)
        );
        let node = load("command = \"node server.js\"\nport = 1\n", &flag).unwrap_err();
        assert!(
            node.to_string().contains("preload needs a Python command"),
            "{node}"
        );
    }

    #[test]
    fn missing_command_or_port_is_an_error() {
        assert!(load("port = 1\n", &RunArgs::default()).is_err());
        assert!(load("command = \"x\"\n", &RunArgs::default()).is_err());
        assert!(load("command = 5\nport = 1\n", &RunArgs::default()).is_err());
    }
}
