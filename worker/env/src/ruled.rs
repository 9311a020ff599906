//! The episode around a world hx generates by rule (`household`, `blocks`): one [`Environment`]
//! for every such suite, so the bookkeeping of a step (the count, the limit, the end, the
//! world's answer to a command it cannot carry out) is written once.

use hx_common::task::TaskRef;

use super::{Environment, Error, Reset, Step, View};

/// A world generated from a task's seed, with its rules.
pub trait RuleWorld: Sized + Send {
    /// The world's commands as prompts list them (`go to X, open X, ...`).
    const COMMANDS: &'static str;
    /// One command in the world's syntax, for `{example}` in prompts.
    const EXAMPLE: &'static str;
    /// Steps an episode may take.
    const STEP_LIMIT: u32;
    /// The world's answer to a command it cannot carry out.
    const NOTHING: &'static str;

    /// The world `task` names, and its goal as stated to the agent.
    fn generate(task: &TaskRef) -> Result<(Self, String), Error>;
    /// The first observation.
    fn intro(&self) -> String;
    /// Carries out `command` and answers it ([`Self::NOTHING`] when it cannot).
    fn act(&mut self, command: &str) -> String;
    /// Whether the goal holds.
    fn won(&self) -> bool;
    /// The share of the goal that holds, in [0, 1]: 0 at the start, 1 when won.
    fn progress(&self) -> f32;
    /// The commands the world can carry out now.
    fn admissible(&self) -> Vec<String>;
    /// Places, the agent's place, what it holds, and the state where the world states it.
    fn view(&self) -> View;
}

/// A [`RuleWorld`] as an [`Environment`]; call `reset` to start a task.
#[derive(Debug)]
pub struct Ruled<W> {
    world: Option<W>,
    steps: u32,
    done: bool,
}

impl<W> Default for Ruled<W> {
    fn default() -> Self {
        Ruled {
            world: None,
            steps: 0,
            done: false,
        }
    }
}

impl<W: RuleWorld> Ruled<W> {
    /// An environment with no task yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current world, once reset.
    pub fn world(&self) -> Option<&W> {
        self.world.as_ref()
    }
}

impl<W: RuleWorld> Environment for Ruled<W> {
    fn reset(&mut self, task: &TaskRef) -> Result<Reset, Error> {
        let (world, goal) = W::generate(task)?;
        let observation = world.intro();
        self.world = Some(world);
        self.steps = 0;
        self.done = false;
        Ok(Reset {
            observation,
            goal,
            commands: Some(W::COMMANDS.into()),
            example: Some(W::EXAMPLE.into()),
            walkthrough: None,
        })
    }

    fn step(&mut self, command: &str) -> Result<Step, Error> {
        let world = self.world.as_mut().ok_or(Error::NotStarted)?;
        if self.done {
            return Ok(Step {
                observation: "The episode is over.".into(),
                done: true,
                won: world.won(),
                score: Some(world.progress()),
                invalid: false,
            });
        }
        let observation = world.act(command);
        self.steps += 1;
        let won = world.won();
        self.done = won || self.steps >= W::STEP_LIMIT;
        Ok(Step {
            invalid: observation == W::NOTHING,
            observation,
            done: self.done,
            won,
            score: Some(world.progress()),
        })
    }

    fn admissible_commands(&mut self) -> Result<Vec<String>, Error> {
        Ok(self.world.as_ref().map(W::admissible).unwrap_or_default())
    }

    fn step_limit(&self) -> u32 {
        W::STEP_LIMIT
    }

    fn view(&mut self) -> Result<View, Error> {
        Ok(self.world.as_ref().ok_or(Error::NotStarted)?.view())
    }
}
