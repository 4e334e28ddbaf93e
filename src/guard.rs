//! The reload-loop guard: a backend that writes a watched file itself (code generation at
//! startup, a log or SQLite file nobody ignored) would restart forever.
//!
//! The rule, which tells such a backend from a person who saves quickly after each answer:
//! a change is the backend's own ("a suspect") when it arrives while the generation is still
//! starting (no answer can have been seen yet, so no person reacted to one), or within
//! [`JUST_READY`] of ready *and* a process of the generation holds the file open (a log, a
//! database). A person's save 0.2 s after a response comes after ready, to a file the backend
//! does not hold open: never a suspect. When the same path is a suspect in [`STRIKES`]
//! consecutive generations, devrun stops restarting for it.

use std::collections::HashMap;
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
}

impl LoopGuard {
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
}
