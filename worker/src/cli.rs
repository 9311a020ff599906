//! The `hx-worker` command line. Settings come from a worker TOML file, overridden by
//! `HX__KEY` environment variables, then by flags.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use clap::Parser;
use hx_common::config::{Override, WorkerOptions, parse_toml};
use hx_common::telemetry::LogFormat;

/// hx-worker: takes mutate-and-evaluate jobs from a coordinator over NATS JetStream, runs
/// agents on task suites with a model backend, and reports fitness back.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Cli {
    /// What to run and where.
    #[command(flatten)]
    pub args: WorkerArgs,
    /// Log format on stderr: pretty or json. RUST_LOG sets the level (default info).
    #[arg(long, default_value = "pretty", env = "HX_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// A worker's settings on the command line (also `hx worker`).
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Worker TOML file (see configs/worker.toml).
    #[arg(long, short, env = "HX_WORKER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// NATS server URL; overrides the file.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Episodes run at once per job; overrides the file.
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Jobs held at once; overrides the file.
    #[arg(long, value_name = "N")]
    jobs: Option<u32>,
    /// The worker's name in `hx status` and in results; overrides the file (default: host
    /// name and process id).
    #[arg(long, value_name = "NAME")]
    id: Option<String>,
    /// Override any key, e.g. `--set model.backend=openai`. May be repeated.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The model backend: embedded (the default CPU model) or openai (an OpenAI-compatible
    /// server such as vLLM; give --base-url and --model); overrides the file.
    #[arg(long, value_name = "BACKEND")]
    backend: Option<String>,
    /// The OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// The model name the server knows.
    #[arg(long, value_name = "NAME")]
    model: Option<String>,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

impl WorkerArgs {
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
        if let Some(n) = self.jobs {
            overrides.push(Override {
                key: "jobs".into(),
                value: n.to_string(),
            });
        }
        if let Some(id) = &self.id {
            overrides.push(Override {
                key: "id".into(),
                value: format!("{id:?}"),
            });
        }
        for (key, value) in [
            ("model.backend", &self.backend),
            ("model.base-url", &self.base_url),
            ("model.model", &self.model),
        ] {
            if let Some(v) = value {
                overrides.push(Override {
                    key: key.into(),
                    value: format!("{v:?}"),
                });
            }
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
    run_worker(cli.args)
}

/// Runs a worker until it is asked to stop (Ctrl-C or SIGTERM), then finishes the jobs in
/// hand.
pub fn run_worker(args: WorkerArgs) -> Result<ExitCode> {
    let opts = args.options()?;
    if args.print_config {
        write!(std::io::stdout().lock(), "{}", toml::to_string(&opts)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let name = opts.id.clone().unwrap_or_else(default_name);
    let mut say = |m: &str| tracing::info!("{m}");
    let model = hx_model::open(&opts.model, &mut say).map_err(|e| anyhow::anyhow!("model: {e}"))?;
    let described = model.describe();
    tracing::info!(worker = %name, model = %described, "worker starting");
    let proposer = match &opts.proposer {
        Some(m) => {
            let p = hx_model::open(m, &mut say).map_err(|e| anyhow::anyhow!("proposer: {e}"))?;
            tracing::info!(proposer = %p.describe(), "reflective mutations ask this proposer");
            Some(p)
        }
        None => None,
    };
    let handler = crate::nats::run_jobs_with(
        model,
        proposer,
        opts.adapters.clone(),
        name.clone(),
        opts.concurrency,
    );
    let cfg = crate::nats::WorkerLoop {
        endpoint: hx_bus::Endpoint {
            url: opts.nats.clone(),
            auth: opts.auth.clone(),
            tls: opts.tls.clone(),
        },
        name,
        model: described,
        slots: opts.jobs,
        handler,
    };
    crate::nats::serve(cfg, Arc::new(AtomicBool::new(false)))?;
    Ok(ExitCode::SUCCESS)
}

/// `host-pid`: unique among the workers of a cluster.
fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}
