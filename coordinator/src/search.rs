//! The evolutionary search: a steady-state, asynchronous loop over a [`JobBus`].
//!
//! - **Scheduler**: keeps at most `population.jobs-in-flight` jobs out and refills as results
//!   arrive; there is no generation barrier, so slow and fast workers mix.
//! - **Fitness** ([`Fitness`]) is success on the search split with a Wilson interval, mean
//!   progress (the suites' partial scores, 1 for a won episode) with a t interval, and tokens
//!   per episode. Candidates are ranked by success's lower bound, then progress's lower bound,
//!   then cost, so a lucky streak on few tasks does not outrank a well-measured harness, and
//!   candidates that all fail are still told apart by how far they get.
//! - **Racing** by successive halving: a child is evaluated on the first rung's tasks; it gets
//!   the next rung's tasks unless it is clearly below the incumbent: its success interval
//!   lies below the incumbent's, or the two overlap and its progress interval does. Every
//!   candidate is evaluated on the same seeds at each rung (common random numbers), and an
//!   evaluation is keyed by harness id and task, so no pair is ever run twice.
//! - **Selection**: tournaments over a MAP-Elites archive (harness size x tokens per step)
//!   plus the elites; immigrants from the seed harnesses now and then.
//! - **Variation**: structural, parametric, model-guided text mutation, adoption of in-task
//!   rewrites that were kept, and crossover by role ([`hx_common::harness::mutate`]). Children of the
//!   operators that need no model are made here, so a known child costs nothing.
//! - **Budgets**: episodes, tokens and wall time; at the first reached the loop stops sending
//!   work, collects what is in flight, and ends.
//! - **End**: the best candidates are scored on the select split; the best of those, and every
//!   seed harness for comparison, on the test split, which nothing before this touches.
//!
//! Everything is recorded in the [`Store`] before it is acted on; `--resume` rebuilds the
//! state from the store and sends again only the jobs that had no answer.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use hx_common::config::Experiment;
use hx_common::harness::catalog::Kind;
use hx_common::harness::mutate::Child;
use hx_common::harness::{Harness, HarnessId};
use hx_common::protocol::{
    self, Job, JobBudget, JobId, JobKind, JobResult, JobStatus, MutationOp, MutationSpec,
    RewriteRecord, TaskOutcome, WorkerBeat,
};
use hx_common::stats::{Mean, Rate};
use hx_common::task::{Split, TaskBatch, TaskRef};
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::bus::{Delivery, JobBus};
use crate::store::{Answer, JobRecord, JobState, Lineage, Store, Writes};

/// What the search learned from a harness's episodes, for its children.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Feedback {
    /// The failure digest of its latest evaluation.
    pub digest: String,
    /// In-task rewrites that were kept, from episodes it won.
    pub helpful: Vec<RewriteRecord>,
    /// Model tokens and steps over its search episodes.
    pub tokens: u64,
    /// Steps over its search episodes.
    pub steps: u64,
}

/// One candidate as the search tracks it.
#[derive(Debug, Clone)]
struct Cand {
    harness: Harness,
    /// Outcomes on the search split.
    search: BTreeMap<u64, TaskOutcome>,
    /// A job for it is out.
    busy: bool,
    feedback: Feedback,
    operator: String,
    /// The harnesses it was made from (none for seeds).
    parents: Vec<HarnessId>,
    /// The racing confidence.
    confidence: f64,
}

impl Cand {
    /// Success, progress and cost on the search split, with racing's intervals.
    fn fitness(&self) -> Fitness {
        Fitness::of(self.search.values(), self.confidence)
    }
    fn tokens_per_step(&self) -> f64 {
        self.feedback.tokens as f64 / self.feedback.steps.max(1) as f64
    }
}

/// What racing and selection compare: success first, progress where success cannot tell two
/// candidates apart, then cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fitness {
    /// Episodes won, with the Wilson interval.
    pub success: Rate,
    /// Mean progress (the world's partial score; 1 for a won episode), with the t interval
    /// ([`Mean`] says why t).
    pub progress: Mean,
    /// Model tokens per episode.
    pub tokens: f64,
}

impl Fitness {
    /// The fitness of `outcomes` with intervals at `confidence`.
    pub fn of<'o>(outcomes: impl IntoIterator<Item = &'o TaskOutcome>, confidence: f64) -> Fitness {
        let (mut won, mut tokens, mut scores) = (0u64, 0u64, Vec::new());
        for o in outcomes {
            won += u64::from(o.won);
            tokens += o.tokens;
            scores.push(if o.won { 1.0 } else { f64::from(o.score) });
        }
        let n = scores.len() as u64;
        let z = hx_common::stats::normal_quantile(0.5 + confidence / 2.0);
        Fitness {
            success: Rate::wilson(won, n, z),
            progress: Mean::t(&scores, confidence),
            tokens: tokens as f64 / n.max(1) as f64,
        }
    }

    /// The ranking, a total order: success's lower bound, then progress's lower bound, then
    /// mean progress, then fewer tokens per episode. `Greater` is better.
    pub fn rank(&self, other: &Fitness) -> Ordering {
        self.success
            .low
            .total_cmp(&other.success.low)
            .then(self.progress.low.total_cmp(&other.progress.low))
            .then(self.progress.mean.total_cmp(&other.progress.mean))
            .then(other.tokens.total_cmp(&self.tokens))
    }

    /// Whether this is clearly worse than `other`: its success interval lies below the
    /// other's, or the success intervals overlap and its progress interval lies below.
    pub fn clearly_below(&self, other: &Fitness) -> bool {
        let overlap =
            self.success.high >= other.success.low && other.success.high >= self.success.low;
        self.success.high < other.success.low
            || (overlap && self.progress.high < other.progress.low)
    }
}

/// Whether `mine` is clearly worse than `theirs` on the search tasks both played: the mean of
/// the paired differences of progress (1 for a win) has its t interval at `confidence` below
/// zero. Every candidate plays the same seeds (common random numbers), so the pairs cancel
/// the tasks' own difficulty, which two separate intervals cannot: on 24 blocks tasks a
/// repeat penalty was +20.8 points over `react` paired, [+3.3, +38.4], while the two success
/// intervals overlapped (BENCHMARKS.md, the ablation).
pub fn paired_below(
    mine: &BTreeMap<u64, TaskOutcome>,
    theirs: &BTreeMap<u64, TaskOutcome>,
    confidence: f64,
) -> bool {
    let value = |o: &TaskOutcome| if o.won { 1.0 } else { f64::from(o.score) };
    let diffs: Vec<f64> = mine
        .iter()
        .filter_map(|(s, a)| theirs.get(s).map(|b| value(a) - value(b)))
        .collect();
    diffs.len() >= 2 && hx_common::stats::Diff::t(&diffs, confidence).high < 0.0
}

/// The end of a run, as recorded in the store's `final` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Final {
    /// The chosen harness.
    pub best: Option<HarnessId>,
    /// Finalists' success on the select split.
    pub select: Vec<(HarnessId, Rate)>,
    /// Test-split success of the chosen harness and of every seed harness.
    pub test: Vec<(HarnessId, Rate)>,
    /// Finalists' mean progress on the select split (95% t intervals).
    #[serde(default)]
    pub select_progress: Vec<(HarnessId, Mean)>,
    /// Mean progress on the test split, in `test`'s order.
    #[serde(default)]
    pub test_progress: Vec<(HarnessId, Mean)>,
    /// Success on the in-distribution held-out split (`racing.heldout-tasks`), for the same
    /// harnesses as `test`.
    #[serde(default)]
    pub heldout: Vec<(HarnessId, Rate)>,
    /// Mean progress on the held-out split, in `heldout`'s order.
    #[serde(default)]
    pub heldout_progress: Vec<(HarnessId, Mean)>,
    /// What each harness of the final stage is: `chosen`, `seed`, `arm`, `floor` (the random
    /// admissible agent among the arms), the equal-budget baseline, the chosen harness with
    /// rewriting off.
    #[serde(default)]
    pub roles: Vec<(HarnessId, String)>,
    /// What a harness scored on the select split alone is where it is no finalist: a
    /// removal pruning tried ([`PRUNE_TRIAL`]), the choice before pruning
    /// ([`CHOSEN_BEFORE_PRUNING`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub select_roles: Vec<(HarnessId, String)>,
    /// Model tokens per task on the test split, in `test`'s order (the equal-budget
    /// baseline's match with the chosen harness is read here).
    #[serde(default)]
    pub test_tokens: Vec<(HarnessId, f64)>,
    /// Model tokens per task on the held-out split, in `heldout`'s order.
    #[serde(default)]
    pub heldout_tokens: Vec<(HarnessId, f64)>,
}

impl Final {
    /// What the harness is in the final stage (`finalist` where nothing else is said).
    pub fn role(&self, id: &HarnessId) -> &str {
        self.roles
            .iter()
            .chain(&self.select_roles)
            .find(|(h, _)| h == id)
            .map_or("finalist", |(_, r)| r.as_str())
    }
}

/// The chosen harness minus another on the same tasks of one split (common random numbers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// The split.
    pub split: Split,
    /// The harness compared with.
    pub other: HarnessId,
    /// Success (1 or 0 per task), chosen minus other, with its 95% t interval.
    pub success: hx_common::stats::Diff,
    /// Final progress, chosen minus other, with its 95% t interval.
    pub progress: hx_common::stats::Diff,
}

/// Paired differences of the chosen harness against every other harness the final stage
/// scored on the test and heldout splits, over the tasks both played, read from the store.
pub fn paired(store: &Store, fin: &Final) -> Result<Vec<Paired>> {
    let Some(best) = fin.best else {
        return Ok(Vec::new());
    };
    let on = |id: &HarnessId, split: Split| -> Result<BTreeMap<TaskRef, TaskOutcome>> {
        Ok(store
            .evaluations(id)?
            .into_iter()
            .filter(|o| o.task.split == split)
            .map(|o| (o.task.clone(), o))
            .collect())
    };
    let mut out = Vec::new();
    for (split, scored) in [(Split::Test, &fin.test), (Split::Heldout, &fin.heldout)] {
        let mine = on(&best, split)?;
        for (other, _) in scored.iter().filter(|(id, _)| *id != best) {
            let theirs = on(other, split)?;
            let pairs: Vec<(&TaskOutcome, &TaskOutcome)> = mine
                .iter()
                .filter_map(|(t, a)| theirs.get(t).map(|b| (a, b)))
                .collect();
            let diff = |f: &dyn Fn(&TaskOutcome) -> f64| {
                hx_common::stats::Diff::t95(
                    &pairs.iter().map(|(a, b)| f(a) - f(b)).collect::<Vec<_>>(),
                )
            };
            out.push(Paired {
                split,
                other: *other,
                success: diff(&|o| f64::from(u8::from(o.won))),
                progress: diff(&|o| f64::from(o.score)),
            });
        }
    }
    Ok(out)
}

/// A live view of the run, written to `status.json` beside the store after every answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    /// The run's name.
    pub run: String,
    /// `searching`, `final` or `done`.
    pub phase: String,
    /// Episodes recorded in the search, and the budget.
    pub evaluations: u64,
    /// The budget of episodes.
    pub evaluation_budget: u64,
    /// Model tokens so far.
    pub tokens: u64,
    /// Seconds of search so far (over every resumption).
    pub elapsed_s: f64,
    /// Jobs out now.
    pub in_flight: usize,
    /// Workers alive.
    pub workers: usize,
    /// What the live workers last reported (distributed runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_beats: Vec<WorkerBeat>,
    /// Harnesses evaluated.
    pub candidates: usize,
    /// Children refused as invalid.
    pub invalid_children: u64,
    /// Children that were already known (their work was skipped).
    pub cache_hits: u64,
    /// Candidates that played exactly as another on their first rung, so were not raced
    /// further ([`Search::clone_of`]).
    #[serde(default)]
    pub clones: usize,
    /// Episodes run, against what evaluating every candidate on every rung would have cost.
    pub episodes_run: u64,
    /// See `episodes_run`.
    pub episodes_without_racing: u64,
    /// The best candidate by the ranking ([`Fitness::rank`]).
    pub best: Option<(HarnessId, Rate)>,
    /// The best candidate's mean progress.
    #[serde(default)]
    pub best_progress: Option<Mean>,
    /// The median success of candidates.
    pub median: f64,
    /// The median of candidates' mean progress.
    #[serde(default)]
    pub median_progress: f64,
    /// Best and median over time: (seconds, best, median).
    pub history: Vec<(f64, f64, f64)>,
    /// What each variation operator has made, and how often it beat its parent.
    #[serde(default)]
    pub operators: Vec<OperatorStat>,
    /// What moving each parameter did, for the parameters parametric children have moved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamStat>,
    /// Why the search stopped, once it has.
    pub stopped: Option<String>,
    /// The end of the run, once there.
    pub final_: Option<Final>,
    /// The final stage's held-out comparison as far as it has got, while it runs (on a small
    /// machine it takes hours, over several resumptions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_so_far: Option<Final>,
    /// The chosen harness against each other one in `final_so_far`, on the tasks both have
    /// played so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paired_so_far: Vec<Paired>,
    /// The final stage's step now running (select, heldout or test split) and how far it has
    /// got, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageProgress>,
}

