//! The agent runtime: runs a harness graph on one task, step by step, with a model.
//!
//! Each step walks the harness's stages in order: `step-start` (budgets, re-planning),
//! `before-model` (the context is assembled from the components scheduled there, in their
//! edge order), the action selector (free generation with a parser, log-likelihood scoring over
//! admissible commands, or sample-and-vote), `before-action` (the admissible check and the
//! loop guard may catch or change the command), the world's step, and `after-observation`
//! (memories, reflection, and the rewrite policy, which may change the harness itself).
//!
//! The episode works on its own copy of the harness; rewrites go through the algebra
//! ([`rewrite`]), so the copy is always a valid harness.

pub mod exemplars;
pub mod rewrite;
pub mod trace;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Instant;

use hx_common::harness::catalog::{Kind, Stage};
use hx_common::harness::param::ParamValue;
use hx_common::harness::{Component, Harness};
use hx_common::protocol::{RewriteRecord, TaskOutcome};
use hx_common::task::TaskRef;

use hx_env::{self as env, Environment};
use hx_model::{self as model, GenerateRequest, Message, ModelBackend, Role, ScoreRequest, Usage};
use trace::{Event, Trace};

/// Why an episode could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The environment failed (an adapter crashed, a task could not be generated).
    #[error("environment: {0}")]
    Env(#[from] env::Error),
    /// The model failed.
    #[error("model: {0}")]
    Model(#[from] model::Error),
    /// The trace file could not be opened.
    #[error("trace {path}: {cause}")]
    Trace {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The harness plays no episode on the task: a best-of's rest where the best-of plays one.
    #[error(
        "{task}: harness {harness} plays no episode there (a best-of's rest, streams {streams:?})"
    )]
    NoEpisode {
        /// The task.
        task: TaskRef,
        /// The harness.
        harness: hx_common::harness::HarnessId,
        /// The sampling streams it would play there.
        streams: std::ops::Range<u64>,
    },
}

/// Switches for a run of episodes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Turn in-task rewriting off whatever the harness says (for ablations).
    pub no_rewriting: bool,
    /// Write one `TASK.jsonl` trace per episode here.
    pub trace_dir: Option<PathBuf>,
    /// A cap on every episode's steps on top of the harness's step budget and the world's
    /// limit (a search's `episode-steps` budget).
    pub max_steps: Option<u32>,
    /// The sampling stream: mixed into every seed the episode samples with, so streams 1, 2,
    /// ... replay different draws of the same policy on the same task. Stream 0 is the
    /// episode every other run of the task plays.
    pub stream: u64,
}

/// What an episode did.
#[derive(Debug, Clone)]
pub struct Episode {
    /// The outcome as the protocol reports it.
    pub outcome: TaskOutcome,
    /// Tokens by kind.
    pub usage: Usage,
    /// Every rewrite tried, kept or not.
    pub rewrites: Vec<RewriteRecord>,
    /// A short account of what went wrong, for a mutation prompt.
    pub failure_digest: String,
    /// Why it ended.
    pub reason: String,
    /// The harness at the end (after rewrites that were kept).
    pub harness: Harness,
    /// The trace.
    pub events: Vec<Event>,
}

/// One past step, as memories see it.
#[derive(Debug, Clone)]
struct Turn {
    command: String,
    observation: String,
    progress: bool,
    /// The world did not carry the command out.
    invalid: bool,
    /// The state the command was sent from (see [`state_key`]), where the selector read it.
    from: Option<u64>,
}

/// The episode's mutable state: memories and counters the components read and write.
struct State {
    task: TaskRef,
    /// The seed sampling draws from: the task's seed, mixed with the sampling stream.
    sampling: u64,
    /// Per-token log-probabilities of the commands a log-likelihood selector chose.
    chosen_logprobs: Vec<f64>,
    goal: String,
    /// The world's description of its commands and an example command (see [`env::Reset`]).
    commands: String,
    example: String,
    /// The goal's content words (see [`goal_words`]).
    goal_words: Vec<String>,
    /// The goal's content words in their order (see [`content_words`]).
    goal_sequence: Vec<String>,
    intro: String,
    turns: Vec<Turn>,
    notes: Vec<String>,
    failures: VecDeque<String>,
    visited: Vec<(String, String)>,
    /// The world's view after the latest step (places, position, inventory).
    view: env::View,
    /// The state this step's command is chosen in (see [`state_key`]), once the selector has
    /// read it; the step's [`Turn`] takes it.
    state: Option<u64>,
    /// Every place the agent has been at, whatever memories the harness has.
    been: std::collections::HashSet<String>,
    plan: Option<String>,
    reflections: Vec<String>,
    step: u32,
    invalid: u32,
    loops: u32,
    last_progress: u32,
    /// The step of the last reflection: it restarts the reflection's stall clock only, so a
    /// reflection does not hide a stall from the rewrite policy.
    reflected_at: u32,
    score: f32,
    seen: std::collections::HashSet<String>,
    usage: Usage,
    exemplars: Option<Vec<exemplars::Exemplar>>,
    /// Parts the context leaves out to fit the model's context ([`fitting`]): the oldest
    /// history turns first, then worked examples, last first.
    shed: usize,
    /// The parts the context assembled last could leave out.
    sheddable: usize,
}

pub use hx_common::harness::catalog::PLACEHOLDERS;

impl State {
    /// A prompt text with its placeholders filled: `{goal}`, and the world's `{commands}` and
    /// `{example}`.
    fn fill(&self, text: &str) -> String {
        text.replace("{goal}", &self.goal)
            .replace("{commands}", &self.commands)
            .replace("{example}", &self.example)
    }

    /// What the agent holds, as the world says (`nothing` when empty).
    fn carrying(&self) -> String {
        if self.view.holding.is_empty() {
            "nothing".into()
        } else {
            self.view.holding.join(", ")
        }
    }

    /// Steps since progress or the last reflection, whichever came later.
    fn since_reflection(&self) -> u32 {
        self.step
            .saturating_sub(self.last_progress.max(self.reflected_at))
    }
}

