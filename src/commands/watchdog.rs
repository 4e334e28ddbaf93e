//! `devrun __watchdog` (hidden; see `crate::watchdog`): once devrun's pipe closes, ends what a
//! devrun that died left of its run, as the next devrun would at its start.

use crate::cli::ProjectArgs;
use crate::config::ProjectConfig;
use crate::error::Error;
use crate::project::recover_orphan;
use crate::state::StateDir;
use crate::ui::Ui;

/// After a clean exit the state file is gone: nothing to do. After a kill, its record names
/// the generations to end (each proven ours first); a devrun that started meanwhile is alive,
/// and `recover_orphan` leaves a live devrun's record alone.
pub async fn watchdog(args: &ProjectArgs, ui: &Ui) -> Result<(), Error> {
    crate::watchdog::wait_for_devrun_to_end();
    let cwd =
        std::env::current_dir().map_err(|e| Error::io("cannot read the current folder", e))?;
    // A config edited into an error meanwhile must not keep the leftovers alive: then the
    // record's own port and the default stop settings are used.
    let config = ProjectConfig::load(args).ok().flatten();
    let root = config.as_ref().map_or(cwd, |c| c.root.clone());
    let state_dir = StateDir::new(&root);
    let Some(state) = state_dir.read() else {
        return Ok(());
    };
    let config = config.unwrap_or_else(|| ProjectConfig::recorded(&root, &state.host, state.port));
    recover_orphan(&state_dir, &config, ui).await
}
