//! One supervised process's cycle as explicit states (`Phase`), moved by one pure function
//! (`next`). The generation's readiness is part of the state, and so are the port claim and the
//! start gate before the first generation and `--once`'s teardown:
//!
//! ```text
//! Claiming ─► Gated ─► Starting ─► Serving(Pending) ─► Serving(Ready) ─(change)─► Stopping ─►
//!     Settling ─► PortFree ─► Starting (N+1)
//! Serving ─(exited on its own)─► Stopping ─► Waiting ─(change)─► Settling ─► PortFree ─► …
//! Serving ─(Ctrl-C, SIGTERM, SIGHUP, `devrun stop`)─► Stopping ─► Exiting (port confirmed free)
//! any other state ─(the same)─► Exiting
//! Serving, Waiting ─(`devrun restart`, on-failure backoff)─► Stopping ─► PortFree ─► Starting
//! --once: Serving ─(exited, or not ready in time)─► Stopping ─► Exiting
//! ```
//!
//! A member without a port is ready the moment it started: nothing else can be waited for.

use std::time::Instant;

/// How a runner runs: watching for changes (the default), or `--once` (start, ready, tear down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Watch,
    Once,
}

/// Whether the running generation answered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Readiness {
    /// Its port (or `ready.http`) is being probed.
    Pending,
    /// Ready since this instant (for a member without a port: since it started).
    Ready(Instant),
    /// The probe gave up at this instant (`ready.timeout`, a failed health check); it keeps
    /// running (watch mode).
    TimedOut(Instant),
}

impl Readiness {
    /// Since when the generation is past its start (ready, or the probe gave up): a change
    /// after it is a person's, not the start's own write.
    pub(super) fn started_at(self) -> Option<Instant> {
        match self {
            Readiness::Pending => None,
            Readiness::Ready(at) | Readiness::TimedOut(at) => Some(at),
        }
    }
}

/// Where one supervised process is in its cycle (the diagram at the top). Each state is one
/// action of the runner (the `match` in `Runner::run_to_end`); what the action saw is a
/// [`Step`], and [`next`] —
/// pure, unit-tested below — says where that leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Before the first generation: its port must be free (nobody else's).
    Claiming,
    /// Its port is claimed: until the coordinator lets it start (every port claimed, every
    /// member in its `after` ready).
    Gated,
    /// Spawning the next generation.
    Starting,
    /// A generation runs, until a change, its exit, or a request.
    Serving(Readiness),
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
    /// A shutdown request, or `--once` done: exit. Any request meanwhile kills at once.
    Exit,
}

/// What a state's action saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Its port is free (or it has none).
    Claimed,
    /// The coordinator let it start.
    Go,
    /// A generation was spawned at `at`; `probe`: it has a port whose readiness is probed.
    Started { at: Instant, probe: bool },
    /// A later generation could not be spawned (failing to spawn the first is an error).
    StartFailed,
    /// The probe answered.
    Ready(Instant),
    /// The probe gave up (`ready.timeout`, or a failed health check) at this instant.
    NotReady(Instant),
    /// Files changed, the last at this instant.
    Changed(Instant),
    /// The generation exited on its own.
    Exited,
    /// `devrun restart`.
    Restart,
    /// Ctrl-C, SIGTERM, SIGHUP, `devrun stop`.
    Shutdown,
    /// The whole group is gone; `shutdown`: a shutdown was asked for meanwhile.
    Stopped { shutdown: bool },
    /// Quiet for the debounce time, or the settle ceiling passed.
    Settled,
    /// Nobody else holds the port.
    PortFree,
}

