//! The integration-test harness: one [`Project`] per test.
//!
//! A `Project` is a temp folder with a fixture from `fixtures/` copied in and a `devrun.toml`,
//! plus the real `devrun` binary running in it. Everything is observed from outside: HTTP answers
//! on the port, `/proc`, and the record file every fixture process appends a JSON line to when it
//! starts (see `fixtures/testapp/fixture.py`).
//!
//! ```text
//! <tmp>/project/       the fixture copy and devrun.toml: devrun's cwd, the watched tree
//! <tmp>/record.jsonl   DEVRUN_TEST_RECORD, outside the watched tree so writes never reload
//! <tmp>/stderr.log     devrun's stderr (status lines and the backend's stderr)
//! <tmp>/stdout.log     the backend's stdout
//! ```
//!
//! Every process started for a project carries `DEVRUN_TEST_TAG=<unique>` in its environment.
//! Dropping the `Project` SIGKILLs devrun and then every process with that tag, so nothing leaks
//! even when a test panics (and a panicking test prints devrun's stderr and the record).
//! Processes a test starts beside it (a second devrun, a foreign server, a driver) are a
//! [`Guard`]: a tag of their own, killed the same way when the guard drops.
//!
//! Knobs for what tests vary: [`Project::testapp`] (which fixture script), [`Project::config`]
//! (a whole `devrun.toml`), [`Project::stop_timeout_ms`], [`Project::config_also`] (a section
//! added to the config), [`Project::args`], [`Project::env`], [`Project::python`].
//!
//! Stacks (a backend plus `[processes.NAME]` members): [`Project::stack`] puts the FastAPI
//! backend at the root and `fixtures/stack` (a stand-in dev server and worker) in `web/`; the
//! members append their starts to `$RECORDS/NAME.jsonl` ([`Project::member_starts`]).

use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub use libc::{SIGHUP, SIGINT, SIGKILL, SIGTERM};

/// Upper bound for waiting on a condition. Never a speed requirement: most waits end in well
/// under a second, this only bounds how long a broken build takes to fail.
pub const WAIT: Duration = Duration::from_secs(20);

/// How long a test watches for something that must *not* happen (a restart after an ignored
/// change, a restart loop after a crash).
pub const QUIET: Duration = Duration::from_secs(1);

/// The config most tests use: one entry script of `fixtures/testapp`, default everything else
/// except a short debounce. Knobs fill in `$DEBOUNCE` ([`Project::debounce_ms`]) and `$WATCH`
/// ([`Project::watch`]); [`Project::config_also`] adds sections after it.
/// The FastAPI fixture under real uvicorn (no --reload), `{port}` filled in by devrun.
pub const UVICORN_CONFIG: &str = r#"
command = ["$PYTHON", "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", "{port}"]
port = $PORT

[watch]
debounce_ms = 50

[ready]
http = "/health"
"#;

const TESTAPP_CONFIG: &str = r#"
command = ["$PYTHON", "$SCRIPT"]
port = $PORT

[watch]
debounce_ms = $DEBOUNCE
$WATCH"#;

