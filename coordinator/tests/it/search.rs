//! The search's control flow over a scripted job bus (a test double that answers jobs with
//! outcomes drawn from the harness id and task, out of order): the in-flight bound, the test
//! split held out, resume after a kill, every child valid. The real model and worlds are
//! exercised by `hx evolve` itself (see BENCHMARKS.md).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hx_common::config::{Experiment, parse_toml};
use hx_common::harness::catalog::best_of_episodes;
use hx_common::harness::{Component, Edit, Kind};
use hx_common::harness::{Harness, HarnessId, format};
use hx_common::protocol::{
    self, Job, JobKind, JobResult, JobStatus, MutationOp, MutationSpec, TaskOutcome, Usage,
};
use hx_common::stats::Rate;
use hx_common::task::{Split, TaskRef};
use hx_coordinator::bus::{Delivery, JobBus};
use hx_coordinator::search::Search;
use hx_coordinator::store::{Lineage, Store};

/// What the scripted workers did, shared across buses (a resumed run uses a new bus).
#[derive(Default)]
struct Log {
    evaluated: Vec<(String, TaskRef)>,
    splits: Vec<Split>,
    /// Tasks per job, in the order jobs were sent.
    sizes: Vec<usize>,
    max_out: usize,
    /// Jobs out when the first answer was asked for.
    out_at_first_answer: Option<usize>,
}

impl Log {
    /// No (harness, task) pair was evaluated twice, across kills and resumes.
    fn assert_no_pair_twice(&self) {
        let pairs: BTreeSet<_> = self.evaluated.iter().collect();
        assert_eq!(
            pairs.len(),
            self.evaluated.len(),
            "a pair was evaluated twice"
        );
    }
}

struct Scripted {
    queue: VecDeque<Job>,
    log: Arc<Mutex<Log>>,
    /// Answer this many jobs, then fail as a killed coordinator's bus would (at the next
    /// answer due).
    answers_left: Option<usize>,
    turn: u64,
    /// Which episodes are won: [`wins`] unless a test sets its own world.
    rule: fn(&Harness, &TaskRef) -> bool,
    /// Sets the flag as it answers the first job of the split, as Ctrl-C would.
    ask_to_stop: Option<(Split, Arc<AtomicBool>)>,
}

impl Scripted {
    fn new(log: &Arc<Mutex<Log>>, answers: Option<usize>) -> Scripted {
        Scripted {
            queue: VecDeque::new(),
            log: Arc::clone(log),
            answers_left: answers,
            turn: 0,
            rule: wins,
            ask_to_stop: None,
        }
    }
}

/// A deterministic "success" that favours harnesses with more components.
fn wins(h: &Harness, task: &TaskRef) -> bool {
    let x = h.id().0[0] as u64 * 31 + task.seed * 17 + h.len() as u64 * 7;
    (x % 10) < (h.len() as u64).min(8)
}

impl JobBus for Scripted {
    fn submit(&mut self, job: &Job) -> anyhow::Result<()> {
        let job: Job = protocol::decode(&protocol::encode(job)?)?;
        let mut log = self.log.lock().unwrap();
        log.splits.push(job.tasks.split);
        log.sizes.push(job.tasks.tasks().count());
        self.queue.push_back(job);
        log.max_out = log.max_out.max(self.queue.len());
        Ok(())
    }

    fn recv(&mut self, _: Duration) -> anyhow::Result<Option<Delivery>> {
        if self.queue.is_empty() {
            return Ok(None);
        }
        if let Some(n) = &mut self.answers_left {
            if *n == 0 {
                anyhow::bail!("killed");
            }
            *n -= 1;
        }
        let out = self.queue.len();
        self.log
            .lock()
            .unwrap()
            .out_at_first_answer
            .get_or_insert(out);
        // Out of order: every other answer comes from the back of the queue.
        self.turn += 1;
        let job = if self.turn.is_multiple_of(2) {
            self.queue.pop_back()
        } else {
            self.queue.pop_front()
        }
        .expect("a job");
        if let Some((split, flag)) = &self.ask_to_stop
            && job.tasks.split == *split
        {
            flag.store(true, Ordering::SeqCst);
        }
        // What a reflective worker reports beside its child.
        let mut reflective = None;
        let child = match &job.kind {
            JobKind::Evaluate { harness } => harness.clone(),
            JobKind::MutateAndEvaluate {
                parent,
                mutation:
                    MutationSpec {
                        op: MutationOp::Reflect { episodes, .. },
                        ..
                    },
            } => {
                // A scripted proposer: a new step budget per job, after one failed gate.
                assert!(episodes.iter().any(|e| !e.won), "nothing to reflect on");
                let steps = 10 + (job.id.0 % 40) as i64;
                let child = parent
                    .apply(&Edit::Insert {
                        component: Component::new("steps-r", Kind::StepBudget)
                            .with("max-steps", steps),
                        edges: vec![],
                    })
                    .or_else(|_| {
                        let name = parent
                            .in_group("step-budget")
                            .expect("a budget")
                            .name
                            .clone();
                        parent.apply(&Edit::SetParameter {
                            component: name,
                            param: "max-steps".into(),
                            value: steps.into(),
                        })
                    })
                    .expect("valid");
                reflective = Some(vec![format!(
                    "gate: fixed none of tasks 1 (job {})",
                    job.id
                )]);
                child
            }
            JobKind::MutateAndEvaluate { parent, mutation } => {
                // The scripted worker's "model" cannot write; say so like a worker would.
                let _ = mutation;
                let r = JobResult {
                    wall_ms: 1,
                    ..JobResult::new(
                        &job,
                        "scripted",
                        JobStatus::InvalidChild {
                            reason: format!("no text model for {}", parent.id()),
                        },
                    )
                };
                return Ok(Some(Delivery::new(protocol::encode(&r)?)));
            }
            JobKind::CrossoverAndEvaluate { .. } => unreachable!("made by the coordinator"),
        };
        let mut log = self.log.lock().unwrap();
        let outcomes: Vec<TaskOutcome> = job
            .tasks
            .tasks()
            .map(|task| {
                log.evaluated.push((child.id().to_string(), task.clone()));
                // A best-of harness pays for every episode it plays, as the runtime's does;
                // its best-of component writes nothing into the prompt. A best-of's rest
                // plays all but the first, and never none (the runtime refuses that).
                let prompt = child.components().filter(|c| c.kind.searched()).count();
                let episodes = child.best_of_streams(task.seed).count() as u64;
                assert!(episodes > 0, "{} plays no episode on {task}", child.id());
                let tokens = (1000 + prompt as u64 * 100) * episodes;
                // The model's certainty, from the harness and the task; none on every
                // fourth seed, as in records an older build made.
                let confidence = (!task.seed.is_multiple_of(4))
                    .then(|| -((((child.id().0[0] as u64) ^ task.seed) % 5) as f64));
                TaskOutcome {
                    won: (self.rule)(&child, &task),
                    task,
                    score: 0.0,
                    steps: 5,
                    tokens,
                    wall_ms: 1,
                    confidence,
                }
            })
            .collect();
        let r = JobResult {
            // As a real worker does: an evaluate job's harness is not sent back.
            child: (!matches!(job.kind, JobKind::Evaluate { .. })).then_some(child),
            usage: Usage {
                prompt_tokens: outcomes.iter().map(|o| o.tokens).sum(),
                completion_tokens: 0,
            },
            outcomes,
            wall_ms: 1,
            failure_digest: "went in circles".into(),
            proposer_usage: Usage {
                prompt_tokens: if reflective.is_some() { 300 } else { 0 },
                completion_tokens: if reflective.is_some() { 40 } else { 0 },
            },
            refusals: reflective.unwrap_or_default(),
            ..JobResult::new(&job, "scripted", JobStatus::Completed)
        };
        Ok(Some(Delivery::new(protocol::encode(&r)?)))
    }

    fn workers(&self) -> usize {
        1
    }
}

fn experiment(store: &Path, evaluations: u64) -> (Experiment, Vec<Harness>) {
    experiment_with(
        store,
        evaluations,
        r#"seeds = ["react.toml", "strong.toml"]"#,
    )
}

/// The scripted experiment with `population` as the population's seed (and arm) lines.
fn experiment_with(store: &Path, evaluations: u64, population: &str) -> (Experiment, Vec<Harness>) {
    let text = format!(
        r#"
[run]
name = "scripted"
store = "{}"
seed = 3

[[suites]]
name = "household"

[population]
{population}
size = 8
tournament = 2
elites = 1
immigrant-rate = 0.1
crossover-rate = 0.3
jobs-in-flight = 3

[racing]
rungs = [2, 4, 8]
finalists = 2
select-tasks = 6
test-tasks = 10

[budget]
evaluations = {evaluations}
wall-time = "10m"
episode-steps = 10
"#,
        store.display()
    );
    let exp: Experiment = parse_toml(&text, "test", &[]).expect("parses");
    exp.validate("test").expect("valid");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/harnesses");
    let seeds = exp
        .population
        .seeds
        .iter()
        .map(|f| format::load(&root.join(f)).expect("loads"))
        .collect();
    (exp, seeds)
}

