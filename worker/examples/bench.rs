//! cargo run --release -p hx-worker --example bench
use hx_worker::model::bench::{Plan, run};
use hx_worker::model::embedded::{Embedded, options_for};
fn main() -> anyhow::Result<()> {
    let threads = std::env::var("HX_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut o = options_for(None, threads, 2048);
    o.cache_tokens = 0;
    let m = Embedded::load(&o)?;
    let f = run(&m, &Plan::default(), &mut |s| eprintln!("{s}"))?;
    println!("{}", serde_json::to_string_pretty(&f)?);
    Ok(())
}
