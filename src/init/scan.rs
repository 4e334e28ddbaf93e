//! The project's `.py` files and how Python names them.

use crate::watch::NEVER_PROJECT_DIRS;
use std::fs;
use std::path::{Path, PathBuf};

/// Folders deeper than this (counted in path components of a file) are not scanned.
const MAX_DEPTH: usize = 4;
/// Scanning stops after this many `.py` files: `init` must stay instant in a huge tree.
const MAX_FILES: usize = 2000;
/// A source file larger than this is not an app entry point worth reading.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A `.py` file found under the project folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PyFile {
    /// Relative to the project folder.
    pub(super) rel: PathBuf,
    pub(super) abs: PathBuf,
}

/// The project's `.py` files, breadth-first in name order (so the result is deterministic),
/// at most [`MAX_DEPTH`] components deep and at most [`MAX_FILES`] of them.
pub(super) fn scan(dir: &Path) -> Vec<PyFile> {
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
pub(super) fn skip_dir(name: &str) -> bool {
    name.starts_with('.') || NEVER_PROJECT_DIRS.contains(&name)
}

pub(super) fn read_source(path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    if meta.len() > MAX_FILE_BYTES {
        return None;
    }
    let bytes = fs::read(path).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// `app/main.py` → `app.main`, `pkg/__init__.py` → `pkg`. `None` when Python could not import
/// it by that name (a folder like `my-app`, a top-level `__init__.py`).
pub(super) fn module_path(rel: &Path) -> Option<String> {
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

pub(super) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_alphabetic() => chars.all(|c| c == '_' || c.is_alphanumeric()),
        _ => false,
    }
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
}
