//! A helper process that must outlive devrun however devrun ends: in a session of its own, so
//! neither a terminal's signals (Ctrl-C, hang-up) nor a kill of devrun's group reach it.

use std::io;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `program args` in `cwd`, in a new session, with `stdin` as its standard input and
/// devrun's stderr (its lines still reach the person while there is a terminal).
pub fn spawn_detached(
    program: &Path,
    args: &[std::ffi::OsString],
    cwd: &Path,
    stdin: Stdio,
) -> io::Result<Child> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(stdin)
        .stdout(Stdio::null());
    super::detach(&mut cmd);
    cmd.spawn()
}
