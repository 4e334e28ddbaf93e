//! Other processes: start times, exit state, paths and the Toolhelp process table.

use std::io;
use windows_sys::Win32::Foundation::{CloseHandle, FILETIME, INVALID_HANDLE_VALUE, STILL_ACTIVE};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Process32FirstW, Process32NextW, PROCESSENTRY32W, TH32CS_SNAPPROCESS,
};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, GetProcessTimes, OpenProcess, QueryFullProcessImageNameW, TerminateProcess,
    PROCESS_NAME_WIN32, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_TERMINATE,
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
        (ok != 0)
            .then(|| (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime))
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
        let ok = QueryFullProcessImageNameW(handle, PROCESS_NAME_WIN32, buf.as_mut_ptr(), &mut len);
        CloseHandle(handle);
        if ok == 0 {
            return "?".to_string();
        }
        String::from_utf16_lossy(&buf[..len as usize])
    }
}

/// Every process with its parent's pid, from one Toolhelp snapshot.
pub fn process_table() -> Vec<crate::sys::ProcessRow> {
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
            rows.push(crate::sys::ProcessRow {
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