/// The interpreter for the fixtures: `DEVRUN_TEST_PYTHON` (set by `scripts/test`), else `python3`.
pub fn python() -> String {
    std::env::var("DEVRUN_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// The interpreter for the FastAPI fixture. Panics (never skips) when there is none.
pub fn fastapi_python() -> String {
    let python = std::env::var("DEVRUN_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "DEVRUN_TEST_PYTHON is not set: the FastAPI tests need a Python with fastapi and \
             uvicorn installed. Run `scripts/test`, which creates one in .venv-test."
        )
    });
    let ok = Command::new(&python)
        .args(["-c", "import fastapi, uvicorn"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "DEVRUN_TEST_PYTHON={python} cannot import fastapi and uvicorn"
    );
    python
}

/// `version.py` contents for a version string.
pub fn version_py(version: &str) -> String {
    format!("VERSION = {version:?}\n")
}

/// A fixture project, before and after devrun is started in it.
pub struct Project {
    tmp: tempfile::TempDir,
    /// The project folder: fixture copy, `devrun.toml`, devrun's cwd.
    pub root: PathBuf,
    /// A port that was free when the project was made; `$PORT` in the config and arguments.
    pub port: u16,
    python: String,
    config: Option<String>,
    debounce_ms: u64,
    watch: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    tag: String,
    record: PathBuf,
    stderr: PathBuf,
    stdout: PathBuf,
    child: Option<Child>,
}

/// What `GET /` answered, and the start time of the pid that answered (so `alive()` can never
/// be fooled by a reused pid).
#[derive(Debug, Clone)]
pub struct Served {
    pub version: String,
    pub pid: i32,
    pub generation: Option<u64>,
    pub starttime: Option<u64>,
}

impl Served {
    pub fn alive(&self) -> bool {
        self.starttime.is_some_and(|t| alive(self.pid, t))
    }
}

/// One line of the record file: a fixture process starting (`event == "start"`) or a child
/// process of one (`event == "child"`).
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    pub event: String,
    pub pid: i32,
    pub starttime: Option<u64>,
    pub generation: Option<u64>,
    pub version: Option<String>,
    /// Pids of earlier record lines still alive when this process started.
    #[serde(default)]
    pub prev_alive: Vec<i32>,
    /// Whether the port could be bound when this process started, just before it bound it.
    pub port_free: Option<bool>,
    pub env_dontwrite: Option<String>,
    pub app_env: Option<String>,
    pub cwd: Option<PathBuf>,
    pub parent: Option<i32>,
}

impl Record {
    pub fn alive(&self) -> bool {
        self.starttime.is_some_and(|t| alive(self.pid, t))
    }
}

impl Project {
    /// A temp project with `fixtures/<fixture>` copied in. No config yet.
    pub fn new(fixture: &str) -> Project {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let tmp = tempfile::Builder::new()
            .prefix("devrun-test-")
            .tempdir()
            .unwrap();
        let root = tmp.path().join("project");
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(fixture);
        if fixture == "empty" {
            fs::create_dir_all(&root).unwrap();
        } else {
            copy_dir(&source, &root);
        }
        let tag = format!(
            "{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            fixture
        );
        Project {
            root,
            port: free_port(),
            python: python(),
            config: None,
            debounce_ms: 50,
            watch: String::new(),
            args: Vec::new(),
            env: Vec::new(),
            tag,
            record: tmp.path().join("record.jsonl"),
            stderr: tmp.path().join("stderr.log"),
            stdout: tmp.path().join("stdout.log"),
            child: None,
            tmp,
        }
    }

    /// An empty project folder (for `devrun init`). No config.
    pub fn empty() -> Project {
        Project::new("empty")
    }

    /// `fixtures/fastapi_app` on the interpreter with fastapi and uvicorn, with `toml` as config.
    pub fn fastapi_app(toml: &str) -> Project {
        Project::new("fastapi_app")
            .python(&fastapi_python())
            .config(toml)
    }

    /// `fixtures/testapp` with the default config running `script`.
    pub fn testapp(script: &str) -> Project {
        Project::new("testapp").config(&TESTAPP_CONFIG.replace("$SCRIPT", script))
    }

    /// The `devrun.toml` to write, with `$PYTHON` and `$PORT` filled in when devrun starts.
    /// One leading newline is dropped, so line 1 is the line after `r#"`.
    pub fn config(mut self, toml: &str) -> Project {
        self.config = Some(toml.strip_prefix('\n').unwrap_or(toml).to_string());
        self
    }

    /// Adds `toml` (a section, say) at the end of the config.
    pub fn config_also(mut self, toml: &str) -> Project {
        let config = self.config.get_or_insert_with(String::new);
        config.push('\n');
        config.push_str(toml.strip_prefix('\n').unwrap_or(toml));
        self
    }

    /// `[watch] debounce_ms` of the testapp config (default 50).
    pub fn debounce_ms(mut self, ms: u64) -> Project {
        self.debounce_ms = ms;
        self
    }

    /// A `key = value` line for the `[watch]` table of the testapp config.
    pub fn watch(mut self, line: &str) -> Project {
        self.watch.push_str(line);
        self.watch.push('\n');
        self
    }

    /// `[stop] timeout_ms`: how long devrun waits after the stop signal before it kills the group.
    pub fn stop_timeout_ms(self, ms: u64) -> Project {
        self.config_also(&format!("[stop]\ntimeout_ms = {ms}\n"))
    }

