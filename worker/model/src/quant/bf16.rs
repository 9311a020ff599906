//! The matmul in AVX-512 BF16 (`vdpbf16ps`): weights dequantized once to bfloat16 (made on the
//! first matmul of a matrix, beside its quantized blocks), activations rounded to bfloat16, and
//! each output summed in float over pairs of columns, one instruction doing 16 outputs x 2
//! columns. Where the integer kernels pay a conversion, a multiply and a fused multiply-add per
//! block of 32 on top of the byte dot product, this pays nothing: on an AMD EPYC with AVX-512
//! (no AMX) one core multiplies about four times as fast (BENCHMARKS.md, "BF16").
//!
//! The numbers differ from the integer kernels' (bfloat16 keeps 8 bits of mantissa, where the
//! integer kernels quantize each block of 32 activations to 8 bits against its largest value):
//! both are approximations of the f32 product of the same dequantized weights, about equally
//! close (the tests bound both against it). Within these kernels an output is always the same
//! sum in the same order: over the column pairs in order, `acc += w[2p+1] * x[2p+1]` then
//! `acc += w[2p] * x[2p]` (each product exact in f32, each addition rounded to nearest even),
//! from 0, whatever the batch and whichever member of the team computes it, so a row's product
//! is the same in any batch here too.
//!
//! A decoding step (one activation row) reads the weights at two bytes each, where Q4_1 reads
//! about five eighths of a byte: it is bound by memory bandwidth rather than by arithmetic.
//! Batches of candidates and prompts, which is what scoring spends its time on, are not.

use std::arch::x86_64::*;
use std::fmt;

use super::{Out, QMatrix};

/// Outputs per vector: 16 f32 lanes.
pub(super) const LANES: usize = 16;

/// Groups of 16 outputs per tile, so a tile is 4 x 4 accumulators (plus 4 weight vectors)
/// of AVX-512's 32 registers; also the team's piece of work (64 outputs).
pub(super) const GROUPS: usize = 4;

/// Activation rows per tile.
const ROWS: usize = 4;

/// Whether this CPU has AVX-512F, AVX-512BW and AVX-512 BF16.
pub(super) fn supported() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512bf16")
}

/// `v` as bfloat16: rounded to nearest, ties to even; zeros and subnormals become a zero of
/// the same sign (as `vcvtneps2bf16` does); a NaN stays a (quiet) NaN.
pub fn to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if b & 0x7f80_0000 == 0 {
        return ((b >> 16) & 0x8000) as u16;
    }
    if v.is_nan() {
        return ((b >> 16) | 0x0040) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// A bfloat16 as f32 (exact).
#[cfg(test)]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// `x` rounded to bfloat16 into `out` (see [`convert`]); every value of `out` is written.
pub(super) fn convert_into(x: &[f32], out: &mut Vec<u16>) {
    super::fit(out, x.len());
    convert(x, out);
}

/// `out[i] = to_bf16(x[i])`: sixteen at a time with `vcvtneps2bf16`, the rest by
/// [`to_bf16`], which rounds as it does (the same bits).
pub(super) fn convert(x: &[f32], out: &mut [u16]) {
    assert_eq!(x.len(), out.len(), "bf16::convert lengths");
    let body = x.len() / LANES * LANES;
    assert!(supported(), "bf16::convert without AVX-512 BF16");
    // SAFETY: the CPU has AVX-512F and AVX-512 BF16 (checked above).
    unsafe { convert16(&x[..body], &mut out[..body]) };
    for (o, &v) in out[body..].iter_mut().zip(&x[body..]) {
        *o = to_bf16(v);
    }
}

/// `out[i] = to_bf16(x[i])`, sixteen at a time; both hold whole vectors, as many.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn convert16(x: &[f32], out: &mut [u16]) {
    assert_eq!(x.len(), out.len());
    for (x, o) in x.chunks_exact(LANES).zip(out.chunks_exact_mut(LANES)) {
        // SAFETY: `x` holds 16 floats and `o` 16 halves (`chunks_exact`), unaligned access.
        unsafe {
            let h = _mm512_cvtneps_pbh(_mm512_loadu_ps(x.as_ptr()));
            _mm256_storeu_si256(
                o.as_mut_ptr().cast(),
                std::mem::transmute::<__m256bh, __m256i>(h),
            );
        }
    }
}

/// A matrix's weights as bfloat16 in the kernel's order: for each group of 16 rows (the last
/// one padded with zero rows), for each pair of columns `p`, 16 lanes of `[w[r][2p],
/// w[r][2p+1]]`, one 64-byte vector.
#[derive(Clone)]
pub(super) struct Weights {
    /// Rows of the matrix (outputs), before padding.
    rows: usize,
    /// Column pairs.
    pairs: usize,
    v: Vec<u16>,
}

impl fmt::Debug for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bf16::Weights({} bytes)", self.bytes())
    }
}

impl Weights {
    pub(super) fn new(w: &QMatrix) -> Weights {
        assert_eq!(w.cols % 2, 0, "BF16 kernels take columns in pairs");
        let groups = w.rows.div_ceil(LANES);
        let pairs = w.cols / 2;
        let mut v = vec![0u16; groups * pairs * 2 * LANES];
        let mut row = vec![0f32; w.cols];
        for r in 0..w.rows {
            w.row(r, &mut row);
            let (g, lane) = (r / LANES, r % LANES);
            for p in 0..pairs {
                let at = (g * pairs + p) * 2 * LANES + 2 * lane;
                v[at] = to_bf16(row[2 * p]);
                v[at + 1] = to_bf16(row[2 * p + 1]);
            }
        }
        Weights {
            rows: w.rows,
            pairs,
            v,
        }
    }

