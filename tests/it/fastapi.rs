//! The real thing: a FastAPI app under uvicorn (no --reload), with `{port}` in the command.
//! Needs DEVRUN_TEST_PYTHON with fastapi and uvicorn (scripts/test provides it).

use crate::harness::*;

#[test]
fn uvicorn_serves_the_saved_version_from_one_process() {
    let p = Project::fastapi_app(UVICORN_CONFIG).start();
    let v1 = p.wait_for_version("v1", WAIT);
    assert_eq!(p.listeners(), vec![v1.pid]);

    p.write_atomic("app/version.py", &version_py("v2"));
    let v2 = p.wait_for_version("v2", WAIT);

    assert!(!v1.alive(), "the old uvicorn is still alive");
    assert_eq!(v2.generation, Some(2));
    assert_eq!(p.listeners(), vec![v2.pid]);
    p.assert_every_start_was_alone();
}

#[test]
fn uvicorn_once_exits_0_and_leaves_nothing() {
    let mut p = Project::fastapi_app(UVICORN_CONFIG)
        .args(["--once"])
        .start();
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    assert_eq!(p.starts().len(), 1);
    assert_eq!(p.tagged_processes(), Vec::<i32>::new());
    assert!(p.port_free());
}