    /// The interpreter `$PYTHON` stands for (default: [`python()`]).
    pub fn python(mut self, python: &str) -> Project {
        self.python = python.to_string();
        self
    }

    /// Command-line arguments for devrun (`$PYTHON` and `$PORT` are filled in).
    pub fn args<const N: usize>(mut self, args: [&str; N]) -> Project {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// An environment variable for devrun, and so for the backend.
    pub fn env(mut self, key: &str, value: &str) -> Project {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    fn fill_in(&self, text: &str) -> String {
        text.replace("$PYTHON", &self.python)
            .replace("$PORT", &self.port.to_string())
            .replace("$DEBOUNCE", &self.debounce_ms.to_string())
            .replace("$WATCH", &self.watch)
            .replace("$RECORDS", &self.tmp.path().to_string_lossy())
    }

    fn command(&self, args: &[String], stdout: File, stderr: File) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_devrun"));
        cmd.args(args.iter().map(|a| self.fill_in(a)))
            .current_dir(&self.root)
            .env_remove("PORT")
            .env_remove("DEVRUN_GENERATION")
            .env("NO_COLOR", "1")
            .env("DEVRUN_TEST_TAG", &self.tag)
            .env("DEVRUN_TEST_RECORD", &self.record)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        cmd
    }

    /// Writes the config and starts devrun in its own process group.
    pub fn start(self) -> Project {
        self.start_with(|_| {})
    }

    /// Like [`Project::start`], with a last say over devrun's command: run it as another user,
    /// give it a stderr nobody reads, …
    pub fn start_with(mut self, customize: impl FnOnce(&mut Command)) -> Project {
        self = self.written();
        self.spawn(customize);
        self
    }

    /// Writes the config, starting nothing (for commands that start devrun themselves).
    pub fn written(self) -> Project {
        if let Some(config) = &self.config {
            fs::write(self.root.join("devrun.toml"), self.fill_in(config)).unwrap();
        }
        self
    }

    fn spawn(&mut self, customize: impl FnOnce(&mut Command)) {
        let log = |path: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let mut command = self.command(&self.args, log(&self.stdout), log(&self.stderr));
        customize(&mut command);
        self.child = Some(command.spawn().expect("cannot start the devrun binary"));
    }

    /// SIGKILLs devrun and its watchdog (as an OOM kill of both, or a reboot's, would), leaving
    /// its backend be: what is left is for the next devrun or `devrun stop` to end.
    pub fn kill_devrun(&mut self) {
        if let Some(watchdog) = self.watchdog() {
            unsafe { libc::kill(watchdog, SIGKILL) };
        }
        self.kill_devrun_only();
    }

    /// SIGKILLs devrun alone (`kill -9 <devrun>`): its watchdog lives on.
    pub fn kill_devrun_only(&mut self) {
        self.child().kill().unwrap();
        self.child().wait().unwrap();
    }

    /// The pid of devrun's watchdog (`devrun __watchdog`, a child of devrun), if it has one.
    pub fn watchdog(&self) -> Option<i32> {
        let devrun = self.pid();
        poll(WAIT, || {
            fs::read_dir("/proc")
                .ok()?
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .find(|&pid| {
                    parent_of(pid) == Some(devrun)
                        && fs::read(format!("/proc/{pid}/cmdline"))
                            .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"__watchdog"))
                })
        })
    }

    /// Starts devrun again in the same project, with the same arguments.
    pub fn restart_devrun(&mut self) {
        assert!(!self.running(), "devrun is still running");
        self.spawn(|_| {});
    }

    /// Runs a second devrun in the same project to completion: (exit code, its stderr).
    pub fn run_another<const N: usize>(&self, args: [&str; N], timeout: Duration) -> (i32, String) {
        let mut another = self.spawn_devrun(&args, "another");
        let code = another.wait_exit(timeout);
        (code, another.stderr())
    }

    /// Starts another devrun in the project's folder beside the harness's one, with a tag of its
    /// own; its backends record their starts in this project's record file.
    pub fn spawn_devrun(&self, args: &[&str], name: &str) -> Guard {
        self.spawn_devrun_with_env(args, &[], name)
    }

    /// [`Project::spawn_devrun`] with more environment (`XDG_RUNTIME_DIR`, …).
    pub fn spawn_devrun_with_env(&self, args: &[&str], env: &[(&str, &Path)], name: &str) -> Guard {
        let n = SPAWNED.fetch_add(1, Ordering::SeqCst);
        let stdout = self.tmp.path().join(format!("{name}-{n}.stdout.log"));
        let stderr = self.tmp.path().join(format!("{name}-{n}.stderr.log"));
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut command = self.command(
            &args,
            File::create(&stdout).unwrap(),
            File::create(&stderr).unwrap(),
        );
        command.envs(env.iter().copied());
        Guard::spawn(&format!("devrun {}", args.join(" ")), &mut command).with_logs(stdout, stderr)
    }

    /// Runs devrun to its end (in `cwd`, else the project folder) with this project's own tag,
    /// so what it leaves running in the background (`devrun up`) is ended with the project:
    /// its exit code, stdout and stderr.
    pub fn run_tagged(&self, cwd: Option<&Path>, args: &[&str]) -> (i32, String, String) {
        let n = SPAWNED.fetch_add(1, Ordering::SeqCst);
        let stdout = self.tmp.path().join(format!("tagged-{n}.stdout.log"));
        let stderr = self.tmp.path().join(format!("tagged-{n}.stderr.log"));
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut command = self.command(
            &args,
            File::create(&stdout).unwrap(),
            File::create(&stderr).unwrap(),
        );
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().expect("cannot start the devrun binary");
        let status = poll(WAIT * 3, || child.try_wait().unwrap());
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("devrun {args:?} did not exit within {:?}", WAIT * 3);
        };
        (
            status.code().unwrap_or(-1),
            fs::read_to_string(stdout).unwrap_or_default(),
            fs::read_to_string(stderr).unwrap_or_default(),
        )
    }

    /// The project's temp folder (the root's parent): record file and logs live there.
    pub fn tmp_dir(&self) -> &Path {
        self.tmp.path()
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("devrun was not started")
    }

    /// devrun's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("devrun was not started").id() as i32
    }

    /// Is devrun still running?
    pub fn running(&mut self) -> bool {
        self.child().try_wait().unwrap().is_none()
    }

    /// Sends a signal to devrun (only to devrun, not to its group).
    pub fn signal(&self, signal: i32) {
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0, "kill failed");
    }

    /// Waits for devrun to exit and returns its exit code. Panics on a timeout or a signal.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        wait_child(self.child(), timeout, "devrun")
    }

    /// The backend's stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// devrun's stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    // ---- HTTP ----

    /// `GET path` on the project's port: (status, body), or None if nothing answered.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    /// What `GET /` answers right now, if anything.
    pub fn served(&self) -> Option<Served> {
        #[derive(Deserialize)]
        struct Body {
            version: String,
            pid: i32,
            generation: Option<u64>,
        }
        let (status, body) = self.get("/")?;
        let body: Body = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        Some(Served {
            starttime: starttime(body.pid),
            version: body.version,
            pid: body.pid,
            generation: body.generation,
        })
    }

    /// Waits until `GET /` answers with `version`.
    pub fn wait_for_version(&self, version: &str, timeout: Duration) -> Served {
        let mut last = None;
        let found = poll(timeout, || {
            last = self.served();
            last.clone().filter(|s| s.version == version)
        });
        found.unwrap_or_else(|| {
            panic!("GET / did not answer version {version:?} within {timeout:?}; last answer: {last:?}")
        })
    }

    // ---- records ----

    /// Every complete line of the record file.
    pub fn records(&self) -> Vec<Record> {
        let text = fs::read_to_string(&self.record).unwrap_or_default();
        text.split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .map(|line| serde_json::from_str(line).expect("bad record line"))
            .collect()
    }

    /// The start lines: one per backend process started, in order.
    pub fn starts(&self) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|r| r.event == "start")
            .collect()
    }

    /// Waits until at least `n` backends have started; returns the start lines.
    pub fn wait_for_starts(&self, n: usize, timeout: Duration) -> Vec<Record> {
        poll(timeout, || Some(self.starts()).filter(|s| s.len() >= n))
            .unwrap_or_else(|| panic!("{n} backend start(s) not recorded within {timeout:?}"))
    }

    /// Waits for the record line of a child process of `parent`.
    pub fn wait_for_child_of(&self, parent: i32, timeout: Duration) -> Record {
        poll(timeout, || {
            self.records()
                .into_iter()
                .find(|r| r.event == "child" && r.parent == Some(parent))
        })
        .unwrap_or_else(|| panic!("no child of pid {parent} recorded within {timeout:?}"))
    }

    /// Waits until no backend has started for [`QUIET`] (no restart pending); returns the starts.
    pub fn settle(&self) -> Vec<Record> {
        let deadline = Instant::now() + WAIT;
        let mut count = self.starts().len();
        let mut since = Instant::now();
        while since.elapsed() < QUIET {
            assert!(
                Instant::now() < deadline,
                "backends kept starting for {WAIT:?}"
            );
            sleep(Duration::from_millis(50));
            let now = self.starts().len();
            if now != count {
                (count, since) = (now, Instant::now());
            }
        }
        self.starts()
    }

    /// Invariant 2, checked by each backend as it started: no process of an earlier generation
    /// was alive and the port was free.
    pub fn assert_every_start_was_alone(&self) {
        for start in self.starts() {
            assert!(
                start.prev_alive.is_empty(),
                "generation {:?} (pid {}) started while earlier processes {:?} were alive",
                start.generation,
                start.pid,
                start.prev_alive
            );
            assert_eq!(
                start.port_free,
                Some(true),
                "generation {:?} (pid {}) started while port {} was held",
                start.generation,
                start.pid,
                self.port
            );
        }
    }

    // ---- processes and the port ----

    /// Pids of the processes listening on the project's port.
    pub fn listeners(&self) -> Vec<i32> {
        listeners(self.port)
    }

    /// Can the port be bound right now (and nothing listens on it)?
    pub fn port_free(&self) -> bool {
        self.listeners().is_empty() && TcpListener::bind((Ipv4Addr::LOCALHOST, self.port)).is_ok()
    }

    /// Live (non-zombie) processes carrying this project's tag, devrun included.
    pub fn tagged_processes(&self) -> Vec<i32> {
        tagged(&self.tag).into_iter().map(|(pid, _)| pid).collect()
    }

    /// Polls `condition` until it holds; panics with `what` after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
        if poll(timeout, || condition().then_some(())).is_none() {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
    }

    /// Invariant 4: nothing of the project's process tree is left (devrun included) and the
    /// port is free.
    pub fn assert_nothing_left(&self) {
        assert_eq!(
            self.tagged_processes(),
            Vec::<i32>::new(),
            "processes of this project are left running"
        );
        assert!(
            self.port_free(),
            "port {} is still held (listeners: {:?})",
            self.port,
            self.listeners()
        );
    }

    /// Whatever was refused (a second devrun, say), devrun still runs and `served` still
    /// serves, alone, and no other backend was started.
    pub fn assert_kept_serving_alone(&mut self, served: &Served) {
        assert!(self.running(), "devrun exited");
        assert!(
            served.alive(),
            "the backend (pid {}) was touched",
            served.pid
        );
        assert_eq!(
            self.served().map(|s| s.pid),
            Some(served.pid),
            "the backend stopped answering"
        );
        assert_eq!(self.listeners(), vec![served.pid]);
        assert_eq!(self.starts().len(), 1, "another backend was started");
    }

    // ---- .devrun/state.json ----

    pub fn state_path(&self) -> PathBuf {
        self.root.join(".devrun").join("state.json")
    }

    pub fn read_state(&self) -> Value {
        let text = fs::read_to_string(self.state_path()).expect("no .devrun/state.json");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad state.json ({e}):\n{text}"))
    }

    /// `.devrun/state.json` once it records the backend ready: the running devrun writes it no
    /// more until something changes, so a test may edit it without a race.
    pub fn settled_state(&self) -> Value {
        poll(WAIT, || {
            let state = self.read_state();
            (state["backend"]["ready"] == true).then_some(state)
        })
        .expect("the state file never recorded the backend ready")
    }

    /// Writes `.devrun/state.json` (as a devrun that died would have left it, or forged).
    pub fn write_state(&self, state: &Value) {
        fs::create_dir_all(self.root.join(".devrun")).unwrap();
        fs::write(
            self.state_path(),
            serde_json::to_string_pretty(state).unwrap(),
        )
        .unwrap();
    }

    /// The stop signals recorded by backend `pid` (records_signals.py), so a graceful stop is
    /// told from a kill.
    pub fn signals_of(&self, pid: i32) -> Vec<String> {
        fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|r| r["event"] == "signal" && r["pid"] == pid)
            .map(|r| r["signal"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    // ---- saving files ----

    /// Saves like most editors: write a temp file beside it, then rename it over the file.
    pub fn write_atomic(&self, rel: &str, content: &str) {
        let path = self.root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let tmp = path.with_file_name(format!(".{name}.devrun-test~"));
        fs::write(&tmp, content).unwrap();
        fs::rename(&tmp, &path).unwrap();
    }

    /// Saves in place: truncate the file and write into it.
    pub fn write_inplace(&self, rel: &str, content: &str) {
        let path = self.root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all(content.as_bytes()).unwrap();
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_tagged(&self.tag);
        if std::thread::panicking() {
            let records = fs::read_to_string(&self.record).unwrap_or_default();
            eprintln!(
                "---- devrun stderr ({}) ----\n{}",
                self.stderr.display(),
                self.stderr()
            );
            eprintln!("---- record ----\n{records}");
        }
    }
}

// ---- stacks: the backend and `[processes.NAME]` members ----

/// One line of a member's record file (`fixtures/stack/devserver.py`, `worker.py`): a start
/// (`event == "start"`), a dev server listening (`"listening"`) or its escaped grandchild
/// (`"child"`).
#[derive(Debug, Clone, Deserialize)]
pub struct MemberRecord {
    pub event: String,
    pub pid: i32,
    pub starttime: Option<u64>,
    /// Unix seconds when the line was written.
    pub t: f64,
    pub generation: Option<u64>,
    pub port: Option<u16>,
    /// The dev server's `VITE_API_URL`.
    pub api_url: Option<String>,
    pub cwd: Option<PathBuf>,
    /// The worker's variables named `*_URL` or `*_PORT`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Pids of earlier lines of the same file still alive when this process started.
    #[serde(default)]
    pub prev_alive: Vec<i32>,
    /// Whether the dev server could bind its port just before it did.
    pub port_free: Option<bool>,
    pub parent: Option<i32>,
}

impl MemberRecord {
    pub fn alive(&self) -> bool {
        self.starttime.is_some_and(|t| alive(self.pid, t))
    }
}

/// What a stand-in dev server answers to `GET /`.
#[derive(Debug, Clone, Deserialize)]
pub struct DevServed {
    pub name: String,
    pub pid: i32,
    pub generation: Option<u64>,
    pub port: u16,
    pub api_url: Option<String>,
    pub cwd: PathBuf,
}

/// `GET /` of the stand-in dev server on `port`, if one answers.
pub fn devserver_on(port: u16) -> Option<DevServed> {
    let (status, body) = http_get(port, "/")?;
    serde_json::from_str(&body).ok().filter(|_| status == 200)
}

/// Waits until the dev server on `port` answers and `accept` takes the answer.
pub fn wait_for_devserver(
    port: u16,
    timeout: Duration,
    mut accept: impl FnMut(&DevServed) -> bool,
) -> DevServed {
    let mut last = None;
    poll(timeout, || {
        last = devserver_on(port);
        last.clone().filter(|s| accept(s))
    })
    .unwrap_or_else(|| {
        panic!("the dev server on port {port} did not answer as expected within {timeout:?}; last answer: {last:?}")
    })
}

impl Project {
    /// A stack: `fixtures/fastapi_app` at the root as the backend under real uvicorn
    /// ([`UVICORN_CONFIG`]), `fixtures/stack` copied into `web/`, and `members` (the
    /// `[processes.NAME]` tables) after the backend's config. In the config, `$RECORDS` is a
    /// folder outside the watched tree for the members' record files.
    pub fn stack(members: &str) -> Project {
        let p = Project::fastapi_app(UVICORN_CONFIG);
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join("stack");
        copy_dir(&source, &p.root.join("web"));
        p.config_also(members)
    }

    /// `$RECORDS/NAME.jsonl`: where a member given `--record $RECORDS/NAME.jsonl` writes.
    pub fn member_record_path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(format!("{name}.jsonl"))
    }

    /// Every complete line of member `name`'s record file (none if it never started).
    pub fn member_records(&self, name: &str) -> Vec<MemberRecord> {
        let text = fs::read_to_string(self.member_record_path(name)).unwrap_or_default();
        text.split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .map(|line| serde_json::from_str(line).expect("bad member record line"))
            .collect()
    }

    /// Member `name`'s start lines, in order: one per process of it started.
    pub fn member_starts(&self, name: &str) -> Vec<MemberRecord> {
        self.member_records(name)
            .into_iter()
            .filter(|r| r.event == "start")
            .collect()
    }

    /// Waits until member `name` has started at least `n` times; returns its start lines.
    pub fn wait_for_member_starts(
        &self,
        name: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<MemberRecord> {
        poll(timeout, || {
            Some(self.member_starts(name)).filter(|s| s.len() >= n)
        })
        .unwrap_or_else(|| panic!("{n} start(s) of member {name} not recorded within {timeout:?}"))
    }

    /// The `--events json` objects on devrun's stderr so far: the lines that start with `{`
    /// (a member's own output there is prefixed with its name).
    pub fn events(&self) -> Vec<Value> {
        self.stderr()
            .lines()
            .filter(|line| line.starts_with('{'))
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("an event line does not parse ({e}): {line}"))
            })
            .collect()
    }
}

