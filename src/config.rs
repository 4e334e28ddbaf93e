//! `devrun.toml` + command-line flags → one validated [`Config`].
//!
//! Errors point at the file, line and column of the offending text (toml's spans).

use crate::cli::{describe_limit, RunArgs, MAX_DEBOUNCE, MAX_TIMEOUT};
use crate::error::ConfigError;
use crate::process::StopSignal;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

pub const CONFIG_FILE: &str = "devrun.toml";
pub const PYPROJECT_FILE: &str = "pyproject.toml";
pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_INCLUDE: &str = "**/*.py";

/// The validated configuration the supervisor runs with. Paths are absolute.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any (for status lines and errors).
    pub source: Option<PathBuf>,
    /// The config file's folder (or the current folder): the backend's cwd and the base of relative paths.
    pub root: PathBuf,
    pub command: Vec<String>,
    pub port: u16,
    pub host: String,
    pub watch: WatchConfig,
    pub stop: StopConfig,
    pub ready: ReadyConfig,
    /// `[env]`, added to the backend's environment.
    pub env: BTreeMap<String, String>,
    /// `[server] socket = "inherit"`: devrun binds the port once and hands the listening socket
    /// to every generation as fd 3 (`{fd}` in the command, and LISTEN_FDS/LISTEN_PID).
    pub inherit_socket: bool,
}

#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub paths: Vec<PathBuf>,
    pub include: Vec<String>,
    pub ignore: Vec<String>,
    pub gitignore: bool,
    pub debounce: Duration,
}

