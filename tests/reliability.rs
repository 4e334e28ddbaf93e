//! Issue 9, points 1–4: devrun signals only what it can prove it started, finds every escapee
//! of a killed devrun, holds one lock per project, and never takes that lock to answer a question.
//!
//! - The state file is evidence, never orders: a forged `.devrun/state.json` naming harmless
//!   `sleep` victims (a wrong start time, a group that is not the leader's, group 0, devrun's own
//!   group or session, pid 1) gets nothing signalled. These run `fixtures/evidence/driver.py`,
//!   which gives the devrun under test a session of its own, inside a new pid namespace when
//!   `unshare` can make one, so a regression cannot reach the test runner or the machine.
//! - A grandchild that setsid's and double-forks keeping the listening socket outlives a
//!   SIGKILLed devrun; the next `devrun`, and `devrun stop`, find it by the run marker and end it.
//! - Deleting and recreating `.devrun/` under a running devrun does not let a second one in.
//! - `devrun status` polled in a loop never makes a starting devrun exit 4.
#![cfg(target_os = "linux")] // the harness observes processes through /proc

mod common;
use common::*;

use serde_json::Value;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::sleep;
use std::time::Duration;

const DOUBLE_FORK: &str = r#"
command = ["$PYTHON", "double_fork.py"]
port = $PORT

[watch]
debounce_ms = 50

[stop]
timeout_ms = 300
"#;

// ---- helpers ----

fn unique_tag(what: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-reliability-{}-{what}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// SIGKILLs every live process whose environment holds `DEVRUN_TEST_TAG=tag` (start time
/// checked first), until none is left.
fn kill_tagged_with(tag: &str) {
    let needle = format!("DEVRUN_TEST_TAG={tag}");
    for _ in 0..100 {
        let found: Vec<(i32, u64)> = fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|pid| {
                let start = starttime(pid)?;
                let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
                environ
                    .split(|&b| b == 0)
                    .any(|var| var == needle.as_bytes())
                    .then_some((pid, start))
            })
            .collect();
        if found.is_empty() {
            return;
        }
        for (pid, start) in found {
            if alive(pid, start) {
                unsafe { libc::kill(pid, SIGKILL) };
            }
        }
        sleep(Duration::from_millis(20));
    }
    eprintln!("warning: processes tagged {tag} survived SIGKILL");
}

/// A process started here outside the harness, with a tag of its own: dropping it SIGKILLs it
/// and everything carrying the tag, even on a panic.
struct Guard {
    child: Child,
    tag: String,
}

impl Guard {
    fn wait_exit(&mut self, timeout: Duration, what: &str) -> i32 {
        let status = poll(timeout, || self.child.try_wait().unwrap())
            .unwrap_or_else(|| panic!("{what} did not exit within {timeout:?}"));
        status
            .code()
            .unwrap_or_else(|| panic!("{what} was ended by a signal: {status}"))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_tagged_with(&self.tag);
    }
}

/// Whether this machine lets us make a pid namespace (root, or user namespaces allowed).
fn pid_namespace_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// What the evidence driver reported for one scenario.
struct Evidence {
    code: i64,
    stderr: String,
    lone_alive: bool,
    sibling_alive: bool,
}

/// Runs `devrun stop` against a forged state file for `scenario` (see fixtures/evidence/driver.py),
/// in a new pid namespace when possible.
fn forged_state(scenario: &str) -> Evidence {
    forged_state_with(scenario, "stop")
}

