//! The matmul on Intel AMX tiles (Sapphire Rapids and later): one `tdpbusd` (Q4_1's unsigned
//! nibbles times the activations' signed bytes) or `tdpbssd` (Q8_0's signed bytes) multiplies
//! 16 weight rows by 16 activation rows over one block of 32 columns, 8,192 multiply-adds in
//! one instruction, where AVX-VNNI does 32.
//!
//! A tile sums a whole block exactly, so the float arithmetic differs from the AVX kernels
//! (which keep eight partial sums per block): each output is `acc + min`, where over the blocks
//! in order `acc = fma(float(block sum) * x.d, w.d, acc)` and `min = min + w.m * x.s` (Q4_1
//! only), both from 0. Every output is computed alone this way, so a row's product is the same
//! in any batch here too (the tests check it, and check these sums bit for bit against a plain
//! loop).
//!
//! Tiles are reached through `asm!` (Rust has no stable AMX intrinsics) and the float
//! epilogue through AVX-512F intrinsics. Linux hands a process the tiles' state only after it
//! asks (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); [`supported`] asks once and says whether it may.

use std::arch::asm;
use std::arch::x86_64::*;
use std::fmt;
use std::sync::OnceLock;

use super::{BLOCK, Kind, Out, QActs, QMatrix};

/// Rows of a tile: weight rows per group, activation rows per group.
pub(super) const ROWS: usize = 16;

/// Bytes of one A tile (16 weight rows x 32 columns) and one B tile (8 rows of 16 activation
/// rows x 4 columns each).
const TILE_BYTES: usize = ROWS * BLOCK;

/// Whether this CPU has AMX-TILE, AMX-INT8 and AVX-512F, and Linux lets this process use the
/// tiles. Asked once per process.
pub(super) fn supported() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        if !is_x86_feature_detected!("avx512f") {
            return false;
        }
        // CPUID leaf 7, sub-leaf 0: EDX bit 24 is AMX-TILE, bit 25 AMX-INT8.
        #[allow(unused_unsafe)]
        // SAFETY: CPUID leaf 7 exists on every x86-64 CPU with AVX-512F (checked above).
        let leaf7 = unsafe { __cpuid_count(7, 0) };
        if leaf7.edx & (3 << 24) != 3 << 24 {
            return false;
        }
        request_tiles()
    })
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: Linux 5.16 and later give a process
/// the tiles' register state only on request; older kernels and other systems answer no.
#[cfg(target_os = "linux")]
fn request_tiles() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain system call that reads no memory of ours; the kernel clobbers rcx and
    // r11, declared here.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tiles() -> bool {
    false
}

/// A tile configuration (palette 1): tmm0 holds A (16 weight rows x 32 bytes), tmm1 B (8 rows
/// of `4 * cols` bytes: four bytes of each of `cols` activation rows), tmm2 C (16 x `cols`
/// i32).
#[repr(C, align(64))]
struct Config([u8; 64]);

const fn config(cols: u16) -> Config {
    let mut c = [0u8; 64];
    c[0] = 1; // palette
    let tiles: [(usize, u16, u8); 3] = [(0, 32, 16), (1, 4 * cols, 8), (2, 4 * cols, 16)];
    let mut i = 0;
    while i < tiles.len() {
        let (t, colsb, rows) = tiles[i];
        let b = colsb.to_le_bytes();
        c[16 + 2 * t] = b[0];
        c[17 + 2 * t] = b[1];
        c[48 + t] = rows;
        i += 1;
    }
    Config(c)
}

/// One activation row per tile: B is the row's block as it lies in memory.
const ONE: Config = config(1);
/// Sixteen activation rows per tile, from [`Tiles`].
const SIXTEEN: Config = config(16);

/// Below this many activation rows, each row is multiplied alone (a 16 x 1 tile); from it on,
/// 16 at a time. The sums are the same either way.
const BATCH_FROM: usize = 8;

/// A weight matrix in the tiles' layout: one byte per value (Q4_1's nibbles unpacked), rows
/// padded with zeros to a multiple of 16, so an A tile loads straight from it; the scales and
/// minima of each group of 16 rows side by side per block.
#[derive(Clone)]
pub(super) struct Weights {
    /// `rows` (padded) x `cols` values.
    q: Vec<u8>,
    /// Per group of 16 rows and block, the 16 rows' scales.
    d: Vec<f32>,
    /// The same for Q4_1's minima (empty for Q8_0).
    m: Vec<f32>,
}

impl fmt::Debug for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "amx::Weights({} bytes)", self.bytes())
    }
}

