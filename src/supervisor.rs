//! The core loop as explicit states:
//!
//! ```text
//! Starting ─► Serving ─(change)──► Stopping ─► Settling ─► PortFree ─► Starting (N+1)
//!                 │ (exited on its own)                                   ▲
//!                 └──────────► Crashed ─► Waiting ─(change)─► Settling ───┘
//! any state ─(Ctrl-C, SIGTERM, SIGHUP, `devrun stop`)─► Stopping ─► PortFree ─► exit
//! Serving, Waiting ─(`devrun restart`)─► Stopping ─► PortFree ─► Starting (N+1)
//! ```
//!
//! At most one generation is alive: the next is spawned only after `Backend::stop` confirmed
//! that every process of the previous group is gone and `port::wait_free` that nothing listens.

use crate::config::Config;
use crate::control::{self, Request};
use crate::error::Error;
use crate::port::{self, NotReady, ReadyCheck};
use crate::process::{self, Backend};
use crate::procs;
use crate::project::{recover_orphan, take_project};
use crate::state::{self, BackendRecord, ProjectLock, State, StateDir, RUN_MARKER};
use crate::ui::{Event, Ui};
use crate::watch::{Batch, Watch};
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A storm of writes that never pauses still restarts the backend after this long (a longer
/// debounce is refused as a config error).
const SETTLE_CEILING: Duration = crate::cli::MAX_DEBOUNCE;
/// How often a held port is re-checked while waiting for its holder to let go.
const HELD_PORT_RECHECK: Duration = Duration::from_millis(250);

/// Runs devrun in watch mode, or `--once`.
pub async fn run(config: Config, ui: Ui) -> Result<(), Error> {
    process::prepare_supervisor().map_err(|e| Error::io("cannot become a child subreaper", e))?;
    if let Some(note) = process::prepare_console() {
        ui.emit(&Event::Warning(note));
    }
    let shutdown = Shutdown::install()?;
    let state_dir = config.state_dir();
    let lock = take_project(&state_dir, &config, &ui, config.options.replace).await?;
    recover_orphan(&state_dir, &config, &ui).await?;
    let run = state::random_id().map_err(|e| Error::io("cannot make a run id", e))?;
    // Without the channel devrun still runs: `devrun stop` then falls back to a signal.
    let control = match control::listen(shutdown.control_sender()).await {
        Ok(control) => Some(control),
        Err(e) => {
            ui.emit(&Event::Warning(format!(
                "cannot open the control channel on 127.0.0.1 ({e}): `devrun stop` and \
                 --replace will signal this devrun instead, and `devrun restart` will not work"
            )));
            None
        }
    };
    let me = std::process::id();
    let state = State {
        devrun_pid: me,
        devrun_start: procs::start_time(me).unwrap_or(0),
        port: config.port,
        host: config.host.clone(),
        started_at: state::unix_now(),
        run,
        control,
        backend: None,
    };
    let options = config.options;
    let mut supervisor = Supervisor {
        shutdown,
        config,
        ui,
        generation: 0,
        exiting: false,
        state_dir,
        state,
        _lock: lock,
        kill_port_holder: options.kill_port_holder,
        listener: None,
    };
    supervisor.record(None);
    let result = if options.once {
        supervisor.run_once().await
    } else {
        supervisor.run_watch().await
    };
    if result.is_ok() {
        supervisor.state_dir.clear();
    }
    result
}

/// Why a serving generation stopped being served.
enum Leave {
    Changed(Batch),
    Exited(ExitStatus),
    Shutdown(&'static str),
    /// `devrun restart`.
    Restart,
}

/// The outcome of waiting for the port.
enum PortWait {
    Free(Duration),
    Held,
    Interrupted,
}

struct Supervisor {
    config: Config,
    ui: Ui,
    shutdown: Shutdown,
    generation: u32,
    /// A shutdown was asked for: finish the current stop, then exit. A second request kills.
    exiting: bool,
    state_dir: StateDir,
    /// What `.devrun/state.json` says; rewritten on every generation.
    state: State,
    _lock: ProjectLock,
    kill_port_holder: bool,
    /// The listening socket devrun holds and hands to each generation (`socket = "inherit"`).
    listener: Option<socket2::Socket>,
}

impl Supervisor {
    async fn run_watch(&mut self) -> Result<(), Error> {
        let ui = self.ui.clone();
        let warn = Box::new(move |message| ui.emit(&Event::Warning(message)));
        let mut watch = Watch::start(&self.config.watch, &self.config.root, warn)
            .map_err(|e| Error::Watch(e.to_string()))?;
        if watch.polling {
            self.ui.emit(&Event::Warning(
                "the OS refused more file watches (inotify limit): polling the kept folders every \
                 500 ms instead. Raise the limit with `sudo sysctl fs.inotify.max_user_watches=524288` \
                 (add it to /etc/sysctl.conf to keep it), or ignore more folders"
                    .into(),
            ));
        }
        self.ui.emit(&Event::Watching {
            source: self.config.source_name(),
            folders: watch.watched_folders(),
            include: self.config.watch.include.clone(),
        });
        self.claim_port().await?;
        self.bind_listener()?;
        loop {
            // Starting
            let mut backend = match self.spawn() {
                Ok(backend) => backend,
                Err(e) if self.generation == 1 => return Err(e),
                Err(e) => {
                    self.ui.error(&e.to_string());
                    if !self.wait_for_change(&mut watch).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            // Serving
            match self.serve(&mut backend, &mut watch).await? {
                Leave::Changed(batch) => {
                    self.report_change(&watch, &batch);
                    self.stop(&mut backend).await?;
                    if !self.exiting {
                        self.settle(&mut watch, batch.last_at).await;
                    }
                }
                Leave::Exited(status) => {
                    self.ui.emit(&Event::Exited {
                        generation: self.generation,
                        status: process::describe_status(&status),
                    });
                    // The leader is gone; whatever it started goes too.
                    self.stop(&mut backend).await?;
                    if !self.exiting && !self.wait_for_change(&mut watch).await {
                        return self.finish().await;
                    }
                }
                Leave::Shutdown(reason) => {
                    self.begin_shutdown(reason);
                    self.stop(&mut backend).await?;
                }
                Leave::Restart => {
                    self.report_restart_request();
                    self.stop(&mut backend).await?;
                }
            }
            if self.exiting {
                return self.finish().await;
            }
            // PortFree: never start a second backend beside whoever still holds the port.
            if !self.port_free_for_restart(&mut watch).await {
                return self.finish().await;
            }
        }
    }

    async fn run_once(&mut self) -> Result<(), Error> {
        self.claim_port().await?;
        self.bind_listener()?;
        let mut backend = self.spawn()?;
        let (host, port) = (self.config.host.clone(), self.config.port);
        let http = self.config.ready.http.clone();
        let check = self.ready_check(&http);
        let timeout = self.config.ready.timeout;
        let outcome = tokio::select! {
            biased;
            reason = self.shutdown.recv() => {
                self.exiting = true;
                Err(Error::BackendFailed(format!("{reason} before the backend was ready")))
            }
            status = backend.exited() => Err(Error::BackendFailed(format!(
                "the backend exited early with {}",
                status.as_ref().map_or_else(|e| e.to_string(), process::describe_status)
            ))),
            ready = port::wait_ready(&host, port, check, timeout) => match ready {
                Ok(elapsed) => {
                    self.ui.emit(&Event::Ready {
                        generation: self.generation,
                        elapsed,
                        address: format!("{host}:{port}"),
                    });
                    Ok(())
                }
                Err(NotReady::Status(code)) => Err(Error::BackendFailed(format!(
                    "health check GET {} returned HTTP {code}",
                    http.as_deref().unwrap_or("/")
                ))),
                Err(reason) => Err(Error::BackendFailed(format!(
                    "not ready in {} ms: {reason}",
                    timeout.as_millis()
                ))),
            },
        };
        // Teardown whatever happened; a signal now means "kill at once".
        self.exiting = true;
        self.stop(&mut backend).await?;
        self.finish().await?;
        outcome
    }

    /// Spawns the next generation with devrun's variables in its environment.
    fn spawn(&mut self) -> Result<Backend, Error> {
        self.generation += 1;
        let config = &self.config;
        let mut env: Vec<(String, String)> = config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("PORT".into(), config.port.to_string()));
        env.push(("DEVRUN_GENERATION".into(), self.generation.to_string()));
        env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
        // Marks every process of this run, so orphan recovery finds even those that left the
        // group (setsid, double fork) after a devrun that was killed.
        env.push((RUN_MARKER.into(), self.state.run.clone()));
        let command_line = shell_words::join(&config.command);
        let backend = Backend::spawn(&config.command, &config.root, &env, self.listener.as_ref()).map_err(|e| {
            // A command can be megabytes long: errors show its start and its size.
            let shown = crate::ui::shorten(&command_line);
            match e.kind() {
                std::io::ErrorKind::NotFound => Error::Usage(format!(
                    "cannot start `{shown}`: {} not found (is the venv active, or use its full path?)",
                    crate::ui::shorten(&config.command[0])
                )),
                std::io::ErrorKind::ArgumentListTooLong => Error::Usage(format!(
                    "cannot start `{shown}`: its arguments and environment are longer than the \
                     OS allows ({} bytes of arguments; {e}); shorten the command, or move long \
                     values into a file the backend reads",
                    config.command.iter().map(|a| a.len() + 1).sum::<usize>()
                )),
                _ => Error::io(format!("cannot start `{shown}`"), e),
            }
        })?;
        self.ui.emit(&Event::Started {
            generation: self.generation,
            pid: backend.pid(),
            command: command_line,
        });
        let pid = backend.pid();
        self.record(Some(BackendRecord {
            pid,
            pgid: backend.pgid(),
            start: procs::start_time(pid).unwrap_or(0),
            generation: self.generation,
            command: self.config.command.clone(),
            started_at: state::unix_now(),
        }));
        Ok(backend)
    }

    /// Serving: reports readiness, and returns at the first change, exit or shutdown request.
    async fn serve(&mut self, backend: &mut Backend, watch: &mut Watch) -> Result<Leave, Error> {
        let (host, port) = (self.config.host.clone(), self.config.port);
        let http = self.config.ready.http.clone();
        let ready = port::wait_ready(
            &host,
            port,
            self.ready_check(&http),
            self.config.ready.timeout,
        );
        tokio::pin!(ready);
        let mut ready_reported = false;
        let spawned_at = backend.spawned_at();
        loop {
            tokio::select! {
                biased;
                request = self.shutdown.next() => return Ok(match request {
                    Request::Stop(reason) => Leave::Shutdown(reason),
                    Request::Restart => Leave::Restart,
                }),
                status = backend.exited() => {
                    let status = status.map_err(|e| Error::io("cannot wait for the backend", e))?;
                    return Ok(Leave::Exited(status));
                }
                // Changes seen before this interpreter started are already in it (invariant 3
                // holds): only later ones restart it.
                batch = watch.next() => if batch.last_at >= spawned_at {
                    return Ok(Leave::Changed(batch));
                },
                result = &mut ready, if !ready_reported => {
                    ready_reported = true;
                    self.ui.emit(&match result {
                        Ok(elapsed) => Event::Ready {
                            generation: self.generation,
                            elapsed,
                            address: format!("{host}:{port}"),
                        },
                        Err(reason) => Event::NotReady {
                            generation: self.generation,
                            elapsed: self.config.ready.timeout,
                            reason: reason.to_string(),
                        },
                    });
                }
            }
        }
    }

    /// With a held socket a TCP connect always succeeds (the kernel queues it), so readiness is
    /// an HTTP answer: `[ready] http` → 2xx if set, else any answer to GET /.
    fn ready_check<'a>(&self, http: &'a Option<String>) -> ReadyCheck<'a> {
        match (http.as_deref(), self.listener.is_some()) {
            (Some(path), _) => ReadyCheck::Http2xx(path),
            (None, true) => ReadyCheck::HttpAnswer("/"),
            (None, false) => ReadyCheck::Connect,
        }
    }

    fn bind_listener(&mut self) -> Result<(), Error> {
        if self.config.inherit_socket {
            let (host, port) = (&self.config.host, self.config.port);
            let socket = port::bind_listener(host, port).map_err(|e| {
                Error::Port(format!(
                    "cannot bind {host}:{port} to hand it to the backend: {e}"
                ))
            })?;
            self.listener = Some(socket);
        }
        Ok(())
    }

    fn report_change(&self, watch: &Watch, batch: &Batch) {
        let files = batch
            .paths
            .iter()
            .map(|p| watch.filter().relative(p).display().to_string())
            .collect();
        self.ui.emit(&Event::Changed { files });
    }

    /// A shutdown was asked for (Ctrl-C, SIGTERM, SIGHUP): finish what is under way, then exit.
    fn begin_shutdown(&mut self, reason: &str) {
        self.ui.emit(&Event::ShuttingDown {
            reason: reason.to_string(),
        });
        self.exiting = true;
    }

    /// Stopping: the whole group, escalating to a kill; a shutdown request meanwhile makes this
    /// the last stop, a second one kills at once.
    async fn stop(&mut self, backend: &mut Backend) -> Result<(), Error> {
        if !backend.alive() {
            // Exited on its own with nothing left behind: nothing to stop or report.
            self.record(None);
            return Ok(());
        }
        let signal = self.config.stop.signal;
        self.ui.emit(&Event::Stopping {
            generation: self.generation,
            pid: backend.pid(),
            signal: signal.name(),
        });
        let (shutdown, exiting, ui) = (&mut self.shutdown, &mut self.exiting, &self.ui);
        let mut hurry = || {
            while let Some(reason) = shutdown.try_recv() {
                if *exiting {
                    ui.emit(&Event::Warning(format!(
                        "{reason} again: killing the backend now"
                    )));
                    return true;
                }
                ui.emit(&Event::ShuttingDown {
                    reason: reason.to_string(),
                });
                *exiting = true;
            }
            false
        };
        let stopped = backend
            .stop(signal, self.config.stop.timeout, &mut hurry)
            .await
            .map_err(|e| Error::io(format!("cannot stop generation {}", self.generation), e))?;
        if let Some(warning) = stopped.warning {
            self.ui.emit(&Event::Warning(warning));
        }
        self.ui.emit(&Event::Stopped {
            generation: self.generation,
            elapsed: stopped.elapsed,
            killed: stopped.killed && signal != process::StopSignal::Kill,
        });
        self.record(None);
        Ok(())
    }

    /// Rewrites the state file. A failure is reported, not fatal: the lock still guarantees
    /// one devrun per project; only orphan recovery after a crash would miss this generation.
    fn record(&mut self, backend: Option<BackendRecord>) {
        self.state.backend = backend;
        if let Err(e) = self.state_dir.write(&self.state) {
            self.ui.emit(&Event::Warning(format!(
                "cannot write {}/state.json: {e}",
                self.state_dir.path().display()
            )));
        }
    }

    /// Settling: lets a burst of saves finish (quiet for the debounce time, or the ceiling),
    /// so the next interpreter imports the code as it is after the last save.
    async fn settle(&mut self, watch: &mut Watch, mut last_at: Instant) {
        let ceiling = Instant::now() + SETTLE_CEILING;
        loop {
            if Instant::now() >= ceiling {
                return;
            }
            let quiet_at = (last_at + self.config.watch.debounce).min(ceiling);
            // Biased: changes already queued (say, during a slow stop) count before the quiet
            // time can be judged over, even when that time has passed.
            tokio::select! {
                biased;
                reason = self.shutdown.recv() => {
                    self.begin_shutdown(reason);
                    return;
                }
                batch = watch.next() => last_at = last_at.max(batch.last_at),
                _ = tokio::time::sleep_until(quiet_at.into()) => {
                    // Quiet by the watcher's delivery; the OS's queue has the last word.
                    let queued = watch.sync().await;
                    if queued.paths.is_empty() {
                        return;
                    }
                    last_at = last_at.max(queued.last_at);
                }
            }
        }
    }

    fn report_restart_request(&self) {
        self.ui.emit(&Event::Warning(
            "restart requested by `devrun restart`".to_string(),
        ));
    }

    /// Waiting: after a crash, until a change or `devrun restart` (true) or a shutdown
    /// request (false).
    async fn wait_for_change(&mut self, watch: &mut Watch) -> bool {
        self.ui.emit(&Event::Waiting);
        tokio::select! {
            biased;
            request = self.shutdown.next() => match request {
                Request::Stop(reason) => {
                    self.begin_shutdown(reason);
                    false
                }
                Request::Restart => {
                    self.report_restart_request();
                    true
                }
            },
            batch = watch.next() => {
                self.report_change(watch, &batch);
                self.settle(watch, batch.last_at).await;
                !self.exiting
            }
        }
    }

    /// Waits up to the port timeout for the port to be free, or for a shutdown request. With a
    /// held socket, "free" means no process but devrun holds it: a survivor would otherwise go
    /// on accepting with stale code.
    async fn wait_port(&mut self, timeout: Duration) -> PortWait {
        if self.listener.is_some() {
            let began = Instant::now();
            loop {
                if port::held_by_others(self.config.port).is_empty() {
                    return PortWait::Free(began.elapsed());
                }
                if began.elapsed() >= timeout {
                    return PortWait::Held;
                }
                tokio::select! {
                    biased;
                    reason = self.shutdown.recv() => {
                        self.begin_shutdown(reason);
                        return PortWait::Interrupted;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        }
        let (host, port) = (self.config.host.clone(), self.config.port);
        tokio::select! {
            biased;
            reason = self.shutdown.recv() => {
                self.begin_shutdown(reason);
                PortWait::Interrupted
            }
            result = port::wait_free(&host, port, timeout) => match result {
                Ok(waited) => PortWait::Free(waited),
                Err(_) => PortWait::Held,
            },
        }
    }

    fn held_port_message(&self) -> String {
        let port = self.config.port;
        if let Some(closing) = port::closing_only(port) {
            return format!(
                "port {port} cannot be bound yet: no process holds it, but it is blocked by \
                 {closing} left by a stopped process (whose listener did not set SO_REUSEADDR); \
                 the kernel drops them within about a minute (net.ipv4.tcp_fin_timeout). Start \
                 again then, or use another port (--port)"
            );
        }
        format!(
            "port {port} is held by {}: devrun will not start a second backend beside it. \
             Stop that process, pass --kill-port-holder to have devrun end it, or use another \
             port (--port)",
            port::describe_holders(&port::holders(port))
        )
    }

    /// Before the first generation: the port must be free (a process that is just exiting gets
    /// the port timeout to let go of it).
    async fn claim_port(&mut self) -> Result<(), Error> {
        if port::is_free(&self.config.host, self.config.port) {
            return Ok(());
        }
        // Refused with nobody listening (a port Windows reserved): waiting would not help.
        let (host, port) = (&self.config.host, self.config.port);
        if let Some(refused) = port::bind_error(host, port).and_then(|e| {
            port::refusal_message(port, e.raw_os_error(), !port::holders(port).is_empty())
        }) {
            return Err(Error::Port(refused));
        }
        if self.kill_port_holder {
            for holder in port::holders(self.config.port) {
                self.ui.emit(&Event::Warning(format!(
                    "ending pid {} ({}), which holds port {} (--kill-port-holder)",
                    holder.pid, holder.command, self.config.port
                )));
                let stopped = process::stop_foreign(
                    holder.pid,
                    self.config.stop.signal,
                    self.config.stop.timeout,
                )
                .await
                .map_err(|e| Error::io(format!("cannot end pid {}", holder.pid), e))?;
                if let Some(warning) = stopped.and_then(|s| s.warning) {
                    self.ui.emit(&Event::Warning(warning));
                }
            }
        }
        self.ui.emit(&Event::Warning(format!(
            "port {} is busy; waiting up to {} ms for it to be released",
            self.config.port,
            self.config.stop.port_timeout.as_millis()
        )));
        match self.wait_port(self.config.stop.port_timeout).await {
            PortWait::Free(_) => Ok(()),
            PortWait::Held => Err(Error::Port(self.held_port_message())),
            PortWait::Interrupted => {
                Err(Error::Port("interrupted while waiting for the port".into()))
            }
        }
    }

    /// PortFree, between generations: true once free; while someone else holds it, says who and
    /// keeps waiting (changes meanwhile are folded into the coming start); false on shutdown.
    async fn port_free_for_restart(&mut self, watch: &mut Watch) -> bool {
        match self.wait_port(self.config.stop.port_timeout).await {
            PortWait::Free(waited) => {
                self.ui.emit(&Event::PortReleased {
                    port: self.config.port,
                    waited,
                });
                return true;
            }
            PortWait::Interrupted => return false,
            PortWait::Held => {}
        }
        self.ui.emit(&Event::PortHeld {
            port: self.config.port,
            holders: format!(
                "{}; waiting for it to be released (Ctrl-C to quit)",
                port::describe_busy(self.config.port)
            ),
        });
        loop {
            tokio::select! {
                biased;
                reason = self.shutdown.recv() => {
                    self.begin_shutdown(reason);
                    return false;
                }
                _ = watch.next() => {}
                _ = tokio::time::sleep(HELD_PORT_RECHECK) => {
                    let free = if self.listener.is_some() {
                        port::held_by_others(self.config.port).is_empty()
                    } else {
                        port::is_free(&self.config.host, self.config.port)
                    };
                    if free {
                        self.ui.emit(&Event::PortReleased { port: self.config.port, waited: Duration::ZERO });
                        return true;
                    }
                }
            }
        }
    }

    /// The end: the backend is stopped; confirm the port is free before exiting.
    async fn finish(&mut self) -> Result<(), Error> {
        // devrun's own socket goes first; then the port must be free for everyone.
        self.listener = None;
        let port = self.config.port;
        match port::wait_free(&self.config.host, port, self.config.stop.port_timeout).await {
            Ok(waited) => {
                self.ui.emit(&Event::PortReleased { port, waited });
                Ok(())
            }
            Err(waited) => Err(Error::Port(format!(
                "port {port} was not released within {} ms: held by {}",
                waited.as_millis(),
                port::describe_busy(port)
            ))),
        }
    }
}

/// Ctrl-C, SIGTERM and SIGHUP (Ctrl-C, Ctrl-Break and closing the console on Windows), and the
/// control channel's `stop` and `restart`, as messages the supervisor handles in its own time.
struct Shutdown {
    requests: mpsc::UnboundedReceiver<&'static str>,
    control: mpsc::UnboundedReceiver<Request>,
    control_sender: mpsc::UnboundedSender<Request>,
}

impl Shutdown {
    fn install() -> Result<Shutdown, Error> {
        let (tx, requests) = mpsc::unbounded_channel();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            for (kind, reason) in [
                (SignalKind::interrupt(), "interrupted"),
                (SignalKind::terminate(), "SIGTERM received"),
                (SignalKind::hangup(), "SIGHUP received"),
            ] {
                let mut stream =
                    signal(kind).map_err(|e| Error::io("cannot install a signal handler", e))?;
                let tx = tx.clone();
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        if tx.send(reason).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        #[cfg(windows)]
        {
            use tokio::signal::windows;
            let install = |e| Error::io("cannot install a console control handler", e);
            let mut ctrl_c = windows::ctrl_c().map_err(install)?;
            let mut ctrl_break = windows::ctrl_break().map_err(install)?;
            let mut ctrl_close = windows::ctrl_close().map_err(install)?;
            // Logoff and shutdown reach devrun run as a service or scheduled task.
            let mut ctrl_logoff = windows::ctrl_logoff().map_err(install)?;
            let mut ctrl_shutdown = windows::ctrl_shutdown().map_err(install)?;
            tokio::spawn(async move {
                loop {
                    let reason = tokio::select! {
                        _ = ctrl_c.recv() => "interrupted",
                        _ = ctrl_break.recv() => "Ctrl-Break received",
                        _ = ctrl_close.recv() => "console closed",
                        _ = ctrl_logoff.recv() => "user logging off",
                        _ = ctrl_shutdown.recv() => "Windows shutting down",
                    };
                    if tx.send(reason).is_err() {
                        break;
                    }
                }
            });
        }
        let (control_sender, control) = mpsc::unbounded_channel();
        Ok(Shutdown {
            requests,
            control,
            control_sender,
        })
    }

    /// Where the control channel delivers its requests.
    fn control_sender(&self) -> mpsc::UnboundedSender<Request> {
        self.control_sender.clone()
    }

    /// The next request of any kind. Cancel-safe.
    async fn next(&mut self) -> Request {
        tokio::select! {
            biased;
            Some(reason) = self.requests.recv() => Request::Stop(reason),
            Some(request) = self.control.recv() => request,
            else => std::future::pending().await,
        }
    }

    /// The next shutdown request. A restart asked for meanwhile is dropped: the places that
    /// wait here are already stopping or between generations, where one is under way anyway.
    async fn recv(&mut self) -> &'static str {
        loop {
            if let Request::Stop(reason) = self.next().await {
                return reason;
            }
        }
    }

    fn try_recv(&mut self) -> Option<&'static str> {
        if let Ok(reason) = self.requests.try_recv() {
            return Some(reason);
        }
        while let Ok(request) = self.control.try_recv() {
            if let Request::Stop(reason) = request {
                return Some(reason);
            }
        }
        None
    }
}
