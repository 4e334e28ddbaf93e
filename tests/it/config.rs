//! A bad configuration exits 2 before anything starts, pointing at `devrun.toml:LINE:COL`.

use crate::harness::*;

/// Runs devrun on `toml`, expects exit code 2 and no backend; returns stderr.
fn config_error(toml: &str) -> String {
    let mut p = Project::new("testapp").config(toml).start();
    assert_eq!(p.wait_exit(WAIT), 2, "{}", p.stderr());
    assert!(p.starts().is_empty(), "a backend started despite the error");
    p.stderr()
}

fn assert_mentions(stderr: &str, location: &str) {
    assert!(
        stderr.contains(location),
        "stderr does not mention {location}:\n{stderr}"
    );
}

#[test]
fn an_unknown_top_level_key_is_located() {
    let stderr = config_error(
        r#"
command = ["$PYTHON", "normal.py"]
port = $PORT
colour = "always"
"#,
    );
    assert_mentions(&stderr, "devrun.toml:3:1");
}

#[test]
fn an_unknown_key_in_a_table_is_located() {
    let stderr = config_error(
        r#"
command = ["$PYTHON", "normal.py"]
port = $PORT

[watch]
extensions = ["py"]
"#,
    );
    assert_mentions(&stderr, "devrun.toml:5:1");
}

#[test]
fn broken_toml_is_located() {
    let stderr = config_error(
        r#"
command = ["$PYTHON", "normal.py"]
port = 80 80
"#,
    );
    assert_mentions(&stderr, "devrun.toml:2:");
}

#[test]
fn an_invalid_glob_is_an_error() {
    config_error(
        r#"
command = ["$PYTHON", "normal.py"]
port = $PORT

[watch]
ignore = ["data/[unclosed"]
"#,
    );
}

#[test]
fn a_missing_command_is_an_error() {
    config_error(
        r#"
port = $PORT
"#,
    );
}

#[test]
fn an_unknown_stop_signal_is_an_error() {
    config_error(
        r#"
command = ["$PYTHON", "normal.py"]
port = $PORT

[stop]
signal = "SIGNOPE"
"#,
    );
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let mut p = Project::testapp("normal.py")
        .args(["--no-such-flag"])
        .start();
    assert_eq!(p.wait_exit(WAIT), 2);
    assert!(p.starts().is_empty());
}
