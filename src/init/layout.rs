//! Where the backend's pieces are: the folder its imports start from (a `backend/` beside a
//! `frontend/`), the virtualenv's interpreter (in that folder or above it, as a repo-root
//! `.venv`), and the dotenv file (beside or above). Paths come back relative to the folder
//! they are written for: the interpreter to the backend's `cwd` (devrun runs the command
//! there), the env file to the config file's folder.

use super::detect::{AppObject, Detected};
use super::scan::module_path;
use std::path::{Component, Path, PathBuf};

/// How many folders above the one `init` runs in are looked at for a venv or a `.env`: a
/// `backend/` in a repo is one level down; more would reach into unrelated folders.
const PARENT_LEVELS: usize = 2;

/// Files that say "a Python project starts here": a folder holding one is the backend's
/// `cwd` when the app sits below it (`backend/pyproject.toml`, `backend/app/main.py`).
const PROJECT_MARKERS: [&str; 9] = [
    "pyproject.toml",
    "requirements.txt",
    "setup.py",
    "setup.cfg",
    "manage.py",
    "alembic.ini",
    "Pipfile",
    "uv.lock",
    "poetry.lock",
];

/// The backend's folder relative to `dir` (empty: `dir` itself). A FastAPI/Flask app in a
/// package under a folder that is a Python project of its own (`backend/app/main.py` with
/// `backend/pyproject.toml`) runs from that folder, its module path relative to it
/// (`app.main`): how the project's own tooling (alembic, pytest, `../.env` in settings)
/// expects to be run. Anything else keeps its path from `dir`.
pub(super) fn backend_folder(dir: &Path, app: &mut Detected) -> PathBuf {
    match app {
        Detected::Asgi(app) | Detected::Flask(app) => rebase(dir, app),
        Detected::Django(folder) => folder.clone(),
        Detected::Template => PathBuf::new(),
    }
}

fn rebase(dir: &Path, app: &mut AppObject) -> PathBuf {
    let Ok(rel) = app.file.strip_prefix(dir) else {
        return PathBuf::new();
    };
    // The first folder up from the file that is not a package: where its imports start.
    let mut root = rel.parent().unwrap_or(Path::new("")).to_path_buf();
    while !root.as_os_str().is_empty() && dir.join(&root).join("__init__.py").is_file() {
        root = root.parent().unwrap_or(Path::new("")).to_path_buf();
    }
    let is_project = PROJECT_MARKERS
        .iter()
        .any(|marker| dir.join(&root).join(marker).is_file());
    if root.as_os_str().is_empty() || !is_project {
        return PathBuf::new();
    }
    let Some(module) = rel.strip_prefix(&root).ok().and_then(module_path) else {
        return PathBuf::new();
    };
    app.module = module;
    root
}

/// `dir`, then each folder above it up to [`PARENT_LEVELS`]: (folder, how to get there from
/// `dir` as a relative path).
fn dir_and_parents(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut found = vec![(dir.to_path_buf(), PathBuf::new())];
    let mut up = PathBuf::new();
    let mut at = dir.to_path_buf();
    for _ in 0..PARENT_LEVELS {
        let Some(parent) = at.parent() else {
            break;
        };
        up.push("..");
        at = parent.to_path_buf();
        found.push((at.clone(), up.clone()));
    }
    found
}

/// `from` → `to`, both relative to one folder and free of `..` (`backend`, `.venv/bin/python`
/// → `../.venv/bin/python`).
fn relative_to(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to_parts: Vec<Component> = to.components().collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to_parts[common..] {
        path.push(part);
    }
    path
}

/// A path as the config writes it: `/` between parts on every OS but Windows.
fn shown(path: &Path) -> String {
    let text = path.display().to_string();
    if cfg!(windows) {
        text
    } else {
        text.replace('\\', "/")
    }
}

