//! devrun: one supervised backend per project, restarted with a confirmed teardown on every change.
//!
//! Each module owns one concern and can be used alone; only `supervisor` knows them all.

pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod envfile;
pub mod error;
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
