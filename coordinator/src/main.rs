//! `hx`: the user's binary. Parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hx_coordinator::cli::Cli::parse();
    hx_common::telemetry::init(cli.log_format, "info");
    match hx_coordinator::cli::run(cli) {
        Ok(code) => code,
        // The reader went away (`hx status RUN | head`): what it wanted has been written.
        Err(err)
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