/// How far one step of the final stage has got: `harnesses` each on `tasks` tasks of `split`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageProgress {
    /// The split being played.
    pub split: Split,
    /// Harnesses scored on it.
    pub harnesses: usize,
    /// Tasks each.
    pub tasks: u32,
    /// Episodes recorded so far (of `harnesses * tasks`).
    pub done: u64,
}

impl std::fmt::Display for StageProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} split {} of {} episodes ({} harnesses x {} tasks)",
            self.split,
            self.done,
            self.harnesses as u64 * u64::from(self.tasks),
            self.harnesses,
            self.tasks
        )
    }
}

/// The lineage operator of a comparison arm.
const ARM: &str = "arm";
/// The lineage operator of the equal-budget baseline the final stage makes.
const EQUAL_BUDGET: &str = "equal-budget";
/// The lineage operator of the chosen harness with its rewriting switched off.
const REWRITING_OFF: &str = "rewriting-off";
/// The lineage operator of the part of a best-of that plays all its episodes but the base's
/// ([`Harness::best_of_rest`]); its parent is the best-of.
pub const BEST_OF_REST: &str = "best-of rest";
/// The lineage operator of the chosen harness less a component ([`RacingOptions::prune`]).
///
/// [`RacingOptions::prune`]: hx_common::config::RacingOptions::prune
const PRUNE: &str = "prune";
/// A best-of's outcome on a task, to be made from its parts once they are recorded: its
/// base's episode, and where it plays several, its rest's.
struct Join {
    harness: HarnessId,
    base: HarnessId,
    rest: Option<HarnessId>,
    task: TaskRef,
}

/// The removals [`Search::prune`] tried, each with its select-split fitness.
type Trials = Vec<(HarnessId, Fitness)>;
/// The final-stage role of a harness [`Search::prune`] tried and did not keep.
pub const PRUNE_TRIAL: &str = "prune trial";
/// The final-stage role of the select split's choice where pruning kept a removal of it.
pub const CHOSEN_BEFORE_PRUNING: &str = "chosen before pruning";

/// What a comparison arm is in the final stage: `floor` for the random-admissible agent (its
/// action selector asks no model), `arm` for any other.
fn arm_role(h: &Harness) -> &'static str {
    if h.action_selector().kind == Kind::RandomChoice {
        "floor"
    } else {
        "arm"
    }
}

/// Whether a lineage operator marks a harness scored only in the final stage, never a
/// candidate.
pub fn final_only(operator: &str) -> bool {
    matches!(
        operator,
        ARM | EQUAL_BUDGET | REWRITING_OFF | PRUNE | BEST_OF_REST
    )
}

/// What one variation operator made over the run (`hx status`, status.json).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorStat {
    /// `structural`, `parametric`, `text`, `reflective`, `adopt` or `crossover`.
    pub operator: String,
    /// Children made and evaluated.
    pub children: u64,
    /// Children refused as invalid (they cost a turn, not an evaluation).
    pub refused: u64,
    /// Children compared with their first parent on the same search tasks.
    pub compared: u64,
    /// Of those, children that beat it: more wins, or as many and more mean progress.
    pub improved: u64,
    /// Model tokens its children's search episodes spent.
    pub tokens: u64,
    /// Children that passed a gate before their evaluation (reflective).
    #[serde(default)]
    pub gate_passed: u64,
    /// Children that failed their gate (reflective; each is also a refusal's reason).
    #[serde(default)]
    pub gate_failed: u64,
    /// Tokens its proposer model spent (reflective), apart from the agents' tokens.
    #[serde(default)]
    pub proposer_tokens: u64,
}

/// Per operator: gates passed and failed, proposer tokens (kept in the store's meta).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GateStat {
    /// Children that passed their gate.
    pub passed: u64,
    /// Children that failed it.
    pub failed: u64,
    /// The proposer's tokens.
    pub proposer_tokens: u64,
}

/// One refusal a worker or the coordinator recorded, for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// The job it happened in.
    pub job: u64,
    /// The operator.
    pub operator: String,
    /// Why.
    pub reason: String,
}

/// The most recent refusals the store keeps.
const REFUSALS_KEPT: usize = 200;

impl OperatorStat {
    /// The improvement rate with one success and one failure added (Laplace), counting
    /// refusals as failures: the weight [`choose_operator`] gives the operator.
    pub fn weight(&self) -> f64 {
        (1 + self.improved) as f64 / (2 + self.compared + self.refused) as f64
    }
}

/// The name an operator's children carry in their lineage.
fn operator_name(op: &MutationOp) -> &'static str {
    match op {
        MutationOp::Structural => "structural",
        MutationOp::Parametric => "parametric",
        MutationOp::Text { .. } => "text",
        MutationOp::Apply { .. } => "adopt",
        MutationOp::Reflect { .. } => "reflective",
    }
}

/// What moving one parameter did over the run (`hx status`, status.json): the parametric
/// children that moved it and were compared with their parent, and how many of those beat it.
/// Its weight is how likely the parametric operator is to move it next.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParamStat {
    /// The parameter, as `kind.name` ([`hx_common::harness::mutate::param_key`]).
    pub param: String,
    /// Parametric children that moved it and were compared with their parent.
    pub compared: u64,
    /// Of those, children that beat their parent.
    pub improved: u64,
}

impl ParamStat {
    /// The smoothed rate at which moving it helped, as [`OperatorStat::weight`]: 1/2 with no
    /// record.
    pub fn weight(&self) -> f64 {
        (1 + self.improved) as f64 / (2 + self.compared) as f64
    }
}

/// Adaptive operator choice, a bandit by probability matching: each available operator is
/// drawn with probability proportional to its [`OperatorStat::weight`], so operators whose
/// children beat their parents more often are used more, and an operator without a record
/// starts at the same weight as the others (1/2) and is never starved.
pub fn choose_operator(
    available: &[&str],
    stats: &BTreeMap<String, OperatorStat>,
    rng: &mut ChaCha8Rng,
) -> usize {
    let weights: Vec<f64> = available
        .iter()
        .map(|o| stats.get(*o).map_or(0.5, OperatorStat::weight))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut x = rng.random_range(0.0..total);
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    available.len() - 1
}

/// Results stored together before one flush makes them durable.
const RESULT_BATCH: usize = 512;

/// Results recorded in the store, not yet durable nor acknowledged.
#[derive(Default)]
struct Heard {
    deliveries: Vec<Delivery>,
    /// The bus failed after these came: reported once they are settled.
    broken: Option<anyhow::Error>,
}

/// A search over one store.
pub struct Search<'a> {
    exp: Experiment,
    store: &'a Store,
    bus: &'a mut dyn JobBus,
    seeds: Vec<Harness>,
    /// Comparison arms: scored on the test split beside the chosen harness, never candidates.
    arms: Vec<Harness>,
    cands: HashMap<HarnessId, Cand>,
    /// Jobs out: job id -> its record.
    out: BTreeMap<u64, JobRecord>,
    clock: Instant,
    elapsed_before: Duration,
    tokens: u64,
    invalid: u64,
    cache_hits: u64,
    episodes_run: u64,
    history: Vec<(f64, f64, f64)>,
    /// In-task rewrites over the run, by operation.
    rewrite_stats: BTreeMap<String, RewriteStat>,
    /// Children refused as invalid, by the operator that made them.
    refused: BTreeMap<String, u64>,
    /// Gates and proposer tokens, by operator.
    gates: BTreeMap<String, GateStat>,
    say: &'a mut dyn FnMut(&str),
    last_checkpoint: Instant,
    /// The selection pool: cell winners and elites with their fitness; `None` after
    /// results changed the candidates.
    pool: Option<Vec<(HarnessId, Fitness)>>,
    /// Candidates due for their next rung; `None` after results changed the candidates.
    promotions: Option<Vec<(HarnessId, Vec<u64>)>>,
    /// The seeds' structural children (and, with `population.screen-priors`, those with a
    /// prior switched on) not yet raced, when the config screens them (`population.screen`),
    /// each with its parent, next last; `None` until the first child is
    /// due. Made again on resume, less the children the store already holds.
    screen: Option<Vec<(HarnessId, Child)>>,
    /// Candidates whose neighbourhood the search screened after the seeds' (with
    /// `population.rescreen`), in order; kept in the store so a resumed run screens the rest.
    rescreened: Vec<HarnessId>,
    /// Most jobs out at once so far (the scheduler's bound is checked against it).
    pub peak_in_flight: usize,
    /// The harnesses of the final stage's held-out comparison and their roles, once chosen.
    final_roles: Vec<(HarnessId, String)>,
    /// The final stage's step now running: its split, harnesses and tasks each.
    stage: Option<(Split, Vec<HarnessId>, u32)>,
    /// Set when the user asks the run to stop ([`Search::with_stop`]).
    stop: Option<Arc<AtomicBool>>,
}

/// The run stopped because it was asked to ([`Search::with_stop`]): what it had heard is
/// durable, and the jobs still out are stored as pending, so `--resume` sends them again.
#[derive(Debug, thiserror::Error)]
#[error(
    "asked to stop: the run stopped at {episodes} search episodes with its store flushed; \
     {jobs_out} job(s) out go again when it resumes"
)]
pub struct Stopped {
    /// Search episodes recorded.
    pub episodes: u64,
    /// Jobs that were out, to be sent again.
    pub jobs_out: usize,
}

/// The archive's axes: harness size (components) and model tokens per step, each in five
/// buckets; the labels name them for people (`hx report`).
pub const ARCHIVE_SIZE_LABELS: [&str; 5] = ["1-4", "5-8", "9-12", "13-16", "17+"];
/// See [`ARCHIVE_SIZE_LABELS`].
pub const ARCHIVE_COST_LABELS: [&str; 5] = ["<400", "400-800", "800-1.6k", "1.6k-3.2k", "3.2k+"];

/// A harness's cell in the archive: (size bucket, tokens-per-step bucket).
pub fn archive_cell(size: usize, tokens_per_step: f64) -> (usize, usize) {
    let size = match size {
        0..=4 => 0,
        5..=8 => 1,
        9..=12 => 2,
        13..=16 => 3,
        _ => 4,
    };
    let cost = [400.0, 800.0, 1600.0, 3200.0]
        .iter()
        .take_while(|&&b| tokens_per_step >= b)
        .count();
    (size, cost)
}

fn cell(c: &Cand) -> (usize, usize) {
    archive_cell(c.harness.len(), c.tokens_per_step())
}

/// How often one kind of in-task rewrite fired over a run, and how it went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewriteStat {
    /// Times it was applied.
    pub fired: u64,
    /// Times it was kept (not rolled back).
    pub kept: u64,
    /// Times it was kept in an episode that was then won.
    pub helped: u64,
}

