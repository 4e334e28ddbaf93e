//! Typed errors and the documented exit codes they map to (one place, used by `main`).

use std::fmt;

/// The process exit codes: the one list the code and `--help` use (the README's table says the
/// same for people, at more length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    BackendFailed = 1,
    Usage = 2,
    Port = 3,
    AlreadyRunning = 4,
}

impl ExitCode {
    pub const ALL: [ExitCode; 5] = [
        ExitCode::Ok,
        ExitCode::BackendFailed,
        ExitCode::Usage,
        ExitCode::Port,
        ExitCode::AlreadyRunning,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// In a few words, for `--help`.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitCode::Ok => "ok",
            ExitCode::BackendFailed => "backend failed",
            ExitCode::Usage => "usage or configuration error",
            ExitCode::Port => "port held or not released",
            ExitCode::AlreadyRunning => "another devrun runs this project",
        }
    }

    /// "Exit codes: 0 ok, 1 backend failed, ...": the end of `devrun --help`.
    pub fn help() -> String {
        let codes: Vec<String> = ExitCode::ALL
            .iter()
            .map(|c| format!("{} {}", c.code(), c.meaning()))
            .collect();
        format!("Exit codes: {}", codes.join(", "))
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code())
    }
}

/// A configuration problem, located in its file where possible.
#[derive(Debug)]
pub struct ConfigError {
    pub file: Option<String>,
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
    /// The offending line of the file, shown under the message.
    pub source_line: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn plain(message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            position: None,
            source_line: None,
            message: message.into(),
        }
    }

    /// An error at byte `offset` of `text`, the contents of `file`.
    pub fn at(file: &str, text: &str, offset: Option<usize>, message: impl Into<String>) -> Self {
        let (position, source_line) = match offset {
            Some(offset) => {
                let (line, col, content) = line_col(text, offset);
                (Some((line, col)), Some(content))
            }
            None => (None, None),
        };
        ConfigError {
            file: Some(file.to_string()),
            position,
            source_line,
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset, and that line's text.
fn line_col(text: &str, offset: usize) -> (usize, usize, String) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    let content = text[line_start..].lines().next().unwrap_or("").to_string();
    (line, col, content)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.position) {
            (Some(file), Some((line, col))) => write!(f, "{file}:{line}:{col}: {}", self.message)?,
            (Some(file), None) => write!(f, "{file}: {}", self.message)?,
            _ => write!(f, "{}", self.message)?,
        }
        if let (Some(content), Some((_, col))) = (&self.source_line, self.position) {
            write!(
                f,
                "\n    | {content}\n    | {}^",
                " ".repeat(col.saturating_sub(1))
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Everything that ends a devrun run early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    /// The port is held by a process devrun did not start, or was not released in time.
    #[error("{0}")]
    Port(String),
    /// `--once`: the backend exited early, was not ready in time, or failed its health check.
    #[error("{0}")]
    BackendFailed(String),
    #[error("{0}")]
    AlreadyRunning(String),
    /// The file watch could not be set up.
    #[error("{0}")]
    Watch(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Config(_) | Error::Usage(_) => ExitCode::Usage,
            Error::Port(_) => ExitCode::Port,
            Error::BackendFailed(_) | Error::Watch(_) | Error::Io { .. } => ExitCode::BackendFailed,
            Error::AlreadyRunning(_) => ExitCode::AlreadyRunning,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_offsets() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1, "a = 1".into()));
        assert_eq!(line_col(text, 9), (2, 4, "bb = 2".into()));
        let e = ConfigError::at("devrun.toml", text, Some(6), "unknown key");
        assert!(e.to_string().starts_with("devrun.toml:2:1: unknown key"));
    }

    #[test]
    fn help_lists_every_exit_code_and_the_readme_documents_each() {
        assert_eq!(
            ExitCode::help(),
            "Exit codes: 0 ok, 1 backend failed, 2 usage or configuration error, \
             3 port held or not released, 4 another devrun runs this project"
        );
        let readme = include_str!("../README.md");
        let table = readme
            .split("### Exit codes")
            .nth(1)
            .and_then(|rest| rest.split("\n#").next())
            .expect("README has an exit-code table");
        for code in ExitCode::ALL {
            assert!(
                table.contains(&format!("\n| {} | ", code.code())),
                "README's exit-code table lacks {code:?}"
            );
        }
    }
}
