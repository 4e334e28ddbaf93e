//! Issue 13 points 3, 5, 6: the env file, polling where inotify is blind, the reload-loop
//! guard. Restarts are counted from the record file (one start line per backend).

use crate::harness::*;
use std::fs;
use std::thread::sleep;
use std::time::Duration;

fn stderr_has(p: &Project, text: &str) -> bool {
    poll(WAIT, || p.stderr().contains(text).then_some(())).is_some()
}

/// Precedence: devrun's environment < env file < `[env]`; an edit restarts the backend with
/// the new value, and the status line names the key, never a value.
#[test]
fn an_env_file_edit_restarts_with_the_new_value_and_names_only_the_key() {
    let p = Project::testapp("normal.py")
        .env("APP_ENV", "from-devrun")
        .config(
            "env_file = \".env\"\ncommand = [\"$PYTHON\", \"normal.py\"]\nport = $PORT\n\
         [watch]\ndebounce_ms = 50\n",
        );
    fs::write(p.root.join(".env"), "APP_ENV=secret-one\nOTHER=x\n").unwrap();
    let p = p.start();
    let first = p.wait_for_starts(1, WAIT);
    assert_eq!(first[0].app_env.as_deref(), Some("secret-one"));
    p.wait_for_version("v1", WAIT);
    fs::write(p.root.join(".env"), "APP_ENV=secret-two\nOTHER=x\n").unwrap();
    let starts = p.wait_for_starts(2, WAIT);
    assert_eq!(starts[1].app_env.as_deref(), Some("secret-two"));
    assert!(
        stderr_has(&p, ".env changed: APP_ENV (values not shown)"),
        "{}",
        p.stderr()
    );
    assert!(
        !p.stderr().contains("secret-"),
        "a value was printed:\n{}",
        p.stderr()
    );
    p.assert_every_start_was_alone();
}

#[test]
fn env_file_is_overridden_by_the_env_table_and_errors_name_file_and_line() {
    let p = Project::testapp("normal.py").config(
        "env_file = \".env\"\ncommand = [\"$PYTHON\", \"normal.py\"]\nport = $PORT\n[env]\nAPP_ENV = \"from-table\"\n",
    );
    fs::write(p.root.join(".env"), "APP_ENV=from-file\n").unwrap();
    let p = p.start();
    assert_eq!(
        p.wait_for_starts(1, WAIT)[0].app_env.as_deref(),
        Some("from-table")
    );
    drop(p);

    let p = Project::testapp("normal.py");
    let config = "command = [\"python3\", \"normal.py\"]\nport = 1\n";
    fs::write(p.root.join("devrun.toml"), config).unwrap();
    let (code, out) = p.run_another(["--env-file", "missing.env", "--once"], WAIT);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("--env-file: env file missing.env"), "{out}");
    fs::write(p.root.join("bad.env"), "A=1\n# fine\nnot valid line\n").unwrap();
    let (code, out) = p.run_another(["--env-file", "bad.env", "--once"], WAIT);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("bad.env:3:"), "{out}");
}

