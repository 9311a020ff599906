//! The catalog of component kinds: for each kind, its role, singleton group, the stages it may
//! run at, and the parameters it takes with their types, ranges and defaults.
//!
//! This table is the one place that says what a harness may contain. Validation checks files
//! against it, mutation operators sample from it, and the worker's runtime implements each kind.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::param::{ParamDefault as D, ParamSpec, ParamType as T};

/// The placeholders the worker's runtime fills in prompt texts: the task's goal, and the
/// world's description of its commands and an example command. Text mutation keeps those a
/// text has.
pub const PLACEHOLDERS: [&str; 3] = ["{goal}", "{commands}", "{example}"];

/// The dimension of agent behaviour a component serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// What the model is shown: system prompt, task framing, exemplars, observation views.
    Context,
    /// What is remembered across steps.
    Memory,
    /// Deterministic, sandboxed queries the agent may make.
    Tool,
    /// Plans written at the start and revised.
    Planning,
    /// Self-critique after failure or stall.
    Reflection,
    /// Checks on a command before it reaches the world.
    Verification,
    /// How the next command is chosen.
    ActionSelection,
    /// When and how the agent may rewrite its own harness mid-task.
    Adaptation,
    /// Limits and guards on the episode.
    Budget,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 9] = [
        Role::Context,
        Role::Memory,
        Role::Tool,
        Role::Planning,
        Role::Reflection,
        Role::Verification,
        Role::ActionSelection,
        Role::Adaptation,
        Role::Budget,
    ];

    /// The kebab-case name used in files.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Context => "context",
            Role::Memory => "memory",
            Role::Tool => "tool",
            Role::Planning => "planning",
            Role::Reflection => "reflection",
            Role::Verification => "verification",
            Role::ActionSelection => "action-selection",
            Role::Adaptation => "adaptation",
            Role::Budget => "budget",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The point within an episode step at which a component runs; edges are labelled with one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Once, before the first step.
    TaskStart,
    /// At the start of every step.
    StepStart,
    /// While assembling what the model is shown.
    BeforeModel,
    /// On the model's output.
    AfterModel,
    /// On the chosen command, before the world sees it.
    BeforeAction,
    /// On the world's answer.
    AfterObservation,
    /// Once, after the episode ends.
    TaskEnd,
}

impl Stage {
    /// Every stage, in the order they run.
    pub const ALL: [Stage; 7] = [
        Stage::TaskStart,
        Stage::StepStart,
        Stage::BeforeModel,
        Stage::AfterModel,
        Stage::BeforeAction,
        Stage::AfterObservation,
        Stage::TaskEnd,
    ];

    /// The kebab-case name used in files.
    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::TaskStart => "task-start",
            Stage::StepStart => "step-start",
            Stage::BeforeModel => "before-model",
            Stage::AfterModel => "after-model",
            Stage::BeforeAction => "before-action",
            Stage::AfterObservation => "after-observation",
            Stage::TaskEnd => "task-end",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tools a harness can offer its agent. Each may appear at most once.
pub const TOOLS: &[&str] = &[
    "admissible-commands",
    "inventory",
    "map",
    "unvisited",
    "goal",
    "state",
];

/// The algebra operations a rewrite policy may allow; names match [`super::Edit`]'s variants.
pub const EDIT_OPS: &[&str] = &[
    "edit-text",
    "insert",
    "remove",
    "replace",
    "rewire",
    "set-parameter",
];

/// Every kind of component the runtime knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)] // each kind is documented by its spec's `doc`
pub enum Kind {
    SystemPrompt,
    TaskFraming,
    FewShot,
    ObservationView,
    Hint,
    HistoryWindow,
    Scratchpad,
    FailureMemory,
    VisitedLog,
    Tool,
    Planner,
    Reflection,
    AdmissibleCheck,
    FreeGeneration,
    LoglikScoring,
    SampleVote,
    RewritePolicy,
    StepBudget,
    TokenBudget,
    LoopGuard,
    BestOf,
    RandomChoice,
}

/// What the catalog says about one kind.
#[derive(Debug, Clone, Copy)]
pub struct KindSpec {
    /// The kind.
    pub kind: Kind,
    /// Its role.
    pub role: Role,
    /// The group of which a harness may hold at most one member, if any.
    pub singleton: Option<&'static str>,
    /// Stages it may run at.
    pub stages: &'static [Stage],
    /// Stages it runs at when a file does not say.
    pub default_stages: &'static [Stage],
    /// Its parameters.
    pub params: &'static [ParamSpec],
    /// One line saying what it does.
    pub doc: &'static str,
}

impl KindSpec {
    /// The spec of the named parameter.
    pub fn param(&self, name: &str) -> Option<&'static ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
}

/// The group every action selector belongs to; a valid harness has exactly one member.
pub const ACTION_SELECTOR: &str = "action-selector";

const fn p(name: &'static str, ty: T, default: D, doc: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        ty,
        default,
        doc,
        id_omits_default: false,
    }
}

