//! Surveys of a suite: does the expert solve every task, how long are its plans, how fast are
//! tasks generated, and how often does an agent that picks admissible commands at random win.
//! `hx tasks check` prints one; the random agent's rate is the floor any harness must beat.

use std::time::Instant;

use hx_common::config::AdapterOptions;
use hx_common::stats::Rate;
use hx_common::task::{Split, TaskRef};
use rand::SeedableRng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{Builtin, Environment, Error};

/// What a survey found.
#[derive(Debug, Clone, Serialize)]
pub struct Survey {
    /// The suite.
    pub suite: String,
    /// The split.
    pub split: Split,
    /// First seed.
    pub start: u64,
    /// Tasks surveyed.
    pub count: u64,
    /// The expert's record: a built-in suite's planner, or an external game's own walkthrough
    /// (sent with its reset); `None` for an external suite that sends none.
    pub expert: Option<Expert>,
    /// The random admissible agent's record.
    pub random: Random,
}

/// The expert's record over the surveyed tasks.
#[derive(Debug, Clone, Serialize)]
pub struct Expert {
    /// Tasks generated whose expert plan wins when played in the environment.
    pub solved: u64,
    /// Tasks that failed to generate or whose plan did not win, with the reason.
    pub failures: Vec<String>,
    /// Mean plan length over solved tasks.
    pub mean_plan: f64,
    /// Shortest plan.
    pub min_plan: usize,
    /// Longest plan.
    pub max_plan: usize,
    /// Tasks made ready per second, one thread: generated (world, goal and expert plan) for
    /// a built-in suite, reset for an external one.
    pub generated_per_s: f64,
}

/// The random admissible agent's record.
#[derive(Debug, Clone, Serialize)]
pub struct Random {
    /// Episodes won, with a 95% Wilson interval.
    pub won: Rate,
    /// Mean final partial score, where the suite scores progress.
    pub mean_score: Option<f64>,
    /// Mean steps taken.
    pub mean_steps: f64,
    /// The environment's steps per second over the random agent's episodes (its resets and
    /// admissible lists included), one thread.
    pub steps_per_s: f64,
}

/// Surveys `count` tasks of `suite/split` from seed `start`. An external suite's expert is its
/// games' own walkthroughs, where its adapter sends them. An environment failure is an error.
/// `say` hears progress on external suites, whose tasks take seconds each.
pub fn survey(
    suite: &str,
    split: Split,
    start: u64,
    count: u64,
    adapter: Option<&AdapterOptions>,
    say: &mut dyn FnMut(&str),
) -> Result<Survey, Error> {
    let tasks: Vec<TaskRef> = (start..start + count)
        .map(|seed| TaskRef {
            suite: suite.to_owned(),
            split,
            seed,
        })
        .collect();
    let mut env = super::open(suite, adapter)?;
    let expert = match (adapter, Builtin::from_name(suite)) {
        (None, Ok(builtin)) => Some(expert(builtin, &tasks)?),
        _ => walkthroughs(env.as_mut(), &tasks, say)?,
    };
    let random = random(env.as_mut(), &tasks, say)?;
    Ok(Survey {
        suite: suite.to_owned(),
        split,
        start,
        count,
        expert,
        random,
    })
}

fn expert(suite: Builtin, tasks: &[TaskRef]) -> Result<Expert, Error> {
    let clock = Instant::now();
    let generated: Vec<_> = tasks.iter().map(|t| suite.generate(t)).collect();
    let generated_per_s = tasks.len() as f64 / clock.elapsed().as_secs_f64().max(1e-9);

    let mut lengths = Vec::new();
    let mut failures = Vec::new();
    let mut env = suite.environment();
    for (task, g) in tasks.iter().zip(generated) {
        let g = match g {
            Ok(g) => g,
            Err(e) => {
                failures.push(format!("{task}: {e}"));
                continue;
            }
        };
        env.reset(task)?;
        let mut won = false;
        for cmd in &g.plan {
            won = env.step(cmd)?.won;
        }
        if won {
            lengths.push(g.plan.len());
        } else {
            failures.push(format!("{task}: the expert's plan does not win"));
        }
    }
    Ok(Expert::of(&lengths, failures, generated_per_s))
}

