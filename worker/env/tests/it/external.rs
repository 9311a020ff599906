//! External environments: hx drives the example adapter `worker/adapters/vault.py` as a real
//! child process, including adapters that crash, write garbage or hang.

use std::time::{Duration, Instant};

use hx_common::task::TaskRef;
use hx_env::external::{External, Options};
use hx_env::{Environment, Error};

fn vault(flags: &[&str]) -> External {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../adapters/vault.py");
    let mut command = vec!["python3".to_owned(), script.to_owned()];
    command.extend(flags.iter().map(|f| f.to_string()));
    let mut options = Options::new(command);
    options.timeout = Duration::from_secs(2);
    External::new(options)
}

fn task(name: &str) -> TaskRef {
    name.parse().expect("a task name")
}

/// Sweeps the row of rooms, doing whatever advances the goal when it can.
fn play(env: &mut External) -> Result<(bool, u32, f32), Error> {
    let mut east = true;
    let mut steps = 0;
    let mut score = 0.0;
    loop {
        let admissible = env.admissible_commands()?;
        let useful = ["take key", "unlock vault with key", "open vault"]
            .into_iter()
            .find(|c| admissible.iter().any(|a| a == c));
        let cmd = match useful {
            Some(c) => c,
            None => {
                let go = if east { "go east" } else { "go west" };
                if admissible.iter().any(|a| a == go) {
                    go
                } else {
                    east = !east;
                    continue;
                }
            }
        };
        let s = env.step(cmd)?;
        steps += 1;
        score = s.score.unwrap_or(score);
        // The adapter's view comes through: where the agent is, what it holds, how things
        // stand (what `look` would say, naming the room the agent is in).
        let v = env.view()?;
        assert!(
            v.at.as_ref().is_some_and(|at| v.places.contains(at)),
            "{v:?}"
        );
        let at = v.at.as_deref().unwrap_or_default();
        assert!(
            v.state
                .as_deref()
                .is_some_and(|s| s.starts_with(&format!("You are in {at} of "))),
            "{v:?}"
        );
        if cmd == "take key" {
            assert_eq!(v.holding, ["key"]);
        }
        if s.done {
            return Ok((s.won, steps, score));
        }
    }
}

#[test]
fn episodes_run_through_the_adapter() {
    let mut env = vault(&[]);
    for name in ["vault/train/1", "vault/train/2", "vault/test/1"] {
        let r = env.reset(&task(name)).expect("resets");
        assert!(
            r.observation.starts_with("You are in room"),
            "{}",
            r.observation
        );
        assert_eq!(r.goal, "open the vault.");
        // The world describes its own commands for prompts.
        assert!(
            r.commands.as_deref().is_some_and(|c| c.contains("unlock")),
            "{r:?}"
        );
        assert_eq!(r.example.as_deref(), Some("go east"));
        assert_eq!(env.step_limit(), 30, "the adapter sets the limit");
        let (won, steps, score) = play(&mut env).expect("plays");
        assert!(won, "{name}: won in {steps} steps");
        assert_eq!(score, 1.0);
    }
    // An unknown command is the world's business, not an error.
    env.reset(&task("vault/train/4")).expect("resets");
    let s = env.step("dance wildly").expect("steps");
    assert_eq!(s.observation, "Nothing happens.");
    assert!(s.invalid, "the adapter's invalid field comes through");
}

#[test]
fn an_adapter_error_is_reported_and_the_adapter_stays_usable() {
    let mut env = vault(&["--reject-seed", "13"]);
    let err = env
        .reset(&task("vault/validation/13"))
        .expect_err("the adapter cannot make this task");
    assert!(matches!(err, Error::Adapter { .. }), "{err}");
    assert!(err.to_string().contains("cannot make that task"), "{err}");
    let err = env.step("look").expect_err("no episode");
    assert!(matches!(err, Error::NotStarted), "{err}");
    env.reset(&task("vault/train/5")).expect("still usable");
}

