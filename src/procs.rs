//! Questions about other processes: is pid P still the process devrun recorded (same start
//! time), what is its command line, what are its children. Used to find orphans, escaped
//! descendants and the holders of a port, never to kill on a bare pid.

/// Whether `pid` is alive (not a zombie) and is the very process that started at `start`
/// (never a reused pid).
pub fn is_same(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start) && !is_zombie(pid)
}

/// One process and its parent, as a process table lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRow {
    pub pid: u32,
    pub parent: u32,
}

/// The processes still running that `dead` started, and theirs: on Windows a socket stays
/// LISTENING under the pid of a process that is gone when a child inherited its handle, and
/// these are the candidates that hold it. Empty if `dead` is in the table (it is not dead).
pub fn heirs(dead: u32, table: &[ProcessRow]) -> Vec<u32> {
    if table.iter().any(|row| row.pid == dead) {
        return Vec::new();
    }
    let mut found: Vec<u32> = Vec::new();
    let mut queue = vec![dead];
    while let Some(parent) = queue.pop() {
        for row in table
            .iter()
            .filter(|r| r.parent == parent && r.pid != parent)
        {
            if row.pid != dead && !found.contains(&row.pid) {
                found.push(row.pid);
                queue.push(row.pid);
            }
        }
    }
    found
}

/// Every descendant of `pid` (children first), where the OS tells us.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for child in children(parent) {
            if !found.contains(&child) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;

    fn stat_fields(pid: u32) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        let rest = &text[text.rfind(')')? + 2..];
        Some(rest.split_whitespace().map(str::to_string).collect())
    }

    /// Clock ticks since boot (field 22 of /proc/PID/stat).
    pub fn start_time(pid: u32) -> Option<u64> {
        stat_fields(pid)?.get(19)?.parse().ok()
    }

    pub fn is_zombie(pid: u32) -> bool {
        stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s == "Z" || s == "X"))
    }

    pub fn process_group(pid: u32) -> Option<u32> {
        stat_fields(pid)?.get(2)?.parse().ok()
    }

    pub fn parent(pid: u32) -> Option<u32> {
        stat_fields(pid)?.get(1)?.parse().ok()
    }

    /// Live processes of this user whose environment holds `var=value` and that started at or
    /// after `since`: (pid, start time). A scan of /proc reading each candidate's environ.
    pub fn marked(var: &str, value: &str, since: u64) -> Vec<(u32, u64)> {
        use std::os::unix::fs::MetadataExt;
        let needle = format!("{var}={value}");
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
                if e.metadata().ok()?.uid() != uid {
                    return None;
                }
                let start = start_time(pid).filter(|s| *s >= since)?;
                let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
                let marked = environ
                    .split(|b| *b == 0)
                    .any(|entry| entry == needle.as_bytes());
                (marked && !is_zombie(pid)).then_some((pid, start))
            })
            .collect()
    }

    pub fn command_line(pid: u32) -> String {
        match std::fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(raw) if !raw.is_empty() => raw
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            _ => std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|comm| format!("[{}]", comm.trim()))
                .unwrap_or_else(|_| "?".to_string()),
        }
    }

    /// From /proc/PID/task/*/children: one small read per thread, no scan of /proc.
    pub fn children(pid: u32) -> Vec<u32> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
            .flat_map(|text| {
                text.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }

    /// Every process whose process group is `pgid` (a scan of /proc).
    pub fn group_members(pgid: u32) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| process_group(*pid) == Some(pgid))
            .collect()
    }

    pub fn terminate(pid: u32, hard: bool) -> io::Result<()> {
        super::unix_signal(pid, hard)
    }
}

#[cfg(target_os = "macos")]
mod imp {
    use std::io;

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

    pub fn terminate(pid: u32, hard: bool) -> io::Result<()> {
        super::unix_signal(pid, hard)
    }
}

