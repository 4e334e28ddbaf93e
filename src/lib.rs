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
pub mod control;
pub mod envfile;
pub mod error;
pub mod fast_stop;
pub mod guard;
pub mod init;
pub mod output;
pub mod poller;
pub mod port;
pub mod preload;
pub mod process;
pub mod procs;
pub mod project;
pub mod state;
pub mod stdin;
pub mod summary;
pub mod supervisor;
mod sys;
pub mod ui;
pub mod watch;

pub use error::{Error, ExitCode};
