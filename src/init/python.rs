//! The interpreter the backend's command runs.

use std::path::Path;

/// The project's virtualenv interpreter (relative to the folder, where devrun runs the
/// command), else the system's.
pub(super) fn python_for(dir: &Path) -> String {
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
