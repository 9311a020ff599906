//! Experiment and worker configuration: one TOML schema, defaults in code, and a `validate()`
//! that names the key and the rule it broke.
//!
//! Load order: defaults, then the TOML file, then environment overrides (`HX__SECTION__KEY`),
//! then command-line `--set section.key=value` overrides. Overrides go through the same parser
//! as the file, so every layer is checked the same way.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::protocol::check_run_name;
use crate::task::{Split, check_suite_name};

/// Prefix of environment overrides: `HX__POPULATION__SIZE=8` sets `population.size`.
pub const ENV_PREFIX: &str = "HX__";

/// A whole experiment: what `hx evolve` and `hx coordinator` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Experiment {
    /// Run identity and storage.
    pub run: RunOptions,
    /// Task suites searched on; the first is the primary one.
    #[serde(default = "default_suites")]
    pub suites: Vec<SuiteOptions>,
    /// The model workers run.
    #[serde(default, deserialize_with = "model_section")]
    pub model: ModelOptions,
    /// Population and selection.
    #[serde(default)]
    pub population: PopulationOptions,
    /// Noise-aware evaluation by successive halving.
    #[serde(default)]
    pub racing: RacingOptions,
    /// When the run stops.
    #[serde(default)]
    pub budget: BudgetOptions,
    /// How jobs reach workers.
    #[serde(default)]
    pub transport: TransportOptions,
    /// The reflective mutation operator and the model that proposes its edits; without this
    /// section the search has no reflective operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposer: Option<ProposerOptions>,
}

/// The proposer: a model (often larger than the agents') that reads digests of a parent's
/// failures and proposes harness edits, which the algebra checks and a gate replays before a
/// full evaluation.
///
/// It runs on the workers, beside the agents' model and worlds the gate needs: a cluster
/// points `model` at a served model on a GPU box (each worker file's own `[proposer]`
/// section says where its workers reach it), and the coordinator stays free of model calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ProposerOptions {
    /// The proposer's backend, a table like `[model]`; default: the agents' own model.
    #[serde(
        deserialize_with = "optional_model_section",
        skip_serializing_if = "Option::is_none"
    )]
    pub model: Option<ModelOptions>,
    /// `write`: the proposer writes its proposals as JSON edits (a model that can write
    /// JSON); `choose`: it picks the most likely of a menu of single edits by log-likelihood
    /// (what the embedded 135M model can do: it writes no valid JSON, see BENCHMARKS.md).
    pub mode: crate::protocol::ProposerMode,
    /// Proposals asked for in one answer (in `choose` mode: the top ones taken).
    pub proposals: u32,
    /// Sampling temperature.
    pub temperature: f32,
    /// Tokens the proposer may write per call (a digest, then the proposals).
    pub max_tokens: u32,
    /// Children gated per reflective mutation at most (each gate plays up to 3 episodes).
    pub max_gates: u32,
    /// The proposer's tokens over the run at most; the reflective operator stops there.
    pub token_budget: u64,
}

impl Default for ProposerOptions {
    fn default() -> Self {
        ProposerOptions {
            model: None,
            mode: crate::protocol::ProposerMode::Write,
            proposals: 3,
            temperature: 0.7,
            max_tokens: 400,
            max_gates: 2,
            token_budget: 2_000_000,
        }
    }
}

fn optional_model_section<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<ModelOptions>, D::Error> {
    model_section(d).map(Some)
}

/// Run identity and storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RunOptions {
    /// The run's name; used in NATS subjects, so `a-z`, `0-9`, `-`, `_`.
    pub name: String,
    /// The sled directory; default `runs/<name>` under the working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<PathBuf>,
    /// Seeds every random choice of the coordinator.
    #[serde(default)]
    pub seed: u64,
    /// Serve the run's live view on this address while it runs: the report page at `/`,
    /// `/status.json` and Prometheus `/metrics`; e.g. `127.0.0.1:9464`. Off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<String>,
}

impl RunOptions {
    /// Where the run's store lives.
    pub fn store_path(&self) -> PathBuf {
        self.store
            .clone()
            .unwrap_or_else(|| Path::new("runs").join(&self.name))
    }
}

/// One suite and the splits it is used with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SuiteOptions {
    /// The suite, e.g. `household`.
    pub name: String,
    /// The split the search evolves on.
    #[serde(default = "split_train")]
    pub search_split: Split,
    /// The split that picks the final best harness.
    #[serde(default = "split_validation")]
    pub select_split: Split,
    /// Weight of this suite in fitness.
    #[serde(default = "one")]
    pub weight: f64,
    /// For a suite hx does not generate itself: the adapter process that serves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterOptions>,
}

/// An external environment adapter: a process speaking hx's JSON-lines environment protocol
/// on stdin and stdout (see `hx_worker::env::external`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AdapterOptions {
    /// The program and its arguments, e.g. `["python3", "adapters/alfworld.py"]`.
    pub command: Vec<String>,
    /// How long one reply may take before the adapter is killed.
    #[serde(default = "default_adapter_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Steps per episode when the adapter does not say.
    #[serde(default = "default_adapter_steps")]
    pub step_limit: u32,
}

fn default_adapter_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_adapter_steps() -> u32 {
    50
}

fn check_adapter(p: &mut Problems, key: &str, a: &AdapterOptions) {
    p.check(
        a.command.first().is_some_and(|c| !c.is_empty()),
        format!("{key}.command"),
        "must name a program",
    );
    p.check(
        a.timeout >= Duration::from_millis(100),
        format!("{key}.timeout"),
        "must be at least 100ms",
    );
    p.range(&format!("{key}.step-limit"), a.step_limit, 1, 10_000);
}

