//! Issue 11, the state side of a stack: what a dead devrun recorded for every member
//! (`.devrun/state.json`: the backend and `processes`) is judged by `devrun status` and ended by
//! `devrun stop` and the next `devrun`, with the same proofs as the backend (pid *and* start
//! time, leads its own group, the run marker). The state files are written by hand and name real
//! processes the test started (each in a group of its own, as devrun starts members), so these
//! tests need no stack supervisor.

use crate::harness::*;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// A member process: leads its own group, listens on `port` (0: none), optionally keeps a child
/// in its group and a double-forked escapee in a session of its own (both holding the socket),
/// optionally ignores SIGTERM. Every process writes `<role> <pid>` to the pids file.
const MEMBER: &str = r#"
import os, signal, socket, sys, time
port, child, escape, deaf, pids = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3] == "1", sys.argv[4] == "1", sys.argv[5]
if deaf:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if port:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
def note(role):
    with open(pids, "a") as f:
        f.write(f"{role} {os.getpid()}\n")
if child and os.fork() == 0:
    note("child")
    time.sleep(600)
    os._exit(0)
if escape and os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        note("escapee")
        time.sleep(600)
    os._exit(0)
note("leader")
time.sleep(600)
"#;

#[derive(Default, Clone, Copy)]
struct Shape {
    port: u16,
    child: bool,
    escapee: bool,
    /// Ignores SIGTERM (the whole member): only the kill after the grace ends it.
    deaf: bool,
    /// Carries `DEVRUN_RUN=<run>` as devrun's members do.
    marked: bool,
}

/// A live process: pid and start time, so a reused pid never passes for it.
#[derive(Debug, Clone, Copy)]
struct Proc {
    pid: i32,
    start: u64,
}

impl Proc {
    fn of(pid: i32) -> Proc {
        let start = starttime(pid).unwrap_or_else(|| panic!("pid {pid} is gone already"));
        Proc { pid, start }
    }

    fn alive(&self) -> bool {
        alive(self.pid, self.start)
    }
}

/// A member the test started; dropping it kills it and everything it started.
struct Member {
    leader: Proc,
    /// The leader and everything it started, by role.
    all: BTreeMap<String, Proc>,
    _guard: Guard,
}

impl Member {
    fn start(p: &Project, name: &str, run: &str, shape: Shape) -> Member {
        let pids = p.tmp_dir().join(format!("{name}.pids"));
        let script = p.tmp_dir().join("member.py");
        fs::write(&script, MEMBER).unwrap();
        let mut command = Command::new(python());
        command
            .arg(&script)
            .arg(shape.port.to_string())
            .args([shape.child, shape.escapee, shape.deaf].map(|b| if b { "1" } else { "0" }))
            .arg(&pids)
            .stdin(Stdio::null())
            .env_remove(RUN_MARKER);
        if shape.marked {
            command.env(RUN_MARKER, run);
        }
        let guard = Guard::spawn(&format!("member {name}"), &mut command);
        let expected = 1 + usize::from(shape.child) + usize::from(shape.escapee);
        let all = poll(WAIT, || {
            let text = fs::read_to_string(&pids).unwrap_or_default();
            let lines: Vec<(String, i32)> = text
                .lines()
                .filter_map(|l| {
                    let (role, pid) = l.split_once(' ')?;
                    Some((role.to_string(), pid.parse().ok()?))
                })
                .collect();
            (lines.len() == expected).then_some(lines)
        })
        .unwrap_or_else(|| panic!("member {name} did not start its processes"));
        let all: BTreeMap<String, Proc> = all
            .into_iter()
            .map(|(role, pid)| (role, Proc::of(pid)))
            .collect();
        let leader = all["leader"];
        assert_eq!(pgid(leader.pid), leader.pid, "{name} leads no group");
        if shape.port != 0 {
            p.wait_until(&format!("{name} to listen"), WAIT, || {
                listeners(shape.port).contains(&leader.pid)
            });
        }
        Member {
            leader,
            all,
            _guard: guard,
        }
    }

    /// What devrun records for a running generation of it.
    fn record(&self, generation: u32) -> Value {
        generation_record(self.leader, generation)
    }

    fn survivors(&self) -> Vec<(String, i32)> {
        self.all
            .iter()
            .filter(|(_, proc)| proc.alive())
            .map(|(role, proc)| (role.clone(), proc.pid))
            .collect()
    }
}

const RUN_MARKER: &str = "DEVRUN_RUN";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn generation_record(leader: Proc, generation: u32) -> Value {
    json!({
        "pid": leader.pid,
        "pgid": leader.pid,
        "start": leader.start,
        "generation": generation,
        "command": [python(), "member.py"],
        "started_at": now() - 30,
    })
}

