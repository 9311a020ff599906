//! The `hx` command line: clap definitions (their doc comments are the help text) and what
//! each subcommand does.
//!
//! Exit codes: 0 success, 1 a failure or invalid input (the message says which file and key),
//! 2 a usage error.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hx_common::config::{Experiment, Override, WorkerOptions};
use hx_common::harness::format::{self, Format};
use hx_common::telemetry::LogFormat;

/// hx: distributed evolutionary search over agent harnesses.
///
/// A harness is the scaffolding around a model: prompts, memory, tools, planning, action
/// selection and the policy by which an agent may rewrite its own harness mid-task. hx keeps a
/// population of harness graphs, evaluates them on task suites, and evolves better ones.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Cli {
    /// Log format on stderr: pretty or json. RUST_LOG sets the level (default info).
    #[arg(long, global = true, default_value = "pretty", env = "HX_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check and print experiment configs.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check, convert, draw and combine harness files.
    #[command(subcommand)]
    Harness(HarnessCommand),
}

/// Where an experiment config comes from and what overrides it.
#[derive(Debug, Args)]
struct ConfigSource {
    /// Experiment TOML file.
    #[arg(long, short, env = "HX_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// Override a key after the file and HX__SECTION__KEY environment variables, e.g.
    /// `--set population.size=8`. May be repeated.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ConfigSource {
    fn overrides(&self) -> Result<Vec<Override>> {
        let mut all = Override::from_env(std::env::vars());
        for s in &self.set {
            all.push(Override::parse(s)?);
        }
        Ok(all)
    }
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate experiment configs and the seed harnesses they name; with --worker, validate
    /// worker configs instead. Prints one line per file; fails on the first bad one.
    Check {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The files are worker configs (what hx-worker --config reads).
        #[arg(long)]
        worker: bool,
    },
    /// Print the effective config: defaults, then the file, then environment and --set
    /// overrides.
    Show {
        #[command(flatten)]
        source: ConfigSource,
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutFormat {
    Json,
    Toml,
    Dot,
}

impl From<OutFormat> for Format {
    fn from(f: OutFormat) -> Self {
        match f {
            OutFormat::Json => Format::Json,
            OutFormat::Toml => Format::Toml,
            OutFormat::Dot => Format::Dot,
        }
    }
}

#[derive(Debug, Subcommand)]
enum HarnessCommand {
    /// Validate harness files (.json or .toml) and print each one's id.
    Check {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print one JSON object per file: path, id, components.
        #[arg(long)]
        json: bool,
    },
    /// Print a harness in canonical form: JSON, TOML, or DOT for Graphviz.
    Show {
        /// The harness file.
        file: PathBuf,
        /// Output format.
        #[arg(long, short, value_enum, default_value = "toml")]
        format: OutFormat,
    },
    /// Merge two harnesses (a | b): their union, or the conflict that prevents it.
    Merge {
        /// Left harness file.
        a: PathBuf,
        /// Right harness file.
        b: PathBuf,
        /// Output format.
        #[arg(long, short, value_enum, default_value = "toml")]
        format: OutFormat,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Config(c) => config(c),
        Command::Harness(c) => harness(c),
    }
}

fn config(cmd: ConfigCommand) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        ConfigCommand::Check { files, worker } => {
            for file in files {
                if worker {
                    WorkerOptions::load(&file, &[])?;
                    writeln!(out, "{}: ok (worker)", file.display())?;
                } else {
                    let exp = Experiment::load(&file, &[])?;
                    let seeds = check_seeds(&exp, &file)?;
                    writeln!(
                        out,
                        "{}: ok (run {}, {} seed harnesses)",
                        file.display(),
                        exp.run.name,
                        seeds
                    )?;
                }
            }
        }
        ConfigCommand::Show { source, json } => {
            let exp = Experiment::load(&source.config, &source.overrides()?)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&exp)?)?;
            } else {
                write!(out, "{}", toml::to_string(&exp)?)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads every seed harness an experiment names; returns how many.
fn check_seeds(exp: &Experiment, config: &Path) -> Result<usize> {
    let paths = exp.seed_paths(config);
    for p in &paths {
        format::load(p).with_context(|| format!("{}: population.seeds", config.display()))?;
    }
    Ok(paths.len())
}

fn harness(cmd: HarnessCommand) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        HarnessCommand::Check { files, json } => {
            for file in files {
                let h = format::load(&file)?;
                if json {
                    let line = serde_json::json!({
                        "path": file,
                        "id": h.id().to_string(),
                        "components": h.len(),
                    });
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(
                        out,
                        "{}: ok, id {}, {} components",
                        file.display(),
                        h.id(),
                        h.len()
                    )?;
                }
            }
        }
        HarnessCommand::Show { file, format: f } => {
            let h = format::load(&file)?;
            write!(out, "{}", format::render(&h, f.into()))?;
        }
        HarnessCommand::Merge { a, b, format: f } => {
            let (ha, hb) = (format::load(&a)?, format::load(&b)?);
            match ha.merge(&hb) {
                Ok(h) => write!(out, "{}", format::render(&h, f.into()))?,
                Err(e) => bail!("{} | {}: {e}", a.display(), b.display()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
