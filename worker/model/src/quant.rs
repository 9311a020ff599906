//! Quantized matrices and the matrix-times-batch kernels the embedded model spends its time in.
//!
//! Weights stay quantized in memory (Q4_1 or Q8_0 blocks of 32, unpacked into separate scale and
//! value arrays at load time); activations are quantized per block of 32 to eight bits, and each
//! block's dot product is an integer dot product scaled once, as llama.cpp does. One weight row is
//! read once and used against up to four activation rows, so decoding several sequences at once
//! costs little more memory traffic than decoding one.
//!
//! This is the one module allowed `unsafe`, for two things, each behind a safe interface that
//! safe code cannot misuse:
//!
//! - **SIMD kernels** (`std::arch` intrinsics, which take raw pointers and need CPU features).
//!   Their wrappers check every length they rely on, and run them only with an [`Isa`], which
//!   only CPU feature detection can make. A portable scalar kernel computes the same sums, and
//!   the tests check they agree.
//! - **The [`Team`]** of matmul threads, which hands a borrowed job to its helpers as a raw
//!   pointer. [`Team::run`] takes `&mut self` (one job at a time) and neither returns nor
//!   unwinds before every helper has finished, so the borrow outlives every use; a helper's
//!   panic is caught and re-raised in the caller.
#![allow(unsafe_code)]

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod bf16;

/// Block size of every quantized format here.
pub const BLOCK: usize = 32;

/// An IEEE half-precision value's bits as f32.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalize.
            let shift = f.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | (((f << shift) & 0x3ff) << 13)
        }
        (0x1f, f) => sign | (0xff << 23) | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// The value layout of a quantized matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Four-bit values `q` in `0..16`, element = `d * q + m`.
    Q4_1,
    /// Eight-bit values, element = `d * q`.
    Q8_0,
}

/// A `rows x cols` matrix of quantized rows.
#[derive(Debug, Clone)]
pub struct QMatrix {
    /// Rows (output features).
    pub rows: usize,
    /// Columns (input features), a multiple of 32.
    pub cols: usize,
    /// Value layout.
    pub kind: Kind,
    /// One scale per block, row-major.
    d: Vec<f32>,
    /// One minimum per block (Q4_1 only).
    m: Vec<f32>,
    /// Packed values: 16 bytes per Q4_1 block (low nibbles are elements 0..16), 32 per Q8_0.
    q: Vec<u8>,
    /// The values one byte each in AMX's tile layout, made on the first AMX matmul.
    #[cfg(target_arch = "x86_64")]
    amx: std::sync::OnceLock<amx::Weights>,
    /// The values as bfloat16 in the BF16 kernels' layout, made on the first BF16 matmul.
    #[cfg(target_arch = "x86_64")]
    bf16: std::sync::OnceLock<bf16::Weights>,
}

impl QMatrix {
    fn blocks(&self) -> usize {
        self.cols / BLOCK
    }

    /// From GGUF Q4_1 blocks (20 bytes: f16 d, f16 m, 16 bytes of nibbles).
    pub fn from_q4_1(bytes: &[u8], rows: usize, cols: usize) -> QMatrix {
        let nb = rows * cols / BLOCK;
        assert_eq!(bytes.len(), nb * 20, "Q4_1 size");
        let mut d = Vec::with_capacity(nb);
        let mut m = Vec::with_capacity(nb);
        let mut q = Vec::with_capacity(nb * 16);
        for b in bytes.chunks_exact(20) {
            d.push(f16_to_f32(u16::from_le_bytes([b[0], b[1]])));
            m.push(f16_to_f32(u16::from_le_bytes([b[2], b[3]])));
            q.extend_from_slice(&b[4..20]);
        }
        QMatrix {
            rows,
            cols,
            kind: Kind::Q4_1,
            d,
            m,
            q,
            #[cfg(target_arch = "x86_64")]
            amx: Default::default(),
            #[cfg(target_arch = "x86_64")]
            bf16: Default::default(),
        }
    }

    /// From GGUF Q8_0 blocks (34 bytes: f16 d, 32 signed bytes).
    pub fn from_q8_0(bytes: &[u8], rows: usize, cols: usize) -> QMatrix {
        let nb = rows * cols / BLOCK;
        assert_eq!(bytes.len(), nb * 34, "Q8_0 size");
        let mut d = Vec::with_capacity(nb);
        let mut q = Vec::with_capacity(nb * 32);
        for b in bytes.chunks_exact(34) {
            d.push(f16_to_f32(u16::from_le_bytes([b[0], b[1]])));
            q.extend_from_slice(&b[2..34]);
        }
        QMatrix {
            rows,
            cols,
            kind: Kind::Q8_0,
            d,
            m: Vec::new(),
            q,
            #[cfg(target_arch = "x86_64")]
            amx: Default::default(),
            #[cfg(target_arch = "x86_64")]
            bf16: Default::default(),
        }
    }

    /// From f32 values, quantized to Q8_0.
    pub fn from_f32(values: &[f32], rows: usize, cols: usize) -> QMatrix {
        assert_eq!(values.len(), rows * cols);
        let a = QActs::quantize(Isa::SCALAR, values, rows, cols);
        QMatrix {
            rows,
            cols,
            kind: Kind::Q8_0,
            d: a.d,
            m: Vec::new(),
            q: a.q.into_iter().map(|v| v as u8).collect(),
            #[cfg(target_arch = "x86_64")]
            amx: Default::default(),
            #[cfg(target_arch = "x86_64")]
            bf16: Default::default(),
        }
    }

    /// Stacks matrices of one kind and width, rows after rows.
    pub fn concat(parts: &[&QMatrix]) -> Option<QMatrix> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.kind != first.kind || p.cols != first.cols)
        {
            return None;
        }
        Some(QMatrix {
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            kind: first.kind,
            d: parts.iter().flat_map(|p| p.d.iter().copied()).collect(),
            m: parts.iter().flat_map(|p| p.m.iter().copied()).collect(),
            q: parts.iter().flat_map(|p| p.q.iter().copied()).collect(),
            #[cfg(target_arch = "x86_64")]
            amx: Default::default(),
            #[cfg(target_arch = "x86_64")]
            bf16: Default::default(),
        })
    }

    /// Row `r` as f32 values (embedding lookup).
    pub fn row(&self, r: usize, out: &mut [f32]) {
        let nb = self.blocks();
        for b in 0..nb {
            let i = r * nb + b;
            let d = self.d[i];
            let dst = &mut out[b * BLOCK..(b + 1) * BLOCK];
            match self.kind {
                Kind::Q4_1 => {
                    let m = self.m[i];
                    let q = &self.q[i * 16..(i + 1) * 16];
                    for j in 0..16 {
                        dst[j] = d * f32::from(q[j] & 0x0f) + m;
                        dst[j + 16] = d * f32::from(q[j] >> 4) + m;
                    }
                }
                Kind::Q8_0 => {
                    let q = &self.q[i * 32..(i + 1) * 32];
                    for j in 0..32 {
                        dst[j] = d * f32::from(q[j] as i8);
                    }
                }
            }
        }
    }

    /// Bytes of memory held (the AMX and BF16 layouts too, once made).
    pub fn bytes(&self) -> usize {
        #[cfg(target_arch = "x86_64")]
        let layouts = self.amx.get().map_or(0, amx::Weights::bytes)
            + self.bf16.get().map_or(0, bf16::Weights::bytes);
        #[cfg(not(target_arch = "x86_64"))]
        let layouts = 0;
        4 * (self.d.len() + self.m.len()) + self.q.len() + layouts
    }
}

/// `v` holding `len` values, for a caller that overwrites every one of them: only a growth is
/// filled (with zeros), so a buffer reused at the same length is not cleared first.
pub fn fit<T: Copy + Default>(v: &mut Vec<T>, len: usize) {
    v.truncate(len);
    v.resize(len, T::default());
}

/// Values per piece of [`QActs::quantize_on`]'s rounding when spread over the team.
const CONVERT_PIECE: usize = 16 * 1024;

/// Rows of activations quantized to eight bits per block of 32, or for the BF16 kernels
/// rounded to bfloat16 (whichever the [`Isa`] they were made for multiplies).
#[derive(Debug, Clone, Default)]
pub struct QActs {
    /// Rows.
    pub n: usize,
    /// Columns.
    pub cols: usize,
    d: Vec<f32>,
    /// `d` of each block repeated 8 times.
    dv: Vec<f32>,
    /// `d * sum(q)` per block, for Q4_1's minimum term.
    s: Vec<f32>,
    q: Vec<i8>,
    /// The values as bfloat16 (BF16 kernels only; the fields above are then empty).
    h: Vec<u16>,
}

impl QActs {
    /// Quantizes `n` rows of `cols` values.
    pub fn quantize(isa: Isa, x: &[f32], n: usize, cols: usize) -> QActs {
        let mut a = QActs::default();
        a.quantize_into(isa, x, n, cols);
        a
    }

    /// [`QActs::quantize_into`], spread over the team where the values are many and the
    /// kernel set rounds them to bfloat16 (each value on its own: the same bits).
    pub fn quantize_on(&mut self, isa: Isa, x: &[f32], n: usize, cols: usize, team: &mut Team) {
        #[cfg(target_arch = "x86_64")]
        if isa.0 == Level::Bf16 && team.size() > 1 && x.len() >= 2 * CONVERT_PIECE {
            self.reshape(x, n, cols);
            fit(&mut self.h, x.len());
            team.for_each_chunk_mut(&mut self.h, CONVERT_PIECE, &|i, out| {
                let at = i * CONVERT_PIECE;
                bf16::convert(&x[at..at + out.len()], out);
            });
            return;
        }
        self.quantize_into(isa, x, n, cols);
    }

    /// Takes the shape of `n` rows of `cols` values (`x` must hold them, in whole blocks)
    /// and empties every field but the bfloat16 values, which each caller fills its way.
    fn reshape(&mut self, x: &[f32], n: usize, cols: usize) {
        assert_eq!(x.len(), n * cols);
        assert_eq!(cols % BLOCK, 0);
        self.n = n;
        self.cols = cols;
        self.d.clear();
        self.dv.clear();
        self.s.clear();
        self.q.clear();
    }

    /// Quantizes into this buffer, reusing its memory. Every kernel set gives the same bits.
    pub fn quantize_into(&mut self, isa: Isa, x: &[f32], n: usize, cols: usize) {
        self.reshape(x, n, cols);
        self.h.clear();
        let nb = n * cols / BLOCK;
        #[cfg(target_arch = "x86_64")]
        if isa.0 == Level::Bf16 {
            bf16::convert_into(x, &mut self.h);
            return;
        }
        self.d.reserve(nb);
        self.s.reserve(nb);
        self.q.reserve(nb * BLOCK);
        #[cfg(target_arch = "x86_64")]
        if matches!(
            isa.0,
            Level::Avx2 | Level::AvxVnni | Level::Avx512 | Level::Amx
        ) {
            self.q.resize(nb * BLOCK, 0);
            for (block, q) in x.chunks_exact(BLOCK).zip(self.q.chunks_exact_mut(BLOCK)) {
                // SAFETY: these levels are only made on CPUs with AVX2 and FMA; both hold
                // one block.
                let (d, sum) = unsafe { x86::quantize_block(block, q) };
                self.d.push(d);
                self.dv.extend([d; 8]);
                self.s.push(d * sum as f32);
            }
            return;
        }
        let _ = isa;
        for block in x.chunks_exact(BLOCK) {
            let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for &v in block {
                let q = (v * inv).round() as i8;
                sum += i32::from(q);
                self.q.push(q);
            }
            self.d.push(d);
            self.dv.extend([d; 8]);
            self.s.push(d * sum as f32);
        }
    }
}

/// One activation row's blocks.
#[derive(Clone, Copy)]
struct XRow<'a> {
    d: &'a [f32],
    /// Each block's scale repeated 8 times, for vector loads.
    dv: &'a [f32],
    s: &'a [f32],
    q: &'a [i8],
}

fn x_row(x: &QActs, j: usize) -> XRow<'_> {
    let nb = x.cols / BLOCK;
    XRow {
        d: &x.d[j * nb..(j + 1) * nb],
        dv: &x.dv[j * nb * 8..(j + 1) * nb * 8],
        s: &x.s[j * nb..(j + 1) * nb],
        q: &x.q[j * x.cols..(j + 1) * x.cols],
    }
}

/// Weight row `r`'s blocks.
#[derive(Clone, Copy)]
struct WRow<'a> {
    d: &'a [f32],
    m: &'a [f32],
    q: &'a [u8],
}

fn w_row(w: &QMatrix, r: usize) -> WRow<'_> {
    let nb = w.blocks();
    let per = match w.kind {
        Kind::Q4_1 => 16,
        Kind::Q8_0 => 32,
    };
    WRow {
        d: &w.d[r * nb..(r + 1) * nb],
        m: if w.m.is_empty() {
            &[]
        } else {
            &w.m[r * nb..(r + 1) * nb]
        },
        q: &w.q[r * nb * per..(r + 1) * nb * per],
    }
}

/// Which kernels to run. Only [`Isa::detect`] and [`Isa::available`] make one, after checking
/// the CPU's features, so no safe code can ask for a kernel the CPU lacks (the field is
/// private); [`Isa::SCALAR`] runs anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isa(Level);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// Portable Rust.
    Scalar,
    /// x86-64 AVX2 with FMA.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
    /// AVX2 with FMA and AVX-VNNI's byte dot product.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    AvxVnni,
    /// The matmul in AVX-512 (F, BW and VNNI), two blocks per vector; AVX-512F for attention.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx512,
    /// The matmul in AVX-512 BF16 over bfloat16 weights and activations; AVX-512F for attention.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Bf16,
    /// AMX tiles for the matmul (with AVX-512F for its float part, and attention).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Amx,
}