fn split_train() -> Split {
    Split::Train
}
fn split_validation() -> Split {
    Split::Validation
}
fn one() -> f64 {
    1.0
}
fn default_suites() -> Vec<SuiteOptions> {
    vec![SuiteOptions {
        name: "household".into(),
        search_split: Split::Train,
        select_split: Split::Validation,
        weight: 1.0,
        adapter: None,
    }]
}

/// The model backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "backend",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum ModelOptions {
    /// A GGUF model run in-process on CPU.
    Embedded {
        /// The GGUF file; default: SmolLM2-135M-Instruct, fetched on first use.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gguf: Option<PathBuf>,
        /// CPU threads; 0 means one per core.
        #[serde(default)]
        threads: usize,
        /// Context length in tokens.
        #[serde(default = "default_context")]
        context: u32,
    },
    /// An OpenAI-compatible server (vLLM, SGLang, llama.cpp server, Ollama, hosted APIs).
    Openai {
        /// Base URL up to and including `/v1`.
        base_url: String,
        /// The model name the server knows.
        model: String,
        /// Environment variable holding the API key, if the server needs one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        api_key_env: Option<String>,
        /// Requests in flight at most.
        #[serde(default = "default_concurrency")]
        max_concurrency: usize,
        /// Per-request timeout.
        #[serde(default = "default_timeout", with = "humantime_serde")]
        timeout: Duration,
    },
}

fn default_context() -> u32 {
    2048
}
fn default_concurrency() -> usize {
    32
}
fn default_timeout() -> Duration {
    Duration::from_secs(120)
}

/// A `[model]` section: without a `backend` key it is the default backend (embedded), so a
/// partial section, or `--set model.threads=1` with no file, keeps the other defaults.
fn model_section<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ModelOptions, D::Error> {
    use serde::de::Error as _;
    let mut v = serde_json::Value::deserialize(d)?;
    if let Some(table) = v.as_object_mut() {
        table
            .entry("backend")
            .or_insert_with(|| serde_json::Value::String("embedded".into()));
    }
    ModelOptions::deserialize(v).map_err(D::Error::custom)
}

