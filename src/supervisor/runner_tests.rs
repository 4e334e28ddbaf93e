//! One runner on its own, driven the way the coordinator drives it (go, changes, requests; the
//! watch's fence answered at once), against real, tiny processes (`sh`, `sleep`): no uvicorn,
//! no port, no watch, so each test takes milliseconds to a second. What a runner decides is
//! checked on the processes (alive or gone, how many generations ran) and on what it tells
//! the coordinator.

#![cfg(unix)]

use super::*;
use crate::cli::RunArgs;
use std::time::{Duration, Instant};

/// Long enough for a loaded machine; every wait ends as soon as its condition holds.
const WAIT: Duration = Duration::from_secs(20);

/// A runner for the port-less `[processes.worker]` of a `devrun.toml` in a temp folder, the
/// coordinator's side of its channels, and what it reported.
struct Bench {
    dir: tempfile::TempDir,
    requests: mpsc::UnboundedSender<Request>,
    changes: mpsc::UnboundedSender<Batch>,
    go: watch::Sender<bool>,
    heard: mpsc::UnboundedReceiver<Up>,
    /// Everything heard so far that a test has not taken.
    log: Vec<Up>,
}

/// A temp project whose `[processes.worker]` runs `then`, and what its runner shares.
fn worker(then: &str, stop_timeout_ms: u64, once: bool) -> (tempfile::TempDir, Rc<Shared>, Member) {
    let dir = tempfile::tempdir().unwrap();
    let script = format!("echo $$ $DEVRUN_GENERATION >> starts; {then}");
    let toml = format!(
        "command = \"unused --port 9\"\n[stop]\ntimeout_ms = {stop_timeout_ms}\n\
         [processes.worker]\ncommand = [\"sh\", \"-c\", {script:?}]\nwatch = [\"worker.py\"]\n"
    );
    std::fs::write(dir.path().join("devrun.toml"), toml).unwrap();
    std::fs::write(dir.path().join("worker.py"), "v = 0\n").unwrap();
    let args = RunArgs {
        config: Some(dir.path().join("devrun.toml")),
        only: vec!["worker".into()],
        once,
        ..RunArgs::default()
    };
    let config = Config::load(&args).unwrap();
    let members = config.members();
    assert_eq!(members.len(), 1);
    let state_dir = config.state_dir();
    let state = State {
        devrun_pid: std::process::id(),
        devrun_start: 0,
        port: config.port,
        host: config.host.clone(),
        started_at: 0,
        run: state::random_id().unwrap(),
        control: None,
        project: Some(state_dir.project()),
        backend: None,
        backend_run: false,
        processes: Vec::new(),
        exited: Default::default(),
        log: None,
    };
    let backend_filter = Filter::new(&config.watch, &config.root).unwrap();
    let shared = Rc::new(Shared {
        stack: false,
        backend_filter,
        config,
        state_dir,
        state: RefCell::new(state),
    });
    (dir, shared, members[0].clone())
}

/// The worker writes its pid and generation (`pid generation`, a line per start) to `starts`,
/// then runs `then` (`exec sleep 600` by default: it runs until stopped).
fn bench(then: &str, stop_timeout_ms: u64, once: bool) -> Bench {
    let (dir, shared, member) = worker(then, stop_timeout_ms, once);
    let (requests, requests_rx) = mpsc::unbounded_channel();
    let (changes, changes_rx) = mpsc::unbounded_channel();
    let (go, go_rx) = watch::channel(false);
    let (up, mut up_rx) = mpsc::unbounded_channel();
    let (heard_tx, heard) = mpsc::unbounded_channel();
    let ui = Ui::new(crate::ui::ColorChoice::Never, true);
    let wiring = Wiring {
        member,
        label: None,
        index: 0,
        ui,
        requests: Requests { rx: requests_rx },
        changes: Changes::new(changes_rx, up),
        go: go_rx,
        typed: None,
    };
    tokio::task::spawn_local(Runner::new(shared, wiring).run());
    // The coordinator's part of the fence: nothing more is queued, and every write is done.
    tokio::task::spawn_local(async move {
        while let Some(message) = up_rx.recv().await {
            match message {
                Up::Sync(reply) => {
                    let _ = reply.send(true);
                }
                other => {
                    let _ = heard_tx.send(other);
                }
            }
        }
    });
    Bench {
        dir,
        requests,
        changes,
        go,
        heard,
        log: Vec::new(),
    }
}