impl Isa {
    /// The portable kernels, which every CPU runs.
    pub const SCALAR: Isa = Isa(Level::Scalar);

    /// Every set of kernels this CPU runs, the portable one first and the fastest last.
    pub fn available() -> Vec<Isa> {
        let mut out = vec![Isa::SCALAR];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            out.push(Isa(Level::Avx2));
            if is_x86_feature_detected!("avxvnni") {
                out.push(Isa(Level::AvxVnni));
            }
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
            {
                out.push(Isa(Level::Avx512));
            }
            if bf16::supported() {
                out.push(Isa(Level::Bf16));
            }
            if amx::supported() {
                out.push(Isa(Level::Amx));
            }
        }
        out
    }

    /// The fastest kernels this CPU runs (`HX_NO_AMX` set: not the AMX ones; `HX_NO_BF16`
    /// set: not the AVX-512 BF16 ones, so the integer kernels, whose numbers runs before
    /// them were measured with; `HX_NO_AVX512` set: neither AVX-512 set; `HX_NO_VNNI` set:
    /// not the AVX-VNNI ones).
    pub fn detect() -> Isa {
        let mut all = Isa::available();
        if std::env::var_os("HX_NO_AMX").is_some() {
            all.retain(|i| i.0 != Level::Amx);
        }
        if std::env::var_os("HX_NO_BF16").is_some() {
            all.retain(|i| i.0 != Level::Bf16);
        }
        if std::env::var_os("HX_NO_AVX512").is_some() {
            all.retain(|i| !matches!(i.0, Level::Avx512 | Level::Bf16));
        }
        if std::env::var_os("HX_NO_VNNI").is_some() {
            all.retain(|i| i.0 != Level::AvxVnni);
        }
        *all.last()
            .expect("the portable kernels are always available")
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Level::Scalar => "scalar",
            Level::Avx2 => "AVX2",
            Level::AvxVnni => "AVX-VNNI",
            Level::Avx512 => "AVX-512",
            Level::Bf16 => "AVX-512 BF16",
            Level::Amx => "AMX",
        })
    }
}

