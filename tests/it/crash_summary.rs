//! Issue 13, point 4: one line says what killed a generation that exited on its own, and the
//! backend's stderr still reaches devrun's unchanged.

use crate::harness::*;
use serde_json::Value;
use std::fs;

/// devrun's stderr, where the backend's raw bytes (not UTF-8) may be.
fn stderr_lossy(project: &Project) -> String {
    let bytes = fs::read(project.tmp_dir().join("stderr.log")).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The `exited` event's summary, from `--events json`.
fn exited_summary(project: &Project) -> Option<String> {
    let mut found = None;
    project.wait_until("an exited event", WAIT, || {
        found = stderr_lossy(project)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["event"] == "exited");
        found.is_some()
    });
    found.and_then(|e| e["summary"].as_str().map(str::to_string))
}

/// The exception, its message and the deepest frame in the project's own files (not the
/// standard library's deeper ones); raw bytes pass through unchanged.
#[test]
fn a_traceback_is_summed_up_with_the_project_frame() {
    let project = Project::testapp("raises.py")
        .args(["--events", "json"])
        .start();
    let summary = exited_summary(&project).expect("a summary");
    assert!(
        summary.starts_with("json.decoder.JSONDecodeError: "),
        "{summary}"
    );
    assert!(summary.ends_with("(pricing.py:6)"), "{summary}");
    let stderr = fs::read(project.tmp_dir().join("stderr.log")).unwrap();
    let raw: &[u8] = b"raw \xff\xfe bytes, no newline";
    assert!(
        stderr.windows(raw.len()).any(|w| w == raw),
        "the backend's bytes passed through unchanged"
    );
    assert!(stderr_lossy(&project).contains("line 6, in load_prices"));
}

#[test]
fn a_segfault_is_a_crash_in_native_code() {
    let project = Project::testapp("segfaults.py")
        .args(["--events", "json"])
        .start();
    let summary = exited_summary(&project).expect("a summary");
    assert!(summary.contains("crashed in native code"), "{summary}");
}

#[test]
fn sigkill_after_memory_growth_is_probably_out_of_memory() {
    let project = Project::testapp("grows_then_killed.py")
        .args(["--events", "json"])
        .start();
    let summary = exited_summary(&project).expect("a summary");
    assert!(summary.contains("probably out of memory"), "{summary}");
}

/// The text status line carries the summary too.
#[test]
fn the_status_line_says_it_in_words() {
    let project = Project::testapp("raises.py").start();
    let _show = ShowStderr(&project);
    project.wait_until("the exited line", WAIT, || {
        stderr_lossy(&project).lines().any(|l| {
            l.contains("exited with code 1: json.decoder.JSONDecodeError")
                && l.ends_with("(pricing.py:6)")
        })
    });
}

/// Prints devrun's stderr (lossy) when a test fails: the harness cannot, as it is not UTF-8.
struct ShowStderr<'a>(&'a Project);

impl Drop for ShowStderr<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- devrun stderr (lossy) ----\n{}", stderr_lossy(self.0));
        }
    }
}

/// The backend's last words (written while it stops) come before devrun's `stopped` line and
/// are not lost when devrun exits right after.
#[test]
fn the_backends_last_stderr_lines_come_before_stopped_and_exit() {
    let mut project = Project::testapp("says_goodbye.py").start();
    project.wait_for_version("v1", WAIT);
    project.signal(SIGINT);
    assert_eq!(project.wait_exit(WAIT), 0);
    let stderr = project.stderr();
    let goodbye = stderr
        .find("goodbye from the backend")
        .expect("the last line");
    let stopped = stderr
        .find("generation 1 stopped")
        .expect("the stopped line");
    assert!(goodbye < stopped, "{stderr}");
}