/// Runs `exp` from `seeds` to its end on a scripted bus over `store`; the status and what the
/// scripted workers did.
fn run_scripted(
    exp: Experiment,
    seeds: Vec<Harness>,
    store: &Store,
) -> (hx_coordinator::search::Status, Arc<Mutex<Log>>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let mut bus = Scripted::new(&log, None);
    let mut say = |_: &str| {};
    let status = Search::new(exp, seeds, store, &mut bus, false, &mut say)
        .expect("starts")
        .run()
        .expect("runs");
    (status, log)
}

/// Runs (or with `resume`, resumes) the scripted search on `store` in the world `rule` says
/// ([`wins`] unless a test has its own), killing it after `answers` answers; returns the
/// error it stopped with.
fn run_killed(
    rule: fn(&Harness, &TaskRef) -> bool,
    exp: &Experiment,
    seeds: &[Harness],
    store: &Store,
    log: &Arc<Mutex<Log>>,
    answers: usize,
    resume: bool,
) -> anyhow::Error {
    let mut bus = Scripted::new(log, Some(answers));
    bus.rule = rule;
    let mut say = |_: &str| {};
    Search::new(
        exp.clone(),
        seeds.to_vec(),
        store,
        &mut bus,
        resume,
        &mut say,
    )
    .expect("starts")
    .run()
    .expect_err("killed")
}

/// Asked to stop (the flag Ctrl-C or SIGTERM sets), a run stops at the next result with what
/// it heard durable and the status saying so; resumed, it finishes without playing a pair
/// twice. Asked during the search and during the final stage's test split alike.
#[test]
fn a_run_asked_to_stop_stops_between_results_and_resumes() {
    for split in [Split::Train, Split::Test] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (exp, seeds) = experiment(dir.path(), 40);
        let store = Store::open(dir.path()).expect("opens");
        let log = Arc::new(Mutex::new(Log::default()));
        let asked = Arc::new(AtomicBool::new(false));
        let mut bus = Scripted::new(&log, None);
        bus.ask_to_stop = Some((split, Arc::clone(&asked)));
        let mut said = Vec::new();
        let mut say = |m: &str| said.push(m.to_owned());
        let e = Search::new(
            exp.clone(),
            seeds.clone(),
            &store,
            &mut bus,
            false,
            &mut say,
        )
        .expect("starts")
        .with_stop(Arc::clone(&asked))
        .run()
        .expect_err("stopped");
        let stopped = e
            .downcast_ref::<hx_coordinator::search::Stopped>()
            .unwrap_or_else(|| panic!("not a stop: {e:#}"));
        assert!(said.iter().any(|m| m.contains("asked to stop")), "{said:?}");
        let st = hx_coordinator::search::read_status(dir.path()).expect("a status");
        assert_eq!(st.phase, "stopped", "{split}");
        assert_eq!(st.evaluations, stopped.episodes);
        // Every answer heard is recorded: the one that came with the request too.
        let heard = log.lock().unwrap().evaluated.len();
        assert_eq!(store.evaluation_count(), heard, "{split}");
        if split == Split::Test {
            assert!(
                store
                    .meta::<serde_json::Value>("final")
                    .expect("reads")
                    .is_none()
            );
        }
        asked.store(false, Ordering::SeqCst);
        let mut bus = Scripted::new(&log, None);
        let mut say = |_: &str| {};
        let done = Search::new(exp, seeds, &store, &mut bus, true, &mut say)
            .expect("resumes")
            .with_stop(Arc::clone(&asked))
            .run()
            .expect("finishes");
        assert_eq!(done.phase, "done");
        let log = log.lock().unwrap();
        assert!(log.splits.contains(&Split::Test));
        log.assert_no_pair_twice();
    }
}

/// Episodes out count against the evaluation budget: a run ends at most one job (8 tasks at
/// the top rung) past it, not `jobs-in-flight` jobs past it, whatever the budget.
#[test]
fn the_evaluation_budget_is_kept_within_one_job() {
    for budget in (20..=60).step_by(5) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (exp, seeds) = experiment(dir.path(), budget);
        let store = Store::open(dir.path()).expect("opens");
        let (status, _) = run_scripted(exp, seeds, &store);
        assert!(
            status.evaluations >= budget && status.evaluations < budget + 8,
            "{} episodes for a budget of {budget}",
            status.evaluations
        );
    }
}

/// Seeded from `react` alone with `strong` as a comparison arm: `strong` is never a parent
/// or a candidate, never runs on the search or select split, and is scored on exactly the
/// chosen harness's test and held-out tasks.
#[test]
fn an_arm_is_only_scored_on_test_beside_the_chosen_harness() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut exp, seeds) = experiment_with(
        dir.path(),
        40,
        r#"seeds = ["react.toml"]
arms = ["strong.toml"]"#,
    );
    exp.racing.heldout_tasks = 6;
    assert_eq!(seeds.len(), 1);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/harnesses");
    let strong = format::load(&root.join("strong.toml")).expect("loads");
    let store = Store::open(dir.path()).expect("opens");
    let log = Arc::new(Mutex::new(Log::default()));
    let mut bus = Scripted::new(&log, None);
    let mut say = |_: &str| {};
    let status = Search::new(exp, seeds.clone(), &store, &mut bus, false, &mut say)
        .expect("starts")
        .with_arms(vec![strong.clone()])
        .run()
        .expect("runs");
    let f = status.final_.expect("a final");
    let best = f.best.expect("a best");
    assert_ne!(best, strong.id(), "an arm is never chosen");
    assert!(f.select.iter().all(|(id, _)| *id != strong.id()));
    let on_test: Vec<_> = f.test.iter().map(|(id, r)| (*id, r.trials)).collect();
    assert!(on_test.contains(&(strong.id(), 10)), "{on_test:?}");
    assert!(on_test.contains(&(best, 10)), "{on_test:?}");
    assert_eq!(f.test_progress.len(), f.test.len());
    // The in-distribution held-out split: the same harnesses, 6 tasks each.
    let held: Vec<_> = f.heldout.iter().map(|(id, r)| (*id, r.trials)).collect();
    assert_eq!(
        held,
        f.test.iter().map(|(id, _)| (*id, 6)).collect::<Vec<_>>()
    );
    let log = log.lock().unwrap();
    // Nothing held out is touched before the search and the selection are over.
    let first_held = log
        .splits
        .iter()
        .position(|s| matches!(s, Split::Test | Split::Heldout))
        .expect("held-out jobs");
    assert!(
        log.splits[first_held..]
            .iter()
            .all(|s| matches!(s, Split::Test | Split::Heldout))
    );
    // Held-out jobs are no bigger than the first rung (2 tasks), so a kill loses little,
    // and they go round the harnesses, so the heldout split comes first.
    assert!(
        log.sizes[first_held..].iter().all(|&n| n <= 2),
        "{:?}",
        log.sizes
    );
    assert_eq!(log.splits[first_held], Split::Heldout);
    let strong_id = strong.id().to_string();
    for (h, task) in &log.evaluated {
        if *h == strong_id {
            assert!(
                matches!(task.split, Split::Test | Split::Heldout),
                "the arm ran on {task}"
            );
        }
    }
    // The store names it an arm; no stored child has it as a parent.
    let l = store
        .lineage(&strong.id())
        .expect("reads")
        .expect("lineage");
    assert_eq!(l.operator, "arm");
    for h in store.harnesses().expect("reads") {
        let l = store.lineage(&h.id()).expect("reads").expect("lineage");
        assert!(
            !l.parents.contains(&strong.id()),
            "{} has the arm as a parent",
            h.id()
        );
    }
}