fn tile_scalar<const R: usize, const N: usize>(
    kind: Kind,
    w: [WRow<'_>; R],
    x: [XRow<'_>; N],
) -> [[f32; N]; R] {
    let mut out = [[0f32; N]; R];
    for (r, wr) in w.iter().enumerate() {
        for (j, xr) in x.iter().enumerate() {
            let mut acc = 0f32;
            for b in 0..wr.d.len() {
                let xq = &xr.q[b * 32..(b + 1) * 32];
                let sum: i32 = match kind {
                    Kind::Q4_1 => {
                        let wq = &wr.q[b * 16..(b + 1) * 16];
                        (0..16)
                            .map(|i| {
                                i32::from(wq[i] & 0x0f) * i32::from(xq[i])
                                    + i32::from(wq[i] >> 4) * i32::from(xq[i + 16])
                            })
                            .sum()
                    }
                    Kind::Q8_0 => {
                        let wq = &wr.q[b * 32..(b + 1) * 32];
                        (0..32)
                            .map(|i| i32::from(wq[i] as i8) * i32::from(xq[i]))
                            .sum()
                    }
                };
                acc += wr.d[b] * xr.d[b] * sum as f32;
                if kind == Kind::Q4_1 {
                    acc += wr.m[b] * xr.s[b];
                }
            }
            out[r][j] = acc;
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Kind, WRow, XRow};

    /// The sum of the eight lanes. Compiled with the features it needs, so it can only be
    /// called (without `unsafe`) from functions compiled with them too: the kernels below.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// The largest of the eight lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
    }

    /// One kernel body, compiled twice: with AVX-VNNI's `vpdpbusd` for the u8 x i8 dot
    /// product, and with AVX2's `vpmaddubsw` + `vpmaddwd`. Two functions, not one with a
    /// runtime flag, so the AVX2 build can never contain a VNNI instruction.
    macro_rules! kernel {
        ($name:ident, $features:literal, $dot:expr) => {
            /// # Safety
            /// The CPU has the features named; `w.q` holds `w.d.len()` blocks of `kind`, and
            /// every `x[j]` holds `w.d.len()` blocks with their broadcast scales (checked by
            /// the caller).
            #[target_feature(enable = $features)]
            pub unsafe fn $name<const R: usize, const N: usize>(
                kind: Kind,
                w: [WRow<'_>; R],
                x: [XRow<'_>; N],
            ) -> [[f32; N]; R] {
                let nb = w[0].d.len();
                let mask = _mm_set1_epi8(0x0f);
                let mut acc = [[_mm256_setzero_ps(); N]; R];
                for b in 0..nb {
                    // Q4_1: unsigned nibbles, element i in the low nibble of byte i, element
                    // 16 + i in its high nibble. Q8_0: signed bytes, made unsigned by moving
                    // their sign onto the activations.
                    let mut wu = [_mm256_setzero_si256(); R];
                    let mut ws = [_mm256_setzero_si256(); R];
                    let mut wd = [_mm256_setzero_ps(); R];
                    for r in 0..R {
                        wd[r] = _mm256_set1_ps(w[r].d[b]);
                        match kind {
                            Kind::Q4_1 => {
                                // SAFETY: block b's 16 bytes lie inside w[r].q.
                                let raw =
                                    unsafe { _mm_loadu_si128(w[r].q.as_ptr().add(b * 16).cast()) };
                                let lo = _mm_and_si128(raw, mask);
                                let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
                                wu[r] = _mm256_set_m128i(hi, lo);
                            }
                            Kind::Q8_0 => {
                                // SAFETY: block b's 32 bytes lie inside w[r].q.
                                let v = unsafe {
                                    _mm256_loadu_si256(w[r].q.as_ptr().add(b * 32).cast())
                                };
                                wu[r] = _mm256_sign_epi8(v, v);
                                ws[r] = v;
                            }
                        }
                    }
                    for j in 0..N {
                        // SAFETY: block b's 32 values and 8 broadcast scales lie inside x[j].
                        let (xv, xd) = unsafe {
                            (
                                _mm256_loadu_si256(x[j].q.as_ptr().add(b * 32).cast()),
                                _mm256_loadu_ps(x[j].dv.as_ptr().add(b * 8)),
                            )
                        };
                        for r in 0..R {
                            let xs = match kind {
                                Kind::Q8_0 => _mm256_sign_epi8(xv, ws[r]),
                                Kind::Q4_1 => xv,
                            };
                            let sum = _mm256_cvtepi32_ps($dot(wu[r], xs));
                            acc[r][j] = _mm256_fmadd_ps(_mm256_mul_ps(sum, xd), wd[r], acc[r][j]);
                        }
                    }
                }
                let mut out = [[0f32; N]; R];
                for r in 0..R {
                    for j in 0..N {
                        out[r][j] = hsum(acc[r][j]);
                        if kind == Kind::Q4_1 {
                            out[r][j] += w[r].m.iter().zip(x[j].s).map(|(m, s)| m * s).sum::<f32>();
                        }
                    }
                }
                out
            }
        };
    }

    /// # Safety
    /// AVX2 and FMA are present; `a` and `b` have equal lengths.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len() / 8 * 8;
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= len of both.
            unsafe {
                s0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    s0,
                );
                s1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                    _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                    s1,
                );
            }
            i += 16;
        }
        if i < n {
            // SAFETY: i + 8 <= n <= len of both.
            unsafe {
                s0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    s0,
                );
            }
        }
        let mut sum = hsum(_mm256_add_ps(s0, s1));
        for j in n..a.len() {
            sum += a[j] * b[j];
        }
        sum
    }

    /// # Safety
    /// AVX2 and FMA are present; `y` and `x` have equal lengths.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
        let n = y.len() / 8 * 8;
        let av = _mm256_set1_ps(a);
        let mut i = 0;
        while i < n {
            // SAFETY: i + 8 <= n <= len of both.
            unsafe {
                let v = _mm256_fmadd_ps(
                    av,
                    _mm256_loadu_ps(x.as_ptr().add(i)),
                    _mm256_loadu_ps(y.as_ptr().add(i)),
                );
                _mm256_storeu_ps(y.as_mut_ptr().add(i), v);
            }
            i += 8;
        }
        for j in n..y.len() {
            y[j] += a * x[j];
        }
    }

    /// [`super::attend_group`]'s body, with the dot products and weighted sums inlined (one
    /// call per position cost more than the arithmetic at a head width of 64), and the
    /// weighted sum kept in registers for widths of 32, 64 and 128.
    ///
    /// # Safety
    /// AVX2 and FMA are present; the shapes are as `super::attend_group` checks.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attend_group(a: &super::Attend<'_>, out: &mut [f32]) {
        // Every head's scores over the most positions any attends; a head's row past its own
        // count is then zeroed, so adding its weighted values changes nothing.
        let (hd, upto) = (a.hd, a.most());
        // This head's key and value at each position: plain slices, so the loops below
        // inline (an iterator chain over the runs did not).
        let kv = a.positions();
        let mut scores = vec![0f32; a.q.len() / hd * upto];
        // SAFETY: AVX2 and FMA are present (this function's contract); every key holds `hd`
        // floats; the scores hold `upto` per head.
        unsafe { scores_from(a, &kv, &mut scores, 0) };
        for (s, &own) in scores.chunks_exact_mut(upto).zip(a.upto) {
            let (s, past) = s.split_at_mut(own);
            // SAFETY: AVX2 and FMA are present.
            unsafe { softmax(s) };
            past.fill(0.0);
        }
        let mut heads: Vec<(&[f32], &mut [f32])> = scores
            .chunks_exact(upto)
            .zip(out.chunks_exact_mut(hd))
            .collect();
        if hd.is_multiple_of(32) {
            // Up to three heads at a time, 32 of their floats at a time: each value is read
            // from memory once for the heads that share it, and 12 sums stay in registers.
            for group in heads.chunks_mut(3) {
                for off in (0..hd).step_by(32) {
                    // SAFETY: AVX2 and FMA are present; every value and output holds `hd`
                    // floats, a multiple of 32 above `off`; every weight row holds one weight
                    // per attended position.
                    unsafe {
                        match group.len() {
                            1 => weighted_sums::<1>(&kv, group, off),
                            2 => weighted_sums::<2>(&kv, group, off),
                            _ => weighted_sums::<3>(&kv, group, off),
                        }
                    }
                }
            }
        } else {
            for ((w, oh), &own) in heads.into_iter().zip(a.upto) {
                oh.fill(0.0);
                for ((_, v), &w) in kv.iter().zip(&w[..own]) {
                    // SAFETY: AVX2 and FMA are present; `oh` and every value hold `hd` floats.
                    unsafe { axpy_f32(oh, w, v) };
                }
            }
        }
    }

    /// `out[off..off + 32] = sum_t w[t] * v_t[off..off + 32]` for `G` heads' weights and
    /// outputs, each value's 32 floats loaded once for all of them; per output float the same
    /// fused multiply-adds in the same order as `axpy_f32` into a zeroed output.
    ///
    /// # Safety
    /// AVX2 and FMA are present; `heads` holds `G` (weights, output) pairs, every weight row
    /// at least `kv.len()` floats, every value and output at least `off + 32`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn weighted_sums<const G: usize>(
        kv: &[(&[f32], &[f32])],
        heads: &mut [(&[f32], &mut [f32])],
        off: usize,
    ) {
        let w: [&[f32]; G] = std::array::from_fn(|h| heads[h].0);
        let mut acc = [[_mm256_setzero_ps(); 4]; G];
        for (t, (_, v)) in kv.iter().enumerate() {
            let p = v[off..off + 32].as_ptr();
            for h in 0..G {
                let wv = _mm256_set1_ps(w[h][t]);
                for (c, acc) in acc[h].iter_mut().enumerate() {
                    // SAFETY: 8 * c + 8 <= 32 floats from p, inside the value.
                    *acc = _mm256_fmadd_ps(wv, unsafe { _mm256_loadu_ps(p.add(8 * c)) }, *acc);
                }
            }
        }
        for (h, acc) in acc.iter().enumerate() {
            let o = &mut heads[h].1[off..off + 32];
            for (c, acc) in acc.iter().enumerate() {
                // SAFETY: 8 * c + 8 <= 32 floats of o.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(8 * c), *acc) };
            }
        }
    }

    /// Four keys' dot products with `q`, each the same operations in the same order as
    /// [`dot_f32`] (two running sums over alternate eights, added, then `hsum`'s tree).
    ///
    /// # Safety
    /// AVX2 and FMA are present; `q` and every key hold the same number of floats, a multiple
    /// of 16.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot4(q: &[f32], k: [&[f32]; 4]) -> __m128 {
        let n = q.len();
        let mut s0 = [_mm256_setzero_ps(); 4];
        let mut s1 = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < n {
            // SAFETY: i + 16 <= n, the length of q and of every key.
            unsafe {
                let (qa, qb) = (
                    _mm256_loadu_ps(q.as_ptr().add(i)),
                    _mm256_loadu_ps(q.as_ptr().add(i + 8)),
                );
                for p in 0..4 {
                    s0[p] = _mm256_fmadd_ps(qa, _mm256_loadu_ps(k[p].as_ptr().add(i)), s0[p]);
                    s1[p] = _mm256_fmadd_ps(qb, _mm256_loadu_ps(k[p].as_ptr().add(i + 8)), s1[p]);
                }
            }
            i += 16;
        }
        let v: [__m256; 4] = std::array::from_fn(|p| _mm256_add_ps(s0[p], s1[p]));
        // hsum's tree for the four at once: lanes x_k = a_k + a_(k+4), then
        // (x_0 + x_2) + (x_1 + x_3). Float addition commutes exactly, so the order of each
        // pair's operands does not matter, only which values pair up.
        let halves = |a: __m256, b: __m256| {
            _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(a, b),
                _mm256_permute2f128_ps::<0x31>(a, b),
            )
        };
        let (c02, c13) = (halves(v[0], v[2]), halves(v[1], v[3]));
        // Per 128-bit half: [x0 + x2 of the first, of the second, x1 + x3 of the first, ...].
        let u = _mm256_add_ps(_mm256_unpacklo_ps(c02, c13), _mm256_unpackhi_ps(c02, c13));
        let (lo, hi) = (_mm256_castps256_ps128(u), _mm256_extractf128_ps::<1>(u));
        _mm_add_ps(
            _mm_shuffle_ps::<0b01_00_01_00>(lo, hi),
            _mm_shuffle_ps::<0b11_10_11_10>(lo, hi),
        )
    }

    /// Every head's scaled scores for the positions from `t` on (`kv.len()` per head in
    /// `scores`): positions outside, heads inside, so each key is read from memory once for
    /// every head that shares it; four positions at a time where the width allows (eight sums
    /// in flight instead of one chain of dependent adds per dot product), then one by one.
    ///
    /// # Safety
    /// AVX2 and FMA are present; every key in `kv` holds `a.hd` floats.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn scores_from(
        a: &super::Attend<'_>,
        kv: &[(&[f32], &[f32])],
        scores: &mut [f32],
        mut t: usize,
    ) {
        let (hd, upto) = (a.hd, kv.len());
        if hd.is_multiple_of(16) {
            let scale = _mm_set1_ps(a.scale);
            while t + 4 <= upto {
                let keys = [kv[t].0, kv[t + 1].0, kv[t + 2].0, kv[t + 3].0];
                for (j, qh) in a.q.chunks_exact(hd).enumerate() {
                    // SAFETY: AVX2 and FMA are present; every key holds `hd` floats, a multiple
                    // of 16; `j * upto + t + 4 <= (j + 1) * upto`, inside `scores`.
                    unsafe {
                        let s = _mm_mul_ps(dot4(qh, keys), scale);
                        _mm_storeu_ps(scores.as_mut_ptr().add(j * upto + t), s);
                    }
                }
                t += 4;
            }
        }
        for (t, (k, _)) in kv.iter().enumerate().skip(t) {
            for (j, qh) in a.q.chunks_exact(hd).enumerate() {
                // SAFETY: AVX2 and FMA are present (this function's contract); equal lengths.
                scores[j * upto + t] = unsafe { dot_f32(qh, k) } * a.scale;
            }
        }
    }

    /// [`attend_group`] in 512-bit vectors, for head widths that are a multiple of 16: the
    /// same operations in the same order, lane for lane, so the same bits (the kernel sets
    /// that have AVX-512F run it; the test of grouped attention holds every set to the
    /// per-head reference). A key's dot product is one chain of fused multiply-adds over its
    /// sixteens, whose low eight lanes are [`dot_f32`]'s first running sum and high eight its
    /// second; sixteen keys' chains run at once and are reduced together by `hsum`'s tree. The
    /// weighted sum keeps a head's 64 floats in four registers, six heads at a time, where the
    /// 256-bit one took twice the instructions for the same additions. Widths that are not a
    /// multiple of 16 take the 256-bit path; those with no register path for their queries
    /// (sixteens other than 1-4, 6 or 8) are scored four positions at a time.
    ///
    /// # Safety
    /// AVX2, FMA and AVX-512F are present; the shapes are as `super::attend_group` checks.
    #[target_feature(enable = "avx2,fma,avx512f")]
    pub unsafe fn attend_group512(a: &super::Attend<'_>, out: &mut [f32]) {
        let (hd, upto) = (a.hd, a.most());
        if !hd.is_multiple_of(16) {
            // SAFETY: AVX2 and FMA are present; the shapes were checked.
            return unsafe { attend_group(a, out) };
        }
        let kv = a.positions();
        let mut scores = vec![0f32; a.q.len() / hd * upto];
        // Sixteen positions at a time, every head of the block for each (the keys are read
        // from memory once, then from the first-level cache); the rest four at a time, then
        // one by one, as the 256-bit path does them.
        // SAFETY: the features are present; every key holds `hd` floats; the scores hold
        // `upto` per head.
        let t = unsafe {
            match hd / 16 {
                1 => scores16::<1>(a, &kv, &mut scores),
                2 => scores16::<2>(a, &kv, &mut scores),
                3 => scores16::<3>(a, &kv, &mut scores),
                4 => scores16::<4>(a, &kv, &mut scores),
                6 => scores16::<6>(a, &kv, &mut scores),
                8 => scores16::<8>(a, &kv, &mut scores),
                // Other widths (80, 112, over 128): every position four at a time below.
                _ => 0,
            }
        };
        // SAFETY: as above.
        unsafe { scores_from(a, &kv, &mut scores, t) };
        for (s, &own) in scores.chunks_exact_mut(upto).zip(a.upto) {
            let (s, past) = s.split_at_mut(own);
            // SAFETY: AVX2, FMA and AVX-512F are present.
            unsafe { softmax512(s) };
            past.fill(0.0);
        }
        let mut heads: Vec<(&[f32], &mut [f32])> = scores
            .chunks_exact(upto)
            .zip(out.chunks_exact_mut(hd))
            .collect();
        if hd.is_multiple_of(64) {
            for group in heads.chunks_mut(6) {
                for off in (0..hd).step_by(64) {
                    // SAFETY: the features are present; every value and output holds `hd`
                    // floats, a multiple of 64 above `off`; every weight row holds one weight
                    // per attended position.
                    unsafe {
                        match group.len() {
                            1 => weighted_sums64::<1>(&kv, group, off),
                            2 => weighted_sums64::<2>(&kv, group, off),
                            3 => weighted_sums64::<3>(&kv, group, off),
                            4 => weighted_sums64::<4>(&kv, group, off),
                            5 => weighted_sums64::<5>(&kv, group, off),
                            _ => weighted_sums64::<6>(&kv, group, off),
                        }
                    }
                }
            }
        } else {
            for group in heads.chunks_mut(3) {
                for off in (0..hd).step_by(16) {
                    // SAFETY: AVX2 and FMA are present; 16 floats above `off` in each.
                    unsafe { weighted_sums16(&kv, group, off) };
                }
            }
        }
    }

    /// Every head's scaled scores over the positions in whole sixteens (heads `16 * D` wide),
    /// sixteen positions at a time for every head of the block, so the keys are read from
    /// memory once, then from the first-level cache. Returns the positions done.
    ///
    /// # Safety
    /// AVX-512F is present; `a.hd == 16 * D`; every key in `kv` holds `a.hd` floats; `scores`
    /// holds `kv.len()` floats per head of `a.q`.
    #[target_feature(enable = "avx2,fma,avx512f")]
    unsafe fn scores16<const D: usize>(
        a: &super::Attend<'_>,
        kv: &[(&[f32], &[f32])],
        scores: &mut [f32],
    ) -> usize {
        let upto = kv.len();
        let scale = _mm512_set1_ps(a.scale);
        let qs: Vec<[__m512; D]> = a
            .q
            .chunks_exact(16 * D)
            // SAFETY: each head holds 16 * D floats.
            .map(|qh| std::array::from_fn(|i| unsafe { _mm512_loadu_ps(qh.as_ptr().add(16 * i)) }))
            .collect();
        let mut t = 0;
        while t + 16 <= upto {
            let keys: [&[f32]; 16] = std::array::from_fn(|p| kv[t + p].0);
            for (j, q) in qs.iter().enumerate() {
                // SAFETY: every key holds 16 * D floats; `j * upto + t + 16 <= (j + 1) * upto`,
                // inside `scores`.
                unsafe {
                    let s = _mm512_mul_ps(dot16(q, &keys), scale);
                    _mm512_storeu_ps(scores.as_mut_ptr().add(j * upto + t), s);
                }
            }
            t += 16;
        }
        t
    }

    /// Sixteen keys' dot products with `q` (`D` sixteens of floats, in registers), in
    /// position order: each the same operations in the same order as [`dot_f32`]. One vector
    /// chain per key over the sixteens (lanes 0-7 are `dot_f32`'s running sum over the first
    /// eight of each sixteen, lanes 8-15 its sum over the second), then, for all sixteen keys
    /// at once, the two sums added and `hsum`'s tree: `x_k = a_k + a_(k+4)`, then
    /// `(x_0 + x_2) + (x_1 + x_3)`. Float addition commutes exactly, so only which values pair
    /// up matters, not the operands' order.
    ///
    /// # Safety
    /// AVX-512F is present; every key holds at least `16 * D` floats.
    #[inline]
    #[target_feature(enable = "avx2,fma,avx512f")]
    unsafe fn dot16<const D: usize>(q: &[__m512; D], k: &[&[f32]; 16]) -> __m512 {
        let acc: [__m512; 16] = std::array::from_fn(|p| {
            let kp = k[p].as_ptr();
            let mut acc = _mm512_setzero_ps();
            for (i, qv) in q.iter().enumerate() {
                // SAFETY: 16 * i + 16 <= 16 * D floats of the key.
                acc = _mm512_fmadd_ps(*qv, unsafe { _mm512_loadu_ps(kp.add(16 * i)) }, acc);
            }
            acc
        });
        // Keys 2m and 2m+1: each one's two running sums added, [a of 2m (8), a of 2m+1 (8)].
        let pairs: [__m512; 8] = std::array::from_fn(|m| {
            let (x, y) = (acc[2 * m], acc[2 * m + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y),
            )
        });
        // Keys 4n..4n+3: x_k = a_k + a_(k+4), one key per 128-bit lane.
        let quads: [__m512; 4] = std::array::from_fn(|n| {
            let (x, y) = (pairs[2 * n], pairs[2 * n + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y),
            )
        });
        // Per 128-bit lane L: [x0 + x2 of quads 0 and 1, x1 + x3 of them], then of 2 and 3.
        let e01 = _mm512_add_ps(
            _mm512_unpacklo_ps(quads[0], quads[1]),
            _mm512_unpackhi_ps(quads[0], quads[1]),
        );
        let e23 = _mm512_add_ps(
            _mm512_unpacklo_ps(quads[2], quads[3]),
            _mm512_unpackhi_ps(quads[2], quads[3]),
        );
        // (x0 + x2) + (x1 + x3): element 4L + n is key 4n + L.
        let (e01, e23) = (_mm512_castps_pd(e01), _mm512_castps_pd(e23));
        let sums = _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(e01, e23)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(e01, e23)),
        );
        // Back to position order: key p from element 4 (p % 4) + p / 4.
        let order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
        _mm512_permutexvar_ps(order, sums)
    }

    /// `out[off..off + 64] = sum_t w[t] * v_t[off..off + 64]` for `G` heads' weights and
    /// outputs, each value's 64 floats loaded once for all of them; per output float the same
    /// fused multiply-adds in the same order as `axpy_f32` into a zeroed output.
    ///
    /// # Safety
    /// AVX-512F is present; `heads` holds `G` (weights, output) pairs, every weight row at
    /// least `kv.len()` floats, every value and output at least `off + 64`.
    #[inline]
    #[target_feature(enable = "avx2,fma,avx512f")]
    unsafe fn weighted_sums64<const G: usize>(
        kv: &[(&[f32], &[f32])],
        heads: &mut [(&[f32], &mut [f32])],
        off: usize,
    ) {
        let w: [&[f32]; G] = std::array::from_fn(|h| heads[h].0);
        let mut acc = [[_mm512_setzero_ps(); 4]; G];
        for (t, (_, v)) in kv.iter().enumerate() {
            let p = v[off..off + 64].as_ptr();
            // SAFETY: 16 * c + 16 <= 64 floats from p, inside the value.
            let vs: [__m512; 4] =
                std::array::from_fn(|c| unsafe { _mm512_loadu_ps(p.add(16 * c)) });
            for h in 0..G {
                let wv = _mm512_set1_ps(w[h][t]);
                for (acc, v) in acc[h].iter_mut().zip(&vs) {
                    *acc = _mm512_fmadd_ps(wv, *v, *acc);
                }
            }
        }
        for (h, acc) in acc.iter().enumerate() {
            let o = &mut heads[h].1[off..off + 64];
            for (c, acc) in acc.iter().enumerate() {
                // SAFETY: 16 * c + 16 <= 64 floats of o.
                unsafe { _mm512_storeu_ps(o.as_mut_ptr().add(16 * c), *acc) };
            }
        }
    }

    /// [`weighted_sums64`] for 16 floats of up to three heads (widths that are a multiple of
    /// 16 but not of 64).
    ///
    /// # Safety
    /// AVX-512F is present; as [`weighted_sums64`], with `off + 16`.
    #[inline]
    #[target_feature(enable = "avx2,fma,avx512f")]
    unsafe fn weighted_sums16(
        kv: &[(&[f32], &[f32])],
        heads: &mut [(&[f32], &mut [f32])],
        off: usize,
    ) {
        let mut acc = [_mm512_setzero_ps(); 3];
        for (t, (_, v)) in kv.iter().enumerate() {
            // SAFETY: 16 floats from off, inside the value.
            let vv = unsafe { _mm512_loadu_ps(v[off..off + 16].as_ptr()) };
            for (acc, (w, _)) in acc.iter_mut().zip(heads.iter()) {
                *acc = _mm512_fmadd_ps(_mm512_set1_ps(w[t]), vv, *acc);
            }
        }
        for (acc, (_, o)) in acc.iter().zip(heads.iter_mut()) {
            // SAFETY: 16 floats of o from off.
            unsafe { _mm512_storeu_ps(o[off..off + 16].as_mut_ptr(), *acc) };
        }
    }

    /// [`exp8`]'s and [`exp16`]'s constants: the range clamped to, `ln 2` in two parts for the
    /// range reduction, and the polynomial's coefficients, highest degree first.
    const EXP_MIN: f32 = -87.0;
    const EXP_MAX: f32 = 88.3;
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    const EXP_POLY: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ];

    /// `e^x` in each lane: Cephes' `expf` (range reduction by `ln 2` in two parts, a degree-5
    /// polynomial), within 2 ulp of the exact value for `x` in [-87, 88.3]; below -87 it is 0,
    /// above 88.3 it is `e^88.3`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp8(x: __m256) -> __m256 {
        let under = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(EXP_MIN));
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(EXP_MIN)),
            _mm256_set1_ps(EXP_MAX),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HIGH), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LOW), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let y = _mm256_add_ps(
            _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        _mm256_and_ps(_mm256_mul_ps(y, pow2), under)
    }

    /// Softmax in place, eight lanes at a time (a short tail is padded with minus infinity,
    /// whose exponential is 0).
    ///
    /// # Safety
    /// AVX2 and FMA are present.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax(s: &mut [f32]) {
        let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
        for c in s.chunks(8) {
            max = _mm256_max_ps(max, load_or(c, f32::NEG_INFINITY));
        }
        let max = _mm256_set1_ps(hmax(max));
        let mut sum = _mm256_setzero_ps();
        for c in s.chunks_mut(8) {
            let e = exp8(_mm256_sub_ps(load_or(c, f32::NEG_INFINITY), max));
            sum = _mm256_add_ps(sum, e);
            store_part(c, e);
        }
        let inv = _mm256_set1_ps(1.0 / hsum(sum));
        for c in s.chunks_mut(8) {
            store_part(c, _mm256_mul_ps(load_or(c, 0.0), inv));
        }
    }

    /// `e^x` in each of sixteen lanes: [`exp8`]'s operations lane for lane, so the same bits.
    #[inline]
    #[target_feature(enable = "avx2,fma,avx512f")]
    fn exp16(x: __m512) -> __m512 {
        let under = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(EXP_MIN));
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(EXP_MIN)),
            _mm512_set1_ps(EXP_MAX),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HIGH), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LOW), r);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        let y = _mm512_add_ps(
            _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r),
            _mm512_set1_ps(1.0),
        );
        let pow2 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        )));
        _mm512_maskz_mov_ps(under, _mm512_mul_ps(y, pow2))
    }

    /// [`softmax`] with its exponentials and scaling sixteen lanes at a time: the same bits,
    /// since the maximum is the same in any order, each exponential is [`exp8`]'s, the sum
    /// still adds eight lanes at a time in order (a sixteen's low eight, then its high eight,
    /// then the tail as `softmax` does it) and the scaling is lane by lane.
    ///
    /// # Safety
    /// AVX2, FMA and AVX-512F are present.
    #[target_feature(enable = "avx2,fma,avx512f")]
    pub unsafe fn softmax512(s: &mut [f32]) {
        let whole = s.len() / 16 * 16;
        let (body, tail) = s.split_at_mut(whole);
        let mut max16 = _mm512_set1_ps(f32::NEG_INFINITY);
        for c in body.chunks_exact(16) {
            // SAFETY: sixteen floats.
            max16 = _mm512_max_ps(max16, unsafe { _mm512_loadu_ps(c.as_ptr()) });
        }
        let mut max = _mm512_reduce_max_ps(max16);
        for c in tail.chunks(8) {
            max = max.max(hmax(load_or(c, f32::NEG_INFINITY)));
        }
        let (max8, max16) = (_mm256_set1_ps(max), _mm512_set1_ps(max));
        let mut sum = _mm256_setzero_ps();
        for c in body.chunks_exact_mut(16) {
            // SAFETY: sixteen floats.
            let e = exp16(_mm512_sub_ps(unsafe { _mm512_loadu_ps(c.as_ptr()) }, max16));
            // SAFETY: sixteen floats.
            unsafe { _mm512_storeu_ps(c.as_mut_ptr(), e) };
            sum = _mm256_add_ps(sum, _mm512_castps512_ps256(e));
            let high = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(e));
            sum = _mm256_add_ps(sum, _mm256_castpd_ps(high));
        }
        for c in tail.chunks_mut(8) {
            let e = exp8(_mm256_sub_ps(load_or(c, f32::NEG_INFINITY), max8));
            sum = _mm256_add_ps(sum, e);
            store_part(c, e);
        }
        let inv = 1.0 / hsum(sum);
        let inv16 = _mm512_set1_ps(inv);
        for c in body.chunks_exact_mut(16) {
            // SAFETY: sixteen floats.
            unsafe {
                _mm512_storeu_ps(
                    c.as_mut_ptr(),
                    _mm512_mul_ps(_mm512_loadu_ps(c.as_ptr()), inv16),
                );
            }
        }
        let inv8 = _mm256_set1_ps(inv);
        for c in tail.chunks_mut(8) {
            store_part(c, _mm256_mul_ps(load_or(c, 0.0), inv8));
        }
    }

    /// Up to eight floats, the lanes past `c`'s end `pad`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn load_or(c: &[f32], pad: f32) -> __m256 {
        if c.len() == 8 {
            // SAFETY: eight floats.
            unsafe { _mm256_loadu_ps(c.as_ptr()) }
        } else {
            let mut b = [pad; 8];
            b[..c.len()].copy_from_slice(c);
            // SAFETY: eight floats.
            unsafe { _mm256_loadu_ps(b.as_ptr()) }
        }
    }

    /// The first `c.len()` (at most eight) lanes of `v` into `c`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn store_part(c: &mut [f32], v: __m256) {
        let mut b = [0f32; 8];
        // SAFETY: eight floats.
        unsafe { _mm256_storeu_ps(b.as_mut_ptr(), v) };
        c.copy_from_slice(&b[..c.len()]);
    }

    /// `ln(sum_i e^(x_i))`: the maximum, then the exponentials with [`exp8`] eight lanes at a
    /// time (a short tail padded with minus infinity, whose exponential is 0), summed in
    /// double precision.
    ///
    /// # Safety
    /// AVX2 and FMA are present.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn log_sum_exp(x: &[f32]) -> f64 {
        let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
        for c in x.chunks(8) {
            max = _mm256_max_ps(max, load_or(c, f32::NEG_INFINITY));
        }
        let top = hmax(max);
        let max = _mm256_set1_ps(top);
        let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        for c in x.chunks(8) {
            let e = exp8(_mm256_sub_ps(load_or(c, f32::NEG_INFINITY), max));
            lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
            hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
        }
        let mut lanes = [0f64; 4];
        // SAFETY: four doubles into a four-double array.
        unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_add_pd(lo, hi)) };
        f64::from(top) + lanes.iter().sum::<f64>().ln()
    }

    /// `out[i] = silu(gate[i]) * up[i]`, `silu(g) = g / (1 + e^-g)`, with [`exp8`].
    ///
    /// # Safety
    /// AVX2 and FMA are present; the three have equal lengths.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let one = _mm256_set1_ps(1.0);
        for ((g, u), o) in gate.chunks(8).zip(up.chunks(8)).zip(out.chunks_mut(8)) {
            let (gv, uv) = (load_or(g, 0.0), load_or(u, 0.0));
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
            let v = _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), uv);
            store_part(o, v);
        }
    }

    /// [`super::rotate_pairs`] a vector at a time, at one width: the 256-bit and 512-bit
    /// kernels are this one body with that width's intrinsics.
    macro_rules! rotate_pairs_kernel {
        ($(#[$doc:meta])* $name:ident, $features:literal, $lanes:literal,
         $load:ident, $permute:ident, $mul:ident, $add:ident, $store:ident) => {
            $(#[$doc])*
            #[target_feature(enable = $features)]
            pub unsafe fn $name(v: &mut [f32], cos2: &[f32], sin2: &[f32]) {
                for head in v.chunks_exact_mut(cos2.len()) {
                    let lanes = head.chunks_exact_mut($lanes).zip(cos2.chunks_exact($lanes));
                    for ((h, c), s) in lanes.zip(sin2.chunks_exact($lanes)) {
                        // SAFETY: a vector's floats in each (`chunks_exact`), unaligned access.
                        unsafe {
                            let x = $load(h.as_ptr());
                            let swapped = $permute::<0b1011_0001>(x);
                            let c = $mul(x, $load(c.as_ptr()));
                            let s = $mul(swapped, $load(s.as_ptr()));
                            $store(h.as_mut_ptr(), $add(c, s));
                        }
                    }
                }
            }
        };
    }

    rotate_pairs_kernel!(
        /// [`super::rotate_pairs`] eight values (four pairs) at a time.
        ///
        /// # Safety
        /// AVX2 and FMA are present; `v`'s length is a multiple of that of `cos2` and `sin2`,
        /// which are equal and a multiple of 8.
        rotate_pairs, "avx2,fma", 8,
        _mm256_loadu_ps, _mm256_permute_ps, _mm256_mul_ps, _mm256_add_ps, _mm256_storeu_ps
    );

    rotate_pairs_kernel!(
        /// [`super::rotate_pairs`] sixteen values (eight pairs) at a time.
        ///
        /// # Safety
        /// AVX-512F is present; `v`'s length is a multiple of that of `cos2` and `sin2`, which
        /// are equal and a multiple of 16.
        rotate_pairs16, "avx512f", 16,
        _mm512_loadu_ps, _mm512_permute_ps, _mm512_mul_ps, _mm512_add_ps, _mm512_storeu_ps
    );

    /// One block of 32 activations quantized: the scale `amax / 127` and each value times its
    /// inverse rounded half away from zero (as `f32::round`), the same bits as the portable
    /// code. Returns the scale and the sum of the quantized values.
    ///
    /// # Safety
    /// AVX2 and FMA are present; `x` and `q` hold 32 values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
        debug_assert!(x.len() == 32 && q.len() == 32);
        let sign = _mm256_set1_ps(-0.0);
        // SAFETY: 32 floats.
        let v: [__m256; 4] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * i)) });
        let a = v.map(|v| _mm256_andnot_ps(sign, v));
        let amax = hmax(_mm256_max_ps(
            _mm256_max_ps(a[0], a[1]),
            _mm256_max_ps(a[2], a[3]),
        ));
        let d = amax / 127.0;
        let inv = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let half = _mm256_set1_ps(0.5);
        let one = _mm256_set1_ps(1.0);
        let ints = v.map(|v| {
            let x = _mm256_mul_ps(v, inv);
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
            // |x - trunc(x)| is exact; at 0.5 or more the value rounds away from zero.
            let away =
                _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_andnot_ps(sign, _mm256_sub_ps(x, t)), half);
            let step = _mm256_or_ps(_mm256_and_ps(x, sign), one);
            _mm256_cvtps_epi32(_mm256_add_ps(t, _mm256_and_ps(away, step)))
        });
        let sum = _mm256_add_epi32(
            _mm256_add_epi32(ints[0], ints[1]),
            _mm256_add_epi32(ints[2], ints[3]),
        );
        let s = _mm_add_epi32(
            _mm256_extracti128_si256::<1>(sum),
            _mm256_castsi256_si128(sum),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        // Packing works per 128-bit half, so the fours of values come out as 0, 2, 4, 6,
        // 1, 3, 5, 7 (four values per 32-bit lane); the permute puts them back in order.
        let w01 = _mm256_packs_epi32(ints[0], ints[1]);
        let w23 = _mm256_packs_epi32(ints[2], ints[3]);
        let b = _mm256_packs_epi16(w01, w23);
        let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: 32 bytes.
        unsafe { _mm256_storeu_si256(q.as_mut_ptr().cast(), b) };
        (d, _mm_cvtsi128_si32(s))
    }

    kernel!(tile_avx2, "avx2,fma", |a, b| _mm256_madd_epi16(
        _mm256_maddubs_epi16(a, b),
        _mm256_set1_epi16(1)
    ));
    kernel!(tile_vnni, "avx2,fma,avxvnni", |a, b| {
        _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a, b)
    });

    /// The tile of the kernels above with AVX-512: two blocks per 512-bit vector (one
    /// `vpdpbusd` over 64 bytes, one conversion, one multiply and one fused multiply-add for
    /// both), so half the instructions per block; an odd last block fills the lower half and
    /// zeros the upper. Each output is the same products in a different order of float
    /// additions (the two blocks' lanes meet at the end), so it agrees with the 256-bit
    /// kernels within rounding, not bit for bit; like them, it is the same in any batch.
    ///
    /// # Safety
    /// As for the kernels above, on a CPU with AVX-512F, AVX-512BW and AVX-512 VNNI.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
    pub unsafe fn tile_avx512<const R: usize, const N: usize>(
        kind: Kind,
        w: [WRow<'_>; R],
        x: [XRow<'_>; N],
    ) -> [[f32; N]; R] {
        let nb = w[0].d.len();
        let mask = _mm256_set1_epi8(0x0f);
        let mut acc = [[_mm512_setzero_ps(); N]; R];
        for b in (0..nb).step_by(2) {
            let two = b + 1 < nb;
            let mut wu = [_mm512_setzero_si512(); R];
            let mut wneg: [__mmask64; R] = [0; R];
            let mut wd = [_mm512_setzero_ps(); R];
            for r in 0..R {
                let d1 = if two { w[r].d[b + 1] } else { 0.0 };
                wd[r] = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                    _mm512_castps_pd(_mm512_set1_ps(w[r].d[b])),
                    _mm256_castps_pd(_mm256_set1_ps(d1)),
                ));
                match kind {
                    Kind::Q4_1 => {
                        // SAFETY: blocks b (and b + 1 when `two`) lie inside w[r].q, 16
                        // bytes each.
                        let raw = unsafe {
                            let p = w[r].q.as_ptr().add(b * 16);
                            if two {
                                _mm256_loadu_si256(p.cast())
                            } else {
                                _mm256_zextsi128_si256(_mm_loadu_si128(p.cast()))
                            }
                        };
                        let lo = _mm256_and_si256(raw, mask);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), mask);
                        // [lo b, lo b+1, hi b, hi b+1] in 128-bit lanes, reordered to the
                        // activations' [b: 0..16, 16..32; b+1: 0..16, 16..32].
                        let v = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                        wu[r] = _mm512_shuffle_i64x2::<0b11_01_10_00>(v, v);
                    }
                    Kind::Q8_0 => {
                        // SAFETY: blocks b (and b + 1 when `two`) lie inside w[r].q, 32
                        // bytes each.
                        let v = unsafe {
                            let p = w[r].q.as_ptr().add(b * 32);
                            if two {
                                _mm512_loadu_si512(p.cast())
                            } else {
                                _mm512_zextsi256_si512(_mm256_loadu_si256(p.cast()))
                            }
                        };
                        // Unsigned magnitudes; the signs move onto the activations.
                        wu[r] = _mm512_abs_epi8(v);
                        wneg[r] = _mm512_movepi8_mask(v);
                    }
                }
            }
            for j in 0..N {
                // SAFETY: blocks b (and b + 1 when `two`) and their broadcast scales lie
                // inside x[j].
                let (xv, xd) = unsafe {
                    let (q, dv) = (x[j].q.as_ptr().add(b * 32), x[j].dv.as_ptr().add(b * 8));
                    if two {
                        (_mm512_loadu_si512(q.cast()), _mm512_loadu_ps(dv))
                    } else {
                        (
                            _mm512_zextsi256_si512(_mm256_loadu_si256(q.cast())),
                            _mm512_zextps256_ps512(_mm256_loadu_ps(dv)),
                        )
                    }
                };
                for r in 0..R {
                    let xs = match kind {
                        Kind::Q8_0 => _mm512_mask_sub_epi8(xv, wneg[r], _mm512_setzero_si512(), xv),
                        Kind::Q4_1 => xv,
                    };
                    let sum =
                        _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), wu[r], xs));
                    acc[r][j] = _mm512_fmadd_ps(_mm512_mul_ps(sum, xd), wd[r], acc[r][j]);
                }
            }
        }
        let mut out = [[0f32; N]; R];
        for r in 0..R {
            for j in 0..N {
                let a = acc[r][j];
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
                out[r][j] = hsum(_mm256_add_ps(_mm512_castps512_ps256(a), hi));
                if kind == Kind::Q4_1 {
                    out[r][j] += w[r].m.iter().zip(x[j].s).map(|(m, s)| m * s).sum::<f32>();
                }
            }
        }
        out
    }
}

