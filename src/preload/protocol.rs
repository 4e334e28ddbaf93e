//! What devrun and the preloader say to each other; runner.py mirrors it (`SPEC`, `REQUESTS`,
//! `REPLIES` there, checked the same way).
//!
//! devrun starts the preloader with a [`Spec`] (in `DEVRUN_PRELOAD_SPEC`); then JSON lines over
//! a Unix socket, each an object whose `kind` says what it is. The preloader says `hello` (its
//! protocol [`VERSION`], which must be devrun's), maybe `skipped` (a module it could not
//! import), then once `refused` or `loaded`. Then devrun sends a [`Request::Fork`] per
//! generation, answered by `forked` (or `stale`, after which the preloader exits), and the
//! preloader reports each child's raw wait status (`exited`) as soon as it reaps it. A spare
//! (`spare` in the spec) gets one [`Request::Run`] instead, answered by `running` (it then runs
//! the command itself and says no more) or `stale`. `error` is the preloader's last word when it could not read what devrun sent. A fork request carries,
//! with SCM_RIGHTS, the descriptors the child gets as in a cold start (its stdin and stderr
//! pipes, in a stack its stdout pipe, the held socket as fd 3); the preloader closes its copies
//! as soon as it forked.
//!
//! A line that is not one of these replies, or a reply out of turn, is a [`ProtocolError`]:
//! nothing the preloader says is ignored.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bumped whenever a message changes; the preloader's `hello` must carry this one.
pub const VERSION: u32 = 3;
/// How much of an unreadable line an error shows.
const SHOWN: usize = 200;

/// What the preloader is to do, given when it starts.
#[derive(Debug, Serialize)]
pub struct Spec<'a> {
    pub version: u32,
    /// The project folder (where "auto" reads the imports).
    pub root: &'a Path,
    /// The modules to import; None: "auto".
    pub modules: Option<&'a [String]>,
    /// The module the command runs (`-m`), preloaded too by "auto".
    pub module: Option<&'a str>,
    /// The script the command runs: its folder is `sys.path[0]`, as in a cold start.
    pub script: Option<&'a str>,
    /// A spare (`preload_method = "spare"`): no fork; after `loaded` it waits for one
    /// [`Request::Run`] and becomes the generation itself (threads and sockets are then fine).
    pub spare: bool,
}

/// devrun to the preloader, one line each.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request<'a> {
    /// Fork the next generation (Linux): a child running `module` (or `script`) with `args`
    /// in `cwd` with exactly `env`, shown by `ps` as `title`; `fds` are the numbers in the
    /// child of the descriptors sent with this line, in order.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Fork {
        env: &'a BTreeMap<String, String>,
        cwd: &'a Path,
        module: Option<&'a str>,
        script: Option<&'a str>,
        args: &'a [String],
        fds: Vec<i32>,
        title: &'a str,
    },
    /// A spare's one request: run the command in this very process, with the same fields as
    /// a fork (the held socket is the only descriptor sent; stdio is the spare's own).
    Run {
        env: &'a BTreeMap<String, String>,
        cwd: &'a Path,
        module: Option<&'a str>,
        script: Option<&'a str>,
        args: &'a [String],
        fds: Vec<i32>,
        title: &'a str,
    },
}

impl Request<'_> {
    /// The request as one line, newline included.
    pub fn line(&self) -> serde_json::Result<String> {
        let mut line = serde_json::to_string(self)?;
        line.push('\n');
        Ok(line)
    }
}

/// The preloader to devrun, one line each.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// Its first line: the protocol it speaks.
    Hello { version: u32 },
    /// A module it was to import raised (the child would fail the same way on its own import).
    Skipped { module: String, error: String },
    /// It will not serve (a module started a thread); it exits.
    Refused { reason: String },
    /// It imported `imported` of the modules it was given; `modules` is every module it holds
    /// that has a file, `read` every file inside the project its imports read or ran without
    /// importing it (for the check that none is project code).
    Loaded {
        imported: usize,
        modules: Vec<Module>,
        read: Vec<ReadFile>,
    },
    /// It forked the requested generation as `pid`, leading its own group.
    Forked { pid: u32 },
    /// The spare (`pid`, itself) runs the command now; it says nothing more.
    Running { pid: u32 },
    /// `file`, which it loaded, changed since: it did not fork (or run), and it exits.
    Stale { file: String },
    /// It reaped its child `pid`, whose raw wait status was `status`.
    Exited { pid: u32, status: i32 },
    /// It could not read what devrun sent (its spec or a request); it exits.
    Error { message: String },
}

