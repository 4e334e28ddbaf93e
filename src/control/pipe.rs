//! The channel on Windows: a named pipe, `\\.\pipe\devrun-<random>`, that only this user can
//! open. Its security descriptor's DACL grants access to the user devrun runs as (the SID read
//! from devrun's process token) and to no one else; the first instance is created with
//! FILE_FLAG_FIRST_PIPE_INSTANCE (a pipe of that name made by anyone before fails the create:
//! nobody can squat it), and every instance rejects remote clients. There is always one
//! instance waiting: the next is created before a connected one is handed on, so the name never
//! lapses for another process to take. The client checks that the process serving the pipe is
//! the recorded devrun before it sends the token.

use super::{Serve, BUSY_PAUSE};
use crate::sys::OwnerOnly;
use std::io;
use std::os::windows::io::AsRawHandle;
use std::sync::Arc;
use tokio::net::windows::named_pipe::{ClientOptions, NamedPipeClient, NamedPipeServer};
use tokio::sync::Semaphore;
use windows_sys::Win32::Foundation::{ERROR_PIPE_BUSY, HANDLE};
use windows_sys::Win32::System::Pipes::GetNamedPipeServerProcessId;

/// Creates the pipe (its first instance, owner-only) and answers on it until devrun exits.
/// Returns its name.
pub(super) fn listen(gate: Arc<Semaphore>, serve: Serve) -> io::Result<String> {
    let name = format!(r"\\.\pipe\devrun-{}", crate::state::random_id()?);
    let security = OwnerOnly::new()?;
    let first = security
        .create(&name, true)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create the pipe {name}: {e}")))?;
    tokio::spawn(accept(name.clone(), first, security, gate, serve));
    Ok(name)
}

async fn accept(
    name: String,
    mut waiting: NamedPipeServer,
    security: OwnerOnly,
    gate: Arc<Semaphore>,
    serve: Serve,
) {
    loop {
        let connected = waiting.connect().await;
        // The next instance first: the name never lapses while one is handed on.
        let next = loop {
            match security.create(&name, false) {
                Ok(next) => break next,
                // Out of resources and the like: try again shortly rather than spin.
                Err(_) => tokio::time::sleep(BUSY_PAUSE).await,
            }
        };
        let instance = std::mem::replace(&mut waiting, next);
        if connected.is_err() {
            // A client that came and went before it was connected: nothing to answer. The
            // pause keeps a failing connect from spinning (the next instance already waits).
            tokio::time::sleep(BUSY_PAUSE).await;
            continue;
        }
        let source = match crate::sys::pipe_client_pid(&instance) {
            Some(pid) => format!("pid {pid}"),
            None => "an unknown process".to_string(),
        };
        serve.take(instance, &gate, &source);
    }
}

/// Opens the pipe `name` and checks that the recorded devrun, `devrun_pid`, serves it: a pipe
/// served by any other process is refused before the token is sent.
pub(super) fn open(name: &str, devrun_pid: u32) -> io::Result<NamedPipeClient> {
    let client = ClientOptions::new().open(name)?;
    let mut server = 0u32;
    // SAFETY: the handle is the open client's; the pid is plain data.
    let ok = unsafe { GetNamedPipeServerProcessId(client.as_raw_handle() as HANDLE, &mut server) };
    if ok == 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("cannot tell which process serves {name} ({e}): the token was not sent"),
        ));
    }
    if server != devrun_pid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{name} is served by pid {server}, not by devrun (pid {devrun_pid}): the token \
                 was not sent"
            ),
        ));
    }
    Ok(client)
}

/// Every instance of the pipe is taken right now: worth another try shortly.
pub(super) fn busy(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32)
}
