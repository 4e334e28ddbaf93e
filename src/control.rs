//! The running devrun's control channel: `devrun stop`, `devrun restart` and `--replace` ask
//! it through here, on every OS, instead of signalling it.
//!
//! On Unix a Unix-domain socket, `.devrun/control.sock` (the folder and the socket are the
//! owner's alone, and a peer of another uid is refused): another local user cannot reach it,
//! so cannot flood devrun's descriptors either. Elsewhere (or when that path is too long for a
//! socket) a TCP listener on 127.0.0.1, port chosen by the OS. Either way a random token,
//! recorded in `.devrun/state.json`, at most [`MAX_CONNECTIONS`] at once, and a short deadline
//! for the request line. One request per connection, one line each way:
//!
//! ```text
//! → <token> stop        (or `replace`: the same stop, said to come from `devrun --replace`)
//! → <token> restart
//! ← ok                  (or `error: <why>`)
//! ```
//!
//! Requests reach the supervisor as messages in the same place Ctrl-C does.

#[cfg(unix)]
use crate::state::CONTROL_SOCKET as SOCKET_NAME;
use crate::state::{self, ControlRecord};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Semaphore;

/// A request for the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Shut down with the full confirmed teardown; the text says who asked.
    Stop(&'static str),
    /// Restart the backend now with the full confirmed teardown; the text says who asked
    /// (`devrun restart`, or `rs` typed in devrun's terminal).
    Restart(&'static str),
}

pub const STOP_REASON: &str = "stop requested by `devrun stop`";
pub const REPLACE_REASON: &str = "replaced by another devrun (--replace)";
/// Who asked for a restart through this channel.
pub const RESTART_BY: &str = "devrun restart";

/// What the client sends: the verbs of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Stop,
    Replace,
    Restart,
}

impl Verb {
    fn word(self) -> &'static str {
        match self {
            Verb::Stop => "stop",
            Verb::Replace => "replace",
            Verb::Restart => "restart",
        }
    }
}

/// How long devrun may take to answer a request line.
const LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to send its line (devrun's own clients send it at once).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections answered at once; more are closed unread (a flood cannot take every
/// descriptor devrun has).
pub const MAX_CONNECTIONS: usize = 16;
/// A request line is a 32-character token and a word: anything longer is not one.
const MAX_LINE: u64 = 256;

/// What the channel tells the user about requests it refused (each kind said once).
pub type Note = Arc<dyn Fn(String) + Send + Sync>;

/// The refusals said so far, so each kind is said once.
#[derive(Default)]
struct Said {
    wrong_token: AtomicBool,
    too_many: AtomicBool,
    #[cfg(unix)]
    other_user: AtomicBool,
}

impl Said {
    fn once(flag: &AtomicBool, note: &Note, text: String) {
        if !flag.swap(true, Ordering::Relaxed) {
            note(format!(
                "{text} (said once; later ones are refused silently)"
            ));
        }
    }
}

/// Opens the channel in `state_dir` (a Unix socket there where the OS has them, else TCP on
/// loopback) and answers requests until devrun exits, handing them to `requests`.
pub async fn listen(
    requests: UnboundedSender<Request>,
    state_dir: &Path,
    note: Note,
) -> io::Result<ControlRecord> {
    let token = state::random_id()?;
    let gate = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let said = Arc::new(Said::default());
    let serve = Serve {
        token: token.clone(),
        requests,
        note,
        said,
    };
    #[cfg(unix)]
    if let Some(listener) = unix::bind(&state_dir.join(SOCKET_NAME))? {
        let socket = Some(state_dir.join(SOCKET_NAME));
        tokio::spawn(unix::accept(listener, gate, serve));
        return Ok(ControlRecord {
            port: None,
            token,
            socket,
        });
    }
    #[cfg(not(unix))]
    let _ = state_dir;
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                // Out of descriptors and the like: try again shortly rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            serve.take(stream, &gate, &peer.to_string());
        }
    });
    Ok(ControlRecord {
        port: Some(port),
        token,
        socket: None,
    })
}

/// What every connection is answered with.
#[derive(Clone)]
struct Serve {
    token: String,
    requests: UnboundedSender<Request>,
    note: Note,
    said: Arc<Said>,
}

