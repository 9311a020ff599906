//! The agent runtime's control flow, with a scripted model in a real household world: rewrites
//! refused, rolled back and bounded, traces that parse back, and exemplars only from train.

use std::collections::VecDeque;
use std::sync::Mutex;

use hx_agent::trace::{self, Event};
use hx_agent::{Options, exemplars, run_episode};
use hx_common::harness::catalog::Kind;
use hx_common::harness::format::{Format, parse_as};
use hx_common::harness::{Component, Edit, Harness};
use hx_common::protocol::TaskOutcome;
use hx_common::task::{Split, TaskRef};
use hx_env::Environment;
use hx_env::household::Household;
use hx_model::{
    Error, Finish, GenerateRequest, Generation, ModelBackend, ScoreRequest, Scores, Usage,
};

/// Answers generation with scripted commands in order (then `dance`), and scoring by
/// preferring the candidate that contains `pick`.
struct Scripted {
    commands: Mutex<VecDeque<String>>,
    pick: String,
}

impl Scripted {
    fn new(commands: &[&str], pick: &str) -> Scripted {
        Scripted {
            commands: Mutex::new(commands.iter().map(|c| c.to_string()).collect()),
            pick: pick.into(),
        }
    }
}

impl ModelBackend for Scripted {
    fn describe(&self) -> String {
        "scripted".into()
    }
    fn generate(&self, _: &GenerateRequest) -> Result<Generation, Error> {
        let cmd = self
            .commands
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or_else(|| "dance".into());
        Ok(Generation {
            text: format!("Thought: go on.\nAction: {cmd}"),
            finish: Finish::Stop,
            usage: Usage {
                prompt_tokens: 10,
                cached_tokens: 0,
                completion_tokens: 5,
            },
        })
    }
    fn score(&self, r: &ScoreRequest) -> Result<Scores, Error> {
        let logprobs: Vec<f64> = r
            .candidates
            .iter()
            .map(|c| if c.contains(&self.pick) { -1.0 } else { -9.0 })
            .collect();
        Ok(Scores {
            tokens: vec![1; logprobs.len()],
            per_token: logprobs.iter().map(|l| vec![*l]).collect(),
            logprobs,
            usage: Usage::default(),
        })
    }
}

fn harness(policy: &str) -> Harness {
    let text = format!(
        r#"
[[components]]
name = "system"
kind = "system-prompt"
params.text = "You are an agent in a household."

[[components]]
name = "history"
kind = "history-window"

[[components]]
name = "act"
kind = "free-generation"

[[components]]
name = "steps"
kind = "step-budget"
params.max-steps = 12

[[components]]
name = "rewrite"
kind = "rewrite-policy"
{policy}
"#
    );
    parse_as(&text, Format::Toml, "test").expect("a valid harness")
}

fn task() -> TaskRef {
    TaskRef {
        suite: "household".into(),
        split: Split::Train,
        seed: 3,
    }
}

/// What `command` shows as the task's first step, lower-cased.
fn first_sight(command: &str) -> String {
    let mut probe = Household::new();
    probe.reset(&task()).expect("resets");
    probe
        .step(command)
        .expect("steps")
        .observation
        .to_lowercase()
}

/// Two `go to` commands that make progress in the task's world: each shows something the
/// goal names.
fn two_moves() -> Vec<String> {
    let mut env = Household::new();
    let goal = env.reset(&task()).expect("resets").goal.to_lowercase();
    let words: Vec<&str> = goal
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 4 && !["your", "task"].contains(w))
        .collect();
    let moves: Vec<String> = env
        .admissible_commands()
        .expect("admissible")
        .into_iter()
        .filter(|c| c.starts_with("go to "))
        .filter(|c| {
            let seen = first_sight(c);
            words.iter().any(|w| seen.contains(w))
        })
        .take(2)
        .collect();
    assert_eq!(
        moves.len(),
        2,
        "two places that show the goal's things: {goal}"
    );
    moves
}

#[test]
fn an_invalid_rewrite_is_refused_and_the_episode_continues() {
    let h = harness(
        "params.no-progress-steps = 0\nparams.invalid-commands = 2\nparams.on-loop = false\nparams.max-rewrites = 1\nparams.allowed = [\"remove\"]",
    );
    // The model picks "remove act": an episode without an action selector is not a harness.
    let model = Scripted::new(&[], "remove act");
    let mut env = Household::new();
    let ep = run_episode(&h, &mut env, &task(), &model, &Options::default()).expect("runs");
    assert_eq!(ep.rewrites.len(), 1, "{:?}", ep.rewrites);
    let r = &ep.rewrites[0];
    assert!(!r.kept);
    assert_eq!(r.before, r.after);
    assert!(ep.events.iter().any(|e| matches!(e,
        Event::Rewrite { result, .. } if result.starts_with("refused") && result.contains("action-selector"))),
        "{:?}", ep.events);
    assert_eq!(ep.outcome.steps, 12, "the episode ran to its budget");
    assert_eq!(ep.harness.id(), h.id());
}