/// The project's virtualenv interpreter relative to the backend's folder `backend` (where
/// devrun runs the command), looked for in that folder, then in `dir` and the folders above
/// it; else the system's.
pub(super) fn python_for(dir: &Path, backend: &Path) -> String {
    let candidates: &[&str] = if cfg!(windows) {
        &[".venv\\Scripts\\python.exe", "venv\\Scripts\\python.exe"]
    } else {
        &[".venv/bin/python", "venv/bin/python"]
    };
    let backend_first = std::iter::once((dir.join(backend), backend.to_path_buf()));
    let places = backend_first.chain(dir_and_parents(dir));
    for (folder, rel) in places {
        for candidate in candidates {
            if folder.join(candidate).is_file() {
                return shown(&relative_to(backend, &rel.join(candidate)));
            }
        }
    }
    if cfg!(windows) { "python" } else { "python3" }.to_string()
}

/// The `.env` beside the backend, else in `dir` or above it: its path relative to `dir` (the
/// config file's folder, which `env_file` is relative to).
pub(super) fn env_file_for(dir: &Path, backend: &Path) -> Option<String> {
    let backend_first = std::iter::once((dir.join(backend), backend.to_path_buf()));
    backend_first
        .chain(dir_and_parents(dir))
        .find(|(folder, _)| folder.join(".env").is_file())
        .map(|(_, rel)| shown(&rel.join(".env")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{detect::detect, scan::scan};
    use std::fs;

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// (backend folder, what is described) for the project in `dir`.
    fn placed(dir: &Path) -> (String, String) {
        let mut app = detect(dir, &scan(dir));
        let folder = backend_folder(dir, &mut app);
        (shown(&folder), app.describe())
    }

    #[test]
    fn an_app_below_a_python_project_folder_runs_from_that_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, "backend/app/__init__.py", "");
        write(
            dir,
            "backend/app/main.py",
            "from fastapi import FastAPI\napp = FastAPI()\n",
        );
        // No project marker: the module path stays the one from the project folder.
        assert_eq!(
            placed(dir),
            (String::new(), "FastAPI app backend.app.main:app".into())
        );
        write(dir, "backend/pyproject.toml", "");
        assert_eq!(
            placed(dir),
            ("backend".into(), "FastAPI app app.main:app".into())
        );
        // At the root, nothing moves.
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "pyproject.toml", "");
        write(root.path(), "app/__init__.py", "");
        write(
            root.path(),
            "app/main.py",
            "from fastapi import FastAPI\napp = FastAPI()\n",
        );
        assert_eq!(
            placed(root.path()),
            (String::new(), "FastAPI app app.main:app".into())
        );
        // Django's manage.py in a subfolder.
        let django = tempfile::tempdir().unwrap();
        write(django.path(), "server/manage.py", "import django\n");
        assert_eq!(
            placed(django.path()),
            ("server".into(), "Django project in server".into())
        );
    }

    #[test]
    fn the_venv_and_env_file_are_found_beside_or_above() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        write(&repo, ".venv/bin/python", "");
        write(&repo, ".env", "");
        write(&repo, "backend/pyproject.toml", "");
        let backend = Path::new("backend");
        assert_eq!(python_for(&repo, backend), "../.venv/bin/python");
        assert_eq!(env_file_for(&repo, backend).as_deref(), Some(".env"));
        let inside = repo.join("backend");
        assert_eq!(python_for(&inside, Path::new("")), "../.venv/bin/python");
        assert_eq!(
            env_file_for(&inside, Path::new("")).as_deref(),
            Some("../.env")
        );
        write(&repo, "backend/.venv/bin/python", "");
        write(&repo, "backend/.env", "");
        assert_eq!(python_for(&repo, backend), ".venv/bin/python");
        assert_eq!(
            env_file_for(&repo, backend).as_deref(),
            Some("backend/.env")
        );
    }

    #[test]
    fn relative_paths_between_folders_of_one_project() {
        let r = |from: &str, to: &str| shown(&relative_to(Path::new(from), Path::new(to)));
        assert_eq!(r("backend", ".venv/bin/python"), "../.venv/bin/python");
        assert_eq!(r("", ".venv/bin/python"), ".venv/bin/python");
        assert_eq!(r("backend", "backend/.venv/bin/python"), ".venv/bin/python");
        assert_eq!(r("", "../.venv/bin/python"), "../.venv/bin/python");
    }
}
