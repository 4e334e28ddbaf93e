//! What a run does before its runners start: say what loading found, open the control
//! channel, write the first state file, start the watchdog.

use super::requests::Shutdown;
use crate::config::{Config, Member};
use crate::control;
use crate::procs;
use crate::state::{self, State, StateDir};
use crate::ui::{Event, Ui, Warn};
use std::path::PathBuf;

/// What loading the config picked (a new auto port) and a command's own reloader: said once.
pub(super) fn say_at_start(config: &Config, members: &[Member], ui: &Ui) {
    for note in &config.notes {
        ui.emit(&Event::Warning(note.clone()));
    }
    for (member, found) in crate::reloader::in_members(members) {
        let who = match member == crate::config::BACKEND {
            true => "the backend".to_string(),
            false => format!("[processes.{member}]"),
        };
        let (what, fix) = (found.what, found.fix);
        ui.emit(
            &Warn::OwnReloader {
                member,
                who,
                what,
                fix,
            }
            .into(),
        );
    }
}

/// The control channel, or None (said): without it devrun still runs, and `devrun stop` falls
/// back to a signal.
pub(super) async fn open_channel(
    shutdown: &Shutdown,
    state_dir: &StateDir,
    ui: &Ui,
) -> Option<state::ControlRecord> {
    let noter = ui.clone();
    let note: control::Note = std::sync::Arc::new(move |text| noter.emit(&Event::Warning(text)));
    match control::listen(shutdown.control_sender(), state_dir.path(), note).await {
        Ok(control) => Some(control),
        Err(e) => {
            let error = e.to_string();
            ui.emit(&Warn::ControlUnavailable { error }.into());
            None
        }
    }
}

/// The state file as this run starts: devrun itself, its channel, no generation yet.
pub(super) fn first_state(
    config: &Config,
    state_dir: &StateDir,
    run: String,
    control: Option<state::ControlRecord>,
) -> State {
    let me = std::process::id();
    State {
        devrun_pid: me,
        devrun_start: procs::start_time(me).unwrap_or(0),
        port: config.port,
        host: config.host.clone(),
        started_at: state::unix_now(),
        run,
        control,
        project: Some(state_dir.project()),
        backend: None,
        backend_run: config.run_backend,
        processes: Vec::new(),
        exited: Default::default(),
        log: std::env::var_os(crate::logfile::LOG_VARIABLE).map(PathBuf::from),
    }
}

/// The watchdog that ends what is left if devrun is killed (see `crate::watchdog`); none on
/// Windows (the job object does it) or when it cannot start (said once).
pub(super) fn start_watchdog(config: &Config, ui: &Ui) -> Option<crate::watchdog::Watchdog> {
    match crate::watchdog::Watchdog::start(config) {
        Ok(watchdog) => Some(watchdog),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => None,
        Err(e) => {
            ui.emit(&Event::Warning(format!(
                "cannot start the watchdog ({e}): if devrun is killed, a member's children may \
                 outlive it until `devrun stop` or the next devrun"
            )));
            None
        }
    }
}
