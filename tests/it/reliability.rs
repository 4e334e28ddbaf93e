//! Issue 9, points 1–4: devrun signals only what it can prove it started, finds every escapee
//! of a killed devrun, holds one lock per project, and never takes that lock to answer a question.
//!
//! - The state file is evidence, never orders: a forged `.devrun/state.json` naming harmless
//!   `sleep` victims (a wrong start time, a group that is not the leader's, group 0, devrun's own
//!   group or session, pid 1) gets nothing signalled. These run `fixtures/evidence/driver.py`,
//!   which gives the devrun under test a session of its own, inside a new pid namespace when
//!   `unshare` can make one, so a regression cannot reach the test runner or the machine.
//! - (#9.2, a double-forked escapee of a SIGKILLed devrun, is in `orphan.rs`.)
//! - Deleting and recreating `.devrun/` under a running devrun does not let a second one in.
//! - `devrun status` polled in a loop never makes a starting devrun exit 4.

use crate::harness::*;

use serde_json::Value;
use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

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
    let mut driver = Guard::spawn(
        &format!("the {scenario} driver"),
        command
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap()),
    );
    let code = driver.wait_exit(WAIT * 3);
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

/// devrun exited 0 and signalled neither victim: the lone sleep the record names, nor the
/// sleep in devrun's own group.
fn assert_left_alone(e: &Evidence, what: &str) {
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
}

fn assert_refused_with(scenario: &str, mode: &str) {
    let e = forged_state_with(scenario, mode);
    let what = format!("{scenario} (devrun {mode})");
    assert_left_alone(&e, &what);
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
    assert_left_alone(&e, "a reused pid");
}

#[test]
fn a_recorded_devrun_that_is_not_a_devrun_is_not_signalled() {
    let e = forged_state("devrun_is_a_sleep");
    assert_left_alone(&e, "a live process the record names as its devrun");
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
    assert_left_alone(&older, "a marked process older than the run");

    // The positive control: the same victim with the proof is ended, and only it.
    let proven = forged_state("marker_proven");
    assert_eq!(proven.code, 0, "devrun stop said:\n{}", proven.stderr);
    assert!(
        !proven.lone_alive,
        "a process with the run's marker, started after the run, survived:\n{}",
        proven.stderr
    );
    assert!(proven.sibling_alive, "{}", proven.stderr);

    // A refused leader record does not shield the run's proven processes.
    let both = forged_state("marker_proven_refused_leader");
    assert_eq!(both.code, 0, "devrun stop said:\n{}", both.stderr);
    assert!(
        !both.lone_alive,
        "a refused leader record kept the run's marked process alive:\n{}",
        both.stderr
    );
    assert!(
        both.sibling_alive,
        "the refused leader (in devrun's own group) was signalled:\n{}",
        both.stderr
    );
}

/// Issue 20.4: a true pid, start time and group copied into a forged record are not proof
/// enough where the OS shows the environment: the leader must carry the recorded run's marker.
#[test]
fn a_recorded_leader_without_the_runs_marker_is_not_signalled() {
    assert_refused("leader_without_marker");
}

/// Issue 20.4: a forged state file naming another project's live devrun (true pid and start
/// time, no channel) does not make `devrun stop` signal it: it does not hold this project's
/// lock.
#[test]
fn a_forged_record_naming_another_projects_devrun_does_not_stop_it() {
    let mut other = Project::testapp("normal.py").start();
    let served = other.wait_for_version("v1", WAIT);
    let mut forged = other.read_state();
    forged["control"] = Value::Null;
    forged["backend"] = Value::Null;
    forged["project"] = Value::Null;
    let here = Project::testapp("normal.py");
    fs::create_dir_all(here.root.join(".devrun")).unwrap();
    fs::write(
        here.root.join(".devrun/state.json"),
        serde_json::to_string(&forged).unwrap(),
    )
    .unwrap();

    let (code, stderr) = here.run_another(["stop"], WAIT);

    assert_eq!(code, 4, "devrun stop said:\n{stderr}");
    assert!(
        stderr.contains("does not hold this project's lock"),
        "{stderr}"
    );
    assert!(other.running(), "the other project's devrun was stopped");
    assert!(served.alive());
    assert_eq!(other.served().map(|s| s.pid), Some(served.pid));
}

// ---- #9.3: one lock per project, not per inode ----

#[test]
fn a_recreated_state_folder_does_not_let_a_second_devrun_in() {
    let mut p = Project::testapp("normal.py").start();
    let served = p.wait_for_version("v1", WAIT);
    p.settled_state(); // devrun writes no more into `.devrun/` for now

    fs::remove_dir_all(p.root.join(".devrun")).unwrap();
    fs::create_dir(p.root.join(".devrun")).unwrap();
    let (code, stderr) = p.run_another([], WAIT);

    assert_eq!(code, 4, "the second devrun said:\n{stderr}");
    p.assert_kept_serving_alone(&served);
}

#[test]
fn a_state_file_naming_a_live_devrun_refuses_even_with_another_lock_folder() {
    let mut p = Project::testapp("normal.py").start();
    p.wait_for_version("v1", WAIT);
    // Once the state file records the backend ready, devrun writes no more into `.devrun/`
    // until something changes (removing it while devrun wrote there failed: not empty).
    p.settled_state();
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
    let mut second = p.spawn_devrun_with_env(
        &[],
        &[("XDG_RUNTIME_DIR", other_runtime.path())],
        "other-runtime",
    );
    let code = second.wait_exit(WAIT);

    let stderr = second.stderr();
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
                kill_tagged(&tag);
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