/// A parameter added to a kind after harness ids were first given out: see
/// [`ParamSpec::id_omits_default`]. Every parameter added from now on is made with this.
const fn late(name: &'static str, ty: T, default: D, doc: &'static str) -> ParamSpec {
    ParamSpec {
        id_omits_default: true,
        ..p(name, ty, default, doc)
    }
}

const PROMPT: T = T::Text { max_len: 4000 };
const SNIPPET: T = T::Text { max_len: 1000 };

use Stage::*;

static SPECS: &[KindSpec] = &[
    KindSpec {
        kind: Kind::SystemPrompt,
        role: Role::Context,
        singleton: Some("system-prompt"),
        stages: &[BeforeModel],
        default_stages: &[BeforeModel],
        params: &[p(
            "text",
            PROMPT,
            D::Required,
            "the system prompt; {commands} and {example} are replaced by the world's \
             description of its commands and an example command, {goal} by the goal",
        )],
        doc: "system prompt shown before everything else",
    },
    KindSpec {
        kind: Kind::TaskFraming,
        role: Role::Context,
        singleton: Some("task-framing"),
        stages: &[TaskStart, BeforeModel],
        default_stages: &[BeforeModel],
        params: &[p(
            "text",
            PROMPT,
            D::Text("Your task is to: {goal}"),
            "how the goal is put to the model; {goal} is replaced by the task's goal",
        )],
        doc: "frames the task's goal for the model",
    },
    KindSpec {
        kind: Kind::FewShot,
        role: Role::Context,
        singleton: Some("few-shot"),
        stages: &[TaskStart, BeforeModel],
        default_stages: &[BeforeModel],
        params: &[
            p(
                "count",
                T::Int { min: 0, max: 6 },
                D::Int(2),
                "expert traces shown, drawn from train tasks only",
            ),
            p(
                "same-type",
                T::Bool,
                D::Bool(true),
                "prefer exemplars of the current task's type",
            ),
        ],
        doc: "few-shot exemplars from expert traces of train tasks",
    },
    KindSpec {
        kind: Kind::ObservationView,
        role: Role::Context,
        singleton: Some("observation-view"),
        stages: &[BeforeModel, AfterObservation],
        default_stages: &[AfterObservation],
        params: &[p(
            "mode",
            T::Choice(&["compact", "raw"]),
            D::Text("raw"),
            "how observations are shown",
        )],
        doc: "how the world's observations are rendered for the model",
    },
    KindSpec {
        kind: Kind::Hint,
        role: Role::Context,
        singleton: None,
        stages: &[TaskStart, BeforeModel],
        default_stages: &[BeforeModel],
        params: &[p("text", SNIPPET, D::Required, "the hint")],
        doc: "a piece of advice added to the context; a harness may hold several",
    },
    KindSpec {
        kind: Kind::HistoryWindow,
        role: Role::Memory,
        singleton: Some("history"),
        stages: &[BeforeModel, AfterObservation],
        default_stages: &[BeforeModel, AfterObservation],
        params: &[p(
            "steps",
            T::Int { min: 1, max: 100 },
            D::Int(8),
            "past steps kept in the context",
        )],
        doc: "recent commands and observations; the window advances in blocks of half its \
              size, so the context's prefix stays the same between advances",
    },
    KindSpec {
        kind: Kind::Scratchpad,
        role: Role::Memory,
        singleton: Some("scratchpad"),
        stages: &[BeforeModel, AfterModel],
        default_stages: &[BeforeModel, AfterModel],
        params: &[
            p(
                "max-notes",
                T::Int { min: 1, max: 32 },
                D::Int(8),
                "notes kept",
            ),
            p(
                "max-note-chars",
                T::Int { min: 20, max: 500 },
                D::Int(200),
                "length bound of one note",
            ),
        ],
        doc: "notes the model writes for itself",
    },
    KindSpec {
        kind: Kind::FailureMemory,
        role: Role::Memory,
        singleton: Some("failure-memory"),
        stages: &[BeforeModel, AfterObservation],
        default_stages: &[BeforeModel, AfterObservation],
        params: &[p(
            "capacity",
            T::Int { min: 1, max: 64 },
            D::Int(16),
            "failed commands remembered",
        )],
        doc: "commands that did nothing, so they are not tried again",
    },
    KindSpec {
        kind: Kind::VisitedLog,
        role: Role::Memory,
        singleton: Some("visited-log"),
        stages: &[BeforeModel, AfterObservation],
        default_stages: &[BeforeModel, AfterObservation],
        params: &[p(
            "max-places",
            T::Int { min: 1, max: 100 },
            D::Int(30),
            "places listed",
        )],
        doc: "places visited and what was seen there",
    },
    KindSpec {
        kind: Kind::Tool,
        role: Role::Tool,
        singleton: None,
        stages: &[BeforeModel, AfterModel],
        default_stages: &[BeforeModel],
        params: &[
            p(
                "tool",
                T::Choice(TOOLS),
                D::Required,
                "which tool: `admissible-commands` (what the world admits now), `inventory` \
                 (what the agent holds), `map` (places seen and what was there), `unvisited` \
                 (places not visited yet), `goal` (the task), `state` (how things stand now, in \
                 the world's own words, where it gives them)",
            ),
            p(
                "max-items",
                T::Int { min: 1, max: 200 },
                D::Int(50),
                "items the tool returns at most",
            ),
        ],
        doc: "a deterministic, sandboxed query the agent may make",
    },
    KindSpec {
        kind: Kind::Planner,
        role: Role::Planning,
        singleton: Some("planner"),
        stages: &[TaskStart, StepStart, BeforeModel],
        default_stages: &[TaskStart, StepStart, BeforeModel],
        params: &[
            p(
                "replan-every",
                T::Int { min: 0, max: 50 },
                D::Int(0),
                "steps between re-plans; 0 plans once",
            ),
            p(
                "text",
                PROMPT,
                D::Text("Write a short numbered plan to achieve the goal."),
                "the planning prompt",
            ),
        ],
        doc: "a plan written by the model at the start and revised",
    },
    KindSpec {
        kind: Kind::Reflection,
        role: Role::Reflection,
        singleton: Some("reflection"),
        stages: &[AfterObservation, TaskEnd],
        default_stages: &[AfterObservation],
        params: &[
            p(
                "trigger",
                T::Choice(&["both", "failure", "stall"]),
                D::Text("both"),
                "what prompts a reflection",
            ),
            p(
                "stall-steps",
                T::Int { min: 1, max: 50 },
                D::Int(6),
                "steps without progress that count as a stall",
            ),
            p(
                "max-reflections",
                T::Int { min: 0, max: 10 },
                D::Int(3),
                "reflections per episode at most",
            ),
            p(
                "text",
                PROMPT,
                D::Text("Say briefly what went wrong and what to do differently."),
                "the reflection prompt",
            ),
        ],
        doc: "Reflexion-style self-critique after failure or stall",
    },
    KindSpec {
        kind: Kind::AdmissibleCheck,
        role: Role::Verification,
        singleton: Some("admissible-check"),
        stages: &[BeforeAction],
        default_stages: &[BeforeAction],
        params: &[
            p(
                "tool",
                T::ToolRef,
                D::Text("admissible-commands"),
                "the tool listing admissible commands",
            ),
            p(
                "max-retries",
                T::Int { min: 0, max: 5 },
                D::Int(2),
                "re-asks after an inadmissible command",
            ),
        ],
        doc: "catches an inadmissible command before it reaches the world",
    },
    KindSpec {
        kind: Kind::FreeGeneration,
        role: Role::ActionSelection,
        singleton: Some(ACTION_SELECTOR),
        stages: &[BeforeModel, AfterModel],
        default_stages: &[BeforeModel, AfterModel],
        params: &[
            p(
                "temperature",
                T::Float { min: 0.0, max: 2.0 },
                D::Float(0.0),
                "sampling temperature",
            ),
            p(
                "max-tokens",
                T::Int { min: 4, max: 1024 },
                D::Int(64),
                "tokens generated per step at most",
            ),
            p(
                "format",
                T::Choice(&["command", "react"]),
                D::Text("react"),
                "command only, or a thought then the command",
            ),
        ],
        doc: "the model writes its next command; a parser extracts it",
    },
    KindSpec {
        kind: Kind::LoglikScoring,
        role: Role::ActionSelection,
        singleton: Some(ACTION_SELECTOR),
        stages: &[BeforeModel, AfterModel],
        default_stages: &[BeforeModel, AfterModel],
        params: &[
            p(
                "tool",
                T::ToolRef,
                D::Text("admissible-commands"),
                "the tool listing the candidates",
            ),
            p(
                "normalize",
                T::Choice(&["mean", "sum"]),
                D::Text("mean"),
                "score candidates by mean or summed token log-likelihood",
            ),
            p(
                "goal-weight",
                T::Float { min: 0.0, max: 5.0 },
                D::Float(0.0),
                "bonus (in nats) times the share of the goal's words a candidate names",
            ),
            p(
                "repeat-penalty",
                T::Float { min: 0.0, max: 5.0 },
                D::Float(0.0),
                "penalty (in nats) per earlier use of the same command in the episode",
            ),
            late(
                "goal-match",
                T::Choice(&["words", "in-order"]),
                D::Text("words"),
                "what `goal-weight` rewards: the share of the goal's words a candidate names \
                 (`words`), or the share it names in the goal's order (`in-order`, the longest \
                 common subsequence: `stack A on B` then differs from `stack B on A`)",
            ),
            late(
                "revisit-penalty",
                T::Float { min: 0.0, max: 5.0 },
                D::Float(0.0),
                "penalty (in nats) per earlier time the command, sent from the state the world \
                 is in now, led back to a state already seen (a cycle, or no change); a state \
                 is named by the commands the world admits, what the agent holds and where it \
                 is, so a command needed again in a new state is not held against",
            ),
            late(
                "undo-penalty",
                T::Float { min: 0.0, max: 5.0 },
                D::Float(0.0),
                "penalty (in nats) for a candidate that would undo the last command, by the \
                 forms of undo the episode has seen: once a command and the next led back to \
                 the state the first was sent from, the pair (either way round), with the words \
                 the two share read as slots, says what undoes what (`unstack A from B` is \
                 undone by `stack A on B` for every A and B, `open X` by `close X`); an \
                 immediate undo in a world whose commands are deterministic wastes two steps",
            ),
            late(
                "example-weight",
                T::Float { min: 0.0, max: 5.0 },
                D::Float(0.0),
                "bonus (in nats) for a candidate that does the next step of the first worked \
                 example's plan (the harness's `few-shot` component; without one, none): the \
                 step's verb, naming the words it took from the example's goal, read as this \
                 goal's where the two goals share their form (`take apple` wherever the apple \
                 is), or all its words where it took none (`go to microwave 1`). The episode's \
                 commands so far are matched to the plan in order, skipping the example's own \
                 searches, so the next step follows what the episode has done",
            ),
            p(
                "top-k",
                T::Int { min: 0, max: 64 },
                D::Int(0),
                "score only the k candidates that name most of the goal's words (then most of \
                 the latest observation's), keeping the world's order among equals; 0 scores \
                 them all. Cuts a step's cost where the world admits many commands",
            ),
            p(
                "focus",
                T::Choice(&["all", "goal-or-explore"]),
                D::Text("all"),
                "score every candidate, or only those acting on a goal word (their first word \
                 after the verb) or going to or opening a place not visited yet (all of them \
                 if none qualifies)",
            ),
            p(
                "temperature",
                T::Float { min: 0.0, max: 5.0 },
                D::Float(0.0),
                "0 takes the best-scored candidate; above 0 samples one with probability \
                 proportional to exp(score / temperature), so a policy cannot lock into a loop",
            ),
        ],
        doc: "picks the admissible command the model finds most likely, with optional priors \
              for naming the goal and against repeating itself",
    },
    KindSpec {
        kind: Kind::SampleVote,
        role: Role::ActionSelection,
        singleton: Some(ACTION_SELECTOR),
        stages: &[BeforeModel, AfterModel],
        default_stages: &[BeforeModel, AfterModel],
        params: &[
            p("k", T::Int { min: 1, max: 16 }, D::Int(5), "samples drawn"),
            p(
                "temperature",
                T::Float { min: 0.0, max: 2.0 },
                D::Float(0.7),
                "sampling temperature",
            ),
            p(
                "max-tokens",
                T::Int { min: 4, max: 1024 },
                D::Int(64),
                "tokens per sample at most",
            ),
        ],
        doc: "samples k commands and takes the most frequent",
    },
    KindSpec {
        kind: Kind::RewritePolicy,
        role: Role::Adaptation,
        singleton: Some("rewrite-policy"),
        stages: &[AfterObservation],
        default_stages: &[AfterObservation],
        params: &[
            p(
                "no-progress-steps",
                T::Int { min: 0, max: 100 },
                D::Int(8),
                "fire after this many steps without progress; 0 disables",
            ),
            p(
                "invalid-commands",
                T::Int { min: 0, max: 50 },
                D::Int(4),
                "fire after this many invalid commands; 0 disables",
            ),
            p(
                "on-loop",
                T::Bool,
                D::Bool(true),
                "fire when a loop is detected",
            ),
            p(
                "model-may-ask",
                T::Bool,
                D::Bool(false),
                "the model may ask for a rewrite itself",
            ),
            p(
                "max-rewrites",
                T::Int { min: 0, max: 10 },
                D::Int(2),
                "rewrites per episode at most",
            ),
            p(
                "rollback-window",
                T::Int { min: 1, max: 50 },
                D::Int(5),
                "steps after a rewrite within which worse progress rolls it back",
            ),
            p(
                "allowed",
                T::Set(EDIT_OPS),
                D::Set(&["edit-text", "insert", "remove", "replace", "set-parameter"]),
                "algebra operations the model may choose",
            ),
            p(
                "max-text-chars",
                T::Int { min: 0, max: 2000 },
                D::Int(400),
                "longest text a rewrite may write",
            ),
        ],
        doc: "when and how the agent may rewrite its own harness mid-task",
    },
    KindSpec {
        kind: Kind::StepBudget,
        role: Role::Budget,
        singleton: Some("step-budget"),
        stages: &[StepStart],
        default_stages: &[StepStart],
        params: &[p(
            "max-steps",
            T::Int { min: 1, max: 1000 },
            D::Int(50),
            "steps per episode at most",
        )],
        doc: "ends the episode after a number of steps",
    },
    KindSpec {
        kind: Kind::TokenBudget,
        role: Role::Budget,
        singleton: Some("token-budget"),
        stages: &[StepStart],
        default_stages: &[StepStart],
        params: &[p(
            "max-tokens",
            T::Int {
                min: 100,
                max: 100_000_000,
            },
            D::Int(200_000),
            "model tokens per episode at most",
        )],
        doc: "ends the episode after a number of model tokens",
    },
    KindSpec {
        kind: Kind::LoopGuard,
        role: Role::Budget,
        singleton: Some("loop-guard"),
        stages: &[BeforeAction],
        default_stages: &[BeforeAction],
        params: &[
            p(
                "window",
                T::Int { min: 2, max: 50 },
                D::Int(6),
                "recent commands inspected",
            ),
            p(
                "max-repeats",
                T::Int { min: 1, max: 20 },
                D::Int(3),
                "repeats within the window that count as a loop",
            ),
        ],
        doc: "detects a command repeated without effect and steers away",
    },
    KindSpec {
        kind: Kind::BestOf,
        role: Role::Budget,
        singleton: Some("best-of"),
        stages: &[TaskStart],
        default_stages: &[TaskStart],
        params: &[
            p(
                "samples",
                T::Float {
                    min: 1.0,
                    max: MAX_SAMPLES,
                },
                D::Float(1.0),
                "episodes played per task, on different sampling streams; the one whose \
                 commands the model was most certain of (mean log-likelihood per token) is \
                 kept, and its cost is all of them. A fractional part is the share of tasks \
                 that get one more episode (chosen by the task's seed), so a token budget can \
                 be matched closely",
            ),
            late(
                "rest",
                T::Bool,
                D::Bool(false),
                "play all the episodes but the first (sampling stream 0, which is the episode \
                 of the harness without its best-of), for a coordinator that has that one \
                 already and keeps the more certain of the two",
            ),
        ],
        doc: "test-time scaling without a verifier: plays a task several times and keeps the \
              most certain episode. The search never inserts or tunes it (it buys success \
              with cost, not with a better agent); the final stage uses it for the \
              equal-budget baseline",
    },
    KindSpec {
        kind: Kind::RandomChoice,
        role: Role::ActionSelection,
        singleton: Some(ACTION_SELECTOR),
        stages: &[BeforeModel, AfterModel],
        default_stages: &[AfterModel],
        params: &[p(
            "tool",
            T::ToolRef,
            D::Text("admissible-commands"),
            "the tool listing the candidates",
        )],
        doc: "picks one of the commands the world admits uniformly at random (seeded by the \
              task and step), with no model call: the random-admissible floor, as a harness \
              that the final stage can score beside the others on the same tasks. The search \
              never inserts or tunes it",
    },
];