/// Runs `harness` on `task` in `env` with `model`.
pub fn run_episode(
    harness: &Harness,
    env: &mut dyn Environment,
    task: &TaskRef,
    model: &dyn ModelBackend,
    options: &Options,
) -> Result<Episode, Error> {
    let clock = Instant::now();
    let mut trace = match &options.trace_dir {
        Some(dir) => {
            let stream = match options.stream {
                0 => String::new(),
                k => format!(".s{k}"),
            };
            let path = dir.join(format!(
                "{}{stream}.jsonl",
                task.to_string().replace('/', "-")
            ));
            Trace::to_file(&path).map_err(|cause| Error::Trace { path, cause })?
        }
        None => Trace::default(),
    };
    let exemplars = world_exemplars(harness, env, task)?;
    let reset = env.reset(task)?;
    trace.push(Event::Start {
        task: task.to_string(),
        harness: harness.id(),
        goal: reset.goal.clone(),
        observation: reset.observation.clone(),
    });
    let mut st = State {
        task: task.clone(),
        sampling: task.seed ^ options.stream.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        chosen_logprobs: Vec::new(),
        goal_words: goal_words(&reset.goal),
        goal_sequence: content_words(&reset.goal),
        goal: reset.goal,
        commands: reset
            .commands
            .unwrap_or_else(|| "any command the world understands".into()),
        example: reset.example.unwrap_or_else(|| "look".into()),
        intro: reset.observation,
        turns: Vec::new(),
        notes: Vec::new(),
        failures: VecDeque::new(),
        visited: Vec::new(),
        view: env.view()?,
        state: None,
        been: Default::default(),
        plan: None,
        reflections: Vec::new(),
        step: 0,
        invalid: 0,
        loops: 0,
        last_progress: 0,
        reflected_at: 0,
        score: 0.0,
        seen: Default::default(),
        usage: Usage::default(),
        exemplars,
        shed: 0,
        sheddable: 0,
    };
    let mut rw = rewrite::Rewriter::new(!options.no_rewriting);
    let mut h = harness.clone();
    let mut won = false;
    let limit = options
        .max_steps
        .map_or(env.step_limit(), |m| m.min(env.step_limit()));
    let reason = loop {
        // step-start: budgets, then planning.
        let max_steps = h
            .in_group("step-budget")
            .map_or(limit, |c| (c.int("max-steps") as u32).min(limit));
        if st.step >= max_steps {
            break "step budget".to_owned();
        }
        if let Some(c) = h.in_group("token-budget")
            && st.usage.prompt_tokens + st.usage.completion_tokens >= c.int("max-tokens") as u64
        {
            break "token budget".to_owned();
        }
        if let Some(p) = h.in_group("planner") {
            let every = p.int("replan-every") as u32;
            let due =
                st.plan.is_none() || (every > 0 && st.step > 0 && st.step.is_multiple_of(every));
            if due {
                let prompt = p.text("text").to_owned();
                let out = fitting(&mut st, &mut trace, |st, trace| {
                    ask(model, &h, st, env, trace, &prompt, "plan", 96)
                })?;
                st.plan = Some(out);
            }
        }

        // before-model and the action selector.
        let mut command = fitting(&mut st, &mut trace, |st, trace| {
            act(model, &h, st, env, trace)
        })?;

        // before-action: guards, in schedule order.
        for c in h.schedule(Stage::BeforeAction) {
            match c.kind {
                Kind::AdmissibleCheck => {
                    command = check(model, &h, c, &mut st, env, &mut trace, command)?;
                }
                Kind::LoopGuard => {
                    command = guard(c, &mut st, env, &mut trace, command)?;
                }
                _ => {}
            }
        }

        // The world.
        let s = env.step(&command)?;
        st.step += 1;
        let was_at = std::mem::replace(&mut st.view, env.view()?).at;
        // The place this step brought the agent to, if it moved.
        let arrived = st.view.at.clone().filter(|p| Some(p) != was_at.as_ref());
        if let Some(p) = &arrived {
            st.been.insert(p.clone());
        }
        // Progress is a higher score, or news about the goal: an observation not seen before
        // that names one of the goal's words. Wandering past places that hold nothing of the
        // goal is not progress, so a stall shows to reflection and to the rewrite policy.
        let news = !s.invalid && st.seen.insert(s.observation.clone());
        let progress = s.won
            || s.score.is_some_and(|x| x > st.score)
            || (news && goal_share(&st.goal_words, &s.observation) > 0.0);
        if let Some(x) = s.score {
            st.score = st.score.max(x);
        }
        if s.won {
            st.score = 1.0;
        }
        if progress {
            st.last_progress = st.step;
        }
        if s.invalid {
            st.invalid += 1;
        }
        trace.push(Event::Step {
            step: st.step,
            command: command.clone(),
            observation: s.observation.clone(),
            score: s.score,
            progress,
        });
        st.turns.push(Turn {
            command: command.clone(),
            observation: s.observation.clone(),
            progress,
            invalid: s.invalid,
            from: st.state.take(),
        });

        // after-observation: memories, reflection, rewriting.
        for c in h.schedule(Stage::AfterObservation) {
            match c.kind {
                Kind::FailureMemory if s.invalid => {
                    if !st.failures.contains(&command) {
                        st.failures.push_back(command.clone());
                    }
                    while st.failures.len() > c.int("capacity") as usize {
                        st.failures.pop_front();
                    }
                }
                Kind::VisitedLog => {
                    if let Some(place) = &arrived {
                        st.visited.retain(|(p, _)| p != place);
                        st.visited.push((place.clone(), s.observation.clone()));
                        let max = c.int("max-places") as usize;
                        if st.visited.len() > max {
                            st.visited.remove(0);
                        }
                    }
                }
                Kind::Reflection => {
                    let trigger = c.text("trigger");
                    let stalled = st.since_reflection() >= c.int("stall-steps") as u32
                        && trigger != "failure";
                    if stalled
                        && !s.done
                        && (st.reflections.len() as i64) < c.int("max-reflections")
                    {
                        let prompt = c.text("text").to_owned();
                        let out = fitting(&mut st, &mut trace, |st, trace| {
                            ask(model, &h, st, env, trace, &prompt, "reflect", 64)
                        })?;
                        st.reflections.push(out);
                        // A reflection restarts its own stall clock, so it does not fire
                        // every step.
                        st.reflected_at = st.step;
                    }
                }
                _ => {}
            }
        }
        if s.done {
            won = s.won;
            break if s.won {
                "won"
            } else {
                "world ended the episode"
            }
            .to_owned();
        }
        if let Some(new) = rw.after_step(model, &h, &mut st, &mut trace)? {
            h = new;
        }
    };
    rw.finish(&mut st, &mut trace);
    let tokens = st.usage.prompt_tokens + st.usage.completion_tokens;
    trace.push(Event::End {
        steps: st.step,
        won,
        score: st.score,
        reason: reason.clone(),
        tokens,
    });
    let digest = digest(&st, won, &reason);
    Ok(Episode {
        outcome: TaskOutcome {
            task: task.clone(),
            won,
            score: st.score,
            steps: st.step,
            tokens,
            wall_ms: clock.elapsed().as_millis() as u64,
            // The mean per-token log-probability the model gave the commands a
            // log-likelihood selector chose (none where no step was chosen that way).
            confidence: (!st.chosen_logprobs.is_empty())
                .then(|| st.chosen_logprobs.iter().sum::<f64>() / st.chosen_logprobs.len() as f64),
        },
        usage: st.usage,
        rewrites: rw.records,
        failure_digest: digest,
        reason,
        harness: h,
        events: trace.events,
    })
}

/// Test-time scaling without a verifier, the equal-budget baseline: plays the task on the
/// sampling streams `streams` (offsets from `options.stream`; [`Harness::best_of_streams`])
/// and keeps the episode the model was most certain of (highest
/// [`TaskOutcome::confidence`]; the earliest stream among equals or where none has one). The
/// world's reward never chooses. The kept outcome carries the tokens and wall time of all the
/// episodes, so its cost is what the baseline spent. An empty range is an error (a best-of's
/// rest on a task where the best-of plays one episode).
pub fn run_best_of(
    harness: &Harness,
    env: &mut dyn Environment,
    task: &TaskRef,
    model: &dyn ModelBackend,
    options: &Options,
    streams: std::ops::Range<u64>,
) -> Result<Episode, Error> {
    let mut best: Option<Episode> = None;
    let (mut tokens, mut wall_ms, mut usage) = (0, 0, Usage::default());
    for k in streams.clone() {
        let o = Options {
            stream: options.stream.wrapping_add(k),
            ..options.clone()
        };
        let e = run_episode(harness, env, task, model, &o)?;
        tokens += e.outcome.tokens;
        wall_ms += e.outcome.wall_ms;
        usage += e.usage;
        let certainty = |e: &Episode| e.outcome.confidence.unwrap_or(f64::NEG_INFINITY);
        if best.as_ref().is_none_or(|b| certainty(&e) > certainty(b)) {
            best = Some(e);
        }
    }
    let Some(mut e) = best else {
        return Err(Error::NoEpisode {
            task: task.clone(),
            harness: harness.id(),
            streams,
        });
    };
    e.outcome.tokens = tokens;
    e.outcome.wall_ms = wall_ms;
    e.usage = usage;
    Ok(e)
}

/// Whether a component's part of the context is rewritten every step (memories of failures and
/// places, notes, the tools' answers but the goal's). The runtime puts these parts after all
/// the others, whatever the harness's order, so the prompt changes only at its end between
/// window advances and the model's prefix cache reuses the rest; the others keep the
/// harness's order.
fn changes_every_step(c: &Component) -> bool {
    match c.kind {
        Kind::FailureMemory | Kind::VisitedLog | Kind::Scratchpad => true,
        Kind::Tool => c.tool() != Some("goal"),
        _ => false,
    }
}

/// Runs `f`, which assembles the context and asks the model with it, until the prompt fits
/// the model's context: each time the model answers that it does not, the context leaves out
/// one more part (`State::shed`: the oldest history turn shown, then the last worked example)
/// and `f` runs again. Where nothing is left to leave out, the model's error stands. A prompt
/// that fits is unchanged, and leaving parts out is in the trace.
fn fitting<T>(
    st: &mut State,
    trace: &mut Trace,
    mut f: impl FnMut(&mut State, &mut Trace) -> Result<T, Error>,
) -> Result<T, Error> {
    st.shed = 0;
    st.sheddable = 0;
    let r = loop {
        match f(st, trace) {
            Err(Error::Model(model::Error::ContextFull { .. })) if st.shed < st.sheddable => {
                st.shed += 1;
            }
            r => break r,
        }
    };
    if st.shed > 0 && r.is_ok() {
        trace.push(Event::Guard {
            step: st.step,
            guard: "context".into(),
            detail: format!(
                "left out {} part(s) of the context (history turns, oldest first, then worked \
                 examples) to fit the model's context",
                st.shed
            ),
        });
    }
    st.shed = 0;
    r
}

