//! Status lines: one short, coloured line per lifecycle event, on stderr.
//! The backend's own output never passes through here.
//!
//! Each event is defined once, as a variant of [`Event`] (or of [`Warn`] for the named
//! warnings): its fields are the variant's fields, its JSON is derived from them with serde,
//! and its status line is one `format!` in `text()`.
//!
//! Lines are written by a thread of their own through a bounded queue: when nobody reads
//! devrun's stderr (a full pipe), the supervisor loop must go on stopping and starting backends
//! and answering Ctrl-C, so lines that do not fit are dropped and counted instead of waited for.

use crate::cli::{ColorChoice, EventFormat};
use console::Style;
use serde::{Serialize, Serializer};
use serde_json::{json, Value};
use std::fmt;
use std::time::Duration;

/// Everything devrun reports. One variant per transition of the supervisor.
///
/// The JSON form is `{"event": NAME, ...fields}` (the stable format of the README's "Events
/// for tools"); a field's JSON name is given where it differs from the Rust one.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Watching {
        #[serde(rename = "config")]
        source: String,
        folders: usize,
        include: Vec<String>,
    },
    Changed {
        #[serde(rename = "paths")]
        files: Vec<String>,
    },
    Stopping {
        generation: u32,
        pid: u32,
        signal: &'static str,
    },
    Stopped {
        generation: u32,
        #[serde(rename = "duration_ms", serialize_with = "millis")]
        elapsed: Duration,
        killed: bool,
    },
    PortReleased {
        port: u16,
        #[serde(rename = "wait_ms", serialize_with = "millis")]
        waited: Duration,
    },
    PortHeld {
        port: u16,
        holders: String,
    },
    Started {
        generation: u32,
        pid: u32,
        command: String,
        /// Forked from the preloader: how many modules it preloaded (absent on a cold start).
        #[serde(skip_serializing_if = "Option::is_none")]
        preloaded: Option<usize>,
    },
    Ready {
        generation: u32,
        #[serde(rename = "duration_ms", serialize_with = "millis")]
        elapsed: Duration,
        address: String,
    },
    NotReady {
        generation: u32,
        #[serde(rename = "duration_ms", serialize_with = "millis")]
        elapsed: Duration,
        reason: String,
    },
    Exited {
        generation: u32,
        status: String,
        /// What killed it, in one line (exception and project frame, or the signal's meaning);
        /// `null` when its output and status say nothing more.
        summary: Option<String>,
    },
    Waiting,
    ShuttingDown {
        reason: String,
    },
    /// A warning without a name: `{"event": "warning", "message": …}`.
    #[serde(rename = "warning", serialize_with = "plain_warning")]
    Warning(String),
    /// A named warning: `{"event": "warning", "message": …, "kind": …, ...fields}`.
    #[serde(rename = "warning", serialize_with = "named_warning")]
    Warn(Warn),
}

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
    /// The OS refused more inotify watches: the watch polls instead.
    InotifyLimit,
    /// The control channel could not be opened; `devrun stop`/`--replace` will signal instead.
    ControlUnavailable { error: String },
    /// `--replace`: the devrun holding the project is asked to stop.
    Replacing { pid: Option<u32>, port: Option<u16> },
    /// A running devrun could not be asked on its control channel: it gets the OS stop.
    ControlUnreachable {
        pid: u32,
        /// The channel's port, when the devrun has one.
        control_port: Option<u16>,
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
}

impl From<Warn> for Event {
    fn from(warn: Warn) -> Event {
        Event::Warn(warn)
    }
}

fn millis<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(duration.as_millis() as u64)
}

fn plain_warning<S: Serializer>(message: &str, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Plain<'a> {
        message: &'a str,
    }
    Plain { message }.serialize(s)
}

fn named_warning<S: Serializer>(warn: &Warn, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Named<'a> {
        message: String,
        #[serde(flatten)]
        warn: &'a Warn,
    }
    Named {
        message: warn.to_string(),
        warn,
    }
    .serialize(s)
}

const INOTIFY_LIMIT: &str = "the OS refused more file watches (inotify limit): polling the kept \
     folders every 500 ms instead. Raise the limit with \
     `sudo sysctl fs.inotify.max_user_watches=524288` (add it to /etc/sysctl.conf to keep it), \
     or ignore more folders";

fn control_unreachable(pid: u32, control_port: Option<u16>, error: Option<&str>) -> String {
    let os_stop = if cfg!(windows) {
        "terminating it"
    } else {
        "sending it SIGTERM"
    };
    match (control_port, error) {
        (Some(port), Some(error)) => format!(
            "cannot reach devrun (pid {pid}) on its control channel 127.0.0.1:{port} ({error}); \
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
             (the backend writes it itself?); ignoring its changes for the rest of this run. \
             Add \"{glob}\" to [watch] ignore (or pass --ignore '{glob}')"
        ),
        other => format!("{other:?}"),
    }
}

