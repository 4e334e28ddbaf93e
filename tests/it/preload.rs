//! Issue 12: `[server] preload` forks each generation from a preloaded interpreter that never
//! holds project code. Real uvicorn on the FastAPI fixture (DEVRUN_TEST_PYTHON).

use crate::harness::*;
use crate::typed::{stdin_of, Pty};
use serde_json::Value;
use std::fs;
use std::path::PathBuf;

pub(crate) fn preloading(modules: &str) -> Project {
    Project::fastapi_app(&format!(
        "{UVICORN_CONFIG}\n[server]\npreload = {modules}\n"
    ))
}

/// A third-party module outside the project, on PYTHONPATH: `lib/<name>.py`.
pub(crate) fn library(p: Project, name: &str, source: &str) -> (Project, PathBuf) {
    let lib = p.tmp_dir().join("lib");
    fs::create_dir_all(&lib).unwrap();
    let file = lib.join(format!("{name}.py"));
    fs::write(&file, source).unwrap();
    let p = p.env("PYTHONPATH", lib.to_str().unwrap());
    (p, file)
}

pub(crate) fn parent_of(pid: i32) -> i32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn ten_edits_are_each_served_by_a_new_fork_with_the_new_code() {
    let p = preloading("\"auto\"").start();
    let first = p.wait_for_version("v1", WAIT);
    let preloader = parent_of(first.pid);
    assert_ne!(
        preloader,
        p.pid(),
        "generation 1 was not forked by a preloader"
    );
    let mut pids = vec![first.pid];
    for n in 2..=11 {
        let version = format!("v{n}");
        p.write_atomic("app/version.py", &version_py(&version));
        let served = p.wait_for_version(&version, WAIT);
        assert!(
            !pids.contains(&served.pid),
            "{version} came from an old pid"
        );
        assert_eq!(parent_of(served.pid), preloader, "{version} was not forked");
        assert_eq!(p.listeners(), vec![served.pid]);
        pids.push(served.pid);
    }
    // The preloader never imported the project: every fork imported the edited file anew
    // (else the answers above would be stale), and it said how many modules it holds.
    assert!(p.stderr().contains("preloaded"), "{}", p.stderr());
    assert!(!p.stderr().contains("preload refused"), "{}", p.stderr());
    p.assert_every_start_was_alone();
}

#[test]
fn a_library_that_imports_project_code_is_refused_and_named() {
    let (p, _) = library(preloading("[\"sneaky\"]"), "sneaky", "import app.version\n");
    let p = p.start();
    let served = p.wait_for_version("v1", WAIT);
    assert_eq!(parent_of(served.pid), p.pid(), "not a cold start");
    let stderr = p.stderr();
    assert!(stderr.contains("preload refused"), "{stderr}");
    assert!(stderr.contains("app.version"), "{stderr}");
    assert!(stderr.contains("imported by preloading sneaky"), "{stderr}");
}

#[test]
fn a_changed_preloaded_file_means_a_fresh_preloader() {
    let (p, lib) = library(preloading("[\"dep\"]"), "dep", "VALUE = \"a1\"\n");
    p.write_atomic("app/version.py", "import dep\nVERSION = dep.VALUE\n");
    let p = p.start();
    let first = p.wait_for_version("a1", WAIT);
    let old_preloader = parent_of(first.pid);
    fs::write(&lib, "VALUE = \"b2\"\n").unwrap();
    p.write_atomic(
        "app/version.py",
        "import dep\nVERSION = dep.VALUE  # touched\n",
    );
    let second = p.wait_for_version("b2", WAIT);
    assert_ne!(
        parent_of(second.pid),
        old_preloader,
        "the stale preloader forked it"
    );
    assert_ne!(
        parent_of(second.pid),
        p.pid(),
        "not forked from a fresh preloader"
    );
    assert!(
        p.stderr().contains("starting a fresh preloader"),
        "{}",
        p.stderr()
    );
}

