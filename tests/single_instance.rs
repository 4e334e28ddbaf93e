//! One backend per project, and nothing left behind:
//! - invariant 5: what a SIGKILLed devrun left is ended by the next `devrun` or `devrun stop`,
//!   verified by pid *and* start time (a reused pid is never touched);
//! - invariant 7: a second devrun is refused (exit 4), `--replace` takes over after a
//!   confirmed teardown;
//! - invariant 6: a port held by a process devrun did not start is left alone (exit 3) unless
//!   `--kill-port-holder` is given;
//! - invariant 4 on Linux: a descendant that left the group with setsid is still ended;
//! - `devrun status --json` and `.devrun/state.json` name the real processes.
//!
//! Processes started here outside the harness (a second devrun, a foreign server, an unrelated
//! `sleep`) carry a tag of their own and are SIGKILLed by a [`Guard`] when the test ends, even
//! on a panic.
#![cfg(target_os = "linux")] // the harness observes processes through /proc

mod common;
use common::*;

use serde_json::{json, Value};
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// spawns_child.py: the backend leaves a child in its group that holds the listening socket
/// and ignores SIGTERM, so a SIGKILLed devrun leaves the port held.
const SPAWNS_CHILD: &str = r#"
command = ["$PYTHON", "spawns_child.py"]
port = $PORT

[watch]
debounce_ms = 50

[stop]
timeout_ms = 300
"#;

/// escapee.py: the backend starts a child that calls setsid (leaves the group), holds the
/// listening socket and ignores SIGTERM.
const ESCAPEE: &str = r#"
command = ["$PYTHON", "escapee.py"]
port = $PORT

[watch]
debounce_ms = 50

[stop]
timeout_ms = 300
"#;

// ---- helpers ----

/// A process started by a test outside the harness. Dropping it SIGKILLs it and every process
/// carrying its tag (a devrun's backend inherits it), so nothing leaks even on a panic.
struct Guard {
    what: String,
    child: Child,
    tag: String,
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
}

impl Guard {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn signal(&self, signal: i32) {
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0, "kill failed");
    }

    /// Waits for the exit code; panics on a timeout or a signal.
    fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let what = &self.what;
        let status = poll(timeout, || self.child.try_wait().unwrap())
            .unwrap_or_else(|| panic!("{what} did not exit within {timeout:?}"));
        status
            .code()
            .unwrap_or_else(|| panic!("{what} was ended by a signal: {status}"))
    }

    fn stdout(&self) -> String {
        self.stdout
            .as_ref()
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }

    fn stderr(&self) -> String {
        self.stderr
            .as_ref()
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_tagged_with(&self.tag);
        if std::thread::panicking() && self.stderr.is_some() {
            eprintln!("---- {} stderr ----\n{}", self.what, self.stderr());
        }
    }
}

