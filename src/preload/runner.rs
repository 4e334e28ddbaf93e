//! The embedded runner (runner.py, with its protocol part runner_protocol.py): how a
//! preloader or a spare is started, and what it says until it is ready (its `hello`, the
//! modules it skipped, then `loaded` or `refused`), with the check that nothing it loaded is
//! project code.

use super::channel::{RemoveOnDrop, Replies};
use super::protocol::{self, Reply, Spec};
use super::{Preload, Settings};
use std::io;
use std::path::Path;

/// The runner: its protocol part first, then the rest, run as one script.
pub(super) const RUNNER: &str = concat!(
    include_str!("runner_protocol.py"),
    "\n",
    include_str!("runner.py")
);

/// Environment variables, in order.
pub(super) type Vars = Vec<(String, String)>;

/// The command line that runs the embedded runner with the command's interpreter (and its
/// options), and the variables that tell it where devrun listens (`channel`, the variable
/// naming it) and what to do: preload and fork, or (`spare`) preload and then become the
/// generation. On Unix the runner is given with `-c` (a fork's title is written over that
/// long argv); on Windows, whose command lines end at 32,767 characters, it is written to a
/// file in a new folder, removed with the returned guard.
pub(super) fn runner_command(
    settings: &Settings,
    channel: &(String, String),
    spare: bool,
) -> io::Result<(Vec<String>, Vars, Option<RemoveOnDrop>)> {
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
    let written = match cfg!(windows) {
        true => {
            let (script, remove) = write_runner()?;
            command.push(script);
            Some(remove)
        }
        false => {
            command.extend(["-c".to_string(), RUNNER.to_string()]);
            None
        }
    };
    let env = vec![
        channel.clone(),
        ("DEVRUN_PRELOAD_SPEC".into(), spec),
        (
            "DEVRUN_PRELOAD_PARENT".into(),
            std::process::id().to_string(),
        ),
    ];
    Ok((command, env, written))
}

/// The runner as a file in a new folder of the temp folder (the user's own on Windows).
fn write_runner() -> io::Result<(String, RemoveOnDrop)> {
    let id = crate::state::random_id()?;
    let dir = std::env::temp_dir().join(format!("devrun-runner-{}", &id[..id.len().min(16)]));
    std::fs::create_dir(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let remove = RemoveOnDrop(dir.clone());
    let script = dir.join("devrun_runner.py");
    std::fs::write(&script, RUNNER)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", script.display())))?;
    Ok((script.display().to_string(), remove))
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