/// A module the preloader holds, with its file and the preloaded module whose import loaded
/// it (None: it was loaded at the interpreter's start, before any preload).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Module {
    pub name: String,
    pub file: PathBuf,
    pub by: Option<String>,
}

/// A file inside the project that preloading `by` read, compiled or ran (a hook file a
/// library loads by its path, a settings file read at import).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFile {
    pub file: PathBuf,
    pub by: String,
}

impl Reply {
    /// One line the preloader sent (without its newline).
    pub fn parse(line: &str) -> Result<Reply, ProtocolError> {
        serde_json::from_str(line).map_err(|e| ProtocolError::Unreadable {
            line: shown(line),
            error: shown(&e.to_string()),
        })
    }

    /// The `kind` it was sent as.
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Hello { .. } => "hello",
            Reply::Skipped { .. } => "skipped",
            Reply::Refused { .. } => "refused",
            Reply::Loaded { .. } => "loaded",
            Reply::Forked { .. } => "forked",
            Reply::Running { .. } => "running",
            Reply::Stale { .. } => "stale",
            Reply::Exited { .. } => "exited",
            Reply::Error { .. } => "error",
        }
    }

    /// This reply where `expected` was due: a [`ProtocolError`] unless the preloader said
    /// `error` (which is its own).
    pub fn out_of_turn(&self, expected: &'static str) -> ProtocolError {
        match self {
            Reply::Error { message } => ProtocolError::Failed(message.clone()),
            other => ProtocolError::OutOfTurn {
                kind: other.kind(),
                expected,
            },
        }
    }
}

/// The preloader's first line: `hello` with devrun's protocol version.
pub fn check_hello(reply: Reply) -> Result<(), ProtocolError> {
    match reply {
        Reply::Hello { version } if version == VERSION => Ok(()),
        Reply::Hello { version } => Err(ProtocolError::Version { theirs: version }),
        other => Err(other.out_of_turn("`hello`")),
    }
}

/// devrun and the preloader do not understand each other (or the preloader gave up on what
/// devrun sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("the preloader sent a line devrun cannot read ({error}): {line}")]
    Unreadable { line: String, error: String },
    #[error("the preloader said `{kind}` where devrun expected {expected}")]
    OutOfTurn {
        kind: &'static str,
        expected: &'static str,
    },
    #[error("the preloader speaks protocol version {theirs}, this devrun version {VERSION}")]
    Version { theirs: u32 },
    #[error("the preloader could not read what devrun sent: {0}")]
    Failed(String),
}

