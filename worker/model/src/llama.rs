//! The Llama architecture (SmolLM2, Llama 2/3, TinyLlama and kin) over quantized weights: one
//! forward pass over a batch of rows, each row a token of some sequence at some position.
//!
//! A batch may mix sequences and mix prompt tokens with decode tokens, so prefill, batched
//! decode across sequences and candidate scoring are all the same call. A sequence's keys and
//! values live in segments: shared, frozen prefixes (`Arc<Kv>`, e.g. a system prompt other
//! requests computed, or the prompt all candidates of a scoring request follow) and the
//! sequence's own growing cache. Sharing a prefix costs nothing; it is never copied.

use std::sync::Arc;

use super::gguf::{DType, Error, Gguf};
use super::quant::{
    Attend, Isa, QActs, QMatrix, Team, attend_group, fit, matmul, rotate_pairs, silu_mul,
};
use super::tokenizer::Token;

/// Rows of one sequence that attend together (see [`Llama::forward`]): four rows read each key
/// and value once where one row at a time read them four times.
const BLOCK: usize = 4;

/// Rows of the feed-forward's gate per piece handed to a thread.
const GATE_ROWS: usize = 16;

/// Rows per piece of the serial-looking row-by-row work (normalization, rotation, gathering
/// attention's outputs) when spread over the team.
const ROW_PIECE: usize = 16;

/// Hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Transformer blocks.
    pub layers: usize,
    /// Model width.
    pub embd: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Feed-forward width.
    pub ff: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Trained context length.
    pub context: usize,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub eps: f32,
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Query, key and value projections stacked.
    qkv: QMatrix,
    out: QMatrix,
    ffn_norm: Vec<f32>,
    /// Gate and up projections stacked.
    gate_up: QMatrix,
    down: QMatrix,
}

/// Keys and values of a run of positions, every layer, in one buffer: per layer, per
/// key/value head, `cap` positions of keys then `cap` of values, `head_dim` floats each. One
/// head's keys lie together (not interleaved with the other heads' at each position), so
/// attention, which reads one head's at a time, reads memory in order (at 700 positions its
/// kernel took a quarter less time; BENCHMARKS.md, "Attention in 512-bit vectors"). One
/// allocation per cache, not one per layer and head: a step's candidates each hold a cache,
/// and growing 180 small vectors each took about 4% of the forward passes' time
/// (BENCHMARKS.md, "The engine's serial stretches").
#[derive(Debug, Default, Clone)]
pub struct Kv {
    data: Vec<f32>,
    /// Layers, key/value heads per layer and floats per head and position.
    dims: (usize, usize, usize),
    /// Positions the buffer has room for.
    cap: usize,
    len: usize,
}