#[test]
fn a_rewrite_that_worsens_progress_is_rolled_back() {
    let moves = two_moves();
    let h = harness(
        "params.no-progress-steps = 0\nparams.invalid-commands = 2\nparams.on-loop = false\nparams.max-rewrites = 1\nparams.rollback-window = 3\nparams.allowed = [\"set-parameter\"]",
    );
    // Progress twice, then two commands that do nothing fire the policy; the rewrite (more
    // history) is followed by three more failures: worse than before, so it is undone.
    let model = Scripted::new(
        &[&moves[0], &moves[1], "dance", "dance"],
        "remember more steps",
    );
    let mut env = Household::new();
    let ep = run_episode(&h, &mut env, &task(), &model, &Options::default()).expect("runs");
    assert_eq!(ep.rewrites.len(), 1);
    assert!(!ep.rewrites[0].kept, "{:?}", ep.rewrites);
    assert_ne!(ep.rewrites[0].before, ep.rewrites[0].after);
    assert!(
        ep.events
            .iter()
            .any(|e| matches!(e, Event::Rewrite { result, .. } if result == "rolled-back"))
    );
    assert_eq!(
        ep.harness.id(),
        h.id(),
        "the harness is back to what it was"
    );
}

#[test]
fn a_rewrite_that_helps_is_kept() {
    let moves = two_moves();
    let h = harness(
        "params.no-progress-steps = 0\nparams.invalid-commands = 2\nparams.on-loop = false\nparams.max-rewrites = 1\nparams.rollback-window = 2\nparams.allowed = [\"set-parameter\"]",
    );
    let model = Scripted::new(
        &["dance", "dance", &moves[0], &moves[1]],
        "remember more steps",
    );
    let mut env = Household::new();
    let ep = run_episode(&h, &mut env, &task(), &model, &Options::default()).expect("runs");
    assert_eq!(ep.rewrites.len(), 1);
    assert!(ep.rewrites[0].kept, "{:?}", ep.events);
    assert_eq!(ep.harness.id(), ep.rewrites[0].after);
    let history = ep.harness.component("history").expect("kept");
    assert_eq!(history.param("steps").and_then(|v| v.as_int()), Some(16));
}

#[test]
fn the_rewrite_bound_holds_and_rewriting_can_be_turned_off() {
    let h = harness(
        "params.no-progress-steps = 2\nparams.invalid-commands = 1\nparams.on-loop = false\nparams.max-rewrites = 2\nparams.rollback-window = 1\nparams.allowed = [\"insert\", \"set-parameter\"]",
    );
    let model = Scripted::new(&[], "remember");
    let mut env = Household::new();
    let ep = run_episode(&h, &mut env, &task(), &model, &Options::default()).expect("runs");
    assert_eq!(ep.rewrites.len(), 2, "fires often, bounded at two");

    let off = Options {
        no_rewriting: true,
        ..Options::default()
    };
    let ep = run_episode(&h, &mut env, &task(), &model, &off).expect("runs");
    assert!(ep.rewrites.is_empty());
}

#[test]
fn reflection_does_not_hide_a_stall_from_the_rewrite_policy() {
    // Reflection every 2 stalled steps, rewriting after 3: reflecting is not progress.
    let h = harness(
        "params.no-progress-steps = 3\nparams.invalid-commands = 0\nparams.on-loop = false\nparams.max-rewrites = 1\nparams.allowed = [\"set-parameter\"]\n\n[[components]]\nname = \"reflect\"\nkind = \"reflection\"\nparams.trigger = \"stall\"\nparams.stall-steps = 2\nparams.max-reflections = 5",
    );
    let model = Scripted::new(&[], "remember more steps");
    let mut env = Household::new();
    let ep = run_episode(&h, &mut env, &task(), &model, &Options::default()).expect("runs");
    let reflections = ep
        .events
        .iter()
        .filter(|e| matches!(e, Event::Model { purpose, .. } if purpose == "reflect"))
        .count();
    assert!(reflections >= 2, "{:?}", ep.events);
    assert_eq!(ep.rewrites.len(), 1, "{:?}", ep.events);
    assert_eq!(ep.rewrites[0].trigger, "no-progress");
    assert_eq!(ep.rewrites[0].step, 3);
}