impl<'a> Search<'a> {
    /// A search for `exp` with seed harnesses `seeds`, recording in `store`; with `resume`,
    /// the store's earlier state is taken up, else the store must be new.
    pub fn new(
        exp: Experiment,
        seeds: Vec<Harness>,
        store: &'a Store,
        bus: &'a mut dyn JobBus,
        resume: bool,
        say: &'a mut dyn FnMut(&str),
    ) -> Result<Search<'a>> {
        let stored: Option<Experiment> = store.meta("config")?;
        match (&stored, resume) {
            (Some(_), false) => bail!(
                "the store {} already holds run {:?}; pass --resume to go on with it, or set \
                 run.store to a new directory",
                store.path().display(),
                exp.run.name
            ),
            (None, true) => bail!(
                "--resume: the store {} holds no run to resume",
                store.path().display()
            ),
            (Some(old), true) if old.run.name != exp.run.name => bail!(
                "--resume: the store {} holds run {:?}, not {:?}",
                store.path().display(),
                old.run.name,
                exp.run.name
            ),
            _ => {}
        }
        if stored.is_none() {
            store.set_meta("config", &exp)?;
        }
        let mut s = Search {
            elapsed_before: Duration::from_secs_f64(store.meta::<f64>("elapsed_s")?.unwrap_or(0.0)),
            tokens: store.meta("tokens")?.unwrap_or(0),
            invalid: store.meta("invalid_children")?.unwrap_or(0),
            cache_hits: store.meta("cache_hits")?.unwrap_or(0),
            episodes_run: store.meta("episodes_run")?.unwrap_or(0),
            history: store.meta("history")?.unwrap_or_default(),
            rewrite_stats: store.meta("rewrite_stats")?.unwrap_or_default(),
            refused: store.meta("refused_by_operator")?.unwrap_or_default(),
            gates: store.meta("gates_by_operator")?.unwrap_or_default(),
            rescreened: store.meta("rescreened")?.unwrap_or_default(),
            exp,
            store,
            bus,
            seeds,
            arms: Vec::new(),
            cands: HashMap::new(),
            out: BTreeMap::new(),
            clock: Instant::now(),
            say,
            last_checkpoint: Instant::now(),
            pool: None,
            promotions: None,
            screen: None,
            peak_in_flight: 0,
            final_roles: Vec::new(),
            stage: None,
            stop: None,
        };
        s.load()?;
        Ok(s)
    }

    /// Adds comparison arms: harnesses scored beside the chosen one and the seeds on the
    /// test split, never parents or candidates (an arm that is also a seed stays a seed).
    pub fn with_arms(mut self, arms: Vec<Harness>) -> Self {
        let seeds: BTreeSet<HarnessId> = self.seeds.iter().map(Harness::id).collect();
        self.arms = arms
            .into_iter()
            .filter(|a| !seeds.contains(&a.id()))
            .collect();
        for a in &self.arms {
            // A resumed run may have heard an arm's results already.
            self.cands.remove(&a.id());
        }
        self
    }

    /// Stops the run, between results, once `stop` is set (the first Ctrl-C or SIGTERM): what
    /// was heard is made durable and acknowledged, the status says so, and [`Search::run`]
    /// returns [`Stopped`].
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// When asked to stop: makes what `heard` holds durable, writes the status, and returns
    /// the error that ends the run.
    fn stop_if_asked(&mut self, heard: &mut Heard) -> Result<()> {
        if !self
            .stop
            .as_ref()
            .is_some_and(|s| s.load(AtomicOrdering::SeqCst))
        {
            return Ok(());
        }
        self.send_all(Vec::new(), std::mem::take(heard))?;
        let stopped = Stopped {
            episodes: self.search_evaluations(),
            jobs_out: self.out.len(),
        };
        (self.say)(&stopped.to_string());
        self.checkpoint("stopped", Some("asked to stop".into()), None)?;
        self.store.flush()?;
        Err(stopped.into())
    }

    fn is_arm(&self, id: &HarnessId) -> bool {
        self.arms.iter().any(|a| a.id() == *id)
    }

    fn suite(&self) -> &str {
        &self.exp.suites[0].name
    }

    fn search_split(&self) -> Split {
        self.exp.suites[0].search_split
    }

    /// Rebuilds candidates from the store (all of them, on resume; the seeds on a new run).
    fn load(&mut self) -> Result<()> {
        for h in self.store.harnesses()? {
            let id = h.id();
            let lineage = self.store.lineage(&id)?;
            if lineage.as_ref().is_some_and(|l| final_only(&l.operator)) {
                continue;
            }
            let search = self
                .store
                .evaluations(&id)?
                .into_iter()
                .filter(|o| o.task.split == self.search_split() && o.task.suite == self.suite())
                .map(|o| (o.task.seed, o))
                .collect();
            let feedback = self
                .store
                .meta(&format!("feedback/{id}"))?
                .unwrap_or_default();
            self.cands.insert(
                id,
                Cand {
                    harness: h,
                    search,
                    busy: false,
                    feedback,
                    parents: lineage
                        .as_ref()
                        .map_or_else(Vec::new, |l| l.parents.clone()),
                    operator: lineage.map_or_else(|| "seed".into(), |l| l.operator),
                    confidence: self.exp.racing.confidence,
                },
            );
        }
        for h in self.seeds.clone() {
            if !self.cands.contains_key(&h.id()) {
                self.store.put_harness(&h)?;
                self.store.put_lineage(&h.id(), &Lineage::seed(None))?;
                self.cands.insert(
                    h.id(),
                    Cand {
                        harness: h,
                        search: BTreeMap::new(),
                        busy: false,
                        feedback: Feedback::default(),
                        operator: "seed".into(),
                        parents: Vec::new(),
                        confidence: self.exp.racing.confidence,
                    },
                );
            }
        }
        // Jobs that had no answer go out again (same job, next attempt).
        for mut r in self.store.jobs()? {
            if r.state == JobState::Pending {
                r.attempts += 1;
                r.job.attempt = r.attempts;
                if let JobKind::Evaluate { harness } = &r.job.kind
                    && let Some(c) = self.cands.get_mut(&harness.id())
                {
                    c.busy = true;
                }
                self.store.put_job(&r)?;
                self.bus.submit(&r.job)?;
                self.out.insert(r.job.id.0, r);
            }
        }
        self.store.flush()?;
        Ok(())
    }

    fn elapsed(&self) -> Duration {
        self.elapsed_before + self.clock.elapsed()
    }

    fn rungs(&self) -> &[u32] {
        &self.exp.racing.rungs
    }

    /// Search tasks a screened child plays first ([`PopulationOptions::screen_tasks`]; the
    /// first rung when the config does not screen or names none).
    ///
    /// [`PopulationOptions::screen_tasks`]: hx_common::config::PopulationOptions::screen_tasks
    fn screen_tasks(&self) -> u32 {
        let pop = &self.exp.population;
        match pop.screen_tasks {
            Some(n) if pop.screen => n,
            _ => self.rungs()[0],
        }
    }

    /// Which rung `c` has completed: the number of rungs whose tasks it has all done.
    fn rung(&self, c: &Cand) -> usize {
        self.rungs()
            .iter()
            .take_while(|&&n| (0..u64::from(n)).all(|s| c.search.contains_key(&s)))
            .count()
    }

    /// The candidates racing, incumbent, selection and the final stage rank: those with
    /// search episodes, less each copy of another ([`Self::clone_of`]), whose few lucky
    /// episodes must not stand for the twin that went on.
    fn raced(&self) -> impl Iterator<Item = &Cand> {
        self.cands
            .values()
            .filter(|c| !c.search.is_empty() && self.clone_of(c).is_none())
    }

    /// The incumbent: best lower bound among candidates with the most rungs done.
    fn incumbent(&self) -> Option<&Cand> {
        let top = self.raced().map(|c| self.rung(c)).max()?;
        self.raced().filter(|c| self.rung(c) == top).max_by(|a, b| {
            a.fitness()
                .rank(&b.fitness())
                .then(b.harness.id().cmp(&a.harness.id()))
        })
    }

    fn best(&self) -> Option<&Cand> {
        self.raced().max_by(|a, b| {
            a.fitness()
                .rank(&b.fitness())
                .then(b.harness.id().cmp(&a.harness.id()))
        })
    }

    /// Which budget is spent, if any.
    fn spent(&self) -> Option<String> {
        let b = &self.exp.budget;
        let evals = self.search_evaluations();
        if evals >= b.evaluations {
            Some(format!("evaluation budget ({evals} of {})", b.evaluations))
        } else if self.tokens >= b.tokens {
            Some(format!("token budget ({} of {})", self.tokens, b.tokens))
        } else if self.elapsed() >= b.wall_time {
            Some(format!(
                "wall-time budget ({})",
                humantime_format(b.wall_time)
            ))
        } else {
            None
        }
    }

    fn search_evaluations(&self) -> u64 {
        self.cands.values().map(|c| c.search.len() as u64).sum()
    }

    /// Search episodes recorded, and those out in jobs.
    fn committed_evaluations(&self) -> u64 {
        self.search_evaluations()
            + self
                .out
                .values()
                .map(|r| r.job.tasks.tasks().count() as u64)
                .sum::<u64>()
    }

    /// The candidate `c` plays exactly as, if any: one that played every search task `c`
    /// played (at least its first rung) with the same outcome, steps, score and tokens, and
    /// has played more tasks than `c` (or as many and a smaller id). Token counts differ as
    /// soon as a prompt or a command does, so such a `c` (a component that does nothing here,
    /// such as a budget never reached) is a copy of a harness already raced: racing it
    /// further would spend episodes on outcomes already known, so it is not promoted and is
    /// not a parent. In blocks-7, three such children took 192 of the search's 720 episodes.
    fn clone_of(&self, c: &Cand) -> Option<HarnessId> {
        clone_of(&self.cands, self.rungs(), c)
    }

    /// Seeds of the search split that candidate `c` still needs for its next rung, unless it
    /// is clearly below the incumbent ([`Fitness::clearly_below`]) or plays exactly as
    /// another candidate ([`Self::clone_of`]).
    fn promotion(&self, c: &Cand) -> Option<Vec<u64>> {
        let r = self.rung(c);
        let mut target = *self.rungs().get(r)?;
        if r == 0 && self.seeds.iter().any(|s| s.id() == c.harness.id()) {
            // A seed plays the screen's tasks at once, beside its children.
            target = target.max(self.screen_tasks());
        }
        if self.clone_of(c).is_some() {
            return None;
        }
        if r > 0
            && let Some(inc) = self.incumbent()
            && inc.harness.id() != c.harness.id()
            && (c.fitness().clearly_below(&inc.fitness())
                || paired_below(&c.search, &inc.search, c.confidence))
        {
            return None;
        }
        if r > 0
            && self.exp.racing.promote == hx_common::config::Promote::AboveMedian
            && self.below_median(c, u64::from(self.rungs()[r - 1]))
        {
            return None;
        }
        let seeds: Vec<u64> = (0..u64::from(target))
            .filter(|s| !c.search.contains_key(s))
            .collect();
        (!seeds.is_empty()).then_some(seeds)
    }

    /// Whether `c`'s mean progress on search seeds `0..n` is below the median of every
    /// candidate that played them all (the same tasks: common random numbers).
    fn below_median(&self, c: &Cand, n: u64) -> bool {
        let mean = |x: &Cand| -> Option<f64> {
            let scores = (0..n)
                .map(|s| {
                    x.search
                        .get(&s)
                        .map(|o| if o.won { 1.0 } else { f64::from(o.score) })
                })
                .collect::<Option<Vec<f64>>>()?;
            Some(scores.iter().sum::<f64>() / n.max(1) as f64)
        };
        let Some(mine) = mean(c) else {
            return false;
        };
        let mut all: Vec<f64> = self.raced().filter_map(mean).collect();
        all.sort_by(f64::total_cmp);
        // The lower median: with two candidates, the weaker one is not stopped by the other.
        let median = all[(all.len() - 1) / 2];
        mine < median
    }

    fn job(&self, id: JobId, kind: JobKind, split: Split, seeds: Vec<u64>) -> JobRecord {
        JobRecord {
            job: Job {
                id,
                run: self.exp.run.name.clone(),
                kind,
                tasks: TaskBatch {
                    suite: self.suite().to_owned(),
                    split,
                    seeds,
                },
                budget: JobBudget {
                    max_steps: self.exp.budget.episode_steps,
                    max_tokens: self.exp.budget.tokens,
                    wall_ms: self.exp.budget.wall_time.as_millis() as u64,
                },
                attempt: 1,
            },
            state: JobState::Pending,
            attempts: 1,
        }
    }

    /// Stores new jobs beside the results heard since the last call, makes the store durable
    /// with one flush, acknowledges the results, then hands the jobs to the bus: a result is
    /// never acknowledged and lost, and a job a worker may answer is always one the store
    /// knows.
    fn send_all(&mut self, records: Vec<JobRecord>, heard: Heard) -> Result<()> {
        if records.is_empty() && heard.deliveries.is_empty() && heard.broken.is_none() {
            return Ok(());
        }
        let mut w = Writes::default();
        for r in &records {
            self.store.put_job_in(&mut w, r)?;
        }
        self.store.apply(w)?;
        self.store.flush()?;
        for d in heard.deliveries {
            if let Err(e) = d.ack() {
                // Stored already: if it comes again it is recognised and dropped.
                tracing::warn!(cause = %e, "a result's acknowledgement was lost");
            }
        }
        if let Some(e) = heard.broken {
            // The new jobs are stored as pending: a resumed run sends them.
            return Err(e);
        }
        for record in records {
            self.bus.submit(&record.job)?;
            self.out.insert(record.job.id.0, record);
        }
        self.peak_in_flight = self.peak_in_flight.max(self.out.len());
        Ok(())
    }

    /// Hears results: waits a little for one, takes whatever else has come (up to a batch)
    /// and records them in the store in one batch, written but not yet durable:
    /// [`Search::send_all`] makes them durable and acknowledges them.
    fn hear(&mut self) -> Result<Heard> {
        let Some(first) = self.bus.recv(Duration::from_millis(500))? else {
            return Ok(Heard::default());
        };
        let mut deliveries = vec![first];
        let mut broken = None;
        while deliveries.len() < RESULT_BATCH {
            match self.bus.recv(Duration::ZERO) {
                Ok(Some(d)) => deliveries.push(d),
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        let mut w = Writes::default();
        let mut grew = BTreeSet::new();
        for d in &deliveries {
            grew.extend(self.answer(&mut w, &d.bytes)?);
        }
        for id in grew {
            w.set_meta(&format!("feedback/{id}"), &self.cands[&id].feedback);
        }
        // The counters the budgets read become durable with the results they count.
        w.set_meta("tokens", &self.tokens);
        w.set_meta("episodes_run", &self.episodes_run);
        w.set_meta("rewrite_stats", &self.rewrite_stats);
        self.store.apply(w)?;
        Ok(Heard { deliveries, broken })
    }

    /// Writes the status at most once a second (and always when `force`).
    fn checkpoint_now_and_then(&mut self, phase: &str, force: bool) -> Result<()> {
        if force || self.last_checkpoint.elapsed() >= Duration::from_secs(1) {
            self.last_checkpoint = Instant::now();
            self.checkpoint(phase, None, None)?;
        }
        Ok(())
    }

    /// Tournament over the archive's cell winners and the elites (the pool, with each one's
    /// fitness, kept until results change it).
    fn select(&mut self, rng: &mut ChaCha8Rng) -> Option<Harness> {
        let pool = self.pool.get_or_insert_with(|| {
            // Each candidate's fitness once: the pool is rebuilt only after results came.
            let mut evaluated: Vec<(&Cand, Fitness)> = self
                .cands
                .values()
                .filter(|c| {
                    !c.search.is_empty()
                        && clone_of(&self.cands, &self.exp.racing.rungs, c).is_none()
                })
                .map(|c| (c, c.fitness()))
                .collect();
            // In id order, so ties in the ranking fall the same way on every run.
            evaluated.sort_by_key(|(c, _)| c.harness.id());
            let mut cells: BTreeMap<(usize, usize), (&Cand, Fitness)> = BTreeMap::new();
            for &(c, f) in &evaluated {
                let e = cells.entry(cell(c)).or_insert((c, f));
                if f.rank(&e.1) == Ordering::Greater {
                    *e = (c, f);
                }
            }
            let mut pool: Vec<(&Cand, Fitness)> = cells.into_values().collect();
            let mut ranked = evaluated.clone();
            ranked.sort_by(|a, b| b.1.rank(&a.1));
            for e in ranked.into_iter().take(self.exp.population.elites) {
                if !pool.iter().any(|p| p.0.harness.id() == e.0.harness.id()) {
                    pool.push(e);
                }
            }
            pool.sort_by_key(|c| c.0.harness.id());
            pool.truncate(self.exp.population.size);
            pool.into_iter().map(|(c, f)| (c.harness.id(), f)).collect()
        });
        let k = self.exp.population.tournament.max(1);
        let id = (0..k)
            .filter_map(|_| pool.choose(rng).copied())
            .max_by(|a, b| a.1.rank(&b.1))?
            .0;
        self.cands.get(&id).map(|c| c.harness.clone())
    }

    /// Makes the next job, or `None` if there is nothing to do now.
    fn next_job(&mut self) -> Result<Option<JobRecord>> {
        if self.exp.population.screen && self.screen.is_none() {
            self.screen = Some(self.screen_children());
        }
        self.rescreen_if_due()?;
        // While the seeds' structural children are screened, only the seeds' own first rung
        // goes before them: the screen is raced at the first rung before anything climbs, so
        // the first promotions compare all of it (ties at the median would otherwise climb
        // one by one and spend the budget before the screen is through).
        let screening = self.screen.as_ref().is_some_and(|s| !s.is_empty());
        // Promotions first: candidates waiting for their next rung, those yet to play first,
        // then the best by the ranking, then the smallest id. The list is made once after
        // results came, then taken from job by job, so when the budget runs out the best
        // have climbed.
        if self.promotions.is_none() {
            let mut waiting: Vec<(bool, Fitness, HarnessId, Vec<u64>)> = self
                .cands
                .values()
                .filter(|c| !c.busy)
                .filter(|c| !screening || c.search.is_empty())
                .filter_map(|c| {
                    self.promotion(c)
                        .map(|s| (c.search.is_empty(), c.fitness(), c.harness.id(), s))
                })
                .collect();
            // Next last.
            waiting.sort_by(|a, b| {
                a.0.cmp(&b.0)
                    .then_with(|| a.1.rank(&b.1))
                    .then_with(|| b.2.cmp(&a.2))
            });
            self.promotions = Some(
                waiting
                    .into_iter()
                    .map(|(_, _, id, seeds)| (id, seeds))
                    .collect(),
            );
        }
        while let Some((id, seeds)) = self.promotions.as_mut().and_then(Vec::pop) {
            let Some(c) = self.cands.get_mut(&id).filter(|c| !c.busy) else {
                continue;
            };
            c.busy = true;
            let kind = JobKind::Evaluate {
                harness: c.harness.clone(),
            };
            let jid = self.store.next_job_id()?;
            return Ok(Some(self.job(jid, kind, self.search_split(), seeds)));
        }
        // Then the seeds' structural children, when the config screens them.
        if let Some((parent, child)) = self.screen.as_mut().and_then(Vec::pop) {
            if self.screen.as_ref().is_some_and(Vec::is_empty) {
                // The screen is through: the promotions it held back are due.
                self.promotions = None;
            }
            let jid = self.store.next_job_id()?;
            let operator = child.operator.to_owned();
            let tasks = self.screen_tasks();
            return self
                .admit(jid, child, vec![parent], operator, tasks)
                .map(Some);
        }
        // Then a new child; a known or invalid child costs a try, not a job.
        for _ in 0..16 {
            let jid = self.store.next_job_id()?;
            let mut rng = ChaCha8Rng::seed_from_u64(self.exp.run.seed ^ jid.0.rotate_left(17));
            let immigrant = rng.random_bool(self.exp.population.immigrant_rate);
            // Until a first result comes, only the seeds can be parents: their children fill
            // the slots that would otherwise idle for a whole evaluation.
            let parent = if immigrant {
                self.seeds.choose(&mut rng).cloned()
            } else {
                self.select(&mut rng)
                    .or_else(|| self.seeds.choose(&mut rng).cloned())
            };
            let Some(parent) = parent else {
                return Ok(None);
            };
            let child_seed = rng.random::<u64>();
            let mut op_label = String::from("crossover");
            let (made, parents, op_name) = if rng.random_bool(self.exp.population.crossover_rate)
                && let Some(other) = self.select(&mut rng)
                && other.id() != parent.id()
            {
                (
                    Some(hx_common::harness::mutate::crossover(
                        &parent, &other, child_seed,
                    )),
                    vec![parent.id(), other.id()],
                    "crossover".to_owned(),
                )
            } else {
                let fb = self
                    .cands
                    .get(&parent.id())
                    .map(|c| c.feedback.clone())
                    .unwrap_or_default();
                let mut ops = vec![
                    MutationOp::Structural,
                    MutationOp::Parametric,
                    MutationOp::Text { component: None },
                ];
                if let Some(r) = fb.helpful.choose(&mut rng) {
                    ops.push(MutationOp::Apply {
                        edits: vec![r.edit.clone()],
                    });
                }
                if let Some(op) = self.reflective(&parent.id()) {
                    ops.push(op);
                }
                let allowed = &self.exp.population.operators;
                ops.retain(|op| {
                    allowed.is_empty() || allowed.iter().any(|a| a == operator_name(op))
                });
                if ops.is_empty() {
                    // None of the allowed operators applies to this parent (nothing to adopt
                    // or reflect on, a spent proposer budget): another parent may do.
                    continue;
                }
                let stats = self.operator_stats();
                let op = ops[choose_operator(
                    &ops.iter().map(operator_name).collect::<Vec<_>>(),
                    &stats,
                    &mut rng,
                )]
                .clone();
                op_label = operator_name(&op).to_owned();
                let spec = MutationSpec {
                    op,
                    seed: child_seed,
                    failure_digest: fb.digest,
                };
                let limits = hx_common::harness::mutate::Limits {
                    episode_steps: Some(self.exp.budget.episode_steps),
                };
                let made = match spec.op {
                    // Which parameters move is weighted by how often moving each has helped.
                    MutationOp::Parametric => {
                        let weights = self
                            .param_stats()
                            .into_iter()
                            .map(|(k, st)| (k, st.weight()))
                            .collect();
                        Some(hx_common::harness::mutate::parametric_weighted(
                            &parent, limits, &weights, spec.seed,
                        ))
                    }
                    _ => hx_common::harness::mutate::offline(&parent, &spec, limits),
                };
                match made {
                    Some(made) => (Some(made), vec![parent.id()], String::new()),
                    None => {
                        // Text mutation needs the model: the worker makes the child.
                        let rung0 = (0..u64::from(self.rungs()[0])).collect();
                        let kind = JobKind::MutateAndEvaluate {
                            parent,
                            mutation: spec,
                        };
                        return Ok(Some(self.job(jid, kind, self.search_split(), rung0)));
                    }
                }
            };
            match made.expect("made here") {
                Err(e) => {
                    self.invalid += 1;
                    (self.say)(&format!("child refused: {e}"));
                    self.store.set_meta("invalid_children", &self.invalid)?;
                    *self.refused.entry(op_label).or_default() += 1;
                    self.store.set_meta("refused_by_operator", &self.refused)?;
                }
                Ok(child) => {
                    let id = child.harness.id();
                    if self.cands.contains_key(&id) {
                        self.cache_hits += 1;
                        self.store.set_meta("cache_hits", &self.cache_hits)?;
                        continue;
                    }
                    let operator = if op_name.is_empty() {
                        child.operator.to_owned()
                    } else {
                        op_name
                    };
                    let tasks = self.rungs()[0];
                    return self.admit(jid, child, parents, operator, tasks).map(Some);
                }
            }
        }
        Ok(None)
    }

    /// With `population.rescreen`, once the screen is through: when the incumbent has played
    /// every rung, ranks above every seed and was not screened yet, and screens are left, its
    /// neighbourhood becomes the screen (recorded in the store first, so a resumed run screens
    /// what is left of it).
    fn rescreen_if_due(&mut self) -> Result<()> {
        let due = self.exp.population.rescreen as usize > self.rescreened.len()
            && self.screen.as_ref().is_some_and(Vec::is_empty);
        if !due {
            return Ok(());
        }
        // The first to play every rung is the incumbent until another does, whatever its
        // rate: it leads only where it ranks above every seed.
        let above_seeds = |c: &Cand| {
            self.seeds.iter().all(|s| {
                self.cands
                    .get(&s.id())
                    .is_none_or(|s| c.fitness().rank(&s.fitness()) == Ordering::Greater)
            })
        };
        let Some(lead) = self
            .incumbent()
            .filter(|c| self.rung(c) == self.rungs().len() && above_seeds(c))
            .map(|c| c.harness.clone())
        else {
            return Ok(());
        };
        // A seed never ranks above itself, so the lead is no seed.
        let id = lead.id();
        if self.rescreened.contains(&id) {
            return Ok(());
        }
        self.rescreened.push(id);
        self.store.set_meta("rescreened", &self.rescreened)?;
        self.screen = Some(self.neighbourhoods(&[lead], &format!("the leader {id}'s")));
        // Nothing climbs until the new screen is out, as for the seeds'.
        self.promotions = None;
        Ok(())
    }

    /// The screen: the seeds' neighbourhoods ([`Self::neighbourhoods`]), then those of the
    /// candidates screened after them (`population.rescreen`), less what the store holds.
    fn screen_children(&mut self) -> Vec<(HarnessId, Child)> {
        let mut all = self.neighbourhoods(&self.seeds.clone(), "the seeds'");
        let again: Vec<Harness> = self
            .rescreened
            .iter()
            .filter_map(|id| self.cands.get(id).map(|c| c.harness.clone()))
            .collect();
        if !again.is_empty() {
            let mut more = self.neighbourhoods(&again, "the leaders'");
            // Next last: the seeds' first.
            more.append(&mut all);
            all = more;
        }
        all
    }

    /// The structural children of `parents` the store does not hold yet
    /// ([`mutate::neighbourhood`], in an order drawn from the run's seed), then, with
    /// `population.screen-priors`, their children with a prior switched on
    /// ([`mutate::switch_ons`]), each with its parent, next last.
    ///
    /// [`mutate::neighbourhood`]: hx_common::harness::mutate::neighbourhood
    /// [`mutate::switch_ons`]: hx_common::harness::mutate::switch_ons
    fn neighbourhoods(&mut self, parents: &[Harness], whose: &str) -> Vec<(HarnessId, Child)> {
        use hx_common::harness::mutate;
        let limits = mutate::Limits {
            episode_steps: Some(self.exp.budget.episode_steps),
        };
        let pop = &self.exp.population;
        let (mut all, mut switched) = (Vec::new(), 0);
        for parent in parents {
            let children =
                mutate::neighbourhood(parent, limits, self.exp.run.seed, pop.screen_draws);
            all.extend(children.into_iter().map(|c| (parent.id(), c)));
            if pop.screen_priors {
                let on = mutate::switch_ons(parent, limits, self.exp.run.seed, pop.screen_draws);
                switched += on.len();
                all.extend(on.into_iter().map(|c| (parent.id(), c)));
            }
        }
        let total = all.len();
        all.retain(|(_, c)| !self.cands.contains_key(&c.harness.id()));
        let known = total - all.len();
        (self.say)(&format!(
            "screening {whose} one-edit neighbourhood: {} structural children{}{}",
            total - switched,
            if pop.screen_priors {
                format!(", {switched} with a prior switched on")
            } else {
                String::new()
            },
            if known > 0 {
                format!(", {known} raced already")
            } else {
                String::new()
            }
        ));
        all.reverse();
        all
    }

    /// Records a new child as a candidate (its harness, lineage and an empty search record)
    /// and makes the job that races it on the first `tasks` search tasks (a rung).
    fn admit(
        &mut self,
        jid: JobId,
        child: Child,
        parents: Vec<HarnessId>,
        operator: String,
        tasks: u32,
    ) -> Result<JobRecord> {
        let id = child.harness.id();
        let adopted = match child.operator {
            "adopt" => self
                .cands
                .get(&parents[0])
                .map(|c| {
                    c.feedback
                        .helpful
                        .iter()
                        .filter(|r| child.edits.contains(&r.edit))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
            _ => vec![],
        };
        self.store.put_harness(&child.harness)?;
        self.store.put_lineage(
            &id,
            &Lineage {
                parents: parents.clone(),
                operator: operator.clone(),
                adopted,
                job: Some(jid),
                at_ms: self.elapsed().as_millis() as u64,
            },
        )?;
        self.cands.insert(
            id,
            Cand {
                harness: child.harness.clone(),
                search: BTreeMap::new(),
                busy: true,
                feedback: Feedback::default(),
                operator,
                parents,
                confidence: self.exp.racing.confidence,
            },
        );
        let kind = JobKind::Evaluate {
            harness: child.harness,
        };
        Ok(self.job(
            jid,
            kind,
            self.search_split(),
            (0..u64::from(tasks)).collect(),
        ))
    }

    /// Checks a result against its job (never trust a worker) and records it in `w`.
    /// Returns the candidate whose search record grew (its feedback is for the caller to
    /// store, once per batch).
    fn answer(&mut self, w: &mut Writes, bytes: &[u8]) -> Result<Option<HarnessId>> {
        // Any answer may change rates, rungs or who is busy.
        self.pool = None;
        self.promotions = None;
        let mut r: JobResult = match protocol::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                (self.say)(&format!("a result was refused: {e}"));
                return Ok(None);
            }
        };
        let Some(mut record) = self.out.remove(&r.job.0) else {
            // Already answered (a redelivery) or not ours: nothing to record twice.
            return Ok(None);
        };
        let asked: BTreeSet<TaskRef> = record.job.tasks.tasks().collect();
        let problem = match (&record.job.kind, &r.child) {
            _ if r.run != record.job.run => Some(format!("it names run {:?}", r.run)),
            (JobKind::Evaluate { harness }, Some(child)) if child.id() != harness.id() => Some(
                format!("it evaluated {} instead of {}", child.id(), harness.id()),
            ),
            _ if r.outcomes.iter().any(|o| !asked.contains(&o.task)) => {
                Some("it reports a task the job did not ask for".into())
            }
            _ if r
                .outcomes
                .iter()
                .map(|o| &o.task)
                .collect::<BTreeSet<_>>()
                .len()
                != r.outcomes.len() =>
            {
                Some("it reports a task twice".into())
            }
            _ => None,
        };
        if let Some(p) = problem {
            (self.say)(&format!("{}: result refused: {p}", record.job.id));
            record.state = JobState::Failed { reason: p };
            self.store.put_job_in(w, &record)?;
            self.release(&record);
            return Ok(None);
        }
        // Workers do not send back the harness of an evaluate job: it is the job's own.
        if let (JobKind::Evaluate { harness }, None) = (&record.job.kind, &r.child)
            && !r.outcomes.is_empty()
        {
            r.child = Some(harness.clone());
        }
        self.tokens += r.usage.prompt_tokens + r.usage.completion_tokens;
        record.state = match &r.status {
            JobStatus::Completed => JobState::Done,
            JobStatus::InvalidChild { reason } => JobState::Invalid {
                reason: reason.clone(),
            },
            JobStatus::Failed { reason } => JobState::Failed {
                reason: reason.clone(),
            },
        };
        // The operator of a child the worker made.
        let made_by = match &record.job.kind {
            JobKind::MutateAndEvaluate { mutation, .. } => operator_name(&mutation.op),
            _ => "crossover",
        };
        if let JobStatus::InvalidChild { reason } = &r.status {
            self.invalid += 1;
            self.store.set_meta("invalid_children", &self.invalid)?;
            *self.refused.entry(made_by.into()).or_default() += 1;
            self.store.set_meta("refused_by_operator", &self.refused)?;
            (self.say)(&format!(
                "{}: child refused by the worker: {reason}",
                record.job.id
            ));
        }
        if matches!(record.job.kind, JobKind::MutateAndEvaluate { .. }) {
            self.record_refusals(&record, &r, made_by)?;
        }
        if let JobStatus::Failed { reason } = &r.status {
            (self.say)(&format!(
                "{}: failed on {}: {reason}",
                record.job.id, r.worker
            ));
        }
        let lineage = match (&record.job.kind, &r.child) {
            (JobKind::MutateAndEvaluate { parent, .. }, Some(_)) => Some(Lineage {
                parents: vec![parent.id()],
                operator: made_by.into(),
                adopted: vec![],
                job: Some(record.job.id),
                at_ms: self.elapsed().as_millis() as u64,
            }),
            (_, Some(child)) => self
                .store
                .lineage(&child.id())?
                .or(Some(Lineage::seed(Some(record.job.id)))),
            _ => None,
        };
        let new = self.store.record_answer(
            w,
            &Answer {
                record: &record,
                child: r.child.as_ref().zip(lineage.as_ref()),
                outcomes: &r.outcomes,
            },
        )?;
        self.episodes_run += r.outcomes.len() as u64;
        let won: BTreeSet<&TaskRef> = r
            .outcomes
            .iter()
            .filter(|o| o.won)
            .map(|o| &o.task)
            .collect();
        if new > 0 {
            for rw in &r.rewrites {
                let st = self
                    .rewrite_stats
                    .entry(rw.edit.op().to_owned())
                    .or_default();
                st.fired += 1;
                st.kept += u64::from(rw.kept);
                st.helped += u64::from(rw.kept && won.contains(&rw.task));
            }
        }
        self.release(&record);
        let mut grew = None;
        // Harnesses scored only in the final stage (arms, the equal-budget baseline, rewriting
        // off) are never candidates.
        let final_stage_only = lineage.as_ref().is_some_and(|l| final_only(&l.operator));
        if let Some(child) = r
            .child
            .as_ref()
            .filter(|c| !self.is_arm(&c.id()) && !final_stage_only)
        {
            let id = child.id();
            let split = record.job.tasks.split;
            let confidence = self.exp.racing.confidence;
            let on_search = split == self.search_split();
            let parents = lineage
                .as_ref()
                .map_or_else(Vec::new, |l| l.parents.clone());
            let c = self.cands.entry(id).or_insert_with(|| Cand {
                harness: child.clone(),
                search: BTreeMap::new(),
                busy: false,
                feedback: Feedback::default(),
                operator: lineage
                    .as_ref()
                    .map_or_else(|| made_by.into(), |l| l.operator.clone()),
                parents,
                confidence,
            });
            if on_search {
                for o in &r.outcomes {
                    c.search.entry(o.task.seed).or_insert_with(|| o.clone());
                    c.feedback.tokens += o.tokens;
                    c.feedback.steps += u64::from(o.steps);
                }
                if !r.failure_digest.is_empty() {
                    c.feedback.digest = r.failure_digest.clone();
                }
                for rw in &r.rewrites {
                    if rw.kept && won.contains(&rw.task) && !c.feedback.helpful.contains(rw) {
                        c.feedback.helpful.push(rw.clone());
                    }
                }
                grew = Some(id);
            }
            let c = &self.cands[&id];
            let twin = on_search
                .then(|| self.clone_of(c))
                .flatten()
                .map(|t| format!(", plays exactly as {}: not raced further", t.short()))
                .unwrap_or_default();
            let line = format!(
                "{} {} ({}): {} on {} {} ({} new), rung {}{twin}",
                record.job.id,
                id.short(),
                c.operator,
                Rate::wilson95(
                    r.outcomes.iter().filter(|o| o.won).count() as u64,
                    r.outcomes.len() as u64
                ),
                r.outcomes.len(),
                split,
                new,
                self.rung(c),
            );
            (self.say)(&line);
        }
        Ok(grew)
    }

    /// Each operator's record, from the candidates (so it survives a restart with the store)
    /// and the refusals kept in the store's meta.
    fn operator_stats(&self) -> BTreeMap<String, OperatorStat> {
        let mut stats: BTreeMap<String, OperatorStat> = BTreeMap::new();
        for c in self.cands.values() {
            if c.operator == "seed" || final_only(&c.operator) || c.search.is_empty() {
                continue;
            }
            let st = stats.entry(c.operator.clone()).or_default();
            st.children += 1;
            st.tokens += c.feedback.tokens;
            if let Some(beat) = self.beat_parent(c) {
                st.compared += 1;
                st.improved += u64::from(beat);
            }
        }
        for (op, n) in &self.refused {
            stats.entry(op.clone()).or_default().refused = *n;
        }
        for (op, g) in &self.gates {
            let st = stats.entry(op.clone()).or_default();
            st.gate_passed = g.passed;
            st.gate_failed = g.failed;
            st.proposer_tokens = g.proposer_tokens;
        }
        for (op, st) in stats.iter_mut() {
            st.operator = op.clone();
        }
        stats
    }

    /// Whether `c` beat its first parent on the child's search tasks (more wins, or as many
    /// and more progress); `None` where the parent is unknown or has not played them all.
    fn beat_parent(&self, c: &Cand) -> Option<bool> {
        let parent = c.parents.first().and_then(|p| self.cands.get(p))?;
        let theirs: Vec<&TaskOutcome> = c
            .search
            .keys()
            .filter_map(|seed| parent.search.get(seed))
            .collect();
        if theirs.len() < c.search.len() {
            return None;
        }
        let wins = |os: &mut dyn Iterator<Item = &TaskOutcome>| {
            os.fold((0u64, 0.0f64), |(w, p), o| {
                (w + u64::from(o.won), p + f64::from(o.score))
            })
        };
        let (cw, cp) = wins(&mut c.search.values());
        let (pw, pp) = wins(&mut theirs.into_iter());
        Some(cw > pw || (cw == pw && cp > pp))
    }

    /// Per parameter, what the parametric children that moved it did against their parents.
    fn param_stats(&self) -> BTreeMap<String, ParamStat> {
        let mut stats: BTreeMap<String, ParamStat> = BTreeMap::new();
        for c in self.cands.values() {
            if c.operator != "parametric" || c.search.is_empty() {
                continue;
            }
            let Some(beat) = self.beat_parent(c) else {
                continue;
            };
            // `beat_parent` found the first parent.
            let parent = &self.cands[&c.parents[0]];
            for key in hx_common::harness::mutate::changed_params(&parent.harness, &c.harness) {
                let st = stats.entry(key.clone()).or_default();
                st.param = key;
                st.compared += 1;
                st.improved += u64::from(beat);
            }
        }
        stats
    }

    /// A reflective mutation of `parent`, where the experiment has a proposer whose token
    /// budget is not spent and the parent failed some of its search tasks (there is
    /// something to reflect on).
    fn reflective(&self, parent: &HarnessId) -> Option<MutationOp> {
        let p = self.exp.proposer.as_ref()?;
        let spent: u64 = self.gates.values().map(|g| g.proposer_tokens).sum();
        if spent >= p.token_budget {
            return None;
        }
        let c = self.cands.get(parent)?;
        if c.search.values().all(|o| o.won) {
            return None;
        }
        Some(MutationOp::Reflect {
            proposer: hx_common::protocol::ProposerSpec {
                mode: p.mode,
                proposals: p.proposals,
                temperature: p.temperature,
                max_tokens: p.max_tokens,
                max_gates: p.max_gates,
            },
            episodes: c
                .search
                .values()
                .map(|o| hx_common::protocol::ParentEpisode {
                    seed: o.task.seed,
                    won: o.won,
                    score: o.score,
                    steps: o.steps,
                })
                .collect(),
        })
    }

    /// Keeps what a worker refused on the way to a child (the most recent
    /// [`REFUSALS_KEPT`]), and a reflective job's gates and proposer tokens.
    fn record_refusals(&mut self, record: &JobRecord, r: &JobResult, op: &str) -> Result<()> {
        let mut reasons: Vec<String> = r.refusals.clone();
        if let (JobStatus::InvalidChild { reason }, true) = (&r.status, reasons.is_empty()) {
            reasons.push(reason.clone());
        }
        if !reasons.is_empty() {
            let mut kept: Vec<Refusal> = self.store.meta("refusals")?.unwrap_or_default();
            kept.extend(reasons.iter().map(|reason| Refusal {
                job: record.job.id.0,
                operator: op.to_owned(),
                reason: reason.chars().take(400).collect(),
            }));
            let cut = kept.len().saturating_sub(REFUSALS_KEPT);
            kept.drain(..cut);
            self.store.set_meta("refusals", &kept)?;
        }
        if let JobKind::MutateAndEvaluate { mutation, .. } = &record.job.kind
            && matches!(mutation.op, MutationOp::Reflect { .. })
        {
            let g = self.gates.entry(op.to_owned()).or_default();
            g.failed += reasons.iter().filter(|w| w.starts_with("gate:")).count() as u64;
            g.passed += u64::from(r.child.is_some());
            g.proposer_tokens +=
                r.proposer_usage.prompt_tokens + r.proposer_usage.completion_tokens;
            self.store.set_meta("gates_by_operator", &self.gates)?;
        }
        Ok(())
    }

    fn release(&mut self, record: &JobRecord) {
        if let JobKind::Evaluate { harness } = &record.job.kind
            && let Some(c) = self.cands.get_mut(&harness.id())
        {
            c.busy = false;
        }
    }

    fn status(&self, phase: &str, stopped: Option<String>, final_: Option<Final>) -> Status {
        let fits: Vec<Fitness> = self.raced().map(Cand::fitness).collect();
        let median_of = |f: &dyn Fn(&Fitness) -> f64| {
            let mut xs: Vec<f64> = fits.iter().map(f).collect();
            xs.sort_by(f64::total_cmp);
            xs.get(xs.len() / 2).copied().unwrap_or(0.0)
        };
        let median = median_of(&|f| f.success.rate);
        let median_progress = median_of(&|f| f.progress.mean);
        let best = self.best().map(|c| (c.harness.id(), c.fitness()));
        let so_far = if final_.is_none() {
            self.final_so_far().unwrap_or_else(|e| {
                tracing::warn!("the final stage so far could not be read: {e:#}");
                None
            })
        } else {
            None
        };
        let stage = self.stage.as_ref().map(|(split, ids, n)| StageProgress {
            split: *split,
            harnesses: ids.len(),
            tasks: *n,
            done: ids
                .iter()
                .map(|id| {
                    self.store.evaluations(id).map_or(0, |os| {
                        os.iter()
                            .filter(|o| o.task.split == *split && o.task.seed < u64::from(*n))
                            .count() as u64
                    })
                })
                .sum(),
        });
        let without: u64 = self.cands.values().filter(|c| !c.search.is_empty()).count() as u64
            * u64::from(*self.rungs().last().expect("rungs"));
        Status {
            run: self.exp.run.name.clone(),
            phase: phase.into(),
            evaluations: self.search_evaluations(),
            evaluation_budget: self.exp.budget.evaluations,
            tokens: self.tokens,
            elapsed_s: self.elapsed().as_secs_f64(),
            in_flight: self.out.len(),
            workers: self.bus.workers(),
            worker_beats: self.bus.worker_beats(),
            candidates: self.cands.values().filter(|c| !c.search.is_empty()).count(),
            invalid_children: self.invalid,
            cache_hits: self.cache_hits,
            clones: self
                .cands
                .values()
                .filter(|c| self.clone_of(c).is_some())
                .count(),
            episodes_run: self.episodes_run,
            episodes_without_racing: without,
            best: best.map(|(id, f)| (id, f.success)),
            best_progress: best.map(|(_, f)| f.progress),
            median,
            median_progress,
            history: self.history.clone(),
            operators: self.operator_stats().into_values().collect(),
            params: self.param_stats().into_values().collect(),
            stopped,
            final_so_far: so_far.as_ref().map(|(f, _)| f.clone()),
            paired_so_far: so_far.map(|(_, p)| p).unwrap_or_default(),
            final_,
            stage,
        }
    }

    /// The final stage so far: while the select split is played, each of its harnesses (the
    /// finalists, or pruning's trials) on the tasks it has played; from then on, each
    /// harness of the held-out comparison on the heldout and test tasks it has played, with
    /// the chosen harness's paired differences. `None` before the final stage or once the
    /// run has ended.
    fn final_so_far(&self) -> Result<Option<(Final, Vec<Paired>)>> {
        let Some(best) = self
            .final_roles
            .iter()
            .find(|(_, r)| r == "chosen")
            .map(|(id, _)| *id)
        else {
            return self.select_so_far();
        };
        let mut f = Final {
            best: Some(best),
            roles: self.final_roles.clone(),
            ..Final::default()
        };
        for (split, n) in [
            (Split::Heldout, self.exp.racing.heldout_tasks),
            (Split::Test, self.exp.racing.test_tasks),
        ] {
            for (id, _) in &self.final_roles {
                let outs = self.played(id, split, n)?;
                if outs.is_empty() {
                    continue;
                }
                let fit = Fitness::of(&outs, 0.95);
                let (rates, progress, tokens) = match split {
                    Split::Heldout => (
                        &mut f.heldout,
                        &mut f.heldout_progress,
                        &mut f.heldout_tokens,
                    ),
                    _ => (&mut f.test, &mut f.test_progress, &mut f.test_tokens),
                };
                rates.push((*id, fit.success));
                progress.push((*id, fit.progress));
                tokens.push((*id, fit.tokens));
            }
        }
        if f.heldout.is_empty() && f.test.is_empty() {
            return Ok(None);
        }
        let p = paired(self.store, &f)?;
        Ok(Some((f, p)))
    }

    /// What `id` has played on `split` seeds `0..n`, as the store records it.
    fn played(&self, id: &HarnessId, split: Split, n: u32) -> Result<Vec<TaskOutcome>> {
        Ok(self
            .store
            .evaluations(id)?
            .into_iter()
            .filter(|o| o.task.split == split && o.task.seed < u64::from(n))
            .collect())
    }

    /// [`Search::final_so_far`] while the select split is played: its harnesses' scores on
    /// the tasks each has played, pruning's trials named as such.
    fn select_so_far(&self) -> Result<Option<(Final, Vec<Paired>)>> {
        let select = self.exp.suites[0].select_split;
        let Some((split, ids, n)) = &self.stage else {
            return Ok(None);
        };
        if *split != select {
            return Ok(None);
        }
        let mut f = Final::default();
        for id in ids {
            let outs = self.played(id, select, *n)?;
            if outs.is_empty() {
                continue;
            }
            let fit = Fitness::of(&outs, 0.95);
            f.select.push((*id, fit.success));
            f.select_progress.push((*id, fit.progress));
            if self.store.lineage(id)?.is_some_and(|l| l.operator == PRUNE) {
                f.select_roles.push((*id, PRUNE_TRIAL.to_owned()));
            }
        }
        Ok((!f.select.is_empty()).then_some((f, Vec::new())))
    }

    fn checkpoint(
        &mut self,
        phase: &str,
        stopped: Option<String>,
        final_: Option<Final>,
    ) -> Result<()> {
        let ended = final_.is_some();
        let st = self.status(phase, stopped, final_);
        // A point when best or median moved (and the latest time at the end), so the
        // history grows with progress, not with the clock.
        if let Some((_, best)) = &st.best {
            let moved = self
                .history
                .last()
                .is_none_or(|&(_, b, m)| b != best.rate || m != st.median);
            if moved || ended {
                self.history.push((st.elapsed_s, best.rate, st.median));
                self.store.set_meta("history", &self.history)?;
            }
        }
        self.store.set_meta("elapsed_s", &st.elapsed_s)?;
        self.store.set_meta("tokens", &self.tokens)?;
        self.store.set_meta("episodes_run", &self.episodes_run)?;
        self.store.flush()?;
        write_status(
            self.store.path(),
            &Status {
                history: self.history.clone(),
                ..st
            },
        )
    }

    /// Runs the search to its budget, then the final stage. Returns the final status.
    pub fn run(&mut self) -> Result<Status> {
        let done: Option<Final> = self.store.meta("final")?;
        if let Some(f) = done {
            let st = self.status("done", Some("the run had ended".into()), Some(f));
            write_status(self.store.path(), &st)?;
            return Ok(st);
        }
        // A status from the start, so `hx status`, the live view and the progress display
        // have something to show before the first result.
        self.checkpoint("searching", None, None)?;
        let bound = self.exp.population.jobs_in_flight;
        let mut heard = Heard::default();
        let stopped = loop {
            let spent = self.spent();
            let mut fresh = Vec::new();
            if spent.is_none() {
                // Episodes out count against the evaluation budget, so the run ends within
                // one job of it rather than `jobs-in-flight` jobs past it.
                let mut committed = self.committed_evaluations();
                while self.out.len() + fresh.len() < bound
                    && committed < self.exp.budget.evaluations
                {
                    match self.next_job()? {
                        Some(j) => {
                            committed += j.job.tasks.tasks().count() as u64;
                            fresh.push(j);
                        }
                        None => break,
                    }
                }
            }
            self.send_all(fresh, std::mem::take(&mut heard))?;
            if self.out.is_empty() {
                break spent.unwrap_or_else(|| "nothing left to evaluate".into());
            }
            heard = self.hear()?;
            self.stop_if_asked(&mut heard)?;
            // Jobs out and time spent change without results too. Once the budget is spent,
            // the jobs still out (after a resumption, those of any stage) are finishing.
            let phase = if spent.is_some() {
                "finishing"
            } else {
                "searching"
            };
            self.checkpoint_now_and_then(phase, false)?;
        };
        (self.say)(&format!("search stopped: {stopped}"));
        self.store.set_meta("stopped", &stopped)?;
        let f = self.finish()?;
        self.store.set_meta("final", &f)?;
        self.checkpoint("done", Some(stopped.clone()), Some(f.clone()))?;
        Ok(self.status("done", Some(stopped), Some(f)))
    }

    /// Evaluates `harnesses` on `split` seeds `0..n` through the bus (cached pairs skipped)
    /// and returns each one's fitness there (95% intervals).
    ///
    /// A best-of harness (the equal-budget baseline) whose base harness is scored here too
    /// does not play its base's episode again: that episode is its first (sampling stream 0).
    /// Where it plays a single episode ([`Harness::single_episode_as`]), the task takes the
    /// base's recorded outcome; where it plays several, its rest ([`Harness::best_of_rest`])
    /// plays the others, and the task's outcome is the more certain of the two
    /// ([`TaskOutcome::best_of`]), as if the best-of had played them all. A base outcome
    /// without its certainty (recorded by an older build) has the best-of play the task whole.
    fn evaluate_on(&mut self, harnesses: &[Harness], split: Split, n: u32) -> Result<Vec<Fitness>> {
        self.stage = Some((split, harnesses.iter().map(Harness::id).collect(), n));
        // The step's start in the status at once (it may take hours).
        self.checkpoint("final", None, None)?;
        let fits = self.play_on(harnesses, split, n);
        self.stage = None;
        fits
    }

    /// [`Search::evaluate_on`]'s work.
    fn play_on(&mut self, harnesses: &[Harness], split: Split, n: u32) -> Result<Vec<Fitness>> {
        let task = |seed: u64| TaskRef {
            suite: self.suite().to_owned(),
            split,
            seed,
        };
        let mut pending = Vec::new();
        let mut joins: Vec<Join> = Vec::new();
        for h in harnesses {
            let base = h
                .best_of_base()
                .filter(|b| harnesses.iter().any(|x| x.id() == b.id()));
            let rest = base.as_ref().and_then(|_| h.best_of_rest());
            let (mut seeds, mut rest_seeds) = (Vec::new(), Vec::new());
            for s in 0..u64::from(n) {
                let t = task(s);
                if self.store.evaluation(&h.id(), &t)?.is_some() {
                    continue;
                }
                let Some(b) = &base else {
                    seeds.push(s);
                    continue;
                };
                if h.single_episode_as(s).is_some() {
                    joins.push(Join {
                        harness: h.id(),
                        base: b.id(),
                        rest: None,
                        task: t,
                    });
                    continue;
                }
                let known = self.store.evaluation(&b.id(), &t)?;
                match &rest {
                    Some(r) if known.is_none_or(|o| o.confidence.is_some()) => {
                        if self.store.evaluation(&r.id(), &t)?.is_none() {
                            rest_seeds.push(s);
                        }
                        joins.push(Join {
                            harness: h.id(),
                            base: b.id(),
                            rest: Some(r.id()),
                            task: t,
                        });
                    }
                    _ => seeds.push(s),
                }
            }
            if !seeds.is_empty() {
                pending.push((h.clone(), seeds));
            }
            if let Some(r) = rest.filter(|_| !rest_seeds.is_empty()) {
                // Named in the store as the best-of's part, never a candidate.
                self.name_final_only(&r, BEST_OF_REST, vec![h.id()])?;
                pending.push((r, rest_seeds));
            }
        }
        let (single, joined) = joins.iter().fold((0, 0), |(a, b), j| match j.rest {
            None => (a + 1, b),
            Some(_) => (a, b + 1),
        });
        if single > 0 {
            (self.say)(&format!(
                "final: {single} {split} task(s) where a best-of plays one episode take its \
                 base's outcome"
            ));
        }
        if joined > 0 {
            (self.say)(&format!(
                "final: {joined} {split} task(s) where a best-of plays several keep its base's \
                 episode as the first and play the others"
            ));
        }
        let mut whole = self.join_outcomes(&mut joins)?;
        // Jobs of at most the first rung's size, in rounds over the harnesses: a killed run
        // loses at most the jobs out, and what is recorded stays comparable across harnesses.
        let chunk = self.rungs().first().copied().unwrap_or(8).max(1) as usize;
        let mut rounds: Vec<(usize, usize, Harness, Vec<u64>)> = Vec::new();
        for (i, (h, seeds)) in pending.into_iter().enumerate() {
            for (r, part) in seeds.chunks(chunk).enumerate() {
                rounds.push((r, i, h.clone(), part.to_vec()));
            }
        }
        rounds.sort_by_key(|(r, i, _, _)| (*r, *i));
        let bound = self.exp.population.jobs_in_flight;
        let mut queue: std::collections::VecDeque<(Harness, Vec<u64>)> = rounds
            .into_iter()
            .map(|(_, _, h, seeds)| (h, seeds))
            .collect();
        let mut heard = Heard::default();
        loop {
            // A task whose best-of outcome could not be joined is played whole.
            for (id, seed) in whole.drain(..) {
                if let Some(h) = harnesses.iter().find(|h| h.id() == id) {
                    queue.push_back((h.clone(), vec![seed]));
                }
            }
            let mut fresh = Vec::new();
            while self.out.len() + fresh.len() < bound {
                let Some((h, seeds)) = queue.pop_front() else {
                    break;
                };
                let jid = self.store.next_job_id()?;
                fresh.push(self.job(jid, JobKind::Evaluate { harness: h }, split, seeds));
            }
            self.send_all(fresh, std::mem::take(&mut heard))?;
            if self.out.is_empty() {
                whole = self.join_outcomes(&mut joins)?;
                if whole.is_empty() {
                    break;
                }
                continue;
            }
            heard = self.hear()?;
            self.stop_if_asked(&mut heard)?;
            whole = self.join_outcomes(&mut joins)?;
            self.checkpoint_now_and_then("final", false)?;
        }
        harnesses
            .iter()
            .map(|h| Ok(Fitness::of(&self.played(&h.id(), split, n)?, 0.95)))
            .collect()
    }

    /// Names a harness the final stage makes (never a candidate) in the store with its
    /// lineage, where the store does not know it yet, so a resumed run and the report know it.
    fn name_final_only(&self, h: &Harness, operator: &str, parents: Vec<HarnessId>) -> Result<()> {
        if self.store.lineage(&h.id())?.is_none() {
            self.store.put_harness(h)?;
            self.store.put_lineage(
                &h.id(),
                &Lineage {
                    parents,
                    operator: operator.into(),
                    adopted: vec![],
                    job: None,
                    at_ms: 0,
                },
            )?;
        }
        Ok(())
    }

    /// Records each best-of outcome in `joins` whose parts are recorded (the base's, and the
    /// rest's where it plays several); those done leave the list. Returns the `(harness,
    /// seed)` pairs whose parts are recorded but cannot be joined (an outcome without its
    /// certainty): those are to be played whole.
    fn join_outcomes(&mut self, joins: &mut Vec<Join>) -> Result<Vec<(HarnessId, u64)>> {
        let mut left = Vec::new();
        let mut whole = Vec::new();
        for j in joins.drain(..) {
            let Some(first) = self.store.evaluation(&j.base, &j.task)? else {
                left.push(j);
                continue;
            };
            let o = match j.rest {
                None => Some(first),
                Some(r) => match self.store.evaluation(&r, &j.task)? {
                    None => {
                        left.push(j);
                        continue;
                    }
                    Some(rest) => TaskOutcome::best_of(&first, &rest),
                },
            };
            match o {
                Some(o) => {
                    self.store.record_evaluation(&j.harness, &o)?;
                }
                None => whole.push((j.harness, j.task.seed)),
            }
        }
        *joins = left;
        Ok(whole)
    }
    /// The final stage: finalists on the select split, then the chosen one and the seeds on
    /// the test split.
    fn finish(&mut self) -> Result<Final> {
        let mut ranked: Vec<&Cand> = self.raced().collect();
        ranked.sort_by(|a, b| {
            b.fitness()
                .rank(&a.fitness())
                .then(a.harness.id().cmp(&b.harness.id()))
        });
        let mut finalists: Vec<Harness> = ranked
            .into_iter()
            .take(self.exp.racing.finalists)
            .map(|c| c.harness.clone())
            .collect();
        if finalists.is_empty() {
            return Ok(Final::default());
        }
        if self.exp.racing.seeds_in_select {
            for s in &self.seeds {
                if !finalists.iter().any(|f| f.id() == s.id()) {
                    finalists.push(s.clone());
                }
            }
        }
        let select_split = self.exp.suites[0].select_split;
        (self.say)(&format!(
            "final: {} finalists on {} {} tasks",
            finalists.len(),
            self.exp.racing.select_tasks,
            select_split
        ));
        let fits = self.evaluate_on(&finalists, select_split, self.exp.racing.select_tasks)?;
        let select: Vec<(HarnessId, Fitness)> =
            finalists.iter().map(|h| h.id()).zip(fits).collect();
        // On a tie a seed is kept: a change needs evidence.
        let is_seed = |id: &HarnessId| self.seeds.iter().any(|s| s.id() == *id);
        let best = select
            .iter()
            .max_by(|a, b| {
                a.1.rank(&b.1)
                    .then(is_seed(&a.0).cmp(&is_seed(&b.0)))
                    .then(b.0.cmp(&a.0))
            })
            .map(|(id, _)| *id)
            .expect("finalists");
        let mut select = select;
        let unpruned = best;
        let (best, chosen, trials) = self.pruned_choice(&finalists, &select, best, select_split)?;
        select.extend(trials.iter().copied());
        let mut test_set = vec![chosen.clone()];
        let mut roles = vec![(best, "chosen".to_owned())];
        for (s, role) in self
            .seeds
            .iter()
            .map(|s| (s, "seed"))
            .chain(self.arms.iter().map(|a| (a, arm_role(a))))
        {
            if !test_set.iter().any(|t| t.id() == s.id()) {
                test_set.push(s.clone());
                roles.push((s.id(), role.to_owned()));
            }
        }
        let mut extra: Vec<(Harness, &str, String)> = self
            .arms
            .iter()
            .map(|a| (a.clone(), ARM, String::new()))
            .collect();
        if self.exp.racing.equal_budget
            && let Some((h, role)) = self.equal_budget(&best)?
        {
            extra.push((h, EQUAL_BUDGET, role));
        }
        if self.exp.racing.rewriting_off
            && let Some(c) = chosen.in_group("rewrite-policy")
        {
            let off = chosen
                .apply(&hx_common::harness::Edit::Remove {
                    name: c.name.clone(),
                })
                .map_err(|e| anyhow::anyhow!("the chosen harness without its rewriting: {e}"))?;
            extra.push((off, REWRITING_OFF, "chosen, rewriting off".into()));
        }
        for (h, operator, role) in extra {
            // Named in the store, so a resumed run and the report know it.
            self.name_final_only(
                &h,
                operator,
                if operator == ARM { vec![] } else { vec![best] },
            )?;
            if !test_set.iter().any(|t| t.id() == h.id()) {
                test_set.push(h.clone());
                roles.push((h.id(), role));
            }
        }
        // Pruning's harnesses played the select split alone (unless also in the comparison).
        let mut select_roles = Vec::new();
        if unpruned != best && !roles.iter().any(|(id, _)| *id == unpruned) {
            select_roles.push((unpruned, CHOSEN_BEFORE_PRUNING.to_owned()));
        }
        for (id, _) in &trials {
            if !roles.iter().chain(&select_roles).any(|(r, _)| r == id) {
                select_roles.push((*id, PRUNE_TRIAL.to_owned()));
            }
        }
        self.final_roles = roles
            .iter()
            .filter(|(_, r)| !r.is_empty())
            .cloned()
            .collect();
        // The comparison so far (all of it, after a resumption) in the status at once.
        self.checkpoint("final", None, None)?;
        // The held-out splits, each on the same seeds for every harness (common random
        // numbers), so differences between them are paired.
        let mut held = Vec::new();
        // The in-distribution held-out split first: a run cut short has the comparison on
        // the tasks most like the ones it searched on.
        for (split, n) in [
            (Split::Heldout, self.exp.racing.heldout_tasks),
            (Split::Test, self.exp.racing.test_tasks),
        ] {
            if n == 0 {
                held.push(Vec::new());
                continue;
            }
            (self.say)(&format!(
                "final: the chosen harness and {} seed and arm harness(es) on {n} {split} tasks",
                test_set.len() - 1,
            ));
            let fits = self.evaluate_on(&test_set, split, n)?;
            held.push(test_set.iter().map(|h| h.id()).zip(fits).collect());
        }
        let parts = |v: &[(HarnessId, Fitness)]| {
            v.iter()
                .map(|(id, f)| ((*id, f.success), (*id, f.progress)))
                .unzip()
        };
        let tokens = |v: &[(HarnessId, Fitness)]| {
            v.iter().map(|(id, f)| (*id, f.tokens)).collect::<Vec<_>>()
        };
        let (select, select_progress) = parts(&select);
        let (heldout, heldout_progress) = parts(&held[0]);
        let (test, test_progress) = parts(&held[1]);
        Ok(Final {
            best: Some(best),
            select,
            test,
            select_progress,
            test_progress,
            heldout,
            heldout_progress,
            roles: roles.into_iter().filter(|(_, r)| !r.is_empty()).collect(),
            select_roles,
            heldout_tokens: tokens(&held[0]),
            test_tokens: tokens(&held[1]),
        })
    }

    /// The chosen harness for the held-out comparison: the select split's `best` among
    /// `finalists` (their fitness there in `select`), pruned where `racing.prune` says
    /// ([`Search::prune`]); with the select fitness of every removal tried. The choice is
    /// stored before the held-out comparison begins and a resumed run keeps it, whatever the
    /// option says now; a run whose held-out comparison began before choices were stored (an
    /// earlier build) keeps `best` unpruned.
    fn pruned_choice(
        &mut self,
        finalists: &[Harness],
        select: &[(HarnessId, Fitness)],
        best: HarnessId,
        split: Split,
    ) -> Result<(HarnessId, Harness, Trials)> {
        const KEY: &str = "final/chosen";
        let unpruned = self.cands[&best].harness.clone();
        // (the choice, whether it was pruned), stored when first made.
        let stored: Option<(HarnessId, bool)> = self.store.meta(KEY)?;
        let prune = match stored {
            Some((_, pruned)) => pruned,
            None if !self.exp.racing.prune => false,
            None => {
                let begun = self
                    .store
                    .evaluations(&best)?
                    .iter()
                    .any(|o| matches!(o.task.split, Split::Heldout | Split::Test));
                if begun {
                    (self.say)(&format!(
                        "final: {} was scored on held-out tasks unpruned; kept as it is",
                        best.short()
                    ));
                }
                !begun
            }
        };
        let (chosen, trials) = if prune {
            let fit = select
                .iter()
                .find(|(id, _)| *id == best)
                .map(|(_, f)| *f)
                .expect("the chosen harness is a finalist");
            let ids: Vec<HarnessId> = finalists.iter().map(Harness::id).collect();
            self.prune(unpruned, fit, &ids, split)?
        } else {
            (unpruned, Vec::new())
        };
        match stored {
            Some((id, _)) if id != chosen.id() => {
                let h = self
                    .store
                    .harness(&id)?
                    .ok_or_else(|| anyhow::anyhow!("the stored choice {id} is not in the store"))?;
                (self.say)(&format!(
                    "final: {} as chosen before this resumption (now it would be {})",
                    id.short(),
                    chosen.id().short()
                ));
                Ok((id, h, trials))
            }
            Some(_) => Ok((chosen.id(), chosen, trials)),
            None => {
                self.store.set_meta(KEY, &(chosen.id(), prune))?;
                Ok((chosen.id(), chosen, trials))
            }
        }
    }

    /// [`RacingOptions::prune`]: `chosen` (its select-split fitness `fit`) without each
    /// component the first seed lacks, one at a time in the harness's order, each on the same
    /// select tasks; a removal is kept where it wins at least as many at no more tokens per
    /// episode, and the next removal starts from it. A removal that gives back one of
    /// `finalists` (the seed among them) is not tried: the choice already compared it.
    /// Returns the harness kept and every removal's select fitness. Deterministic: a resumed
    /// run (its select episodes cached) comes to the same harness and plays nothing again.
    ///
    /// [`RacingOptions::prune`]: hx_common::config::RacingOptions::prune
    fn prune(
        &mut self,
        chosen: Harness,
        fit: Fitness,
        finalists: &[HarnessId],
        split: Split,
    ) -> Result<(Harness, Trials)> {
        let Some(seed) = self.seeds.first() else {
            return Ok((chosen, Vec::new()));
        };
        let added: Vec<(String, Kind)> = chosen
            .components()
            .filter(|c| seed.component(&c.name).is_none_or(|s| s.kind != c.kind))
            .map(|c| (c.name.clone(), c.kind))
            .collect();
        if added.is_empty() {
            return Ok((chosen, Vec::new()));
        }
        let (mut cur, mut cur_fit) = (chosen, fit);
        let mut trials = Vec::new();
        for (name, kind) in added {
            let Ok(h) = cur.apply(&hx_common::harness::Edit::Remove { name: name.clone() }) else {
                continue; // a component the harness cannot do without
            };
            // A parameter the component woke (the few-shot's example prior) goes with it.
            let h = hx_common::harness::mutate::settle(&h);
            if finalists.contains(&h.id()) {
                continue;
            }
            self.name_final_only(&h, PRUNE, vec![cur.id()])?;
            let n = self.exp.racing.select_tasks;
            let f = self
                .evaluate_on(std::slice::from_ref(&h), split, n)?
                .pop()
                .expect("one fitness per harness");
            let kept =
                f.success.successes >= cur_fit.success.successes && f.tokens <= cur_fit.tokens;
            (self.say)(&format!(
                "final: {} without its {kind} `{name}` is {}: {}/{n} {split} tasks won against {}, {:.0} tokens per episode against {:.0}: {}",
                cur.id().short(),
                h.id().short(),
                f.success.successes,
                cur_fit.success.successes,
                f.tokens,
                cur_fit.tokens,
                if kept { "kept" } else { "not kept" }
            ));
            trials.push((h.id(), f));
            if kept {
                (cur, cur_fit) = (h, f);
            }
        }
        Ok((cur, trials))
    }

    /// The equal-budget baseline for the chosen harness `best`: the first seed with a
    /// `best-of` component playing as many episodes per task as the chosen harness's tokens
    /// per episode are a multiple of the seed's, both measured on the tasks both played on the
    /// search and select splits (the test and heldout splits are not read to set it; the
    /// select split's tasks triple the evidence of a chosen harness raced only to an early
    /// rung). `None`, said why, where the chosen harness is the seed or spends no more than 5%
    /// above it per task: the seed is then its own equal-budget baseline. A run resumed after
    /// its final stage began keeps the baseline it made then.
    fn equal_budget(&mut self, best: &HarnessId) -> Result<Option<(Harness, String)>> {
        let Some(seed) = self.seeds.first().cloned() else {
            return Ok(None);
        };
        if seed.id() == *best {
            (self.say)("final: the chosen harness is the seed; no equal-budget baseline needed");
            return Ok(None);
        }
        let role = |h: &Harness| format!("equal-budget: seed best of {:.2}", h.best_of_samples());
        for h in self.store.harnesses()? {
            let Some(l) = self.store.lineage(&h.id())? else {
                continue;
            };
            if l.operator == EQUAL_BUDGET && l.parents == [*best] {
                (self.say)(&format!(
                    "final: equal-budget baseline {} as made before (best of {:.2})",
                    h.id().short(),
                    h.best_of_samples()
                ));
                let r = role(&h);
                return Ok(Some((h, r)));
            }
        }
        let Some(s) = self.cands.get(&seed.id()) else {
            return Ok(None);
        };
        // A pruned choice (no candidate) played the select split alone.
        let none = BTreeMap::new();
        let c_search = self.cands.get(best).map_or(&none, |c| &c.search);
        // Tokens of both on each task both played: the search split, then the select split.
        let mut pairs: Vec<(u64, u64)> = c_search
            .iter()
            .filter_map(|(k, o)| s.search.get(k).map(|so| (o.tokens, so.tokens)))
            .collect();
        let on_search = pairs.len();
        let select = self.exp.suites[0].select_split;
        for n in 0..u64::from(self.exp.racing.select_tasks) {
            let t = TaskRef {
                suite: self.suite().to_owned(),
                split: select,
                seed: n,
            };
            if let (Some(a), Some(b)) = (
                self.store.evaluation(best, &t)?,
                self.store.evaluation(&seed.id(), &t)?,
            ) {
                pairs.push((a.tokens, b.tokens));
            }
        }
        let (theirs, ours): (Vec<u64>, Vec<u64>) = if pairs.is_empty() {
            // No task both played: each one's mean over what it played on the search and
            // select splits (a pruned choice played the select split alone).
            let ours = s.search.values().map(|o| o.tokens).collect();
            let theirs: Vec<u64> = self
                .store
                .evaluations(best)?
                .iter()
                .filter(|o| o.task.split == self.search_split() || o.task.split == select)
                .map(|o| o.tokens)
                .collect();
            if theirs.is_empty() {
                (self.say)(&format!(
                    "final: no episode of the chosen harness {} on the search or select split \
                     to set an equal-budget baseline by; none scored",
                    best.short()
                ));
                return Ok(None);
            }
            (theirs, ours)
        } else {
            pairs.iter().copied().unzip()
        };
        let mean = |xs: &[u64]| xs.iter().sum::<u64>() as f64 / xs.len().max(1) as f64;
        let (theirs, ours) = (mean(&theirs), mean(&ours));
        let ratio = theirs / ours.max(1.0);
        let name = seed.id().short();
        if ratio <= 1.05 {
            (self.say)(&format!(
                "final: the chosen harness spends {theirs:.0} tokens per episode, the seed \
                 {name} {ours:.0}: the seed is its own equal-budget baseline"
            ));
            return Ok(None);
        }
        let samples = ratio.min(hx_common::harness::catalog::MAX_SAMPLES);
        let h = seed
            .with_best_of(samples)
            .map_err(|e| anyhow::anyhow!("the equal-budget baseline of {name}: {e}"))?;
        (self.say)(&format!(
            "final: equal-budget baseline {}: seed {name} best of {:.2} episodes per task \
             ({theirs:.0} against {ours:.0} tokens per episode on {on_search} search and {} \
             select tasks both played)",
            h.id().short(),
            h.best_of_samples(),
            pairs.len() - on_search
        ));
        let r = role(&h);
        Ok(Some((h, r)))
    }
}

/// [`Search::clone_of`] over `cands`, racing by `rungs`.
fn clone_of(cands: &HashMap<HarnessId, Cand>, rungs: &[u32], c: &Cand) -> Option<HarnessId> {
    let first = u64::from(*rungs.first()?);
    if (c.search.len() as u64) < first {
        return None;
    }
    let same = |a: &TaskOutcome, b: &TaskOutcome| {
        (a.won, a.steps, a.tokens, a.score.to_bits())
            == (b.won, b.steps, b.tokens, b.score.to_bits())
    };
    let id = c.harness.id();
    cands
        .values()
        .filter(|d| {
            let did = d.harness.id();
            d.search.len() > c.search.len() || (d.search.len() == c.search.len() && did < id)
        })
        .filter(|d| {
            c.search
                .iter()
                .all(|(seed, o)| d.search.get(seed).is_some_and(|p| same(o, p)))
        })
        .map(|d| d.harness.id())
        .min()
}

fn humantime_format(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// Writes `status.json` beside the store (atomically: readers never see half a file).
pub fn write_status(store: &Path, st: &Status) -> Result<()> {
    let path = status_path(store);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(st)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The file beside a store that holds its live status.
pub const STATUS_FILE: &str = "status.json";

/// Where a store's live status is.
pub fn status_path(store: &Path) -> std::path::PathBuf {
    store.join(STATUS_FILE)
}

/// Reads a store's live status.
pub fn read_status(store: &Path) -> Result<Status> {
    let path = status_path(store);
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "no status at {} (is {} a run's store?)",
            path.display(),
            store.display()
        )
    })?;
    serde_json::from_slice(&text).with_context(|| format!("{} does not parse", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(scores: &[f32]) -> Vec<TaskOutcome> {
        scores
            .iter()
            .enumerate()
            .map(|(i, &score)| TaskOutcome {
                task: TaskRef {
                    suite: "household".into(),
                    split: Split::Train,
                    seed: i as u64,
                },
                won: score >= 1.0,
                score,
                steps: 10,
                tokens: 1000,
                wall_ms: 1,
                confidence: None,
            })
            .collect()
    }

    #[test]
    fn a_candidate_that_plays_exactly_as_another_is_a_clone() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/harnesses/react.toml"
        ))
        .expect("shipped harness");
        let react = hx_common::harness::format::parse_as(
            &text,
            hx_common::harness::format::Format::Toml,
            "react.toml",
        )
        .expect("valid");
        let variant = |t: f64| {
            react
                .apply(&hx_common::harness::Edit::SetParameter {
                    component: "act".into(),
                    param: "temperature".into(),
                    value: hx_common::harness::param::ParamValue::Float(t),
                })
                .expect("valid edit")
        };
        let cand = |harness: Harness, outs: Vec<TaskOutcome>| Cand {
            harness,
            search: outs.into_iter().map(|o| (o.task.seed, o)).collect(),
            busy: false,
            feedback: Feedback::default(),
            operator: "structural".into(),
            parents: Vec::new(),
            confidence: 0.9,
        };
        let played = outcomes(&[1.0, 0.2, 0.5, 0.0, 1.0, 0.3, 0.6, 0.1]);
        let rungs = [4, 8];
        let parent = cand(react.clone(), played.clone());
        let same = cand(variant(0.5), played[..4].to_vec());
        let mut off = played[..4].to_vec();
        off[2].tokens += 1;
        let other = cand(variant(0.7), off);
        let short = cand(variant(0.9), played[..2].to_vec());
        let mut cands = HashMap::new();
        for c in [&parent, &same, &other, &short] {
            cands.insert(c.harness.id(), c.clone());
        }
        assert_eq!(clone_of(&cands, &rungs, &same), Some(react.id()));
        assert_eq!(clone_of(&cands, &rungs, &parent), None, "it played more");
        assert_eq!(clone_of(&cands, &rungs, &other), None, "one prompt differs");
        assert_eq!(
            clone_of(&cands, &rungs, &short),
            None,
            "its first rung is not done"
        );
        // Two twins alone: exactly one of them goes on.
        let twins = [cand(variant(0.3), played[..4].to_vec()), same.clone()];
        let cands: HashMap<HarnessId, Cand> =
            twins.iter().map(|c| (c.harness.id(), c.clone())).collect();
        let stopped = twins
            .iter()
            .filter(|c| clone_of(&cands, &rungs, c).is_some())
            .count();
        assert_eq!(stopped, 1);
    }

    #[test]
    fn selection_prefers_higher_progress_when_success_ties() {
        // No wins either side: progress decides, in the ranking and in racing.
        let far = Fitness::of(&outcomes(&[0.5, 0.6, 0.5, 0.55, 0.6, 0.5]), 0.95);
        let near = Fitness::of(&outcomes(&[0.1, 0.2, 0.1, 0.15, 0.2, 0.1]), 0.95);
        assert_eq!(far.rank(&near), Ordering::Greater);
        assert!(near.clearly_below(&far));
        assert!(!far.clearly_below(&near));
        // Overlapping success (1 of 6 against 2 of 6): progress still decides racing.
        let mut one = outcomes(&[1.0, 0.1, 0.1, 0.2, 0.1, 0.15]);
        one[0].won = true;
        let two = Fitness::of(&outcomes(&[1.0, 1.0, 0.7, 0.8, 0.75, 0.7]), 0.95);
        assert!(Fitness::of(&one, 0.95).clearly_below(&two));
        // Same progress: the cheaper harness ranks higher.
        let mut cheap = outcomes(&[0.5, 0.6, 0.5]);
        for o in &mut cheap {
            o.tokens = 10;
        }
        let dear = Fitness::of(&outcomes(&[0.5, 0.6, 0.5]), 0.95);
        assert_eq!(Fitness::of(&cheap, 0.95).rank(&dear), Ordering::Greater);
    }

    #[test]
    fn paired_differences_stop_a_candidate_that_separate_intervals_cannot() {
        // Tasks of very different difficulty; the candidate does a little worse on each.
        let theirs: Vec<f32> = vec![0.9, 0.1, 0.6, 0.3, 0.8, 0.2, 0.7, 0.4];
        let mine: Vec<f32> = theirs.iter().map(|s| s - 0.1).collect();
        let by_seed = |v: &[f32]| -> BTreeMap<u64, TaskOutcome> {
            outcomes(v).into_iter().map(|o| (o.task.seed, o)).collect()
        };
        let (m, t) = (by_seed(&mine), by_seed(&theirs));
        assert!(!Fitness::of(m.values(), 0.9).clearly_below(&Fitness::of(t.values(), 0.9)));
        assert!(paired_below(&m, &t, 0.9));
        assert!(!paired_below(&t, &m, 0.9));
        // Mixed differences: not below.
        let mixed: Vec<f32> = theirs
            .iter()
            .enumerate()
            .map(|(i, s)| if i % 2 == 0 { s - 0.1 } else { s + 0.1 })
            .collect();
        assert!(!paired_below(&by_seed(&mixed), &t, 0.9));
        // Only tasks both played count, and one pair decides nothing.
        let one: BTreeMap<u64, TaskOutcome> =
            m.iter().take(1).map(|(k, v)| (*k, v.clone())).collect();
        assert!(!paired_below(&one, &t, 0.9));
    }

    #[test]
    fn success_outranks_progress_when_its_intervals_are_apart() {
        let wins = Fitness::of(&outcomes(&[1.0; 12]), 0.95);
        let close = Fitness::of(&outcomes(&[0.9; 12]), 0.95);
        assert!(close.clearly_below(&wins));
        assert_eq!(wins.rank(&close), Ordering::Greater);
        // Wide progress intervals that overlap: nobody is clearly below.
        let a = Fitness::of(&outcomes(&[0.0, 0.9, 0.1]), 0.95);
        let b = Fitness::of(&outcomes(&[0.2, 0.3, 0.1]), 0.95);
        assert!(!a.clearly_below(&b) && !b.clearly_below(&a));
    }

    #[test]
    fn the_operator_bandit_draws_by_smoothed_improvement_rate() {
        let stat = |improved, compared, refused| OperatorStat {
            improved,
            compared,
            refused,
            ..OperatorStat::default()
        };
        let mut stats = BTreeMap::new();
        // parametric beat its parent 6 times of 8: weight 7/10; text was refused 8 times and
        // never compared: weight 1/10; structural has no record: 1/2.
        stats.insert("parametric".to_owned(), stat(6, 8, 0));
        stats.insert("text".to_owned(), stat(0, 0, 8));
        assert!((stats["parametric"].weight() - 0.7).abs() < 1e-12);
        assert!((stats["text"].weight() - 0.1).abs() < 1e-12);
        let ops = ["structural", "parametric", "text"];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut drawn = [0u32; 3];
        for _ in 0..13_000 {
            drawn[choose_operator(&ops, &stats, &mut rng)] += 1;
        }
        // Expected 5000, 7000 and 1000 of 13,000.
        assert!((4_600..5_400).contains(&drawn[0]), "{drawn:?}");
        assert!((6_600..7_400).contains(&drawn[1]), "{drawn:?}");
        assert!((800..1_200).contains(&drawn[2]), "{drawn:?}");
        // With no record at all, every operator is as likely.
        let none = BTreeMap::new();
        let mut drawn = [0u32; 3];
        for _ in 0..3_000 {
            drawn[choose_operator(&ops, &none, &mut rng)] += 1;
        }
        assert!(drawn.iter().all(|n| (850..1_150).contains(n)), "{drawn:?}");
    }
}
