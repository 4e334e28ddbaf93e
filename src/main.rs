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
            | Command::Watchdog { project },
        ) => Ui::new(project.color, false),
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
