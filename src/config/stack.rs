//! The stack: `[processes.NAME]` tables beside the backend (which keeps the top-level keys and
//! the name `backend`), the port table behind `{port}`, `{host}` and `{ports.NAME}`, the start
//! order `after` gives, and `--only`.
//!
//! Everything is checked at load, with the file, line and column of the offending text: names,
//! ports (a duplicate, `"auto"` picked once), placeholders, references in `after` and
//! `restart_with`, and cycles in `after` (spelled out: `web → api → web`).

use super::{
    command_from_value, derive_env_table, kept_ports, FileReady, Inputs, Member as MemberConfig,
    ProcessWatch, ProjectConfig, ReadyConfig, RestartPolicy,
};
use crate::cli::RunArgs;
use crate::error::ConfigError;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use toml::Spanned;

/// The backend's name in `after`, `restart_with`, `{ports.NAME}` and `--only` (the one the
/// state file and status use too).
pub use crate::state::BACKEND;

mod order;
mod placeholders;

use order::*;

pub(super) use placeholders::Placeholders;

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
    /// What picking `port = "auto"` ports has to say (a new pick).
    pub notes: Vec<String>,
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
        let (ports, notes) = derive_ports(inputs, &members, project)?;
        let mut stack = Stack {
            processes: Vec::new(),
            run_backend: only.as_ref().is_none_or(|names| names.contains(BACKEND)),
            host: project.host.clone(),
            ports,
            known: known_names(&members),
            notes,
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
            fd: None,
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
        let fill = Placeholders {
            // Windows: the inherited handle's value, known only once devrun bound the port: the
            // spawn fills it in (process::Backend::spawn).
            fd: cfg!(unix).then_some(crate::process::INHERITED_FD),
            ..self.placeholders(BACKEND)
        };
        let span = match (&inputs.file.command, args.command.is_empty()) {
            (Some(value), true) => Some(value.span()),
            _ => None,
        };
        command
            .into_iter()
            .map(|arg| {
                fill.fill(&arg).map_err(|unfilled| match &span {
                    Some(span) => unfilled.located(inputs, "`command`", span.clone()),
                    None => ConfigError::plain(format!("the command after `--`: {unfilled}")),
                })
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

/// "no process named \"wbe\" (known: backend, web, worker)".
fn unknown_name(name: &str, known: &[String]) -> String {
    format!("no process named {name:?} (known: {})", known.join(", "))
}

fn known_names(members: &[Member]) -> Vec<String> {
    std::iter::once(BACKEND.to_string())
        .chain(members.iter().map(|m| m.name().to_string()))
        .collect()
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

/// Every member's port by name (None: it has none), the backend's included.
type Ports = BTreeMap<String, Option<u16>>;

/// Every member's port, the backend's included: fixed ones checked for duplicates, then
/// `"auto"` ones (kept per checkout, see `kept_ports`), free and distinct from every other;
/// and what the picks have to say.
fn derive_ports(
    inputs: &Inputs,
    members: &[Member],
    project: &ProjectConfig,
) -> Result<(Ports, Vec<String>), ConfigError> {
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
    let (mut held, mut notes) = (Vec::new(), Vec::new());
    for member in auto {
        let taken: Vec<u16> = ports.values().flatten().copied().collect();
        let picked = kept_ports::pick(&project.root, member.name(), &project.host, &taken)
            .map_err(|e| {
                inputs.err(
                    member.file.port.as_ref().map(|v| v.span().start),
                    format!("{} = \"auto\": {e}", member.key("port")),
                )
            })?;
        ports.insert(member.name().to_string(), Some(picked.port));
        notes.extend(picked.note);
        held.push(picked._held);
    }
    Ok((ports, notes))
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
    if let (Some(path), None) = (&ready.http, port) {
        return Err(inputs.err(
            Some(path.span().start),
            format!(
                "{} needs a port: give the process `port = N` or `port = \"auto\"`",
                member.key("ready.http")
            ),
        ));
    }
    let key = |key: &str| member.key(&format!("ready.{key}"));
    super::ready_from(inputs, ready, &key, (None, None))
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
mod tests;
