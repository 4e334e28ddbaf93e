//! devrun: one supervised backend per project, restarted with a confirmed teardown on every change.
//!
//! Each module owns one concern, and imports point one way, down these layers:
//!
//! - `sys`: the platform layer (process groups, job objects, /proc, TCP tables); uses nothing
//!   else of the crate, and defines the words the others share with it (`StopSignal`,
//!   `ProcessRow`, the environment markers);
//! - `output` (copying what the backend writes), `ui` (status lines), `procs` and `port`
//!   (questions about other processes and the port), `summary` (crash summaries);
//! - `state` (`.devrun/`), `control` (the control channel), `stdin` (typed lines);
//! - `process`: a generation (process group + output streams) and the one stop escalation;
//! - `project`, `commands` and `supervisor`, which use the rest.

pub mod cli;
pub mod commands;
pub mod config;
pub(crate) mod control;
pub(crate) mod envfile;
pub mod error;
pub(crate) mod fast_stop;
pub(crate) mod guard;
pub mod init;
pub(crate) mod logfile;
pub(crate) mod output;
pub(crate) mod poller;
pub(crate) mod port;
pub(crate) mod preload;
pub(crate) mod process;
pub(crate) mod procs;
pub(crate) mod project;
pub(crate) mod reloader;
pub(crate) mod state;
pub(crate) mod stdin;
pub(crate) mod summary;
pub mod supervisor;
mod sys;
pub mod ui;
pub(crate) mod watch;
pub(crate) mod watchdog;

pub use error::{Error, ExitCode};

/// Unit tests that start processes take this lock: a runner's stop looks for escapees among
/// every descendant of the test process outside its group (devrun starts nothing else), so
/// run beside them it would signal another test's children.
#[cfg(all(test, unix))]
pub(crate) fn children_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
