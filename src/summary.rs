//! Crash summaries: when a generation exits on its own, one line says what killed it — the
//! Python exception and the deepest frame in the project's own files, or the signal in plain
//! words.
//!
//! A [`Witness`] watches one generation: where the OS says, it samples the leader's memory
//! (so a SIGKILL right after it grew reads "probably out of memory") and the kernel's
//! out-of-memory kills. The traceback is read from the tail of stderr that the generation's
//! output copy kept (`output::Tail`): the summary reads output, it never copies it.

use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the leader's memory is sampled.
const MEMORY_SAMPLE: Duration = Duration::from_millis(100);
/// Growth that makes a SIGKILL "probably out of memory": at least this much within
/// [`MEMORY_WINDOW`] samples before the end, and at least doubling.
const MEMORY_GROWTH_BYTES: u64 = 256 * 1024 * 1024;
/// The samples "right before" the end: 3 s.
const MEMORY_WINDOW: usize = 30;

/// The memory a generation's leader was seen using (bytes): the least over its last
/// [`MEMORY_WINDOW`] samples, and the last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub first: u64,
    pub last: u64,
}

impl Memory {
    fn from_samples(samples: &std::collections::VecDeque<u64>) -> Memory {
        Memory {
            first: samples.iter().copied().min().unwrap_or(0),
            last: samples.back().copied().unwrap_or(0),
        }
    }
}

/// What watches one generation for its summary.
pub struct Witness {
    memory: Arc<Mutex<Memory>>,
    done: Arc<AtomicBool>,
    oom_kills_at_start: Option<u64>,
}

impl Witness {
    /// Starts sampling the memory of `pid`, the generation's leader.
    pub fn start(pid: u32) -> Witness {
        let (memory, done) = (Arc::new(Mutex::new(Memory::default())), Arc::default());
        sample_memory(pid, memory.clone(), Arc::clone(&done));
        Witness {
            memory,
            done,
            oom_kills_at_start: crate::sys::oom_kills(),
        }
    }

    /// The one line for a generation that exited on its own with `status`, from what it left
    /// on stderr (`stderr_tail`, all of it copied by now); `root` tells the project's files
    /// from the rest.
    pub fn summary(&self, status: &ExitStatus, stderr_tail: &str, root: &Path) -> Option<String> {
        self.done.store(true, Ordering::Relaxed);
        let memory = self.memory.lock().map(|m| *m).unwrap_or_default();
        let oom_killed = crate::sys::oom_kills()
            .zip(self.oom_kills_at_start)
            .is_some_and(|(now, then)| now > then);
        let signal = crate::sys::exit_signal(status);
        let exception = python_exception(stderr_tail, root);
        if clean_stop(status.code(), signal, exception.as_deref()) {
            return Some(CLEAN_STOP.into());
        }
        if let Some(signal) = signal {
            return Some(describe_signal(signal, oom_killed, memory));
        }
        if status.code() == Some(COMMAND_NOT_FOUND) {
            if let Some(name) = missing_command(stderr_tail) {
                return Some(format!("command not found: {name}"));
            }
        }
        exception
    }
}

/// The exit code a shell (and `env`, npm's scripts) gives when it cannot find a command.
pub const COMMAND_NOT_FOUND: i32 = 127;