/// The context the `before-model` components assemble, as chat messages.
fn context(
    h: &Harness,
    st: &mut State,
    env: &mut dyn Environment,
    trace: &mut Trace,
) -> Result<Vec<Message>, Error> {
    let mut system = String::new();
    let mut parts: Vec<String> = Vec::new();
    let mut volatile: Vec<String> = Vec::new();
    let mut history_shown = false;
    // What fitting the model's context leaves out (`st.shed`): history turns, oldest first,
    // then worked examples, last first.
    let turns_in_window = h
        .components()
        .find(|c| c.kind == Kind::HistoryWindow)
        .map_or(0, |c| {
            let len = st.turns.len();
            len - window_start(len, c.int("steps") as usize)
        });
    st.sheddable = turns_in_window;
    let (turns_shed, examples_shed) = (
        st.shed.min(turns_in_window),
        st.shed.saturating_sub(turns_in_window),
    );
    for c in h.schedule(Stage::BeforeModel) {
        let parts = if changes_every_step(c) {
            &mut volatile
        } else {
            &mut parts
        };
        match c.kind {
            Kind::SystemPrompt => system = st.fill(c.text("text")),
            Kind::TaskFraming => parts.push(st.fill(c.text("text"))),
            Kind::FewShot => {
                let n = c.int("count") as usize;
                if n > 0 {
                    let ex = st.exemplars.get_or_insert_with(|| {
                        exemplars::for_task(&st.task, n, c.flag("same-type"))
                    });
                    let shown = ex.len().min(n);
                    st.sheddable += shown;
                    for (i, e) in ex
                        .iter()
                        .take(shown.saturating_sub(examples_shed))
                        .enumerate()
                    {
                        parts.push(format!("Example {}:\n{}", i + 1, e.text.trim_end()));
                    }
                }
            }
            Kind::Hint => parts.push(format!("Hint: {}", st.fill(c.text("text")))),
            Kind::HistoryWindow => {
                history_shown = true;
                let n = c.int("steps") as usize;
                let compact = h
                    .in_group("observation-view")
                    .is_some_and(|v| v.text("mode") == "compact");
                let mut s = format!("{}\n", view(&st.intro, compact));
                for t in &st.turns[window_start(st.turns.len(), n) + turns_shed..] {
                    s.push_str(&format!(
                        "> {}\n{}\n",
                        t.command,
                        view(&t.observation, compact)
                    ));
                }
                parts.push(s.trim_end().to_owned());
            }
            Kind::Scratchpad if !st.notes.is_empty() => {
                parts.push(format!("Your notes:\n- {}", st.notes.join("\n- ")));
            }
            Kind::FailureMemory if !st.failures.is_empty() => {
                let f: Vec<&str> = st.failures.iter().map(String::as_str).collect();
                parts.push(format!("These commands did nothing: {}.", f.join("; ")));
            }
            Kind::VisitedLog if !st.visited.is_empty() => {
                let v: Vec<&str> = st.visited.iter().map(|(p, _)| p.as_str()).collect();
                parts.push(format!("Places visited: {}.", v.join(", ")));
            }
            Kind::Planner => {
                if let Some(p) = &st.plan {
                    parts.push(format!("Your plan:\n{p}"));
                }
            }
            Kind::Reflection if !st.reflections.is_empty() => {
                parts.push(format!(
                    "Your reflections:\n- {}",
                    st.reflections.join("\n- ")
                ));
            }
            Kind::Tool => {
                let max = c.int("max-items") as usize;
                let items = tool(c.tool().unwrap_or(""), st, env)?;
                trace.push(Event::Tool {
                    step: st.step,
                    tool: c.tool().unwrap_or("").to_owned(),
                    items: items.len(),
                });
                if !items.is_empty() {
                    let label = match c.tool().unwrap_or("") {
                        "admissible-commands" => "Commands you can use now",
                        "inventory" => "You are carrying",
                        "map" => "Places seen and what is there",
                        "unvisited" => "Places not visited yet",
                        "state" => "Now",
                        _ => "Goal",
                    };
                    let shown: Vec<String> = items.into_iter().take(max).collect();
                    parts.push(format!("{label}: {}.", shown.join("; ")));
                }
            }
            _ => {}
        }
    }
    parts.append(&mut volatile);
    if !history_shown {
        // Without a history window the model still sees where it is now.
        let last = st
            .turns
            .last()
            .map_or(st.intro.as_str(), |t| &t.observation);
        parts.push(last.to_owned());
    }
    let mut messages = Vec::new();
    if !system.is_empty() {
        messages.push(Message::new(Role::System, system));
    }
    messages.push(Message::new(Role::User, parts.join("\n\n")));
    Ok(messages)
}

/// An observation as the model reads it: raw, or compact (articles and filler dropped).
fn view(obs: &str, compact: bool) -> String {
    if !compact {
        return obs.to_owned();
    }
    obs.replace("Looking quickly around you, ", "")
        .replace("you see a ", "you see ")
        .replace(", a ", ", ")
        .replace(", and a ", ", ")
        .replace("You arrive at ", "At ")
}

/// A tool's items. Tools read only the episode's own observations, the environment's
/// admissible list and its [`env::View`]: deterministic, with no shell, files or network.
fn tool(name: &str, st: &State, env: &mut dyn Environment) -> Result<Vec<String>, Error> {
    Ok(match name {
        "admissible-commands" => env.admissible_commands()?,
        "inventory" => vec![st.carrying()],
        "map" => st
            .visited
            .iter()
            .map(|(p, o)| format!("{p}: {}", o.chars().take(120).collect::<String>()))
            .collect(),
        "unvisited" => st
            .view
            .places
            .iter()
            .filter(|p| !st.visited.iter().any(|(v, _)| v == *p))
            .cloned()
            .collect(),
        "goal" => vec![st.goal.clone()],
        "state" => st.view.state.iter().cloned().collect(),
        _ => Vec::new(),
    })
}

fn record(trace: &mut Trace, st: &State, purpose: &str, prompt: &str, usage: Usage, out: &str) {
    trace.push(Event::Model {
        step: st.step,
        purpose: purpose.to_owned(),
        prompt_hash: trace::prompt_hash(prompt),
        prompt_chars: prompt.len(),
        prompt_tokens: usage.prompt_tokens,
        cached_tokens: usage.cached_tokens,
        completion_tokens: usage.completion_tokens,
        output: out.to_owned(),
    });
}

fn flat(messages: &[Message]) -> String {
    messages
        .iter()
        .map(|m| format!("{}: {}", m.role.as_str(), m.content))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A side question to the model in the current context (plan, reflection).
#[allow(clippy::too_many_arguments)]
fn ask(
    model: &dyn ModelBackend,
    h: &Harness,
    st: &mut State,
    env: &mut dyn Environment,
    trace: &mut Trace,
    question: &str,
    purpose: &str,
    max_tokens: u32,
) -> Result<String, Error> {
    let mut messages = context(h, st, env, trace)?;
    if let Some(last) = messages.last_mut() {
        last.content.push_str(&format!("\n\n{question}"));
    }
    let g = model.generate(&GenerateRequest::new(messages.clone(), max_tokens))?;
    st.usage += g.usage;
    record(trace, st, purpose, &flat(&messages), g.usage, &g.text);
    Ok(g.text.trim().chars().take(600).collect())
}

/// Words that say nothing about which command serves the goal.
const FILLER: &[&str] = &[
    "the", "some", "and", "put", "them", "two", "with", "your", "task", "that", "have", "are",
    "into", "onto", "then", "from", "look", "its", "for", "this", "there",
];

/// A text's content words in their order (lower case, no filler, no numbers).
fn content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| {
            w.len() >= 3 && !FILLER.contains(&w.as_str()) && !w.chars().all(|c| c.is_ascii_digit())
        })
        .collect()
}

