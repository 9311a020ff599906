//! ALFWorld through the adapter hx ships (`worker/adapters/alfworld_adapter.py`, run as
//! `python3 -c SCRIPT` by `hx_env::open("alfworld", None)`), against the real `alfworld` and
//! `textworld` packages and ALFWorld's own game files (`$ALFWORLD_DATA`, which `scripts/test`
//! fills from the shared data once). These tests are `#[ignore]`d, so a plain `cargo test`
//! reports them as not run; `scripts/test` installs what they need and runs them.

use hx_common::task::TaskRef;
use hx_env::{Environment, Error};

fn task(name: &str) -> TaskRef {
    name.parse().expect("a task name")
}

fn alfworld() -> Box<dyn Environment> {
    hx_env::open("alfworld", None).expect("hx ships an ALFWorld adapter")
}

/// Plays a game's own walkthrough (sent with the reset) and checks it wins, with the
/// observations and admissible commands in ReAct's form along the way.
fn walkthrough_wins(env: &mut dyn Environment, name: &str) -> usize {
    let r = env.reset(&task(name)).expect("resets");
    assert!(
        !r.observation.contains("Welcome to TextWorld"),
        "{}",
        r.observation
    );
    assert!(
        !r.goal.is_empty() && r.observation.contains(&r.goal),
        "{r:?}"
    );
    assert!(
        r.commands
            .as_deref()
            .is_some_and(|c| c.contains("put X in/on Y"))
    );
    let plan = r.walkthrough.expect("ALFWorld games ship a walkthrough");
    assert!(!plan.is_empty());
    assert!(
        plan.iter().all(|c| !c.starts_with("move ")),
        "shown in ReAct's form: {plan:?}"
    );
    for (i, cmd) in plan.iter().enumerate() {
        let admissible = env.admissible_commands().expect("admissible");
        assert!(
            admissible.contains(cmd),
            "{name}: step {i} {cmd:?} not in {admissible:?}"
        );
        assert!(
            admissible
                .iter()
                .all(|c| !c.starts_with("move ") && c != "help")
        );
        let s = env.step(cmd).expect("steps");
        assert!(!s.observation.contains("You move the"), "{}", s.observation);
        // Every step scores the goal's conditions met so far: 1 exactly when won.
        let score = s.score.expect("ALFWorld steps send a score");
        assert!(
            (0.0..=1.0).contains(&score),
            "{name}: step {i} score {score}"
        );
        assert_eq!(score == 1.0, s.won, "{name}: step {i} score {score}, {s:?}");
        if i + 1 == plan.len() {
            assert!(
                s.won && s.done,
                "{name}: the walkthrough ends without winning: {s:?}"
            );
        } else {
            assert!(
                !s.done,
                "{name}: over after {} of {} commands",
                i + 1,
                plan.len()
            );
        }
    }
    plan.len()
}

#[test]
#[ignore = "needs ALFWorld (pip install alfworld) and its games in $ALFWORLD_DATA; scripts/test provides both"]
fn walkthroughs_win_through_the_shipped_adapter() {
    let mut env = alfworld();
    // test/0 examines an object under a lamp; test/1 puts a mug on a desk (`put ... in/on`,
    // which the game files call `move ... to`).
    assert_eq!(walkthrough_wins(env.as_mut(), "alfworld/test/0"), 4);
    walkthrough_wins(env.as_mut(), "alfworld/test/1");
    // The same adapter process serves the next episode on another split.
    walkthrough_wins(env.as_mut(), "alfworld/train/0");
    // The view comes from the adapter: places to go, where the agent is, what it holds.
    let v = env.view().expect("a view");
    assert!(!v.places.is_empty() && v.at.is_some(), "{v:?}");
}

/// The scores a game's walkthrough earns step by step.
fn walkthrough_scores(env: &mut dyn Environment, name: &str) -> Vec<f32> {
    let r = env.reset(&task(name)).expect("resets");
    let plan = r.walkthrough.expect("a walkthrough");
    plan.iter()
        .map(|cmd| env.step(cmd).expect("steps").score.expect("a score"))
        .collect()
}