/// A whole scripted run, seeded from `react` alone, whose final stage has an equal-budget
/// baseline (its chosen harness costs more than the seed; the scripted world favours bigger
/// harnesses, but which child wins depends on the run's seed): the first of ten run seeds.
#[allow(clippy::type_complexity)]
fn with_an_equal_budget_baseline(
    test_tasks: u32,
    heldout_tasks: u32,
) -> (
    tempfile::TempDir,
    Store,
    Experiment,
    Vec<Harness>,
    hx_coordinator::search::Status,
    Arc<Mutex<Log>>,
) {
    (3..13)
        .find_map(|run_seed| {
            let dir = tempfile::tempdir().expect("tempdir");
            let (mut exp, seeds) = experiment_with(dir.path(), 60, r#"seeds = ["react.toml"]"#);
            exp.run.seed = run_seed;
            exp.racing.test_tasks = test_tasks;
            exp.racing.heldout_tasks = heldout_tasks;
            let store = Store::open(dir.path()).expect("opens");
            let (status, log) = run_scripted(exp.clone(), seeds.clone(), &store);
            let f = status.final_.as_ref().expect("a final");
            f.roles
                .iter()
                .any(|(_, r)| r.starts_with("equal-budget"))
                .then_some((dir, store, exp, seeds, status, log))
        })
        .expect("one of ten runs chooses a harness costlier than the seed")
}

/// The final stage's equal-budget baseline: the seed with a `best-of` whose episodes per task
/// are the chosen harness's tokens per episode over the seed's, set from the search and select
/// splits (never the held-out ones), scored on the same held-out tasks, and spending within
/// 10% of the chosen harness there.
#[test]
fn the_equal_budget_baseline_matches_the_chosen_harness_tokens() {
    let (_dir, store, _, seeds, status, log) = with_an_equal_budget_baseline(40, 40);
    let f = status.final_.expect("a final");
    let best = f.best.expect("a best");
    let react = seeds[0].id();
    assert_ne!(best, react, "the seed needs no equal-budget baseline");
    let eb: Vec<HarnessId> = f
        .roles
        .iter()
        .filter(|(_, r)| r.starts_with("equal-budget"))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(eb.len(), 1, "{:?}", f.roles);
    let eb = eb[0];
    let h = store.harness(&eb).expect("reads").expect("stored");
    // The seed and a best-of component, nothing else.
    assert_eq!(h.len(), seeds[0].len() + 1);
    let chosen = store.harness(&best).expect("reads").expect("stored");
    let ratio = (1000.0 + chosen.len() as f64 * 100.0) / (1000.0 + seeds[0].len() as f64 * 100.0);
    assert!(
        (h.best_of_samples() - ratio).abs() < 0.01,
        "{} vs {ratio}",
        h.best_of_samples()
    );
    let l = store.lineage(&eb).expect("reads").expect("lineage");
    assert_eq!(
        (l.operator.as_str(), l.parents.as_slice()),
        ("equal-budget", &[best][..])
    );
    for tokens in [&f.test_tokens, &f.heldout_tokens] {
        let of = |id: HarnessId| tokens.iter().find(|(h, _)| *h == id).expect("scored").1;
        let (mine, theirs) = (of(best), of(eb));
        assert!(
            (theirs / mine - 1.0).abs() <= 0.10,
            "equal budget spends {theirs:.0} per task, the chosen {mine:.0}"
        );
    }
    // Played (through its rest) only on the held-out splits.
    let id = eb.to_string();
    let rest = h.best_of_rest().expect("a best-of").id();
    let rest_id = rest.to_string();
    let log = log.lock().unwrap();
    assert!(log.evaluated.iter().any(|(h, _)| *h == rest_id));
    for (h, task) in &log.evaluated {
        if *h == id || *h == rest_id {
            assert!(matches!(task.split, Split::Test | Split::Heldout), "{task}");
        }
    }
    // Its first episode is the seed's, never played again: where it plays a single episode,
    // it takes the seed's outcome; where it plays several, its rest plays the others and the
    // more certain of the two is its outcome, at the cost of both.
    let (mut taken, mut joined, mut wholes) = (0, 0, 0);
    for split in [Split::Test, Split::Heldout] {
        for seed in 0..40 {
            let t = TaskRef {
                suite: "household".into(),
                split,
                seed,
            };
            let whole = log.evaluated.contains(&(id.clone(), t.clone()));
            let mine = store.evaluation(&eb, &t).expect("reads").expect("scored");
            let first = store
                .evaluation(&react, &t)
                .expect("reads")
                .expect("scored");
            let rest_sent = log.evaluated.contains(&(rest_id.clone(), t.clone()));
            let n = best_of_episodes(h.best_of_samples(), seed);
            if n == 1 {
                taken += 1;
                assert!(
                    !whole && !rest_sent,
                    "{t}: played where the best-of plays one"
                );
                assert_eq!(mine, first);
            } else if first.confidence.is_none() {
                // The seed's episode without its certainty cannot be compared: played whole.
                wholes += 1;
                assert!(whole, "{t} not played whole");
                assert_eq!(mine.tokens, first.tokens * u64::from(n));
            } else {
                assert!(!whole, "{t} played whole");
                joined += 1;
                assert!(rest_sent, "{t}: the rest not played");
                let others = store.evaluation(&rest, &t).expect("reads").expect("scored");
                assert_eq!(TaskOutcome::best_of(&first, &others), Some(mine.clone()));
                assert_eq!(mine.tokens, first.tokens + others.tokens);
            }
        }
    }
    assert!(
        taken > 0 && joined > 0 && wholes > 0,
        "{taken} taken, {joined} joined, {wholes} played whole"
    );
    // The rest is a part of the baseline, not a harness of the run's.
    let l = store.lineage(&rest).expect("reads").expect("named");
    assert_eq!(
        (l.operator.as_str(), l.parents.as_slice()),
        (hx_coordinator::search::BEST_OF_REST, &[eb][..])
    );
    assert!(!f.roles.iter().any(|(r, _)| *r == rest));
}

/// A run resumed after its final stage began keeps the equal-budget baseline it made then,
/// even where the search record would now set another (a run started on an earlier build):
/// its partly played held-out tasks stay one harness's.
#[test]
fn a_resumed_final_stage_keeps_its_equal_budget_baseline() {
    // A whole run, to learn its chosen harness and how many jobs come before the held-out
    // splits.
    let (_whole, _, exp, seeds, status, log) = with_an_equal_budget_baseline(10, 10);
    let f = status.final_.expect("a final");
    let best = f.best.expect("a best");
    let made = f
        .roles
        .iter()
        .find(|(_, r)| r.starts_with("equal-budget"))
        .expect("an equal-budget baseline")
        .0;
    let before_heldout = log
        .lock()
        .unwrap()
        .splits
        .iter()
        .filter(|s| !matches!(s, Split::Test | Split::Heldout))
        .count();
    // The same run killed before its last select-split answer: no baseline made yet. One
    // made "by an earlier build" goes into the store, with another number of episodes.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut exp = exp;
    exp.run.store = Some(dir.path().to_path_buf());
    let store = Store::open(dir.path()).expect("opens");
    let log = Arc::new(Mutex::new(Log::default()));
    run_killed(wins, &exp, &seeds, &store, &log, before_heldout - 1, false);
    let planted = seeds[0].with_best_of(3.0).expect("a best-of");
    assert_ne!(planted.id(), made);
    store.put_harness(&planted).expect("writes");
    store
        .put_lineage(
            &planted.id(),
            &Lineage {
                parents: vec![best],
                operator: "equal-budget".into(),
                adopted: vec![],
                job: None,
                at_ms: 0,
            },
        )
        .expect("writes");
    let mut bus = Scripted::new(&log, None);
    let mut say = |_: &str| {};
    let st = Search::new(exp, seeds, &store, &mut bus, true, &mut say)
        .expect("resumes")
        .run()
        .expect("finishes");
    let f = st.final_.expect("a final");
    assert_eq!(f.best, Some(best));
    let eb: Vec<HarnessId> = f
        .roles
        .iter()
        .filter(|(_, r)| r.starts_with("equal-budget"))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(eb, vec![planted.id()], "{:?}", f.roles);
    assert!(
        f.test
            .iter()
            .any(|(id, r)| *id == planted.id() && r.trials == 10)
    );
}

/// A chosen harness with a rewrite policy is also scored without it, on the same tasks.
#[test]
fn the_chosen_harness_is_scored_with_its_rewriting_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A budget that evaluates the seed alone: it is the chosen harness.
    let (mut exp, seeds) = experiment_with(dir.path(), 2, r#"seeds = ["strong.toml"]"#);
    exp.population.jobs_in_flight = 1;
    let strong = &seeds[0];
    assert!(strong.in_group("rewrite-policy").is_some());
    let store = Store::open(dir.path()).expect("opens");
    let log = Arc::new(Mutex::new(Log::default()));
    let mut bus = Scripted::new(&log, None);
    let mut say = |_: &str| {};
    let f = Search::new(exp, seeds.clone(), &store, &mut bus, false, &mut say)
        .expect("starts")
        .run()
        .expect("runs")
        .final_
        .expect("a final");
    assert_eq!(f.best, Some(strong.id()));
    let off: Vec<HarnessId> = f
        .roles
        .iter()
        .filter(|(_, r)| r.contains("rewriting off"))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(off.len(), 1, "{:?}", f.roles);
    let h = store.harness(&off[0]).expect("reads").expect("stored");
    assert!(h.in_group("rewrite-policy").is_none());
    assert_eq!(h.len() + 1, strong.len());
    let trials = |id| f.test.iter().find(|(h, _)| *h == id).map(|(_, r)| r.trials);
    assert_eq!(trials(off[0]), trials(strong.id()));
    // The chosen harness is the seed: no equal-budget baseline beside it.
    assert!(!f.roles.iter().any(|(_, r)| r.starts_with("equal-budget")));
}

/// With a `[proposer]` section the bandit may draw the reflective operator: its jobs carry
/// the parent's search episodes, its children are named `reflective`, its gates and the
/// proposer's tokens are counted apart and kept across a restart, its refusals are kept with
/// their reasons, and it stops when the proposer's token budget is spent.
#[test]
fn the_reflective_operator_is_drawn_counted_and_stopped_by_its_budget() {
    let run = |budget: u64| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut exp, seeds) = experiment(dir.path(), 400);
        exp.proposer = Some(hx_common::config::ProposerOptions {
            token_budget: budget,
            ..Default::default()
        });
        let store = Store::open(dir.path()).expect("opens");
        let (status, _) = run_scripted(exp, seeds, &store);
        let op = status
            .operators
            .iter()
            .find(|o| o.operator == "reflective")
            .cloned()
            .expect("the reflective operator was drawn");
        assert!(op.children > 0 && op.gate_passed >= op.children, "{op:?}");
        assert_eq!(
            op.gate_failed, op.gate_passed,
            "one failed gate per job: {op:?}"
        );
        assert_eq!(op.proposer_tokens, 340 * op.gate_passed);
        let refusals: Vec<hx_coordinator::search::Refusal> =
            store.meta("refusals").expect("reads").expect("kept");
        let mine: Vec<_> = refusals
            .iter()
            .filter(|r| r.operator == "reflective")
            .collect();
        assert_eq!(mine.len() as u64, op.gate_failed);
        assert!(mine.iter().all(|r| r.reason.starts_with("gate:")));
        // The text operator's refusals are kept too, under its name.
        assert!(
            refusals
                .iter()
                .filter(|r| r.operator != "reflective")
                .all(|r| r.operator == "text" && r.reason.contains("no text model"))
        );
        let named = store
            .harnesses()
            .expect("reads")
            .into_iter()
            .filter(|h| {
                store
                    .lineage(&h.id())
                    .expect("reads")
                    .is_some_and(|l| l.operator == "reflective")
            })
            .count();
        assert!(named as u64 >= op.children);
        op
    };
    let free = run(2_000_000);
    let capped = run(700);
    // 700 tokens at 340 a job: drawn until the budget is spent, then only the jobs already
    // out (3 in flight) finish.
    assert!(capped.proposer_tokens >= 700, "{capped:?}");
    assert!(capped.gate_passed <= 3 + 2, "{capped:?}");
    assert!(
        free.gate_passed > capped.gate_passed,
        "{free:?} vs {capped:?}"
    );
}

