//! One job, start to finish, as any worker runs it (in-process or over NATS): make the child
//! (or take the harness as it is), run its episodes, and answer with a [`JobResult`].

use std::time::Instant;

use hx_common::config::AdapterOptions;
use hx_common::harness::Harness;
use hx_common::protocol::{
    Job, JobKind, JobResult, JobStatus, MutationOp, MutationSpec, ParentEpisode, ProposerSpec,
};
use hx_common::task::TaskRef;

use hx_agent::{self as agent, Options};
use hx_model::ModelBackend;

use crate::{mutate, reflect};

/// How long a job's combined failure digest may be (it feeds the mutation prompts: text
/// mutation reads its first 600 characters, the reflective proposer more).
pub const DIGEST_CHARS: usize = 1500;

/// Runs `job` with `model`, `concurrency` episodes at once; a reflective mutation asks
/// `proposer` (the agents' model where `None`). Never fails: what went wrong is the result's
/// status.
pub fn run(
    job: &Job,
    model: &dyn ModelBackend,
    proposer: Option<&dyn ModelBackend>,
    adapter: Option<&AdapterOptions>,
    worker: &str,
    concurrency: usize,
) -> JobResult {
    let clock = Instant::now();
    let mut result = JobResult::new(job, worker, JobStatus::Completed);
    let tasks: Vec<_> = job.tasks.tasks().collect();
    let options = Options {
        max_steps: Some(job.budget.max_steps),
        ..Options::default()
    };
    // Episodes the reflective gate already played, reused where the job asks for them.
    let mut played: Vec<(TaskRef, agent::Episode)> = Vec::new();
    let child: Result<Harness, mutate::Error> = match &job.kind {
        JobKind::Evaluate { harness } => Ok(harness.clone()),
        JobKind::MutateAndEvaluate {
            parent,
            mutation:
                MutationSpec {
                    op:
                        MutationOp::Reflect {
                            proposer: spec,
                            episodes,
                        },
                    seed,
                    failure_digest,
                },
        } => {
            let ask = Reflective {
                job,
                model,
                adapter,
                options: &options,
                concurrency,
            };
            ask.run(
                parent,
                spec,
                episodes,
                failure_digest,
                *seed,
                proposer.unwrap_or(model),
                &mut result,
                &mut played,
            )
        }
        JobKind::MutateAndEvaluate { parent, mutation } => {
            let limits = mutate::Limits {
                episode_steps: Some(job.budget.max_steps),
            };
            mutate::mutate(parent, mutation, limits, model).map(|(c, usage)| {
                result.usage.prompt_tokens += usage.prompt_tokens;
                result.usage.completion_tokens += usage.completion_tokens;
                c.harness
            })
        }
        JobKind::CrossoverAndEvaluate { parents, seed } => {
            mutate::crossover(&parents[0], &parents[1], *seed)
                .map(|c| c.harness)
                .map_err(mutate::Error::from)
        }
    };
    let child = match child {
        Ok(h) => h,
        Err(mutate::Error::NoValidChild(mutate::NoValidChild(reason))) => {
            result.status = JobStatus::InvalidChild { reason };
            result.wall_ms = clock.elapsed().as_millis() as u64;
            return result;
        }
        Err(e) => {
            result.status = JobStatus::Failed {
                reason: e.to_string(),
            };
            result.wall_ms = clock.elapsed().as_millis() as u64;
            return result;
        }
    };
    let fresh: Vec<TaskRef> = tasks
        .iter()
        .filter(|t| !played.iter().any(|(p, _)| p == *t))
        .cloned()
        .collect();
    let mut episodes = agent::run_many(
        &child,
        &fresh,
        model,
        adapter,
        &options,
        concurrency,
        &|_, _| {},
    )
    .into_iter();
    let mut errors = Vec::new();
    let mut digests = Vec::new();
    for task in &tasks {
        // A gate episode's tokens are in the usage already.
        let (e, paid) = match played.iter().position(|(p, _)| p == task) {
            Some(i) => (Ok(played.swap_remove(i).1), true),
            None => (
                episodes.next().expect("an episode for every fresh task"),
                false,
            ),
        };
        match e {
            Ok(e) => {
                if !paid {
                    result.usage.prompt_tokens += e.usage.prompt_tokens;
                    result.usage.completion_tokens += e.usage.completion_tokens;
                }
                if !e.outcome.won {
                    digests.push(e.failure_digest);
                }
                result.outcomes.push(e.outcome);
                result.rewrites.extend(e.rewrites);
            }
            Err(e) => errors.push(format!("{task}: {e}")),
        }
    }
    result.failure_digest = digests.join("\n").chars().take(DIGEST_CHARS).collect();
    if !errors.is_empty() {
        result.status = JobStatus::Failed {
            reason: errors.join("; ").chars().take(2000).collect(),
        };
    }
    // An evaluate job's harness is the coordinator's own: sending it back would only cost
    // both sides an encode, a decode and a validation.
    if !matches!(job.kind, JobKind::Evaluate { .. }) {
        result.child = Some(child);
    }
    result.wall_ms = clock.elapsed().as_millis() as u64;
    result
}