impl Weights {
    pub(super) fn new(w: &QMatrix) -> Weights {
        let nb = w.cols / BLOCK;
        let groups = w.rows.div_ceil(ROWS);
        let mut out = Weights {
            q: vec![0; groups * ROWS * w.cols],
            d: vec![0.0; groups * nb * ROWS],
            m: if w.kind == Kind::Q4_1 {
                vec![0.0; groups * nb * ROWS]
            } else {
                Vec::new()
            },
        };
        for r in 0..w.rows {
            let (g, lane) = (r / ROWS, r % ROWS);
            for blk in 0..nb {
                let i = r * nb + blk;
                let dst = &mut out.q[r * w.cols + blk * BLOCK..][..BLOCK];
                match w.kind {
                    Kind::Q4_1 => {
                        let q = &w.q[i * 16..][..16];
                        for k in 0..16 {
                            dst[k] = q[k] & 0x0f;
                            dst[16 + k] = q[k] >> 4;
                        }
                        out.m[(g * nb + blk) * ROWS + lane] = w.m[i];
                    }
                    Kind::Q8_0 => dst.copy_from_slice(&w.q[i * 32..][..32]),
                }
                out.d[(g * nb + blk) * ROWS + lane] = w.d[i];
            }
        }
        out
    }

    pub(super) fn bytes(&self) -> usize {
        self.q.len() + 4 * (self.d.len() + self.m.len())
    }
}

/// The activations laid out for B tiles when they are multiplied 16 rows at a time: for each
/// group of 16 rows (the last padded with zeros) and each block, 8 rows of 64 bytes, row `k4`
/// holding columns `4 k4 .. 4 k4 + 4` of each of the 16 rows; beside them each block's 16
/// scales and scaled sums. Empty below [`BATCH_FROM`] rows.
pub(super) struct Tiles {
    /// B tiles, `groups * nb` of [`TILE_BYTES`].
    b: Vec<i8>,
    /// Scales, `groups * nb` of 16.
    d: Vec<f32>,
    /// `d * sum(q)`, `groups * nb` of 16.
    s: Vec<f32>,
}

impl Tiles {
    pub(super) fn new(x: &QActs) -> Tiles {
        let (n, nb) = (x.n, x.cols / BLOCK);
        let groups = if n < BATCH_FROM { 0 } else { n.div_ceil(ROWS) };
        let mut t = Tiles {
            b: vec![0; groups * nb * TILE_BYTES],
            d: vec![0.0; groups * nb * ROWS],
            s: vec![0.0; groups * nb * ROWS],
        };
        if groups == 0 {
            return t;
        }
        for j in 0..n {
            let (h, lane) = (j / ROWS, j % ROWS);
            for blk in 0..nb {
                let tile = (h * nb + blk) * TILE_BYTES;
                let src = &x.q[j * x.cols + blk * BLOCK..][..BLOCK];
                for k4 in 0..BLOCK / 4 {
                    t.b[tile + k4 * 64 + lane * 4..][..4].copy_from_slice(&src[k4 * 4..][..4]);
                }
                t.d[(h * nb + blk) * ROWS + lane] = x.d[j * nb + blk];
                t.s[(h * nb + blk) * ROWS + lane] = x.s[j * nb + blk];
            }
        }
        t
    }
}

/// `C = A . B` over one block into `c` (`stride` bytes per row of C): unsigned A for Q4_1's
/// nibbles, signed for Q8_0's bytes; B always signed.
///
/// # Safety
/// A tile configuration is loaded whose tmm0, tmm1 and tmm2 match the strides: `a` holds 16
/// rows `a_stride` apart, `b` 8 rows `b_stride` apart, `c` 16 rows `c_stride` apart, each of
/// the configured width.
#[inline(always)]
unsafe fn block_product(
    kind: Kind,
    a: *const u8,
    a_stride: usize,
    b: *const i8,
    b_stride: usize,
    c: *mut i32,
    c_stride: usize,
) {
    // SAFETY: the caller's contract.
    unsafe {
        match kind {
            Kind::Q4_1 => asm!(
                "tilezero tmm2",
                "tileloadd tmm0, [{a} + {sa}*1]",
                "tileloadd tmm1, [{b} + {sb}*1]",
                "tdpbusd tmm2, tmm0, tmm1",
                "tilestored [{c} + {sc}*1], tmm2",
                a = in(reg) a, sa = in(reg) a_stride,
                b = in(reg) b, sb = in(reg) b_stride,
                c = in(reg) c, sc = in(reg) c_stride,
                options(nostack),
            ),
            Kind::Q8_0 => asm!(
                "tilezero tmm2",
                "tileloadd tmm0, [{a} + {sa}*1]",
                "tileloadd tmm1, [{b} + {sb}*1]",
                "tdpbssd tmm2, tmm0, tmm1",
                "tilestored [{c} + {sc}*1], tmm2",
                a = in(reg) a, sa = in(reg) a_stride,
                b = in(reg) b, sb = in(reg) b_stride,
                c = in(reg) c, sc = in(reg) c_stride,
                options(nostack),
            ),
        }
    }
}