impl Kv {
    /// An empty cache for a model.
    pub fn new(cfg: &Config) -> Kv {
        Kv {
            data: Vec::new(),
            dims: (cfg.layers, cfg.kv_heads, cfg.head_dim),
            cap: 0,
            len: 0,
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where one layer's and head's keys (`value` false) or values start.
    fn at(&self, layer: usize, head: usize, value: bool) -> usize {
        let (_, heads, hd) = self.dims;
        ((layer * heads + head) * 2 + usize::from(value)) * self.cap * hd
    }

    /// One key/value head's keys and values at one layer, the first `n` positions.
    fn head(&self, layer: usize, head: usize, n: usize) -> (&[f32], &[f32]) {
        assert!(n <= self.len, "{n} of {} positions", self.len);
        if n == 0 {
            return (&[], &[]);
        }
        let w = n * self.dims.2;
        let (k, v) = (self.at(layer, head, false), self.at(layer, head, true));
        (&self.data[k..k + w], &self.data[v..v + w])
    }

    /// Room for `more` positions past those held, and counts them held (zeros until
    /// written with [`Kv::put`]); growing moves each run to its new place.
    fn grow(&mut self, more: usize) {
        let want = self.len + more;
        if want > self.cap {
            self.relayout(want.max(2 * self.cap));
        }
        self.len = want;
    }

    /// The buffer with room for exactly the positions held (a frozen cache grows no more).
    fn shrink(&mut self) {
        if self.cap > self.len {
            self.relayout(self.len);
        }
    }

    /// Moves every run into a new buffer with room for `cap` positions (at least `len`).
    fn relayout(&mut self, cap: usize) {
        let (layers, heads, hd) = self.dims;
        let mut data = vec![0f32; layers * heads * 2 * cap * hd];
        let held = self.len * hd;
        for run in 0..layers * heads * 2 {
            let (from, to) = (run * self.cap * hd, run * cap * hd);
            data[to..to + held].copy_from_slice(&self.data[from..from + held]);
        }
        self.data = data;
        self.cap = cap;
    }

    /// Writes one position's key and value for one layer and key/value head.
    fn put(&mut self, layer: usize, head: usize, pos: usize, k: &[f32], v: &[f32]) {
        let hd = self.dims.2;
        assert!(
            pos < self.len && k.len() == hd && v.len() == hd,
            "a key/value write"
        );
        let (ka, va) = (self.at(layer, head, false), self.at(layer, head, true));
        self.data[ka + pos * hd..ka + (pos + 1) * hd].copy_from_slice(k);
        self.data[va + pos * hd..va + (pos + 1) * hd].copy_from_slice(v);
    }

    /// Appends the first `n` positions of a sequence's segments.
    pub fn extend_from(&mut self, seq: &SeqKv, n: usize) {
        let (layers, heads, hd) = self.dims;
        let n = n.min(seq.len());
        let first = self.len;
        self.grow(n);
        let mut left = n;
        let mut to = first;
        let segments = seq
            .shared
            .iter()
            .map(|(kv, n)| (&**kv, *n))
            .chain(std::iter::once((&seq.own, seq.own.len)));
        for (kv, len) in segments {
            let take = len.min(left);
            for l in 0..layers {
                for g in 0..heads {
                    let (k, v) = kv.head(l, g, take);
                    let (ka, va) = (self.at(l, g, false), self.at(l, g, true));
                    self.data[ka + to * hd..ka + (to + take) * hd].copy_from_slice(k);
                    self.data[va + to * hd..va + (to + take) * hd].copy_from_slice(v);
                }
            }
            to += take;
            left -= take;
        }
    }

    /// Bytes held (room for positions not yet held included).
    pub fn bytes(&self) -> usize {
        4 * self.data.len()
    }
}

/// The cache a sequence attends over: frozen shared segments, then its own.
#[derive(Debug, Clone)]
pub struct SeqKv {
    /// Shared prefixes and how many of each one's positions this sequence uses.
    pub shared: Vec<(Arc<Kv>, usize)>,
    /// Positions this sequence computed itself.
    pub own: Kv,
}

impl SeqKv {
    /// An empty sequence.
    pub fn new(cfg: &Config) -> SeqKv {
        SeqKv {
            shared: Vec::new(),
            own: Kv::new(cfg),
        }
    }

    /// Positions in total.
    pub fn len(&self) -> usize {
        self.shared.iter().map(|(_, n)| n).sum::<usize>() + self.own.len
    }

    /// Whether the sequence holds no positions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Freezes the own cache into a shared segment, so forks of this sequence can share it.
    pub fn freeze(&mut self, cfg: &Config) {
        if self.own.len > 0 {
            let mut own = std::mem::replace(&mut self.own, Kv::new(cfg));
            own.shrink();
            let n = own.len;
            self.shared.push((Arc::new(own), n));
        }
    }

    /// The first `n` positions, shared; `None` if `n` reaches into the own cache.
    pub fn prefix(&self, n: usize) -> Vec<(Arc<Kv>, usize)> {
        let mut out = Vec::new();
        let mut left = n;
        for (kv, len) in &self.shared {
            if left == 0 {
                break;
            }
            let take = (*len).min(left);
            out.push((Arc::clone(kv), take));
            left -= take;
        }
        out
    }

    /// Shared positions only (what a fork can reuse).
    pub fn shared_len(&self) -> usize {
        self.shared.iter().map(|(_, n)| n).sum()
    }
}

/// One token to run: which sequence, and whether its next-token logits are wanted.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// Index into the sequences passed to `forward`.
    pub seq: usize,
    /// The token.
    pub token: Token,
    /// Want logits after this token.
    pub logits: bool,
}

/// A loaded model.
pub struct Llama {
    /// Hyperparameters.
    pub cfg: Config,
    embd: QMatrix,
    layers: Vec<Layer>,
    out_norm: Vec<f32>,
    /// `None` when the output projection is tied to the embeddings.
    output: Option<QMatrix>,
    rope: Vec<f32>,
    isa: Isa,
}

fn matrix(g: &Gguf, name: &str, rows: usize, cols: usize) -> Result<QMatrix, Error> {
    let (info, bytes) = g.tensor(name, &[cols, rows])?;
    Ok(match info.dtype {
        DType::Q4_1 => QMatrix::from_q4_1(bytes, rows, cols),
        DType::Q8_0 => QMatrix::from_q8_0(bytes, rows, cols),
        DType::F32 | DType::F16 => QMatrix::from_f32(&floats(info.dtype, bytes), rows, cols),
    })
}

fn floats(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|b| super::quant::f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    }
}

