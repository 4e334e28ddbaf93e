//! The protocol, and the channel of this OS (the Unix socket; the named pipe under Windows,
//! where tests-wine/run runs these) against real connections.

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

type Said = Arc<std::sync::Mutex<Vec<String>>>;

/// A channel listening in a fresh folder: the folder (kept while it runs), its record, the
/// requests it hands on, and what it said.
struct Channel {
    _dir: tempfile::TempDir,
    control: ControlRecord,
    rx: tokio::sync::mpsc::UnboundedReceiver<Request>,
    said: Said,
}

async fn channel() -> Channel {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let said: Said = Arc::default();
    let into = said.clone();
    let note: Note = Arc::new(move |text| into.lock().unwrap().push(text));
    let control = listen(tx, dir.path(), note).await.unwrap();
    Channel {
        _dir: dir,
        control,
        rx,
        said,
    }
}

/// The process that serves the channel in these tests: this one.
fn me() -> u32 {
    std::process::id()
}

#[tokio::test]
async fn a_request_reaches_the_supervisor_and_a_bad_token_does_not() {
    // `_dir` is bound (not `..`): the folder must outlive the test.
    let Channel {
        _dir,
        control,
        mut rx,
        said,
    } = channel().await;
    #[cfg(unix)]
    assert!(
        control.socket.is_some() && control.port.is_none() && control.pipe.is_none(),
        "{control:?}"
    );
    #[cfg(windows)]
    assert!(
        control
            .pipe
            .as_deref()
            .is_some_and(|p| p.starts_with(r"\\.\pipe\devrun-"))
            && control.port.is_none()
            && control.socket.is_none(),
        "{control:?}"
    );
    send(&control, me(), Verb::Restart).await.unwrap();
    assert_eq!(rx.recv().await, Some(Request::Restart(RESTART_BY)));
    let forged = ControlRecord {
        token: state::random_id().unwrap(),
        ..control.clone()
    };
    for _ in 0..2 {
        match send(&forged, me(), Verb::Stop).await {
            Err(SendError::Refused(why)) => assert_eq!(why, "wrong token"),
            other => panic!("a forged token was not refused: {other:?}"),
        }
    }
    assert!(rx.try_recv().is_err());
    let said = said.lock().unwrap().clone();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("wrong token"), "{said:?}");
}

/// An idle connection to the channel; None when it was refused.
#[cfg(unix)]
async fn idle_connection(control: &ControlRecord) -> Option<tokio::net::UnixStream> {
    let socket = control.socket.as_ref().unwrap();
    tokio::net::UnixStream::connect(socket).await.ok()
}

/// An idle connection to the pipe (waiting while every instance is taken); None when it was
/// refused.
#[cfg(windows)]
async fn idle_connection(
    control: &ControlRecord,
) -> Option<tokio::net::windows::named_pipe::NamedPipeClient> {
    let name = control.pipe.as_ref().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::windows::named_pipe::ClientOptions::new().open(name) {
            Ok(client) => return Some(client),
            Err(e) if pipe::busy(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(_) => return None,
        }
    }
}

/// A client that connects and leaves without a word (the Windows client does, when the pipe
/// is not served by the recorded devrun) sent no token: no "wrong token" is said for it.
#[tokio::test]
async fn a_connection_closed_without_a_word_is_no_wrong_token() {
    // `_dir` is bound (not `..`): the folder must outlive the test.
    let Channel {
        _dir,
        control,
        mut rx,
        said,
    } = channel().await;
    drop(idle_connection(&control).await.expect("no connection"));
    tokio::time::sleep(REQUEST_TIMEOUT + Duration::from_millis(500)).await;
    assert!(
        said.lock().unwrap().is_empty(),
        "{:?}",
        said.lock().unwrap()
    );
    send(&control, me(), Verb::Stop).await.unwrap();
    assert_eq!(rx.recv().await, Some(Request::Stop(STOP_REASON)));
}

/// A flood of idle connections takes at most MAX_CONNECTIONS places, each for at most the
/// request deadline; the owner's request then goes through.
#[tokio::test]
async fn idle_connections_are_bounded_and_the_owner_still_gets_through() {
    // `_dir` is bound (not `..`): the folder must outlive the test.
    let Channel {
        _dir,
        control,
        mut rx,
        said,
    } = channel().await;
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS * 4 {
        idle.extend(idle_connection(&control).await);
    }
    assert!(
        idle.len() > MAX_CONNECTIONS,
        "only {} connections",
        idle.len()
    );
    tokio::time::sleep(REQUEST_TIMEOUT + Duration::from_millis(500)).await;
    send(&control, me(), Verb::Restart).await.unwrap();
    assert_eq!(rx.recv().await, Some(Request::Restart(RESTART_BY)));
    let said = said.lock().unwrap().clone();
    assert!(
        said.iter().any(|s| s.contains("connections at once")),
        "{said:?}"
    );
    drop(idle);
}

/// A pipe served by a process that is not the recorded devrun (a squatter of a stale record's
/// name) is refused before the token is sent: the server never sees a request.
#[cfg(windows)]
#[tokio::test]
async fn windows_a_pipe_not_served_by_the_recorded_devrun_gets_no_token() {
    // `_dir` is bound (not `..`): the folder must outlive the test.
    let Channel {
        _dir,
        control,
        mut rx,
        said,
    } = channel().await;
    let recorded = me() + 4;
    match send(&control, recorded, Verb::Stop).await {
        Err(SendError::Unreachable(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
            let text = e.to_string();
            assert!(
                text.contains(&format!("served by pid {}", me()))
                    && text.contains(&format!("not by devrun (pid {recorded})")),
                "{text}"
            );
        }
        other => panic!("a pipe served by another pid was trusted: {other:?}"),
    }
    tokio::time::sleep(REQUEST_TIMEOUT + Duration::from_millis(500)).await;
    assert!(rx.try_recv().is_err(), "the request reached devrun");
    assert!(
        said.lock().unwrap().is_empty(),
        "{:?}",
        said.lock().unwrap()
    );
    // The recorded devrun itself is still asked.
    send(&control, me(), Verb::Stop).await.unwrap();
    assert_eq!(rx.recv().await, Some(Request::Stop(STOP_REASON)));
}