impl ModelOptions {
    /// The `[model]` section of an experiment or worker file (the default when it has
    /// none), checked; the rest of the file is not read, so `hx run -c worker.toml` needs no
    /// `nats` line.
    pub fn load(path: &Path, overrides: &[Override]) -> Result<ModelOptions, Error> {
        #[derive(Deserialize)]
        struct OnlyModel {
            #[serde(default, deserialize_with = "model_section")]
            model: ModelOptions,
        }
        let text = std::fs::read_to_string(path).map_err(|cause| Error::Io {
            path: path.to_owned(),
            cause,
        })?;
        let origin = path.display().to_string();
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| Error::Parse {
            origin: origin.clone(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        for o in overrides {
            o.apply(&mut table)?;
        }
        let only: toml::Table = table
            .remove("model")
            .map(|m| [("model".to_owned(), m)].into_iter().collect())
            .unwrap_or_default();
        let m = OnlyModel::deserialize(toml::Value::Table(only))
            .map_err(|e| Error::Parse {
                origin: origin.clone(),
                message: e.to_string().trim_end().to_owned(),
            })?
            .model;
        let mut p = Problems::default();
        check_model(&mut p, "model", &m);
        p.finish(&origin)?;
        Ok(m)
    }
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions::Embedded {
            gguf: None,
            threads: 0,
            context: default_context(),
        }
    }
}

/// Population and selection settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct PopulationOptions {
    /// Seed harness files, relative to the config file: the parents the search starts from.
    pub seeds: Vec<PathBuf>,
    /// Comparison arms, relative to the config file: harnesses that are never parents or
    /// candidates, only scored beside the chosen harness and the seeds on the same held-out
    /// test tasks (e.g. a hand-built harness the search should beat from a plain start).
    pub arms: Vec<PathBuf>,
    /// Archive capacity.
    pub size: usize,
    /// Tournament size.
    pub tournament: usize,
    /// Best harnesses always kept.
    pub elites: usize,
    /// Chance that a parent is a seed harness instead of a selected one.
    pub immigrant_rate: f64,
    /// Chance that a child comes from crossover instead of mutation.
    pub crossover_rate: f64,
    /// Jobs in flight at most.
    pub jobs_in_flight: usize,
    /// The mutation operators the bandit may draw from ([`MUTATION_OPERATORS`]); empty means
    /// all of them (`reflective` only with a `[proposer]` section). Crossover is
    /// `crossover-rate`'s.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<String>,
    /// Before breeding at random, race every structural child of each seed at the first rung
    /// (each component kind it lacks inserted, each tool it does not offer, each component
    /// removed: its one-edit neighbourhood, about 25 children for `react`), so a move that
    /// helps is not left to chance when the budget allows few children. Promotions still come
    /// first, so the screen's best climb the rungs while the rest of it is raced.
    pub screen: bool,
    /// Children the screen makes of each structural move that makes parameters live (the
    /// few-shot insert wakes the scorer's `example-weight`), 1 to 16: each child draws each
    /// such parameter from its own one of this many equal parts of its range (a number; a
    /// choice or flag takes its own option), the parts in an order drawn per parameter, so a
    /// move is not judged on one unlucky draw. 1 (the default) draws once over the whole
    /// range. A run resumed with more draws than it began with races the new ones too.
    pub screen_draws: usize,
    /// Search tasks each screened child, and each seed, plays before the first promotions: one
    /// of `racing.rungs`; unset, the first rung. A structural move's effect of ten points is
    /// about one standard error on 16 paired tasks and half of one on 8 (blocks-12: the
    /// few-shot move's three draws won 5, 4 and 4 of 8 against the seed's 5, and none was
    /// promoted, where on 100 held-out tasks the move with a strong prior gains 19 points), so
    /// a larger screen rung spends more of the budget on the seed's neighbourhood to judge
    /// each move on more tasks, every one on the same tasks as the seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screen_tasks: Option<u32>,
    /// With `screen`, also race every mechanism of each seed that is switched off, switched
    /// on: each number at 0 where its range starts at 0 (the scorer's goal, repeat, revisit
    /// and undo priors and its top-k, for `react`), at `screen-draws` values above 0, one in
    /// each part of its range. The parametric operator moves a dozen parameters at random, so
    /// in a 90-minute search each is tried about twice and a prior worth 15 points on its own
    /// can go untried (blocks-16: the undo prior was moved in two children of 57). Off by
    /// default: five more moves to race at the first rung.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub screen_priors: bool,
    /// With `screen`, screen again around the search's leader: once the seeds' screen is
    /// through, each time the incumbent (the best of those with the most rungs played) has
    /// played every rung, ranks above every seed and was not screened yet, race its own
    /// one-edit neighbourhood (and, with `screen-priors`, its priors still switched off) at the
    /// first rung before anything else climbs or is bred, up to this many times in a run. The
    /// parametric operator draws one of a dozen parameters at random, so a second move that
    /// helps on top of the first is as much left to chance as the first was (blocks-17: the
    /// screened undo prior carried the whole gain; the moves bred on it after bought cost
    /// only). 0 (the default) screens the seeds alone.
    #[serde(skip_serializing_if = "is_zero")]
    pub rescreen: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The mutation operators, by the name their children carry.
pub const MUTATION_OPERATORS: [&str; 5] =
    ["structural", "parametric", "text", "adopt", "reflective"];

impl Default for PopulationOptions {
    fn default() -> Self {
        PopulationOptions {
            seeds: vec![PathBuf::from("harnesses/react.toml")],
            arms: Vec::new(),
            size: 32,
            tournament: 3,
            elites: 2,
            immigrant_rate: 0.05,
            crossover_rate: 0.2,
            jobs_in_flight: 4,
            operators: Vec::new(),
            screen: false,
            screen_draws: 1,
            screen_tasks: None,
            screen_priors: false,
            rescreen: 0,
        }
    }
}

/// Successive-halving settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RacingOptions {
    /// Tasks evaluated at each rung, increasing.
    pub rungs: Vec<u32>,
    /// Confidence of the Wilson intervals candidates are raced on.
    pub confidence: f64,
    /// At the end: how many of the best candidates are scored on the select split.
    pub finalists: usize,
    /// The seeds join the finalists on the select split, so a candidate is chosen only where
    /// it does better there than the harnesses the search started from; where none does, the
    /// chosen harness is a seed (the search found nothing better). The best of many
    /// candidates on the same search tasks is flattered by luck, and this is the check.
    pub seeds_in_select: bool,
    /// Select-split tasks per finalist.
    pub select_tasks: u32,
    /// Test-split tasks the chosen harness and each seed harness are scored on at the very
    /// end (the search never sees the test split).
    pub test_tasks: u32,
    /// In-distribution held-out tasks (the `heldout` split: unseen seeds drawn like train's)
    /// the same harnesses are scored on at the very end, beside the test split.
    pub heldout_tasks: u32,
    /// Score an equal-budget baseline beside the chosen harness on those tasks: the first
    /// seed with a `best-of` component whose episodes per task match the chosen harness's
    /// tokens per task on the search and select splits (test-time scaling at the same cost;
    /// the held-out splits are not read to set it).
    pub equal_budget: bool,
    /// Score the chosen harness with its in-task rewriting switched off (its rewrite policy
    /// removed) on those tasks too, where it has one.
    pub rewriting_off: bool,
    /// Before the held-out comparison, try the chosen harness without each component the
    /// search added to the first seed, one at a time on the same select tasks, and keep a
    /// removal where it wins as many of them at no more tokens per episode: the search
    /// compares a child only with its parent, so a component that stopped mattering once
    /// later moves came (blocks-7's worked examples, at twice the tokens) stays otherwise.
    /// Costs one select-split evaluation per such component.
    pub prune: bool,
    /// Which candidates go on to the next rung: `not-below` (all but those clearly below the
    /// incumbent: their success or progress interval lies below its, or the paired
    /// differences from it on the tasks both played have their interval below zero) or
    /// `above-median` (also stop those whose mean progress on the rung's tasks is below the
    /// median of every candidate's on the same tasks: successive halving, more candidates
    /// screened per episode).
    pub promote: Promote,
}

/// The promotion rule of racing (see [`RacingOptions::promote`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Promote {
    /// Promote unless clearly below the incumbent (separately or paired).
    #[default]
    NotBelow,
    /// Also stop those below the median on the same tasks.
    AboveMedian,
}

