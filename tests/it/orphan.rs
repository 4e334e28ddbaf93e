//! Invariant 5: what a SIGKILLed devrun left is found from the state file and ended by the next
//! `devrun` or `devrun stop` in that project, verified by pid *and* start time (a reused pid is
//! never touched). Two kinds of leftovers:
//! - spawns_child.py: the backend's child stays in its group, holds the listening socket and
//!   ignores SIGTERM;
//! - double_fork.py (issue 9.2): a grandchild that setsid's and double-forks keeping the
//!   listening socket; the leader dies with devrun (parent-death signal). Found by the run marker.

use crate::harness::*;

use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// devrun serving `script`, a fixture that starts a child: the project, the backend leader and
/// its child.
fn serving_with_a_child(script: &str) -> (Project, Served, Record) {
    let p = Project::testapp(script).stop_timeout_ms(300).start();
    let backend = p.wait_for_version("v1", WAIT);
    let child = p.wait_for_child_of(backend.pid, WAIT);
    (p, backend, child)
}

/// Starts devrun on spawns_child.py, then SIGKILLs it: returns the project, the backend leader
/// and its child (which holds the port and survives the leader).
fn killed_devrun_leaving_its_group() -> (Project, Served, Record) {
    let (mut p, backend, child) = serving_with_a_child("spawns_child.py");
    assert_eq!(p.listeners(), sorted(vec![backend.pid, child.pid]));
    p.kill_devrun();
    (p, backend, child)
}

/// Starts devrun on double_fork.py, then SIGKILLs it: the leader dies with it, the
/// double-forked grandchild in its own session keeps the port.
fn killed_devrun_leaving_an_escapee() -> (Project, Served, Record) {
    let (mut p, backend, escapee) = serving_with_a_child("double_fork.py");
    assert_ne!(
        pgid(escapee.pid),
        pgid(backend.pid),
        "the escapee is in the backend's group"
    );
    assert_ne!(
        unsafe { libc::getsid(escapee.pid) },
        unsafe { libc::getsid(backend.pid) },
        "the escapee is still in the backend's session"
    );
    p.kill_devrun();
    p.wait_until("the backend leader to die with devrun", WAIT, || {
        !backend.alive()
    });
    assert!(
        escapee.alive(),
        "the escapee died with devrun: nothing to test"
    );
    assert_eq!(p.listeners(), vec![escapee.pid]);
    (p, backend, escapee)
}

/// Starts devrun again where one was killed: it ends the leftovers, then serves alone. Returns
/// its backend and the backend's child.
fn next_devrun_ends(p: &mut Project, old: &Served, leftover: &Record) -> (Served, Record) {
    p.restart_devrun();
    let first = poll(WAIT, || {
        p.served()
            .filter(|s| s.pid != old.pid && s.pid != leftover.pid)
    })
    .expect("the restarted devrun's backend never answered GET /");

    assert!(!old.alive(), "the killed devrun's backend survived");
    assert!(
        !leftover.alive(),
        "what the killed devrun left (pid {}) survived the next devrun",
        leftover.pid
    );
    assert!(p.running(), "the next devrun exited");
    assert_eq!(parent_of(first.pid), Some(p.pid()));
    let first_child = p.wait_for_child_of(first.pid, WAIT);
    assert_eq!(p.listeners(), sorted(vec![first.pid, first_child.pid]));
    p.assert_every_start_was_alone();
    (first, first_child)
}

/// `devrun stop` where a devrun was killed: exits 0, ends the leftovers, nothing is left.
fn devrun_stop_ends(p: &Project, old: &Served, leftover: &Record) {
    let (code, stderr) = p.run_another(["stop"], WAIT);

    assert_eq!(code, 0, "devrun stop said:\n{stderr}");
    assert!(!old.alive(), "the killed devrun's backend survived");
    assert!(
        !leftover.alive(),
        "devrun stop left what the killed devrun left (pid {}) running",
        leftover.pid
    );
    p.assert_nothing_left();
}

#[test]
fn the_next_devrun_ends_the_leftovers_of_a_killed_devrun_and_serves_new_saves() {
    let (mut p, old, old_child) = killed_devrun_leaving_its_group();
    let (first, first_child) = next_devrun_ends(&mut p, &old, &old_child);

    p.write_atomic("version.py", &version_py("v2"));
    let second = p.wait_for_version("v2", WAIT);

    assert_ne!(second.pid, first.pid);
    assert!(!first.alive());
    assert!(!first_child.alive());
    let second_child = p.wait_for_child_of(second.pid, WAIT);
    assert_eq!(p.listeners(), sorted(vec![second.pid, second_child.pid]));
    p.assert_every_start_was_alone();
    assert!(p.running());
}

#[test]
fn the_next_devrun_ends_a_double_forked_escapee_of_a_killed_devrun_and_serves() {
    let (mut p, old, escapee) = killed_devrun_leaving_an_escapee();
    next_devrun_ends(&mut p, &old, &escapee);
    assert!(p.stderr().contains("left running by a devrun that died"));
}

#[test]
fn devrun_stop_ends_the_leftovers_of_a_killed_devrun() {
    let (p, old, old_child) = killed_devrun_leaving_its_group();
    devrun_stop_ends(&p, &old, &old_child);
}

#[test]
fn devrun_stop_ends_a_double_forked_escapee_of_a_killed_devrun() {
    let (p, old, escapee) = killed_devrun_leaving_an_escapee();
    devrun_stop_ends(&p, &old, &escapee);
}

/// A `sleep` that leads its own process group (as a backend, a shell job or a service does):
/// a process that could get the pid of a dead backend.
fn unrelated_sleep() -> (Guard, u64) {
    let guard = Guard::spawn(
        "the unrelated sleep",
        Command::new("sleep").arg("600").stdin(Stdio::null()),
    );
    let start = starttime(guard.pid()).expect("sleep is gone");
    (guard, start)
}

#[test]
fn a_reused_backend_pid_is_never_touched() {
    let mut p = Project::testapp("normal.py").start();
    p.wait_for_version("v1", WAIT);
    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0);

    // A process that now has the pid a dead devrun recorded for its backend: same pid, but a
    // later start time than the record (a reused pid always started after the recorded one).
    let (sleeper, start) = unrelated_sleep();
    let pid = sleeper.pid();
    assert!(start > 1);
    let recorded_start = start - 1;
    let dead_devrun = {
        let mut child = Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let state = json!({
        "devrun_pid": dead_devrun,
        "devrun_start": 1,
        "port": p.port,
        "host": "127.0.0.1",
        "started_at": now - 60,
        "backend": {
            "pid": pid,
            "pgid": pid,
            "start": recorded_start,
            "generation": 3,
            "command": [python(), "normal.py"],
            "started_at": now - 60,
        },
    });

    p.write_state(&state);
    let (code, stderr) = p.run_another(["stop"], WAIT);
    assert_eq!(code, 0, "devrun stop said:\n{stderr}");
    assert!(
        alive(pid, start),
        "devrun stop ended pid {pid} (start time {start}), although the record names start \
         time {recorded_start}: a reused pid was touched. devrun stop said:\n{stderr}"
    );

    p.write_state(&state);
    p.restart_devrun();
    let served = p.wait_for_version("v1", WAIT);
    assert!(
        alive(pid, start),
        "starting devrun ended pid {pid} (start time {start}), although the record names \
         start time {recorded_start}: a reused pid was touched"
    );
    assert_eq!(p.listeners(), vec![served.pid]);
    drop(sleeper);
}
