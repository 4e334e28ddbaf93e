//! `.devrun/` beside the config: the project lock (one devrun per project) and the state file
//! that lets the next devrun, or `devrun stop`, find and end what a dead devrun left behind.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const STATE_DIR: &str = ".devrun";

/// What devrun records about itself and its current generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub devrun_pid: u32,
    /// OS start time of devrun (see `procs::start_time`), to tell it from a reused pid.
    pub devrun_start: u64,
    pub port: u16,
    pub host: String,
    /// Unix seconds when devrun started.
    pub started_at: u64,
    /// The live generation, if one is running.
    pub backend: Option<BackendRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRecord {
    pub pid: u32,
    /// Its process group (the pid itself on Unix; the job holds it on Windows).
    pub pgid: u32,
    pub start: u64,
    pub generation: u32,
    pub command: Vec<String>,
    /// Unix seconds when this generation started.
    pub started_at: u64,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The project's `.devrun/` folder.
pub struct StateDir {
    dir: PathBuf,
}

/// Held for as long as this devrun supervises the project. The OS releases it when devrun
/// dies, however it dies, so a crash never leaves a stale lock.
pub struct ProjectLock {
    _file: File,
}

impl StateDir {
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            dir: root.join(STATE_DIR),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn create(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let ignore = self.dir.join(".gitignore");
        if !ignore.exists() {
            std::fs::write(ignore, "*\n")?;
        }
        Ok(())
    }

    /// Takes the project lock: Ok(None) if another process holds it.
    pub fn try_lock(&self) -> io::Result<Option<ProjectLock>> {
        self.create()?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join("lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(ProjectLock { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// Whether some devrun holds the project lock right now.
    pub fn locked(&self) -> bool {
        if !self.dir.join("lock").exists() {
            return false;
        }
        matches!(self.try_lock(), Ok(None))
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn read(&self) -> Option<State> {
        let text = std::fs::read_to_string(self.state_path()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Written to a temporary file and renamed over the old one: a reader never sees half.
    pub fn write(&self, state: &State) -> io::Result<()> {
        self.create()?;
        let tmp = self
            .dir
            .join(format!("state.json.{}.tmp", std::process::id()));
        let mut file = File::create(&tmp)?;
        file.write_all(serde_json::to_string_pretty(state)?.as_bytes())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, self.state_path())
    }

    pub fn clear(&self) {
        let _ = std::fs::remove_file(self.state_path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        let lock = state_dir.try_lock().unwrap().expect("first lock");
        assert!(state_dir.try_lock().unwrap().is_none());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".devrun/.gitignore")).unwrap(),
            "*\n"
        );
        let state = State {
            devrun_pid: 1,
            devrun_start: 2,
            port: 8001,
            host: "127.0.0.1".into(),
            started_at: 3,
            backend: Some(BackendRecord {
                pid: 4,
                pgid: 4,
                start: 5,
                generation: 6,
                command: vec!["python".into()],
                started_at: 7,
            }),
        };
        state_dir.write(&state).unwrap();
        assert_eq!(state_dir.read(), Some(state));
        drop(lock);
        assert!(state_dir.try_lock().unwrap().is_some());
    }
}
