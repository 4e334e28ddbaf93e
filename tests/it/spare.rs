//! Issue 19 (3): a warm spare interpreter (`[server] preload_method = "spare"`, and where a
//! fork is refused for a thread): a fresh interpreter that imported the third-party modules
//! waits, and becomes the next generation when told (it imports project code only then); a
//! new spare waits behind it. Real uvicorn on the FastAPI fixture (DEVRUN_TEST_PYTHON).

use crate::harness::*;
use crate::preload::library;
use std::fs;

fn spare_config(modules: &str) -> String {
    format!("{UVICORN_CONFIG}\n[server]\npreload = {modules}\npreload_method = \"spare\"\n")
}

/// What `ps` shows as a process's command (its /proc cmdline, words joined).
fn cmdline(pid: i32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat[stat.rfind(')').unwrap() + 2..].starts_with('Z'))
        .unwrap_or(false)
}

/// The waiting spare: devrun's child running the embedded runner (a generation shows its
/// command instead), once there is exactly one.
fn waiting_spare(p: &Project) -> i32 {
    let devrun = p.pid();
    let mut found = Vec::new();
    p.wait_until("a waiting spare interpreter", WAIT, || {
        found = fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| parent_of(pid) == Some(devrun) && alive(pid))
            .filter(|&pid| cmdline(pid).contains("devrun's preloader"))
            .collect();
        found.len() == 1
    });
    found[0]
}

#[test]
fn a_spare_becomes_each_generation_with_fresh_code() {
    let p = Project::fastapi_app(&spare_config("\"auto\"")).start();
    let first = p.wait_for_version("v1", WAIT);
    assert_eq!(parent_of(first.pid), Some(p.pid()), "not devrun's child");
    let mut previous = first;
    for n in 2..=5 {
        let spare = waiting_spare(&p);
        assert_ne!(spare, previous.pid);
        let version = format!("v{n}");
        p.write_atomic("app/version.py", &version_py(&version));
        let served = p.wait_for_version(&version, WAIT);
        // The spare itself went on to serve: no fork, no cold start.
        assert_eq!(served.pid, spare, "{version} was not served by the spare");
        assert!(!alive(previous.pid), "the previous generation survived");
        assert_eq!(p.listeners(), vec![served.pid], "one listener");
        previous = served;
    }
    let stderr = p.stderr();
    assert!(stderr.contains("modules): "), "{stderr}");
    assert!(
        stderr.lines().filter(|l| l.contains("(spare)")).count() >= 5,
        "{stderr}"
    );
    assert!(!stderr.contains("preload refused"), "{stderr}");
    p.assert_every_start_was_alone();
}

#[test]
fn a_spare_whose_dependency_changed_is_discarded() {
    let marks = tempfile::NamedTempFile::new().unwrap();
    let source = "import os\n\
                  with open(os.environ['DEP_MARKS'], 'a') as f:\n    f.write('x\\n')\n\
                  VALUE = 'a1'\n";
    let p = Project::fastapi_app(&spare_config("[\"dep\"]"))
        .env("DEP_MARKS", marks.path().to_str().unwrap());
    let (p, lib) = library(p, "dep", source);
    p.write_atomic("app/version.py", "import dep\nVERSION = dep.VALUE\n");
    let p = p.start();
    p.wait_for_version("a1", WAIT);
    // The spare behind generation 1 imported dep (the second import of it) before it changes.
    p.wait_until("the spare to import dep", WAIT, || {
        fs::read_to_string(marks.path())
            .unwrap_or_default()
            .lines()
            .count()
            >= 2
    });
    let stale = waiting_spare(&p);
    fs::write(&lib, source.replace("a1", "b2")).unwrap();
    p.write_atomic(
        "app/version.py",
        "import dep\nVERSION = dep.VALUE  # touched\n",
    );
    let served = p.wait_for_version("b2", WAIT);
    assert_ne!(served.pid, stale, "the stale spare served");
    p.wait_until("the stale spare to be gone", WAIT, || !alive(stale));
    let stderr = p.stderr();
    assert!(
        stderr.contains("discarding the spare interpreter:") && stderr.contains("dep.py changed"),
        "{stderr}"
    );
}

