//! The run layer's settings, each derived in its own function from the flags and the file
//! (flags win): command, socket, preload, watch, readiness, env.

use super::*;

/// `[server] socket`: "none" (the default) or "inherit" (on Windows only for a command that
/// runs uvicorn: [`check_inherit_socket`]).
pub(super) fn derive_inherit_socket(inputs: &Inputs) -> Result<bool, ConfigError> {
    let Some(socket) = &inputs.file.server.socket else {
        return Ok(false);
    };
    let at = Some(socket.span().start);
    match socket.get_ref().as_str() {
        "none" => Ok(false),
        "inherit" => Ok(true),
        other => Err(inputs.err(
            at,
            format!("[server] socket must be \"none\" or \"inherit\", not {other:?}"),
        )),
    }
}

/// `socket = "inherit"` where the socket cannot reach the server: an error at the key.
/// `windows`: the rules of Windows apply (`cfg!(windows)`; a parameter so tests run anywhere).
pub(super) fn check_inherit_socket(
    inputs: &Inputs,
    inherit: bool,
    launch: Option<&FastStop>,
    windows: bool,
) -> Result<(), ConfigError> {
    let refusal = inherit.then(|| inherit_refusal(windows, launch)).flatten();
    match refusal {
        Some(why) => Err(inputs.err(
            inputs.file.server.socket.as_ref().map(|s| s.span().start),
            why,
        )),
        None => Ok(()),
    }
}

/// Why `socket = "inherit"` cannot work for this command on this OS, if it cannot. Unix hands
/// fd 3 to any command. Windows has no fd 3: the socket is an inherited handle that devrun's
/// bootstrap gives to uvicorn's server, so the command must be a Python launch running uvicorn
/// (`launch`: the bootstrap's reading of it, None when it is no Python launch).
pub(super) fn inherit_refusal(windows: bool, launch: Option<&FastStop>) -> Option<String> {
    if !windows || launch.is_some_and(|launch| launch.runs_uvicorn) {
        return None;
    }
    let what = match launch {
        Some(_) => "this Python command does not run uvicorn",
        None => "this command is no Python launch devrun can read",
    };
    Some(format!(
        "[server] socket = \"inherit\": on Windows devrun hands its socket to uvicorn through its \
         Python bootstrap, and {what}. Run uvicorn through the interpreter (`python -m uvicorn \
         app.main:app`, or a script of the project that calls uvicorn.run), or set socket = \
         \"none\""
    ))
}

/// `[server] preload_method`: "fork" or "spare" (default: fork on Linux, spare elsewhere);
/// `linux`: this is Linux, the only OS devrun forks a preloaded interpreter on.
pub(super) fn derive_preload_method(inputs: &Inputs, linux: bool) -> Result<Method, ConfigError> {
    let Some(value) = inputs.file.server.preload_method.as_ref() else {
        return Ok(if linux { Method::Fork } else { Method::Spare });
    };
    let at = Some(value.span().start);
    match value.get_ref().as_str() {
        "fork" if !linux => Err(inputs.err(
            at,
            "[server] preload_method = \"fork\" needs Linux: Windows has no fork, and macOS \
             makes fork without exec unsafe once system frameworks are loaded; use \"spare\" \
             (the default here)",
        )),
        "fork" => Ok(Method::Fork),
        "spare" => Ok(Method::Spare),
        other => Err(inputs.err(
            at,
            format!("[server] preload_method must be \"fork\" or \"spare\", not {other:?}"),
        )),
    }
}

/// `[server] preload`: false (the default), "auto" or a list of modules; `--preload` is "auto".
/// Every OS: a fork of the preloader on Linux, a warm spare elsewhere. The command it runs is
/// read in [`preload::Settings::new`].
pub(super) fn derive_preload(
    inputs: &Inputs,
    args: &RunArgs,
) -> Result<Option<Preload>, ConfigError> {
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
    Ok(preload)
}

/// The bootstrap for a Python command, with the fast stop when it runs uvicorn and `[stop]
/// fast` (default true) holds unless `--no-fast-stop`.
pub(super) fn derive_fast_stop(
    inputs: &Inputs,
    args: &RunArgs,
    command: &[String],
    root: &Path,
) -> Option<FastStop> {
    let on = !args.no_fast_stop && inputs.file.stop.fast.unwrap_or(true);
    FastStop::detect(command, root, on)
}

/// The command: flags win; a string is split shell-style, an array is used as is. None at
/// all, or an empty one (what `devrun init` writes when it finds no app), is an error that
/// says what to fill in.
pub(super) fn derive_command(inputs: &Inputs, args: &RunArgs) -> Result<Vec<String>, ConfigError> {
    if !args.command.is_empty() {
        return Ok(args.command.clone());
    }
    let Some(value) = &inputs.file.command else {
        return Err(no_command(inputs));
    };
    let command =
        command_from_value(value.get_ref()).map_err(|m| inputs.err(Some(value.span().start), m))?;
    if command.is_empty() {
        return Err(inputs.err(
            Some(value.span().start),
            format!(
                "`command` is empty: fill in the command that starts your backend, e.g. \
                 command = {COMMAND_EXAMPLE} (devrun fills in {{port}})"
            ),
        ));
    }
    Ok(command)
}

/// The example every "no command" error shows.
const COMMAND_EXAMPLE: &str = r#""python -m uvicorn app.main:app --port {port}""#;

