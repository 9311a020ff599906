//! The `hx-worker` command line. Settings come from a worker TOML file, overridden by
//! `HX__KEY` environment variables, then by flags.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Parser;
use hx_common::config::{Override, WorkerOptions, parse_toml};
use hx_common::telemetry::LogFormat;

/// hx-worker: takes mutate-and-evaluate jobs from a coordinator over NATS JetStream, runs
/// agents on task suites with a model backend, and reports fitness back.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Cli {
    /// Worker TOML file (see configs/worker.toml).
    #[arg(long, short, env = "HX_WORKER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// NATS server URL; overrides the file.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Episodes run at once; overrides the file.
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Override any key, e.g. `--set model.backend=openai`. May be repeated.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Log format on stderr: pretty or json. RUST_LOG sets the level (default info).
    #[arg(long, default_value = "pretty", env = "HX_LOG_FORMAT")]
    pub log_format: LogFormat,
}

impl Cli {
    fn options(&self) -> Result<WorkerOptions> {
        let mut overrides = Override::from_env(std::env::vars());
        if let Some(url) = &self.nats {
            overrides.push(Override {
                key: "nats".into(),
                value: format!("{url:?}"),
            });
        }
        if let Some(n) = self.concurrency {
            overrides.push(Override {
                key: "concurrency".into(),
                value: n.to_string(),
            });
        }
        for s in &self.set {
            overrides.push(Override::parse(s)?);
        }
        let (text, origin) = match &self.config {
            Some(path) => (
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                path.display().to_string(),
            ),
            None => (String::new(), "command line".to_owned()),
        };
        let opts: WorkerOptions = parse_toml(&text, &origin, &overrides)?;
        opts.validate(&origin)?;
        Ok(opts)
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let opts = cli.options()?;
    if cli.print_config {
        write!(std::io::stdout().lock(), "{}", toml::to_string(&opts)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    bail!(
        "configuration is valid, but this build has no job loop yet: distributed workers are not \
         implemented (see README.md, \"Status\")"
    )
}