impl fmt::Display for Warn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warn::PortBusy { port, timeout } => write!(
                f,
                "port {port} is busy; waiting up to {} ms for it to be released",
                timeout.as_millis()
            ),
            Warn::KillPortHolder { pid, command, port } => write!(
                f,
                "ending pid {pid} ({command}), which holds port {port} (--kill-port-holder)"
            ),
            Warn::InotifyLimit => f.write_str(INOTIFY_LIMIT),
            Warn::ControlUnavailable { error } => write!(
                f,
                "cannot open the control channel on 127.0.0.1 ({error}): `devrun stop` and \
                 --replace will signal this devrun instead, and `devrun restart` will not work"
            ),
            Warn::Replacing { pid, port } => match (pid, port) {
                (Some(pid), Some(port)) => write!(
                    f,
                    "devrun (pid {pid}) already runs this project on port {port}: stopping it \
                     (--replace)"
                ),
                _ => {
                    f.write_str("another devrun already runs this project: stopping it (--replace)")
                }
            },
            Warn::ControlUnreachable {
                pid,
                control_port,
                error,
            } => f.write_str(&control_unreachable(*pid, *control_port, error.as_deref())),
            Warn::DevrunKilled { pid, timeout } => write!(
                f,
                "devrun (pid {pid}) did not exit within {} ms: killing it",
                timeout.as_millis()
            ),
            Warn::OrphanStopped {
                what,
                pids,
                elapsed,
                killed,
            } => write!(
                f,
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
            } => write!(
                f,
                "{state_dir}/state.json names {what} as run by a devrun that died, but \
                 {why}: nothing of ours is left, nothing was signalled"
            ),
            Warn::SignalUndelivered { text, .. } | Warn::Console { text } => f.write_str(text),
            Warn::Polling { .. }
            | Warn::EnvChanged { .. }
            | Warn::EnvFileUnreadable { .. }
            | Warn::ReloadLoop { .. } => f.write_str(&change_warning(self)),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Info,
    Good,
    Warn,
    Bad,
}

/// How many changed files a status line names before "and N more".
const FILES_SHOWN: usize = 3;

impl Event {
    fn level(&self) -> Level {
        match self {
            Event::Ready { .. } | Event::Started { .. } => Level::Good,
            Event::Changed { .. } | Event::Warning(_) | Event::Warn(_) | Event::NotReady { .. } => {
                Level::Warn
            }
            Event::Stopped { killed: true, .. } => Level::Warn,
            Event::PortHeld { .. } | Event::Exited { .. } => Level::Bad,
            _ => Level::Info,
        }
    }

    fn text(&self) -> String {
        match self {
            Event::Watching {
                source,
                folders,
                include,
            } => format!(
                "watching {folders} folder{} for {} (config: {source})",
                plural(*folders),
                include.join(", ")
            ),
            Event::Changed { files } => {
                let mut text = files
                    .iter()
                    .take(FILES_SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                if files.len() > FILES_SHOWN {
                    text.push_str(&format!(" and {} more", files.len() - FILES_SHOWN));
                }
                format!("changed: {text}")
            }
            Event::Stopping {
                generation,
                pid,
                signal,
            } => format!("stopping generation {generation} (pid {pid}, {signal} to its group)"),
            Event::Stopped {
                generation,
                elapsed,
                killed,
            } => format!(
                "generation {generation} stopped in {} ms{}",
                elapsed.as_millis(),
                if *killed { " (killed)" } else { "" }
            ),
            Event::PortReleased { port, waited } => {
                format!("port {port} released in {} ms", waited.as_millis())
            }
            Event::PortHeld { port, holders } => format!("port {port} is held by {holders}"),
            Event::Started {
                generation,
                pid,
                command,
                preloaded: None,
            } => format!("started generation {generation} (pid {pid}): {command}"),
            Event::Started {
                generation,
                pid,
                command,
                preloaded: Some(modules),
            } => format!(
                "started generation {generation} (pid {pid}, preloaded {modules} modules): {command}"
            ),
            Event::Ready {
                generation,
                elapsed,
                address,
            } => format!(
                "generation {generation} ready in {} ms on {address}",
                elapsed.as_millis()
            ),
            Event::NotReady {
                generation,
                elapsed,
                reason,
            } => format!(
                "generation {generation} not ready after {} ms: {reason}",
                elapsed.as_millis()
            ),
            Event::Exited {
                generation,
                status,
                summary,
            } => match summary {
                Some(summary) => format!("generation {generation} exited with {status}: {summary}"),
                None => format!("generation {generation} exited with {status}"),
            },
            Event::Waiting => "waiting for changes".to_string(),
            Event::ShuttingDown { reason } => format!("{reason}: shutting down"),
            Event::Warning(text) => text.clone(),
            Event::Warn(warn) => warn.to_string(),
        }
    }
}

impl Event {
    /// The stable machine-readable form: `{"event": NAME, ...fields}`, durations in ms.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(
            |e| json!({"event": "warning", "message": format!("cannot encode an event: {e}")}),
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Where status lines go, and how they look.
#[derive(Debug, Clone)]
pub struct Ui {
    quiet: bool,
    color: bool,
    format: EventFormat,
    /// The stack member these lines are about (`devrun[web]:`, `"process": "web"`); None for
    /// devrun itself, and for the backend when it runs alone.
    process: Option<std::sync::Arc<str>>,
}

impl Ui {
    pub fn new(choice: ColorChoice, quiet: bool) -> Ui {
        Ui::with_format(choice, quiet, EventFormat::Text)
    }

