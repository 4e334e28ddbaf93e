//! `devrun status`, `devrun stop` and `devrun restart`: answers about, and actions on, the devrun
//! of a project from outside it, through `.devrun/`, its control channel and the OS. None of them
//! takes the project lock: asking must never keep a devrun from starting.

mod logs;
mod restart;
mod status;
mod stop;
mod up;
mod watchdog;

pub use logs::{logs, LogsArgs};
pub use restart::restart;
pub use status::{status, Verdict};
pub use stop::stop;
pub use up::{up, UpArgs};
pub use watchdog::watchdog;

use crate::cli::ProjectArgs;
use crate::config::ProjectConfig;
use crate::error::Error;
use std::path::PathBuf;

/// The project's folder, and its config if it has a config file.
struct Project {
    root: PathBuf,
    config: Option<ProjectConfig>,
}

fn project(args: &ProjectArgs) -> Result<Project, Error> {
    let cwd =
        std::env::current_dir().map_err(|e| Error::io("cannot read the current folder", e))?;
    if let Some(file) = args.config.as_ref().map(|p| cwd.join(p)) {
        if !file.is_file() {
            return Err(Error::Usage(format!(
                "no config file at {}",
                file.display()
            )));
        }
    }
    // status, stop and restart need only the project layer: a config without a command is fine.
    let config = ProjectConfig::load(args)?;
    let root = config.as_ref().map_or(cwd, |c| c.root.clone());
    Ok(Project { root, config })
}