/// The same, with `mode` "stop" (`devrun stop`) or "once" (`devrun --once`, the start path).
fn forged_state_with(scenario: &str, mode: &str) -> Evidence {
    let tmp = tempfile::Builder::new()
        .prefix("devrun-evidence-")
        .tempdir()
        .unwrap();
    let project = tmp.path().join("project");
    fs::create_dir_all(&project).unwrap();
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/evidence/driver.py");
    let port = free_port().to_string();
    let args = [
        driver.to_str().unwrap(),
        scenario,
        env!("CARGO_BIN_EXE_devrun"),
        project.to_str().unwrap(),
        &port,
        mode,
    ];
    let mut command = if pid_namespace_available() {
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--mount-proc", &python()]);
        c
    } else {
        Command::new(python())
    };
    let out = tmp.path().join("driver.out");
    let err = tmp.path().join("driver.err");
    let tag = unique_tag(scenario);
    let child = command
        .args(args)
        .env("DEVRUN_TEST_TAG", &tag)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .expect("cannot start the evidence driver");
    let mut driver = Guard { child, tag };
    let code = driver.wait_exit(WAIT * 3, &format!("the {scenario} driver"));
    let stdout = fs::read_to_string(&out).unwrap_or_default();
    let stderr = fs::read_to_string(&err).unwrap_or_default();
    assert_eq!(code, 0, "the {scenario} driver failed:\n{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("the {scenario} driver printed no report ({e}):\n{stdout}\n{stderr}")
    });
    if pid_namespace_available() {
        assert_eq!(report["namespace"], true, "{report:#}");
    }
    Evidence {
        code: report["code"].as_i64().unwrap(),
        stderr: report["stderr"].as_str().unwrap().to_string(),
        lone_alive: report["alive"]["lone"].as_bool().unwrap(),
        sibling_alive: report["alive"]["sibling"].as_bool().unwrap(),
    }
}

/// devrun stop exits 0, signals nothing, and says once why it left the record alone.
fn assert_refused(scenario: &str) {
    assert_refused_with(scenario, "stop");
}

fn assert_refused_with(scenario: &str, mode: &str) {
    let e = forged_state_with(scenario, mode);
    let what = format!("{scenario} (devrun {mode})");
    assert_eq!(e.code, 0, "{what}: devrun said:\n{}", e.stderr);
    assert!(
        e.lone_alive,
        "{what}: the lone sleep was signalled:\n{}",
        e.stderr
    );
    assert!(
        e.sibling_alive,
        "{what}: the sleep in devrun's own group was signalled:\n{}",
        e.stderr
    );
    assert_eq!(
        e.stderr.matches("nothing was signalled").count(),
        1,
        "{what}: expected one warning:\n{}",
        e.stderr
    );
}

// ---- #9.1: the state file is evidence, never orders ----

#[test]
fn a_recorded_leader_with_another_start_time_is_not_signalled() {
    let e = forged_state("wrong_start");
    assert_eq!(e.code, 0, "devrun stop said:\n{}", e.stderr);
    assert!(e.lone_alive, "a reused pid was signalled:\n{}", e.stderr);
    assert!(e.sibling_alive, "{}", e.stderr);
}

#[test]
fn a_recorded_devrun_that_is_not_a_devrun_is_not_signalled() {
    let e = forged_state("devrun_is_a_sleep");
    assert_eq!(e.code, 0, "devrun stop said:\n{}", e.stderr);
    assert!(
        e.lone_alive,
        "a live process the record names as its devrun was signalled:\n{}",
        e.stderr
    );
    assert!(e.sibling_alive, "{}", e.stderr);
}

#[test]
fn a_recorded_group_that_is_not_the_leaders_own_is_not_signalled() {
    assert_refused("pgid_not_pid");
    assert_refused("dead_leader_foreign_group");
}

#[test]
fn process_group_zero_is_never_signalled() {
    assert_refused("pgid_zero");
    assert_refused("dead_leader_pgid_zero");
}

#[test]
fn devruns_own_group_and_session_are_never_signalled() {
    assert_refused("own_group");
    assert_refused("own_session_leader");
}

#[test]
fn a_starting_devrun_refuses_the_same_records_and_starts() {
    assert_refused_with("pgid_zero", "once");
    assert_refused_with("own_group", "once");
    assert_refused_with("pgid_not_pid", "once");
}

#[test]
fn pid_one_is_never_signalled() {
    if !pid_namespace_available() {
        // Outside a pid namespace pid 1 is the machine's init: not a victim to offer.
        eprintln!("skipped: no pid namespace here (unshare --pid failed)");
        return;
    }
    assert_refused("pid_one");
}

#[test]
fn the_run_marker_proves_a_process_only_with_a_start_time_after_the_run() {
    let older = forged_state("marker_older_than_run");
    assert_eq!(older.code, 0, "devrun stop said:\n{}", older.stderr);
    assert!(
        older.lone_alive,
        "a marked process older than the run was signalled:\n{}",
        older.stderr
    );
    assert!(older.sibling_alive, "{}", older.stderr);

    // The positive control: the same victim with the proof is ended, and only it.
    let proven = forged_state("marker_proven");
    assert_eq!(proven.code, 0, "devrun stop said:\n{}", proven.stderr);
    assert!(
        !proven.lone_alive,
        "a process with the run's marker, started after the run, survived:\n{}",
        proven.stderr
    );
    assert!(proven.sibling_alive, "{}", proven.stderr);
}

