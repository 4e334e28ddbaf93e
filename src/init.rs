//! `devrun init`: inspect the folder and write a commented `devrun.toml`.

use crate::error::Error;
use std::path::{Path, PathBuf};

/// What `init` wrote, for the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    /// "FastAPI app app.main:app", "Django project", "Flask app", or "no app found (template)".
    pub detected: String,
}

/// Writes `dir/devrun.toml`. Refuses (exit 2) to overwrite an existing one unless `force`.
pub fn init(dir: &Path, force: bool) -> Result<Written, Error> {
    let _ = (dir, force);
    Err(Error::Usage("devrun init is not implemented yet".into()))
}