impl Default for RacingOptions {
    fn default() -> Self {
        RacingOptions {
            rungs: vec![4, 8, 16],
            confidence: 0.95,
            finalists: 3,
            seeds_in_select: true,
            select_tasks: 24,
            test_tasks: 100,
            heldout_tasks: 0,
            equal_budget: true,
            rewriting_off: true,
            prune: true,
            promote: Promote::NotBelow,
        }
    }
}

/// When the run stops: at the first budget reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct BudgetOptions {
    /// Search episodes, all candidates together: no job is sent once those recorded and out
    /// reach it, so a run ends within one job of it.
    pub evaluations: u64,
    /// Model tokens at most.
    pub tokens: u64,
    /// Wall time at most, e.g. `"20m"`.
    #[serde(with = "humantime_serde")]
    pub wall_time: Duration,
    /// Steps per episode at most.
    pub episode_steps: u32,
}

impl Default for BudgetOptions {
    fn default() -> Self {
        BudgetOptions {
            evaluations: 400,
            tokens: 20_000_000,
            wall_time: Duration::from_secs(3600),
            episode_steps: 40,
        }
    }
}

/// How jobs reach workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum TransportOptions {
    /// In-process workers on this machine.
    Local {
        /// How many; 0 means one per core.
        #[serde(default)]
        workers: usize,
    },
    /// Remote workers over NATS JetStream.
    Nats {
        /// The server URL, e.g. `nats://127.0.0.1:4222` or `tls://...`.
        url: String,
        /// How to authenticate.
        #[serde(default)]
        auth: NatsAuth,
        /// TLS files, if the server needs them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<TlsOptions>,
        /// How long a job may go without word from its worker (workers report progress
        /// every third of this while they run it) before it is given to another.
        #[serde(default = "default_ack_wait", with = "humantime_serde")]
        ack_wait: Duration,
        /// Deliveries of one job before it is dead-lettered and counted as failed.
        #[serde(default = "default_max_deliver")]
        max_deliver: u32,
    },
}

fn default_ack_wait() -> Duration {
    Duration::from_secs(60)
}

fn default_max_deliver() -> u32 {
    5
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions::Local { workers: 0 }
    }
}

/// NATS credentials. Secrets are never written in configs: they come from environment
/// variables or files named here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "method",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum NatsAuth {
    /// No authentication.
    #[default]
    None,
    /// User and password.
    UserPassword {
        /// The user.
        user: String,
        /// Environment variable holding the password.
        password_env: String,
    },
    /// A token.
    Token {
        /// Environment variable holding the token.
        token_env: String,
    },
    /// An NKey seed file.
    Nkey {
        /// The seed file.
        seed_file: PathBuf,
    },
    /// A `.creds` file (JWT and seed).
    Creds {
        /// The file.
        file: PathBuf,
    },
}

/// TLS for the NATS connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct TlsOptions {
    /// CA certificate to trust.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Client certificate, with `key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Client key, with `cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// A worker on a GPU box: what `hx-worker --config` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WorkerOptions {
    /// Name shown in `hx status`; default: host name and process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// NATS URL.
    pub nats: String,
    /// NATS credentials.
    #[serde(default)]
    pub auth: NatsAuth,
    /// TLS files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
    /// The model backend.
    #[serde(default, deserialize_with = "model_section")]
    pub model: ModelOptions,
    /// Episodes run at once, per job.
    #[serde(default = "default_worker_concurrency")]
    pub concurrency: usize,
    /// Jobs held at once (their episodes share the model, which batches them).
    #[serde(default = "default_worker_jobs")]
    pub jobs: u32,
    /// Adapters for suites hx does not generate itself, by suite name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub adapters: BTreeMap<String, AdapterOptions>,
    /// The model this worker asks for reflective mutations (`[proposer]`, a table like
    /// `[model]`); default: its agents' model. The experiment's `[proposer]` section says
    /// how often and how it is asked.
    #[serde(
        default,
        deserialize_with = "optional_model_section",
        skip_serializing_if = "Option::is_none"
    )]
    pub proposer: Option<ModelOptions>,
}

fn default_worker_concurrency() -> usize {
    8
}

fn default_worker_jobs() -> u32 {
    2
}

/// One broken config rule: the key and what it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `population.size`.
    pub key: String,
    /// The rule, e.g. `must be at least 2 (got 0)`.
    pub rule: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.rule)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("{origin}: {message}")]
    Parse {
        /// The file, with `(with overrides)` if any applied.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// An override has a malformed key.
    #[error("override {0:?}: keys are dotted paths such as population.size")]
    Override(String),
    /// Values break rules.
    #[error("{origin}: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The file.
        origin: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// A config-file override: a dotted key and a TOML value (a bare word is taken as a string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Dotted key, e.g. `population.size`.
    pub key: String,
    /// The value as written, e.g. `8` or `"runs/x"` or `nats`.
    pub value: String,
}

impl Override {
    /// Parses `key=value`.
    pub fn parse(s: &str) -> Result<Override, Error> {
        let (key, value) = s.split_once('=').ok_or_else(|| Error::Override(s.into()))?;
        Ok(Override {
            key: key.trim().to_owned(),
            value: value.trim().to_owned(),
        })
    }