/// Promotion above the median screens more candidates with the same episodes than promotion
/// of all but the clearly worse, and stops only candidates below the median on the tasks
/// they share. Counted over three run seeds, on rungs of 4, 8 and 16 tasks, and without the
/// candidates stopped as clones of another: in this scripted world one run's count moves by a
/// candidate or two with which children its draws made, and on rungs of 2 tasks most
/// candidates play their first rung exactly as another, so clone stopping, not promotion,
/// would decide the count.
#[test]
fn promotion_above_the_median_screens_more_candidates_per_episode() {
    let run = |promote| {
        let (mut screened, mut spent) = (0, u64::MAX);
        for seed in [3, 5, 7] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (mut exp, seeds) = experiment(dir.path(), 240);
            exp.run.seed = seed;
            exp.racing.rungs = vec![4, 8, 16];
            exp.racing.promote = promote;
            let store = Store::open(dir.path()).expect("opens");
            let (st, _) = run_scripted(exp, seeds, &store);
            screened += st.candidates - st.clones;
            spent = spent.min(st.evaluations);
        }
        (screened, spent)
    };
    let (all, spent_all) = run(hx_common::config::Promote::NotBelow);
    let (halved, spent_halved) = run(hx_common::config::Promote::AboveMedian);
    assert!(spent_all >= 240 && spent_halved >= 240);
    assert!(
        halved > all,
        "{halved} candidates raced above the median against {all}"
    );
}

/// `population.operators` limits what the bandit draws from.
#[test]
fn the_bandit_draws_only_the_operators_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut exp, seeds) = experiment(dir.path(), 60);
    exp.population.operators = vec!["parametric".into()];
    let store = Store::open(dir.path()).expect("opens");
    let (status, _) = run_scripted(exp, seeds, &store);
    let ops: Vec<&str> = status
        .operators
        .iter()
        .map(|o| o.operator.as_str())
        .collect();
    assert!(ops.contains(&"parametric"), "{ops:?}");
    assert!(
        ops.iter().all(|o| ["parametric", "crossover"].contains(o)),
        "{ops:?}"
    );
    // Each parametric child compared with its parent credits the one to three parameters it
    // moved, so the parameter records add up to one to three times the operator's.
    let op = status
        .operators
        .iter()
        .find(|o| o.operator == "parametric")
        .expect("parametric");
    assert!(op.compared > 0, "{op:?}");
    assert!(!status.params.is_empty());
    let compared: u64 = status.params.iter().map(|p| p.compared).sum();
    let improved: u64 = status.params.iter().map(|p| p.improved).sum();
    assert!(
        (op.compared..=3 * op.compared).contains(&compared),
        "{:?}",
        status.params
    );
    assert!(
        (op.improved..=3 * op.improved).contains(&improved),
        "{:?}",
        status.params
    );
    for p in &status.params {
        assert!(p.improved <= p.compared && p.compared > 0, "{p:?}");
        assert!(p.param.contains('.'), "kind.name: {p:?}");
    }
}

#[test]
fn the_scheduler_keeps_its_bound_and_the_test_split_waits_for_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (exp, seeds) = experiment(dir.path(), 80);
    let store = Store::open(dir.path()).expect("opens");
    let log = Arc::new(Mutex::new(Log::default()));
    let mut bus = Scripted::new(&log, None);
    let mut lines = Vec::new();
    let mut say = |l: &str| lines.push(l.to_owned());
    let mut search =
        Search::new(exp, seeds.clone(), &store, &mut bus, false, &mut say).expect("starts");
    let status = search.run().expect("runs");
    assert!(search.peak_in_flight <= 3, "{}", search.peak_in_flight);
    drop(search);
    let log = log.lock().unwrap();
    assert!(log.max_out <= 3, "{} jobs were out at once", log.max_out);
    // And it fills the bound from the start, before any result came.
    assert_eq!(log.out_at_first_answer, Some(3));
    // Search split, then select split, then test split: nothing from test before the end.
    let first_test = log
        .splits
        .iter()
        .position(|s| *s == Split::Test)
        .expect("a test job");
    assert!(log.splits[..first_test].iter().all(|s| *s != Split::Test));
    assert!(log.splits[first_test..].iter().all(|s| *s == Split::Test));
    let first_select = log
        .splits
        .iter()
        .position(|s| *s == Split::Validation)
        .expect("select");
    assert!(
        log.splits[..first_select]
            .iter()
            .all(|s| *s == Split::Train)
    );
    // The budget stopped it, with the in-flight work collected.
    assert!(
        status
            .stopped
            .as_deref()
            .unwrap_or("")
            .contains("evaluation budget"),
        "{status:?}"
    );
    assert!(status.evaluations >= 80);
    // The operator table accounts for every evaluated child, and some were compared with
    // their parent on the same tasks.
    let children: u64 = status.operators.iter().map(|o| o.children).sum();
    assert_eq!(
        children as usize + seeds.len(),
        status.candidates,
        "{:?}",
        status.operators
    );
    assert!(
        status.operators.iter().any(|o| o.compared > 0),
        "{:?}",
        status.operators
    );
    assert!(
        status
            .operators
            .iter()
            .all(|o| o.improved <= o.compared && o.compared <= o.children),
        "{:?}",
        status.operators
    );
    // Racing ran fewer search episodes than every candidate on the full batch would have.
    assert!(
        status.evaluations < status.episodes_without_racing,
        "{} vs {}",
        status.evaluations,
        status.episodes_without_racing
    );
    let f = status.final_.expect("a final");
    let best = f.best.expect("a best");
    // The chosen harness, both seeds and the final stage's own baselines (equal budget,
    // rewriting off) were scored on test, each once and each with its role.
    let ids: BTreeSet<HarnessId> = f.test.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), f.test.len());
    assert!(ids.contains(&best) && seeds.iter().all(|s| ids.contains(&s.id())));
    assert_eq!(
        f.roles.iter().map(|(id, _)| *id).collect::<BTreeSet<_>>(),
        ids,
        "{:?}",
        f.roles
    );
    assert!(f.test.iter().all(|(_, r)| r.trials == 10));
    // Paired differences: the chosen harness against each other one on the same 10 tasks.
    let paired = hx_coordinator::search::paired(&store, &f).expect("reads the store");
    let others =
        |v: &[(HarnessId, hx_common::stats::Rate)]| v.iter().filter(|(id, _)| *id != best).count();
    assert_eq!(paired.len(), others(&f.test) + others(&f.heldout));
    for p in &paired {
        assert_eq!(p.success.n, 10, "{p:?}");
        let mine = f.test.iter().find(|(id, _)| *id == best).expect("scored").1;
        let theirs = f
            .test
            .iter()
            .find(|(id, _)| *id == p.other)
            .expect("scored")
            .1;
        if p.split == Split::Test {
            // The mean paired difference is the difference of the two success rates.
            assert!(
                (p.success.mean - (mine.rate - theirs.rate)).abs() < 1e-9,
                "{p:?}"
            );
        }
    }
    // No pair was evaluated twice.
    let pairs: BTreeSet<_> = log.evaluated.iter().collect();
    assert_eq!(pairs.len(), log.evaluated.len());
    // Export: the chosen harness first; its JSON and TOML load back with the same id.
    let out = dir.path().join("export");
    let files = hx_coordinator::export::export(&store, 2, &out).expect("exports");
    assert_eq!(files.len(), 8);
    let first = format::load(&files[0]).expect("loads");
    assert_eq!(first.id(), best);
    assert_eq!(format::load(&files[1]).expect("loads").id(), best);
    let card = std::fs::read_to_string(&files[3]).expect("card");
    assert!(
        card.contains("held-out test") && card.contains("## Lineage"),
        "{card}"
    );
    // Every stored harness is valid (the store validates on reading) with known parents.
    let all = store.harnesses().expect("valid harnesses");
    assert!(all.len() > 2);
    for h in &all {
        let l = store.lineage(&h.id()).expect("reads").expect("a lineage");
        for p in &l.parents {
            assert!(
                store.harness(p).expect("reads").is_some(),
                "unknown parent {p}"
            );
        }
    }
}