fn unique_tag(what: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-single-instance-{}-{what}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

fn proc_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// SIGKILLs every live process whose environment holds `DEVRUN_TEST_TAG=tag` (start time
/// checked first), until none is left.
fn kill_tagged_with(tag: &str) {
    let needle = format!("DEVRUN_TEST_TAG={tag}");
    for _ in 0..100 {
        let found: Vec<(i32, u64)> = proc_pids()
            .into_iter()
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

/// The harness's temp folder (the project's parent): record file and logs live there.
fn tmp_dir(p: &Project) -> &Path {
    p.root.parent().unwrap()
}

/// The record file the harness gives its devrun (`<tmp>/record.jsonl`), so the backends of a
/// devrun started here record their starts in the same file.
fn record_path(p: &Project) -> PathBuf {
    tmp_dir(p).join("record.jsonl")
}

/// Starts another devrun in the project's folder, outside the harness, with its own tag.
fn spawn_devrun(p: &Project, args: &[&str], name: &str) -> Guard {
    let stdout = tmp_dir(p).join(format!("{name}.stdout.log"));
    let stderr = tmp_dir(p).join(format!("{name}.stderr.log"));
    let tag = unique_tag(name);
    let child = Command::new(env!("CARGO_BIN_EXE_devrun"))
        .args(args)
        .current_dir(&p.root)
        .env_remove("PORT")
        .env_remove("DEVRUN_GENERATION")
        .env("NO_COLOR", "1")
        .env("DEVRUN_TEST_TAG", &tag)
        .env("DEVRUN_TEST_RECORD", record_path(p))
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).unwrap())
        .stderr(File::create(&stderr).unwrap())
        .process_group(0)
        .spawn()
        .expect("cannot start the devrun binary");
    Guard {
        what: format!("devrun {}", args.join(" ")),
        child,
        tag,
        stdout: Some(stdout),
        stderr: Some(stderr),
    }
}

/// Runs a devrun command in the project to completion: (exit code, stdout, stderr).
fn run_devrun(p: &Project, args: &[&str], name: &str) -> (i32, String, String) {
    let mut devrun = spawn_devrun(p, args, name);
    let code = devrun.wait_exit(WAIT);
    (code, devrun.stdout(), devrun.stderr())
}

/// A Python `http.server` on the project's port: a listener devrun did not start.
/// Returns it once it listens, with its start time.
fn foreign_server(p: &Project) -> (Guard, u64) {
    let tag = unique_tag("foreign");
    let port = p.port.to_string();
    let child = Command::new(python())
        .args(["-m", "http.server", &port, "--bind", "127.0.0.1"])
        .current_dir(tmp_dir(p))
        .env("DEVRUN_TEST_TAG", &tag)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("cannot start python -m http.server");
    let guard = Guard {
        what: "the foreign http.server".into(),
        child,
        tag,
        stdout: None,
        stderr: None,
    };
    let pid = guard.pid();
    p.wait_until("the foreign server to listen", WAIT, || {
        p.listeners() == vec![pid]
    });
    let start = starttime(pid).expect("the foreign server is gone");
    (guard, start)
}

/// A `sleep` that leads its own process group (as a backend, a shell job or a service does):
/// a process that could get the pid of a dead backend.
fn unrelated_sleep() -> (Guard, u64) {
    let tag = unique_tag("sleep");
    let child = Command::new("sleep")
        .arg("600")
        .env("DEVRUN_TEST_TAG", &tag)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("cannot start sleep");
    let guard = Guard {
        what: "the unrelated sleep".into(),
        child,
        tag,
        stdout: None,
        stderr: None,
    };
    let start = starttime(guard.pid()).expect("sleep is gone");
    (guard, start)
}

/// The parent pid of a process (field 4 of /proc/PID/stat).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every decimal number in a text, so a message can be checked for a pid or a port without
/// depending on its wording.
fn numbers_in(text: &str) -> Vec<i64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn state_file(p: &Project) -> PathBuf {
    p.root.join(".devrun").join("state.json")
}

fn read_state(p: &Project) -> Value {
    let text = fs::read_to_string(state_file(p)).expect("no .devrun/state.json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad state.json ({e}):\n{text}"))
}

/// Writes `.devrun/state.json` as a devrun that died would have left it.
fn write_state(p: &Project, state: &Value) {
    fs::create_dir_all(p.root.join(".devrun")).unwrap();
    fs::write(state_file(p), serde_json::to_string_pretty(state).unwrap()).unwrap();
}

fn sorted(mut pids: Vec<i32>) -> Vec<i32> {
    pids.sort();
    pids
}

/// Starts devrun, then SIGKILLs it: returns the project, the backend leader and its child
/// (which holds the port and survives the leader).
fn killed_devrun() -> (Project, Served, Record) {
    let mut p = Project::new("testapp").config(SPAWNS_CHILD).start();
    let backend = p.wait_for_version("v1", WAIT);
    let child = p.wait_for_child_of(backend.pid, WAIT);
    assert_eq!(p.listeners(), sorted(vec![backend.pid, child.pid]));
    p.kill_devrun();
    (p, backend, child)
}

// ---- invariant 5: what a killed devrun left ----

