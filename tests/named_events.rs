//! Named warnings in `--events json` (README, "Events for tools"): still `"event": "warning"`
//! with its `message`, plus a `kind` and its fields, checked beside what really happened.
#![cfg(target_os = "linux")] // the harness observes processes through /proc

mod common;
use common::*;
use serde_json::Value;
use std::net::{Ipv4Addr, TcpListener};

/// The JSON warnings of this `kind` on devrun's stderr so far.
fn warnings(p: &Project, kind: &str) -> Vec<Value> {
    p.stderr()
        .lines()
        .filter(|line| line.starts_with('{'))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["event"] == "warning" && e["kind"] == kind)
        .collect()
}

#[test]
fn a_held_port_at_start_is_a_port_busy_warning_then_exit_3_with_nothing_started() {
    let project = Project::testapp("normal.py");
    let port = project.port;
    let holder = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();

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
