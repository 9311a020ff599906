//! The blocks suite: Blocksworld planning in PlanBench's style. Coloured blocks sit in stacks on
//! a table; one hand picks up, unstacks, puts down and stacks them, one block at a time; the goal
//! is a set of `X on top of Y` facts.
//!
//! A task `blocks/SPLIT/SEED` draws an initial arrangement and a goal from the seed. Train and
//! validation use 3 to 5 blocks of eight colours; test uses 4 to 6 blocks (six never occur in
//! train) and always includes colours that train and validation never show. The expert is a
//! breadth-first search over every reachable state, so its plan is the shortest; a task it cannot
//! solve within the step limit is rejected at generation time. The world scores partial progress
//! as the fraction of goal facts that hold.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;

use hx_common::task::{Split, TaskRef};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::ruled::{RuleWorld, Ruled};
use super::{Error, View, task_rng};

/// The suite's name in task names.
pub const SUITE: &str = "blocks";

/// Steps per episode at most.
pub const STEP_LIMIT: u32 = 40;

/// Colours of train and validation (and test).
pub const SEEN_COLOURS: [&str; 8] = [
    "red", "blue", "orange", "yellow", "white", "magenta", "black", "cyan",
];

/// Colours only the test split shows.
pub const UNSEEN_COLOURS: [&str; 4] = ["green", "purple", "brown", "pink"];

/// The command forms, in PlanBench's words; X and Y are blocks named by colour.
pub const COMMANDS: &str = "pick up X, unstack X from on top of Y, put down X, stack X on top \
     of Y, look, inventory (X and Y are blocks, e.g. the red block)";

const MAX_BLOCKS: usize = 6;
const ATTEMPTS: u32 = 64;
const NOTHING: &str = "Nothing happens.";

/// Where a block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pos {
    /// On the table.
    Table,
    /// In the hand.
    Held,
    /// On top of the block with this index.
    On(u8),
}

/// One move of the hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pick up a clear block from the table.
    PickUp(u8),
    /// Take a clear block off the block beneath it.
    Unstack(u8, u8),
    /// Put the held block on the table.
    PutDown(u8),
    /// Put the held block on a clear block.
    Stack(u8, u8),
}

/// A Blocksworld state and goal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    /// Each block's colour; a block is named `the <colour> block`.
    pub colours: Vec<&'static str>,
    /// Where each block is.
    pub pos: Vec<Pos>,
    /// Goal facts: `(a, b)` means block `a` on top of block `b`.
    pub goal: Vec<(u8, u8)>,
}

impl World {
    fn name(&self, b: u8) -> String {
        format!("the {} block", self.colours[b as usize])
    }

    fn n(&self) -> u8 {
        self.colours.len() as u8
    }

    fn held(&self) -> Option<u8> {
        (0..self.n()).find(|&b| self.pos[b as usize] == Pos::Held)
    }

    fn clear(&self, b: u8) -> bool {
        self.pos[b as usize] != Pos::Held && !self.pos.contains(&Pos::On(b))
    }

    /// Whether an action's preconditions hold.
    pub fn can(&self, a: Action) -> bool {
        let empty = self.held().is_none();
        match a {
            Action::PickUp(b) => empty && self.pos[b as usize] == Pos::Table && self.clear(b),
            Action::Unstack(b, c) => empty && self.pos[b as usize] == Pos::On(c) && self.clear(b),
            Action::PutDown(b) => self.pos[b as usize] == Pos::Held,
            Action::Stack(b, c) => b != c && self.pos[b as usize] == Pos::Held && self.clear(c),
        }
    }

    fn apply(&mut self, a: Action) {
        match a {
            Action::PickUp(b) | Action::Unstack(b, _) => self.pos[b as usize] = Pos::Held,
            Action::PutDown(b) => self.pos[b as usize] = Pos::Table,
            Action::Stack(b, c) => self.pos[b as usize] = Pos::On(c),
        }
    }

    /// Every action whose preconditions hold, in a fixed order.
    pub fn actions(&self) -> Vec<Action> {
        let n = self.n();
        let mut out = Vec::new();
        for b in 0..n {
            out.push(Action::PickUp(b));
            out.push(Action::PutDown(b));
            for c in 0..n {
                out.push(Action::Unstack(b, c));
                out.push(Action::Stack(b, c));
            }
        }
        out.retain(|&a| self.can(a));
        out
    }