    pub fn with_format(choice: ColorChoice, quiet: bool, format: EventFormat) -> Ui {
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && console::Term::stderr().features().colors_supported()
            }
        };
        writer::set_json(format == EventFormat::Json);
        Ui {
            quiet,
            color,
            format,
            process: None,
        }
    }

    /// The same, for lines about stack member `name`.
    pub fn for_process(&self, name: &str) -> Ui {
        Ui {
            process: Some(name.into()),
            ..self.clone()
        }
    }

    /// Whether lines are coloured (member output labels follow the status lines).
    pub fn colour(&self) -> bool {
        self.color
    }

    pub fn emit(&self, event: &Event) {
        if self.format == EventFormat::Json {
            return self.json_line(event.to_json());
        }
        let level = event.level();
        if self.quiet && level != Level::Bad {
            return;
        }
        self.line(level, &event.text());
    }

    /// An error that ends devrun; printed even with --quiet.
    pub fn error(&self, text: &str) {
        if self.format == EventFormat::Json {
            return self.json_line(json!({"event": "error", "message": text}));
        }
        self.line(Level::Bad, &format!("error: {text}"));
    }

    fn json_line(&self, mut value: Value) {
        if let Some(process) = &self.process {
            value["process"] = json!(process.as_ref());
        }
        value["ts_ms"] = json!(unix_millis());
        writer::write(format!("{value}\n").into_bytes());
    }

    fn line(&self, level: Level, text: &str) {
        let style = match level {
            Level::Info => Style::new(),
            Level::Good => Style::new().green(),
            Level::Warn => Style::new().yellow(),
            Level::Bad => Style::new().red().bold(),
        }
        .force_styling(self.color);
        let prefix = Style::new()
            .cyan()
            .force_styling(self.color)
            .apply_to(match &self.process {
                Some(process) => format!("devrun[{process}]:"),
                None => "devrun:".to_string(),
            });
        // One write per line, so it doesn't interleave with the backend's output mid-line.
        let line = format!("{prefix} {}\n", style.apply_to(text));
        writer::write(line.into_bytes());
    }
}

/// Now, in Unix milliseconds (the `ts_ms` of every JSON event).
fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Waits (briefly) for queued status lines to reach stderr; call before exiting, so the last
/// lines are not lost. Gives up after a second when nobody reads stderr.
pub fn flush() {
    writer::flush(Duration::from_secs(1));
}

/// How many characters of a long text (a command line) an error message shows.
const SHOWN_CHARS: usize = 200;

/// `text`, or its first characters and its size when it is long.
pub fn shorten(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => text.to_string(),
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], text.len()),
    }
}

mod writer {
    //! One thread writes stderr; everyone else queues lines without ever blocking.

    use std::io::Write;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::mpsc::{self, SyncSender, TrySendError};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// Lines waiting for stderr before new ones are dropped.
    const QUEUE_LINES: usize = 128;

    struct Writer {
        queue: SyncSender<Vec<u8>>,
    }

    static QUEUED: AtomicU64 = AtomicU64::new(0);
    static WRITTEN: AtomicU64 = AtomicU64::new(0);
    static DROPPED: AtomicU64 = AtomicU64::new(0);
    static WRITER: OnceLock<Option<Writer>> = OnceLock::new();

