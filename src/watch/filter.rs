//! Which paths matter: the include and ignore globs, `.gitignore` files and the built-in
//! ignores. Usable on its own (no OS watches involved): the supervisor routes batches with it
//! and preload asks it which modules are project code.

use super::WatchConfig;
use globset::{Glob, GlobSet, GlobSetBuilder};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Folders that are never project code, wherever they sit: version control, virtualenvs,
/// installed JavaScript packages, tool caches, bytecode, devrun's own state, an IDE's settings.
/// The watch gives them no OS watch and no change in them restarts the backend; `devrun init`
/// does not look in them for the app.
///
/// Deliberately not here: `build`, `dist`, `site-packages`, `dist-packages`, which preload's
/// import scan (src/preload.py) skips on top of these (and any folder holding a `pyvenv.cfg`).
/// For that scan, passing over a real code folder only means a module less preloaded; for the
/// watch, a package that happens to be named `build` would silently stop restarting the
/// backend. Those four are usually gitignored, which the watch honours anyway.
pub const NEVER_PROJECT_DIRS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    ".venv",
    "venv",
    "node_modules",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
    ".nox",
    ".devrun",
    ".idea",
];

/// Editor swap, backup and lock files, and bytecode.
fn builtin_ignored_file(name: &str) -> bool {
    name.ends_with(".pyc")
        || name.ends_with(".pyo")
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with('~')
        || name.starts_with(".#")
        || name == "4913"
}

/// Decides which paths matter.
pub struct Filter {
    root: PathBuf,
    include: GlobSet,
    ignore: GlobSet,
    use_gitignore: bool,
    /// Each folder's own `.gitignore` (and `.git/info/exclude` at a repository's top).
    gitignores: HashMap<PathBuf, Vec<Gitignore>>,
    /// Files wanted whatever the globs say (the env file).
    also: HashSet<PathBuf>,
}

fn globset(globs: &[String]) -> Result<GlobSet, globset::Error> {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        builder.add(Glob::new(glob)?);
    }
    builder.build()
}

impl Filter {
    pub fn new(config: &WatchConfig, root: &Path) -> Result<Filter, globset::Error> {
        let mut filter = Filter {
            root: root.to_path_buf(),
            include: globset(&config.include)?,
            ignore: globset(&config.ignore)?,
            use_gitignore: config.gitignore,
            gitignores: HashMap::new(),
            also: config.also.iter().cloned().collect(),
        };
        // .gitignore files above the watched folders apply too, up to the repository's top.
        for path in &config.paths {
            for dir in path.ancestors() {
                filter.load_gitignore(dir);
                if dir.join(".git").exists() {
                    break;
                }
            }
        }
        Ok(filter)
    }

