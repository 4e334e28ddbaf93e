//! One supervised process's cycle as explicit states (`Phase`), moved by one pure function
//! (`next`):
//!
//! ```text
//! Starting ─► Serving ─(change)──► Stopping ─► Settling ─► PortFree ─► Starting (N+1)
//!                 │ (exited on its own)                                   ▲
//!                 └──────────► Stopping ─► Waiting ─(change)─► Settling ──┘
//! Serving ─(Ctrl-C, SIGTERM, SIGHUP, `devrun stop`)─► Stopping ─► Exiting (port confirmed free)
//! any other state ─(the same)─► Exiting
//! Serving, Waiting ─(`devrun restart`, on-failure backoff)─► Stopping ─► PortFree ─► Starting
//! ```

use std::time::Instant;

/// Where one supervised process is in its cycle (the diagram at the top). Each state is one
/// action of the supervisor (`Supervisor::act`); what the action saw is a [`Step`], and
/// [`next`] — pure, unit-tested below — says where that leads. A second supervised process is a
/// second `Phase` (and `Backend`), not a second loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Spawning the next generation.
    Starting,
    /// A generation runs, until a change, its exit, or a request.
    Serving,
    /// The whole group is being stopped; `Then` says what follows.
    Stopping(Then),
    /// A burst of saves is finishing: quiet for the debounce time after `last` (or the
    /// ceiling). `ran`: a generation ran since the port was last confirmed free.
    Settling { last: Instant, ran: bool },
    /// Crashed (exited on its own) or failed to start: until a change or `devrun restart`.
    Waiting { ran: bool },
    /// Between generations: until nobody else holds the port.
    PortFree,
    /// Stopped for good: confirm the port is free, then exit.
    Exiting,
}

/// What follows `Stopping`, once the group is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Then {
    /// Files changed (the last at this instant): settle, then start anew.
    Settle(Instant),
    /// It exited on its own: wait for a change.
    Wait,
    /// `devrun restart`: start anew now.
    Restart,
    /// A shutdown request: exit.
    Exit,
}

/// What a state's action saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Started,
    /// A later generation could not be spawned (failing to spawn the first is an error).
    StartFailed,
    /// Files changed, the last at this instant.
    Changed(Instant),
    /// The generation exited on its own.
    Exited,
    /// `devrun restart`.
    Restart,
    /// Ctrl-C, SIGTERM, SIGHUP, `devrun stop`.
    Shutdown,
    /// The whole group is gone; `shutdown`: a shutdown was asked for meanwhile.
    Stopped {
        shutdown: bool,
    },
    /// Quiet for the debounce time, or the settle ceiling passed.
    Settled,
    /// Nobody else holds the port.
    PortFree,
}