/// `a . b` over f32 (attention scores), vectorized where the CPU allows.
pub fn dot_f32(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    match isa.0 {
        // SAFETY: these levels are only made by `Isa::available` on CPUs with AVX2 and FMA;
        // the lengths are equal (checked above).
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::AvxVnni | Level::Avx512 | Level::Bf16 | Level::Amx => unsafe {
            x86::dot_f32(a, b)
        },
        _ => {
            let mut acc = [0f32; 8];
            let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
            let (ra, rb) = (ca.remainder(), cb.remainder());
            for (x, y) in ca.zip(cb) {
                for i in 0..8 {
                    acc[i] += x[i] * y[i];
                }
            }
            acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
        }
    }
}

/// `y += a * x` over f32 (attention's weighted sum of values).
pub fn axpy_f32(isa: Isa, y: &mut [f32], a: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len());
    match isa.0 {
        // SAFETY: as in `dot_f32`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::AvxVnni | Level::Avx512 | Level::Bf16 | Level::Amx => unsafe {
            x86::axpy_f32(y, a, x)
        },
        _ => {
            for (o, v) in y.iter_mut().zip(x) {
                *o += a * v;
            }
        }
    }
}

/// One grouped-query attention: the query heads that share one key/value head, each attending
/// over its sequence's first `upto` positions (heads of several rows of one sequence, each
/// row's own count: the keys and values are then read once for all of them).
pub struct Attend<'a> {
    /// The heads' queries, `hd` floats each, one after another.
    pub q: &'a [f32],
    /// Floats per head.
    pub hd: usize,
    /// The sequence's keys and values in runs of positions, `stride` floats per position.
    pub runs: &'a [(&'a [f32], &'a [f32])],
    /// Floats per position in `runs`.
    pub stride: usize,
    /// Where this key/value head starts within a position.
    pub off: usize,
    /// Positions each head attends (its row's own included), one per head in `q`.
    pub upto: &'a [usize],
    /// The scale of the scores, 1/sqrt(hd).
    pub scale: f32,
}