#[test]
fn a_spare_with_another_environment_is_discarded() {
    let config = format!("env_file = \".env\"\n{}", spare_config("\"auto\""));
    let p = Project::fastapi_app(&config);
    fs::write(p.root.join(".env"), "APP_MODE=one\n").unwrap();
    p.write_atomic(
        "app/version.py",
        "import os\nVERSION = os.environ.get('APP_MODE', '-')\n",
    );
    let p = p.start();
    p.wait_for_version("one", WAIT);
    let old_spare = waiting_spare(&p);
    fs::write(p.root.join(".env"), "APP_MODE=two\n").unwrap();
    let served = p.wait_for_version("two", WAIT);
    assert_ne!(
        served.pid, old_spare,
        "the spare of the old environment served"
    );
    p.wait_until("the old spare to be gone", WAIT, || !alive(old_spare));
    let stderr = p.stderr();
    assert!(
        stderr.contains("discarding the spare interpreter: the backend's environment changed"),
        "{stderr}"
    );
    // The spare behind it has the new environment: the next edit is served by it.
    let spare = waiting_spare(&p);
    p.write_atomic(
        "app/version.py",
        "import os\nVERSION = os.environ.get('APP_MODE', '-') + '!'\n",
    );
    assert_eq!(p.wait_for_version("two!", WAIT).pid, spare);
}

