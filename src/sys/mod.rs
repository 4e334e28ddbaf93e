//! Everything that differs between operating systems, behind one set of functions.
//!
//! `unix` (Linux and macOS; `unix/linux.rs` and `unix/macos.rs` hold what only one of them
//! has) and `windows` each export the same names, so the rest of the crate calls `sys::X`
//! without a `cfg`:
//!
//! - the backend's group: `Group` (`spawn_group`, `signal`, `kill`, `alive`),
//!   `prepare_supervisor`, `prepare_console`, `describe_signal_exit`, `CONSOLE_EVENTS`;
//! - processes devrun did not spawn this run: `start_time`, `is_zombie`, `process_group`,
//!   `parent`, `children`, `group_members`, `command_line`, `program_path`, `process_table`,
//!   `marked`, `terminate`, `signal_pids`, `orphan_members`, `group_refusal`;
//! - the port: `listener_pids`, `listen_addresses`, `closing_only`, and the socket rules
//!   `REUSE_ADDRESS`, `WILDCARD_BIND_CONFLICTS`, `SOCKETS_OUTLIVE_OWNER`.
//!
//! Each answers "unknown" (empty, None) where its OS will not say, never an error.

/// Pure parts of the Windows console story, compiled everywhere so their tests run on Linux.
#[cfg_attr(not(windows), allow(dead_code))]
mod console;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
