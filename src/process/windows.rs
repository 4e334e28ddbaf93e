//! Windows: the backend runs in a job object (so every process it starts is tracked, and the
//! whole tree dies with devrun's handle), in its own console process group so CTRL_BREAK can be
//! sent to it without reaching devrun.

use super::{console, StopSignal};
use std::io;
use std::process::ExitStatus;
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Storage::FileSystem::{
    FileNameInfo, GetFileInformationByHandleEx, GetFileType, FILE_TYPE_PIPE,
};
use windows_sys::Win32::System::Console::{
    AllocConsole, FreeConsole, GenerateConsoleCtrlEvent, GetConsoleProcessList, GetConsoleWindow,
    GetStdHandle, SetStdHandle, CTRL_BREAK_EVENT, STD_ERROR_HANDLE, STD_HANDLE, STD_INPUT_HANDLE,
    STD_OUTPUT_HANDLE,
};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Thread32First, Thread32Next, TH32CS_SNAPTHREAD, THREADENTRY32,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectBasicAccountingInformation,
    JobObjectExtendedLimitInformation, QueryInformationJobObject, SetInformationJobObject,
    TerminateJobObject, JOBOBJECT_BASIC_ACCOUNTING_INFORMATION,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::Threading::{
    OpenThread, ResumeThread, CREATE_NEW_PROCESS_GROUP, CREATE_SUSPENDED, THREAD_SUSPEND_RESUME,
};
use windows_sys::Win32::UI::WindowsAndMessaging::{ShowWindow, SW_HIDE};

/// Nothing to prepare: the job object's kill-on-close limit ends the backend with devrun.
pub fn prepare_supervisor() -> io::Result<()> {
    Ok(())
}

/// CTRL_BREAK reaches only processes that share devrun's console. Without one (an IDE, a task
/// runner, a service), devrun makes a hidden console that its backends inherit, and keeps its
/// own standard handles, so its output still goes where it went (the IDE's pipes).
pub fn prepare_console() -> Option<String> {
    let mintty = [STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE]
        .into_iter()
        .filter_map(|which| pipe_name(which))
        .any(|name| console::is_mintty_pipe(&name));
    let console = if has_console() {
        console::Console::Inherited
    } else {
        match make_hidden_console() {
            Ok(()) => console::Console::Made,
            Err(e) => console::Console::Missing(e.to_string()),
        }
    };
    console::note(&console, mintty)
}

fn has_console() -> bool {
    let mut pids = [0u32; 4];
    // SAFETY: the buffer and its length match; 0 means "no console attached".
    unsafe { GetConsoleProcessList(pids.as_mut_ptr(), pids.len() as u32) != 0 }
}

fn make_hidden_console() -> io::Result<()> {
    // SAFETY: plain calls on handles of this process; the window handle is checked.
    unsafe {
        let saved = [STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE]
            .map(|which| (which, GetStdHandle(which)));
        // A process can be attached to a console it cannot use (GetConsoleProcessList fails),
        // and AllocConsole refuses while it is: let go of it first.
        FreeConsole();
        check(AllocConsole())?;
        let window = GetConsoleWindow();
        if !window.is_null() {
            ShowWindow(window, SW_HIDE);
        }
        // AllocConsole pointed the standard handles at the new console: point them back.
        for (which, handle) in saved {
            SetStdHandle(which, handle);
        }
    }
    Ok(())
}

/// The name of the pipe behind a standard handle, if it is one.
fn pipe_name(which: STD_HANDLE) -> Option<String> {
    // SAFETY: the handle is only queried; the buffer is u32-aligned (FILE_NAME_INFO's
    // alignment) and its byte length is passed.
    unsafe {
        let handle = GetStdHandle(which);
        if handle.is_null()
            || handle == INVALID_HANDLE_VALUE
            || GetFileType(handle) != FILE_TYPE_PIPE
        {
            return None;
        }
        let mut buf = vec![0u32; 256];
        let size = (buf.len() * 4) as u32;
        if GetFileInformationByHandleEx(handle, FileNameInfo, buf.as_mut_ptr().cast(), size) == 0 {
            return None;
        }
        let bytes = buf[0] as usize;
        let chars =
            std::slice::from_raw_parts(buf.as_ptr().add(1).cast::<u16>(), (bytes / 2).min(510));
        Some(String::from_utf16_lossy(chars))
    }
}

/// An owned job object handle. Closing it kills whatever is left in the job.
pub struct Group {
    job: HANDLE,
    pid: u32,
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: `job` is a handle this struct owns and closes once.
        unsafe { CloseHandle(self.job) };
    }
}