    /// The project root (the config file's folder).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` relative to the project root, for glob matching and for display.
    pub fn relative<'a>(&self, path: &'a Path) -> &'a Path {
        path.strip_prefix(&self.root).unwrap_or(path)
    }

    /// The files wanted whatever the globs say that sit in `dir` (and exist).
    pub(super) fn also_in(&self, dir: &Path) -> Vec<PathBuf> {
        self.also
            .iter()
            .filter(|file| file.parent() == Some(dir) && file.exists())
            .cloned()
            .collect()
    }

    pub(super) fn load_gitignore(&mut self, dir: &Path) {
        if !self.use_gitignore {
            return;
        }
        let mut matchers = Vec::new();
        for file in [dir.join(".gitignore"), dir.join(".git/info/exclude")] {
            if file.is_file() {
                let mut builder = GitignoreBuilder::new(dir);
                builder.add(&file);
                if let Ok(matcher) = builder.build() {
                    matchers.push(matcher);
                }
            }
        }
        if matchers.is_empty() {
            self.gitignores.remove(dir);
        } else {
            self.gitignores.insert(dir.to_path_buf(), matchers);
        }
    }

    /// Drops the `.gitignore`s read in `top` and below: that tree is gone (a folder made at its
    /// path later is read afresh).
    pub(super) fn forget_gitignores(&mut self, top: &Path) {
        self.gitignores.retain(|dir, _| !dir.starts_with(top));
    }

    /// What git would say, from the nearest `.gitignore` that has an opinion.
    fn gitignored(&self, path: &Path, is_dir: bool) -> bool {
        for dir in path.ancestors().skip(1) {
            for matcher in self.gitignores.get(dir).into_iter().flatten() {
                match matcher.matched(path, is_dir) {
                    Match::Ignore(_) => return true,
                    Match::Whitelist(_) => return false,
                    Match::None => {}
                }
            }
        }
        false
    }

    fn ignored_by_glob(&self, path: &Path) -> bool {
        let relative = self.relative(path);
        relative
            .ancestors()
            .filter(|p| !p.as_os_str().is_empty())
            .any(|p| self.ignore.is_match(p))
    }

    /// A folder that gets no watch and whose contents never count: a built-in name, a folder
    /// an ignore glob names (`data`) or covers whole (`data/**`), or a gitignored one.
    pub fn ignores_dir(&self, dir: &Path) -> bool {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        NEVER_PROJECT_DIRS.contains(&name)
            || self.ignored_by_glob(dir)
            || self.ignored_by_glob(&dir.join("devrun-probe"))
            || self.gitignored(dir, true)
    }

    /// A file wanted whatever the globs say (the env file, the config file).
    pub fn is_also(&self, path: &Path) -> bool {
        self.also.contains(path)
    }

    /// A file whose change restarts the backend.
    pub fn wants_file(&self, path: &Path) -> bool {
        self.also.contains(path) || (self.wanted_by_globs(path) && !self.gitignored(path, false))
    }

    /// What the built-in ignores, `include` and `ignore` say of a file (not `.gitignore`).
    fn wanted_by_globs(&self, path: &Path) -> bool {
        let relative = self.relative(path);
        let name = relative.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let in_ignored_dir = relative
            .parent()
            .into_iter()
            .flat_map(Path::components)
            .any(|c| NEVER_PROJECT_DIRS.iter().any(|d| c.as_os_str() == *d));
        !in_ignored_dir
            && !builtin_ignored_file(name)
            && self.include.is_match(relative)
            && !self.ignored_by_glob(path)
    }

    /// A file of the project that only `.gitignore` keeps out (it, or a folder it is in).
    pub fn dropped_by_gitignore(&self, path: &Path) -> bool {
        if !path.starts_with(&self.root) || self.also.contains(path) {
            return false;
        }
        let folders = path.ancestors().skip(1).take_while(|d| *d != self.root);
        self.wanted_by_globs(path)
            && (self.gitignored(path, false)
                || folders.into_iter().any(|d| self.gitignored(d, true)))
    }

    /// Wants `file` from now on, whatever the globs say.
    pub(super) fn add_also(&mut self, file: &Path) {
        self.also.insert(file.to_path_buf());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::PollMode;
    use std::time::Duration;

    fn config(include: &[&str], ignore: &[&str], root: &Path) -> WatchConfig {
        WatchConfig {
            paths: vec![root.to_path_buf()],
            include: include.iter().map(|s| s.to_string()).collect(),
            ignore: ignore.iter().map(|s| s.to_string()).collect(),
            gitignore: true,
            debounce: Duration::from_millis(50),
            also: Vec::new(),
            poll: PollMode::Auto,
            poll_interval: Duration::from_millis(500),
        }
    }

    #[test]
    fn filter_keeps_code_and_drops_noise() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join(".gitignore"), "secret/\n*.gen.py\n!keep.gen.py\n").unwrap();
        let f = Filter::new(&config(&["**/*.py"], &["data/**"], root), root).unwrap();
        assert!(f.wants_file(&root.join("app/main.py")));
        assert!(f.wants_file(&root.join("main.py")));
        assert!(!f.wants_file(&root.join("notes.txt")));
        assert!(!f.wants_file(&root.join("data/x.py")));
        assert!(!f.wants_file(&root.join("app/__pycache__/x.py")));
        assert!(!f.wants_file(&root.join("app/.#main.py")));
        assert!(!f.wants_file(&root.join("app/x.gen.py")));
        assert!(f.wants_file(&root.join("app/keep.gen.py")));
        assert!(f.ignores_dir(&root.join("node_modules")));
        assert!(f.ignores_dir(&root.join("data")));
        assert!(f.ignores_dir(&root.join("secret")));
        assert!(!f.ignores_dir(&root.join("app")));
        assert!(f.dropped_by_gitignore(&root.join("app/x.gen.py")));
        assert!(f.dropped_by_gitignore(&root.join("secret/deep/x.py")));
        assert!(!f.dropped_by_gitignore(&root.join("app/main.py")));
        assert!(!f.dropped_by_gitignore(&root.join("data/x.gen.py")));
        assert!(!f.dropped_by_gitignore(&root.join("secret/notes.txt")));
    }
}
