//! Invariant 4: however devrun is asked to stop, it exits 0 with the whole backend tree gone
//! and the port free. (A second devrun being refused is in `single_instance.rs`.)

use crate::harness::*;

fn assert_signal_tears_down(signal: i32) {
    let mut p = Project::testapp("normal.py").start();
    let served = p.wait_for_version("v1", WAIT);

    p.signal(signal);
    assert_eq!(p.wait_exit(WAIT), 0);
    assert!(!served.alive(), "the backend outlived devrun");
    p.assert_nothing_left();
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
