//! One job, start to finish, as any worker runs it (in-process or over NATS): make the child
//! (or take the harness as it is), run its episodes, and answer with a [`JobResult`].

use std::time::Instant;

use hx_common::config::AdapterOptions;
use hx_common::harness::Harness;
use hx_common::protocol::{Job, JobKind, JobResult, JobStatus};

use hx_agent::{self as agent, Options};
use hx_model::ModelBackend;

use crate::mutate;

/// How long a job's combined failure digest may be (it feeds a mutation prompt).
pub const DIGEST_CHARS: usize = 600;

/// Runs `job` with `model`, `concurrency` episodes at once. Never fails: what went wrong is
/// the result's status.
pub fn run(
    job: &Job,
    model: &dyn ModelBackend,
    adapter: Option<&AdapterOptions>,
    worker: &str,
    concurrency: usize,
) -> JobResult {
    let clock = Instant::now();
    let mut result = JobResult::new(job, worker, JobStatus::Completed);
    let child: Result<Harness, mutate::Error> = match &job.kind {
        JobKind::Evaluate { harness } => Ok(harness.clone()),
        JobKind::MutateAndEvaluate { parent, mutation } => mutate::mutate(parent, mutation, model)
            .map(|(c, usage)| {
                result.usage.prompt_tokens += usage.prompt_tokens;
                result.usage.completion_tokens += usage.completion_tokens;
                c.harness
            }),
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
    let tasks: Vec<_> = job.tasks.tasks().collect();
    let options = Options {
        max_steps: Some(job.budget.max_steps),
        ..Options::default()
    };
    let episodes = agent::run_many(
        &child,
        &tasks,
        model,
        adapter,
        &options,
        concurrency,
        &|_, _| {},
    );
    let mut errors = Vec::new();
    let mut digests = Vec::new();
    for (task, e) in tasks.iter().zip(episodes) {
        match e {
            Ok(e) => {
                result.usage.prompt_tokens += e.usage.prompt_tokens;
                result.usage.completion_tokens += e.usage.completion_tokens;
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