/// `text`, cut to a readable length.
fn shown(text: &str) -> String {
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_reply_reads_as_its_kind() {
        let lines = [
            (
                json!({"kind": "hello", "version": 1}),
                Reply::Hello { version: 1 },
            ),
            (
                json!({"kind": "skipped", "module": "x", "error": "ImportError: no"}),
                Reply::Skipped {
                    module: "x".into(),
                    error: "ImportError: no".into(),
                },
            ),
            (
                json!({"kind": "refused", "reason": "a thread"}),
                Reply::Refused {
                    reason: "a thread".into(),
                },
            ),
            (
                json!({"kind": "loaded", "imported": 1, "modules": [
                    {"name": "fastapi", "file": "/v/fastapi/__init__.py", "by": "fastapi"},
                    {"name": "site", "file": "/usr/lib/site.py", "by": null},
                ], "read": [{"file": "/p/hooks.py", "by": "pluggy"}]}),
                Reply::Loaded {
                    imported: 1,
                    modules: vec![
                        Module {
                            name: "fastapi".into(),
                            file: "/v/fastapi/__init__.py".into(),
                            by: Some("fastapi".into()),
                        },
                        Module {
                            name: "site".into(),
                            file: "/usr/lib/site.py".into(),
                            by: None,
                        },
                    ],
                    read: vec![ReadFile {
                        file: "/p/hooks.py".into(),
                        by: "pluggy".into(),
                    }],
                },
            ),
            (
                json!({"kind": "forked", "pid": 42}),
                Reply::Forked { pid: 42 },
            ),
            (
                json!({"kind": "running", "pid": 42}),
                Reply::Running { pid: 42 },
            ),
            (
                json!({"kind": "stale", "file": "/v/x.py"}),
                Reply::Stale {
                    file: "/v/x.py".into(),
                },
            ),
            (
                json!({"kind": "exited", "pid": 42, "status": 256}),
                Reply::Exited {
                    pid: 42,
                    status: 256,
                },
            ),
            (
                json!({"kind": "error", "message": "bad"}),
                Reply::Error {
                    message: "bad".into(),
                },
            ),
        ];
        for (line, reply) in lines {
            assert_eq!(Reply::parse(&line.to_string()), Ok(reply.clone()));
            assert_eq!(line["kind"], reply.kind());
        }
    }

    /// Issue: a line that is no reply is an error that shows it, never a dropped null.
    #[test]
    fn a_malformed_or_unknown_line_is_an_error_that_shows_it() {
        for line in [
            "not json",
            r#"{"skipped": "x", "error": "old style, no kind"}"#,
            r#"{"kind": "welcome"}"#,
            r#"{"kind": "forked"}"#,
            r#"{"kind": "forked", "pid": -1}"#,
            r#"{"kind": "forked", "pid": 1, "extra": true}"#,
        ] {
            let error = Reply::parse(line).unwrap_err();
            assert!(matches!(error, ProtocolError::Unreadable { .. }), "{line}");
            let shown = error.to_string();
            assert!(shown.contains(line), "{shown}");
        }
        let long = format!(r#"{{"kind": "{}"}}"#, "x".repeat(1000));
        let shown = Reply::parse(&long).unwrap_err().to_string();
        assert!(shown.len() < 600 && shown.ends_with('…'), "{shown}");
        assert!(shown.contains("unknown variant"), "{shown}");
    }

    #[test]
    fn hello_must_come_first_with_this_version() {
        assert_eq!(check_hello(Reply::Hello { version: VERSION }), Ok(()));
        let old = check_hello(Reply::Hello { version: 0 }).unwrap_err();
        assert_eq!(old, ProtocolError::Version { theirs: 0 });
        assert!(old.to_string().contains("version 0"), "{old}");
        let early = check_hello(Reply::Forked { pid: 2 }).unwrap_err();
        assert!(early.to_string().contains("said `forked`"), "{early}");
        let gave_up = Reply::Error {
            message: "spec: missing key root".into(),
        };
        assert_eq!(
            check_hello(gave_up),
            Err(ProtocolError::Failed("spec: missing key root".into()))
        );
    }

    #[test]
    fn requests_and_the_spec_are_tagged_lines() {
        let env = BTreeMap::from([("PORT".to_string(), "8000".to_string())]);
        let args = vec!["app:app".to_string()];
        let fork = Request::Fork {
            env: &env,
            cwd: Path::new("/p"),
            module: Some("uvicorn"),
            script: None,
            args: &args,
            fds: vec![2, 3],
            title: "python -m uvicorn app:app",
        };
        let line = fork.line().unwrap();
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        let sent: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            sent,
            json!({"kind": "fork", "env": {"PORT": "8000"}, "cwd": "/p", "module": "uvicorn",
                   "script": null, "args": ["app:app"], "fds": [2, 3],
                   "title": "python -m uvicorn app:app"})
        );
        let spec = Spec {
            version: VERSION,
            root: Path::new("/p"),
            modules: None,
            module: None,
            script: Some("app.py"),
            spare: false,
        };
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({"version": VERSION, "root": "/p", "modules": null, "module": null,
                   "script": "app.py", "spare": false})
        );
    }
}