/// A run id as devrun makes them (32 hex digits), unique to this test.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:016x}{:016x}", std::process::id(), nanos as u64)
}

/// The pid of a process that has exited: a devrun that died.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    child.id()
}

/// `.devrun/state.json` as a devrun that died would have left it.
fn dead_devrun_state(p: &Project, run: &str, backend: Option<Value>, processes: Value) -> Value {
    json!({
        "devrun_pid": dead_pid(),
        "devrun_start": 1,
        "port": p.port,
        "host": "127.0.0.1",
        "started_at": now() - 60,
        "run": run,
        "backend": backend,
        "processes": processes,
    })
}

/// A project with a config naming its backend port (`$PORT`) and a short grace.
fn project() -> Project {
    let p = Project::empty();
    fs::write(
        p.root.join("devrun.toml"),
        format!(
            "command = \"python app.py\"\nport = {}\n\n[stop]\ntimeout_ms = 500\n",
            p.port
        ),
    )
    .unwrap();
    p
}

fn listener_pids(listeners: &Value) -> Vec<i64> {
    let mut pids: Vec<i64> = listeners
        .as_array()
        .unwrap_or_else(|| panic!("no listeners array: {listeners}"))
        .iter()
        .filter_map(|l| l["pid"].as_i64())
        .collect();
    pids.sort();
    pids
}

/// A backend, a web member with a child in its group and a worker without a port, all marked
/// with the run, recorded by a devrun that died.
struct Stack {
    p: Project,
    web_port: u16,
    backend: Member,
    web: Member,
    worker: Member,
}

impl Stack {
    fn start(shape: Shape) -> Stack {
        let p = project();
        let run = run_id();
        let web_port = free_port();
        let backend = Member::start(
            &p,
            "backend",
            &run,
            Shape {
                port: p.port,
                ..shape
            },
        );
        let web = Member::start(
            &p,
            "web",
            &run,
            Shape {
                port: web_port,
                child: true,
                ..shape
            },
        );
        let worker = Member::start(&p, "worker", &run, Shape { port: 0, ..shape });
        let processes = json!([
            {"name": "web", "port": web_port, "running": web.record(2)},
            {"name": "worker", "port": null, "running": worker.record(1)},
        ]);
        p.write_state(&dead_devrun_state(
            &p,
            &run,
            Some(backend.record(3)),
            processes,
        ));
        Stack {
            p,
            web_port,
            backend,
            web,
            worker,
        }
    }

    fn members(&self) -> [(&str, &Member); 3] {
        [
            ("backend", &self.backend),
            ("web", &self.web),
            ("worker", &self.worker),
        ]
    }

    fn assert_all_gone(&self, after: &str) {
        for (name, m) in self.members() {
            assert_eq!(
                m.survivors(),
                Vec::<(String, i32)>::new(),
                "{after} left processes of {name} running"
            );
        }
        assert_eq!(listeners(self.p.port), Vec::<i32>::new());
        assert_eq!(listeners(self.web_port), Vec::<i32>::new());
    }
}