#[test]
fn wandering_past_places_without_the_goals_things_is_no_progress() {
    let mut env = Household::new();
    let goal = env.reset(&task()).expect("resets").goal.to_lowercase();
    let words: Vec<String> = goal
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 3 && !["your", "task", "put", "the"].contains(w))
        .map(str::to_owned)
        .collect();
    // Places whose first sight names nothing of the goal.
    let idle: Vec<String> = env
        .admissible_commands()
        .expect("admissible")
        .into_iter()
        .filter(|c| c.starts_with("go to "))
        .filter(|c| {
            let seen = first_sight(c);
            !words.iter().any(|w| seen.contains(w.as_str()))
        })
        .take(3)
        .collect();
    assert_eq!(idle.len(), 3, "{goal}");
    let h = harness(
        "params.no-progress-steps = 3\nparams.invalid-commands = 0\nparams.on-loop = false\nparams.max-rewrites = 1\nparams.allowed = [\"set-parameter\"]",
    );
    let cmds: Vec<&str> = idle.iter().map(String::as_str).collect();
    let model = Scripted::new(&cmds, "remember more steps");
    let ep = run_episode(&h, &mut env, &task(), &model, &Options::default()).expect("runs");
    assert_eq!(ep.rewrites.len(), 1, "{:?}", ep.events);
    assert_eq!(ep.rewrites[0].trigger, "no-progress");
    assert_eq!(
        ep.rewrites[0].step, 3,
        "new sights that name nothing of the goal"
    );
}

#[test]
fn traces_parse_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = harness("params.invalid-commands = 2\nparams.allowed = [\"insert\"]");
    let model = Scripted::new(&["look", "inventory"], "remember");
    let mut env = Household::new();
    let options = Options {
        trace_dir: Some(dir.path().to_owned()),
        ..Options::default()
    };
    let ep = run_episode(&h, &mut env, &task(), &model, &options).expect("runs");
    let path = dir.path().join("household-train-3.jsonl");
    let read = trace::read(&path).expect("parses");
    assert_eq!(read, ep.events);
    assert!(matches!(read.first(), Some(Event::Start { .. })));
    assert!(matches!(
        read.last(),
        Some(Event::End {
            steps: 12,
            won: false,
            ..
        })
    ));
    assert_eq!(
        read.iter()
            .filter(|e| matches!(e, Event::Step { .. }))
            .count(),
        12
    );
    assert!(ep.failure_digest.len() <= 600 && ep.failure_digest.contains("failed"));

    std::fs::write(dir.path().join("bad.jsonl"), "{\"event\":\"start\"}\n").expect("writes");
    let err = trace::read(&dir.path().join("bad.jsonl")).expect_err("malformed");
    assert!(err.contains("bad.jsonl:1"), "{err}");
}

#[test]
fn exemplars_come_only_from_train_tasks() {
    for split in [Split::Train, Split::Validation, Split::Test] {
        for seed in 0..20 {
            for suite in ["household", "blocks"] {
                let t = TaskRef {
                    suite: suite.into(),
                    split,
                    seed,
                };
                let ex = exemplars::for_task(&t, 3, true);
                assert_eq!(ex.len(), 3, "{t}");
                for e in ex {
                    assert_eq!(e.task.split, Split::Train, "{t}: {}", e.task);
                    assert_ne!(e.task, t);
                    assert!(e.text.contains("Your task is to:"));
                }
            }
        }
    }
}

/// Scores by preferring candidates that name the goal's object, and records every candidate
/// list it was asked to score.
struct Recording {
    asked: Mutex<Vec<Vec<String>>>,
    /// The last message of each request.
    prompts: Mutex<Vec<String>>,
    /// Phrases scored as [`Prefers`] scores them; none: every candidate alike.
    prefers: &'static [&'static str],
}

impl Recording {
    fn new() -> Recording {
        Recording::preferring(&[])
    }

    fn preferring(prefers: &'static [&'static str]) -> Recording {
        Recording {
            asked: Mutex::new(Vec::new()),
            prompts: Mutex::new(Vec::new()),
            prefers,
        }
    }
}

impl ModelBackend for Recording {
    fn describe(&self) -> String {
        "recording".into()
    }
    fn generate(&self, _: &GenerateRequest) -> Result<Generation, Error> {
        unreachable!("a log-likelihood selector only scores")
    }
    fn score(&self, r: &ScoreRequest) -> Result<Scores, Error> {
        self.asked.lock().expect("lock").push(r.candidates.clone());
        let last = r
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        self.prompts.lock().expect("lock").push(last);
        let logprobs: Vec<f64> = r
            .candidates
            .iter()
            .map(|c| preference(self.prefers, c))
            .collect();
        Ok(Scores {
            tokens: vec![1; logprobs.len()],
            per_token: logprobs.iter().map(|l| vec![*l]).collect(),
            logprobs,
            usage: Usage::default(),
        })
    }
}