// ---- #9.2: escapees of a SIGKILLed devrun ----

/// Starts devrun with double_fork.py, then SIGKILLs devrun: the leader dies with it (parent-death
/// signal), the double-forked grandchild in its own session keeps the port.
fn escapee_after_kill9() -> (Project, Served, Record) {
    let mut p = Project::new("testapp").config(DOUBLE_FORK).start();
    let backend = p.wait_for_version("v1", WAIT);
    let escapee = p.wait_for_child_of(backend.pid, WAIT);
    assert_ne!(
        pgid(escapee.pid),
        pgid(backend.pid),
        "the escapee is in the backend's group"
    );
    assert_ne!(
        unsafe { libc::getsid(escapee.pid) },
        unsafe { libc::getsid(backend.pid) },
        "the escapee is still in the backend's session"
    );
    p.kill_devrun();
    p.wait_until("the backend leader to die with devrun", WAIT, || {
        !backend.alive()
    });
    assert!(
        escapee.alive(),
        "the escapee died with devrun: nothing to test"
    );
    assert_eq!(p.listeners(), vec![escapee.pid]);
    (p, backend, escapee)
}

#[test]
fn the_next_devrun_ends_a_double_forked_escapee_of_a_killed_devrun_and_serves() {
    let (mut p, old, escapee) = escapee_after_kill9();

    p.restart_devrun();
    let served = poll(WAIT, || p.served().filter(|s| s.pid != old.pid))
        .expect("the next devrun's backend never answered GET /");

    assert!(!escapee.alive(), "the escapee survived the next devrun");
    assert!(p.running(), "the next devrun exited");
    let next_escapee = p.wait_for_child_of(served.pid, WAIT);
    let mut holders = vec![served.pid, next_escapee.pid];
    holders.sort();
    assert_eq!(p.listeners(), holders);
    assert!(p.stderr().contains("left running by a devrun that died"));
}

#[test]
fn devrun_stop_ends_a_double_forked_escapee_of_a_killed_devrun() {
    let (p, _old, escapee) = escapee_after_kill9();

    let (code, stderr) = p.run_another(["stop"], WAIT);

    assert_eq!(code, 0, "devrun stop said:\n{stderr}");
    assert!(!escapee.alive(), "devrun stop left the escapee running");
    assert_eq!(p.tagged_processes(), Vec::<i32>::new());
    assert!(p.port_free());
}

// ---- #9.3: one lock per project, not per inode ----

/// Starts another devrun in the project with extra environment, outside the harness.
fn spawn_devrun(p: &Project, args: &[&str], env: &[(&str, &Path)], name: &str) -> (Guard, PathBuf) {
    let dir = p.root.parent().unwrap();
    let stderr = dir.join(format!("{name}.stderr.log"));
    let tag = unique_tag(name);
    let child = Command::new(env!("CARGO_BIN_EXE_devrun"))
        .args(args)
        .current_dir(&p.root)
        .env_remove("PORT")
        .env("NO_COLOR", "1")
        .env("DEVRUN_TEST_TAG", &tag)
        .env("DEVRUN_TEST_RECORD", dir.join("record.jsonl"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr).unwrap())
        .process_group(0)
        .spawn()
        .expect("cannot start the devrun binary");
    (Guard { child, tag }, stderr)
}

#[test]
fn a_recreated_state_folder_does_not_let_a_second_devrun_in() {
    let mut p = Project::testapp("normal.py").start();
    let served = p.wait_for_version("v1", WAIT);

    fs::remove_dir_all(p.root.join(".devrun")).unwrap();
    fs::create_dir(p.root.join(".devrun")).unwrap();
    let (code, stderr) = p.run_another([], WAIT);

    assert_eq!(code, 4, "the second devrun said:\n{stderr}");
    assert!(p.running(), "the first devrun exited");
    assert!(served.alive(), "the first devrun's backend was touched");
    assert_eq!(p.served().map(|s| s.pid), Some(served.pid));
    assert_eq!(p.listeners(), vec![served.pid]);
    assert_eq!(p.starts().len(), 1, "the second devrun started a backend");
}

