//! The channel a preloader or a spare connects back to, made before it starts and named in its
//! environment: on Unix a socket in a new folder only this user may enter
//! (`DEVRUN_PRELOAD_SOCKET`; descriptors travel on it with SCM_RIGHTS), on Windows a named pipe
//! only this user may open (`DEVRUN_PRELOAD_PIPE`; Python's Windows build has no Unix sockets).
//! The requests carry the backend's environment: another user must never be the first to
//! connect.

use std::io;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};

#[cfg(unix)]
pub(super) type ReadHalf = tokio::net::unix::OwnedReadHalf;
#[cfg(unix)]
pub(super) type Writer = tokio::net::unix::OwnedWriteHalf;
#[cfg(windows)]
pub(super) type ReadHalf = tokio::io::ReadHalf<tokio::net::windows::named_pipe::NamedPipeServer>;
#[cfg(windows)]
pub(super) type Writer = tokio::io::WriteHalf<tokio::net::windows::named_pipe::NamedPipeServer>;

/// What the runner says, line by line.
pub(super) type Replies = Lines<BufReader<ReadHalf>>;

/// A channel waiting for its runner; dropped, it is gone (the Unix socket's folder with it).
pub(super) struct Listening {
    #[cfg(unix)]
    listener: tokio::net::UnixListener,
    #[cfg(unix)]
    _remove: RemoveOnDrop,
    #[cfg(windows)]
    server: Option<tokio::net::windows::named_pipe::NamedPipeServer>,
    /// The variable that names it to the runner, and its value.
    pub env: (String, String),
}

/// The runner on the line: what it says, where devrun writes, and (Windows) the pid of the
/// process that opened the pipe: the interpreter itself, where the command's `python.exe` may
/// be a venv's launcher.
pub(super) struct Connection {
    pub lines: Replies,
    pub writer: Writer,
    #[cfg_attr(unix, allow(dead_code))]
    pub peer: Option<u32>,
}

impl Listening {
    /// A fresh channel, private to this user from the moment it exists.
    pub fn new() -> io::Result<Listening> {
        let id = crate::state::random_id()?;
        let id = &id[..id.len().min(16)];
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            // Bound inside a 0700 folder: a socket bound in the shared temp folder and made
            // private afterwards left a moment when anyone could connect (umask 000). The path
            // stays short enough for a Unix socket address.
            let dir = std::env::temp_dir().join(format!("devrun-preload-{id}"));
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
            let remove = RemoveOnDrop(dir.clone());
            let path = dir.join("s");
            let listener = tokio::net::UnixListener::bind(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let env = ("DEVRUN_PRELOAD_SOCKET".into(), path.display().to_string());
            Ok(Listening {
                listener,
                _remove: remove,
                env,
            })
        }
        #[cfg(windows)]
        {
            let name = format!(r"\\.\pipe\devrun-preload-{id}");
            let server = crate::sys::OwnerOnly::new()?
                .create(&name, true)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot create {name}: {e}")))?;
            Ok(Listening {
                server: Some(server),
                env: ("DEVRUN_PRELOAD_PIPE".into(), name),
            })
        }
    }

    /// Waits for the runner to connect (once).
    pub async fn accept(&mut self) -> io::Result<Connection> {
        #[cfg(unix)]
        {
            let (reader, writer) = self.listener.accept().await?.0.into_split();
            let lines = BufReader::new(reader).lines();
            Ok(Connection {
                lines,
                writer,
                peer: None,
            })
        }
        #[cfg(windows)]
        {
            let server = self
                .server
                .as_ref()
                .ok_or_else(|| io::Error::other("the channel was connected already"))?;
            server.connect().await?;
            let server = self
                .server
                .take()
                .ok_or_else(|| io::Error::other("the channel was connected already"))?;
            let peer = crate::sys::pipe_client_pid(&server);
            let (reader, writer) = tokio::io::split(server);
            Ok(Connection {
                lines: BufReader::new(reader).lines(),
                writer,
                peer,
            })
        }
    }
}

/// Writes `line` (no descriptors travel with it).
#[cfg_attr(unix, allow(dead_code))]
pub(super) async fn send(writer: &mut Writer, line: &[u8]) -> io::Result<()> {
    writer.write_all(line).await?;
    writer.flush().await
}

/// Writes `line` to `writer` with `fds` attached to its first byte (SCM_RIGHTS).
#[cfg(unix)]
pub(super) async fn send_with_fds(
    writer: &mut Writer,
    line: &[u8],
    fds: &[std::os::fd::RawFd],
) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    use std::os::fd::AsRawFd;
    let stream: &tokio::net::UnixStream = writer.as_ref();
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    // No SIGPIPE if the runner is gone (Rust ignores it anyway; macOS has no such flag).
    #[cfg(target_os = "linux")]
    let flags = MsgFlags::MSG_NOSIGNAL;
    #[cfg(not(target_os = "linux"))]
    let flags = MsgFlags::empty();
    let sent = stream
        .async_io(tokio::io::Interest::WRITABLE, || {
            let iov = [std::io::IoSlice::new(line)];
            sendmsg::<UnixAddr>(stream.as_raw_fd(), &iov, cmsgs, flags, None)
                .map_err(io::Error::from)
        })
        .await?;
    // A long environment may not fit at once: the rest follows, the descriptors went first.
    writer.write_all(&line[sent..]).await
}

/// A folder devrun made for a runner (its socket, or on Windows the runner's script): only
/// needed until the runner connected, removed when dropped.
pub(super) struct RemoveOnDrop(pub std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// The socket a preloader or spare connects back to is in a folder no other user can
    /// enter, from the moment it exists; the folder goes with the channel.
    #[tokio::test]
    async fn the_connect_back_socket_is_private_from_the_start_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let listening = Listening::new().unwrap();
        let path = std::path::PathBuf::from(&listening.env.1);
        let dir = path.parent().unwrap().to_path_buf();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
        assert!(tokio::net::UnixStream::connect(&path).await.is_ok());
        drop(listening);
        assert!(!dir.exists(), "{} was left", dir.display());
    }
}