impl Attend<'_> {
    /// The most positions any head attends.
    fn most(&self) -> usize {
        self.upto.iter().copied().max().unwrap_or(0)
    }

    /// This key/value head's key and value at each position any head attends, in order.
    fn positions(&self) -> Vec<(&[f32], &[f32])> {
        let (off, hd, stride) = (self.off, self.hd, self.stride);
        let most = self.most();
        let mut out = Vec::with_capacity(most);
        for (k, v) in self.runs {
            let n = (k.len() / stride).min(most - out.len());
            for p in 0..n {
                let at = p * stride + off;
                out.push((&k[at..at + hd], &v[at..at + hd]));
            }
        }
        out
    }
}

/// Softmax in place (the scores of one head): vectorized where the CPU allows, with an
/// exponential within 2 ulp of the exact one (not the C library's).
pub fn softmax(isa: Isa, s: &mut [f32]) {
    match isa.0 {
        // SAFETY: these levels are only made by `Isa::available` on CPUs with AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::AvxVnni | Level::Avx512 | Level::Bf16 | Level::Amx => unsafe {
            x86::softmax(s)
        },
        _ => softmax_scalar(s),
    }
}

/// `ln(sum_i e^(x_i))`, the log-probabilities' normalizer over a row of logits: vectorized as
/// [`softmax`] is, summed in double precision. A model's log-probability of token `t` is
/// `x[t] - log_sum_exp(x)`; compute it once per row, not once per token read from the row.
pub fn log_sum_exp(isa: Isa, x: &[f32]) -> f64 {
    match isa.0 {
        // SAFETY: these levels are only made by `Isa::available` on CPUs with AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::AvxVnni | Level::Avx512 | Level::Bf16 | Level::Amx => unsafe {
            x86::log_sum_exp(x)
        },
        _ => {
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = x.iter().map(|&l| f64::from(l - max).exp()).sum();
            f64::from(max) + sum.ln()
        }
    }
}

/// `out[i] = silu(gate[i]) * up[i]` with `silu(g) = g / (1 + e^-g)`, the feed-forward's
/// gate; vectorized as [`softmax`] is.
///
/// # Panics
/// If the lengths differ.
pub fn silu_mul(isa: Isa, gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == up.len() && up.len() == out.len());
    match isa.0 {
        // SAFETY: as in `softmax`; the lengths are equal (checked above).
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::AvxVnni | Level::Avx512 | Level::Bf16 | Level::Amx => unsafe {
            x86::silu_mul(gate, up, out)
        },
        _ => {
            for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
                *o = g / (1.0 + (-g).exp()) * u;
            }
        }
    }
}

fn softmax_scalar(s: &mut [f32]) {
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in s.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in s.iter_mut() {
        *x *= inv;
    }
}

/// Grouped-query attention of `a`'s heads, each head's weighted sum of values into its `hd`
/// floats of `out`. The same arithmetic, in the same order, as one [`dot_f32`] per key and one
/// [`axpy_f32`] per value for each head; on AVX2 in one call instead of two per position.
///
/// # Panics
/// If the shapes disagree: `q` not whole heads, `out` not `q`'s length, `upto` not one count
/// per head, a run not whole positions, the head outside a position, or a head attending
/// none or more positions than the runs hold.
pub fn attend_group(isa: Isa, a: &Attend<'_>, out: &mut [f32]) {
    assert!(a.hd > 0 && a.q.len().is_multiple_of(a.hd) && out.len() == a.q.len());
    assert_eq!(
        a.upto.len(),
        a.q.len() / a.hd,
        "one position count per head"
    );
    assert!(a.off + a.hd <= a.stride);
    assert!(
        a.runs
            .iter()
            .all(|(k, v)| k.len() == v.len() && k.len().is_multiple_of(a.stride))
    );
    let held: usize = a.runs.iter().map(|(k, _)| k.len() / a.stride).sum();
    let fewest = a.upto.iter().copied().min().unwrap_or(1);
    assert!(
        fewest >= 1 && a.most() <= held,
        "attending {} of {held} positions",
        a.most()
    );
    match isa.0 {
        // SAFETY: these levels are only made by `Isa::available` on CPUs with AVX2 and FMA;
        // the shapes are checked above.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::AvxVnni => unsafe { x86::attend_group(a, out) },
        // SAFETY: these levels are only made on CPUs that also have AVX-512F.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Bf16 | Level::Amx => unsafe { x86::attend_group512(a, out) },
        _ => {
            let kv = a.positions();
            let heads = a.q.chunks_exact(a.hd).zip(out.chunks_exact_mut(a.hd));
            for ((qh, oh), &upto) in heads.zip(a.upto) {
                let kv = &kv[..upto];
                let mut scores: Vec<f32> = kv
                    .iter()
                    .map(|(k, _)| dot_f32(isa, qh, k) * a.scale)
                    .collect();
                softmax(isa, &mut scores);
                oh.fill(0.0);
                for ((_, v), &w) in kv.iter().zip(&scores) {
                    axpy_f32(isa, oh, w, v);
                }
            }
        }
    }
}

fn tile<const R: usize, const N: usize>(
    isa: Isa,
    kind: Kind,
    w: [WRow<'_>; R],
    x: [XRow<'_>; N],
) -> [[f32; N]; R] {
    let nb = w[0].d.len();
    let per = if kind == Kind::Q4_1 { 16 } else { 32 };
    assert!(w.iter().all(|r| r.d.len() == nb
        && r.q.len() >= nb * per
        && (kind == Kind::Q8_0 || r.m.len() >= nb)));
    assert!(x.iter().all(|r| r.q.len() >= nb * 32
        && r.d.len() >= nb
        && r.s.len() >= nb
        && r.dv.len() >= nb * 8));
    match isa.0 {
        // SAFETY: these levels are only made by `Isa::available` on a CPU with the features,
        // and the lengths were checked above.
        // `matmul` runs AMX's own kernel; AMX CPUs have AVX2 for anything else.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::Amx => unsafe { x86::tile_avx2(kind, w, x) },
        #[cfg(target_arch = "x86_64")]
        Level::AvxVnni => unsafe { x86::tile_vnni(kind, w, x) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::tile_avx512(kind, w, x) },
        _ => tile_scalar(kind, w, x),
    }
}

/// Where a matmul writes: `rows` outputs per activation row, activation-row-major. Made only
/// by `matmul`, from a buffer it borrows mutably for the whole team run.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    rows: usize,
    n: usize,
}

// SAFETY: the team's members write through an `Out` at once, but to disjoint weight rows
// (each piece of rows goes to one member), and the buffer outlives the run (`Team::run` waits).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    fn set(self, j: usize, r: usize, v: f32) {
        assert!(j < self.n && r < self.rows, "matmul output index");
        // SAFETY: the index is inside the `n * rows` buffer the pointer was made from (checked
        // above), which outlives the matmul; members write disjoint weight rows.
        unsafe { *self.ptr.add(j * self.rows + r) = v };
    }
}

/// Weight rows `r0..r1` against every activation row. Every output is the same sum, in the
/// same order, whatever the tiles.
fn rows_into(isa: Isa, w: &QMatrix, x: &QActs, r0: usize, r1: usize, out: Out) {
    let n = x.n;
    let mut r = r0;
    // Four weight rows against one activation row while fewer than four remain (a
    // single decoding sequence): four independent sums keep the core busy.
    while n < 4 && r + 4 <= r1 {
        weight_rows::<4>(isa, w, x, r, out);
        r += 4;
    }
    // Against four activation rows: with AVX-512's 32 registers four weight rows, otherwise
    // two, so each activation block loaded is used four or two times (the activations of a
    // long batch live in L2, not L1).
    while isa.0 == Level::Avx512 && n >= 4 && r + 4 <= r1 {
        weight_rows::<4>(isa, w, x, r, out);
        r += 4;
    }
    while n >= 4 && r + 2 <= r1 {
        weight_rows::<2>(isa, w, x, r, out);
        r += 2;
    }
    while r < r1 {
        weight_rows::<1>(isa, w, x, r, out);
        r += 1;
    }
}