// ---- processes a test starts beside the project ----

/// A tag of its own for a process a test starts outside a [`Project`].
pub fn unique_tag(what: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-guard-{}-{what}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

static SPAWNED: AtomicUsize = AtomicUsize::new(0);

/// A process a test started beside the harness's devrun: a second devrun, a foreign server, an
/// unrelated `sleep`, a driver. Dropping it SIGKILLs it and every process carrying its tag (a
/// devrun's backends inherit it), so nothing leaks even on a panic.
pub struct Guard {
    what: String,
    child: Child,
    tag: String,
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
}

impl Guard {
    /// Starts `command` in a process group of its own, tagged `DEVRUN_TEST_TAG=<unique>`.
    pub fn spawn(what: &str, command: &mut Command) -> Guard {
        let tag = unique_tag(&what.replace(' ', "_"));
        let child = command
            .env("DEVRUN_TEST_TAG", &tag)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Guard {
            what: what.to_string(),
            child,
            tag,
            stdout: None,
            stderr: None,
        }
    }

    /// Where the command's stdout and stderr go, for [`Guard::stdout`] and [`Guard::stderr`].
    pub fn with_logs(mut self, stdout: PathBuf, stderr: PathBuf) -> Guard {
        (self.stdout, self.stderr) = (Some(stdout), Some(stderr));
        self
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends a signal to the process (only to it, not to its group).
    pub fn signal(&self, signal: i32) {
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0, "kill failed");
    }

    /// Waits for the exit code; panics on a timeout or a signal.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        wait_child(&mut self.child, timeout, &self.what)
    }

    pub fn stdout(&self) -> String {
        read_log(self.stdout.as_deref())
    }

    pub fn stderr(&self) -> String {
        read_log(self.stderr.as_deref())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_tagged(&self.tag);
        if std::thread::panicking() && self.stderr.is_some() {
            eprintln!("---- {} stderr ----\n{}", self.what, self.stderr());
        }
    }
}