#[test]
fn a_killed_run_resumes_without_losing_or_repeating_an_evaluation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (exp, seeds) = experiment(dir.path(), 60);
    let log = Arc::new(Mutex::new(Log::default()));
    let before: BTreeMap<String, TaskOutcome>;
    {
        let store = Store::open(dir.path()).expect("opens");
        let e = run_killed(wins, &exp, &seeds, &store, &log, 9, false);
        assert!(e.to_string().contains("killed"), "{e}");
        before = store
            .harnesses()
            .expect("reads")
            .iter()
            .flat_map(|h| {
                store
                    .evaluations(&h.id())
                    .expect("reads")
                    .into_iter()
                    .map(move |o| (format!("{}/{}", h.id(), o.task), o))
            })
            .collect();
        assert!(!before.is_empty());
    }
    // A fresh start on the same store is refused; --resume goes on.
    let store = Store::open(dir.path()).expect("reopens");
    let mut bus = Scripted::new(&log, None);
    let mut say = |_: &str| {};
    let refused = Search::new(
        exp.clone(),
        seeds.clone(),
        &store,
        &mut bus,
        false,
        &mut say,
    );
    assert!(
        refused
            .err()
            .expect("refused")
            .to_string()
            .contains("--resume")
    );
    let mut bus = Scripted::new(&log, None);
    let mut say = |_: &str| {};
    let mut search = Search::new(exp, seeds, &store, &mut bus, true, &mut say).expect("resumes");
    let after = search.run().expect("finishes").operators;
    drop(search);
    // The operators' record counts every child in the store, those made before the kill
    // too: it is rebuilt from the store, not kept in memory.
    let mut stored: BTreeMap<String, u64> = BTreeMap::new();
    for h in store.harnesses().expect("reads") {
        let l = store.lineage(&h.id()).expect("reads").expect("a lineage");
        let searched = store
            .evaluations(&h.id())
            .expect("reads")
            .iter()
            .any(|o| o.task.split == Split::Train);
        if searched && l.operator != "seed" {
            *stored.entry(l.operator).or_default() += 1;
        }
    }
    let counted: BTreeMap<String, u64> = after
        .iter()
        .filter(|o| o.children > 0)
        .map(|o| (o.operator.clone(), o.children))
        .collect();
    assert!(!counted.is_empty());
    assert_eq!(counted, stored);
    // Nothing recorded before the kill is lost or changed.
    for (key, o) in &before {
        let (id, task) = key.split_once('/').expect("key");
        let got = store
            .evaluation(&id.parse().expect("id"), &task.parse().expect("task"))
            .expect("reads");
        assert_eq!(got.as_ref(), Some(o), "{key}");
    }
    // And no pair was evaluated twice, across the kill.
    let log = log.lock().unwrap();
    log.assert_no_pair_twice();
    let pairs: BTreeSet<_> = log.evaluated.iter().collect();
    // Every stored outcome was played, but those a best-of made from its base harness's
    // (taken whole, or joined with its rest's).
    let mut taken = 0;
    for h in store.harnesses().expect("reads") {
        for o in store.evaluations(&h.id()).expect("reads") {
            if h.best_of_base().is_some() && !pairs.contains(&(h.id().to_string(), o.task.clone()))
            {
                taken += 1;
            }
        }
    }
    assert_eq!(store.evaluation_count(), pairs.len() + taken);
}

/// With `population.screen`, every structural child of the seed is raced at the first rung
/// before anything climbs past it and before any child is bred at random, each once, across
/// a kill and a resume; with `screen-draws`, the move that wakes a parameter is raced with
/// that many draws; with `screen-priors`, so is each prior the seed has switched off,
/// switched on.
#[test]
fn a_screen_races_every_structural_child_of_the_seed_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (exp, seeds) = experiment_with(
        dir.path(),
        1,
        "seeds = [\"react.toml\"]\nscreen = true\nscreen-draws = 2\nscreen-priors = true\n\
         operators = [\"parametric\", \"structural\"]",
    );
    let react = seeds[0].clone();
    let limits = hx_common::harness::mutate::Limits {
        episode_steps: Some(exp.budget.episode_steps),
    };
    let neighbourhood = |draws| {
        hx_common::harness::mutate::neighbourhood(&react, limits, exp.run.seed, draws)
            .iter()
            .map(|c| c.harness.id())
            .collect::<BTreeSet<HarnessId>>()
    };
    assert_eq!(exp.population.screen_draws, 2);
    let screen = neighbourhood(2);
    assert_eq!(
        screen.len(),
        neighbourhood(1).len() + 1,
        "the few-shot move twice"
    );
    assert!(screen.len() > 10, "{} children", screen.len());
    let switched: BTreeSet<HarnessId> =
        hx_common::harness::mutate::switch_ons(&react, limits, exp.run.seed, 2)
            .iter()
            .map(|c| c.harness.id())
            .collect();
    assert_eq!(switched.len(), 10, "five priors, two draws each");
    assert!(switched.is_disjoint(&screen));
    let structural = screen.clone();
    let screen: BTreeSet<HarnessId> = screen.union(&switched).cloned().collect();
    // Room for the screen at the first rung (2 tasks), the seed's rungs and some breeding.
    let mut exp = exp;
    exp.budget.evaluations = 2 * screen.len() as u64 + 60;
    let log = Arc::new(Mutex::new(Log::default()));
    {
        let store = Store::open(dir.path()).expect("opens");
        let e = run_killed(wins, &exp, &seeds, &store, &log, screen.len() / 2, false);
        assert!(e.to_string().contains("killed"), "{e}");
    }
    let store = Store::open(dir.path()).expect("reopens");
    let mut bus = Scripted::new(&log, None);
    let mut said = Vec::new();
    let mut say = |m: &str| said.push(m.to_owned());
    Search::new(exp, seeds, &store, &mut bus, true, &mut say)
        .expect("resumes")
        .run()
        .expect("finishes");
    assert!(
        said.iter()
            .any(|m| m.contains("structural children") && m.contains("raced already")),
        "{said:?}"
    );
    let mut screen_jobs = Vec::new();
    let mut bred_jobs = Vec::new();
    for (h, l, job) in search_children(&store) {
        if screen.contains(&h.id()) {
            let want = if structural.contains(&h.id()) {
                "structural"
            } else {
                "parametric"
            };
            assert_eq!(l.operator, want);
            assert_eq!(l.parents, vec![react.id()]);
            screen_jobs.push(job);
        } else {
            bred_jobs.push(job);
        }
    }
    // Each screened child was made once and raced at the first rung.
    assert_eq!(screen_jobs.len(), screen.len());
    assert_raced_at_first_rung(&store, &screen);
    // Only then children bred at random.
    assert!(!bred_jobs.is_empty(), "the budget left no breeding");
    let last_screened = screen_jobs.iter().max().expect("some");
    assert!(
        bred_jobs.iter().all(|j| j > last_screened),
        "bred {bred_jobs:?} before the screen ended at {last_screened:?}"
    );
    // Nothing climbed past the first rung until the whole screen was out: the first
    // promotions compare all of it.
    let climbs = climb_jobs(&store);
    assert!(!climbs.is_empty(), "nothing was promoted");
    assert!(
        climbs.iter().all(|j| j > last_screened),
        "promoted in {climbs:?} before the screen ended at {last_screened:?}"
    );
    let log = log.lock().unwrap();
    log.assert_no_pair_twice();
}

/// Each of `ids` played the first rung (train seeds 0 and 1), once.
fn assert_raced_at_first_rung(store: &Store, ids: &BTreeSet<HarnessId>) {
    for id in ids {
        let rung0 = store
            .evaluations(id)
            .expect("reads")
            .iter()
            .filter(|o| o.task.split == Split::Train && o.task.seed < 2)
            .count();
        assert_eq!(rung0, 2, "{id}");
    }
}

/// The children the search made (not the seeds, not the final stage's), each with its
/// lineage and the job that first raced it.
fn search_children(store: &Store) -> Vec<(Harness, Lineage, hx_common::protocol::JobId)> {
    store
        .harnesses()
        .expect("reads")
        .into_iter()
        .filter_map(|h| {
            let l = store.lineage(&h.id()).expect("reads").expect("a lineage");
            if l.operator == "seed" || hx_coordinator::search::final_only(&l.operator) {
                return None;
            }
            let job = l.job.expect("a search child has its job");
            Some((h, l, job))
        })
        .collect()
}

