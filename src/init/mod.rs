//! `devrun init`: inspect the folder and write a commented `devrun.toml`.
//!
//! Detection is plain line matching over the project's `.py` files (no imports, no regex):
//! a module-level `app = FastAPI(` / `Starlette(` / `Flask(` assignment, or a top-level
//! `manage.py` for Django. Whatever is found, the file written is one `devrun --once` accepts.
//! `scan` walks the tree, `detect` finds the app, `python` and `port` pick the interpreter and
//! the port, `frontend` finds a dev server beside the backend, `render` writes the TOML.

mod detect;
mod frontend;
mod port;
mod python;
mod render;
mod scan;

use crate::config::CONFIG_FILE;
use crate::error::Error;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What `init` wrote, for the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    /// "FastAPI app app.main:app", "Django project", "Flask app", or "no app found (template)";
    /// then "; a dev script in web/package.json (commented [processes.web])" if one was found.
    pub detected: String,
    /// What to do next: run `devrun`, or fill in the command first.
    pub next: String,
}

/// Writes `dir/devrun.toml`. Refuses (exit 2) to overwrite an existing one unless `force`.
pub fn init(dir: &Path, force: bool) -> Result<Written, Error> {
    let path = dir.join(CONFIG_FILE);
    if !force && path.exists() {
        return Err(already_exists(dir));
    }

    let files = scan::scan(dir);
    let app = detect::detect(dir, &files);
    let python = python::python_for(dir);
    let (port, port_note) = port::choose_port(dir, &app);
    let frontend = frontend::find_frontend(dir);
    let mut text = render::render(&app, &python, port, &port_note);
    if let Some(frontend) = &frontend {
        text.push_str(&frontend::render_frontend(frontend, port));
    }

    let mut options = OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        // Checked again at creation: never clobber a file written since the check above.
        options.create_new(true);
    }
    let mut file = match options.open(&path) {
        Ok(file) => file,
        Err(e) if !force && e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(already_exists(dir))
        }
        Err(e) => return Err(Error::io(format!("cannot create {}", path.display()), e)),
    };
    file.write_all(text.as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;

    let mut detected = app.describe();
    if let Some(frontend) = &frontend {
        detected.push_str(&format!(
            "; a dev script in {} (commented [processes.web])",
            frontend.package_json()
        ));
    }
    let next = if app == detect::Detected::Template {
        format!("fill in `command` in {CONFIG_FILE} (devrun refuses to start until then)")
    } else {
        "run `devrun` to start".to_string()
    };
    Ok(Written {
        path,
        detected,
        next,
    })
}

fn already_exists(dir: &Path) -> Error {
    Error::Usage(format!(
        "{CONFIG_FILE} already exists in {}; pass --force to overwrite",
        dir.display()
    ))
}
