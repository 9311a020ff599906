//! Kernel microbenchmark: min time of a 1536x576 Q4_1 and a 4096x576 Q8_0 matmul with every
//! set of kernels this CPU runs.
use std::time::Instant;

use hx_model::quant::{Isa, QActs, QMatrix, Team, matmul};
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
        let xa = QActs::quantize(&x, n, cols);
        for (name, w) in [("q4_1", &w4), ("q8_0", &w8)] {
            let mut best = vec![f64::MAX; isas.len()];
            let mut out = Vec::new();
            for _ in 0..30 {
                for (k, &isa) in isas.iter().enumerate() {
                    let t = Instant::now();
                    for _ in 0..10 {
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
}
