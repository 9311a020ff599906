//! Variation operators: every child is valid, a seed fixes the child, bad model output is a
//! refused child rather than a broken harness.

use std::path::Path;
use std::sync::Mutex;

use hx_common::harness::Harness;
use hx_common::harness::format;
use hx_common::protocol::{MutationOp, MutationSpec};
use hx_model::{
    Error, Finish, GenerateRequest, Generation, ModelBackend, ScoreRequest, Scores, Usage,
};
use hx_worker::mutate::{self, Limits, crossover, mutate};

fn seed_harness(name: &str) -> Harness {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    format::load(&root.join("configs/harnesses").join(name)).expect("loads")
}

/// Writes the texts it is given, in turn.
struct Writer(Mutex<Vec<String>>);

impl ModelBackend for Writer {
    fn describe(&self) -> String {
        "writer".into()
    }
    fn generate(&self, _: &GenerateRequest) -> Result<Generation, Error> {
        let mut texts = self.0.lock().expect("lock");
        // Out of texts, it acts: a command the household world understands.
        let text = if texts.is_empty() {
            "Action: look".to_owned()
        } else {
            texts.remove(0)
        };
        Ok(Generation {
            text,
            finish: Finish::Stop,
            usage: Usage::default(),
        })
    }
    /// Every candidate equally likely: a harness that scores commands plays at random.
    fn score(&self, r: &ScoreRequest) -> Result<Scores, Error> {
        let n = r.candidates.len();
        Ok(Scores {
            logprobs: vec![-1.0; n],
            tokens: vec![1; n],
            per_token: vec![vec![-1.0]; n],
            usage: Usage::default(),
        })
    }
}

fn spec(op: MutationOp, seed: u64) -> MutationSpec {
    MutationSpec {
        op,
        seed,
        failure_digest: "took the wrong object; went to the sofa 4 times".into(),
    }
}

fn valid(h: &Harness) {
    // A child survives its own canonical round trip with the same id.
    let back = format::parse_as(&format::to_json(h), format::Format::Json, "child").expect("valid");
    assert_eq!(back.id(), h.id());
}

#[test]
fn structural_and_parametric_children_are_valid_new_and_fixed_by_their_seed() {
    let none = Writer(Mutex::new(Vec::new()));
    for parent in [seed_harness("react.toml"), seed_harness("strong.toml")] {
        let mut ids = std::collections::BTreeSet::new();
        // Parametric children by how many parameters they move.
        let mut moves = [0; 4];
        for seed in 0..40 {
            for op in [MutationOp::Structural, MutationOp::Parametric] {
                let child = mutate(&parent, &spec(op.clone(), seed), Limits::default(), &none)
                    .expect("a child")
                    .0;
                valid(&child.harness);
                assert_ne!(child.harness.id(), parent.id());
                match op {
                    MutationOp::Parametric => {
                        assert!((1..=3).contains(&child.edits.len()), "{:?}", child.edits);
                        moves[child.edits.len()] += 1;
                    }
                    // One edit, and a parameter it makes live drawn afresh (`wake`).
                    _ => assert!((1..=2).contains(&child.edits.len()), "{:?}", child.edits),
                }
                // The same seed makes the same child; the edits replay to it.
                let again = mutate(&parent, &spec(op, seed), Limits::default(), &none)
                    .expect("a child")
                    .0;
                assert_eq!(again.harness.id(), child.harness.id());
                assert_eq!(
                    parent.apply_all(&child.edits).expect("replays").id(),
                    child.harness.id()
                );
                ids.insert(child.harness.id());
            }
        }
        assert!(ids.len() >= 20, "80 draws made only {} children", ids.len());
        // About half move one parameter, the rest two or three.
        assert!(
            moves[1] >= 10 && moves[2] + moves[3] >= 10,
            "parametric children by moves: {moves:?}"
        );
    }
}

#[test]
fn text_mutation_takes_the_models_text_and_refuses_bad_text() {
    let parent = seed_harness("strong.toml");
    let op = MutationOp::Text {
        component: Some("system".into()),
    };
    let good = Writer(Mutex::new(vec![
        "  Search every unvisited receptacle and open closed ones.  ".into(),
    ]));
    let child = mutate(&parent, &spec(op.clone(), 1), Limits::default(), &good)
        .expect("a child")
        .0;
    valid(&child.harness);
    assert_eq!(
        child
            .harness
            .component("system")
            .and_then(|c| c.param("text")),
        Some(&hx_common::harness::param::ParamValue::Text(
            "Search every unvisited receptacle and open closed ones.".into()
        ))
    );
    for bad in ["", &"x".repeat(5000)] {
        let m = Writer(Mutex::new(vec![bad.to_owned()]));
        let e = mutate(&parent, &spec(op.clone(), 1), Limits::default(), &m).expect_err("refused");
        assert!(matches!(e, mutate::Error::NoValidChild(_)), "{e}");
    }
    // The task framing keeps its {goal} placeholder or the child is refused.
    let framing = MutationOp::Text {
        component: Some("goal".into()),
    };
    let m = Writer(Mutex::new(vec!["Do the task.".into()]));
    let e = mutate(&parent, &spec(framing, 1), Limits::default(), &m).expect_err("refused");
    assert!(e.to_string().contains("{goal}"), "{e}");
}

