//! `devrun init` against the real binary: it detects the app in a folder and writes a
//! `devrun.toml` that `devrun --once` accepts and runs.
//!
//! The projects start empty ([`Project::empty`]). The FastAPI app runs on `DEVRUN_TEST_PYTHON`
//! (a Python with fastapi and uvicorn), which `init` picks up through a `.venv` in the folder.

use crate::harness::*;

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bound for one `devrun --once` run; a hang beyond it is a failure, never a wait.
pub(crate) const ONCE_TIMEOUT: Duration = Duration::from_secs(60);

/// Tests that let `init` pick a free port of 8000..=8099 run one at a time, so two of them
/// never pick the same one and then race for it.
pub(crate) static AUTO_PORT: Mutex<()> = Mutex::new(());

/// Gives the project a `.venv` whose `bin/python` is `DEVRUN_TEST_PYTHON`. When that is a
/// virtualenv's interpreter, `.venv` links to the whole virtualenv: a lone symlinked `python`
/// would not find the virtualenv's packages (Python looks for `pyvenv.cfg` beside the path it
/// was started by).
pub(crate) fn link_test_venv(p: &Project) {
    let python = PathBuf::from(fastapi_python());
    let venv_root = python
        .parent()
        .and_then(Path::parent)
        .filter(|root| root.join("pyvenv.cfg").is_file() && root.join("bin/python").is_file());
    let link = p.root.join(".venv");
    match venv_root {
        Some(root) => std::os::unix::fs::symlink(root, &link).expect("symlink .venv"),
        _ => {
            fs::create_dir_all(link.join("bin")).expect("mkdir .venv/bin");
            std::os::unix::fs::symlink(&python, link.join("bin/python"))
                .expect("symlink .venv/bin/python");
        }
    }
}

/// A `.env` with `PORT=` the project's port (free when the project was made).
pub(crate) fn env_port(p: &Project) -> u16 {
    p.write_inplace(".env", &format!("DEBUG=1\nPORT={}\n", p.port));
    p.port
}

/// The `devrun.toml` init wrote.
pub(crate) fn written_config(p: &Project) -> String {
    fs::read_to_string(p.root.join("devrun.toml")).expect("devrun.toml was not written")
}

/// `devrun init [args]` in the project: (exit code, stderr).
pub(crate) fn init(p: &Project, args: &[&str]) -> (i32, String) {
    let args: Vec<&str> = ["init"].iter().chain(args).copied().collect();
    let mut init = p.spawn_devrun(&args, "init");
    let code = init.wait_exit(WAIT);
    (code, init.stderr())
}

/// `devrun init` finds `what` in the project and writes a config: returns it.
pub(crate) fn init_detects(p: &Project, what: &str) -> String {
    let (code, stderr) = init(p, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(what),
        "init did not say {what:?}:\n{stderr}"
    );
    written_config(p)
}

/// `devrun --once` accepts the config init wrote. The framework may not be installed here: the
/// backend may fail (1), the config must not (2).
fn assert_once_accepts(p: Project, config: &str) {
    let (_p, code, output) = once(p);
    assert_ne!(
        code, 2,
        "devrun rejected the config:\n{output}\nconfig:\n{config}"
    );
}

/// `devrun --once` in the project, to its end: the project (its processes still there to be
/// checked), the exit code, and devrun's and the backend's output.
pub(crate) fn once(p: Project) -> (Project, i32, String) {
    let mut p = p.args(["--once", "--color", "never"]).start();
    let code = p.wait_exit(ONCE_TIMEOUT);
    let output = format!("{}{}", p.stdout(), p.stderr());
    (p, code, output)
}

/// The `port = N` line of a written config.
pub(crate) fn port_of(config: &str) -> u16 {
    config
        .lines()
        .find_map(|line| line.strip_prefix("port = ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `port = N` line in:\n{config}"))
}

pub(crate) fn assert_port_free(port: u16) {
    assert!(
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok(),
        "port {port} is still held after devrun --once"
    );
}

const FASTAPI_MAIN: &str = r#"from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def root():
    return {"ok": True}
"#;

#[test]
fn fastapi_folder_is_detected_and_runs_once() {
    let p = Project::empty();
    p.write_inplace("app/__init__.py", "");
    p.write_inplace("app/main.py", FASTAPI_MAIN);
    link_test_venv(&p);
    let port = env_port(&p);

    let config = init_detects(&p, "FastAPI app app.main:app");
    assert!(config.contains("\"app.main:app\""), "{config}");
    assert!(config.contains("\".venv/bin/python\""), "{config}");
    assert!(config.contains("uvicorn"), "{config}");
    assert!(config.contains("# http = \"/docs\""), "{config}");
    assert_eq!(port_of(&config), port, "PORT in .env not used:\n{config}");

    let (p, code, output) = once(p);
    assert_eq!(
        code, 0,
        "devrun --once failed:\n{output}\nconfig:\n{config}"
    );
    assert!(
        output.contains("Application startup complete"),
        "uvicorn did not serve the app:\n{output}"
    );
    assert_port_free(port);
    p.assert_nothing_left();
}

