//! Environments agents act in: the interface every task suite implements, and the suites.
//!
//! An environment is a world with rules. Any string is a legal command: one the world cannot
//! carry out gets the world's own feedback ("Nothing happens."), never a panic or an error.
//! Errors are for environments that can fail for real (an external process that crashes).

pub mod household;

use hx_common::task::TaskRef;

/// What an episode starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    /// The first observation.
    pub observation: String,
    /// The goal, e.g. `put a clean apple in fridge.`
    pub goal: String,
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
    /// `step` before `reset`.
    #[error("step before reset")]
    NotStarted,
}

/// A world an agent acts in, one episode at a time. Deterministic for a given task.
pub trait Environment: Send {
    /// Starts the episode for `task`.
    fn reset(&mut self, task: &TaskRef) -> Result<Reset, Error>;
    /// Carries out one command.
    fn step(&mut self, command: &str) -> Result<Step, Error>;
    /// The commands that do something in the current state.
    fn admissible_commands(&self) -> Vec<String>;
    /// Steps per episode at most.
    fn step_limit(&self) -> u32;
}
