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
