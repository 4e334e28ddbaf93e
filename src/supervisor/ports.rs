//! A runner's port: claimed before its first generation, confirmed free between generations
//! (naming who holds it meanwhile), and confirmed released before devrun exits.

use super::phase::Step;
use super::requests::Interrupts;
use super::unit::{Runner, Unit};
use crate::error::Error;
use crate::port;
use crate::process;
use crate::ui::{Event, Warn};
use std::time::Duration;

/// How often a held port is re-checked while waiting for its holder to let go.
const HELD_PORT_RECHECK: Duration = Duration::from_millis(250);

/// The outcome of waiting for the port.
enum PortWait {
    Free(Duration),
    Held,
    Interrupted,
}

impl Runner {
    /// Claiming, before the first generation: the port must be free (a process that is just
    /// exiting gets the port timeout to let go of it), and with `socket = "inherit"` devrun
    /// binds it now. A port that stays held ends devrun, naming its holder.
    pub(super) async fn claim(&mut self, unit: &mut Unit) -> Result<Step, Error> {
        self.claim_port(unit).await?;
        self.bind_listener(unit)?;
        Ok(Step::Claimed)
    }

    async fn claim_port(&mut self, unit: &Unit) -> Result<(), Error> {
        let Some(port) = self.member.port else {
            return Ok(());
        };
        if self.port_is_free(unit.listener.is_some()) {
            return Ok(());
        }
        // Refused with nobody listening (a port Windows reserved): waiting would not help.
        let host = self.shared.config.host.clone();
        if let Some(refused) = port::bind_error(&host, port).and_then(|e| {
            port::refusal_message(port, e.raw_os_error(), !port::holders(port).is_empty())
        }) {
            return Err(Error::Port(refused));
        }
        if self.shared.config.options.kill_port_holder {
            self.end_port_holders(port).await?;
        }
        let timeout = self.shared.config.stop.port_timeout;
        self.ui.emit(&Warn::PortBusy { port, timeout }.into());
        match self.wait_port(unit, timeout).await {
            PortWait::Free(_) => Ok(()),
            PortWait::Held => Err(Error::Port(self.held_port_message(port))),
            PortWait::Interrupted => {
                Err(Error::Port("interrupted while waiting for the port".into()))
            }
        }
    }

    fn bind_listener(&self, unit: &mut Unit) -> Result<(), Error> {
        let (Some(port), true) = (self.member.port, self.member.extras.inherit_socket) else {
            return Ok(());
        };
        let host = &self.shared.config.host;
        let socket = port::bind_listener(host, port).map_err(|e| {
            Error::Port(format!(
                "cannot bind {host}:{port} to hand it to the backend: {e}"
            ))
        })?;
        unit.listener = Some(socket);
        Ok(())
    }

    /// `--kill-port-holder`: ends each process holding the port, with the usual escalation.
    async fn end_port_holders(&mut self, port: u16) -> Result<(), Error> {
        let stop = &self.shared.config.stop;
        for holder in port::holders(port) {
            self.ui.emit(
                &Warn::KillPortHolder {
                    pid: holder.pid,
                    command: holder.command.clone(),
                    port,
                }
                .into(),
            );
            let stopped = process::stop_foreign(holder.pid, stop.signal, stop.timeout)
                .await
                .map_err(|e| Error::io(format!("cannot end pid {}", holder.pid), e))?;
            if let Some(text) = stopped.and_then(|s| s.warning) {
                let signal = stop.signal.name();
                self.ui
                    .emit(&Warn::SignalUndelivered { signal, text }.into());
            }
        }
        Ok(())
    }

    /// The rule for "the port is free" for this process's port (none: always).
    fn port_is_free(&self, held_socket: bool) -> bool {
        match self.member.port {
            Some(port) => port_is_free(&self.shared.config.host, port, held_socket),
            None => true,
        }
    }

    /// Waits up to `timeout` for the port to be free (by `port_is_free`), or for a shutdown
    /// request.
    async fn wait_port(&mut self, unit: &Unit, timeout: Duration) -> PortWait {
        let held_socket = unit.listener.is_some();
        let (host, port) = (self.shared.config.host.clone(), self.member.port);
        let free = port::wait_until(
            async || port.is_none_or(|port| port_is_free(&host, port, held_socket)),
            timeout,
            port::poll_interval,
        );
        match self.requests.wait(Interrupts::ShutdownOnly, free).await {
            Ok(Ok(waited)) => PortWait::Free(waited),
            Ok(Err(_)) => PortWait::Held,
            Err(_) => PortWait::Interrupted,
        }
    }

