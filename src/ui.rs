//! Status lines: one short, coloured line per lifecycle event, on stderr.
//! The backend's own output never passes through here.

use crate::cli::ColorChoice;
use console::Style;
use std::io::Write;
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
                let mut text = files.iter().take(FILES_SHOWN).cloned().collect::<Vec<_>>().join(", ");
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
                if *killed { " (killed: grace time ran out)" } else { "" }
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
}

impl Ui {
    pub fn new(choice: ColorChoice, quiet: bool) -> Ui {
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && console::Term::stderr().features().colors_supported()
            }
        };
        Ui { quiet, color }
    }

    pub fn emit(&self, event: &Event) {
        let level = event.level();
        if self.quiet && level != Level::Bad {
            return;
        }
        self.line(level, &event.text());
    }

    /// An error that ends devrun; printed even with --quiet.
    pub fn error(&self, text: &str) {
        self.line(Level::Bad, &format!("error: {text}"));
    }

    fn line(&self, level: Level, text: &str) {
        let style = match level {
            Level::Info => Style::new(),
            Level::Good => Style::new().green(),
            Level::Warn => Style::new().yellow(),
            Level::Bad => Style::new().red().bold(),
        }
        .force_styling(self.color);
        let prefix = Style::new().cyan().force_styling(self.color).apply_to("devrun:");
        // One write per line, so it doesn't interleave with the backend's output mid-line.
        let line = format!("{prefix} {}\n", style.apply_to(text));
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}