#[test]
fn status_lists_every_member_and_judges_the_whole_stack() {
    let s = Stack::start(Shape {
        marked: true,
        ..Shape::default()
    });
    let web_child = s.web.all["child"];

    // Every member served by its own processes: exit 0, each listed with pid, port, listeners.
    let (code, report) = status_report(&s.p);
    assert_eq!(code, 0, "status:\n{report:#}");
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["backend"]["pid"], s.backend.leader.pid);
    assert_eq!(report["port"], s.p.port);
    assert_eq!(
        listener_pids(&report["listeners"]),
        [i64::from(s.backend.leader.pid)]
    );
    let web = status_member(&report, "web");
    assert_eq!(web["pid"], s.web.leader.pid);
    assert_eq!(web["port"], s.web_port);
    assert_eq!(web["generation"], 2);
    assert_eq!(web["alive"], true);
    assert!(web["uptime_s"].as_u64().is_some_and(|up| up >= 30), "{web}");
    assert_eq!(
        listener_pids(&web["listeners"]),
        sorted(vec![s.web.leader.pid, web_child.pid])
            .into_iter()
            .map(i64::from)
            .collect::<Vec<_>>()
    );
    assert!(web["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["ours"] == true && l["member"] == "web"));
    assert_eq!(web["verdict"], "ok");
    let worker = status_member(&report, "worker");
    assert_eq!(worker["pid"], s.worker.leader.pid);
    assert_eq!(worker["port"], Value::Null);
    assert_eq!(worker["verdict"], Value::Null);
    assert_eq!(worker["alive"], true);

    // The text form lists them too.
    let mut text = s.p.spawn_devrun(&["status"], "status-text");
    assert_eq!(text.wait_exit(WAIT), 0);
    let listed = numbers_in(&text.stdout());
    for (name, m) in s.members() {
        assert!(
            listed.contains(&i64::from(m.leader.pid)),
            "the text status does not list {name}'s pid:\n{}",
            text.stdout()
        );
    }

    // web's port without a listener: exit 1, and web is the one said to fail.
    let web_leader = s.web.leader;
    for proc in s.web.all.values() {
        unsafe { libc::kill(proc.pid, libc::SIGKILL) };
    }
    s.p.wait_until("web to die", WAIT, || {
        listeners(s.web_port).is_empty() && !web_leader.alive()
    });
    let (code, report) = status_report(&s.p);
    assert_eq!(code, 1, "status:\n{report:#}");
    assert_eq!(report["verdict"], "none");
    assert_eq!(report["backend_verdict"], "ok");
    assert_eq!(status_member(&report, "web")["alive"], false);
    assert_eq!(status_member(&report, "web")["verdict"], "none");

    // Something devrun did not start on web's port: exit 3, named as not ours.
    let foreign = Member::start(
        &s.p,
        "foreign",
        "",
        Shape {
            port: s.web_port,
            ..Shape::default()
        },
    );
    let (code, report) = status_report(&s.p);
    assert_eq!(code, 3, "status:\n{report:#}");
    assert_eq!(report["verdict"], "foreign");
    let web = status_member(&report, "web");
    assert_eq!(web["verdict"], "foreign");
    assert_eq!(
        listener_pids(&web["listeners"]),
        [i64::from(foreign.leader.pid)]
    );
    assert_eq!(web["listeners"][0]["ours"], false);
    let mut text = s.p.spawn_devrun(&["status"], "status-text");
    assert_eq!(text.wait_exit(WAIT), 3);
    assert!(
        text.stdout().contains(&foreign.leader.pid.to_string()),
        "the text status does not name the holder of web's port:\n{}",
        text.stdout()
    );
}

#[test]
fn devrun_stop_ends_every_member_a_dead_devrun_left() {
    let s = Stack::start(Shape {
        marked: true,
        ..Shape::default()
    });
    // The worker's escapee left its group and session: only the run marker finds it.
    let escapee = Member::start(
        &s.p,
        "escaper",
        s.p.read_state()["run"].as_str().unwrap(),
        Shape {
            escapee: true,
            marked: true,
            ..Shape::default()
        },
    );
    assert_ne!(
        pgid(escapee.all["escapee"].pid),
        escapee.leader.pid,
        "the escapee is still in its parent's group"
    );
    // Only its escapee is left of this one; its leader's record is gone with devrun.
    unsafe { libc::kill(escapee.leader.pid, libc::SIGKILL) };
    s.p.wait_until("the escaper's leader to die", WAIT, || {
        !escapee.leader.alive()
    });

    let (code, stderr) = s.p.run_another(["stop"], WAIT);

    assert_eq!(code, 0, "devrun stop said:\n{stderr}");
    s.assert_all_gone("devrun stop");
    assert!(
        !escapee.all["escapee"].alive(),
        "devrun stop left the run's marked escapee running"
    );
    assert!(
        stderr.contains("left running by a devrun that died"),
        "{stderr}"
    );
    assert!(
        !s.p.state_path().exists(),
        "the dead devrun's record is kept"
    );
}

#[test]
fn members_are_ended_by_their_records_alone_even_when_they_ignore_sigterm() {
    // Each ignores SIGTERM: its leader record's group gets the kill. (Each carries the run's
    // marker: on Linux a leader record without it is refused, issue 20.4.)
    let s = Stack::start(Shape {
        deaf: true,
        marked: true,
        ..Shape::default()
    });
    let (code, stderr) = s.p.run_another(["stop"], WAIT);
    assert_eq!(code, 0, "devrun stop said:\n{stderr}");
    s.assert_all_gone("devrun stop");
}

#[test]
fn the_next_devrun_ends_every_member_a_dead_devrun_left_and_serves() {
    let mut p = Project::testapp("normal.py").stop_timeout_ms(500);
    let run = run_id();
    let marked = Shape {
        marked: true,
        ..Shape::default()
    };
    let web_port = free_port();
    let web = Member::start(
        &p,
        "web",
        &run,
        Shape {
            port: web_port,
            child: true,
            ..marked
        },
    );
    let worker = Member::start(&p, "worker", &run, marked);
    let processes = json!([
        {"name": "web", "port": web_port, "running": web.record(1)},
        {"name": "worker", "port": null, "running": worker.record(1)},
    ]);
    p.write_state(&dead_devrun_state(&p, &run, None, processes));

    p = p.start();
    let served = p.wait_for_version("v1", WAIT);

    for (name, m) in [("web", &web), ("worker", &worker)] {
        assert_eq!(
            m.survivors(),
            Vec::<(String, i32)>::new(),
            "the next devrun left processes of {name} running"
        );
    }
    assert_eq!(listeners(web_port), Vec::<i32>::new());
    assert_eq!(p.listeners(), vec![served.pid]);
    assert!(p.running());
}

#[test]
fn a_forged_member_record_is_refused_and_its_process_stays_alive() {
    let p = project();
    let run = run_id();
    let marked = Shape {
        port: p.port,
        marked: true,
        ..Shape::default()
    };
    let backend = Member::start(&p, "backend", &run, marked);
    // Unrelated processes (no run marker): one listening on the port recorded for web, the
    // record naming it with a wrong start time (a reused pid); one leading its own group,
    // recorded with a group that is not its own.
    let web_port = free_port();
    let unrelated = Member::start(
        &p,
        "unrelated",
        "",
        Shape {
            port: web_port,
            ..Shape::default()
        },
    );
    let sleeper = Member::start(&p, "sleeper", "", Shape::default());
    let reused = Proc {
        pid: unrelated.leader.pid,
        start: unrelated.leader.start - 1,
    };
    let mut wrong_group = generation_record(sleeper.leader, 1);
    wrong_group["pgid"] = json!(sleeper.leader.pid + 1);
    let processes = json!([
        {"name": "web", "port": web_port, "running": generation_record(reused, 4)},
        {"name": "worker", "port": null, "running": wrong_group},
    ]);
    p.write_state(&dead_devrun_state(
        &p,
        &run,
        Some(backend.record(2)),
        processes,
    ));

    // status: web's recorded process is not the one alive, so its port's holder is foreign.
    let (code, report) = status_report(&p);
    assert_eq!(code, 3, "status:\n{report:#}");
    assert_eq!(status_member(&report, "web")["alive"], false);
    assert_eq!(status_member(&report, "web")["verdict"], "foreign");

    let (code, stderr) = p.run_another(["stop"], WAIT);

    assert!(
        unrelated.leader.alive(),
        "devrun stop ended pid {} although web's record names another start time:\n{stderr}",
        unrelated.leader.pid
    );
    assert!(
        sleeper.leader.alive(),
        "devrun stop ended pid {} although worker's record names another group:\n{stderr}",
        sleeper.leader.pid
    );
    assert!(!backend.leader.alive(), "the proven backend survived");
    assert!(stderr.contains("nothing was signalled"), "{stderr}");
    // web's port is still held, by a process devrun may not end: exit 3, the holder named.
    assert_eq!(code, 3, "devrun stop said:\n{stderr}");
    assert!(
        numbers_in(&stderr).contains(&i64::from(unrelated.leader.pid)),
        "devrun stop does not name the holder of web's port:\n{stderr}"
    );
}

#[test]
fn a_run_without_the_backend_does_not_judge_or_wait_for_the_backends_port() {
    // `--only web`: the backend's port is someone else's business (here: a foreign listener).
    let p = project();
    let run = run_id();
    let foreign = Member::start(
        &p,
        "foreign",
        "",
        Shape {
            port: p.port,
            ..Shape::default()
        },
    );
    let web_port = free_port();
    let web = Member::start(
        &p,
        "web",
        &run,
        Shape {
            port: web_port,
            marked: true,
            ..Shape::default()
        },
    );
    let mut state = dead_devrun_state(
        &p,
        &run,
        None,
        json!([{"name": "web", "port": web_port, "running": web.record(1)}]),
    );
    state["backend_run"] = json!(false);
    p.write_state(&state);

    let (code, report) = status_report(&p);
    assert_eq!(code, 0, "status:\n{report:#}");
    assert_eq!(report["backend_run"], false);
    assert_eq!(report["backend_verdict"], Value::Null);
    assert_eq!(status_member(&report, "web")["verdict"], "ok");

    let (code, stderr) = p.run_another(["stop"], WAIT);
    assert_eq!(code, 0, "devrun stop said:\n{stderr}");
    assert_eq!(web.survivors(), Vec::<(String, i32)>::new());
    assert!(listeners(web_port).is_empty());
    assert!(
        foreign.leader.alive(),
        "devrun stop ended the foreign holder of the backend's port"
    );

    // Nothing of the stack runs now, whatever holds the backend's port: exit 1.
    p.write_state(&state);
    let (code, report) = status_report(&p);
    assert_eq!(code, 1, "status:\n{report:#}");
    assert_eq!(status_member(&report, "web")["verdict"], "none");
}