    /// The command text of an action.
    pub fn command(&self, a: Action) -> String {
        match a {
            Action::PickUp(b) => format!("pick up {}", self.name(b)),
            Action::Unstack(b, c) => {
                format!("unstack {} from on top of {}", self.name(b), self.name(c))
            }
            Action::PutDown(b) => format!("put down {}", self.name(b)),
            Action::Stack(b, c) => format!("stack {} on top of {}", self.name(b), self.name(c)),
        }
    }

    /// The commands that do something now.
    pub fn admissible(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .actions()
            .into_iter()
            .map(|a| self.command(a))
            .collect();
        out.push("look".into());
        out.push("inventory".into());
        out
    }

    /// How many goal facts hold.
    pub fn satisfied(&self) -> usize {
        self.goal
            .iter()
            .filter(|&&(a, b)| self.pos[a as usize] == Pos::On(b))
            .count()
    }

    /// Every goal fact holds.
    pub fn won(&self) -> bool {
        self.satisfied() == self.goal.len()
    }

    /// The state in PlanBench's words: clear blocks, the hand, then where each block is.
    pub fn describe(&self) -> String {
        let mut facts = Vec::new();
        for b in 0..self.n() {
            if self.clear(b) {
                facts.push(format!("{} is clear", self.name(b)));
            }
        }
        match self.held() {
            Some(b) => facts.push(format!("the hand is holding {}", self.name(b))),
            None => facts.push("the hand is empty".into()),
        }
        for b in 0..self.n() {
            match self.pos[b as usize] {
                Pos::Table => facts.push(format!("{} is on the table", self.name(b))),
                Pos::On(c) => facts.push(format!("{} is on top of {}", self.name(b), self.name(c))),
                Pos::Held => {}
            }
        }
        join_and(&facts)
    }

    /// The goal in PlanBench's words, e.g. `have that the red block is on top of the blue block`.
    pub fn goal_text(&self) -> String {
        let facts: Vec<String> = self
            .goal
            .iter()
            .map(|&(a, b)| format!("{} is on top of {}", self.name(a), self.name(b)))
            .collect();
        format!("have that {}", join_and(&facts))
    }

    /// The first observation.
    pub fn intro(&self) -> String {
        format!(
            "You are at a table with {} blocks. As initial conditions I have that, {}.",
            self.n(),
            self.describe()
        )
    }

    fn block(&self, colour: &str) -> Option<u8> {
        self.colours
            .iter()
            .position(|c| *c == colour)
            .map(|i| i as u8)
    }

    /// Reads a command in PlanBench's phrasing or a terse one (`stack red on blue`).
    pub fn parse(&self, command: &str) -> Option<Parsed> {
        let lower = command.trim().trim_end_matches('.').to_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        let (verb, rest) = match words.as_slice() {
            ["look"] => return Some(Parsed::Look),
            ["inventory"] | ["inv"] => return Some(Parsed::Inventory),
            ["pick", "up", rest @ ..] | ["pickup", rest @ ..] => ("pick-up", rest),
            ["put", "down", rest @ ..] | ["putdown", rest @ ..] => ("put-down", rest),
            ["unstack", rest @ ..] => ("unstack", rest),
            ["stack", rest @ ..] => ("stack", rest),
            _ => return None,
        };
        const FILLER: [&str; 8] = ["the", "block", "from", "on", "top", "of", "onto", "a"];
        let blocks: Vec<u8> = rest
            .iter()
            .filter(|w| !FILLER.contains(w))
            .map(|w| self.block(w))
            .collect::<Option<_>>()?;
        let action = match (verb, blocks.as_slice()) {
            ("pick-up", &[b]) => Action::PickUp(b),
            ("put-down", &[b]) => Action::PutDown(b),
            ("unstack", &[b, c]) => Action::Unstack(b, c),
            ("stack", &[b, c]) => Action::Stack(b, c),
            _ => return None,
        };
        Some(Parsed::Act(action))
    }

    /// Carries out a command and answers in the world's words.
    pub fn act(&mut self, command: &str) -> String {
        match self.parse(command) {
            Some(Parsed::Look) => format!("You see that {}.", self.describe()),
            Some(Parsed::Inventory) => match self.held() {
                Some(b) => format!("You are holding {}.", self.name(b)),
                None => "Your hand is empty.".into(),
            },
            Some(Parsed::Act(a)) if self.can(a) => {
                self.apply(a);
                let mut said = self.command(a);
                said.insert_str(0, "You ");
                said.push('.');
                said
            }
            _ => NOTHING.into(),
        }
    }