/// The runner's moves: where `step`, seen in `state`, leads. A step a state does not expect
/// leaves it where it is.
pub(super) fn next(mode: Mode, state: Phase, step: Step) -> Phase {
    use Phase::*;
    match (state, step) {
        (Exiting, _) => Exiting,
        // A running group is always stopped first; elsewhere nothing runs.
        (Serving(_), Step::Shutdown) => Stopping(Then::Exit),
        (Stopping(_), Step::Shutdown) => Stopping(Then::Exit),
        (_, Step::Shutdown) => Exiting,
        (Claiming, Step::Claimed) => Gated,
        (Gated, Step::Go) => Starting,
        (Starting, Step::Started { at, probe }) => Serving(match probe {
            true => Readiness::Pending,
            false => Readiness::Ready(at),
        }),
        (Starting, Step::StartFailed) => Waiting { ran: false },
        (Serving(Readiness::Pending), Step::Ready(at)) => Serving(Readiness::Ready(at)),
        (Serving(Readiness::Pending), Step::NotReady(at)) => match mode {
            Mode::Watch => Serving(Readiness::TimedOut(at)),
            Mode::Once => Stopping(Then::Exit),
        },
        (Serving(_), Step::Exited) => match mode {
            Mode::Watch => Stopping(Then::Wait),
            Mode::Once => Stopping(Then::Exit),
        },
        // `--once` has no watch, and a restart request does not interrupt it.
        (Serving(_), Step::Changed(last)) if mode == Mode::Watch => Stopping(Then::Settle(last)),
        (Serving(_), Step::Restart) if mode == Mode::Watch => Stopping(Then::Restart),
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

    const W: Mode = Mode::Watch;

    fn walk(mode: Mode, from: Phase, steps: &[Step]) -> Vec<Phase> {
        let mut phase = from;
        steps
            .iter()
            .map(|step| {
                phase = next(mode, phase, *step);
                phase
            })
            .collect()
    }

    fn started(at: Instant, probe: bool) -> Step {
        Step::Started { at, probe }
    }

    #[test]
    fn the_first_generation_claims_its_port_then_waits_for_its_turn() {
        let t = Instant::now();
        assert_eq!(
            walk(
                W,
                Claiming,
                &[
                    Step::Go,
                    Step::Claimed,
                    started(t, true),
                    Step::Go,
                    Step::Claimed
                ]
            ),
            [Claiming, Gated, Gated, Starting, Starting]
        );
    }

    #[test]
    fn a_member_with_a_port_is_ready_when_probed_one_without_when_started() {
        let (t, later) = (Instant::now(), Instant::now() + Duration::from_millis(5));
        assert_eq!(
            walk(W, Starting, &[started(t, true), Step::Ready(later)]),
            [
                Serving(Readiness::Pending),
                Serving(Readiness::Ready(later))
            ]
        );
        assert_eq!(
            next(W, Starting, started(t, false)),
            Serving(Readiness::Ready(t))
        );
        // Ready once: a late probe answer changes nothing.
        assert_eq!(
            next(W, Serving(Readiness::Ready(t)), Step::Ready(later)),
            Serving(Readiness::Ready(t))
        );
        assert_eq!(
            next(W, Serving(Readiness::Pending), Step::NotReady(later)),
            Serving(Readiness::TimedOut(later))
        );
    }

    #[test]
    fn a_change_stops_settles_confirms_the_port_and_starts_anew() {
        let t = Instant::now();
        assert_eq!(
            walk(
                W,
                Starting,
                &[
                    started(t, false),
                    Step::Changed(t),
                    Step::Stopped { shutdown: false },
                    Step::Settled,
                    Step::PortFree,
                ]
            ),
            [
                Serving(Readiness::Ready(t)),
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
            next(W, settling, Step::Changed(later)),
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
        assert_eq!(next(W, after_later, Step::Changed(t)), after_later);
    }

    #[test]
    fn a_crash_waits_for_a_change_then_settles_and_confirms_the_port() {
        let t = Instant::now();
        assert_eq!(
            walk(
                W,
                Serving(Readiness::Pending),
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
        assert_eq!(next(W, Waiting { ran: true }, Step::Restart), PortFree);
    }

    /// A later generation that cannot be spawned ran no process: after the wait it starts
    /// again without confirming a port nobody used.
    #[test]
    fn a_failed_spawn_waits_then_starts_without_a_port_check() {
        let t = Instant::now();
        assert_eq!(
            walk(
                W,
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
        assert_eq!(next(W, Waiting { ran: false }, Step::Restart), Starting);
    }

    #[test]
    fn restart_stops_then_confirms_the_port_without_settling() {
        assert_eq!(
            walk(
                W,
                Serving(Readiness::TimedOut(Instant::now())),
                &[
                    Step::Restart,
                    Step::Stopped { shutdown: false },
                    Step::PortFree
                ]
            ),
            [Stopping(Then::Restart), PortFree, Starting]
        );
    }

    /// `--once`: an exit or a failed probe tears down and exits; a restart request or a change
    /// does not interrupt it; the coordinator's stop (every member ready) ends it.
    #[test]
    fn once_tears_down_on_exit_not_ready_or_the_coordinators_stop() {
        let t = Instant::now();
        let once = Mode::Once;
        for step in [Step::Exited, Step::NotReady(t)] {
            assert_eq!(
                walk(
                    once,
                    Serving(Readiness::Pending),
                    &[step, Step::Stopped { shutdown: false }]
                ),
                [Stopping(Then::Exit), Exiting],
                "{step:?}"
            );
        }
        let ready = Serving(Readiness::Ready(t));
        assert_eq!(next(once, ready, Step::Exited), Stopping(Then::Exit));
        assert_eq!(next(once, ready, Step::Restart), ready);
        assert_eq!(next(once, ready, Step::Changed(t)), ready);
        assert_eq!(
            walk(
                once,
                ready,
                &[Step::Shutdown, Step::Stopped { shutdown: true }]
            ),
            [Stopping(Then::Exit), Exiting]
        );
    }

    fn every_phase(t: Instant) -> Vec<Phase> {
        let mut phases = vec![Claiming, Gated, Starting, PortFree, Exiting];
        for readiness in [
            Readiness::Pending,
            Readiness::Ready(t),
            Readiness::TimedOut(t),
        ] {
            phases.push(Serving(readiness));
        }
        for then in [Then::Settle(t), Then::Wait, Then::Restart, Then::Exit] {
            phases.push(Stopping(then));
        }
        for ran in [true, false] {
            phases.push(Settling { last: t, ran });
            phases.push(Waiting { ran });
        }
        phases
    }

    fn every_step(t: Instant) -> Vec<Step> {
        vec![
            Step::Claimed,
            Step::Go,
            started(t, true),
            started(t, false),
            Step::StartFailed,
            Step::Ready(t),
            Step::NotReady(t),
            Step::Changed(t),
            Step::Exited,
            Step::Restart,
            Step::Shutdown,
            Step::Stopped { shutdown: false },
            Step::Stopped { shutdown: true },
            Step::Settled,
            Step::PortFree,
        ]
    }

    /// Invariant: a shutdown request always ends in `Exiting`, and a running group is
    /// stopped first, whatever the state and the mode.
    #[test]
    fn a_shutdown_stops_what_runs_and_exits_from_every_state() {
        let t = Instant::now();
        for mode in [Mode::Watch, Mode::Once] {
            for phase in every_phase(t) {
                let after = next(mode, phase, Step::Shutdown);
                match phase {
                    Serving(_) | Stopping(_) => assert_eq!(after, Stopping(Then::Exit)),
                    _ => assert_eq!(after, Exiting, "from {phase:?}"),
                }
                assert_eq!(
                    next(mode, after, Step::Stopped { shutdown: true }),
                    Exiting,
                    "from {phase:?}"
                );
            }
        }
    }

    /// Exiting is final, and a change while the port is held is folded into the coming start.
    #[test]
    fn exiting_is_final_and_a_held_port_folds_changes_in() {
        let t = Instant::now();
        for mode in [Mode::Watch, Mode::Once] {
            for step in every_step(t) {
                assert_eq!(next(mode, Exiting, step), Exiting, "{step:?}");
            }
        }
        assert_eq!(next(W, PortFree, Step::Changed(t)), PortFree);
        assert_eq!(next(W, PortFree, Step::Restart), PortFree);
    }

    /// At most one generation is alive: `Starting` is reached only from the start gate, once
    /// the port is confirmed free after a generation ran, or (nothing ran since the port was
    /// last free) after a wait; never from `Serving` or `Stopping`. And a generation's
    /// readiness is only ever set by `Started` or the probe.
    #[test]
    fn starting_follows_only_the_gate_or_a_free_port_and_never_a_running_group() {
        let t = Instant::now();
        for mode in [Mode::Watch, Mode::Once] {
            for phase in every_phase(t) {
                for step in every_step(t) {
                    let after = next(mode, phase, step);
                    if after == Starting && phase != Starting {
                        assert!(
                            matches!(
                                (phase, step),
                                (Gated, Step::Go)
                                    | (PortFree, Step::PortFree)
                                    | (Waiting { ran: false }, Step::Restart)
                                    | (Settling { ran: false, .. }, Step::Settled)
                            ),
                            "{mode:?}: {phase:?} --{step:?}--> Starting"
                        );
                    }
                    if let (Serving(before), Serving(now)) = (phase, after) {
                        if before != now {
                            assert!(
                                matches!(step, Step::Ready(_) | Step::NotReady(_)),
                                "{phase:?} --{step:?}--> {after:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}
