//! The stack: `[processes.NAME]` tables beside the backend (which keeps the top-level keys and
//! the name `backend`), the port table behind `{port}`, `{host}` and `{ports.NAME}`, the start
//! order `after` gives, and `--only`.
//!
//! Everything is checked at load, with the file, line and column of the offending text: names,
//! ports (a duplicate, `"auto"` picked once), placeholders, references in `after` and
//! `restart_with`, and cycles in `after` (spelled out: `web → api → web`).

use super::{
    command_from_value, derive_env_table, FileReady, Inputs, Member as MemberConfig, ProcessWatch,
    ProjectConfig, ReadyConfig, RestartPolicy, DEFAULT_READY_TIMEOUT_MS,
};
use crate::cli::{RunArgs, MAX_TIMEOUT};
use crate::error::ConfigError;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::Path;
use toml::Spanned;

/// The backend's name in `after`, `restart_with`, `{ports.NAME}` and `--only` (the one the
/// state file and status use too).
pub use crate::state::BACKEND;

/// How many times a port the OS offers for `port = "auto"` may turn out to be one the config
/// already names before giving up.
const AUTO_PORT_TRIES: usize = 20;

/// One `[processes.NAME]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileProcess {
    command: Option<Spanned<toml::Value>>,
    cwd: Option<Spanned<String>>,
    /// A number, or `"auto"`.
    port: Option<Spanned<toml::Value>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    after: Vec<Spanned<String>>,
    /// `"backend"`, or a list of paths.
    watch: Option<Spanned<toml::Value>>,
    ready: Option<FileReady>,
    restart: Option<Spanned<String>>,
    #[serde(default)]
    restart_with: Vec<Spanned<String>>,
}

/// A member as written: its name (with its place in the file) and its table.
struct Member<'a> {
    name: &'a Spanned<String>,
    file: &'a FileProcess,
}

impl Member<'_> {
    fn name(&self) -> &str {
        self.name.get_ref()
    }

    /// `[processes.web] cwd`: how messages name one of its keys.
    fn key(&self, key: &str) -> String {
        format!("[processes.{}] {key}", self.name())
    }
}

/// The stack as loaded: the members to run, in start order, and every member's port.
pub(super) struct Stack {
    pub processes: Vec<MemberConfig>,
    pub run_backend: bool,
    host: String,
    /// Every member's port by name, the backend's included, `--only` or not (a frontend run
    /// alone still needs `{ports.backend}`). None: it has no port.
    ports: BTreeMap<String, Option<u16>>,
    /// `backend`, then the members in file order: what error messages offer.
    known: Vec<String>,
}

impl Stack {
    pub fn derive(
        inputs: &Inputs,
        args: &RunArgs,
        project: &ProjectConfig,
    ) -> Result<Stack, ConfigError> {
        let members = members_in_file_order(inputs)?;
        check_references(inputs, &members)?;
        if let Some((cycle, at)) = find_cycle(&members) {
            return Err(inputs.err(
                Some(at),
                format!("`after` makes a cycle: {cycle} (none of them could start first)"),
            ));
        }
        let only = derive_only(args, &members)?;
        let mut stack = Stack {
            processes: Vec::new(),
            run_backend: only.as_ref().is_none_or(|names| names.contains(BACKEND)),
            host: project.host.clone(),
            ports: derive_ports(inputs, &members, project)?,
            known: known_names(&members),
        };
        // Every member is checked, also those `--only` leaves out: a config is valid or not.
        for index in start_order(&members) {
            let process = stack.derive_member(inputs, &members[index], &project.root)?;
            stack.processes.push(process);
        }
        if let Some(names) = &only {
            stack.processes.retain(|p| names.contains(&p.name));
            drop_references_to_left_out(&mut stack.processes, names);
        }
        Ok(stack)
    }