    /// The overrides the environment holds: `HX__SECTION__KEY=value` sets `section.key`, with
    /// `_` read as `-` (`HX__BUDGET__WALL_TIME` sets `budget.wall-time`).
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Override> {
        let mut out: Vec<_> = vars
            .into_iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(ENV_PREFIX)?;
                let key = rest
                    .split("__")
                    .map(|part| part.to_ascii_lowercase().replace('_', "-"))
                    .collect::<Vec<_>>()
                    .join(".");
                Some(Override { key, value: v })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    fn apply(&self, table: &mut toml::Table) -> Result<(), Error> {
        let parts: Vec<&str> = self.key.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(Error::Override(self.key.clone()));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {}", self.value))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(self.value.clone()));
        let (last, path) = parts.split_last().expect("split never yields nothing");
        let mut at = table;
        for p in path {
            let entry = at
                .entry((*p).to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            at = entry
                .as_table_mut()
                .ok_or_else(|| Error::Override(self.key.clone()))?;
        }
        at.insert((*last).to_owned(), value);
        Ok(())
    }
}

/// Reads a TOML file into `T`, applying overrides in order; errors name the file and key.
pub fn load_toml<T: DeserializeOwned>(path: &Path, overrides: &[Override]) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|cause| Error::Io {
        path: path.to_owned(),
        cause,
    })?;
    parse_toml(&text, &path.display().to_string(), overrides)
}

/// Parses TOML text into `T`, applying overrides in order; `origin` names the source in errors.
pub fn parse_toml<T: DeserializeOwned>(
    text: &str,
    origin: &str,
    overrides: &[Override],
) -> Result<T, Error> {
    let parse_err = |origin: &str, e: toml::de::Error| Error::Parse {
        origin: origin.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    };
    if overrides.is_empty() {
        // Straight from the text, so errors point at the line.
        return toml::from_str(text).map_err(|e| parse_err(origin, e));
    }
    let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_err(origin, e))?;
    for o in overrides {
        o.apply(&mut table)?;
    }
    let with = format!("{origin} (with overrides)");
    T::deserialize(toml::Value::Table(table)).map_err(|e| parse_err(&with, e))
}

/// Collects problems with their keys.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn check(&mut self, ok: bool, key: impl Into<String>, rule: impl Into<String>) {
        if !ok {
            self.0.push(Problem {
                key: key.into(),
                rule: rule.into(),
            });
        }
    }

    fn range<T: PartialOrd + fmt::Display>(&mut self, key: &str, v: T, min: T, max: T) {
        self.check(
            v >= min && v <= max,
            key,
            format!("must be between {min} and {max} (got {v})"),
        );
    }

    fn finish(self, origin: &str) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid {
                origin: origin.to_owned(),
                problems: self.0,
            })
        }
    }
}

fn check_model(p: &mut Problems, key: &str, m: &ModelOptions) {
    match m {
        ModelOptions::Embedded {
            threads, context, ..
        } => {
            p.range(&format!("{key}.threads"), *threads, 0, 256);
            p.range(&format!("{key}.context"), *context, 256, 131_072);
        }
        ModelOptions::Openai {
            base_url,
            model,
            api_key_env,
            max_concurrency,
            timeout,
        } => {
            p.check(
                base_url.starts_with("http://") || base_url.starts_with("https://"),
                format!("{key}.base-url"),
                format!("must start with http:// or https:// (got {base_url:?})"),
            );
            p.check(
                !model.is_empty(),
                format!("{key}.model"),
                "must not be empty",
            );
            if let Some(var) = api_key_env {
                check_env_name(p, &format!("{key}.api-key-env"), var);
            }
            p.range(&format!("{key}.max-concurrency"), *max_concurrency, 1, 4096);
            p.check(
                *timeout >= Duration::from_secs(1),
                format!("{key}.timeout"),
                "must be at least 1s",
            );
        }
    }
}

fn check_env_name(p: &mut Problems, key: &str, var: &str) {
    p.check(
        !var.is_empty()
            && var
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
        key,
        format!("must name an environment variable in A-Z, 0-9 and '_' (got {var:?})"),
    );
}

/// Joins a section prefix and a key: `("transport", "url")` is `transport.url`, and an empty
/// prefix leaves the key alone (worker files keep NATS settings at the top level).
fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn check_nats(
    p: &mut Problems,
    prefix: &str,
    url_key: &str,
    url: &str,
    auth: &NatsAuth,
    tls: Option<&TlsOptions>,
) {
    p.check(
        ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|s| url.starts_with(s)),
        join(prefix, url_key),
        format!("must start with nats://, tls://, ws:// or wss:// (got {url:?})"),
    );
    match auth {
        NatsAuth::None | NatsAuth::Nkey { .. } | NatsAuth::Creds { .. } => {}
        NatsAuth::UserPassword { user, password_env } => {
            p.check(
                !user.is_empty(),
                join(prefix, "auth.user"),
                "must not be empty",
            );
            check_env_name(p, &join(prefix, "auth.password-env"), password_env);
        }
        NatsAuth::Token { token_env } => {
            check_env_name(p, &join(prefix, "auth.token-env"), token_env);
        }
    }
    if let Some(tls) = tls {
        p.check(
            tls.cert.is_some() == tls.key.is_some(),
            join(prefix, "tls"),
            "cert and key must be given together",
        );
    }
}

impl Experiment {
    /// Loads and validates an experiment file. Overrides apply after the file.
    pub fn load(path: &Path, overrides: &[Override]) -> Result<Experiment, Error> {
        let exp: Experiment = load_toml(path, overrides)?;
        exp.validate(&path.display().to_string())?;
        Ok(exp)
    }

