//! `hx bench agent`: what an episode costs. Plays a fixed harness on fixed seeds and reports
//! episodes per CPU-minute, prompt tokens computed and reused per step, and success; with
//! `--against OTHER_HX` it plays the same seeds with another build of hx, the two alternating
//! round by round (this, other, this, other, ...), so a before/after ratio comes from one
//! sitting on a machine whose speed drifts.
//!
//! Every round runs a build as a child process (`BUILD run --json --trace-dir DIR ...`, flags
//! every build since the agent runtime has), so both builds are measured the same way: wall
//! time around the child, CPU time as the child's user + system seconds (this process's
//! `cutime + cstime` from /proc, which grow by exactly a waited-for child's), success and
//! tokens from its JSON, and computed and reused prompt tokens from its traces' model calls.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hx_common::stats::Rate;
use hx_common::task::Split;
use serde::Serialize;

/// What to play.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The harness file.
    pub harness: PathBuf,
    /// The suite.
    pub suite: String,
    /// The split.
    pub split: Split,
    /// The first seed.
    pub start: u64,
    /// How many tasks.
    pub tasks: u64,
    /// Steps per episode at most.
    pub max_steps: u32,
    /// Episodes at once.
    pub concurrency: usize,
    /// Rounds per build.
    pub rounds: u32,
    /// Another build of hx to compare with.
    pub against: Option<PathBuf>,
}

/// One build's figures in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// The binary.
    pub build: String,
    /// The round (1-based).
    pub round: u32,
    /// Episodes played.
    pub episodes: u64,
    /// Episodes won.
    pub won: u64,
    /// Steps played.
    pub steps: u64,
    /// Wall seconds.
    pub wall_s: f64,
    /// CPU seconds (user + system) of the build's process.
    pub cpu_s: f64,
    /// Episodes per CPU-minute.
    pub episodes_per_cpu_min: f64,
    /// Prompt tokens the model computed, per step.
    pub computed_per_step: f64,
    /// Prompt tokens reused from the prefix cache, per step.
    pub reused_per_step: f64,
    /// Model calls that reported tokens.
    pub model_calls: u64,
    /// Each episode, by seed, so two builds' successes pair up on the same tasks.
    pub outcomes: Vec<Played>,
}

/// One episode of a round.
#[derive(Debug, Clone, Serialize)]
pub struct Played {
    /// The task's seed.
    pub seed: u64,
    /// Whether it was won.
    pub won: bool,
    /// Its final score (progress), where the build reports one.
    pub score: Option<f64>,
    /// Steps taken.
    pub steps: u64,
    /// Model tokens the episode read and wrote (cached or not), as the build counts them.
    pub tokens: u64,
}

/// This process's waited-for children's user + system seconds (`cutime + cstime`), or an
/// error where /proc is missing.
fn children_cpu_s() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    let close = stat
        .rfind(')')
        .context("a /proc/self/stat without a name")?;
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // After the name: state is field 3, cutime 16 and cstime 17 (1-based in proc(5)).
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .with_context(|| format!("field {i} of /proc/self/stat"))
    };
    Ok((ticks(16)? + ticks(17)?) / 100.0) // USER_HZ on Linux
}

