//! Issue 21 point 6: `[watch] reload_only` (default `**/templates/**`): a template edit is
//! served by the running generation, which drops its template caches when devrun asks (no
//! restart, the same pid), never a stale page; a code edit still restarts.

use crate::harness::*;
use crate::imports::django_python;

/// Edits `template` (v1 → v2) and checks the page is served fresh by the same process, with
/// the status line saying so.
fn template_edit_is_served_without_a_restart(p: &Project, template: &str, page: &str) -> i32 {
    let first = wait_for_body(p, page, "template v1");
    let pid = pid_in(&first);
    // Rendered once more, so the cache surely holds it.
    wait_for_body(p, page, "template v1");
    let text = std::fs::read_to_string(p.root.join(template)).unwrap();
    p.write_atomic(template, &text.replace("template v1", "template v2"));
    let second = wait_for_body(p, page, "template v2");
    assert_eq!(
        pid_in(&second),
        pid,
        "a template edit restarted the backend"
    );
    p.wait_until("the reload said", WAIT, || {
        p.stderr().contains("templates reloaded, no restart")
    });
    pid
}

#[test]
fn django_template_edit_is_served_fresh_without_a_restart_and_code_still_restarts() {
    let p = Project::new("bakery")
        .python(&django_python())
        .config(
            r#"
command = ["$PYTHON", "manage.py", "runserver", "127.0.0.1:{port}", "--noreload"]
port = $PORT

[watch]
include = ["**/*.py", "**/*.html"]
debounce_ms = 50
"#,
        )
        .start();
    let pid = template_edit_is_served_without_a_restart(
        &p,
        "bakerydemo/templates/base/page.html",
        "/page",
    );

    // Code still restarts.
    let urls = std::fs::read_to_string(p.root.join("bakerydemo/urls.py")).unwrap();
    p.write_atomic("bakerydemo/urls.py", &format!("{urls}\n# edited\n"));
    let restarted = poll(WAIT, || {
        let (_, body) = p.get("/page")?;
        (body.contains("template v2") && pid_in(&body) != pid).then_some(body)
    });
    assert!(
        restarted.is_some(),
        "a code edit did not restart\n{}",
        p.stderr()
    );
}

#[test]
fn flask_jinja_template_edit_is_served_fresh_without_a_restart() {
    // Without --debug: Flask caches compiled templates (Jinja's auto_reload off).
    let p = flaskr("").start();
    template_edit_is_served_without_a_restart(&p, "flaskr/templates/blog/index.html", "/");
}

#[test]
fn reload_only_empty_restarts_for_templates() {
    let p = flaskr("reload_only = []\n").start();
    let first = wait_for_body(&p, "/", "template v1");
    let template = "flaskr/templates/blog/index.html";
    let text = std::fs::read_to_string(p.root.join(template)).unwrap();
    p.write_atomic(template, &text.replace("template v1", "template v2"));
    let second = wait_for_body(&p, "/", "template v2");
    assert_ne!(pid_in(&second), pid_in(&first), "{}", p.stderr());
    assert!(!p.stderr().contains("templates reloaded"), "{}", p.stderr());
}

/// fixtures/flaskr under Flask's own server (no `--debug`: Jinja caches compiled templates),
/// `watch` added to its `[watch]` table.
fn flaskr(watch: &str) -> Project {
    Project::new("flaskr")
        .python(&django_python())
        .config(&format!(
            r#"
command = ["$PYTHON", "-m", "flask", "--app", "flaskr", "run", "--port", "{{port}}"]
port = $PORT

[watch]
include = ["**/*.py", "**/*.html"]
{watch}debounce_ms = 50
"#
        ))
}
