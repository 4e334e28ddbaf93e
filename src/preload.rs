//! `[server] preload`: the project's third-party modules are imported before the save arrives.
//! On Linux a long-lived Python interpreter, the preloader, imports them once and each
//! generation is a fork of it instead of a fresh interpreter; elsewhere (and where a fork is
//! refused) a warm spare interpreter imports them and becomes the next generation. The runner
//! is src/preload/runner.py, embedded here (`runner.rs` starts it).
//!
//! devrun keeps its promise that no project module survives a change: the preloader never
//! holds a module whose file devrun's watch filter would restart on (checked on every start),
//! it has one thread, it is replaced when a file it loaded changes or its environment does, and
//! each fork happens only after the old generation was torn down and the port confirmed free.
//!
//! - [`Settings`] (and its [`Launch`]) is what config derives once at load;
//! - [`protocol`] is what devrun and the preloader say to each other;
//! - [`Slot`] is the supervisor's preloader (or spare) across generations;
//! - `channel` is how a runner connects back (a Unix socket, or a named pipe on Windows);
//! - `spare` is the warm spare interpreter (`preload_method = "spare"`, and where a fork is
//!   refused for a thread or a socket): a fresh interpreter that imports the same modules with
//!   the same proofs, waits, and becomes the generation when told.

mod channel;
mod launch;
#[cfg(target_os = "linux")]
mod preloader;
pub mod protocol;
mod runner;
mod slot;
mod spare;

pub use launch::Launch;
pub use slot::{Preloaded, Slot, Wanted};

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the preloader imports before it forks generations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preload {
    /// The third-party modules the project's files import, and the module the command runs.
    Auto,
    /// Exactly these modules.
    Modules(Vec<String>),
}

/// How a preloaded generation starts (`[server] preload_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A fork of the preloader (Linux only; refused when an import starts a thread or opens
    /// a socket, and then a spare is used).
    Fork,
    /// A warm spare interpreter that becomes the generation, with a new one behind it (every
    /// OS; the default off Linux).
    Spare,
}

/// Everything preload needs from the configuration, derived once at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// What the preloader imports.
    pub imports: Preload,
    /// Fork or spare.
    pub method: Method,
    /// How the command runs Python: what the preloader runs and each fork runs.
    pub launch: Launch,
    /// The project folder: where the preloader and every fork run, and where "auto" reads
    /// the imports; only a file inside it can be project code.
    pub root: PathBuf,
    /// What `ps` shows for a fork: the command, as a cold start shows it.
    pub title: String,
    /// `socket = "inherit"`: every fork gets the held socket (a fork without one is refused).
    pub inherit_socket: bool,
    /// How long the preloader may take to import its modules (the readiness timeout).
    pub start_timeout: Duration,
}

impl Settings {
    /// The settings for running `command` in `root` preloaded; an error (the message a config
    /// error shows) when the command is not one preload can run.
    pub fn new(
        (imports, method): (Preload, Method),
        command: &[String],
        root: &Path,
        inherit_socket: bool,
        start_timeout: Duration,
    ) -> Result<Settings, String> {
        Ok(Settings {
            imports,
            method,
            launch: Launch::parse(command, root)?,
            root: root.to_path_buf(),
            title: command.join(" "),
            inherit_socket,
            start_timeout,
        })
    }
}
