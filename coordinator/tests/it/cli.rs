use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn hx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hx"))
        .args(args)
        .current_dir(root())
        .env_remove("HX_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("hx runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shipped_configs_check_out() {
    let out = hx(&[
        "config",
        "check",
        "configs/quickstart.toml",
        "configs/household.toml",
        "configs/cluster.toml",
        "configs/blocks.toml",
        "configs/alfworld.toml",
        "configs/scienceworld.toml",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 6, "{stdout}");
    assert!(stdout.contains(
        "configs/quickstart.toml: ok (run quickstart, 1 seed harness, 1 comparison arm)"
    ));
    assert!(
        stdout.contains("configs/blocks.toml: ok (run blocks, 1 seed harness, 2 comparison arms)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "configs/alfworld.toml: ok (run alfworld, 1 seed harness, 2 comparison arms)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "configs/scienceworld.toml: ok (run scienceworld, 1 seed harness, 2 comparison arms)"
        ),
        "{stdout}"
    );

    let out = hx(&["config", "check", "--worker", "configs/worker.toml"]);
    assert!(out.status.success(), "{}", text(&out).1);
}

#[test]
fn a_bad_config_fails_naming_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[run]\nname = \"x\"\n[budget]\nepisode-steps = 0\n").expect("write");
    let out = hx(&["config", "check", path.to_str().expect("utf-8")]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(
        stderr.contains("budget.episode-steps: must be between 1 and 1000 (got 0)"),
        "{stderr}"
    );
}

#[test]
fn a_missing_seed_harness_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("exp.toml");
    std::fs::write(
        &path,
        "[run]\nname = \"x\"\n[population]\nseeds = [\"nope.toml\"]\n",
    )
    .expect("write");
    let out = hx(&["config", "check", path.to_str().expect("utf-8")]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("population.seeds") && stderr.contains("nope.toml"),
        "{stderr}"
    );
}

#[test]
fn show_applies_env_then_set_overrides() {
    let out = Command::new(env!("CARGO_BIN_EXE_hx"))
        .args(["config", "show", "--json", "--set", "budget.evaluations=7"])
        .current_dir(root())
        .env("HX_CONFIG", "configs/quickstart.toml")
        .env("HX__POPULATION__SIZE", "5")
        .env("HX__BUDGET__EVALUATIONS", "99")
        .output()
        .expect("hx runs");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(v["population"]["size"], 5);
    assert_eq!(v["budget"]["evaluations"], 7);
    assert_eq!(v["run"]["name"], "quickstart");
}