/// The search jobs that climbed past the first rung (2 tasks).
fn climb_jobs(store: &Store) -> Vec<hx_common::protocol::JobId> {
    store
        .jobs()
        .expect("reads")
        .into_iter()
        .filter(|r| r.job.tasks.split == Split::Train && r.job.tasks.seeds.iter().any(|&s| s >= 2))
        .map(|r| r.job.id)
        .collect()
}

/// A world where a harness with the undo prior switched on wins every task and any other
/// one task in five: the screen's undo child leads as soon as it is raced.
fn an_undo_prior_wins(h: &Harness, task: &TaskRef) -> bool {
    let undo = h.components().any(|c| {
        matches!(c.param("undo-penalty"), Some(hx_common::harness::ParamValue::Float(x)) if *x > 0.0)
    });
    undo || task.seed.is_multiple_of(5)
}

/// With `population.rescreen = 1`, once the seeds' screen is out and its winner (the undo
/// child here) has played every rung, that winner's own neighbourhood is raced at the first
/// rung, each child once, as the winner's child, before anything else climbs or is bred;
/// and only that one winner's, killed and resumed anywhere on the way.
#[test]
fn a_rescreen_races_the_leaders_neighbourhood_once_it_has_played_every_rung() {
    use hx_common::harness::mutate;
    let mut resumed_mid_rescreen = false;
    for kill_after in [20, 34, 44] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut exp, seeds) = experiment_with(
            dir.path(),
            1,
            "seeds = [\"react.toml\"]\nscreen = true\nscreen-priors = true\nrescreen = 1\n\
             operators = [\"parametric\", \"structural\"]",
        );
        let react = seeds[0].clone();
        let limits = mutate::Limits {
            episode_steps: Some(exp.budget.episode_steps),
        };
        let around = |h: &Harness| {
            let mut all = mutate::neighbourhood(h, limits, exp.run.seed, 1);
            all.extend(mutate::switch_ons(h, limits, exp.run.seed, 1));
            all.into_iter().map(|c| c.harness).collect::<Vec<_>>()
        };
        let first = around(&react);
        let leaders: Vec<&Harness> = first
            .iter()
            .filter(|h| {
                let task = TaskRef {
                    suite: "household".into(),
                    split: Split::Train,
                    seed: 1,
                };
                an_undo_prior_wins(h, &task)
            })
            .collect();
        assert_eq!(leaders.len(), 1, "one undo child");
        let leader = leaders[0].clone();
        let first: BTreeSet<HarnessId> = first.iter().map(Harness::id).collect();
        let second: BTreeSet<HarnessId> = around(&leader)
            .iter()
            .map(Harness::id)
            .filter(|id| !first.contains(id) && *id != react.id())
            .collect();
        assert!(second.len() > 10, "{} children", second.len());
        // Room for both screens at the first rung (2 tasks), the leader's rungs and breeding.
        exp.budget.evaluations = 2 * (first.len() + second.len()) as u64 + 60;
        let log = Arc::new(Mutex::new(Log::default()));
        {
            let store = Store::open(dir.path()).expect("opens");
            let e = run_killed(
                an_undo_prior_wins,
                &exp,
                &seeds,
                &store,
                &log,
                kill_after,
                false,
            );
            assert!(e.to_string().contains("killed"), "{e}");
        }
        let store = Store::open(dir.path()).expect("reopens");
        let held = store
            .harnesses()
            .expect("reads")
            .iter()
            .filter(|h| second.contains(&h.id()))
            .count();
        resumed_mid_rescreen |= held > 0 && held < second.len();
        let mut bus = Scripted::new(&log, None);
        bus.rule = an_undo_prior_wins;
        let mut said = Vec::new();
        let mut say = |m: &str| said.push(m.to_owned());
        Search::new(exp, seeds.clone(), &store, &mut bus, true, &mut say)
            .expect("resumes")
            .run()
            .expect("finishes");
        if held > 0 {
            assert!(
                said.iter()
                    .any(|m| m.contains("the leaders' one-edit neighbourhood")),
                "{said:?}"
            );
        }
        let (mut rescreen_jobs, mut other_children) = (Vec::new(), Vec::new());
        for (h, l, job) in search_children(&store) {
            if second.contains(&h.id()) {
                assert_eq!(l.parents, vec![leader.id()], "{}", h.id());
                assert!(["structural", "parametric"].contains(&l.operator.as_str()));
                rescreen_jobs.push(job);
            } else if !first.contains(&h.id()) {
                other_children.push(job);
            }
        }
        // The leader's whole neighbourhood, each child made once and raced at the first rung.
        assert_eq!(
            rescreen_jobs.len(),
            second.len(),
            "killed after {kill_after}"
        );
        assert_raced_at_first_rung(&store, &second);
        // The leader had played every rung (8 tasks) first.
        let leader_played = store.evaluations(&leader.id()).expect("reads");
        assert!(
            leader_played
                .iter()
                .filter(|o| o.task.split == Split::Train)
                .count()
                >= 8,
            "the leader was screened around before it played every rung"
        );
        // Nothing bred or climbed while it was out.
        let (from, to) = (
            rescreen_jobs.iter().min().expect("some"),
            rescreen_jobs.iter().max().expect("some"),
        );
        assert!(
            other_children.iter().all(|j| j < from || j > to),
            "bred {other_children:?} within the rescreen {from:?}..{to:?}"
        );
        let climbs: Vec<_> = climb_jobs(&store)
            .into_iter()
            .filter(|j| j > from && j < to)
            .collect();
        assert!(
            climbs.is_empty(),
            "promoted in {climbs:?} within the rescreen"
        );
        assert!(!other_children.is_empty(), "the budget left no breeding");
        let log = log.lock().unwrap();
        log.assert_no_pair_twice();
    }
    assert!(resumed_mid_rescreen, "no kill fell within the rescreen");
}

/// With `population.screen-tasks`, the seed and every screened child play that many tasks in
/// their first job, and nothing climbs past them, nor is any child bred, until the whole
/// screen is out: the first promotions compare every move on the same, larger set of tasks.
#[test]
fn a_screen_with_more_tasks_races_the_seed_and_its_children_on_all_of_them_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut exp, seeds) = experiment_with(
        dir.path(),
        1,
        "seeds = [\"react.toml\"]\nscreen = true\nscreen-tasks = 4\n\
         operators = [\"parametric\", \"structural\"]",
    );
    let react = seeds[0].clone();
    let limits = hx_common::harness::mutate::Limits {
        episode_steps: Some(exp.budget.episode_steps),
    };
    let screen: BTreeSet<HarnessId> =
        hx_common::harness::mutate::neighbourhood(&react, limits, exp.run.seed, 1)
            .iter()
            .map(|c| c.harness.id())
            .collect();
    exp.budget.evaluations = 4 * screen.len() as u64 + 60;
    let store = Store::open(dir.path()).expect("opens");
    run_scripted(exp, seeds, &store);
    let jobs = store.jobs().expect("reads");
    let first_job = |id: &HarnessId| {
        jobs.iter()
            .filter(|r| match &r.job.kind {
                JobKind::Evaluate { harness } => harness.id() == *id,
                _ => false,
            })
            .filter(|r| r.job.tasks.split == Split::Train)
            .min_by_key(|r| r.job.id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} was never raced"))
    };
    let seed_job = first_job(&react.id());
    assert_eq!(
        seed_job.job.tasks.seeds,
        vec![0, 1, 2, 3],
        "the seed's first job"
    );
    let mut last_screened = seed_job.job.id;
    for id in &screen {
        let r = first_job(id);
        assert_eq!(r.job.tasks.seeds, vec![0, 1, 2, 3], "{id}'s first job");
        last_screened = last_screened.max(r.job.id);
    }
    // No climb and no bred child before the screen is out; both after it.
    let mut later = 0;
    for r in &jobs {
        if r.job.tasks.split != Split::Train {
            continue;
        }
        let first = match &r.job.kind {
            JobKind::Evaluate { harness } => first_job(&harness.id()).job.id == r.job.id,
            _ => false,
        };
        let screened = match &r.job.kind {
            JobKind::Evaluate { harness } => {
                harness.id() == react.id() || screen.contains(&harness.id())
            }
            _ => false,
        };
        if !(first && screened) {
            assert!(
                r.job.id > last_screened,
                "job {:?} ({:?}) before the screen ended at {last_screened:?}",
                r.job.id,
                r.job.tasks.seeds
            );
            later += 1;
        }
    }
    assert!(later > 0, "nothing was promoted or bred");
    // Promotions compare on the screen's tasks: a climb plays the next rung (8 tasks).
    assert!(
        jobs.iter()
            .any(|r| r.job.tasks.split == Split::Train && r.job.tasks.seeds.contains(&7)),
        "nothing climbed to the rung after the screen's"
    );
}

