use clap::Parser;
use devrun::cli::{Cli, Command};
use devrun::config::Config;
use devrun::ui::Ui;
use devrun::{commands, supervisor, ExitCode};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let ui = match &cli.command {
        Some(
            Command::Status { project, .. }
            | Command::Stop { project }
            | Command::Restart { project }
            | Command::Logs { project, .. }
            | Command::Watchdog { project },
        ) => Ui::new(project.color, false),
        Some(Command::Up { run, .. }) => Ui::with_format(run.color, run.quiet, run.events),
        _ => Ui::with_format(cli.run.color, cli.run.quiet, cli.run.events),
    };
    let code = match run(&cli, &ui) {
        Ok(code) => code,
        Err(e) => {
            ui.error(&e.to_string());
            e.exit_code()
        }
    };
    // Status lines are written by a thread: let the last ones out before exiting.
    devrun::ui::flush();
    code.into()
}

fn run(cli: &Cli, ui: &Ui) -> Result<ExitCode, devrun::Error> {
    match &cli.command {
        Some(Command::Status { json, project }) => return commands::status(project, *json),
        Some(Command::Logs {
            follow,
            lines,
            names,
            project,
        }) => {
            let args = commands::LogsArgs {
                project,
                follow: *follow,
                lines: *lines,
                names,
            };
            return commands::logs(args);
        }
        Some(Command::Init { force }) => {
            let cwd = std::env::current_dir()
                .map_err(|e| devrun::Error::io("cannot read the current folder", e))?;
            let written = devrun::init::init(&cwd, *force)?;
            ui.emit(&devrun::ui::Event::Warning(format!(
                "wrote {} ({}); {}",
                written.path.display(),
                written.detected,
                written.next
            )));
            return Ok(ExitCode::Ok);
        }
        Some(Command::Completions { shell }) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut command, "devrun", &mut script);
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            return Ok(ExitCode::Ok);
        }
        _ => {}
    }
    let config = match &cli.command {
        None => Some(Config::load(&cli.run)?),
        _ => None,
    };
    // One thread is plenty, and on Linux the thread that spawns the backend must live as long
    // as devrun: the backend's parent-death signal fires when that thread exits.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| devrun::Error::io("cannot start the async runtime", e))?;
    match (&cli.command, config) {
        (
            Some(Command::Up {
                json,
                wait_timeout,
                run,
            }),
            _,
        ) => return runtime.block_on(up(run, *json, *wait_timeout, ui)),
        (Some(Command::Stop { project }), _) => runtime.block_on(commands::stop(project, ui))?,
        (Some(Command::Watchdog { project }), _) => {
            runtime.block_on(commands::watchdog(project, ui))?
        }
        (Some(Command::Restart { project }), _) => {
            return runtime.block_on(commands::restart(project, ui))
        }
        (_, Some(config)) => runtime.block_on(supervisor::run(config, ui.clone()))?,
        _ => {}
    }
    Ok(ExitCode::Ok)
}

/// `devrun up`: the run's config is checked here (a bad one is exit 2 before anything starts),
/// then handed, as the same arguments, to the devrun it starts in the background.
async fn up(
    run: &devrun::cli::RunArgs,
    json: bool,
    wait_timeout: Option<std::time::Duration>,
    ui: &Ui,
) -> Result<ExitCode, devrun::Error> {
    if run.once {
        return Err(devrun::Error::Usage(
            "`devrun up` runs devrun in the background; use `devrun --once` for a smoke test"
                .into(),
        ));
    }
    let config = Config::load(run)?;
    let wait_timeout =
        wait_timeout.unwrap_or(config.ready.timeout + std::time::Duration::from_secs(10));
    let args = commands::UpArgs {
        config: &config,
        project: devrun::cli::ProjectArgs {
            config: run.config.clone(),
            color: run.color,
        },
        forward: forwarded_args(),
        json,
        wait_timeout,
    };
    commands::up(args, ui).await
}

/// The arguments after `up`, less `up`'s own (`--json`, `--wait-timeout`): the run's flags and
/// command, for the devrun `up` starts.
fn forwarded_args() -> Vec<std::ffi::OsString> {
    let mut args = std::env::args_os().skip_while(|a| a != "up").skip(1);
    let mut forward = Vec::new();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            forward.push(arg);
            forward.extend(args.by_ref());
            break;
        }
        match text.as_ref() {
            "--json" => {}
            "--wait-timeout" => {
                args.next();
            }
            t if t.starts_with("--wait-timeout=") => {}
            _ => forward.push(arg),
        }
    }
    forward
}
