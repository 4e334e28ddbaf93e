//! The config file's shape (every key the README documents, nothing else), and where it is
//! read from: `devrun.toml`, `--config FILE`, or `[tool.devrun]` of `pyproject.toml`.

use super::*;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) command: Option<Spanned<toml::Value>>,
    /// A number, or `"auto"` (see `kept_ports`).
    pub(super) port: Option<Spanned<toml::Value>>,
    pub(super) host: Option<Spanned<String>>,
    pub(super) env_file: Option<Spanned<String>>,
    /// The backend's working folder, relative to the config file's folder.
    pub(super) cwd: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) watch: FileWatch,
    #[serde(default)]
    pub(super) stop: FileStop,
    #[serde(default)]
    pub(super) ready: FileReady,
    #[serde(default)]
    pub(super) env: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub(super) server: FileServer,
    /// `[processes.NAME]`: the stack's other members (see `stack`).
    #[serde(default)]
    pub(super) processes: BTreeMap<Spanned<String>, stack::FileProcess>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileWatch {
    pub(super) paths: Option<Vec<String>>,
    pub(super) include: Option<Vec<Spanned<String>>>,
    pub(super) ignore: Option<Vec<Spanned<String>>>,
    pub(super) gitignore: Option<bool>,
    pub(super) debounce_ms: Option<Spanned<u64>>,
    pub(super) poll: Option<Spanned<toml::Value>>,
    pub(super) poll_ms: Option<Spanned<u64>>,
    pub(super) reload_only: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileStop {
    pub(super) signal: Option<Spanned<String>>,
    pub(super) timeout_ms: Option<Spanned<u64>>,
    pub(super) port_timeout_ms: Option<Spanned<u64>>,
    pub(super) fast: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileReady {
    pub(super) http: Option<Spanned<String>>,
    pub(super) timeout_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileServer {
    pub(super) socket: Option<Spanned<String>>,
    pub(super) preload: Option<Spanned<toml::Value>>,
    pub(super) preload_method: Option<Spanned<String>>,
}

/// `pyproject.toml`: only `[tool.devrun]` is read (same keys, same errors); the rest is the
/// other tools' business.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PyProject {
    #[serde(default)]
    pub(super) tool: PyProjectTools,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct PyProjectTools {
    pub(super) devrun: Option<FileConfig>,
}

/// A parsed file with what is needed to locate errors in it.
pub(super) struct Source {
    pub(super) path: PathBuf,
    pub(super) display: String,
    pub(super) text: String,
}

impl Source {
    pub(super) fn error(&self, offset: Option<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.display, &self.text, offset, message)
    }
}

/// What the derive functions read: the file's values (all unset without a file), where its
/// errors point, and the folder relative flags start from.
pub(super) struct Inputs {
    pub(super) source: Option<Source>,
    pub(super) file: FileConfig,
    pub(super) cwd: PathBuf,
}

impl Inputs {
    /// Finds and parses the config file: `flags.config`, else `devrun.toml` in the current folder,
    /// else `[tool.devrun]` of `pyproject.toml` there. Without one, every key is unset.
    pub(super) fn read(explicit: Option<&Path>) -> Result<Inputs, ConfigError> {
        let cwd = std::env::current_dir()
            .map_err(|e| ConfigError::plain(format!("cannot read the current folder: {e}")))?;
        let candidates = match explicit {
            Some(path) => vec![cwd.join(path)],
            None => vec![cwd.join(CONFIG_FILE), cwd.join(PYPROJECT_FILE)],
        };
        for path in candidates {
            if explicit.is_none() && !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::plain(format!("cannot read {}: {e}", path.display())))?;
            let source = Source {
                display: display_path(&path, &cwd),
                path,
                text,
            };
            let Some(file) = source.parse(explicit.is_some())? else {
                continue;
            };
            return Ok(Inputs {
                source: Some(source),
                file,
                cwd,
            });
        }
        Ok(Inputs {
            source: None,
            file: FileConfig::default(),
            cwd,
        })
    }

    /// An error at `offset` of the file, or a plain one without a file.
    pub(super) fn err(&self, offset: Option<usize>, message: impl Into<String>) -> ConfigError {
        match &self.source {
            Some(s) => s.error(offset, message),
            None => ConfigError::plain(message),
        }
    }

    /// Where `needle` is inside the file's text at `span` (a placeholder in a string, one item
    /// of an array), else the span's start: errors point at the very text.
    pub(super) fn find_in(&self, span: std::ops::Range<usize>, needle: &str) -> usize {
        self.source
            .as_ref()
            .and_then(|s| s.text.get(span.clone()))
            .and_then(|text| text.find(needle))
            .map_or(span.start, |at| span.start + at)
    }

    /// The config file's folder, or the current folder without one.
    pub(super) fn root(&self) -> PathBuf {
        match &self.source {
            Some(s) => s.path.parent().unwrap_or(&self.cwd).to_path_buf(),
            None => self.cwd.clone(),
        }
    }

    /// A `*_ms` key, checked against its limit (flags were checked as they were parsed).
    pub(super) fn millis(
        &self,
        key: &str,
        value: &Option<Spanned<u64>>,
        default: u64,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(Duration::from_millis(default));
        };
        let duration = Duration::from_millis(*value.get_ref());
        if duration > max {
            return Err(self.err(
                Some(value.span().start),
                format!(
                    "{key} = {} is above the limit of {}",
                    value.get_ref(),
                    describe_limit(max)
                ),
            ));
        }
        Ok(duration)
    }
}

impl Source {
    /// The devrun table of this file: None for a `pyproject.toml` without `[tool.devrun]` that
    /// was only looked at, not named.
    pub(super) fn parse(&self, named: bool) -> Result<Option<FileConfig>, ConfigError> {
        let locate = |e: toml::de::Error| {
            self.error(
                e.span().map(|s| s.start),
                e.message().trim_end().to_string(),
            )
        };
        if self.path.file_name().is_some_and(|n| n == PYPROJECT_FILE) {
            let pyproject: PyProject = toml::from_str(&self.text).map_err(locate)?;
            return match pyproject.tool.devrun {
                Some(file) => Ok(Some(file)),
                None if !named => Ok(None),
                None => Err(self.error(None, "no [tool.devrun] table")),
            };
        }
        toml::from_str(&self.text).map_err(locate).map(Some)
    }
}