#[test]
fn ctrl_c_leaves_no_preloader_and_no_child() {
    let mut p = preloading("\"auto\"").start();
    p.wait_for_version("v1", WAIT);
    p.signal(libc::SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    p.assert_nothing_left();
}

#[test]
fn kill_9_of_devrun_leaves_no_preloader_and_no_child() {
    let mut p = preloading("\"auto\"").start();
    p.wait_for_version("v1", WAIT);
    p.kill_devrun();
    p.wait_until("the preloader and its child to die", WAIT, || {
        p.tagged_processes().is_empty()
    });
    p.wait_until("the port to be free", WAIT, || p.port_free());
}

#[test]
fn once_under_preload_exits_0_and_leaves_nothing() {
    let mut p = preloading("\"auto\"").args(["--once"]).start();
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    assert!(p.stderr().contains("preloaded"), "{}", p.stderr());
    p.assert_nothing_left();
}

#[test]
fn a_crash_on_import_is_reported_as_in_a_cold_start_and_the_fix_is_served() {
    let p = preloading("\"auto\"").start();
    p.wait_for_version("v1", WAIT);
    p.write_atomic(
        "app/version.py",
        "raise RuntimeError('broken on purpose')\n",
    );
    p.wait_until("the crash to be reported", WAIT, || {
        p.stderr().contains("exited with code 1")
    });
    assert!(p.stderr().contains("broken on purpose"), "{}", p.stderr());
    p.write_atomic("app/version.py", &version_py("v3"));
    let served = p.wait_for_version("v3", WAIT);
    assert_ne!(parent_of(served.pid), p.pid(), "the fix was not forked");
}

/// A version module that also says what the generation's `os.environ` holds for the socket
/// (/proc/PID/environ of a fork shows the preloader's environment, not the child's).
fn version_with_listen_vars(version: &str) -> String {
    format!(
        "import os\nVERSION = {version:?} + ' ' + os.environ.get('LISTEN_FDS', '-') + ' ' + \
         os.environ.get('LISTEN_PID', '-')\n"
    )
}

/// What `ps` shows as a process's command (its /proc cmdline, words joined).
fn ps_args(pid: i32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Issue 12 (b): `socket = "inherit"` with preload. Each forked generation gets devrun's held
/// socket as fd 3 with LISTEN_FDS=1 and its own pid as LISTEN_PID, and serves through it; the
/// preloader never keeps a copy (only devrun and the generation hold the socket).
#[test]
fn inherit_and_preload_serve_through_the_held_socket_from_a_new_fork_each_time() {
    let config = format!("{}preload = \"auto\"\n", crate::inherit::INHERIT_CONFIG);
    let p = Project::fastapi_app(&config);
    p.write_atomic("app/version.py", &version_with_listen_vars("v1"));
    let p = p.start();
    let mut preloader = None;
    let mut pids = Vec::new();
    for n in 1..=4 {
        let version = format!("v{n}");
        if n > 1 {
            p.write_atomic("app/version.py", &version_with_listen_vars(&version));
        }
        let mut served = None;
        p.wait_until(&format!("{version} to be served"), WAIT, || {
            served = p
                .served()
                .filter(|s| s.version.starts_with(&format!("{version} ")));
            served.is_some()
        });
        let served = served.unwrap();
        assert!(!pids.contains(&served.pid), "{version} from an old pid");
        let parent = parent_of(served.pid);
        assert_ne!(parent, p.pid(), "{version} was not forked");
        assert_eq!(
            *preloader.get_or_insert(parent),
            parent,
            "another preloader"
        );
        // LISTEN_PID names the generation itself (systemd's convention).
        assert_eq!(served.version, format!("{version} 1 {}", served.pid));
        let mut listeners = p.listeners();
        listeners.sort_unstable();
        let mut expected = vec![p.pid(), served.pid];
        expected.sort_unstable();
        assert_eq!(listeners, expected, "the preloader kept the socket");
        pids.push(served.pid);
    }
    let stderr = p.stderr();
    assert!(!stderr.contains("preload refused"), "{stderr}");
    for start in p.starts() {
        assert!(
            start.prev_alive.is_empty(),
            "{start:?} started beside others"
        );
    }
}

/// Issue 12 (c): a forked generation's stderr is devrun's pipe, as in a cold start, so an
/// exception on import gets the crash summary naming it.
#[test]
fn a_forked_generation_that_raises_on_import_gets_a_crash_summary() {
    let p = preloading("\"auto\"").args(["--events", "json"]).start();
    p.wait_for_version("v1", WAIT);
    p.write_atomic(
        "app/version.py",
        "raise RuntimeError('broken on purpose')\n",
    );
    let events = || -> Vec<Value> {
        p.stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    };
    let mut exited = None;
    p.wait_until("an exited event", WAIT, || {
        exited = events().into_iter().find(|e| e["event"] == "exited");
        exited.is_some()
    });
    let exited = exited.unwrap_or_default();
    let summary = exited["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with("RuntimeError: broken on purpose"),
        "{exited}"
    );
    assert!(summary.contains("version.py:1"), "{exited}");
    let second = events()
        .into_iter()
        .find(|e| e["event"] == "started" && e["generation"] == 2)
        .expect("a started event for generation 2");
    assert!(
        second["preloaded"].as_u64() > Some(0),
        "not forked: {second}"
    );
}

/// Issue 12 (c): typed lines reach a forked generation's stdin (a pipe, as in a cold start).
#[test]
fn a_forked_generation_reads_typed_lines() {
    let mut pty = Pty::open();
    let project = pty.start(Project::testapp("debugs.py").args(["--preload"]));
    let start = &project.wait_for_starts(1, WAIT)[0];
    assert_ne!(parent_of(start.pid), project.pid(), "not forked");
    project.wait_until("the pdb prompt", WAIT, || {
        project.stdout().contains("(Pdb)")
    });
    assert!(
        stdin_of(start.pid).starts_with("pipe:"),
        "{}",
        stdin_of(start.pid)
    );
    pty.type_line("p answer * 1000");
    project.wait_until("pdb's answer", WAIT, || project.stdout().contains("42000"));
    pty.type_line("c");
    let served = project.wait_for_version("v1", WAIT);
    assert_eq!(served.pid, start.pid, "the same process went on to serve");
}

/// Issue 12 (d): `ps` shows a forked generation as the command it runs, not the preloader's
/// `python -c <runner>`.
#[test]
fn ps_shows_a_forked_generation_as_its_command() {
    let p = preloading("\"auto\"").start();
    let served = p.wait_for_version("v1", WAIT);
    let preloader = parent_of(served.pid);
    assert_ne!(preloader, p.pid(), "not forked");
    let shown = ps_args(served.pid);
    assert!(
        shown.contains("-m uvicorn app.main:app --host 127.0.0.1"),
        "{shown}"
    );
    assert!(!shown.contains("preloader"), "{shown}");
    assert!(
        ps_args(preloader).contains("preloader"),
        "{}",
        ps_args(preloader)
    );
}

/// A library that finds the preloader's socket to devrun (the one Unix socket it holds while
/// it imports): `SOCKET`, and a copy of it every fork inherits, `KEPT`. None in a cold start.
const SOCKET_FINDER: &str = r#"
import os, stat

def _socket():
    for name in os.listdir("/proc/self/fd"):
        try:
            if stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                return int(name)
        except OSError:
            pass
    return None

SOCKET = _socket()
KEPT = os.dup(SOCKET) if SOCKET is not None else None
"#;

/// A module the preloader was given that raises is skipped (its `skipped` reply is read, not
/// dropped): the rest is preloaded and every generation is forked.
#[test]
fn a_listed_module_that_raises_is_skipped_and_the_rest_preloaded() {
    let source = "raise RuntimeError('broken on purpose')\n";
    let (p, _) = library(preloading("[\"raises\", \"json\"]"), "raises", source);
    let p = p.start();
    let served = p.wait_for_version("v1", WAIT);
    assert_ne!(parent_of(served.pid), p.pid(), "not forked");
    let stderr = p.stderr();
    assert!(!stderr.contains("preload refused"), "{stderr}");
    assert!(stderr.contains("preloaded 1 module"), "{stderr}");
}

/// The protocol is typed: a line on the preloader's socket that is no reply refuses preload
/// for the run, with the line shown, and the backend starts cold.
#[test]
fn a_line_that_is_no_reply_refuses_preload_and_is_shown() {
    let source = format!("{SOCKET_FINDER}\nos.write(SOCKET, b'not a reply\\n')\n");
    let (p, _) = library(preloading("[\"chatty\"]"), "chatty", &source);
    let p = p.start();
    let served = p.wait_for_version("v1", WAIT);
    assert_eq!(parent_of(served.pid), p.pid(), "not a cold start");
    let stderr = p.stderr();
    assert!(
        stderr.contains("preload refused: the preloader sent a line devrun cannot read"),
        "{stderr}"
    );
    assert!(stderr.contains("not a reply"), "{stderr}");
}

/// Once serving, a line that is no reply (here written by a generation through a copy of the
/// socket a library kept) ends the preloader and its fork (an exit status may have been lost
/// with it); the next generation says why preload is off and starts cold.
#[test]
fn a_line_that_is_no_reply_after_ready_ends_the_preloader_and_preload() {
    let (p, _) = library(preloading("[\"keeper\"]"), "keeper", SOCKET_FINDER);
    let mut p = p.start();
    let first = p.wait_for_version("v1", WAIT);
    assert_ne!(parent_of(first.pid), p.pid(), "not forked");
    // Later than the preloader's `forked` for this generation, by far.
    let chatty = "import keeper, os, threading\n\
                  threading.Timer(2.0, os.write, (keeper.KEPT, b'not a reply\\n')).start()\n\
                  VERSION = 'v2'\n";
    p.write_atomic("app/version.py", chatty);
    let second = p.wait_for_version("v2", WAIT);
    assert_ne!(parent_of(second.pid), p.pid(), "v2 not forked");
    p.wait_until("generation 2 to die with the preloader", WAIT, || {
        p.stderr().contains("generation 2 exited with signal 9")
    });
    p.write_atomic("app/version.py", &version_py("v3"));
    let third = p.wait_for_version("v3", WAIT);
    assert_eq!(parent_of(third.pid), p.pid(), "v3 not a cold start");
    let stderr = p.stderr();
    assert!(
        stderr.contains("preload refused: the preloader sent a line devrun cannot read"),
        "{stderr}"
    );
    assert!(stderr.contains("not a reply"), "{stderr}");
    p.signal(libc::SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    p.assert_nothing_left();
}