/// A harness of a history window and a log-likelihood selector over the admissible commands,
/// with `act` (one `key = value` line) among the selector's parameters, for `max_steps`.
fn loglik_harness(act: &str, max_steps: u32) -> Harness {
    parse_as(
        &format!(
            r#"
[[components]]
name = "history"
kind = "history-window"

[[components]]
name = "admissible"
kind = "tool"
stages = ["after-model"]
params.tool = "admissible-commands"

[[components]]
name = "act"
kind = "loglik-scoring"
params.tool = "admissible-commands"
params.{act}

[[components]]
name = "steps"
kind = "step-budget"
params.max-steps = {max_steps}
"#
        ),
        Format::Toml,
        "test",
    )
    .expect("a valid harness")
}

#[test]
fn top_k_scores_only_the_goals_most_relevant_commands() {
    let h = loglik_harness("top-k = 3", 6);
    let model = Recording::new();
    let mut env = Household::new();
    let goal = env.reset(&task()).expect("resets").goal.to_lowercase();
    let ep = run_episode(&h, &mut env, &task(), &model, &Options::default()).expect("runs");
    let asked = model.asked.lock().expect("lock");
    assert_eq!(asked.len() as u32, ep.outcome.steps);
    for candidates in asked.iter() {
        assert_eq!(candidates.len(), 3, "{candidates:?}");
    }
    // The first step's three name the goal's words: each shares a word of four letters or more
    // with it (household's first list is `go to` every place, and the goal names one).
    let first = &asked[0];
    let named = first
        .iter()
        .filter(|c| {
            c.split(' ')
                .any(|w| w.len() >= 4 && goal.split(|c: char| !c.is_alphanumeric()).any(|g| g == w))
        })
        .count();
    assert!(named >= 1, "goal {goal:?}, scored {first:?}");
}

#[test]
fn text_that_changes_every_step_goes_after_the_rest_whatever_the_harness_order() {
    // By name, the inventory tool (`a-carried`) runs before the goal and the history; the
    // runtime still shows it last, so the prompt changes only at its end.
    let h = parse_as(
        r#"
[[components]]
name = "a-carried"
kind = "tool"
params.tool = "inventory"

[[components]]
name = "goal"
kind = "task-framing"
params.text = "Your task is to: {goal}"

[[components]]
name = "history"
kind = "history-window"

[[components]]
name = "admissible"
kind = "tool"
stages = ["after-model"]
params.tool = "admissible-commands"

[[components]]
name = "act"
kind = "loglik-scoring"
params.tool = "admissible-commands"

[[components]]
name = "steps"
kind = "step-budget"
params.max-steps = 3
"#,
        Format::Toml,
        "test",
    )
    .expect("a valid harness");
    let first = h
        .schedule(hx_common::harness::catalog::Stage::BeforeModel)
        .first()
        .map(|c| c.name.clone());
    assert_eq!(
        first.as_deref(),
        Some("a-carried"),
        "the harness's own order"
    );
    let model = Recording::new();
    let mut env = Household::new();
    run_episode(&h, &mut env, &task(), &model, &Options::default()).expect("runs");
    let prompts = model.prompts.lock().expect("lock");
    assert_eq!(prompts.len(), 3);
    for p in prompts.iter() {
        let parts: Vec<&str> = p.split("\n\n").collect();
        assert!(parts[0].starts_with("Your task is to: "), "{p}");
        let tail = parts[parts.len() - 2];
        assert!(tail.starts_with("You are carrying: "), "{p}");
        assert_eq!(parts.last(), Some(&"Your next command:"), "{p}");
    }
    // The part before the tail grows only at its end: each prompt's history extends the last.
    for w in prompts.windows(2) {
        let before = w[0].rsplit_once("\n\nYou are carrying").expect("tail").0;
        assert!(w[1].starts_with(before), "{}\n---\n{}", w[0], w[1]);
    }
}

/// Scores each candidate by a fixed function of its text, so a sampled policy has preferences
/// and different streams play different episodes; counts its tokens.
struct Hashing;

impl ModelBackend for Hashing {
    fn describe(&self) -> String {
        "hashing".into()
    }
    fn generate(&self, _: &GenerateRequest) -> Result<Generation, Error> {
        unreachable!("a log-likelihood selector only scores")
    }
    fn score(&self, r: &ScoreRequest) -> Result<Scores, Error> {
        let logprobs: Vec<f64> = r
            .candidates
            .iter()
            .map(|c| -((c.bytes().map(u64::from).sum::<u64>() % 7) as f64) / 2.0)
            .collect();
        Ok(Scores {
            tokens: vec![1; logprobs.len()],
            per_token: logprobs.iter().map(|l| vec![*l]).collect(),
            logprobs,
            usage: Usage {
                prompt_tokens: 100,
                cached_tokens: 0,
                completion_tokens: 0,
            },
        })
    }
}