/// The command a shell said it could not find, from its last such line: `sh: 1: bun: not
/// found` (dash), `bash: bun: command not found`, `env: 'bun': No such file or directory`.
pub fn missing_command(tail: &str) -> Option<String> {
    tail.lines().rev().find_map(|line| {
        let line = line.trim();
        let rest = line
            .strip_suffix(": command not found")
            .or_else(|| line.strip_suffix(": not found"))
            .or_else(|| line.strip_suffix(": No such file or directory"))?;
        let name = rest
            .rsplit(": ")
            .next()?
            .trim_matches(|c| c == '\'' || c == '"');
        (!name.is_empty() && !name.contains(' ')).then(|| name.to_string())
    })
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

fn sample_memory(pid: u32, memory: Arc<Mutex<Memory>>, done: Arc<AtomicBool>) {
    if crate::sys::resident_bytes(pid).is_none() {
        return; // not on this OS, or gone already
    }
    let _ = std::thread::Builder::new()
        .name("devrun-memory".into())
        .spawn(move || {
            let mut samples = std::collections::VecDeque::with_capacity(MEMORY_WINDOW + 1);
            while !done.load(Ordering::Relaxed) {
                // A zombie has no resident memory: the last sample is from before the end.
                match crate::sys::resident_bytes(pid) {
                    Some(bytes) if bytes > 0 => {
                        samples.push_back(bytes);
                        if samples.len() > MEMORY_WINDOW {
                            samples.pop_front();
                        }
                        if let Ok(mut m) = memory.lock() {
                            *m = Memory::from_samples(&samples);
                        }
                    }
                    _ => return,
                }
                std::thread::sleep(MEMORY_SAMPLE);
            }
        });
}

/// Windows' exit code for a process ended by a console Ctrl-C or Ctrl-Break (CTRL_C_EVENT,
/// CTRL_BREAK_EVENT with no handler), and Python's for an unhandled KeyboardInterrupt there.
pub const CONSOLE_STOP_EXIT: u32 = 0xC000_013A;

/// The summary of a generation that ended the way a Ctrl-C ends it: no crash.
pub const CLEAN_STOP: &str =
    "stopped by Ctrl-C or Ctrl-Break (KeyboardInterrupt): a clean stop, not a crash";

/// Did the backend end as a Ctrl-C or Ctrl-Break ends it (its own shutdown ran, or the
/// default handler ended it)? Exit code 0xC000013A (Windows), or a KeyboardInterrupt as the
/// last traceback with an exit code or SIGINT (Python on Unix re-raises SIGINT). Any other
/// signal (a SIGKILL after the traceback) is not.
pub fn clean_stop(code: Option<i32>, signal: Option<&str>, exception: Option<&str>) -> bool {
    if code.is_some_and(|c| c as u32 == CONSOLE_STOP_EXIT) {
        return true;
    }
    let interrupted = exception.is_some_and(|e| e.starts_with("KeyboardInterrupt"));
    interrupted && matches!(signal, None | Some("SIGINT"))
}

/// The signal that ended a process, in plain words.
pub fn describe_signal(name: &str, oom_killed: bool, memory: Memory) -> String {
    let mb = |bytes: u64| bytes / (1024 * 1024);
    let grew = memory.last >= memory.first.saturating_mul(2)
        && memory.last.saturating_sub(memory.first) >= MEMORY_GROWTH_BYTES;
    match name {
        "SIGKILL" if oom_killed => {
            "killed, probably out of memory (the kernel's out-of-memory killer ran)".into()
        }
        "SIGKILL" if grew => format!(
            "killed, probably out of memory (its memory grew from {} MB to {} MB just before)",
            mb(memory.first),
            mb(memory.last)
        ),
        "SIGKILL" => "killed by SIGKILL from outside devrun".into(),
        "SIGSEGV" => "crashed in native code (segmentation fault in a C extension or the \
                      interpreter)"
            .into(),
        "SIGBUS" => "crashed in native code (bus error)".into(),
        "SIGABRT" => "aborted (SIGABRT), usually a failed check in native code".into(),
        "SIGFPE" => "crashed in native code (arithmetic error)".into(),
        "SIGILL" => "crashed in native code (illegal instruction)".into(),
        other => format!("ended by {other} from outside devrun"),
    }
}

/// One frame of a traceback: `File "path", line N`.
fn frame(line: &str) -> Option<(&str, u32)> {
    let rest = line.trim_start().strip_prefix("File \"")?;
    let (path, rest) = rest.split_once("\", line ")?;
    let number = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    Some((path, number.parse().ok()?))
}

/// Is `path` (as a traceback shows it) one of the project's own files: under `root`, and not
/// in an installed package (a venv inside the project)?
fn own_file<'a>(path: &'a str, root: &Path) -> Option<std::borrow::Cow<'a, str>> {
    if path.starts_with('<') {
        return None; // <frozen runpy>, <string>
    }
    let file = Path::new(path);
    let relative = match file.is_absolute() {
        true => file.strip_prefix(root).ok()?,
        false => file,
    };
    let installed = relative.components().any(|c| {
        let c = c.as_os_str();
        c == "site-packages" || c == "dist-packages"
    });
    (!installed).then(|| match file.is_absolute() {
        true => relative.to_string_lossy().into_owned().into(),
        false => path.into(),
    })
}

