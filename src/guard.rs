//! The reload-loop guard: a backend that writes a watched file itself (code generation at
//! startup, a log or SQLite file nobody ignored) would restart forever.
//!
//! The rule, which tells such a backend from a person who saves quickly after each answer:
//! a change is the backend's own ("a suspect") when it arrives while the generation is still
//! starting (no answer can have been seen yet, so no person reacted to one), or within
//! [`JUST_READY`] of ready *and* a process of the generation holds the file open (a log, a
//! database). A person's save 0.2 s after a response comes after ready, to a file the backend
//! does not hold open: never a suspect. When the same path is a suspect in [`STRIKES`]
//! consecutive generations, devrun stops restarting for its changes *while a generation
//! starts*; a change to it after a generation started (ready, or its ready time out) is a
//! person's and restarts as usual, and ends the guard's hold on it. So a person who saved
//! during three starts in a row never loses a later save.
//!
//! The other loop writes the file shortly *after* ready and closes it (a startup task that
//! generates code, a cache written on the first request): nothing tells it from a person who
//! saves right after each answer but persistence. So the consequence is bounded, never a
//! lost save: when the same paths restart [`QUICK_STREAK`] consecutive generations, each
//! within [`QUICK`] of ready, the next restart for them waits 1 s, then 2, 4, … 30 s
//! ([`QuickBackoff`]); the restart still comes, with the newest code. A change to any other
//! path, or `rs` / `devrun restart`, restarts at once and ends the streak.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Consecutive generations a path must restart by its own writes before it is given up on.
pub const STRIKES: u32 = 3;
/// After ready, how long a change to a file the backend holds open still counts as its own.
pub const JUST_READY: Duration = Duration::from_secs(1);

/// A change this soon after a generation got ready counts towards a quick streak.
pub const QUICK: Duration = Duration::from_secs(1);
/// Consecutive generations restarted by a quick change to the same paths before the restart
/// for them waits. A person saving the same file right after each answer rarely does it eight
/// times in a row; a self-writing backend does it 49 times in 15 s.
pub const QUICK_STREAK: u32 = 8;
const QUICK_WAIT_FIRST: Duration = Duration::from_secs(1);
const QUICK_WAIT_LONGEST: Duration = Duration::from_secs(30);

/// What a restart for a change waits, by [`LoopGuard::quick_restart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuickBackoff {
    /// Restart at once.
    Now,
    /// The streak just reached [`QUICK_STREAK`]: wait this long (and say why, once).
    Began(Duration),
    /// The streak goes on: wait this long.
    Longer(Duration),
}

/// The paths whose quick changes restarted the last generations, and how many in a row.
#[derive(Debug)]
struct Streak {
    paths: Vec<PathBuf>,
    generation: u32,
    count: u32,
}

#[derive(Debug, Default)]
pub struct LoopGuard {
    /// The current quick streak, if any.
    streak: Option<Streak>,
    /// Per path: the last generation it was a suspect in, and in how many in a row.
    suspects: HashMap<PathBuf, (u32, u32)>,
    /// Paths given up on: their suspect changes restart nothing.
    held: HashSet<PathBuf>,
}

impl LoopGuard {
    /// Takes the guard's paths out of `changed`: a held path's suspect change is dropped; its
    /// other changes stay (and end the hold). Returns the paths newly given up on.
    pub fn filter(
        &mut self,
        generation: u32,
        changed: &mut Vec<PathBuf>,
        suspect: impl Fn(&Path) -> bool,
    ) -> Vec<PathBuf> {
        let suspects: Vec<PathBuf> = changed.iter().filter(|p| suspect(p)).cloned().collect();
        for path in changed.iter() {
            if !suspects.contains(path) {
                self.held.remove(path);
            }
        }
        let fresh: Vec<PathBuf> = suspects
            .iter()
            .filter(|p| !self.held.contains(*p))
            .cloned()
            .collect();
        let tripped = self.strike(generation, &fresh);
        self.held.extend(tripped.iter().cloned());
        changed.retain(|p| !(suspects.contains(p) && self.held.contains(p)));
        tripped
    }

    /// Records that `suspects` changed during generation `generation`'s start; returns those
    /// that have now done so in [`STRIKES`] consecutive generations.
    pub fn strike(&mut self, generation: u32, suspects: &[PathBuf]) -> Vec<PathBuf> {
        let mut tripped = Vec::new();
        for path in suspects {
            let entry = self.suspects.entry(path.clone()).or_insert((0, 0));
            *entry = match *entry {
                (last, _) if last == generation => *entry,
                (last, count) if last + 1 == generation => (generation, count + 1),
                _ => (generation, 1),
            };
            if entry.1 >= STRIKES {
                self.suspects.remove(path);
                tripped.push(path.clone());
            }
        }
        tripped
    }
}

impl LoopGuard {
    /// A change to `paths` is about to restart generation `generation`, `since_ready` after it
    /// got ready (None: it never did): how long the restart waits.
    pub fn quick_restart(
        &mut self,
        generation: u32,
        paths: &[PathBuf],
        since_ready: Option<Duration>,
    ) -> QuickBackoff {
        if since_ready.is_none_or(|since| since > QUICK) {
            self.streak = None;
            return QuickBackoff::Now;
        }
        let streak = match self.streak.take() {
            Some(s)
                if s.generation + 1 == generation && paths.iter().all(|p| s.paths.contains(p)) =>
            {
                Streak {
                    generation,
                    count: s.count + 1,
                    paths: s.paths,
                }
            }
            _ => Streak {
                paths: paths.to_vec(),
                generation,
                count: 1,
            },
        };
        let count = streak.count;
        self.streak = Some(streak);
        let Some(over) = count.checked_sub(QUICK_STREAK) else {
            return QuickBackoff::Now;
        };
        let wait = QUICK_WAIT_FIRST
            .saturating_mul(1 << over.min(8))
            .min(QUICK_WAIT_LONGEST);
        match over {
            0 => QuickBackoff::Began(wait),
            _ => QuickBackoff::Longer(wait),
        }
    }

