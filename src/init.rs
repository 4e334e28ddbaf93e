//! `devrun init`: inspect the folder and write a commented `devrun.toml`.
//!
//! Detection is plain line matching over the project's `.py` files (no imports, no regex):
//! a module-level `app = FastAPI(` / `Starlette(` / `Flask(` assignment, or a top-level
//! `manage.py` for Django. Whatever is found, the file written is one `devrun --once` accepts.

use crate::config::{CONFIG_FILE, DEFAULT_HOST};
use crate::error::Error;
use crate::watch::NEVER_PROJECT_DIRS;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

/// What `init` wrote, for the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    /// "FastAPI app app.main:app", "Django project", "Flask app", or "no app found (template)";
    /// then "; a dev script in web/package.json (commented [processes.web])" if one was found.
    pub detected: String,
}

/// Folders deeper than this (counted in path components of a file) are not scanned.
const MAX_DEPTH: usize = 4;
/// Scanning stops after this many `.py` files: `init` must stay instant in a huge tree.
const MAX_FILES: usize = 2000;
/// A source file larger than this is not an app entry point worth reading.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Where a free port is looked for when none is evident.
const PORT_RANGE: std::ops::RangeInclusive<u16> = 8000..=8099;

/// Writes `dir/devrun.toml`. Refuses (exit 2) to overwrite an existing one unless `force`.
pub fn init(dir: &Path, force: bool) -> Result<Written, Error> {
    let path = dir.join(CONFIG_FILE);
    if !force && path.exists() {
        return Err(already_exists(dir));
    }

    let files = scan(dir);
    let app = detect(dir, &files);
    let python = python_for(dir);
    let (port, port_note) = choose_port(dir, &app);
    let frontend = find_frontend(dir);
    let mut text = render(&app, &python, port, &port_note);
    if let Some(frontend) = &frontend {
        text.push_str(&render_frontend(frontend, port));
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
    Ok(Written { path, detected })
}

fn already_exists(dir: &Path) -> Error {
    Error::Usage(format!(
        "{CONFIG_FILE} already exists in {}; pass --force to overwrite",
        dir.display()
    ))
}

// ---- scanning ----

/// A `.py` file found under the project folder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PyFile {
    /// Relative to the project folder.
    rel: PathBuf,
    abs: PathBuf,
}

/// The project's `.py` files, breadth-first in name order (so the result is deterministic),
/// at most [`MAX_DEPTH`] components deep and at most [`MAX_FILES`] of them.
fn scan(dir: &Path) -> Vec<PyFile> {
    let mut files = Vec::new();
    let mut queue = std::collections::VecDeque::from([(dir.to_path_buf(), PathBuf::new())]);
    while let Some((abs_dir, rel_dir)) = queue.pop_front() {
        let Ok(entries) = fs::read_dir(&abs_dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        let depth = rel_dir.components().count() + 1;
        for entry in entries {
            let name = entry.file_name();
            let Some(name_str) = name.to_str() else {
                continue;
            };
            // file_type() does not follow symlinks: a linked folder is never entered (no loops).
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let abs = entry.path();
            let rel = rel_dir.join(&name);
            if kind.is_dir() {
                if depth < MAX_DEPTH && !skip_dir(name_str) {
                    queue.push_back((abs, rel));
                }
            } else if name_str.ends_with(".py") && abs.is_file() {
                files.push(PyFile { rel, abs });
                if files.len() >= MAX_FILES {
                    return files;
                }
            }
        }
    }
    files
}

/// Folders never scanned: those that are never project code, and hidden ones.
fn skip_dir(name: &str) -> bool {
    name.starts_with('.') || NEVER_PROJECT_DIRS.contains(&name)
}

fn read_source(path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    if meta.len() > MAX_FILE_BYTES {
        return None;
    }
    let bytes = fs::read(path).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

// ---- detection ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framework {
    FastApi,
    Starlette,
    Flask,
}

impl Framework {
    fn name(self) -> &'static str {
        match self {
            Framework::FastApi => "FastAPI",
            Framework::Starlette => "Starlette",
            Framework::Flask => "Flask",
        }
    }

    fn from_constructor(name: &str) -> Option<Framework> {
        match name {
            "FastAPI" => Some(Framework::FastApi),
            "Starlette" => Some(Framework::Starlette),
            "Flask" => Some(Framework::Flask),
            _ => None,
        }
    }

    fn is_asgi(self) -> bool {
        matches!(self, Framework::FastApi | Framework::Starlette)
    }
}