    /// How to pick another port for this process, for messages.
    fn other_port_hint(&self) -> String {
        match self.member.is_backend() {
            true => "use another port (--port)".to_string(),
            false => format!("set another `port` in [processes.{}]", self.member.name),
        }
    }

    fn held_port_message(&self, port: u16) -> String {
        let hint = self.other_port_hint();
        if let Some(closing) = port::closing_only(port) {
            return format!(
                "port {port} cannot be bound yet: no process holds it, but it is blocked by \
                 {closing} left by a stopped process (whose listener did not set SO_REUSEADDR); \
                 the kernel drops them within about a minute (net.ipv4.tcp_fin_timeout). Start \
                 again then, or {hint}"
            );
        }
        let what = match self.member.is_backend() {
            true => "a second backend",
            false => &self.member.name,
        };
        format!(
            "port {port} is held by {}: devrun will not start {what} beside it. Stop that \
             process, pass --kill-port-holder to have devrun end it, or {hint}",
            port::describe_holders(&port::holders(port))
        )
    }

    /// PortFree, between generations: free at once, or (while someone else holds it) says who
    /// and keeps waiting; changes meanwhile are folded into the coming start.
    pub(super) async fn port_free_for_restart(&mut self, unit: &Unit) -> Step {
        let Some(port) = self.member.port else {
            return Step::PortFree;
        };
        match self
            .wait_port(unit, self.shared.config.stop.port_timeout)
            .await
        {
            PortWait::Free(waited) => {
                self.ui.emit(&Event::PortReleased { port, waited });
                return Step::PortFree;
            }
            PortWait::Interrupted => return Step::Shutdown,
            PortWait::Held => {}
        }
        self.ui.emit(&Event::PortHeld {
            port,
            holders: format!(
                "{}; waiting for it to be released (Ctrl-C to quit)",
                port::describe_busy(port)
            ),
        });
        let (host, held_socket) = (self.shared.config.host.clone(), unit.listener.is_some());
        let changes = &mut self.changes;
        let mut recheck = tokio::time::interval(HELD_PORT_RECHECK);
        let free = async {
            loop {
                tokio::select! {
                    _ = changes.next() => {}
                    _ = recheck.tick() => {
                        if port_is_free(&host, port, held_socket) {
                            return;
                        }
                    }
                }
            }
        };
        match self.requests.wait(Interrupts::ShutdownOnly, free).await {
            Ok(()) => {
                self.ui.emit(&Event::PortReleased {
                    port,
                    waited: Duration::ZERO,
                });
                Step::PortFree
            }
            Err(request) => Runner::take_request(request),
        }
    }

    /// Exiting: the process is stopped; confirm its port is free before exiting (when a
    /// generation ever ran: a member stopped before its turn used no port).
    pub(super) async fn finish(&mut self, unit: &mut Unit) -> Result<(), Error> {
        self.preload.stop().await;
        // devrun's own socket goes first; then the port must be free for everyone.
        unit.listener = None;
        let Some(port) = self.member.port.filter(|_| unit.generation > 0) else {
            return Ok(());
        };
        let config = &self.shared.config;
        match port::wait_free(&config.host, port, config.stop.port_timeout).await {
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

/// The one rule for "the port is free": with a socket devrun holds for the backend, no process
/// but devrun holds it (a survivor would otherwise go on accepting with stale code): read from
/// the OS where it lists every holder, else the confirmed end of the old generation's job;
/// without, the port can be bound.
fn port_is_free(host: &str, port: u16, held_socket: bool) -> bool {
    if held_socket && !crate::sys::LISTS_EVERY_HOLDER {
        // Windows: the TCP table cannot name who else holds the socket (it lists devrun, or
        // pid 0 under Wine). The proof is the stop's: the old generation's job object is empty,
        // and no process outside it got the handle (inheritable only during that generation's
        // spawn, one spawn at a time; the bootstrap made it non-inheritable at once).
        return true;
    }
    if held_socket {
        // Who holds it could not be read (a descriptor limit): not free, so no generation
        // starts beside a survivor nobody could see.
        port::held_by_others(port).is_ok_and(|others| others.is_empty())
    } else {
        port::is_free(host, port)
    }
}
