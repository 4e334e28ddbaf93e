//! `.devrun/` beside the config: the state file that lets the next devrun, `devrun stop`,
//! `devrun status` and `devrun restart` find the running devrun (and its control channel) or what
//! a dead devrun left behind; and the project lock (one devrun per project).
//!
//! The lock belongs to the project, not to an inode: it is taken on a file keyed by the project's
//! canonical path *outside* the project (`$XDG_RUNTIME_DIR/devrun-<uid>/` or the temp folder), so
//! deleting or re-cloning the project folder under a running devrun does not free it. The state
//! file is evidence, never orders: every pid in it is re-checked against the live system.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const STATE_DIR: &str = ".devrun";

/// The environment markers of devrun's processes (`DEVRUN_RUN`, `DEVRUN_PROCESS`,
/// `DEVRUN_PROJECT`): defined by the platform layer, which reads them back from other processes.
pub use crate::sys::{PROCESS_MARKER, PROJECT_MARKER, RUN_MARKER};

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
    /// This run's random id: every backend process has `DEVRUN_RUN=<run>` in its environment.
    #[serde(default)]
    pub run: String,
    /// Where the running devrun takes `stop` and `restart` requests.
    #[serde(default)]
    pub control: Option<ControlRecord>,
    /// The `.devrun/` folder this was written for: a state file copied with its project
    /// (`cp -r`, a backup) names another project's devrun and backend, and is no evidence here.
    #[serde(default)]
    pub project: Option<PathBuf>,
    /// The live generation, if one is running.
    pub backend: Option<BackendRecord>,
    /// False when this run does not run the backend (`--only` without `backend`): `port` and
    /// `backend` are then nobody's.
    #[serde(default = "yes")]
    pub backend_run: bool,
    /// The stack's other members (`[processes.NAME]`), each with its live generation if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessRecord>,
    /// How each member's last generation ended on its own ("exited with code 1: KeyError …"),
    /// by name, until it starts again: what `devrun up` reports when a member fails.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exited: BTreeMap<String, String>,
    /// Started by `devrun up`: where its output and every member's go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

/// The backend's name among the stack's members (in `--only`, `{ports.NAME}`, status).
pub const BACKEND: &str = "backend";

/// One member of the stack besides the backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub name: String,
    pub port: Option<u16>,
    /// Its live generation, if one is running.
    pub running: Option<BackendRecord>,
}

/// The control channel's Unix socket in `.devrun/` (see `control`).
pub const CONTROL_SOCKET: &str = "control.sock";

/// The running devrun's control channel: its Unix socket (or a TCP port on 127.0.0.1), or on
/// Windows its named pipe, and the token it wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRecord {
    /// The TCP port on 127.0.0.1 (where the channel is no Unix socket and no named pipe; an
    /// older devrun's on Windows).
    pub port: Option<u16>,
    pub token: String,
    /// The Unix socket (`.devrun/control.sock`), where the OS has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// The named pipe (`\\.\pipe\devrun-<random>`), on Windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipe: Option<String>,
}

impl ControlRecord {
    /// Where the channel is, for messages: its socket, its pipe, or 127.0.0.1:PORT.
    pub fn describe(&self) -> String {
        match (&self.socket, &self.pipe, self.port) {
            (Some(socket), _, _) => socket.display().to_string(),
            (None, Some(pipe), _) => pipe.clone(),
            (None, None, Some(port)) => format!("127.0.0.1:{port}"),
            (None, None, None) => "(nowhere)".to_string(),
        }
    }
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
    /// devrun judged it ready (its port answered, or it has none and started).
    #[serde(default)]
    pub ready: bool,
}

impl State {
    /// Records member `name`'s live generation (None: not running), the backend's included:
    /// the file keeps its shape (`backend` beside `processes`).
    pub fn set_member(&mut self, name: &str, port: Option<u16>, running: Option<BackendRecord>) {
        match name {
            BACKEND => self.backend = running,
            _ => self.set_process(name, port, running),
        }
    }

    /// Marks member `name`'s live generation ready.
    pub fn set_ready(&mut self, name: &str) {
        let running = match name {
            BACKEND => self.backend.as_mut(),
            _ => self
                .processes
                .iter_mut()
                .find(|p| p.name == name)
                .and_then(|p| p.running.as_mut()),
        };
        if let Some(running) = running {
            running.ready = true;
        }
    }

