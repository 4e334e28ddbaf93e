//! `kill -9` of devrun alone: its watchdog ends every member's processes, the ones the
//! parent-death signal cannot reach included (a dev server started through a shell, as
//! `npm run dev` starts Vite, and a grandchild that escaped into a session of its own).

use crate::harness::*;
use std::time::Instant;

/// The stand-in dev server started through `sh` (which does not exec it: `; true`), as npm
/// starts Vite: the leader dies with devrun, its child would not. `extra` may add `--child`: a
/// grandchild that escapes (setsid, double fork, ignores SIGTERM) and holds the port too.
fn shell_started_web(port: u16, extra: &str) -> String {
    format!(
        r#"
[processes.web]
command = ["sh", "-c", "$PYTHON devserver.py --name web --port {{port}}{extra} --record $RECORDS/web.jsonl; true"]
cwd = "web"
port = {port}
after = ["backend"]
"#
    )
}

/// Starts the stack, waits for web's record `event` (the process to watch besides its
/// server), SIGKILLs devrun alone, and checks that every member process ends and every port is
/// freed: the time that took.
fn killed_devrun_leaves_nothing(extra: &str, event: &str) -> std::time::Duration {
    let web_port = free_port();
    let mut p = Project::stack(&shell_started_web(web_port, extra)).start();
    let backend = p.wait_for_version("v1", WAIT);
    p.wait_until("web's record", WAIT, || {
        p.member_records("web").iter().any(|r| r.event == event)
    });
    let records = p.member_records("web");
    let of = |event: &str| {
        records
            .iter()
            .find(|r| r.event == event)
            .unwrap_or_else(|| panic!("no {event} in web's records"))
            .clone()
    };
    let (server, other) = (of("start"), of(event));
    assert!(p.watchdog().is_some(), "devrun started no watchdog");

    let killed = Instant::now();
    p.kill_devrun_only();
    p.wait_until("every member process to end", WAIT, || {
        !backend.alive() && !server.alive() && !other.alive()
    });
    let gone = killed.elapsed();
    p.wait_until("the watchdog to end", WAIT, || {
        p.tagged_processes().is_empty()
    });
    assert!(p.port_free(), "the backend's port is held");
    assert_eq!(listeners(web_port), Vec::<i32>::new(), "web's port is held");
    let stderr = p.stderr();
    assert!(
        stderr.contains("left running by a devrun that died"),
        "the watchdog said nothing:\n{stderr}"
    );
    // What it ended, it ended for good: the record names no generation any more.
    assert!(
        !p.state_path().exists() || p.read_state()["backend"].is_null(),
        "the record still names a generation"
    );
    gone
}

#[test]
fn kill_9_of_devrun_alone_ends_a_dev_server_started_through_a_shell() {
    let gone = killed_devrun_leaves_nothing("", "listening");
    eprintln!("kill -9 of devrun → every member process gone: {gone:?}");
}

/// The escapee ignores SIGTERM: it is killed once the stop timeout (5 s) runs out.
#[test]
fn kill_9_of_devrun_alone_ends_an_escaped_grandchild_too() {
    let gone = killed_devrun_leaves_nothing(" --child", "child");
    eprintln!("kill -9 of devrun → escapee (ignores SIGTERM) gone: {gone:?}");
}

#[test]
fn a_clean_exit_ends_the_watchdog_with_devrun() {
    let mut p = Project::testapp("normal.py").start();
    p.wait_for_version("v1", WAIT);
    let watchdog = p.watchdog().expect("devrun started no watchdog");
    assert_ne!(
        unsafe { libc::getsid(watchdog) },
        unsafe { libc::getsid(p.pid()) },
        "the watchdog shares devrun's session"
    );
    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    p.assert_nothing_left();
}
