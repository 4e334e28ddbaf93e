//! `--once`: start, wait until ready, tear down, confirm the port is free; the exit code says
//! how it went (0 ok, 1 backend failed, 3 port held).

use crate::harness::*;
use std::net::{Ipv4Addr, TcpListener};

/// Runs the project with `--once` and checks that nothing is left afterwards.
fn run_once(p: Project) -> (i32, Project) {
    let mut p = p.args(["--once"]).start();
    let code = p.wait_exit(WAIT);
    assert_eq!(
        p.tagged_processes(),
        Vec::<i32>::new(),
        "--once left processes behind"
    );
    (code, p)
}

/// A `[ready]` section: an HTTP health path (else: the port accepts), and how long to wait.
fn ready(http: Option<&str>, timeout_ms: u64) -> String {
    let http = http
        .map(|path| format!("http = {path:?}\n"))
        .unwrap_or_default();
    format!("[ready]\n{http}timeout_ms = {timeout_ms}\n")
}

#[test]
fn once_with_a_healthy_backend_exits_0_and_leaves_nothing() {
    let (code, p) = run_once(Project::testapp("normal.py"));
    assert_eq!(code, 0, "{}", p.stderr());
    assert_eq!(p.starts().len(), 1);
    assert!(p.port_free());
}

#[test]
fn once_with_a_passing_health_check_exits_0() {
    let project = Project::testapp("normal.py").config_also(&ready(Some("/health"), 10000));
    let (code, p) = run_once(project);
    assert_eq!(code, 0, "{}", p.stderr());
    assert!(p.port_free());
    assert!(
        p.stderr()
            .contains("devrun: --once passed: backend got ready, stopped, port released"),
        "no success line:\n{}",
        p.stderr()
    );
}

/// A 4xx is the app's answer (no such path): waiting cannot change it. devrun fails at once,
/// naming the path and the status, long before the ready timeout (60 s, beyond `WAIT`).
#[test]
fn once_with_a_health_path_answering_404_fails_at_once_naming_it() {
    let project = Project::testapp("normal.py")
        .config_also(&ready(Some("/health"), 60000))
        .env("FIXTURE_HEALTH_STATUS", "404");
    let (code, p) = run_once(project);
    assert_eq!(code, 1, "{}", p.stderr());
    assert!(
        p.stderr()
            .contains("error: health check GET /health returned HTTP 404"),
        "{}",
        p.stderr()
    );
    assert!(!p.stderr().contains("--once passed"), "{}", p.stderr());
    assert!(p.port_free());
}

#[test]
fn once_with_a_crashing_backend_exits_1() {
    let (code, p) = run_once(Project::testapp("crash_on_import.py"));
    assert_eq!(code, 1, "{}", p.stderr());
}

/// The error line says what killed it (the crash summary), not only its exit code.
#[test]
fn once_with_a_backend_raising_on_import_names_the_exception() {
    let (code, p) = run_once(Project::testapp("raises.py"));
    assert_eq!(code, 1, "{}", p.stderr());
    // Its stderr holds the fixture's raw non-UTF-8 bytes.
    let stderr = std::fs::read(p.tmp_dir().join("stderr.log")).unwrap();
    let stderr = String::from_utf8_lossy(&stderr);
    let error = stderr
        .lines()
        .find(|l| l.contains("error: the backend exited early"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        error.contains("json.decoder.JSONDecodeError") && error.contains("(pricing.py:6)"),
        "{error}"
    );
}

#[test]
fn once_with_a_backend_that_never_listens_exits_1() {
    let project = Project::testapp("never_ready.py").config_also(&ready(None, 1000));
    let (code, p) = run_once(project);
    assert_eq!(code, 1, "{}", p.stderr());
    assert_eq!(p.starts().len(), 1);
}

#[test]
fn once_with_a_failing_health_check_exits_1() {
    let project = Project::testapp("normal.py")
        .config_also(&ready(Some("/health"), 2000))
        .env("FIXTURE_HEALTH_STATUS", "500");
    let (code, p) = run_once(project);
    assert_eq!(code, 1, "{}", p.stderr());
    assert!(p.port_free());
}

#[test]
fn once_with_the_port_held_by_another_process_exits_3_and_names_it() {
    let project = Project::testapp("normal.py");
    let holder = TcpListener::bind((Ipv4Addr::LOCALHOST, project.port)).unwrap();

    let (code, p) = run_once(project);
    assert_eq!(code, 3, "{}", p.stderr());
    let our_pid = std::process::id().to_string();
    assert!(
        p.stderr().contains(&our_pid),
        "stderr does not name the holder's pid {our_pid}:\n{}",
        p.stderr()
    );
    assert!(
        p.starts().is_empty(),
        "a backend was started beside the holder"
    );
    assert!(holder.local_addr().is_ok(), "devrun closed our listener");
}