fn read_log(path: Option<&Path>) -> String {
    path.map(|p| fs::read_to_string(p).unwrap_or_default())
        .unwrap_or_default()
}

// ---- free helpers ----

/// The parent pid of a process (field 4 of /proc/PID/stat).
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every decimal number in a text, so a message can be checked for a pid or a port without
/// depending on its wording.
pub fn numbers_in(text: &str) -> Vec<i64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

pub fn sorted(mut pids: Vec<i32>) -> Vec<i32> {
    pids.sort();
    pids
}

/// Calls `f` every 25 ms until it returns Some, or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(25));
    }
}

fn wait_child(child: &mut Child, timeout: Duration, what: &str) -> i32 {
    let status = poll(timeout, || child.try_wait().unwrap())
        .unwrap_or_else(|| panic!("{what} did not exit within {timeout:?}"));
    status
        .code()
        .unwrap_or_else(|| panic!("{what} was ended by a signal: {status}"))
}

/// A port that was free a moment ago.
///
/// Taken below the kernel's ephemeral range: an OS-chosen port (`bind :0`, which devrun's own
/// control channel and every outgoing connection use) could otherwise be handed to someone else
/// between this check and the backend's bind. Test binaries run at once, so each starts at a
/// place of its own (its pid) and moves on from there.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    const FIRST: usize = 20_000;
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(FIRST).max(1);
    let offset = std::process::id() as usize * 7919;
    for _ in 0..span {
        let port = (FIRST + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        let free = |ip: Ipv4Addr| TcpListener::bind((ip, port)).is_ok();
        if free(Ipv4Addr::LOCALHOST) && free(Ipv4Addr::UNSPECIFIED) {
            return port;
        }
    }
    panic!("no free port below the ephemeral range ({FIRST}..{ephemeral_low})")
}

