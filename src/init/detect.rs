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

/// The factory function names Flask's `--app MODULE` looks for by itself (and the ones
/// `init` recognises for FastAPI/Starlette, run with uvicorn's `--factory`).
const FACTORY_NAMES: [&str; 2] = ["create_app", "make_app"];

/// An application found in a source file: `VAR = Framework(` at module level, or a
/// module-level factory function (`def create_app(`) in a file that imports the framework.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AppObject {
    pub(super) framework: Framework,
    /// Dotted module path, relative to the project folder.
    pub(super) module: String,
    /// The app variable, or the factory function's name.
    pub(super) var: String,
    pub(super) file: PathBuf,
    /// `var` is a factory that returns the app (the Flask tutorial's `create_app()`).
    pub(super) factory: bool,
}

impl AppObject {
    /// What the server is told to load: `module:var`; for a Flask factory just the module
    /// (`flask --app flaskr` finds `create_app` itself, as the Flask tutorial writes it).
    pub(super) fn target(&self) -> String {
        if self.factory && self.framework == Framework::Flask {
            self.module.clone()
        } else {
            format!("{}:{}", self.module, self.var)
        }
    }
}

/// What one source file defines: see [`find_app`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Found {
    pub(super) framework: Framework,
    pub(super) var: String,
    pub(super) factory: bool,
}

/// What `init` found in the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Detected {
    Asgi(AppObject),
    /// The folder of its `manage.py`, relative to the project (empty: the project itself).
    Django(PathBuf),
    Flask(AppObject),
    Template,
}

impl Detected {
    pub(super) fn describe(&self) -> String {
        match self {
            Detected::Asgi(app) | Detected::Flask(app) if app.factory => format!(
                "{} app factory {}() in {}",
                app.framework.name(),
                app.var,
                app.module
            ),
            Detected::Asgi(app) | Detected::Flask(app) => {
                format!("{} app {}", app.framework.name(), app.target())
            }
            Detected::Django(folder) if folder.as_os_str().is_empty() => {
                "Django project".to_string()
            }
            Detected::Django(folder) => format!("Django project in {}", folder.display()),
            Detected::Template => "no app found (template)".to_string(),
        }
    }

    /// The file a port may be read from.
    pub(super) fn app_file(&self) -> Option<&Path> {
        match self {
            Detected::Asgi(app) | Detected::Flask(app) => Some(&app.file),
            Detected::Django(_) | Detected::Template => None,
        }
    }
}

/// Picks the project's app. A `manage.py` that mentions Django, in the folder or a direct
/// subfolder (`backend/manage.py`), wins (a Django tree may hold helper scripts with a FastAPI
/// app); then a FastAPI/Starlette app; then Flask; then a top-level `manage.py` that does not
/// mention Django (still most likely Django's); else the template.
pub(super) fn detect(dir: &Path, files: &[PyFile]) -> Detected {
    let manage_text = read_source(&dir.join("manage.py"));
    let manages = files
        .iter()
        .filter(|f| f.rel.file_name().is_some_and(|n| n == "manage.py"))
        .filter(|f| f.rel.components().count() <= 2);
    for manage in manages {
        let text = read_source(&manage.abs).unwrap_or_default();
        if text.to_ascii_lowercase().contains("django") {
            let folder = manage.rel.parent().unwrap_or(Path::new("")).to_path_buf();
            return Detected::Django(folder);
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
        let Some(found) = find_app(&text) else {
            continue;
        };
        let app = AppObject {
            framework: found.framework,
            module,
            var: found.var,
            file: file.abs.clone(),
            factory: found.factory,
        };
        if app.framework.is_asgi() {
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
        return Detected::Django(PathBuf::new());
    }
    Detected::Template
}

/// The most likely entry point among several apps: not a test, an app object rather than a
/// factory, a conventional file name, shallow, then first in scan order.
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
            (
                is_test,
                app.factory,
                !preferred.contains(&name),
                depth,
                *index,
            )
        })
        .map(|(_, app)| app)
}

