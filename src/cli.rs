//! Command-line flags. They override `devrun.toml`; `config` merges the two.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// The status lines' choices belong to `ui`; the flags only pick them.
pub use crate::ui::{ColorChoice, EventFormat};

#[derive(Debug, Parser)]
#[command(
    name = "devrun",
    version,
    about = "Run a Python web backend and restart it, with a confirmed teardown, on every change",
    after_help = crate::error::ExitCode::help(),
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Who serves the port: devrun, its backend's tree, every listener (exit 0 only when
    /// exactly our backend listens; 1 nothing listens; 3 a process devrun did not start does)
    Status {
        /// One JSON object on stdout
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Stop the devrun running this project, or the orphaned backend a dead devrun left
    /// (`down` says the same)
    #[command(visible_alias = "down")]
    Stop {
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Ask the devrun running this project to restart its backend (every process of a stack) now, with the full confirmed
    /// teardown, also while the backend is crashed (exit 0 once it acknowledged; 1 when no
    /// devrun runs this project)
    Restart {
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Start devrun for this project in the background (its output to .devrun/devrun.log),
    /// wait until every process is ready, print each one's address and pid, exit 0; when this
    /// project already runs under a devrun, start nothing and print the same (exit 1 when a
    /// process fails before it is ready: nothing is left running)
    Up {
        /// Print the `devrun status --json` object instead of one line per process
        #[arg(long)]
        json: bool,
        /// How long to wait for every process to be ready (default: the ready timeout + 10 s)
        #[arg(long, value_name = "MS", value_parser = parse_timeout)]
        wait_timeout: Option<Duration>,
        #[command(flatten)]
        run: Box<RunArgs>,
    },
    /// Show the output of a devrun started by `devrun up` (its status lines and every
    /// process's output), all of it or only the named processes'
    Logs {
        /// Keep printing what is written (until Ctrl-C)
        #[arg(long, short)]
        follow: bool,
        /// How many of the last lines to show
        #[arg(long, short = 'n', value_name = "N", default_value_t = 100)]
        lines: usize,
        /// Only these processes (`backend`, or a `[processes.NAME]`)
        #[arg(value_name = "NAME")]
        names: Vec<String>,
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Write a commented devrun.toml for the project in this folder (detects FastAPI,
    /// Starlette, Django and Flask apps)
    Init {
        /// Overwrite an existing devrun.toml
        #[arg(long)]
        force: bool,
    },
    /// Started by devrun itself (see `devrun::watchdog`): ends what devrun left once devrun ends
    #[command(name = "__watchdog", hide = true)]
    Watchdog {
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Print a shell completion script (e.g. `devrun completions bash > ~/.local/share/bash-completion/completions/devrun`)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Which project a subcommand is about.
#[derive(Debug, Default, Clone, Args)]
pub struct ProjectArgs {
    /// Configuration file (default: ./devrun.toml); its folder holds `.devrun/`
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// When to colour status lines
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Default, Clone, Args)]
pub struct RunArgs {
    /// CI smoke test: start, wait until ready, health check, tear down, confirm the port is free
    #[arg(long)]
    pub once: bool,

    /// Configuration file (default: ./devrun.toml)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Port the backend listens on
    #[arg(long)]
    pub port: Option<u16>,

    /// Host the backend listens on (default 127.0.0.1)
    #[arg(long)]
    pub host: Option<String>,

    /// Folder to watch (repeatable; replaces [watch] paths)
    #[arg(long = "watch", value_name = "PATH")]
    pub watch: Vec<PathBuf>,

    /// Glob to ignore (repeatable; added to [watch] ignore)
    #[arg(long = "ignore", value_name = "GLOB")]
    pub ignore: Vec<String>,

    /// Extensions that trigger a restart, e.g. py,html (replaces [watch] include)
    #[arg(long, value_name = "EXT", value_delimiter = ',')]
    pub ext: Vec<String>,

    /// Quiet time after the last change before starting, e.g. 50 or 50ms (at most 2000)
    #[arg(long, value_name = "MS", value_parser = parse_debounce)]
    pub debounce: Option<Duration>,

    /// Read the backend's variables from this dotenv file (overrides `env_file`)
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,

    /// Signal sent to the backend's group first (SIGTERM; CTRL_BREAK on Windows)
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,

    /// Grace time before the group is killed, e.g. 5000 or 5s
    #[arg(long, value_name = "MS", value_parser = parse_timeout)]
    pub stop_timeout: Option<Duration>,

    /// Stop uvicorn the way it stops by itself (0.1 s polling), not devrun's fast stop
    #[arg(long)]
    pub no_fast_stop: bool,

    /// How long to wait for the port to be released
    #[arg(long, value_name = "MS", value_parser = parse_timeout)]
    pub port_timeout: Option<Duration>,

    /// Ready when GET PATH answers 2xx (default: when the port accepts a connection)
    #[arg(long, value_name = "PATH")]
    pub ready_http: Option<String>,

    /// How long the backend may take to become ready
    #[arg(long, value_name = "MS", value_parser = parse_timeout)]
    pub ready_timeout: Option<Duration>,

    /// When to colour status lines
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// Only print errors (the backend's own output still passes through)
    #[arg(long, short)]
    pub quiet: bool,

    /// Status lines for people (text) or one JSON object per line for tools (json), on stderr
    #[arg(long, value_enum, default_value_t = EventFormat::Text)]
    pub events: EventFormat,

    /// Stop the devrun already running this project (confirmed teardown) and take over
    #[arg(long)]
    pub replace: bool,

    /// End a process devrun did not start that holds the port (it is named first)
    #[arg(long)]
    pub kill_port_holder: bool,

    /// Fork each generation from a preloaded interpreter (`[server] preload = "auto"`; Linux)
    #[arg(long)]
    pub preload: bool,

    /// Run only this member of the stack: `backend` or a `[processes.NAME]` (repeatable)
    #[arg(long = "only", value_name = "NAME", value_delimiter = ',')]
    pub only: Vec<String>,

    /// The backend's command (overrides `command` in the config)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The longest a timeout flag or key may be: longer is a typo, and arithmetic on deadlines
/// stays far from overflowing.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest debounce: a storm of saves restarts the backend after this long whatever the
/// debounce, so a longer one could never take effect.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

/// "250", "250ms" or "5s" → a duration, refused above `max` (and never wrapped around).
pub fn parse_millis(text: &str, max: Duration) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000)
    } else {
        (text, 1)
    };
    let too_long = || {
        format!(
            "`{text}` is longer than the limit of {}",
            describe_limit(max)
        )
    };
    let number: u64 = number
        .trim()
        .parse()
        .map_err(|e: std::num::ParseIntError| {
            if matches!(e.kind(), std::num::IntErrorKind::PosOverflow) {
                too_long()
            } else {
                format!("`{text}` is not a duration (milliseconds, like 500, 500ms or 5s)")
            }
        })?;
    match number.checked_mul(scale).map(Duration::from_millis) {
        Some(duration) if duration <= max => Ok(duration),
        _ => Err(too_long()),
    }
}

/// "86400000 ms (24 h)", "2000 ms".
pub fn describe_limit(max: Duration) -> String {
    let ms = max.as_millis();
    if ms >= 3_600_000 && ms.is_multiple_of(3_600_000) {
        format!("{ms} ms ({} h)", ms / 3_600_000)
    } else {
        format!("{ms} ms")
    }
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    parse_millis(text, MAX_TIMEOUT)
}

fn parse_debounce(text: &str) -> Result<Duration, String> {
    parse_millis(text, MAX_DEBOUNCE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_timeout("250"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("5s"), Ok(Duration::from_secs(5)));
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("-5").is_err());
    }

    #[test]
    fn refuses_durations_that_would_overflow_or_exceed_the_limit() {
        // 18446744073709552 * 1000 wraps around to 384 in u64 arithmetic.
        let e = parse_timeout("18446744073709552s").unwrap_err();
        assert!(e.contains("86400000 ms (24 h)"), "{e}");
        assert!(parse_timeout("99999999999999999999999").is_err());
        assert_eq!(parse_timeout("86400s"), Ok(MAX_TIMEOUT));
        assert!(parse_timeout("86401s").is_err());
        assert_eq!(parse_debounce("2s"), Ok(MAX_DEBOUNCE));
        let e = parse_debounce("2001").unwrap_err();
        assert!(e.contains("2000 ms"), "{e}");
    }

    #[test]
    fn only_is_repeatable_and_takes_lists() {
        let cli =
            Cli::try_parse_from(["devrun", "--only", "backend,web", "--only", "worker"]).unwrap();
        assert_eq!(cli.run.only, ["backend", "web", "worker"]);
        assert!(Cli::try_parse_from(["devrun", "status", "--only", "web"]).is_err());
    }
}