/// Weight rows `r..r + R` against every activation row, four at a time, then one at a time.
fn weight_rows<const R: usize>(isa: Isa, w: &QMatrix, x: &QActs, r: usize, out: Out) {
    let wr: [WRow<'_>; R] = std::array::from_fn(|i| w_row(w, r + i));
    let mut j = 0;
    while j + 4 <= x.n {
        let xs: [XRow<'_>; 4] = std::array::from_fn(|k| x_row(x, j + k));
        let v = tile(isa, w.kind, wr, xs);
        for (i, vi) in v.iter().enumerate() {
            for (k, vk) in vi.iter().enumerate() {
                out.set(j + k, r + i, *vk);
            }
        }
        j += 4;
    }
    while j < x.n {
        let v = tile(isa, w.kind, wr, [x_row(x, j)]);
        for (i, vi) in v.iter().enumerate() {
            out.set(j, r + i, vi[0]);
        }
        j += 1;
    }
}

/// Rotates each pair `(a, b)` of adjacent values in every `cos2.len()`-wide head of `v` by its
/// angle: `(a cos - b sin, a sin + b cos)`, given `cos2`, each pair's cosine twice, and
/// `sin2`, its sine negated then as is (`[-sin, sin]`). Each value is computed as
/// `v[i] * cos2[i] + v[i ^ 1] * sin2[i]`, two rounded products and a rounded sum, never
/// fused: the same bits as the formula (a product with a negated factor is the negated
/// product, and `x + -y` is `x - y`), on every kernel set.
pub fn rotate_pairs(isa: Isa, v: &mut [f32], cos2: &[f32], sin2: &[f32]) {
    let hd = cos2.len();
    assert!(
        sin2.len() == hd && hd.is_multiple_of(2) && v.len().is_multiple_of(hd),
        "rotating {} values by {hd} cosines and {} sines",
        v.len(),
        sin2.len()
    );
    match isa.0 {
        // SAFETY: these levels are only made on CPUs that also have AVX-512F; the lengths
        // are checked above and here.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Bf16 | Level::Amx if hd.is_multiple_of(16) => unsafe {
            x86::rotate_pairs16(v, cos2, sin2)
        },
        // SAFETY: these levels are only made on CPUs with AVX2 and FMA; lengths as above.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::AvxVnni | Level::Avx512 | Level::Bf16 | Level::Amx
            if hd.is_multiple_of(8) =>
        unsafe { x86::rotate_pairs(v, cos2, sin2) },
        _ => {
            for head in v.chunks_exact_mut(hd) {
                let pairs = head.chunks_exact_mut(2).zip(cos2.chunks_exact(2));
                for ((p, c), s) in pairs.zip(sin2.chunks_exact(2)) {
                    let (a, b) = (p[0], p[1]);
                    p[0] = a * c[0] + b * s[0];
                    p[1] = b * c[1] + a * s[1];
                }
            }
        }
    }
}

/// The model's threads: the caller and `size - 1` helpers, which spin briefly between jobs (a
/// decode step runs over a hundred matmuls and attentions a few tens of microseconds apart,
/// too close for a thread pool's sleep and wake-up) and park on a condition variable when
/// idle. Matmuls and attention both run on it, so a forward pass has one set of threads.
///
/// A job is handed to the helpers as a raw pointer to a borrowed closure. [`Team::run`] takes
/// `&mut self`, so one job runs at a time, and it neither returns nor unwinds before every
/// helper that joined the job has finished with it, and once the caller's own share is done
/// no helper can join any more, so the borrow outlives every use: that is the invariant the
/// `unsafe` below relies on. A helper joins by counting itself in `state` for the job's epoch
/// while the job is open; one that wakes after the caller closed it skips the job without
/// touching it (the pieces were all taken), so the caller never waits for a helper the system
/// has not scheduled yet. A helper's panic is caught (the helper lives on) and raised again in
/// the caller once every member that joined is done.
pub struct Team {
    shared: Arc<Shared>,
    helpers: Vec<std::thread::JoinHandle<()>>,
}

/// A job with its borrow's lifetime erased; valid only while `Team::run` waits for it.
#[derive(Clone, Copy)]
struct Task(*const (dyn Fn(usize) + Sync));

// SAFETY: the closure is `Sync`, so calling it from a helper is allowed; the pointer is only
// dereferenced while the publishing caller waits in `Team::run` (see `Team`).
unsafe impl Send for Task {}

struct Shared {
    /// Bumped once per job; helpers run a job when they see a new value.
    epoch: AtomicU64,
    /// The current job's epoch (high 32 bits), whether the caller closed it ([`CLOSED`]) and
    /// the helpers that joined it (the low bits): one word, so joining and closing are one
    /// atomic step each and a helper that read an older epoch cannot join a newer job.
    state: AtomicU64,
    /// Helpers finished with the current job (of those that joined it).
    done: AtomicUsize,
    /// Whether a helper panicked in the current job.
    panicked: AtomicBool,
    task: Mutex<Option<Task>>,
    /// Parked helpers wait here.
    park: Mutex<usize>,
    wake: Condvar,
    stop: AtomicBool,
}

/// The bit of [`Shared::state`] that says the current job takes no more helpers.
const CLOSED: u64 = 1 << 31;
/// The bits of [`Shared::state`] that count the helpers that joined.
const JOINED: u64 = CLOSED - 1;

/// Closes the job, on return and on unwind alike, waits until every helper that joined it is
/// done, then takes the job's pointer back.
struct Finish<'a> {
    shared: &'a Shared,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let joined = (self.shared.state.fetch_or(CLOSED, Ordering::AcqRel) & JOINED) as usize;
        while self.shared.done.load(Ordering::Acquire) < joined {
            std::hint::spin_loop();
        }
        *self.shared.task.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Team {
    /// A team of `threads` (at least one: the caller).
    pub fn new(threads: usize) -> Team {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            state: AtomicU64::new(CLOSED),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            task: Mutex::new(None),
            park: Mutex::new(0),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let helpers = (1..threads.max(1))
            .map(|k| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("hx-model-{k}"))
                    .spawn(move || helper(&shared, k))
                    .expect("spawning a model thread")
            })
            .collect();
        Team { shared, helpers }
    }

    /// Threads in the team, the caller included.
    pub fn size(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Runs `job(0)` on the caller and `job(k)` on each helper `k` in `1..size()` that comes
    /// for the job before the caller's own call returns; a helper that comes later skips it.
    /// So `job` must be a share of work that any member may leave to the others (as
    /// [`Team::for_each_piece`]'s are). Returns when every member that ran `job` has
    /// returned. If any of them panics, this panics, after all have finished.
    fn run(&mut self, job: &(dyn Fn(usize) + Sync)) {
        if self.helpers.is_empty() {
            job(0);
            return;
        }
        let sh = &*self.shared;
        // SAFETY: only the lifetime changes. Helpers dereference the pointer only for this
        // epoch's job, and `Finish` keeps this function from returning or unwinding until all
        // of them are done with it, so `job` outlives every use.
        let task = Task(unsafe {
            std::mem::transmute::<
                *const (dyn Fn(usize) + Sync + '_),
                *const (dyn Fn(usize) + Sync + 'static),
            >(job)
        });
        *sh.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        sh.done.store(0, Ordering::Release);
        sh.panicked.store(false, Ordering::Release);
        let epoch = sh.epoch.load(Ordering::Relaxed) + 1;
        // The state first, so a helper that sees the new epoch finds the job open.
        sh.state
            .store((epoch & 0xffff_ffff) << 32, Ordering::Release);
        sh.epoch.store(epoch, Ordering::Release);
        let parked = *sh.park.lock().unwrap_or_else(|p| p.into_inner());
        if parked > 0 {
            sh.wake.notify_all();
        }
        {
            let _finish = Finish { shared: sh };
            job(0);
        }
        if sh.panicked.load(Ordering::Acquire) {
            panic!("a model thread panicked (its message is above)");
        }
    }

    /// Calls `f(i)` for every `i` in `0..pieces`, once each, spread over the team: each
    /// member takes the next piece as it comes free, so a member the system deschedules (the
    /// same cores run the worlds and the harnesses) holds up one piece, not a fixed share.
    pub fn for_each_piece(&mut self, pieces: usize, f: &(dyn Fn(usize) + Sync)) {
        let next = AtomicUsize::new(0);
        self.run(&|_| {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= pieces {
                    break;
                }
                f(i);
            }
        });
    }

    /// Calls `f(i, piece)` for every `chunk`-long piece `i` of `data` (the last may be
    /// shorter), spread over the team as [`Team::for_each_piece`] does.
    pub fn for_each_chunk_mut<T: Send>(
        &mut self,
        data: &mut [T],
        chunk: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        assert!(chunk > 0, "chunk length");
        let len = data.len();
        let base = Base(data.as_mut_ptr());
        self.for_each_piece(len.div_ceil(chunk), &|i| {
            let base = &base;
            let start = i * chunk;
            let end = (start + chunk).min(len);
            // SAFETY: `start..end` lies inside `data`, which this call borrows mutably until
            // every member is done; `for_each_piece` hands out each `i` once, so no two
            // slices overlap.
            let piece = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), end - start) };
            f(i, piece);
        });
    }
}

/// The start of a slice whose disjoint pieces the team's members take.
struct Base<T>(*mut T);

// SAFETY: members only make disjoint slices from it (`for_each_chunk_mut`), of a `T: Send`.
unsafe impl<T: Send> Sync for Base<T> {}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        {
            let _guard = self.shared.park.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_all();
        }
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
    }
}

fn helper(sh: &Shared, k: usize) {
    let mut seen = 0u64;
    loop {
        // Spin for a job (about 100 microseconds), then park.
        let mut spins = 0u32;
        let epoch = loop {
            let e = sh.epoch.load(Ordering::Acquire);
            if e != seen {
                break e;
            }
            spins += 1;
            if spins < 20_000 {
                std::hint::spin_loop();
            } else {
                let mut parked = sh.park.lock().unwrap_or_else(|p| p.into_inner());
                *parked += 1;
                while sh.epoch.load(Ordering::Acquire) == seen {
                    parked = sh.wake.wait(parked).unwrap_or_else(|p| p.into_inner());
                }
                *parked -= 1;
                spins = 0;
            }
        };
        seen = epoch;
        if sh.stop.load(Ordering::Acquire) {
            return;
        }
        if !join(sh, epoch) {
            continue;
        }
        let task = *sh.task.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(Task(job)) = task {
            // SAFETY: the caller that published this job waits in `Team::run` until this
            // helper counts itself done below (see `Team`).
            let job = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| job(k))).is_err() {
                sh.panicked.store(true, Ordering::Release);
            }
        }
        sh.done.fetch_add(1, Ordering::AcqRel);
    }
}

/// Counts a helper in the job of `epoch` if that job is still the current one and open.
fn join(sh: &Shared, epoch: u64) -> bool {
    let mut s = sh.state.load(Ordering::Acquire);
    loop {
        if s >> 32 != epoch & 0xffff_ffff || s & CLOSED != 0 {
            return false;
        }
        match sh
            .state
            .compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return true,
            Err(now) => s = now,
        }
    }
}