impl Serve {
    /// Answers `stream` (from `source`) in a task of its own, if a place is free.
    fn take<S>(&self, stream: S, gate: &Arc<Semaphore>, source: &str)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let Ok(place) = gate.clone().try_acquire_owned() else {
            let text = format!(
                "control channel: more than {MAX_CONNECTIONS} connections at once (the last \
                 from {source}); closing the rest unread"
            );
            Said::once(&self.said.too_many, &self.note, text);
            return;
        };
        let (serve, source) = (self.clone(), source.to_string());
        tokio::spawn(async move {
            if let Err(why) = answer(stream, &serve.token, &serve.requests).await {
                if why == "wrong token" {
                    let text = format!("control channel: refused a request from {source}: {why}");
                    Said::once(&serve.said.wrong_token, &serve.note, text);
                }
            }
            drop(place);
        });
    }
}

#[cfg(unix)]
mod unix {
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
                let text =
                    format!("control channel: refused a connection from {source}: another user");
                Said::once(&serve.said.other_user, &serve.note, text);
                continue;
            }
            serve.take(stream, &gate, &source);
        }
    }
}

/// Reads one request line (within [`REQUEST_TIMEOUT`]) and answers it. Err: why it was
/// refused, or that the line never came.
async fn answer<S: AsyncRead + AsyncWrite>(
    stream: S,
    token: &str,
    requests: &UnboundedSender<Request>,
) -> Result<(), &'static str> {
    let (read, mut write) = tokio::io::split(stream);
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_LINE));
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => {}
        _ => return Err("no request line in time"),
    }
    let (reply, outcome) = match parse(&line, token) {
        Ok(request) => {
            // The supervisor is gone only while devrun exits: a stop is then under way anyway.
            if requests.send(request).is_ok() || !matches!(request, Request::Restart(_)) {
                ("ok".to_string(), Ok(()))
            } else {
                ("error: devrun is shutting down".to_string(), Ok(()))
            }
        }
        Err(why) => (format!("error: {why}"), Err(why)),
    };
    let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
    let _ = write.shutdown().await;
    outcome
}

fn parse(line: &str, token: &str) -> Result<Request, &'static str> {
    let mut words = line.split_whitespace();
    let given = words.next().unwrap_or("");
    if !same_secret(given.as_bytes(), token.as_bytes()) {
        return Err("wrong token");
    }
    let request = match words.next() {
        Some("stop") => Request::Stop(STOP_REASON),
        Some("replace") => Request::Stop(REPLACE_REASON),
        Some("restart") => Request::Restart(RESTART_BY),
        _ => return Err("unknown request (expected stop, replace or restart)"),
    };
    if words.next().is_some() {
        return Err("unexpected words after the request");
    }
    Ok(request)
}

/// Compares in time that does not depend on where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Why a request did not go through.
#[derive(Debug)]
pub enum SendError {
    /// Nothing answered on the channel (devrun hung, or the record is stale).
    Unreachable(io::Error),
    /// devrun answered, and said no.
    Refused(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Unreachable(e) => write!(f, "{e}"),
            SendError::Refused(why) => write!(f, "{why}"),
        }
    }
}

/// How long a request closed unanswered is tried again: devrun closes connections beyond
/// [`MAX_CONNECTIONS`] unread, and an idle one frees its place within [`REQUEST_TIMEOUT`].
const BUSY_RETRY: Duration = Duration::from_secs(5);
const BUSY_PAUSE: Duration = Duration::from_millis(100);

/// Sends one request to the devrun that recorded `control`; Ok once it answered `ok`. A
/// connection closed without an answer (every place taken by idle connections) is tried again.
pub async fn send(control: &ControlRecord, verb: Verb) -> Result<(), SendError> {
    let line = format!("{} {}\n", control.token, verb.word());
    let deadline = tokio::time::Instant::now() + BUSY_RETRY;
    loop {
        match send_once(control, &line).await {
            Err(SendError::Unreachable(e))
                if closed_unanswered(&e) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(BUSY_PAUSE).await;
            }
            outcome => return outcome,
        }
    }
}

/// The channel took the connection and closed it unread.
fn closed_unanswered(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
    )
}

