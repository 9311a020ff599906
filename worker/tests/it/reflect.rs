//! The reflective operator inside a job, driven by a scripted proposer (a test double that
//! writes the answers it is given) against the real blocks world: proposals the algebra
//! refuses are refused with their reasons, a child that loses the parent's won task fails its
//! gate, a child that does better on a claimed failure passes and its gate episodes count
//! once. The real model as proposer is exercised end to end in the coordinator's tests.

use std::path::Path;
use std::sync::Mutex;

use hx_common::harness::Harness;
use hx_common::harness::format;
use hx_common::protocol::{
    Job, JobBudget, JobId, JobKind, JobStatus, MutationOp, MutationSpec, ParentEpisode,
    ProposerMode, ProposerSpec,
};
use hx_common::task::{Split, TaskBatch, TaskRef};
use hx_model::{
    Error, Finish, GenerateRequest, Generation, ModelBackend, ScoreRequest, Scores, Usage,
};

fn react() -> Harness {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    format::load(&root.join("configs/harnesses/react.toml")).expect("loads")
}

/// Writes the texts it is given, in turn, at 100 prompt and 50 completion tokens a call; as
/// an agent it finds every command equally likely, at one token per candidate.
struct Scripted {
    texts: Mutex<Vec<String>>,
    calls: Mutex<u64>,
}

impl Scripted {
    fn new(texts: &[&str]) -> Scripted {
        Scripted {
            texts: Mutex::new(texts.iter().map(|t| (*t).to_owned()).collect()),
            calls: Mutex::new(0),
        }
    }
}

impl ModelBackend for Scripted {
    fn describe(&self) -> String {
        "scripted".into()
    }
    fn generate(&self, _: &GenerateRequest) -> Result<Generation, Error> {
        *self.calls.lock().expect("lock") += 1;
        let mut texts = self.texts.lock().expect("lock");
        let text = if texts.is_empty() {
            String::new()
        } else {
            texts.remove(0)
        };
        Ok(Generation {
            text,
            finish: Finish::Stop,
            usage: Usage {
                prompt_tokens: 100,
                cached_tokens: 0,
                completion_tokens: 50,
            },
        })
    }
    fn score(&self, r: &ScoreRequest) -> Result<Scores, Error> {
        let n = r.candidates.len();
        Ok(Scores {
            logprobs: vec![-1.0; n],
            tokens: vec![1; n],
            per_token: vec![vec![-1.0]; n],
            usage: Usage {
                prompt_tokens: n as u64,
                cached_tokens: 0,
                completion_tokens: 0,
            },
        })
    }
}

fn job(parent: &Harness, episodes: Vec<ParentEpisode>, seeds: Vec<u64>) -> Job {
    Job {
        id: JobId(1),
        run: "t".into(),
        kind: JobKind::MutateAndEvaluate {
            parent: parent.clone(),
            mutation: MutationSpec {
                op: MutationOp::Reflect {
                    proposer: ProposerSpec {
                        mode: ProposerMode::Write,
                        proposals: 3,
                        temperature: 0.7,
                        max_tokens: 300,
                        max_gates: 2,
                    },
                    episodes,
                },
                seed: 9,
                failure_digest: "blocks/train/1: failed after 12 steps; last commands: \
                                 pick up the red block, put down the red block"
                    .into(),
            },
        },
        tasks: TaskBatch {
            suite: "blocks".into(),
            split: Split::Train,
            seeds,
        },
        budget: JobBudget {
            max_steps: 12,
            max_tokens: 1 << 30,
            wall_ms: 600_000,
        },
        attempt: 1,
    }
}

fn ep(seed: u64, won: bool, score: f32) -> ParentEpisode {
    ParentEpisode {
        seed,
        won,
        score,
        steps: 12,
    }
}

