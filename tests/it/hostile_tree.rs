//! A hostile tree and a hostile environment never stop devrun: folders it may not read, a watch
//! root deleted and recreated under it, a stderr nobody reads.
//!
//! Unreadable folders: root reads every folder whatever its mode, so when the tests run as root,
//! devrun runs as `nobody` (the project is handed to that user first) and the folder keeps mode
//! 000 — a real EACCES from inotify_add_watch and opendir, the same as a database volume owned
//! by another user.

use crate::harness::*;
use std::fs::{self, DirBuilder, File};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::thread::sleep;
use std::time::Duration;

/// uid and gid of `nobody`.
fn nobody() -> (u32, u32) {
    let name = std::ffi::CString::new("nobody").unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !entry.is_null(),
        "running as root, these tests need a `nobody` user to run devrun as, so that a mode-000 \
         folder is really unreadable to it"
    );
    // SAFETY: checked non-null above.
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    if fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid, gid);
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Starts devrun so that mode 000 denies it: as `nobody` (owning the project) when the tests
/// run as root, as itself otherwise.
fn start_unprivileged(project: Project) -> Project {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return project.start();
    }
    let (uid, gid) = nobody();
    let project = project.python(&python_for(uid, gid));
    // The temp folder holds the record file every backend appends to.
    let tmp = project.root.parent().unwrap();
    chmod(tmp, 0o755);
    let record = tmp.join("record.jsonl");
    File::create(&record).unwrap();
    chmod(&record, 0o666);
    chown_tree(&project.root, uid, gid);
    project.start_with(|command| {
        command.uid(uid).gid(gid);
    })
}

/// An interpreter `uid` may run (the test one may live under root's home): the fixtures need
/// only the standard library.
fn python_for(uid: u32, gid: u32) -> String {
    [
        python(),
        "/usr/bin/python3".to_string(),
        "python3".to_string(),
    ]
    .into_iter()
    .find(|python| {
        std::process::Command::new(python)
            .args(["-c", ""])
            .uid(uid)
            .gid(gid)
            .status()
            .is_ok_and(|s| s.success())
    })
    .unwrap_or_else(|| panic!("no Python interpreter that uid {uid} may run"))
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|line| line.contains(needle)).count()
}

#[test]
fn unreadable_folder_is_skipped_with_one_warning_at_start_and_later() {
    let project = Project::testapp("normal.py");
    let db = project.root.join("db");
    fs::create_dir_all(db.join("base")).unwrap();
    fs::write(db.join("base/pg.py"), "").unwrap();
    chmod(&db, 0o000);
    let project = start_unprivileged(project);

    // Before: EACCES on `db` ended devrun before the first generation.
    project.wait_for_version("v1", WAIT);
    let stderr = project.stderr();
    assert_eq!(count(&stderr, "cannot watch folder db "), 1, "{stderr}");
    assert!(
        stderr.contains("add \"db/**\" to [watch] ignore"),
        "{stderr}"
    );

    // The rest of the tree is watched.
    project.write_atomic("version.py", &version_py("v2"));
    project.wait_for_version("v2", WAIT);

    // A folder that appears unreadable later: the same one warning, and watching goes on.
    DirBuilder::new()
        .mode(0o000)
        .create(project.root.join("late"))
        .unwrap();
    project.wait_until("the warning about `late`", WAIT, || {
        project.stderr().contains("cannot watch folder late ")
    });
    project.write_atomic("version.py", &version_py("v3"));
    let served = project.wait_for_version("v3", WAIT);
    assert!(served.alive());

    let stderr = project.stderr();
    assert_eq!(count(&stderr, "cannot watch folder db "), 1, "{stderr}");
    assert_eq!(count(&stderr, "cannot watch folder late "), 1, "{stderr}");
    project.assert_every_start_was_alone();
    // So that the temp folder can be removed when the tests do not run as root.
    chmod(&project.root.join("db"), 0o755);
    chmod(&project.root.join("late"), 0o755);
}