    /// Checks every value against its rule; names each key at fault.
    pub fn validate(&self, origin: &str) -> Result<(), Error> {
        let mut p = Problems::default();
        if let Err(rule) = check_run_name(&self.run.name) {
            p.check(false, "run.name", rule);
        }
        if let Some(addr) = &self.run.serve {
            p.check(
                addr.parse::<std::net::SocketAddr>().is_ok(),
                "run.serve",
                format!("{addr:?} is not an address with a port, e.g. 127.0.0.1:9464"),
            );
        }

        p.check(
            !self.suites.is_empty(),
            "suites",
            "must list at least one suite",
        );
        for (i, s) in self.suites.iter().enumerate() {
            let key = |k: &str| format!("suites[{i}].{k}");
            if let Err(e) = check_suite_name(&s.name) {
                p.check(false, key("name"), e.to_string());
            }
            for (k, split) in [
                ("search-split", s.search_split),
                ("select-split", s.select_split),
            ] {
                p.check(
                    !matches!(split, Split::Test | Split::Heldout),
                    key(k),
                    format!("must not be {split}: the {split} split is held out until the end"),
                );
            }
            p.check(
                s.weight.is_finite() && s.weight > 0.0,
                key("weight"),
                format!("must be a positive number (got {})", s.weight),
            );
            if let Some(a) = &s.adapter {
                check_adapter(&mut p, &key("adapter"), a);
            }
            p.check(
                self.suites[..i].iter().all(|o| o.name != s.name),
                key("name"),
                format!("suite {:?} is listed twice", s.name),
            );
        }

        check_model(&mut p, "model", &self.model);
        if let Some(pr) = &self.proposer {
            if let Some(m) = &pr.model {
                check_model(&mut p, "proposer.model", m);
            }
            p.range("proposer.proposals", pr.proposals, 1, 16);
            p.range("proposer.temperature", pr.temperature, 0.0, 2.0);
            p.range("proposer.max-tokens", pr.max_tokens, 32, 32_768);
            p.range("proposer.max-gates", pr.max_gates, 1, 16);
            p.range("proposer.token-budget", pr.token_budget, 1, u64::MAX);
        }

        let pop = &self.population;
        p.check(
            !pop.seeds.is_empty(),
            "population.seeds",
            "must list at least one seed harness file",
        );
        p.range("population.size", pop.size, 2, 100_000);
        p.range("population.tournament", pop.tournament, 1, 64);
        p.check(
            pop.tournament <= pop.size,
            "population.tournament",
            format!("must not exceed population.size ({})", pop.size),
        );
        p.check(
            pop.elites < pop.size,
            "population.elites",
            format!("must be less than population.size ({})", pop.size),
        );
        p.range("population.immigrant-rate", pop.immigrant_rate, 0.0, 1.0);
        p.range("population.crossover-rate", pop.crossover_rate, 0.0, 1.0);
        p.range("population.jobs-in-flight", pop.jobs_in_flight, 1, 100_000);
        p.range("population.screen-draws", pop.screen_draws, 1, 16);
        for (i, op) in pop.operators.iter().enumerate() {
            p.check(
                MUTATION_OPERATORS.contains(&op.as_str()),
                format!("population.operators[{i}]"),
                format!(
                    "{op:?} is not a mutation operator (one of {})",
                    MUTATION_OPERATORS.join(", ")
                ),
            );
        }
        p.check(
            !pop.operators.iter().any(|o| o == "reflective") || self.proposer.is_some(),
            "population.operators",
            "lists \"reflective\", which needs a [proposer] section",
        );

        let r = &self.racing;
        p.check(
            !r.rungs.is_empty(),
            "racing.rungs",
            "must list at least one rung",
        );
        p.check(
            r.rungs.first().is_none_or(|&n| n >= 1) && r.rungs.windows(2).all(|w| w[0] < w[1]),
            "racing.rungs",
            format!(
                "must be increasing task counts of at least 1 (got {:?})",
                r.rungs
            ),
        );
        p.range("racing.confidence", r.confidence, 0.5, 0.999);
        p.range("racing.finalists", r.finalists, 1, 1000);
        p.range("racing.select-tasks", r.select_tasks, 1, 100_000);
        p.range("racing.test-tasks", r.test_tasks, 0, 100_000);
        p.range("racing.heldout-tasks", r.heldout_tasks, 0, 100_000);
        p.check(
            pop.screen || !pop.screen_priors,
            "population.screen-priors",
            "has no effect without population.screen = true",
        );
        p.check(
            pop.screen || pop.rescreen == 0,
            "population.rescreen",
            "has no effect without population.screen = true",
        );
        p.range("population.rescreen", pop.rescreen, 0, 64);
        if let Some(n) = pop.screen_tasks {
            p.check(
                r.rungs.contains(&n),
                "population.screen-tasks",
                format!("must be one of racing.rungs {:?} (got {n})", r.rungs),
            );
            p.check(
                pop.screen,
                "population.screen-tasks",
                "has no effect without population.screen = true",
            );
        }

        let b = &self.budget;
        p.check(
            b.evaluations >= 1,
            "budget.evaluations",
            "must be at least 1",
        );
        p.check(b.tokens >= 1, "budget.tokens", "must be at least 1");
        p.check(
            b.wall_time >= Duration::from_secs(1),
            "budget.wall-time",
            "must be at least 1s",
        );
        p.range("budget.episode-steps", b.episode_steps, 1, 1000);

        match &self.transport {
            TransportOptions::Local { workers } => {
                p.range("transport.workers", *workers, 0, 1024);
            }
            TransportOptions::Nats {
                url,
                auth,
                tls,
                ack_wait,
                max_deliver,
            } => {
                check_nats(&mut p, "transport", "url", url, auth, tls.as_ref());
                p.check(
                    *ack_wait >= Duration::from_secs(1) && *ack_wait <= Duration::from_secs(3600),
                    "transport.ack-wait",
                    "must be between 1s and 1h",
                );
                p.range("transport.max-deliver", *max_deliver, 1, 100);
            }
        }
        p.finish(origin)
    }

