//! `devrun stop`: the running devrun tears its members down and exits, or what a dead one left
//! is ended; then every member's port must be free.

use super::project;
use crate::cli::ProjectArgs;
use crate::config::ProjectConfig;
use crate::control::Verb;
use crate::error::Error;
use crate::port;
use crate::project::{recover_orphan, stop_running_devrun};
use crate::state::{self, State, StateDir, BACKEND};
use crate::ui::{Event, Ui};

/// Stops the running devrun of this project (it tears every member down and exits) or, if it
/// is dead, what it left. Exit 0 when every member's port is free afterwards.
pub async fn stop(args: &ProjectArgs, ui: &Ui) -> Result<(), Error> {
    let project = project(args)?;
    let state_dir = StateDir::new(&project.root);
    let mut recorded: Vec<State> = state_dir.read().into_iter().collect();
    // The port and timeouts: the config's, else what the dead devrun recorded.
    let config = match project.config {
        Some(config) => config,
        None => {
            let Some(state) = recorded.first() else {
                ui.emit(&Event::Warning(
                    "nothing to stop: no devrun has run in this folder".into(),
                ));
                return Ok(());
            };
            ProjectConfig::recorded(&project.root, &state.host, state.port)
        }
    };
    let timeout = config.devrun_exit_timeout();
    if let Some(running) = state_dir.running_devrun() {
        ui.emit(&Event::Warning(format!(
            "stopping devrun (pid {}) and {}",
            running.devrun_pid,
            its_members(&running)
        )));
        stop_running_devrun(&state_dir, &running, ui, timeout, Verb::Stop).await?;
    }
    recover_orphan(&state_dir, &config, ui).await?;
    // A devrun that started meanwhile is running, not left over: it is stopped too.
    if let Some(running) = state_dir.running_devrun() {
        ui.emit(&Event::Warning(format!(
            "devrun (pid {}) started meanwhile: stopping it and {} too",
            running.devrun_pid,
            its_members(&running)
        )));
        stop_running_devrun(&state_dir, &running, ui, timeout, Verb::Stop).await?;
        recover_orphan(&state_dir, &config, ui).await?;
        recorded.push(running);
    }
    let ports = ports_to_free(&config, &recorded);
    let mut held = Vec::new();
    for (name, port) in &ports {
        if port::wait_free(&config.host, *port, config.stop.port_timeout)
            .await
            .is_err()
        {
            let holders = port::describe_holders(&port::holders(*port));
            held.push(format!("port {port} ({name}) is still held by {holders}"));
        }
    }
    if !held.is_empty() {
        return Err(Error::Port(held.join("; ")));
    }
    let free = match ports.as_slice() {
        [] => "none of its processes has a port".to_string(),
        ports => {
            let verb = if ports.len() == 1 { "is" } else { "are" };
            format!("{} {verb} free", state::describe_ports(ports))
        }
    };
    ui.emit(&Event::Warning(format!("stopped; {free}")));
    Ok(())
}

/// "its backend" for a backend run alone, else "its 3 processes (backend, web, worker)".
fn its_members(state: &State) -> String {
    let names: Vec<&str> = state
        .backend_run
        .then_some(BACKEND)
        .into_iter()
        .chain(state.processes.iter().map(|p| p.name.as_str()))
        .collect();
    match names.as_slice() {
        [BACKEND] => "its backend".to_string(),
        [name] => format!("its process {name}"),
        names => format!("its {} processes ({})", names.len(), names.join(", ")),
    }
}

/// The ports `stop` must see free: the backend's (the config's; unless the stopped runs did
/// not run it) and every member port they recorded, each once, with its member's name.
fn ports_to_free(config: &ProjectConfig, recorded: &[State]) -> Vec<(String, u16)> {
    let backend_run = recorded.is_empty() || recorded.iter().any(|s| s.backend_run);
    let mut ports: Vec<(String, u16)> = Vec::new();
    if backend_run {
        ports.push((BACKEND.to_string(), config.port));
    }
    for (name, port) in recorded.iter().flat_map(State::ports) {
        if name != BACKEND && !ports.iter().any(|(_, p)| *p == port) {
            ports.push((name.to_string(), port));
        }
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_HOST;
    use std::path::Path;

    fn state(backend_run: bool, members: &[(&str, Option<u16>)]) -> State {
        let mut state = State {
            devrun_pid: 1,
            devrun_start: 2,
            port: 8001,
            host: DEFAULT_HOST.into(),
            started_at: 3,
            run: String::new(),
            control: None,
            project: None,
            backend: None,
            backend_run,
            processes: Vec::new(),
            exited: Default::default(),
            log: None,
        };
        for (name, port) in members {
            state.set_process(name, *port, None);
        }
        state
    }

    #[test]
    fn stop_names_the_members_and_waits_for_each_port() {
        assert_eq!(its_members(&state(true, &[])), "its backend");
        assert_eq!(
            its_members(&state(true, &[("web", Some(5173)), ("worker", None)])),
            "its 3 processes (backend, web, worker)"
        );
        assert_eq!(
            its_members(&state(false, &[("web", Some(5173))])),
            "its process web"
        );

        let config = ProjectConfig::recorded(Path::new("/p"), DEFAULT_HOST, 9000);
        assert_eq!(ports_to_free(&config, &[]), [("backend".to_string(), 9000)]);
        // The config's backend port wins over the recorded one; portless members need nothing.
        let stack = state(true, &[("web", Some(5173)), ("worker", None)]);
        assert_eq!(
            ports_to_free(&config, &[stack]),
            [("backend".to_string(), 9000), ("web".to_string(), 5173)]
        );
        // A run without the backend (`--only web`) does not own the backend's port.
        let only_web = state(false, &[("web", Some(5173))]);
        assert_eq!(
            ports_to_free(&config, &[only_web]),
            [("web".to_string(), 5173)]
        );
    }
}
