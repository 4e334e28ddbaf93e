//! Ending what a devrun that is gone (killed, crashed) left running: only processes proven,
//! from the live system, to be of its run.

use super::stop::{escalate, Stopped};
use crate::procs;
use crate::sys::{self as platform, StopSignal, RUN_MARKER};
use std::io;
use std::time::Duration;

/// A backend leader as a dead devrun recorded it. Evidence to check, never orders.
#[derive(Debug, Clone, Copy)]
pub struct LeaderRecord {
    pub pid: u32,
    pub pgid: u32,
    pub start: u64,
}

/// A dead devrun's run: every process it started carries `DEVRUN_RUN=<id>` and started at or
/// after `start` (devrun's own start time).
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: String,
    pub start: u64,
}

/// What orphan recovery did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The leader records (by index in the records given) that name a live process devrun
    /// cannot have started: nothing of theirs was signalled. The text says why.
    pub refused: Vec<(usize, String)>,
    /// What was ended (pids as first found), if anything proven ours was alive.
    pub stopped: Option<(Vec<u32>, Stopped)>,
}

/// Is the recorded leader still the live leader of its own group, safe to signal as a group?
enum LeaderCheck {
    Ours,
    /// Exited, or the pid now belongs to a process with another start time.
    Gone,
    NotOurs(String),
}

fn check_leader(leader: &LeaderRecord, run: Option<&RunRecord>) -> LeaderCheck {
    let LeaderRecord { pid, pgid, start } = *leader;
    if pid <= 1 || pid == std::process::id() {
        return LeaderCheck::NotOurs(format!("pid {pid} can never be a backend devrun started"));
    }
    if pgid != pid {
        return LeaderCheck::NotOurs(format!(
            "its process group {pgid} is not its own pid {pid}, and devrun's backends always \
             lead their own group"
        ));
    }
    if !procs::is_same(pid, start) {
        return LeaderCheck::Gone;
    }
    if let Some(why) = platform::group_refusal(pid, pgid) {
        return LeaderCheck::NotOurs(why);
    }
    // A true pid and start time can be copied into a forged record: where the OS shows a
    // process's environment, the leader must also carry the run's marker (macOS and Windows
    // do not show it: there pid, start time and group are the proof).
    match run.and_then(|run| platform::carries(pid, RUN_MARKER, &run.id)) {
        Some(false) => LeaderCheck::NotOurs(format!(
            "pid {pid} does not carry the recorded run's {RUN_MARKER} marker: devrun did not \
             start it"
        )),
        _ => LeaderCheck::Ours,
    }
}

/// Ends what a devrun that is gone (killed, crashed) left running, with the usual escalation.
/// Everything is re-derived from the live system first, and only proven processes are touched:
/// each recorded leader (the backend's and every other member's) if it is the same process (pid
/// *and* start time) and still leads its own group (never group 0 or 1, never devrun's own group
/// or session), with its group and descendants; and, where the OS lets devrun read another
/// process's environment (Linux), every process of this user carrying the run's marker that
/// started after the run did, with its descendants. A record that names a live process failing
/// those checks ends nothing of its own. All of it is stopped at once: one grace period in all.
pub async fn stop_orphan(
    leaders: &[LeaderRecord],
    run: Option<&RunRecord>,
    signal: StopSignal,
    grace: Duration,
) -> io::Result<Recovery> {
    // A leader record that fails the checks is left alone; the others, and the run's marked
    // processes, are proven on their own and still ended.
    let mut refused = Vec::new();
    let mut proven = Vec::new();
    for (index, leader) in leaders.iter().enumerate() {
        match check_leader(leader, run) {
            LeaderCheck::NotOurs(why) => refused.push((index, why)),
            LeaderCheck::Ours => proven.push(*leader),
            LeaderCheck::Gone => {}
        }
    }
    // The group is signalled only while its leader is still proven to lead it.
    let still_leading = |proven: &[LeaderRecord]| -> Vec<LeaderRecord> {
        proven
            .iter()
            .filter(|l| matches!(check_leader(l, run), LeaderCheck::Ours))
            .copied()
            .collect()
    };
    let never = procs::self_and_ancestors();
    let mut marked: Vec<(u32, u64)> = run
        .filter(|r| r.id.len() >= 16 && r.start > 0)
        .map(|r| procs::marked(RUN_MARKER, &r.id, r.start))
        .unwrap_or_default();
    let mut first = Vec::new();
    let members = || {
        // Once proven, a process stays proven while it lives (same pid and start time).
        marked.retain(|(pid, start)| procs::is_same(*pid, *start));
        let mut members: Vec<u32> = marked.iter().map(|(pid, _)| *pid).collect();
        for (pid, _) in &marked {
            members.extend(procs::descendants(*pid));
        }
        for l in still_leading(&proven) {
            members.extend(platform::orphan_members(l.pid, l.pgid, l.start));
        }
        members.sort_unstable();
        members.dedup();
        members.retain(|p| *p > 1 && !never.contains(p) && !procs::is_zombie(*p));
        if first.is_empty() {
            first = members.clone();
        }
        members
    };
    let send = |members: &[u32], signal| {
        let groups: Vec<u32> = still_leading(&proven).iter().map(|l| l.pgid).collect();
        platform::signal_pids(&groups, members, signal)
    };
    let stopped = escalate(members, send, signal, grace, &mut || false, None).await?;
    Ok(Recovery {
        refused,
        stopped: stopped.map(|stopped| (first, stopped)),
    })
}