fn vector(g: &Gguf, name: &str, n: usize) -> Result<Vec<f32>, Error> {
    let (info, bytes) = g.tensor(name, &[n])?;
    match info.dtype {
        DType::F32 | DType::F16 => Ok(floats(info.dtype, bytes)),
        other => Err(Error::Unsupported {
            path: g.path.clone(),
            reason: format!("tensor {name:?} is {other:?}; norms must be F32 or F16"),
        }),
    }
}

fn stack(g: &Gguf, name: &str, parts: &[&QMatrix]) -> Result<QMatrix, Error> {
    QMatrix::concat(parts).ok_or_else(|| Error::Unsupported {
        path: g.path.clone(),
        reason: format!("{name}: projections of mixed quantization types"),
    })
}

/// Scratch buffers reused across forward passes.
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    qa: QActs,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Llama {
    /// Loads a Llama-architecture model from GGUF.
    pub fn from_gguf(g: &Gguf) -> Result<Llama, Error> {
        let arch = g.str("general.architecture")?;
        if arch != "llama" {
            return Err(Error::Unsupported {
                path: g.path.clone(),
                reason: format!("architecture {arch:?} (hx runs \"llama\")"),
            });
        }
        let int = |k: &str| -> Result<usize, Error> {
            let v = g.int(&format!("llama.{k}"))?;
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0 && v < 1 << 24)
                .ok_or_else(|| Error::Unsupported {
                    path: g.path.clone(),
                    reason: format!("llama.{k} = {v} is out of range"),
                })
        };
        let embd = int("embedding_length")?;
        let heads = int("attention.head_count")?;
        let kv_heads = int("attention.head_count_kv").unwrap_or(heads);
        if embd % heads != 0 || heads % kv_heads != 0 || embd % 32 != 0 {
            return Err(Error::Unsupported {
                path: g.path.clone(),
                reason: format!("{embd} wide with {heads} heads and {kv_heads} KV heads"),
            });
        }
        let vocab = g
            .array("tokenizer.ggml.tokens")
            .map(<[_]>::len)
            .or_else(|_| int("vocab_size"))?;
        let cfg = Config {
            layers: int("block_count")?,
            embd,
            heads,
            kv_heads,
            head_dim: embd / heads,
            ff: int("feed_forward_length")?,
            vocab,
            context: int("context_length")?,
            rope_base: g.float("llama.rope.freq_base").unwrap_or(10_000.0) as f32,
            eps: g
                .float("llama.attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-5) as f32,
        };
        let kvd = cfg.kv_heads * cfg.head_dim;
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let q = matrix(g, &n("attn_q"), embd, embd)?;
            let k = matrix(g, &n("attn_k"), kvd, embd)?;
            let v = matrix(g, &n("attn_v"), kvd, embd)?;
            let gate = matrix(g, &n("ffn_gate"), cfg.ff, embd)?;
            let up = matrix(g, &n("ffn_up"), cfg.ff, embd)?;
            layers.push(Layer {
                attn_norm: vector(g, &n("attn_norm"), embd)?,
                qkv: stack(g, &n("attn_qkv"), &[&q, &k, &v])?,
                out: matrix(g, &n("attn_output"), embd, embd)?,
                ffn_norm: vector(g, &n("ffn_norm"), embd)?,
                gate_up: stack(g, &n("ffn_gate_up"), &[&gate, &up])?,
                down: matrix(g, &n("ffn_down"), embd, cfg.ff)?,
            });
        }
        let output = if g.tensors.contains_key("output.weight") {
            Some(matrix(g, "output.weight", vocab, embd)?)
        } else {
            None
        };
        let half = cfg.head_dim / 2;
        let rope = (0..half)
            .map(|i| cfg.rope_base.powf(-2.0 * i as f32 / cfg.head_dim as f32))
            .collect();
        Ok(Llama {
            embd: matrix(g, "token_embd.weight", vocab, embd)?,
            layers,
            out_norm: vector(g, "output_norm.weight", embd)?,
            output,
            rope,
            isa: Isa::detect(),
            cfg,
        })
    }

    /// Which kernels run.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Bytes of weights in memory.
    pub fn bytes(&self) -> usize {
        self.embd.bytes()
            + self.output.as_ref().map_or(0, QMatrix::bytes)
            + self
                .layers
                .iter()
                .map(|l| l.qkv.bytes() + l.out.bytes() + l.gate_up.bytes() + l.down.bytes())
                .sum::<usize>()
    }

    /// Each row of `x` scaled to a root mean square of one, times `w`, into `out`; pieces of
    /// [`ROW_PIECE`] rows spread over the team when there are several.
    fn rms_norm(&self, x: &[f32], w: &[f32], out: &mut Vec<f32>, team: &mut Team) {
        let d = self.cfg.embd;
        let eps = self.cfg.eps;
        fit(out, x.len());
        if team.size() > 1 && x.len() > ROW_PIECE * d {
            team.for_each_chunk_mut(out, ROW_PIECE * d, &|i, out| {
                let at = i * ROW_PIECE * d;
                norm_rows(&x[at..at + out.len()], w, eps, out);
            });
        } else {
            norm_rows(x, w, eps, out);
        }
    }

    /// The rotation at `pos`, the same for every head and layer, so made once per row of a
    /// forward pass: each pair's cosine twice onto `cos2` and its sine negated then as is onto
    /// `sin2` (see [`rotate_pairs`]; GGUF's Llama weights are permuted for adjacent pairs).
    fn angles(&self, pos: usize, cos2: &mut Vec<f32>, sin2: &mut Vec<f32>) {
        for f in &self.rope {
            let (s, c) = (pos as f32 * f).sin_cos();
            cos2.extend([c, c]);
            sin2.extend([-s, s]);
        }
    }

    /// Runs `rows` through the model, appending each row's keys and values to its sequence's
    /// own cache, and returns the logits of the rows that asked for them, in row order, one
    /// `vocab` long run each, in `s` (so read, not copied: a step that scores hundreds of
    /// candidates has as many rows of 49,152 logits). Rows of one sequence must come in
    /// position order; row `i` of a sequence sits at position `seq.len()` (before the call)
    /// plus its index among that sequence's rows.
    pub fn forward<'s>(
        &self,
        seqs: &mut [&mut SeqKv],
        rows: &[Row],
        s: &'s mut Scratch,
        team: &mut Team,
    ) -> &'s [f32] {
        let c = &self.cfg;
        let (d, n) = (c.embd, rows.len());
        let kvd = c.kv_heads * c.head_dim;
        // Positions of each row.
        let mut next: Vec<usize> = seqs.iter().map(|q| q.len()).collect();
        // Room in each sequence's own cache for its rows, and where each row's keys go.
        let mut own_next: Vec<usize> = seqs.iter().map(|q| q.own.len).collect();
        let own_at: Vec<usize> = rows
            .iter()
            .map(|r| {
                own_next[r.seq] += 1;
                own_next[r.seq] - 1
            })
            .collect();
        for (q, &end) in seqs.iter_mut().zip(&own_next) {
            let more = end - q.own.len;
            q.own.grow(more);
        }
        let pos: Vec<usize> = rows
            .iter()
            .map(|r| {
                let p = next[r.seq];
                next[r.seq] += 1;
                p
            })
            .collect();

        s.x.clear();
        s.x.resize(n * d, 0.0);
        for (i, r) in rows.iter().enumerate() {
            self.embd
                .row(r.token as usize, &mut s.x[i * d..(i + 1) * d]);
        }
        let group = c.heads / c.kv_heads;
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let hd = c.head_dim;
        let (mut cos2, mut sin2) = (Vec::with_capacity(n * hd), Vec::with_capacity(n * hd));
        for &p in &pos {
            self.angles(p, &mut cos2, &mut sin2);
        }
        // Attention's blocks: runs of up to BLOCK rows of one sequence, (first row, rows);
        // and each row's (block, place in it).
        let mut blocks: Vec<(usize, usize)> = Vec::new();
        let mut in_block = Vec::with_capacity(n);
        for (i, r) in rows.iter().enumerate() {
            match blocks.last_mut() {
                Some((first, len)) if *len < BLOCK && rows[*first].seq == r.seq => *len += 1,
                _ => blocks.push((i, 1)),
            }
            let (first, _) = blocks[blocks.len() - 1];
            in_block.push((blocks.len() - 1, i - first));
        }
        for (l, layer) in self.layers.iter().enumerate() {
            // Attention.
            self.rms_norm(&s.x, &layer.attn_norm, &mut s.h, team);
            s.qa.quantize_on(self.isa, &s.h, n, d, team);
            matmul(self.isa, &layer.qkv, &s.qa, &mut s.a, team);
            let width = d + 2 * kvd;
            let isa = self.isa;
            let rotate = |i: usize, piece: &mut [f32]| {
                for (k, row) in piece.chunks_exact_mut(width).enumerate() {
                    let at = (i * ROW_PIECE + k) * hd..(i * ROW_PIECE + k + 1) * hd;
                    rotate_pairs(isa, &mut row[..d + kvd], &cos2[at.clone()], &sin2[at]);
                }
            };
            if team.size() > 1 && n > ROW_PIECE {
                team.for_each_chunk_mut(&mut s.a, ROW_PIECE * width, &rotate);
            } else {
                rotate(0, &mut s.a);
            }
            for (i, r) in rows.iter().enumerate() {
                let row = &s.a[i * width..(i + 1) * width];
                for g in 0..c.kv_heads {
                    let (k, v) = (d + g * hd, d + kvd + g * hd);
                    let own = &mut seqs[r.seq].own;
                    own.put(l, g, own_at[i], &row[k..k + hd], &row[v..v + hd]);
                }
            }
            // Each (block of rows, key/value head) attends over its sequence, each row up to
            // its own position, for the query heads that share that key/value head; the pairs
            // are spread over the threads, so one long row still uses every core. A block is
            // up to BLOCK consecutive rows of one sequence (a prompt's chunk), whose keys and
            // values are then read from memory once for all of its rows.
            let segments: Vec<Vec<Runs<'_>>> = seqs
                .iter()
                .map(|q| (0..c.kv_heads).map(|g| segments(q, l, g)).collect())
                .collect();
            let a = &s.a;
            let hg = group * hd;
            let isa = self.isa;
            let attend = |i: usize, out: &mut [f32]| {
                let (b, g) = (i / c.kv_heads, i % c.kv_heads);
                let (first, len) = blocks[b];
                let mut q = Vec::with_capacity(len * hg);
                let mut upto = Vec::with_capacity(len * group);
                for (r, p) in pos.iter().enumerate().skip(first).take(len) {
                    let at = r * width + g * hg;
                    q.extend_from_slice(&a[at..at + hg]);
                    upto.extend(std::iter::repeat_n(p + 1, group));
                }
                let job = Attend {
                    q: &q,
                    hd,
                    runs: &segments[rows[first].seq][g],
                    stride: hd,
                    off: 0,
                    upto: &upto,
                    scale,
                };
                attend_group(isa, &job, &mut out[..len * hg]);
            };
            // Short contexts are cheaper to attend on one thread than to hand out.
            fit(&mut s.b, blocks.len() * c.kv_heads * BLOCK * hg);
            let work: usize = pos.iter().map(|p| (p + 1) * c.heads).sum();
            if team.size() > 1 && work >= 1024 {
                team.for_each_chunk_mut(&mut s.b, BLOCK * hg, &attend);
            } else {
                for (i, out) in s.b.chunks_mut(BLOCK * hg).enumerate() {
                    attend(i, out);
                }
            }
            // Back to one row after another, each row's heads in order.
            fit(&mut s.h, n * d);
            let (attended, kv_heads) = (&s.b, c.kv_heads);
            let gather = |i: usize, piece: &mut [f32]| {
                for (k, row) in piece.chunks_exact_mut(d).enumerate() {
                    let (b, at) = in_block[i * ROW_PIECE + k];
                    for (g, out) in row.chunks_exact_mut(hg).enumerate() {
                        let from = ((b * kv_heads + g) * BLOCK + at) * hg;
                        out.copy_from_slice(&attended[from..from + hg]);
                    }
                }
            };
            if team.size() > 1 && n > ROW_PIECE {
                team.for_each_chunk_mut(&mut s.h, ROW_PIECE * d, &gather);
            } else {
                gather(0, &mut s.h);
            }
            s.qa.quantize_on(self.isa, &s.h, n, d, team);
            matmul(self.isa, &layer.out, &s.qa, &mut s.a, team);
            for (x, y) in s.x.iter_mut().zip(&s.a) {
                *x += y;
            }
            // Feed-forward: down(silu(gate) * up).
            self.rms_norm(&s.x, &layer.ffn_norm, &mut s.h, team);
            s.qa.quantize_on(self.isa, &s.h, n, d, team);
            matmul(self.isa, &layer.gate_up, &s.qa, &mut s.a, team);
            // The gate, rows spread over the team (on one thread it was a serial stretch of
            // every layer, with the helpers spinning).
            fit(&mut s.b, n * c.ff);
            let (a, ff, isa) = (&s.a, c.ff, self.isa);
            let gate = |i: usize, out: &mut [f32]| {
                let first = i * GATE_ROWS;
                for (k, out) in out.chunks_exact_mut(ff).enumerate() {
                    let row = &a[(first + k) * 2 * ff..(first + k + 1) * 2 * ff];
                    let (gate, up) = row.split_at(ff);
                    silu_mul(isa, gate, up, out);
                }
            };
            if team.size() > 1 && n > GATE_ROWS {
                team.for_each_chunk_mut(&mut s.b, GATE_ROWS * ff, &gate);
            } else {
                gate(0, &mut s.b);
            }
            s.qa.quantize_on(self.isa, &s.b, n, c.ff, team);
            matmul(self.isa, &layer.down, &s.qa, &mut s.a, team);
            for (x, y) in s.x.iter_mut().zip(&s.a) {
                *x += y;
            }
        }
        // Logits for the rows that want them.
        let want: Vec<usize> = (0..n).filter(|&i| rows[i].logits).collect();
        if want.is_empty() {
            return &[];
        }
        let picked: Vec<f32> = want
            .iter()
            .flat_map(|&i| s.x[i * d..(i + 1) * d].iter().copied())
            .collect();
        self.rms_norm(&picked, &self.out_norm, &mut s.h, team);
        s.qa.quantize_on(self.isa, &s.h, want.len(), d, team);
        let out = self.output.as_ref().unwrap_or(&self.embd);
        matmul(self.isa, out, &s.qa, &mut s.a, team);
        &s.a[..want.len() * c.vocab]
    }
}