    /// What the placeholders stand for in the strings of member `name` (or the backend).
    pub fn placeholders(&self, name: &str) -> Placeholders<'_> {
        Placeholders {
            whose: name.to_string(),
            host: &self.host,
            own: self.ports.get(name).copied().flatten(),
            ports: &self.ports,
            known: &self.known,
        }
    }

    /// The backend's command with `{port}`, `{host}`, `{ports.NAME}` and `{fd}` filled. A
    /// placeholder that cannot be filled points at itself in the file's `command`, or names
    /// the command line when the command came from there.
    pub fn fill_backend_command(
        &self,
        inputs: &Inputs,
        args: &RunArgs,
        command: Vec<String>,
    ) -> Result<Vec<String>, ConfigError> {
        let fill = self.placeholders(BACKEND);
        let span = match (&inputs.file.command, args.command.is_empty()) {
            (Some(value), true) => Some(value.span()),
            _ => None,
        };
        command
            .into_iter()
            .map(|arg| {
                let filled = fill.fill(&arg).map_err(|unfilled| match &span {
                    Some(span) => unfilled.located(inputs, "`command`", span.clone()),
                    None => ConfigError::plain(format!("the command after `--`: {unfilled}")),
                })?;
                Ok(filled.replace("{fd}", &crate::process::INHERITED_FD.to_string()))
            })
            .collect()
    }

    fn derive_member(
        &self,
        inputs: &Inputs,
        member: &Member,
        root: &Path,
    ) -> Result<MemberConfig, ConfigError> {
        let fill = self.placeholders(member.name());
        let port = fill.own;
        Ok(MemberConfig {
            name: member.name().to_string(),
            command: member_command(inputs, member, &fill)?,
            cwd: member_cwd(inputs, member, root)?,
            port,
            env: derive_env_table(inputs, &member.key("env"), &member.file.env, &fill)?,
            after: names(&member.file.after),
            watch: member_watch(inputs, member, root)?,
            ready: member_ready(inputs, member, port)?,
            restart: member_restart(inputs, member)?,
            restart_with: names(&member.file.restart_with),
            extras: Default::default(),
        })
    }
}

fn names(list: &[Spanned<String>]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in list {
        if !names.contains(name.get_ref()) {
            names.push(name.get_ref().clone());
        }
    }
    names
}

// ---- placeholders ----

/// What `{port}`, `{host}` and `{ports.NAME}` stand for in one member's strings (its command
/// and env values). Other braces are left alone (`{fd}` is the backend's, `{}` someone else's).
pub(super) struct Placeholders<'a> {
    whose: String,
    host: &'a str,
    own: Option<u16>,
    ports: &'a BTreeMap<String, Option<u16>>,
    known: &'a [String],
}

/// A placeholder that cannot be filled, and why.
#[derive(Debug)]
pub(super) struct Unfilled {
    placeholder: String,
    why: String,
}

impl std::fmt::Display for Unfilled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.placeholder, self.why)
    }
}

impl Unfilled {
    /// The error pointing at the placeholder inside the text at `span`.
    fn located(&self, inputs: &Inputs, what: &str, span: std::ops::Range<usize>) -> ConfigError {
        let at = inputs.find_in(span, &self.placeholder);
        inputs.err(Some(at), format!("{what}: {self}"))
    }
}

impl Placeholders<'_> {
    pub fn fill(&self, text: &str) -> Result<String, Unfilled> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let tail = &rest[open..];
            let Some(close) = tail.find('}') else {
                out.push_str(tail);
                return Ok(out);
            };
            match self.value(&tail[1..close]) {
                Some(Ok(value)) => {
                    out.push_str(&value);
                    rest = &tail[close + 1..];
                }
                Some(Err(why)) => {
                    return Err(Unfilled {
                        placeholder: tail[..=close].to_string(),
                        why,
                    })
                }
                None => {
                    out.push('{');
                    rest = &tail[1..];
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A string value filled, an error pointing at the placeholder in the file.
    pub fn fill_spanned(
        &self,
        inputs: &Inputs,
        what: &str,
        value: &Spanned<String>,
    ) -> Result<String, ConfigError> {
        self.fill(value.get_ref())
            .map_err(|unfilled| unfilled.located(inputs, what, value.span()))
    }

    /// The value of `{inner}`: None when it is not one of ours.
    fn value(&self, inner: &str) -> Option<Result<String, String>> {
        match inner {
            "host" => Some(Ok(self.host.to_string())),
            "port" => Some(self.own.map(|p| p.to_string()).ok_or_else(|| {
                format!(
                    "{} has no port (give it `port = N` or `port = \"auto\"`)",
                    self.whose
                )
            })),
            _ => {
                let name = inner.strip_prefix("ports.")?;
                Some(match self.ports.get(name) {
                    Some(Some(port)) => Ok(port.to_string()),
                    Some(None) => Err(format!(
                        "{name} has no port (give it `port = N` or `port = \"auto\"`)"
                    )),
                    None => Err(unknown_name(name, self.known)),
                })
            }
        }
    }
}

/// "no process named \"wbe\" (known: backend, web, worker)".
fn unknown_name(name: &str, known: &[String]) -> String {
    format!("no process named {name:?} (known: {})", known.join(", "))
}

fn known_names(members: &[Member]) -> Vec<String> {
    std::iter::once(BACKEND.to_string())
        .chain(members.iter().map(|m| m.name().to_string()))
        .collect()
}

// ---- names, references, order ----

/// The `[processes.NAME]` tables in the order the file has them, their names checked.
fn members_in_file_order(inputs: &Inputs) -> Result<Vec<Member<'_>>, ConfigError> {
    let mut members: Vec<Member> = inputs
        .file
        .processes
        .iter()
        .map(|(name, file)| Member { name, file })
        .collect();
    members.sort_by_key(|m| m.name.span().start);
    for member in &members {
        let at = Some(member.name.span().start);
        let name = member.name();
        if name == BACKEND {
            return Err(inputs.err(
                at,
                "[processes.backend]: `backend` is the name of the top-level command; give this \
                 process another name",
            ));
        }
        if !valid_name(name) {
            return Err(inputs.err(
                at,
                format!(
                    "[processes.{name}]: a process name is lowercase letters, digits, `-` and \
                     `_`, starting with a letter or a digit"
                ),
            ));
        }
    }
    Ok(members)
}

