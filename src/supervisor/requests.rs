//! Where requests come from: Ctrl-C and the OS's stop signals, the control channel (`devrun
//! stop`, `devrun restart`, `--replace`) and `rs` typed in the terminal reach the coordinator
//! as one stream ([`Shutdown`]); it hands each on to every supervised process ([`Requests`]).

use crate::control::Request;
use crate::error::Error;
use tokio::sync::mpsc;

/// Ctrl-C, SIGTERM and SIGHUP (Ctrl-C, Ctrl-Break and closing the console on Windows), and the
/// control channel's `stop` and `restart`, as messages the supervisor handles in its own time.
pub(super) struct Shutdown {
    requests: mpsc::UnboundedReceiver<&'static str>,
    control: mpsc::UnboundedReceiver<Request>,
    control_sender: mpsc::UnboundedSender<Request>,
}

impl Shutdown {
    pub(super) fn install() -> Result<Shutdown, Error> {
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
    pub(super) fn control_sender(&self) -> mpsc::UnboundedSender<Request> {
        self.control_sender.clone()
    }

    /// The next request of any kind. Cancel-safe.
    pub(super) async fn next(&mut self) -> Request {
        tokio::select! {
            biased;
            Some(reason) = self.requests.recv() => Request::Stop(reason),
            Some(request) = self.control.recv() => request,
            else => std::future::pending().await,
        }
    }
}

/// Which requests end a wait ([`Requests::wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interrupts {
    /// A shutdown or a restart (Serving, Waiting: nothing is under way a restart would fold
    /// into).
    Any,
    /// Only a shutdown: a restart is under way anyway (stopping, settling, waiting for the
    /// port, `--once`), and a restart request is dropped.
    ShutdownOnly,
}

/// One supervised process's requests, as the coordinator hands them on: a shutdown or a
/// restart (for every member), or a restart because a member it restarts with did.
pub(super) struct Requests {
    pub(super) rx: mpsc::UnboundedReceiver<Request>,
}

impl Requests {
    /// The next request. Cancel-safe.
    async fn next(&mut self) -> Request {
        match self.rx.recv().await {
            Some(request) => request,
            None => std::future::pending().await,
        }
    }

    /// The one shutdown-aware wait: `work`, unless a request `interrupts` takes comes first
    /// (then that request; `work` is dropped, so it must be cancel-safe or done with).
    pub(super) async fn wait<T>(
        &mut self,
        interrupts: Interrupts,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Request> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                request = self.next() => match request {
                    Request::Restart(_) if interrupts == Interrupts::ShutdownOnly => continue,
                    request => return Err(request),
                },
                done = &mut work => return Ok(done),
            }
        }
    }

    /// A shutdown request that came meanwhile, if any (restarts are dropped: one is under way).
    pub(super) fn try_recv(&mut self) -> Option<&'static str> {
        while let Ok(request) = self.rx.try_recv() {
            if let Request::Stop(reason) = request {
                return Some(reason);
            }
        }
        None
    }
}

/// What a request that ended a wait says, for an error message.
pub(super) fn reason(request: Request) -> &'static str {
    match request {
        Request::Stop(reason) => reason,
        Request::Restart(_) => "restart requested",
    }
}