#[test]
fn best_of_n_keeps_the_most_certain_episode_and_pays_for_all() {
    let h = loglik_harness("temperature = 1.0", 5);
    let mut env = Household::new();
    let one = |stream| {
        let o = Options {
            stream,
            ..Options::default()
        };
        run_episode(&h, &mut Household::new(), &task(), &Hashing, &o).expect("runs")
    };
    let streams: Vec<_> = (0..4).map(one).collect();
    // Streams replay different draws; stream 0 is the plain episode, and replays the same.
    assert!(streams.iter().any(|e| sent(e) != sent(&streams[0])));
    assert_eq!(
        sent(&streams[0]),
        sent(&run_episode(&h, &mut env, &task(), &Hashing, &Options::default()).expect("runs"))
    );
    let best = hx_agent::run_best_of(&h, &mut env, &task(), &Hashing, &Options::default(), 0..4)
        .expect("runs");
    let certainty = |e: &hx_agent::Episode| e.outcome.confidence.expect("scored steps");
    let top = streams
        .iter()
        .map(certainty)
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(certainty(&best), top);
    let first_top = streams.iter().find(|e| certainty(e) == top).expect("one");
    assert_eq!(sent(&best), sent(first_top));
    // It pays for every episode it played.
    assert_eq!(
        best.outcome.tokens,
        streams.iter().map(|e| e.outcome.tokens).sum::<u64>()
    );
    // The same through the harness: a `best-of` component of 4 makes `run_many` play it.
    let with = h.with_best_of(4.0).expect("valid");
    let on_the_task = |h: &Harness| {
        let many = hx_agent::run_many(
            h,
            &[task()],
            &Hashing,
            None,
            &Options::default(),
            1,
            &|_, _| {},
        );
        many.into_iter().next().expect("one")
    };
    let e = on_the_task(&with).expect("runs");
    assert_eq!(sent(&e), sent(&best));
    // Outcomes but their wall time, which no two runs share.
    let timeless = |o: &TaskOutcome| TaskOutcome {
        wall_ms: 0,
        ..o.clone()
    };
    assert_eq!(timeless(&e.outcome), timeless(&best.outcome));
    // Its rest plays streams 1..4 only; with the base's episode (stream 0) it makes the same
    // outcome, cost included, as the best-of playing all four, so a coordinator that has
    // the base's episode plays three.
    let rest = with.best_of_rest().expect("a best-of");
    assert_eq!(with.best_of_base().map(|b| b.id()), Some(h.id()));
    assert_eq!((rest.best_of_rest(), rest.best_of_base()), (None, None));
    assert_eq!(rest.best_of_streams(task().seed), 1..4);
    let r = on_the_task(&rest).expect("runs");
    assert_eq!(
        r.outcome.tokens,
        streams[1..].iter().map(|e| e.outcome.tokens).sum::<u64>()
    );
    assert_eq!(
        TaskOutcome::best_of(&streams[0].outcome, &r.outcome).map(|o| timeless(&o)),
        Some(timeless(&best.outcome))
    );
    // Where the best-of plays one episode, its rest plays none: an error, not an empty win.
    let single = h
        .with_best_of(1.0)
        .expect("valid")
        .best_of_rest()
        .expect("a best-of");
    let err = on_the_task(&single).expect_err("no episode");
    assert!(err.to_string().contains("plays no episode"), "{err}");
    // And a fraction plays one more episode on that share of the tasks: 1.5 on 20 tasks
    // plays 30 episodes, each task once or twice.
    let tasks: Vec<_> = (0..20)
        .map(|seed| hx_common::task::TaskRef { seed, ..task() })
        .collect();
    let once = hx_agent::run_many(
        &h,
        &tasks,
        &Hashing,
        None,
        &Options::default(),
        2,
        &|_, _| {},
    );
    let half = h.with_best_of(1.5).expect("valid");
    let more = hx_agent::run_many(
        &half,
        &tasks,
        &Hashing,
        None,
        &Options::default(),
        2,
        &|_, _| {},
    );
    let mut played = 0;
    for ((a, b), t) in once.iter().zip(&more).zip(&tasks) {
        let (a, b) = (a.as_ref().expect("runs"), b.as_ref().expect("runs"));
        // One episode is stream 0's, exactly, the episode of the harness the algebra says it
        // plays as there (so a coordinator may take that harness's outcome); two cost more
        // than it alone.
        let played_as = half.single_episode_as(t.seed).map(|x| x.id());
        match hx_common::harness::catalog::best_of_episodes(1.5, t.seed) {
            1 => {
                assert_eq!(played_as, Some(h.id()), "{t}");
                assert_eq!(sent(b), sent(a), "{t}");
                let o = |e: &hx_agent::Episode| {
                    (
                        e.outcome.won,
                        e.outcome.score,
                        e.outcome.steps,
                        e.outcome.tokens,
                    )
                };
                assert_eq!(o(b), o(a), "{t}");
            }
            n => {
                assert_eq!(n, 2);
                assert_eq!(played_as, None, "{t}");
                assert!(b.outcome.tokens > a.outcome.tokens, "{t}");
            }
        }
        played += hx_common::harness::catalog::best_of_episodes(1.5, t.seed);
    }
    assert!((29..=31).contains(&played), "{played} episodes");
}

