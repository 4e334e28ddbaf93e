//! The watch's settings (`[watch]` and its flags, derived in `config`), and what they mean for
//! how folders are watched.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub paths: Vec<PathBuf>,
    pub include: Vec<String>,
    pub ignore: Vec<String>,
    pub gitignore: bool,
    pub debounce: Duration,
    /// Files wanted whatever the include globs say (the env file).
    pub also: Vec<PathBuf>,
    /// `[watch] poll`: when to poll folders instead of using the OS's notifications.
    pub poll: PollMode,
    /// `[watch] poll_ms`: how often polled folders are looked at.
    pub poll_interval: Duration,
}

/// `[watch] poll = true | false | "auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PollMode {
    /// Poll the watch paths on filesystems whose notifications miss outside changes.
    #[default]
    Auto,
    Always,
    Never,
}

/// Why the watch polls, per `[watch] poll`: forced, or ("auto") the first watch path on a
/// filesystem whose notifications miss changes made from outside. None: OS notifications.
pub(super) fn poll_reason(config: &WatchConfig) -> Option<String> {
    let every = format!("every {} ms", config.poll_interval.as_millis());
    match config.poll {
        PollMode::Never => None,
        PollMode::Always => Some(format!("polling {every} ([watch] poll = true)")),
        PollMode::Auto => config.paths.iter().find_map(|path| {
            let why = crate::sys::blind_filesystem(path)?;
            Some(format!(
                "polling {every}: {} is on {why}, whose change notifications miss edits made \
                 from outside (set [watch] poll = false to use them anyway)",
                path.display()
            ))
        }),
    }
}