async fn send_once(control: &ControlRecord, line: &str) -> Result<(), SendError> {
    #[cfg(unix)]
    if let Some(path) = &control.socket {
        let stream = connect(tokio::net::UnixStream::connect(path)).await?;
        return exchange(stream, line).await;
    }
    let Some(port) = control.port else {
        return Err(SendError::Unreachable(io::Error::new(
            io::ErrorKind::Unsupported,
            "the channel is a Unix socket, which this OS cannot reach",
        )));
    };
    let stream = connect(TcpStream::connect(("127.0.0.1", port))).await?;
    exchange(stream, line).await
}

async fn connect<S>(
    connecting: impl std::future::Future<Output = io::Result<S>>,
) -> Result<S, SendError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(connected) => connected.map_err(SendError::Unreachable),
        Err(_) => Err(SendError::Unreachable(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
        ))),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    line: &str,
) -> Result<(), SendError> {
    let unreachable = SendError::Unreachable;
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(unreachable)?;
    let mut reply = String::new();
    let mut reader = BufReader::new(stream.take(MAX_LINE));
    tokio::time::timeout(LINE_TIMEOUT, reader.read_line(&mut reply))
        .await
        .map_err(|_| {
            SendError::Unreachable(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", LINE_TIMEOUT.as_secs()),
            ))
        })?
        .map_err(unreachable)?;
    match reply.trim() {
        "ok" => Ok(()),
        "" => Err(SendError::Unreachable(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed without an answer",
        ))),
        other => Err(SendError::Refused(
            other.strip_prefix("error: ").unwrap_or(other).to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_checks_the_token() {
        let token = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            parse(&format!("{token} stop\n"), token),
            Ok(Request::Stop(STOP_REASON))
        );
        assert_eq!(
            parse(&format!("{token} replace"), token),
            Ok(Request::Stop(REPLACE_REASON))
        );
        assert_eq!(
            parse(&format!("{token} restart\r\n"), token),
            Ok(Request::Restart(RESTART_BY))
        );
        assert!(parse("0123456789abcdef0123456789abcdee stop", token).is_err());
        assert!(parse("stop", token).is_err());
        assert!(parse(&format!("{token} dance"), token).is_err());
        assert!(parse(&format!("{token} stop now"), token).is_err());
    }

    fn notes() -> (Note, Arc<std::sync::Mutex<Vec<String>>>) {
        let said = Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = said.clone();
        let note: Note = Arc::new(move |text| into.lock().unwrap().push(text));
        (note, said)
    }

    #[tokio::test]
    async fn a_request_reaches_the_supervisor_and_a_bad_token_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (note, said) = notes();
        let control = listen(tx, dir.path(), note).await.unwrap();
        #[cfg(unix)]
        assert!(
            control.socket.is_some() && control.port.is_none(),
            "{control:?}"
        );
        send(&control, Verb::Restart).await.unwrap();
        assert_eq!(rx.recv().await, Some(Request::Restart(RESTART_BY)));
        let forged = ControlRecord {
            token: state::random_id().unwrap(),
            ..control.clone()
        };
        for _ in 0..2 {
            match send(&forged, Verb::Stop).await {
                Err(SendError::Refused(why)) => assert_eq!(why, "wrong token"),
                other => panic!("a forged token was not refused: {other:?}"),
            }
        }
        assert!(rx.try_recv().is_err());
        let said = said.lock().unwrap().clone();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains("wrong token"), "{said:?}");
    }

    /// A flood of idle connections takes at most MAX_CONNECTIONS places, each for at most the
    /// request deadline; the owner's request then goes through.
    #[tokio::test]
    async fn idle_connections_are_bounded_and_the_owner_still_gets_through() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (note, said) = notes();
        let control = listen(tx, dir.path(), note).await.unwrap();
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS * 4 {
            #[cfg(unix)]
            let stream = tokio::net::UnixStream::connect(control.socket.as_ref().unwrap()).await;
            #[cfg(not(unix))]
            let stream = TcpStream::connect(("127.0.0.1", control.port.unwrap())).await;
            if let Ok(stream) = stream {
                idle.push(stream);
            }
        }
        tokio::time::sleep(REQUEST_TIMEOUT + Duration::from_millis(500)).await;
        send(&control, Verb::Restart).await.unwrap();
        assert_eq!(rx.recv().await, Some(Request::Restart(RESTART_BY)));
        let said = said.lock().unwrap().clone();
        assert!(
            said.iter().any(|s| s.contains("connections at once")),
            "{said:?}"
        );
        drop(idle);
    }
}
