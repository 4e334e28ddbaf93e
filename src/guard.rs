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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Consecutive generations a path must restart by its own writes before it is given up on.
pub const STRIKES: u32 = 3;
/// After ready, how long a change to a file the backend holds open still counts as its own.
pub const JUST_READY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct LoopGuard {
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

/// The glob for `[watch] ignore` that silences `relative`.
pub fn ignore_glob(relative: &Path) -> String {
    globset::escape(&relative.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
