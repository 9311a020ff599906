//! The `hx-worker` binary as an operator runs it on a GPU box.
use std::path::Path;
use std::process::{Command, Output};

fn worker(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hx-worker"));
    cmd.args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env_remove("HX_WORKER_CONFIG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("hx-worker runs")
}

#[test]
fn flags_and_env_override_the_file() {
    let out = worker(
        &[
            "--config",
            "configs/worker.toml",
            "--concurrency",
            "3",
            "--print-config",
        ],
        &[("HX__NATS", "nats://127.0.0.9:4222")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("concurrency = 3"), "{stdout}");
    assert!(
        stdout.contains("nats = \"nats://127.0.0.9:4222\""),
        "{stdout}"
    );
    assert!(stdout.contains("backend = \"openai\""), "{stdout}");
}

#[test]
fn a_missing_url_is_named() {
    let out = worker(&["--print-config"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("missing field `nats`"), "{stderr}");
}

#[test]
fn a_bad_url_is_named() {
    let out = worker(&["--nats", "localhost:4222", "--print-config"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("nats: must start with nats://"), "{stderr}");
}
