//! Issue 20 points 2, 7, 8 and 9 (preload's part): a preloader that is stopped or hangs, and
//! what preloading must never hold or miss (a project file read by path, an open socket, a
//! project module reached through a symlink, a package installed while running).

use crate::harness::*;
use crate::preload::{library, parent_of, preloading};
use std::fs;

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
}

/// A preloader stopped with SIGSTOP leaves its exited fork a zombie: it is killed (not taken
/// for a survivor of the kill, devrun keeps running), a fresh one forks the next generation,
/// and Ctrl-C with the new one stopped still exits 0 with nothing left.
#[test]
fn a_stopped_preloader_is_replaced_not_a_reason_to_exit() {
    let mut p = preloading("\"auto\"").start();
    let first = p.wait_for_version("v1", WAIT);
    let preloader = parent_of(first.pid);
    assert_ne!(preloader, p.pid(), "generation 1 was not forked");
    unsafe { libc::kill(preloader, libc::SIGSTOP) };
    p.write_atomic("app/version.py", &version_py("v2"));
    let second = p.wait_for_version("v2", WAIT);
    assert!(p.running(), "devrun exited:\n{}", p.stderr());
    assert!(!first.alive());
    p.wait_until("the stopped preloader to be gone", WAIT, || {
        !alive(preloader)
    });
    let fresh = parent_of(second.pid);
    assert!(
        fresh != preloader && fresh != p.pid(),
        "not forked by a fresh preloader"
    );
    assert!(!p.stderr().contains("survived a kill"), "{}", p.stderr());
    unsafe { libc::kill(fresh, libc::SIGSTOP) };
    p.signal(libc::SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    p.assert_nothing_left();
}

/// A preloader that stops answering while no generation runs (here: after a crash) is
/// killed when a fork request is not answered in time, and a fresh one serves the fix.
#[test]
fn a_preloader_that_does_not_answer_a_fork_is_killed_and_replaced() {
    let mut p = preloading("\"auto\"").start();
    let first = p.wait_for_version("v1", WAIT);
    let preloader = parent_of(first.pid);
    p.write_atomic(
        "app/version.py",
        "raise RuntimeError('broken on purpose')\n",
    );
    p.wait_until("the crash to be reported", WAIT, || {
        p.stderr().contains("exited with code 1")
    });
    unsafe { libc::kill(preloader, libc::SIGSTOP) };
    p.write_atomic("app/version.py", &version_py("v3"));
    let served = p.wait_for_version("v3", WAIT * 2);
    assert!(p.running(), "devrun exited:\n{}", p.stderr());
    assert!(!alive(preloader), "the hung preloader is still there");
    assert_ne!(parent_of(served.pid), preloader);
    assert!(
        p.stderr().contains("did not answer a fork request"),
        "{}",
        p.stderr()
    );
}

/// A preloaded library that runs a project file by its path (`spec_from_file_location` +
/// `exec_module`, as config and hook loaders do): preload is refused naming the file, so an
/// edit of it is served (a fork would answer with the old hooks).
#[test]
fn a_project_file_a_library_runs_by_path_refuses_preload() {
    let source = "import importlib.util, os\n\
                  spec = importlib.util.spec_from_file_location(\n    \
                      'hooks', os.path.join(os.getcwd(), 'app', 'hooks.py'))\n\
                  hooks = importlib.util.module_from_spec(spec)\n\
                  spec.loader.exec_module(hooks)\n";
    let (p, _) = library(preloading("[\"hookloader\"]"), "hookloader", source);
    p.write_atomic("app/hooks.py", "VERSION = 'h1'\n");
    p.write_atomic(
        "app/version.py",
        "import hookloader\nVERSION = hookloader.hooks.VERSION\n",
    );
    let p = p.start();
    let first = p.wait_for_version("h1", WAIT);
    assert_eq!(parent_of(first.pid), p.pid(), "not a cold start");
    let stderr = p.stderr();
    assert!(
        stderr.contains("preload refused: a project file was read by preloading hookloader"),
        "{stderr}"
    );
    assert!(stderr.contains("app/hooks.py"), "{stderr}");
    p.write_atomic("app/hooks.py", "VERSION = 'h2'\n");
    let second = p.wait_for_version("h2", WAIT);
    assert!(!first.alive());
    assert_eq!(parent_of(second.pid), p.pid());
}

/// A library that connects at import: every fork would share the connection; fork is refused
/// with the socket named, and a warm spare serves instead.
#[test]
fn a_connection_opened_at_import_means_spares_naming_it() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let source = format!("import socket\nconn = socket.create_connection(('127.0.0.1', {port}))\n");
    let (p, _) = library(preloading("[\"dbclient\"]"), "dbclient", &source);
    let p = p.start();
    let served = p.wait_for_version("v1", WAIT);
    assert_eq!(parent_of(served.pid), p.pid(), "forked");
    let stderr = p.stderr();
    assert!(
        stderr.contains("preload cannot fork: preloading dbclient opened a socket"),
        "{stderr}"
    );
    // Issue 19: a spare (which forks nothing, so may hold the connection) serves instead.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("started generation 1") && l.contains("(spare)")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("a TCP connection to 127.0.0.1:{port}")),
        "{stderr}"
    );
}