#[test]
fn the_next_devrun_ends_the_leftovers_of_a_killed_devrun_and_serves_new_saves() {
    let (mut p, old, old_child) = killed_devrun();

    p.restart_devrun();
    let first = poll(WAIT, || {
        p.served()
            .filter(|s| s.pid != old.pid && s.pid != old_child.pid)
    })
    .expect("the restarted devrun's backend never answered GET /");

    assert!(!old.alive(), "the killed devrun's backend survived");
    assert!(
        !old_child.alive(),
        "the killed devrun's backend child (pid {}) survived the next devrun",
        old_child.pid
    );
    assert_eq!(parent_of(first.pid), Some(p.pid()));
    let first_child = p.wait_for_child_of(first.pid, WAIT);
    assert_eq!(p.listeners(), sorted(vec![first.pid, first_child.pid]));

    p.write_atomic("version.py", &version_py("v2"));
    let second = p.wait_for_version("v2", WAIT);

    assert_ne!(second.pid, first.pid);
    assert!(!first.alive());
    assert!(!first_child.alive());
    let second_child = p.wait_for_child_of(second.pid, WAIT);
    assert_eq!(p.listeners(), sorted(vec![second.pid, second_child.pid]));
    p.assert_every_start_was_alone();
    assert!(p.running());
}

#[test]
fn devrun_stop_ends_the_leftovers_of_a_killed_devrun() {
    let (p, old, old_child) = killed_devrun();

    let (code, stderr) = p.run_another(["stop"], WAIT);

    assert_eq!(code, 0, "devrun stop said:\n{stderr}");
    assert!(!old.alive(), "the killed devrun's backend survived");
    assert!(
        !old_child.alive(),
        "devrun stop left the backend's child (pid {}) running",
        old_child.pid
    );
    assert_eq!(p.tagged_processes(), Vec::<i32>::new());
    assert!(p.port_free());
}

#[test]
fn a_reused_backend_pid_is_never_touched() {
    let mut p = Project::testapp("normal.py").start();
    p.wait_for_version("v1", WAIT);
    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0);

    // A process that now has the pid a dead devrun recorded for its backend: same pid, but a
    // later start time than the record (a reused pid always started after the recorded one).
    let (sleeper, start) = unrelated_sleep();
    let pid = sleeper.pid();
    assert!(start > 1);
    let recorded_start = start - 1;
    let dead_devrun = {
        let mut child = Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let state = json!({
        "devrun_pid": dead_devrun,
        "devrun_start": 1,
        "port": p.port,
        "host": "127.0.0.1",
        "started_at": now - 60,
        "backend": {
            "pid": pid,
            "pgid": pid,
            "start": recorded_start,
            "generation": 3,
            "command": [python(), "normal.py"],
            "started_at": now - 60,
        },
    });

    write_state(&p, &state);
    let (code, stderr) = p.run_another(["stop"], WAIT);
    assert_eq!(code, 0, "devrun stop said:\n{stderr}");
    assert!(
        alive(pid, start),
        "devrun stop ended pid {pid} (start time {start}), although the record names start \
         time {recorded_start}: a reused pid was touched. devrun stop said:\n{stderr}"
    );

    write_state(&p, &state);
    p.restart_devrun();
    let served = p.wait_for_version("v1", WAIT);
    assert!(
        alive(pid, start),
        "starting devrun ended pid {pid} (start time {start}), although the record names \
         start time {recorded_start}: a reused pid was touched"
    );
    assert_eq!(p.listeners(), vec![served.pid]);
    drop(sleeper);
}

// ---- invariant 7: one devrun per project ----

#[test]
fn a_second_devrun_exits_4_naming_the_first_which_keeps_serving() {
    let mut p = Project::testapp("normal.py").start();
    let served = p.wait_for_version("v1", WAIT);

    let (code, stderr) = p.run_another([], WAIT);

    assert_eq!(code, 4, "the second devrun said:\n{stderr}");
    let numbers = numbers_in(&stderr);
    assert!(
        numbers.contains(&i64::from(p.pid())),
        "the second devrun did not name the first one's pid {}:\n{stderr}",
        p.pid()
    );
    assert!(
        numbers.contains(&i64::from(p.port)),
        "the second devrun did not name the port {}:\n{stderr}",
        p.port
    );
    assert!(p.running(), "the first devrun exited");
    let again = p
        .served()
        .expect("the first devrun's backend stopped answering");
    assert_eq!(again.pid, served.pid);
    assert!(served.alive());
    assert_eq!(p.listeners(), vec![served.pid]);
    assert_eq!(p.starts().len(), 1, "the second devrun started a backend");
}