/// `out[j * w.rows + r] = dot(w row r, x row j)` for every activation row `j`, split over the
/// team by weight rows.
pub fn matmul(isa: Isa, w: &QMatrix, x: &QActs, out: &mut Vec<f32>, team: &mut Team) {
    assert_eq!(w.cols, x.cols, "matmul width");
    let (rows, n) = (w.rows, x.n);
    // Every output is set below, so a reused buffer is not cleared first.
    fit(out, rows * n);
    let dst = Out {
        ptr: out.as_mut_ptr(),
        rows,
        n,
    };
    #[cfg(target_arch = "x86_64")]
    if isa.0 == Level::Amx {
        let weights = w.amx.get_or_init(|| amx::Weights::new(w));
        let tiles = amx::Tiles::new(x);
        let piece = 4 * amx::ROWS;
        team.for_each_piece(rows.div_ceil(piece), &|i| {
            let r0 = i * piece;
            let r1 = (r0 + piece).min(rows);
            // SAFETY: this level is only made by `Isa::available` when `amx::supported()`;
            // `weights` are `w`'s and `tiles` are `x`'s, whose width is `w`'s (checked
            // above); `r0` is a multiple of 16 and `r1` at most `w.rows`.
            unsafe { amx::rows_into(w.kind, weights, x, &tiles, r0, r1, dst) };
        });
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa.0 == Level::Bf16 {
        assert_eq!(
            x.h.len(),
            n * w.cols,
            "activations rounded for the BF16 kernels (QActs made with this Isa)"
        );
        let weights = w.bf16.get_or_init(|| bf16::Weights::new(w));
        let groups = weights.groups();
        // Pieces of four groups of 16 rows (whole tiles): every output is the same sum
        // whichever member computes it.
        team.for_each_piece(groups.div_ceil(bf16::GROUPS), &|i| {
            let g0 = i * bf16::GROUPS;
            bf16::rows_into(weights, &x.h, n, g0, (g0 + bf16::GROUPS).min(groups), dst);
        });
        return;
    }
    // Pieces of 32 rows (whole four-row tiles): every output is the same sum whichever
    // member computes it.
    let piece = 32;
    team.for_each_piece(rows.div_ceil(piece), &|i| {
        let r0 = i * piece;
        rows_into(isa, w, x, r0, (r0 + piece).min(rows), dst);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_values_convert() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    }

    fn q4_1_bytes(rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
        let mut b = Vec::new();
        for _ in 0..rows * cols / 32 {
            b.extend(0x2c00u16.to_le_bytes()); // d = 1/16
            b.extend(0xb800u16.to_le_bytes()); // m = -0.5
            for _ in 0..16 {
                b.push(((lcg(seed) + 0.5) * 255.0) as u8);
            }
        }
        b
    }

    /// A row's product does not depend on the rows batched with it: every tile shape (four
    /// weight rows by one activation row, two by four, one by four, one by one) sums each
    /// output in the same order, so an episode plays the same whatever else the engine runs.
    #[test]
    fn a_rows_product_is_the_same_in_any_batch() {
        let (rows, cols) = (37, 96);
        let mut seed = 11;
        let w4 = QMatrix::from_q4_1(&q4_1_bytes(rows, cols, &mut seed), rows, cols);
        let wf: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut seed)).collect();
        let w8 = QMatrix::from_f32(&wf, rows, cols);
        let mut team = Team::new(2);
        for isa in Isa::available() {
            for w in [&w4, &w8] {
                for n in [4, 7, 9, 23, 37] {
                    let x: Vec<f32> = (0..n * cols).map(|_| lcg(&mut seed) * 4.0).collect();
                    let mut batch = Vec::new();
                    matmul(
                        isa,
                        w,
                        &QActs::quantize(isa, &x, n, cols),
                        &mut batch,
                        &mut team,
                    );
                    for j in 0..n {
                        let one = QActs::quantize(isa, &x[j * cols..(j + 1) * cols], 1, cols);
                        let mut alone = Vec::new();
                        matmul(isa, w, &one, &mut alone, &mut team);
                        assert_eq!(
                            alone,
                            batch[j * rows..(j + 1) * rows],
                            "{isa}, row {j} of {n}"
                        );
                    }
                }
            }
        }
    }

    /// The rotation gives the formula's bits, `(a cos - b sin, a sin + b cos)`, on every
    /// kernel set and head width (with and without a vector path), several heads at once.
    #[test]
    fn rotating_pairs_gives_the_formulas_bits() {
        let mut seed = 23;
        for isa in Isa::available() {
            for hd in [64, 32, 24, 8, 6] {
                let heads = 3;
                let angles: Vec<(f32, f32)> = (0..hd / 2)
                    .map(|i| (lcg(&mut seed) * 40.0 + i as f32).sin_cos())
                    .collect();
                let cos2: Vec<f32> = angles.iter().flat_map(|&(_, c)| [c, c]).collect();
                let sin2: Vec<f32> = angles.iter().flat_map(|&(s, _)| [-s, s]).collect();
                let v: Vec<f32> = (0..heads * hd).map(|_| lcg(&mut seed) * 8.0).collect();
                let mut want = v.clone();
                for head in want.chunks_exact_mut(hd) {
                    for (p, &(s, c)) in head.chunks_exact_mut(2).zip(&angles) {
                        let (a, b) = (p[0], p[1]);
                        p[0] = a * c - b * s;
                        p[1] = a * s + b * c;
                    }
                }
                let mut got = v.clone();
                rotate_pairs(isa, &mut got, &cos2, &sin2);
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{isa}, heads {hd} wide");
            }
        }
    }

    /// Quantizing spread over the team gives what one thread gives, on every kernel set, for
    /// batches below and above the size that is spread, into a reused buffer.
    #[test]
    fn quantizing_on_the_team_gives_the_same_bits() {
        let cols = 576;
        let mut seed = 29;
        let mut team = Team::new(2);
        for isa in Isa::available() {
            let mut reused = QActs::default();
            for n in [1, 56, 57, 130] {
                let x: Vec<f32> = (0..n * cols).map(|_| lcg(&mut seed) * 5.0).collect();
                let alone = QActs::quantize(isa, &x, n, cols);
                reused.quantize_on(isa, &x, n, cols, &mut team);
                assert_eq!(
                    (reused.n, reused.cols, &reused.d, &reused.dv, &reused.s),
                    (alone.n, alone.cols, &alone.d, &alone.dv, &alone.s),
                    "{isa}, {n} rows"
                );
                assert_eq!(
                    (&reused.q, &reused.h),
                    (&alone.q, &alone.h),
                    "{isa}, {n} rows"
                );
            }
        }
    }

    /// A matmul sets every output: into a reused buffer full of NaNs, of the right length or
    /// longer, it gives what it gives into an empty one, on every kernel set.
    #[test]
    fn a_matmul_sets_every_output_of_a_reused_buffer() {
        let (rows, cols) = (70, 64);
        let mut seed = 17;
        let w = QMatrix::from_q4_1(&q4_1_bytes(rows, cols, &mut seed), rows, cols);
        let mut team = Team::new(2);
        for isa in Isa::available() {
            for n in [1, 5, 9] {
                let x: Vec<f32> = (0..n * cols).map(|_| lcg(&mut seed)).collect();
                let qa = QActs::quantize(isa, &x, n, cols);
                let mut fresh = Vec::new();
                matmul(isa, &w, &qa, &mut fresh, &mut team);
                for len in [rows * n, rows * n + 33] {
                    let mut reused = vec![f32::NAN; len];
                    matmul(isa, &w, &qa, &mut reused, &mut team);
                    assert_eq!(reused, fresh, "{isa}, {n} rows, buffer of {len}");
                }
            }
        }
    }

    /// An output as the AMX kernels compute it: each block's exact integer sum, scaled and
    /// accumulated with one fused multiply-add per block, the Q4_1 minimum terms summed apart.
    fn block_exact(w: &QMatrix, x: &QActs, r: usize, j: usize) -> f32 {
        let nb = w.cols / BLOCK;
        let (mut acc, mut min) = (0f32, 0f32);
        for b in 0..nb {
            let xq = &x.q[j * x.cols + b * BLOCK..][..BLOCK];
            let sum: i32 = match w.kind {
                Kind::Q4_1 => {
                    let wq = &w.q[(r * nb + b) * 16..][..16];
                    (0..16)
                        .map(|i| {
                            i32::from(wq[i] & 0x0f) * i32::from(xq[i])
                                + i32::from(wq[i] >> 4) * i32::from(xq[16 + i])
                        })
                        .sum()
                }
                Kind::Q8_0 => {
                    let wq = &w.q[(r * nb + b) * 32..][..32];
                    (0..32)
                        .map(|i| i32::from(wq[i] as i8) * i32::from(xq[i]))
                        .sum()
                }
            };
            acc = (sum as f32 * x.d[j * nb + b]).mul_add(w.d[r * nb + b], acc);
            if w.kind == Kind::Q4_1 {
                min += w.m[r * nb + b] * x.s[j * nb + b];
            }
        }
        acc + min
    }

    /// On a CPU with AMX: every output of the tile kernel is the block-exact sum, bit for bit,
    /// for weight rows that fill no whole tile (37) or several (48), activation rows that fill
    /// part of a tile, one, or more, and teams whose shares of rows end inside a tile.
    #[test]
    #[ignore = "needs a CPU with AMX-INT8; scripts/test runs it where /proc/cpuinfo lists amx_int8"]
    fn amx_outputs_are_the_block_exact_sums() {
        let isa = Isa::available()
            .into_iter()
            .find(|i| i.0 == Level::Amx)
            .expect("AMX-INT8 and AVX-512F on this CPU, and Linux granting the tiles");
        let cols = 96;
        let mut seed = 5;
        for rows in [37, 48] {
            let w4 = QMatrix::from_q4_1(&q4_1_bytes(rows, cols, &mut seed), rows, cols);
            let wf: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut seed)).collect();
            let w8 = QMatrix::from_f32(&wf, rows, cols);
            for threads in [1, 2, 3] {
                let mut team = Team::new(threads);
                for n in [1, 5, 16, 17, 40] {
                    let x: Vec<f32> = (0..n * cols).map(|_| lcg(&mut seed) * 4.0).collect();
                    let xa = QActs::quantize(isa, &x, n, cols);
                    for w in [&w4, &w8] {
                        let mut out = Vec::new();
                        matmul(isa, w, &xa, &mut out, &mut team);
                        for j in 0..n {
                            for r in 0..rows {
                                assert_eq!(
                                    out[j * rows + r].to_bits(),
                                    block_exact(w, &xa, r, j).to_bits(),
                                    "{:?} rows {rows}, n {n}, {threads} threads: row {r} x {j}",
                                    w.kind
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Grouped attention gives exactly what one `dot_f32` per key, a `softmax` per head and one
    /// `axpy_f32` per value give (the same operations in the same order), for every kernel set
    /// this CPU runs, head widths with and without a register path and a four-key path, keys
    /// split over runs, and rows that attend to part of the sequence (with and without a
    /// remainder after the fours).
    #[test]
    fn grouped_attention_equals_per_head_dots_and_axpys() {
        let mut seed = 7;
        for isa in Isa::available() {
            for hd in [64, 32, 128, 24] {
                let (kv_heads, group) = (2, 3);
                let stride = kv_heads * hd;
                let lens = [50, 1, 99];
                let runs_owned: Vec<(Vec<f32>, Vec<f32>)> = lens
                    .iter()
                    .map(|&n| {
                        let k = (0..n * stride).map(|_| lcg(&mut seed)).collect();
                        let v = (0..n * stride).map(|_| lcg(&mut seed)).collect();
                        (k, v)
                    })
                    .collect();
                let runs: Vec<(&[f32], &[f32])> = runs_owned
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
                    .collect();
                // Up to four rows' heads at once, each row attending one position more
                // than the one before, as consecutive rows of a sequence do.
                let q: Vec<f32> = (0..4 * group * hd).map(|_| lcg(&mut seed) * 3.0).collect();
                for g in 0..kv_heads {
                    for (first, rows) in [
                        (1, 1),
                        (4, 1),
                        (6, 1),
                        (51, 1),
                        (148, 1),
                        (150, 1),
                        (1, 4),
                        (47, 4),
                        (147, 4),
                        (5, 3),
                        (10, 2),
                    ] {
                        let upto: Vec<usize> = (0..rows)
                            .flat_map(|r| std::iter::repeat_n(first + r, group))
                            .collect();
                        let q = &q[..rows * group * hd];
                        let a = Attend {
                            q,
                            hd,
                            runs: &runs,
                            stride,
                            off: g * hd,
                            upto: &upto,
                            scale: 1.0 / (hd as f32).sqrt(),
                        };
                        let mut got = vec![f32::NAN; q.len()];
                        attend_group(isa, &a, &mut got);
                        let mut want = vec![0f32; q.len()];
                        let heads = q.chunks_exact(hd).zip(want.chunks_exact_mut(hd));
                        for ((qh, oh), &own) in heads.zip(&upto) {
                            let positions: Vec<(&[f32], &[f32])> = runs
                                .iter()
                                .flat_map(|(k, v)| {
                                    k.chunks_exact(stride).zip(v.chunks_exact(stride))
                                })
                                .take(own)
                                .map(|(k, v)| (&k[g * hd..(g + 1) * hd], &v[g * hd..(g + 1) * hd]))
                                .collect();
                            let mut scores: Vec<f32> = positions
                                .iter()
                                .map(|(k, _)| dot_f32(isa, qh, k) * a.scale)
                                .collect();
                            softmax(isa, &mut scores);
                            for ((_, v), s) in positions.iter().zip(&scores) {
                                axpy_f32(isa, oh, *s, v);
                            }
                        }
                        assert_eq!(
                            got, want,
                            "{isa}, head width {hd}, group {g}, {rows} rows from {first} positions"
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "attending 16 of 15 positions")]
    fn attending_past_the_sequence_panics_with_the_counts() {
        let (k, v) = (vec![0f32; 15 * 8], vec![0f32; 15 * 8]);
        let runs = [(k.as_slice(), v.as_slice())];
        let q = [0f32; 8];
        let a = Attend {
            q: &q,
            hd: 8,
            runs: &runs,
            stride: 8,
            off: 0,
            upto: &[16],
            scale: 1.0,
        };
        attend_group(Isa::SCALAR, &a, &mut [0f32; 8]);
    }

    /// The kernels against a plain f32 reference, for both formats, every kernel set this CPU
    /// runs, and 1, 2 and 3 activation rows (single-sequence decode: four weight rows against
    /// one activation row) as well as 4 and 7 (four activation rows per tile, then the rest).
    #[test]
    fn kernels_match_the_f32_reference() {
        let (rows, cols) = (37, 96);
        let mut seed = 1;
        let w4 = QMatrix::from_q4_1(&q4_1_bytes(rows, cols, &mut seed), rows, cols);
        let wf: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut seed)).collect();
        let w8 = QMatrix::from_f32(&wf, rows, cols);
        let mut team = Team::new(2);
        for n in [1, 2, 3, 4, 7] {
            let x: Vec<f32> = (0..n * cols).map(|_| lcg(&mut seed) * 4.0).collect();
            for w in [&w4, &w8] {
                let mut deq = vec![0f32; rows * cols];
                for r in 0..rows {
                    w.row(r, &mut deq[r * cols..(r + 1) * cols]);
                }
                for isa in Isa::available() {
                    let xa = QActs::quantize(isa, &x, n, cols);
                    let mut out = Vec::new();
                    matmul(isa, w, &xa, &mut out, &mut team);
                    assert_eq!(out.len(), rows * n);
                    for j in 0..n {
                        for r in 0..rows {
                            // Exact over the quantized (or rounded) operands: kernels must
                            // match it to float rounding.
                            #[cfg(target_arch = "x86_64")]
                            let bf16 = isa.0 == Level::Bf16;
                            #[cfg(not(target_arch = "x86_64"))]
                            let bf16 = false;
                            let exact: f32 = if bf16 {
                                #[cfg(target_arch = "x86_64")]
                                let e = bf16::dot_in_order(
                                    &deq[r * cols..(r + 1) * cols],
                                    &xa.h[j * cols..(j + 1) * cols],
                                );
                                #[cfg(not(target_arch = "x86_64"))]
                                let e = 0.0;
                                e
                            } else {
                                (0..cols)
                                    .map(|c| {
                                        let xq = xa.d[j * cols / 32 + c / 32]
                                            * f32::from(xa.q[j * cols + c]);
                                        deq[r * cols + c] * xq
                                    })
                                    .sum()
                            };
                            let got = out[j * rows + r];
                            assert!(
                                (got - exact).abs() < 1e-4 * (1.0 + exact.abs()),
                                "{:?} {isa} n={n} row {r} x {j}: {got} vs {exact}",
                                w.kind
                            );
                            // And quantizing activations loses little against plain f32.
                            let f: f32 =
                                (0..cols).map(|c| deq[r * cols + c] * x[j * cols + c]).sum();
                            assert!((got - f).abs() < 0.1, "{got} vs {f}");
                        }
                    }
                }
            }
        }
    }

    /// The vectorized `dot_f32` and `axpy_f32` against plain loops, at every length around
    /// the vector widths (8 and 16 lanes) and their remainders.
    #[test]
    fn vector_dot_and_axpy_match_plain_loops() {
        let mut seed = 7;
        for len in 0..=41 {
            let a: Vec<f32> = (0..len).map(|_| lcg(&mut seed)).collect();
            let b: Vec<f32> = (0..len).map(|_| lcg(&mut seed)).collect();
            let dot: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            let mut axpy = b.clone();
            for (o, v) in axpy.iter_mut().zip(&a) {
                *o += 0.75 * v;
            }
            for isa in Isa::available() {
                let got = dot_f32(isa, &a, &b);
                assert!(
                    (f64::from(got) - dot).abs() < 1e-5,
                    "{isa} len {len}: {got} vs {dot}"
                );
                let mut y = b.clone();
                axpy_f32(isa, &mut y, 0.75, &a);
                for (i, (g, e)) in y.iter().zip(&axpy).enumerate() {
                    assert!((g - e).abs() < 1e-6, "{isa} len {len} [{i}]: {g} vs {e}");
                }
            }
        }
    }

    #[test]
    fn the_portable_kernels_are_always_available_and_detection_picks_an_available_set() {
        let all = Isa::available();
        assert_eq!(all[0], Isa::SCALAR);
        assert!(all.contains(&Isa::detect()));
    }

    /// In every job the caller runs once and each helper at most once, a helper that joins
    /// is waited for, and the pieces of `for_each_chunk_mut` cover the data exactly once,
    /// over many jobs in a row (some of which helpers join late or skip).
    #[test]
    fn a_team_runs_every_member_at_most_once_and_every_piece_once() {
        for threads in [1, 2, 3] {
            let mut team = Team::new(threads);
            let shared = Arc::clone(&team.shared);
            for round in 0..2000u32 {
                let ran = std::sync::Mutex::new(Vec::new());
                // Every hundredth job, the caller's share waits (at most 10 s) for every
                // helper to join, and the helpers are slow: each must then run, and be
                // waited for.
                let wait = round % 100 == 0;
                team.run(&|k| {
                    if wait && k == 0 {
                        let t = std::time::Instant::now();
                        while (shared.state.load(Ordering::Acquire) & JOINED) < threads as u64 - 1 {
                            assert!(t.elapsed().as_secs() < 10, "the helpers never joined");
                            std::thread::yield_now();
                        }
                    }
                    if wait && k > 0 {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    ran.lock().expect("lock").push(k);
                });
                let mut ran = ran.into_inner().expect("lock");
                ran.sort_unstable();
                let before = ran.len();
                ran.dedup();
                assert_eq!(ran.len(), before, "a member ran twice: {ran:?}");
                assert_eq!(ran[0], 0, "the caller always runs");
                assert!(ran.iter().all(|&k| k < threads), "{ran:?}");
                if wait {
                    assert_eq!(ran, (0..threads).collect::<Vec<_>>(), "round {round}");
                }
            }
            let mut data = vec![0u32; 103];
            for _ in 0..200 {
                team.for_each_chunk_mut(&mut data, 10, &|i, piece| {
                    assert!(piece.len() == 10 || (i == 10 && piece.len() == 3));
                    for v in piece.iter_mut() {
                        *v += 1 + i as u32;
                    }
                });
            }
            for (k, v) in data.iter().enumerate() {
                assert_eq!(*v, 200 * (1 + (k / 10) as u32), "element {k}");
            }
        }
    }

    /// A panic in the caller's share does not unwind past `run` while helpers still work on
    /// the job; a helper's panic reaches the caller; the team works on afterwards.
    #[test]
    fn a_panicking_member_never_leaves_helpers_running_and_the_team_recovers() {
        use std::sync::atomic::AtomicUsize;
        let mut team = Team::new(3);
        // The caller's share waits (at most 10 s) until both helpers have joined the job.
        let shared = Arc::clone(&team.shared);
        let all_joined = || {
            let t = std::time::Instant::now();
            while shared.state.load(Ordering::Acquire) & JOINED < 2 {
                assert!(t.elapsed().as_secs() < 10, "the helpers never joined");
                std::thread::yield_now();
            }
        };
        let started = AtomicUsize::new(0);
        let finished = AtomicUsize::new(0);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            team.run(&|k| {
                if k == 0 {
                    all_joined();
                    panic!("the caller's share fails");
                }
                started.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(50));
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }));
        assert!(caught.is_err());
        // Both helpers joined, and both were done before `run` unwound.
        assert_eq!(started.load(Ordering::SeqCst), 2);
        assert_eq!(finished.load(Ordering::SeqCst), 2);

        let caught = catch_unwind(AssertUnwindSafe(|| {
            team.run(&|k| {
                if k == 0 {
                    all_joined();
                }
                assert!(k != 2, "a helper's share fails");
            });
        }));
        let message = caught.expect_err("a helper's panic reaches the caller");
        let text = message
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| message.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        assert!(text.contains("model thread panicked"), "{text}");

        let ran = AtomicUsize::new(0);
        team.run(&|k| {
            if k == 0 {
                all_joined();
            }
            ran.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(ran.load(Ordering::SeqCst), 3);
    }

    /// The normalizer matches the exact one in double precision on rows of every length
    /// (tails included), with logits spread as a model's are.
    #[test]
    fn log_sum_exp_matches_the_exact_sum() {
        let mut seed = 7;
        for isa in Isa::available() {
            for n in [1, 7, 8, 9, 31, 1000, 49_152] {
                let x: Vec<f32> = (0..n).map(|_| 50.0 * lcg(&mut seed) - 5.0).collect();
                let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let want = f64::from(max)
                    + x.iter()
                        .map(|&l| (f64::from(l) - f64::from(max)).exp())
                        .sum::<f64>()
                        .ln();
                let got = log_sum_exp(isa, &x);
                assert!((got - want).abs() < 1e-5, "{isa} n={n}: {got} vs {want}");
            }
            // A row with minus infinity (masked tokens) and one dominant logit.
            let got = log_sum_exp(isa, &[f32::NEG_INFINITY, 5.0, -200.0]);
            assert!((got - 5.0).abs() < 1e-12, "{isa}: {got}");
        }
    }

    /// The vectorized exponential is within 2 ulp of the exact value over softmax's range and
    /// the feed-forward's, 0 below it, and softmax gives (next to) 0 far below its maximum.
    #[test]
    fn exponential_is_within_two_ulp() {
        for isa in Isa::available() {
            #[cfg(target_arch = "x86_64")]
            if isa != Isa::SCALAR {
                let xs: Vec<f32> = (0..200_000)
                    .map(|i| -87.0 + 175.3 * i as f32 / 200_000.0)
                    .chain([
                        0.0,
                        -0.0,
                        1e-30,
                        -1e-30,
                        88.3,
                        -87.0,
                        -88.0,
                        -1e9,
                        f32::NEG_INFINITY,
                    ])
                    .collect();
                let mut worst = 0f64;
                for c in xs.chunks_exact(8) {
                    let mut got = [0f32; 8];
                    // SAFETY: this level is only made on CPUs with AVX2 and FMA; eight floats.
                    unsafe {
                        use std::arch::x86_64::*;
                        let e = x86::exp8(_mm256_loadu_ps(c.as_ptr()));
                        _mm256_storeu_ps(got.as_mut_ptr(), e);
                    }
                    for (x, g) in c.iter().zip(got) {
                        if *x < -87.0 {
                            assert_eq!(g, 0.0, "{isa}: e^{x}");
                            continue;
                        }
                        let want = f64::from(*x).exp();
                        worst = worst.max((f64::from(g) - want).abs() / want);
                    }
                }
                assert!(
                    worst <= 2.0 * f64::from(f32::EPSILON),
                    "{isa}: relative error {worst:e}"
                );
            }
            let mut s = [-100.0, 0.0, f32::NEG_INFINITY];
            softmax(isa, &mut s);
            assert!(s[0] < 1e-37 && s[1] == 1.0 && s[2] == 0.0, "{isa}: {s:?}");
        }
    }

    /// Softmax and the gated activation agree with the scalar code, for lengths with and
    /// without a tail.
    #[test]
    fn vector_softmax_and_silu_match_scalar() {
        let mut seed = 3;
        for isa in Isa::available() {
            for n in [1, 7, 8, 9, 64, 701] {
                let x: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 20.0).collect();
                let (mut got, mut want) = (x.clone(), x.clone());
                softmax(isa, &mut got);
                softmax(Isa::SCALAR, &mut want);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-6 * w.max(1e-30) + 1e-37,
                        "{isa}, {n}: {g} vs {w}"
                    );
                }
                let up: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
                let (mut got, mut want) = (vec![0f32; n], vec![0f32; n]);
                silu_mul(isa, &x, &up, &mut got);
                silu_mul(Isa::SCALAR, &x, &up, &mut want);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-6 * w.abs() + 1e-30,
                        "{isa}, {n}: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// Every kernel set quantizes activations to the same bits, ties of rounding included.
    #[test]
    fn quantizing_gives_the_same_bits_on_every_kernel_set() {
        let mut seed = 11;
        let mut x: Vec<f32> = (0..5 * 64).map(|_| lcg(&mut seed) * 4.0).collect();
        // A block whose values sit at exact halves after scaling (amax 127: d = 1), one of
        // zeros, and one with a single large value.
        for (i, v) in x[64..96].iter_mut().enumerate() {
            *v = if i == 0 { 127.0 } else { i as f32 - 15.5 };
        }
        x[96..128].fill(0.0);
        x[128..160].fill(0.25);
        x[140] = -1e6;
        let want = QActs::quantize(Isa::SCALAR, &x, 5, 64);
        #[cfg(target_arch = "x86_64")]
        let integer = |i: &Isa| i.0 != Level::Bf16;
        #[cfg(not(target_arch = "x86_64"))]
        let integer = |_: &Isa| true;
        for isa in Isa::available().into_iter().filter(integer) {
            let got = QActs::quantize(isa, &x, 5, 64);
            assert_eq!(
                (&got.d, &got.dv, &got.s, &got.q),
                (&want.d, &want.dv, &want.s, &want.q),
                "{isa}"
            );
        }
    }
    /// Rounding to bfloat16: to nearest with ties to even, subnormals to a signed zero, NaN
    /// kept, infinities kept, and the largest finite values that round up become infinite.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn bfloat16_rounds_to_nearest_even() {
        use bf16::{from_bf16, to_bf16};
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(to_bf16(-2.0), 0xc000);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to the even one above.
        assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3f81);
        assert_eq!(to_bf16(f32::from_bits(1)), 0);
        assert_eq!(to_bf16(-f32::from_bits(0x007f_ffff)), 0x8000);
        assert_eq!(to_bf16(-0.0), 0x8000);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(to_bf16(f32::MAX), 0x7f80);
        let mut seed = 5;
        for _ in 0..1000 {
            let v = lcg(&mut seed) * 1e3;
            let r = from_bf16(to_bf16(v));
            // Seven stored mantissa bits: within half a unit, 2^-8 of the value.
            assert!((r - v).abs() <= v.abs() * 2f32.powi(-8), "{v} -> {r}");
        }
    }

    /// On a CPU with AVX-512 BF16, the vector conversion rounds every float as `to_bf16`
    /// does, bit for bit: a sweep over the whole bit space (every 4,093rd pattern: signs,
    /// subnormals, NaNs and infinities included), the specials, and lengths off the vector.
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[ignore = "needs a CPU with AVX-512 BF16; scripts/test runs it where /proc/cpuinfo lists avx512_bf16"]
    fn bf16_conversion_rounds_as_to_bf16() {
        assert!(
            bf16::supported(),
            "AVX-512F, AVX-512BW and AVX-512 BF16 on this CPU"
        );
        let mut x: Vec<f32> = (0..=u32::MAX / 4093)
            .map(|i| f32::from_bits(i * 4093))
            .collect();
        x.extend([
            0.0,
            -0.0,
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
        ]);
        x.extend([
            f32::from_bits(1),
            f32::from_bits(0x007f_ffff),
            1.0 + 2f32.powi(-8),
        ]);
        for len in [x.len(), 15, 16, 17, 1, 0] {
            let mut out = Vec::new();
            bf16::convert_into(&x[..len], &mut out);
            let want: Vec<u16> = x[..len].iter().map(|&v| bf16::to_bf16(v)).collect();
            assert_eq!(out, want, "length {len}");
        }
    }

    /// On a CPU with AVX-512 BF16: matrices whose rows fill no group of 16, one, or several
    /// with a part-filled last one, against 1 to 9 activation rows, give each output as the
    /// in-order sum over bfloat16 operands, to float rounding, and close to the f32 product.
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[ignore = "needs a CPU with AVX-512 BF16; scripts/test runs it where /proc/cpuinfo lists avx512_bf16"]
    fn bf16_outputs_are_the_in_order_sums() {
        let isa = Isa::available()
            .into_iter()
            .find(|i| i.0 == Level::Bf16)
            .expect("AVX-512F, AVX-512BW and AVX-512 BF16 on this CPU");
        let mut seed = 3;
        let mut team = Team::new(3);
        for rows in [5, 16, 48, 70, 200] {
            let cols = 64;
            let w = QMatrix::from_q4_1(&q4_1_bytes(rows, cols, &mut seed), rows, cols);
            let mut deq = vec![0f32; rows * cols];
            for r in 0..rows {
                w.row(r, &mut deq[r * cols..(r + 1) * cols]);
            }
            for n in [1, 4, 9] {
                let x: Vec<f32> = (0..n * cols).map(|_| lcg(&mut seed) * 4.0).collect();
                let xa = QActs::quantize(isa, &x, n, cols);
                let mut out = Vec::new();
                matmul(isa, &w, &xa, &mut out, &mut team);
                assert_eq!(out.len(), rows * n);
                for j in 0..n {
                    for r in 0..rows {
                        let wr = &deq[r * cols..(r + 1) * cols];
                        let want = bf16::dot_in_order(wr, &xa.h[j * cols..(j + 1) * cols]);
                        let got = out[j * rows + r];
                        let scale: f32 = wr
                            .iter()
                            .zip(&x[j * cols..])
                            .map(|(a, b)| (a * b).abs())
                            .sum();
                        assert!(
                            (got - want).abs() <= 1e-6 * scale,
                            "rows {rows} n {n}: [{j}, {r}] {got} vs {want}"
                        );
                        let f: f32 = wr.iter().zip(&x[j * cols..]).map(|(a, b)| a * b).sum();
                        assert!((got - f).abs() <= 1e-2 * scale, "{got} vs f32 {f}");
                    }
                }
            }
        }
    }
}