/// Project code imported through a symlink (a library folder holding a link to a project
/// package) is still project code: preload is refused naming it.
#[test]
fn project_code_imported_through_a_symlink_refuses_preload() {
    let p = preloading("[\"sneaky\"]");
    let lib = p.tmp_dir().join("lib");
    fs::create_dir_all(&lib).unwrap();
    std::os::unix::fs::symlink(p.root.join("app"), lib.join("appalias")).unwrap();
    fs::write(lib.join("sneaky.py"), "import appalias.version\n").unwrap();
    let p = p.env("PYTHONPATH", lib.to_str().unwrap()).start();
    let served = p.wait_for_version("v1", WAIT);
    assert_eq!(parent_of(served.pid), p.pid(), "not a cold start");
    let stderr = p.stderr();
    assert!(
        stderr
            .contains("project code was imported by preloading sneaky: appalias, appalias.version"),
        "{stderr}"
    );
}

/// The testapp preloading `modules`, run by `python` (a path).
fn testapp_preloading(python: &str, modules: &str) -> Project {
    Project::testapp("normal.py").config(&format!(
        "command = [\"{python}\", \"normal.py\"]\nport = $PORT\n[watch]\ndebounce_ms = 50\n\
         [server]\npreload = {modules}\n"
    ))
}

/// A package installed while devrun runs (`pip install -e`: a new `.pth` in site-packages) is
/// seen: the next generation comes from a fresh preloader, which reads the `.pth`, instead of a
/// fork that fails with ModuleNotFoundError.
#[test]
fn a_pth_added_to_site_packages_while_running_means_a_fresh_preloader() {
    let scratch = tempfile::tempdir().unwrap();
    let venv = scratch.path().join("venv");
    let made = std::process::Command::new(python())
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success(), "cannot make a venv");
    let lib = fs::read_dir(venv.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let site = lib.path().join("site-packages");
    assert!(site.is_dir(), "{}", site.display());
    let venv_python = venv.join("bin/python");
    let p = testapp_preloading(venv_python.to_str().unwrap(), "[\"json\"]").start();
    let first = p.wait_for_version("v1", WAIT);
    let old = parent_of(first.pid);
    assert_ne!(old, p.pid(), "not forked");
    let editable = scratch.path().join("libs/x");
    fs::create_dir_all(&editable).unwrap();
    fs::write(editable.join("newpkg.py"), "VALUE = 'n1'\n").unwrap();
    fs::write(
        site.join("__editable__.newpkg.pth"),
        format!("{}\n", editable.display()),
    )
    .unwrap();
    p.write_atomic("version.py", "import newpkg\nVERSION = newpkg.VALUE\n");
    let second = p.wait_for_version("n1", WAIT);
    let fresh = parent_of(second.pid);
    assert!(
        fresh != old && fresh != p.pid(),
        "not from a fresh preloader"
    );
    assert!(
        p.stderr().contains("starting a fresh preloader"),
        "{}",
        p.stderr()
    );
}

/// A dependency rewritten with the same size and modification time is still seen.
#[test]
fn a_dependency_rewritten_with_the_same_size_and_mtime_means_a_fresh_preloader() {
    let p = testapp_preloading("$PYTHON", "[\"dep\"]");
    let (p, dep) = library(p, "dep", "VALUE = 'a1'\n");
    p.write_atomic("version.py", "import dep\nVERSION = dep.VALUE\n");
    let p = p.start();
    let first = p.wait_for_version("a1", WAIT);
    let old = parent_of(first.pid);
    assert_ne!(old, p.pid(), "not forked");
    let mtime = fs::metadata(&dep).unwrap().modified().unwrap();
    let new = dep.with_extension("new");
    fs::write(&new, "VALUE = 'b2'\n").unwrap();
    fs::rename(&new, &dep).unwrap();
    let file = fs::File::options().write(true).open(&dep).unwrap();
    file.set_times(fs::FileTimes::new().set_modified(mtime))
        .unwrap();
    drop(file);
    assert_eq!(fs::metadata(&dep).unwrap().modified().unwrap(), mtime);
    p.write_atomic("version.py", "import dep\nVERSION = dep.VALUE  # touched\n");
    let second = p.wait_for_version("b2", WAIT);
    assert_ne!(parent_of(second.pid), old, "the stale preloader forked it");
    assert!(
        p.stderr().contains("starting a fresh preloader"),
        "{}",
        p.stderr()
    );
}
