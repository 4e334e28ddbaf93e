//! The `devrun.toml` text: the detected app's command, port, watch and stop settings, each
//! with a comment that says why.

use super::detect::Detected;
use super::Plan;
use crate::config::DEFAULT_HOST;

/// A TOML string literal (quoted and escaped).
pub(super) fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_array(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", items.join(", "))
}

/// The backend's command for what was found; `None` when nothing was (the file then has an
/// empty `command` that devrun refuses, saying what to fill in).
fn command_for(app: &Detected, python: &str) -> Option<Vec<String>> {
    let host = DEFAULT_HOST;
    let words = |words: &[&str]| -> Vec<String> { words.iter().map(|w| w.to_string()).collect() };
    let rest: Vec<String> = match app {
        Detected::Asgi(app) => {
            let mut rest = words(&["-m", "uvicorn", &app.target()]);
            if app.factory {
                rest.push("--factory".into());
            }
            rest.extend(words(&["--host", host, "--port", "{port}"]));
            rest
        }
        Detected::Django(_) => vec![
            "manage.py".into(),
            "runserver".into(),
            format!("{host}:{{port}}"),
            "--noreload".into(),
        ],
        // --debug: Flask re-reads edited templates and shows its debugger page; --no-reload:
        // without it, --debug would start Flask's own reloader beside devrun.
        Detected::Flask(app) => words(&[
            "-m",
            "flask",
            "--app",
            &app.target(),
            "run",
            "--host",
            host,
            "--port",
            "{port}",
            "--debug",
            "--no-reload",
        ]),
        Detected::Template => return None,
    };
    let mut command = vec![python.to_string()];
    command.extend(rest);
    Some(command)
}

/// The comment above `command` and the `command = …` line.
fn render_command(app: &Detected, python: &str) -> String {
    let comment = match app {
        Detected::Template => {
            let example = toml_array(&[
                python.to_string(),
                "-m".into(),
                "uvicorn".into(),
                "app.main:app".into(),
                "--port".into(),
                "{port}".into(),
            ]);
            return format!(
                "# No FastAPI, Starlette, Django or Flask app was found. FILL IN the command that\n\
                 # starts your backend on {{port}} (devrun fills it in), e.g.\n\
                 #   command = {example}\n\
                 # devrun refuses to start (exit 2) while it is empty.\n\
                 command = []\n\n"
            );
        }
        Detected::Django(_) => {
            "# The backend's command: Django's dev server without its own autoreloader\n\
             # (devrun does the reloading). devrun fills in {port}.\n"
        }
        Detected::Flask(_) => {
            "# The backend's command: Flask's dev server in debug mode (edited templates are\n\
             # re-read, errors show the debugger page) without its own reloader (devrun does the\n\
             # reloading). devrun fills in {port}.\n"
        }
        Detected::Asgi(_) => {
            "# The backend's command, without --reload (devrun does the reloading).\n\
             # devrun fills in {port}.\n"
        }
    };
    let command = command_for(app, python).unwrap_or_default();
    format!("{comment}command = {}\n\n", toml_array(&command))
}

/// What a change to restarts the backend: code, and the templates of the frameworks that
/// keep them in `.html` files.
fn include_for(app: &Detected) -> Vec<String> {
    let mut include = vec!["**/*.py".to_string()];
    if matches!(app, Detected::Django(_) | Detected::Flask(_)) {
        include.push("**/*.html".to_string());
    }
    include
}

/// `cwd` and `env_file`, each with why, when the backend runs from a subfolder or a dotenv
/// file was found.
fn render_place(plan: &Plan) -> String {
    let mut out = String::new();
    if !plan.backend.as_os_str().is_empty() {
        out.push_str(&format!(
            "# The backend runs in its own folder (its imports, alembic and settings start there);\n\
             # the interpreter path in the command is relative to it.\n\
             cwd = {}\n\n",
            toml_string(&slashed(&plan.backend))
        ));
    }
    if let Some(env_file) = &plan.env_file {
        out.push_str(&format!(
            "# The backend's variables; an edit restarts it (the status line names the keys).\n\
             env_file = {}\n\n",
            toml_string(env_file)
        ));
    }
    out
}

