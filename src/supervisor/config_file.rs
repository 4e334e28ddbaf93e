//! Edits to the config file while devrun runs. devrun keeps running with the settings it
//! started with (a half-typed file must never take the stack down), so an edit is said once,
//! with what to do: restart devrun. Saving the file back as it was loaded ends that.

use crate::config::Config;
use crate::ui::{Ui, Warn};
use crate::watch::Batch;
use std::path::{Path, PathBuf};

pub(super) struct ConfigFile {
    path: PathBuf,
    /// What the run was loaded from (see [`fingerprint`]).
    loaded: Option<String>,
    /// The edit was said; set back when the file reads as loaded again.
    said: bool,
}

impl ConfigFile {
    /// The run's config file, if it has one (not for a command given after `--` alone).
    pub(super) fn new(config: &Config) -> Option<ConfigFile> {
        let path = config.source.clone()?;
        Some(ConfigFile {
            loaded: fingerprint(&path),
            path,
            said: false,
        })
    }

    /// Takes the config file out of `batch` (it restarts nothing, even when `include` matches
    /// it) and says once that an edit needs a restart of devrun.
    pub(super) fn take(&mut self, batch: &mut Batch, ui: &Ui) {
        let before = batch.paths.len();
        batch.paths.retain(|p| p != &self.path);
        if batch.paths.len() == before {
            return;
        }
        let edited = fingerprint(&self.path) != self.loaded;
        if edited && !self.said {
            let file = self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            ui.emit(&Warn::ConfigChanged { file }.into());
        }
        self.said = edited;
    }
}

/// What counts of the file: all of a `devrun.toml`; of a `pyproject.toml`, only its
/// `[tool.devrun]` table (an edit elsewhere in it is other tools' business).
fn fingerprint(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    if path
        .file_name()
        .is_some_and(|n| n == crate::config::PYPROJECT_FILE)
    {
        let table: toml::Table = toml::from_str(&text).ok()?;
        return Some(table.get("tool")?.get("devrun")?.to_string());
    }
    Some(text)
}
