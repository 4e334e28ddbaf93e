//! Issue 12: `[server] preload` forks each generation from a preloaded interpreter that never
//! holds project code. Real uvicorn on the FastAPI fixture (DEVRUN_TEST_PYTHON).

use crate::harness::*;
use std::fs;
use std::path::PathBuf;

fn preloading(modules: &str) -> Project {
    Project::fastapi_app(&format!(
        "{UVICORN_CONFIG}\n[server]\npreload = {modules}\n"
    ))
}

/// A third-party module outside the project, on PYTHONPATH: `lib/<name>.py`.
fn library(p: Project, name: &str, source: &str) -> (Project, PathBuf) {
    let lib = p.tmp_dir().join("lib");
    fs::create_dir_all(&lib).unwrap();
    let file = lib.join(format!("{name}.py"));
    fs::write(&file, source).unwrap();
    let p = p.env("PYTHONPATH", lib.to_str().unwrap());
    (p, file)
}

fn parent_of(pid: i32) -> i32 {
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
fn a_library_that_starts_a_thread_is_refused_and_named() {
    let source = "import threading, time\n\
                  threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n";
    let (p, _) = library(preloading("[\"threaded\"]"), "threaded", source);
    let p = p.start();
    let served = p.wait_for_version("v1", WAIT);
    assert_eq!(parent_of(served.pid), p.pid(), "not a cold start");
    let stderr = p.stderr();
    assert!(stderr.contains("preload refused"), "{stderr}");
    assert!(
        stderr.contains("preloading threaded started a thread"),
        "{stderr}"
    );
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