#[test]
fn replace_stops_the_running_devrun_and_takes_over() {
    let mut p = Project::testapp("normal.py").start();
    let first = p.wait_for_version("v1", WAIT);

    let mut second = spawn_devrun(&p, &["--replace"], "replace");

    assert_eq!(p.wait_exit(WAIT), 0, "the replaced devrun's exit code");
    assert!(!first.alive(), "the replaced devrun's backend survived");
    let next = poll(WAIT, || p.served().filter(|s| s.pid != first.pid))
        .expect("the replacing devrun's backend never answered GET /");
    assert!(second.running(), "the replacing devrun exited");
    assert_eq!(parent_of(next.pid), Some(second.pid()));
    assert_eq!(p.listeners(), vec![next.pid]);
    assert_eq!(read_state(&p)["devrun_pid"], json!(second.pid()));
    p.assert_every_start_was_alone();

    second.signal(SIGINT);
    assert_eq!(second.wait_exit(WAIT), 0);
    assert!(!next.alive());
    assert!(p.port_free());
}

// ---- invariant 6: a port held by a process devrun did not start ----

#[test]
fn a_foreign_port_holder_is_named_and_left_alone_unless_kill_port_holder() {
    let p = Project::testapp("normal.py");
    let (foreign, foreign_start) = foreign_server(&p);
    let foreign_pid = foreign.pid();
    let mut p = p.start();

    assert_eq!(
        p.wait_exit(WAIT),
        3,
        "devrun's exit code with a foreign port holder"
    );
    let stderr = p.stderr();
    assert!(
        numbers_in(&stderr).contains(&i64::from(foreign_pid)),
        "devrun did not name the holder's pid {foreign_pid}:\n{stderr}"
    );
    assert!(
        stderr.contains("http.server"),
        "devrun did not show the holder's command line:\n{stderr}"
    );
    assert!(
        alive(foreign_pid, foreign_start),
        "devrun ended a process it did not start"
    );
    assert_eq!(p.listeners(), vec![foreign_pid]);
    assert!(p.starts().is_empty(), "devrun started a backend anyway");

    let mut devrun = spawn_devrun(
        &p,
        &["--kill-port-holder", "--events", "json"],
        "kill-port-holder",
    );
    let served = p.wait_for_version("v1", WAIT);

    assert!(
        !alive(foreign_pid, foreign_start),
        "--kill-port-holder left the holder running"
    );
    assert_eq!(p.listeners(), vec![served.pid]);
    assert_eq!(parent_of(served.pid), Some(devrun.pid()));
    // Named before anything was started.
    let events: Vec<Value> = devrun
        .stderr()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let named = events
        .iter()
        .position(|e| numbers_in(&e.to_string()).contains(&i64::from(foreign_pid)))
        .unwrap_or_else(|| panic!("no event names pid {foreign_pid}: {events:#?}"));
    let started = events
        .iter()
        .position(|e| e["event"] == "started")
        .unwrap_or_else(|| panic!("no started event: {events:#?}"));
    assert!(
        named < started,
        "the holder was not named before the backend started: {events:#?}"
    );

    devrun.signal(SIGINT);
    assert_eq!(devrun.wait_exit(WAIT), 0);
    assert!(p.port_free());
    drop(foreign);
}

// ---- invariant 4 on Linux: descendants that leave the group ----

