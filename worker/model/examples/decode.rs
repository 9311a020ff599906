//! Profiling aid: K concurrent greedy streams of 128 tokens (`decode K`).
use hx_model::bench::prompt;
use hx_model::embedded::{Embedded, Options};
fn main() -> anyhow::Result<()> {
    let k: usize = std::env::args()
        .nth(1)
        .map_or(1, |s| s.parse().unwrap_or(1));
    let mut o = Options::new(hx_model::fetch::default_model_path());
    o.cache_tokens = 0;
    let m = Embedded::load(&o)?;
    let t = std::time::Instant::now();
    std::thread::scope(|s| {
        for i in 0..k {
            let p = prompt(&m, 16, i);
            let m = &m;
            s.spawn(move || m.decode_exact(p, 128).map(|_| ()));
        }
    });
    eprintln!(
        "{k} streams: {:.1} tok/s",
        (k * 128) as f64 / t.elapsed().as_secs_f64()
    );
    Ok(())
}
