//! Status lines: one short, coloured line per lifecycle event, on stderr.
//! The backend's own output never passes through here.
//!
//! Each event is defined once, as a variant of [`Event`] (`event.rs`, or of [`Warn`] in
//! `warn.rs` for the named warnings): its fields are the variant's fields, its JSON is derived
//! from them with serde, and its status line is written from them in one place.
//!
//! Lines are written by a thread of their own through a bounded queue (`writer.rs`): when
//! nobody reads devrun's stderr (a full pipe), the supervisor loop must go on stopping and
//! starting backends and answering Ctrl-C, so lines that do not fit are dropped and counted
//! instead of waited for.

mod event;
mod warn;
mod writer;

pub use event::Event;
pub use warn::Warn;

use console::Style;
use event::Level;
use serde::Serializer;
use serde_json::{json, Value};
use std::time::Duration;

/// Whether status lines are for people or for tools (`--events`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    #[default]
    Text,
    Json,
}

/// When status lines are coloured (`--color`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

/// A duration as whole milliseconds, the unit of every duration in the JSON events.
fn millis<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(duration.as_millis() as u64)
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

/// Waits for queued status lines to reach stderr; call before exiting, so the last lines (an
/// error saying why the exit code is not 0) are not lost. Gives up after 5 s when nobody reads
/// stderr; under load a second can pass before the writer thread runs (in one CI run a `devrun
/// stop` under Wine exited 1 and printed nothing).
pub fn flush() {
    writer::flush(Duration::from_secs(5));
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
