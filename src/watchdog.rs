//! Nothing of a stack may outlive devrun by more than a moment, however devrun ends. The
//! backend's leader dies with devrun (the parent-death signal), but a member's children do not
//! (`npm run dev` → `sh` → `node vite`), nor anything that left its group. So devrun starts a
//! watchdog: itself again (`devrun __watchdog`), in a session of its own, holding the read end
//! of a pipe whose only write end devrun holds (close-on-exec: no backend inherits it). When
//! devrun ends, the OS closes that end; the watchdog reads end-of-file and does what the next
//! devrun would do at its start: end what the dead devrun's `.devrun/state.json` records, every
//! member's group, with the usual proofs (pid + start time, the run's marker). After a clean
//! exit the state file is gone and the watchdog ends at once; devrun waits for it.
//!
//! Not on Windows: there the job object's kill-on-close already ends every member.

use crate::config::Config;
use std::ffi::OsString;
use std::io::{self, Read};
use std::process::Child;
use std::time::{Duration, Instant};

/// The hidden subcommand the watchdog runs as.
pub const SUBCOMMAND: &str = "__watchdog";

/// How long devrun waits, at its exit, for the watchdog it closed the pipe of.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// The running watchdog: dropping it closes the pipe and waits for the watchdog to end.
pub struct Watchdog {
    pipe: Option<io::PipeWriter>,
    child: Child,
}

impl Watchdog {
    /// Starts the watchdog for the run of `config` (its project: the config file, else the
    /// folder devrun runs in).
    pub fn start(config: &Config) -> io::Result<Watchdog> {
        let (reader, writer) = io::pipe()?;
        let program = std::env::current_exe()?;
        let mut args: Vec<OsString> = vec![SUBCOMMAND.into(), "--color".into(), "never".into()];
        if let Some(source) = &config.source {
            args.push("--config".into());
            args.push(source.clone().into_os_string());
        }
        let child = crate::sys::spawn_detached(&program, &args, &config.root, reader.into())?;
        Ok(Watchdog {
            pipe: Some(writer),
            child,
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.pipe.take());
        let deadline = Instant::now() + EXIT_WAIT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                _ => return,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In the watchdog: blocks until devrun's end of the pipe (its stdin) is closed.
pub fn wait_for_devrun_to_end() {
    let mut stdin = io::stdin();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}
