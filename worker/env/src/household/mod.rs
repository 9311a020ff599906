//! The household suite: ALFWorld-style text worlds generated from seeds, with ALFWorld's
//! command vocabulary and six task types (pick and place; examine in light; clean, heat or cool
//! then place; pick two and place).
//!
//! A task `household/SPLIT/SEED` is generated from a seed space that is disjoint per split
//! (the split's index sits in the top byte). The test split draws from layout templates and
//! goal object kinds that train and validation never contain, as ALFWorld's valid_unseen does.
//! A generated task the expert cannot solve is rejected and the next world from the same seed
//! stream is tried.

pub mod catalog;
pub mod expert;
pub mod world;

use hx_common::task::{Split, TaskRef};
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;

use self::catalog::{LAMP_ON, ObjectKind, ROOMS, Room, Treatment};
use self::world::{Goal, Lamp, Loc, Object, Receptacle, World};
#[cfg(test)]
use super::MAX_SEED;
use super::ruled::{RuleWorld, Ruled};
use super::{Error, View, task_rng};

/// The suite's name in task names.
pub const SUITE: &str = "household";

/// Steps per episode at most, as in ALFWorld.
pub const STEP_LIMIT: u32 = 50;

const ATTEMPTS: u32 = 64;

/// The command forms, as ALFWorld's ReAct prompt states them.
pub const COMMANDS: &str = "go to X, open X, close X, take X from Y, put X in/on Y, clean X with \
     Y, heat X with Y, cool X with Y, use X, examine X, look, inventory";

/// The six task types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskType {
    /// Put an object in a receptacle.
    PickAndPlace,
    /// Hold an object under the desk lamp.
    ExamineInLight,
    /// Clean it, then put it somewhere.
    CleanThenPlace,
    /// Heat it, then put it somewhere.
    HeatThenPlace,
    /// Cool it, then put it somewhere.
    CoolThenPlace,
    /// Put two of a kind in one receptacle.
    PickTwoAndPlace,
}

impl TaskType {
    /// All six.
    pub const ALL: [TaskType; 6] = [
        TaskType::PickAndPlace,
        TaskType::ExamineInLight,
        TaskType::CleanThenPlace,
        TaskType::HeatThenPlace,
        TaskType::CoolThenPlace,
        TaskType::PickTwoAndPlace,
    ];

    fn treatment(self) -> Option<Treatment> {
        match self {
            TaskType::CleanThenPlace => Some(Treatment::Clean),
            TaskType::HeatThenPlace => Some(Treatment::Heat),
            TaskType::CoolThenPlace => Some(Treatment::Cool),
            _ => None,
        }
    }
}

