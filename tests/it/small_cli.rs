//! Issue 21's smaller points, on real processes: `status` names another project's devrun,
//! an edit to `devrun.toml` while running is said once (nothing restarts on it), and an exit
//! 127 is explained as a command not found.

use crate::harness::*;

#[test]
fn status_names_another_projects_devrun_holding_the_port() {
    let a = Project::testapp("normal.py").start();
    let served = a.wait_for_version("v1", WAIT);

    // Project b is configured on a's port, and runs nothing.
    let b = Project::empty();
    b.write_inplace(
        "devrun.toml",
        &format!(
            "command = [\"python3\", \"-c\", \"pass\"]\nport = {}\n",
            a.port
        ),
    );
    let mut status = b.spawn_devrun(&["status"], "status");
    let code = status.wait_exit(WAIT);
    let out = status.stdout();
    assert_eq!(code, 3, "the port is still held by another's:\n{out}");
    let whose = format!("another project's devrun ({})", a.root.display());
    assert!(
        out.contains(&format!("pid {} ", served.pid)) && out.contains(&format!("[{whose}]")),
        "{out}"
    );
    let verdict = format!("{whose} listens on the port");
    assert!(
        out.lines()
            .any(|l| l.starts_with("verdict:") && l.ends_with(&verdict)),
        "{out}"
    );
    assert!(!out.contains("NOT started by devrun"), "{out}");

    let mut json = b.spawn_devrun(&["status", "--json"], "status-json");
    assert_eq!(json.wait_exit(WAIT), 3);
    let report: serde_json::Value = serde_json::from_str(&json.stdout()).unwrap();
    let by = &report["listeners"][0]["started_by"];
    assert_eq!(by["project"], a.root.display().to_string(), "{report}");
    assert_eq!(by["running"], true, "{report}");
}

#[test]
fn an_edit_to_devrun_toml_while_running_is_said_once_and_restarts_nothing() {
    let p = Project::testapp("normal.py").start();
    let served = p.wait_for_version("v1", WAIT);
    let config = std::fs::read_to_string(p.root.join("devrun.toml")).unwrap();

    p.write_atomic("devrun.toml", &format!("{config}\n# edit 1\n"));
    p.wait_until("the edit to be said", WAIT, || {
        p.stderr().contains("devrun.toml changed")
    });
    p.write_atomic("devrun.toml", &format!("{config}\n# edit 2\n"));
    // A code change after it is still seen (so the second edit was read by now).
    p.write_atomic("version.py", &version_py("v2"));
    p.wait_for_version("v2", WAIT);
    let stderr = p.stderr();
    assert_eq!(stderr.matches("devrun.toml changed").count(), 1, "{stderr}");
    assert!(
        stderr.contains("restart devrun to apply the change"),
        "{stderr}"
    );
    assert!(!served.alive(), "v1 still runs");
    assert_eq!(
        p.starts().len(),
        2,
        "the config edits restarted the backend"
    );
}

#[test]
fn exit_127_is_explained_as_a_command_not_found() {
    let mut p = Project::empty()
        .config("command = [\"sh\", \"-c\", \"devrun-no-such-tool --port $PORT\"]\nport = $PORT\n")
        .args(["--once"])
        .start();
    assert_eq!(p.wait_exit(WAIT), 1, "{}", p.stderr());
    assert!(
        p.stderr()
            .contains("exited early with code 127: command not found: devrun-no-such-tool"),
        "{}",
        p.stderr()
    );
    p.assert_nothing_left();
}

#[test]
fn a_backend_cwd_that_is_not_a_folder_is_a_config_error_at_its_line() {
    let mut p = Project::empty()
        .config("command = [\"python3\", \"-c\", \"pass\"]\nport = $PORT\ncwd = \"backend\"\n")
        .args(["--once"])
        .start();
    assert_eq!(p.wait_exit(WAIT), 2, "{}", p.stderr());
    assert!(
        p.stderr().contains("devrun.toml:3:7: cwd: ") && p.stderr().contains("is not a folder"),
        "{}",
        p.stderr()
    );
    p.assert_nothing_left();
}
