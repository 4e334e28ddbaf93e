//! Windows consoles and stopping the backend gracefully.
//!
//! A console control event (CTRL_BREAK) reaches only processes that share the sender's console.
//! Started from an IDE, a task runner or a service, devrun has no console, so it makes a hidden
//! one that its backends inherit. Under Git Bash's mintty (no pseudo-console), the terminal's
//! Ctrl-C does not arrive as a console event: devrun may be ended outright, and the job object
//! then kills the backend without a graceful shutdown. These pure parts decide what to say.

/// Where the console devrun runs with came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Console {
    /// Started in one (cmd, PowerShell, Windows Terminal, a pseudo-console).
    Inherited,
    /// There was none; devrun made a hidden one for itself and its backends.
    Made,
    /// There was none and none could be made: every stop will be a kill.
    Missing(String),
}

/// Cygwin and MSYS2 (Git Bash) name their pty pipes `\{cygwin,msys}-<hex>-pty<N>-{from,to}-master`:
/// a standard handle that is such a pipe means the terminal is mintty without a pseudo-console.
pub fn is_mintty_pipe(name: &str) -> bool {
    let base = name.rsplit('\\').next().unwrap_or(name);
    (base.starts_with("msys-") || base.starts_with("cygwin-")) && base.contains("-pty")
}

/// The one line said at start, if the situation needs one.
pub fn note(console: &Console, mintty: bool) -> Option<String> {
    if mintty {
        return Some(
            "Git Bash's mintty gives devrun no console events: Ctrl-C here can end devrun at once, \
             and the backend then dies with it (job object) without a graceful shutdown; the next \
             devrun finds nothing left. For a graceful stop run `devrun stop` from another \
             terminal, start devrun with `winpty devrun`, or enable Git Bash's pseudo-console \
             support"
                .to_string(),
        );
    }
    match console {
        Console::Inherited => None,
        Console::Made => Some(
            "no console (IDE or task runner): devrun made a hidden one, so the backend still gets \
             CTRL_BREAK for a graceful stop"
                .to_string(),
        ),
        Console::Missing(why) => Some(format!(
            "no console, and devrun could not make one ({why}): every stop kills the backend \
             without a graceful shutdown"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_mintty_pty_pipes() {
        assert!(is_mintty_pipe(r"\msys-1888ae32e00d56aa-pty0-to-master"));
        assert!(is_mintty_pipe(
            r"\Device\NamedPipe\cygwin-e022582115c10879-pty3-from-master"
        ));
        assert!(!is_mintty_pipe(r"\Device\NamedPipe\mojo.1234.5678"));
        assert!(!is_mintty_pipe(r"\msys-1888ae32e00d56aa-cygwait"));
    }

    #[test]
    fn says_one_line_only_when_the_stop_path_differs() {
        assert_eq!(note(&Console::Inherited, false), None);
        let made = note(&Console::Made, false).unwrap_or_default();
        assert!(made.contains("hidden"), "{made}");
        let mintty = note(&Console::Made, true).unwrap_or_default();
        assert!(
            mintty.contains("devrun stop") && mintty.contains("winpty"),
            "{mintty}"
        );
        let missing = note(&Console::Missing("denied".into()), false).unwrap_or_default();
        assert!(missing.contains("denied"), "{missing}");
        assert!(!mintty.contains('\n') && !made.contains('\n'));
    }
}
