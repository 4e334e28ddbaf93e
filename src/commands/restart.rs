//! `devrun restart`: asks the running devrun, on its control channel, for a new generation.

use super::project;
use crate::cli::ProjectArgs;
use crate::control::{self, Verb};
use crate::error::{Error, ExitCode};
use crate::state::StateDir;
use crate::ui::{Event, Ui};

/// Asks the running devrun of this project to restart its backend (every process of a stack) now (full confirmed
/// teardown, also while the backend is crashed). Exit 0 once it acknowledged; 1 when no devrun
/// runs this project or it cannot be reached.
pub async fn restart(args: &ProjectArgs, ui: &Ui) -> Result<ExitCode, Error> {
    let project = project(args)?;
    let state_dir = StateDir::new(&project.root);
    let Some(running) = state_dir.running_devrun() else {
        ui.error(&format!(
            "no devrun runs this project ({}): nothing to restart; start one with `devrun`",
            project.root.display()
        ));
        return Ok(ExitCode::BackendFailed);
    };
    let pid = running.devrun_pid;
    let Some(channel) = &running.control else {
        ui.error(&format!(
            "devrun (pid {pid}) runs this project but has no control channel (an older devrun?); \
             restart it by saving a watched file"
        ));
        return Ok(ExitCode::BackendFailed);
    };
    match control::send(channel, pid, Verb::Restart).await {
        Ok(()) => {
            let what = match running.processes.is_empty() {
                true => "its backend".to_string(),
                false => format!(
                    "its {} processes",
                    running.processes.len() + usize::from(running.backend_run)
                ),
            };
            ui.emit(&Event::Warning(format!(
                "devrun (pid {pid}) is restarting {what}"
            )));
            Ok(ExitCode::Ok)
        }
        Err(e) => {
            ui.error(&format!(
                "devrun (pid {pid}) did not take the restart on its control channel \
                 ({}): {e}",
                channel.describe()
            ));
            Ok(ExitCode::BackendFailed)
        }
    }
}