/// The goal's content words, sorted, without repeats.
fn goal_words(goal: &str) -> Vec<String> {
    let mut words = content_words(goal);
    words.sort();
    words.dedup();
    words
}

/// The share of the goal's content words (`goal`, in order, see [`content_words`]) that
/// `command` names in the same order: the longest common subsequence over the goal's length.
/// Unlike [`goal_share`] it tells `stack the red block on the blue block` from the reverse.
fn goal_order_share(goal: &[String], command: &str) -> f64 {
    if goal.is_empty() {
        return 0.0;
    }
    let cmd = content_words(command);
    // One row of the longest-common-subsequence table at a time.
    let mut prev = vec![0usize; cmd.len() + 1];
    for g in goal {
        let mut row = vec![0usize; cmd.len() + 1];
        for (j, c) in cmd.iter().enumerate() {
            row[j + 1] = if g == c {
                prev[j] + 1
            } else {
                row[j].max(prev[j + 1])
            };
        }
        prev = row;
    }
    prev[cmd.len()] as f64 / goal.len() as f64
}

/// The share of `goal`'s words that `command` names.
fn goal_share(goal: &[String], command: &str) -> f64 {
    if goal.is_empty() {
        return 0.0;
    }
    let named = goal
        .iter()
        .filter(|g| {
            command
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| w.eq_ignore_ascii_case(g))
        })
        .count();
    named as f64 / goal.len() as f64
}

/// The `k` candidates that name the largest share of the goal's words, then of the latest
/// observation's content words, in the world's order among equals (a stable sort).
fn most_relevant(
    mut candidates: Vec<String>,
    goal: &[String],
    latest: &str,
    k: usize,
) -> Vec<String> {
    let seen = goal_words(latest);
    let key = |c: &String| (goal_share(goal, c), goal_share(&seen, c));
    let keys: Vec<(f64, f64)> = candidates.iter().map(key).collect();
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        keys[b]
            .0
            .total_cmp(&keys[a].0)
            .then(keys[b].1.total_cmp(&keys[a].1))
    });
    order.truncate(k);
    order.sort_unstable();
    order
        .into_iter()
        .map(|i| std::mem::take(&mut candidates[i]))
        .collect()
}

/// The thing a command acts on: its first content word after the verb (`apple` in "take
/// apple 2 from table 1", `cabinet` in "go to cabinet 1", `red` in "pick up the red block").
fn object(command: &str) -> Option<String> {
    command
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .skip(1)
        .map(str::to_lowercase)
        .find(|w| w.len() >= 3 && !FILLER.contains(&w.as_str()))
}

