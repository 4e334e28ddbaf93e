//! `devrun init`: inspect the folder and write a commented `devrun.toml`.
//!
//! Detection is plain line matching over the project's `.py` files (no imports, no regex):
//! a module-level `app = FastAPI(` / `Starlette(` / `Flask(` assignment, or a top-level
//! `manage.py` for Django. Whatever is found, the file written is one `devrun --once` accepts.
//! `scan` walks the tree, `detect` finds the app, `layout` places it (a `backend/` subfolder,
//! a venv or `.env` above it), `port` picks the port, `frontend` finds a dev server beside the
//! backend, `render` writes the TOML.

mod detect;
mod frontend;
mod layout;
mod port;
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

    let plan = Plan::make(dir);
    let mut text = render::render(&plan);
    if let Some(frontend) = &plan.frontend {
        text.push_str(&frontend::render_frontend(frontend, plan.port));
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

    Ok(Written {
        path,
        detected: plan.describe(),
        next: plan.next_step(),
    })
}

/// What `init` found and will write.
struct Plan {
    app: detect::Detected,
    /// The backend's folder relative to the project (`backend`; empty: the project itself):
    /// its `cwd`, and what is watched.
    backend: PathBuf,
    /// The interpreter, relative to the backend's folder.
    python: String,
    /// The dotenv file, relative to the project.
    env_file: Option<String>,
    port: u16,
    port_note: String,
    frontend: Option<frontend::Frontend>,
}

impl Plan {
    fn make(dir: &Path) -> Plan {
        let files = scan::scan(dir);
        let mut app = detect::detect(dir, &files);
        let backend = layout::backend_folder(dir, &mut app);
        let python = layout::python_for(dir, &backend);
        let env_file = layout::env_file_for(dir, &backend);
        let (port, port_note) = port::choose_port(dir, &app, env_file.as_deref());
        Plan {
            app,
            python,
            env_file,
            port,
            port_note,
            frontend: frontend::find_frontend(dir),
            backend,
        }
    }

    /// For the status line: the app, where it runs from, the env file and the frontend.
    fn describe(&self) -> String {
        let mut detected = self.app.describe();
        if !self.backend.as_os_str().is_empty() && !matches!(self.app, detect::Detected::Django(_))
        {
            detected.push_str(&format!(" in {}", self.backend.display()));
        }
        if let Some(env_file) = &self.env_file {
            detected.push_str(&format!(", env_file {env_file}"));
        }
        if let Some(frontend) = &self.frontend {
            detected.push_str(&format!(
                "; a dev script in {} run with {}",
                frontend.package_json(),
                frontend.manager.program()
            ));
            match &frontend.missing {
                Some(why) => detected.push_str(&format!(" ([processes.web] commented out: {why})")),
                None => detected.push_str(" ([processes.web])"),
            }
        }
        detected
    }

    fn next_step(&self) -> String {
        if self.app == detect::Detected::Template {
            format!("fill in `command` in {CONFIG_FILE} (devrun refuses to start until then)")
        } else {
            "run `devrun` to start".to_string()
        }
    }
}

fn already_exists(dir: &Path) -> Error {
    Error::Usage(format!(
        "{CONFIG_FILE} already exists in {}; pass --force to overwrite",
        dir.display()
    ))
}
