//! The `devrun.toml` text: the detected app's command, port, watch and stop settings, each
//! with a comment that says why.

use super::detect::Detected;
use crate::config::DEFAULT_HOST;

/// A TOML string literal (quoted and escaped).
pub(super) fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_array(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", items.join(", "))
}

fn command_for(app: &Detected, python: &str) -> Vec<String> {
    let host = DEFAULT_HOST;
    let mut command = vec![python.to_string()];
    let rest: Vec<String> = match app {
        Detected::Asgi(app) => vec![
            "-m".into(),
            "uvicorn".into(),
            app.target(),
            "--host".into(),
            host.into(),
            "--port".into(),
            "{port}".into(),
        ],
        Detected::Django => vec![
            "manage.py".into(),
            "runserver".into(),
            format!("{host}:{{port}}"),
            "--noreload".into(),
        ],
        Detected::Flask(app) => vec![
            "-m".into(),
            "flask".into(),
            "--app".into(),
            app.target(),
            "run".into(),
            "--host".into(),
            host.into(),
            "--port".into(),
            "{port}".into(),
            "--no-reload".into(),
        ],
        Detected::Template => vec![
            "-m".into(),
            "http.server".into(),
            "{port}".into(),
            "--bind".into(),
            host.into(),
        ],
    };
    command.extend(rest);
    command
}

pub(super) fn render(app: &Detected, python: &str, port: u16, port_note: &str) -> String {
    let mut out = String::new();
    out.push_str("# devrun.toml, written by `devrun init`");
    out.push_str(&format!(" (detected: {}).\n", app.describe()));
    out.push_str(
        "# `devrun` runs the backend and restarts it, with a confirmed teardown, on every change;\n\
         # `devrun --once` is the CI smoke test. Paths are relative to this file's folder.\n\n",
    );

    match app {
        Detected::Template => out.push_str(&format!(
            "# No FastAPI, Starlette, Django or Flask app was found, so this runs Python's built-in\n\
             # file server as a placeholder: REPLACE it with your backend's command, e.g.\n\
             # command = [{}, \"-m\", \"uvicorn\", \"app.main:app\", \"--port\", \"{{port}}\"]\n",
            toml_string(python)
        )),
        Detected::Django => out.push_str(
            "# The backend's command: Django's dev server without its own autoreloader\n\
             # (devrun does the reloading). devrun fills in {port}.\n",
        ),
        Detected::Flask(_) => out.push_str(
            "# The backend's command: Flask's dev server without its own reloader (devrun does the\n\
             # reloading). devrun fills in {port}.\n",
        ),
        Detected::Asgi(_) => out.push_str(
            "# The backend's command, without --reload (devrun does the reloading).\n\
             # devrun fills in {port}.\n",
        ),
    }
    out.push_str(&format!(
        "command = {}\n\n",
        toml_array(&command_for(app, python))
    ));

    out.push_str(&format!(
        "# The port the backend serves ({port_note}).\n\
         # devrun waits until it accepts connections and confirms it is released before every restart.\n\
         port = {port}\n\n"
    ));

    let mut include = vec!["**/*.py".to_string()];
    if matches!(app, Detected::Django) {
        include.push("**/*.html".to_string());
    }
    out.push_str(&format!(
        "[watch]\n\
         # Folders watched for changes.\n\
         paths = [\".\"]\n\
         # Files whose change triggers a restart.\n\
         include = {}\n\
         # More globs to ignore (.git, __pycache__, .venv, venv, node_modules ... always are;\n\
         # so is what .gitignore lists).\n\
         # ignore = [\"data/**\"]\n\n",
        toml_array(&include)
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

    #[test]
    fn rendered_file_parses_with_every_kind() {
        let app = AppObject {
            framework: Framework::Flask,
            module: "web".into(),
            var: "server".into(),
            file: PathBuf::from("web.py"),
        };
        for detected in [
            Detected::Asgi(AppObject {
                framework: Framework::FastApi,
                ..app.clone()
            }),
            Detected::Flask(app),
            Detected::Django,
            Detected::Template,
        ] {
            let text = render(&detected, ".venv\\Scripts\\python.exe", 8123, "test");
            let value: toml::Table = toml::from_str(&text).unwrap();
            let command = value["command"].as_array().unwrap();
            assert_eq!(command[0].as_str(), Some(".venv\\Scripts\\python.exe"));
            assert_eq!(value["port"].as_integer(), Some(8123));
            assert_eq!(value["stop"]["timeout_ms"].as_integer(), Some(5000));
        }
    }
}