/// An application object found in a source file: `VAR = Framework(` at module level.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AppObject {
    framework: Framework,
    /// Dotted module path, relative to the project folder.
    module: String,
    var: String,
    file: PathBuf,
}

impl AppObject {
    fn target(&self) -> String {
        format!("{}:{}", self.module, self.var)
    }
}

/// What `init` found in the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Detected {
    Asgi(AppObject),
    Django,
    Flask(AppObject),
    Template,
}

impl Detected {
    fn describe(&self) -> String {
        match self {
            Detected::Asgi(app) | Detected::Flask(app) => {
                format!("{} app {}", app.framework.name(), app.target())
            }
            Detected::Django => "Django project".to_string(),
            Detected::Template => "no app found (template)".to_string(),
        }
    }

    /// The file a port may be read from.
    fn app_file(&self) -> Option<&Path> {
        match self {
            Detected::Asgi(app) | Detected::Flask(app) => Some(&app.file),
            Detected::Django | Detected::Template => None,
        }
    }
}

/// Picks the project's app. A top-level `manage.py` that mentions Django wins (a Django tree
/// may hold helper scripts with a FastAPI app); then a FastAPI/Starlette app; then Flask; then a
/// `manage.py` that does not mention Django (still most likely Django's); else the template.
fn detect(dir: &Path, files: &[PyFile]) -> Detected {
    let manage = dir.join("manage.py");
    let manage_text = if manage.is_file() {
        Some(read_source(&manage).unwrap_or_default())
    } else {
        None
    };
    if let Some(text) = &manage_text {
        if text.to_ascii_lowercase().contains("django") {
            return Detected::Django;
        }
    }

    let mut asgi: Vec<(usize, AppObject)> = Vec::new();
    let mut flask: Vec<(usize, AppObject)> = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let Some(module) = module_path(&file.rel) else {
            continue;
        };
        let Some(text) = read_source(&file.abs) else {
            continue;
        };
        let Some((framework, var)) = find_app(&text) else {
            continue;
        };
        let app = AppObject {
            framework,
            module,
            var,
            file: file.abs.clone(),
        };
        if framework.is_asgi() {
            asgi.push((index, app));
        } else {
            flask.push((index, app));
        }
    }

    if let Some(app) = best(asgi, &["main.py", "app.py", "asgi.py"]) {
        return Detected::Asgi(app);
    }
    if let Some(app) = best(flask, &["app.py", "main.py", "wsgi.py", "__init__.py"]) {
        return Detected::Flask(app);
    }
    if manage_text.is_some() {
        return Detected::Django;
    }
    Detected::Template
}

/// The most likely entry point among several apps: not a test, a conventional file name,
/// shallow, then first in scan order.
fn best(candidates: Vec<(usize, AppObject)>, preferred: &[&str]) -> Option<AppObject> {
    candidates
        .into_iter()
        .min_by_key(|(index, app)| {
            let name = app
                .file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let is_test = app.module.split('.').any(|part| {
                part == "tests" || part == "test" || part == "conftest" || part.starts_with("test_")
            });
            let depth = app.module.matches('.').count();
            (is_test, !preferred.contains(&name), depth, *index)
        })
        .map(|(_, app)| app)
}

/// `app/main.py` → `app.main`, `pkg/__init__.py` → `pkg`. `None` when Python could not import
/// it by that name (a folder like `my-app`, a top-level `__init__.py`).
fn module_path(rel: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for component in rel.components() {
        match component {
            std::path::Component::Normal(part) => parts.push(part.to_str()?.to_string()),
            _ => return None,
        }
    }
    let last = parts.pop()?;
    let stem = last.strip_suffix(".py")?;
    if stem != "__init__" {
        parts.push(stem.to_string());
    }
    if parts.is_empty() || !parts.iter().all(|p| is_identifier(p)) {
        return None;
    }
    Some(parts.join("."))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_alphabetic() => chars.all(|c| c == '_' || c.is_alphanumeric()),
        _ => false,
    }
}

