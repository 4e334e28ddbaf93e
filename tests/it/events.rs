//! `--events json`: the stable event stream tools read from devrun's stderr (README, "Events
//! for tools"), checked against what really happened (the record file, the port).

use crate::harness::*;
use serde_json::Value;

/// The JSON events on devrun's stderr so far: the lines that start with `{` (the backend's own
/// output is interleaved there, but normal.py prints nothing that starts with `{`). Each of
/// them must parse as an object with an `event` name.
fn events(p: &Project) -> Vec<Value> {
    p.stderr()
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("an event line does not parse ({e}): {line}"));
            assert!(event["event"].is_string(), "no event name in {line}");
            event
        })
        .collect()
}

fn name(event: &Value) -> &str {
    event["event"].as_str().unwrap_or("")
}

fn count(p: &Project, event_name: &str) -> usize {
    events(p).iter().filter(|e| name(e) == event_name).count()
}

fn the<'a>(events: &'a [Value], event_name: &str, nth: usize) -> &'a Value {
    events
        .iter()
        .filter(|e| name(e) == event_name)
        .nth(nth)
        .unwrap_or_else(|| panic!("no {event_name} event number {}", nth + 1))
}

#[test]
fn a_start_a_save_and_ctrl_c_give_the_documented_events_in_order() {
    let mut p = Project::testapp("normal.py")
        .args(["--events", "json"])
        .start();
    p.wait_for_version("v1", WAIT);
    // devrun probes readiness itself: let it report generation 1 ready before the save.
    p.wait_until("the first ready event", WAIT, || count(&p, "ready") >= 1);

    p.write_atomic("version.py", &version_py("v2"));
    p.wait_for_version("v2", WAIT);
    p.wait_until("the second ready event", WAIT, || count(&p, "ready") >= 2);

    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0, "devrun did not exit 0 on SIGINT");

    let stderr = p.stderr();
    assert!(
        !stderr.lines().any(|l| l.starts_with("devrun:")),
        "status lines were printed besides the JSON events:\n{stderr}"
    );
    let events = events(&p);
    let names: Vec<&str> = events.iter().map(name).collect();
    assert_eq!(
        names,
        [
            "watching",
            "started",
            "ready",
            "changed",
            "stopping",
            "stopped",
            "port_released",
            "started",
            "ready",
            "shutting_down",
            "stopping",
            "stopped",
            "port_released",
        ],
        "stderr:\n{stderr}"
    );

    for event in &events {
        assert!(event["ts_ms"].is_u64(), "no ts_ms number in {event}");
    }

    // `started` names the pid that really started: the record's start lines, in order.
    let starts = p.starts();
    assert_eq!(starts.len(), 2, "record: {starts:#?}");
    for (n, start) in starts.iter().enumerate() {
        let started = the(&events, "started", n);
        assert_eq!(
            started["pid"].as_i64(),
            Some(start.pid as i64),
            "{started} does not name the pid of the record's start line {start:?}"
        );
        assert_eq!(started["generation"].as_u64(), start.generation);
        // and `stopping` names that same process
        let stopping = the(&events, "stopping", n);
        assert_eq!(
            stopping["pid"].as_i64(),
            Some(start.pid as i64),
            "{stopping}"
        );
        assert_eq!(stopping["generation"].as_u64(), start.generation);
    }

    for n in 0..2 {
        let stopped = the(&events, "stopped", n);
        assert!(
            stopped["duration_ms"].is_u64(),
            "stopped.duration_ms is not a number: {stopped}"
        );
        assert!(stopped["killed"].is_boolean(), "{stopped}");
        let released = the(&events, "port_released", n);
        assert_eq!(released["port"].as_u64(), Some(p.port as u64), "{released}");
        assert!(released["wait_ms"].is_u64(), "{released}");
    }

    let changed = the(&events, "changed", 0);
    let paths: Vec<&str> = changed["paths"]
        .as_array()
        .unwrap_or_else(|| panic!("changed.paths is not an array: {changed}"))
        .iter()
        .map(|v| v.as_str().expect("a path that is not a string"))
        .collect();
    assert_eq!(paths, ["version.py"], "{changed}");

    let watching = the(&events, "watching", 0);
    assert_eq!(
        watching["config"].as_str(),
        Some("devrun.toml"),
        "{watching}"
    );
    assert!(watching["folders"].is_u64(), "{watching}");

    assert_eq!(p.tagged_processes(), Vec::<i32>::new());
    assert!(p.port_free());
}

/// Tools pick devrun's events out of the interleaved stderr by their start, `{"event"` (a
/// backend's own JSON logs, structlog's for one, may carry an `event` key too, but not first).
#[test]
fn every_event_line_starts_with_its_event_name() {
    let mut p = Project::testapp("normal.py")
        .args(["--events", "json"])
        .start();
    p.wait_for_version("v1", WAIT);
    p.wait_until("the first ready event", WAIT, || count(&p, "ready") >= 1);
    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0, "devrun did not exit 0 on SIGINT");

    let stderr = p.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with('{')).collect();
    assert!(lines.len() >= 4, "too few event lines:\n{stderr}");
    for line in lines {
        assert!(
            line.starts_with(r#"{"event":"#),
            "an event line does not start with {{\"event\": {line}"
        );
    }
}

// ---- named warnings ----

/// The JSON warnings of this `kind` on devrun's stderr so far. A named warning is still
/// `"event": "warning"` with its `message`; `kind` and its fields are added (README).
fn warnings(p: &Project, kind: &str) -> Vec<Value> {
    events(p)
        .into_iter()
        .filter(|e| e["event"] == "warning" && e["kind"] == kind)
        .collect()
}

#[test]
fn a_held_port_at_start_is_a_port_busy_warning_then_exit_3_with_nothing_started() {
    let project = Project::testapp("normal.py");
    let port = project.port;
    let holder = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).unwrap();

    let mut p = project
        .args(["--events", "json", "--port-timeout", "500"])
        .start();
    let code = p.wait_exit(WAIT);

    drop(holder);
    let stderr = p.stderr();
    assert_eq!(code, 3, "{stderr}");
    assert!(p.starts().is_empty(), "a backend started beside the holder");
    let busy = warnings(&p, "port_busy");
    assert_eq!(busy.len(), 1, "{stderr}");
    assert_eq!(busy[0]["port"], port, "{stderr}");
    assert_eq!(busy[0]["wait_ms"], 500, "{stderr}");
    let message = busy[0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&format!("port {port} is busy")),
        "{message}"
    );
}

#[test]
fn devrun_restart_is_a_restart_requested_warning_and_a_new_generation() {
    let mut p = Project::testapp("normal.py")
        .args(["--events", "json"])
        .start();
    let gen1 = p.wait_for_version("v1", WAIT);

    let (code, said) = p.run_another(["restart"], WAIT);

    assert_eq!(code, 0, "devrun restart said:\n{said}");
    let gen2 = poll(WAIT, || p.served().filter(|s| s.generation == Some(2)))
        .expect("generation 2 never answered GET /");
    assert!(!gen1.alive(), "generation 1 survived the restart");
    assert_eq!(p.listeners(), vec![gen2.pid]);
    let requested = warnings(&p, "restart_requested");
    assert_eq!(requested.len(), 1, "{}", p.stderr());
    assert_eq!(
        requested[0]["message"],
        "restart requested by `devrun restart`"
    );

    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0);
    assert!(p.port_free());
}
