//! `[tool.devrun]` in `pyproject.toml`: used when there is no `devrun.toml`, beaten by it when
//! there is one, and by flags always. Which config won is seen from outside: which port the
//! backend answers on.

use crate::harness::*;
use std::fs;

/// A TOML basic string (JSON's escapes are valid TOML ones).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A realistic pyproject.toml: other tools' tables around devrun's.
fn pyproject(devrun_table: &str) -> String {
    format!(
        r#"[project]
name = "testapp"
version = "0.1.0"
requires-python = ">=3.9"

[tool.ruff]
line-length = 100
{devrun_table}
[tool.pytest.ini_options]
addopts = "-q"
"#
    )
}

/// A `[tool.devrun]` table running normal.py on `port`.
fn devrun_table(port: u16) -> String {
    format!(
        r#"
[tool.devrun]
command = [{}, "normal.py"]
port = {port}

[tool.devrun.watch]
debounce_ms = 50
"#,
        toml_str(&python())
    )
}

/// A devrun.toml running normal.py on `port`.
fn devrun_toml(port: u16) -> String {
    format!(
        "command = [{}, \"normal.py\"]\nport = {port}\n\n[watch]\ndebounce_ms = 50\n",
        toml_str(&python())
    )
}

fn write(p: &Project, rel: &str, text: &str) {
    fs::write(p.root.join(rel), text).unwrap();
}

/// Nothing listens on `port` and nothing answers there.
fn assert_unused(port: u16, what: &str) {
    assert_eq!(listeners(port), Vec::<i32>::new(), "{what}: {port} is used");
    assert!(http_get(port, "/").is_none(), "{what}: {port} answers");
}

/// The source devrun names in its `watching` status line.
fn config_source(p: &Project) -> String {
    let stderr = p.stderr();
    let line = stderr
        .lines()
        .find(|l| l.starts_with("devrun: watching "))
        .unwrap_or_else(|| panic!("no watching line:\n{stderr}"));
    line.rsplit_once("(config: ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no config source in {line:?}"))
        .to_string()
}

#[test]
fn pyproject_alone_gives_the_command_and_port() {
    let p = Project::new("testapp");
    write(&p, "pyproject.toml", &pyproject(&devrun_table(p.port)));
    assert!(!p.root.join("devrun.toml").exists());
    let p = p.start();

    let v1 = p.wait_for_version("v1", WAIT);
    assert_eq!(p.listeners(), vec![v1.pid]);
    assert_eq!(p.starts()[0].pid, v1.pid, "the backend is not normal.py");
    assert_eq!(config_source(&p), "pyproject.toml [tool.devrun]");

    // [tool.devrun.watch] is read too, and the watch works from it.
    p.write_atomic("version.py", &version_py("v2"));
    let v2 = p.wait_for_version("v2", WAIT);
    assert_eq!(v2.generation, Some(2));
}

#[test]
fn devrun_toml_wins_over_pyproject() {
    let pyproject_port = free_port();
    let p = Project::new("testapp");
    assert_ne!(pyproject_port, p.port);
    write(
        &p,
        "pyproject.toml",
        &pyproject(&devrun_table(pyproject_port)),
    );
    write(&p, "devrun.toml", &devrun_toml(p.port));
    let p = p.start();

    let v1 = p.wait_for_version("v1", WAIT);
    assert_eq!(p.listeners(), vec![v1.pid]);
    assert_unused(pyproject_port, "pyproject.toml's port");
    assert_eq!(config_source(&p), "devrun.toml");
}

#[test]
fn the_port_flag_wins_over_devrun_toml_and_pyproject() {
    let (toml_port, pyproject_port) = (free_port(), free_port());
    let p = Project::new("testapp").args(["--port", "$PORT"]);
    assert!(toml_port != p.port && pyproject_port != p.port && toml_port != pyproject_port);
    write(
        &p,
        "pyproject.toml",
        &pyproject(&devrun_table(pyproject_port)),
    );
    write(&p, "devrun.toml", &devrun_toml(toml_port));
    let p = p.start();

    let v1 = p.wait_for_version("v1", WAIT);
    assert_eq!(p.listeners(), vec![v1.pid]);
    assert_unused(toml_port, "devrun.toml's port");
    assert_unused(pyproject_port, "pyproject.toml's port");
}

#[test]
fn the_port_flag_wins_over_pyproject() {
    let pyproject_port = free_port();
    let p = Project::new("testapp").args(["--port", "$PORT"]);
    assert_ne!(pyproject_port, p.port);
    write(
        &p,
        "pyproject.toml",
        &pyproject(&devrun_table(pyproject_port)),
    );
    let p = p.start();

    let v1 = p.wait_for_version("v1", WAIT);
    assert_eq!(p.listeners(), vec![v1.pid]);
    assert_unused(pyproject_port, "pyproject.toml's port");
    assert_eq!(config_source(&p), "pyproject.toml [tool.devrun]");
}

/// devrun refuses the pyproject.toml with exit 2, naming `pyproject.toml:LINE:COL` and `key`,
/// and starts nothing.
fn assert_rejected(devrun_table: &str, key: &str, line: usize, col: usize) {
    let text = pyproject(devrun_table);
    let found = text.lines().nth(line - 1).unwrap_or("");
    assert!(
        found[col - 1..].starts_with(key),
        "the test's own location is wrong: line {line} is {found:?}"
    );
    let p = Project::new("testapp");
    write(&p, "pyproject.toml", &text);
    let mut p = p.start();

    assert_eq!(p.wait_exit(WAIT), 2, "stderr:\n{}", p.stderr());
    let stderr = p.stderr();
    let location = format!("pyproject.toml:{line}:{col}");
    assert!(
        stderr.contains(&location),
        "no {location} in stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(key),
        "the error does not name {key}:\n{stderr}"
    );
    assert!(p.starts().is_empty(), "a backend was started");
    assert!(p.port_free());
}

#[test]
fn an_unknown_key_in_tool_devrun_is_located() {
    let table = format!(
        r#"
[tool.devrun]
command = [{}, "normal.py"]
port = 8123
reload = true
"#,
        toml_str(&python())
    );
    // [project] + 3, blank, [tool.ruff] + 1, blank, [tool.devrun], command, port, reload
    assert_rejected(&table, "reload", 12, 1);
}

#[test]
fn an_unknown_key_in_a_tool_devrun_subtable_is_located() {
    let table = format!(
        r#"
[tool.devrun]
command = [{}, "normal.py"]
port = 8123

[tool.devrun.watch]
  includes = ["**/*.py"]
"#,
        toml_str(&python())
    );
    assert_rejected(&table, "includes", 14, 3);
}

#[test]
fn a_pyproject_without_tool_devrun_leaves_devrun_to_its_flags() {
    let p = Project::new("testapp").args(["--port", "$PORT", "--", "$PYTHON", "normal.py"]);
    write(&p, "pyproject.toml", &pyproject(""));
    let p = p.start();

    let v1 = p.wait_for_version("v1", WAIT);
    assert_eq!(p.listeners(), vec![v1.pid]);
    assert_eq!(config_source(&p), "command line");
}
