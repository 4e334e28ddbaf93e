//! The channel on Unix: a Unix-domain socket in `.devrun/`, owner-only, a peer of another uid
//! refused.

use super::{Said, Serve};
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

/// The longest socket path the OS takes (sun_path, less its NUL): a longer one falls back
/// to TCP.
const MAX_SOCKET_PATH: usize = 100;

/// Binds the socket at `path` (owner-only): None when the path is too long for one.
pub(super) fn bind(path: &Path) -> io::Result<Option<UnixListener>> {
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Ok(None);
    }
    // A socket left by a devrun that died: this devrun holds the project lock now.
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(Some(listener))
}

pub(super) async fn accept(listener: UnixListener, gate: Arc<Semaphore>, serve: Serve) {
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let peer = stream.peer_cred().ok();
        let (uid, pid) = (peer.map(|p| p.uid()), peer.and_then(|p| p.pid()));
        let source = match pid {
            Some(pid) => format!("pid {pid} (uid {})", uid.unwrap_or(u32::MAX)),
            None => "an unknown process".to_string(),
        };
        if uid != Some(me) {
            let text = format!("control channel: refused a connection from {source}: another user");
            Said::once(&serve.said.other_user, &serve.note, text);
            continue;
        }
        serve.take(stream, &gate, &source);
    }
}