    fn writer() -> Option<&'static Writer> {
        WRITER
            .get_or_init(|| {
                let (queue, lines) = mpsc::sync_channel::<Vec<u8>>(QUEUE_LINES);
                std::thread::Builder::new()
                    .name("devrun-stderr".into())
                    .spawn(move || {
                        for line in lines {
                            let mut stderr = std::io::stderr().lock();
                            let dropped = DROPPED.swap(0, Ordering::Relaxed);
                            if dropped > 0 {
                                let _ = stderr.write_all(&dropped_notice(dropped));
                            }
                            let _ = stderr.write_all(&line);
                            WRITTEN.fetch_add(1, Ordering::Release);
                        }
                    })
                    .ok()
                    .map(|_| Writer { queue })
            })
            .as_ref()
    }

    /// Queues one whole line; drops it (counted, reported later) when the queue is full.
    pub fn write(line: Vec<u8>) {
        let Some(writer) = writer() else {
            // No thread could be started: write in place, as before.
            let _ = std::io::stderr().lock().write_all(&line);
            return;
        };
        QUEUED.fetch_add(1, Ordering::AcqRel);
        match writer.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                QUEUED.fetch_sub(1, Ordering::AcqRel);
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(line)) => {
                QUEUED.fetch_sub(1, Ordering::AcqRel);
                let _ = std::io::stderr().lock().write_all(&line);
            }
        }
    }

    /// Whether lines are JSON objects, so the dropped-lines notice is one too.
    static JSON: AtomicBool = AtomicBool::new(false);

    pub fn set_json(json: bool) {
        JSON.store(json, Ordering::Relaxed);
    }

    fn dropped_notice(dropped: u64) -> Vec<u8> {
        let event = super::Event::Warn(super::Warn::LinesDropped { dropped });
        if JSON.load(Ordering::Relaxed) {
            let mut value = event.to_json();
            value["ts_ms"] = serde_json::json!(super::unix_millis());
            format!("{value}\n").into_bytes()
        } else {
            format!("devrun: {}\n", event.text()).into_bytes()
        }
    }

    pub fn flush(timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while WRITTEN.load(Ordering::Acquire) < QUEUED.load(Ordering::Acquire)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON derived from the one definition is the stable format the README documents:
    /// every event keeps its name and its fields (with their JSON names and ms durations).
    #[test]
    fn events_keep_their_documented_json() {
        let ms = Duration::from_millis;
        let cases = [
            (
                Event::Watching {
                    source: "devrun.toml".into(),
                    folders: 2,
                    include: vec!["*.py".into()],
                },
                json!({"event": "watching", "config": "devrun.toml", "folders": 2, "include": ["*.py"]}),
            ),
            (
                Event::Changed {
                    files: vec!["app.py".into()],
                },
                json!({"event": "changed", "paths": ["app.py"]}),
            ),
            (
                Event::Stopping {
                    generation: 1,
                    pid: 7,
                    signal: "SIGTERM",
                },
                json!({"event": "stopping", "generation": 1, "pid": 7, "signal": "SIGTERM"}),
            ),
            (
                Event::Stopped {
                    generation: 1,
                    elapsed: ms(12),
                    killed: false,
                },
                json!({"event": "stopped", "generation": 1, "duration_ms": 12, "killed": false}),
            ),
            (
                Event::PortReleased {
                    port: 8001,
                    waited: ms(3),
                },
                json!({"event": "port_released", "port": 8001, "wait_ms": 3}),
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(event.to_json(), expected, "{event:?}");
        }
    }

    #[test]
    fn more_events_keep_their_documented_json() {
        let ms = Duration::from_millis;
        let cases = [
            (
                Event::PortHeld {
                    port: 8001,
                    holders: "pid 9".into(),
                },
                json!({"event": "port_held", "port": 8001, "holders": "pid 9"}),
            ),
            (
                Event::Started {
                    generation: 2,
                    pid: 8,
                    command: "python app.py".into(),
                    preloaded: None,
                },
                json!({"event": "started", "generation": 2, "pid": 8, "command": "python app.py"}),
            ),
            (
                Event::Started {
                    generation: 3,
                    pid: 9,
                    command: "python app.py".into(),
                    preloaded: Some(12),
                },
                json!({"event": "started", "generation": 3, "pid": 9, "command": "python app.py", "preloaded": 12}),
            ),
            (
                Event::Ready {
                    generation: 2,
                    elapsed: ms(40),
                    address: "127.0.0.1:8001".into(),
                },
                json!({"event": "ready", "generation": 2, "duration_ms": 40, "address": "127.0.0.1:8001"}),
            ),
            (
                Event::NotReady {
                    generation: 2,
                    elapsed: ms(50),
                    reason: "refused".into(),
                },
                json!({"event": "not_ready", "generation": 2, "duration_ms": 50, "reason": "refused"}),
            ),
            (
                Event::Exited {
                    generation: 3,
                    status: "code 1".into(),
                    summary: Some("ValueError: boom (app.py:3)".into()),
                },
                json!({"event": "exited", "generation": 3, "status": "code 1", "summary": "ValueError: boom (app.py:3)"}),
            ),
            (Event::Waiting, json!({"event": "waiting"})),
            (
                Event::ShuttingDown {
                    reason: "interrupted".into(),
                },
                json!({"event": "shutting_down", "reason": "interrupted"}),
            ),
            (
                Event::Warning("plain".into()),
                json!({"event": "warning", "message": "plain"}),
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(event.to_json(), expected, "{event:?}");
        }
    }

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
