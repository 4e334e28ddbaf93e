//! The integration tests: one binary (one link on a 2-core machine), a module per topic, all on
//! one harness ([`harness::Project`]). They drive the real `devrun` binary against real Python
//! processes from `fixtures/` and observe them through `/proc`, hence Linux only.
//!
//! Run one topic with `scripts/test --test it restart::`, one test by its name.
#![cfg(target_os = "linux")]

mod harness;

mod config;
mod control;
mod crash_summary;
mod env_poll_guard;
mod events;
mod fast_stop;
mod fastapi;
mod hostile_input;
mod hostile_tree;
mod imports;
mod inherit;
mod init;
mod once;
mod orphan;
mod own_reloader;
mod preload;
mod preload_hostile;
mod pyproject;
mod real_layouts;
mod reliability;
mod reload_only;
mod restart;
mod serve;
mod shutdown;
mod single_instance;
mod small_cli;
mod spare;
mod stack;
mod stack_config;
mod stack_state;
mod stack_status;
mod typed;
mod up;
mod validation;
mod watch_filter;
mod watchdog;
mod watching;
