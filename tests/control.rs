//! The control channel (issues 13.2 and 14.3): `devrun stop`, `devrun restart` and `--replace`
//! ask the running devrun through `.devrun/state.json`'s 127.0.0.1 port and token, and it acts
//! in the same place it handles Ctrl-C, with the full confirmed teardown.
#![cfg(target_os = "linux")] // the harness observes processes through /proc

mod common;
use common::*;

use serde_json::Value;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// records_signals.py: records the stop signal it gets, so a graceful stop is told from a kill.
const RECORDS_SIGNALS: &str = r#"
command = ["$PYTHON", "records_signals.py"]
port = $PORT

[watch]
debounce_ms = 50
"#;

/// The signals recorded by backend `pid` (records_signals.py).
fn signals_of(p: &Project, pid: i32) -> Vec<String> {
    let record = p.root.parent().unwrap().join("record.jsonl");
    fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|r| r["event"] == "signal" && r["pid"] == pid)
        .map(|r| r["signal"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn state_path(p: &Project) -> std::path::PathBuf {
    p.root.join(".devrun/state.json")
}

fn read_state(p: &Project) -> Value {
    let text = fs::read_to_string(state_path(p)).expect("no .devrun/state.json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad state.json ({e}):\n{text}"))
}

#[test]
fn devrun_stop_asks_through_the_channel_and_the_backend_stops_gracefully() {
    let mut p = Project::new("testapp").config(RECORDS_SIGNALS).start();
    let served = p.wait_for_version("v1", WAIT);
    let state = read_state(&p);
    let control_port = state["control"]["port"].as_u64().expect("no control port") as u16;
    assert_eq!(
        state["control"]["token"].as_str().map(str::len),
        Some(32),
        "{state:#}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(state_path(&p)).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "state.json holds the token: owner only"
    );
    assert_eq!(
        listeners(control_port),
        vec![p.pid()],
        "devrun holds the channel"
    );

    let (code, stop_stderr) = p.run_another(["stop"], WAIT);

    assert_eq!(code, 0, "devrun stop said:\n{stop_stderr}");
    assert_eq!(p.wait_exit(WAIT), 0);
    assert_eq!(signals_of(&p, served.pid), vec!["SIGTERM".to_string()]);
    assert!(!served.alive());
    assert!(
        p.stderr().contains("stop requested by `devrun stop`"),
        "devrun did not take the request from the channel:\n{}",
        p.stderr()
    );
    for unwanted in ["orphan", "left running", "cannot reach", "SIGTERM instead"] {
        assert!(
            !stop_stderr.contains(unwanted),
            "devrun stop said {unwanted:?}:\n{stop_stderr}"
        );
    }
    assert_eq!(p.tagged_processes(), Vec::<i32>::new());
    assert!(p.port_free());
    assert!(listeners(control_port).is_empty());
}

#[test]
fn devrun_stop_falls_back_to_sigterm_when_the_channel_cannot_be_reached() {
    let mut p = Project::new("testapp").config(RECORDS_SIGNALS).start();
    let served = p.wait_for_version("v1", WAIT);
    // A channel that answers nowhere: a port nothing listens on.
    let mut state = read_state(&p);
    state["control"]["port"] = free_port().into();
    fs::write(state_path(&p), serde_json::to_string(&state).unwrap()).unwrap();

    let (code, stop_stderr) = p.run_another(["stop"], WAIT);

    assert_eq!(code, 0, "devrun stop said:\n{stop_stderr}");
    assert!(
        stop_stderr.contains("cannot reach"),
        "no warning about the fallback:\n{stop_stderr}"
    );
    assert_eq!(p.wait_exit(WAIT), 0);
    assert!(p.stderr().contains("SIGTERM received"), "{}", p.stderr());
    assert_eq!(signals_of(&p, served.pid), vec!["SIGTERM".to_string()]);
    assert_eq!(p.tagged_processes(), Vec::<i32>::new());
    assert!(p.port_free());
}

#[test]
fn a_wrong_token_is_refused_and_devrun_keeps_running() {
    let mut p = Project::testapp("normal.py").start();
    let served = p.wait_for_version("v1", WAIT);
    let mut state = read_state(&p);
    state["control"]["token"] = "0".repeat(32).into();
    fs::write(state_path(&p), serde_json::to_string(&state).unwrap()).unwrap();

    let (code, stderr) = p.run_another(["restart"], WAIT);
    assert_eq!(code, 1, "devrun restart said:\n{stderr}");
    assert!(stderr.contains("wrong token"), "{stderr}");
    let (code, stderr) = p.run_another(["stop"], WAIT);
    assert_ne!(code, 0, "devrun stop said:\n{stderr}");

    assert!(p.running());
    assert!(served.alive());
    assert_eq!(p.served().map(|s| s.pid), Some(served.pid));
    assert_eq!(p.starts().len(), 1);
}

#[test]
fn devrun_restart_starts_a_new_generation_after_a_confirmed_teardown() {
    let mut p = Project::new("testapp").config(RECORDS_SIGNALS).start();
    let gen1 = p.wait_for_version("v1", WAIT);
    assert_eq!(gen1.generation, Some(1));

    let (code, stderr) = p.run_another(["restart"], WAIT);

    assert_eq!(code, 0, "devrun restart said:\n{stderr}");
    let gen2 = poll(WAIT, || p.served().filter(|s| s.generation == Some(2)))
        .expect("generation 2 never answered GET /");
    assert_ne!(gen2.pid, gen1.pid);
    assert!(!gen1.alive(), "generation 1 survived the restart");
    assert_eq!(signals_of(&p, gen1.pid), vec!["SIGTERM".to_string()]);
    assert_eq!(p.listeners(), vec![gen2.pid]);
    // Generation 2 started alone, on a port confirmed free.
    p.assert_every_start_was_alone();
    assert!(p.running());
    assert!(p.stderr().contains("restart requested by `devrun restart`"));

    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0);
    assert!(p.port_free());
}