/// The first module-level `VAR = FastAPI(` (or `Starlette(`, `Flask(`, optionally qualified
/// like `fastapi.FastAPI(`, optionally annotated like `app: FastAPI = FastAPI(`) in `source`;
/// else a module-level `def create_app(` / `def make_app(` in a file that imports one of the
/// frameworks (FastAPI before Flask before Starlette: a FastAPI file may import Starlette's
/// pieces). Lines inside triple-quoted strings are skipped.
pub(super) fn find_app(source: &str) -> Option<Found> {
    let mut in_string = false;
    let mut factory: Option<String> = None;
    let mut imported: Vec<Framework> = Vec::new();
    for line in source.lines() {
        let was_in_string = in_string;
        if (line.matches("\"\"\"").count() + line.matches("'''").count()) % 2 == 1 {
            in_string = !in_string;
        }
        if was_in_string {
            continue;
        }
        if let Some((framework, var)) = app_assignment(line) {
            return Some(Found {
                framework,
                var,
                factory: false,
            });
        }
        if let Some(framework) = framework_import(line) {
            imported.push(framework);
        }
        if factory.is_none() {
            factory = factory_def(line);
        }
    }
    let framework = [Framework::FastApi, Framework::Flask, Framework::Starlette]
        .into_iter()
        .find(|f| imported.contains(f))?;
    Some(Found {
        framework,
        var: factory?,
        factory: true,
    })
}

/// `import flask`, `from flask import Flask`, `from fastapi.x import y`, … on one line.
fn framework_import(line: &str) -> Option<Framework> {
    let rest = line
        .trim_start()
        .strip_prefix("from ")
        .or_else(|| line.trim_start().strip_prefix("import "))?;
    let package = rest.trim_start().split(['.', ' ', ',']).next()?;
    match package {
        "fastapi" => Some(Framework::FastApi),
        "flask" => Some(Framework::Flask),
        "starlette" => Some(Framework::Starlette),
        _ => None,
    }
}

/// `def create_app(` or `def make_app(` at module level: the factory's name.
fn factory_def(line: &str) -> Option<String> {
    let rest = line.strip_prefix("def ")?;
    let name = rest.split('(').next()?.trim();
    FACTORY_NAMES.contains(&name).then(|| name.to_string())
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
            Some(Found {
                framework: Framework::FastApi,
                var: "main_app".to_string(),
                factory: false,
            })
        );
        assert_eq!(find_app("import os\n"), None);
    }

    #[test]
    fn factories_are_found_in_files_that_import_the_framework() {
        // The Flask tutorial's flaskr/__init__.py.
        let flaskr =
            "import os\n\nfrom flask import Flask\n\n\ndef create_app(test_config=None):\n    \
                      app = Flask(__name__, instance_relative_config=True)\n    return app\n";
        let found = find_app(flaskr).unwrap();
        assert_eq!(found.framework, Framework::Flask);
        assert_eq!(found.var, "create_app");
        assert!(found.factory);
        let fastapi = "from starlette.middleware.cors import CORSMiddleware\n\
                       from fastapi import FastAPI\ndef make_app() -> FastAPI:\n    return FastAPI()\n";
        assert_eq!(find_app(fastapi).unwrap().framework, Framework::FastApi);
        // A module-level app wins over a factory in the same file.
        let both = "from flask import Flask\ndef create_app():\n    pass\napp = Flask(__name__)\n";
        assert!(!find_app(both).unwrap().factory);
        // No framework imported, or a factory that is not at module level: nothing.
        assert_eq!(find_app("def create_app():\n    return make()\n"), None);
        assert_eq!(
            find_app("import flask\nclass X:\n    def create_app(self):\n        pass\n"),
            None
        );
        assert_eq!(
            find_app("from flasky import x\ndef create_app():\n    pass\n"),
            None
        );
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
        assert_eq!(
            detect(dir.path(), &scan(dir.path())),
            Detected::Django(PathBuf::new())
        );
    }

    #[test]
    fn the_flask_tutorial_layout_is_a_factory_run_by_module() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write(
            "flaskr/__init__.py",
            "from flask import Flask\n\ndef create_app(test_config=None):\n    \
             app = Flask(__name__)\n    return app\n",
        );
        write(
            "flaskr/blog.py",
            "from flask import Blueprint\nbp = Blueprint('blog', __name__)\n",
        );
        write(
            "tests/conftest.py",
            "from flaskr import create_app\nfrom flask import Flask\n",
        );
        let found = detect(dir.path(), &scan(dir.path()));
        let Detected::Flask(app) = &found else {
            panic!("{found:?}");
        };
        assert_eq!(app.target(), "flaskr");
        assert_eq!(found.describe(), "Flask app factory create_app() in flaskr");
    }
}