    /// `rs` or `devrun restart`: a person asked, whatever the streak was.
    pub fn end_streak(&mut self) {
        self.streak = None;
    }
}

/// The glob for `[watch] ignore` that silences `relative`.
pub fn ignore_glob(relative: &Path) -> String {
    globset::escape(&relative.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_restarts_of_the_same_path_back_off_and_another_path_ends_the_streak() {
        let mut guard = LoopGuard::default();
        let gen_py = vec![PathBuf::from("/p/generated.py")];
        let quick = Some(Duration::from_millis(200));
        for generation in 1..QUICK_STREAK {
            assert_eq!(
                guard.quick_restart(generation, &gen_py, quick),
                QuickBackoff::Now
            );
        }
        assert_eq!(
            guard.quick_restart(QUICK_STREAK, &gen_py, quick),
            QuickBackoff::Began(Duration::from_secs(1))
        );
        assert_eq!(
            guard.quick_restart(QUICK_STREAK + 1, &gen_py, quick),
            QuickBackoff::Longer(Duration::from_secs(2))
        );
        for generation in QUICK_STREAK + 2..QUICK_STREAK + 20 {
            let wait = guard.quick_restart(generation, &gen_py, quick);
            assert!(matches!(wait, QuickBackoff::Longer(w) if w <= QUICK_WAIT_LONGEST));
        }
        // Another path restarts at once and starts the count over.
        let other = vec![PathBuf::from("/p/views.py")];
        assert_eq!(guard.quick_restart(40, &other, quick), QuickBackoff::Now);
        assert_eq!(guard.quick_restart(41, &gen_py, quick), QuickBackoff::Now);
    }

    #[test]
    fn a_slow_change_a_gap_in_generations_or_a_request_ends_the_streak() {
        let gen_py = vec![PathBuf::from("/p/generated.py")];
        let quick = Some(Duration::from_millis(200));
        let streak_of = |guard: &mut LoopGuard| {
            for generation in 1..QUICK_STREAK {
                guard.quick_restart(generation, &gen_py, quick);
            }
        };
        let mut guard = LoopGuard::default();
        streak_of(&mut guard);
        let slow = Some(QUICK + Duration::from_millis(1));
        assert_eq!(
            guard.quick_restart(QUICK_STREAK, &gen_py, slow),
            QuickBackoff::Now
        );
        assert_eq!(
            guard.quick_restart(QUICK_STREAK + 1, &gen_py, quick),
            QuickBackoff::Now
        );

        let mut guard = LoopGuard::default();
        streak_of(&mut guard);
        assert_eq!(
            guard.quick_restart(QUICK_STREAK + 5, &gen_py, quick),
            QuickBackoff::Now
        );

        let mut guard = LoopGuard::default();
        streak_of(&mut guard);
        guard.end_streak();
        assert_eq!(
            guard.quick_restart(QUICK_STREAK, &gen_py, quick),
            QuickBackoff::Now
        );

        let mut guard = LoopGuard::default();
        streak_of(&mut guard);
        assert_eq!(
            guard.quick_restart(QUICK_STREAK, &gen_py, None),
            QuickBackoff::Now
        );
    }

    #[test]
    fn three_consecutive_generations_trip_and_a_gap_resets() {
        let mut guard = LoopGuard::default();
        let p = vec![PathBuf::from("/p/gen.py")];
        assert!(guard.strike(1, &p).is_empty());
        assert!(guard.strike(2, &p).is_empty());
        assert_eq!(guard.strike(3, &p), p);
        // A generation without the suspect starts the count over.
        assert!(guard.strike(5, &p).is_empty());
        assert!(guard.strike(6, &p).is_empty());
        assert!(guard.strike(8, &p).is_empty());
        assert!(guard.strike(9, &p).is_empty());
        assert_eq!(guard.strike(10, &p), p);
    }

    #[test]
    fn a_held_path_drops_only_its_suspect_changes_and_a_later_change_ends_the_hold() {
        let mut guard = LoopGuard::default();
        let path = PathBuf::from("/p/main.py");
        for generation in 1..=2 {
            let mut changed = vec![path.clone()];
            assert!(guard.filter(generation, &mut changed, |_| true).is_empty());
            assert_eq!(changed, vec![path.clone()], "restarts until the third");
        }
        let mut changed = vec![path.clone()];
        assert_eq!(guard.filter(3, &mut changed, |_| true), vec![path.clone()]);
        assert!(
            changed.is_empty(),
            "the third suspect change is given up on"
        );
        let mut changed = vec![path.clone()];
        guard.filter(3, &mut changed, |_| true);
        assert!(
            changed.is_empty(),
            "held: another suspect change restarts nothing"
        );
        let mut changed = vec![path.clone()];
        guard.filter(3, &mut changed, |_| false);
        assert_eq!(
            changed,
            vec![path.clone()],
            "a person's save after the start restarts"
        );
        let mut changed = vec![path.clone()];
        assert!(guard.filter(4, &mut changed, |_| true).is_empty());
        assert_eq!(changed, vec![path], "the hold ended: counting starts over");
    }
}
