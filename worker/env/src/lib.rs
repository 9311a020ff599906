//! Environments agents act in: the interface every task suite implements, and the suites.
//!
//! An environment is a world with rules. Any string is a legal command: one the world cannot
//! carry out gets the world's own feedback ("Nothing happens."), never a panic or an error.
//! Errors are for environments that can fail for real (an external process that crashes).

pub mod blocks;
pub mod external;
pub mod household;
pub mod ruled;
pub mod survey;

use hx_common::task::{Split, TaskRef};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Seeds within a split are below this; the split's index sits in the top byte of the
/// generator's seed, so the splits' seed spaces are disjoint.
pub const MAX_SEED: u64 = 1 << 56;

/// The random stream a generated suite draws `task` from, after checking that the task names
/// `suite` and a seed in range.
pub fn task_rng(task: &TaskRef, suite: &'static str) -> Result<ChaCha8Rng, Error> {
    if task.suite != suite {
        return Err(Error::WrongSuite {
            task: task.clone(),
            suite,
        });
    }
    if task.seed >= MAX_SEED {
        return Err(Error::SeedRange {
            task: task.clone(),
            max: MAX_SEED,
        });
    }
    let split = match task.split {
        Split::Train => 0u64,
        Split::Validation => 1,
        Split::Test => 2,
        Split::Heldout => 3,
    };
    Ok(ChaCha8Rng::seed_from_u64((split << 56) | task.seed))
}

/// What an episode starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    /// The first observation.
    pub observation: String,
    /// The goal, e.g. `put a clean apple in fridge.`
    pub goal: String,
    /// The world's own description of its commands (`go to X, open X, ...`), which prompts
    /// take through `{commands}`, so one baseline prompt serves every suite.
    pub commands: Option<String>,
    /// One command in the world's syntax (`go to fridge 1`), for `{example}` in prompts.
    pub example: Option<String>,
    /// The world's own solution from this start, where it ships one (an external game's
    /// walkthrough). `hx tasks check` replays it as the suite's expert; agents never see it.
    pub walkthrough: Option<Vec<String>>,
}

/// What one command leads to.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The world's answer.
    pub observation: String,
    /// The episode is over (won, or the step limit reached).
    pub done: bool,
    /// The goal is reached.
    pub won: bool,
    /// Partial credit in `[0, 1]`, where the world measures progress.
    pub score: Option<f32>,
    /// The world did not carry the command out (unknown, or impossible here): the
    /// observation is its own answer to that (household's "Nothing happens.", ScienceWorld's
    /// "No known action matches that input."). Memories of failed commands and the rewrite
    /// policy read this, not the phrase.
    pub invalid: bool,
}

/// What the world says the agent can name right now: its places, where the agent is, what it
/// holds. Memories and tools (a log of visited places, the places not visited yet, the
/// inventory) read this instead of parsing one suite's phrases out of observations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Places the agent can go to or act on (`cabinet 1`), in the world's order; empty where
    /// the world has no places.
    pub places: Vec<String>,
    /// The place the agent is at, if any.
    pub at: Option<String>,
    /// What the agent holds.
    pub holding: Vec<String>,
    /// How things stand now in the world's own words (blocks: every fact, as PlanBench states
    /// a state), where the world says so; an observation may only tell what the latest
    /// command did. The `state` tool shows it, and it names the state the revisit prior
    /// tracks. `None` where the world gives no such account.
    pub state: Option<String>,
}

