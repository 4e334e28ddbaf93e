//! `devrun logs [-f] [-n N] [NAME…]`: the output of a devrun started by `devrun up` (its
//! status lines and every member's output, from `.devrun/devrun.log`), all of it or only the
//! named members', followed with `-f`.

use super::project;
use crate::cli::ProjectArgs;
use crate::error::{Error, ExitCode};
use crate::logfile::{self, LOG_FILE};
use crate::state::StateDir;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

const FOLLOW_POLL: Duration = Duration::from_millis(100);

pub struct LogsArgs<'a> {
    pub project: &'a ProjectArgs,
    pub follow: bool,
    pub lines: usize,
    pub names: &'a [String],
}

pub fn logs(args: LogsArgs) -> Result<ExitCode, Error> {
    let root = project(args.project)?.root;
    let state_dir = StateDir::new(&root);
    let state = state_dir.read();
    let log = state
        .as_ref()
        .and_then(|s| s.log.clone())
        .unwrap_or_else(|| state_dir.path().join(LOG_FILE));
    let stack = state.as_ref().is_some_and(|s| !s.processes.is_empty());
    let keep = |line: &str| {
        args.names.is_empty()
            || args
                .names
                .iter()
                .any(|name| logfile::is_members(line, name, stack))
    };
    let mut file = match std::fs::File::open(&log) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!(
                "no log at {}: only a devrun started by `devrun up` writes one",
                log.display()
            )))
        }
        Err(e) => return Err(Error::io(format!("cannot read {}", log.display()), e)),
    };
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| Error::io(format!("cannot read {}", log.display()), e))?;
    let mut out = std::io::stdout().lock();
    for line in logfile::last_lines(&text, args.lines, keep) {
        if writeln!(out, "{line}").is_err() {
            return Ok(ExitCode::Ok); // a closed pipe (`| head`)
        }
    }
    let _ = out.flush();
    if !args.follow {
        return Ok(ExitCode::Ok);
    }
    follow(file, text.len() as u64, &keep)
}

/// Prints what is appended from `offset` on, until interrupted; a log emptied by its size
/// bound is read again from its start.
fn follow(mut file: std::fs::File, mut offset: u64, keep: &dyn Fn(&str) -> bool) -> ! {
    let mut partial = String::new();
    loop {
        std::thread::sleep(FOLLOW_POLL);
        let len = file.metadata().map_or(offset, |m| m.len());
        if len < offset {
            offset = 0;
            partial.clear();
        }
        if len == offset || file.seek(SeekFrom::Start(offset)).is_err() {
            continue;
        }
        let mut more = Vec::new();
        let Ok(read) = (&mut file).take(len - offset).read_to_end(&mut more) else {
            continue;
        };
        offset += read as u64;
        partial.push_str(&String::from_utf8_lossy(&more));
        let mut out = std::io::stdout().lock();
        while let Some(end) = partial.find('\n') {
            let line: String = partial.drain(..=end).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if keep(line) && writeln!(out, "{line}").is_err() {
                std::process::exit(0);
            }
        }
        let _ = out.flush();
    }
}
