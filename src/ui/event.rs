//! The lifecycle events ([`Event`]): each is defined once, as a variant, and its JSON is
//! derived from its fields with serde; its status line is written in `text()`.

use super::{millis, Warn};
use serde::{Serialize, Serializer};
use serde_json::{json, Value};
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
    /// `[watch] reload_only`: the running generation dropped its template caches for these
    /// files instead of restarting (`dropped`: whose caches, "django", "jinja2").
    Reloaded {
        #[serde(rename = "paths")]
        files: Vec<String>,
        generation: u32,
        dropped: String,
        #[serde(rename = "duration_ms", serialize_with = "millis")]
        elapsed: Duration,
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
        /// It was a warm spare interpreter (not a fork) that became the generation.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        spare: bool,
    },
    Ready {
        generation: u32,
        #[serde(rename = "duration_ms", serialize_with = "millis")]
        elapsed: Duration,
        /// Where it listens (`127.0.0.1:8001`).
        address: String,
        /// The address a browser uses (`http://localhost:8001`): what the line shows.
        url: String,
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
    /// `--once` passed: every member got ready, was stopped and its port confirmed free.
    OncePassed {
        members: Vec<String>,
    },
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

impl From<Warn> for Event {
    fn from(warn: Warn) -> Event {
        Event::Warn(warn)
    }
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

/// How a status line is coloured, and whether `--quiet` keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Level {
    Info,
    Good,
    Warn,
    Bad,
}

/// How many changed files a status line names before "and N more".
const FILES_SHOWN: usize = 3;

impl Event {
    pub(super) fn level(&self) -> Level {
        match self {
            Event::Ready { .. }
            | Event::Started { .. }
            | Event::OncePassed { .. }
            | Event::Reloaded { .. } => Level::Good,
            Event::Changed { .. } | Event::Warning(_) | Event::Warn(_) | Event::NotReady { .. } => {
                Level::Warn
            }
            Event::Stopped { killed: true, .. } => Level::Warn,
            Event::PortHeld { .. } | Event::Exited { .. } => Level::Bad,
            _ => Level::Info,
        }
    }

    /// The status line's text (without `devrun:` and colour).
    pub(super) fn text(&self) -> String {
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
            Event::Changed { files } => format!("changed: {}", some_files(files)),
            Event::Reloaded {
                files,
                generation,
                dropped,
                elapsed,
            } => format!(
                "changed: {}: templates reloaded, no restart (generation {generation} dropped its \
                 {dropped} template caches in {} ms)",
                some_files(files),
                elapsed.as_millis()
            ),
            Event::PortReleased { port, waited } => {
                format!("port {port} released in {} ms", waited.as_millis())
            }
            Event::PortHeld { port, holders } => format!("port {port} is held by {holders}"),
            Event::Waiting => "waiting for changes".to_string(),
            Event::OncePassed { members } => format!(
                "--once passed: {} got ready, stopped, port{} released",
                members.join(", "),
                plural(members.len())
            ),
            Event::ShuttingDown { reason } => format!("{reason}: shutting down"),
            Event::Warning(text) => text.clone(),
            Event::Warn(warn) => warn.to_string(),
            Event::Stopping { .. }
            | Event::Stopped { .. }
            | Event::Started { .. }
            | Event::Ready { .. }
            | Event::NotReady { .. }
            | Event::Exited { .. } => self.generation_text(),
        }
    }

    /// The text of the events in one generation's life.
    fn generation_text(&self) -> String {
        match self {
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
            Event::Started {
                generation,
                pid,
                command,
                preloaded: None,
                ..
            } => format!("started generation {generation} (pid {pid}): {command}"),
            Event::Started {
                generation,
                pid,
                command,
                preloaded: Some(modules),
                spare,
            } => format!(
                "started generation {generation} (pid {pid}, preloaded {modules} modules): \
                 {command}{}",
                if *spare { " (spare)" } else { "" }
            ),
            Event::Ready {
                generation,
                elapsed,
                url,
                ..
            } => format!(
                "generation {generation} ready in {} ms on {url}",
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
                summary: Some(summary),
            } => format!("generation {generation} exited with {status}: {summary}"),
            Event::Exited {
                generation,
                status,
                summary: None,
            } => format!("generation {generation} exited with {status}"),
            other => format!("{other:?}"),
        }
    }
}

/// The first [`FILES_SHOWN`] of `files`, and how many more there are.
fn some_files(files: &[String]) -> String {
    let mut text = files
        .iter()
        .take(FILES_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > FILES_SHOWN {
        text.push_str(&format!(" and {} more", files.len() - FILES_SHOWN));
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
                    spare: false,
                },
                json!({"event": "started", "generation": 2, "pid": 8, "command": "python app.py"}),
            ),
            (
                Event::Started {
                    generation: 3,
                    pid: 9,
                    command: "python app.py".into(),
                    preloaded: Some(12),
                    spare: false,
                },
                json!({"event": "started", "generation": 3, "pid": 9, "command": "python app.py", "preloaded": 12}),
            ),
            (
                Event::Started {
                    generation: 4,
                    pid: 10,
                    command: "python app.py".into(),
                    preloaded: Some(12),
                    spare: true,
                },
                json!({"event": "started", "generation": 4, "pid": 10, "command": "python app.py", "preloaded": 12, "spare": true}),
            ),
            (
                Event::Ready {
                    generation: 2,
                    elapsed: ms(40),
                    address: "127.0.0.1:8001".into(),
                    url: "http://localhost:8001".into(),
                },
                json!({"event": "ready", "generation": 2, "duration_ms": 40, "address": "127.0.0.1:8001", "url": "http://localhost:8001"}),
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
}