/// The first module-level `VAR = FastAPI(` (or `Starlette(`, `Flask(`, optionally qualified
/// like `fastapi.FastAPI(`, optionally annotated like `app: FastAPI = FastAPI(`) in `source`.
/// Lines inside triple-quoted strings are skipped.
fn find_app(source: &str) -> Option<(Framework, String)> {
    let mut in_string = false;
    for line in source.lines() {
        let was_in_string = in_string;
        if (line.matches("\"\"\"").count() + line.matches("'''").count()) % 2 == 1 {
            in_string = !in_string;
        }
        if was_in_string {
            continue;
        }
        if let Some(found) = app_assignment(line) {
            return Some(found);
        }
    }
    None
}

/// `VAR[: TYPE] = [mod.]Framework(` on one unindented line.
fn app_assignment(line: &str) -> Option<(Framework, String)> {
    if line.starts_with(|c: char| c.is_whitespace()) {
        return None;
    }
    let var_end = line
        .find(|c: char| !(c == '_' || c.is_alphanumeric()))
        .unwrap_or(line.len());
    let var = &line[..var_end];
    if !is_identifier(var) {
        return None;
    }
    let rest = &line[var_end..];
    // The first `=` that is not part of `==`; an annotation may sit before it.
    let eq = rest.find('=')?;
    let before = rest[..eq].trim();
    if !(before.is_empty() || before.starts_with(':')) {
        return None;
    }
    let rhs = &rest[eq + 1..];
    if rhs.starts_with('=') {
        return None;
    }
    let rhs = rhs.trim_start();
    let call = rhs.find('(')?;
    let callee = rhs[..call].trim_end();
    if callee.is_empty() || !callee.split('.').all(is_identifier) {
        return None;
    }
    let name = callee.rsplit('.').next()?;
    Framework::from_constructor(name).map(|f| (f, var.to_string()))
}

// ---- interpreter and port ----

/// The project's virtualenv interpreter (relative to the folder, where devrun runs the
/// command), else the system's.
fn python_for(dir: &Path) -> String {
    let candidates: &[&str] = if cfg!(windows) {
        &[".venv\\Scripts\\python.exe", "venv\\Scripts\\python.exe"]
    } else {
        &[".venv/bin/python", "venv/bin/python"]
    };
    for candidate in candidates {
        if dir.join(candidate).is_file() {
            return (*candidate).to_string();
        }
    }
    if cfg!(windows) { "python" } else { "python3" }.to_string()
}

/// The port to write and a comment saying where it came from.
fn choose_port(dir: &Path, app: &Detected) -> (u16, String) {
    if let Some(file) = app.app_file() {
        if let Some(port) = read_source(file).as_deref().and_then(port_keyword) {
            let shown = file.strip_prefix(dir).unwrap_or(file).display().to_string();
            return (port, format!("port={port} in {shown}"));
        }
    }
    if let Some(port) = read_source(&dir.join(".env"))
        .as_deref()
        .and_then(dotenv_port)
    {
        return (port, format!("PORT={port} in .env"));
    }
    match free_port() {
        Some(port) => (
            port,
            "a port that was free when devrun init ran".to_string(),
        ),
        None => (
            *PORT_RANGE.start(),
            "no port of 8000-8099 was free when devrun init ran; change it if needed".to_string(),
        ),
    }
}