#[test]
fn a_child_that_loses_the_parents_won_task_fails_its_gate_and_bad_proposals_say_why() {
    let parent = react();
    // The proposer names failure modes, then writes one malformed proposal, one out of
    // range, and one valid child that can take a single step (so it cannot win a task it
    // must move blocks for).
    let proposer = Scripted::new(&[
        "It repeats itself.",
        r#"{"proposals": [
            {"edits": [{"insert": {"component": {"name": "x", "kind": "teleporter"}}}]},
            {"edits": [{"set-parameter": {"component": "act", "param": "temperature", "value": 9}}]},
            {"edits": [{"set-parameter": {"component": "steps", "param": "max-steps", "value": 1}}],
             "rationale": "act fast", "fixes": [1]}
        ]}"#,
    ]);
    let agent = Scripted::new(&[]);
    let j = job(
        &parent,
        vec![ep(0, true, 1.0), ep(1, false, 0.0)],
        vec![0, 1],
    );
    let r = hx_worker::job::run(&j, &agent, Some(&proposer), None, "w", 2);
    let JobStatus::InvalidChild { reason } = &r.status else {
        panic!("{:?}", r.status)
    };
    assert!(reason.starts_with("reflective:"), "{reason}");
    assert_eq!(r.refusals.len(), 3, "{:#?}", r.refusals);
    assert!(r.refusals[0].contains("teleporter"), "{}", r.refusals[0]);
    assert!(r.refusals[1].contains("temperature"), "{}", r.refusals[1]);
    assert!(
        r.refusals[2].starts_with("gate:") && r.refusals[2].contains("lost task 0"),
        "{}",
        r.refusals[2]
    );
    assert!(r.child.is_none() && r.outcomes.is_empty());
    // Two proposer calls, counted apart from the agents' tokens; the gate's episodes cost
    // agent tokens.
    assert_eq!(*proposer.calls.lock().expect("lock"), 2);
    assert_eq!(r.proposer_usage.prompt_tokens, 200);
    assert_eq!(r.proposer_usage.completion_tokens, 100);
    assert!(r.usage.prompt_tokens > 0);
}

#[test]
fn a_child_that_does_better_on_a_claimed_failure_passes_and_its_gate_counts_once() {
    let parent = react();
    let edit = r#"{"edits": [{"set-parameter": {"component": "act", "param": "repeat-penalty", "value": 1.0}}], "rationale": "stop repeating", "fixes": [SEED]}"#;
    let child = parent
        .apply(&hx_common::harness::Edit::SetParameter {
            component: "act".into(),
            param: "repeat-penalty".into(),
            value: 1.0.into(),
        })
        .expect("valid");
    // Find a task where the child (with this scripted agent) ends with some progress, and
    // claim the parent failed it with none: the gate must pass there.
    let agent = Scripted::new(&[]);
    let options = hx_agent::Options {
        max_steps: Some(12),
        ..Default::default()
    };
    let seeds: Vec<u64> = (0..12).collect();
    let tasks: Vec<TaskRef> = seeds
        .iter()
        .map(|&seed| TaskRef {
            suite: "blocks".into(),
            split: Split::Train,
            seed,
        })
        .collect();
    let played = hx_agent::run_many(&child, &tasks, &agent, None, &options, 2, &|_, _| {});
    let (seed, alone) = played
        .iter()
        .zip(&seeds)
        .find_map(|(e, s)| {
            let e = e.as_ref().expect("plays");
            (e.outcome.won || e.outcome.score > 0.0).then_some((*s, e.outcome.clone()))
        })
        .expect("some task where the scripted agent makes progress in 12 steps");
    let proposer = Scripted::new(&["Loops.", &edit.replace("SEED", &seed.to_string())]);
    let agent = Scripted::new(&[]);
    let j = job(&parent, vec![ep(seed, false, 0.0)], vec![seed, 100]);
    let r = hx_worker::job::run(&j, &agent, Some(&proposer), None, "w", 2);
    assert_eq!(r.status, JobStatus::Completed, "{:?}", r.refusals);
    assert_eq!(r.child.as_ref().map(Harness::id), Some(child.id()));
    assert!(r.refusals.is_empty(), "{:?}", r.refusals);
    let on: Vec<u64> = r.outcomes.iter().map(|o| o.task.seed).collect();
    assert_eq!(on, [seed, 100]);
    // The gate's episode on the job's own task is the evaluation's: played once, the same.
    assert_eq!(r.outcomes[0].score, alone.score);
    assert_eq!(r.outcomes[0].tokens, alone.tokens);
    let spent: u64 = r.outcomes.iter().map(|o| o.tokens).sum();
    assert_eq!(r.usage.prompt_tokens, spent);
}
