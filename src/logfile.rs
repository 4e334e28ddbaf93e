//! The log of a devrun started by `devrun up`: `.devrun/devrun.log` holds devrun's status lines
//! and every member's output (labelled `NAME | ` in a stack). Kept bounded by the devrun that
//! writes it; read back by `devrun up` (a failed member's last lines) and `devrun logs`.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The log's name in `.devrun/`.
pub const LOG_FILE: &str = "devrun.log";
/// Set by `devrun up` in the devrun it starts: where that devrun's output goes.
pub const LOG_VARIABLE: &str = "DEVRUN_LOG";
/// Past this size the log is moved to `devrun.log.1` (the one before is dropped) and starts
/// again empty: at most twice this on disk.
pub const MAX_LOG_BYTES: u64 = 8 * 1024 * 1024;
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The older half of a trimmed log.
pub fn previous(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Keeps the log under [`MAX_LOG_BYTES`] for as long as devrun runs. Every writer appends
/// (devrun and its members share the descriptor `devrun up` opened with O_APPEND), so
/// emptying the file in place is safe: the next write lands at the new end.
pub async fn keep_bounded(log: PathBuf) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        if std::fs::metadata(&log).is_ok_and(|m| m.len() > MAX_LOG_BYTES) {
            let _ = trim(&log);
        }
    }
}

fn trim(log: &Path) -> io::Result<()> {
    std::fs::copy(log, previous(log))?;
    OpenOptions::new().write(true).open(log)?.set_len(0)
}

/// Whether a log line is `name`'s: its output (`name   | …`) or devrun's lines about it
/// (`devrun[name]: …`). In a backend run alone nothing is labelled: every line is its.
pub fn is_members(line: &str, name: &str, stack: bool) -> bool {
    if !stack {
        return true;
    }
    if let Some(rest) = line.strip_prefix("devrun[") {
        return rest.strip_prefix(name).is_some_and(|r| r.starts_with("]:"));
    }
    match line.split_once(" | ").or_else(|| line.split_once("| ")) {
        Some((label, _)) => label.trim_end() == name,
        None => false,
    }
}

/// The last `n` lines of `text` that `keep` wants.
pub fn last_lines(text: &str, n: usize, keep: impl Fn(&str) -> bool) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().filter(|l| keep(l)).collect();
    let start = lines.len().saturating_sub(n);
    lines.drain(..start);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_a_members_by_its_label_or_devruns_tag() {
        assert!(is_members("web     | VITE ready", "web", true));
        assert!(is_members("devrun[web]: generation 1 ready", "web", true));
        assert!(!is_members("backend | INFO: started", "web", true));
        assert!(!is_members("devrun[webby]: started", "web", true));
        assert!(!is_members("devrun: watching 1 folder", "web", true));
        assert!(is_members("INFO: started", "backend", false));
    }

    #[test]
    fn last_lines_keeps_the_end() {
        let text = "a 1\nb 2\na 3\na 4\n";
        assert_eq!(last_lines(text, 2, |l| l.starts_with('a')), ["a 3", "a 4"]);
        assert_eq!(last_lines(text, 10, |_| true).len(), 4);
    }

    #[test]
    fn a_trimmed_log_keeps_its_older_part_and_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_FILE);
        std::fs::write(&log, "old\n").unwrap();
        let mut append = OpenOptions::new().append(true).open(&log).unwrap();
        trim(&log).unwrap();
        io::Write::write_all(&mut append, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(previous(&log)).unwrap(), "old\n");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "new\n");
    }
}
