//! A command that starts its server's own reloader: devrun says so once, with the fix, and
//! still runs it as written (real uvicorn and Flask).

use crate::harness::*;

const WARNING: &str = "runs its own reloader";

/// How many times devrun's stderr gives the own-reloader warning.
fn warnings(p: &Project) -> usize {
    p.stderr().matches(WARNING).count()
}

#[test]
fn uvicorn_reload_is_warned_once_with_the_fix_and_still_runs() {
    let config = UVICORN_CONFIG.replace("\"{port}\"]", "\"{port}\", \"--reload\"]");
    let p = Project::fastapi_app(&config).start();
    p.wait_for_version("v1", WAIT);
    let stderr = p.stderr();
    assert!(
        stderr.contains("the backend runs its own reloader (uvicorn --reload)")
            && stderr.contains("remove --reload in its command"),
        "{stderr}"
    );
    // A restart does not say it again.
    p.write_atomic("app/version.py", &version_py("v2"));
    p.wait_for_version("v2", WAIT);
    assert_eq!(warnings(&p), 1, "{}", p.stderr());
}

#[test]
fn flask_debug_without_no_reload_is_warned_and_init_s_command_is_not() {
    let python = fastapi_python();
    let command = |extra: &str| {
        format!(
            "command = [\"{python}\", \"-m\", \"flask\", \"--app\", \"flaskr\", \"run\", \
             \"--port\", \"{{port}}\", \"--debug\"{extra}]\nport = $PORT\n"
        )
    };
    let mut p = Project::new("flaskr")
        .config(&command(""))
        .args(["--once"])
        .start();
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    assert!(
        p.stderr()
            .contains("own reloader (flask run --debug): two reloaders fight"),
        "{}",
        p.stderr()
    );
    assert_eq!(warnings(&p), 1);
    p.assert_nothing_left();

    let mut p = Project::new("flaskr")
        .config(&command(", \"--no-reload\""))
        .args(["--once"])
        .start();
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    assert_eq!(warnings(&p), 0, "{}", p.stderr());
    p.assert_nothing_left();
}
