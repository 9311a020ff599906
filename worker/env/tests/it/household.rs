//! The household suite: every generated task is solvable, splits keep the test set unseen, and
//! no command string can break a world.

use std::collections::BTreeMap;

use hx_common::task::{Split, TaskRef};
use hx_env::household::catalog::ROOMS;
use hx_env::household::world::{Loc, World};
use hx_env::household::{self, Household, TaskType};
use hx_env::{Environment, Error};
use proptest::prelude::*;

fn task(split: Split, seed: u64) -> TaskRef {
    TaskRef {
        suite: household::SUITE.into(),
        split,
        seed,
    }
}

/// The expert's plans win in the real environment, for 500 tasks in every split.
#[test]
fn the_expert_solves_every_generated_task() {
    for split in [Split::Train, Split::Validation, Split::Test] {
        let mut lengths = Vec::new();
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for seed in 0..500 {
            let t = household::generate(&task(split, seed))
                .unwrap_or_else(|e| panic!("{split}/{seed}: {e}"));
            let mut env = Household::new();
            env.reset(&t.name).expect("resets");
            let mut won = false;
            for cmd in &t.plan {
                let s = env.step(cmd).expect("steps");
                won = s.won;
            }
            assert!(
                won,
                "{}: the expert's plan {:?} does not win",
                t.name, t.plan
            );
            lengths.push(t.plan.len());
            *kinds.entry(format!("{:?}", t.kind)).or_default() += 1;
        }
        let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
        eprintln!("{split}: 500/500 solved, mean plan length {mean:.2}, types {kinds:?}");
        assert_eq!(
            kinds.len(),
            TaskType::ALL.len(),
            "{split}: every type appears"
        );
    }
}

/// Train and validation never contain what test holds out; test goals are always unseen kinds
/// in test-only layouts.
#[test]
fn the_test_split_is_unseen() {
    let unseen = |room: &str, kind: &str| {
        ROOMS
            .iter()
            .find(|r| r.name == room)
            .and_then(|r| r.objects.iter().find(|o| o.name == kind))
            .is_some_and(|o| o.unseen)
    };
    let goal_kind = |w: &World| match &w.goal {
        household::world::Goal::Place { object, .. } => *object,
        household::world::Goal::Examine { object } => *object,
    };
    for seed in 0..300 {
        for split in [Split::Train, Split::Validation, Split::Heldout] {
            let t = household::generate(&task(split, seed)).expect("generates");
            for o in &t.world.objects {
                assert!(!unseen(t.world.room, o.kind.name), "{}: {}", t.name, o.name);
            }
        }
        let t = household::generate(&task(Split::Test, seed)).expect("generates");
        assert!(
            unseen(t.world.room, goal_kind(&t.world)),
            "{}: {}",
            t.name,
            t.goal
        );
    }
    // Different splits with the same seed are different worlds.
    let a = household::generate(&task(Split::Train, 3)).expect("train");
    let b = household::generate(&task(Split::Validation, 3)).expect("validation");
    assert_ne!(a.world.intro() + &a.goal, b.world.intro() + &b.goal);
    let c = household::generate(&task(Split::Heldout, 3)).expect("heldout");
    assert_ne!(a.world.intro() + &a.goal, c.world.intro() + &c.goal);
}

fn consistent(w: &World, objects: usize) -> Result<(), String> {
    if w.objects.len() != objects {
        return Err(format!(
            "{} objects, started with {objects}",
            w.objects.len()
        ));
    }
    let held = w.objects.iter().filter(|o| o.loc == Loc::Held).count();
    if held > 1 {
        return Err(format!("{held} objects held at once"));
    }
    for o in &w.objects {
        if let Loc::In(r) = o.loc
            && r >= w.receptacles.len()
        {
            return Err(format!(
                "{} is in receptacle {r}, which does not exist",
                o.name
            ));
        }
    }
    if w.at.is_some_and(|r| r >= w.receptacles.len()) {
        return Err("the agent stands nowhere".into());
    }
    Ok(())
}

