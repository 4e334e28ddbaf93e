//! The reload-loop guard: a backend that writes a watched file itself (code generation at
//! startup, a log or SQLite file nobody ignored) would restart forever.
//!
//! The rule, which tells such a backend from a person who saves quickly after each answer:
//! a change is the backend's own ("a suspect") when it arrives while the generation is still
//! starting (no answer can have been seen yet, so no person reacted to one), or within
//! [`JUST_READY`] of ready *and* a process of the generation holds the file open (a log, a
//! database). A person's save 0.2 s after a response comes after ready, to a file the backend
//! does not hold open: never a suspect. When the same path is a suspect in [`STRIKES`]
//! consecutive generations, devrun stops restarting *at once* for its changes while a
//! generation starts: such a change restarts after a pause instead ([`HOLD_FIRST`], doubling
//! to [`HOLD_LONGEST`]), since by timing alone it cannot be told from a person (or an agent)
//! saving again and again while each generation starts, and a save must never be lost. A change
//! to it after a generation started (ready, or its ready time out) is a person's and restarts as
//! usual, and ends the guard's hold on it.
//!
//! The other loop writes the file shortly *after* ready and closes it (a startup task that
//! generates code): by timing it cannot be told from a person or an agent who saves right
//! after each answer. What can be told is a rewrite with the content the generation started
//! with ([`Contents`]): its code did not change, so no restart is needed and none is stale.
//! Every changed file is read when its change is taken (so a save done in two writes, a
//! truncate then the bytes, is judged by its last); a file read before a generation spawned
//! and not changed since is what that generation started with.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Consecutive generations a path must restart by its own writes before it is given up on.
pub const STRIKES: u32 = 3;
/// After ready, how long a change to a file the backend holds open still counts as its own.
pub const JUST_READY: Duration = Duration::from_secs(1);
/// A held path's change restarts after this pause, doubled for each one after it while the
/// hold lasts, up to the longest.
pub const HOLD_FIRST: Duration = Duration::from_secs(5);
const HOLD_LONGEST: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct LoopGuard {
    /// Per path: the last generation it was a suspect in, and in how many in a row.
    suspects: HashMap<PathBuf, (u32, u32)>,
    /// Paths given up on: their suspect changes restart only after a pause.
    held: HashSet<PathBuf>,
    /// Held paths' changes left out of a batch, and when they restart the backend.
    deferred: Option<(Instant, Vec<PathBuf>)>,
    /// The next pause (zero: [`HOLD_FIRST`]); back to the first when no path is held.
    pause: Duration,
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
        if self.held.is_empty() {
            self.pause = Duration::ZERO;
        }
        let left_out: Vec<PathBuf> = suspects
            .into_iter()
            .filter(|p| self.held.contains(p))
            .collect();
        changed.retain(|p| !left_out.contains(p));
        self.defer(left_out);
        tripped
    }

    /// Held changes left out of a batch restart after a pause (one pending restart at a time,
    /// taking every path left out meanwhile, each once: the restart names them).
    fn defer(&mut self, paths: Vec<PathBuf>) {
        if paths.is_empty() {
            return;
        }
        match &mut self.deferred {
            Some((_, pending)) => {
                for path in paths {
                    if !pending.contains(&path) {
                        pending.push(path);
                    }
                }
            }
            None => {
                let pause = self.pause.max(HOLD_FIRST);
                self.pause = (pause * 2).min(HOLD_LONGEST);
                self.deferred = Some((Instant::now() + pause, paths));
            }
        }
    }

    /// When the held changes left out so far restart the backend, if any were.
    pub fn deferred_until(&self) -> Option<Instant> {
        self.deferred.as_ref().map(|(at, _)| *at)
    }

    /// The held changes left out so far (the restart for them is due, or a generation starts
    /// now anyway and will hold them).
    pub fn take_deferred(&mut self) -> Vec<PathBuf> {
        self.deferred
            .take()
            .map(|(_, paths)| paths)
            .unwrap_or_default()
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

/// A watched file larger than this is never compared: any change to it is a change.
const MAX_COMPARED: u64 = 4 << 20;

/// What changed watched files held when a runner last read them, and when: so a rewrite with
/// the content a generation started with is told from a change.
#[derive(Debug, Default)]
pub struct Contents {
    seen: HashMap<PathBuf, (u64, Instant)>,
}

impl Contents {
    /// `paths` changed outside Serving (stopping, settling, waiting): what they hold now is
    /// what the next generation starts with, unless they change again (another batch).
    pub fn read(&mut self, paths: &[PathBuf]) {
        for path in paths {
            self.record(path, digest(path));
        }
    }

    /// What `path` holds now. The same content read again keeps its first reading's time: a
    /// rewrite whose events come in two batches (the truncate and write, then the close) is
    /// still judged against what a generation started with.
    fn record(&mut self, path: &Path, digest: Option<u64>) {
        match digest {
            Some(digest) => {
                let kept = self.seen.get(path).filter(|(old, _)| *old == digest);
                let read_at = kept.map_or_else(Instant::now, |(_, at)| *at);
                self.seen.insert(path.to_path_buf(), (digest, read_at))
            }
            None => self.seen.remove(path),
        };
    }

    /// Whether `path`, just changed, holds exactly what it held when the generation spawned at
    /// `spawned_at` started: known only when it was read before then and no change to it was
    /// seen since. Records what it holds now either way.
    pub fn unchanged_since(&mut self, path: &Path, spawned_at: Instant) -> bool {
        let before = self.seen.get(path).copied();
        let now = digest(path);
        self.record(path, now);
        matches!((before, now), (Some((old, read_at)), Some(new)) if read_at < spawned_at && old == new)
    }
}

/// A digest of a regular file's bytes (None: unreadable, not a regular file, or too large).
fn digest(path: &Path) -> Option<u64> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_COMPARED {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = DefaultHasher::new();
    hasher.write(&bytes);
    Some(hasher.finish())
}

/// The glob for `[watch] ignore` that silences `relative`.
pub fn ignore_glob(relative: &Path) -> String {
    globset::escape(&relative.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_with_the_content_a_generation_started_with_is_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("generated.py");
        std::fs::write(&path, "X = 1\n").unwrap();
        let mut contents = Contents::default();
        // Never read before: a change.
        assert!(!contents.unchanged_since(&path, Instant::now()));
        let spawned = Instant::now() + Duration::from_millis(1);
        std::thread::sleep(Duration::from_millis(2));
        std::fs::write(&path, "X = 1\n").unwrap();
        assert!(
            contents.unchanged_since(&path, spawned),
            "same bytes as at the start"
        );
        // Read after the generation started: says nothing of what it started with.
        let earlier = Instant::now() - Duration::from_secs(1);
        assert!(!contents.unchanged_since(&path, earlier));
        let spawned = Instant::now() + Duration::from_millis(1);
        std::thread::sleep(Duration::from_millis(2));
        std::fs::write(&path, "X = 2\n").unwrap();
        assert!(!contents.unchanged_since(&path, spawned), "other bytes");
        // A change read outside Serving (while settling) is what the next generation starts
        // with: a rewrite of it is no change, another content is.
        std::fs::write(&path, "X = 3\n").unwrap();
        contents.read(std::slice::from_ref(&path));
        let spawned = Instant::now() + Duration::from_millis(1);
        std::thread::sleep(Duration::from_millis(2));
        assert!(contents.unchanged_since(&path, spawned));
        std::fs::write(&path, "X = 4\n").unwrap();
        assert!(!contents.unchanged_since(&path, spawned));
        std::fs::remove_file(&path).unwrap();
        assert!(!contents.unchanged_since(&path, Instant::now()), "deleted");
    }

    /// One rewrite seen in two batches (the truncate and write, then the close) is judged the
    /// same both times: the second reading does not make the content "new since the start".
    #[test]
    fn a_rewrite_seen_in_two_batches_is_no_change_in_either() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.py");
        std::fs::write(&path, "SCHEMA = {}\n").unwrap();
        let mut contents = Contents::default();
        contents.read(std::slice::from_ref(&path));
        let spawned = Instant::now() + Duration::from_millis(1);
        std::thread::sleep(Duration::from_millis(2));
        std::fs::write(&path, "SCHEMA = {}\n").unwrap();
        assert!(contents.unchanged_since(&path, spawned), "the first batch");
        assert!(contents.unchanged_since(&path, spawned), "the second batch");
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

    /// A held path's change is never lost: it restarts after a pause, longer each time.
    #[test]
    fn a_held_change_restarts_after_a_pause_that_grows() {
        let mut guard = LoopGuard::default();
        let path = PathBuf::from("/p/version.py");
        for generation in 1..=3 {
            guard.filter(generation, &mut vec![path.clone()], |_| true);
        }
        let first = guard
            .deferred_until()
            .expect("the third change is deferred, not dropped");
        assert!(first >= Instant::now() + HOLD_FIRST - Duration::from_secs(1));
        // Another change meanwhile joins the pending restart (the same path once: the restart
        // names it, and said it twice in a CI run).
        guard.filter(3, &mut vec![path.clone()], |_| true);
        assert_eq!(guard.deferred_until(), Some(first));
        assert_eq!(guard.take_deferred(), vec![path.clone()]);
        assert_eq!(guard.deferred_until(), None);
        // The next held change waits longer.
        guard.filter(4, &mut vec![path.clone()], |_| true);
        let second = guard.deferred_until().expect("deferred again");
        assert!(second >= Instant::now() + HOLD_FIRST * 2 - Duration::from_secs(1));
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
            "held: another suspect change restarts nothing at once"
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