/// Scores a candidate by the first of its phrases it contains: the first phrase best, a
/// candidate with none worst.
struct Prefers(&'static [&'static str]);

/// The log-probability [`Prefers`] gives `candidate`: -1 for the first phrase, -2 for the
/// second, ..., -9 for none (-1 for every candidate when there are no phrases).
fn preference(phrases: &[&str], candidate: &str) -> f64 {
    if phrases.is_empty() {
        return -1.0;
    }
    phrases
        .iter()
        .position(|p| candidate.contains(p))
        .map_or(-9.0, |i| -1.0 - i as f64)
}

impl ModelBackend for Prefers {
    fn describe(&self) -> String {
        "prefers".into()
    }
    fn generate(&self, _: &GenerateRequest) -> Result<Generation, Error> {
        unreachable!("a log-likelihood selector only scores")
    }
    fn score(&self, r: &ScoreRequest) -> Result<Scores, Error> {
        let logprobs: Vec<f64> = r.candidates.iter().map(|c| preference(self.0, c)).collect();
        Ok(Scores {
            tokens: vec![1; logprobs.len()],
            per_token: logprobs.iter().map(|l| vec![*l]).collect(),
            logprobs,
            usage: Usage::default(),
        })
    }
}

/// [`Hashing`] with a context of `limit` bytes of prompt: a longer prompt is refused as the
/// embedded model refuses one over its context. Keeps the prompts it scored.
struct Tight {
    limit: usize,
    prompts: Mutex<Vec<String>>,
}

impl ModelBackend for Tight {
    fn describe(&self) -> String {
        "tight".into()
    }
    fn generate(&self, _: &GenerateRequest) -> Result<Generation, Error> {
        unreachable!("a log-likelihood selector only scores")
    }
    fn score(&self, r: &ScoreRequest) -> Result<Scores, Error> {
        let prompt: String = r.messages.iter().map(|m| m.content.as_str()).collect();
        if prompt.len() > self.limit {
            return Err(Error::ContextFull {
                tokens: Some(prompt.len()),
                context: Some(self.limit),
            });
        }
        self.prompts.lock().unwrap().push(prompt);
        Hashing.score(r)
    }
}

/// A prompt over the model's context leaves out the oldest history turns until it fits, and
/// the episode plays on (the same commands, where the model's choice does not read them);
/// prompts that fit are unchanged; where nothing is left to leave out, the model's error
/// stands.
#[test]
fn a_prompt_over_the_context_leaves_out_its_oldest_turns() {
    let h = loglik_harness("temperature = 1.0", 16);
    let wide = Tight {
        limit: usize::MAX,
        prompts: Mutex::new(Vec::new()),
    };
    let play = |m: &Tight| run_episode(&h, &mut Household::new(), &task(), m, &Options::default());
    let free = play(&wide).expect("runs");
    let prompts = wide.prompts.into_inner().unwrap();
    let (shortest, longest) = (
        prompts.iter().map(String::len).min().expect("prompts"),
        prompts.iter().map(String::len).max().expect("prompts"),
    );
    assert!(longest > shortest + 200, "{shortest}..{longest}");
    let limit = (shortest + longest) / 2;
    let tight = Tight {
        limit,
        prompts: Mutex::new(Vec::new()),
    };
    let fitted = play(&tight).expect("plays on");
    assert_eq!(sent(&fitted), sent(&free));
    let shed = fitted
        .events
        .iter()
        .filter(|e| matches!(e, Event::Guard { guard, .. } if guard == "context"))
        .count();
    assert!(shed > 0, "no step left anything out");
    let scored = tight.prompts.into_inner().unwrap();
    assert_eq!(scored.len(), prompts.len());
    for (a, b) in prompts.iter().zip(&scored) {
        assert!(b.len() <= limit);
        if a.len() <= limit {
            assert_eq!(a, b, "a prompt that fits was changed");
        } else {
            // The intro and the latest turns stay; the oldest turn shown went.
            assert!(b.len() < a.len());
            assert_eq!(a.lines().next(), b.lines().next());
            assert_eq!(a.lines().last(), b.lines().last());
        }
    }
    let none = Tight {
        limit: shortest / 2,
        prompts: Mutex::new(Vec::new()),
    };
    let err = play(&none).expect_err("nothing fits");
    assert!(err.to_string().contains("context holds"), "{err}");
}

/// Answers "dance" (never admissible); asked again with the admissible commands listed, it
/// answers that the prompt is over its context, as a small model does when a world admits
/// hundreds of commands.
struct Crowded;