fn command() -> impl Strategy<Value = (usize, String)> {
    (
        any::<usize>(),
        prop_oneof![
            Just(String::new()),
            "[a-z ]{0,30}",
            "\\PC{0,40}",
            "(go to|open|close|take|put|clean|heat|cool|use|examine) [a-z]{1,10} [0-9]{1,2}( (from|in|on|in/on|with) [a-z]{1,10} [0-9])?",
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random commands, mixed with admissible ones, never panic and never break the world:
    /// every object stays in exactly one place.
    #[test]
    fn random_commands_keep_the_world_consistent(
        seed in 0u64..10_000,
        split in prop_oneof![Just(Split::Train), Just(Split::Validation), Just(Split::Test)],
        commands in prop::collection::vec(command(), 1..80),
    ) {
        let mut env = Household::new();
        env.reset(&task(split, seed)).expect("resets");
        let objects = env.world().expect("reset").objects.len();
        for (pick, random) in commands {
            let admissible = env.admissible_commands().expect("built-in suites always answer");
            prop_assert!(!admissible.is_empty());
            // Half the time an admissible command, which must do something.
            let cmd = if pick % 2 == 0 { admissible[pick / 2 % admissible.len()].clone() } else { random };
            let before = env.world().expect("reset").clone();
            let s = env.step(&cmd).expect("any string is a command");
            if s.done { break; }
            if pick % 2 == 0 && !cmd.starts_with("look") && !cmd.starts_with("examine") && !cmd.starts_with("inventory") {
                prop_assert_ne!(&s.observation, "Nothing happens.", "admissible {:?} did nothing", cmd);
            }
            prop_assert_eq!(s.invalid, s.observation == "Nothing happens.");
            if s.observation == "Nothing happens." {
                let after = env.world().expect("reset");
                prop_assert_eq!(format!("{before:?}"), format!("{after:?}"), "{:?} changed the world but said nothing happened", cmd);
            }
            let w = env.world().expect("reset");
            prop_assert!(consistent(w, objects).is_ok(), "{:?}: {:?}", cmd, consistent(w, objects));
            let p = s.score.expect("household scores every step");
            prop_assert!((0.0..=1.0).contains(&p), "{:?}: progress {}", cmd, p);
            prop_assert_eq!(p == 1.0, s.won, "{:?}: progress {} but won {}", cmd, p, s.won);
        }
    }

    /// Progress is 0 at reset, never falls while the expert plays, and is 1 exactly when the
    /// expert's plan wins, for every task type.
    #[test]
    fn progress_runs_from_zero_to_one_along_the_experts_plan(
        seed in 0u64..100_000,
        split in prop_oneof![Just(Split::Train), Just(Split::Validation), Just(Split::Test)],
    ) {
        let t = household::generate(&task(split, seed)).expect("generates");
        let mut env = Household::new();
        env.reset(&t.name).expect("resets");
        prop_assert_eq!(env.world().expect("reset").progress(), 0.0);
        let mut last = 0.0;
        for (i, cmd) in t.plan.iter().enumerate() {
            let s = env.step(cmd).expect("steps");
            let p = s.score.expect("household scores every step");
            prop_assert!(p >= last, "{}: {:?} lowered progress {} -> {}", t.name, cmd, last, p);
            prop_assert_eq!(p == 1.0, i + 1 == t.plan.len(), "{}: {:?} progress {}", t.name, cmd, p);
            last = p;
        }
    }
}

/// The world's view names its receptacles, where the agent stands and what it holds, with
/// no parsing of observations.
#[test]
fn the_view_follows_the_world() {
    let t = household::generate(&task(Split::Train, 0)).expect("generates");
    let mut env = Household::new();
    env.reset(&t.name).expect("resets");
    let v = env.view().expect("a view");
    let w = env.world().expect("reset");
    assert_eq!(v.places.len(), w.receptacles.len());
    assert_eq!((v.at.as_deref(), v.holding.len()), (None, 0));
    for cmd in &t.plan {
        env.step(cmd).expect("steps");
        let v = env.view().expect("a view");
        let w = env.world().expect("reset");
        assert_eq!(v.at, w.at.map(|r| w.receptacles[r].name.clone()), "{cmd}");
        assert_eq!(
            v.holding,
            w.held()
                .map(|o| w.objects[o].name.clone())
                .into_iter()
                .collect::<Vec<_>>(),
            "{cmd}"
        );
        if let Some(place) = cmd.strip_prefix("go to ") {
            assert_eq!(v.at.as_deref(), Some(place));
        }
    }
}

/// Every task type gets partial credit before it is won: a run over seeds sees each type's
/// progress take at least three distinct values below 1 along the expert's plan.
#[test]
fn every_task_type_shows_progress_before_the_win() {
    let mut levels: BTreeMap<String, std::collections::BTreeSet<u32>> = BTreeMap::new();
    for seed in 0..300 {
        let t = household::generate(&task(Split::Train, seed)).expect("generates");
        let mut env = Household::new();
        env.reset(&t.name).expect("resets");
        let kind = format!("{:?}", t.kind);
        for cmd in &t.plan {
            let p = env.step(cmd).expect("steps").score.expect("scored");
            if p < 1.0 {
                levels
                    .entry(kind.clone())
                    .or_default()
                    .insert((p * 1000.0) as u32);
            }
        }
    }
    assert_eq!(levels.len(), TaskType::ALL.len(), "{levels:?}");
    for (kind, l) in &levels {
        assert!(l.len() >= 3, "{kind}: progress levels below 1: {l:?}");
    }
}

#[test]
fn a_seed_out_of_range_is_an_error() {
    let err = Household::new()
        .reset(&task(Split::Train, hx_env::MAX_SEED))
        .expect_err("too big");
    assert!(matches!(err, Error::SeedRange { .. }));
}