/// A reflective mutation inside a job: propose, check, gate.
struct Reflective<'a> {
    job: &'a Job,
    model: &'a dyn ModelBackend,
    adapter: Option<&'a AdapterOptions>,
    options: &'a Options,
    concurrency: usize,
}

impl Reflective<'_> {
    /// The first child the algebra accepts that passes its gate: it does no worse than the
    /// parent on at least one failure it claims to fix (wins it, or ends with more progress)
    /// and still wins the parent's won task. At most `max_gates` children are gated; the
    /// gate's episodes count in the job's usage, and those on the job's own tasks are kept
    /// in `played` for the evaluation. What was refused, and why, becomes the refusal.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        parent: &Harness,
        spec: &ProposerSpec,
        episodes: &[ParentEpisode],
        digest: &str,
        seed: u64,
        proposer: &dyn ModelBackend,
        result: &mut JobResult,
        played: &mut Vec<(TaskRef, agent::Episode)>,
    ) -> Result<Harness, mutate::Error> {
        let limits = mutate::Limits {
            episode_steps: Some(self.job.budget.max_steps),
        };
        let proposed = reflect::propose(parent, episodes, digest, spec, seed, limits, proposer)?;
        result.proposer_usage.prompt_tokens += proposed.usage.prompt_tokens;
        result.proposer_usage.completion_tokens += proposed.usage.completion_tokens;
        let mut why = proposed.refused.clone();
        for (child, proposal) in proposed.children.iter().take(spec.max_gates as usize) {
            let (fails, won) = reflect::gate_tasks(proposal, episodes);
            let gate: Vec<&ParentEpisode> = fails.iter().copied().chain(won).collect();
            let refs: Vec<TaskRef> = gate
                .iter()
                .map(|e| TaskRef {
                    suite: self.job.tasks.suite.clone(),
                    split: self.job.tasks.split,
                    seed: e.seed,
                })
                .collect();
            let ran = agent::run_many(
                &child.harness,
                &refs,
                self.model,
                self.adapter,
                self.options,
                self.concurrency,
                &|_, _| {},
            );
            let mut outcomes = Vec::new();
            for (t, e) in refs.iter().zip(ran) {
                match e {
                    Ok(e) => {
                        result.usage.prompt_tokens += e.usage.prompt_tokens;
                        result.usage.completion_tokens += e.usage.completion_tokens;
                        outcomes.push((t.clone(), e));
                    }
                    Err(e) => return Err(mutate::Error::Gate(format!("{t}: {e}"))),
                }
            }
            let of = |p: &ParentEpisode| {
                outcomes
                    .iter()
                    .find(|(t, _)| t.seed == p.seed)
                    .map(|(_, e)| &e.outcome)
            };
            let fixed = fails
                .iter()
                .any(|p| of(p).is_some_and(|o| o.won || o.score > p.score));
            let kept = won.is_none_or(|p| of(p).is_some_and(|o| o.won));
            if fixed && kept {
                played.extend(outcomes);
                result.refusals = why;
                return Ok(child.harness.clone());
            }
            let seeds = |v: &[&ParentEpisode]| {
                v.iter()
                    .map(|e| e.seed.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            why.push(format!(
                "gate: {} ({})",
                match (fixed, kept) {
                    (false, true) => format!("fixed none of tasks {}", seeds(&fails)),
                    (true, false) => format!(
                        "lost task {} the parent won",
                        won.map_or(String::new(), |w| w.seed.to_string())
                    ),
                    _ => format!(
                        "fixed none of tasks {} and lost task {} the parent won",
                        seeds(&fails),
                        won.map_or(String::new(), |w| w.seed.to_string())
                    ),
                },
                proposal.rationale.chars().take(80).collect::<String>()
            ));
        }
        let reason = format!(
            "reflective: {}",
            if why.is_empty() {
                "no proposal".to_owned()
            } else {
                why.join("; ")
            }
        );
        result.refusals = why;
        Err(mutate::Error::NoValidChild(mutate::NoValidChild(reason)))
    }
}
