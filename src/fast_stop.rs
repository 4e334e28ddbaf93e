//! devrun's bootstrap for Python backends: every command devrun reads as a Python launch runs
//! through it (src/fast_stop/bootstrap.py, embedded here and written to a private folder for
//! the run), which runs the command as the interpreter would, after:
//! - `[stop] fast` (default on), uvicorn only: a generation stops in milliseconds, not on
//!   uvicorn's 0.1 s polling. It patches uvicorn's `Server`: the stop signal wakes the main
//!   loop at once, and shutdown waits for open connections and tasks instead of a fixed sleep
//!   (bounded by the stop timeout), then runs the lifespan shutdown;
//! - the import report: a thread writes the project files in `sys.modules` to a file beside
//!   the bootstrap, so the watch follows imported files `.gitignore` names (`imports`).
//!
//! A forked (preloaded) generation loads the same file and does both itself (runner.py).
//!
//! - [`FastStop`]: read once at config load (a Python launch; does it run uvicorn?);
//! - [`Bootstrap`]: the file for this run, the command and variables each generation gets.

use crate::preload::Launch;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

const BOOTSTRAP: &str = include_str!("fast_stop/bootstrap.py");
/// The uvicorn versions the bootstrap patches (its KNOWN), as a person reads them.
pub const KNOWN_VERSIONS: &str = "0.55";

/// The backend's command read as the Python launch it is, and whether it gets the fast stop:
/// `[stop] fast` is on and it runs uvicorn (`python -m uvicorn …`, the `uvicorn` console
/// script, or a script or module of the project that names uvicorn).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastStop {
    launch: Launch,
    /// What `ps` shows for a generation: the command as given, its words a JSON list (the
    /// bootstrap writes them NUL-separated, so /proc/PID/cmdline reads as the command's argv).
    title: String,
    /// `[stop] fast` is on.
    fast: bool,
    /// The command runs uvicorn (whatever `[stop] fast` says): on Windows the bootstrap can
    /// hand a held socket to it (`socket = "inherit"`).
    pub runs_uvicorn: bool,
}

impl FastStop {
    /// The bootstrap's view of `command` (run in `root`), or None when it is no Python launch;
    /// `fast`: `[stop] fast` is on.
    pub fn detect(command: &[String], root: &Path, fast: bool) -> Option<FastStop> {
        let launch = Launch::parse(command, root).ok()?;
        let uvicorn = match (&launch.module, &launch.script) {
            (Some(module), _) => module == "uvicorn" || module_names_uvicorn(module, root),
            (None, Some(script)) => names_uvicorn(&root.join(script)),
            (None, None) => false,
        };
        Some(FastStop {
            launch,
            title: serde_json::to_string(command).unwrap_or_default(),
            fast,
            runs_uvicorn: uvicorn,
        })
    }

    /// uvicorn is patched: `[stop] fast` and the command runs uvicorn.
    pub fn patches_uvicorn(&self) -> bool {
        self.fast && self.runs_uvicorn
    }
}

/// `python -m pkg`: its `pkg/__main__.py` (or `pkg.py`) in the project names uvicorn.
fn module_names_uvicorn(module: &str, root: &Path) -> bool {
    let path = root.join(module.replace('.', "/"));
    names_uvicorn(&path.join("__main__.py")) || names_uvicorn(&path.with_extension("py"))
}

fn names_uvicorn(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.contains("uvicorn"))
}

/// The bootstrap written for this run, in a folder only this user can enter; removed (with the
/// report file beside it) when dropped.
#[derive(Debug)]
pub struct Bootstrap {
    dir: PathBuf,
    script: PathBuf,
    /// Where the bootstrap writes `unknown VERSION` when it left uvicorn alone.
    report: PathBuf,
    said: bool,
    /// Where it lists the project files the running generation imported.
    imports: PathBuf,
    /// The import report as last read (its modification time and size).
    imports_seen: Option<(std::time::SystemTime, u64)>,
    /// The FIFO the generation reads reload requests from (it makes it), and the file it
    /// answers in (`N what-it-dropped`); the last request's number.
    reload: PathBuf,
    reloaded: PathBuf,
    reloads: u64,
}