/// A relative path with `/` between its parts (what TOML readers on every OS accept).
fn slashed(path: &std::path::Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

pub(super) fn render(plan: &Plan) -> String {
    let (app, port, port_note) = (&plan.app, plan.port, &plan.port_note);
    let mut out = String::new();
    out.push_str("# devrun.toml, written by `devrun init`");
    out.push_str(&format!(" (detected: {}).\n", app.describe()));
    out.push_str(
        "# `devrun` runs the backend and restarts it, with a confirmed teardown, on every change;\n\
         # `devrun --once` is the CI smoke test. Paths are relative to this file's folder.\n\n",
    );
    out.push_str(&render_command(app, &plan.python));
    out.push_str(&render_place(plan));

    out.push_str(&format!(
        "# The port the backend serves ({port_note}).\n\
         # devrun waits until it accepts connections and confirms it is released before every restart.\n\
         port = {port}\n\n"
    ));

    let paths = match plan.backend.as_os_str().is_empty() {
        true => ".".to_string(),
        false => slashed(&plan.backend),
    };
    out.push_str(&format!(
        "[watch]\n\
         # Folders watched for changes.\n\
         paths = [{}]\n\
         # Files whose change triggers a restart.\n\
         include = {}\n\
         # More globs to ignore (.git, __pycache__, .venv, venv, node_modules ... always are;\n\
         # so is what .gitignore lists).\n\
         # ignore = [\"data/**\"]\n\n",
        toml_string(&paths),
        toml_array(&include_for(app))
    ));

    out.push_str(
        "[stop]\n\
         # Grace time after the stop signal before the backend's whole process group is killed.\n\
         timeout_ms = 5000\n",
    );

    if matches!(app, Detected::Asgi(_)) {
        out.push_str(
            "\n# Ready when this path answers 2xx (default: when the port accepts a connection).\n\
             # [ready]\n\
             # http = \"/docs\"\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::detect::{AppObject, Framework};
    use std::path::PathBuf;

    fn render(app: &Detected, python: &str, port: u16, port_note: &str) -> String {
        super::render(&Plan {
            app: app.clone(),
            backend: PathBuf::new(),
            python: python.to_string(),
            env_file: None,
            port,
            port_note: port_note.to_string(),
            frontend: None,
        })
    }

    #[test]
    fn rendered_file_parses_with_every_kind() {
        let app = AppObject {
            framework: Framework::Flask,
            module: "web".into(),
            var: "server".into(),
            file: PathBuf::from("web.py"),
            factory: false,
        };
        for detected in [
            Detected::Asgi(AppObject {
                framework: Framework::FastApi,
                ..app.clone()
            }),
            Detected::Asgi(AppObject {
                framework: Framework::FastApi,
                factory: true,
                ..app.clone()
            }),
            Detected::Flask(AppObject {
                factory: true,
                ..app.clone()
            }),
            Detected::Flask(app),
            Detected::Django(PathBuf::new()),
            Detected::Template,
        ] {
            let text = render(&detected, ".venv\\Scripts\\python.exe", 8123, "test");
            let value: toml::Table = toml::from_str(&text).unwrap();
            let command = value["command"].as_array().unwrap();
            if detected == Detected::Template {
                assert!(command.is_empty(), "{text}");
                assert!(text.contains("#   command = ['.venv\\Scripts"), "{text}");
                continue;
            }
            assert_eq!(command[0].as_str(), Some(".venv\\Scripts\\python.exe"));
            assert_eq!(value["port"].as_integer(), Some(8123));
            assert_eq!(value["stop"]["timeout_ms"].as_integer(), Some(5000));
        }
    }

    #[test]
    fn flask_runs_in_debug_mode_without_its_reloader_and_watches_templates() {
        let app = AppObject {
            framework: Framework::Flask,
            module: "flaskr".into(),
            var: "create_app".into(),
            file: PathBuf::from("flaskr/__init__.py"),
            factory: true,
        };
        let text = render(&Detected::Flask(app), "python3", 8123, "test");
        let value: toml::Table = toml::from_str(&text).unwrap();
        let command: Vec<&str> = value["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            command,
            [
                "python3",
                "-m",
                "flask",
                "--app",
                "flaskr",
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
                "--debug",
                "--no-reload"
            ]
        );
        let include = value["watch"]["include"].as_array().unwrap();
        assert!(include.iter().any(|v| v.as_str() == Some("**/*.html")));
    }
}