#[test]
fn the_live_view_serves_the_report_status_and_metrics_of_a_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (exp, seeds) = experiment(dir.path(), 40);
    let store = Store::open(dir.path()).expect("opens");
    let log = Arc::new(Mutex::new(Log::default()));
    let mut bus = Scripted::new(&log, None);
    let mut say = |_: &str| {};
    let mut search = Search::new(exp, seeds, &store, &mut bus, false, &mut say).expect("starts");
    let status = search.run().expect("runs");
    drop(search);

    let live = hx_coordinator::live::LiveView::bind("127.0.0.1:0").expect("binds");
    let base = format!("http://{}", live.addr());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| live.serve(&store, &stop));
        let get = |path: &str| ureq::get(&format!("{base}{path}")).call().map_err(Box::new);
        let page = get("/").expect("page").into_string().expect("text");
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("id=\"plot-fitness\""));
        let best = status.final_.as_ref().and_then(|f| f.best).expect("best");
        assert!(page.contains(&best.short()));
        let st: serde_json::Value = get("/status.json")
            .expect("status")
            .into_json()
            .expect("json");
        assert_eq!(st["evaluations"], status.evaluations);
        let metrics = get("/metrics")
            .expect("metrics")
            .into_string()
            .expect("text");
        assert!(
            metrics.contains(&format!(
                "hx_evaluations_total{{run=\"scripted\"}} {}\n",
                status.evaluations
            )),
            "{metrics}"
        );
        match get("/nope").map_err(|e| *e) {
            Err(ureq::Error::Status(404, _)) => {}
            other => panic!("{other:?}"),
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

/// Resumes a killed run and kills it again, one answer at a time, until its final stage
/// resumes (the jobs that were out are sent again first); the status written then, with no
/// answer after it, which shows exactly what the store holds.
fn resume_until_final(
    exp: &Experiment,
    seeds: &[Harness],
    store: &Store,
    log: &Arc<Mutex<Log>>,
    dir: &Path,
) -> hx_coordinator::search::Status {
    for answers in (0..40).map(|i| i % 2) {
        run_killed(wins, exp, seeds, store, log, answers, true);
        let now = hx_coordinator::search::read_status(dir).expect("a status");
        if now.phase == "final" {
            return now;
        }
    }
    panic!("the final stage did not resume")
}

/// A success rate shown for `id` on `split` is a recount of what the store holds there.
fn assert_recounts(store: &Store, id: &HarnessId, split: Split, rate: &Rate) {
    let outs: Vec<TaskOutcome> = store
        .evaluations(id)
        .expect("reads")
        .into_iter()
        .filter(|o| o.task.split == split)
        .collect();
    assert_eq!(rate.trials, outs.len() as u64, "{id}");
    assert_eq!(rate.successes, outs.iter().filter(|o| o.won).count() as u64);
}

/// While the final stage runs (hours on a small machine, over several resumptions), the status
/// shows its held-out comparison as far as it has got: every harness of the comparison on the
/// tasks it has played, with the chosen harness's paired differences, as the store records
/// them; once the run ends, only the final record is shown.
#[test]
fn the_status_shows_the_final_stage_so_far() {
    // A whole run first, to count its answers.
    let whole = tempfile::tempdir().expect("tempdir");
    let (exp, seeds) = experiment(whole.path(), 40);
    let (st, log) = run_scripted(exp, seeds, &Store::open(whole.path()).expect("opens"));
    assert!(st.final_.is_some() && st.final_so_far.is_none());
    assert!(st.paired_so_far.is_empty());
    assert_eq!(
        st.stage, None,
        "no step of the final stage runs once it has ended"
    );
    let answers = log.lock().unwrap().splits.len();
    // The same run killed twelve answers before its end: in the middle of the test split
    // (five harnesses, five jobs each).
    let dir = tempfile::tempdir().expect("tempdir");
    let (exp, seeds) = experiment(dir.path(), 40);
    let store = Store::open(dir.path()).expect("opens");
    let log = Arc::new(Mutex::new(Log::default()));
    run_killed(wins, &exp, &seeds, &store, &log, answers - 12, false);
    // Resumed and killed again, one answer at a time, until the final stage resumes: the jobs
    // that were out are sent again first. The status written when the final stage resumes,
    // with no answer after it, shows exactly what the store holds.
    let st = resume_until_final(&exp, &seeds, &store, &log, dir.path());
    assert!(st.final_.is_none());
    let f = st.final_so_far.expect("the final stage so far");
    let chosen = f.best.expect("a chosen harness");
    assert_eq!(f.role(&chosen), "chosen");
    assert!(!f.test.is_empty());
    // Each figure is a recount of what the store holds for that harness on the test split.
    for (id, rate) in &f.test {
        assert_recounts(&store, id, Split::Test, rate);
    }
    // The step now running is the test split, and its count is the store's.
    let stage = st.stage.expect("the final stage's step");
    assert_eq!((stage.split, stage.tasks), (Split::Test, 10));
    assert_eq!(stage.harnesses, f.roles.len());
    assert_eq!(
        stage.done,
        f.test.iter().map(|(_, r)| r.trials).sum::<u64>()
    );
    // Some harness has not played every test task yet, and the pairs count only the tasks
    // both played.
    assert!(f.test.iter().any(|(_, r)| r.trials < 10), "{:?}", f.test);
    assert!(!st.paired_so_far.is_empty());
    for p in &st.paired_so_far {
        let n = |id: &HarnessId| f.test.iter().find(|(h, _)| h == id).map(|(_, r)| r.trials);
        assert!(p.success.n <= n(&chosen).unwrap().min(n(&p.other).unwrap()));
    }
}

/// The select step of the final stage (an hour or more on ALFWorld) shows in the status as it
/// goes: each finalist's score on the select tasks it has played, as the store records them.
#[test]
fn the_status_shows_the_select_split_so_far() {
    let whole = tempfile::tempdir().expect("tempdir");
    let (exp, seeds) = experiment(whole.path(), 40);
    let (_, log) = run_scripted(exp, seeds, &Store::open(whole.path()).expect("opens"));
    let splits = log.lock().unwrap().splits.clone();
    let first = splits
        .iter()
        .position(|s| *s == Split::Validation)
        .expect("the select split is played");
    // The same run killed two answers into its select step: the status written as the select
    // step resumes, with no answer after it, is what the store holds.
    let dir = tempfile::tempdir().expect("tempdir");
    let (exp, seeds) = experiment(dir.path(), 40);
    let store = Store::open(dir.path()).expect("opens");
    let log = Arc::new(Mutex::new(Log::default()));
    run_killed(wins, &exp, &seeds, &store, &log, first + 2, false);
    // Resumed and killed again, one answer at a time, until the select step resumes (the jobs
    // that were out are sent again first).
    let st = resume_until_final(&exp, &seeds, &store, &log, dir.path());
    let stage = st.stage.expect("the final stage's step");
    assert_eq!(stage.split, Split::Validation);
    let f = st.final_so_far.expect("the select step so far");
    assert!(f.best.is_none() && f.test.is_empty(), "{f:?}");
    assert!(!f.select.is_empty() && f.select.len() <= stage.harnesses);
    assert_eq!(f.select.len(), f.select_progress.len());
    for (id, rate) in &f.select {
        assert_recounts(&store, id, Split::Validation, rate);
        assert_eq!(f.role(id), "finalist");
    }
    assert_eq!(
        stage.done,
        f.select.iter().map(|(_, r)| r.trials).sum::<u64>()
    );
}

/// The seed is scored beside the finalists on the select split, so a candidate is chosen only
/// where it does better there; without the option only the finalists are.
#[test]
fn the_seed_is_a_finalist_so_a_candidate_must_beat_it_to_be_chosen() {
    for seeds_in_select in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut exp, seeds) = experiment_with(dir.path(), 40, r#"seeds = ["react.toml"]"#);
        exp.racing.seeds_in_select = seeds_in_select;
        // The select split holds the finalists alone (pruning adds its own harnesses there).
        exp.racing.prune = false;
        // One finalist: in this scripted world a bigger child, not the seed.
        exp.racing.finalists = 1;
        let store = Store::open(dir.path()).expect("opens");
        let (status, _) = run_scripted(exp, seeds.clone(), &store);
        let f = status.final_.expect("a final");
        let best = f.best.expect("a best");
        let react = seeds[0].id();
        let on_select: Vec<HarnessId> = f.select.iter().map(|(id, _)| *id).collect();
        if !seeds_in_select {
            assert_eq!(on_select.len(), 1, "{on_select:?}");
            assert_ne!(on_select[0], react, "the finalist is a child");
            continue;
        }
        assert_eq!(
            on_select.len(),
            2,
            "the finalist and the seed: {on_select:?}"
        );
        assert!(on_select.contains(&react), "{on_select:?}");
        for (id, r) in &f.select {
            assert_eq!(r.trials, 6, "{id}");
        }
        // The choice is the best of them all on the select split, seed included.
        let fit = |id: &HarnessId| {
            let on: Vec<TaskOutcome> = store
                .evaluations(id)
                .expect("reads")
                .into_iter()
                .filter(|o| o.task.split == Split::Validation)
                .collect();
            hx_coordinator::search::Fitness::of(on.iter(), 0.95)
        };
        for id in &on_select {
            assert_ne!(
                fit(id).rank(&fit(&best)),
                std::cmp::Ordering::Greater,
                "{id} ranks above the chosen {best}"
            );
        }
    }
}

