//! `hx`: the user's binary. Parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hx_coordinator::cli::Cli::parse();
    hx_common::telemetry::init(cli.log_format, "info");
    match hx_coordinator::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
