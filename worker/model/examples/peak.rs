//! The machine's arithmetic peak on one core, for a roofline: multiply-adds per second of
//! `vdpbf16ps` (bfloat16 pairs into 16 floats, what the BF16 matmul issues) and of 256- and
//! 512-bit `vfmadd231ps` (what attention issues), each with 12 independent accumulators so no
//! dependency chain limits it. Minimum time of 30 runs, so a busy machine's quiet moments count.
//!
//! `cargo run --release -p hx-model --example peak` (x86-64 with AVX-512 BF16; elsewhere it
//! says so and exits).
// The timed loops are SIMD intrinsics: unsafe, as in the library's kernels (the same crate).
#![allow(unsafe_code)]
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    const ACC: usize = 12;

    /// # Safety
    /// AVX-512F and AVX-512 BF16 are present.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dpbf16(iters: usize) -> f32 {
        let a: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(black_box(0x3f80_3f80))) };
        let b: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(black_box(0x0001_0001))) };
        let mut acc = [_mm512_setzero_ps(); ACC];
        for _ in 0..iters {
            for v in &mut acc {
                *v = _mm512_dpbf16_ps(*v, a, b);
            }
        }
        acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }

    /// # Safety
    /// AVX-512F is present.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512(iters: usize) -> f32 {
        let (a, b) = (
            _mm512_set1_ps(black_box(1.0)),
            _mm512_set1_ps(black_box(1e-9)),
        );
        let mut acc = [_mm512_setzero_ps(); ACC];
        for _ in 0..iters {
            for v in &mut acc {
                *v = _mm512_fmadd_ps(a, b, *v);
            }
        }
        acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }

    /// # Safety
    /// AVX2 and FMA are present.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(iters: usize) -> f32 {
        let (a, b) = (
            _mm256_set1_ps(black_box(1.0)),
            _mm256_set1_ps(black_box(1e-9)),
        );
        let mut acc = [_mm256_setzero_ps(); ACC];
        for _ in 0..iters {
            for v in &mut acc {
                *v = _mm256_fmadd_ps(a, b, *v);
            }
        }
        let mut out = [0f32; 8];
        let mut sum = 0.0;
        for v in acc {
            // SAFETY: 8 floats.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
            sum += out.iter().sum::<f32>();
        }
        sum
    }

    pub const ACCUMULATORS: usize = ACC;
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        use std::time::Instant;
        let f = |name: &str, macs_per_instr: usize, run: &dyn Fn(usize) -> f32| {
            let iters = 200_000;
            let mut best = f64::MAX;
            for _ in 0..30 {
                let t = Instant::now();
                std::hint::black_box(run(iters));
                best = best.min(t.elapsed().as_secs_f64());
            }
            let macs = (iters * x86::ACCUMULATORS * macs_per_instr) as f64;
            println!("{name}: {:.1} GMAC/s on one core", macs / best / 1e9);
        };
        let bf16 = is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512f");
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA detected above.
            f("vfmadd231ps ymm (f32)", 8, &|n| unsafe { x86::fma256(n) });
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F detected above.
            f("vfmadd231ps zmm (f32)", 16, &|n| unsafe { x86::fma512(n) });
        }
        if bf16 {
            // SAFETY: AVX-512F and BF16 detected above.
            f("vdpbf16ps zmm (bfloat16 pairs)", 32, &|n| unsafe {
                x86::dpbf16(n)
            });
        } else {
            println!("no AVX-512 BF16 on this CPU");
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    println!("peak: x86-64 only");
}