#[test]
fn a_crash_mid_episode_is_an_error_naming_the_adapter_and_its_stderr() {
    let mut env = vault(&["--crash-at-step", "2"]);
    env.reset(&task("vault/train/1")).expect("resets");
    env.step("look").expect("first step works");
    let err = env.step("look").expect_err("the adapter dies");
    let text = err.to_string();
    assert!(matches!(err, Error::Exited { .. }), "{text}");
    assert!(text.contains("vault.py"), "{text}");
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(text.contains("simulated crash"), "{text}");
    assert!(matches!(env.step("look"), Err(Error::NotStarted)));
    // The next reset starts a fresh adapter.
    env.reset(&task("vault/train/1")).expect("restarts");
    env.step("look").expect("steps again");
}

#[test]
fn garbage_on_stdout_is_a_protocol_error() {
    let mut env = vault(&["--garbage-at-step", "1"]);
    env.reset(&task("vault/train/1")).expect("resets");
    let err = env.step("look").expect_err("garbage");
    let text = err.to_string();
    assert!(matches!(err, Error::Protocol { .. }), "{text}");
    assert!(text.contains("Traceback"), "{text}");
    assert!(text.contains("not JSON"), "{text}");
    env.reset(&task("vault/train/1")).expect("restarts");
}

#[test]
fn a_hung_adapter_times_out_and_is_killed() {
    let mut env = vault(&["--hang-at-step", "1"]);
    env.reset(&task("vault/train/1")).expect("resets");
    let start = Instant::now();
    let err = env.step("look").expect_err("hangs");
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_missing_program_is_a_spawn_error() {
    let mut env = External::new(Options::new(vec!["/nonexistent/adapter".into()]));
    let err = env
        .reset(&task("vault/train/1"))
        .expect_err("no such program");
    assert!(matches!(err, Error::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/adapter"), "{err}");
}

#[test]
fn the_adapter_names_train_tasks_for_worked_examples() {
    let mut env = vault(&[]);
    // Asked before any reset: naming tasks needs no episode.
    let named = env
        .exemplar_tasks(&task("vault/test/3"), 2, true)
        .expect("named");
    assert_eq!(named, vec![task("vault/train/21"), task("vault/train/22")]);
    assert_eq!(
        env.exemplar_tasks(&task("vault/test/3"), 2, true)
            .expect("named"),
        named,
        "the same ones every time"
    );
    // They are real train tasks with walkthroughs, and the adapter goes on serving episodes.
    let r = env.reset(&named[0]).expect("resets");
    assert!(r.walkthrough.is_some_and(|w| !w.is_empty()));
    env.reset(&task("vault/test/3")).expect("resets");
}

#[test]
fn an_example_named_outside_the_train_split_is_refused() {
    let mut env = vault(&["--exemplars-from", "test"]);
    let err = env
        .exemplar_tasks(&task("vault/validation/3"), 1, true)
        .expect_err("a test task may never become an example");
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("exemplars") && msg.contains("vault/train"),
        "{msg}"
    );
    // The faulty process is gone; the next episode starts a fresh one.
    env.reset(&task("vault/train/1")).expect("resets");
}

#[test]
fn shipped_adapters_ignore_modules_in_the_working_directory() {
    // `python3 -c` puts the working directory first on the module path: a stray `json.py` or
    // `inspect.py` there once broke ScienceWorld's resets with an IndexError from that file.
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    for module in ["json", "inspect", "re"] {
        std::fs::write(
            dir.path().join(format!("{module}.py")),
            "raise RuntimeError('the working directory was searched')\n",
        )
        .expect("writes");
    }
    for suite in ["alfworld", "scienceworld"] {
        let a = hx_env::shipped_adapter(suite).expect("shipped");
        let mut child = std::process::Command::new(&a.command[0])
            .args(&a.command[1..])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut stdin = child.stdin.take().expect("stdin");
        // Answered before any benchmark package loads, so this needs only Python.
        writeln!(stdin, r#"{{"op":"step","command":"look"}}"#).expect("writes");
        drop(stdin);
        let out = child.wait_with_output().expect("exits");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("step before reset"),
            "{suite}: {stdout} / {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