/// A world where a loop guard wins two tasks in three, one in three without a log of visited
/// places beside it, and nothing else matters (without a guard a harness wins one in five):
/// worked examples there cost tokens and win nothing.
fn a_loop_guard_wins(h: &Harness, task: &TaskRef) -> bool {
    let has = |k: Kind| h.components().any(|c| c.kind == k);
    if has(Kind::LoopGuard) {
        !task.seed.is_multiple_of(3) && (has(Kind::VisitedLog) || task.seed.is_multiple_of(2))
    } else {
        task.seed.is_multiple_of(5)
    }
}

/// `react`; `react` + loop guard + visited log (what wins in [`a_loop_guard_wins`]); the same
/// with worked examples (which win nothing there).
fn guard_world_harnesses() -> (Harness, Harness, Harness) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/harnesses");
    let react = format::load(&root.join("react.toml")).expect("loads");
    let with = |h: &Harness, name: &str, kind: Kind| {
        h.apply(&Edit::Insert {
            component: Component::new(name, kind),
            edges: vec![],
        })
        .expect("valid")
    };
    let lean = with(
        &with(&react, "guard", Kind::LoopGuard),
        "visited",
        Kind::VisitedLog,
    );
    let all = with(&lean, "examples", Kind::FewShot);
    (react, lean, all)
}

/// The final stage tries the chosen harness without each component the search added to the
/// seed, on the same select tasks, and keeps a removal that wins as many at no more tokens:
/// seeded with `react` and `react` + loop guard + visited log + worked examples (no budget
/// for children), the examples go and the other two stay. Only the select split is read for
/// it, and the harness kept is the one the held-out comparison scores; without the option the
/// seed with the examples is chosen as it is.
#[test]
fn pruning_drops_a_component_that_wins_nothing_and_keeps_those_that_do() {
    let (react, lean, all) = guard_world_harnesses();
    for prune in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut exp, _) = experiment_with(dir.path(), 4, r#"seeds = ["react.toml"]"#);
        exp.racing.prune = prune;
        exp.racing.equal_budget = false;
        let store = Store::open(dir.path()).expect("opens");
        let log = Arc::new(Mutex::new(Log::default()));
        let mut bus = Scripted::new(&log, None);
        bus.rule = a_loop_guard_wins;
        let mut said = Vec::new();
        let mut say = |m: &str| said.push(m.to_owned());
        let status = Search::new(
            exp,
            vec![react.clone(), all.clone()],
            &store,
            &mut bus,
            false,
            &mut say,
        )
        .expect("starts")
        .run()
        .expect("runs");
        let f = status.final_.expect("a final");
        let best = f.best.expect("a best");
        let seeds_ids = [react.id(), all.id()];
        let on_test: BTreeSet<HarnessId> = f.test.iter().map(|(id, _)| *id).collect();
        if !prune {
            assert_eq!(best, all.id(), "{said:#?}");
            continue;
        }
        assert_eq!(best, lean.id(), "{said:#?}");
        assert_eq!(
            on_test,
            BTreeSet::from([lean.id(), react.id(), all.id()]),
            "the kept harness and the seeds"
        );
        let l = store.lineage(&best).expect("reads").expect("lineage");
        assert_eq!(l.operator, "prune");
        assert_eq!(l.parents, [all.id()]);
        // Its select score is on the same 6 tasks as the finalists'.
        let sel = f
            .select
            .iter()
            .find(|(id, _)| *id == best)
            .expect("scored")
            .1;
        assert_eq!((sel.trials, sel.successes), (6, 4));
        let verdicts = |what: &str| -> Vec<bool> {
            said.iter()
                .filter(|m| m.contains(what))
                .map(|m| m.ends_with(": kept"))
                .collect()
        };
        assert_eq!(verdicts("without its few-shot"), [true], "{said:#?}");
        // Removing the guard or the log wins fewer, whenever it is tried: not kept.
        let others = [
            verdicts("without its loop-guard"),
            verdicts("without its visited-log"),
        ];
        assert!(
            others.iter().all(|v| !v.is_empty() && !v.contains(&true)),
            "{said:#?}"
        );
        // Trials read the select split alone; the held-out splits only the compared harnesses.
        let log = log.lock().unwrap();
        for (h, task) in &log.evaluated {
            if matches!(task.split, Split::Test | Split::Heldout) {
                assert!(
                    on_test.iter().any(|id| id.to_string() == *h),
                    "{h} on {task}"
                );
            }
        }
        let trials = f.select.len() - 2;
        assert!(trials >= 3, "{:?}", f.select);
        // Each harness on the select split says what it is; the trials are not finalists.
        for (id, _) in &f.select {
            let want = if *id == best {
                "chosen"
            } else if seeds_ids.contains(id) {
                "seed"
            } else {
                "prune trial"
            };
            assert_eq!(f.role(id), want, "{id}");
        }
    }
}

/// The choice the held-out comparison began with stays when a run resumes: a pruned one with
/// pruning off now (nothing on the select split played again), an unpruned one with pruning on
/// now, and one from a build that did not store its choice (held-out tasks played, no stored
/// choice) unpruned.
#[test]
fn a_resumed_final_stage_keeps_the_choice_it_began_with() {
    let (react, lean, all) = guard_world_harnesses();
    let seeds = vec![react, all.clone()];
    // (prune at first, prune on resume, forget the stored choice, the choice kept)
    for (first, then, forget, kept) in [
        (true, false, false, lean.id()),
        (false, true, false, all.id()),
        (false, true, true, all.id()),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut exp, _) = experiment_with(dir.path(), 4, r#"seeds = ["react.toml"]"#);
        exp.racing.equal_budget = false;
        exp.racing.prune = first;
        let store = Store::open(dir.path()).expect("opens");
        let log = Arc::new(Mutex::new(Log::default()));
        // Two search jobs, six select jobs, the trials' (three jobs each where pruning is on),
        // then six of the held-out jobs before the kill.
        let answers = 2 + 6 + if first { 9 } else { 0 } + 6;
        run_killed(
            a_loop_guard_wins,
            &exp,
            &seeds,
            &store,
            &log,
            answers,
            false,
        );
        assert!(
            store
                .evaluations(&kept)
                .expect("reads")
                .iter()
                .any(|o| o.task.split == Split::Test),
            "the held-out comparison began with {kept}"
        );
        if forget {
            store.remove_meta("final/chosen").expect("removes");
        }
        exp.racing.prune = then;
        let sent_before = log.lock().unwrap().splits.len();
        let mut bus = Scripted::new(&log, None);
        bus.rule = a_loop_guard_wins;
        let mut said = Vec::new();
        let mut say = |m: &str| said.push(m.to_owned());
        let st = Search::new(exp, seeds.clone(), &store, &mut bus, true, &mut say)
            .expect("resumes")
            .run()
            .expect("finishes");
        assert_eq!(st.final_.expect("a final").best, Some(kept), "{said:#?}");
        let log = log.lock().unwrap();
        assert!(
            !log.splits[sent_before..].contains(&Split::Validation),
            "the select split played again: {said:#?}"
        );
        assert_eq!(
            said.iter().any(|m| m.contains("unpruned; kept as it is")),
            forget,
            "{said:#?}"
        );
    }
}

/// A pruned choice played no search task, and with the seed off the select split the two
/// share no task: the equal-budget baseline is then set from each one's own episodes (the
/// pruned choice's on the select split), not dropped.
#[test]
fn a_pruned_choice_gets_its_equal_budget_baseline() {
    let (react, lean, all) = guard_world_harnesses();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut exp, _) = experiment_with(dir.path(), 12, r#"seeds = ["react.toml"]"#);
    // Six search tasks each, enough for the seed with the guard to rank first there.
    exp.racing.rungs = vec![6];
    exp.racing.seeds_in_select = false;
    exp.racing.finalists = 1;
    let store = Store::open(dir.path()).expect("opens");
    let log = Arc::new(Mutex::new(Log::default()));
    let mut bus = Scripted::new(&log, None);
    bus.rule = a_loop_guard_wins;
    let mut said = Vec::new();
    let mut say = |m: &str| said.push(m.to_owned());
    let st = Search::new(
        exp,
        vec![react.clone(), all],
        &store,
        &mut bus,
        false,
        &mut say,
    )
    .expect("starts")
    .run()
    .expect("runs");
    let f = st.final_.expect("a final");
    assert_eq!(f.best, Some(lean.id()), "{said:#?}");
    let (eb, _) = f
        .roles
        .iter()
        .find(|(_, r)| r.starts_with("equal-budget"))
        .unwrap_or_else(|| panic!("no equal-budget baseline: {said:#?}"));
    let h = store.harness(eb).expect("reads").expect("stored");
    // The scripted tokens per episode: 1000 and 100 per component the prompt holds.
    let tokens =
        |h: &Harness| 1000.0 + 100.0 * h.components().filter(|c| c.kind.searched()).count() as f64;
    let ratio = tokens(&lean) / tokens(&react);
    assert!(
        (h.best_of_samples() - ratio).abs() < 0.01,
        "{} vs {ratio}",
        h.best_of_samples()
    );
}
