//! Issue 11, the whole stack: the FastAPI backend under real uvicorn plus `[processes.NAME]`
//! members (the stand-in dev server and worker of `fixtures/stack`), each observed from outside:
//! its record file, who answers on its port, `/proc`.

use crate::harness::*;
use serde_json::Value;
use std::net::{Ipv4Addr, TcpListener};

/// A `[processes.NAME]` table running the stand-in dev server from `web/` on `port` (a number
/// or `"auto"`), recording to `$RECORDS/NAME.jsonl`; `args` are more arguments for it (each
/// `, "--flag"`), `keys` more lines of the table.
fn devserver(name: &str, port: &str, args: &str, keys: &str) -> String {
    format!(
        r#"
[processes.{name}]
command = ["$PYTHON", "devserver.py", "--name", "{name}", "--port", "{{port}}", "--record", "$RECORDS/{name}.jsonl"{args}]
cwd = "web"
port = {port}
{keys}
"#
    )
}

/// A `[processes.NAME]` table running the stand-in worker (no port) from the project root.
fn worker(name: &str, args: &str, keys: &str) -> String {
    format!(
        r#"
[processes.{name}]
command = ["$PYTHON", "web/worker.py", "--name", "{name}", "--record", "$RECORDS/{name}.jsonl"{args}]
{keys}
"#
    )
}

/// The usual frontend: the dev server on `port`, after the backend, pointed at its port.
fn web(port: &str, args: &str, keys: &str) -> String {
    let keys = format!(
        "env = {{ VITE_API_URL = \"http://{{host}}:{{ports.backend}}\" }}\nafter = [\"backend\"]\n{keys}"
    );
    devserver("web", port, args, &keys)
}

fn port_text(port: u16) -> String {
    port.to_string()
}

/// The `process` an event is about (the backend's events name it too once members run).
fn process_of(event: &Value) -> &str {
    event["process"].as_str().unwrap_or("")
}

fn events_named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// Waits until every listed process has a `ready` event.
fn wait_all_ready(p: &Project, names: &[&str]) {
    p.wait_until("a ready event from every member", WAIT, || {
        let events = p.events();
        let ready = events_named(&events, "ready");
        names
            .iter()
            .all(|n| ready.iter().any(|e| process_of(e) == *n))
    });
}

#[test]
fn ports_are_templated_into_every_member() {
    let web_port = free_port();
    let keys = r#"env = { API_URL = "http://{host}:{ports.backend}", WEB_URL = "http://{host}:{ports.web}" }"#;
    let members = web(&port_text(web_port), "", "") + &worker("worker", "", keys);
    let p = Project::stack(&members).start();

    p.wait_for_version("v1", WAIT);
    let served = wait_for_devserver(web_port, WAIT, |_| true);
    let api = format!("http://127.0.0.1:{}", p.port);
    assert_eq!(served.api_url.as_deref(), Some(api.as_str()));
    assert_eq!((served.name.as_str(), served.port), ("web", web_port));
    let start = &p.member_starts("web")[0];
    assert_eq!(start.api_url.as_deref(), Some(api.as_str()));
    assert!(served.cwd.ends_with("web"), "web's cwd: {:?}", served.cwd);
    assert_eq!(listeners(web_port), vec![served.pid]);

    let worker = &p.wait_for_member_starts("worker", 1, WAIT)[0];
    assert_eq!(worker.env.get("API_URL"), Some(&api));
    assert_eq!(
        worker.env.get("WEB_URL"),
        Some(&format!("http://127.0.0.1:{web_port}"))
    );
    assert_eq!(worker.cwd.as_deref(), Some(p.root.as_path()));
}

