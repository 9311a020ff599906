//! The `hx` binary as a user runs it: exit codes, what it prints, and errors that name the
//! file and key at fault.

mod cli;
mod deploy;
mod distributed;
mod model;
mod report;
mod search;

use std::path::{Path, PathBuf};

/// Writes `dir/run.toml`: a tiny search with the real embedded model (the ReAct seed and its
/// children, one or two tasks per rung, two steps per episode, six evaluations), storing in
/// `dir/store`; `transport` is the body of its `[transport]` table.
fn tiny_config(
    dir: &Path,
    run: &str,
    seed: u64,
    jobs_in_flight: usize,
    transport: &str,
) -> PathBuf {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/harnesses/react.toml");
    let text = format!(
        r#"
[run]
name = "{run}"
store = "{store}"
seed = {seed}

[[suites]]
name = "household"

[population]
seeds = ["{seeds}"]
size = 4
tournament = 2
elites = 1
jobs-in-flight = {jobs_in_flight}

[racing]
rungs = [1, 2]
finalists = 1
select-tasks = 1
test-tasks = 1

[budget]
evaluations = 6
episode-steps = 2
wall-time = "10m"

[transport]
{transport}
"#,
        store = dir.join("store").display(),
        seeds = seeds.display(),
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, text).expect("config written");
    path
}