/// The first `port=NNNN` / `port = NNNN` keyword or assignment in `source` (not `import`,
/// not `db_port`, not `port == 1`), outside comment lines.
fn port_keyword(source: &str) -> Option<u16> {
    for line in source.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut from = 0;
        while let Some(at) = line[from..].find("port") {
            let start = from + at;
            let end = start + "port".len();
            from = end;
            let preceded = line[..start]
                .chars()
                .next_back()
                .is_some_and(|c| c == '_' || c == '.' || c.is_alphanumeric());
            if preceded {
                continue;
            }
            let rest = line[end..].trim_start();
            let Some(rest) = rest.strip_prefix('=') else {
                continue;
            };
            if rest.starts_with('=') {
                continue;
            }
            if let Some(port) = leading_port(rest.trim_start()) {
                return Some(port);
            }
        }
    }
    None
}

/// `PORT=8001` (also `export PORT=8001`, `PORT = "8001"`) in a `.env` file.
fn dotenv_port(source: &str) -> Option<u16> {
    source.lines().find_map(|line| {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let (key, value) = line.split_once('=')?;
        if key.trim() != "PORT" {
            return None;
        }
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        leading_port(value)
    })
}

/// A port number at the start of `text`, ended by a non-identifier character.
fn leading_port(text: &str) -> Option<u16> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let after = text[digits_end..].chars().next();
    if digits_end == 0 || after.is_some_and(|c| c == '_' || c == '.' || c.is_alphanumeric()) {
        return None;
    }
    text[..digits_end].parse::<u16>().ok().filter(|&p| p > 0)
}

/// The first port of [`PORT_RANGE`] that can be bound on 127.0.0.1 right now.
fn free_port() -> Option<u16> {
    PORT_RANGE
        .into_iter()
        .find(|&port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
}

// ---- a frontend beside the backend ----

/// The frontend dev server's port when the backend does not already use it (Vite's default).
const FRONTEND_PORT: u16 = 5173;

/// A `package.json` with a `dev` script: the project's frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frontend {
    /// Its folder relative to the project (`web`), empty when it is the project folder itself.
    folder: String,
    /// The `dev` script says `next` (Next.js has no `--strictPort`; it fails on a busy port).
    next: bool,
}

impl Frontend {
    fn package_json(&self) -> String {
        if self.folder.is_empty() {
            "package.json".to_string()
        } else {
            format!("{}/package.json", self.folder)
        }
    }
}

/// The project folder's `package.json`, else the first direct subfolder's (in name order),
/// that has a `scripts.dev`.
fn find_frontend(dir: &Path) -> Option<Frontend> {
    if let Some(next) = dev_script(&dir.join("package.json")) {
        return Some(Frontend {
            folder: String::new(),
            next,
        });
    }
    let mut folders: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
        .filter(|(name, _)| !skip_dir(name))
        .collect();
    folders.sort();
    folders.into_iter().find_map(|(name, path)| {
        let next = dev_script(&path.join("package.json"))?;
        Some(Frontend { folder: name, next })
    })
}

/// Whether `package.json` has a `scripts.dev` string: Some(it runs `next`), else None.
fn dev_script(package_json: &Path) -> Option<bool> {
    let text = read_source(package_json)?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let dev = json.get("scripts")?.get("dev")?.as_str()?;
    Some(dev.split_whitespace().any(|word| word == "next"))
}

/// The commented `[processes.web]` block: the frontend's dev server on a port devrun owns,
/// started once the backend is ready, told the backend's address.
fn render_frontend(frontend: &Frontend, backend_port: u16) -> String {
    let port = if backend_port == FRONTEND_PORT {
        FRONTEND_PORT + 1
    } else {
        FRONTEND_PORT
    };
    // Vite moves to the next free port when its own is busy unless told not to; Next.js has
    // no such flag (it fails on a busy port) and its public variables are NEXT_PUBLIC_*.
    let (command, busy, api_var) = if frontend.next {
        (
            "npm run dev -- --port {port}",
            "Next.js fails on a busy port",
            "NEXT_PUBLIC_API_URL",
        )
    } else {
        (
            "npm run dev -- --port {port} --strictPort",
            "--strictPort: Vite fails rather than move",
            "VITE_API_URL",
        )
    };
    let mut out = format!(
        "\n# The frontend: a `dev` script in {}. Uncomment to run its dev server beside\n\
         # the backend: started once the backend is ready, on a port devrun owns, told the\n\
         # backend's address ({busy}; `port = \"auto\"` picks a free\n\
         # port per run). `devrun --only web` (or `--only backend`) runs one of them alone.\n\
         # [processes.web]\n\
         # command = {}\n",
        frontend.package_json(),
        toml_string(command)
    );
    if !frontend.folder.is_empty() {
        out.push_str(&format!("# cwd = {}\n", toml_string(&frontend.folder)));
    }
    out.push_str(&format!(
        "# port = {port}\n\
         # after = [\"backend\"]\n\
         # env = {{ {api_var} = \"http://127.0.0.1:{{ports.backend}}\" }}\n\
         # ready = {{ http = \"/\" }}\n"
    ));
    out
}

