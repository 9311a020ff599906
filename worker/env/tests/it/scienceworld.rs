//! ScienceWorld through the adapter hx ships (`worker/adapters/scienceworld_adapter.py`, run as
//! `python3 -c SCRIPT` by `hx_env::open("scienceworld", None)`), against the real
//! `scienceworld` package and its Java server. These tests are `#[ignore]`d, so a plain
//! `cargo test` reports them as not run; `scripts/test` installs what they need and runs them.

use hx_common::task::TaskRef;
use hx_env::{Environment, Error};

fn task(name: &str) -> TaskRef {
    name.parse().expect("a task name")
}

fn scienceworld() -> Box<dyn Environment> {
    hx_env::open("scienceworld", None).expect("hx ships a ScienceWorld adapter")
}

/// Replays a variation's gold path (sent with the reset as the walkthrough) and checks that it
/// wins with score 1, the score never falling on the way. ScienceWorld's gold paths may go on
/// a few steps past the win (measurements after the goal holds); the episode ends at the win.
fn gold_path_wins(env: &mut dyn Environment, name: &str) -> usize {
    let r = env.reset(&task(name)).expect("resets");
    assert!(r.goal.starts_with("Your task is to"), "{r:?}");
    assert!(r.observation.contains("This room is called"), "{r:?}");
    assert!(
        r.commands
            .as_deref()
            .is_some_and(|c| c.contains("focus on OBJ")),
        "{r:?}"
    );
    let plan = r.walkthrough.expect("the gold path");
    assert!(
        !plan.is_empty() && !plan[0].starts_with("ERROR"),
        "{plan:?}"
    );
    let mut last = 0.0;
    for (i, cmd) in plan.iter().enumerate() {
        let s = env.step(cmd).expect("steps");
        let score = s.score.expect("ScienceWorld scores every step");
        assert!(score >= last, "{name}: step {i} {cmd:?} lowered the score");
        last = score;
        if s.done {
            assert!(s.won && score == 1.0, "{name}: ended without a win: {s:?}");
            return i + 1;
        }
    }
    panic!("{name}: the gold path ends at score {last} without winning");
}

#[test]
#[ignore = "needs ScienceWorld (pip install scienceworld) and a Java runtime; scripts/test provides both"]
fn gold_paths_win_through_the_shipped_adapter() {
    let mut env = scienceworld();
    // Seeds go round-robin over the 30 task types (sorted by name): test/0 is a variation of
    // `boil`, test/4 of `chemistry-mix-paint-tertiary-color`.
    gold_path_wins(env.as_mut(), "scienceworld/test/0");
    gold_path_wins(env.as_mut(), "scienceworld/test/4");
    // The same adapter process serves the next episode on another split.
    gold_path_wins(env.as_mut(), "scienceworld/train/30");
    let v = env.view().expect("a view");
    assert!(v.at.is_some() && !v.places.is_empty(), "{v:?}");
    // The state is ScienceWorld's own `look around`, naming the room the agent is in.
    let at = v.at.as_deref().unwrap_or_default();
    assert!(
        v.state
            .as_deref()
            .is_some_and(|s| s.starts_with(&format!("This room is called the {at}."))),
        "{v:?}"
    );
}

#[test]
#[ignore = "needs ScienceWorld (pip install scienceworld) and a Java runtime; scripts/test provides both"]
fn admissible_commands_and_the_worlds_own_answer_to_nonsense() {
    let mut env = scienceworld();
    env.reset(&task("scienceworld/validation/1"))
        .expect("resets");
    assert_eq!(
        env.step_limit(),
        100,
        "no limit sent: the shipped default applies"
    );
    let admissible = env.admissible_commands().expect("admissible");
    assert!(admissible.len() > 10, "{admissible:?}");
    // ScienceWorld words a third of its commands differently on each call; the adapter asks
    // once per state, so every reader of one step sees the same list.
    for _ in 0..3 {
        assert_eq!(env.admissible_commands().expect("admissible"), admissible);
    }
    assert!(
        admissible.iter().any(|c| c == "look around"),
        "{admissible:?}"
    );
    let s = env
        .step("dance with the lamp")
        .expect("any string is a command");
    assert_eq!(s.observation, "No known action matches that input.");
    assert!(s.invalid, "the adapter says the world did not carry it out");
    assert!(!s.done && !s.won && s.score == Some(0.0), "{s:?}");
    // An admissible command is understood.
    let s = env.step("look around").expect("steps");
    assert!(s.observation.contains("This room is called"), "{s:?}");
}

#[test]
#[ignore = "needs ScienceWorld (pip install scienceworld) and a Java runtime; scripts/test provides both"]
fn bad_tasks_are_the_adapters_errors_and_it_stays_usable() {
    let mut env = scienceworld();
    let err = env
        .reset(&task("scienceworld/heldout/0"))
        .expect_err("ScienceWorld has no heldout split");
    assert!(
        matches!(err, Error::Adapter { .. }) && err.to_string().contains("train, validation, test"),
        "{err}"
    );
    assert!(err.to_string().contains("python3 -c <script of"), "{err}");
    let err = env
        .reset(&task("scienceworld/test/5000"))
        .expect_err("the test split is smaller");
    assert!(err.to_string().contains("variations (seeds 0.."), "{err}");
    gold_path_wins(env.as_mut(), "scienceworld/test/1");
}

#[test]
#[ignore = "needs ScienceWorld (pip install scienceworld) and a Java runtime; scripts/test provides both"]
fn without_java_the_error_says_what_to_install() {
    // A PATH holding only python3: the adapter runs, ScienceWorld's Java server cannot.
    let dir = tempfile::tempdir().expect("tempdir");
    let python = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    let python = String::from_utf8(python.stdout).expect("a path");
    std::os::unix::fs::symlink(python.trim(), dir.path().join("python3")).expect("symlink");
    let mut a = hx_env::shipped_adapter("scienceworld").expect("shipped");
    let mut command = vec![
        "env".to_owned(),
        "-u".to_owned(),
        "JAVA_HOME".to_owned(),
        format!("PATH={}", dir.path().display()),
    ];
    command.append(&mut a.command);
    a.command = command;
    let mut env = hx_env::open("scienceworld", Some(&a)).expect("opens");
    let err = env
        .reset(&task("scienceworld/test/0"))
        .expect_err("no Java");
    let text = err.to_string();
    assert!(matches!(err, Error::Adapter { .. }), "{text}");
    assert!(text.contains("default-jre-headless"), "{text}");
}
