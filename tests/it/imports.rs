//! Issue 21 point 2: a file the running backend imported restarts it whatever `.gitignore`
//! says (bakerydemo's gitignored `settings/local.py`, imported by `settings/dev.py`). Each
//! generation's bootstrap reports the project files in its `sys.modules`; the watch follows
//! those `.gitignore` drops, and says so once.

use crate::harness::*;

const SAID: &str = "watching version.py though .gitignore names it: the backend imported it";

/// Waits until devrun said it watches `file` for the backend's import.
fn wait_for_said(p: &Project, said: &str) {
    p.wait_until(&format!("devrun to say {said:?}"), WAIT, || {
        p.stderr().contains(said)
    });
}

#[test]
fn a_gitignored_module_the_backend_imported_restarts_it() {
    let p = Project::testapp("normal.py");
    std::fs::write(p.root.join(".gitignore"), "version.py\nnot_imported.py\n").unwrap();
    std::fs::write(p.root.join("not_imported.py"), "X = 1\n").unwrap();
    let p = p.start();
    let first = p.wait_for_version("v1", WAIT);
    wait_for_said(&p, SAID);

    // Gitignored and never imported: still nothing.
    p.write_atomic("not_imported.py", "X = 2\n");
    std::thread::sleep(QUIET);
    assert_eq!(p.served().map(|s| s.pid), Some(first.pid), "{}", p.stderr());

    // Gitignored and imported: a new generation serves the new value.
    p.write_atomic("version.py", &version_py("v2"));
    let second = p.wait_for_version("v2", WAIT);
    assert_ne!(second.pid, first.pid);
    assert!(!first.alive(), "the old generation is still alive");
    // Said once, not once per generation.
    wait_for_said(&p, SAID);
    assert_eq!(p.stderr().matches(SAID).count(), 1, "{}", p.stderr());
}

#[test]
fn django_gitignored_local_settings_restart_the_backend() {
    let python = django_python();
    let p = Project::new("bakery");
    // Each developer's own settings, never committed (the fixture's .gitignore names it).
    let local = p.root.join("bakerydemo/settings/local.py");
    std::fs::write(local, "GREETING = \"local v1\"\n").unwrap();
    let p = p
        .python(&python)
        .config(
            r#"
command = ["$PYTHON", "manage.py", "runserver", "127.0.0.1:{port}", "--noreload"]
port = $PORT

[watch]
debounce_ms = 50
"#,
        )
        .start();
    let first = p.wait_for_version("local v1", WAIT);
    let said = "watching bakerydemo/settings/local.py though .gitignore names it: the backend \
                imported it";
    wait_for_said(&p, said);

    p.write_atomic("bakerydemo/settings/local.py", "GREETING = \"local v2\"\n");
    let second = p.wait_for_version("local v2", WAIT);
    assert_ne!(second.pid, first.pid);
    assert!(!first.alive(), "the old generation is still alive");
}

/// The interpreter with Django: `DEVRUN_TEST_PYTHON` (scripts/test installs it). Panics (never
/// skips) when it cannot import django.
pub(crate) fn django_python() -> String {
    let python = python();
    let ok = std::process::Command::new(&python)
        .args(["-c", "import django"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{python} cannot import django: run `scripts/test`, which installs it"
    );
    python
}

#[test]
fn a_forked_generation_reports_its_imports_too() {
    let p = Project::testapp("normal.py").config_also("[server]\npreload = \"auto\"\n");
    std::fs::write(p.root.join(".gitignore"), "version.py\n").unwrap();
    let p = p.start();
    let first = p.wait_for_version("v1", WAIT);
    wait_for_said(&p, SAID);
    assert!(p.stderr().contains("preloaded"), "{}", p.stderr());

    p.write_atomic("version.py", &version_py("v2"));
    let second = p.wait_for_version("v2", WAIT);
    assert_ne!(second.pid, first.pid);
}
