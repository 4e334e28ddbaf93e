//! The warnings devrun names ([`Warn`]): the `kind` a tool tells them apart by, their fields,
//! and the message a person reads.

use super::millis;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// The warnings devrun names, so a tool can tell them apart by `kind` (JSON: `"kind"` plus the
/// variant's fields, beside `"event": "warning"` and the `"message"` a person reads).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Warn {
    /// The port is held at start; devrun waits for it up to the port timeout.
    PortBusy {
        port: u16,
        #[serde(rename = "wait_ms", serialize_with = "millis")]
        timeout: Duration,
    },
    /// `--kill-port-holder` ends the process holding the port.
    KillPortHolder {
        pid: u32,
        command: String,
        port: u16,
    },
    /// The OS refused more inotify watches: the watch polls instead, every `poll_ms`.
    InotifyLimit {
        #[serde(skip)]
        every: std::time::Duration,
    },
    /// The control channel could not be opened; `devrun stop`/`--replace` will signal instead.
    ControlUnavailable { error: String },
    /// `--replace`: the devrun holding the project is asked to stop.
    Replacing { pid: Option<u32>, port: Option<u16> },
    /// A running devrun could not be asked on its control channel: it gets the OS stop.
    ControlUnreachable {
        pid: u32,
        /// The channel's TCP port, when the devrun has one (null for a socket or a pipe).
        control_port: Option<u16>,
        /// Where the channel is (its Unix socket, its named pipe, or 127.0.0.1:PORT), when the
        /// devrun has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        control: Option<String>,
        error: Option<String>,
    },
    /// A devrun asked to stop did not exit in time and is killed.
    DevrunKilled {
        pid: u32,
        #[serde(rename = "timeout_ms", serialize_with = "millis")]
        timeout: Duration,
    },
    /// What a dead devrun left running was found and stopped.
    OrphanStopped {
        what: String,
        pids: Vec<u32>,
        #[serde(rename = "duration_ms", serialize_with = "millis")]
        elapsed: Duration,
        killed: bool,
    },
    /// A dead devrun's record names a live process that cannot be ours: nothing was signalled.
    OrphanRefused {
        state_dir: String,
        what: String,
        why: String,
    },
    /// The stop signal could not be delivered: the group was killed at once.
    SignalUndelivered {
        signal: &'static str,
        #[serde(skip)]
        text: String,
    },
    /// A second shutdown request while stopping: the backend is killed now.
    KillNow { reason: String },
    /// `devrun restart`, or `rs` typed in devrun's terminal (`by`), asked for a new generation.
    RestartRequested { by: &'static str },
    /// A line typed in devrun's terminal reached no backend (`why`); it was dropped.
    InputDropped { why: &'static str },
    /// Preload was refused (project code or a thread in the preloader, or it could not
    /// start): every generation of this run starts cold.
    PreloadRefused { reason: String },
    /// A fresh preloader replaces the old one (a file it loaded changed, the environment
    /// changed, or it exited).
    PreloadRestarted { reason: String },
    /// A fork cannot carry what an import started (a thread, a socket): generations start
    /// from a warm spare interpreter instead.
    PreloadSpare { reason: String },
    /// A spare interpreter is ended unused (a file it loaded changed, the environment
    /// changed, it exited); a fresh one takes its place.
    SpareDiscarded { reason: String },
    /// `[stop] fast` is on but uvicorn stops as it does by itself (an unknown version, or
    /// the bootstrap could not be written).
    FastStopOff { reason: String },
    /// `.devrun/state.json` (`path`) could not be written.
    StateNotWritten { path: String, error: String },
    /// Status lines were lost because nobody read devrun's stderr.
    LinesDropped { dropped: u64 },
    /// `[watch] poll`: the watch polls (forced, or "auto" found a filesystem that does not
    /// report outside changes); `reason` says which and why.
    Polling { reason: String },
    /// The env file changed: these keys differ (values are never shown).
    EnvChanged { file: String, keys: Vec<String> },
    /// The env file could not be read again: the previous values stay.
    EnvFileUnreadable { error: String },
    /// The reload-loop guard: `path` changed while each of three consecutive generations was
    /// starting; its changes are ignored for the rest of the run.
    ReloadLoop { path: String, glob: String },
    /// Windows: how the terminal changes the way a stop works (hidden console, mintty).
    Console {
        #[serde(skip)]
        text: String,
    },
    /// The config file was edited while devrun runs: said once, devrun keeps its settings.
    ConfigChanged { file: String },
    /// A file `.gitignore` names is watched anyway: the backend imported it (said once).
    WatchingImported { file: String },
    /// A member's command starts its server's own reloader (see `reloader`): said once.
    OwnReloader {
        member: String,
        /// How the line names it: "the backend", "[processes.web]".
        #[serde(skip)]
        who: String,
        what: String,
        fix: String,
    },
}

fn inotify_limit(every: std::time::Duration) -> String {
    format!(
        "the OS refused more file watches (inotify limit): polling the kept folders every {} ms \
         instead ([watch] poll_ms). Raise the limit with \
         `sudo sysctl fs.inotify.max_user_watches=524288` (add it to /etc/sysctl.conf to keep \
         it), or ignore more folders",
        every.as_millis()
    )
}

fn control_unreachable(pid: u32, control: Option<&str>, error: Option<&str>) -> String {
    let os_stop = if cfg!(windows) {
        "terminating it"
    } else {
        "sending it SIGTERM"
    };
    match (control, error) {
        (Some(control), Some(error)) => format!(
            "cannot reach devrun (pid {pid}) on its control channel {control} ({error}); \
             {os_stop} instead"
        ),
        _ => format!(
            "devrun (pid {pid}) has no control channel (an older devrun?); {os_stop} instead"
        ),
    }
}

/// The text of the warnings about what counts as a change (polling, the env file, the
/// reload-loop guard).
fn change_warning(warn: &Warn) -> String {
    match warn {
        Warn::Polling { reason } => reason.clone(),
        Warn::EnvChanged { file, keys } if keys.is_empty() => {
            format!("{file} changed (no variable changed)")
        }
        Warn::EnvChanged { file, keys } => {
            format!("{file} changed: {} (values not shown)", keys.join(", "))
        }
        Warn::EnvFileUnreadable { error } => format!("{error}: keeping the previous values"),
        Warn::ReloadLoop { path, glob } => format!(
            "reload loop: {path} changed while each of the last 3 generations was starting or just ready \
             (the backend writes it itself?); from now on its changes while a generation starts \
             restart it only after a pause (5 s, then longer). If the backend writes it, add \
             \"{glob}\" to [watch] ignore (or pass --ignore '{glob}')"
        ),
        other => format!("{other:?}"),
    }
}

/// The text of the warnings about another devrun and the control channel.
fn devrun_warning(warn: &Warn) -> String {
    match warn {
        Warn::ControlUnavailable { error } => format!(
            "cannot open the control channel ({error}): `devrun stop` and \
             --replace will signal this devrun instead, and `devrun restart` will not work"
        ),
        Warn::Replacing {
            pid: Some(pid),
            port: Some(port),
        } => format!(
            "devrun (pid {pid}) already runs this project on port {port}: stopping it (--replace)"
        ),
        Warn::Replacing { .. } => {
            "another devrun already runs this project: stopping it (--replace)".to_string()
        }
        Warn::ControlUnreachable {
            pid,
            control,
            error,
            ..
        } => control_unreachable(*pid, control.as_deref(), error.as_deref()),
        Warn::DevrunKilled { pid, timeout } => format!(
            "devrun (pid {pid}) did not exit within {} ms: killing it",
            timeout.as_millis()
        ),
        other => format!("{other:?}"),
    }
}

/// The text of the warnings about what a dead devrun left running.
fn orphan_warning(warn: &Warn) -> String {
    match warn {
        Warn::OrphanStopped {
            what,
            pids,
            elapsed,
            killed,
        } => format!(
            "found {what} left running by a devrun that died (pids {}); stopped in {} ms{}",
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            elapsed.as_millis(),
            if *killed { " (killed)" } else { "" }
        ),
        Warn::OrphanRefused {
            state_dir,
            what,
            why,
        } => format!(
            "{state_dir}/state.json names {what} as run by a devrun that died, but \
             {why}: nothing of ours is left, nothing was signalled"
        ),
        other => format!("{other:?}"),
    }
}

impl fmt::Display for Warn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warn::ControlUnavailable { .. }
            | Warn::Replacing { .. }
            | Warn::ControlUnreachable { .. }
            | Warn::DevrunKilled { .. } => f.write_str(&devrun_warning(self)),
            Warn::OrphanStopped { .. } | Warn::OrphanRefused { .. } => {
                f.write_str(&orphan_warning(self))
            }
            Warn::Polling { .. }
            | Warn::EnvChanged { .. }
            | Warn::EnvFileUnreadable { .. }
            | Warn::ReloadLoop { .. } => f.write_str(&change_warning(self)),
            Warn::PortBusy { port, timeout } => write!(
                f,
                "port {port} is busy; waiting up to {} ms for it to be released",
                timeout.as_millis()
            ),
            Warn::KillPortHolder { pid, command, port } => write!(
                f,
                "ending pid {pid} ({command}), which holds port {port} (--kill-port-holder)"
            ),
            Warn::InotifyLimit { every } => f.write_str(&inotify_limit(*every)),
            Warn::WatchingImported { file } => write!(
                f,
                "watching {file} though .gitignore names it: the backend imported it"
            ),
            Warn::ConfigChanged { file } => write!(
                f,
                "{file} changed: devrun keeps running with the settings it started with; \
                 restart devrun to apply the change (Ctrl-C, then `devrun`)"
            ),
            Warn::OwnReloader { who, what, fix, .. } => write!(
                f,
                "{who} runs its own reloader ({what}): two reloaders fight (a change restarts it \
                 twice, the ready time grows); {fix} in its command: devrun is the reloader"
            ),
            Warn::SignalUndelivered { text, .. } | Warn::Console { text } => f.write_str(text),
            Warn::KillNow { reason } => write!(f, "{reason} again: killing the backend now"),
            Warn::RestartRequested { by } => write!(f, "restart requested by `{by}`"),
            Warn::InputDropped { why } => write!(
                f,
                "typed line dropped: {why} (type `rs` and Enter to restart the backend)"
            ),
            Warn::PreloadRefused { reason } => {
                write!(f, "preload refused: {reason}; starting cold for this run")
            }
            Warn::PreloadRestarted { reason } => {
                write!(f, "starting a fresh preloader: {reason}")
            }
            Warn::PreloadSpare { reason } => {
                write!(
                    f,
                    "preload cannot fork: {reason}; using a warm spare interpreter"
                )
            }
            Warn::SpareDiscarded { reason } => {
                write!(
                    f,
                    "discarding the spare interpreter: {reason}; starting a fresh one"
                )
            }
            Warn::FastStopOff { reason } => {
                write!(
                    f,
                    "fast stop off: {reason}; uvicorn stops as it does by itself"
                )
            }
            Warn::StateNotWritten { path, error } => {
                write!(f, "cannot write {path}: {error}")
            }
            Warn::LinesDropped { dropped } => write!(
                f,
                "{dropped} status line{} dropped: nobody was reading devrun's stderr",
                if *dropped == 1 { " was" } else { "s were" }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::Event;
    use serde_json::json;
    use std::time::Duration;

    /// A named warning is still a `warning` with its `message`; `kind` and its fields are added.
    #[test]
    fn named_warnings_add_a_kind_and_fields() {
        let busy = Event::from(Warn::PortBusy {
            port: 8001,
            timeout: Duration::from_secs(5),
        });
        assert_eq!(
            busy.to_json(),
            json!({
                "event": "warning",
                "message": "port 8001 is busy; waiting up to 5000 ms for it to be released",
                "kind": "port_busy",
                "port": 8001,
                "wait_ms": 5000,
            })
        );
        let restart = Event::from(Warn::RestartRequested {
            by: "devrun restart",
        });
        assert_eq!(
            restart.to_json(),
            json!({"event": "warning", "message": "restart requested by `devrun restart`", "kind": "restart_requested", "by": "devrun restart"})
        );
        let orphan = Event::from(Warn::OrphanStopped {
            what: "generation 2 (pid 40)".into(),
            pids: vec![40, 41],
            elapsed: Duration::from_millis(12),
            killed: false,
        })
        .to_json();
        assert_eq!(orphan["kind"], json!("orphan_stopped"));
        assert_eq!(orphan["pids"], json!([40, 41]));
        assert_eq!(orphan["duration_ms"], json!(12));
        assert_eq!(
            orphan["message"],
            json!("found generation 2 (pid 40) left running by a devrun that died (pids 40, 41); stopped in 12 ms")
        );
        let dropped = Event::from(Warn::LinesDropped { dropped: 3 }).to_json();
        assert_eq!(dropped["dropped"], json!(3));
        assert_eq!(dropped["kind"], json!("lines_dropped"));
        let text = Warn::SignalUndelivered {
            signal: "SIGTERM",
            text: "cannot send SIGTERM".into(),
        };
        assert_eq!(
            Event::from(text).to_json(),
            json!({"event": "warning", "message": "cannot send SIGTERM", "kind": "signal_undelivered", "signal": "SIGTERM"})
        );
    }
}