    pub(super) fn groups(&self) -> usize {
        self.rows.div_ceil(LANES)
    }

    pub(super) fn bytes(&self) -> usize {
        2 * self.v.len()
    }
}

/// Outputs of groups `g0..g1` (rows `16 * g0..`) for every activation row of `x` (`n` rows of
/// bfloat16, the weights' width each), written through `out`.
pub(super) fn rows_into(w: &Weights, x: &[u16], n: usize, g0: usize, g1: usize, out: Out) {
    assert!(
        g0 <= g1 && g1 <= w.groups() && g1 - g0 <= GROUPS,
        "BF16 group range"
    );
    assert_eq!(x.len(), n * 2 * w.pairs, "BF16 activations' shape");
    assert_eq!((out.rows, out.n), (w.rows, n), "BF16 output shape");
    let mut j = 0;
    while j + ROWS <= n {
        groups::<ROWS>(w, x, j, g0, g1, out);
        j += ROWS;
    }
    while j < n {
        groups::<1>(w, x, j, g0, g1, out);
        j += 1;
    }
}

/// Activation rows `j..j + J` against groups `g0..g1` (at most [`GROUPS`]).
fn groups<const J: usize>(w: &Weights, x: &[u16], j: usize, g0: usize, g1: usize, out: Out) {
    // SAFETY: `Weights` exist only where `supported()` said yes (the level is made by
    // `Isa::available` after asking it), so the CPU has the features `tile_out` enables.
    unsafe {
        match g1 - g0 {
            4 => tile_out::<J, 4>(w, x, j, g0, out),
            3 => tile_out::<J, 3>(w, x, j, g0, out),
            2 => tile_out::<J, 2>(w, x, j, g0, out),
            1 => tile_out::<J, 1>(w, x, j, g0, out),
            _ => {}
        }
    }
}

/// Runs [`tile`] and writes its sums out; compiled with `tile`'s features so that the two
/// inline into one body and the accumulators stay in registers (without them, each 16-float
/// store was a function call: 5% of a ScienceWorld step's time).
///
/// # Safety
/// On a CPU with AVX-512F and AVX-512 BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn tile_out<const J: usize, const G: usize>(
    w: &Weights,
    x: &[u16],
    j: usize,
    g0: usize,
    out: Out,
) {
    let width = 2 * w.pairs;
    assert!((j + J) * width <= x.len(), "BF16 activation rows");
    assert!(
        (g0 + G) * w.pairs * 2 * LANES <= w.v.len(),
        "BF16 weight groups"
    );
    // SAFETY: the CPU has the features (this function's contract); the asserts above keep
    // every activation row `j..j + J` (`width` values each) and every weight group
    // `g0..g0 + G` (`pairs` vectors of 32 values each) inside their slices.
    let acc = unsafe { tile::<J, G>(x.as_ptr().add(j * width), width, w.v.as_ptr(), g0, w.pairs) };
    for (a, accs) in acc.iter().enumerate() {
        for (g, v) in accs.iter().enumerate() {
            let mut lanes = [0f32; LANES];
            // SAFETY: 16 floats into a 16-float array.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *v) };
            for (lane, value) in lanes.iter().enumerate() {
                let r = (g0 + g) * LANES + lane;
                if r < w.rows {
                    out.set(j + a, r, *value);
                }
            }
        }
    }
}

/// `J` activation rows (from `x`, `width` bfloat16 values apart) against weight groups
/// `g0..g0 + G` of `w` (`pairs` vectors each), one accumulator of 16 outputs per pair.
///
/// # Safety
/// On a CPU with AVX-512F and AVX-512 BF16; `x` points at `J * width` readable values,
/// `width == 2 * pairs`, and `w` at least `(g0 + G) * pairs * 32`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn tile<const J: usize, const G: usize>(
    x: *const u16,
    width: usize,
    w: *const u16,
    g0: usize,
    pairs: usize,
) -> [[__m512; G]; J] {
    let mut acc = [[_mm512_setzero_ps(); G]; J];
    for p in 0..pairs {
        let mut wv = [_mm512_setzero_si512(); G];
        for (g, v) in wv.iter_mut().enumerate() {
            // SAFETY: group g0 + g's vector p lies inside w (the caller's bound).
            *v = unsafe { _mm512_loadu_si512(w.add(((g0 + g) * pairs + p) * 2 * LANES).cast()) };
        }
        for (a, accs) in acc.iter_mut().enumerate() {
            // SAFETY: values 2p and 2p + 1 of row a lie inside x (the caller's bound).
            let pair = unsafe { x.add(a * width + 2 * p).cast::<i32>().read_unaligned() };
            // SAFETY: a 512-bit vector reinterpreted as 32 bfloat16 values.
            let xv: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(pair)) };
            for (g, c) in accs.iter_mut().enumerate() {
                // SAFETY: as above.
                let wb: __m512bh = unsafe { std::mem::transmute(wv[g]) };
                *c = _mm512_dpbf16_ps(*c, xv, wb);
            }
        }
    }
    acc
}

/// The sum `tile` computes for one output, in its order, in plain Rust: the tests' reference.
#[cfg(test)]
pub(super) fn dot_in_order(w: &[f32], x: &[u16]) -> f32 {
    let mut acc = 0f32;
    for p in 0..x.len() / 2 {
        for k in [2 * p + 1, 2 * p] {
            acc += from_bf16(to_bf16(w[k])) * from_bf16(x[k]);
        }
    }
    acc
}