/// A generated task: the world, its goal text, its type and the expert's plan.
#[derive(Debug, Clone)]
pub struct Task {
    /// The task's name.
    pub name: TaskRef,
    /// The task type.
    pub kind: TaskType,
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
        if let Some((kind, world, variant)) = try_world(&mut rng, test)
            && let Some(plan) = expert::solve(&world)
        {
            return Ok(Task {
                name: task.clone(),
                kind,
                goal: world.goal_text(variant),
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

/// Whether a kind may appear in a world of this split: unseen kinds only in test.
fn allowed(kind: &ObjectKind, test: bool) -> bool {
    test || !kind.unseen
}

fn try_world(rng: &mut ChaCha8Rng, test: bool) -> Option<(TaskType, World, usize)> {
    let kind = *TaskType::ALL.choose(rng)?;
    let treatment = kind.treatment();
    // Only rooms that can hold the task: a lamp to examine under, the appliance to use.
    let rooms: Vec<&Room> = ROOMS
        .iter()
        .filter(|r| kind != TaskType::ExamineInLight || r.lamp)
        .filter(|r| {
            treatment.is_none_or(|t| {
                r.layouts
                    .iter()
                    .flat_map(|l| l.iter())
                    .any(|(k, _, _)| catalog::receptacle(k).appliance == Some(t))
            })
        })
        .collect();
    let room: &Room = rooms.choose(rng)?;
    let layout = if test {
        room.layouts[room.layouts.len() - 1]
    } else {
        room.layouts[rng.random_range(0..room.layouts.len() - 1)]
    };

    let mut receptacles = Vec::new();
    for &(name, min, max) in layout {
        let k = catalog::receptacle(name);
        for i in 1..=rng.random_range(min..=max) {
            receptacles.push(Receptacle {
                kind: k,
                name: format!("{name} {i}"),
                open: !k.openable,
            });
        }
    }
    let present = |kind: &str| receptacles.iter().any(|r| r.kind.name == kind);
    let lamp_spots: Vec<usize> = (0..receptacles.len())
        .filter(|&r| LAMP_ON.contains(&receptacles[r].kind.name))
        .collect();
    let lamp = if room.lamp {
        lamp_spots.choose(rng).map(|&at| Lamp { at, on: false })
    } else {
        None
    };
    if kind == TaskType::ExamineInLight && lamp.is_none() {
        return None;
    }
    if let Some(t) = treatment
        && !receptacles.iter().any(|r| r.kind.appliance == Some(t))
    {
        return None;
    }

    // The goal object: in test, a kind the search never sees; elsewhere, a seen kind.
    let goal_kinds: Vec<&ObjectKind> = room
        .objects
        .iter()
        .filter(|o| o.unseen == test && o.portable)
        .filter(|o| treatment.is_none_or(|t| o.treatments.contains(&t)))
        .filter(|o| o.found.iter().filter(|k| present(k)).count() >= 2)
        .collect();
    let goal_kind = *goal_kinds.choose(rng)?;
    let goal = if kind == TaskType::ExamineInLight {
        Goal::Examine {
            object: goal_kind.name,
        }
    } else {
        let targets: Vec<&str> = goal_kind
            .found
            .iter()
            .copied()
            .filter(|k| present(k))
            .filter(|k| treatment.is_none_or(|t| catalog::receptacle(k).appliance != Some(t)))
            .collect();
        Goal::Place {
            object: goal_kind.name,
            target: targets.choose(rng)?,
            count: if kind == TaskType::PickTwoAndPlace {
                2
            } else {
                1
            },
            treatment,
        }
    };
    let target = match &goal {
        Goal::Place { target, .. } => Some(*target),
        Goal::Examine { .. } => None,
    };

    // Goal instances go anywhere plausible but the target; distractors anywhere plausible.
    let mut placed: Vec<(&'static ObjectKind, usize)> = Vec::new();
    let spots = |k: &ObjectKind, avoid: Option<&str>| -> Vec<usize> {
        (0..receptacles.len())
            .filter(|&r| k.found.contains(&receptacles[r].kind.name))
            .filter(|&r| Some(receptacles[r].kind.name) != avoid)
            .collect()
    };
    let needed = if kind == TaskType::PickTwoAndPlace {
        2
    } else {
        1
    };
    for _ in 0..needed + rng.random_range(0..=1) {
        placed.push((goal_kind, *spots(goal_kind, target).choose(rng)?));
    }
    let others: Vec<&'static ObjectKind> = room
        .objects
        .iter()
        .filter(|o| allowed(o, test) && o.name != goal_kind.name)
        .collect();
    for _ in 0..rng.random_range(6..=12) {
        let k = *others.choose(rng)?;
        if let Some(&r) = spots(k, None).choose(rng) {
            placed.push((k, r));
        }
    }
    placed.shuffle(rng);
    let mut counts: Vec<(&str, usize)> = Vec::new();
    let objects = placed
        .into_iter()
        .map(|(k, r)| {
            let n = match counts.iter_mut().find(|(name, _)| *name == k.name) {
                Some((_, c)) => {
                    *c += 1;
                    *c
                }
                None => {
                    counts.push((k.name, 1));
                    1
                }
            };
            Object {
                kind: k,
                name: format!("{} {n}", k.name),
                loc: Loc::In(r),
                clean: false,
                hot: false,
                cool: false,
                seen: false,
                taken: false,
            }
        })
        .collect();

    let world = World {
        room: room.name,
        receptacles,
        objects,
        lamp,
        at: None,
        goal,
    };
    if world.won() {
        return None;
    }
    Some((kind, world, rng.random_range(0..2)))
}

/// The household suite as an [`Environment`].
pub type Household = Ruled<World>;

impl RuleWorld for World {
    const COMMANDS: &'static str = COMMANDS;
    const EXAMPLE: &'static str = "go to cabinet 1";
    const STEP_LIMIT: u32 = STEP_LIMIT;
    const NOTHING: &'static str = world::NOTHING;

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
        World::progress(self)
    }

    fn admissible(&self) -> Vec<String> {
        World::admissible(self)
    }

    fn view(&self) -> View {
        View {
            places: self.receptacles.iter().map(|r| r.name.clone()).collect(),
            at: self.at.map(|r| self.receptacles[r].name.clone()),
            holding: self
                .held()
                .map(|o| self.objects[o].name.clone())
                .into_iter()
                .collect(),
            state: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Environment;

    fn task(split: Split, seed: u64) -> TaskRef {
        TaskRef {
            suite: SUITE.into(),
            split,
            seed,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_task() {
        let a = generate(&task(Split::Train, 5)).expect("generates");
        let b = generate(&task(Split::Train, 5)).expect("generates");
        assert_eq!(a.goal, b.goal);
        assert_eq!(a.world.intro(), b.world.intro());
        assert_eq!(a.plan, b.plan);
    }

    #[test]
    fn an_episode_reads_like_alfworld() {
        let mut env = Household::new();
        let r = env.reset(&task(Split::Train, 0)).expect("resets");
        assert!(
            r.observation
                .starts_with("You are in the middle of a room.")
        );
        let t = generate(&task(Split::Train, 0)).expect("generates");
        let mut last = None;
        for cmd in &t.plan {
            let s = env.step(cmd).expect("steps");
            assert_ne!(s.observation, "Nothing happens.", "{cmd}");
            last = Some(s);
        }
        assert!(last.expect("a plan has steps").won);
        assert_eq!(
            env.step("look").expect("steps").observation,
            "The episode is over."
        );
    }

    #[test]
    fn foreign_and_out_of_range_tasks_are_errors() {
        let mut t = task(Split::Train, 1);
        t.suite = "blocks".into();
        assert!(matches!(generate(&t), Err(Error::WrongSuite { .. })));
        assert!(matches!(
            generate(&task(Split::Test, MAX_SEED)),
            Err(Error::SeedRange { .. })
        ));
        assert!(matches!(
            Household::new().step("look"),
            Err(Error::NotStarted)
        ));
    }
}