#[test]
fn the_suggested_glob_silences_the_warning() {
    let project = Project::testapp("normal.py").watch(r#"ignore = ["db/**"]"#);
    fs::create_dir(project.root.join("db")).unwrap();
    chmod(&project.root.join("db"), 0o000);
    let project = start_unprivileged(project);
    project.wait_for_version("v1", WAIT);
    project.write_atomic("version.py", &version_py("v2"));
    project.wait_for_version("v2", WAIT);
    let stderr = project.stderr();
    assert!(!stderr.contains("cannot watch folder"), "{stderr}");
    chmod(&project.root.join("db"), 0o755);
}

/// A project whose watch root is `app`, holding version.py, serving v1.
fn serving_app_root() -> Project {
    let project = Project::testapp("normal.py")
        .watch(r#"paths = ["app"]"#)
        .config_also("[env]\nPYTHONPATH = \"app\"\n");
    let app = project.root.join("app");
    fs::create_dir(&app).unwrap();
    fs::rename(project.root.join("version.py"), app.join("version.py")).unwrap();
    let project = project.start();
    project.wait_for_version("v1", WAIT);
    project
}

/// After `app` went away: says so once, serves the code of a recreated `app`, and watches it.
fn assert_root_comes_back(project: &Project) {
    let app = project.root.join("app");
    project.wait_until("the missing root to be reported", WAIT, || {
        project.stderr().contains("watch path app is missing")
    });

    // Recreated with changed code: served by a fresh interpreter.
    fs::create_dir(&app).unwrap();
    fs::write(app.join("version.py"), version_py("v2")).unwrap();
    let served = project.wait_for_version("v2", WAIT);
    assert!(served.alive());

    // And watched as before.
    project.write_atomic("app/version.py", &version_py("v3"));
    project.wait_for_version("v3", WAIT);

    let stderr = project.stderr();
    assert_eq!(count(&stderr, "watch path app is missing"), 1, "{stderr}");
    assert_eq!(count(&stderr, "watch path app is back"), 1, "{stderr}");
    project.assert_every_start_was_alone();
}

#[test]
fn deleted_watch_root_is_watched_again_when_it_comes_back() {
    let project = serving_app_root();
    fs::remove_dir_all(project.root.join("app")).unwrap();
    assert_root_comes_back(&project);
}

#[test]
fn moved_away_watch_root_is_watched_again_when_it_comes_back() {
    let project = serving_app_root();
    fs::rename(project.root.join("app"), project.root.join("app.old")).unwrap();
    assert_root_comes_back(&project);
    // The moved-away folder is not watched any more.
    let before = project.starts().len();
    fs::write(project.root.join("app.old/version.py"), version_py("old")).unwrap();
    std::thread::sleep(QUIET);
    assert_eq!(project.starts().len(), before);
}

/// A pipe with the smallest buffer the kernel allows: (read end, write end).
fn small_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: a valid array of two fds.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just opened and are owned here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on an open pipe fd.
    let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert!(size >= 4096, "F_SETPIPE_SZ failed");
    (read, write)
}

/// Bytes waiting in a pipe.
fn queued(fd: &OwnedFd) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    assert_eq!(
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) },
        0
    );
    n
}

#[test]
fn stderr_nobody_reads_never_stalls_the_loop() {
    let (read_end, write_end) = small_pipe();
    let mut project = Project::testapp("normal.py")
        .args(["--events", "json"])
        .start_with(|command| {
            command.stderr(Stdio::from(write_end));
        });
    project.wait_for_version("v1", WAIT);

    // Six status lines per restart: the pipe fills after a few restarts, the line queue after
    // some twenty more. Before, devrun blocked writing its first line that did not fit.
    for n in 2..=40 {
        let version = format!("v{n}");
        project.write_atomic("version.py", &version_py(&version));
        project.wait_for_version(&version, WAIT);
        // A person's pace (the reload-loop guard's premise): saved the instant this test saw
        // an answer, the change can come before devrun's own probe has seen the generation
        // ready (one in five on a loaded machine), which counts as the generation writing the
        // file itself; three in a row and that save would be held back (see `guard`).
        sleep(Duration::from_millis(200));
    }
    // Full, give or take one line: a write of up to PIPE_BUF bytes waits until it fits whole, so
    // a full pipe can hold up to one line's length less than its 4096 bytes.
    let queued_bytes = queued(&read_end);
    assert!(
        queued_bytes >= 4096 - 1024,
        "the pipe never filled up ({queued_bytes} bytes queued)"
    );
    assert!(project.running());

    // Read at last: what did not fit was dropped, and counted.
    // SAFETY: read_end is a valid fd owned by this test.
    unsafe { libc::fcntl(read_end.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut pipe = File::from(read_end);
    let mut seen = String::new();
    project.write_atomic("version.py", &version_py("v41"));
    project.wait_until("the dropped-lines notice", WAIT, || {
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen.contains("status lines were dropped")
    });
    project.wait_for_version("v41", WAIT);

    // SIGTERM is handled: devrun exits, and nothing of it is left.
    project.signal(SIGTERM);
    assert_eq!(project.wait_exit(WAIT), 0);
    project.wait_until("every backend process to end", WAIT, || {
        project.tagged_processes().is_empty()
    });
    assert!(project.port_free());
}