    /// Records member `name`'s live generation (None: not running), replacing its record.
    pub fn set_process(&mut self, name: &str, port: Option<u16>, running: Option<BackendRecord>) {
        let record = ProcessRecord {
            name: name.to_string(),
            port,
            running,
        };
        match self.processes.iter_mut().find(|p| p.name == name) {
            Some(existing) => *existing = record,
            None => self.processes.push(record),
        }
    }

    /// Every recorded live generation with its member's name: the backend's first, then the
    /// other members' in their recorded order.
    pub fn generations(&self) -> Vec<(&str, &BackendRecord)> {
        let backend = self.backend.as_ref().map(|b| (BACKEND, b));
        let members = self
            .processes
            .iter()
            .filter_map(|p| Some((p.name.as_str(), p.running.as_ref()?)));
        backend.into_iter().chain(members).collect()
    }

    /// Every member this run runs, the backend first (when it runs), with its live generation
    /// if any.
    pub fn members(&self) -> Vec<(&str, Option<&BackendRecord>)> {
        let backend = self.backend_run.then_some((BACKEND, self.backend.as_ref()));
        let others = self
            .processes
            .iter()
            .map(|p| (p.name.as_str(), p.running.as_ref()));
        backend.into_iter().chain(others).collect()
    }

    /// The ports this run's members own: the backend's (when it runs) and every member's that
    /// has one, each with its member's name.
    pub fn ports(&self) -> Vec<(&str, u16)> {
        let backend = self.backend_run.then_some((BACKEND, self.port));
        let members = self
            .processes
            .iter()
            .filter_map(|p| Some((p.name.as_str(), p.port?)));
        backend.into_iter().chain(members).collect()
    }

    /// "port 8001" for a backend run alone, else "ports 8001 (backend), 5173 (web)".
    pub fn describe_ports(&self) -> String {
        describe_ports(&self.ports())
    }

    /// Whether the devrun this names is alive right now (pid *and* start time, and that
    /// process is a devrun), and is not us.
    pub fn devrun_alive(&self) -> bool {
        self.devrun_pid != std::process::id()
            && self.devrun_start != 0
            && crate::procs::is_same(self.devrun_pid, self.devrun_start)
            && crate::procs::is_devrun(self.devrun_pid)
    }
}

/// "port 8001" for the backend alone, "ports 8001 (backend), 5173 (web)" for a stack, "no
/// port" when no member has one.
pub fn describe_ports<N: AsRef<str>>(ports: &[(N, u16)]) -> String {
    match ports {
        [] => "no port".to_string(),
        [(name, port)] if name.as_ref() == BACKEND => format!("port {port}"),
        ports => {
            let each: Vec<String> = ports
                .iter()
                .map(|(name, port)| format!("{port} ({})", name.as_ref()))
                .collect();
            let noun = if each.len() == 1 { "port" } else { "ports" };
            format!("{noun} {}", each.join(", "))
        }
    }
}

fn same_folder(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    a == b || canonical(a) == canonical(b)
}