    /// A key that identifies the state: each block's position in 8 bits.
    fn key(&self) -> u64 {
        self.pos.iter().enumerate().fold(0, |k, (i, p)| {
            let v: u64 = match p {
                Pos::Table => 0xff,
                Pos::Held => 0xfe,
                Pos::On(c) => u64::from(*c),
            };
            k | (v << (8 * i))
        })
    }
}

/// A command as the world understood it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Describe the state.
    Look,
    /// Say what the hand holds.
    Inventory,
    /// Move a block.
    Act(Action),
}

fn join_and(facts: &[String]) -> String {
    let mut out = String::new();
    for (i, f) in facts.iter().enumerate() {
        if i > 0 {
            out.push_str(if i + 1 == facts.len() { " and " } else { ", " });
        }
        let _ = write!(out, "{f}");
    }
    out
}

/// The shortest plan from `world` to its goal, by breadth-first search over states; `None` when
/// no plan of at most `limit` actions exists.
pub fn solve(world: &World, limit: usize) -> Option<Vec<String>> {
    let mut parent: HashMap<u64, (u64, Action, usize)> = HashMap::new();
    let start = world.key();
    let mut queue = VecDeque::from([(world.clone(), 0usize)]);
    parent.insert(start, (start, Action::PutDown(0), 0));
    while let Some((w, depth)) = queue.pop_front() {
        if w.won() {
            let mut plan = Vec::new();
            let mut key = w.key();
            while key != start {
                let (prev, a, _) = parent[&key];
                plan.push(a);
                key = prev;
            }
            plan.reverse();
            return Some(plan.into_iter().map(|a| world.command(a)).collect());
        }
        if depth == limit {
            continue;
        }
        for a in w.actions() {
            let mut next = w.clone();
            next.apply(a);
            let k = next.key();
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(k) {
                e.insert((w.key(), a, depth + 1));
                queue.push_back((next, depth + 1));
            }
        }
    }
    None
}

/// A generated task.
#[derive(Debug, Clone)]
pub struct Task {
    /// The task's name.
    pub name: TaskRef,
    /// The world at the start.
    pub world: World,
    /// The goal as stated to the agent.
    pub goal: String,
    /// The expert's shortest plan.
    pub plan: Vec<String>,
}

/// Generates the task a name stands for.
pub fn generate(task: &TaskRef) -> Result<Task, Error> {
    let mut rng = task_rng(task, SUITE)?;
    let test = task.split == Split::Test;
    for _ in 0..ATTEMPTS {
        let world = try_world(&mut rng, test);
        if world.won() {
            continue;
        }
        if let Some(plan) = solve(&world, STEP_LIMIT as usize) {
            return Ok(Task {
                name: task.clone(),
                goal: world.goal_text(),
                world,
                plan,
            });
        }
    }
    Err(Error::Generation {
        task: task.clone(),
        attempts: ATTEMPTS,
    })
}

/// Random stacks of `n` blocks: a shuffled order cut into towers.
fn arrangement(rng: &mut ChaCha8Rng, n: u8) -> Vec<Pos> {
    let mut order: Vec<u8> = (0..n).collect();
    order.shuffle(rng);
    let mut pos = vec![Pos::Table; n as usize];
    for w in order.windows(2) {
        // Each block starts a new tower or goes on the previous one.
        if rng.random_bool(0.6) {
            pos[w[1] as usize] = Pos::On(w[0]);
        }
    }
    pos
}

fn try_world(rng: &mut ChaCha8Rng, test: bool) -> World {
    let n: u8 = if test {
        rng.random_range(4..=MAX_BLOCKS as u8)
    } else {
        rng.random_range(3..=5)
    };
    let mut colours: Vec<&'static str> = Vec::new();
    if test {
        // At least one, at most three colours the search never saw.
        let mut unseen = UNSEEN_COLOURS.to_vec();
        unseen.shuffle(rng);
        colours.extend(&unseen[..rng.random_range(1..=3)]);
    }
    let mut seen = SEEN_COLOURS.to_vec();
    seen.shuffle(rng);
    colours.extend(&seen[..n as usize - colours.len()]);
    colours.shuffle(rng);

    let pos = arrangement(rng, n);
    let target = arrangement(rng, n);
    let mut facts: Vec<(u8, u8)> = target
        .iter()
        .enumerate()
        .filter_map(|(a, p)| match p {
            Pos::On(b) => Some((a as u8, *b)),
            _ => None,
        })
        .collect();
    facts.shuffle(rng);
    if !facts.is_empty() {
        // PlanBench goals name some of the target's facts, not always all.
        facts.truncate(rng.random_range(1..=facts.len()));
    }
    facts.sort_unstable();
    World {
        colours,
        pos,
        goal: facts,
    }
}

