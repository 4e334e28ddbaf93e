//! The backend runs in a job object (so every process it starts is tracked, and the whole tree
//! dies with devrun's handle), in its own console process group so CTRL_BREAK can be sent to it
//! without reaching devrun.
//!
//! Kept rather than `process-wrap`'s JobObject: that one learns the job is empty from the
//! completion port's ACTIVE_PROCESS_ZERO message, which Windows does not guarantee to deliver,
//! and only in a blocking wait; devrun asks the job's ActiveProcesses count on every poll of
//! its escalation, so "every process is gone" is confirmed, not inferred.

use super::check;
use crate::sys::StopSignal;
use std::io;
use std::os::windows::io::AsRawSocket;
use std::process::ExitStatus;
use std::sync::{Mutex, PoisonError};
use windows_sys::Win32::Foundation::{
    CloseHandle, SetHandleInformation, HANDLE, HANDLE_FLAG_INHERIT, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::System::Console::{GenerateConsoleCtrlEvent, CTRL_BREAK_EVENT};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Thread32First, Thread32Next, TH32CS_SNAPTHREAD, THREADENTRY32,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, IsProcessInJob,
    JobObjectBasicAccountingInformation, JobObjectExtendedLimitInformation,
    QueryInformationJobObject, SetInformationJobObject, TerminateJobObject,
    JOBOBJECT_BASIC_ACCOUNTING_INFORMATION, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::Threading::{
    OpenProcess, OpenThread, ResumeThread, CREATE_NEW_PROCESS_GROUP, CREATE_SUSPENDED,
    PROCESS_QUERY_INFORMATION, THREAD_SUSPEND_RESUME,
};

/// Nothing to prepare: the job object's kill-on-close limit ends the backend with devrun.
pub fn prepare_supervisor() -> io::Result<()> {
    Ok(())
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

/// One spawn at a time. std starts every process with bInheritHandles=TRUE, so while the held
/// socket is inheritable (during its generation's spawn only) any other process started then
/// (a stack member's) would get it too, out of the job whose end proves the socket let go.
static SPAWNING: Mutex<()> = Mutex::new(());

/// Starts the command suspended, puts it in a fresh job object, then lets it run: no process
/// of the backend can start outside the job.
///
/// With `socket` (`socket = "inherit"`), the held listening socket is inheritable for this
/// spawn only, and the backend learns its handle value from [`crate::sys::HELD_SOCKET`]: an
/// inherited handle keeps its value in the child and in the interpreter a launcher (a venv's
/// python.exe) starts in turn, where a `WSADuplicateSocket` copy would land in the launcher.
pub fn spawn_group(
    mut cmd: tokio::process::Command,
    socket: Option<&socket2::Socket>,
) -> io::Result<(tokio::process::Child, Group)> {
    let _alone = SPAWNING.lock().unwrap_or_else(PoisonError::into_inner);
    cmd.creation_flags(CREATE_NEW_PROCESS_GROUP | CREATE_SUSPENDED);
    if let Some(socket) = socket {
        cmd.env(crate::sys::HELD_SOCKET, socket.as_raw_socket().to_string());
    }
    let job = new_job()?;
    let spawned = match socket {
        Some(socket) => spawn_inheriting(&mut cmd, socket),
        None => cmd.spawn(),
    };
    let mut child = match spawned {
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

/// Spawns `cmd` with `socket` inheritable, and makes it non-inheritable again at once. If that
/// fails the child is killed (still suspended, outside any job): a socket left inheritable
/// would reach every process devrun starts later.
fn spawn_inheriting(
    cmd: &mut tokio::process::Command,
    socket: &socket2::Socket,
) -> io::Result<tokio::process::Child> {
    let handle = socket.as_raw_socket() as HANDLE;
    let inheritable = |on: bool| {
        let flags = if on { HANDLE_FLAG_INHERIT } else { 0 };
        // SAFETY: `handle` is the socket devrun holds open for the whole call.
        check(unsafe { SetHandleInformation(handle, HANDLE_FLAG_INHERIT, flags) })
    };
    inheritable(true)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot hand the socket over: {e}")))?;
    let spawned = cmd.spawn();
    if let Err(e) = inheritable(false) {
        if let Ok(mut child) = spawned {
            let _ = child.start_kill();
        }
        return Err(io::Error::new(
            e.kind(),
            format!("cannot make the held socket private to devrun again: {e}"),
        ));
    }
    spawned
}

impl Group {
    /// The job object lists every process itself: nothing is ever unseen.
    pub fn blind(&self) -> Option<String> {
        None
    }

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

    /// Whether `pid` is a process of this job (a venv's `python.exe` launcher starts the real
    /// interpreter as a child: both are).
    pub fn holds(&self, pid: u32) -> bool {
        // SAFETY: the process handle is checked and closed; the job handle is ours.
        unsafe {
            let process = OpenProcess(PROCESS_QUERY_INFORMATION, 0, pid);
            if process.is_null() {
                return false;
            }
            let mut inside = 0;
            let ok = IsProcessInJob(process, self.job, &mut inside);
            CloseHandle(process);
            ok != 0 && inside != 0
        }
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
    if crate::sys::is_same(pid, start) {
        vec![pid]
    } else {
        Vec::new()
    }
}

/// Windows has no signal for another console's process: every such stop is a kill.
pub fn signal_pids(_groups: &[u32], members: &[u32], _signal: StopSignal) -> io::Result<()> {
    for pid in members {
        super::terminate(*pid, true)?;
    }
    Ok(())
}

pub fn describe_signal_exit(status: &ExitStatus) -> Option<String> {
    Some(format!(
        "exit status {:#x}",
        status.code().map_or(0, |c| c as u32)
    ))
}

/// The listening socket devrun holds, duplicated for process `pid` (`WSADuplicateSocketW`): the
/// bytes of the WSAPROTOCOL_INFOW that Python's `socket.fromshare` takes in that process. A warm
/// spare gets the socket so, once it is told to run: it was started long before, and must not
/// hold the socket while it waits.
pub fn share_socket(socket: &socket2::Socket, pid: u32) -> io::Result<Vec<u8>> {
    use windows_sys::Win32::Networking::WinSock::{
        WSADuplicateSocketW, WSAGetLastError, WSAPROTOCOL_INFOW,
    };
    // SAFETY: a zeroed WSAPROTOCOL_INFOW is valid plain data, filled by the call; the socket is
    // the live one devrun holds.
    unsafe {
        let mut info: WSAPROTOCOL_INFOW = std::mem::zeroed();
        if WSADuplicateSocketW(socket.as_raw_socket() as usize, pid, &mut info) != 0 {
            return Err(io::Error::from_raw_os_error(WSAGetLastError()));
        }
        let bytes = std::slice::from_raw_parts(
            (&info as *const WSAPROTOCOL_INFOW).cast::<u8>(),
            std::mem::size_of::<WSAPROTOCOL_INFOW>(),
        );
        Ok(bytes.to_vec())
    }
}

/// Run by `cargo test` on Windows (and by the Wine lane's unit scenario).
#[cfg(test)]
mod windows_tests {
    use super::*;

    /// Issue 19: the interpreter a spare's `python.exe` launcher starts is proven to be of the
    /// spare's job before the held socket is duplicated for it; devrun itself is of no job.
    #[tokio::test]
    async fn windows_a_job_holds_its_processes_and_no_other() {
        let mut cmd = tokio::process::Command::new("cmd.exe");
        cmd.args(["/c", "pause"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        let (child, group) = spawn_group(cmd, None).unwrap();
        let pid = child.id().unwrap();
        assert!(group.holds(pid), "the job's own process, pid {pid}");
        assert!(
            !group.holds(std::process::id()),
            "devrun is of no backend's job"
        );
        group.kill().unwrap();
    }
}
