//! A saved change restarts the backend: the old generation is gone (every process of it, and
//! its socket) before the next one starts, whatever the backend does to resist.

use crate::harness::*;
use std::thread::sleep;
use std::time::Duration;

/// Saving version.py (`save`: atomic or in place) is served by a new interpreter, generation 2,
/// started alone after the old one was gone.
fn assert_save_is_served_by_a_new_interpreter(save: fn(&Project, &str, &str)) {
    let p = Project::testapp("normal.py").start();
    let v1 = p.wait_for_version("v1", WAIT);

    save(&p, "version.py", &version_py("v2"));
    let v2 = p.wait_for_version("v2", WAIT);

    assert_ne!(v2.pid, v1.pid);
    assert_eq!(v2.generation, Some(2));
    assert!(!v1.alive(), "the old backend is still alive");
    assert_eq!(p.listeners(), vec![v2.pid]);
    p.assert_every_start_was_alone();
}

#[test]
fn atomic_save_is_served_by_a_new_interpreter() {
    assert_save_is_served_by_a_new_interpreter(Project::write_atomic);
}

#[test]
fn in_place_write_is_served_by_a_new_interpreter() {
    assert_save_is_served_by_a_new_interpreter(Project::write_inplace);
}

#[test]
fn rapid_saves_never_overlap_generations_and_end_on_the_last_save() {
    let p = Project::testapp("normal.py").start();
    p.wait_for_version("v1", WAIT);

    // 10 saves in 200 ms, alternating both ways of saving.
    for i in 2..=11 {
        let content = version_py(&format!("v{i}"));
        if i % 2 == 0 {
            p.write_atomic("version.py", &content);
        } else {
            p.write_inplace("version.py", &content);
        }
        sleep(Duration::from_millis(20));
    }

    p.wait_for_version("v11", WAIT);
    let starts = p.settle();
    p.assert_every_start_was_alone();
    let last = starts.last().unwrap();
    let served = p.served().expect("nothing serves after the saves settled");
    assert_eq!(served.version, "v11");
    assert_eq!(
        served.pid, last.pid,
        "the last backend started is the one serving"
    );
    assert_eq!(last.version.as_deref(), Some("v11"));
    assert_eq!(p.listeners(), vec![served.pid]);
    // Changes during a restart are coalesced: far fewer restarts than saves.
    let restarts = starts.len() - 1;
    assert!(restarts <= 5, "10 saves caused {restarts} restarts");
}

#[test]
fn saves_during_a_slow_stop_are_coalesced_into_one_more_restart() {
    let p = Project::testapp("slow_shutdown.py")
        .env("FIXTURE_SHUTDOWN_S", "1.5")
        .start();
    let v1 = p.wait_for_version("v1", WAIT);

    p.write_atomic("version.py", &version_py("v2"));
    sleep(Duration::from_millis(400)); // devrun is now waiting for v1 to let go of the port
    p.write_atomic("version.py", &version_py("v3"));
    sleep(Duration::from_millis(100));
    p.write_inplace("version.py", &version_py("v4"));

    p.wait_for_version("v4", WAIT);
    let starts = p.settle();
    assert!(!v1.alive());
    p.assert_every_start_was_alone();
    assert!(starts.len() <= 3, "3 saves caused {} starts", starts.len());
    let served = p.served().expect("nothing serves after the saves settled");
    assert_eq!(
        (served.version.as_str(), served.pid),
        ("v4", starts.last().unwrap().pid)
    );
    assert_eq!(p.listeners(), vec![served.pid]);
}

#[test]
fn a_backend_ignoring_sigterm_is_killed_after_the_stop_timeout() {
    let p = Project::testapp("ignore_sigterm.py")
        .stop_timeout_ms(300)
        .start();
    let v1 = p.wait_for_version("v1", WAIT);

    p.write_atomic("version.py", &version_py("v2"));
    let v2 = p.wait_for_version("v2", WAIT);

    assert!(!v1.alive(), "the backend that ignored SIGTERM survived");
    assert_eq!(p.listeners(), vec![v2.pid]);
    p.assert_every_start_was_alone();
}

#[test]
fn a_child_holding_the_socket_dies_with_its_generation() {
    let mut p = Project::testapp("spawns_child.py")
        .stop_timeout_ms(300)
        .start();
    let v1 = p.wait_for_version("v1", WAIT);
    let child1 = p.wait_for_child_of(v1.pid, WAIT);
    assert!(child1.alive());

    p.write_atomic("version.py", &version_py("v2"));
    let v2 = p.wait_for_version("v2", WAIT);
    let child2 = p.wait_for_child_of(v2.pid, WAIT);

    assert!(!v1.alive(), "the old backend survived the restart");
    assert!(
        !child1.alive(),
        "the old backend's child survived the restart"
    );
    p.assert_every_start_was_alone();
    let mut generation2 = vec![v2.pid, child2.pid];
    generation2.sort();
    assert_eq!(
        p.listeners(),
        generation2,
        "only generation 2 holds the socket"
    );

    p.signal(SIGTERM);
    assert_eq!(p.wait_exit(WAIT), 0);
    assert!(!child2.alive(), "the backend's child survived devrun");
    assert_eq!(p.tagged_processes(), Vec::<i32>::new());
    assert!(p.port_free());
}

#[test]
fn a_slow_shutdown_is_waited_for_before_the_next_generation() {
    let p = Project::testapp("slow_shutdown.py")
        .stop_timeout_ms(5000)
        .env("FIXTURE_SHUTDOWN_S", "1.0")
        .start();
    let v1 = p.wait_for_version("v1", WAIT);

    p.write_atomic("version.py", &version_py("v2"));
    let v2 = p.wait_for_version("v2", WAIT);

    assert!(!v1.alive());
    let starts = p.starts();
    assert_eq!(starts.len(), 2);
    p.assert_every_start_was_alone();
    assert_eq!(p.listeners(), vec![v2.pid]);
}

#[test]
fn a_crash_on_import_waits_for_the_fix_without_a_restart_loop() {
    let mut p = Project::testapp("crash_on_import.py").start();
    let first = p.wait_for_starts(1, WAIT)[0].clone();
    p.wait_until("the crashing backend to exit", WAIT, || !first.alive());

    sleep(QUIET);
    assert!(p.running(), "devrun exited when its backend crashed");
    assert_eq!(
        p.starts().len(),
        1,
        "devrun restarted a crashed backend without a change"
    );

    p.write_atomic("broken.py", "FIXED = True\n");
    let served = p.wait_for_version("v1", WAIT);
    assert_eq!(served.generation, Some(2));
    assert_eq!(p.listeners(), vec![served.pid]);
    p.assert_every_start_was_alone();
}
