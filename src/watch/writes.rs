//! Whether the wanted files written so far are complete: an editor's save ends with closing
//! the file it wrote (inotify's IN_CLOSE_WRITE) or renaming a finished file onto it. The
//! settle phase uses it to start a single finished save sooner than the full debounce.

use super::Watch;
use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};

impl Watch {
    /// Follows one OS event: a wanted file created or written is open until it is closed
    /// after writing, renamed (onto or away) or removed.
    pub(super) fn track_writes(&mut self, event: &notify::Event) {
        if !self.tracks_writes() {
            return;
        }
        match event.kind {
            EventKind::Create(CreateKind::File)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                for path in &event.paths {
                    if self.filter.wants_file(path) {
                        self.open_writes.insert(path.clone());
                    }
                }
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Remove(_) => {
                for path in &event.paths {
                    self.open_writes.remove(path);
                }
            }
            _ => {}
        }
    }

    /// No wanted file is being written (as far as the OS said): every write was closed or
    /// renamed into place. Only inotify reports closes; elsewhere never.
    pub(super) fn writes_finished(&self) -> bool {
        self.tracks_writes() && self.open_writes.is_empty()
    }

    fn tracks_writes(&self) -> bool {
        cfg!(target_os = "linux") && !self.polling
    }
}