#[test]
fn harness_show_and_check_agree_on_the_id() {
    let out = hx(&[
        "harness",
        "check",
        "--json",
        "configs/harnesses/strong.toml",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    let id = v["id"].as_str().expect("id").to_owned();

    // The canonical JSON form, written out and checked again, has the same id.
    let out = hx(&[
        "harness",
        "show",
        "-f",
        "json",
        "configs/harnesses/strong.toml",
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("copy.json");
    std::fs::write(&copy, &out.stdout).expect("write");
    let out = hx(&["harness", "check", copy.to_str().expect("utf-8")]);
    assert!(text(&out).0.contains(&id), "{:?}", text(&out));

    let out = hx(&[
        "harness",
        "show",
        "-f",
        "dot",
        "configs/harnesses/react.toml",
    ]);
    let (dot, _) = text(&out);
    assert!(dot.starts_with("digraph harness {") && dot.contains("\"history\" -> \"act\""));
}

#[test]
fn merging_two_harnesses_with_different_selectors_is_a_conflict() {
    let out = hx(&[
        "harness",
        "merge",
        "configs/harnesses/react.toml",
        "configs/harnesses/strong.toml",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("duplicate singleton"), "{stderr}");
}

#[test]
fn usage_errors_exit_2_and_help_teaches() {
    assert_eq!(hx(&["no-such-command"]).status.code(), Some(2));
    let out = hx(&["--help"]);
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(
        stdout.contains("harness") && stdout.contains("config"),
        "{stdout}"
    );
}

#[test]
fn tasks_check_surveys_a_split() {
    let out = hx(&[
        "tasks", "check", "--suite", "blocks", "--split", "test", "--count", "40", "--json",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["expert"]["solved"], 40);
    assert_eq!(v["random"]["won"]["trials"], 40);
    assert!(v["random"]["won"]["high"].as_f64().expect("a number") <= 1.0);
}

#[test]
fn tasks_check_drives_an_external_adapter() {
    let out = hx(&[
        "tasks",
        "check",
        "--suite",
        "vault",
        "--count",
        "10",
        "--adapter",
        "python3 worker/adapters/vault.py",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("vault/train, seeds 0..10"), "{stdout}");
    assert!(stdout.contains("random admissible agent: won"), "{stdout}");
    // The adapter's walkthroughs are the suite's expert, replayed in the game.
    assert!(stdout.contains("expert:  solved 10/10"), "{stdout}");
    assert!(stdout.contains("env steps/s"), "{stdout}");

    let out = hx(&[
        "tasks",
        "check",
        "--suite",
        "vault",
        "--count",
        "3",
        "--adapter",
        "python3 worker/adapters/vault.py --crash-at-step 2",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("exited during step"), "{stderr}");
}

#[test]
fn tasks_show_plays_the_expert_plan() {
    let out = hx(&["tasks", "show", "household/test/7"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("You are in the middle of a room."),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("Won: true."), "{stdout}");

    let out = hx(&["tasks", "show", "chess/train/1"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("unknown suite \"chess\""), "{stderr}");
}

/// SIGTERM stops `hx evolve` between results: exit status 130, a message naming `--resume`,
/// the status saying so, and nothing recorded lost: the same command with `--resume` goes on
/// from the episodes recorded and finishes. A real run (the embedded model, local workers).
#[test]
fn evolve_stops_when_asked_and_resumes() {
    use std::io::Read as _;
    use std::time::{Duration, Instant};
    hx_model::fetch::ensure_default(&mut |m| eprintln!("{m}"))
        .unwrap_or_else(|e| panic!("the model is needed for this test: {e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::tiny_config(dir.path(), "stop", 5, 2, "kind = \"local\"\nworkers = 2");
    let toml = std::fs::read_to_string(&config).expect("reads");
    std::fs::write(
        &config,
        toml.replace("evaluations = 6", "evaluations = 400"),
    )
    .expect("writes");
    let store = dir.path().join("store");
    let config = config.to_str().expect("utf-8");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hx"))
        .args(["evolve", "--config", config])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("hx starts");
    // Asked once a first result is recorded.
    let start = Instant::now();
    let heard = loop {
        if let Ok(st) = hx_coordinator::search::read_status(&store)
            && st.evaluations >= 1
        {
            break st.evaluations;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no result within 5 minutes"
        );
        assert!(child.try_wait().expect("waits").is_none(), "hx ended early");
        std::thread::sleep(Duration::from_millis(100));
    };
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let start = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().expect("waits") {
            break s.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "hx did not stop within a minute of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .expect("reads");
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        stderr.contains("asked to stop") && stderr.contains("--resume"),
        "{stderr}"
    );
    let st = hx_coordinator::search::read_status(&store).expect("a status");
    assert_eq!(st.phase, "stopped", "{stderr}");
    assert!(st.evaluations >= heard, "{} < {heard}", st.evaluations);
    // Resumed with a budget a few episodes past what was recorded, to end soon.
    let budget = format!("budget.evaluations={}", st.evaluations + 4);
    let out = Command::new(env!("CARGO_BIN_EXE_hx"))
        .args(["evolve", "--config", config, "--resume", "--set", &budget])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("hx runs");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("done"), "{stdout}");
    let done = hx_coordinator::search::read_status(&store).expect("a status");
    assert_eq!(done.phase, "done");
    assert!(done.evaluations >= st.evaluations);
}

/// `scripts/reuse-episodes` carries a harness's episodes of one split into a stopped run and
/// leaves out only the pending jobs whose every task it then holds: a pending job of the same
/// harness on another split, or on seeds not carried, still goes out when the run resumes.
#[test]
fn reuse_episodes_leaves_out_only_pending_jobs_it_covers() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let h = "b5881e743a7add4a2521d6f430b1d69a";
    let eval = |split: &str, seed: u64| {
        let name = format!("blocks/{split}/{seed}");
        let key: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        format!(
            r#"{{"tree":"evaluations","key":"{h}{key}","value":{{"task":{{"suite":"blocks","split":"{split}","seed":{seed}}},"won":false,"score":0.5,"steps":3,"tokens":100,"wall_ms":1}}}}"#
        )
    };
    let job = |id: u64, split: &str, seeds: &str| {
        format!(
            r#"{{"tree":"jobs","key":"{id:016x}","value":{{"id":{id},"kind":{{"harness":"{h}","kind":"evaluate"}},"state":{{"state":"pending"}},"tasks":{{"suite":"blocks","split":"{split}","seeds":[{seeds}]}}}}}}"#
        )
    };
    let run = [
        eval("validation", 0),
        job(1, "validation", "1, 2"),
        job(2, "test", "0, 1"),
        job(3, "test", "1, 5"),
    ]
    .join("\n");
    let source = [eval("test", 0), eval("test", 1), eval("validation", 1)].join("\n");
    std::fs::write(dir.path().join("run.jsonl"), run + "\n").expect("writes");
    std::fs::write(dir.path().join("source.jsonl"), source + "\n").expect("writes");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/reuse-episodes");
    let out = Command::new("python3")
        .arg(&script)
        .args(["run.jsonl", "source.jsonl", "merged.jsonl"])
        .args(["--harness", &h[..12], "--split", "test", "--below", "4"])
        .arg("--unchecked")
        .current_dir(dir.path())
        .output()
        .expect("python3 runs the script");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("carried 2"), "{said}");
    let merged = std::fs::read_to_string(dir.path().join("merged.jsonl")).expect("written");
    let pending: Vec<u64> = merged
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .filter(|v| v["tree"] == "jobs")
        .map(|v| v["value"]["id"].as_u64().expect("an id"))
        .collect();
    // Job 2 (test 0 and 1, both carried) is left out; job 1 (validation: not carried) and
    // job 3 (test 5: not carried) stay.
    assert_eq!(pending, [1, 3], "{merged}");
}