#[test]
fn an_auto_port_is_picked_once_templated_and_kept_across_restarts() {
    let keys = r#"watch = ["web/vite.config.json"]"#;
    let members = web("\"auto\"", "", keys)
        + &worker(
            "worker",
            "",
            r#"env = { WEB_URL = "http://{host}:{ports.web}" }"#,
        );
    let p = Project::stack(&members).start();

    let first = &p.wait_for_member_starts("web", 1, WAIT)[0];
    let port = first.port.expect("web recorded no port");
    assert_ne!(port, p.port, "web was given the backend's port");
    let served = wait_for_devserver(port, WAIT, |_| true);
    assert_eq!(served.pid, first.pid);
    assert_eq!(
        served.api_url,
        Some(format!("http://127.0.0.1:{}", p.port)),
        "VITE_API_URL does not name the backend's port"
    );
    let worker = &p.wait_for_member_starts("worker", 1, WAIT)[0];
    assert_eq!(
        worker.env.get("WEB_URL"),
        Some(&format!("http://127.0.0.1:{port}")),
        "{{ports.web}} does not name the port web was given"
    );

    p.write_atomic("web/vite.config.json", "{\"changed\": 1}\n");
    let restarted = wait_for_devserver(port, WAIT, |s| s.pid != first.pid);
    assert_eq!(
        restarted.port, port,
        "the auto port changed across a restart"
    );
    assert!(!first.alive(), "the first web process is still alive");
}

#[test]
fn a_py_change_restarts_the_backend_and_not_the_frontend() {
    let web_port = free_port();
    let p = Project::stack(&web(&port_text(web_port), "", "")).start();
    let v1 = p.wait_for_version("v1", WAIT);
    let frontend = wait_for_devserver(web_port, WAIT, |_| true);

    p.write_atomic("app/version.py", &version_py("v2"));
    let v2 = p.wait_for_version("v2", WAIT);
    p.settle();

    assert!(!v1.alive(), "the old backend is still alive");
    assert_ne!(v2.pid, v1.pid);
    assert_eq!(p.listeners(), vec![v2.pid]);
    p.assert_every_start_was_alone();
    let now = devserver_on(web_port).expect("the frontend stopped answering");
    assert_eq!(
        now.pid, frontend.pid,
        "the frontend was restarted by a .py change"
    );
    assert_eq!(p.member_starts("web").len(), 1, "web was started again");
}

#[test]
fn a_change_to_the_frontends_watch_file_restarts_only_the_frontend() {
    let web_port = free_port();
    let keys = r#"watch = ["web/vite.config.json"]"#;
    let p = Project::stack(&web(&port_text(web_port), "", keys)).start();
    let backend = p.wait_for_version("v1", WAIT);
    let first = wait_for_devserver(web_port, WAIT, |_| true);

    p.write_atomic("web/vite.config.json", "{\"changed\": 1}\n");
    let second = wait_for_devserver(web_port, WAIT, |s| s.pid != first.pid);

    let starts = p.member_starts("web");
    assert_eq!(starts.len(), 2, "web starts: {starts:?}");
    assert!(!starts[0].alive(), "the old frontend is still alive");
    assert_eq!(starts[1].pid, second.pid);
    assert!(
        second.generation > first.generation,
        "generations: {:?} then {:?}",
        first.generation,
        second.generation
    );
    assert!(
        starts[1].prev_alive.is_empty() && starts[1].port_free == Some(true),
        "the new frontend started beside the old one: {:?}",
        starts[1]
    );
    assert_eq!(listeners(web_port), vec![second.pid]);
    assert!(backend.alive(), "the backend was stopped");
    assert_eq!(p.served().map(|s| s.pid), Some(backend.pid));
    assert_eq!(p.starts().len(), 1, "the backend was restarted");
}

/// The grandchild web's dev server started with `--child` (setsid, forked again: in no
/// member's group, holding web's port).
fn escaped_grandchild(p: &Project) -> MemberRecord {
    p.wait_until("web's escaped grandchild", WAIT, || {
        p.member_records("web").iter().any(|r| r.event == "child")
    });
    let child = p
        .member_records("web")
        .into_iter()
        .find(|r| r.event == "child")
        .unwrap();
    assert!(child.alive(), "the grandchild is gone already");
    child
}