/// Plays the plan once with `build`, traces in `dir`.
fn play(build: &Path, plan: &Plan, round: u32, dir: &Path) -> Result<Figures> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let before = children_cpu_s()?;
    let clock = Instant::now();
    let out = Command::new(build)
        .arg("run")
        .arg("--harness")
        .arg(&plan.harness)
        .args(["--suite", &plan.suite])
        .args(["--split", &plan.split.to_string()])
        .args(["--start", &plan.start.to_string()])
        .args(["--tasks", &plan.tasks.to_string()])
        .args(["--max-steps", &plan.max_steps.to_string()])
        .args(["--concurrency", &plan.concurrency.to_string()])
        .arg("--trace-dir")
        .arg(dir)
        .arg("--json")
        .output()
        .with_context(|| format!("running {}", build.display()))?;
    let wall_s = clock.elapsed().as_secs_f64();
    let cpu_s = children_cpu_s()? - before;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = err.lines().rev().take(5).collect();
        bail!(
            "{} run failed ({}): {}",
            build.display(),
            out.status,
            last.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("reading {}'s --json output", build.display()))?;
    let outcomes = v["outcomes"]
        .as_array()
        .with_context(|| format!("{}'s --json output has no outcomes", build.display()))?;
    let played = outcomes
        .iter()
        .map(|o| {
            Ok(Played {
                seed: o["task"]["seed"].as_u64().with_context(|| {
                    format!("an outcome of {} without task.seed", build.display())
                })?,
                won: o["won"] == true,
                score: o["score"].as_f64(),
                steps: o["steps"].as_u64().unwrap_or(0),
                tokens: o["tokens"].as_u64().unwrap_or(0),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let won = played.iter().filter(|p| p.won).count() as u64;
    let steps: u64 = played.iter().map(|p| p.steps).sum();
    let (computed, reused, calls) = trace_tokens(dir)?;
    let per_step = |x: u64| x as f64 / steps.max(1) as f64;
    Ok(Figures {
        build: build.display().to_string(),
        round,
        episodes: outcomes.len() as u64,
        won,
        steps,
        wall_s,
        cpu_s,
        episodes_per_cpu_min: outcomes.len() as f64 / (cpu_s / 60.0).max(1e-9),
        computed_per_step: per_step(computed),
        reused_per_step: per_step(reused),
        model_calls: calls,
        outcomes: played,
    })
}

/// Prompt tokens computed and reused, and model calls, summed over the traces in `dir`.
fn trace_tokens(dir: &Path) -> Result<(u64, u64, u64)> {
    let (mut computed, mut reused, mut calls) = (0, 0, 0);
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if e["event"] != "model" {
                continue;
            }
            let prompt = e["prompt-tokens"].as_u64().unwrap_or(0);
            let cached = e["cached-tokens"].as_u64().unwrap_or(0);
            computed += prompt.saturating_sub(cached);
            reused += cached;
            calls += 1;
        }
    }
    Ok((computed, reused, calls))
}

/// Runs the plan: `rounds` of this build, alternating with `--against`'s build when given.
/// `say` hears each round's figures.
pub fn run(plan: &Plan, say: &mut dyn FnMut(&str)) -> Result<serde_json::Value> {
    let this = std::env::current_exe().context("finding this build of hx")?;
    let mut builds = vec![this];
    if let Some(other) = &plan.against {
        if !other.is_file() {
            bail!("--against {}: no such file", other.display());
        }
        builds.push(other.clone());
    }
    let scratch = tempfile_dir()?;
    let mut rounds: Vec<Vec<Figures>> = vec![Vec::new(); builds.len()];
    for round in 1..=plan.rounds {
        for (b, build) in builds.iter().enumerate() {
            let dir = scratch.join(format!("round-{round}-build-{b}"));
            let f = play(build, plan, round, &dir)?;
            let _ = std::fs::remove_dir_all(&dir);
            say(&format!(
                "round {round}, {}: {} episodes, won {}, {:.2} episodes/CPU-min ({:.0} CPU s, {:.0} wall s), per step {:.0} prompt tokens computed + {:.0} reused",
                build.display(),
                f.episodes,
                f.won,
                f.episodes_per_cpu_min,
                f.cpu_s,
                f.wall_s,
                f.computed_per_step,
                f.reused_per_step
            ));
            rounds[b].push(f);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let summary = |fs: &[Figures]| {
        let (won, n) = fs
            .iter()
            .fold((0, 0), |(w, n), f| (w + f.won, n + f.episodes));
        serde_json::json!({
            "build": fs[0].build,
            "episodes_per_cpu_min": crate::cli::spread(fs.iter().map(|f| f.episodes_per_cpu_min).collect()),
            "computed_per_step": crate::cli::spread(fs.iter().map(|f| f.computed_per_step).collect()),
            "reused_per_step": crate::cli::spread(fs.iter().map(|f| f.reused_per_step).collect()),
            "success": Rate::wilson95(won, n),
        })
    };
    let mut report = serde_json::json!({
        "harness": plan.harness,
        "suite": plan.suite,
        "split": plan.split.to_string(),
        "seeds": [plan.start, plan.start + plan.tasks],
        "max_steps": plan.max_steps,
        "concurrency": plan.concurrency,
        "order": "alternating by round: this build, then --against's",
        "this": summary(&rounds[0]),
        "rounds": rounds,
    });
    if builds.len() == 2 {
        // Per round: this build's episodes per CPU-minute over the other's (above 1: faster).
        let ratios: Vec<f64> = rounds[0]
            .iter()
            .zip(&rounds[1])
            .map(|(a, b)| a.episodes_per_cpu_min / b.episodes_per_cpu_min)
            .collect();
        report["against"] = summary(&rounds[1]);
        report["speedup_this_over_against"] = crate::cli::spread(ratios);
    }
    Ok(report)
}

/// A fresh directory under the system's temporary directory for the rounds' traces.
fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("hx-bench-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_tokens_sum_model_calls_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("blocks-train-0.jsonl"),
            concat!(
                r#"{"event":"model","step":0,"prompt-tokens":200,"cached-tokens":0}"#,
                "\n",
                r#"{"event":"step","step":0,"command":"x","observation":"y"}"#,
                "\n",
                r#"{"event":"model","step":1,"prompt-tokens":230,"cached-tokens":190}"#,
                "\n",
            ),
        )
        .expect("writes");
        std::fs::write(dir.path().join("notes.txt"), "not a trace").expect("writes");
        assert_eq!(trace_tokens(dir.path()).expect("reads"), (240, 190, 2));
    }

    #[test]
    fn children_cpu_time_grows_by_a_waited_for_child() {
        let before = children_cpu_s().expect("/proc");
        let status = Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .expect("sh runs");
        assert!(status.success());
        assert!(children_cpu_s().expect("/proc") > before);
    }
}
