//! The control channel (issues 13.2 and 14.3): `devrun stop`, `devrun restart` and `--replace`
//! ask the running devrun through `.devrun/state.json`'s 127.0.0.1 port and token, and it acts
//! in the same place it handles Ctrl-C, with the full confirmed teardown. (`--replace` through
//! the channel is in `single_instance.rs`.)

use crate::harness::*;

use std::fs;
use std::path::Path;
use std::process::Command;

#[test]
fn devrun_stop_asks_through_the_channel_and_the_backend_stops_gracefully() {
    let mut p = Project::testapp("records_signals.py").start();
    let served = p.wait_for_version("v1", WAIT);
    let state = p.read_state();
    let socket = std::path::PathBuf::from(
        state["control"]["socket"]
            .as_str()
            .expect("no control socket"),
    );
    assert!(state["control"]["port"].is_null(), "{state:#}");
    assert_eq!(
        state["control"]["token"].as_str().map(str::len),
        Some(32),
        "{state:#}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(p.state_path()).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "state.json holds the token: owner only"
    );
    // The channel is a socket in .devrun/ only its owner can enter, itself owner-only.
    use std::os::unix::fs::FileTypeExt;
    let meta = fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket(), "{socket:?}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir = fs::metadata(socket.parent().unwrap()).unwrap();
    assert_eq!(
        dir.permissions().mode() & 0o777,
        0o700,
        ".devrun/ is owner-only"
    );

    let (code, stop_stderr) = p.run_another(["stop"], WAIT);

    assert_eq!(code, 0, "devrun stop said:\n{stop_stderr}");
    assert_eq!(p.wait_exit(WAIT), 0);
    assert_eq!(p.signals_of(served.pid), vec!["SIGTERM".to_string()]);
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
    p.assert_nothing_left();
    assert!(!socket.exists(), "the socket outlived devrun");
}

#[test]
fn devrun_stop_falls_back_to_sigterm_when_the_channel_cannot_be_reached() {
    let mut p = Project::testapp("records_signals.py").start();
    let served = p.wait_for_version("v1", WAIT);
    // A channel that answers nowhere: a socket path nothing listens on.
    let mut state = p.settled_state();
    state["control"]["socket"] = p.root.join(".devrun/nobody.sock").to_str().unwrap().into();
    fs::write(p.state_path(), serde_json::to_string(&state).unwrap()).unwrap();

    let (code, stop_stderr) = p.run_another(["stop"], WAIT);

    assert_eq!(code, 0, "devrun stop said:\n{stop_stderr}");
    assert!(
        stop_stderr.contains("cannot reach"),
        "no warning about the fallback:\n{stop_stderr}"
    );
    assert_eq!(p.wait_exit(WAIT), 0);
    assert!(p.stderr().contains("SIGTERM received"), "{}", p.stderr());
    assert_eq!(p.signals_of(served.pid), vec!["SIGTERM".to_string()]);
    p.assert_nothing_left();
}

#[test]
fn a_wrong_token_is_refused_and_devrun_keeps_running() {
    let mut p = Project::testapp("normal.py").start();
    let served = p.wait_for_version("v1", WAIT);
    let mut state = p.settled_state();
    state["control"]["token"] = "0".repeat(32).into();
    fs::write(p.state_path(), serde_json::to_string(&state).unwrap()).unwrap();

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
    let mut p = Project::testapp("records_signals.py").start();
    let gen1 = p.wait_for_version("v1", WAIT);
    assert_eq!(gen1.generation, Some(1));

    let (code, stderr) = p.run_another(["restart"], WAIT);

    assert_eq!(code, 0, "devrun restart said:\n{stderr}");
    let gen2 = poll(WAIT, || p.served().filter(|s| s.generation == Some(2)))
        .expect("generation 2 never answered GET /");
    assert_ne!(gen2.pid, gen1.pid);
    assert!(!gen1.alive(), "generation 1 survived the restart");
    assert_eq!(p.signals_of(gen1.pid), vec!["SIGTERM".to_string()]);
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

/// Issue 20.1: the channel is a Unix socket in a `.devrun/` only its owner may enter: another
/// local user cannot even connect (so cannot flood devrun's descriptors), and a flood of idle
/// connections from anyone who can is bounded: the owner's `devrun restart` still goes through
/// and a fresh generation serves.
#[test]
fn another_user_cannot_reach_the_channel_and_a_flood_does_not_block_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;
    let mut p = Project::testapp("normal.py").start();
    let gen1 = p.wait_for_version("v1", WAIT);
    let state = p.read_state();
    let socket = std::path::PathBuf::from(state["control"]["socket"].as_str().unwrap());

    // Another user: `nobody`, through setpriv (needs root). Everything above `.devrun/` is
    // opened to them, so only `.devrun/`'s own mode can refuse.
    let root = unsafe { libc::geteuid() } == 0;
    if root && Path::new("/usr/bin/setpriv").exists() {
        for dir in [p.tmp_dir(), p.root.as_path()] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let connect = format!(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\n\
             try:\n    s.connect({:?})\n    print('connected')\n\
             except OSError as e:\n    print('refused', e.errno)",
            socket.to_str().unwrap()
        );
        let out = Command::new("/usr/bin/setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .args(["/usr/bin/python3", "-c", &connect])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            said.trim(),
            "refused 13",
            "another user reached the channel: {said} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("skipped the other-user part: not root or no setpriv");
    }

    // A flood of idle connections without a token, held open.
    let flood: Vec<UnixStream> = (0..200)
        .filter_map(|_| UnixStream::connect(&socket).ok())
        .collect();
    assert!(!flood.is_empty(), "no connection reached the socket at all");
    let (code, stderr) = p.run_another(["restart"], WAIT);
    assert_eq!(code, 0, "devrun restart said:\n{stderr}");
    let gen2 = poll(WAIT, || p.served().filter(|s| s.generation == Some(2)))
        .expect("generation 2 never answered GET /");
    assert_ne!(gen2.pid, gen1.pid);
    assert!(!gen1.alive());
    assert_eq!(p.listeners(), vec![gen2.pid]);
    drop(flood);
    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0);
    p.assert_nothing_left();
}