/// Why an environment could not reset or step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The task names another suite.
    #[error("task {task} is not of suite {suite:?}")]
    WrongSuite {
        /// The task asked for.
        task: TaskRef,
        /// This environment's suite.
        suite: &'static str,
    },
    /// The seed is outside the split's range.
    #[error("task {task}: seed must be below {max}")]
    SeedRange {
        /// The task asked for.
        task: TaskRef,
        /// The largest seed plus one.
        max: u64,
    },
    /// No valid task could be generated from the seed.
    #[error("task {task}: no solvable task generated after {attempts} attempts")]
    Generation {
        /// The task asked for.
        task: TaskRef,
        /// How many worlds were tried.
        attempts: u32,
    },
    /// `step` before `reset`, or after an adapter fault ended the episode.
    #[error("no episode is running: call reset first")]
    NotStarted,
    /// A suite no built-in generator, shipped adapter or configured adapter provides.
    #[error(
        "unknown suite {suite:?}: built-in suites are {known}; alfworld and scienceworld are \
         served by the adapters hx ships; others need an adapter command"
    )]
    UnknownSuite {
        /// The suite asked for.
        suite: String,
        /// The built-in suites.
        known: String,
    },
    /// An external adapter could not be started.
    #[error("cannot start adapter `{program}`: {cause}")]
    Spawn {
        /// The adapter's command line.
        program: String,
        /// Why.
        cause: String,
    },
    /// An external adapter exited (or closed its stdout) during a request.
    #[error(
        "adapter `{program}` exited during {op} ({status}){}",
        stderr_tail(stderr)
    )]
    Exited {
        /// The adapter's command line.
        program: String,
        /// The request it was answering.
        op: &'static str,
        /// Its exit status.
        status: String,
        /// The last lines it wrote to stderr.
        stderr: String,
    },
    /// An external adapter did not answer in time; it was killed.
    #[error("adapter `{program}` did not answer {op} within {after:?}")]
    Timeout {
        /// The adapter's command line.
        program: String,
        /// The request.
        op: &'static str,
        /// The timeout.
        after: std::time::Duration,
    },
    /// An external adapter broke the protocol; it was killed.
    #[error("adapter `{program}` answered {op} with {line:?}: {reason}")]
    Protocol {
        /// The adapter's command line.
        program: String,
        /// The request.
        op: &'static str,
        /// The start of the offending line.
        line: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An external adapter reported an error of its own.
    #[error("adapter `{program}` failed {op}: {message}")]
    Adapter {
        /// The adapter's command line.
        program: String,
        /// The request.
        op: &'static str,
        /// The adapter's message.
        message: String,
    },
}

fn stderr_tail(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends:\n{stderr}")
    }
}

/// A world an agent acts in, one episode at a time. Deterministic for a given task.
pub trait Environment: Send {
    /// Starts the episode for `task`.
    fn reset(&mut self, task: &TaskRef) -> Result<Reset, Error>;
    /// Carries out one command.
    fn step(&mut self, command: &str) -> Result<Step, Error>;
    /// The commands that do something in the current state.
    fn admissible_commands(&mut self) -> Result<Vec<String>, Error>;
    /// Steps per episode at most.
    fn step_limit(&self) -> u32;
    /// Places, position and inventory now ([`View`]); empty where the world does not say.
    fn view(&mut self) -> Result<View, Error> {
        Ok(View::default())
    }
    /// Up to `count` **train** tasks of this world whose walkthroughs can serve as worked
    /// examples for `task` (of the same task type where `same_type`), chosen deterministically,
    /// where the world can name them: an adapter answers the `exemplars` op. Callers play them
    /// with [`Environment::reset`] and the walkthrough, so this resets nothing itself. Built-in
    /// suites generate their exemplars without asking (none here).
    fn exemplar_tasks(
        &mut self,
        task: &TaskRef,
        count: usize,
        same_type: bool,
    ) -> Result<Vec<TaskRef>, Error> {
        let _ = (task, count, same_type);
        Ok(Vec::new())
    }
}

/// A task as a built-in suite generates it, whatever the suite.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The task's name.
    pub name: TaskRef,
    /// The first observation.
    pub observation: String,
    /// The goal text.
    pub goal: String,
    /// The expert's shortest plan.
    pub plan: Vec<String>,
}

