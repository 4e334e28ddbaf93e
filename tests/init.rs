//! `devrun init` against the real binary: it detects the app in a folder and writes a
//! `devrun.toml` that `devrun --once` accepts and runs.
//!
//! Self-contained on purpose (no `tests/common`). The FastAPI app runs on `DEVRUN_TEST_PYTHON`
//! (a Python with fastapi and uvicorn), which `init` picks up through a `.venv` in the folder.

use std::fs::{self, File};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Upper bound for one `devrun --once` run; a hang beyond it is a failure, never a wait.
const ONCE_TIMEOUT: Duration = Duration::from_secs(60);

/// Tests that let `init` pick a free port of 8000..=8099 run one at a time, so two of them
/// never pick the same one and then race for it.
static AUTO_PORT: Mutex<()> = Mutex::new(());

fn devrun() -> Command {
    Command::new(env!("CARGO_BIN_EXE_devrun"))
}

/// The interpreter with fastapi and uvicorn. Panics (never skips) when there is none.
#[cfg(unix)]
fn test_python() -> PathBuf {
    let python = std::env::var("DEVRUN_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "DEVRUN_TEST_PYTHON is not set: tests/init.rs needs a Python with fastapi and uvicorn \
             installed (e.g. DEVRUN_TEST_PYTHON=/tmp/devrun-venv/bin/python cargo test --test init)"
        )
    });
    let ok = Command::new(&python)
        .args(["-c", "import fastapi, uvicorn"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "DEVRUN_TEST_PYTHON={python} cannot import fastapi and uvicorn"
    );
    PathBuf::from(python)
}