/// `[a-z0-9][a-z0-9_-]*`: safe in a status line, a placeholder and a TOML bare key.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Every name in `after` and `restart_with` is `backend` or a member; `restart_with` does not
/// name its own member (a self-reference in `after` is reported as a cycle).
fn check_references(inputs: &Inputs, members: &[Member]) -> Result<(), ConfigError> {
    let known = known_names(members);
    for member in members {
        let lists = [
            ("after", &member.file.after),
            ("restart_with", &member.file.restart_with),
        ];
        for (key, list) in lists {
            for name in list {
                let at = Some(name.span().start);
                if !known.contains(name.get_ref()) {
                    let why = unknown_name(name.get_ref(), &known);
                    return Err(inputs.err(at, format!("{}: {why}", member.key(key))));
                }
                if key == "restart_with" && name.get_ref() == member.name() {
                    return Err(inputs.err(
                        at,
                        format!("{}: a process cannot name itself", member.key(key)),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The members each one starts after (indexes; `backend` is not a member).
fn dependencies(members: &[Member]) -> Vec<Vec<(usize, usize)>> {
    members
        .iter()
        .map(|member| {
            member
                .file
                .after
                .iter()
                .filter_map(|name| {
                    let index = members.iter().position(|m| m.name() == name.get_ref())?;
                    Some((index, name.span().start))
                })
                .collect()
        })
        .collect()
}

/// A cycle in `after`, spelled in the order the members wait for each other
/// (`web → api → web`), and the offset of the `after` entry that closes it.
fn find_cycle(members: &[Member]) -> Option<(String, usize)> {
    let mut search = CycleSearch {
        deps: dependencies(members),
        visited: vec![false; members.len()],
        path: Vec::new(),
    };
    let (cycle, at) = (0..members.len()).find_map(|start| search.visit(start))?;
    let spelled: Vec<&str> = cycle.iter().map(|&i| members[i].name()).collect();
    Some((spelled.join(" → "), at))
}

/// A depth-first walk over `after`: a member met again while it is still on the path closes a
/// cycle.
struct CycleSearch {
    deps: Vec<Vec<(usize, usize)>>,
    visited: Vec<bool>,
    path: Vec<usize>,
}

impl CycleSearch {
    fn visit(&mut self, member: usize) -> Option<(Vec<usize>, usize)> {
        if self.visited[member] {
            return None;
        }
        self.visited[member] = true;
        self.path.push(member);
        for (dep, at) in self.deps[member].clone() {
            if let Some(from) = self.path.iter().position(|&m| m == dep) {
                let mut cycle = self.path[from..].to_vec();
                cycle.push(dep);
                return Some((cycle, at));
            }
            if let Some(found) = self.visit(dep) {
                return Some(found);
            }
        }
        self.path.pop();
        None
    }
}

/// Indexes in a valid start order (each member after those it names in `after`), otherwise
/// in file order. `after` has no cycle (checked before).
fn start_order(members: &[Member]) -> Vec<usize> {
    let deps = dependencies(members);
    let mut placed = vec![false; members.len()];
    let mut order = Vec::with_capacity(members.len());
    while let Some(next) =
        (0..members.len()).find(|&i| !placed[i] && deps[i].iter().all(|&(d, _)| placed[d]))
    {
        placed[next] = true;
        order.push(next);
    }
    order
}

// ---- --only ----

/// `--only NAME` (repeatable): the names to run, each `backend` or a member; None without it.
fn derive_only(
    args: &RunArgs,
    members: &[Member],
) -> Result<Option<BTreeSet<String>>, ConfigError> {
    if args.only.is_empty() {
        return Ok(None);
    }
    let known = known_names(members);
    let mut only = BTreeSet::new();
    for name in &args.only {
        let name = name.trim();
        if !known.iter().any(|k| k == name) {
            return Err(ConfigError::plain(format!(
                "--only {name}: {}",
                unknown_name(name, &known)
            )));
        }
        only.insert(name.to_string());
    }
    Ok(Some(only))
}

/// `after` and `restart_with` entries naming members `--only` left out (the backend too) are
/// dropped: nothing will ever be ready or restart there.
fn drop_references_to_left_out(processes: &mut [MemberConfig], only: &BTreeSet<String>) {
    for process in processes {
        process.after.retain(|name| only.contains(name));
        process.restart_with.retain(|name| only.contains(name));
    }
}

// ---- ports ----

/// Every member's port, the backend's included: fixed ones checked for duplicates, then
/// `"auto"` ones picked, free and distinct from every other.
fn derive_ports(
    inputs: &Inputs,
    members: &[Member],
    project: &ProjectConfig,
) -> Result<BTreeMap<String, Option<u16>>, ConfigError> {
    let mut ports = BTreeMap::from([(BACKEND.to_string(), Some(project.port))]);
    let mut auto = Vec::new();
    for member in members {
        let Some(value) = &member.file.port else {
            ports.insert(member.name().to_string(), None);
            continue;
        };
        let at = Some(value.span().start);
        let port = match value.get_ref() {
            toml::Value::String(s) if s == "auto" => {
                auto.push(member);
                continue;
            }
            toml::Value::Integer(n) => u16::try_from(*n).ok().filter(|&p| p > 0),
            _ => None,
        };
        let Some(port) = port else {
            return Err(inputs.err(
                at,
                format!(
                    "{} must be a port number (1-65535) or \"auto\", found {}",
                    member.key("port"),
                    value.get_ref()
                ),
            ));
        };
        if let Some((other, _)) = ports.iter().find(|(_, p)| **p == Some(port)) {
            return Err(inputs.err(
                at,
                format!(
                    "{}: port {port} is also {other}'s port (two processes cannot serve one \
                     port)",
                    member.key("port")
                ),
            ));
        }
        ports.insert(member.name().to_string(), Some(port));
    }
    // Listeners held until every auto port is picked, so no two are the same.
    let mut held = Vec::new();
    for member in auto {
        let (port, listener) = pick_free_port(&project.host, &ports).map_err(|e| {
            inputs.err(
                member.file.port.as_ref().map(|v| v.span().start),
                format!("{} = \"auto\": {e}", member.key("port")),
            )
        })?;
        held.push(listener);
        ports.insert(member.name().to_string(), Some(port));
    }
    Ok(ports)
}

/// A port the OS says is free on `host` now and that no other member names.
fn pick_free_port(
    host: &str,
    taken: &BTreeMap<String, Option<u16>>,
) -> Result<(u16, TcpListener), String> {
    let addr = crate::port::resolve(host, 0).map_err(|e| format!("cannot resolve {host}: {e}"))?;
    // Offered ports that another member names stay bound meanwhile, so they are not offered
    // again.
    let mut refused = Vec::new();
    for _ in 0..AUTO_PORT_TRIES {
        let listener = TcpListener::bind(addr)
            .map_err(|e| format!("cannot bind a free port on {host}: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("cannot read the port the OS picked on {host}: {e}"))?
            .port();
        if !taken.values().any(|p| *p == Some(port)) {
            return Ok((port, listener));
        }
        refused.push(listener);
    }
    Err(format!(
        "the OS offered only ports other processes of the config name ({AUTO_PORT_TRIES} tries)"
    ))
}

// ---- one member's keys ----

fn member_command(
    inputs: &Inputs,
    member: &Member,
    fill: &Placeholders,
) -> Result<Vec<String>, ConfigError> {
    let Some(value) = &member.file.command else {
        return Err(inputs.err(
            Some(member.name.span().start),
            format!("[processes.{}] has no `command`", member.name()),
        ));
    };
    let at = Some(value.span().start);
    let key = member.key("command");
    let command =
        command_from_value(value.get_ref()).map_err(|m| inputs.err(at, format!("{key}: {m}")))?;
    if command.is_empty() || command[0].is_empty() {
        return Err(inputs.err(at, format!("{key} is empty")));
    }
    command
        .iter()
        .map(|arg| {
            fill.fill(arg)
                .map_err(|unfilled| unfilled.located(inputs, &key, value.span()))
        })
        .collect()
}

/// `cwd`, relative to the config file's folder (default: that folder); it must be a folder.
fn member_cwd(
    inputs: &Inputs,
    member: &Member,
    root: &Path,
) -> Result<std::path::PathBuf, ConfigError> {
    let Some(cwd) = &member.file.cwd else {
        return Ok(root.to_path_buf());
    };
    let path = root.join(cwd.get_ref());
    if !path.is_dir() {
        return Err(inputs.err(
            Some(cwd.span().start),
            format!("{}: {} is not a folder", member.key("cwd"), path.display()),
        ));
    }
    Ok(path)
}

/// `watch = "backend"` or a list of files and folders (relative to the config file's folder,
/// each must exist); default none.
fn member_watch(
    inputs: &Inputs,
    member: &Member,
    root: &Path,
) -> Result<ProcessWatch, ConfigError> {
    let Some(value) = &member.file.watch else {
        return Ok(ProcessWatch::None);
    };
    let key = member.key("watch");
    let wrong = || {
        inputs.err(
            Some(value.span().start),
            format!(
                "{key} must be \"backend\" or a list of files and folders, found {}",
                value.get_ref()
            ),
        )
    };
    let items = match value.get_ref() {
        toml::Value::String(s) if s == BACKEND => return Ok(ProcessWatch::Backend),
        toml::Value::Array(items) => items,
        _ => return Err(wrong()),
    };
    let mut paths = Vec::new();
    for item in items {
        let rel = item.as_str().ok_or_else(wrong)?;
        let path = root.join(rel);
        if !path.exists() {
            let at = inputs.find_in(value.span(), &format!("{item}"));
            return Err(inputs.err(
                Some(at),
                format!("{key}: {} does not exist", path.display()),
            ));
        }
        paths.push(path);
    }
    Ok(if paths.is_empty() {
        ProcessWatch::None
    } else {
        ProcessWatch::Paths(paths)
    })
}

/// `ready = { http = "/", timeout_ms = N }`: without `http`, ready = its port accepts a
/// connection (or, without a port, started).
fn member_ready(
    inputs: &Inputs,
    member: &Member,
    port: Option<u16>,
) -> Result<ReadyConfig, ConfigError> {
    let none = FileReady::default();
    let ready = member.file.ready.as_ref().unwrap_or(&none);
    let http = match &ready.http {
        None => None,
        Some(path) => {
            let at = Some(path.span().start);
            let key = member.key("ready.http");
            if port.is_none() {
                return Err(inputs.err(
                    at,
                    format!("{key} needs a port: give the process `port = N` or `port = \"auto\"`"),
                ));
            }
            Some(
                super::check_http_path(path.get_ref())
                    .map_err(|m| inputs.err(at, format!("{key}: {m}")))?,
            )
        }
    };
    let timeout = inputs.millis(
        &member.key("ready.timeout_ms"),
        &ready.timeout_ms,
        DEFAULT_READY_TIMEOUT_MS,
        MAX_TIMEOUT,
    )?;
    Ok(ReadyConfig { http, timeout })
}

/// `restart = "never"` (the default) or `"on-failure"`.
fn member_restart(inputs: &Inputs, member: &Member) -> Result<RestartPolicy, ConfigError> {
    let Some(restart) = &member.file.restart else {
        return Ok(RestartPolicy::Never);
    };
    match restart.get_ref().as_str() {
        "never" => Ok(RestartPolicy::Never),
        "on-failure" => Ok(RestartPolicy::OnFailure),
        other => Err(inputs.err(
            Some(restart.span().start),
            format!(
                "{} must be \"never\" or \"on-failure\", not {other:?}",
                member.key("restart")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, PYPROJECT_FILE};
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    const BACKEND_TOML: &str =
        "command = \"python -m uvicorn app:app --port {port}\"\nport = 8001\n";

    /// A project folder with `web/vite.config.ts`, `config` written to `file` in it.
    struct Loaded {
        dir: tempfile::TempDir,
        result: Result<Config, String>,
    }

    impl Loaded {
        fn ok(&self) -> &Config {
            match &self.result {
                Ok(config) => config,
                Err(e) => panic!("config refused: {e}"),
            }
        }

        fn err(&self) -> &str {
            match &self.result {
                Ok(config) => panic!("config accepted: {:?}", config.processes),
                Err(e) => e,
            }
        }

        fn process(&self, name: &str) -> &MemberConfig {
            let config = self.ok();
            config
                .processes
                .iter()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("no {name} in {:?}", config.processes))
        }

        fn root(&self) -> PathBuf {
            self.dir.path().to_path_buf()
        }
    }

    fn load_file(file: &str, text: &str, only: &[&str]) -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("web")).unwrap();
        std::fs::write(dir.path().join("web/vite.config.ts"), "").unwrap();
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let args = RunArgs {
            config: Some(path),
            only: only.iter().map(|s| s.to_string()).collect(),
            ..RunArgs::default()
        };
        let result = Config::load(&args).map_err(|e| e.to_string());
        Loaded { dir, result }
    }

    /// `BACKEND_TOML` + `stack` as devrun.toml.
    fn load(stack: &str, only: &[&str]) -> Loaded {
        load_file("devrun.toml", &format!("{BACKEND_TOML}{stack}"), only)
    }

    fn assert_at(error: &str, position: &str, words: &[&str]) {
        assert!(
            error.contains(&format!("devrun.toml:{position}: ")),
            "not at {position}: {error}"
        );
        for word in words {
            assert!(error.contains(word), "no {word:?} in: {error}");
        }
    }

    #[test]
    fn placeholders_are_filled_in_every_command_and_env() {
        let l = load(
            "[env]\nWEB = \"http://{host}:{ports.web}\"\n\
             [processes.web]\ncommand = \"npm run dev -- --port {port} --host {host}\"\n\
             port = 5173\nenv = { VITE_API_URL = \"http://127.0.0.1:{ports.backend}\", P = \"{port}\" }\n",
            &[],
        );
        let config = l.ok();
        assert_eq!(
            config.env.get("WEB").map(String::as_str),
            Some("http://127.0.0.1:5173")
        );
        let web = l.process("web");
        assert_eq!(
            web.command,
            [
                "npm",
                "run",
                "dev",
                "--",
                "--port",
                "5173",
                "--host",
                "127.0.0.1"
            ]
        );
        assert_eq!(
            web.env.get("VITE_API_URL").map(String::as_str),
            Some("http://127.0.0.1:8001")
        );
        assert_eq!(web.env.get("P").map(String::as_str), Some("5173"));
        // The backend's command sees the members' ports too; other braces are left alone.
        let l = load_file(
            "devrun.toml",
            "command = [\"x\", \"{port}\", \"{ports.web}\", \"{}\", \"{fd\"]\nport = 8001\n\
             [processes.web]\ncommand = \"w\"\nport = 5173\n",
            &[],
        );
        assert_eq!(l.ok().command, ["x", "8001", "5173", "{}", "{fd"]);
    }

    #[test]
    fn placeholders_that_cannot_be_filled_are_located() {
        let l = load(
            "[processes.web]\ncommand = \"w\"\nport = 1\n\
             env = { API = \"http://x:{ports.api}\" }\n",
            &[],
        );
        assert_at(
            l.err(),
            "6:25",
            &["{ports.api}", "no process named \"api\"", "backend, web"],
        );
        let l = load(
            "[processes.worker]\ncommand = \"w\"\n[processes.web]\ncommand = [\"w\", \"{ports.worker}\"]\n",
            &[],
        );
        assert_at(l.err(), "6:18", &["{ports.worker}", "worker has no port"]);
        let l = load("[processes.worker]\ncommand = \"w --port {port}\"\n", &[]);
        assert_at(l.err(), "4:21", &["{port}", "worker has no port"]);
        let l = load_file(
            "devrun.toml",
            "command = \"x {ports.nope}\"\nport = 8001\n",
            &[],
        );
        assert_at(l.err(), "1:14", &["`command`", "{ports.nope}"]);
    }

    #[test]
    fn auto_ports_are_free_distinct_and_templated() {
        let l = load(
            "[processes.web]\ncommand = \"w {port}\"\nport = \"auto\"\n\
             [processes.api]\ncommand = \"a\"\nport = \"auto\"\nenv = { WEB = \"{ports.web}\" }\n",
            &[],
        );
        let web = l.process("web").port.expect("web has a port");
        let api = l.process("api").port.expect("api has a port");
        assert!(web != api && web != 8001 && api != 8001, "{web} {api}");
        assert_eq!(l.process("web").command, ["w", &web.to_string()]);
        assert_eq!(
            l.process("api").env.get("WEB").map(String::as_str),
            Some(web.to_string().as_str())
        );
        let l = load(
            "[processes.web]\ncommand = \"w\"\nport = \"sometimes\"\n",
            &[],
        );
        assert_at(l.err(), "5:8", &["[processes.web] port", "\"auto\""]);
        let l = load("[processes.web]\ncommand = \"w\"\nport = 70000\n", &[]);
        assert_at(l.err(), "5:8", &["1-65535"]);
    }

    #[test]
    fn duplicate_ports_are_refused() {
        let l = load("[processes.web]\ncommand = \"w\"\nport = 8001\n", &[]);
        assert_at(l.err(), "5:8", &["port 8001 is also backend's port"]);
        let l = load(
            "[processes.web]\ncommand = \"w\"\nport = 5173\n\
             [processes.docs]\ncommand = \"d\"\nport = 5173\n",
            &[],
        );
        assert_at(
            l.err(),
            "8:8",
            &["[processes.docs] port", "also web's port"],
        );
    }

    #[test]
    fn a_cycle_in_after_is_spelled_and_located() {
        let l = load(
            "[processes.web]\ncommand = \"w\"\nafter = [\"backend\", \"api\"]\n\
             [processes.api]\ncommand = \"a\"\nafter = [\"web\"]\n",
            &[],
        );
        assert_at(l.err(), "8:10", &["cycle: web → api → web"]);
        let l = load("[processes.web]\ncommand = \"w\"\nafter = [\"web\"]\n", &[]);
        assert_at(l.err(), "5:10", &["cycle: web → web"]);
        let l = load(
            "[processes.a]\ncommand = \"a\"\nafter = [\"b\"]\n\
             [processes.b]\ncommand = \"b\"\nafter = [\"c\"]\n\
             [processes.c]\ncommand = \"c\"\nafter = [\"b\"]\n",
            &[],
        );
        assert_at(l.err(), "11:10", &["cycle: b → c → b"]);
    }

    #[test]
    fn unknown_names_in_after_and_restart_with_are_located() {
        let l = load(
            "[processes.web]\ncommand = \"w\"\nafter = [\"backend\", \"api\"]\n",
            &[],
        );
        assert_at(
            l.err(),
            "5:21",
            &[
                "[processes.web] after",
                "no process named \"api\" (known: backend, web)",
            ],
        );
        let l = load(
            "[processes.web]\ncommand = \"w\"\nrestart_with = [\"bakend\"]\n",
            &[],
        );
        assert_at(l.err(), "5:17", &["restart_with", "\"bakend\""]);
        let l = load(
            "[processes.web]\ncommand = \"w\"\nrestart_with = [\"web\"]\n",
            &[],
        );
        assert_at(l.err(), "5:17", &["cannot name itself"]);
    }

    #[test]
    fn members_start_after_those_they_name_else_in_file_order() {
        let l = load(
            "[processes.e2e]\ncommand = \"e\"\nafter = [\"web\"]\n\
             [processes.worker]\ncommand = \"k\"\n\
             [processes.web]\ncommand = \"w\"\nafter = [\"backend\"]\n",
            &[],
        );
        let order: Vec<&str> = l.ok().processes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(order, ["worker", "web", "e2e"]);
        assert!(l.ok().run_backend);
        assert_eq!(l.process("e2e").after, ["web"]);
    }

    #[test]
    fn only_keeps_the_named_members_and_drops_references_to_the_rest() {
        let stack = "[processes.web]\ncommand = \"w\"\nafter = [\"backend\", \"api\"]\n\
                     restart_with = [\"api\"]\nenv = { API = \"{ports.backend}\" }\n\
                     [processes.api]\ncommand = \"a\"\n";
        let l = load(stack, &["web"]);
        let names: Vec<&str> = l.ok().processes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["web"]);
        assert!(!l.ok().run_backend);
        let web = l.process("web");
        assert!(
            web.after.is_empty() && web.restart_with.is_empty(),
            "{web:?}"
        );
        // The backend's port is still what {ports.backend} means, run or not.
        assert_eq!(web.env.get("API").map(String::as_str), Some("8001"));

        let l = load(stack, &["backend", "web"]);
        assert!(l.ok().run_backend);
        assert_eq!(l.process("web").after, ["backend"]);
        let l = load(stack, &["backend"]);
        assert!(l.ok().run_backend && l.ok().processes.is_empty());

        let l = load(stack, &["wbe"]);
        let e = l.err();
        assert!(
            e.starts_with("--only wbe: no process named \"wbe\" (known: backend, web, api)"),
            "{e}"
        );
        let l = load("", &["web"]);
        assert!(l.err().contains("(known: backend)"), "{}", l.err());
        // A member left out is checked all the same.
        let l = load(
            &format!("{stack}[processes.docs]\ncommand = \"d\"\ncwd = \"nope\"\n"),
            &["web"],
        );
        assert!(l.err().contains("[processes.docs] cwd"), "{}", l.err());
    }

    #[test]
    fn defaults_for_cwd_ready_restart_and_watch() {
        let l = load(
            "[processes.worker]\ncommand = [\"python\", \"-m\", \"app.worker\"]\n",
            &[],
        );
        let worker = l.process("worker");
        assert_eq!(worker.cwd, l.root());
        assert_eq!(worker.port, None);
        assert_eq!(worker.ready.http, None);
        assert_eq!(
            worker.ready.timeout,
            Duration::from_millis(DEFAULT_READY_TIMEOUT_MS)
        );
        assert_eq!(worker.restart, RestartPolicy::Never);
        assert_eq!(worker.watch, ProcessWatch::None);
        assert!(worker.after.is_empty() && worker.restart_with.is_empty());

        let l = load(
            "[processes.web]\ncommand = \"w\"\ncwd = \"web\"\nport = 5173\n\
             ready = { http = \"/\", timeout_ms = 60000 }\nrestart = \"on-failure\"\n",
            &[],
        );
        let web = l.process("web");
        assert_eq!(web.cwd, l.root().join("web"));
        assert_eq!(web.ready.http.as_deref(), Some("/"));
        assert_eq!(web.ready.timeout, Duration::from_secs(60));
        assert_eq!(web.restart, RestartPolicy::OnFailure);
    }

    #[test]
    fn bad_member_keys_are_located() {
        let cases = [
            ("cwd = \"nope\"\n", "5:7", "nope is not a folder"),
            (
                "restart = \"always\"\n",
                "5:11",
                "\"never\" or \"on-failure\"",
            ),
            ("ready = { http = \"/\" }\n", "5:18", "needs a port"),
            ("port = 1\nready = { http = \"x\" }\n", "6:18", "ready.http"),
            ("colour = \"red\"\n", "5:1", "unknown field `colour`"),
        ];
        for (key, position, words) in cases {
            let l = load(&format!("[processes.web]\ncommand = \"w\"\n{key}"), &[]);
            assert_at(l.err(), position, &[words]);
        }
        let l = load("[processes.web]\ncwd = \"web\"\n", &[]);
        assert_at(l.err(), "3:12", &["[processes.web] has no `command`"]);
        let l = load("[processes.backend]\ncommand = \"w\"\n", &[]);
        assert_at(l.err(), "3:12", &["top-level command"]);
        let l = load("[processes.Web]\ncommand = \"w\"\n", &[]);
        assert_at(l.err(), "3:12", &["lowercase"]);
        let l = load(
            "[processes.web]\ncommand = \"w\"\nenv = { \"A=B\" = \"1\" }\n",
            &[],
        );
        assert_at(l.err(), "5:9", &["[processes.web] env \"A=B\""]);
    }

    #[test]
    fn watch_is_backend_or_paths_that_exist() {
        let l = load(
            "[processes.worker]\ncommand = \"k\"\nwatch = \"backend\"\n",
            &[],
        );
        assert_eq!(l.process("worker").watch, ProcessWatch::Backend);
        let l = load(
            "[processes.web]\ncommand = \"w\"\nwatch = [\"web/vite.config.ts\", \"web\"]\n",
            &[],
        );
        assert_eq!(
            l.process("web").watch,
            ProcessWatch::Paths(vec![
                l.root().join("web/vite.config.ts"),
                l.root().join("web")
            ])
        );
        let l = load(
            "[processes.web]\ncommand = \"w\"\nwatch = [\"web\", \"web/vite.config.js\"]\n",
            &[],
        );
        assert_at(l.err(), "5:17", &["vite.config.js does not exist"]);
        let l = load("[processes.web]\ncommand = \"w\"\nwatch = \"web\"\n", &[]);
        assert_at(l.err(), "5:9", &["\"backend\" or a list"]);
    }

    #[test]
    fn pyproject_members_are_read() {
        let l = load_file(
            PYPROJECT_FILE,
            &format!(
                "[project]\nname = \"x\"\n[tool.devrun]\n{BACKEND_TOML}\
                 [tool.devrun.processes.web]\ncommand = \"w {{ports.backend}}\"\nport = 5173\n"
            ),
            &[],
        );
        assert_eq!(l.process("web").command, ["w", "8001"]);
        assert_eq!(l.process("web").port, Some(5173));
    }
}
