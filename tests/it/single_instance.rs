//! One backend per project:
//! - invariant 7: a second devrun is refused (exit 4, plain or `--once`), `--replace` takes over
//!   after a confirmed teardown asked through the control channel;
//! - invariant 6: a port held by a process devrun did not start is left alone (exit 3) unless
//!   `--kill-port-holder` is given;
//! - invariant 4 on Linux: a descendant that left the group with setsid is still ended;
//! - `devrun status --json` and `.devrun/state.json` name the real processes.
//!
//! What a killed devrun left (invariant 5) is in `orphan.rs`.

use crate::harness::*;

use serde_json::{json, Value};
use std::process::{Command, Stdio};

/// A Python `http.server` on the project's port: a listener devrun did not start.
/// Returns it once it listens, with its start time.
fn foreign_server(p: &Project) -> (Guard, u64) {
    let port = p.port.to_string();
    let guard = Guard::spawn(
        "the foreign http.server",
        Command::new(python())
            .args(["-m", "http.server", &port, "--bind", "127.0.0.1"])
            .current_dir(p.tmp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let pid = guard.pid();
    p.wait_until("the foreign server to listen", WAIT, || {
        p.listeners() == vec![pid]
    });
    let start = starttime(pid).expect("the foreign server is gone");
    (guard, start)
}

// ---- invariant 7: one devrun per project ----

#[test]
fn a_second_devrun_exits_4_naming_the_first_which_keeps_serving() {
    let mut p = Project::testapp("normal.py").start();
    let served = p.wait_for_version("v1", WAIT);

    // Plain, and `--once` (the CI smoke test) alike.
    for args in [&[][..], &["--once"][..]] {
        let mut second = p.spawn_devrun(args, "second");
        let code = second.wait_exit(WAIT);
        let stderr = second.stderr();

        assert_eq!(code, 4, "the second devrun {args:?} said:\n{stderr}");
        let numbers = numbers_in(&stderr);
        assert!(
            numbers.contains(&i64::from(p.pid())),
            "the second devrun did not name the first one's pid {}:\n{stderr}",
            p.pid()
        );
        assert!(
            numbers.contains(&i64::from(p.port)),
            "the second devrun did not name the port {}:\n{stderr}",
            p.port
        );
        p.assert_kept_serving_alone(&served);
    }
}

/// `--replace` asks the running devrun through the control channel: it stops its backend
/// gracefully (SIGTERM, recorded by records_signals.py), exits 0, and the new devrun serves.
#[test]
fn replace_stops_the_running_devrun_through_the_channel_and_takes_over() {
    let mut p = Project::testapp("records_signals.py").start();
    let first = p.wait_for_version("v1", WAIT);

    let mut second = p.spawn_devrun(&["--replace"], "replace");

    assert_eq!(p.wait_exit(WAIT), 0, "the replaced devrun's exit code");
    assert!(
        p.stderr()
            .contains("replaced by another devrun (--replace)"),
        "{}",
        p.stderr()
    );
    assert!(!first.alive(), "the replaced devrun's backend survived");
    assert_eq!(p.signals_of(first.pid), vec!["SIGTERM".to_string()]);
    let next = poll(WAIT, || p.served().filter(|s| s.pid != first.pid))
        .expect("the replacing devrun's backend never answered GET /");
    assert!(second.running(), "the replacing devrun exited");
    assert_eq!(parent_of(next.pid), Some(second.pid()));
    assert_eq!(p.listeners(), vec![next.pid]);
    assert_eq!(p.read_state()["devrun_pid"], json!(second.pid()));
    p.assert_every_start_was_alone();
    assert!(
        !second.stderr().contains("cannot reach"),
        "{}",
        second.stderr()
    );

    second.signal(SIGINT);
    assert_eq!(second.wait_exit(WAIT), 0);
    assert!(!next.alive());
    assert!(p.port_free());
}

// ---- invariant 6: a port held by a process devrun did not start ----

#[test]
fn a_foreign_port_holder_is_named_and_left_alone_unless_kill_port_holder() {
    let p = Project::testapp("normal.py");
    let (foreign, foreign_start) = foreign_server(&p);
    let foreign_pid = foreign.pid();
    let mut p = p.start();

    assert_eq!(
        p.wait_exit(WAIT),
        3,
        "devrun's exit code with a foreign port holder"
    );
    let stderr = p.stderr();
    assert!(
        numbers_in(&stderr).contains(&i64::from(foreign_pid)),
        "devrun did not name the holder's pid {foreign_pid}:\n{stderr}"
    );
    assert!(
        stderr.contains("http.server"),
        "devrun did not show the holder's command line:\n{stderr}"
    );
    assert!(
        alive(foreign_pid, foreign_start),
        "devrun ended a process it did not start"
    );
    assert_eq!(p.listeners(), vec![foreign_pid]);
    assert!(p.starts().is_empty(), "devrun started a backend anyway");

    let mut devrun = p.spawn_devrun(
        &["--kill-port-holder", "--events", "json"],
        "kill-port-holder",
    );
    let served = p.wait_for_version("v1", WAIT);

    assert!(
        !alive(foreign_pid, foreign_start),
        "--kill-port-holder left the holder running"
    );
    assert_eq!(p.listeners(), vec![served.pid]);
    assert_eq!(parent_of(served.pid), Some(devrun.pid()));
    // Named before anything was started.
    let events: Vec<Value> = devrun
        .stderr()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let named = events
        .iter()
        .position(|e| numbers_in(&e.to_string()).contains(&i64::from(foreign_pid)))
        .unwrap_or_else(|| panic!("no event names pid {foreign_pid}: {events:#?}"));
    let started = events
        .iter()
        .position(|e| e["event"] == "started")
        .unwrap_or_else(|| panic!("no started event: {events:#?}"));
    assert!(
        named < started,
        "the holder was not named before the backend started: {events:#?}"
    );

    devrun.signal(SIGINT);
    assert_eq!(devrun.wait_exit(WAIT), 0);
    assert!(p.port_free());
    drop(foreign);
}

// ---- invariant 4 on Linux: descendants that leave the group ----

#[test]
fn a_grandchild_that_called_setsid_is_ended_on_restart_and_on_exit() {
    let mut p = Project::testapp("escapee.py").stop_timeout_ms(300).start();
    let gen1 = p.wait_for_version("v1", WAIT);
    let escapee1 = p.wait_for_child_of(gen1.pid, WAIT);
    // The fixture really escapes: its own group and session, away from the backend's group.
    assert_eq!(
        pgid(escapee1.pid),
        escapee1.pid,
        "the escapee did not setsid"
    );
    assert_ne!(pgid(escapee1.pid), pgid(gen1.pid));
    assert_eq!(p.listeners(), sorted(vec![gen1.pid, escapee1.pid]));

    p.write_atomic("version.py", &version_py("v2"));
    let gen2 = p.wait_for_version("v2", WAIT);

    assert!(!gen1.alive());
    assert!(
        !escapee1.alive(),
        "generation 1's escapee (pid {}) survived the restart",
        escapee1.pid
    );
    let escapee2 = p.wait_for_child_of(gen2.pid, WAIT);
    assert_eq!(p.listeners(), sorted(vec![gen2.pid, escapee2.pid]));
    p.assert_every_start_was_alone();

    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0);
    assert!(!gen2.alive());
    assert!(
        !escapee2.alive(),
        "generation 2's escapee (pid {}) outlived devrun",
        escapee2.pid
    );
    p.assert_nothing_left();
}

// ---- status and the state file ----

/// `devrun status --json` in the project: (exit code, stdout, stderr).
fn status_json(p: &Project) -> (i32, String, String) {
    let mut status = p.spawn_devrun(&["status", "--json"], "status");
    let code = status.wait_exit(WAIT);
    (code, status.stdout(), status.stderr())
}

#[test]
fn status_json_names_the_real_backend_and_exits_1_when_nothing_listens() {
    let mut p = Project::testapp("normal.py").start();
    let served = p.wait_for_version("v1", WAIT);
    let recorded = p.starts();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].pid, served.pid);

    let (code, stdout, stderr) = status_json(&p);

    let status: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("status --json printed no JSON ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(code, 0, "status said:\n{stdout}\n{stderr}");
    assert_eq!(status["verdict"], "ok");
    assert_eq!(status["devrun_running"], true);
    assert_eq!(status["devrun_pid"], json!(p.pid()));
    assert_eq!(status["port"], json!(p.port));
    assert_eq!(status["host"], "127.0.0.1");
    let backend = &status["backend"];
    assert_eq!(backend["pid"], json!(served.pid));
    assert_eq!(backend["pid"], json!(recorded[0].pid));
    assert_eq!(backend["generation"], 1);
    assert_eq!(backend["alive"], true);
    let tree: Vec<i64> = backend["tree"]
        .as_array()
        .expect("backend.tree is not a list")
        .iter()
        .map(|t| t["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(tree, vec![i64::from(served.pid)]);
    let listeners = status["listeners"].as_array().expect("no listeners list");
    assert_eq!(listeners.len(), 1, "listeners: {listeners:#?}");
    assert_eq!(listeners[0]["pid"], json!(served.pid));
    assert_eq!(listeners[0]["ours"], true);

    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0);
    let (code, stdout, stderr) = status_json(&p);

    let status: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("status --json printed no JSON ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(code, 1, "status said:\n{stdout}\n{stderr}");
    assert_eq!(status["verdict"], "none");
    assert_eq!(status["devrun_running"], false);
    assert_eq!(status["listeners"], json!([]));
}

#[test]
fn the_state_file_names_devrun_and_each_generation() {
    let p = Project::testapp("normal.py").start();
    let gen1 = p.wait_for_version("v1", WAIT);

    let state = p.read_state();
    assert_eq!(state["devrun_pid"], json!(p.pid()));
    assert_eq!(state["devrun_start"], json!(starttime(p.pid()).unwrap()));
    assert_eq!(state["port"], json!(p.port));
    assert_eq!(state["host"], "127.0.0.1");
    let backend = &state["backend"];
    assert_eq!(backend["pid"], json!(gen1.pid));
    assert_eq!(backend["pgid"], json!(gen1.pid));
    assert_eq!(backend["start"], json!(gen1.starttime.unwrap()));
    assert_eq!(backend["generation"], 1);

    p.write_atomic("version.py", &version_py("v2"));
    let gen2 = p.wait_for_version("v2", WAIT);

    let state = p.read_state();
    assert_eq!(state["devrun_pid"], json!(p.pid()));
    let backend = &state["backend"];
    assert_eq!(backend["pid"], json!(gen2.pid));
    assert_eq!(backend["pgid"], json!(gen2.pid));
    assert_eq!(backend["start"], json!(gen2.starttime.unwrap()));
    assert_eq!(backend["generation"], 2);
}