/// The blocks suite as an [`Environment`].
pub type Blocks = Ruled<World>;

impl RuleWorld for World {
    const COMMANDS: &'static str = COMMANDS;
    const EXAMPLE: &'static str = "pick up the red block";
    const STEP_LIMIT: u32 = STEP_LIMIT;
    const NOTHING: &'static str = NOTHING;

    fn generate(task: &TaskRef) -> Result<(World, String), Error> {
        generate(task).map(|t| (t.world, t.goal))
    }

    fn intro(&self) -> String {
        World::intro(self)
    }

    fn act(&mut self, command: &str) -> String {
        World::act(self, command)
    }

    fn won(&self) -> bool {
        World::won(self)
    }

    fn progress(&self) -> f32 {
        self.satisfied() as f32 / self.goal.len().max(1) as f32
    }

    fn admissible(&self) -> Vec<String> {
        World::admissible(self)
    }

    /// Blocksworld has no places to go to; the hand holds at most one block; the state is every
    /// fact, as the first observation states them.
    fn view(&self) -> View {
        View {
            holding: self.held().map(|b| self.name(b)).into_iter().collect(),
            state: Some(self.describe()),
            ..View::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Environment;

    fn world() -> World {
        // red on blue; blue and orange on the table; goal: blue on red.
        World {
            colours: vec!["red", "blue", "orange"],
            pos: vec![Pos::On(1), Pos::Table, Pos::Table],
            goal: vec![(1, 0)],
        }
    }

    #[test]
    fn the_rules_hold() {
        let mut w = world();
        assert_eq!(w.act("pick up the blue block"), NOTHING, "red is on blue");
        assert_eq!(w.act("put down the red block"), NOTHING, "nothing held");
        assert_eq!(
            w.act("unstack the red block from on top of the blue block"),
            "You unstack the red block from on top of the blue block."
        );
        assert_eq!(w.act("inventory"), "You are holding the red block.");
        assert_eq!(w.act("pick up the orange block"), NOTHING, "hand is full");
        assert_eq!(w.act("stack red on red"), NOTHING);
        assert_eq!(
            w.act("Put down the red block."),
            "You put down the red block."
        );
        assert_eq!(w.act("pickup blue"), "You pick up the blue block.");
        assert!(!w.won());
        assert_eq!(
            w.act("stack blue onto red"),
            "You stack the blue block on top of the red block."
        );
        assert!(w.won());
        assert_eq!(w.act("unstack the green block from the red block"), NOTHING);
        assert_eq!(w.act(""), NOTHING);
    }

    #[test]
    fn states_read_like_planbench() {
        assert_eq!(
            world().describe(),
            "the red block is clear, the orange block is clear, the hand is empty, the red block \
             is on top of the blue block, the blue block is on the table and the orange block is \
             on the table"
        );
        assert_eq!(
            world().goal_text(),
            "have that the blue block is on top of the red block"
        );
    }

    #[test]
    fn the_expert_finds_the_shortest_plan() {
        let plan = solve(&world(), 40).expect("solvable");
        assert_eq!(
            plan,
            [
                "unstack the red block from on top of the blue block",
                "put down the red block",
                "pick up the blue block",
                "stack the blue block on top of the red block",
            ]
        );
        assert_eq!(solve(&world(), 3), None, "no plan within three steps");
    }

    #[test]
    fn the_environment_scores_partial_progress_and_states_how_things_stand() {
        let mut env = Blocks::new();
        let t = TaskRef {
            suite: SUITE.into(),
            split: Split::Train,
            seed: 7,
        };
        let intro = env.reset(&t).expect("resets").observation;
        let state = |env: &mut Blocks| env.view().expect("a view").state.expect("a state");
        // The view states every fact, as the first observation does, and follows the world.
        assert!(intro.ends_with(&format!("{}.", state(&mut env))), "{intro}");
        let plan = generate(&t).expect("generates").plan;
        let mut last = None;
        for cmd in &plan {
            let before = state(&mut env);
            let s = env.step(cmd).expect("steps");
            assert!(s.score.is_some_and(|x| (0.0..=1.0).contains(&x)));
            let now = state(&mut env);
            assert_ne!(before, now, "{cmd} changes the state");
            assert_eq!(Some(now), env.world().map(World::describe));
            last = Some(s);
        }
        let last = last.expect("plans are not empty");
        assert!(last.won && last.done);
        assert_eq!(last.score, Some(1.0));
    }
}