/// No `command` key, no command after `--`: say where it goes, and that `devrun init` writes
/// a config from what is in the folder.
fn no_command(inputs: &Inputs) -> ConfigError {
    match &inputs.source {
        // The error names the file.
        Some(_) => inputs.err(
            None,
            format!(
                "no command to run: set `command` to the command that starts your backend \
                 (e.g. command = {COMMAND_EXAMPLE}), or pass it after `--`; `devrun init \
                 --force` rewrites the file from what is in this folder"
            ),
        ),
        None => inputs.err(
            None,
            format!(
                "no command to run: there is no {CONFIG_FILE} here (nor [tool.devrun] in \
                 {PYPROJECT_FILE}): run `devrun init` to write one from what is in this folder, \
                 or pass the command after `--` (devrun --port 8000 -- python -m uvicorn \
                 app.main:app --port 8000)"
            ),
        ),
    }
}

/// Where templates live in Django, Flask and Starlette projects.
const DEFAULT_RELOAD_ONLY: &str = "**/templates/**";

pub(super) fn derive_watch(
    inputs: &Inputs,
    args: &RunArgs,
    root: &Path,
) -> Result<WatchConfig, ConfigError> {
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

pub(super) fn derive_poll(inputs: &Inputs) -> Result<PollMode, ConfigError> {
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
pub(super) fn derive_watch_paths(
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
pub(super) fn derive_include(inputs: &Inputs, args: &RunArgs) -> Result<Vec<String>, ConfigError> {
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

/// `[watch] reload_only`: the globs whose changes drop the template caches of the running
/// generation instead of restarting it (default: template folders).
pub(super) fn derive_reload_only(inputs: &Inputs) -> Result<Vec<String>, ConfigError> {
    match &inputs.file.watch.reload_only {
        Some(globs) => {
            check_globs(inputs, globs)?;
            Ok(globs.iter().map(|g| g.get_ref().clone()).collect())
        }
        None => Ok(vec![DEFAULT_RELOAD_ONLY.to_string()]),
    }
}

/// `--ignore` adds to `[watch] ignore`.
pub(super) fn derive_ignore(inputs: &Inputs, args: &RunArgs) -> Result<Vec<String>, ConfigError> {
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

pub(super) fn derive_ready(inputs: &Inputs, args: &RunArgs) -> Result<ReadyConfig, ConfigError> {
    let flags = (args.ready_http.as_deref(), args.ready_timeout);
    ready_from(
        inputs,
        &inputs.file.ready,
        &|key| format!("[ready] {key}"),
        flags,
    )
}

/// A `[ready]` table (the backend's, or a member's `ready = {...}`), flags over it; `key` names
/// one of its keys in messages.
pub(super) fn ready_from(
    inputs: &Inputs,
    ready: &FileReady,
    key: &dyn Fn(&str) -> String,
    (http_flag, timeout_flag): (Option<&str>, Option<Duration>),
) -> Result<ReadyConfig, ConfigError> {
    let http =
        match (http_flag, &ready.http) {
            (Some(path), _) => Some(check_http_path(path).map_err(ConfigError::plain)?),
            (None, Some(path)) => Some(check_http_path(path.get_ref()).map_err(|m| {
                inputs.err(Some(path.span().start), format!("{}: {m}", key("http")))
            })?),
            (None, None) => None,
        };
    let timeout = match timeout_flag {
        Some(timeout) => timeout,
        None => inputs.millis(
            &key("timeout_ms"),
            &ready.timeout_ms,
            DEFAULT_READY_TIMEOUT_MS,
            MAX_TIMEOUT,
        )?,
    };
    Ok(ReadyConfig { http, timeout })
}

/// `[env]`, its values' placeholders filled as in the command.
pub(super) fn derive_env(
    inputs: &Inputs,
    stack: &stack::Stack,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let fill = stack.placeholders(BACKEND);
    derive_env_table(inputs, "[env]", &inputs.file.env, &fill)
}

/// An env table (`[env]`, a member's `env`): names must be valid variable names, values free
/// of NUL bytes; placeholders are filled.
pub(super) fn derive_env_table(
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
pub(super) fn derive_env_file(
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

/// The backend's `cwd`, relative to the config file's folder (default: that folder); it must
/// be a folder. A relative program path in the command starts from it, as in a shell that
/// changed into it (`cwd = "backend"`, `command = "../.venv/bin/python …"`).
pub(super) fn derive_backend_cwd(inputs: &Inputs, root: &Path) -> Result<PathBuf, ConfigError> {
    let Some(cwd) = &inputs.file.cwd else {
        return Ok(root.to_path_buf());
    };
    let path = root.join(cwd.get_ref());
    if !path.is_dir() {
        return Err(inputs.err(
            Some(cwd.span().start),
            format!("cwd: {} is not a folder", path.display()),
        ));
    }
    Ok(path)
}

pub(super) fn command_from_value(value: &toml::Value) -> Result<Vec<String>, String> {
    let command = command_parts(value)?;
    // The OS cannot pass it: caught here, with file, line and column, not at the first spawn.
    match command.iter().position(|arg| arg.contains('\0')) {
        Some(i) => Err(format!(
            "`command` argument {} contains a NUL byte, which no program can be given",
            i + 1
        )),
        None => Ok(command),
    }
}

fn command_parts(value: &toml::Value) -> Result<Vec<String>, String> {
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
pub(super) fn port_in_command(command: &[String]) -> Option<u16> {
    command.iter().enumerate().find_map(|(i, arg)| {
        if arg == "--port" {
            command.get(i + 1)?.parse().ok()
        } else {
            arg.strip_prefix("--port=")?.parse().ok()
        }
    })
}

pub(super) fn check_globs(inputs: &Inputs, globs: &[Spanned<String>]) -> Result<(), ConfigError> {
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

pub(super) fn check_http_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') && !path.contains(char::is_whitespace) {
        Ok(path.to_string())
    } else {
        Err(format!("expected a path like \"/health\", found {path:?}"))
    }
}

pub(super) fn display_path(path: &Path, cwd: &Path) -> String {
    path.strip_prefix(cwd).unwrap_or(path).display().to_string()
}
