//! Kernel microbenchmark: min time of a 1536x576 Q4_1 and a 4096x576 Q8_0 matmul (its
//! activations quantized or rounded as each set needs them included), and of one
//! grouped-query attention (SmolLM2's shape: 3 query heads of 64 per key/value head) over
//! sequences of 100 to 2,000 positions (one row, and four rows in one call), with every set
//! of kernels this CPU runs.
use std::time::Instant;

use hx_model::quant::{Attend, Isa, QActs, QMatrix, Team, attend_group, matmul};
fn main() {
    let threads: usize = std::env::var("HX_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let mut team = Team::new(threads);
    let (rows, cols) = (1536, 576);
    let bytes: Vec<u8> = (0..rows * cols / 32 * 20)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let w4 = QMatrix::from_q4_1(&bytes, rows, cols);
    let wf: Vec<f32> = (0..4096 * cols)
        .map(|i| ((i * 13 % 17) as f32 - 8.0) / 8.0)
        .collect();
    let w8 = QMatrix::from_f32(&wf, 4096, cols);
    let isas = Isa::available();
    for n in [1usize, 2, 4, 8, 16, 64, 256] {
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 31 % 29) as f32 - 14.0) / 7.0)
            .collect();
        for (name, w) in [("q4_1", &w4), ("q8_0", &w8)] {
            let mut best = vec![f64::MAX; isas.len()];
            let mut out = Vec::new();
            let mut xa = QActs::default();
            // Each set's own form of the activations (8-bit blocks, or bfloat16), made in the
            // timed loop: the model makes it once per matmul input too.
            for _ in 0..30 {
                for (k, &isa) in isas.iter().enumerate() {
                    let t = Instant::now();
                    for _ in 0..10 {
                        xa.quantize_into(isa, &x, n, cols);
                        matmul(isa, w, &xa, &mut out, &mut team);
                    }
                    best[k] = best[k].min(t.elapsed().as_secs_f64() / 10.0);
                }
            }
            let line: Vec<String> = isas
                .iter()
                .zip(&best)
                .map(|(i, b)| format!("{i} {:.1} GMAC/s", (w.rows * cols * n) as f64 / b / 1e9))
                .collect();
            println!("{name} n={n}: {}", line.join(", "));
        }
    }
    // One key/value head's keys and values lie together, as the model keeps them.
    let (hd, group, kvd) = (64, 3, 64);
    // One row's heads, then four consecutive rows' heads in one call (a prompt chunk's block),
    // timed per row.
    for (upto, rows) in [(100usize, 1usize), (700, 1), (700, 4), (2000, 1), (2000, 4)] {
        let q: Vec<f32> = (0..rows * group * hd)
            .map(|i| ((i * 17 % 23) as f32 - 11.0) / 11.0)
            .collect();
        let k: Vec<f32> = (0..upto * kvd)
            .map(|i| ((i * 13 % 19) as f32 - 9.0) / 9.0)
            .collect();
        let v: Vec<f32> = (0..upto * kvd)
            .map(|i| ((i * 7 % 29) as f32 - 14.0) / 14.0)
            .collect();
        let runs = [(&k[..], &v[..])];
        let job = Attend {
            q: &q,
            hd,
            runs: &runs,
            stride: kvd,
            off: 0,
            upto: &(0..rows)
                .flat_map(|r| std::iter::repeat_n(upto - rows + 1 + r, group))
                .collect::<Vec<_>>(),
            scale: 0.125,
        };
        let mut out = vec![0f32; rows * group * hd];
        let mut best = vec![f64::MAX; isas.len()];
        for _ in 0..30 {
            for (k, &isa) in isas.iter().enumerate() {
                let t = Instant::now();
                for _ in 0..20 {
                    attend_group(isa, &job, &mut out);
                }
                best[k] = best[k].min(t.elapsed().as_secs_f64() / 20.0 / rows as f64);
            }
        }
        let line: Vec<String> = isas
            .iter()
            .zip(&best)
            .map(|(i, b)| format!("{i} {:.1} us", b * 1e6))
            .collect();
        println!(
            "attention over {upto} positions, {rows} row(s) a call, per row: {}",
            line.join(", ")
        );
    }
}