#[derive(Debug, Clone)]
pub struct StopConfig {
    pub signal: StopSignal,
    pub timeout: Duration,
    pub port_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ReadyConfig {
    /// GET this path must answer 2xx; without it, ready = the port accepts a connection.
    pub http: Option<String>,
    pub timeout: Duration,
}

// ---- the file's shape: every key of DESIGN.md, nothing else ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    command: Option<Spanned<toml::Value>>,
    port: Option<u16>,
    host: Option<Spanned<String>>,
    #[serde(default)]
    watch: FileWatch,
    #[serde(default)]
    stop: FileStop,
    #[serde(default)]
    ready: FileReady,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    server: FileServer,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWatch {
    paths: Option<Vec<String>>,
    include: Option<Vec<Spanned<String>>>,
    ignore: Option<Vec<Spanned<String>>>,
    gitignore: Option<bool>,
    debounce_ms: Option<Spanned<u64>>,
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

impl Config {
    /// Reads the config file (`--config`, else `devrun.toml` in the current folder, else
    /// `[tool.devrun]` of `pyproject.toml` there) and applies the flags on top.
    pub fn load(args: &RunArgs) -> Result<Config, ConfigError> {
        let cwd = std::env::current_dir()
            .map_err(|e| ConfigError::plain(format!("cannot read the current folder: {e}")))?;
        let candidates = match &args.config {
            Some(path) => vec![cwd.join(path)],
            None => vec![cwd.join(CONFIG_FILE), cwd.join(PYPROJECT_FILE)],
        };
        for path in candidates {
            if args.config.is_none() && !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::plain(format!("cannot read {}: {e}", path.display())))?;
            let source = Source {
                display: display_path(&path, &cwd),
                path,
                text,
            };
            let locate = |e: toml::de::Error| {
                source.error(
                    e.span().map(|s| s.start),
                    e.message().trim_end().to_string(),
                )
            };
            let file = if source.path.file_name().is_some_and(|n| n == PYPROJECT_FILE) {
                let pyproject: PyProject = toml::from_str(&source.text).map_err(locate)?;
                match pyproject.tool.devrun {
                    Some(file) => file,
                    // A pyproject.toml without [tool.devrun] is not devrun's config.
                    None if args.config.is_none() => continue,
                    None => return Err(source.error(None, "no [tool.devrun] table")),
                }
            } else {
                toml::from_str(&source.text).map_err(locate)?
            };
            return Self::build(Some(source), file, args, &cwd);
        }
        Self::build(None, FileConfig::default(), args, &cwd)
    }

    fn build(
        source: Option<Source>,
        file: FileConfig,
        args: &RunArgs,
        cwd: &Path,
    ) -> Result<Config, ConfigError> {
        let err = |offset: Option<usize>, message: String| match &source {
            Some(s) => s.error(offset, message),
            None => ConfigError::plain(message),
        };
        let root = match &source {
            Some(s) => s.path.parent().unwrap_or(cwd).to_path_buf(),
            None => cwd.to_path_buf(),
        };

        let inherit_socket = match &file.server.socket {
            None => false,
            Some(socket) => match socket.get_ref().as_str() {
                "none" => false,
                "inherit" if cfg!(windows) => {
                    return Err(err(
                        Some(socket.span().start),
                        "[server] socket = \"inherit\" is not supported on Windows; use \"none\""
                            .into(),
                    ))
                }
                "inherit" => true,
                other => {
                    return Err(err(
                        Some(socket.span().start),
                        format!("[server] socket must be \"none\" or \"inherit\", not {other:?}"),
                    ))
                }
            },
        };

        let host = match (&args.host, &file.host) {
            (Some(host), _) => host.clone(),
            (None, Some(host)) => host.get_ref().clone(),
            (None, None) => DEFAULT_HOST.to_string(),
        };

        // The command: flags win; a string is split shell-style, an array is used as is.
        let mut command = if !args.command.is_empty() {
            args.command.clone()
        } else {
            match &file.command {
                None => Vec::new(),
                Some(value) => {
                    let at = Some(value.span().start);
                    command_from_value(value.get_ref()).map_err(|m| err(at, m))?
                }
            }
        };
        if command.is_empty() {
            return Err(err(
                None,
                "no command to run: set `command` in devrun.toml or pass it after `--`".into(),
            ));
        }

        let port =
            match args
                .port
                .or(file.port)
                .or_else(|| port_in_command(&command))
            {
                Some(port) if port > 0 => port,
                _ => return Err(err(
                    None,
                    "no port: set `port` in devrun.toml or pass --port (devrun must know which \
                     port the backend serves to confirm it is released)"
                        .into(),
                )),
            };
        // A host that does not resolve is a typo to fix, not a port someone holds.
        if let Err(e) = crate::port::resolve(&host, port) {
            let why = format!("host {host:?} does not resolve ({e})");
            return Err(match (&args.host, &file.host) {
                (Some(_), _) => ConfigError::plain(format!("--host: {why}")),
                (None, Some(spanned)) => err(Some(spanned.span().start), format!("`host`: {why}")),
                (None, None) => ConfigError::plain(why),
            });
        }
        for arg in &mut command {
            *arg = arg
                .replace("{port}", &port.to_string())
                .replace("{host}", &host)
                .replace("{fd}", &crate::process::INHERITED_FD.to_string());
        }

        // Watch paths: flags are relative to the current folder, the file's to its folder.
        let paths: Vec<PathBuf> = if !args.watch.is_empty() {
            args.watch.iter().map(|p| cwd.join(p)).collect()
        } else {
            match &file.watch.paths {
                Some(paths) => paths.iter().map(|p| root.join(p)).collect(),
                None => vec![root.clone()],
            }
        };
        for path in &paths {
            if !path.exists() {
                return Err(err(
                    None,
                    format!("watch path {} does not exist", path.display()),
                ));
            }
        }

        let include: Vec<String> = if !args.ext.is_empty() {
            let mut globs = Vec::new();
            for ext in &args.ext {
                let ext = ext.trim().trim_start_matches('.');
                if ext.is_empty() {
                    return Err(ConfigError::plain("--ext: empty extension"));
                }
                globs.push(format!("**/*.{ext}"));
            }
            globs
        } else {
            match &file.watch.include {
                Some(globs) => {
                    check_globs(globs, &err)?;
                    globs.iter().map(|g| g.get_ref().clone()).collect()
                }
                None => vec![DEFAULT_INCLUDE.to_string()],
            }
        };
        let mut ignore: Vec<String> = Vec::new();
        if let Some(globs) = &file.watch.ignore {
            check_globs(globs, &err)?;
            ignore.extend(globs.iter().map(|g| g.get_ref().clone()));
        }
        for glob in &args.ignore {
            globset::Glob::new(glob)
                .map_err(|e| ConfigError::plain(format!("--ignore {glob:?}: {}", e.kind())))?;
            ignore.push(glob.clone());
        }

        let signal = match (&args.stop_signal, &file.stop.signal) {
            (Some(name), _) => StopSignal::parse(name)
                .map_err(|m| ConfigError::plain(format!("--stop-signal: {m}")))?,
            (None, Some(name)) => StopSignal::parse(name.get_ref())
                .map_err(|m| err(Some(name.span().start), format!("[stop] signal: {m}")))?,
            (None, None) => StopSignal::default(),
        };

        let ready_http = match (&args.ready_http, &file.ready.http) {
            (Some(path), _) => Some(check_http_path(path).map_err(ConfigError::plain)?),
            (None, Some(path)) => Some(
                check_http_path(path.get_ref())
                    .map_err(|m| err(Some(path.span().start), format!("[ready] http: {m}")))?,
            ),
            (None, None) => None,
        };

        // Flags were checked against their limits as they were parsed; the file's keys here.
        let ms = |key: &str, value: &Option<Spanned<u64>>, default: u64, max: Duration| {
            let Some(value) = value else {
                return Ok(Duration::from_millis(default));
            };
            let duration = Duration::from_millis(*value.get_ref());
            if duration > max {
                return Err(err(
                    Some(value.span().start),
                    format!(
                        "{key} = {} is above the limit of {}",
                        value.get_ref(),
                        describe_limit(max)
                    ),
                ));
            }
            Ok(duration)
        };
        let debounce = match args.debounce {
            Some(debounce) => debounce,
            None => ms(
                "[watch] debounce_ms",
                &file.watch.debounce_ms,
                50,
                MAX_DEBOUNCE,
            )?,
        };
        let stop_timeout = match args.stop_timeout {
            Some(timeout) => timeout,
            None => ms(
                "[stop] timeout_ms",
                &file.stop.timeout_ms,
                5000,
                MAX_TIMEOUT,
            )?,
        };
        let port_timeout = match args.port_timeout {
            Some(timeout) => timeout,
            None => ms(
                "[stop] port_timeout_ms",
                &file.stop.port_timeout_ms,
                5000,
                MAX_TIMEOUT,
            )?,
        };
        let ready_timeout = match args.ready_timeout {
            Some(timeout) => timeout,
            None => ms(
                "[ready] timeout_ms",
                &file.ready.timeout_ms,
                30000,
                MAX_TIMEOUT,
            )?,
        };

        let mut env = BTreeMap::new();
        for (key, value) in file.env {
            let at = Some(key.span().start);
            let name = key.into_inner();
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(err(
                    at,
                    format!(
                        "[env] {name:?} is not a valid variable name (it must not be empty or \
                         contain `=` or a NUL byte)"
                    ),
                ));
            }
            if value.contains('\0') {
                return Err(err(
                    at,
                    format!("[env] {name}: the value must not contain a NUL byte"),
                ));
            }
            env.insert(name, value);
        }

        Ok(Config {
            source: source.map(|s| s.path),
            root,
            command,
            port,
            host,
            watch: WatchConfig {
                paths,
                include,
                ignore,
                gitignore: file.watch.gitignore.unwrap_or(true),
                debounce,
            },
            stop: StopConfig {
                signal,
                timeout: stop_timeout,
                port_timeout,
            },
            ready: ReadyConfig {
                http: ready_http,
                timeout: ready_timeout,
            },
            env,
            inherit_socket,
        })
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

fn check_globs(
    globs: &[Spanned<String>],
    err: &dyn Fn(Option<usize>, String) -> ConfigError,
) -> Result<(), ConfigError> {
    for glob in globs {
        globset::Glob::new(glob.get_ref()).map_err(|e| {
            err(
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
        Config::build(Some(source), file, &args, Path::new("/"))
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
    fn missing_command_or_port_is_an_error() {
        assert!(load("port = 1\n", &RunArgs::default()).is_err());
        assert!(load("command = \"x\"\n", &RunArgs::default()).is_err());
        assert!(load("command = 5\nport = 1\n", &RunArgs::default()).is_err());
    }
}