#[test]
fn ctrl_c_leaves_no_spare_and_no_generation() {
    let mut p = Project::fastapi_app(&spare_config("\"auto\"")).start();
    p.wait_for_version("v1", WAIT);
    let spare = waiting_spare(&p);
    p.signal(libc::SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    assert!(!alive(spare), "the spare survived");
    p.assert_nothing_left();
}

#[test]
fn kill_9_then_devrun_stop_leaves_no_spare_and_no_generation() {
    let mut p = Project::fastapi_app(&spare_config("\"auto\"")).start();
    let served = p.wait_for_version("v1", WAIT);
    let spare = waiting_spare(&p);
    p.kill_devrun();
    let (code, stderr) = p.run_another(["stop"], WAIT);
    assert_eq!(code, 0, "devrun stop said:\n{stderr}");
    p.wait_until("the generation and the spare to be gone", WAIT, || {
        !alive(served.pid) && !alive(spare)
    });
    p.wait_until("nothing left", WAIT, || p.tagged_processes().is_empty());
    p.assert_nothing_left();
}

#[test]
fn a_thread_starting_import_falls_back_to_a_spare_not_a_cold_start() {
    let source = "import threading, time\n\
                  threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n";
    let p = Project::fastapi_app(&format!(
        "{UVICORN_CONFIG}\n[server]\npreload = [\"threaded\"]\n"
    ));
    let (p, _) = library(p, "threaded", source);
    let p = p.start();
    p.wait_for_version("v1", WAIT);
    let spare = waiting_spare(&p);
    p.write_atomic("app/version.py", &version_py("v2"));
    let served = p.wait_for_version("v2", WAIT);
    assert_eq!(served.pid, spare, "v2 was not served by the spare");
    let stderr = p.stderr();
    assert!(
        stderr.contains("preload cannot fork: preloading threaded started a thread"),
        "{stderr}"
    );
    assert!(!stderr.contains("preload refused"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("started generation 1") && l.contains("(spare)")),
        "{stderr}"
    );
}

/// `socket = "inherit"` with a spare: the held socket is handed over only with the run request
/// (fd 3, LISTEN_FDS=1, LISTEN_PID = the generation's own pid); a waiting spare holds none.
#[test]
fn a_spare_serves_through_the_held_socket_and_holds_none_while_waiting() {
    let config = format!(
        "{}preload = \"auto\"\npreload_method = \"spare\"\n",
        crate::inherit::INHERIT_CONFIG
    );
    let version = |v: &str| {
        format!(
            "import os\nVERSION = {v:?} + ' ' + os.environ.get('LISTEN_FDS', '-') + ' ' + \
             os.environ.get('LISTEN_PID', '-')\n"
        )
    };
    let p = Project::fastapi_app(&config);
    p.write_atomic("app/version.py", &version("v1"));
    let p = p.start();
    p.wait_until("v1 to be served", WAIT, || {
        p.served().is_some_and(|s| s.version.starts_with("v1 "))
    });
    for n in 2..=3 {
        let spare = waiting_spare(&p);
        let mut listeners = p.listeners();
        listeners.sort_unstable();
        assert!(
            !listeners.contains(&spare),
            "a waiting spare holds the socket"
        );
        let v = format!("v{n}");
        p.write_atomic("app/version.py", &version(&v));
        let mut served = None;
        p.wait_until(&format!("{v} to be served"), WAIT, || {
            served = p
                .served()
                .filter(|s| s.version.starts_with(&format!("{v} ")));
            served.is_some()
        });
        let served = served.unwrap();
        assert_eq!(served.pid, spare, "{v} was not served by the spare");
        assert_eq!(served.version, format!("{v} 1 {spare}"));
        assert_eq!(sorted(p.listeners()), sorted(vec![p.pid(), spare]));
    }
}

/// Ctrl-C while the first spare still imports (for 30 s; devrun waits for it to become
/// generation 1): devrun exits at once, not after the imports, and nothing is left.
#[test]
fn ctrl_c_while_a_spare_imports_ends_it() {
    let p = Project::fastapi_app(&spare_config("[\"slow\"]"));
    let (p, _) = library(p, "slow", "import time\ntime.sleep(30)\n");
    let mut p = p.start();
    let spare = waiting_spare(&p);
    p.signal(libc::SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    assert!(!alive(spare), "the spare survived");
    p.assert_nothing_left();
}

/// The spare behind a generation starts once that generation is ready, never during its start
/// (its imports would take the CPU the start needs); it then serves the next change.
#[test]
fn the_next_spare_starts_once_the_generation_is_ready() {
    let gate = tempfile::tempdir().unwrap();
    let open = gate.path().join("open");
    let gated = "import os, time\n\
                 from contextlib import asynccontextmanager\n\
                 from fastapi import FastAPI\n\
                 from .version import VERSION\n\
                 @asynccontextmanager\n\
                 async def lifespan(app):\n\
                 \x20   deadline = time.monotonic() + 120\n\
                 \x20   while not os.path.exists(os.environ['GATE']) and time.monotonic() < deadline:\n\
                 \x20       time.sleep(0.05)\n\
                 \x20   yield\n\
                 app = FastAPI(lifespan=lifespan)\n\
                 @app.get('/')\n\
                 def index():\n\
                 \x20   return {'version': VERSION, 'pid': os.getpid(), 'generation': 1}\n\
                 @app.get('/health')\n\
                 def health():\n\
                 \x20   return {'ok': True}\n";
    let config = spare_config("\"auto\"").replace("app.main:app", "app.gated:app");
    let p = Project::fastapi_app(&config).env("GATE", open.to_str().unwrap());
    p.write_atomic("app/gated.py", gated);
    let p = p.start();
    p.wait_until("generation 1 to start", WAIT, || {
        p.stderr().contains("started generation 1")
    });
    // Its lifespan holds it before ready: no spare may start meanwhile.
    let devrun = p.pid();
    let spares = || {
        fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| parent_of(pid) == Some(devrun) && alive(pid))
            .filter(|&pid| cmdline(pid).contains("devrun's preloader"))
            .count()
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < until {
        assert_eq!(spares(), 0, "a spare started before generation 1 was ready");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!p.stderr().contains("generation 1 ready"), "{}", p.stderr());
    fs::write(&open, "").unwrap();
    p.wait_for_version("v1", WAIT);
    let spare = waiting_spare(&p);
    p.write_atomic("app/version.py", &version_py("v2"));
    assert_eq!(p.wait_for_version("v2", WAIT).pid, spare);
}