/// Weight rows `r0..r1` (`r0` a multiple of 16) against every activation row of `x`.
///
/// # Safety
/// [`supported`] returned true; `wt` was made from a matrix of `kind` with `x.cols` columns and
/// at least `r1` rows, `t` from `x`, and `out` is for `x`'s rows and that matrix's rows.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn rows_into(
    kind: Kind,
    wt: &Weights,
    x: &QActs,
    t: &Tiles,
    r0: usize,
    r1: usize,
    out: Out,
) {
    let (cols, nb, n) = (x.cols, x.cols / BLOCK, x.n);
    assert!(r0.is_multiple_of(ROWS) && wt.q.len() >= r1.next_multiple_of(ROWS) * cols);
    assert!(wt.d.len() >= r1.div_ceil(ROWS) * nb * ROWS);
    let batch = n >= BATCH_FROM;
    assert!(!batch || t.d.len() == n.div_ceil(ROWS) * nb * ROWS);
    let mut c = Aligned([0i32; ROWS * ROWS]);
    let cfg = if batch { &SIXTEEN } else { &ONE };
    // SAFETY: the CPU has AMX and this process may use it (the caller's contract); the
    // configuration is a valid palette-1 layout.
    unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack)) };
    for g0 in (r0..r1).step_by(ROWS) {
        let (g, gn) = (g0 / ROWS, ROWS.min(r1 - g0));
        let scales = |blk: usize| (g * nb + blk) * ROWS;
        if !batch {
            for j in 0..n {
                let (mut acc, mut min) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                for blk in 0..nb {
                    // SAFETY: 16 weight rows of 32 bytes `cols` apart from row g0 (the
                    // padded rows are inside `wt.q`, checked above), activation row j's
                    // block as 8 rows of 4 bytes, C as 16 rows of 4 bytes into `c`.
                    unsafe {
                        block_product(
                            kind,
                            wt.q.as_ptr().add(g0 * cols + blk * BLOCK),
                            cols,
                            x.q.as_ptr().add(j * cols + blk * BLOCK),
                            4,
                            c.0.as_mut_ptr(),
                            4,
                        );
                    }
                    // SAFETY: 16 i32 in `c`, 16 floats at each scale offset (checked above).
                    let (sum, wd) = unsafe {
                        (
                            _mm512_loadu_epi32(c.0.as_ptr()),
                            _mm512_loadu_ps(wt.d.as_ptr().add(scales(blk))),
                        )
                    };
                    let xd = _mm512_set1_ps(x.d[j * nb + blk]);
                    acc = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sum), xd), wd, acc);
                    if kind == Kind::Q4_1 {
                        // SAFETY: as for `wd`.
                        let wm = unsafe { _mm512_loadu_ps(wt.m.as_ptr().add(scales(blk))) };
                        let xs = _mm512_set1_ps(x.s[j * nb + blk]);
                        min = _mm512_add_ps(min, _mm512_mul_ps(wm, xs));
                    }
                }
                let mut v = [0f32; ROWS];
                // SAFETY: 16 floats into `v`.
                unsafe { _mm512_storeu_ps(v.as_mut_ptr(), _mm512_add_ps(acc, min)) };
                for (m, v) in v.iter().enumerate().take(gn) {
                    out.set(j, g0 + m, *v);
                }
            }
            continue;
        }
        for h in 0..n.div_ceil(ROWS) {
            let mut acc = [_mm512_setzero_ps(); ROWS];
            let mut min = [_mm512_setzero_ps(); ROWS];
            for blk in 0..nb {
                let at = (h * nb + blk) * ROWS;
                // SAFETY: as above, with B the 8 rows of 64 bytes of tile (h, blk) in
                // `t.b` and C 16 rows of 64 bytes.
                unsafe {
                    block_product(
                        kind,
                        wt.q.as_ptr().add(g0 * cols + blk * BLOCK),
                        cols,
                        t.b.as_ptr().add(at * BLOCK),
                        64,
                        c.0.as_mut_ptr(),
                        64,
                    );
                }
                // SAFETY: 16 floats at `at` in `t.d` and `t.s` (checked above).
                let (xd, xs) = unsafe {
                    (
                        _mm512_loadu_ps(t.d.as_ptr().add(at)),
                        _mm512_loadu_ps(t.s.as_ptr().add(at)),
                    )
                };
                for m in 0..gn {
                    // SAFETY: row m of `c` is 16 i32.
                    let sum = unsafe { _mm512_loadu_epi32(c.0.as_ptr().add(m * ROWS)) };
                    let wd = _mm512_set1_ps(wt.d[scales(blk) + m]);
                    acc[m] =
                        _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sum), xd), wd, acc[m]);
                    if kind == Kind::Q4_1 {
                        let wm = _mm512_set1_ps(wt.m[scales(blk) + m]);
                        min[m] = _mm512_add_ps(min[m], _mm512_mul_ps(wm, xs));
                    }
                }
            }
            let mut v = [0f32; ROWS];
            for m in 0..gn {
                // SAFETY: 16 floats into `v`.
                unsafe { _mm512_storeu_ps(v.as_mut_ptr(), _mm512_add_ps(acc[m], min[m])) };
                for (lane, v) in v.iter().enumerate().take(ROWS.min(n - h * ROWS)) {
                    out.set(h * ROWS + lane, g0 + m, *v);
                }
            }
        }
    }
    // SAFETY: as for `ldtilecfg`; the tiles are not used again before the next configuration.
    unsafe { asm!("tilerelease", options(nostack)) };
}

/// A C tile's landing place, aligned to a cache line.
#[repr(C, align(64))]
struct Aligned([i32; ROWS * ROWS]);