/// 128 random bits from the OS, as hex: run ids and control tokens.
pub fn random_id() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| io::Error::other(format!("no randomness from the OS: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The project's `.devrun/` folder.
pub struct StateDir {
    dir: PathBuf,
    root: PathBuf,
}

/// Held for as long as this devrun supervises the project. The OS releases it when devrun
/// dies, however it dies, so a crash never leaves a stale lock.
pub struct ProjectLock {
    _project: File,
    _local: File,
}

impl StateDir {
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            dir: root.join(STATE_DIR),
            root: root.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The project folder it belongs to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes `.devrun/` (owner-only, with its `.gitignore`) if it is not there.
    pub fn ensure(&self) -> io::Result<()> {
        self.create()
    }

    /// `.devrun/` inside the project folder, never the project folder itself: a project folder
    /// deleted under a running devrun stays deleted (so a `git clone` into its path works).
    /// Owner-only on Unix whatever the umask (0700; its files 0600), and refused when another
    /// user owns it: another user could otherwise hold its lock or rename a forged state file
    /// over the real one.
    fn create(&self) -> io::Result<()> {
        match std::fs::create_dir(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            owned_by_me(&self.dir)?;
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let ignore = self.dir.join(".gitignore");
        if !ignore.exists() {
            std::fs::write(ignore, "*\n")?;
        }
        Ok(())
    }

    /// Takes the project lock: Ok(None) if another process holds it. Two files are locked:
    /// the one keyed by the project's path outside it (it survives `.devrun/` being deleted),
    /// then `.devrun/lock` (the one older devruns lock).
    pub fn try_lock(&self) -> io::Result<Option<ProjectLock>> {
        let path = project_lock_path(&self.root)?;
        let Some(project) = lock_file(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?
        else {
            return Ok(None);
        };
        self.create()?;
        let Some(local) = lock_file(&self.dir.join("lock"))? else {
            return Ok(None);
        };
        Ok(Some(ProjectLock {
            _project: project,
            _local: local,
        }))
    }

    /// The devrun that runs this project, judged without taking any lock: the state file
    /// names it and that very process (pid and start time) is alive.
    pub fn running_devrun(&self) -> Option<State> {
        self.read().filter(State::devrun_alive)
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The state file, if it was written for this project's `.devrun/` (see `State::project`).
    /// On Unix only a file of this user's is evidence: another user's is not read.
    pub fn read(&self) -> Option<State> {
        #[cfg(unix)]
        owned_by_me(&self.state_path()).ok()?;
        let text = std::fs::read_to_string(self.state_path()).ok()?;
        let state: State = serde_json::from_str(&text).ok()?;
        match &state.project {
            Some(project) if !same_folder(project, &self.dir) => None,
            _ => Some(state),
        }
    }

    /// What a state file written now records as its project.
    pub fn project(&self) -> PathBuf {
        std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone())
    }

    /// Written to a temporary file and renamed over the old one: a reader never sees half.
    /// Owner-only on Unix: it holds the control channel's token.
    pub fn write(&self, state: &State) -> io::Result<()> {
        self.create()?;
        let tmp = self
            .dir
            .join(format!("state.json.{}.tmp", std::process::id()));
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        #[cfg(unix)]
        {
            // A leftover temp file keeps its old mode through `mode()`: set it.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(serde_json::to_string_pretty(state)?.as_bytes())?;
        drop(file);
        std::fs::rename(&tmp, self.state_path())
    }

    /// Removes the state file if it still says what `seen` says: a devrun that started
    /// meanwhile (and wrote its own) keeps its record.
    pub fn clear_if(&self, seen: &State) {
        if self.read().as_ref() == Some(seen) {
            let _ = std::fs::remove_file(self.state_path());
        }
    }

    pub fn clear(&self) {
        let _ = std::fs::remove_file(self.state_path());
        let _ = std::fs::remove_file(self.dir.join(CONTROL_SOCKET));
    }
}

/// Err unless `path` (not followed if a link) belongs to this user.
#[cfg(unix)]
fn owned_by_me(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    match meta.uid() == me {
        true => Ok(()),
        false => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to uid {}, not to you (uid {me}): devrun will not use it; remove it",
                path.display(),
                meta.uid()
            ),
        )),
    }
}

/// Opens (creating) and try-locks a file: Ok(None) when another process holds the lock.
fn lock_file(path: &Path) -> io::Result<Option<File>> {
    let mut options = OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        // A lock another user made (and can hold) is not ours to share.
        owned_by_me(path)?;
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// `<lock folder>/<name>-<hash>.lock`, keyed by the canonical project path. Lock files are
/// never removed: unlinking a lock file would let two processes lock two inodes.
pub fn project_lock_path(root: &Path) -> io::Result<PathBuf> {
    let canonical = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let name: String = canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    let hash = fnv1a(canonical.as_os_str().as_encoded_bytes());
    Ok(lock_folder()?.join(format!("{name}-{hash:016x}.lock")))
}

/// FNV-1a: a hash that never changes between builds (std's may), so every devrun agrees.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The per-user folder for project locks (`$XDG_RUNTIME_DIR/devrun-<uid>`, else
/// `<temp>/devrun-<uid>`), owner-only; one that someone else could write to is refused.
#[cfg(unix)]
fn lock_folder() -> io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let folder = base.join(format!("devrun-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&folder) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", folder.display()),
            ))
        }
    }
    let meta = std::fs::symlink_metadata(&folder)?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "{} is not a folder only you can write to; remove it so devrun can make its own",
            folder.display()
        )));
    }
    Ok(folder)
}

/// The temp folder is per user on Windows.
#[cfg(not(unix))]
fn lock_folder() -> io::Result<PathBuf> {
    let folder = std::env::temp_dir().join("devrun");
    std::fs::create_dir_all(&folder)?;
    Ok(folder)
}

#[cfg(test)]
mod tests;