// ---- the file ----

/// A TOML string literal (quoted and escaped).
fn toml_string(s: &str) -> String {
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

fn render(app: &Detected, python: &str, port: u16, port_note: &str) -> String {
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

    #[test]
    fn module_paths() {
        assert_eq!(
            module_path(Path::new("app/main.py")).as_deref(),
            Some("app.main")
        );
        assert_eq!(module_path(Path::new("main.py")).as_deref(), Some("main"));
        assert_eq!(
            module_path(Path::new("src/api/app.py")).as_deref(),
            Some("src.api.app")
        );
        assert_eq!(
            module_path(Path::new("pkg/__init__.py")).as_deref(),
            Some("pkg")
        );
        assert_eq!(module_path(Path::new("__init__.py")), None);
        assert_eq!(module_path(Path::new("my-app/main.py")), None);
        assert_eq!(module_path(Path::new("app/main.txt")), None);
    }

    #[test]
    fn app_assignments() {
        let fastapi = Some((Framework::FastApi, "app".to_string()));
        assert_eq!(app_assignment("app = FastAPI()"), fastapi);
        assert_eq!(app_assignment("app=FastAPI(title=\"x\")"), fastapi);
        assert_eq!(app_assignment("app: FastAPI = FastAPI("), fastapi);
        assert_eq!(app_assignment("app = fastapi.FastAPI()"), fastapi);
        assert_eq!(
            app_assignment("api = Starlette(routes=routes)"),
            Some((Framework::Starlette, "api".to_string()))
        );
        assert_eq!(
            app_assignment("server = Flask(__name__)"),
            Some((Framework::Flask, "server".to_string()))
        );
        assert_eq!(app_assignment("    app = FastAPI()"), None);
        assert_eq!(app_assignment("app == FastAPI()"), None);
        assert_eq!(app_assignment("# app = FastAPI()"), None);
        assert_eq!(app_assignment("app = make(FastAPI())"), None);
        assert_eq!(app_assignment("app = FastAPIRouter()"), None);
        assert_eq!(app_assignment("from fastapi import FastAPI"), None);
        assert_eq!(app_assignment("app.x = FastAPI()"), None);
    }

    #[test]
    fn find_app_skips_docstrings_and_functions() {
        let source = "\"\"\"Usage:\n\napp = FastAPI()\n\"\"\"\nfrom fastapi import FastAPI\n\
                      def make():\n    app = FastAPI()\n\nmain_app = FastAPI()\n";
        assert_eq!(
            find_app(source),
            Some((Framework::FastApi, "main_app".to_string()))
        );
        assert_eq!(find_app("import os\n"), None);
    }

    #[test]
    fn ports() {
        assert_eq!(
            port_keyword("uvicorn.run(app, host='0.0.0.0', port=8001)"),
            Some(8001)
        );
        assert_eq!(
            port_keyword("    app.run(debug=True, port = 5001)"),
            Some(5001)
        );
        assert_eq!(port_keyword("from x import port\nDB_port = 5432\n"), None);
        assert_eq!(port_keyword("if port == 80: pass"), None);
        assert_eq!(port_keyword("# run(port=9000)"), None);
        assert_eq!(port_keyword("run(port=int(os.environ['PORT']))"), None);
        assert_eq!(port_keyword("run(port=80000)"), None);
        assert_eq!(dotenv_port("DEBUG=1\nPORT=8002\n"), Some(8002));
        assert_eq!(dotenv_port("export PORT = \"8003\"\n"), Some(8003));
        assert_eq!(dotenv_port("DB_PORT=5432\n"), None);
    }

    #[test]
    fn detection_prefers_conventional_files_and_django() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write("tests/test_api.py", "app = FastAPI()\n");
        write("app/routes.py", "router = APIRouter()\napi = FastAPI()\n");
        write(
            "app/main.py",
            "from fastapi import FastAPI\napp = FastAPI()\n",
        );
        write(".venv/lib/site.py", "app = FastAPI()\n");
        write("a/b/c/d/deep.py", "app = Flask(__name__)\n");
        let files = scan(dir.path());
        assert!(files.iter().all(|f| !f.rel.starts_with(".venv")));
        assert!(files.iter().all(|f| !f.rel.starts_with("a/b/c/d")));
        let found = detect(dir.path(), &files);
        assert_eq!(found.describe(), "FastAPI app app.main:app");

        write(
            "manage.py",
            "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'x')\n",
        );
        assert_eq!(detect(dir.path(), &scan(dir.path())), Detected::Django);
    }

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

    /// The block as a user uncomments it: from `# [processes.web]` on, without the `# `.
    fn uncommented(block: &str) -> String {
        block
            .lines()
            .skip_while(|line| !line.starts_with("# [processes."))
            .map(|line| format!("{}\n", line.strip_prefix("# ").unwrap_or(line)))
            .collect()
    }

    #[test]
    fn a_dev_script_beside_or_under_the_project_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        assert_eq!(find_frontend(dir.path()), None);
        write(
            "node_modules/package.json",
            r#"{"scripts": {"dev": "vite"}}"#,
        );
        write("a/b/package.json", r#"{"scripts": {"dev": "vite"}}"#);
        write("api/package.json", r#"{"scripts": {"build": "tsc"}}"#);
        write("broken/package.json", "{ not json");
        assert_eq!(find_frontend(dir.path()), None);
        write("web/package.json", r#"{"scripts": {"dev": "vite --open"}}"#);
        write("www/package.json", r#"{"scripts": {"dev": "next dev"}}"#);
        let web = Frontend {
            folder: "web".into(),
            next: false,
        };
        assert_eq!(find_frontend(dir.path()), Some(web));
        write("package.json", r#"{"scripts": {"dev": "next dev"}}"#);
        let root = Frontend {
            folder: String::new(),
            next: true,
        };
        assert_eq!(find_frontend(dir.path()), Some(root));
    }

    #[test]
    fn the_frontend_block_is_commented_and_uncomments_to_a_member() {
        let web = Frontend {
            folder: "web".into(),
            next: false,
        };
        let block = render_frontend(&web, 8001);
        assert!(
            block.lines().all(|l| l.is_empty() || l.starts_with('#')),
            "{block}"
        );
        let table: toml::Table = toml::from_str(&uncommented(&block)).unwrap();
        let member = &table["processes"]["web"];
        assert_eq!(
            member["command"].as_str(),
            Some("npm run dev -- --port {port} --strictPort")
        );
        assert_eq!(member["cwd"].as_str(), Some("web"));
        assert_eq!(member["port"].as_integer(), Some(5173));
        assert_eq!(member["after"][0].as_str(), Some("backend"));
        assert_eq!(
            member["env"]["VITE_API_URL"].as_str(),
            Some("http://127.0.0.1:{ports.backend}")
        );
        // Beside the project: no cwd; never the backend's port; Next.js's own names.
        let root = Frontend {
            folder: String::new(),
            next: true,
        };
        let table: toml::Table =
            toml::from_str(&uncommented(&render_frontend(&root, 5173))).unwrap();
        let member = &table["processes"]["web"];
        assert!(member.get("cwd").is_none(), "{member}");
        assert_eq!(member["port"].as_integer(), Some(5174));
        assert_eq!(
            member["command"].as_str(),
            Some("npm run dev -- --port {port}")
        );
        assert!(
            member["env"].get("NEXT_PUBLIC_API_URL").is_some(),
            "{member}"
        );
    }
}