/// Forced polling catches a copy that keeps an older modification time (`cp -p`), which a
/// poller comparing mtimes with `>` misses.
#[test]
fn forced_polling_catches_an_mtime_preserving_copy() {
    let p = Project::testapp("normal.py")
        .watch("poll = true\npoll_ms = 100")
        .start();
    p.wait_for_version("v1", WAIT);
    assert!(stderr_has(&p, "([watch] poll = true)"), "{}", p.stderr());
    let old = p.tmp_dir().join("version.py");
    fs::write(&old, "VERSION = \"v2\"\n").unwrap();
    let status = std::process::Command::new("touch")
        .args(["-d", "2001-01-01"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(status.success());
    let status = std::process::Command::new("cp")
        .arg("-p")
        .arg(&old)
        .arg(p.root.join("version.py"))
        .status()
        .unwrap();
    assert!(status.success());
    let served = p.wait_for_version("v2", WAIT);
    assert_eq!(served.generation, Some(2));
    p.assert_every_start_was_alone();
}

/// A backend that writes a watched file while it starts is stopped after the third loop,
/// the path named with its ignore glob; another path's change still restarts.
#[test]
fn a_self_writing_backend_is_stopped_after_the_third_loop() {
    let p = Project::testapp("writes_watched.py").start();
    assert!(
        stderr_has(&p, "reload loop: generated.py"),
        "{}",
        p.stderr()
    );
    assert!(p.stderr().contains("\"generated.py\""), "{}", p.stderr());
    let served = p.wait_for_version("v1", WAIT);
    assert_eq!(served.generation, Some(3));
    // A generation killed while starting may not have recorded its start: devrun's own lines
    // count the spawns here, the record that generation 3 is the one alive.
    sleep(QUIET * 2);
    assert!(
        !p.stderr().contains("started generation 4"),
        "{}",
        p.stderr()
    );
    assert!(served.alive());
    // Any other path resumes normally.
    p.write_atomic("version.py", "VERSION = \"v2\"\n");
    let served = p.wait_for_version("v2", WAIT);
    assert_eq!(served.generation, Some(4));
    p.assert_every_start_was_alone();
}

/// A held change is never lost: the change generation 3 made while it started (by timing, it
/// could as well have been a person's save) restarts the backend after the guard's pause.
#[test]
fn a_held_change_restarts_after_the_pause() {
    let p = Project::testapp("writes_watched.py").start();
    p.wait_until("the guard to hold generated.py", WAIT, || {
        p.stderr().contains("reload loop: generated.py")
    });
    p.wait_until("the held change to restart the backend", WAIT, || {
        p.stderr().contains("started generation 4")
    });
    assert!(
        p.stderr()
            .contains("restarting for generated.py, held back by the reload-loop guard"),
        "{}",
        p.stderr()
    );
    p.wait_for_version("v1", WAIT);
    p.assert_every_start_was_alone();
}

/// A person saving 0.2 s after every answer is never taken for a loop.
#[test]
fn saving_right_after_each_answer_never_trips_the_guard() {
    let p = Project::testapp("normal.py").start();
    for n in 1..=5 {
        let served = p.wait_for_version(&format!("v{n}"), WAIT);
        assert_eq!(served.generation, Some(n));
        sleep(Duration::from_millis(200));
        p.write_inplace("version.py", &format!("VERSION = \"v{}\"\n", n + 1));
    }
    let served = p.wait_for_version("v6", WAIT);
    assert_eq!(served.generation, Some(6));
    assert!(!p.stderr().contains("reload loop"), "{}", p.stderr());
}

/// A log file the backend holds open and writes just after ready (a watched `*.log`) is the
/// backend's own write too: stopped after the third loop, with the glob that silences it.
#[test]
fn a_log_written_just_after_ready_is_stopped_after_the_third_loop() {
    let p = Project::testapp("logs_after_ready.py")
        .watch("include = [\"**/*.py\", \"**/*.log\"]")
        .start();
    assert!(stderr_has(&p, "reload loop: app.log"), "{}", p.stderr());
    assert!(p.stderr().contains("--ignore 'app.log'"), "{}", p.stderr());
    let served = p.wait_for_version("v1", WAIT);
    assert_eq!(served.generation, Some(3));
    sleep(QUIET * 2);
    assert!(
        !p.stderr().contains("started generation 4"),
        "{}",
        p.stderr()
    );
}

/// A backend that rewrites a watched file just after it got ready (and closes it), with the
/// same content each time, would restart forever: the first write is a change, the rewrites
/// after it hold what the generation started with and restart nothing (said); a save to that
/// file or another one by a person still restarts at once.
#[test]
fn a_backend_rewriting_a_watched_file_after_ready_restarts_once_and_saves_still_serve() {
    let p = Project::testapp("writes_after_ready.py").start();
    assert!(
        stderr_has(
            &p,
            "late.py was rewritten with the content generation 2 started with"
        ),
        "{}",
        p.stderr()
    );
    sleep(QUIET * 2);
    let served = p.wait_for_version("v1", WAIT);
    assert_eq!(served.generation, Some(2), "{}", p.stderr());
    assert!(
        !p.stderr().contains("started generation 3"),
        "{}",
        p.stderr()
    );

    p.write_atomic("version.py", "VERSION = \"v2\"\n");
    let served = p.wait_for_version("v2", WAIT);
    assert_eq!(served.generation, Some(3));
    assert!(
        stderr_has(
            &p,
            "late.py was rewritten with the content generation 3 started with"
        ),
        "{}",
        p.stderr()
    );
    // A person's edit of the generated file is a change like any other: generation 4 starts
    // with it, rewrites it back (a change from what it started with), and generation 5 is where
    // it settles again.
    p.write_atomic("late.py", "SCHEMA = {}\n");
    let starts = p.wait_for_starts(5, WAIT);
    sleep(QUIET * 2);
    assert!(
        !p.stderr().contains("started generation 6"),
        "{}",
        p.stderr()
    );
    assert!(starts[4].alive());
    p.assert_every_start_was_alone();
}
