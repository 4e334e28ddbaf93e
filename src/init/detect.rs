//! Which framework's app the project has, and where.

use super::scan::{is_identifier, module_path, read_source, PyFile};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framework {
    FastApi,
    Starlette,
    Flask,
}

impl Framework {
    pub(super) fn name(self) -> &'static str {
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

    pub(super) fn is_asgi(self) -> bool {
        matches!(self, Framework::FastApi | Framework::Starlette)
    }
}

/// An application object found in a source file: `VAR = Framework(` at module level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AppObject {
    pub(super) framework: Framework,
    /// Dotted module path, relative to the project folder.
    pub(super) module: String,
    pub(super) var: String,
    pub(super) file: PathBuf,
}

impl AppObject {
    pub(super) fn target(&self) -> String {
        format!("{}:{}", self.module, self.var)
    }
}

/// What `init` found in the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Detected {
    Asgi(AppObject),
    Django,
    Flask(AppObject),
    Template,
}

impl Detected {
    pub(super) fn describe(&self) -> String {
        match self {
            Detected::Asgi(app) | Detected::Flask(app) => {
                format!("{} app {}", app.framework.name(), app.target())
            }
            Detected::Django => "Django project".to_string(),
            Detected::Template => "no app found (template)".to_string(),
        }
    }

    /// The file a port may be read from.
    pub(super) fn app_file(&self) -> Option<&Path> {
        match self {
            Detected::Asgi(app) | Detected::Flask(app) => Some(&app.file),
            Detected::Django | Detected::Template => None,
        }
    }
}

/// Picks the project's app. A top-level `manage.py` that mentions Django wins (a Django tree
/// may hold helper scripts with a FastAPI app); then a FastAPI/Starlette app; then Flask; then a
/// `manage.py` that does not mention Django (still most likely Django's); else the template.
pub(super) fn detect(dir: &Path, files: &[PyFile]) -> Detected {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::scan::scan;
    use std::fs;

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
}