/// The most episodes [`Kind::BestOf`] plays per task.
pub const MAX_SAMPLES: f64 = 16.0;

/// The episodes a `best-of` of `samples` plays on the task with seed `seed`: the whole part,
/// plus one on a share of seeds equal to the fractional part (a golden-ratio sequence over the
/// seed, so consecutive seeds spread the extra episodes evenly).
pub fn best_of_episodes(samples: f64, seed: u64) -> u32 {
    let samples = samples.clamp(1.0, MAX_SAMPLES);
    let whole = samples.floor();
    let u = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    whole as u32 + u32::from(u < samples - whole)
}

impl Kind {
    /// Every kind, in catalog order.
    pub fn all() -> impl Iterator<Item = Kind> {
        SPECS.iter().map(|s| s.kind)
    }

    /// Whether variation operators (mutation, crossover's repairs, mid-task rewrites) may
    /// insert or tune it: all but [`Kind::BestOf`], which changes what a task costs rather
    /// than how the agent acts, and [`Kind::RandomChoice`], the floor, which ignores the model.
    pub fn searched(self) -> bool {
        !matches!(self, Kind::BestOf | Kind::RandomChoice)
    }

    /// What the catalog says about this kind.
    pub fn spec(self) -> &'static KindSpec {
        // The table is written in enum order; the test below keeps it so.
        &SPECS[self as usize]
    }

    /// The kebab-case name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::SystemPrompt => "system-prompt",
            Kind::TaskFraming => "task-framing",
            Kind::FewShot => "few-shot",
            Kind::ObservationView => "observation-view",
            Kind::Hint => "hint",
            Kind::HistoryWindow => "history-window",
            Kind::Scratchpad => "scratchpad",
            Kind::FailureMemory => "failure-memory",
            Kind::VisitedLog => "visited-log",
            Kind::Tool => "tool",
            Kind::Planner => "planner",
            Kind::Reflection => "reflection",
            Kind::AdmissibleCheck => "admissible-check",
            Kind::FreeGeneration => "free-generation",
            Kind::LoglikScoring => "loglik-scoring",
            Kind::SampleVote => "sample-vote",
            Kind::RewritePolicy => "rewrite-policy",
            Kind::StepBudget => "step-budget",
            Kind::TokenBudget => "token-budget",
            Kind::LoopGuard => "loop-guard",
            Kind::BestOf => "best-of",
            Kind::RandomChoice => "random-choice",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_enum_order_and_self_consistent() {
        for (i, spec) in SPECS.iter().enumerate() {
            assert_eq!(spec.kind as usize, i, "{} is out of place", spec.kind);
            assert!(!spec.default_stages.is_empty(), "{}", spec.kind);
            for s in spec.default_stages {
                assert!(spec.stages.contains(s), "{}: default stage {s}", spec.kind);
            }
            for param in spec.params {
                if let Some(v) = param.default.value() {
                    assert!(
                        param.ty.normalize(v).is_ok(),
                        "{}.{}: default out of range",
                        spec.kind,
                        param.name
                    );
                }
            }
            // The serde name and `as_str` must agree: files and messages use the same words.
            let json = serde_json::to_string(&spec.kind).expect("serializes");
            assert_eq!(json, format!("\"{}\"", spec.kind.as_str()));
        }
    }

    #[test]
    fn best_of_plays_the_whole_part_and_one_more_on_the_fractional_share() {
        assert!((0..100).all(|s| best_of_episodes(1.0, s) == 1));
        assert!((0..100).all(|s| best_of_episodes(3.0, s) == 3));
        // Out of range is clamped, never zero episodes.
        assert_eq!(best_of_episodes(0.2, 7), 1);
        assert_eq!(best_of_episodes(99.0, 7), MAX_SAMPLES as u32);
        for samples in [1.1, 1.5, 2.25, 2.9] {
            let n: u32 = (0..100).map(|s| best_of_episodes(samples, s)).sum();
            let mean = f64::from(n) / 100.0;
            // Consecutive seeds spread the extra episodes evenly: within 3 of 100 tasks.
            assert!((mean - samples).abs() <= 0.03, "{samples}: {mean}");
            assert!((0..100).all(|s| {
                let k = best_of_episodes(samples, s);
                k == samples.floor() as u32 || k == samples.ceil() as u32
            }));
        }
    }
}
