//! `devrun init` on projects shaped like real ones (issue 21): the Flask tutorial's app factory
//! with Jinja templates, a full-stack layout (`backend/` + `frontend/`, the venv at the root).
//! Each test runs init as a new user would, then runs what it wrote against the real framework.

use crate::harness::*;
use crate::init::{env_port, init_detects, link_test_venv};

/// Polls `GET path` until its body contains `text`; panics with the last answer.
fn wait_for_body(p: &Project, path: &str, text: &str) -> String {
    let mut last = None;
    poll(WAIT, || {
        last = p.get(path);
        last.clone()
            .filter(|(status, body)| *status == 200 && body.contains(text))
    })
    .map(|(_, body)| body)
    .unwrap_or_else(|| {
        panic!(
            "GET {path} did not contain {text:?} within {WAIT:?}; last: {last:?}\n{}",
            p.stderr()
        )
    })
}

/// The `pid=N` a fixture page shows.
fn pid_in(body: &str) -> i32 {
    let at = body.find("pid=").expect("no pid= in the page") + 4;
    numbers_in(&body[at..])[0] as i32
}

#[test]
fn flask_factory_app_runs_and_a_template_edit_is_served_fresh() {
    let p = Project::new("flaskr");
    link_test_venv(&p);
    env_port(&p);

    let config = init_detects(&p, "Flask app factory create_app() in flaskr");
    assert!(
        config.contains("\"flask\", \"--app\", \"flaskr\", \"run\"")
            && config.contains("\"--debug\", \"--no-reload\"")
            && config.contains("\"**/*.html\""),
        "{config}"
    );

    let mut p = p.args(["--color", "never"]).start();
    let first = wait_for_body(&p, "/", "template v1");
    assert!(first.contains("The first post."), "{first}");
    assert!(wait_for_body(&p, "/hello", "Hello, World!").contains("pid="));

    // A Jinja template edit: the next answer renders the new template, never the cached one.
    let template = "flaskr/templates/blog/index.html";
    let text = std::fs::read_to_string(p.root.join(template)).unwrap();
    p.write_atomic(template, &text.replace("template v1", "template v2"));
    let second = wait_for_body(&p, "/", "template v2");
    assert!(!second.contains("template v1"), "{second}");
    assert_ne!(
        pid_in(&first),
        pid_in(&second),
        "no fresh process served the edit"
    );

    // No warning about Flask's own reloader: init's command has none.
    assert!(!p.stderr().contains("reloader"), "{}", p.stderr());
    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    p.assert_nothing_left();
}
