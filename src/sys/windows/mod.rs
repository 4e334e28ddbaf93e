//! Windows: the backend in a job object (`job.rs`), the console it shares with devrun for
//! CTRL_BREAK (`console.rs`), other processes from Toolhelp and process handles (`procs.rs`),
//! port owners from the TCP tables (`tcp.rs`), owner-only named pipes (`pipe.rs`).

use std::io;
use std::net::SocketAddr;

mod console;
mod job;
mod pipe;
mod procs;
mod tcp;

pub use console::prepare_console;
pub use job::{
    describe_signal_exit, orphan_members, prepare_supervisor, share_socket, signal_pids,
    spawn_group, Group,
};
pub use pipe::{pipe_client_pid, OwnerOnly};
pub use procs::{children, command_line, is_zombie, process_table, start_time, terminate};
pub use tcp::{listener_pids, listener_pids_checked};

/// A graceful stop is the console event CTRL_BREAK to the backend's console process group;
/// there is no other signal to send it.
pub const CONSOLE_EVENTS: bool = true;
/// The wildcard probes follow Unix's bind semantics; here the bind of host:port itself answers.
pub const WILDCARD_BIND_CONFLICTS: bool = false;
/// SO_REUSEADDR would let a bind succeed over a live listener here: left off.
pub const REUSE_ADDRESS: bool = false;
/// A socket stays LISTENING under the pid of a process that is gone when a child inherited
/// its handle.
pub const SOCKETS_OUTLIVE_OWNER: bool = true;
/// The TCP table names one owner per socket (the process that created it; Wine: pid 0), never
/// the processes that inherited its handle: it cannot say who else holds devrun's socket.
pub const LISTS_EVERY_HOLDER: bool = false;

fn check(ok: i32) -> io::Result<()> {
    if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// No process groups in the Unix sense: the job object is the group.
/// Not sampled on Windows.
/// Starts `cmd` without a console and in a process group of its own (`devrun up`): the
/// terminal's Ctrl-C never reaches it, and it makes the hidden console its backends need.
pub fn detach(cmd: &mut std::process::Command) {
    use std::os::windows::process::CommandExt;
    const DETACHED_PROCESS: u32 = 0x0000_0008;
    const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
    cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
}

pub fn resident_bytes(_pid: u32) -> Option<u64> {
    None
}

/// Windows has no out-of-memory killer counter.
pub fn oom_kills() -> Option<u64> {
    None
}

/// Windows processes end by exit code, never by a signal.
pub fn exit_signal(_status: &std::process::ExitStatus) -> Option<&'static str> {
    None
}

/// Every OS exports it; only Linux's preload asks (a fork leads its own group).
#[allow(dead_code)]
pub fn process_group(_pid: u32) -> Option<u32> {
    None
}

/// Not answered here (Windows keeps a parent's pid after it exits, and reuses pids): the
/// ancestors devrun never signals are devrun alone.
pub fn parent(_pid: u32) -> Option<u32> {
    None
}

pub fn group_members(_pgid: u32) -> Vec<u32> {
    Vec::new()
}

/// The job object is the group devrun signals: nothing to refuse.
pub fn group_refusal(_pid: u32, _pgid: u32) -> Option<String> {
    None
}

/// A spare's job is its own: no other group's escapee scan can mistake it (there is none).
pub fn set_helper(_pgid: u32, _helper: bool) {}

/// Another process's environment is not read here: the job object answers for orphans.
pub fn marked(_var: &str, _value: &str, _since: u64) -> Vec<(u32, u64)> {
    Vec::new()
}

/// No watchdog on Windows: the job object's kill-on-close ends every member with devrun.
pub fn spawn_detached(
    _program: &std::path::Path,
    _args: &[std::ffi::OsString],
    _cwd: &std::path::Path,
    _stdin: std::process::Stdio,
) -> io::Result<std::process::Child> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "not needed: the job object ends every member with devrun",
    ))
}

/// Another process's environment is not read on Windows.
pub fn environment_value(_pid: u32, _var: &str) -> Option<String> {
    None
}

/// `command_line` is the executable's path here.
pub fn program_path(pid: u32) -> String {
    command_line(pid)
}

/// The TCP table has listeners only in this query: closing connections are not reported.
pub fn closing_only(_port: u16) -> Option<String> {
    None
}

pub fn listen_addresses(_port: u16) -> Vec<SocketAddr> {
    Vec::new()
}

/// ReadDirectoryChangesW sees network shares' changes well enough: `poll = true` forces it.
pub fn blind_filesystem(_path: &std::path::Path) -> Option<String> {
    None
}

/// Not looked up on Windows (its handle table is not a public interface).
pub fn has_open(_pid: u32, _path: &std::path::Path) -> Option<bool> {
    None
}

/// Not read on Windows (another process's environment block is not a public interface).
pub fn carries(_pid: u32, _var: &str, _value: &str) -> Option<bool> {
    None
}

/// Not looked up on Windows: only changes before ready count for the reload-loop guard.
pub fn holds_open(_pids: &[u32], _path: &std::path::Path) -> bool {
    false
}