impl Bootstrap {
    /// Writes the bootstrap into a fresh private folder under the temp folder.
    pub fn write() -> io::Result<Bootstrap> {
        let id = crate::state::random_id()?;
        let dir = std::env::temp_dir().join(format!("devrun-fast-stop-{}", &id[..16]));
        create_private_dir(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        let bootstrap = Bootstrap {
            script: dir.join("devrun_fast_stop.py"),
            report: dir.join("report"),
            imports: dir.join("imports"),
            imports_seen: None,
            reload: dir.join("reload"),
            reloaded: dir.join("reloaded"),
            reloads: 0,
            dir,
            said: false,
        };
        std::fs::write(&bootstrap.script, BOOTSTRAP).map_err(|e| {
            io::Error::new(e.kind(), format!("{}: {e}", bootstrap.script.display()))
        })?;
        Ok(bootstrap)
    }

    /// A cold start's command: the interpreter (with its options) runs the bootstrap, which
    /// runs the module or script with its arguments.
    pub fn command(&self, fast: &FastStop) -> Vec<String> {
        let launch = &fast.launch;
        let mut command = launch.interpreter.clone();
        command.push(self.script.display().to_string());
        match (&launch.module, &launch.script) {
            (Some(module), _) => command.extend(["-m".to_string(), module.clone()]),
            (None, Some(script)) => command.push(script.clone()),
            (None, None) => {}
        }
        command.extend(launch.args.iter().cloned());
        command
    }

    /// The variables the bootstrap takes out of the backend's environment: the import report
    /// (its file, and the project `root` whose files count); with the fast stop, the stop
    /// timeout that bounds the drain; a cold start is told what `ps` should show, a fork where
    /// the bootstrap is (it sets its title itself).
    pub fn env(
        &self,
        fast: &FastStop,
        timeout: Duration,
        forked: bool,
        root: &Path,
    ) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "DEVRUN_IMPORTS_REPORT".into(),
                self.imports.display().to_string(),
            ),
            ("DEVRUN_IMPORTS_ROOT".into(), root.display().to_string()),
            ("DEVRUN_RELOAD".into(), self.reload.display().to_string()),
        ];
        if fast.patches_uvicorn() {
            env.push(("DEVRUN_FAST_STOP".into(), timeout.as_millis().to_string()));
            env.push((
                "DEVRUN_FAST_STOP_REPORT".into(),
                self.report.display().to_string(),
            ));
        }
        env.push(match forked {
            true => (
                "DEVRUN_FAST_STOP_SCRIPT".into(),
                self.script.display().to_string(),
            ),
            false => ("DEVRUN_FAST_STOP_TITLE".into(), fast.title.clone()),
        });
        env
    }

    /// The uvicorn version a generation left unpatched (stock stop), the first time only.
    pub fn unknown_version(&mut self) -> Option<String> {
        if self.said {
            return None;
        }
        let text = std::fs::read_to_string(&self.report).ok()?;
        self.said = true;
        let version = text.trim().strip_prefix("unknown ")?;
        Some(version.to_string())
    }
}

impl Bootstrap {
    /// The project files the running generation imported, when its report changed since the
    /// last call (one `stat` when it did not).
    pub fn imports(&mut self) -> Option<Vec<PathBuf>> {
        let meta = std::fs::metadata(&self.imports).ok()?;
        let seen = (meta.modified().ok()?, meta.len());
        if self.imports_seen == Some(seen) {
            return None;
        }
        let text = std::fs::read_to_string(&self.imports).ok()?;
        self.imports_seen = Some(seen);
        Some(
            text.lines()
                .filter(|l| !l.is_empty())
                .map(PathBuf::from)
                .collect(),
        )
    }
}

