//! What is typed in devrun's terminal: a line `rs` restarts the backend (the same request as
//! `devrun restart`); every other line goes to the current generation's stdin, a pipe devrun
//! holds, so `breakpoint()` and pdb work.
//!
//! Only when devrun's stdin is a terminal. Elsewhere (CI, nohup, a pipe) the backend's stdin
//! stays /dev/null and devrun reads nothing: a script piping data into devrun is not expected.
//! The backend never reads the terminal itself: it runs in a process group of its own, which
//! the terminal would stop (SIGTTIN) on a read.

use crate::control::Request;
use crate::ui::{Ui, Warn};
use std::io::{BufRead, IsTerminal, PipeWriter, Read, Write};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// The line that restarts the backend instead of being forwarded (nodemon's word).
pub const RESTART_LINE: &str = "rs";
/// Who a restart by [`RESTART_LINE`] says asked for it.
const RESTART_BY: &str = "rs";
/// A typed (or pasted) line is read and forwarded in pieces of at most this many bytes, and
/// at most [`QUEUED`] pieces wait for a backend that does not read: devrun never holds more
/// than about 1 MiB of input, however long the line.
const PIECE: usize = 64 * 1024;
const QUEUED: usize = 16;

/// Whether lines typed in devrun's terminal are forwarded: decided once, at the first call.
pub fn forwarding() -> bool {
    static TERMINAL: OnceLock<bool> = OnceLock::new();
    *TERMINAL.get_or_init(|| std::io::stdin().is_terminal())
}

/// Where typed lines go: the current generation's stdin, while one runs.
#[derive(Clone, Default)]
pub struct Typed {
    current: Arc<Mutex<Option<SyncSender<Vec<u8>>>>>,
}

impl Typed {
    /// Starts reading devrun's stdin on a thread of its own, when it is a terminal: `rs` goes
    /// to `requests` as a restart, other lines to the attached generation. None otherwise.
    pub fn start(requests: UnboundedSender<Request>, ui: Ui) -> Option<Typed> {
        if !forwarding() {
            return None;
        }
        let typed = Typed::default();
        let reader = typed.clone();
        let spawned = std::thread::Builder::new()
            .name("devrun-stdin".into())
            .spawn(move || reader.read_terminal(&requests, &ui));
        // Without the thread devrun still runs; typed lines are then never read.
        spawned.ok().map(|_| typed)
    }

    /// The next lines go to `stdin`, the pipe a generation reads, written by a thread of its
    /// own (a backend that does not read must never block devrun).
    pub fn attach(&self, mut stdin: PipeWriter) {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUED);
        let spawned = std::thread::Builder::new()
            .name("devrun-stdin-pipe".into())
            .spawn(move || {
                for line in rx {
                    if stdin.write_all(&line).is_err() {
                        break;
                    }
                }
            });
        if spawned.is_ok() {
            self.set(Some(tx));
        }
    }

    /// No generation reads any more (stopped, exited): its pipe closes, later lines are dropped.
    pub fn detach(&self) {
        self.set(None);
    }

    fn set(&self, to: Option<SyncSender<Vec<u8>>>) {
        if let Ok(mut current) = self.current.lock() {
            *current = to;
        }
    }

    /// Hands a piece of a line to the attached generation; Err: why nobody takes it.
    fn forward(&self, piece: Vec<u8>) -> Result<(), &'static str> {
        let none = "no backend is running, or its stdin was closed (Ctrl-D)";
        let Ok(current) = self.current.lock() else {
            return Err(none);
        };
        match current.as_ref().map(|tx| tx.try_send(piece)) {
            Some(Ok(())) => Ok(()),
            Some(Err(TrySendError::Full(_))) => Err("the backend is not reading its stdin"),
            Some(Err(TrySendError::Disconnected(_))) | None => Err(none),
        }
    }

    fn read_terminal(&self, requests: &UnboundedSender<Request>, ui: &Ui) {
        let mut stdin = std::io::stdin().lock();
        let mut line = Vec::new();
        // Whether the next piece starts a line (only a whole short line can be `rs`), and
        // whether this line's drop was said already (once per line, not per piece).
        let (mut line_start, mut said) = (true, false);
        loop {
            line.clear();
            let read = (&mut stdin).take(PIECE as u64).read_until(b'\n', &mut line);
            let ends = line.is_empty() || line.ends_with(b"\n");
            let starts = std::mem::replace(&mut line_start, ends);
            if starts {
                said = false;
            }
            match read {
                // Ctrl-D: the backend's stdin ends too (pdb quits on it); the terminal stays,
                // so reading goes on for the next generation.
                Ok(0) => {
                    self.detach();
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(_) if starts && is_restart(&line) => {
                    if requests.send(Request::Restart(RESTART_BY)).is_err() {
                        return;
                    }
                }
                Ok(_) => {
                    if let Err(why) = self.forward(line.clone()) {
                        if !std::mem::replace(&mut said, true) {
                            ui.emit(&Warn::InputDropped { why }.into());
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // The terminal is gone (hung up): devrun gets SIGHUP and shuts down.
                Err(_) => return,
            }
        }
    }
}

/// `rs` alone on its line, spaces and a Windows line end aside.
fn is_restart(line: &[u8]) -> bool {
    line.trim_ascii() == RESTART_LINE.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rs_alone_on_its_line_restarts() {
        assert!(is_restart(b"rs\n"));
        assert!(is_restart(b"  rs \r\n"));
        assert!(!is_restart(b"rs x\n"));
        assert!(!is_restart(b"p rs\n"));
        assert!(!is_restart(b"\n"));
    }

    #[test]
    fn lines_reach_the_attached_pipe_and_none_after_detach() {
        let (mut reader, writer) = std::io::pipe().unwrap();
        let typed = Typed::default();
        assert!(
            typed.forward(b"early\n".to_vec()).is_err(),
            "nothing attached yet"
        );
        typed.attach(writer);
        assert!(typed.forward(b"c\n".to_vec()).is_ok());
        typed.detach();
        assert!(typed.forward(b"late\n".to_vec()).is_err());
        let mut got = String::new();
        std::io::Read::read_to_string(&mut reader, &mut got).unwrap();
        assert_eq!(got, "c\n", "the pipe ends at detach");
    }
}
