//! The blocks suite: every generated task is solvable by the shortest plan, the test split holds
//! colours and sizes train never shows, and no command string can break a world.

use std::collections::BTreeSet;

use hx_common::task::{Split, TaskRef};
use hx_env::blocks::{self, Blocks, Pos, SEEN_COLOURS, UNSEEN_COLOURS, World};
use hx_env::{Environment, Error};
use proptest::prelude::*;

fn task(split: Split, seed: u64) -> TaskRef {
    TaskRef {
        suite: blocks::SUITE.into(),
        split,
        seed,
    }
}

/// The expert's plans win in the real environment, for 500 tasks in every split.
#[test]
fn the_expert_solves_every_generated_task() {
    for split in [Split::Train, Split::Validation, Split::Test] {
        let mut lengths = Vec::new();
        for seed in 0..500 {
            let t = blocks::generate(&task(split, seed))
                .unwrap_or_else(|e| panic!("{split}/{seed}: {e}"));
            let mut env = Blocks::new();
            env.reset(&t.name).expect("resets");
            let mut won = false;
            for cmd in &t.plan {
                let s = env.step(cmd).expect("steps");
                assert_ne!(s.observation, "Nothing happens.", "{}: {cmd}", t.name);
                assert!(!s.invalid, "{}: {cmd}", t.name);
                won = s.won;
            }
            assert!(won, "{}: the plan {:?} does not win", t.name, t.plan);
            // Shortest: no plan one step shorter exists.
            assert_eq!(
                blocks::solve(&t.world, t.plan.len() - 1),
                None,
                "{}",
                t.name
            );
            lengths.push(t.plan.len());
        }
        let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
        eprintln!("{split}: 500/500 solved, mean plan length {mean:.2}");
    }
}

#[test]
fn the_test_split_is_unseen() {
    let mut test_sizes = BTreeSet::new();
    for seed in 0..300 {
        for split in [Split::Train, Split::Validation, Split::Heldout] {
            let t = blocks::generate(&task(split, seed)).expect("generates");
            assert!(t.world.colours.len() <= 5, "{}", t.name);
            for c in &t.world.colours {
                assert!(SEEN_COLOURS.contains(c), "{}: {c}", t.name);
            }
        }
        let t = blocks::generate(&task(Split::Test, seed)).expect("generates");
        assert!(
            t.world.colours.iter().any(|c| UNSEEN_COLOURS.contains(c)),
            "{}: {:?}",
            t.name,
            t.world.colours
        );
        test_sizes.insert(t.world.colours.len());
    }
    assert!(test_sizes.contains(&6), "six-block worlds occur in test");
}

/// Each block is in one place, at most one block sits on another, at most one is held, and no
/// tower loops.
fn consistent(w: &World) -> Result<(), String> {
    let n = w.pos.len();
    if w.pos.iter().filter(|p| **p == Pos::Held).count() > 1 {
        return Err("two blocks held".into());
    }
    for b in 0..n {
        if w.pos.iter().filter(|p| **p == Pos::On(b as u8)).count() > 1 {
            return Err(format!("two blocks on block {b}"));
        }
        let mut at = b;
        for _ in 0..=n {
            match w.pos[at] {
                Pos::On(c) => at = c as usize,
                _ => break,
            }
            if at == b {
                return Err(format!("block {b} is under itself"));
            }
        }
    }
    Ok(())
}

fn command() -> impl Strategy<Value = String> {
    let colour = prop::sample::select(
        SEEN_COLOURS
            .iter()
            .chain(UNSEEN_COLOURS.iter())
            .copied()
            .collect::<Vec<_>>(),
    );
    prop_oneof![
        (colour.clone()).prop_map(|c| format!("pick up the {c} block")),
        (colour.clone()).prop_map(|c| format!("put down {c}")),
        (colour.clone(), colour.clone()).prop_map(|(a, b)| format!("stack {a} on {b}")),
        (colour.clone(), colour).prop_map(|(a, b)| format!("unstack the {a} block from {b}")),
        ".{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_commands_keep_the_world_consistent(
        seed in 0u64..10_000,
        split in prop_oneof![Just(Split::Train), Just(Split::Validation), Just(Split::Test)],
        commands in prop::collection::vec((any::<usize>(), command()), 1..60),
    ) {
        let mut env = Blocks::new();
        env.reset(&task(split, seed)).expect("resets");
        for (pick, random) in commands {
            let admissible = env.admissible_commands().expect("built-in suites always answer");
            let cmd = if pick % 2 == 0 { admissible[pick / 2 % admissible.len()].clone() } else { random };
            let before = env.world().expect("reset").clone();
            let s = env.step(&cmd).expect("any string is a command");
            let after = env.world().expect("reset");
            // The world says it did not act exactly when it answers so.
            prop_assert_eq!(s.invalid, s.observation == "Nothing happens.");
            if s.observation == "Nothing happens." {
                prop_assert_eq!(&before, after, "{:?} changed the world but said nothing happened", cmd);
            } else if pick % 2 == 0 {
                prop_assert!(!s.observation.is_empty());
            }
            prop_assert!(consistent(after).is_ok(), "{:?}: {:?}", cmd, consistent(after));
            let score = s.score.expect("blocks scores progress");
            prop_assert!((0.0..=1.0).contains(&score));
            prop_assert_eq!(s.won, score == 1.0);
            if s.done { break; }
        }
    }
}

#[test]
fn foreign_and_out_of_range_tasks_are_errors() {
    let mut t = task(Split::Train, 1);
    t.suite = "household".into();
    assert!(matches!(
        blocks::generate(&t),
        Err(Error::WrongSuite { .. })
    ));
    assert!(matches!(
        Blocks::new().reset(&task(Split::Test, hx_env::MAX_SEED)),
        Err(Error::SeedRange { .. })
    ));
    assert!(matches!(Blocks::new().step("look"), Err(Error::NotStarted)));
}