/// A plain HTTP/1.1 GET on 127.0.0.1: (status, body), or None if nothing answered.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .ok()?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks); None if gone or a zombie.
pub fn starttime(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields 3, 4, ... follow the last ')' (the command name may contain spaces and parens).
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Is the process with this pid *and* start time alive (and not a zombie)?
pub fn alive(pid: i32, starttime_ticks: u64) -> bool {
    starttime(pid) == Some(starttime_ticks)
}

/// The process group of a pid.
pub fn pgid(pid: i32) -> i32 {
    unsafe { libc::getpgid(pid) }
}

/// Pids with a socket listening on `port` (IPv4 or IPv6), from /proc/net/tcp{,6} and /proc/*/fd.
pub fn listeners(port: u16) -> Vec<i32> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f[3] == "0A" {
                inodes.insert(format!("socket:[{}]", f[9]));
            }
        }
    }
    let mut holders = Vec::new();
    if inodes.is_empty() {
        return holders;
    }
    for pid in pids() {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|link| inodes.contains(&*link.to_string_lossy()))
        });
        if holds {
            holders.push(pid);
        }
    }
    holders.sort();
    holders
}

/// Live processes whose environment holds `DEVRUN_TEST_TAG=tag`: (pid, start time).
fn tagged(tag: &str) -> Vec<(i32, u64)> {
    let needle = format!("DEVRUN_TEST_TAG={tag}");
    pids()
        .into_iter()
        .filter_map(|pid| {
            let start = starttime(pid)?;
            let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
            let tagged = environ
                .split(|&b| b == 0)
                .any(|var| var == needle.as_bytes());
            tagged.then_some((pid, start))
        })
        .collect()
}