impl ModelBackend for Crowded {
    fn describe(&self) -> String {
        "crowded".into()
    }
    fn generate(&self, r: &GenerateRequest) -> Result<Generation, Error> {
        if r.messages
            .iter()
            .any(|m| m.content.contains("is not a valid command here"))
        {
            return Err(Error::ContextFull {
                tokens: Some(10_922),
                context: Some(2048),
            });
        }
        Ok(Generation {
            text: "Action: dance".into(),
            finish: Finish::Stop,
            usage: Usage::default(),
        })
    }
    fn score(&self, _: &ScoreRequest) -> Result<Scores, Error> {
        unreachable!("free generation only generates")
    }
}

/// Where the admissible check's feedback does not fit the model's context, the check sends
/// the closest admissible command instead of failing the episode, and says why.
#[test]
fn an_admissible_list_over_the_context_falls_back_to_the_closest_command() {
    let h = parse_as(
        r#"
[[components]]
name = "system"
kind = "system-prompt"
params.text = "You are an agent in a household."

[[components]]
name = "history"
kind = "history-window"

[[components]]
name = "act"
kind = "free-generation"

[[components]]
name = "admissible"
kind = "tool"
stages = ["after-model"]
params.tool = "admissible-commands"

[[components]]
name = "verify"
kind = "admissible-check"
params.tool = "admissible-commands"
params.max-retries = 2

[[components]]
name = "steps"
kind = "step-budget"
params.max-steps = 3
"#,
        Format::Toml,
        "test",
    )
    .expect("a valid harness");
    let mut env = Household::new();
    let ep = run_episode(&h, &mut env, &task(), &Crowded, &Options::default())
        .expect("the episode plays on");
    let commands = sent(&ep);
    assert_eq!(commands.len(), 3, "{commands:?}");
    let mut probe = Household::new();
    probe.reset(&task()).expect("resets");
    let admissible = probe.admissible_commands().expect("admissible");
    assert!(admissible.contains(&commands[0]), "{commands:?}");
    let said = ep
        .events
        .iter()
        .filter(|e| {
            matches!(e, Event::Guard { guard, detail, .. }
                if guard == "admissible-check" && detail.contains("do not fit the model's context"))
        })
        .count();
    assert_eq!(said, 3, "one fallback per step");
}

