//! The coordinator's decisions on real channels, without a process: start order, `--once`'s
//! verdict and teardown, `restart_with` fan-out, a member that cannot go on, change routing.

use super::*;
use std::time::Instant;

/// What a runner would receive from the coordinator.
struct Probe {
    requests: mpsc::UnboundedReceiver<Request>,
    changes: mpsc::UnboundedReceiver<Batch>,
    go: watch::Receiver<bool>,
}

impl Probe {
    fn requests(&mut self) -> Vec<Request> {
        std::iter::from_fn(|| self.requests.try_recv().ok()).collect()
    }

    fn released(&self) -> bool {
        *self.go.borrow()
    }
}

/// A coordinator over members `(name, after (indices), watch)`, and each one's probe.
fn coordinator(
    members: &[(&str, &[usize], ProcessWatch)],
    once: bool,
) -> (Coordinator, Vec<Probe>) {
    let mut handles = Vec::new();
    let mut probes = Vec::new();
    for (name, after, watch_what) in members {
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let (go, go_rx) = watch::channel(false);
        handles.push(Handle {
            name: name.to_string(),
            requests,
            changes,
            go,
            after: after.to_vec(),
            restarted_with_it: Vec::new(),
            watch: watch_what.clone(),
            progress: Progress::Claiming,
            done: false,
        });
        probes.push(Probe {
            requests: requests_rx,
            changes: changes_rx,
            go: go_rx,
        });
    }
    let ui = Ui::new(crate::ui::ColorChoice::Never, true);
    let coordinator = Coordinator {
        handles,
        ui,
        once,
        stopping: false,
        error: None,
        config_file: None,
        imports: super::imports::Imports::new(std::path::Path::new("/")),
    };
    (coordinator, probes)
}

const NONE: ProcessWatch = ProcessWatch::None;

#[test]
fn nothing_starts_before_every_port_is_claimed_then_after_waits_for_ready() {
    let (mut c, probes) = coordinator(
        &[
            ("backend", &[], NONE),
            ("worker", &[], NONE),
            ("web", &[0], NONE),
        ],
        false,
    );
    c.take(Up::Claimed(0));
    c.take(Up::Claimed(2));
    assert!(
        probes.iter().all(|p| !p.released()),
        "started before worker's port was free"
    );
    c.take(Up::Claimed(1));
    assert!(probes[0].released() && probes[1].released());
    assert!(
        !probes[2].released(),
        "web started before the backend was ready"
    );
    c.take(Up::Ready(1));
    assert!(
        !probes[2].released(),
        "web started on another member's readiness"
    );
    c.take(Up::Ready(0));
    assert!(probes[2].released());
}

#[test]
fn once_tears_everything_down_when_all_are_ready() {
    let (mut c, mut probes) = coordinator(&[("backend", &[], NONE), ("worker", &[0], NONE)], true);
    for i in 0..2 {
        c.take(Up::Claimed(i));
    }
    c.take(Up::Ready(0));
    assert!(probes.iter_mut().all(|p| p.requests().is_empty()));
    c.take(Up::Ready(1));
    for probe in &mut probes {
        assert_eq!(probe.requests(), [Request::Stop(ONCE_DONE)]);
    }
    for i in 0..2 {
        c.take(Up::Done(i, Ok(())));
    }
    assert!(c.finish().is_ok());
}

#[test]
fn once_failure_stops_the_others_once_and_is_the_verdict() {
    let members: &[(&str, &[usize], ProcessWatch)] = &[
        ("backend", &[], NONE),
        ("web", &[0], NONE),
        ("worker", &[], NONE),
    ];
    let (mut c, mut probes) = coordinator(members, true);
    for i in 0..3 {
        c.take(Up::Claimed(i));
    }
    c.take(Up::Failed(
        0,
        Error::BackendFailed("backend exited early".into()),
    ));
    // The one that failed tears itself down: a request would read as a second Ctrl-C.
    assert!(probes[0].requests().is_empty());
    assert_eq!(probes[1].requests(), [Request::Stop(ONCE_ABORT)]);
    assert_eq!(probes[2].requests(), [Request::Stop(ONCE_ABORT)]);
    assert!(
        !probes[1].released(),
        "web started after the stack was torn down"
    );
    c.take(Up::Ready(2));
    for i in 0..3 {
        c.take(Up::Done(i, Ok(())));
    }
    let error = c.finish().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("backend exited early"), "{error}");
}

#[test]
fn once_stopped_before_every_member_was_ready_names_the_missing_ones() {
    let (mut c, _probes) = coordinator(&[("backend", &[], NONE), ("web", &[0], NONE)], true);
    c.take(Up::Claimed(0));
    c.take(Up::Claimed(1));
    c.forward(Request::Stop("interrupted"));
    c.take(Up::Done(0, Ok(())));
    c.take(Up::Done(1, Ok(())));
    let error = c.finish().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        error.contains("stopped before backend, web started"),
        "{error}"
    );
}

#[test]
fn restart_with_fans_out_to_the_members_that_name_it() {
    let (mut c, mut probes) = coordinator(
        &[
            ("backend", &[], NONE),
            ("e2e", &[0], NONE),
            ("plain", &[0], NONE),
        ],
        false,
    );
    c.handles[0].restarted_with_it.push(1);
    c.take(Up::Restarting(0));
    assert_eq!(probes[1].requests(), [Request::Restart(RESTART_WITH)]);
    assert!(probes[2].requests().is_empty());
    assert!(probes[0].requests().is_empty());
}

#[test]
fn a_member_that_cannot_go_on_stops_the_rest_once_and_nothing_starts_after() {
    let (mut c, mut probes) = coordinator(&[("backend", &[], NONE), ("web", &[0], NONE)], false);
    c.take(Up::Claimed(0));
    c.take(Up::Done(1, Err(Error::Port("port 5173 is held".into()))));
    assert_eq!(probes[0].requests(), [Request::Stop(MEMBER_FAILED)]);
    assert!(probes[1].requests().is_empty(), "a done member was asked");
    c.take(Up::Done(0, Ok(())));
    assert!(!probes[0].released(), "started after a member failed");
    assert!(c.finish().is_err());
}

#[test]
fn a_batch_reaches_only_the_members_whose_watch_wants_it() {
    let root = std::env::temp_dir().join("devrun-coordinator-test");
    let web_config = root.join("web/vite.config.ts");
    let members: &[(&str, &[usize], ProcessWatch)] = &[
        ("backend", &[], ProcessWatch::Backend),
        ("web", &[], ProcessWatch::Paths(vec![web_config.clone()])),
        ("idle", &[], NONE),
    ];
    let (mut c, mut probes) = coordinator(members, false);
    let watch_config = crate::config::WatchConfig {
        paths: vec![root.clone()],
        include: vec!["**/*.py".into()],
        ignore: Vec::new(),
        gitignore: false,
        debounce: std::time::Duration::from_millis(50),
        also: Vec::new(),
        poll: crate::config::PollMode::Never,
        poll_interval: std::time::Duration::from_millis(500),
    };
    let Ok(filter) = Filter::new(&watch_config, &root) else {
        panic!("the filter does not build");
    };
    let batch = Batch {
        paths: vec![root.join("app/main.py"), web_config.clone()],
        last_at: Instant::now(),
        finished: false,
    };
    c.route(batch, &filter);
    let got = |probe: &mut Probe| probe.changes.try_recv().ok().map(|b| b.paths);
    assert_eq!(got(&mut probes[0]), Some(vec![root.join("app/main.py")]));
    assert_eq!(got(&mut probes[1]), Some(vec![web_config]));
    assert_eq!(got(&mut probes[2]), None);
}