#[test]
fn crossover_children_are_valid_and_differ_from_both_parents() {
    let (a, b) = (seed_harness("react.toml"), seed_harness("strong.toml"));
    let mut made = 0;
    for seed in 0..30 {
        match crossover(&a, &b, seed) {
            Ok(child) => {
                valid(&child.harness);
                assert_ne!(child.harness.id(), a.id());
                assert_ne!(child.harness.id(), b.id());
                // Every component comes from one parent or the other, and each of its
                // parameters from that parent or from the other's component of the same name
                // and kind.
                for c in child.harness.components() {
                    let from: Vec<_> = [&a, &b]
                        .into_iter()
                        .filter_map(|p| p.component(&c.name))
                        .filter(|p| p.kind == c.kind)
                        .collect();
                    assert!(
                        from.iter().any(|p| p.stages == c.stages),
                        "{} is in neither parent",
                        c.name
                    );
                    for (name, value) in &c.params {
                        assert!(
                            from.iter().any(|p| p.params.get(name) == Some(value)),
                            "{}.{name} = {value:?} is in neither parent",
                            c.name
                        );
                    }
                }
                made += 1;
            }
            // A crossover can only fail by finding no valid child; the type says so.
            Err(mutate::NoValidChild(reason)) => assert!(!reason.is_empty()),
        }
    }
    assert!(made >= 20, "only {made} of 30 crossovers made a child");
}

#[test]
fn adopted_edits_that_do_not_apply_are_refused() {
    let parent = seed_harness("react.toml");
    let none = Writer(Mutex::new(Vec::new()));
    let op = MutationOp::Apply {
        edits: vec![hx_common::harness::algebra::Edit::Remove {
            name: "no-such-component".into(),
        }],
    };
    let e = mutate(&parent, &spec(op, 0), Limits::default(), &none).expect_err("refused");
    assert!(e.to_string().contains("no-such-component"), "{e}");
}

fn job(kind: hx_common::protocol::JobKind) -> hx_common::protocol::Job {
    use hx_common::protocol::{Job, JobBudget, JobId};
    use hx_common::task::{Split, TaskBatch};
    Job {
        id: JobId(7),
        run: "t".into(),
        kind,
        tasks: TaskBatch {
            suite: "household".into(),
            split: Split::Validation,
            seeds: vec![3, 4],
        },
        budget: JobBudget {
            max_steps: 3,
            max_tokens: 100_000,
            wall_ms: 60_000,
        },
        attempt: 1,
    }
}

#[test]
fn a_job_answers_with_its_child_and_outcomes_or_says_why_not() {
    use hx_common::protocol::{JobKind, JobStatus};
    let parent = seed_harness("react.toml");
    let m = Writer(Mutex::new(Vec::new()));
    let j = job(JobKind::MutateAndEvaluate {
        parent: parent.clone(),
        mutation: spec(MutationOp::Parametric, 5),
    });
    let r = hx_worker::job::run(&j, &m, None, None, "w1", 2);
    assert_eq!(r.status, JobStatus::Completed);
    let child = r.child.expect("a child");
    // The worker makes the child the coordinator would, within the job's step limit.
    assert_eq!(
        child.id(),
        mutate(
            &parent,
            &spec(MutationOp::Parametric, 5),
            Limits {
                episode_steps: Some(j.budget.max_steps)
            },
            &m
        )
        .expect("a child")
        .0
        .harness
        .id()
    );
    assert_eq!((r.job, r.attempt, r.worker.as_str()), (j.id, 1, "w1"));
    let seeds: Vec<u64> = r.outcomes.iter().map(|o| o.task.seed).collect();
    assert_eq!(seeds, [3, 4]);
    // The job's step budget holds; three steps never win a household task.
    assert!(r.outcomes.iter().all(|o| o.steps <= 3 && !o.won));
    assert!(!r.failure_digest.is_empty() && r.failure_digest.len() <= 600 * 4);

    let bad = job(JobKind::MutateAndEvaluate {
        parent,
        mutation: spec(
            MutationOp::Apply {
                edits: vec![hx_common::harness::algebra::Edit::Remove {
                    name: "nothing".into(),
                }],
            },
            0,
        ),
    });
    let r = hx_worker::job::run(&bad, &m, None, None, "w1", 2);
    assert!(
        matches!(r.status, JobStatus::InvalidChild { .. }),
        "{:?}",
        r.status
    );
    assert!(r.outcomes.is_empty() && r.child.is_none());
}