/// The commands an episode sent, from its trace.
fn sent(ep: &hx_agent::Episode) -> Vec<String> {
    ep.events
        .iter()
        .filter_map(|e| match e {
            Event::Step { command, .. } => Some(command.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_revisit_penalty_breaks_the_cycle_a_greedy_policy_falls_into() {
    let harness = |penalty: f64| loglik_harness(&format!("revisit-penalty = {penalty:.1}"), 20);
    let task = TaskRef {
        suite: "blocks".into(),
        split: Split::Train,
        seed: 5,
    };
    // The model likes stacking and unstacking best, then picking up: taking its best command
    // moves one block on and off another, back and forth.
    let model = Prefers(&["stack", "pick up"]);
    let play = |penalty: f64| {
        let mut env = hx_env::blocks::Blocks::new();
        let ep = run_episode(
            &harness(penalty),
            &mut env,
            &task,
            &model,
            &Options::default(),
        )
        .expect("runs");
        let cmds = sent(&ep);
        let mut distinct = cmds.clone();
        distinct.sort();
        distinct.dedup();
        let most = distinct
            .iter()
            .map(|d| cmds.iter().filter(|c| *c == d).count())
            .max()
            .unwrap_or(0);
        (distinct.len(), most, cmds)
    };
    let (greedy, greedy_most, greedy_cmds) = play(0.0);
    let (penalized, penalized_most, penalized_cmds) = play(5.0);
    assert!(
        greedy_most >= 5,
        "the greedy policy cycles: {greedy_cmds:?}"
    );
    assert!(
        penalized > greedy && penalized_most < greedy_most,
        "with the penalty, {penalized} commands (one sent {penalized_most} times): \
         {penalized_cmds:?}; without, {greedy} ({greedy_most}): {greedy_cmds:?}"
    );
}

/// The `state` tool shows the world's own account of how things stand, at the end of every
/// prompt, following the world step by step; a world without one shows nothing.
#[test]
fn the_state_tool_shows_how_things_stand_now() {
    let mut h = loglik_harness("temperature = 0.0", 4);
    let now = Component::new("now", Kind::Tool).with("tool", "state");
    h = h
        .apply(&Edit::Insert {
            component: now,
            edges: Vec::new(),
        })
        .expect("a tool inserts");
    let blocks = TaskRef {
        suite: "blocks".into(),
        split: Split::Train,
        seed: 5,
    };
    let model = Recording::preferring(&["pick up", "stack", "put down"]);
    let mut env = hx_env::blocks::Blocks::new();
    let ep = run_episode(&h, &mut env, &blocks, &model, &Options::default()).expect("runs");
    let prompts = model.prompts.lock().expect("lock");
    assert_eq!(prompts.len() as u32, ep.outcome.steps);
    // Replay the same commands on a fresh world: each prompt ends with its state then.
    let mut replay = hx_env::blocks::Blocks::new();
    replay.reset(&blocks).expect("resets");
    let mut states = Vec::new();
    for (p, cmd) in prompts.iter().zip(sent(&ep)) {
        let state = replay.view().expect("a view").state.expect("blocks states");
        let parts: Vec<&str> = p.split("\n\n").collect();
        assert_eq!(parts[parts.len() - 2], format!("Now: {state}."), "{p}");
        states.push(state);
        replay.step(&cmd).expect("steps");
    }
    states.dedup();
    assert!(
        states.len() > 1,
        "the state follows the world: {states:?} {:?}",
        sent(&ep)
    );

    // Household gives no such account: the tool adds nothing.
    let model = Recording::new();
    let mut env = Household::new();
    run_episode(&h, &mut env, &task(), &model, &Options::default()).expect("runs");
    for p in model.prompts.lock().expect("lock").iter() {
        assert!(!p.contains("Now:"), "{p}");
    }
}

#[test]
fn the_random_floor_sends_admissible_commands_asks_no_model_and_replays() {
    let h = parse_as(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/harnesses/random.toml"
        ))
        .expect("the shipped random harness"),
        Format::Toml,
        "random.toml",
    )
    .expect("a valid harness");
    let task = |seed| TaskRef {
        suite: "blocks".into(),
        split: Split::Train,
        seed,
    };
    let model = Recording::new();
    let play = |seed| {
        let mut env = hx_env::blocks::Blocks::new();
        run_episode(&h, &mut env, &task(seed), &model, &Options::default()).expect("runs")
    };
    let first = play(3);
    assert!(model.asked.lock().expect("lock").is_empty());
    assert!(model.prompts.lock().expect("lock").is_empty());
    assert_eq!(first.outcome.tokens, 0);
    let cmds = sent(&first);
    assert!(cmds.len() > 1, "{cmds:?}");
    // Replayed in a fresh world, each command was one the world admitted at that step.
    let mut env = hx_env::blocks::Blocks::new();
    env.reset(&task(3)).expect("resets");
    for c in &cmds {
        let admissible = env.admissible_commands().expect("lists");
        assert!(admissible.contains(c), "{c:?} not in {admissible:?}");
        env.step(c).expect("steps");
    }
    // The same task replays the same episode, and the draws vary within it.
    assert_eq!(sent(&play(3)), cmds);
    let mut distinct = cmds.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 2, "{cmds:?}");
}

/// The example adapter, as a real child process.
fn vault_adapter() -> hx_env::external::External {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../adapters/vault.py");
    hx_env::external::External::new(hx_env::external::Options::new(vec![
        "python3".into(),
        script.into(),
    ]))
}

#[test]
fn a_world_behind_an_adapter_gives_worked_examples_from_its_train_walkthroughs() {
    let h = parse_as(
        r#"
[[components]]
name = "examples"
kind = "few-shot"
params.count = 1
params.same-type = true

[[components]]
name = "history"
kind = "history-window"

[[components]]
name = "admissible"
kind = "tool"
stages = ["after-model"]
params.tool = "admissible-commands"

[[components]]
name = "act"
kind = "loglik-scoring"
params.tool = "admissible-commands"

[[components]]
name = "steps"
kind = "step-budget"
params.max-steps = 2

[[edges]]
from = "examples"
to = "history"
stage = "before-model"
"#,
        Format::Toml,
        "test",
    )
    .expect("a valid harness");
    let mut env = vault_adapter();
    let t: TaskRef = "vault/test/3".parse().expect("a task");
    let model = Recording::new();
    let ep = run_episode(&h, &mut env, &t, &model, &Options::default()).expect("runs");
    assert_eq!(
        ep.outcome.steps, 2,
        "the episode is the task's own, played after the example"
    );
    let prompts = model.prompts.lock().expect("lock");
    let first = &prompts[0];
    // The adapter named vault/train/21; its walkthrough is played in the world itself.
    let example = first
        .split("Example 1:\n")
        .nth(1)
        .expect("an example is shown");
    assert!(
        example.contains("Your task is to: open the vault.")
            && example.contains("> take key\nYou take the key.")
            && example.contains("> open vault\nThe vault swings open."),
        "{first}"
    );
    // After the example, the episode goes on from the test task's own start: a test vault
    // has 6-8 rooms, train ones 3-5.
    let after = example
        .split("The vault swings open.")
        .nth(1)
        .expect("the example ends");
    assert!(
        [" of 6.", " of 7.", " of 8."]
            .iter()
            .any(|n| after.contains(n)),
        "{first}"
    );
}
