//! Issue 20 points 2, 7, 8 and 9 (preload's part): a preloader that is stopped or hangs, and
//! what preloading must never hold or miss (a project file read by path, an open socket, a
//! project module reached through a symlink, a package installed while running).

use crate::harness::*;
use crate::preload::{parent_of, preloading};

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
