//! One question to the embedded model, with timing.
//!
//! cargo run --release -p hx-worker --example chat -- "What is the capital of France?"

use std::time::Instant;

use hx_worker::model::embedded::{Embedded, options_for};
use hx_worker::model::{GenerateRequest, Message, ModelBackend, Role};

fn main() -> anyhow::Result<()> {
    let q = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "What is the capital of France?".into());
    let t = Instant::now();
    let m = Embedded::load(&options_for(None, 0, 2048))?;
    eprintln!("loaded {} in {:?}", m.describe(), t.elapsed());
    let t = Instant::now();
    let g = m.generate(&GenerateRequest::new(vec![Message::new(Role::User, q)], 64))?;
    let s = t.elapsed().as_secs_f64();
    println!("{}", g.text);
    eprintln!(
        "{:?} in {s:.2}s: {:.1} tokens/s",
        g.usage,
        g.usage.completion_tokens as f64 / s
    );
    Ok(())
}