/// `out` = each `w.len()`-long row of `x` scaled to a root mean square of one (with `eps`),
/// times `w`. A row's sum of squares is added in column order, a chain of dependent additions,
/// so eight rows' chains run side by side (each still in its own order: the same bits as one
/// row alone).
fn norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    assert_eq!(x.len(), out.len(), "norm rows");
    let scale = |row: &[f32], squares: f32, out: &mut [f32]| {
        let k = 1.0 / (squares / d as f32 + eps).sqrt();
        for ((o, v), w) in out.iter_mut().zip(row).zip(w) {
            *o = v * k * w;
        }
    };
    let mut eights = x.chunks_exact(8 * d).zip(out.chunks_exact_mut(8 * d));
    for (x, out) in &mut eights {
        let rows: [&[f32]; 8] = std::array::from_fn(|j| &x[j * d..(j + 1) * d]);
        let mut squares = [0f32; 8];
        for i in 0..d {
            for (s, row) in squares.iter_mut().zip(rows) {
                *s += row[i] * row[i];
            }
        }
        for ((row, s), out) in rows.iter().zip(squares).zip(out.chunks_exact_mut(d)) {
            scale(row, s, out);
        }
    }
    let done = x.len() / (8 * d) * 8 * d;
    for (row, out) in x[done..]
        .chunks_exact(d)
        .zip(out[done..].chunks_exact_mut(d))
    {
        let squares = row.iter().map(|v| v * v).sum::<f32>();
        scale(row, squares, out);
    }
}