#[test]
fn a_frontend_restart_ends_its_escaped_grandchild_too() {
    let web_port = free_port();
    let keys = r#"watch = ["web/vite.config.json"]"#;
    let p = Project::stack(&web(&port_text(web_port), r#", "--child""#, keys)).start();
    let backend = p.wait_for_version("v1", WAIT);
    let first = wait_for_devserver(web_port, WAIT, |_| true);
    let child = escaped_grandchild(&p);

    p.write_atomic("web/vite.config.json", "{\"changed\": 1}\n");
    let second = wait_for_devserver(web_port, WAIT, |s| s.pid != first.pid);

    assert!(
        !child.alive(),
        "the old web's escaped grandchild is still alive"
    );
    let start = p.member_starts("web")[1].clone();
    assert!(
        start.prev_alive.is_empty() && start.port_free == Some(true),
        "the new web started while the old tree lived or held the port: {start:?}"
    );
    assert!(listeners(web_port).contains(&second.pid));
    assert!(backend.alive(), "the backend was stopped");
}

#[test]
fn a_backend_restart_leaves_the_frontends_escaped_grandchild_alone() {
    let web_port = free_port();
    let p = Project::stack(&web(&port_text(web_port), r#", "--child""#, "")).start();
    p.wait_for_version("v1", WAIT);
    let frontend = wait_for_devserver(web_port, WAIT, |_| true);
    let child = escaped_grandchild(&p);

    p.write_atomic("app/version.py", &version_py("v2"));
    p.wait_for_version("v2", WAIT);
    p.settle();

    assert!(
        child.alive(),
        "a backend restart ended a process of web's tree (its escaped grandchild)"
    );
    assert_eq!(devserver_on(web_port).map(|s| s.pid), Some(frontend.pid));
    assert_eq!(p.member_starts("web").len(), 1, "web was started again");
}

#[test]
fn a_worker_that_watches_backend_restarts_with_it() {
    let members = worker("worker", "", r#"watch = "backend""#)
        + &worker("idle", "", "")
        + &web(&port_text(free_port()), "", "");
    let p = Project::stack(&members).start();
    p.wait_for_version("v1", WAIT);
    let first = p.wait_for_member_starts("worker", 1, WAIT)[0].clone();
    let idle = p.wait_for_member_starts("idle", 1, WAIT)[0].clone();

    p.write_atomic("app/version.py", &version_py("v2"));
    p.wait_for_version("v2", WAIT);
    let second = p.wait_for_member_starts("worker", 2, WAIT)[1].clone();

    assert!(!first.alive(), "the old worker is still alive");
    assert!(
        second.prev_alive.is_empty(),
        "the new worker started beside the old one"
    );
    assert_ne!(second.generation, first.generation);
    assert!(idle.alive(), "a worker without watch was restarted");
    assert_eq!(p.member_starts("idle").len(), 1);
}

#[test]
fn only_a_member_with_restart_with_restarts_after_the_backend() {
    let members = worker(
        "e2e",
        "",
        "after = [\"backend\"]\nrestart_with = [\"backend\"]",
    ) + &worker("plain", "", "after = [\"backend\"]");
    let p = Project::stack(&members).start();
    p.wait_for_version("v1", WAIT);
    let e2e = p.wait_for_member_starts("e2e", 1, WAIT)[0].clone();
    let plain = p.wait_for_member_starts("plain", 1, WAIT)[0].clone();

    p.write_atomic("app/version.py", &version_py("v2"));
    p.wait_for_version("v2", WAIT);
    let again = p.wait_for_member_starts("e2e", 2, WAIT)[1].clone();
    p.settle();

    assert!(!e2e.alive(), "the old e2e is still alive");
    assert!(
        again.prev_alive.is_empty(),
        "the new e2e started beside the old one"
    );
    assert!(
        plain.alive(),
        "a member after the backend without restart_with was restarted"
    );
    assert_eq!(p.member_starts("plain").len(), 1);
    assert_eq!(p.member_starts("e2e").len(), 2);
}

#[test]
fn an_after_chain_starts_in_order_each_once_the_one_before_is_ready() {
    // web takes a while to listen: e2e must wait for it to be ready, not just started.
    let web_port = free_port();
    let members = web(&port_text(web_port), r#", "--start-delay-ms", "1500""#, "")
        + &devserver("e2e", &port_text(free_port()), "", r#"after = ["web"]"#);
    let p = Project::stack(&members).args(["--events", "json"]).start();
    wait_all_ready(&p, &["backend", "web", "e2e"]);

    let events = p.events();
    let started: Vec<&str> = events_named(&events, "started")
        .into_iter()
        .map(process_of)
        .collect();
    assert_eq!(
        started,
        ["backend", "web", "e2e"],
        "started events: {events:?}"
    );
    let ts = |event: &str, process: &str| -> i64 {
        events_named(&events, event)
            .into_iter()
            .find(|e| process_of(e) == process)
            .and_then(|e| e["ts_ms"].as_i64())
            .unwrap_or_else(|| panic!("no {event} event with ts_ms for {process}: {events:?}"))
    };
    assert!(ts("ready", "backend") <= ts("started", "web"));
    assert!(ts("ready", "web") <= ts("started", "e2e"));

    // And from the processes themselves: e2e started after web was listening.
    let listening = p
        .member_records("web")
        .into_iter()
        .find(|r| r.event == "listening")
        .expect("web never listened");
    let e2e = &p.wait_for_member_starts("e2e", 1, WAIT)[0];
    assert!(
        e2e.t >= listening.t,
        "e2e started {:.3} s before web listened",
        listening.t - e2e.t
    );
    assert_eq!(p.member_starts("web").len(), 1);
    assert_eq!(p.member_starts("e2e").len(), 1);
}

#[test]
fn a_held_frontend_port_names_its_holder_and_starts_nothing() {
    let web_port = free_port();
    let holder = TcpListener::bind((Ipv4Addr::LOCALHOST, web_port)).unwrap();
    let members = web(&port_text(web_port), "", "") + &worker("worker", "", "");
    let mut p = Project::stack(&members).start();

    assert_eq!(p.wait_exit(WAIT), 3, "{}", p.stderr());
    let our_pid = std::process::id() as i64;
    assert!(
        numbers_in(&p.stderr()).contains(&our_pid),
        "stderr does not name the holder's pid {our_pid}:\n{}",
        p.stderr()
    );
    assert!(p.starts().is_empty(), "the backend was started");
    assert!(p.member_starts("web").is_empty(), "web was started");
    assert!(
        p.member_starts("worker").is_empty(),
        "the worker was started"
    );
    assert_eq!(p.tagged_processes(), Vec::<i32>::new());
    assert!(holder.local_addr().is_ok(), "devrun closed our listener");
}

/// Every process any member or the backend started (grandchildren included), from the records.
fn every_recorded_pid(p: &Project, members: &[&str]) -> Vec<(String, i32, bool)> {
    let mut all: Vec<(String, i32, bool)> = p
        .records()
        .iter()
        .map(|r| ("backend".to_string(), r.pid, r.alive()))
        .collect();
    for name in members {
        for r in p.member_records(name) {
            all.push((format!("{name} ({})", r.event), r.pid, r.alive()));
        }
    }
    all
}

fn assert_no_member_left(p: &Project, members: &[&str], ports: &[u16]) {
    let left: Vec<_> = every_recorded_pid(p, members)
        .into_iter()
        .filter(|(_, _, alive)| *alive)
        .collect();
    assert!(left.is_empty(), "processes left alive: {left:?}");
    p.assert_nothing_left();
    for port in ports {
        assert_eq!(listeners(*port), Vec::<i32>::new(), "port {port} is held");
    }
}

#[test]
fn ctrl_c_leaves_nothing_of_any_member() {
    let web_port = free_port();
    let members = web(&port_text(web_port), r#", "--child""#, "") + &worker("worker", "", "");
    let mut p = Project::stack(&members).start();
    p.wait_for_version("v1", WAIT);
    wait_for_devserver(web_port, WAIT, |_| true);
    p.wait_for_member_starts("worker", 1, WAIT);
    p.wait_until("web's escaped grandchild", WAIT, || {
        p.member_records("web").iter().any(|r| r.event == "child")
    });

    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    assert_no_member_left(&p, &["web", "worker"], &[web_port]);
}

#[test]
fn kill_9_of_devrun_then_stop_leaves_nothing_of_any_member() {
    let web_port = free_port();
    let members = web(&port_text(web_port), r#", "--child""#, "") + &worker("worker", "", "");
    let mut p = Project::stack(&members).start();
    p.wait_for_version("v1", WAIT);
    let frontend = wait_for_devserver(web_port, WAIT, |_| true);
    p.wait_for_member_starts("worker", 1, WAIT);
    p.wait_until("web's escaped grandchild", WAIT, || {
        p.member_records("web").iter().any(|r| r.event == "child")
    });
    // devrun writes the state file once everything runs; stop reads it.
    p.wait_until("web and the worker running in state.json", WAIT, || {
        let running = |state: &Value, name: &str| {
            state["processes"].as_array().is_some_and(|members| {
                members
                    .iter()
                    .any(|m| m["name"] == name && !m["running"].is_null())
            })
        };
        p.state_path().exists() && {
            let state = p.read_state();
            running(&state, "web") && running(&state, "worker")
        }
    });

    let child = p
        .member_records("web")
        .into_iter()
        .find(|r| r.event == "child")
        .expect("no grandchild recorded");
    assert_eq!(child.parent, Some(frontend.pid));
    assert_ne!(
        pgid(child.pid),
        pgid(frontend.pid),
        "the grandchild did not leave web's group"
    );

    // The members' leaders may die with devrun (it makes them); the escaped grandchild cannot,
    // and it holds web's port: only `devrun stop` can find it (by the run's marker).
    p.kill_devrun();
    assert!(child.alive(), "web's escaped grandchild died with devrun");

    let (code, stderr) = p.run_another(["stop"], WAIT);
    assert_eq!(code, 0, "devrun stop: {stderr}");
    assert_no_member_left(&p, &["web", "worker"], &[web_port]);
}

#[test]
fn once_with_a_good_stack_exits_0_and_leaves_nothing() {
    let web_port = free_port();
    let members = web(&port_text(web_port), "", "") + &worker("worker", "", r#"after = ["web"]"#);
    let mut p = Project::stack(&members)
        .args(["--once", "--events", "json"])
        .start();

    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    assert_eq!(p.starts().len(), 1);
    assert_eq!(p.member_starts("web").len(), 1);
    // A worker (no port) is ready once started: --once may end it before it writes its line.
    assert!(p.member_starts("worker").len() <= 1);
    let events = p.events();
    let named = |event: &str| -> Vec<&str> {
        events_named(&events, event)
            .into_iter()
            .map(process_of)
            .collect()
    };
    assert_eq!(named("started"), ["backend", "web", "worker"], "{events:?}");
    let ready = named("ready");
    assert!(
        ready.contains(&"backend") && ready.contains(&"web"),
        "{events:?}"
    );
    assert_no_member_left(&p, &["web", "worker"], &[web_port]);
}

#[test]
fn once_fails_with_exit_1_naming_the_member_that_never_got_ready() {
    let web_port = free_port();
    let slow_port = free_port();
    let members = web(&port_text(web_port), "", "")
        + &devserver(
            "docs",
            &port_text(slow_port),
            r#", "--start-delay-ms", "600000""#,
            "after = [\"web\"]\nready = { timeout_ms = 1500 }",
        );
    let mut p = Project::stack(&members)
        .args(["--once", "--events", "json"])
        .start();

    assert_eq!(p.wait_exit(WAIT), 1, "{}", p.stderr());
    assert_eq!(p.member_starts("docs").len(), 1, "docs never started");
    let events = p.events();
    let errors = events_named(&events, "error");
    assert!(
        errors
            .iter()
            .any(|e| e["message"].as_str().is_some_and(|m| m.contains("docs"))),
        "no error event names docs: {events:?}"
    );
    assert!(
        events_named(&events, "ready")
            .iter()
            .any(|e| process_of(e) == "web"),
        "web never got ready: {events:?}"
    );
    // The failing member is torn down like the rest (gracefully), not killed at once as if
    // a second Ctrl-C had come.
    assert!(
        !events.iter().any(|e| e["kind"] == "kill_now"),
        "a member was killed at once: {events:?}"
    );
    assert_no_member_left(&p, &["web", "docs"], &[web_port, slow_port]);
}

#[test]
fn on_failure_restarts_a_failing_member_and_the_default_policy_waits() {
    let members = worker("flaky", r#", "--exit", "1""#, r#"restart = "on-failure""#)
        + &worker("done", r#", "--exit", "0""#, "");
    let mut p = Project::stack(&members).args(["--events", "json"]).start();
    let backend = p.wait_for_version("v1", WAIT);

    let flaky = p.wait_for_member_starts("flaky", 2, WAIT);
    assert_ne!(flaky[0].pid, flaky[1].pid);
    assert!(
        flaky[1].t - flaky[0].t >= 0.9,
        "restarted {:.3} s after the first start: no backoff",
        flaky[1].t - flaky[0].t
    );
    // `done` exited 0 long before: with the default policy it waits for a change.
    std::thread::sleep(QUIET);
    assert_eq!(p.member_starts("done").len(), 1, "done was restarted");
    assert!(p.running(), "a member's exit ended devrun");
    assert!(backend.alive(), "a member's exit stopped the backend");
    assert_eq!(p.served().map(|s| s.pid), Some(backend.pid));
    // Both exits were reported, each naming its member.
    let events = p.events();
    let exited = |process: &str, status: &str| {
        events_named(&events, "exited")
            .iter()
            .any(|e| process_of(e) == process && e["status"] == status)
    };
    assert!(
        exited("done", "code 0"),
        "done's exit not reported: {events:?}"
    );
    assert!(
        exited("flaky", "code 1"),
        "flaky's exit not reported: {events:?}"
    );
}

#[test]
fn only_web_runs_only_web() {
    let web_port = free_port();
    let members = web(&port_text(web_port), "", "") + &worker("worker", "", "");
    let p = Project::stack(&members).args(["--only", "web"]).start();

    let served = wait_for_devserver(web_port, WAIT, |_| true);
    assert_eq!(
        served.api_url,
        Some(format!("http://127.0.0.1:{}", p.port)),
        "VITE_API_URL does not name the backend's configured port"
    );
    std::thread::sleep(QUIET);
    assert!(p.starts().is_empty(), "the backend was started");
    assert!(
        p.listeners().is_empty(),
        "something listens on the backend's port"
    );
    assert!(
        p.member_starts("worker").is_empty(),
        "the worker was started"
    );
    assert_eq!(p.member_starts("web").len(), 1);
}

#[test]
fn member_output_is_prefixed_with_its_padded_name() {
    let web_port = free_port();
    let members = web(&port_text(web_port), "", "") + &worker("worker", "", "");
    let p = Project::stack(&members).start();
    p.wait_for_version("v1", WAIT);
    wait_for_devserver(web_port, WAIT, |_| true);
    p.wait_for_member_starts("worker", 1, WAIT);

    // Names are padded to the longest, "backend". Each member's stdout and stderr lines.
    let expected = [
        "web     | devserver web listening on",
        "web     | devserver web: api at",
        "worker  | worker worker started",
        "backend | INFO:",
    ];
    let output = || p.stdout() + &p.stderr();
    let missing = || -> Vec<&str> {
        let output = output();
        expected
            .iter()
            .copied()
            .filter(|want| !output.lines().any(|l| l.starts_with(want)))
            .collect()
    };
    if poll(WAIT, || missing().is_empty().then_some(())).is_none() {
        panic!(
            "no output line starts with {:?}; stdout:\n{}",
            missing(),
            p.stdout()
        );
    }
}

/// A backend forked from the preloader gets its label too (its stdout and stderr are pipes
/// handed over with the fork).
#[cfg(target_os = "linux")]
#[test]
fn a_preloaded_backend_in_a_stack_is_prefixed_too() {
    let web_port = free_port();
    let p = Project::stack(&web(&port_text(web_port), "", ""))
        .args(["--preload"])
        .start();
    p.wait_for_version("v1", WAIT);
    p.wait_until("the backend forked from the preloader", WAIT, || {
        p.stderr().lines().any(|l| {
            l.starts_with("devrun[backend]: started generation 1") && l.contains("preloaded")
        })
    });
    p.wait_until("uvicorn's log line from the fork, prefixed", WAIT, || {
        p.stderr().lines().any(|l| l.starts_with("backend | INFO:"))
    });
    assert!(
        !p.stderr().lines().any(|l| l.starts_with("INFO:")),
        "an unprefixed backend line: {}",
        p.stderr()
    );
}

#[test]
fn the_backend_alone_stays_unprefixed() {
    let p = Project::fastapi_app(UVICORN_CONFIG).start();
    p.wait_for_version("v1", WAIT);
    p.wait_until("uvicorn's own log line, unprefixed", WAIT, || {
        p.stderr().lines().any(|l| l.starts_with("INFO:"))
    });
    assert!(
        !p.stderr().lines().any(|l| l.starts_with("backend |")),
        "{}",
        p.stderr()
    );
}

/// A member without a port is ready once started, so a person's saves to its watched file are
/// never taken for a reload loop: four saves, a few seconds apart, give four fresh generations
/// (it used to be "ready" only for the coordinator, and the third save was ignored for good).
#[test]
fn a_portless_member_restarts_fresh_on_every_save() {
    let members = worker("worker", "", r#"watch = ["web/worker.py"]"#);
    let p = Project::stack(&members).start();
    p.wait_for_version("v1", WAIT);
    p.wait_for_member_starts("worker", 1, WAIT);
    let source = std::fs::read_to_string(p.root.join("web/worker.py")).unwrap();
    for save in 1..=4 {
        // A person's pace: the save comes a moment after the last start, never during it.
        std::thread::sleep(std::time::Duration::from_millis(700));
        let saved_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        p.write_atomic("web/worker.py", &format!("{source}\n# save {save}\n"));
        let starts = p.wait_for_member_starts("worker", save + 1, WAIT);
        let fresh = &starts[save];
        assert!(
            fresh.t >= saved_at,
            "save {save}: the worker that started was not started after the save: {fresh:?}"
        );
        assert!(
            fresh.prev_alive.is_empty(),
            "save {save}: the new worker started beside the old one: {fresh:?}"
        );
    }
    let starts = p.member_starts("worker");
    assert!(starts[..4].iter().all(|s| !s.alive()), "{starts:?}");
    assert!(starts[4].alive(), "the last worker is not running");
    // (The backend watches web/worker.py too; its own guard may judge saves during its slow
    // starts on a loaded machine: only the worker's verdict is this test's.)
    assert!(
        !p.stderr().contains("devrun[worker]: reload loop"),
        "{}",
        p.stderr()
    );
}
