//! Issue 11: `devrun status` and `devrun stop` against a running stack (the backend, a web
//! member with a port, a worker without one): every member listed with its pid and port, the
//! exit code judging every member's port, and `stop` ending them all.
//!
//! Needs the stack config (branch cfg) and the stack supervisor (main): declare it in main.rs
//! (`mod stack_status;`) once both are merged.

use crate::harness::*;

use serde_json::Value;
use std::process::{Command, Stdio};

/// The testapp backend, `web` (python's http.server on its own port) and `worker` (a sleep).
fn stack(web_port: u16) -> Project {
    Project::testapp("normal.py").config_also(&format!(
        r#"
[processes.web]
command = ["$PYTHON", "-m", "http.server", "{{port}}", "--bind", "127.0.0.1"]
port = {web_port}
after = ["backend"]

[processes.worker]
command = ["$PYTHON", "-c", "import time; time.sleep(600)"]
"#
    ))
}

fn pid_of(value: &Value) -> i32 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("not a pid: {value}")) as i32
}

/// Serving, with web listening and the worker recorded: the status report.
fn running_stack(p: &Project, web_port: u16) -> Value {
    p.wait_for_version("v1", WAIT);
    p.wait_until("web to listen", WAIT, || !listeners(web_port).is_empty());
    poll(WAIT, || {
        let (code, report) = status_report(p);
        let worker_up = status_member(&report, "worker")["alive"] == true;
        (code == 0 && worker_up).then_some(report)
    })
    .expect("status never judged the running stack ok")
}

#[test]
fn status_lists_every_member_of_a_running_stack_and_stop_ends_them_all() {
    let web_port = free_port();
    let p = stack(web_port).start();
    let report = running_stack(&p, web_port);

    let web = status_member(&report, "web");
    let web_pid = pid_of(&web["pid"]);
    assert_eq!(web["port"], web_port);
    assert_eq!(web["verdict"], "ok");
    assert_eq!(listeners(web_port), vec![web_pid]);
    assert_eq!(parent_of(web_pid), Some(p.pid()));
    let worker = status_member(&report, "worker");
    let worker_pid = pid_of(&worker["pid"]);
    assert_eq!(parent_of(worker_pid), Some(p.pid()));
    assert_eq!(worker["port"], Value::Null);
    assert_eq!(p.listeners(), vec![pid_of(&report["backend"]["pid"])]);

    let (code, stderr) = p.run_another(["stop"], WAIT);

    assert_eq!(code, 0, "devrun stop said:\n{stderr}");
    assert!(
        numbers_in(&stderr).contains(&3),
        "devrun stop does not say it stops 3 processes:\n{stderr}"
    );
    p.assert_nothing_left();
    assert!(listeners(web_port).is_empty(), "web's port is still held");
}

#[test]
fn status_fails_when_a_members_port_is_empty_and_names_a_foreign_holder() {
    let web_port = free_port();
    let mut p = stack(web_port).start();
    let report = running_stack(&p, web_port);
    let web_pid = pid_of(&status_member(&report, "web")["pid"]);

    // web exits on its own: devrun reports it and waits; its port has no listener.
    unsafe { libc::kill(web_pid, libc::SIGKILL) };
    p.wait_until("web's port to be free", WAIT, || {
        listeners(web_port).is_empty()
    });
    let (code, report) = poll(WAIT, || {
        let (code, report) = status_report(&p);
        (code == 1).then_some((code, report))
    })
    .unwrap_or_else(|| panic!("status never said web's port is empty"));
    assert_eq!(code, 1);
    assert_eq!(status_member(&report, "web")["verdict"], "none");
    assert_eq!(report["backend_verdict"], "ok");

    // Something devrun did not start takes web's port: exit 3, the holder named.
    let port = web_port.to_string();
    let foreign = Guard::spawn(
        "a foreign server on web's port",
        Command::new(python())
            .args(["-m", "http.server", &port, "--bind", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    p.wait_until("the foreign server to listen", WAIT, || {
        listeners(web_port) == vec![foreign.pid()]
    });
    let (code, report) = status_report(&p);
    assert_eq!(code, 3, "status:\n{report:#}");
    let web = status_member(&report, "web");
    assert_eq!(web["verdict"], "foreign");
    assert_eq!(pid_of(&web["listeners"][0]["pid"]), foreign.pid());
    assert_eq!(web["listeners"][0]["ours"], false);
    assert!(p.running(), "devrun exited");
    drop(foreign);
}
