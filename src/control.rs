//! The running devrun's control channel: `devrun stop`, `devrun restart` and `--replace` ask
//! it through here, on every OS, instead of signalling it.
//!
//! A TCP listener on 127.0.0.1 (port chosen by the OS) and a random token, both recorded in
//! `.devrun/state.json` (owner-only on Unix). One request per connection, one line each way:
//!
//! ```text
//! → <token> stop        (or `replace`: the same stop, said to come from `devrun --replace`)
//! → <token> restart
//! ← ok                  (or `error: <why>`)
//! ```
//!
//! Requests reach the supervisor as messages in the same place Ctrl-C does.

use crate::state::{self, ControlRecord};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedSender;

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

/// How long a client may take to send its line, and devrun to answer it.
const LINE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A request line is a 32-character token and a word: anything longer is not one.
const MAX_LINE: u64 = 256;

/// Opens the channel and answers requests until devrun exits, handing them to `requests`.
pub async fn listen(requests: UnboundedSender<Request>) -> io::Result<ControlRecord> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let token = state::random_id()?;
    let expected = token.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors and the like: try again shortly rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let (expected, requests) = (expected.clone(), requests.clone());
            tokio::spawn(async move {
                let _ = answer(stream, &expected, &requests).await;
            });
        }
    });
    Ok(ControlRecord { port, token })
}

async fn answer(
    stream: TcpStream,
    token: &str,
    requests: &UnboundedSender<Request>,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_LINE));
    tokio::time::timeout(LINE_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let reply = match parse(&line, token) {
        Ok(request) => {
            // The supervisor is gone only while devrun exits: a stop is then under way anyway.
            if requests.send(request).is_ok() || !matches!(request, Request::Restart(_)) {
                "ok".to_string()
            } else {
                "error: devrun is shutting down".to_string()
            }
        }
        Err(why) => format!("error: {why}"),
    };
    write.write_all(format!("{reply}\n").as_bytes()).await?;
    write.shutdown().await
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

/// Sends one request to the devrun that recorded `control`; Ok once it answered `ok`.
pub async fn send(control: &ControlRecord, verb: Verb) -> Result<(), SendError> {
    let unreachable = SendError::Unreachable;
    let timed_out = |what: &str| {
        SendError::Unreachable(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no {what} within {} s", LINE_TIMEOUT.as_secs()),
        ))
    };
    let mut stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect(("127.0.0.1", control.port)),
    )
    .await
    .map_err(|_| timed_out("connection"))?
    .map_err(unreachable)?;
    let line = format!("{} {}\n", control.token, verb.word());
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(unreachable)?;
    let mut reply = String::new();
    let mut reader = BufReader::new(stream.take(MAX_LINE));
    tokio::time::timeout(LINE_TIMEOUT, reader.read_line(&mut reply))
        .await
        .map_err(|_| timed_out("answer"))?
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

    #[tokio::test]
    async fn a_request_reaches_the_supervisor_and_a_bad_token_does_not() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let control = listen(tx).await.unwrap();
        send(&control, Verb::Restart).await.unwrap();
        assert_eq!(rx.recv().await, Some(Request::Restart(RESTART_BY)));
        let forged = ControlRecord {
            port: control.port,
            token: state::random_id().unwrap(),
        };
        match send(&forged, Verb::Stop).await {
            Err(SendError::Refused(why)) => assert_eq!(why, "wrong token"),
            other => panic!("a forged token was not refused: {other:?}"),
        }
        assert!(rx.try_recv().is_err());
    }
}