/// A temp folder holding the project (`project/`) and devrun's logs beside it.
struct Project {
    tmp: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let tmp = tempfile::tempdir().expect("temp dir");
        fs::create_dir(tmp.path().join("project")).expect("project dir");
        Project { tmp }
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("project")
    }

    fn write(&self, rel: &str, text: &str) -> &Project {
        let path = self.dir().join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
        self
    }

    /// Gives the project a `.venv` whose `bin/python` is `DEVRUN_TEST_PYTHON`. When that is a
    /// virtualenv's interpreter, `.venv` links to the whole virtualenv: a lone symlinked
    /// `python` would not find the virtualenv's packages (Python looks for `pyvenv.cfg` beside
    /// the path it was started by).
    #[cfg(unix)]
    fn with_test_venv(&self) -> &Project {
        let python = test_python();
        let venv_root = python
            .parent()
            .and_then(std::path::Path::parent)
            .filter(|root| root.join("pyvenv.cfg").is_file() && root.join("bin/python").is_file());
        let link = self.dir().join(".venv");
        match venv_root {
            Some(root) => std::os::unix::fs::symlink(root, &link).expect("symlink .venv"),
            _ => {
                fs::create_dir_all(link.join("bin")).expect("mkdir .venv/bin");
                std::os::unix::fs::symlink(&python, link.join("bin/python"))
                    .expect("symlink .venv/bin/python");
            }
        }
        self
    }

    /// A `.env` with `PORT=` a port the OS just handed out, so parallel tests never share one.
    fn with_env_port(&self) -> u16 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("ephemeral port")
            .port();
        self.write(".env", &format!("DEBUG=1\nPORT={port}\n"));
        port
    }

    fn config_path(&self) -> PathBuf {
        self.dir().join("devrun.toml")
    }

    fn config(&self) -> String {
        fs::read_to_string(self.config_path()).expect("devrun.toml was not written")
    }

    /// `devrun init [args]` in the project: (exit code, stderr).
    fn init(&self, args: &[&str]) -> (i32, String) {
        let out = devrun()
            .arg("init")
            .args(args)
            .current_dir(self.dir())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run devrun init");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `devrun --once` in the project, killed if it outlives [`ONCE_TIMEOUT`]:
    /// (exit code, devrun's and the backend's output).
    fn once(&self) -> (i32, String) {
        let log = self.tmp.path().join("once.log");
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = devrun()
            .args(["--once", "--color", "never"])
            .current_dir(self.dir())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn devrun --once");
        let mut guard = KillOnDrop(child);
        let started = Instant::now();
        let code = loop {
            if let Some(status) = guard.0.try_wait().expect("wait for devrun") {
                break status.code().unwrap_or(-1);
            }
            if started.elapsed() > ONCE_TIMEOUT {
                drop(guard);
                panic!(
                    "devrun --once still running after {ONCE_TIMEOUT:?}; output:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            sleep(Duration::from_millis(50));
        };
        (code, fs::read_to_string(&log).unwrap_or_default())
    }
}

/// Ends a `devrun` the test is done with, even when the test panics.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The `port = N` line of a written config.
fn port_of(config: &str) -> u16 {
    config
        .lines()
        .find_map(|line| line.strip_prefix("port = ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `port = N` line in:\n{config}"))
}

fn assert_port_free(port: u16) {
    assert!(
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok(),
        "port {port} is still held after devrun --once"
    );
}

#[cfg(unix)]
const FASTAPI_MAIN: &str = r#"from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def root():
    return {"ok": True}
"#;

#[cfg(unix)]
#[test]
fn fastapi_folder_is_detected_and_runs_once() {
    let p = Project::new();
    p.write("app/__init__.py", "")
        .write("app/main.py", FASTAPI_MAIN)
        .with_test_venv();
    let port = p.with_env_port();

    let (code, stderr) = p.init(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("FastAPI app app.main:app"), "{stderr}");
    let config = p.config();
    assert!(config.contains("\"app.main:app\""), "{config}");
    assert!(config.contains("\".venv/bin/python\""), "{config}");
    assert!(config.contains("uvicorn"), "{config}");
    assert!(config.contains("# http = \"/docs\""), "{config}");
    assert_eq!(port_of(&config), port, "PORT in .env not used:\n{config}");

    let (code, output) = p.once();
    assert_eq!(
        code, 0,
        "devrun --once failed:\n{output}\nconfig:\n{config}"
    );
    assert!(
        output.contains("Application startup complete"),
        "uvicorn did not serve the app:\n{output}"
    );
    assert_port_free(port);
}

#[test]
fn empty_folder_gets_a_template_that_runs_once() {
    let _serial = AUTO_PORT.lock().unwrap_or_else(|e| e.into_inner());
    let p = Project::new();

    let (code, stderr) = p.init(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("no app found (template)"), "{stderr}");
    let config = p.config();
    assert!(config.contains("http.server"), "{config}");
    let port = port_of(&config);
    assert!((8000..=8099).contains(&port), "{config}");

    let (code, output) = p.once();
    assert_eq!(
        code, 0,
        "devrun --once failed:\n{output}\nconfig:\n{config}"
    );
    assert_port_free(port);
}

#[test]
fn flask_folder_is_detected_and_its_config_parses() {
    let p = Project::new();
    p.write(
        "web.py",
        "from flask import Flask\n\nserver = Flask(__name__)\n\n\
         if __name__ == \"__main__\":\n    server.run(port=5123)\n",
    );

    let (code, stderr) = p.init(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("Flask app web:server"), "{stderr}");
    let config = p.config();
    assert!(
        config.contains("\"flask\", \"--app\", \"web:server\", \"run\""),
        "{config}"
    );
    assert!(config.contains("\"--no-reload\""), "{config}");
    assert_eq!(
        port_of(&config),
        5123,
        "port=5123 in web.py not used:\n{config}"
    );

    // Flask may not be installed: the backend may fail (1), the config must not (2).
    let (code, output) = p.once();
    assert_ne!(
        code, 2,
        "devrun rejected the config:\n{output}\nconfig:\n{config}"
    );
}

#[test]
fn django_folder_is_detected() {
    let p = Project::new();
    p.write(
        "manage.py",
        "#!/usr/bin/env python\nimport os\nimport sys\n\n\
         if __name__ == \"__main__\":\n    \
         os.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"mysite.settings\")\n    \
         from django.core.management import execute_from_command_line\n    \
         execute_from_command_line(sys.argv)\n",
    )
    .write("mysite/__init__.py", "")
    .write("mysite/settings.py", "DEBUG = True\n");
    let port = p.with_env_port();

    let (code, stderr) = p.init(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("Django project"), "{stderr}");
    let config = p.config();
    assert!(config.contains("\"manage.py\", \"runserver\""), "{config}");
    assert!(config.contains("\"127.0.0.1:{port}\""), "{config}");
    assert!(config.contains("\"--noreload\""), "{config}");
    assert!(config.contains("\"**/*.html\""), "{config}");
    assert_eq!(port_of(&config), port, "{config}");

    // Django may not be installed: the backend may fail (1), the config must not (2).
    let (code, output) = p.once();
    assert_ne!(
        code, 2,
        "devrun rejected the config:\n{output}\nconfig:\n{config}"
    );
}

#[test]
fn second_init_refuses_and_force_overwrites() {
    let p = Project::new();
    p.write(
        "main.py",
        "from starlette.applications import Starlette\napi = Starlette()\n",
    );
    p.with_env_port();

    let (code, stderr) = p.init(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("Starlette app main:api"), "{stderr}");

    // Edited by the user: a second init must leave it alone.
    let edited = format!("{}\n# my edit\n", p.config());
    fs::write(p.config_path(), &edited).expect("edit devrun.toml");
    let (code, stderr) = p.init(&[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("devrun.toml already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(p.config(), edited, "a refused init changed the file");

    let (code, stderr) = p.init(&["--force"]);
    assert_eq!(code, 0, "{stderr}");
    let config = p.config();
    assert!(
        !config.contains("# my edit"),
        "--force did not overwrite:\n{config}"
    );
    assert!(config.contains("\"main:api\""), "{config}");
}
