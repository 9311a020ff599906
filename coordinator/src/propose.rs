//! `hx harness propose`: asks a proposer model about a harness the way the reflective operator
//! does, without a search around it. The harness plays some train tasks first (its failures
//! are what the proposer reads), then the proposer is asked several times; each answer's
//! proposals are checked by the algebra and printed with the verdict. The gate is not run:
//! this measures what a proposer writes, which is the first thing to know before pointing a
//! search at it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use hx_common::config::{Experiment, ModelOptions, ProposerOptions};
use hx_common::harness::format;
use hx_common::protocol::{ParentEpisode, ProposerSpec};
use hx_common::task::{Split, TaskRef};

/// The command line of `hx harness propose`.
#[derive(Debug, clap::Args)]
pub struct ProposeArgs {
    /// The harness file.
    pub harness: PathBuf,
    /// The suite its episodes are played on.
    #[arg(long, default_value = "blocks")]
    pub suite: String,
    /// The split (train or validation: the held-out splits are never shown to a proposer).
    #[arg(long, default_value = "train")]
    pub split: Split,
    /// The first task's seed.
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Tasks played before asking.
    #[arg(long, default_value_t = 4)]
    pub tasks: u64,
    /// Steps per episode at most.
    #[arg(long, default_value_t = 20)]
    pub max_steps: u32,
    /// Times the proposer is asked (each with its own sampling seed).
    #[arg(long, default_value_t = 5)]
    pub samples: u64,
    /// An experiment config: its [model] plays the episodes and its [proposer] section (with
    /// its model) is asked; default: the embedded model for both, the [proposer] defaults.
    #[arg(long, short, env = "HX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `write` (JSON edits) or `choose` (the most likely of a menu of single edits); default:
    /// the config's `proposer.mode`, else write.
    #[arg(long)]
    pub mode: Option<hx_common::protocol::ProposerMode>,
    /// Print one JSON object (every answer, its proposals and verdicts, and the totals).
    #[arg(long)]
    pub json: bool,
}

/// Runs `hx harness propose`.
pub fn run(a: ProposeArgs, say: &mut dyn FnMut(&str)) -> Result<()> {
    if matches!(a.split, Split::Test | Split::Heldout) {
        bail!(
            "--split {}: a proposer never sees held-out tasks; use train or validation",
            a.split
        );
    }
    let harness = format::load(&a.harness)?;
    let (model_options, proposer) = match &a.config {
        Some(c) => {
            let exp = Experiment::load(c, &[])?;
            exp.validate(&c.display().to_string())?;
            (exp.model, exp.proposer.unwrap_or_default())
        }
        None => (ModelOptions::default(), ProposerOptions::default()),
    };
    let model = hx_model::open(&model_options, say)?;
    say(&format!("agents: {}", model.describe()));
    let proposer_model = match &proposer.model {
        Some(m) => hx_model::open(m, say)?,
        None => model.clone(),
    };
    say(&format!("proposer: {}", proposer_model.describe()));
    let tasks: Vec<TaskRef> = (a.start..a.start + a.tasks)
        .map(|seed| TaskRef {
            suite: a.suite.clone(),
            split: a.split,
            seed,
        })
        .collect();
    let options = hx_agent::Options {
        max_steps: Some(a.max_steps),
        ..Default::default()
    };
    let played = hx_agent::run_many(
        &harness,
        &tasks,
        model.as_ref(),
        None,
        &options,
        4,
        &|i, r| {
            if let Ok(e) = r {
                eprintln!(
                    "hx: {}: {} in {} steps",
                    tasks[i],
                    if e.outcome.won { "won" } else { "lost" },
                    e.outcome.steps
                );
            }
        },
    );
    let mut episodes = Vec::new();
    let mut digests = Vec::new();
    for (t, r) in tasks.iter().zip(played) {
        let e = r.with_context(|| format!("{t}"))?;
        episodes.push(ParentEpisode {
            seed: t.seed,
            won: e.outcome.won,
            score: e.outcome.score,
            steps: e.outcome.steps,
        });
        if !e.outcome.won {
            digests.push(e.failure_digest);
        }
    }
    if digests.is_empty() {
        bail!(
            "the harness won all {} tasks: nothing to reflect on (try other --start or --tasks)",
            a.tasks
        );
    }
    let digest = digests.join("\n");
    let spec = ProposerSpec {
        mode: a.mode.unwrap_or(proposer.mode),
        proposals: proposer.proposals,
        temperature: proposer.temperature,
        max_tokens: proposer.max_tokens,
        max_gates: proposer.max_gates,
    };
    let mut answers = Vec::new();
    let (mut valid, mut refused, mut tokens, mut secs) = (0usize, 0usize, 0u64, 0.0f64);
    let mut distinct = std::collections::BTreeSet::new();
    for k in 0..a.samples {
        let clock = Instant::now();
        let p = hx_worker::reflect::propose(
            &harness,
            &episodes,
            &digest,
            &spec,
            k,
            hx_worker::mutate::Limits {
                episode_steps: Some(a.max_steps),
            },
            proposer_model.as_ref(),
        )?;
        let s = clock.elapsed().as_secs_f64();
        secs += s;
        tokens += p.usage.prompt_tokens + p.usage.completion_tokens;
        valid += p.children.len();
        refused += p.refused.len();
        for (c, _) in &p.children {
            distinct.insert(c.harness.id());
        }
        if !a.json {
            outln!(
                "answer {}: {:.1} s, failure modes: {}",
                k + 1,
                s,
                one_line(&p.modes)
            );
            for (c, prop) in &p.children {
                outln!(
                    "  valid: {} -> {} ({}; fixes {:?})",
                    serde_json::to_string(&c.edits)?,
                    c.harness.id().short(),
                    one_line(&prop.rationale),
                    prop.fixes
                );
            }
            for r in &p.refused {
                outln!("  refused: {}", one_line(r));
            }
        }
        answers.push(serde_json::json!({
            "seconds": s,
            "modes": p.modes,
            "valid": p.children.iter().map(|(c, prop)| serde_json::json!({
                "edits": c.edits,
                "child": c.harness.id().to_string(),
                "rationale": prop.rationale,
                "fixes": prop.fixes,
            })).collect::<Vec<_>>(),
            "refused": p.refused,
            "tokens": p.usage.prompt_tokens + p.usage.completion_tokens,
        }));
    }
    let read = valid + refused;
    if a.json {
        let v = serde_json::json!({
            "harness": a.harness,
            "harness_id": harness.id().to_string(),
            "proposer": proposer_model.describe(),
            "mode": spec.mode,
            "episodes": episodes.iter().map(|e| serde_json::json!({
                "seed": e.seed, "won": e.won, "score": e.score, "steps": e.steps,
            })).collect::<Vec<_>>(),
            "answers": answers,
            "valid": valid,
            "refused": refused,
            "distinct_children": distinct.len(),
            "proposer_tokens": tokens,
            "seconds": secs,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!(
            "{} answers: {valid} valid proposals ({} distinct children) and {refused} refused of \
             {read} read; {tokens} proposer tokens, {:.1} s per answer",
            a.samples,
            distinct.len(),
            secs / a.samples.max(1) as f64
        );
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    s.chars().take(200).collect()
}
