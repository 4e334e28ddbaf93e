//! Issue 13, points 1 and 2 (`rs`): what is typed in devrun's terminal. devrun gets a
//! pseudo-terminal as its stdin; the test types into the other end.

use crate::harness::*;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;

/// A pseudo-terminal: the test types into `keyboard`, devrun reads `terminal` as its stdin.
pub(crate) struct Pty {
    keyboard: File,
    terminal: Option<OwnedFd>,
}

impl Pty {
    pub(crate) fn open() -> Pty {
        let (mut master, mut slave) = (0, 0);
        let opened = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
        // No echo: nobody reads the keyboard side, whose buffer echoes would fill.
        unsafe {
            let mut termios = std::mem::zeroed::<libc::termios>();
            assert_eq!(libc::tcgetattr(slave, &mut termios), 0);
            termios.c_lflag &= !libc::ECHO;
            assert_eq!(libc::tcsetattr(slave, libc::TCSANOW, &termios), 0);
        }
        Pty {
            keyboard: unsafe { File::from_raw_fd(master) },
            terminal: Some(unsafe { OwnedFd::from_raw_fd(slave) }),
        }
    }

    /// Starts devrun with the terminal as its stdin.
    pub(crate) fn start(&mut self, project: Project) -> Project {
        let terminal = self.terminal.take().expect("one devrun per terminal");
        project.start_with(|cmd| {
            cmd.stdin(Stdio::from(terminal));
        })
    }

    /// Non-canonical mode: the terminal hands on what is written at once, with no limit on a
    /// line's length (as a paste into a program that reads raw input would).
    pub(crate) fn raw(&mut self) {
        use std::os::fd::AsRawFd;
        let fd = self.terminal.as_ref().expect("before start").as_raw_fd();
        unsafe {
            let mut termios = std::mem::zeroed::<libc::termios>();
            assert_eq!(libc::tcgetattr(fd, &mut termios), 0);
            termios.c_lflag &= !libc::ICANON;
            assert_eq!(libc::tcsetattr(fd, libc::TCSANOW, &termios), 0);
        }
    }

    /// Types `bytes` as they are.
    pub(crate) fn type_bytes(&mut self, bytes: &[u8]) {
        self.keyboard.write_all(bytes).unwrap();
    }

    /// Types a line and Enter.
    pub(crate) fn type_line(&mut self, line: &str) {
        self.keyboard
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }
}

/// What the process's fd 0 is: "/dev/null", "pipe:[…]", "/dev/pts/3".
pub(crate) fn stdin_of(pid: i32) -> String {
    fs::read_link(format!("/proc/{pid}/fd/0"))
        .unwrap()
        .display()
        .to_string()
}

/// pdb stops the backend before it listens; a `p` line is answered and a `c` line lets it serve.
#[test]
fn pdb_answers_forwarded_lines_and_continues_on_c() {
    let mut pty = Pty::open();
    let project = pty.start(Project::testapp("debugs.py"));
    let start = &project.wait_for_starts(1, WAIT)[0];
    project.wait_until("the pdb prompt", WAIT, || {
        project.stdout().contains("(Pdb)")
    });
    assert!(
        stdin_of(start.pid).starts_with("pipe:"),
        "{}",
        stdin_of(start.pid)
    );
    assert!(project.served().is_none(), "stopped in pdb, not serving");
    pty.type_line("p answer * 1000");
    project.wait_until("pdb's answer", WAIT, || project.stdout().contains("42000"));
    pty.type_line("c");
    let served = project.wait_for_version("v1", WAIT);
    assert_eq!(served.pid, start.pid, "the same process went on to serve");
}

/// `rs` restarts a crashed backend at once, with no file changed, and is not forwarded.
#[test]
fn rs_restarts_a_crashed_backend() {
    let mut pty = Pty::open();
    let project = pty.start(Project::testapp("crashes_first.py"));
    project.wait_until("the crash and the wait", WAIT, || {
        project.stderr().contains("waiting for changes")
    });
    assert!(project.served().is_none());
    pty.type_line("rs");
    let served = project.wait_for_version("v1", WAIT);
    assert_eq!(served.generation, Some(2));
    assert!(project.stderr().contains("restart requested by `rs`"));
    project.assert_every_start_was_alone();
}

/// `rs` while a generation serves: the full teardown (the old process is gone and the new one
/// started alone on a free port), the same path as `devrun restart`.
#[test]
fn rs_restarts_a_serving_backend_with_the_full_teardown() {
    let mut pty = Pty::open();
    let project = pty.start(Project::testapp("normal.py"));
    let first = project.wait_for_version("v1", WAIT);
    pty.type_line("  rs ");
    let second = project.wait_for_starts(2, WAIT)[1].clone();
    assert_eq!(second.generation, Some(2));
    assert!(!first.alive(), "generation 1 was stopped");
    let served = project.wait_for_version("v1", WAIT);
    assert_eq!(served.pid, second.pid);
    project.assert_every_start_was_alone();
}

/// A line typed while no generation runs is dropped with a note, never delivered later.
#[test]
fn a_line_typed_while_crashed_is_dropped_with_a_note() {
    let mut pty = Pty::open();
    let project = pty.start(Project::testapp("crashes_first.py"));
    project.wait_until("the wait", WAIT, || {
        project.stderr().contains("waiting for changes")
    });
    pty.type_line("hello");
    project.wait_until("the note", WAIT, || {
        project.stderr().contains("typed line dropped")
    });
}

/// Not a terminal (CI, nohup): the backend's stdin stays /dev/null.
#[test]
fn without_a_terminal_the_backend_reads_dev_null() {
    let project = Project::testapp("normal.py").start();
    let served = project.wait_for_version("v1", WAIT);
    assert_eq!(stdin_of(served.pid), "/dev/null");
}

/// `rs` never reaches the backend: pdb, which would answer it with a NameError, sees nothing,
/// and a new generation starts instead.
#[test]
fn rs_is_not_forwarded_to_the_backend() {
    let mut pty = Pty::open();
    let project = pty.start(Project::testapp("debugs.py"));
    project.wait_until("the pdb prompt", WAIT, || {
        project.stdout().contains("(Pdb)")
    });
    pty.type_line("rs");
    let second = project.wait_for_starts(2, WAIT)[1].clone();
    assert_eq!(second.generation, Some(2));
    pty.type_line("c");
    project.wait_for_version("v1", WAIT);
    assert!(
        !project.stdout().contains("NameError"),
        "{}",
        project.stdout()
    );
}
