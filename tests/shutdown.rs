//! Invariant 4: however devrun is asked to stop, it exits 0 with the whole backend tree gone
//! and the port free. Invariant 7: a second devrun in the same project is refused.
#![cfg(target_os = "linux")] // the harness observes processes through /proc

mod common;
use common::*;

fn assert_signal_tears_down(signal: i32) {
    let mut p = Project::testapp("normal.py").start();
    let served = p.wait_for_version("v1", WAIT);

    p.signal(signal);
    assert_eq!(p.wait_exit(WAIT), 0);
    assert!(!served.alive(), "the backend outlived devrun");
    assert_eq!(p.tagged_processes(), Vec::<i32>::new());
    assert!(p.port_free());
}

#[test]
fn sigint_tears_down_and_exits_0() {
    assert_signal_tears_down(SIGINT);
}

#[test]
fn sigterm_tears_down_and_exits_0() {
    assert_signal_tears_down(SIGTERM);
}

#[test]
fn sighup_tears_down_and_exits_0() {
    assert_signal_tears_down(SIGHUP);
}

#[test]
fn a_second_devrun_in_the_same_project_exits_4() {
    let mut p = Project::testapp("normal.py").start();
    let served = p.wait_for_version("v1", WAIT);

    let (code, stderr) = p.run_another(["--once"], WAIT);
    assert_eq!(code, 4, "the second devrun said:\n{stderr}");
    assert!(
        served.alive(),
        "the second devrun touched the first one's backend"
    );
    assert!(p.running());
    assert_eq!(p.listeners(), vec![served.pid]);
}