impl Bench {
    /// `(pid, generation)` of every start so far.
    fn starts(&self) -> Vec<(i32, u32)> {
        let text = std::fs::read_to_string(self.dir.path().join("starts")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (pid, generation) = l.split_once(' ')?;
                Some((pid.parse().ok()?, generation.parse().ok()?))
            })
            .collect()
    }

    /// Waits until `n` generations have started; their starts.
    async fn wait_starts(&self, n: usize) -> Vec<(i32, u32)> {
        let deadline = Instant::now() + WAIT;
        loop {
            let starts = self.starts();
            if starts.len() >= n {
                return starts;
            }
            assert!(
                Instant::now() < deadline,
                "{n} starts never came: {starts:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the first message `wanted` picks out (earlier ones are kept in `log`).
    async fn wait_for<T>(&mut self, what: &str, wanted: impl Fn(&Up) -> Option<T>) -> T {
        if let Some(found) = self.log.iter().find_map(&wanted) {
            return found;
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.heard.recv()).await {
                Ok(Some(message)) => {
                    let found = wanted(&message);
                    self.log.push(message);
                    if let Some(found) = found {
                        return found;
                    }
                }
                Ok(None) => panic!("the runner is gone before {what}"),
                Err(_) => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    async fn wait_done(&mut self) -> Result<(), String> {
        self.wait_for("Done", |m| match m {
            Up::Done(_, result) => Some(result.as_ref().map(|_| ()).map_err(|e| e.to_string())),
            _ => None,
        })
        .await
    }

    /// Waits until `n` generations were reported ready.
    async fn wait_readies(&mut self, n: usize) {
        while self.readies() < n {
            let message = tokio::time::timeout(WAIT, self.heard.recv()).await;
            match message {
                Ok(Some(message)) => self.log.push(message),
                _ => panic!("{n} Ready never came: {} heard", self.readies()),
            }
        }
    }

    fn readies(&self) -> usize {
        self.log
            .iter()
            .filter(|m| matches!(m, Up::Ready(_)))
            .count()
    }

    /// A save of worker.py with new content, as the watch would deliver it.
    fn save(&self, content: &str) {
        let path = self.dir.path().join("worker.py");
        std::fs::write(&path, content).unwrap();
        let batch = Batch {
            paths: vec![path],
            last_at: Instant::now(),
            finished: true,
        };
        self.changes.send(batch).unwrap();
    }
}

/// A failing test leaves nothing running: each generation led its own group. (A passing one
/// has stopped them all; their pids may be reused by then.)
impl Drop for Bench {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (pid, _) in self.starts() {
            // SAFETY: kill has no memory preconditions; a group that is gone is ESRCH.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

fn alive(pid: i32) -> bool {
    // A zombie is gone for our purposes; the runner reaps its own children.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

/// Runs `test` on a LocalSet, as the supervisor runs its runners.
fn local<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
    let _alone = crate::children_lock();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&runtime, test());
}

/// Issue 18's bug: a member without a port is ready as soon as it started, so four saves a
/// person's pace apart are four fresh generations, never a "reload loop" that ignores them.
#[test]
fn a_portless_member_is_ready_when_started_and_every_save_restarts_it() {
    local(|| async {
        let mut b = bench("exec sleep 600", 5000, false);
        b.wait_for("Claimed", |m| matches!(m, Up::Claimed(0)).then_some(()))
            .await;
        b.go.send(true).unwrap();
        b.wait_for("Ready", |m| matches!(m, Up::Ready(0)).then_some(()))
            .await;
        for save in 1..=4 {
            b.wait_starts(save).await;
            b.save(&format!("v = {save}\n"));
            b.wait_for("Restarting", |m| {
                matches!(m, Up::Restarting(0)).then_some(())
            })
            .await;
            b.log.retain(|m| !matches!(m, Up::Restarting(_)));
        }
        let starts = b.wait_starts(5).await;
        let generations: Vec<u32> = starts.iter().map(|s| s.1).collect();
        assert_eq!(generations, [1, 2, 3, 4, 5]);
        // Only the last is alive: each was confirmed gone before the next started.
        for (pid, _) in &starts[..4] {
            assert!(!alive(*pid), "pid {pid} survived its restart");
        }
        let last = starts[4].0;
        assert!(alive(last));
        b.wait_readies(5).await;
        b.requests.send(Request::Stop("test")).unwrap();
        assert_eq!(b.wait_done().await, Ok(()));
        assert!(!alive(last));
    });
}

/// A second shutdown request during a stop kills the group at once instead of waiting out
/// the grace time (here 60 s, against a generation that ignores SIGTERM).
#[test]
fn a_second_shutdown_during_a_stop_kills_at_once() {
    local(|| async {
        let mut b = bench("trap '' TERM; while :; do sleep 1; done", 60_000, false);
        b.go.send(true).unwrap();
        b.wait_for("Ready", |m| matches!(m, Up::Ready(0)).then_some(()))
            .await;
        let pid = b.wait_starts(1).await[0].0;
        let asked = Instant::now();
        b.requests.send(Request::Stop("first")).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(alive(pid), "the deaf generation died of a SIGTERM");
        b.requests.send(Request::Stop("second")).unwrap();
        assert_eq!(b.wait_done().await, Ok(()));
        assert!(!alive(pid));
        assert!(
            asked.elapsed() < Duration::from_secs(60),
            "the second request did not cut the grace time short"
        );
    });
}

/// A generation that exits on its own while a restart is under way is not stopped twice and
/// not reported as a failure of the run: the next generation starts and serves.
#[test]
fn a_crash_while_a_restart_is_asked_still_starts_the_next_generation() {
    local(|| async {
        // Generation 1 exits as soon as it gets SIGTERM... and so on its own (exit 3) too.
        let mut b = bench("trap 'exit 3' TERM; sleep 600 & wait", 5000, false);
        b.go.send(true).unwrap();
        b.wait_for("Ready", |m| matches!(m, Up::Ready(0)).then_some(()))
            .await;
        let first = b.wait_starts(1).await[0].0;
        // The crash and the request land together.
        unsafe { libc::kill(first, libc::SIGTERM) };
        b.requests.send(Request::Restart("test")).unwrap();
        let starts = b.wait_starts(2).await;
        assert!(!alive(first));
        assert!(alive(starts[1].0));
        b.requests.send(Request::Stop("test")).unwrap();
        assert_eq!(b.wait_done().await, Ok(()));
        assert!(!alive(starts[1].0));
    });
}

/// `--once`: a port-less member is ready when started; the coordinator's stop then tears it
/// down, and the runner ends without an error.
#[test]
fn once_a_portless_member_is_ready_at_start_and_torn_down_on_the_stop() {
    local(|| async {
        let mut b = bench("exec sleep 600", 5000, true);
        b.go.send(true).unwrap();
        b.wait_for("Ready", |m| matches!(m, Up::Ready(0)).then_some(()))
            .await;
        let pid = b.wait_starts(1).await[0].0;
        assert!(alive(pid));
        b.requests.send(Request::Stop(ONCE_DONE)).unwrap();
        assert_eq!(b.wait_done().await, Ok(()));
        assert!(!alive(pid));
        assert_eq!(b.readies(), 1);
        assert!(
            !b.log.iter().any(|m| matches!(m, Up::Failed(..))),
            "--once failed"
        );
    });
}

/// `--once`: a member that exits before the stop fails the run, naming the exit.
#[test]
fn once_a_member_that_exits_fails_the_run() {
    local(|| async {
        let mut b = bench("exit 7", 5000, true);
        b.go.send(true).unwrap();
        let why = b
            .wait_for("Failed", |m| match m {
                Up::Failed(0, e) => Some(e.to_string()),
                _ => None,
            })
            .await;
        assert!(why.contains("code 7") || why.contains("status 7"), "{why}");
        // The runner ended on its own (a failed `--once` has nothing left to stop).
        let _ = b.requests.send(Request::Stop(ONCE_ABORT));
        assert_eq!(b.wait_done().await, Ok(()));
    });
}

/// Stopped before its turn: nothing ever started.
#[test]
fn a_shutdown_before_the_go_starts_nothing() {
    local(|| async {
        let mut b = bench("exec sleep 600", 5000, false);
        b.wait_for("Claimed", |m| matches!(m, Up::Claimed(0)).then_some(()))
            .await;
        b.requests.send(Request::Stop("test")).unwrap();
        assert_eq!(b.wait_done().await, Ok(()));
        assert!(b.starts().is_empty());
    });
}