fn check(ok: i32) -> io::Result<()> {
    if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn new_job() -> io::Result<HANDLE> {
    // SAFETY: null attributes and name are allowed; the returned handle is checked.
    let job = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
    if job.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a zeroed limit struct is valid; only the flag below is set.
    let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
    limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    // SAFETY: the pointer and size describe `limits`.
    let set = unsafe {
        SetInformationJobObject(
            job,
            JobObjectExtendedLimitInformation,
            &limits as *const _ as *const _,
            std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
        )
    };
    if let Err(e) = check(set) {
        // SAFETY: closing the handle created above.
        unsafe { CloseHandle(job) };
        return Err(e);
    }
    Ok(job)
}

/// Resumes every thread of a process created suspended (in practice its one main thread).
fn resume_threads(pid: u32) -> io::Result<()> {
    // SAFETY: the snapshot handle is checked and closed; THREADENTRY32 is plain data.
    unsafe {
        let snapshot = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
        if snapshot == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        let mut entry: THREADENTRY32 = std::mem::zeroed();
        entry.dwSize = std::mem::size_of::<THREADENTRY32>() as u32;
        let mut resumed = 0;
        let mut more = Thread32First(snapshot, &mut entry) != 0;
        while more {
            if entry.th32OwnerProcessID == pid {
                let thread = OpenThread(THREAD_SUSPEND_RESUME, 0, entry.th32ThreadID);
                if !thread.is_null() {
                    ResumeThread(thread);
                    CloseHandle(thread);
                    resumed += 1;
                }
            }
            more = Thread32Next(snapshot, &mut entry) != 0;
        }
        CloseHandle(snapshot);
        if resumed == 0 {
            return Err(io::Error::other(format!(
                "no thread of pid {pid} to resume"
            )));
        }
    }
    Ok(())
}

/// Starts the command suspended, puts it in a fresh job object, then lets it run: no process
/// of the backend can start outside the job.
pub fn spawn_group(
    mut cmd: tokio::process::Command,
    socket: Option<&socket2::Socket>,
) -> io::Result<(tokio::process::Child, Group)> {
    if socket.is_some() {
        return Err(io::Error::other(
            "an inherited socket is not supported on Windows",
        ));
    }
    cmd.creation_flags(CREATE_NEW_PROCESS_GROUP | CREATE_SUSPENDED);
    let job = new_job()?;
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            // SAFETY: closing the job created above.
            unsafe { CloseHandle(job) };
            return Err(e);
        }
    };
    let pid = child.id().unwrap_or(0);
    let group = Group { job, pid };
    let handle = child
        .raw_handle()
        .ok_or_else(|| io::Error::other("the backend exited before it was started"))?;
    // SAFETY: both handles are valid for the duration of the call.
    let assigned = check(unsafe { AssignProcessToJobObject(job, handle as HANDLE) })
        .and_then(|()| resume_threads(pid));
    if let Err(e) = assigned {
        let _ = child.start_kill();
        return Err(e);
    }
    Ok((child, group))
}

impl Group {
    pub fn signal(&self, signal: StopSignal) -> io::Result<()> {
        match signal {
            StopSignal::Kill => self.kill(),
            // SAFETY: plain call; the group id is the leader's pid (CREATE_NEW_PROCESS_GROUP).
            _ => check(unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, self.pid) }),
        }
    }

    pub fn kill(&self) -> io::Result<()> {
        // SAFETY: `job` is a valid job handle owned by self.
        check(unsafe { TerminateJobObject(self.job, 1) })
    }

    /// Whether any process of the job is still running (the job counts them for us).
    pub fn alive(&self, _leader_reaped: bool) -> bool {
        // SAFETY: a zeroed accounting struct is valid; the pointer and size describe it.
        unsafe {
            let mut info: JOBOBJECT_BASIC_ACCOUNTING_INFORMATION = std::mem::zeroed();
            let ok = QueryInformationJobObject(
                self.job,
                JobObjectBasicAccountingInformation,
                &mut info as *mut _ as *mut _,
                std::mem::size_of::<JOBOBJECT_BASIC_ACCOUNTING_INFORMATION>() as u32,
                std::ptr::null_mut(),
            );
            // If the job cannot be queried, assume the worst: the caller escalates to a kill.
            ok == 0 || info.ActiveProcesses > 0
        }
    }
}

/// A backend recorded by a devrun that is gone. Its job died with devrun (kill-on-close), so
/// at most the leader itself can be left, and only if it is the same process (start time).
pub fn orphan_members(pid: u32, _pgid: u32, start: u64) -> Vec<u32> {
    if crate::procs::is_same(pid, start) {
        vec![pid]
    } else {
        Vec::new()
    }
}

/// Windows has no signal for another console's process: every such stop is a kill.
pub fn signal_pids(_pgid: Option<u32>, members: &[u32], _signal: StopSignal) -> io::Result<()> {
    for pid in members {
        crate::procs::terminate(*pid, true)?;
    }
    Ok(())
}

pub fn describe_signal_exit(status: &ExitStatus) -> Option<String> {
    Some(format!(
        "exit status {:#x}",
        status.code().map_or(0, |c| c as u32)
    ))
}