#[test]
#[ignore = "needs ALFWorld (pip install alfworld) and its games in $ALFWORLD_DATA; scripts/test provides both"]
fn the_score_counts_the_goals_conditions_brought_about() {
    let mut env = alfworld();
    // test/4 heats an object and places it: half once it is hot, all when placed.
    assert_eq!(
        walkthrough_scores(env.as_mut(), "alfworld/test/4"),
        [0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 1.0]
    );
    // test/0 examines an alarm clock under a desk lamp, which already stands in its place at
    // the start: a third each for the clock held, the agent at the lamp, the lamp on.
    let lamp = walkthrough_scores(env.as_mut(), "alfworld/test/0");
    let thirds = [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0];
    assert!(
        lamp.len() == 4 && lamp.iter().zip(thirds).all(|(a, b)| (a - b).abs() < 1e-6),
        "{lamp:?}"
    );
    // test/1 puts a mug on a desk: nothing to count before the mug is placed.
    assert_eq!(
        walkthrough_scores(env.as_mut(), "alfworld/test/1"),
        [0.0, 0.0, 0.0, 1.0]
    );
}

#[test]
#[ignore = "needs ALFWorld (pip install alfworld) and its games in $ALFWORLD_DATA; scripts/test provides both"]
fn commands_in_either_form_and_the_games_own_answer_to_nonsense() {
    let mut env = alfworld();
    env.reset(&task("alfworld/test/1")).expect("resets");
    let s = env
        .step("dance with the lamp")
        .expect("any string is a command");
    assert_eq!(s.observation, "Nothing happens.");
    assert!(s.invalid && !s.done);
    // test/1's walkthrough, with the game files' own `move X to Y` at the end.
    for cmd in ["go to shelf 2", "take mug 1 from shelf 2", "go to desk 2"] {
        assert!(!env.step(cmd).expect("steps").done);
    }
    let s = env.step("move mug 1 to desk 2").expect("steps");
    assert!(s.won, "{s:?}");
    assert_eq!(s.observation, "You put the mug 1 in/on the desk 2.");
}

#[test]
#[ignore = "needs ALFWorld (pip install alfworld) and its games in $ALFWORLD_DATA; scripts/test provides both"]
fn bad_tasks_are_the_adapters_errors_and_it_stays_usable() {
    let mut env = alfworld();
    let err = env
        .reset(&task("alfworld/test/134"))
        .expect_err("valid_unseen has 134 games");
    assert!(
        matches!(err, Error::Adapter { .. }) && err.to_string().contains("134 games"),
        "{err}"
    );
    // The program is named by its command line, the inline script by its size.
    assert!(err.to_string().contains("python3 -c <script of"), "{err}");
    walkthrough_wins(env.as_mut(), "alfworld/validation/0");
}

#[test]
#[ignore = "needs ALFWorld (pip install alfworld) and its games in $ALFWORLD_DATA; scripts/test provides both"]
fn missing_games_are_an_error_that_says_how_to_get_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = hx_env::shipped_adapter("alfworld").expect("shipped");
    let mut command = vec![
        "env".to_owned(),
        format!("ALFWORLD_DATA={}", dir.path().display()),
    ];
    command.append(&mut a.command);
    a.command = command;
    let mut env = hx_env::open("alfworld", Some(&a)).expect("opens");
    let err = env
        .reset(&task("alfworld/test/0"))
        .expect_err("no games there");
    let text = err.to_string();
    assert!(matches!(err, Error::Adapter { .. }), "{text}");
    assert!(
        text.contains("no ALFWorld games under") && text.contains("alfworld-download"),
        "{text}"
    );
}

#[test]
#[ignore = "needs ALFWorld (pip install alfworld) and its games in $ALFWORLD_DATA; scripts/test provides both"]
fn the_adapter_names_train_games_of_the_same_type_as_worked_examples() {
    let mut env = alfworld();
    // test/4 is a heat task (seeds go round-robin over the six types).
    let r = env.reset(&task("alfworld/test/4")).expect("resets");
    assert!(
        r.goal.contains("heat") || r.goal.contains("hot"),
        "{}",
        r.goal
    );
    let named = env
        .exemplar_tasks(&task("alfworld/test/4"), 2, true)
        .expect("named");
    assert_eq!(named.len(), 2);
    assert_eq!(
        env.exemplar_tasks(&task("alfworld/test/4"), 2, true)
            .expect("named"),
        named,
        "the same ones every time"
    );
    for t in &named {
        assert_eq!(t.split, hx_common::task::Split::Train, "{t}");
        let r = env.reset(t).expect("resets");
        assert!(
            r.goal.contains("heat") || r.goal.contains("hot"),
            "{t}: {}",
            r.goal
        );
        assert!(
            r.walkthrough
                .is_some_and(|w| w.iter().any(|c| c.starts_with("heat ")))
        );
    }
}
