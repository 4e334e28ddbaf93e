//! Linux: processes from /proc, and devrun as a child subreaper whose backends die with it.

use nix::sys::prctl;
use nix::sys::signal::Signal;
use std::io;

/// Become a child subreaper, so descendants orphaned by the backend are re-parented to devrun
/// (and reaped by it) instead of to init, which in a container may never reap them.
pub fn prepare_supervisor() -> io::Result<()> {
    prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// If devrun dies without a teardown (SIGKILL, crash), the backend's leader dies with it.
pub fn die_with_supervisor(cmd: &mut tokio::process::Command) {
    let supervisor = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls.
    unsafe {
        cmd.pre_exec(move || {
            prctl::set_pdeathsig(Signal::SIGKILL)?;
            // devrun may have died between fork and prctl: then nobody would end us.
            if nix::unistd::getppid().as_raw() as u32 != supervisor {
                return Err(io::Error::other("devrun exited while starting the backend"));
            }
            Ok(())
        });
    }
}

/// devrun's descendants outside the backend's group `pgid`. devrun starts nothing but
/// backends, and as a subreaper it inherits whatever they orphan, so these are escapees.
/// Err when /proc cannot be read (say, devrun is at its descriptor limit): then nothing can
/// be confirmed gone, and the caller must not take "none found" for "none there".
pub fn escapees(pgid: u32) -> io::Result<Vec<u32>> {
    let found = descendants_in(std::path::Path::new("/proc"), std::process::id())?;
    // A process whose group cannot be read counts as an escapee: never "gone" by default.
    Ok(found
        .into_iter()
        .filter(|pid| process_group(*pid) != Some(pgid) && !is_zombie(*pid))
        .collect())
}

/// Every descendant of `pid` from `proc`'s task/*/children files; a process or thread that
/// is gone is skipped, any other read error is an error.
fn descendants_in(proc: &std::path::Path, pid: u32) -> io::Result<Vec<u32>> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for child in children_in(proc, parent)? {
            if !found.contains(&child) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    Ok(found)
}

fn children_in(proc: &std::path::Path, pid: u32) -> io::Result<Vec<u32>> {
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let tasks = match std::fs::read_dir(proc.join(pid.to_string()).join("task")) {
        Ok(tasks) => tasks,
        Err(e) if gone(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut children = Vec::new();
    for task in tasks {
        match std::fs::read_to_string(task?.path().join("children")) {
            Ok(text) => children.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            ),
            Err(e) if gone(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(children)
}

/// The resident memory of `pid` in bytes (0 for a zombie); None when it is gone.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

/// How many processes the kernel's out-of-memory killer has killed since boot.
pub fn oom_kills() -> Option<u64> {
    let vmstat = std::fs::read_to_string("/proc/vmstat").ok()?;
    vmstat
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill "))?
        .trim()
        .parse()
        .ok()
}

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
    let uid = nix::unistd::geteuid().as_raw();
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

/// The value of `var` in the environment `pid` started with; None when it has none, or the
/// environment cannot be read (gone, a zombie, another user's).
pub fn environment_value(pid: u32, var: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{var}=");
    environ.split(|b| *b == 0).find_map(|entry| {
        let value = entry.strip_prefix(prefix.as_bytes())?;
        String::from_utf8(value.to_vec()).ok()
    })
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

/// The executable itself (argv[0] is whatever the caller chose); a rebuilt binary reads
/// "<path> (deleted)".
pub fn program_path(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
        .unwrap_or_default()
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

/// Why changes made from outside may never be reported for files under `path` (its
/// filesystem forwards them from another machine or kernel), or None for a local filesystem.
pub fn blind_filesystem(path: &std::path::Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a zeroed statfs is a valid out-parameter; the path is NUL-terminated.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut fs) } != 0 {
        return None;
    }
    let name = match fs.f_type as i64 {
        0x0102_1997 => "9p",
        0x6573_5546 => "FUSE (virtiofs, Docker Desktop bind mounts, sshfs)",
        0x6969 => "NFS",
        0xFF53_4D42 | 0xFE53_4D42 | 0x517B => "CIFS/SMB",
        _ => {
            let wsl = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .is_ok_and(|r| r.to_lowercase().contains("microsoft"));
            let drive = path
                .strip_prefix("/mnt")
                .ok()
                .and_then(|rest| rest.components().next())
                .is_some_and(|c| c.as_os_str().len() == 1);
            return (wsl && drive).then(|| "a Windows drive under WSL (/mnt/<drive>)".into());
        }
    };
    Some(format!("a {name} filesystem"))
}

/// Whether `pid` has `path` open: None where the OS will not say (never on Linux).
pub fn has_open(pid: u32, path: &std::path::Path) -> Option<bool> {
    Some(holds_open(&[pid], path))
}

/// Whether `pid`'s environment holds `var=value`: None where the OS will not say (never on
/// Linux; an environment that cannot be read does not hold it).
pub fn carries(pid: u32, var: &str, value: &str) -> Option<bool> {
    Some(environment_value(pid, var).is_some_and(|v| v == value))
}

/// Whether any of `pids` has `path` open (its /proc fd links).
pub fn holds_open(pids: &[u32], path: &std::path::Path) -> bool {
    pids.iter().any(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A /proc that cannot be read is an error, never "no descendants": the teardown fails
    /// closed instead of taking a survivor for gone.
    #[test]
    fn an_unreadable_proc_is_an_error_not_an_empty_tree() {
        let proc = tempfile::tempdir().unwrap();
        let task = proc.path().join("42/task/42");
        std::fs::create_dir_all(&task).unwrap();
        std::fs::write(task.join("children"), "43 ").unwrap();
        // 43's task folder is a file: reading it fails with something other than "gone".
        std::fs::create_dir_all(proc.path().join("43")).unwrap();
        std::fs::write(proc.path().join("43/task"), "").unwrap();
        assert!(descendants_in(proc.path(), 42).is_err());
        // A process that is gone (no folder) is no error and has no children.
        std::fs::remove_file(proc.path().join("43/task")).unwrap();
        assert_eq!(descendants_in(proc.path(), 42).unwrap(), vec![43]);
        // The real /proc: devrun's test process has no children here that are not listed.
        assert!(descendants_in(std::path::Path::new("/proc"), std::process::id()).is_ok());
    }

    #[test]
    fn reads_its_own_process_from_proc() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(program_path(me), exe.to_string_lossy());
        assert!(command_line(me).contains(&*exe.file_name().unwrap().to_string_lossy()));
        assert!(parent(me).is_some_and(|p| p > 0));
        assert!(!is_zombie(me));
        let group = process_group(me).unwrap();
        assert!(group_members(group).contains(&me));
    }
}