#[cfg(windows)]
mod imp {
    use std::io;
    use windows_sys::Win32::Foundation::{
        CloseHandle, FILETIME, INVALID_HANDLE_VALUE, STILL_ACTIVE,
    };
    use windows_sys::Win32::System::Diagnostics::ToolHelp::{
        CreateToolhelp32Snapshot, Process32FirstW, Process32NextW, PROCESSENTRY32W,
        TH32CS_SNAPPROCESS,
    };
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, GetProcessTimes, OpenProcess, QueryFullProcessImageNameW,
        TerminateProcess, PROCESS_NAME_WIN32, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_TERMINATE,
    };

    /// FILETIME of creation (100 ns ticks since 1601).
    pub fn start_time(pid: u32) -> Option<u64> {
        // SAFETY: the handle is checked and closed; FILETIMEs are plain data.
        unsafe {
            let handle = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
            if handle.is_null() {
                return None;
            }
            let zero = FILETIME {
                dwLowDateTime: 0,
                dwHighDateTime: 0,
            };
            let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
            let ok = GetProcessTimes(handle, &mut created, &mut exited, &mut kernel, &mut user);
            CloseHandle(handle);
            (ok != 0).then(|| {
                (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime)
            })
        }
    }

    /// Windows' zombie: a process that has exited but is still open through some handle
    /// (devrun's own, a parent's), so OpenProcess and GetProcessTimes still work on it.
    pub fn is_zombie(pid: u32) -> bool {
        // SAFETY: the handle is checked and closed; the exit code is plain data.
        unsafe {
            let handle = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
            if handle.is_null() {
                return false;
            }
            let mut code = 0u32;
            let ok = GetExitCodeProcess(handle, &mut code);
            CloseHandle(handle);
            ok != 0 && code != STILL_ACTIVE as u32
        }
    }

    pub fn process_group(_pid: u32) -> Option<u32> {
        None
    }

    /// The executable's path (reading another process's command line needs its memory).
    pub fn command_line(pid: u32) -> String {
        // SAFETY: the handle is checked and closed; the buffer and its length match.
        unsafe {
            let handle = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
            if handle.is_null() {
                return "?".to_string();
            }
            let mut buf = vec![0u16; 1024];
            let mut len = buf.len() as u32;
            let ok =
                QueryFullProcessImageNameW(handle, PROCESS_NAME_WIN32, buf.as_mut_ptr(), &mut len);
            CloseHandle(handle);
            if ok == 0 {
                return "?".to_string();
            }
            String::from_utf16_lossy(&buf[..len as usize])
        }
    }

    /// Every process with its parent's pid, from one Toolhelp snapshot.
    pub fn process_table() -> Vec<super::ProcessRow> {
        let mut rows = Vec::new();
        // SAFETY: the snapshot handle is checked and closed; PROCESSENTRY32W is plain data.
        unsafe {
            let snapshot = CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
            if snapshot == INVALID_HANDLE_VALUE {
                return rows;
            }
            let mut entry: PROCESSENTRY32W = std::mem::zeroed();
            entry.dwSize = std::mem::size_of::<PROCESSENTRY32W>() as u32;
            let mut more = Process32FirstW(snapshot, &mut entry) != 0;
            while more {
                rows.push(super::ProcessRow {
                    pid: entry.th32ProcessID,
                    parent: entry.th32ParentProcessID,
                });
                more = Process32NextW(snapshot, &mut entry) != 0;
            }
            CloseHandle(snapshot);
        }
        rows
    }

    /// Windows keeps a parent's pid after the parent exits, and pids are reused: a child must
    /// have started after its parent to be its child.
    pub fn children(pid: u32) -> Vec<u32> {
        let Some(parent_start) = start_time(pid) else {
            return Vec::new();
        };
        process_table()
            .into_iter()
            .filter(|row| row.parent == pid && row.pid != pid)
            .filter(|row| start_time(row.pid).is_some_and(|start| start >= parent_start))
            .map(|row| row.pid)
            .collect()
    }

    pub fn group_members(_pgid: u32) -> Vec<u32> {
        Vec::new()
    }

    pub fn terminate(pid: u32, _hard: bool) -> io::Result<()> {
        // SAFETY: the handle is checked and closed.
        unsafe {
            let handle = OpenProcess(PROCESS_TERMINATE, 0, pid);
            if handle.is_null() {
                return Err(io::Error::last_os_error());
            }
            let ok = TerminateProcess(handle, 1);
            CloseHandle(handle);
            if ok == 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Only Windows lists every process with its parent here; elsewhere the callers that need
/// parent links use `children`.
#[cfg(not(windows))]
pub fn process_table() -> Vec<ProcessRow> {
    Vec::new()
}

#[cfg(windows)]
pub use imp::process_table;

#[cfg(unix)]
fn unix_signal(pid: u32, hard: bool) -> std::io::Result<()> {
    use nix::sys::signal::{kill, Signal};
    let signal = if hard {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    let pid = i32::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    match kill(nix::unistd::Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub use imp::{
    children, command_line, group_members, is_zombie, process_group, start_time, terminate,
};

/// Processes marked with `var=value` in their environment (see `state::RUN_MARKER`), of this
/// user, started at or after `since`: (pid, start time). Linux only: elsewhere another process's
/// environment is not read (macOS answers for the process group, Windows for the job object).
#[cfg(target_os = "linux")]
pub use imp::marked;

#[cfg(not(target_os = "linux"))]
pub fn marked(_var: &str, _value: &str, _since: u64) -> Vec<(u32, u64)> {
    Vec::new()
}

/// Whether `pid` runs a devrun program (its executable's name starts with "devrun"): a state
/// file naming some other live process as its devrun is not believed.
pub fn is_devrun(pid: u32) -> bool {
    // Linux: the executable itself (argv[0] is whatever the caller chose); a rebuilt binary
    // reads "<path> (deleted)".
    #[cfg(target_os = "linux")]
    let program = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
        .unwrap_or_default();
    // Elsewhere `command_line` is the executable's path.
    #[cfg(not(target_os = "linux"))]
    let program = command_line(pid);
    std::path::Path::new(&program)
        .file_name()
        .is_some_and(|name| {
            name.to_string_lossy()
                .to_ascii_lowercase()
                .starts_with("devrun")
        })
}

/// devrun itself and every process above it: never signalled, whatever a record says.
pub fn self_and_ancestors() -> Vec<u32> {
    #[cfg(unix)]
    {
        let mut chain = vec![std::process::id()];
        while let Some(parent) = chain.last().and_then(|p| imp::parent(*p)) {
            if parent == 0 || chain.contains(&parent) {
                break;
            }
            chain.push(parent);
        }
        chain
    }
    #[cfg(not(unix))]
    vec![std::process::id()]
}

/// Alive and not a zombie.
pub fn running(pid: u32) -> bool {
    start_time(pid).is_some() && !is_zombie(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, parent: u32) -> ProcessRow {
        ProcessRow { pid, parent }
    }

    #[test]
    fn heirs_are_the_live_descendants_of_a_dead_pid() {
        // 10 is gone; 11 and 12 were its children, 13 a grandchild; 20 is unrelated.
        let table = [row(4, 0), row(11, 10), row(12, 10), row(13, 11), row(20, 4)];
        let mut found = heirs(10, &table);
        found.sort_unstable();
        assert_eq!(found, vec![11, 12, 13]);
        assert!(heirs(30, &table).is_empty(), "nothing was started by 30");
    }

    #[test]
    fn a_live_pid_has_no_heirs() {
        let table = [row(10, 4), row(11, 10)];
        assert!(heirs(10, &table).is_empty());
    }
}

/// Run under Wine by tests-wine/run (`windows_` in the name selects them there).
#[cfg(all(test, windows))]
mod windows_tests {
    use super::*;

    #[test]
    fn windows_an_exited_process_with_an_open_handle_is_not_the_same_process() {
        let exe = std::env::current_exe().unwrap();
        // The test binary itself, asked to list nothing: it exits at once.
        let mut child = std::process::Command::new(exe)
            .args(["--list", "--exact", "no-such-test"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = start_time(pid).expect("a start time while it runs or just after");
        child.wait().unwrap();
        // `child` still holds its process handle: the process can be opened and timed...
        assert_eq!(
            start_time(pid),
            Some(start),
            "the handle keeps the process object"
        );
        // ...but it has exited, so it is not the process devrun recorded any more.
        assert!(is_zombie(pid));
        assert!(!is_same(pid, start));
        assert!(!running(pid));
        drop(child);
    }

    #[test]
    fn windows_children_and_heirs_come_from_the_process_table() {
        let exe = std::env::current_exe().unwrap();
        let me = std::process::id();
        let table = process_table();
        assert!(
            table.iter().any(|row| row.pid == me),
            "the table lists this process"
        );
        let mut child = std::process::Command::new(exe)
            .args(["--list", "--exact", "no-such-test"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let listed = children(me).contains(&child.id());
        child.wait().unwrap();
        assert!(listed, "a running child is among children(me)");
        assert!(
            heirs(me, &process_table()).is_empty(),
            "a live pid has no heirs"
        );
    }
}
