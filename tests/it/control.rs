//! The control channel (issues 13.2 and 14.3): `devrun stop`, `devrun restart` and `--replace`
//! ask the running devrun through `.devrun/state.json`'s 127.0.0.1 port and token, and it acts
//! in the same place it handles Ctrl-C, with the full confirmed teardown. (`--replace` through
//! the channel is in `single_instance.rs`.)

use crate::harness::*;

use std::fs;

#[test]
fn devrun_stop_asks_through_the_channel_and_the_backend_stops_gracefully() {
    let mut p = Project::testapp("records_signals.py").start();
    let served = p.wait_for_version("v1", WAIT);
    let state = p.read_state();
    let control_port = state["control"]["port"].as_u64().expect("no control port") as u16;
    assert_eq!(
        state["control"]["token"].as_str().map(str::len),
        Some(32),
        "{state:#}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(p.state_path()).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "state.json holds the token: owner only"
    );
    assert_eq!(
        listeners(control_port),
        vec![p.pid()],
        "devrun holds the channel"
    );

    let (code, stop_stderr) = p.run_another(["stop"], WAIT);

    assert_eq!(code, 0, "devrun stop said:\n{stop_stderr}");
    assert_eq!(p.wait_exit(WAIT), 0);
    assert_eq!(p.signals_of(served.pid), vec!["SIGTERM".to_string()]);
    assert!(!served.alive());
    assert!(
        p.stderr().contains("stop requested by `devrun stop`"),
        "devrun did not take the request from the channel:\n{}",
        p.stderr()
    );
    for unwanted in ["orphan", "left running", "cannot reach", "SIGTERM instead"] {
        assert!(
            !stop_stderr.contains(unwanted),
            "devrun stop said {unwanted:?}:\n{stop_stderr}"
        );
    }
    p.assert_nothing_left();
    assert!(listeners(control_port).is_empty());
}

#[test]
fn devrun_stop_falls_back_to_sigterm_when_the_channel_cannot_be_reached() {
    let mut p = Project::testapp("records_signals.py").start();
    let served = p.wait_for_version("v1", WAIT);
    // A channel that answers nowhere: a port nothing listens on.
    let mut state = p.read_state();
    state["control"]["port"] = free_port().into();
    fs::write(p.state_path(), serde_json::to_string(&state).unwrap()).unwrap();

    let (code, stop_stderr) = p.run_another(["stop"], WAIT);

    assert_eq!(code, 0, "devrun stop said:\n{stop_stderr}");
    assert!(
        stop_stderr.contains("cannot reach"),
        "no warning about the fallback:\n{stop_stderr}"
    );
    assert_eq!(p.wait_exit(WAIT), 0);
    assert!(p.stderr().contains("SIGTERM received"), "{}", p.stderr());
    assert_eq!(p.signals_of(served.pid), vec!["SIGTERM".to_string()]);
    p.assert_nothing_left();
}

#[test]
fn a_wrong_token_is_refused_and_devrun_keeps_running() {
    let mut p = Project::testapp("normal.py").start();
    let served = p.wait_for_version("v1", WAIT);
    let mut state = p.read_state();
    state["control"]["token"] = "0".repeat(32).into();
    fs::write(p.state_path(), serde_json::to_string(&state).unwrap()).unwrap();

    let (code, stderr) = p.run_another(["restart"], WAIT);
    assert_eq!(code, 1, "devrun restart said:\n{stderr}");
    assert!(stderr.contains("wrong token"), "{stderr}");
    let (code, stderr) = p.run_another(["stop"], WAIT);
    assert_ne!(code, 0, "devrun stop said:\n{stderr}");

    assert!(p.running());
    assert!(served.alive());
    assert_eq!(p.served().map(|s| s.pid), Some(served.pid));
    assert_eq!(p.starts().len(), 1);
}

#[test]
fn devrun_restart_starts_a_new_generation_after_a_confirmed_teardown() {
    let mut p = Project::testapp("records_signals.py").start();
    let gen1 = p.wait_for_version("v1", WAIT);
    assert_eq!(gen1.generation, Some(1));

    let (code, stderr) = p.run_another(["restart"], WAIT);

    assert_eq!(code, 0, "devrun restart said:\n{stderr}");
    let gen2 = poll(WAIT, || p.served().filter(|s| s.generation == Some(2)))
        .expect("generation 2 never answered GET /");
    assert_ne!(gen2.pid, gen1.pid);
    assert!(!gen1.alive(), "generation 1 survived the restart");
    assert_eq!(p.signals_of(gen1.pid), vec!["SIGTERM".to_string()]);
    assert_eq!(p.listeners(), vec![gen2.pid]);
    // Generation 2 started alone, on a port confirmed free.
    p.assert_every_start_was_alone();
    assert!(p.running());
    assert!(p.stderr().contains("restart requested by `devrun restart`"));

    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0);
    assert!(p.port_free());
}

#[test]
fn devrun_restart_restarts_a_crashed_backend() {
    let mut p = Project::testapp("crashes_first.py").start();
    p.wait_until("generation 1 to crash and devrun to wait", WAIT, || {
        p.stderr().contains("waiting for changes")
    });
    assert_eq!(p.starts().len(), 1);
    assert!(p.get("/").is_none());

    let (code, stderr) = p.run_another(["restart"], WAIT);

    assert_eq!(code, 0, "devrun restart said:\n{stderr}");
    let gen2 = poll(WAIT, || p.served().filter(|s| s.generation == Some(2)))
        .expect("generation 2 never answered GET /");
    assert_eq!(p.listeners(), vec![gen2.pid]);
    p.assert_every_start_was_alone();
    assert!(p.running());
}

#[test]
fn devrun_restart_exits_1_when_no_devrun_runs() {
    let p = Project::testapp("normal.py");
    // No devrun was ever started here.
    let (code, stderr) = p.run_another(["restart"], WAIT);

    assert_eq!(code, 1, "devrun restart said:\n{stderr}");
    assert!(stderr.contains("no devrun runs this project"), "{stderr}");
}
