//! The running devrun's control channel: `devrun stop`, `devrun restart` and `--replace` ask
//! it through here, on every OS, instead of signalling it.
//!
//! Another local user must not reach it at all (a flood of connections once took every
//! descriptor devrun had). On Unix a Unix-domain socket, `.devrun/control.sock` (the folder and
//! the socket are the owner's alone, and a peer of another uid is refused; `unix.rs`); where
//! that path is too long for a socket, a TCP listener on 127.0.0.1, port chosen by the OS. On
//! Windows a named pipe, `\\.\pipe\devrun-<random>`, whose DACL grants this user alone, created
//! as its first instance and rejecting remote clients; the client sends its token only to a
//! pipe served by the recorded devrun's pid (`pipe.rs`). Either way a random token, recorded in
//! `.devrun/state.json`, at most [`MAX_CONNECTIONS`] at once, and a short deadline for the
//! request line. One request per connection, one line each way:
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
#[cfg(unix)]
use tokio::net::TcpListener;
use tokio::net::TcpStream;
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

/// Opens the channel (a Unix socket in `state_dir` where the OS has them, a named pipe on
/// Windows, else TCP on loopback) and answers requests until devrun exits, handing them to
/// `requests`.
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
    let mut record = ControlRecord {
        port: None,
        token,
        socket: None,
        pipe: None,
    };
    #[cfg(windows)]
    {
        let _ = state_dir;
        record.pipe = Some(pipe::listen(gate, serve)?);
    }
    #[cfg(unix)]
    match unix::bind(&state_dir.join(SOCKET_NAME))? {
        Some(listener) => {
            record.socket = Some(state_dir.join(SOCKET_NAME));
            tokio::spawn(unix::accept(listener, gate, serve));
        }
        None => record.port = Some(listen_tcp(gate, serve).await?),
    }
    Ok(record)
}

/// The channel on 127.0.0.1, on a port the OS picks: where a Unix socket cannot be had (its
/// path too long).
#[cfg(unix)]
async fn listen_tcp(gate: Arc<Semaphore>, serve: Serve) -> io::Result<u16> {
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
    Ok(port)
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

#[cfg(windows)]
mod pipe;
#[cfg(unix)]
mod unix;

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
        // Closed without a word (a client that checked who serves the channel and left): no
        // request, so no wrong token either.
        Ok(Ok(0)) => return Err("closed without a request"),
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

/// Sends one request to the devrun that recorded `control` (its pid `devrun_pid`: on Windows
/// the pipe must be served by it); Ok once it answered `ok`. A connection closed without an
/// answer (every place taken by idle connections), or a pipe with every instance busy, is
/// tried again.
pub async fn send(control: &ControlRecord, devrun_pid: u32, verb: Verb) -> Result<(), SendError> {
    let line = format!("{} {}\n", control.token, verb.word());
    let deadline = tokio::time::Instant::now() + BUSY_RETRY;
    loop {
        match send_once(control, devrun_pid, &line).await {
            Err(SendError::Unreachable(e))
                if busy(&e) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(BUSY_PAUSE).await;
            }
            outcome => return outcome,
        }
    }
}

/// The channel took the connection and closed it unread (Windows' TCP says so with an abort),
/// or every instance of the pipe is taken.
fn busy(e: &io::Error) -> bool {
    #[cfg(windows)]
    if pipe::busy(e) {
        return true;
    }
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

async fn send_once(control: &ControlRecord, devrun_pid: u32, line: &str) -> Result<(), SendError> {
    #[cfg(unix)]
    if let Some(path) = &control.socket {
        let stream = connect(tokio::net::UnixStream::connect(path)).await?;
        return exchange(stream, line).await;
    }
    #[cfg(windows)]
    if let Some(name) = &control.pipe {
        let pipe = pipe::open(name, devrun_pid).map_err(SendError::Unreachable)?;
        return exchange(pipe, line).await;
    }
    #[cfg(not(windows))]
    let _ = devrun_pid;
    // A TCP port: where the Unix socket's path was too long, or an older devrun's.
    let Some(port) = control.port else {
        return Err(SendError::Unreachable(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "the channel is {}, which this OS cannot reach",
                control.describe()
            ),
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
mod tests;