impl Expert {
    /// The record of plans of `lengths` that won, and of the tasks in `failures` that did not.
    fn of(lengths: &[usize], failures: Vec<String>, generated_per_s: f64) -> Expert {
        Expert {
            solved: lengths.len() as u64,
            failures,
            mean_plan: mean(lengths.iter().map(|&l| l as f64)),
            min_plan: lengths.iter().copied().min().unwrap_or(0),
            max_plan: lengths.iter().copied().max().unwrap_or(0),
            generated_per_s,
        }
    }
}

/// Replays each game's own walkthrough; `None` when the first reset sends none.
fn walkthroughs(
    env: &mut dyn Environment,
    tasks: &[TaskRef],
    say: &mut dyn FnMut(&str),
) -> Result<Option<Expert>, Error> {
    let mut lengths = Vec::new();
    let mut failures = Vec::new();
    let mut resetting = std::time::Duration::ZERO;
    for (i, task) in tasks.iter().enumerate() {
        let clock = Instant::now();
        let reset = env.reset(task)?;
        resetting += clock.elapsed();
        let Some(plan) = reset.walkthrough else {
            if i == 0 {
                return Ok(None);
            }
            failures.push(format!("{task}: the adapter sent no walkthrough"));
            continue;
        };
        // A walkthrough may go on past the win (ScienceWorld's gold paths measure after the
        // goal holds); the episode ends there and its length is the steps played.
        let mut last = None;
        let mut played = 0;
        for cmd in &plan {
            let s = env.step(cmd)?;
            played += 1;
            let done = s.done;
            last = Some(s);
            if done {
                break;
            }
        }
        match last {
            Some(s) if s.won => lengths.push(played),
            Some(s) => failures.push(format!(
                "{task}: the walkthrough ({} commands) does not win; {played} played (step limit {}), \
                 last answer: {}",
                plan.len(),
                env.step_limit(),
                s.observation.lines().next().unwrap_or("")
            )),
            None => failures.push(format!("{task}: the walkthrough is empty")),
        }
        if (i + 1) % 10 == 0 {
            say(&format!(
                "walkthroughs: {} of {} played, {} won",
                i + 1,
                tasks.len(),
                lengths.len()
            ));
        }
    }
    Ok(Some(Expert::of(
        &lengths,
        failures,
        tasks.len() as f64 / resetting.as_secs_f64().max(1e-9),
    )))
}

fn random(
    env: &mut dyn Environment,
    tasks: &[TaskRef],
    say: &mut dyn FnMut(&str),
) -> Result<Random, Error> {
    let clock = Instant::now();
    let mut won = 0;
    let mut scores = Vec::new();
    let mut steps = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        if i > 0 && i % 10 == 0 {
            say(&format!(
                "random agent: {i} of {} played, {won} won",
                tasks.len()
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(task.seed ^ 0x5eed_0f7a_5c00);
        env.reset(task)?;
        let mut n = 0u32;
        loop {
            let admissible = env.admissible_commands()?;
            let Some(cmd) = admissible.choose(&mut rng) else {
                break;
            };
            let s = env.step(cmd)?;
            n += 1;
            if s.done {
                won += u64::from(s.won);
                if let Some(x) = s.score {
                    scores.push(f64::from(x));
                }
                break;
            }
        }
        steps.push(f64::from(n));
    }
    Ok(Random {
        won: Rate::wilson95(won, tasks.len() as u64),
        mean_score: (!scores.is_empty()).then(|| mean(scores.iter().copied())),
        steps_per_s: steps.iter().sum::<f64>() / clock.elapsed().as_secs_f64().max(1e-9),
        mean_steps: mean(steps.into_iter()),
    })
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}