#[test]
fn devrun_restart_restarts_a_crashed_backend() {
    let mut p = Project::testapp("crashes_first.py").start();
    p.wait_until("generation 1 to crash and devrun to wait", WAIT, || {
        p.stderr().contains("waiting for changes")
    });
    assert_eq!(p.starts().len(), 1);
    assert!(p.get("/").is_none());

    let (code, stderr) = p.run_another(["restart"], WAIT);

    assert_eq!(code, 0, "devrun restart said:\n{stderr}");
    let gen2 = poll(WAIT, || p.served().filter(|s| s.generation == Some(2)))
        .expect("generation 2 never answered GET /");
    assert_eq!(p.listeners(), vec![gen2.pid]);
    p.assert_every_start_was_alone();
    assert!(p.running());
}

#[test]
fn devrun_restart_exits_1_when_no_devrun_runs() {
    let p = Project::testapp("normal.py");
    // No devrun was ever started here.
    let (code, stderr) = p.run_another(["restart"], WAIT);

    assert_eq!(code, 1, "devrun restart said:\n{stderr}");
    assert!(stderr.contains("no devrun runs this project"), "{stderr}");
}

/// A devrun started here outside the harness. Dropping it SIGKILLs it and every process
/// carrying its tag (its backends inherit it), even on a panic.
struct Guard {
    child: Child,
    tag: String,
    stderr: PathBuf,
}

impl Guard {
    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let needle = format!("DEVRUN_TEST_TAG={}", self.tag);
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
                break;
            }
            for (pid, start) in found {
                if alive(pid, start) {
                    unsafe { libc::kill(pid, SIGKILL) };
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if std::thread::panicking() {
            eprintln!("---- second devrun stderr ----\n{}", self.stderr());
        }
    }
}

#[test]
fn replace_asks_the_running_devrun_through_the_channel() {
    let mut p = Project::new("testapp").config(RECORDS_SIGNALS).start();
    let first = p.wait_for_version("v1", WAIT);

    let tag = format!("{}-control-replace", std::process::id());
    let stderr = p.root.parent().unwrap().join("replace.stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_devrun"))
        .arg("--replace")
        .current_dir(&p.root)
        .env_remove("PORT")
        .env("NO_COLOR", "1")
        .env("DEVRUN_TEST_TAG", &tag)
        .env(
            "DEVRUN_TEST_RECORD",
            p.root.parent().unwrap().join("record.jsonl"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let second = Guard { child, tag, stderr };

    assert_eq!(p.wait_exit(WAIT), 0, "the replaced devrun's exit code");
    assert!(
        p.stderr()
            .contains("replaced by another devrun (--replace)"),
        "{}",
        p.stderr()
    );
    assert_eq!(signals_of(&p, first.pid), vec!["SIGTERM".to_string()]);
    let next = poll(WAIT, || p.served().filter(|s| s.pid != first.pid))
        .expect("the replacing devrun's backend never answered GET /");
    assert_eq!(p.listeners(), vec![next.pid]);
    assert_eq!(read_state(&p)["devrun_pid"], second.child.id());
    assert!(
        !second.stderr().contains("cannot reach"),
        "{}",
        second.stderr()
    );
}