/// The suites hx generates itself; anything else runs through an [`external`] adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// ALFWorld-style household worlds ([`household`]).
    Household,
    /// PlanBench-style Blocksworld ([`blocks`]).
    Blocks,
}

impl Builtin {
    /// Every built-in suite.
    pub const ALL: [Builtin; 2] = [Builtin::Household, Builtin::Blocks];

    /// The suite's name in task names.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Household => household::SUITE,
            Builtin::Blocks => blocks::SUITE,
        }
    }

    /// The built-in suite called `name`.
    pub fn from_name(name: &str) -> Result<Builtin, Error> {
        Builtin::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| Error::UnknownSuite {
                suite: name.to_owned(),
                known: Builtin::ALL.map(Builtin::name).join(", "),
            })
    }

    /// A fresh environment of this suite.
    pub fn environment(self) -> Box<dyn Environment> {
        match self {
            Builtin::Household => Box::new(household::Household::new()),
            Builtin::Blocks => Box::new(blocks::Blocks::new()),
        }
    }

    /// Generates a task with its expert plan.
    pub fn generate(self, task: &TaskRef) -> Result<Generated, Error> {
        Ok(match self {
            Builtin::Household => {
                let t = household::generate(task)?;
                Generated {
                    observation: t.world.intro(),
                    name: t.name,
                    goal: t.goal,
                    plan: t.plan,
                }
            }
            Builtin::Blocks => {
                let t = blocks::generate(task)?;
                Generated {
                    observation: t.world.intro(),
                    name: t.name,
                    goal: t.goal,
                    plan: t.plan,
                }
            }
        })
    }
}

/// ALFWorld's adapter (`adapters/alfworld_adapter.py`), compiled into hx so that a worker needs only
/// Python and ALFWorld's package, not a copy of the script.
pub const ALFWORLD_ADAPTER: &str = include_str!("../../adapters/alfworld_adapter.py");

/// ScienceWorld's adapter (`adapters/scienceworld_adapter.py`), compiled in the same way; a
/// worker needs Python, the `scienceworld` package and a Java runtime.
pub const SCIENCEWORLD_ADAPTER: &str = include_str!("../../adapters/scienceworld_adapter.py");

/// The adapter hx ships for `suite`, if any, run as `python3 -c SCRIPT`:
/// - `alfworld`: a 120 s reply timeout (loading a game grounds its PDDL, which takes seconds)
///   and ALFWorld's 50-step limit;
/// - `scienceworld`: a 180 s reply timeout (the first reset starts a JVM and, once per machine,
///   lists every task's variations) and 100 steps, ScienceWorld's own default limit.
///
/// A configured adapter for the same suite takes precedence.
pub fn shipped_adapter(suite: &str) -> Option<hx_common::config::AdapterOptions> {
    let (script, timeout, step_limit) = match suite {
        "alfworld" => (ALFWORLD_ADAPTER, 120, 50),
        "scienceworld" => (SCIENCEWORLD_ADAPTER, 180, 100),
        _ => return None,
    };
    Some(hx_common::config::AdapterOptions {
        command: vec!["python3".into(), "-c".into(), script.into()],
        timeout: std::time::Duration::from_secs(timeout),
        step_limit,
    })
}

/// An environment for `suite`: the adapter when one is given, else the built-in suite, else
/// the adapter hx ships for it.
pub fn open(
    suite: &str,
    adapter: Option<&hx_common::config::AdapterOptions>,
) -> Result<Box<dyn Environment>, Error> {
    let external = |a: &hx_common::config::AdapterOptions| -> Box<dyn Environment> {
        Box::new(external::External::new(external::Options {
            command: a.command.clone(),
            timeout: a.timeout,
            step_limit: a.step_limit,
        }))
    };
    match adapter {
        Some(a) => Ok(external(a)),
        None => match Builtin::from_name(suite) {
            Ok(b) => Ok(b.environment()),
            Err(e) => shipped_adapter(suite).map(|a| external(&a)).ok_or(e),
        },
    }
}
