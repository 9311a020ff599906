//! The model benchmark behind `hx bench model`: prompt and decode throughput, aggregate decode
//! across concurrent streams, and the time to score candidates, for the embedded backend.

use std::time::Instant;

use serde::Serialize;

use super::Error;
use super::embedded::Embedded;
use super::tokenizer::Token;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Prompt length for the prompt-throughput and scoring figures.
    pub prompt_tokens: usize,
    /// Tokens each stream decodes.
    pub decode_tokens: usize,
    /// Concurrent stream counts.
    pub streams: Vec<usize>,
    /// Candidates scored after the prompt.
    pub candidates: usize,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            prompt_tokens: 300,
            decode_tokens: 128,
            streams: vec![1, 4, 8, 16],
            candidates: 10,
        }
    }
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// What ran.
    pub backend: String,
    /// Prompt tokens computed per second (one 300-token prompt, nothing cached).
    pub prompt_tokens_per_s: f64,
    /// Decode tokens per second, one stream.
    pub decode_tokens_per_s: f64,
    /// `(streams, tokens per second over all streams)`.
    pub aggregate_decode: Vec<(usize, f64)>,
    /// Milliseconds to score the candidates after the prompt, nothing cached.
    pub score_ms: f64,
}

/// A prompt of `n` tokens that differs by `salt`, so no two share a cached prefix.
pub fn prompt(model: &Embedded, n: usize, salt: usize) -> Vec<Token> {
    let text = format!(
        "Note {salt}. You are in the middle of a room. Looking quickly around you, you see a \
         cabinet 4, a cabinet 3, a countertop 1, a drawer 2, a fridge 1, a microwave 1, a \
         sinkbasin 1 and a toaster 1. Your task is to: put a clean apple in fridge. "
    );
    let mut tokens = Vec::new();
    while tokens.len() < n {
        tokens.extend(model.tokenizer().encode(&text));
    }
    tokens.truncate(n);
    tokens
}

/// Runs the plan. The model should be loaded with an empty prefix cache budget, so every
/// figure computes every token.
pub fn run(
    model: &Embedded,
    plan: &Plan,
    progress: &mut dyn FnMut(&str),
) -> Result<Figures, Error> {
    let mut salt = 0;
    let mut fresh = |n: usize| {
        salt += 1;
        prompt(model, n, salt)
    };
    // Warm up: page in weights and size buffers.
    model.decode_exact(fresh(32), 8)?;

    progress("prompt throughput");
    let p = fresh(plan.prompt_tokens);
    let t = Instant::now();
    model.decode_exact(p.clone(), 1)?;
    let prefill = t.elapsed().as_secs_f64();
    let prompt_tokens_per_s = p.len() as f64 / prefill;

    progress("single-stream decode");
    let short = fresh(16);
    let t = Instant::now();
    model.decode_exact(short.clone(), 1)?;
    let first = t.elapsed().as_secs_f64();
    let t = Instant::now();
    model.decode_exact(fresh(16), plan.decode_tokens)?;
    let total = t.elapsed().as_secs_f64();
    let decode_tokens_per_s = (plan.decode_tokens - 1) as f64 / (total - first).max(1e-9);

    let mut aggregate_decode = Vec::new();
    for &k in &plan.streams {
        progress(&format!("{k} concurrent streams"));
        let prompts: Vec<Vec<Token>> = (0..k).map(|_| fresh(16)).collect();
        let t = Instant::now();
        let results: Vec<Result<_, Error>> = std::thread::scope(|s| {
            let hs: Vec<_> = prompts
                .into_iter()
                .map(|p| s.spawn(move || model.decode_exact(p, plan.decode_tokens)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or(Err(Error::Stopped)))
                .collect()
        });
        let wall = t.elapsed().as_secs_f64();
        let tokens: u64 = results
            .into_iter()
            .map(|r| r.map(|g| g.usage.completion_tokens))
            .sum::<Result<u64, Error>>()?;
        // Each stream's prompt is computed too; it is short and included, not subtracted.
        aggregate_decode.push((k, tokens as f64 / wall));
    }

    progress("scoring");
    let p = fresh(plan.prompt_tokens);
    let candidates: Vec<Vec<Token>> = (0..plan.candidates)
        .map(|i| {
            model.tokenizer().encode(&format!(
                "take apple {} from countertop {}",
                i + 1,
                i % 3 + 1
            ))
        })
        .collect();
    let t = Instant::now();
    model.score_tokens(p, candidates)?;
    let score_ms = t.elapsed().as_secs_f64() * 1000.0;

    Ok(Figures {
        backend: super::ModelBackend::describe(model),
        prompt_tokens_per_s,
        decode_tokens_per_s,
        aggregate_decode,
        score_ms,
    })
}