/// SIGKILLs every tagged process (checking its start time first), until none is left.
pub fn kill_tagged(tag: &str) {
    for _ in 0..100 {
        let found = tagged(tag);
        if found.is_empty() {
            return;
        }
        for (pid, start) in found {
            if alive(pid, start) {
                unsafe { libc::kill(pid, SIGKILL) };
            }
        }
        sleep(Duration::from_millis(20));
    }
    eprintln!("warning: processes tagged {tag} survived SIGKILL");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap();
        if entry.file_name() == "__pycache__" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `devrun status --json` in this project: (exit code, the report).
pub fn status_report(p: &Project) -> (i32, serde_json::Value) {
    let mut status = p.spawn_devrun(&["status", "--json"], "status");
    let code = status.wait_exit(WAIT);
    let text = status.stdout();
    let report = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status --json printed no JSON ({e}):\n{text}"));
    (code, report)
}

/// The stack member named `name` in a `status --json` report.
pub fn status_member<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["processes"]
        .as_array()
        .and_then(|all| all.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("status lists no member {name}:\n{report:#}"))
}

/// Polls `GET path` until its body contains `text`; panics with the last answer.
pub fn wait_for_body(p: &Project, path: &str, text: &str) -> String {
    let mut last = None;
    poll(WAIT, || {
        last = p.get(path);
        last.clone()
            .filter(|(status, body)| *status == 200 && body.contains(text))
    })
    .map(|(_, body)| body)
    .unwrap_or_else(|| {
        panic!(
            "GET {path} did not contain {text:?} within {WAIT:?}; last: {last:?}\n{}",
            p.stderr()
        )
    })
}

/// The `pid=N` a fixture page shows.
pub fn pid_in(body: &str) -> i32 {
    let at = body.find("pid=").expect("no pid= in the page") + 4;
    numbers_in(&body[at..])[0] as i32
}
