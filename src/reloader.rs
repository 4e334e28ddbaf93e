//! A command that runs its server's own reloader (`uvicorn --reload`, `manage.py runserver`
//! without `--noreload`, `flask run` in debug mode without `--no-reload`, `fastapi dev`): two
//! reloaders then fight (each change restarts twice; Django's ready time doubles). devrun says
//! so once, with the exact edit, and runs the command as written: what runs is always what the
//! config says, so the same command behaves the same outside devrun.

use crate::config::Member;
use std::collections::BTreeMap;
use std::path::Path;

/// Each member whose command starts its server's own reloader: (member name, what, fix).
/// The variables looked at are the member's own, lowest first: `.env` and `.flaskenv` in its
/// folder (Flask loads them itself), devrun's environment, its `env_file`, its `env`.
pub fn in_members(members: &[Member]) -> Vec<(String, OwnReloader)> {
    members
        .iter()
        .filter_map(|member| {
            let mut env = BTreeMap::new();
            for file in [".env", ".flaskenv"] {
                let path = member.cwd.join(file);
                if path.is_file() {
                    env.extend(crate::envfile::read(&path, file).unwrap_or_default());
                }
            }
            env.extend(std::env::vars());
            if let Some(path) = &member.extras.env_file {
                env.extend(crate::envfile::read(path, "").unwrap_or_default());
            }
            env.extend(member.env.clone());
            own_reloader(&member.command, &env).map(|found| (member.name.clone(), found))
        })
        .collect()
}

/// A server's own reloader found in a command, and the edit that turns it off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnReloader {
    /// What starts it: `uvicorn --reload`, `manage.py runserver`, `flask run --debug`, …
    pub what: String,
    /// The edit: `remove --reload`, `add --noreload`, …
    pub fix: String,
}

/// The tool a command runs and its arguments after it: `python -m uvicorn …` → `uvicorn`,
/// `.venv/bin/flask …` → `flask`, `python manage.py …` → `manage.py`.
fn tool(command: &[String]) -> Option<(String, &[String])> {
    let name = |arg: &str| {
        let base = Path::new(arg).file_name()?.to_str()?.to_string();
        Some(
            base.strip_suffix(".exe")
                .map(str::to_string)
                .unwrap_or(base),
        )
    };
    let program = name(command.first()?)?;
    if !program.starts_with("python") {
        return Some((program, &command[1..]));
    }
    let args = &command[1..];
    // Interpreter options before the module or script (`-u`, `-X dev`) are skipped.
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if arg == "-m" {
            return Some((args.get(i + 1)?.clone(), &args[(i + 2).min(args.len())..]));
        }
        if arg == "-X" || arg == "-W" {
            i += 2;
            continue;
        }
        if !arg.starts_with('-') {
            return Some((name(arg)?, &args[i + 1..]));
        }
        i += 1;
    }
    None
}

/// Whether `FLASK_DEBUG` turns debug mode on: Flask reads `1`, `true`, `yes`, `on`.
fn truthy(value: &str) -> bool {
    !matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "" | "0" | "false" | "no" | "off"
    )
}

/// The own reloader `command` starts, given the variables the process gets (`env`: the
/// config's `[env]` over devrun's own environment).
pub fn own_reloader(command: &[String], env: &BTreeMap<String, String>) -> Option<OwnReloader> {
    let (tool, args) = tool(command)?;
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let found = |what: &str, fix: &str| {
        Some(OwnReloader {
            what: what.to_string(),
            fix: fix.to_string(),
        })
    };
    match tool.as_str() {
        "uvicorn" | "gunicorn" | "hypercorn" | "granian" if has("--reload") => {
            found(&format!("{tool} --reload"), "remove --reload")
        }
        "manage.py" | "django-admin" if has("runserver") && !has("--noreload") => {
            found(&format!("{tool} runserver"), "add --noreload")
        }
        "flask" if has("run") && !has("--no-reload") => {
            let env_debug = env.get("FLASK_DEBUG").is_some_and(|v| truthy(v));
            if has("--reload") {
                found("flask run --reload", "remove --reload")
            } else if has("--debug") && !has("--no-debug") {
                found("flask run --debug", "add --no-reload after `run`")
            } else if env_debug && !has("--no-debug") {
                found(
                    "flask run with FLASK_DEBUG set",
                    "add --no-reload after `run`",
                )
            } else {
                None
            }
        }
        "fastapi" if args.first().is_some_and(|a| a == "dev") && !has("--no-reload") => found(
            "fastapi dev",
            "add --no-reload (or use `fastapi run`, which listens on 0.0.0.0)",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, env: &[(&str, &str)]) -> Option<String> {
        let command: Vec<String> = line.split_whitespace().map(String::from).collect();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        own_reloader(&command, &env).map(|r| format!("{}: {}", r.what, r.fix))
    }

    #[test]
    fn each_servers_own_reloader_is_named_with_its_fix() {
        let none: &[(&str, &str)] = &[];
        assert_eq!(
            check(".venv/bin/python -m uvicorn app.main:app --reload", none).as_deref(),
            Some("uvicorn --reload: remove --reload")
        );
        assert_eq!(check("uvicorn app.main:app --port 8000", none), None);
        assert_eq!(
            check("python3 -u manage.py runserver 127.0.0.1:8000", none).as_deref(),
            Some("manage.py runserver: add --noreload")
        );
        assert_eq!(check("python manage.py runserver --noreload", none), None);
        assert_eq!(check("python manage.py migrate", none), None);
        assert_eq!(
            check("python -m flask --app flaskr run --debug", none).as_deref(),
            Some("flask run --debug: add --no-reload after `run`")
        );
        assert_eq!(
            check("python -m flask --app flaskr run --debug --no-reload", none),
            None
        );
        assert_eq!(check("flask --app flaskr run", none), None);
        assert_eq!(
            check("flask --app flaskr run", &[("FLASK_DEBUG", "1")]).as_deref(),
            Some("flask run with FLASK_DEBUG set: add --no-reload after `run`")
        );
        assert_eq!(check("flask run", &[("FLASK_DEBUG", "0")]), None);
        assert_eq!(
            check("fastapi dev app/main.py", none).as_deref(),
            Some("fastapi dev: add --no-reload (or use `fastapi run`, which listens on 0.0.0.0)")
        );
        assert_eq!(check("fastapi dev app/main.py --no-reload", none), None);
        assert_eq!(check("fastapi run app/main.py", none), None);
        assert_eq!(check("node server.js --reload", none), None);
        assert_eq!(check("python", none), None);
    }
}
