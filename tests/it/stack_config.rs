//! Issue 11: a stack config (`[processes.NAME]`, `--only`) that cannot work exits 2 before
//! anything starts, naming the file, line, column and key (or the flag).
//!
//! Every member here runs a testapp script, so a member that started anyway would leave a
//! start record: `starts()` sees the backend and the members alike.

use crate::harness::*;

const BACKEND: &str = r#"
command = ["$PYTHON", "normal.py"]
port = $PORT
"#;

/// devrun on `BACKEND` + `stack` with `args`: expects exit 2 and nothing started; returns
/// stderr.
fn refused<const N: usize>(stack: &str, args: [&str; N]) -> String {
    let mut p = Project::new("testapp")
        .config(BACKEND)
        .config_also(stack)
        .args(args)
        .start();
    assert_eq!(p.wait_exit(WAIT), 2, "not a config error:\n{}", p.stderr());
    assert!(
        p.starts().is_empty(),
        "a process started despite the error:\n{}",
        p.stderr()
    );
    p.assert_nothing_left();
    p.stderr()
}

fn assert_says(stderr: &str, what: &[&str]) {
    for words in what {
        assert!(stderr.contains(words), "stderr lacks {words:?}:\n{stderr}");
    }
}

#[test]
fn a_cycle_in_after_is_spelled_with_its_place() {
    let stderr = refused(
        r#"
[processes.web]
command = ["$PYTHON", "normal.py"]
after = ["backend", "api"]

[processes.api]
command = ["$PYTHON", "normal.py"]
after = ["web"]
"#,
        [],
    );
    assert_says(
        &stderr,
        &[
            "devrun.toml:10:10:",
            "cycle: web → api → web",
            "after = [\"web\"]",
        ],
    );
}

#[test]
fn an_unknown_name_in_after_is_located() {
    let stderr = refused(
        r#"
[processes.web]
command = ["$PYTHON", "normal.py"]
after = ["bakend"]
"#,
        [],
    );
    assert_says(
        &stderr,
        &[
            "devrun.toml:6:10:",
            "[processes.web] after",
            "no process named \"bakend\" (known: backend, web)",
        ],
    );
}

#[test]
fn a_placeholder_naming_no_port_is_located() {
    let stderr = refused(
        r#"
[processes.worker]
command = ["$PYTHON", "normal.py"]

[processes.web]
command = ["$PYTHON", "normal.py"]
port = "auto"
env = { API = "http://127.0.0.1:{ports.worker}" }
"#,
        [],
    );
    assert_says(
        &stderr,
        &[
            "devrun.toml:10:33:",
            "[processes.web] env API",
            "{ports.worker}: worker has no port",
        ],
    );
}

#[test]
fn a_member_on_the_backends_port_is_refused() {
    let stderr = refused(
        r#"
[processes.web]
command = ["$PYTHON", "normal.py"]
port = $PORT
"#,
        [],
    );
    assert_says(
        &stderr,
        &[
            "devrun.toml:6:8:",
            "[processes.web] port",
            "also backend's port",
        ],
    );
}

#[test]
fn an_unknown_key_in_a_member_is_located() {
    let stderr = refused(
        r#"
[processes.web]
command = ["$PYTHON", "normal.py"]
restart_after = ["backend"]
"#,
        [],
    );
    assert_says(
        &stderr,
        &["devrun.toml:6:1:", "unknown field `restart_after`"],
    );
}

#[test]
fn only_with_an_unknown_name_lists_the_known_ones() {
    let stderr = refused(
        r#"
[processes.web]
command = ["$PYTHON", "normal.py"]
port = "auto"
"#,
        ["--only", "backend", "--only", "wbe"],
    );
    assert_says(
        &stderr,
        &["--only wbe: no process named \"wbe\" (known: backend, web)"],
    );
}

/// `devrun init` in a project with a frontend (`web/package.json` with a `dev` script) adds a
/// commented `[processes.web]`; uncommented, devrun accepts it, and `--only backend` runs the
/// backend alone.
#[test]
fn init_adds_a_commented_frontend_that_devrun_accepts() {
    let p = Project::empty();
    // The template's port: the project's own free port (not init's 8000..=8099 search, which
    // other init tests serialize on).
    p.write_inplace(".env", &format!("PORT={}\n", p.port));
    p.write_inplace(
        "app.py",
        "from flask import Flask\n\napp = Flask(__name__)\n",
    );
    crate::init::link_test_venv(&p);
    p.write_inplace("web/package.json", r#"{"scripts": {"dev": "vite"}}"#);
    p.write_inplace(
        "node_modules/x/package.json",
        r#"{"scripts": {"dev": "x"}}"#,
    );
    // No npm on PATH: the block is written commented out, saying so.
    let no_npm = p.tmp_dir().join("empty-bin");
    std::fs::create_dir_all(&no_npm).unwrap();
    let mut init = p.spawn_devrun_with_env(&["init"], &[("PATH", &no_npm)], "init");
    assert_eq!(init.wait_exit(WAIT), 0, "{}", init.stderr());
    assert!(
        init.stderr().contains("web/package.json"),
        "init did not name the frontend:\n{}",
        init.stderr()
    );
    let written = std::fs::read_to_string(p.root.join("devrun.toml")).expect("devrun.toml");
    for line in [
        "# [processes.web]",
        "# command = \"npm run dev -- --port {port} --strictPort\"",
        "# cwd = \"web\"",
        "# port = 5173",
        "# after = [\"backend\"]",
        "# env = { VITE_API_URL = \"{url.backend}\" }",
        "# Commented out: npm is not on PATH; then uncomment it.",
    ] {
        assert!(
            written.lines().any(|l| l == line),
            "no {line:?} in:\n{written}"
        );
    }

    // Uncommented from the table header on: a valid stack, of which the backend runs alone.
    let (head, block) = written
        .split_once("# [processes.web]")
        .expect("a [processes.web] block");
    let uncommented: String = format!("# [processes.web]{block}")
        .lines()
        .map(|line| format!("{}\n", line.strip_prefix("# ").unwrap_or(line)))
        .collect();
    let mut p = p
        .config(&format!("{head}{uncommented}"))
        .args(["--once", "--only", "backend"])
        .start();
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    assert!(p.port_free(), "port {} still held after --once", p.port);
    p.assert_nothing_left();
}