/// From a stderr tail: the last traceback's exception (`Type: message`, its first line) and
/// its deepest frame in the project's own files, as `ValueError: boom (app/main.py:12)`.
pub fn python_exception(tail: &str, root: &Path) -> Option<String> {
    let start = tail.rfind("Traceback (most recent call last):")?;
    let mut deepest = None;
    let mut exception = None;
    for line in tail[start..].lines().skip(1) {
        if let Some((path, number)) = frame(line) {
            if let Some(own) = own_file(path, root) {
                deepest = Some(format!("{own}:{number}"));
            }
        } else if !line.starts_with([' ', '\t']) && !line.trim().is_empty() {
            exception = Some(line.trim_end());
            break;
        }
    }
    let exception = crate::ui::shorten(exception?);
    Some(match deepest {
        Some(at) => format!("{exception} ({at})"),
        None => exception,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "/home/me/shop";

    #[test]
    fn names_the_exception_and_the_deepest_project_frame() {
        let tail = r#"INFO:     Started server process [42]
Traceback (most recent call last):
  File "/home/me/shop/main.py", line 5, in <module>
    import app.routes
  File "/home/me/shop/app/routes.py", line 12, in <module>
    load()
    ~~~~^^
  File "/home/me/shop/.venv/lib/python3.12/site-packages/lib/x.py", line 99, in load
    raise KeyError("price")
KeyError: 'price'
"#;
        assert_eq!(
            python_exception(tail, Path::new(ROOT)).as_deref(),
            Some("KeyError: 'price' (app/routes.py:12)")
        );
    }

    #[test]
    fn the_last_traceback_counts_and_a_syntax_error_has_its_file() {
        let tail = r#"Traceback (most recent call last):
  File "/home/me/shop/a.py", line 1, in <module>
ValueError: first
Traceback (most recent call last):
  File "/home/me/shop/main.py", line 3, in <module>
    import broken
  File "/home/me/shop/broken.py", line 7
    def (
        ^
SyntaxError: invalid syntax
"#;
        assert_eq!(
            python_exception(tail, Path::new(ROOT)).as_deref(),
            Some("SyntaxError: invalid syntax (broken.py:7)")
        );
    }

    #[test]
    fn no_project_frame_means_no_place_and_no_traceback_means_nothing() {
        let tail = "Traceback (most recent call last):\n  File \"<frozen runpy>\", line 198, in x\n  File \"/usr/lib/python3.12/a.py\", line 2, in y\nSystemExit: 3\n";
        assert_eq!(
            python_exception(tail, Path::new(ROOT)).as_deref(),
            Some("SystemExit: 3")
        );
        assert_eq!(python_exception("bye\n", Path::new(ROOT)), None);
    }

    #[test]
    fn a_shells_missing_command_is_named() {
        assert_eq!(
            missing_command("> vite\nsh: 1: bun: not found\n").as_deref(),
            Some("bun")
        );
        assert_eq!(
            missing_command("bash: line 1: pnpm: command not found").as_deref(),
            Some("pnpm")
        );
        assert_eq!(
            missing_command("env: 'yarn': No such file or directory").as_deref(),
            Some("yarn")
        );
        assert_eq!(
            missing_command("Traceback (most recent call last):\n"),
            None
        );
    }

    #[test]
    fn a_console_stop_or_keyboard_interrupt_is_a_clean_stop() {
        // 0xC000013A as Windows reports it (a negative i32) is clean whatever stderr says.
        assert!(clean_stop(Some(0xC000_013Au32 as i32), None, None));
        assert!(clean_stop(Some(-1073741510), None, Some("ValueError: x")));
        // Python's KeyboardInterrupt traceback: clean with an exit code or SIGINT (Unix).
        let tail = "Traceback (most recent call last):\n  File \"/home/me/shop/main.py\", line 9, in <module>\n    time.sleep(9)\nKeyboardInterrupt\n";
        let exception = python_exception(tail, Path::new(ROOT));
        assert_eq!(exception.as_deref(), Some("KeyboardInterrupt (main.py:9)"));
        assert!(clean_stop(Some(1), None, exception.as_deref()));
        assert!(clean_stop(None, Some("SIGINT"), exception.as_deref()));
        // Not: a SIGKILL after the traceback, another exception, a plain exit code.
        assert!(!clean_stop(None, Some("SIGKILL"), exception.as_deref()));
        assert!(!clean_stop(
            Some(1),
            None,
            Some("ValueError: boom (app/version.py:2)")
        ));
        assert!(!clean_stop(Some(1), None, None));
        assert!(!clean_stop(Some(0xC000_0005u32 as i32), None, None)); // an access violation
    }

    #[test]
    fn signals_in_plain_words() {
        let mb = 1024 * 1024;
        let grown = Memory {
            first: 30 * mb,
            last: 400 * mb,
        };
        let flat = Memory {
            first: 30 * mb,
            last: 32 * mb,
        };
        assert!(describe_signal("SIGKILL", false, grown).contains("probably out of memory"));
        assert!(describe_signal("SIGKILL", true, flat).contains("probably out of memory"));
        assert!(!describe_signal("SIGKILL", false, flat).contains("memory"));
        // An app importing its dependencies grows too: that is no sign of running out.
        let started = Memory {
            first: 10 * mb,
            last: 150 * mb,
        };
        assert!(!describe_signal("SIGKILL", false, started).contains("memory"));
        assert!(describe_signal("SIGSEGV", false, flat).contains("crashed in native code"));
    }
}