/// The first worked example's goal words read as this episode's: where the two goals have the
/// same form (as many words, at most half of them different: `heat some egg and put it in
/// diningtable` and `heat some apple and put it in countertop`), each word where they differ
/// maps to this goal's; otherwise none.
fn example_words(example_goal: &str, goal: &str) -> Vec<(String, String)> {
    let words = |t: &str| -> Vec<String> {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let (a, b) = (words(example_goal), words(goal));
    let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    if a.len() != b.len() || a.is_empty() || 2 * differ > a.len() {
        return Vec::new();
    }
    a.into_iter().zip(b).filter(|(x, y)| x != y).collect()
}

/// `command` with its words mapped by `words` (see [`example_words`]).
fn read_as(command: &str, words: &[(String, String)]) -> String {
    command
        .split_whitespace()
        .map(|w| {
            let lower = w.to_lowercase();
            words
                .iter()
                .find(|(from, _)| *from == lower)
                .map_or(w, |(_, to)| to.as_str())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A command's verb: its first word, in lower case.
fn verb(command: &str) -> String {
    command
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_lowercase()
}

/// One step of a worked example's plan, read for this episode: its command with the example's
/// goal words read as this goal's ([`example_words`]), and those of its words that came from
/// the example's goal (what any command doing the step must name: `apple` in `take apple 1
/// from countertop 3`, whatever the place).
struct ExampleStep {
    command: String,
    needs: Vec<String>,
}

/// `plan`, an example's for `example_goal`, read for an episode whose goal is `goal`.
fn example_plan(example_goal: &str, goal: &str, plan: &[String]) -> Vec<ExampleStep> {
    let words = example_words(example_goal, goal);
    let from_goal = content_words(example_goal);
    plan.iter()
        .map(|c| ExampleStep {
            command: read_as(c, &words),
            needs: content_words(c)
                .into_iter()
                .filter(|w| from_goal.contains(w))
                .map(|w| read_as(&w, &words))
                .collect(),
        })
        .collect()
}

impl ExampleStep {
    /// Whether `command` does this step: it has the step's verb and names the words the step
    /// needs, those from the goal where it has any (`take apple 1 from countertop 3` is done by
    /// taking the apple anywhere), all its words where it has none (`go to microwave 1` only
    /// by going there).
    fn done_by(&self, command: &str) -> bool {
        if verb(command) != verb(&self.command) {
            return false;
        }
        let named = content_words(command);
        if self.needs.is_empty() {
            content_words(&self.command)
                .iter()
                .all(|w| named.contains(w))
        } else {
            self.needs.iter().all(|w| named.contains(w))
        }
    }
}

/// The next step of the first worked example's plan, read for this episode
/// ([`example_plan`]), after the commands the world carried out so far ([`plan_position`]).
/// `None` without an example, or past its end.
fn example_next_step(st: &State) -> Option<ExampleStep> {
    let ex = st.exemplars.as_ref()?.first()?;
    let plan = example_plan(&ex.goal, &st.goal, &ex.plan);
    let done = st
        .turns
        .iter()
        .filter(|t| !t.invalid)
        .map(|t| t.command.as_str());
    let at = plan_position(&plan, done);
    plan.into_iter().nth(at)
}

/// How many of `plan`'s steps the commands `done` carried out, in order
/// ([`ExampleStep::done_by`]). A command may do a later step, skipping steps that need no goal
/// word (the example's own searches), never one that does.
fn plan_position<'a>(plan: &[ExampleStep], done: impl Iterator<Item = &'a str>) -> usize {
    let mut at = 0;
    for c in done {
        for (j, step) in plan.iter().enumerate().skip(at) {
            if step.done_by(c) {
                at = j + 1;
                break;
            }
            if !step.needs.is_empty() {
                break;
            }
        }
    }
    at
}

/// Whether `command` names a place the episode has not been to, or the place the agent is at
/// (opening or searching it), by the world's own list of places ([`env::View`]).
fn explores(st: &State, command: &str) -> bool {
    let padded = format!(" {} ", command.to_lowercase());
    let names = |p: &String| padded.contains(&format!(" {} ", p.to_lowercase()));
    st.view
        .places
        .iter()
        .filter(|p| names(p))
        .any(|p| !st.been.contains(p) || st.view.at.as_ref() == Some(p))
}

/// A name for the state the world is in, from what the world says of it: the commands it
/// admits (in any order), what the agent holds and where it is. Two states that admit the same
/// commands with the same hands and place share a name; no suite's phrases are read.
fn state_key(admissible: &[String], view: &env::View) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut sorted: Vec<&String> = admissible.iter().collect();
    sorted.sort_unstable();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (sorted, &view.holding, &view.at).hash(&mut h);
    h.finish()
}

/// How often `command`, sent from the state `now`, led back to a state the episode had
/// already been in (a cycle, or a command that changed nothing). The state after a turn is the
/// next turn's, or `now` after the last one.
fn revisits(turns: &[Turn], now: u64, command: &str) -> usize {
    (0..turns.len())
        .filter(|&i| turns[i].from == Some(now) && turns[i].command == command)
        .filter(|&i| {
            let to = turns.get(i + 1).map_or(Some(now), |t| t.from);
            to.is_some_and(|to| turns[..=i].iter().any(|t| t.from == Some(to)))
        })
        .count()
}

/// A form of undo the episode has seen: a command's words, with the slots (`None`) that its
/// undo takes over, and the undo's words, each either its own or the undone command's word at
/// a slot's position.
#[derive(Debug, Clone, PartialEq)]
struct UndoForm {
    done: Vec<Option<String>>,
    undo: Vec<Result<String, usize>>,
}

impl UndoForm {
    /// The form in which `b` undoes `a`: each word of `b` is matched to the same word's
    /// occurrence of the same rank in `a` (a slot) or kept as its own.
    fn of(a: &str, b: &str) -> UndoForm {
        let a: Vec<&str> = a.split_whitespace().collect();
        let mut taken = vec![false; a.len()];
        let undo = b
            .split_whitespace()
            .map(|w| match (0..a.len()).find(|&i| !taken[i] && a[i] == w) {
                Some(i) => {
                    taken[i] = true;
                    Err(i)
                }
                None => Ok(w.to_owned()),
            })
            .collect();
        let done = a
            .iter()
            .zip(&taken)
            .map(|(w, &slot)| (!slot).then(|| (*w).to_owned()))
            .collect();
        UndoForm { done, undo }
    }

    /// The command that would undo `command` in this form, if `command` has the form's words
    /// where it has no slots.
    fn undo_of(&self, command: &str) -> Option<String> {
        let words: Vec<&str> = command.split_whitespace().collect();
        let fits = words.len() == self.done.len()
            && self
                .done
                .iter()
                .zip(&words)
                .all(|(d, w)| d.as_deref().is_none_or(|d| d == *w));
        fits.then(|| {
            self.undo
                .iter()
                .map(|u| match u {
                    Ok(w) => w.as_str(),
                    Err(i) => words[*i],
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
    }
}

/// The forms of undo seen in the episode: each pair of consecutive turns whose first changed
/// the state and whose second led back to the state the first was sent from, both ways round
/// (an undo's undo is the command it undid). The state after the last turn is `now`.
fn undo_forms(turns: &[Turn], now: u64) -> Vec<UndoForm> {
    let mut forms = Vec::new();
    for i in 0..turns.len().saturating_sub(1) {
        let (a, b) = (&turns[i], &turns[i + 1]);
        let after = turns.get(i + 2).map_or(Some(now), |t| t.from);
        let undone = a.from.is_some() && a.from != b.from && after == a.from;
        if !undone || a.invalid || b.invalid {
            continue;
        }
        let (a, b) = (a.command.to_lowercase(), b.command.to_lowercase());
        for form in [UndoForm::of(&a, &b), UndoForm::of(&b, &a)] {
            if !forms.contains(&form) {
                forms.push(form);
            }
        }
    }
    forms
}

/// The commands that would undo `last`, the episode's last command, by the forms in `forms`
/// (lower case, single spaces: compare with [`normalized`]). Computed once per step, not once
/// per candidate.
fn undos_of(forms: &[UndoForm], last: &str) -> Vec<String> {
    let last = last.to_lowercase();
    forms.iter().filter_map(|f| f.undo_of(&last)).collect()
}

/// `command` in lower case with single spaces, as [`undos_of`] writes commands.
fn normalized(command: &str) -> String {
    command
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `candidate` would undo `last` by a form in `forms`.
#[cfg(test)]
fn undoes(forms: &[UndoForm], last: &str, candidate: &str) -> bool {
    undos_of(forms, last).contains(&normalized(candidate))
}

/// The first turn a history window of `n` steps shows out of `len`: the window advances in
/// blocks of half its size, so between advances the context only grows at its end and the
/// model's prefix cache covers everything before the newest step.
fn window_start(len: usize, n: usize) -> usize {
    let block = (n / 2).max(1);
    if len <= n {
        0
    } else {
        (len - n).div_ceil(block) * block
    }
}

/// A world behind an adapter names its own train tasks for the harness's worked examples
/// ([`exemplars::from_world`]); playing them resets the world, so this runs before the
/// episode's reset. `None` where the suite is built in (its examples are generated when first
/// shown) or the harness shows none; empty, with a warning, where the adapter answers the
/// request with an error of its own (an adapter without the `exemplars` op).
fn world_exemplars(
    harness: &Harness,
    env: &mut dyn Environment,
    task: &TaskRef,
) -> Result<Option<Vec<exemplars::Exemplar>>, Error> {
    let Some(few) = harness.components().find(|c| c.kind == Kind::FewShot) else {
        return Ok(None);
    };
    let count = few.int("count").max(0) as usize;
    if count == 0 || env::Builtin::from_name(&task.suite).is_ok() {
        return Ok(None);
    }
    match exemplars::from_world(env, task, count, few.flag("same-type")) {
        Ok(found) => Ok(Some(found)),
        Err(e @ env::Error::Adapter { .. }) => {
            tracing::warn!(%task, error = %e, "no worked examples from the world");
            Ok(Some(Vec::new()))
        }
        Err(e) => Err(e.into()),
    }
}

/// The action selector: the command to send.
fn act(
    model: &dyn ModelBackend,
    h: &Harness,
    st: &mut State,
    env: &mut dyn Environment,
    trace: &mut Trace,
) -> Result<String, Error> {
    let sel = h.action_selector();
    if sel.kind == Kind::RandomChoice {
        // The floor asks no model, so it assembles no context.
        let candidates = env.admissible_commands()?;
        if candidates.is_empty() {
            return Ok("look".into());
        }
        let uniform = vec![0.0; candidates.len()];
        let i = sample_softmax(&uniform, 1.0, st.sampling ^ (u64::from(st.step) << 32));
        return Ok(candidates[i].clone());
    }
    let messages = context(h, st, env, trace)?;
    match sel.kind {
        Kind::LoglikScoring => {
            let mut candidates = env.admissible_commands()?;
            if candidates.is_empty() {
                return Ok("look".into());
            }
            let now = state_key(&candidates, &st.view);
            st.state = Some(now);
            if sel.text("focus") == "goal-or-explore" {
                let goal = &st.goal_words;
                let focused: Vec<String> = candidates
                    .iter()
                    .filter(|c| object(c).is_some_and(|o| goal.contains(&o)) || explores(st, c))
                    .cloned()
                    .collect();
                if !focused.is_empty() {
                    candidates = focused;
                }
            }
            let k = sel.int("top-k") as usize;
            if k > 0 && candidates.len() > k {
                let latest = st
                    .turns
                    .last()
                    .map_or(st.intro.as_str(), |t| &t.observation);
                candidates = most_relevant(candidates, &st.goal_words, latest, k);
            }
            let mut m = messages.clone();
            if let Some(last) = m.last_mut() {
                last.content.push_str("\n\nYour next command:");
            }
            let s = model.score(&ScoreRequest {
                messages: m.clone(),
                candidates: candidates.clone(),
            })?;
            st.usage += s.usage;
            let mean = sel.text("normalize") == "mean";
            let in_order = sel.text("goal-match") == "in-order";
            let goal_bonus = |c: &str| {
                if in_order {
                    goal_order_share(&st.goal_sequence, c)
                } else {
                    goal_share(&st.goal_words, c)
                }
            };
            let (goal_weight, repeat_penalty, revisit_penalty) = (
                sel.float("goal-weight"),
                sel.float("repeat-penalty"),
                sel.float("revisit-penalty"),
            );
            let undo_penalty = sel.float("undo-penalty");
            let undos = match st.turns.last() {
                Some(last) if undo_penalty > 0.0 => {
                    undos_of(&undo_forms(&st.turns, now), &last.command)
                }
                _ => Vec::new(),
            };
            let example_weight = sel.float("example-weight");
            let next_example_step = if example_weight > 0.0 {
                example_next_step(st)
            } else {
                None
            };
            let value = |i: usize| {
                let ll = if mean {
                    s.logprobs[i] / f64::from(s.tokens[i].max(1))
                } else {
                    s.logprobs[i]
                };
                let used = st
                    .turns
                    .iter()
                    .filter(|t| t.command == candidates[i])
                    .count();
                let back = if revisit_penalty > 0.0 {
                    revisits(&st.turns, now, &candidates[i])
                } else {
                    0
                };
                let example = next_example_step
                    .as_ref()
                    .is_some_and(|e| e.done_by(&candidates[i]));
                let undo = !undos.is_empty() && undos.contains(&normalized(&candidates[i]));
                ll + goal_weight * goal_bonus(&candidates[i])
                    + if example { example_weight } else { 0.0 }
                    - repeat_penalty * used as f64
                    - revisit_penalty * back as f64
                    - if undo { undo_penalty } else { 0.0 }
            };
            let temperature = sel.float("temperature");
            let best = if temperature > 0.0 {
                let values: Vec<f64> = (0..candidates.len()).map(value).collect();
                sample_softmax(
                    &values,
                    temperature,
                    st.sampling ^ (u64::from(st.step) << 32),
                )
            } else {
                (0..candidates.len())
                    .max_by(|&a, &b| value(a).total_cmp(&value(b)))
                    .unwrap_or(0)
            };
            st.chosen_logprobs
                .push(s.logprobs[best] / f64::from(s.tokens[best].max(1)));
            record(trace, st, "act", &flat(&m), s.usage, &candidates[best]);
            Ok(candidates[best].clone())
        }
        Kind::SampleVote => {
            let k = sel.int("k").max(1) as u64;
            let mut votes: Vec<(String, u32)> = Vec::new();
            for i in 0..k {
                let r = GenerateRequest {
                    messages: messages.clone(),
                    stop: Vec::new(),
                    max_tokens: sel.int("max-tokens") as u32,
                    temperature: sel.float("temperature") as f32,
                    seed: st.sampling ^ (u64::from(st.step) << 8) ^ i,
                };
                let g = model.generate(&r)?;
                st.usage += g.usage;
                let cmd = parse_command(&g.text, true);
                record(trace, st, "act", &flat(&messages), g.usage, &cmd);
                match votes.iter_mut().find(|(c, _)| *c == cmd) {
                    Some((_, n)) => *n += 1,
                    None => votes.push((cmd, 1)),
                }
            }
            // Most votes; ties go to the earliest sample.
            let best = votes.iter().map(|(_, n)| *n).max().unwrap_or(0);
            Ok(votes
                .into_iter()
                .find(|(_, n)| *n == best)
                .map(|(c, _)| c)
                .unwrap_or_else(|| "look".into()))
        }
        _ => {
            let react = sel.text("format") != "command";
            let g = model.generate(&GenerateRequest {
                messages: messages.clone(),
                stop: vec!["\n>".into(), "\nObservation".into()],
                max_tokens: sel.int("max-tokens") as u32,
                temperature: sel.float("temperature") as f32,
                seed: st.sampling ^ u64::from(st.step),
            })?;
            st.usage += g.usage;
            record(trace, st, "act", &flat(&messages), g.usage, &g.text);
            if let Some(pad) = h.in_group("scratchpad") {
                take_notes(pad, st, &g.text);
            }
            Ok(parse_command(&g.text, react))
        }
    }
}

/// An index drawn with probability proportional to `exp(values[i] / temperature)`, from a
/// stream seeded by `seed` (the task and step), so an episode replays the same.
fn sample_softmax(values: &[f64], temperature: f64, seed: u64) -> usize {
    use rand::{Rng as _, SeedableRng as _};
    let top = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = values
        .iter()
        .map(|v| ((v - top) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    if !total.is_finite() || total <= 0.0 {
        return 0;
    }
    let mut x = rand_chacha::ChaCha8Rng::seed_from_u64(seed).random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// Lines starting `Note:` become scratchpad notes.
fn take_notes(pad: &Component, st: &mut State, output: &str) {
    let max_chars = pad.int("max-note-chars") as usize;
    for line in output.lines() {
        if let Some(note) = line.trim().strip_prefix("Note:") {
            st.notes.push(note.trim().chars().take(max_chars).collect());
        }
    }
    let max = pad.int("max-notes") as usize;
    if st.notes.len() > max {
        let extra = st.notes.len() - max;
        st.notes.drain(..extra);
    }
}

/// The command in a model's answer: the `Action:` line for ReAct, else the first line that is
/// not a thought. Leading `>` and quotes are dropped; empty output means `look`.
pub fn parse_command(output: &str, react: bool) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let picked = if react {
        lines
            .iter()
            .find_map(|l| {
                let lower = l.to_lowercase();
                lower
                    .find("action:")
                    .map(|at| l[at + "action:".len()..].trim())
            })
            .or_else(|| {
                lines
                    .iter()
                    .find(|l| !l.to_lowercase().starts_with("thought"))
                    .copied()
            })
    } else {
        lines.first().copied()
    };
    let cmd = picked
        .unwrap_or("")
        .trim_start_matches('>')
        .trim()
        .trim_matches(|c| c == '"' || c == '`' || c == '\'')
        .trim_end_matches('.')
        .trim()
        .to_lowercase();
    if cmd.is_empty() { "look".into() } else { cmd }
}

/// The admissible check: an inadmissible command goes back to the model with feedback, at
/// most `max-retries` times; then the closest admissible command (by shared words) is sent.
/// So is it at once when the feedback, which lists every admissible command, does not fit
/// the model's context even with history and examples left out (ScienceWorld's lists run to
/// hundreds of commands, ten thousand tokens).
fn check(
    model: &dyn ModelBackend,
    h: &Harness,
    c: &Component,
    st: &mut State,
    env: &mut dyn Environment,
    trace: &mut Trace,
    mut command: String,
) -> Result<String, Error> {
    let admissible = env.admissible_commands()?;
    if admissible.is_empty() || admissible.contains(&command) {
        return Ok(command);
    }
    // Only free generation has a format; every other selector counts as ReAct here.
    let react = h
        .action_selector()
        .param("format")
        .and_then(ParamValue::as_text)
        != Some("command");
    for _ in 0..c.int("max-retries") {
        trace.push(Event::Guard {
            step: st.step,
            guard: "admissible-check".into(),
            detail: format!("{command:?} is not admissible; asking again"),
        });
        st.invalid += 1;
        let fitted = fitting(st, trace, |st, trace| {
            let mut messages = context(h, st, env, trace)?;
            if let Some(last) = messages.last_mut() {
                last.content.push_str(&format!(
                    "\n\n\"{command}\" is not a valid command here. Valid commands: {}.\nAnswer with one of them.",
                    admissible.join("; ")
                ));
            }
            let g = model.generate(&GenerateRequest {
                messages: messages.clone(),
                stop: vec!["\n>".into()],
                max_tokens: 48,
                temperature: 0.0,
                seed: st.sampling,
            })?;
            Ok((messages, g))
        });
        let (messages, g) = match fitted {
            Err(Error::Model(model::Error::ContextFull { tokens, context })) => {
                let size = |n: Option<usize>| n.map_or("?".into(), |n| n.to_string());
                trace.push(Event::Guard {
                    step: st.step,
                    guard: "admissible-check".into(),
                    detail: format!(
                        "the {} admissible commands do not fit the model's context ({} tokens \
                         of {}); not asking again",
                        admissible.len(),
                        size(tokens),
                        size(context)
                    ),
                });
                break;
            }
            r => r?,
        };
        st.usage += g.usage;
        record(trace, st, "retry", &flat(&messages), g.usage, &g.text);
        command = parse_command(&g.text, react);
        if admissible.contains(&command) {
            return Ok(command);
        }
    }
    let closest = closest(&command, &admissible);
    trace.push(Event::Guard {
        step: st.step,
        guard: "admissible-check".into(),
        detail: format!("{command:?} replaced by the closest admissible {closest:?}"),
    });
    Ok(closest)
}

fn closest(command: &str, admissible: &[String]) -> String {
    let words: std::collections::HashSet<&str> = command.split_whitespace().collect();
    admissible
        .iter()
        .max_by_key(|a| {
            (
                a.split_whitespace().filter(|w| words.contains(w)).count(),
                std::cmp::Reverse(a.len()),
            )
        })
        .cloned()
        .unwrap_or_else(|| command.to_owned())
}

/// The loop guard: a command repeated `max-repeats` times within `window` without progress
/// is replaced by an admissible command not used in the window.
fn guard(
    c: &Component,
    st: &mut State,
    env: &mut dyn Environment,
    trace: &mut Trace,
    command: String,
) -> Result<String, Error> {
    let window = c.int("window") as usize;
    let recent: Vec<&Turn> = st.turns.iter().rev().take(window).collect();
    let repeats = recent
        .iter()
        .filter(|t| t.command == command && !t.progress)
        .count();
    if repeats + 1 < c.int("max-repeats") as usize {
        return Ok(command);
    }
    st.loops += 1;
    let admissible = env.admissible_commands()?;
    let fresh = admissible
        .iter()
        .find(|a| {
            a.as_str() != "look"
                && a.as_str() != "inventory"
                && !recent.iter().any(|t| &t.command == *a)
        })
        .cloned()
        .unwrap_or(command.clone());
    trace.push(Event::Guard {
        step: st.step,
        guard: "loop-guard".into(),
        detail: format!("{command:?} repeated without effect; trying {fresh:?}"),
    });
    Ok(fresh)
}

/// A few lines on how the episode went, short enough for a mutation prompt.
fn digest(st: &State, won: bool, reason: &str) -> String {
    let mut d = format!(
        "{}: {} after {} steps ({reason}); goal: {}",
        st.task,
        if won { "won" } else { "failed" },
        st.step,
        st.goal
    );
    if !won {
        if !st.failures.is_empty() || st.invalid > 0 {
            let f: Vec<&str> = st.failures.iter().take(4).map(String::as_str).collect();
            d.push_str(&format!(
                "; {} commands did nothing (e.g. {})",
                st.invalid,
                f.join("; ")
            ));
        }
        if st.loops > 0 {
            d.push_str(&format!("; looped {} times", st.loops));
        }
        let last: Vec<&str> = st
            .turns
            .iter()
            .rev()
            .take(4)
            .map(|t| t.command.as_str())
            .collect();
        d.push_str(&format!("; last commands: {}", last.join(", ")));
    }
    d.chars().take(600).collect()
}

/// Runs `harness` on every task, `concurrency` episodes at a time (each with its own
/// environment; the model batches their calls); where the harness has a `best-of` component,
/// each task is [`run_best_of`] on the streams it asks for there
/// ([`Harness::best_of_streams`]). `progress` hears each finished episode. An episode that
/// fails (an adapter crash, a model error) is returned as its error, in order.
pub fn run_many(
    harness: &Harness,
    tasks: &[TaskRef],
    model: &dyn ModelBackend,
    adapter: Option<&hx_common::config::AdapterOptions>,
    options: &Options,
    concurrency: usize,
    progress: &(dyn Fn(usize, &Result<Episode, Error>) + Sync),
) -> Vec<Result<Episode, Error>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Episode, Error>>>> =
        Mutex::new((0..tasks.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..concurrency.clamp(1, tasks.len().max(1)) {
            s.spawn(|| {
                let mut envs: std::collections::HashMap<String, Box<dyn Environment>> =
                    std::collections::HashMap::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(task) = tasks.get(i) else { break };
                    let r = match envs.entry(task.suite.clone()) {
                        std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            env::open(&task.suite, adapter).map(|e| v.insert(e))
                        }
                    }
                    .map_err(Error::from)
                    .and_then(|env| {
                        let streams = harness.best_of_streams(task.seed);
                        if streams != (0..1) {
                            run_best_of(harness, env.as_mut(), task, model, options, streams)
                        } else {
                            run_episode(harness, env.as_mut(), task, model, options)
                        }
                    });
                    progress(i, &r);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every task ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_parsed_from_model_output() {
        assert_eq!(
            parse_command(
                "Thought: the apple may be there.\nAction: go to fridge 1",
                true
            ),
            "go to fridge 1"
        );
        assert_eq!(
            parse_command("> Open Fridge 1.\nmore", false),
            "open fridge 1"
        );
        assert_eq!(
            parse_command("take apple 1 from table 1", true),
            "take apple 1 from table 1"
        );
        assert_eq!(parse_command("", true), "look");
        assert_eq!(parse_command("Thought: hmm\n", true), "look");
    }

    #[test]
    fn softmax_sampling_follows_the_scores_and_replays() {
        let values = [0.0, (3.0f64).ln(), f64::NEG_INFINITY];
        let mut counts = [0usize; 3];
        for seed in 0..4000 {
            counts[sample_softmax(&values, 1.0, seed)] += 1;
        }
        // Weights 1 : 3 : 0.
        assert_eq!(counts[2], 0);
        let share = counts[1] as f64 / 4000.0;
        assert!((share - 0.75).abs() < 0.03, "{counts:?}");
        assert_eq!(
            sample_softmax(&values, 1.0, 7),
            sample_softmax(&values, 1.0, 7)
        );
        // A low temperature is nearly the argmax.
        assert!((0..200).all(|s| sample_softmax(&values, 0.01, s) == 1));
    }

    #[test]
    fn the_closest_admissible_command_shares_most_words() {
        let a = vec!["go to fridge 1".to_owned(), "open fridge 1".to_owned()];
        assert_eq!(closest("open the fridge", &a), "open fridge 1");
    }

    #[test]
    fn the_in_order_share_tells_a_goal_fact_from_its_reverse() {
        let g = content_words("have that the magenta block is on top of the orange block");
        let share = |c: &str| goal_order_share(&g, c);
        let right = share("stack the magenta block on top of the orange block");
        assert_eq!(right, 1.0, "{g:?}");
        assert!(share("stack the orange block on top of the magenta block") < right);
        assert!(share("stack the magenta block on top of the blue block") < right);
        // The word share cannot tell them apart.
        let words = goal_words("have that the magenta block is on top of the orange block");
        assert_eq!(
            goal_share(&words, "stack the orange block on top of the magenta block"),
            goal_share(&words, "stack the magenta block on top of the orange block")
        );
        assert_eq!(goal_order_share(&[], "look"), 0.0);
    }

    #[test]
    fn goal_words_skip_filler_and_score_commands_by_share() {
        let g = goal_words("Your task is to: put a clean apple in fridge 1.");
        assert_eq!(g, ["apple", "clean", "fridge"]);
        assert_eq!(goal_share(&g, "clean apple 1 with sinkbasin 1"), 2.0 / 3.0);
        assert_eq!(goal_share(&g, "go to Fridge 1"), 1.0 / 3.0);
        assert_eq!(goal_share(&g, "go to cabinet 1"), 0.0);
        assert_eq!(goal_share(&[], "go to cabinet 1"), 0.0);
    }

    #[test]
    fn top_k_keeps_the_goals_commands_then_the_observations_in_the_worlds_order() {
        let g = goal_words("Your task is to: put a clean apple in fridge 1.");
        let c: Vec<String> = [
            "go to cabinet 1",
            "go to fridge 1",
            "take mug 1 from table 1",
            "clean apple 1 with sinkbasin 1",
            "take knife 1 from table 1",
            "look",
        ]
        .map(String::from)
        .into();
        let seen = "On the table 1, you see a knife 1 and a mug 1.";
        // The goal's share first (2/3, then 1/3), then the observation's, and the kept ones in
        // the world's order.
        assert_eq!(
            most_relevant(c.clone(), &g, seen, 2),
            ["go to fridge 1", "clean apple 1 with sinkbasin 1"]
        );
        assert_eq!(
            most_relevant(c.clone(), &g, seen, 4),
            [
                "go to fridge 1",
                "take mug 1 from table 1",
                "clean apple 1 with sinkbasin 1",
                "take knife 1 from table 1"
            ]
        );
        // Ties keep the world's order; k at or above the count keeps everything.
        assert_eq!(
            most_relevant(c.clone(), &[], "", 2),
            ["go to cabinet 1", "go to fridge 1"]
        );
        assert_eq!(most_relevant(c.clone(), &g, seen, 6), c);
    }

    #[test]
    fn a_commands_object_is_its_first_content_word_after_the_verb() {
        assert_eq!(
            object("take apple 2 from diningtable 1").as_deref(),
            Some("apple")
        );
        assert_eq!(object("go to cabinet 1").as_deref(), Some("cabinet"));
        assert_eq!(object("pick up the red block").as_deref(), Some("red"));
        assert_eq!(object("look"), None);
    }

    fn turn(from: u64, command: &str) -> Turn {
        Turn {
            command: command.into(),
            observation: String::new(),
            progress: false,
            invalid: false,
            from: Some(from),
        }
    }

    #[test]
    fn an_undo_seen_once_is_known_in_its_form_for_other_objects() {
        // 1 -unstack-> 2 -stack (undoes it)-> 1 -pick up-> (now) 3.
        let turns = [
            turn(1, "unstack the cyan block from on top of the white block"),
            turn(2, "stack the cyan block on top of the white block"),
            turn(1, "pick up the red block"),
        ];
        let forms = undo_forms(&turns, 3);
        assert_eq!(forms.len(), 2, "{forms:?}");
        // The form carries over to other blocks, both ways round.
        let (unstack, stack) = (
            "unstack the red block from on top of the blue block",
            "stack the red block on top of the blue block",
        );
        assert!(undoes(&forms, unstack, stack));
        assert!(undoes(&forms, stack, unstack));
        assert!(undoes(
            &forms,
            unstack,
            "Stack the red  block on top of the blue block"
        ));
        // Not an undo: other blocks, or a command of another form.
        assert!(!undoes(
            &forms,
            unstack,
            "stack the red block on top of the cyan block"
        ));
        assert!(!undoes(&forms, unstack, "put down the red block"));
        assert!(!undoes(
            &forms,
            "pick up the red block",
            "put down the red block"
        ));
        // The same form in another world: `take X from Y` undone by `put X in/on Y`.
        let turns = [
            turn(5, "take apple 1 from countertop 2"),
            turn(6, "put apple 1 in/on countertop 2"),
        ];
        let forms = undo_forms(&turns, 5);
        assert!(undoes(
            &forms,
            "take mug 2 from shelf 1",
            "put mug 2 in/on shelf 1"
        ));
        assert!(!undoes(
            &forms,
            "take mug 2 from shelf 1",
            "put mug 2 in/on shelf 3"
        ));
        assert!(!undoes(&forms, "go to shelf 1", "put mug 2 in/on shelf 1"));
    }

    #[test]
    fn only_a_return_to_the_state_before_a_change_teaches_an_undo() {
        // 1 -look-> 1 (no change) -look-> (now) 1: nothing undone.
        assert!(undo_forms(&[turn(1, "look"), turn(1, "look")], 1).is_empty());
        // 1 -go-> 2 -go-> (now) 3: a new state, no undo.
        assert!(undo_forms(&[turn(1, "go to a"), turn(2, "go to b")], 3).is_empty());
        // 1 -open-> 2 -close-> 1, but the world refused the first: not learned.
        let mut refused = turn(1, "open box 1");
        refused.invalid = true;
        assert!(undo_forms(&[refused, turn(2, "close box 1")], 1).is_empty());
        // States nobody read teach nothing.
        let mut unread = turn(1, "open box 1");
        unread.from = None;
        assert!(undo_forms(&[unread, turn(2, "close box 1")], 1).is_empty());
        // The same pair, read: learned, and it carries to another box.
        let forms = undo_forms(&[turn(1, "open box 1"), turn(2, "close box 1")], 1);
        assert!(undoes(&forms, "open box 7", "close box 7"));
        assert!(undoes(&forms, "close box 7", "open box 7"));
    }

    #[test]
    fn a_command_that_led_back_to_a_state_seen_counts_as_a_revisit() {
        // States 1 -stack-> 2 -unstack-> 1 -stack-> 2 -unstack-> (now) 1.
        let turns = [
            turn(1, "stack"),
            turn(2, "unstack"),
            turn(1, "stack"),
            turn(2, "unstack"),
        ];
        // From 1, `stack` led to 2: new the first time, seen the second.
        assert_eq!(revisits(&turns, 1, "stack"), 1);
        // Only commands sent from the state asked about count.
        assert_eq!(revisits(&turns, 1, "unstack"), 0);
        // One step earlier, in state 2: `unstack` led back to 1 once.
        assert_eq!(revisits(&turns[..3], 2, "unstack"), 1);
        assert_eq!(revisits(&turns[..3], 2, "stack"), 0);
        // A command that changed nothing led back to where it was sent from.
        assert_eq!(revisits(&[turn(7, "look")], 7, "look"), 1);
        // A move to a new state is no revisit, and a state nobody read is never one.
        assert_eq!(revisits(&[turn(7, "go")], 8, "go"), 0);
        let mut unread = turn(7, "go");
        unread.from = None;
        assert_eq!(revisits(&[unread], 7, "go"), 0);
    }

    #[test]
    fn a_state_is_named_by_its_commands_in_any_order_hands_and_place() {
        let view = |holding: &[&str]| env::View {
            places: Vec::new(),
            at: None,
            holding: holding.iter().map(|s| s.to_string()).collect(),
            state: None,
        };
        let cmds = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = state_key(&cmds(&["put down x", "stack x on y"]), &view(&["x"]));
        assert_eq!(
            a,
            state_key(&cmds(&["stack x on y", "put down x"]), &view(&["x"]))
        );
        assert_ne!(a, state_key(&cmds(&["put down x"]), &view(&["x"])));
        assert_ne!(
            a,
            state_key(&cmds(&["put down x", "stack x on y"]), &view(&[]))
        );
    }

    #[test]
    fn the_history_window_advances_in_half_blocks() {
        // Up to n turns: all shown.
        assert_eq!(window_start(3, 6), 0);
        assert_eq!(window_start(6, 6), 0);
        // Past n, the start jumps by n/2 and then holds while the window fills up again.
        let starts: Vec<usize> = (7..=13).map(|len| window_start(len, 6)).collect();
        assert_eq!(starts, [3, 3, 3, 6, 6, 6, 9]);
        for len in 0..50 {
            let shown = len - window_start(len, 6);
            assert!(shown <= 6 && (len < 4 || shown >= 4), "{len}: {shown}");
        }
        // A window of one shows the newest turn only.
        assert_eq!(window_start(5, 1), 4);
    }

    #[test]
    fn an_examples_goal_words_are_read_as_this_goals_where_the_forms_agree() {
        let w = example_words(
            "heat some egg and put it in diningtable",
            "heat some apple and put it in countertop",
        );
        assert_eq!(
            w,
            vec![
                ("egg".to_owned(), "apple".to_owned()),
                ("diningtable".to_owned(), "countertop".to_owned())
            ]
        );
        assert_eq!(
            read_as("put egg 1 in/on diningtable 1", &w),
            "put apple 1 in/on countertop 1"
        );
        // Another form of the goal: nothing is mapped.
        assert!(
            example_words(
                "put a hot egg in diningtable",
                "heat some apple and put it in countertop"
            )
            .is_empty()
        );
    }

    #[test]
    fn the_next_example_step_follows_what_the_episode_did() {
        let goal = "heat some apple and put it in countertop";
        let plan: Vec<String> = [
            "go to countertop 3",
            "take egg 1 from countertop 3",
            "go to microwave 1",
            "heat egg 1 with microwave 1",
            "go to diningtable 1",
            "put egg 1 in/on diningtable 1",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect();
        let plan = example_plan("heat some egg and put it in diningtable", goal, &plan);
        let at = |done: &[&str]| plan_position(&plan, done.iter().copied());
        assert_eq!(at(&[]), 0);
        // Searching elsewhere than the example did is none of its steps.
        assert_eq!(at(&["go to cabinet 1"]), 0);
        assert_eq!(at(&["go to countertop 3"]), 1);
        // Going to the microwave before taking the apple skips no step that needs the apple.
        assert_eq!(at(&["go to microwave 1"]), 0);
        // Taking another thing is not taking the apple; taking the apple, wherever, is.
        assert_eq!(at(&["go to cabinet 1", "take mug 2 from cabinet 1"]), 0);
        let took = [
            "go to cabinet 1",
            "go to drawer 2",
            "take apple 4 from drawer 2",
        ];
        assert_eq!(at(&took), 2);
        assert_eq!(plan[2].command, "go to microwave 1");
        assert_eq!(plan[3].command, "heat apple 1 with microwave 1");
        assert!(plan[3].done_by("heat apple 4 with microwave 1"));
        // Next, the appliance: not putting the apple back, nor wandering.
        let candidates = [
            "put apple 4 in/on drawer 2",
            "go to microwave 1",
            "go to cabinet 3",
        ];
        let next: Vec<bool> = candidates.iter().map(|c| plan[2].done_by(c)).collect();
        assert_eq!(next, vec![false, true, false]);
        let heated = [
            &took[..],
            &["go to microwave 1", "heat apple 4 with microwave 1"],
        ]
        .concat();
        assert_eq!(at(&heated), 4);
        // Going back to the countertop needs the goal's countertop, not any place.
        assert_eq!(at(&[&heated[..], &["go to cabinet 4"]].concat()), 4);
        assert_eq!(plan[4].command, "go to countertop 1");
        let done = [
            &heated[..],
            &["go to countertop 1", "put apple 4 in/on countertop 1"],
        ]
        .concat();
        assert_eq!(at(&done), plan.len());
    }
}
