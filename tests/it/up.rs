//! Issue 23: `devrun up` (devrun in the background for scripts and agents), `devrun logs`,
//! `devrun down`, and `port = "auto"` kept per checkout so two worktrees run side by side.
//! The detached devrun carries the project's test tag: the harness ends it with the rest.

use crate::harness::*;

use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;

/// Runs `devrun ARGS` in the project (or `cwd`) to its end: exit code, stdout, stderr. What
/// it starts in the background carries the project's tag and ends with it.
fn run(p: &Project, cwd: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    p.run_tagged(cwd, args)
}

fn state_of(root: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(root.join(".devrun/state.json")).unwrap()).unwrap()
}

/// `backend  http://localhost:PORT  pid N  generation G` → (port, pid).
fn backend_line(stdout: &str) -> (u16, i32) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("backend "))
        .unwrap_or_else(|| panic!("no backend line in:\n{stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let port = words[1].rsplit(':').next().unwrap().parse().unwrap();
    let pid = words[3].parse().unwrap();
    (port, pid)
}

fn get_on(port: u16) -> Option<Value> {
    let mut p = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    use std::io::{Read, Write};
    p.set_read_timeout(Some(WAIT)).ok()?;
    p.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    p.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()
}

#[test]
fn up_returns_once_serving_and_a_second_up_or_two_at_once_start_nothing() {
    let p = Project::testapp("normal.py").written();
    let (code, stdout, stderr) = run(&p, None, &["up"]);
    assert_eq!(code, 0, "devrun up said:\n{stderr}");
    let (port, pid) = backend_line(&stdout);
    assert_eq!(port, p.port);
    // It returned with the backend serving.
    let served = p.served().expect("nothing serves after devrun up returned");
    assert_eq!(served.pid, pid);
    assert!(stderr.contains("devrun logs -f"), "{stderr}");

    let (code, again, stderr) = run(&p, None, &["up"]);
    assert_eq!(code, 0, "the second devrun up said:\n{stderr}");
    assert_eq!(
        backend_line(&again).1,
        pid,
        "a second up started another backend"
    );
    // Two at once: neither starts a second backend.
    let mut a = p.spawn_devrun(&["up"], "up-a");
    let mut b = p.spawn_devrun(&["up", "--json"], "up-b");
    assert_eq!(a.wait_exit(WAIT * 2), 0, "{}", a.stderr());
    assert_eq!(b.wait_exit(WAIT * 2), 0, "{}", b.stderr());
    assert_eq!(backend_line(&a.stdout()).1, pid);
    let json: Value = serde_json::from_str(&b.stdout()).expect("--json prints status's object");
    assert_eq!(
        json["backend"]["pid"].as_i64(),
        Some(pid as i64),
        "{json:#}"
    );
    assert_eq!(p.starts().len(), 1, "more than one backend was started");
    assert_eq!(p.listeners(), vec![pid]);

    let (code, _, stderr) = run(&p, None, &["down"]);
    assert_eq!(code, 0, "devrun down said:\n{stderr}");
    p.assert_nothing_left();
}

#[test]
fn up_on_a_backend_that_crashes_on_import_exits_1_naming_it_and_leaves_nothing() {
    let p = Project::testapp("crash_on_import.py").written();
    let (code, _, stderr) = run(&p, None, &["up"]);
    assert_eq!(code, 1, "devrun up said:\n{stderr}");
    assert!(
        stderr.contains("SyntaxError"),
        "the exception is not named:\n{stderr}"
    );
    assert!(
        stderr.contains("Traceback"),
        "no last lines of its output:\n{stderr}"
    );
    p.assert_nothing_left();
    assert!(
        !p.state_path().exists(),
        "a state file names a run that is gone"
    );
}

#[test]
fn a_bad_config_is_exit_2_before_anything_starts() {
    let p = Project::testapp("normal.py")
        .config_also("[ready]\nhttps = \"/\"\n")
        .written();
    let (code, _, stderr) = run(&p, None, &["up"]);
    assert_eq!(code, 2, "devrun up said:\n{stderr}");
    assert!(stderr.contains("https"), "{stderr}");
    p.assert_nothing_left();
}

#[test]
fn logs_show_the_output_follow_a_restart_and_an_edit_restarts_as_usual() {
    let p = Project::testapp("normal.py").written();
    let (code, _, stderr) = run(&p, None, &["up"]);
    assert_eq!(code, 0, "devrun up said:\n{stderr}");
    let (code, logs, _) = run(&p, None, &["logs"]);
    assert_eq!(code, 0);
    assert!(logs.contains("started generation 1"), "{logs}");
    let (_, status, _) = run(&p, None, &["status"]);
    assert!(status.contains("in the background"), "{status}");

    let mut follow = p.spawn_devrun(&["logs", "-f", "-n", "0"], "logs-f");
    p.write_atomic("version.py", &version_py("v2"));
    let served = p.wait_for_version("v2", WAIT);
    assert_eq!(served.generation, Some(2));
    p.wait_until("logs -f to show generation 2", WAIT, || {
        follow.stdout().contains("started generation 2")
    });
    assert!(
        !follow.stdout().contains("started generation 1"),
        "-n 0 showed old lines"
    );
    assert!(follow.running());
    drop(follow);
    let (code, _, _) = run(&p, None, &["down"]);
    assert_eq!(code, 0);
    p.assert_nothing_left();
}

#[test]
fn kill_9_of_the_detached_devrun_then_up_recovers_and_serves() {
    let p = Project::testapp("normal.py").written();
    let (code, stdout, stderr) = run(&p, None, &["up"]);
    assert_eq!(code, 0, "devrun up said:\n{stderr}");
    let (_, first) = backend_line(&stdout);
    let devrun = state_of(&p.root)["devrun_pid"].as_i64().unwrap() as i32;
    unsafe { libc::kill(devrun, libc::SIGKILL) };
    p.wait_until("the detached devrun to die", WAIT, || !alive_pid(devrun));

    let (code, stdout, stderr) = run(&p, None, &["up"]);
    assert_eq!(code, 0, "devrun up after kill -9 said:\n{stderr}");
    let (_, second) = backend_line(&stdout);
    assert_ne!(second, first);
    assert!(
        !alive_pid(first),
        "the orphan of the killed devrun survived"
    );
    assert_eq!(p.listeners(), vec![second]);
    let (code, _, _) = run(&p, None, &["down"]);
    assert_eq!(code, 0);
    p.assert_nothing_left();
}

fn alive_pid(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn git(cwd: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// Two worktrees of one repository, one `devrun.toml` with `port = "auto"`: each gets a port of
/// its own, kept across `down` + `up`, and each one's `stop` ends only its own.
#[test]
fn two_worktrees_with_port_auto_run_side_by_side_on_ports_they_keep() {
    let p = Project::testapp("normal.py");
    let toml = format!(
        "command = [{:?}, \"normal.py\"]\nport = \"auto\"\n",
        python()
    );
    fs::write(p.root.join("devrun.toml"), toml).unwrap();
    fs::write(p.root.join(".gitignore"), ".devrun/\n").unwrap();
    git(&p.root, &["init", "-q"]);
    git(&p.root, &["add", "-A"]);
    git(&p.root, &["commit", "-qm", "app"]);
    let other = p.tmp_dir().join("other");
    git(&p.root, &["worktree", "add", "-q", other.to_str().unwrap()]);

    let (code, one, stderr) = run(&p, None, &["up"]);
    assert_eq!(code, 0, "up in the first worktree said:\n{stderr}");
    assert!(
        stderr.contains("picked port"),
        "a first auto pick is said:\n{stderr}"
    );
    let (code, two, stderr) = run(&p, Some(&other), &["up"]);
    assert_eq!(code, 0, "up in the second worktree said:\n{stderr}");
    let ((port1, pid1), (port2, pid2)) = (backend_line(&one), backend_line(&two));
    assert_ne!(port1, port2, "two worktrees on one port");
    assert_eq!(get_on(port1).unwrap()["pid"].as_i64(), Some(pid1 as i64));
    assert_eq!(get_on(port2).unwrap()["pid"].as_i64(), Some(pid2 as i64));
    // status in one sees only its own.
    let (_, status, _) = run(&p, Some(&other), &["status", "--json"]);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["port"].as_u64(), Some(port2 as u64));

    // Stopping one leaves the other serving; up again keeps the port.
    let (code, _, stderr) = run(&p, Some(&other), &["down"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        get_on(port2).is_none(),
        "the second worktree's backend survived its down"
    );
    assert_eq!(get_on(port1).unwrap()["pid"].as_i64(), Some(pid1 as i64));
    let (code, again, stderr) = run(&p, Some(&other), &["up"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stderr.contains("picked port"),
        "the kept port was picked anew:\n{stderr}"
    );
    assert_eq!(
        backend_line(&again).0,
        port2,
        "the auto port moved across down + up"
    );
    for cwd in [None, Some(other.as_path())] {
        let (code, _, _) = run(&p, cwd, &["down"]);
        assert_eq!(code, 0);
    }
    assert!(get_on(port1).is_none() && get_on(port2).is_none());
}