#[test]
fn empty_folder_gets_a_config_that_says_what_to_fill_in_and_runs_nothing() {
    let _serial = AUTO_PORT.lock().unwrap_or_else(|e| e.into_inner());
    let p = Project::empty();

    let (code, stderr) = init(&p, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("no app found") && stderr.contains("fill in `command` in devrun.toml"),
        "{stderr}"
    );
    let config = written_config(&p);
    assert!(!config.contains("http.server"), "{config}");
    assert!(config.contains("\ncommand = []\n"), "{config}");
    let port = port_of(&config);
    assert!((8000..=8099).contains(&port), "{config}");

    // devrun refuses it at once, pointing at the empty command, and starts nothing.
    let (p, code, output) = once(p);
    assert_eq!(code, 2, "{output}\nconfig:\n{config}");
    let line = config
        .lines()
        .position(|l| l == "command = []")
        .expect("no command line")
        + 1;
    assert!(
        output.contains(&format!(
            "devrun.toml:{line}:11: `command` is empty: fill in"
        )) && output.contains("e.g. command = "),
        "{output}"
    );
    assert_port_free(port);
    assert_eq!(p.tagged_processes(), Vec::<i32>::new());
}

#[test]
fn no_config_at_all_points_at_devrun_init() {
    let p = Project::empty();
    let (_p, code, output) = once(p);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("no command to run") && output.contains("run `devrun init`"),
        "{output}"
    );
}

#[test]
fn flask_folder_is_detected_and_its_config_parses() {
    let p = Project::empty();
    p.write_inplace(
        "web.py",
        "from flask import Flask\n\nserver = Flask(__name__)\n\n\
         if __name__ == \"__main__\":\n    server.run(port=5123)\n",
    );

    let config = init_detects(&p, "Flask app web:server");
    assert!(
        config.contains("\"flask\", \"--app\", \"web:server\", \"run\""),
        "{config}"
    );
    assert!(config.contains("\"--debug\", \"--no-reload\""), "{config}");
    assert!(config.contains("\"**/*.html\""), "{config}");
    assert_eq!(
        port_of(&config),
        5123,
        "port=5123 in web.py not used:\n{config}"
    );

    assert_once_accepts(p, &config);
}

#[test]
fn django_folder_is_detected() {
    let p = Project::empty();
    p.write_inplace(
        "manage.py",
        "#!/usr/bin/env python\nimport os\nimport sys\n\n\
         if __name__ == \"__main__\":\n    \
         os.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"mysite.settings\")\n    \
         from django.core.management import execute_from_command_line\n    \
         execute_from_command_line(sys.argv)\n",
    );
    p.write_inplace("mysite/__init__.py", "");
    p.write_inplace("mysite/settings.py", "DEBUG = True\n");
    let port = env_port(&p);

    let config = init_detects(&p, "Django project");
    assert!(config.contains("\"manage.py\", \"runserver\""), "{config}");
    assert!(config.contains("\"127.0.0.1:{port}\""), "{config}");
    assert!(config.contains("\"--noreload\""), "{config}");
    assert!(config.contains("\"**/*.html\""), "{config}");
    assert_eq!(port_of(&config), port, "{config}");

    assert_once_accepts(p, &config);
}

#[test]
fn second_init_refuses_and_force_overwrites() {
    let p = Project::empty();
    p.write_inplace(
        "main.py",
        "from starlette.applications import Starlette\napi = Starlette()\n",
    );
    env_port(&p);
    let config = init_detects(&p, "Starlette app main:api");

    // Edited by the user: a second init must leave it alone.
    let edited = format!("{config}\n# my edit\n");
    fs::write(p.root.join("devrun.toml"), &edited).expect("edit devrun.toml");
    let (code, stderr) = init(&p, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("devrun.toml already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        written_config(&p),
        edited,
        "a refused init changed the file"
    );

    let (code, stderr) = init(&p, &["--force"]);
    assert_eq!(code, 0, "{stderr}");
    let config = written_config(&p);
    assert!(
        !config.contains("# my edit"),
        "--force did not overwrite:\n{config}"
    );
    assert!(config.contains("\"main:api\""), "{config}");
}
