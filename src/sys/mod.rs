//! Everything that differs between operating systems, behind one set of functions. The
//! platform layer: it uses nothing else of the crate, and what it needs to say (the stop
//! signal, a process table's row, the markers devrun puts in its processes' environment) is
//! defined here for the rest of the crate to use.
//!
//! `unix` (Linux and macOS; `unix/linux.rs` and `unix/macos.rs` hold what only one of them
//! has) and `windows` each export the same names, so the rest of the crate calls `sys::X`
//! without a `cfg`:
//!
//! - the backend's group: `Group` (`spawn_group`, `signal`, `kill`, `alive`),
//!   `prepare_supervisor`, `prepare_console`, `describe_signal_exit`, `exit_signal`,
//!   `CONSOLE_EVENTS`;
//! - processes devrun did not spawn this run: `start_time`, `is_zombie`, `process_group`,
//!   `parent`, `children`, `group_members`, `command_line`, `program_path`, `process_table`,
//!   `marked`, `terminate`, `signal_pids`, `orphan_members`, `group_refusal`, and from those
//!   (`tree.rs`, the same everywhere) `is_same` and `descendants`;
//! - a generation's memory and its files: `resident_bytes`, `oom_kills`, `holds_open`,
//!   `blind_filesystem`;
//! - the port: `listener_pids`, `listen_addresses`, `closing_only`, and the socket rules
//!   `REUSE_ADDRESS`, `WILDCARD_BIND_CONFLICTS`, `SOCKETS_OUTLIVE_OWNER`, `LISTS_EVERY_HOLDER`.
//!
//! Each answers "unknown" (empty, None) where its OS will not say, never an error.

/// Pure parts of the Windows console story, compiled everywhere so their tests run on Linux.
#[cfg_attr(not(windows), allow(dead_code))]
mod console;
mod signal;
mod tree;

pub use signal::StopSignal;
pub use tree::{descendants, is_same, ProcessRow};

/// The descriptor number the inherited listening socket has in the backend (systemd's first).
pub const INHERITED_FD: i32 = 3;

/// Windows: the environment variable that gives the backend the handle value of the listening
/// socket it inherited (`socket = "inherit"`); devrun's bootstrap takes it from there.
#[cfg_attr(not(windows), allow(dead_code))]
pub const HELD_SOCKET: &str = "DEVRUN_HELD_SOCKET";

/// The environment variable that marks every process of one devrun run (its value is the run's
/// random id): orphan recovery looks for it to find descendants that left the process group.
pub const RUN_MARKER: &str = "DEVRUN_RUN";

/// In a stack, the environment variable that names the member a process was started for
/// (`backend`, `web`, ...): tells one member's escaped descendants from another's.
pub const PROCESS_MARKER: &str = "DEVRUN_PROCESS";

/// The environment variable that names the project folder of the devrun that started a
/// process: `devrun status` of another project names whose a listener on its port is.
pub const PROJECT_MARKER: &str = "DEVRUN_PROJECT";

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