impl Bootstrap {
    /// Asks the running generation to drop its template caches: the request's number, or None
    /// when no generation listens (starting, gone, or not on Unix).
    pub fn request_reload(&mut self) -> Option<u64> {
        self.reloads += 1;
        let line = format!("{}\n", self.reloads);
        write_fifo(&self.reload, line.as_bytes()).ok()?;
        Some(self.reloads)
    }

    /// What the generation dropped for request `number`, once it has answered it.
    pub fn reloaded(&self, number: u64) -> Option<String> {
        let text = std::fs::read_to_string(&self.reloaded).ok()?;
        let (answered, dropped) = text.trim().split_once(' ')?;
        (answered == number.to_string()).then(|| dropped.to_string())
    }
}

/// Writes to a FIFO only when a reader has it open (never blocks).
#[cfg(unix)]
fn write_fifo(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    if !std::fs::symlink_metadata(path)?.file_type().is_fifo() {
        return Err(io::Error::other("not a FIFO"));
    }
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    fifo.write_all(bytes)
}

#[cfg(not(unix))]
fn write_fifo(_path: &Path, _bytes: &[u8]) -> io::Result<()> {
    Err(io::Error::other("no FIFOs on this system"))
}

/// A new folder only this user may enter (on Windows the temp folder is the user's own).
fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    return std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(dir);
    #[cfg(not(unix))]
    std::fs::create_dir(dir)
}

impl Drop for Bootstrap {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn detects_uvicorn_by_module_console_script_or_script_text() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("serve.py"),
            "import uvicorn\nuvicorn.run('a:app')\n",
        )
        .unwrap();
        std::fs::write(root.join("plain.py"), "print('hi')\n").unwrap();
        std::fs::create_dir(root.join("pkg")).unwrap();
        std::fs::write(root.join("pkg/__main__.py"), "from uvicorn import run\n").unwrap();
        std::fs::write(
            root.join("uvicorn"),
            "#!/venv/bin/python3\nfrom uvicorn.main import main\n",
        )
        .unwrap();
        let yes = [
            "python -m uvicorn app:app",
            "python serve.py",
            "python -X dev -m pkg",
            "./uvicorn app:app",
        ];
        for command in yes {
            assert!(
                FastStop::detect(&words(command), root, true).is_some_and(|f| f.patches_uvicorn()),
                "{command}"
            );
        }
        let no = ["python plain.py", "python -m http.server"];
        for command in no {
            let plain = FastStop::detect(&words(command), root, true);
            assert!(plain.is_some_and(|f| !f.patches_uvicorn()), "{command}");
        }
        assert!(FastStop::detect(&words("node x.js"), root, true).is_none());
        let off = FastStop::detect(&words("python serve.py"), root, false);
        assert!(
            off.is_some_and(|f| !f.patches_uvicorn() && f.runs_uvicorn),
            "[stop] fast = false: not patched, still known to run uvicorn"
        );
    }

    #[test]
    fn the_cold_command_runs_the_bootstrap_with_the_launch() {
        let root = Path::new("/");
        let fast =
            FastStop::detect(&words("python3 -u -m uvicorn a:app --port 1"), root, true).unwrap();
        let bootstrap = Bootstrap::write().unwrap();
        let script = bootstrap.script.display().to_string();
        assert!(std::fs::read_to_string(&script)
            .unwrap()
            .contains("def patch"));
        let expected = format!("python3 -u {script} -m uvicorn a:app --port 1");
        assert_eq!(bootstrap.command(&fast), words(&expected));
        let dir = bootstrap.dir.clone();
        drop(bootstrap);
        assert!(!dir.exists());
    }

    #[test]
    fn an_unknown_version_is_said_once() {
        let mut bootstrap = Bootstrap::write().unwrap();
        assert_eq!(bootstrap.unknown_version(), None);
        std::fs::write(&bootstrap.report, "unknown 0.1.0\n").unwrap();
        assert_eq!(bootstrap.unknown_version().as_deref(), Some("0.1.0"));
        assert_eq!(bootstrap.unknown_version(), None);
    }
}
