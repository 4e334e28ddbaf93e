//! macOS: processes from libproc (`proc_pidinfo`), port owners from the `listeners` crate
//! (libproc's socket descriptors: pid, path and address, no `lsof` shell-out).

use std::io;
use std::net::SocketAddr;

/// No subreaper on macOS: the process group is what devrun can answer for.
pub fn prepare_supervisor() -> io::Result<()> {
    Ok(())
}

/// No parent-death signal on macOS: a backend outlives a devrun that is killed, and the next
/// devrun ends it as an orphan.
pub fn die_with_supervisor(_cmd: &mut tokio::process::Command) {}

/// Without a subreaper nothing that left the group comes back to devrun.
pub fn escapees(_pgid: u32) -> std::io::Result<Vec<u32>> {
    Ok(Vec::new())
}

/// Another process's environment is not read here (escapees are not looked for either).
pub fn environment_value(_pid: u32, _var: &str) -> Option<String> {
    None
}

fn bsd_info(pid: u32) -> Option<libc::proc_bsdinfo> {
    // SAFETY: the buffer is a properly sized, zeroed proc_bsdinfo.
    unsafe {
        let mut info: libc::proc_bsdinfo = std::mem::zeroed();
        let size = std::mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
        let n = libc::proc_pidinfo(
            pid as libc::c_int,
            libc::PROC_PIDTBSDINFO,
            0,
            &mut info as *mut _ as *mut libc::c_void,
            size,
        );
        (n == size).then_some(info)
    }
}

/// Microseconds since the epoch.
/// Not sampled on macOS: a SIGKILL is then described without the memory hint.
pub fn resident_bytes(_pid: u32) -> Option<u64> {
    None
}

/// macOS has no counter of out-of-memory kills (jetsam) to read.
pub fn oom_kills() -> Option<u64> {
    None
}

pub fn start_time(pid: u32) -> Option<u64> {
    let info = bsd_info(pid)?;
    Some(info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec)
}

pub fn is_zombie(pid: u32) -> bool {
    bsd_info(pid).is_some_and(|i| i.pbi_status == libc::SZOMB as u32)
}

pub fn process_group(pid: u32) -> Option<u32> {
    bsd_info(pid).map(|i| i.pbi_pgid)
}

pub fn parent(pid: u32) -> Option<u32> {
    bsd_info(pid).map(|i| i.pbi_ppid)
}

/// The executable's path (another process's arguments need `sysctl(KERN_PROCARGS2)`).
pub fn command_line(pid: u32) -> String {
    let mut buf = vec![0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
    // SAFETY: the buffer and its length match.
    let n = unsafe {
        libc::proc_pidpath(
            pid as libc::c_int,
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len() as u32,
        )
    };
    if n <= 0 {
        return "?".to_string();
    }
    String::from_utf8_lossy(&buf[..n as usize]).into_owned()
}

pub fn program_path(pid: u32) -> String {
    command_line(pid)
}

pub fn children(pid: u32) -> Vec<u32> {
    let mut pids = vec![0 as libc::pid_t; 1024];
    // SAFETY: the buffer and its byte length match.
    let n = unsafe {
        libc::proc_listchildpids(
            pid as libc::pid_t,
            pids.as_mut_ptr() as *mut libc::c_void,
            (pids.len() * std::mem::size_of::<libc::pid_t>()) as libc::c_int,
        )
    };
    pids.truncate(n.max(0) as usize);
    pids.into_iter()
        .filter(|p| *p > 0)
        .map(|p| p as u32)
        .collect()
}

/// Not available without a full process scan; the group is signalled as a whole instead.
pub fn group_members(_pgid: u32) -> Vec<u32> {
    Vec::new()
}

/// Another process's environment is not read here: the process group answers for orphans.
pub fn marked(_var: &str, _value: &str, _since: u64) -> Vec<(u32, u64)> {
    Vec::new()
}

/// The TCP listeners on `port`, any address, as (pid, address). Empty if the OS won't say.
fn listeners_on(port: u16) -> Vec<(u32, SocketAddr)> {
    let Ok(all) = listeners::get_all() else {
        return Vec::new();
    };
    all.into_iter()
        .filter(|l| {
            l.protocol == listeners::Protocol::TCP
                && l.state == listeners::SocketState::Listen
                && l.socket.port() == port
        })
        .map(|l| (l.process.pid, l.socket))
        .collect()
}

/// The owners, as `listener_pids` gives them (the OS answers in one call, or not at all).
pub fn listener_pids_checked(port: u16) -> std::io::Result<Vec<u32>> {
    Ok(listener_pids(port))
}

pub fn listener_pids(port: u16) -> Vec<u32> {
    listeners_on(port).into_iter().map(|(pid, _)| pid).collect()
}

pub fn listen_addresses(port: u16) -> Vec<SocketAddr> {
    let mut found: Vec<SocketAddr> = listeners_on(port).into_iter().map(|(_, a)| a).collect();
    found.sort();
    found.dedup();
    found
}

/// libproc lists sockets by owner: the kernel's ownerless closing connections are not seen.
pub fn closing_only(_port: u16) -> Option<String> {
    None
}

/// Network and FUSE mounts are not told apart here yet: `poll = true` forces polling.
pub fn blind_filesystem(_path: &std::path::Path) -> Option<String> {
    None
}

/// Not looked up on macOS (libproc lists vnode paths only for the caller's own files).
pub fn has_open(_pid: u32, _path: &std::path::Path) -> Option<bool> {
    None
}

/// macOS does not show another process's environment.
pub fn carries(_pid: u32, _var: &str, _value: &str) -> Option<bool> {
    None
}

/// Not looked up on macOS: only changes before ready count for the reload-loop guard.
pub fn holds_open(_pids: &[u32], _path: &std::path::Path) -> bool {
    false
}
