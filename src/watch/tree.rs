//! Placing and dropping the OS watches: the tree walk that gives each kept folder a watch of
//! its own (ignored folders get none), and the folders that cannot be watched.

use super::anchors::{folder_id, Anchor, Kind};
use super::Watch;
use notify::RecursiveMode;
use std::path::{Path, PathBuf};

impl Watch {
    /// Each watch path: a folder's tree (an anchor), or a single file by itself.
    pub(super) fn add_paths(&mut self, paths: &[PathBuf]) -> Result<(), notify::Error> {
        for path in paths {
            if !path.is_dir() {
                self.watcher.watch(path, RecursiveMode::NonRecursive)?;
                continue;
            }
            self.anchors.push(Anchor::new(path, Kind::Tree));
            // Gone between the config check and now: looked for from the first check on.
            let Some(id) = folder_id(path) else { continue };
            // Out of watches: the caller falls back to polling.
            self.add_tree(path, None)?;
            if self.watched.contains(path) {
                if let Some(anchor) = self.anchors.last_mut() {
                    anchor.id = Some(id);
                }
            }
        }
        Ok(())
    }

    /// The env file's folder, when no watch path covers it (an anchor of its own).
    pub(super) fn watch_also(&mut self, files: &[PathBuf]) {
        for dir in files.iter().filter_map(|f| f.parent()) {
            if self.watched.contains(dir) || self.anchors.iter().any(|a| a.path == dir) {
                continue;
            }
            self.anchors.push(Anchor::new(dir, Kind::Folder));
            let id = folder_id(dir);
            if id.is_some() && self.watcher.watch(dir, RecursiveMode::NonRecursive).is_ok() {
                self.watched.insert(dir.to_path_buf());
                if let Some(anchor) = self.anchors.last_mut() {
                    anchor.id = id;
                }
            }
        }
    }

    /// A file the backend imported: when only `.gitignore` keeps it out, it is wanted from now
    /// on and its folder watched (true); otherwise nothing changes (false).
    pub fn follow_imported(&mut self, file: &Path) -> bool {
        if !self.filter.dropped_by_gitignore(file) {
            return false;
        }
        self.filter.add_also(file);
        self.watch_also(&[file.to_path_buf()]);
        true
    }

    /// How many folders have an OS watch.
    pub fn watched_folders(&self) -> usize {
        self.watched.len()
    }

    /// Walks `top`, watching each kept folder; with `found`, collects the wanted files in it
    /// (for a folder that appeared after the watch began: its files may predate its watch).
    pub(super) fn add_tree(
        &mut self,
        top: &Path,
        mut found: Option<&mut Vec<PathBuf>>,
    ) -> Result<(), notify::Error> {
        let mut stack = vec![top.to_path_buf()];
        while let Some(dir) = stack.pop() {
            if !self.watched.insert(dir.clone()) {
                continue;
            }
            self.filter.load_gitignore(&dir);
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.skipped.remove(&dir);
                }
                // Gone already (a short-lived folder): nothing to watch.
                Err(e) if matches!(&e.kind, notify::ErrorKind::PathNotFound) => {
                    self.watched.remove(&dir);
                    continue;
                }
                Err(e) if matches!(&e.kind, notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound) =>
                {
                    self.watched.remove(&dir);
                    continue;
                }
                // Out of watches: the caller falls back to polling.
                Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => return Err(e),
                // Unreadable (EACCES) or otherwise unwatchable: this folder only, never devrun.
                Err(e) => {
                    self.watched.remove(&dir);
                    let reason = match &e.kind {
                        notify::ErrorKind::Io(io) => io.to_string(),
                        _ => e.to_string(),
                    };
                    self.skip(&dir, &reason);
                    continue;
                }
            }
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    // Watched, but its contents cannot be listed: their changes still arrive.
                    self.skip(&dir, &e.to_string());
                    continue;
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                // Symlinked folders are not followed: they could loop or leave the project.
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    if !self.filter.ignores_dir(&path) {
                        stack.push(path);
                    }
                } else if let Some(found) = found.as_deref_mut() {
                    if self.filter.wants_file(&path) {
                        found.push(path);
                    }
                }
            }
        }
        Ok(())
    }

    /// Says once per folder that it is not watched, and how to silence that.
    pub(super) fn skip(&mut self, dir: &Path, reason: &str) {
        if !self.skipped.insert(dir.to_path_buf()) {
            return;
        }
        let shown = self.filter.relative(dir).display().to_string();
        let glob = format!("{}/**", globset::escape(&shown));
        (self.warn)(format!(
            "cannot watch folder {shown} ({reason}): skipping it; changes in it will not \
             restart the backend. To silence this, add \"{glob}\" to [watch] ignore (or pass \
             --ignore '{glob}')"
        ));
    }

    /// Drops the watches of `top` and every folder below it; false if none was watched.
    pub(super) fn forget_tree(&mut self, top: &Path) -> bool {
        let gone: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|p| p.starts_with(top))
            .cloned()
            .collect();
        for dir in &gone {
            self.watched.remove(dir);
            let _ = self.watcher.unwatch(dir);
        }
        self.filter.forget_gitignores(top);
        !gone.is_empty()
    }
}
