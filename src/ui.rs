//! Status lines: one short, coloured line per lifecycle event, on stderr.
//! The backend's own output never passes through here.
//!
//! Lines are written by a thread of their own through a bounded queue: when nobody reads
//! devrun's stderr (a full pipe), the supervisor loop must go on stopping and starting backends
//! and answering Ctrl-C, so lines that do not fit are dropped and counted instead of waited for.

use crate::cli::{ColorChoice, EventFormat};
use console::Style;
use serde_json::{json, Value};
use std::time::Duration;

/// Everything devrun reports. One variant per transition of the supervisor.
#[derive(Debug, Clone)]
pub enum Event {
    Watching {
        source: String,
        folders: usize,
        include: Vec<String>,
    },
    Changed {
        files: Vec<String>,
    },
    Stopping {
        generation: u32,
        pid: u32,
        signal: &'static str,
    },
    Stopped {
        generation: u32,
        elapsed: Duration,
        killed: bool,
    },
    PortReleased {
        port: u16,
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
    },
    Ready {
        generation: u32,
        elapsed: Duration,
        address: String,
    },
    NotReady {
        generation: u32,
        elapsed: Duration,
        reason: String,
    },
    Exited {
        generation: u32,
        status: String,
    },
    Waiting,
    ShuttingDown {
        reason: String,
    },
    Warning(String),
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
            Event::Changed { .. } | Event::Warning(_) | Event::NotReady { .. } => Level::Warn,
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
            } => format!("started generation {generation} (pid {pid}): {command}"),
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
            Event::Exited { generation, status } => {
                format!("generation {generation} exited with {status}")
            }
            Event::Waiting => "waiting for changes".to_string(),
            Event::ShuttingDown { reason } => format!("{reason}: shutting down"),
            Event::Warning(text) => text.clone(),
        }
    }
}

impl Event {
    /// The stable machine-readable form: `{"event": NAME, ...fields}`, durations in ms.
    pub fn to_json(&self) -> Value {
        let ms = |d: &Duration| d.as_millis() as u64;
        match self {
            Event::Watching {
                source,
                folders,
                include,
            } => {
                json!({"event": "watching", "config": source, "folders": folders, "include": include})
            }
            Event::Changed { files } => json!({"event": "changed", "paths": files}),
            Event::Stopping {
                generation,
                pid,
                signal,
            } => {
                json!({"event": "stopping", "generation": generation, "pid": pid, "signal": signal})
            }
            Event::Stopped {
                generation,
                elapsed,
                killed,
            } => {
                json!({"event": "stopped", "generation": generation, "duration_ms": ms(elapsed), "killed": killed})
            }
            Event::PortReleased { port, waited } => {
                json!({"event": "port_released", "port": port, "wait_ms": ms(waited)})
            }
            Event::PortHeld { port, holders } => {
                json!({"event": "port_held", "port": port, "holders": holders})
            }
            Event::Started {
                generation,
                pid,
                command,
            } => {
                json!({"event": "started", "generation": generation, "pid": pid, "command": command})
            }
            Event::Ready {
                generation,
                elapsed,
                address,
            } => {
                json!({"event": "ready", "generation": generation, "duration_ms": ms(elapsed), "address": address})
            }
            Event::NotReady {
                generation,
                elapsed,
                reason,
            } => {
                json!({"event": "not_ready", "generation": generation, "duration_ms": ms(elapsed), "reason": reason})
            }
            Event::Exited { generation, status } => {
                json!({"event": "exited", "generation": generation, "status": status})
            }
            Event::Waiting => json!({"event": "waiting"}),
            Event::ShuttingDown { reason } => json!({"event": "shutting_down", "reason": reason}),
            Event::Warning(message) => json!({"event": "warning", "message": message}),
        }
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
        }
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
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        value["ts_ms"] = json!(ts);
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
            .apply_to("devrun:");
        // One write per line, so it doesn't interleave with the backend's output mid-line.
        let line = format!("{prefix} {}\n", style.apply_to(text));
        writer::write(line.into_bytes());
    }
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
        let message = format!(
            "{dropped} status line{} dropped: nobody was reading devrun's stderr",
            if dropped == 1 { " was" } else { "s were" }
        );
        if JSON.load(Ordering::Relaxed) {
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let value = serde_json::json!(
                {"event": "warning", "message": message, "dropped": dropped, "ts_ms": ts}
            );
            format!("{value}\n").into_bytes()
        } else {
            format!("devrun: {message}\n").into_bytes()
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
