//! Files the backend imported that the watch's filter drops (a gitignored `settings/local.py`
//! that `settings/dev.py` imports): each generation's bootstrap lists the project files in
//! its `sys.modules` (src/fast_stop/bootstrap.py); the runner reads that list while serving
//! and hands it up; the coordinator has the watch follow those `.gitignore` names, says so once
//! per file, and routes their changes to the members that follow the backend's watch.

use super::unit::Runner;
use super::{Coordinator, Up};
use crate::config::ProcessWatch;
use crate::ui::Warn;
use crate::watch::{Filter, Watch};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a serving runner looks whether its generation's import report changed (a stat).
pub(super) const IMPORTS_EVERY: Duration = Duration::from_millis(500);

/// What the coordinator knows of the backend's imports.
pub(super) struct Imports {
    /// The project root, for messages.
    root: PathBuf,
    /// Every file a generation reported importing (each looked at once).
    seen: HashSet<PathBuf>,
    /// Of those, the ones the backend's filter drops for `.gitignore`: they restart it anyway.
    followed: HashSet<PathBuf>,
}

impl Imports {
    pub(super) fn new(root: &Path) -> Imports {
        Imports {
            root: root.to_path_buf(),
            seen: HashSet::new(),
            followed: HashSet::new(),
        }
    }

    /// Whether a change to `path` restarts a member that watches `watch` (`"backend"`: the
    /// backend's filter, and the imported files it drops for `.gitignore`).
    pub(super) fn wants(&self, watch: &ProcessWatch, path: &Path, backend: &Filter) -> bool {
        match watch {
            ProcessWatch::None => false,
            ProcessWatch::Backend => backend.wants_file(path) || self.followed.contains(path),
            ProcessWatch::Paths(paths) => paths.iter().any(|p| path.starts_with(p)),
        }
    }
}

impl Runner {
    /// Hands up the files its generation imported, when the report changed (the backend's
    /// watch only: a member with its own paths restarts for those alone).
    pub(super) fn report_imports(&mut self) {
        if self.member.watch != ProcessWatch::Backend {
            return;
        }
        let Some(Some(bootstrap)) = self.fast_stop.as_mut() else {
            return;
        };
        if let Some(files) = bootstrap.imports() {
            self.tell(Up::Imported(files));
        }
    }
}

impl Coordinator {
    /// Files a generation imported: those the watch's filter dropped for `.gitignore` are
    /// watched from now on (said once each) and restart the members following the backend.
    pub(super) fn take_imports(&mut self, files: Vec<PathBuf>, watch: Option<&mut Watch>) {
        let Some(watch) = watch else { return };
        let imports = &mut self.imports;
        for file in files {
            if !imports.seen.insert(file.clone()) || !watch.follow_imported(&file) {
                continue;
            }
            let shown = file.strip_prefix(&imports.root).unwrap_or(&file);
            let shown = shown.display().to_string();
            self.ui.emit(&Warn::WatchingImported { file: shown }.into());
            imports.followed.insert(file);
        }
    }
}