    /// Seed harness paths, resolved against the directory of the config file at `config`.
    pub fn seed_paths(&self, config: &Path) -> Vec<PathBuf> {
        let base = config.parent().unwrap_or(Path::new("."));
        self.population.seeds.iter().map(|s| base.join(s)).collect()
    }

    /// Comparison-arm paths, resolved as [`Experiment::seed_paths`] are.
    pub fn arm_paths(&self, config: &Path) -> Vec<PathBuf> {
        let base = config.parent().unwrap_or(Path::new("."));
        self.population.arms.iter().map(|s| base.join(s)).collect()
    }
}

impl WorkerOptions {
    /// Loads and validates a worker file. Overrides apply after the file.
    pub fn load(path: &Path, overrides: &[Override]) -> Result<WorkerOptions, Error> {
        let w: WorkerOptions = load_toml(path, overrides)?;
        w.validate(&path.display().to_string())?;
        Ok(w)
    }

    /// Checks every value against its rule; names each key at fault.
    pub fn validate(&self, origin: &str) -> Result<(), Error> {
        let mut p = Problems::default();
        if let Some(id) = &self.id {
            p.check(
                !id.is_empty() && id.len() <= 64 && !id.chars().any(char::is_whitespace),
                "id",
                "must be 1 to 64 characters without spaces",
            );
        }
        check_nats(
            &mut p,
            "",
            "nats",
            &self.nats,
            &self.auth,
            self.tls.as_ref(),
        );
        check_model(&mut p, "model", &self.model);
        if let Some(m) = &self.proposer {
            check_model(&mut p, "proposer", m);
        }
        for (suite, a) in &self.adapters {
            if let Err(e) = check_suite_name(suite) {
                p.check(false, format!("adapters.{suite}"), e.to_string());
            }
            check_adapter(&mut p, &format!("adapters.{suite}"), a);
        }
        p.range("concurrency", self.concurrency, 1, 4096);
        p.range("jobs", self.jobs, 1, 1024);
        p.finish(origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[run]\nname = \"t\"\n";

    fn parse(text: &str, overrides: &[Override]) -> Result<Experiment, Error> {
        let e: Experiment = parse_toml(text, "t.toml", overrides)?;
        e.validate("t.toml")?;
        Ok(e)
    }

    #[test]
    fn defaults_fill_a_minimal_file() {
        let e = parse(MINIMAL, &[]).expect("valid");
        assert_eq!(e.population, PopulationOptions::default());
        assert_eq!(e.transport, TransportOptions::Local { workers: 0 });
        assert_eq!(e.run.store_path(), Path::new("runs/t"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = format!("{MINIMAL}[population]\npopsize = 3\n");
        let msg = parse(&text, &[]).expect_err("unknown key").to_string();
        assert!(
            msg.contains("popsize") && msg.starts_with("t.toml"),
            "{msg}"
        );

        let text = format!(
            "{MINIMAL}[model]\nbackend = \"openai\"\nbase-url = \"http://x/v1\"\nmodel = \"m\"\ntemperature = 1\n"
        );
        let msg = parse(&text, &[])
            .expect_err("unknown key in a tagged section")
            .to_string();
        assert!(msg.contains("temperature"), "{msg}");
    }

    #[test]
    fn adapters_are_checked_and_suites_listed_once() {
        let text = format!(
            "{MINIMAL}[[suites]]\nname = \"vault\"\nadapter = {{ command = [\"python3\", \"vault.py\"], timeout = \"5s\" }}\n"
        );
        let e = parse(&text, &[]).expect("valid");
        let a = e.suites[0].adapter.as_ref().expect("an adapter");
        assert_eq!(a.timeout, Duration::from_secs(5));
        assert_eq!(a.step_limit, 50);

        let text = format!(
            "{MINIMAL}[[suites]]\nname = \"vault\"\nadapter = {{ command = [] }}\n[[suites]]\nname = \"vault\"\n"
        );
        let msg = parse(&text, &[]).expect_err("invalid").to_string();
        assert!(
            msg.contains("suites[0].adapter.command: must name a program"),
            "{msg}"
        );
        assert!(
            msg.contains("suites[1].name: suite \"vault\" is listed twice"),
            "{msg}"
        );
    }

    #[test]
    fn out_of_range_values_are_named() {
        let text = format!("{MINIMAL}[population]\nsize = 1\n[racing]\nrungs = [8, 4]\n");
        let msg = parse(&text, &[]).expect_err("invalid").to_string();
        assert!(
            msg.contains("population.size: must be between 2 and 100000 (got 1)"),
            "{msg}"
        );
        assert!(msg.contains("racing.rungs"), "{msg}");

        let text = format!("{MINIMAL}[population]\nscreen-tasks = 16\n[racing]\nrungs = [8, 16]\n");
        let msg = parse(&text, &[]).expect_err("no screen").to_string();
        assert!(
            msg.contains("population.screen-tasks: has no effect without population.screen"),
            "{msg}"
        );
        let text = format!("{MINIMAL}[population]\nscreen-priors = true\n");
        let msg = parse(&text, &[]).expect_err("no screen").to_string();
        assert!(
            msg.contains("population.screen-priors: has no effect without population.screen"),
            "{msg}"
        );
        let text = format!("{MINIMAL}[population]\nscreen = true\nscreen-priors = true\n");
        assert!(parse(&text, &[]).expect("valid").population.screen_priors);
        let text = format!("{MINIMAL}[population]\nrescreen = 2\n");
        let msg = parse(&text, &[]).expect_err("no screen").to_string();
        assert!(
            msg.contains("population.rescreen: has no effect without population.screen"),
            "{msg}"
        );
        let text = format!("{MINIMAL}[population]\nscreen = true\nrescreen = 2\n");
        assert_eq!(parse(&text, &[]).expect("valid").population.rescreen, 2);
        let text = format!(
            "{MINIMAL}[population]\nscreen = true\nscreen-tasks = 12\n[racing]\nrungs = [8, 16]\n"
        );
        let msg = parse(&text, &[]).expect_err("not a rung").to_string();
        assert!(
            msg.contains("population.screen-tasks: must be one of racing.rungs [8, 16] (got 12)"),
            "{msg}"
        );
        let text = format!(
            "{MINIMAL}[population]\nscreen = true\nscreen-tasks = 16\n[racing]\nrungs = [8, 16]\n"
        );
        assert_eq!(
            parse(&text, &[]).expect("a rung").population.screen_tasks,
            Some(16)
        );
    }

    #[test]
    fn env_and_cli_overrides_apply_in_order() {
        let env = Override::from_env([
            ("HX__POPULATION__SIZE".to_owned(), "9".to_owned()),
            ("HX__BUDGET__WALL_TIME".to_owned(), "5m".to_owned()),
            ("HX_CONFIG".to_owned(), "ignored".to_owned()),
        ]);
        assert_eq!(env.len(), 2);
        let mut all = env;
        all.push(Override::parse("population.size=12").expect("parses"));
        let e = parse(MINIMAL, &all).expect("valid");
        assert_eq!(e.population.size, 12);
        assert_eq!(e.budget.wall_time, Duration::from_secs(300));

        let bad = [Override::parse("population.size=0").expect("parses")];
        let msg = parse(MINIMAL, &bad).expect_err("out of range").to_string();
        assert!(msg.contains("population.size"), "{msg}");
    }

    #[test]
    fn the_test_split_cannot_be_searched() {
        let text = format!("{MINIMAL}[[suites]]\nname = \"household\"\nsearch-split = \"test\"\n");
        let msg = parse(&text, &[]).expect_err("held out").to_string();
        assert!(msg.contains("suites[0].search-split"), "{msg}");
        let text =
            format!("{MINIMAL}[[suites]]\nname = \"household\"\nselect-split = \"heldout\"\n");
        let msg = parse(&text, &[]).expect_err("held out").to_string();
        assert!(
            msg.contains("suites[0].select-split") && msg.contains("must not be heldout"),
            "{msg}"
        );
    }

    #[test]
    fn a_partial_model_section_keeps_the_defaults() {
        // `hx worker --nats ... --set model.threads=1`, no file: the embedded default, one thread.
        let sets = [
            Override::parse("nats=\"nats://127.0.0.1:4222\"").expect("parses"),
            Override::parse("model.threads=1").expect("parses"),
        ];
        let w: WorkerOptions = parse_toml("", "command line", &sets).expect("parses");
        assert_eq!(
            w.model,
            ModelOptions::Embedded {
                gguf: None,
                threads: 1,
                context: default_context(),
            }
        );
        // A file's [model] without a backend is the embedded one too.
        let text = format!("{MINIMAL}[model]\nthreads = 3\n");
        let e = parse(&text, &[]).expect("parses");
        assert!(
            matches!(e.model, ModelOptions::Embedded { threads: 3, .. }),
            "{:?}",
            e.model
        );
        // A misspelt key in the section is still an error that names it.
        let text = format!("{MINIMAL}[model]\nthread = 3\n");
        let msg = parse(&text, &[]).expect_err("unknown key").to_string();
        assert!(msg.contains("thread"), "{msg}");
    }

    #[test]
    fn the_model_section_loads_alone_from_a_worker_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.toml");
        // No `nats` line: `hx run -c` needs only the model.
        std::fs::write(&path, "[model]\nbackend = \"embedded\"\nthreads = 2\n").expect("writes");
        let m = ModelOptions::load(&path, &[]).expect("loads");
        assert!(
            matches!(m, ModelOptions::Embedded { threads: 2, .. }),
            "{m:?}"
        );
        std::fs::write(&path, "[model]\nthreads = 9999\n").expect("writes");
        let msg = ModelOptions::load(&path, &[])
            .expect_err("out of range")
            .to_string();
        assert!(
            msg.contains("model.threads") && msg.contains("w.toml"),
            "{msg}"
        );
        std::fs::write(&path, "nats = \"nats://x:4222\"\n").expect("writes");
        assert_eq!(
            ModelOptions::load(&path, &[]).expect("defaults"),
            ModelOptions::default()
        );
    }

    #[test]
    fn nats_transport_checks_its_auth() {
        let text = format!(
            "{MINIMAL}[transport]\nkind = \"nats\"\nurl = \"http://x\"\nauth = {{ method = \"token\", token-env = \"lower\" }}\n"
        );
        let msg = parse(&text, &[]).expect_err("bad").to_string();
        assert!(msg.contains("transport.url"), "{msg}");
        assert!(msg.contains("transport.auth.token-env"), "{msg}");
    }
}
