//! devrun starts the backend with the documented environment and serves it on the port.

use crate::harness::*;

#[test]
fn serves_the_backend_with_port_generation_and_env() {
    let p = Project::testapp("normal.py")
        .config_also("[env]\nAPP_ENV = \"test\"\n")
        .start();

    let served = p.wait_for_version("v1", WAIT);
    assert_eq!(served.generation, Some(1), "DEVRUN_GENERATION");
    let start = &p.wait_for_starts(1, WAIT)[0];
    assert_eq!(start.pid, served.pid);
    assert_eq!(
        start.env_dontwrite.as_deref(),
        Some("1"),
        "PYTHONDONTWRITEBYTECODE"
    );
    assert_eq!(start.app_env.as_deref(), Some("test"), "[env]");
    assert_eq!(
        start.cwd.as_ref().map(|c| c.canonicalize().unwrap()),
        Some(p.root.canonicalize().unwrap()),
        "the backend's cwd is the config file's folder"
    );
    assert_eq!(
        pgid(served.pid),
        served.pid,
        "the backend leads its own process group"
    );
    assert_eq!(p.listeners(), vec![served.pid]);
    // The harness finds leftovers by this tag: make sure it reaches the backend.
    assert!(p.tagged_processes().contains(&served.pid));
}

#[test]
fn command_and_port_from_the_command_line_need_no_config_file() {
    let mut p = Project::new("testapp")
        .args(["--port", "$PORT", "--", "$PYTHON", "normal.py"])
        .start();
    let served = p.wait_for_version("v1", WAIT);
    assert!(p.running());
    assert_eq!(p.listeners(), vec![served.pid]);
}

#[test]
fn the_hello_demo_serves_and_reloads() {
    let p = Project::new("hello")
        .config(
            r#"
command = "$PYTHON server.py"
port = $PORT
"#,
        )
        .start();
    let v1 = p.wait_for_version("hello v1", WAIT);
    assert_eq!(p.get("/health").map(|(status, _)| status), Some(200));

    p.write_atomic("greeting.py", "VERSION = \"hello v2\"\n");
    let v2 = p.wait_for_version("hello v2", WAIT);
    assert!(!v1.alive());
    assert_eq!(p.listeners(), vec![v2.pid]);
}