#[test]
fn a_grandchild_that_called_setsid_is_ended_on_restart_and_on_exit() {
    let mut p = Project::new("testapp").config(ESCAPEE).start();
    let gen1 = p.wait_for_version("v1", WAIT);
    let escapee1 = p.wait_for_child_of(gen1.pid, WAIT);
    // The fixture really escapes: its own group and session, away from the backend's group.
    assert_eq!(
        pgid(escapee1.pid),
        escapee1.pid,
        "the escapee did not setsid"
    );
    assert_ne!(pgid(escapee1.pid), pgid(gen1.pid));
    assert_eq!(p.listeners(), sorted(vec![gen1.pid, escapee1.pid]));

    p.write_atomic("version.py", &version_py("v2"));
    let gen2 = p.wait_for_version("v2", WAIT);

    assert!(!gen1.alive());
    assert!(
        !escapee1.alive(),
        "generation 1's escapee (pid {}) survived the restart",
        escapee1.pid
    );
    let escapee2 = p.wait_for_child_of(gen2.pid, WAIT);
    assert_eq!(p.listeners(), sorted(vec![gen2.pid, escapee2.pid]));
    p.assert_every_start_was_alone();

    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0);
    assert!(!gen2.alive());
    assert!(
        !escapee2.alive(),
        "generation 2's escapee (pid {}) outlived devrun",
        escapee2.pid
    );
    assert_eq!(p.tagged_processes(), Vec::<i32>::new());
    assert!(p.port_free());
}

// ---- status and the state file ----

#[test]
fn status_json_names_the_real_backend_and_exits_1_when_nothing_listens() {
    let mut p = Project::testapp("normal.py").start();
    let served = p.wait_for_version("v1", WAIT);
    let recorded = p.starts();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].pid, served.pid);

    let (code, stdout, stderr) = run_devrun(&p, &["status", "--json"], "status");

    let status: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("status --json printed no JSON ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(code, 0, "status said:\n{stdout}\n{stderr}");
    assert_eq!(status["verdict"], "ok");
    assert_eq!(status["devrun_running"], true);
    assert_eq!(status["devrun_pid"], json!(p.pid()));
    assert_eq!(status["port"], json!(p.port));
    assert_eq!(status["host"], "127.0.0.1");
    let backend = &status["backend"];
    assert_eq!(backend["pid"], json!(served.pid));
    assert_eq!(backend["pid"], json!(recorded[0].pid));
    assert_eq!(backend["generation"], 1);
    assert_eq!(backend["alive"], true);
    let tree: Vec<i64> = backend["tree"]
        .as_array()
        .expect("backend.tree is not a list")
        .iter()
        .map(|t| t["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(tree, vec![i64::from(served.pid)]);
    let listeners = status["listeners"].as_array().expect("no listeners list");
    assert_eq!(listeners.len(), 1, "listeners: {listeners:#?}");
    assert_eq!(listeners[0]["pid"], json!(served.pid));
    assert_eq!(listeners[0]["ours"], true);

    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0);
    let (code, stdout, stderr) = run_devrun(&p, &["status", "--json"], "status-stopped");

    let status: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("status --json printed no JSON ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(code, 1, "status said:\n{stdout}\n{stderr}");
    assert_eq!(status["verdict"], "none");
    assert_eq!(status["devrun_running"], false);
    assert_eq!(status["listeners"], json!([]));
}

#[test]
fn the_state_file_names_devrun_and_each_generation() {
    let p = Project::testapp("normal.py").start();
    let gen1 = p.wait_for_version("v1", WAIT);

    let state = read_state(&p);
    assert_eq!(state["devrun_pid"], json!(p.pid()));
    assert_eq!(state["devrun_start"], json!(starttime(p.pid()).unwrap()));
    assert_eq!(state["port"], json!(p.port));
    assert_eq!(state["host"], "127.0.0.1");
    let backend = &state["backend"];
    assert_eq!(backend["pid"], json!(gen1.pid));
    assert_eq!(backend["pgid"], json!(gen1.pid));
    assert_eq!(backend["start"], json!(gen1.starttime.unwrap()));
    assert_eq!(backend["generation"], 1);

    p.write_atomic("version.py", &version_py("v2"));
    let gen2 = p.wait_for_version("v2", WAIT);

    let state = read_state(&p);
    assert_eq!(state["devrun_pid"], json!(p.pid()));
    let backend = &state["backend"];
    assert_eq!(backend["pid"], json!(gen2.pid));
    assert_eq!(backend["pgid"], json!(gen2.pid));
    assert_eq!(backend["start"], json!(gen2.starttime.unwrap()));
    assert_eq!(backend["generation"], 2);
}