/// The supervisor's moves: where `step`, seen in `state`, leads. A step a state does not
/// expect leaves it where it is.
pub(super) fn next(state: Phase, step: Step) -> Phase {
    use Phase::*;
    match (state, step) {
        (Exiting, _) => Exiting,
        // A running group is always stopped first; elsewhere nothing runs.
        (Serving, Step::Shutdown) => Stopping(Then::Exit),
        (Stopping(_), Step::Shutdown) => Stopping(Then::Exit),
        (_, Step::Shutdown) => Exiting,
        (Starting, Step::Started) => Serving,
        (Starting, Step::StartFailed) => Waiting { ran: false },
        (Serving, Step::Changed(last)) => Stopping(Then::Settle(last)),
        (Serving, Step::Exited) => Stopping(Then::Wait),
        (Serving, Step::Restart) => Stopping(Then::Restart),
        (Stopping(_), Step::Stopped { shutdown: true }) => Exiting,
        (Stopping(then), Step::Stopped { shutdown: false }) => match then {
            Then::Settle(last) => Settling { last, ran: true },
            Then::Wait => Waiting { ran: true },
            Then::Restart => PortFree,
            Then::Exit => Exiting,
        },
        (Waiting { ran }, Step::Changed(last)) => Settling { last, ran },
        (Settling { last, ran }, Step::Changed(at)) => Settling {
            last: last.max(at),
            ran,
        },
        // Only a port a generation used needs confirming free again.
        (Waiting { ran }, Step::Restart) | (Settling { ran, .. }, Step::Settled) => match ran {
            true => PortFree,
            false => Starting,
        },
        (PortFree, Step::PortFree) => Starting,
        (state, _) => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use Phase::*;

    fn walk(from: Phase, steps: &[Step]) -> Vec<Phase> {
        let mut phase = from;
        steps
            .iter()
            .map(|step| {
                phase = next(phase, *step);
                phase
            })
            .collect()
    }

    #[test]
    fn a_change_stops_settles_confirms_the_port_and_starts_anew() {
        let t = Instant::now();
        assert_eq!(
            walk(
                Starting,
                &[
                    Step::Started,
                    Step::Changed(t),
                    Step::Stopped { shutdown: false },
                    Step::Settled,
                    Step::PortFree,
                ]
            ),
            [
                Serving,
                Stopping(Then::Settle(t)),
                Settling { last: t, ran: true },
                PortFree,
                Starting
            ]
        );
    }

    #[test]
    fn changes_while_settling_move_the_quiet_time_never_back() {
        let t = Instant::now();
        let later = t + Duration::from_millis(300);
        let settling = Settling { last: t, ran: true };
        assert_eq!(
            next(settling, Step::Changed(later)),
            Settling {
                last: later,
                ran: true
            }
        );
        // A batch stamped earlier (delivered late) does not shorten the wait.
        let after_later = Settling {
            last: later,
            ran: true,
        };
        assert_eq!(next(after_later, Step::Changed(t)), after_later);
    }

    #[test]
    fn a_crash_waits_for_a_change_then_settles_and_confirms_the_port() {
        let t = Instant::now();
        assert_eq!(
            walk(
                Serving,
                &[
                    Step::Exited,
                    Step::Stopped { shutdown: false },
                    Step::Changed(t),
                    Step::Settled,
                    Step::PortFree,
                ]
            ),
            [
                Stopping(Then::Wait),
                Waiting { ran: true },
                Settling { last: t, ran: true },
                PortFree,
                Starting
            ]
        );
        assert_eq!(next(Waiting { ran: true }, Step::Restart), PortFree);
    }

    /// A later generation that cannot be spawned ran no process: after the wait it starts
    /// again without confirming a port nobody used.
    #[test]
    fn a_failed_spawn_waits_then_starts_without_a_port_check() {
        let t = Instant::now();
        assert_eq!(
            walk(
                Starting,
                &[Step::StartFailed, Step::Changed(t), Step::Settled]
            ),
            [
                Waiting { ran: false },
                Settling {
                    last: t,
                    ran: false
                },
                Starting
            ]
        );
        assert_eq!(next(Waiting { ran: false }, Step::Restart), Starting);
    }

    #[test]
    fn restart_stops_then_confirms_the_port_without_settling() {
        assert_eq!(
            walk(
                Serving,
                &[
                    Step::Restart,
                    Step::Stopped { shutdown: false },
                    Step::PortFree
                ]
            ),
            [Stopping(Then::Restart), PortFree, Starting]
        );
    }

    /// Invariant: a shutdown request always ends in `Exiting`, and a running group is
    /// stopped first, whatever the state.
    #[test]
    fn a_shutdown_stops_what_runs_and_exits_from_every_state() {
        let t = Instant::now();
        assert_eq!(next(Serving, Step::Shutdown), Stopping(Then::Exit));
        for then in [Then::Settle(t), Then::Wait, Then::Restart, Then::Exit] {
            assert_eq!(next(Stopping(then), Step::Shutdown), Stopping(Then::Exit));
            assert_eq!(
                next(Stopping(then), Step::Stopped { shutdown: true }),
                Exiting
            );
        }
        assert_eq!(
            next(Stopping(Then::Exit), Step::Stopped { shutdown: false }),
            Exiting
        );
        for phase in [
            Starting,
            Settling { last: t, ran: true },
            Waiting { ran: true },
            Waiting { ran: false },
            PortFree,
            Exiting,
        ] {
            assert_eq!(next(phase, Step::Shutdown), Exiting, "from {phase:?}");
        }
    }

    /// Exiting is final, and no step starts a generation except from `Starting`'s
    /// predecessors: a change while the port is held is folded into the coming start.
    #[test]
    fn exiting_is_final_and_a_held_port_folds_changes_in() {
        let t = Instant::now();
        for step in [
            Step::Started,
            Step::Changed(t),
            Step::Restart,
            Step::Settled,
            Step::PortFree,
            Step::Stopped { shutdown: false },
        ] {
            assert_eq!(next(Exiting, step), Exiting, "{step:?}");
        }
        assert_eq!(next(PortFree, Step::Changed(t)), PortFree);
        assert_eq!(next(PortFree, Step::Restart), PortFree);
    }

    /// At most one generation is alive: `Starting` is reached only once the port is confirmed
    /// free after a generation ran, never straight from `Serving` or `Stopping`.
    #[test]
    fn starting_follows_only_a_confirmed_free_port_after_a_generation_ran() {
        let t = Instant::now();
        let phases = [
            Serving,
            Stopping(Then::Settle(t)),
            Stopping(Then::Wait),
            Stopping(Then::Restart),
            Stopping(Then::Exit),
            Settling { last: t, ran: true },
            Waiting { ran: true },
            PortFree,
        ];
        let steps = [
            Step::Started,
            Step::StartFailed,
            Step::Changed(t),
            Step::Exited,
            Step::Restart,
            Step::Shutdown,
            Step::Stopped { shutdown: false },
            Step::Stopped { shutdown: true },
            Step::Settled,
            Step::PortFree,
        ];
        for phase in phases {
            for step in steps {
                if next(phase, step) == Starting {
                    assert_eq!((phase, step), (PortFree, Step::PortFree));
                }
            }
        }
    }
}