#[test]
fn a_state_file_naming_a_live_devrun_refuses_even_with_another_lock_folder() {
    let mut p = Project::testapp("normal.py").start();
    p.wait_for_version("v1", WAIT);
    // The first devrun's `.devrun/lock` is now a deleted inode; its next generation writes
    // state.json into the new folder.
    fs::remove_dir_all(p.root.join(".devrun")).unwrap();
    p.write_atomic("version.py", &version_py("v2"));
    let served = p.wait_for_version("v2", WAIT);
    p.wait_until("the state file to be rewritten", WAIT, || {
        p.root.join(".devrun/state.json").exists()
    });

    // Another lock folder (XDG_RUNTIME_DIR differs between shells): both locks are free.
    let other_runtime = tempfile::tempdir().unwrap();
    let (mut second, stderr) = spawn_devrun(
        &p,
        &[],
        &[("XDG_RUNTIME_DIR", other_runtime.path())],
        "other-runtime",
    );
    let code = second.wait_exit(WAIT, "the second devrun");

    let stderr = fs::read_to_string(stderr).unwrap_or_default();
    assert_eq!(code, 4, "the second devrun said:\n{stderr}");
    assert!(
        stderr.contains(&p.pid().to_string()),
        "the second devrun did not name the first:\n{stderr}"
    );
    assert!(p.running());
    assert!(served.alive());
    assert_eq!(p.listeners(), vec![served.pid]);
    assert_eq!(p.starts().len(), 2);
}

// ---- #9.4: asking never blocks running ----

/// Deterministic: `.devrun/lock` is a FIFO, so anything that opens it to lock it blocks for
/// good. `status`, `stop` and `restart` must answer without touching it.
#[test]
fn status_stop_and_restart_never_open_the_lock() {
    let p = Project::testapp("normal.py");
    fs::write(
        p.root.join("devrun.toml"),
        format!(
            "command = [\"{}\", \"normal.py\"]\nport = {}\n",
            python(),
            p.port
        ),
    )
    .unwrap();
    fs::create_dir_all(p.root.join(".devrun")).unwrap();
    let fifo = std::ffi::CString::new(p.root.join(".devrun/lock").to_str().unwrap()).unwrap();
    assert_eq!(
        unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) },
        0,
        "mkfifo failed"
    );

    let (code, stderr) = p.run_another(["status"], WAIT);
    assert_eq!(code, 1, "status (nothing listens) said:\n{stderr}");
    let (code, stderr) = p.run_another(["stop"], WAIT);
    assert_eq!(code, 0, "stop (nothing runs) said:\n{stderr}");
    let (code, stderr) = p.run_another(["restart"], WAIT);
    assert_eq!(code, 1, "restart (nothing runs) said:\n{stderr}");
}

#[test]
fn status_polled_in_a_loop_never_refuses_a_starting_devrun() {
    let mut p = Project::testapp("normal.py").args(["--once"]).start();
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());

    let stop = Arc::new(AtomicBool::new(false));
    let pollers: Vec<_> = (0..2)
        .map(|i| {
            let stop = stop.clone();
            let root = p.root.clone();
            let tag = unique_tag(&format!("status-{i}"));
            std::thread::spawn(move || {
                let mut asked = 0;
                while !stop.load(Ordering::SeqCst) {
                    let _ = Command::new(env!("CARGO_BIN_EXE_devrun"))
                        .args(["status", "--json"])
                        .current_dir(&root)
                        .env("DEVRUN_TEST_TAG", &tag)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    asked += 1;
                }
                kill_tagged_with(&tag);
                asked
            })
        })
        .collect();
    let mut codes = Vec::new();
    for _ in 0..10 {
        p.restart_devrun();
        codes.push(p.wait_exit(WAIT));
    }
    stop.store(true, Ordering::SeqCst);
    let asked: usize = pollers.into_iter().map(|t| t.join().unwrap()).sum();

    assert!(asked > 10, "status ran only {asked} times");
    assert_eq!(codes, vec![0; 10], "{}", p.stderr());
}
