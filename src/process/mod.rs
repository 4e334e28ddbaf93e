//! The backend as one unit: spawn it as a new process group (a job object on Windows), signal the
//! whole group, kill it, and confirm that every process of it is gone.
//!
//! A generation ([`Backend`], `backend.rs`) is its process group and its output streams. Every
//! stop goes through the one escalation in `stop.rs` (signal, grace, kill, confirm): a
//! generation's, what a dead devrun left (`orphan.rs`), a port holder's, another devrun's.
//! What differs between operating systems (`Group`, signals, job objects) is in `crate::sys`.

mod backend;
mod orphan;
mod stop;

pub use backend::Backend;
#[cfg(target_os = "linux")]
pub use backend::ForkPipes;
#[cfg(target_os = "linux")]
pub use backend::Reaped;
pub use orphan::{stop_orphan, LeaderRecord, RunRecord};
pub use stop::{stop_foreign, stop_one};

/// The stop signal and the inherited socket's descriptor are the platform layer's words.
pub use crate::sys::{StopSignal, INHERITED_FD};

/// Linux: become a child subreaper, so descendants the backend orphans come back to devrun.
/// Nothing to do elsewhere.
pub use crate::sys::prepare_supervisor;

/// Windows: makes sure the backend can be sent a console control event (a hidden console when
/// devrun has none) and returns the one line to say when the terminal changes how a stop
/// works (mintty, no console). Nothing to do elsewhere.
pub use crate::sys::prepare_console;

use std::process::ExitStatus;

/// "code 1", "signal 9 (SIGKILL)", "code 0xC000013A (Ctrl-C or Ctrl-Break)".
pub fn describe_status(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return describe_code(code);
    }
    crate::sys::describe_signal_exit(status).unwrap_or_else(|| status.to_string())
}

/// An exit code; Windows' status codes (negative as i32) in hex, as Windows documents them.
fn describe_code(code: i32) -> String {
    match code as u32 {
        crate::summary::CONSOLE_STOP_EXIT => "code 0xC000013A (Ctrl-C or Ctrl-Break)".into(),
        status if code < 0 => format!("code {status:#X}"),
        _ => format!("code {code}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exit_codes_in_words() {
        assert_eq!(super::describe_code(1), "code 1");
        assert_eq!(
            super::describe_code(0xC000_013Au32 as i32),
            "code 0xC000013A (Ctrl-C or Ctrl-Break)"
        );
        assert_eq!(
            super::describe_code(0xC000_0005u32 as i32),
            "code 0xC0000005"
        );
    }
}
