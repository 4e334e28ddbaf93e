//! The stop signal as devrun names it, whatever the OS calls it: each OS's `Group::signal`
//! and `signal_pids` turn it into what that OS delivers.

use super::CONSOLE_EVENTS;

/// What is sent to the backend's group first, before the kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopSignal {
    /// SIGTERM on Unix, CTRL_BREAK to the console process group on Windows.
    #[default]
    Terminate,
    Interrupt,
    Hangup,
    Quit,
    User1,
    User2,
    /// No grace: kill the group at once.
    Kill,
}

impl StopSignal {
    /// Accepts `SIGTERM`, `TERM`, `sigterm`…, and on Windows `CTRL_BREAK`. A name that has no
    /// meaning on this platform is an error that says what to use instead.
    pub fn parse(name: &str) -> Result<StopSignal, String> {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        let signal = match bare {
            "TERM" => StopSignal::Terminate,
            "INT" => StopSignal::Interrupt,
            "HUP" => StopSignal::Hangup,
            "QUIT" => StopSignal::Quit,
            "USR1" => StopSignal::User1,
            "USR2" => StopSignal::User2,
            "KILL" => StopSignal::Kill,
            "CTRL_BREAK" | "CTRL-BREAK" | "CTRL_BREAK_EVENT" if CONSOLE_EVENTS => {
                StopSignal::Terminate
            }
            "CTRL_BREAK" | "CTRL-BREAK" | "CTRL_BREAK_EVENT" => {
                return Err(format!(
                    "{name} is a Windows console event; on this system use SIGTERM (the default) or SIGINT"
                ))
            }
            _ => {
                return Err(format!(
                    "unknown signal {name:?}; expected SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 or SIGKILL"
                ))
            }
        };
        if CONSOLE_EVENTS && !matches!(signal, StopSignal::Terminate | StopSignal::Kill) {
            return Err(format!(
                "{name} cannot be sent to a process group on Windows; use CTRL_BREAK (the default) or SIGKILL"
            ));
        }
        Ok(signal)
    }

    /// The name as this platform delivers it.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Terminate if CONSOLE_EVENTS => "CTRL_BREAK",
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Hangup => "SIGHUP",
            StopSignal::Quit => "SIGQUIT",
            StopSignal::User1 => "SIGUSR1",
            StopSignal::User2 => "SIGUSR2",
            StopSignal::Kill => "SIGKILL",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signal_names() {
        assert_eq!(StopSignal::parse("SIGTERM"), Ok(StopSignal::Terminate));
        assert_eq!(StopSignal::parse("kill"), Ok(StopSignal::Kill));
        assert!(StopSignal::parse("SIGNOPE").is_err());
        #[cfg(unix)]
        {
            assert_eq!(StopSignal::parse("int"), Ok(StopSignal::Interrupt));
            assert!(StopSignal::parse("CTRL_BREAK")
                .unwrap_err()
                .contains("Windows"));
        }
    }
}