/// One key/value head's keys and values at one layer, segment by segment.
type Runs<'a> = Vec<(&'a [f32], &'a [f32])>;

/// A sequence's [`Runs`] for one key/value head at one layer.
fn segments(seq: &SeqKv, layer: usize, head: usize) -> Runs<'_> {
    seq.shared
        .iter()
        .map(|(kv, n)| (&**kv, *n))
        .chain(std::iter::once((&seq.own, seq.own.len)))
        .map(|(kv, n)| kv.head(layer, head, n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            layers: 2,
            embd: 24,
            heads: 6,
            kv_heads: 3,
            head_dim: 4,
            ff: 48,
            vocab: 10,
            context: 64,
            rope_base: 10_000.0,
            eps: 1e-5,
        }
    }

    /// A value no other (layer, head, key or value, position, lane) has.
    fn value(l: usize, g: usize, v: bool, p: usize, i: usize) -> f32 {
        (((l * 3 + g) * 2 + usize::from(v)) * 1000 + p * 4 + i) as f32
    }

    fn write(kv: &mut Kv, from: usize, to: usize) {
        for p in from..to {
            for l in 0..2 {
                for g in 0..3 {
                    let k: Vec<f32> = (0..4).map(|i| value(l, g, false, p, i)).collect();
                    let v: Vec<f32> = (0..4).map(|i| value(l, g, true, p, i)).collect();
                    kv.put(l, g, p, &k, &v);
                }
            }
        }
    }

    fn check(kv: &Kv, n: usize) {
        for l in 0..2 {
            for g in 0..3 {
                let (k, v) = kv.head(l, g, n);
                let want = |val| -> Vec<f32> {
                    (0..n)
                        .flat_map(|p| (0..4).map(move |i| value(l, g, val, p, i)))
                        .collect()
                };
                assert_eq!(k, want(false), "keys, layer {l} head {g}");
                assert_eq!(v, want(true), "values, layer {l} head {g}");
            }
        }
    }

    /// Positions written across several growths, a shrink, and a copy of shared segments
    /// plus an own cache all read back where they were written, each head's apart.
    #[test]
    fn a_cache_keeps_every_position_through_growth_shrink_and_copy() {
        let cfg = cfg();
        let mut kv = Kv::new(&cfg);
        assert_eq!(kv.head(1, 2, 0), (&[][..], &[][..]));
        for (from, to) in [(0, 1), (1, 2), (2, 7), (7, 8)] {
            kv.grow(to - from);
            write(&mut kv, from, to);
            check(&kv, to);
        }
        assert!(
            kv.bytes() > 4 * 2 * 3 * 2 * 8 * 4,
            "room for more than it holds"
        );
        kv.shrink();
        check(&kv, 8);
        assert_eq!(kv.bytes(), 4 * 2 * 3 * 2 * 8 * 4);
        // Three shared positions of a cache, then an own cache of positions 3..5.
        let mut own = Kv::new(&cfg);
        own.grow(5);
        write(&mut own, 0, 5);
        let mut tail = Kv::new(&cfg);
        tail.grow(2);
        for l in 0..2 {
            for g in 0..3 {
                let (k, v) = own.head(l, g, 5);
                tail.put(l, g, 0, &k[12..16], &v[12..16]);
                tail.put(l, g, 1, &k[16..20], &v[16..20]);
            }
        }
        let seq = SeqKv {
            shared: vec![(Arc::new(own), 3)],
            own: tail,
        };
        let mut flat = Kv::new(&cfg);
        flat.extend_from(&seq, 9);
        assert_eq!(flat.len(), 5, "as many as the sequence holds");
        check(&flat, 5);
    }

    /// Eight rows normalized side by side give each row's bits alone (its sum of squares in
    /// column order), for counts of rows around the eight.
    #[test]
    fn normalizing_rows_together_gives_each_rows_bits() {
        let d = 40;
        let w: Vec<f32> = (0..d).map(|i| 0.5 + i as f32 / 17.0).collect();
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 * 6.0 - 3.0
        };
        for n in [1, 7, 8, 9, 16, 21] {
            let x: Vec<f32> = (0..n * d).map(|_| next()).collect();
            let mut got = vec![f32::NAN; n * d];
            norm_rows(&x, &w, 1e-5, &mut got);
            for (r, row) in x.chunks_exact(d).enumerate() {
                let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
                let k = 1.0 / (ms + 1e-5).sqrt();
                let want: Vec<u32> = row
                    .iter()
                    .zip(&w)
                    .map(|(v, w)| (v * k * w).to_bits())
                    .collect();
                let have: Vec<u32> = got[r * d..(r + 1) * d]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                assert_eq!(have, want, "row {r} of {n}");
            }
        }
    }
}
