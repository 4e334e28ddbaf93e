use clap::Parser;
use devrun::cli::Cli;
use devrun::config::Config;
use devrun::ui::Ui;
use devrun::{supervisor, ExitCode};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let ui = Ui::new(cli.run.color, cli.run.quiet);
    let code = match run(&cli, &ui) {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            ui.error(&e.to_string());
            e.exit_code()
        }
    };
    std::process::ExitCode::from(code as u8)
}

fn run(cli: &Cli, ui: &Ui) -> Result<(), devrun::Error> {
    let config = Config::load(&cli.run)?;
    // One thread is plenty, and on Linux the thread that spawns the backend must live as long
    // as devrun: the backend's parent-death signal fires when that thread exits.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| devrun::Error::io("cannot start the async runtime", e))?;
    runtime.block_on(supervisor::run(config, ui.clone(), cli.run.once))
}
