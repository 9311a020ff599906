//! Every file in configs/ parses and validates; bad keys and values are named in errors.

use std::path::{Path, PathBuf};

use hx_common::config::{Error, Experiment, WorkerOptions, parse_toml};
use hx_common::harness::format;

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("configs/ exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    out.sort();
    out
}

#[test]
fn every_shipped_config_is_valid() {
    let dir = configs_dir();
    let mut experiments = 0;
    for path in files(&dir) {
        let is_worker = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("worker"));
        if is_worker {
            WorkerOptions::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        let exp = Experiment::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
        for seed in exp.seed_paths(&path) {
            format::load(&seed).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        experiments += 1;
    }
    assert!(
        experiments >= 3,
        "quickstart, household and cluster at least"
    );
    let harnesses = files(&dir.join("harnesses"));
    assert!(harnesses.len() >= 2);
    for path in harnesses {
        format::load(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}

fn quickstart() -> String {
    std::fs::read_to_string(configs_dir().join("quickstart.toml")).expect("quickstart exists")
}

/// `text` with `from` replaced by `to`; fails if `from` is not there, so a test that edits the
/// shipped quickstart notices when the file changes under it.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the quickstart has no `{from}`");
    text.replace(from, to)
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let text = edit(&quickstart(), "tournament = 2", "tournamnet = 2");
    let err = parse_toml::<Experiment>(&text, "quickstart.toml", &[]).expect_err("unknown key");
    let msg = err.to_string();
    assert!(matches!(err, Error::Parse { .. }));
    assert!(msg.contains("tournamnet"), "{msg}");
    assert!(
        msg.contains("quickstart.toml") && msg.contains("line"),
        "{msg}"
    );
}

#[test]
fn an_out_of_range_value_is_named_with_its_key() {
    let text = edit(
        &quickstart(),
        "immigrant-rate = 0.05",
        "immigrant-rate = 1.5",
    );
    let exp: Experiment = parse_toml(&text, "quickstart.toml", &[]).expect("parses");
    let msg = exp
        .validate("quickstart.toml")
        .expect_err("out of range")
        .to_string();
    assert!(
        msg.contains("population.immigrant-rate: must be between 0 and 1 (got 1.5)"),
        "{msg}"
    );
}

#[test]
fn a_worker_file_with_a_bad_url_names_the_key() {
    let text = "nats = \"localhost:4222\"\n";
    let w: WorkerOptions = parse_toml(text, "w.toml", &[]).expect("parses");
    let msg = w.validate("w.toml").expect_err("no scheme").to_string();
    assert!(
        msg.contains("w.toml: nats: must start with nats://"),
        "{msg}"
    );
}

#[test]
fn a_proposer_section_is_read_and_checked() {
    let with = format!(
        "{}\n[proposer]\nproposals = 4\nmax-gates = 1\n\n[proposer.model]\nbackend = \"openai\"\nbase-url = \"http://127.0.0.1:8000/v1\"\nmodel = \"big\"\n",
        edit(
            &quickstart(),
            "operators = [\"parametric\"]",
            "operators = [\"parametric\", \"reflective\"]"
        )
    );
    let exp: Experiment = parse_toml(&with, "q.toml", &[]).expect("parses");
    exp.validate("q.toml").expect("valid");
    let p = exp.proposer.as_ref().expect("a proposer");
    assert_eq!((p.proposals, p.max_gates), (4, 1));
    assert!(matches!(
        p.model,
        Some(hx_common::config::ModelOptions::Openai { .. })
    ));
    // Without a backend line the proposer's model is the embedded one, like [model].
    let embedded = with.replace(
        "backend = \"openai\"\nbase-url = \"http://127.0.0.1:8000/v1\"\nmodel = \"big\"\n",
        "threads = 1\n",
    );
    let exp: Experiment = parse_toml(&embedded, "q.toml", &[]).expect("parses");
    assert!(matches!(
        exp.proposer.and_then(|p| p.model),
        Some(hx_common::config::ModelOptions::Embedded { threads: 1, .. })
    ));
    // Reflective needs a proposer; an unknown operator is named.
    let text = edit(
        &quickstart(),
        "operators = [\"parametric\"]",
        "operators = [\"reflective\", \"telepathy\"]",
    );
    let exp: Experiment = parse_toml(&text, "q.toml", &[]).expect("parses");
    let msg = exp.validate("q.toml").expect_err("invalid").to_string();
    assert!(
        msg.contains("population.operators[1]") && msg.contains("telepathy"),
        "{msg}"
    );
    assert!(msg.contains("needs a [proposer] section"), "{msg}");
    let bad = with.replace("proposals = 4", "proposals = 0");
    let exp: Experiment = parse_toml(&bad, "q.toml", &[]).expect("parses");
    let msg = exp.validate("q.toml").expect_err("invalid").to_string();
    assert!(msg.contains("proposer.proposals"), "{msg}");
}
